#!/usr/bin/env bash
# Import baseline: TPC-H generated to Parquet (datasets/, tpchgen-arrow), then imported
# through SQL, one `INSERT INTO t SELECT * FROM <external Parquet table>` per table, into
# keyed tables (TPC-H primary keys) and keyless ones; side by side with DuckDB's
# `CREATE TABLE … AS SELECT * FROM read_parquet(…)` and its keyed equivalent (DuckDB is
# installed with pip into .venv/). Writes benchmark_results/<date>/import.json and
# import.md and prints the table.
#
# usage: scripts/baseline_import.sh [--smoke] [--sf N] [--no-duckdb] [--data-dir DIR]
#                                   [--parquet-dir DIR] [--out DIR]
#   --smoke          SF 0.01 and a debug build; written to <date>/smoke/
#   --sf N           TPC-H scale factor (default 1)
#   --data-dir DIR   where the databases go (default: the system's temporary directory)
#   --parquet-dir D  Parquet files to import; generated there when missing
#   --no-duckdb      skip DuckDB
# LDB_BENCH_PROFILE=release|dev overrides the build profile (default release).
set -euo pipefail

out=""
smoke=0
duckdb=1
pass=()
args_line="$*"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --out) out="$(realpath -m "$2")"; out_given=1; shift ;;
        --no-duckdb) duckdb=0 ;;
        --data-dir|--parquet-dir) pass+=("$1" "$(realpath -m "$2")"); shift ;;
        --sf) pass+=("$1" "$2"); shift ;;
        -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.."

out="${out:-benchmark_results/$(date -u +%F)}"
profile=release
if [[ $smoke == 1 ]]; then
    [[ -z ${out_given:-} ]] && out="$out/smoke"
    profile=dev
    pass+=(--sf 0.01)
fi
profile="${LDB_BENCH_PROFILE:-$profile}"

if [[ $duckdb == 1 ]]; then
    source scripts/lib/duckdb.sh
    if py="$(duckdb_python)"; then
        pass+=(--duckdb-python "$(realpath "$py")")
    fi
fi

source scripts/lib/bench_bin.sh
exe="$(bench_bin "$profile" ldb-import)"
"$exe" \
    --out "$out" --command "scripts/baseline_import.sh${args_line:+ $args_line}" "${pass[@]}"
