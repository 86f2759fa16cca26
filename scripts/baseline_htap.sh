#!/usr/bin/env bash
# HTAP baseline: the orders workload (1M rows preloaded; single-row durable transactions
# from 2 and 8 writer threads, 80% updates and 20% inserts; one thread looping three
# small analytic queries; a probe that inserts a row and counts it at once) on Lightning
# DB and on DuckDB (installed with pip into .venv/), in one run: bulk load, OLTP alone
# (table API and SQL prepared statements), primary-key SELECTs, OLAP alone, mixed,
# freshness, exact totals, and the CPU other processes used in each phase. Writes
# benchmark_results/<date>/htap.json and htap.md and prints the table.
#
# usage: scripts/baseline_htap.sh [--smoke] [--rows N] [--secs S] [--writers 2,8]
#                                  [--no-duckdb] [--data-dir DIR] [--out DIR]
#   --smoke      20K rows, 1 s phases, a debug build; written to <date>/smoke/
#   --rows N     rows preloaded (default 1000000)
#   --secs S     seconds per timed phase (default 10)
#   --writers L  writer thread counts (default 2,8)
#   --no-duckdb  skip DuckDB
#   --sql-threads N / --analytics-nice N / --columnar-interval-ms N / --columnar-compression N
#                override those configuration fields for Lightning DB
#   --writer-rate N  cap Lightning DB's writers at N commits/s in total (compare the
#                query slowdown at equal write load, e.g. DuckDB's rate)
# LDB_BENCH_PROFILE=release|dev overrides the build profile. Run it on a quiet
# machine: the result table shows how much CPU other processes took in each phase.
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
        --data-dir) pass+=("$1" "$(realpath -m "$2")"); shift ;;
        --rows|--secs|--writers|--sql-threads|--analytics-nice|--columnar-interval-ms|--columnar-compression|--writer-rate)
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
exe="$(bench_bin "$profile" ldb-htap)"
"$exe" \
    --out "$out" --command "scripts/baseline_htap.sh${args_line:+ $args_line}" "${pass[@]}"
