#!/usr/bin/env bash
# OLTP baseline: Lightning DB against redb and fjall (and RocksDB with --rocksdb), the
# same key-value workloads in one run, built in release. Writes
# benchmark_results/<date>/oltp.json and oltp.md and prints the table.
#
# usage: scripts/baseline_oltp.sh [--smoke] [--rocksdb] [--keys N] [--engines a,b,...]
#                                  [--data-dir DIR]
#   --smoke     tiny sizes (20K keys), written to benchmark_results/<date>/smoke/
#   --out DIR   write the result files to DIR instead
#   --rocksdb   also RocksDB (builds librocksdb-sys: C++, needs clang; installs
#               libclang-dev with apt-get when it is missing; the build takes ~15 min)
#   --keys N    keys to load (default 1000000)
#   --data-dir  where the databases go (default: the system temp dir)
#   --rounds N  rounds of the read, then the durable-write workloads, engines taking
#               turns (default 3); each of those figures is the median round's
set -euo pipefail

smoke=0
out=""
features=()
pass=()
args_line="$*"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) smoke=1; pass+=(--smoke) ;;
        --out) out="$(realpath -m "$2")"; out_given=1; shift ;;
        --rocksdb) features=(--features rocksdb) ;;
        --data-dir) pass+=("$1" "$(realpath -m "$2")"); shift ;;
        --keys|--engines|--rounds) pass+=("$1" "$2"); shift ;;
        -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.."

out="${out:-benchmark_results/$(date -u +%F)}"
[[ $smoke == 1 && -z ${out_given:-} ]] && out="$out/smoke"

# bindgen loads libclang.so / libclang-N.so; libclang-cpp (present with clang alone) is
# not it.
if [[ ${#features[@]} -gt 0 ]] && ! ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
    echo "RocksDB needs libclang for its bindings: installing libclang-dev" >&2
    apt-get update && apt-get install -y libclang-dev clang
fi

# KV only (no DataFusion): the release build takes about a minute.
cargo build --release -p lightning-bench --no-default-features "${features[@]}" --bin ldb-peers
cargo run --release -q -p lightning-bench --no-default-features "${features[@]}" --bin ldb-peers -- \
    --out "$out" --command "scripts/baseline_oltp.sh${args_line:+ $args_line}" "${pass[@]}"
