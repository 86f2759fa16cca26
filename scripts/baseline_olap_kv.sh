#!/usr/bin/env bash
# OLAP baseline: TPC-H generated to Parquet (datasets/, tpchgen-arrow) and imported into
# Lightning DB through SQL the way the README tells users (CREATE EXTERNAL TABLE, the
# table with its primary key, INSERT … SELECT, compact_columnar), plus KV data; runs
# analytic SQL over the kv table and the 22 TPC-H queries through our provider, and the
# same queries through DataFusion and DuckDB over the same Parquet files (DuckDB is
# installed with pip into .venv/), every engine limited to the same thread count; then
# the 22 queries again while 2 writers commit (updates of orders, new lineitem rows),
# with a freshness probe after every run. Writes benchmark_results/<date>/olap.json and
# olap.md and prints the table.
#
# usage: scripts/baseline_olap_kv.sh [--smoke] [--sf N] [--kv-keys N] [--runs N]
#                                     [--threads N] [--mixed-writers N] [--writer-rate N]
#                                     [--analytics-nice N] [--load sql|api]
#                                     [--parquet-dir DIR] [--no-duckdb] [--data-dir DIR]
#   --smoke      SF 0.01, 20K kv keys, one run, a debug build (a release build of
#                DataFusion takes ~20 min on 2 cores); written to <date>/smoke/
#   --sf N       TPC-H scale factor (default 1)
#   --kv-keys N  keys in the kv table (default 1000000)
#   --threads N  threads for every engine (default: the number of cores)
#   --mixed-writers N  writers during the second TPC-H run (default 2; 0 skips it)
#   --writer-rate N  cap those writers at N commits/s in total (default: no cap)
#   --analytics-nice N  our SQL threads' nice value (default: the config default, 10)
#   --load api   load through the table API + a full row-store compaction (the old path)
#   --parquet-dir DIR  keep (and reuse) the generated TPC-H Parquet files there
#   --no-duckdb  skip DuckDB
#   --out DIR    write the result files to DIR instead
# LDB_BENCH_PROFILE=release|dev overrides the build profile.
set -euo pipefail

smoke=0
out=""
duckdb=1
pass=()
args_line="$*"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) smoke=1; pass+=(--smoke) ;;
        --out) out="$(realpath -m "$2")"; out_given=1; shift ;;
        --no-duckdb) duckdb=0 ;;
        --data-dir|--parquet-dir) pass+=("$1" "$(realpath -m "$2")"); shift ;;
        --sf|--kv-keys|--runs|--threads|--mixed-writers|--writer-rate|--analytics-nice|--load)
            pass+=("$1" "$2"); shift ;;
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
fi
profile="${LDB_BENCH_PROFILE:-$profile}"

if [[ $duckdb == 1 ]]; then
    source scripts/lib/duckdb.sh
    if py="$(duckdb_python)"; then
        pass+=(--duckdb-python "$py")
    fi
fi

source scripts/lib/bench_bin.sh
exe="$(bench_bin "$profile" ldb-olap)"
"$exe" \
    --out "$out" --command "scripts/baseline_olap_kv.sh${args_line:+ $args_line}" "${pass[@]}"
