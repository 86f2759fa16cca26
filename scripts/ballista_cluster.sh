#!/usr/bin/env bash
# A Ballista cluster over Lightning tables on loopback: one scheduler and N executors as
# separate processes (`lightning-ballista`, distributed/), stopped again when the
# script ends, however it ends.
#
#   scripts/ballista_cluster.sh --smoke
#       TPC-H SF 0.01 generated into a scratch database, published, the 22 queries run
#       on 1 scheduler + 2 executors and compared with db.sql; fails on any difference
#       or when the scan tasks did not run on both executors.
#   scripts/ballista_cluster.sh --db <published-dir> --queries <file.sql> [--executors N] [--compare]
#       Run a file of `;`-separated queries on a published database (make one with
#       `lightning-ballista publish <db> <dir>`).
#   scripts/ballista_cluster.sh --bench [--sf 1] [--out DIR]
#       Release build; TPC-H at --sf on 1, 2 and 4 executors, median of 3, beside
#       db.sql on the same published database; results in DIR (default
#       benchmark_results/<date>/ballista).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=""
db=""
queries=""
executors=2
compare=0
sf=1
out=""
release=0
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) mode=smoke ;;
        --bench) mode=bench; release=1 ;;
        --db) db="$2"; shift ;;
        --queries) queries="$2"; shift ;;
        --executors) executors="$2"; shift ;;
        --compare) compare=1 ;;
        --sf) sf="$2"; shift ;;
        --out) out="$2"; shift ;;
        --release) release=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$mode" ]; then
    if [ -z "$db" ] || [ -z "$queries" ]; then
        echo "usage: $0 --smoke | --bench [--sf N] | --db <published-dir> --queries <file.sql> [--executors N] [--compare]" >&2
        exit 2
    fi
    mode=run
fi

if [ "$release" = 1 ]; then
    cargo build --release -q -p lightning-distributed --bin lightning-ballista
    bin="${CARGO_TARGET_DIR:-target}/release/lightning-ballista"
else
    cargo build -q -p lightning-distributed --bin lightning-ballista
    bin="${CARGO_TARGET_DIR:-target}/debug/lightning-ballista"
fi

work="$(mktemp -d)"
pids=()
stop_cluster() {
    for p in "${pids[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_cluster
    if [ "${keep_work:-0}" = 1 ]; then
        echo "logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Free loopback ports, from the kernel.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1 after 30 s" >&2
    return 1
}

# start_cluster N: a scheduler and N executors; sets $scheduler_url.
start_cluster() {
    local n="$1"
    read -r -a ports <<<"$(free_ports $((1 + 2 * n)))"
    "$bin" scheduler --port "${ports[0]}" >"$work/scheduler.log" 2>&1 &
    pids+=($!)
    wait_port "${ports[0]}"
    for i in $(seq 1 "$n"); do
        mkdir -p "$work/e$i"
        "$bin" executor --port "${ports[$((2 * i - 1))]}" --grpc-port "${ports[$((2 * i))]}" \
            --scheduler-port "${ports[0]}" --work-dir "$work/e$i" --name "e$i" \
            >"$work/e$i.log" 2>&1 &
        pids+=($!)
    done
    for i in $(seq 1 "$n"); do wait_port "${ports[$((2 * i - 1))]}"; done
    # Executors register with the scheduler on their first heartbeat.
    sleep 2
    scheduler_url="df://127.0.0.1:${ports[0]}"
    echo "cluster: scheduler $scheduler_url, $n executors (logs in $work)"
}

# Which executors ran scan tasks (from their logs).
scan_summary() {
    local n="$1" ran=0
    for i in $(seq 1 "$n"); do
        local c
        c=$(grep -c '^scan task:' "$work/e$i.log" || true)
        echo "executor e$i ran $c scan partitions"
        [ "$c" -gt 0 ] && ran=$((ran + 1))
    done
    scan_executors=$ran
}

case "$mode" in
smoke)
    "$bin" tpch --sf 0.01 "$work/src"
    # Small segment batches: a table this small still spreads over several tasks.
    "$bin" publish "$work/src" "$work/published" --batch-rows 4096
    start_cluster 2
    if ! "$bin" run --scheduler "$scheduler_url" --db "$work/published" --tpch --compare --partitions 4; then
        keep_work=1
        exit 1
    fi
    scan_summary 2
    if [ "$scan_executors" -lt 2 ]; then
        echo "error: the scan tasks did not run on both executors" >&2
        keep_work=1
        exit 1
    fi
    echo "ballista smoke: ok"
    ;;
run)
    start_cluster "$executors"
    args=(run --scheduler "$scheduler_url" --db "$db" --file "$queries" --partitions $((2 * executors)))
    [ "$compare" = 1 ] && args+=(--compare)
    "$bin" "${args[@]}"
    scan_summary "$executors"
    ;;
bench)
    out="${out:-benchmark_results/$(date -u +%Y-%m-%d)/ballista}"
    mkdir -p "$out"
    "$bin" tpch --sf "$sf" "$work/src"
    "$bin" publish "$work/src" "$work/published" | tee "$out/publish.txt"
    for n in 1 2 4; do
        start_cluster "$n"
        "$bin" run --scheduler "$scheduler_url" --db "$work/published" --tpch --compare \
            --repeat 3 --partitions $((2 * n)) --json "$out/executors-$n.json" | tee "$out/executors-$n.txt"
        scan_summary "$n" | tee -a "$out/executors-$n.txt"
        stop_cluster
    done
    python3 - "$out" "$sf" <<'EOF'
import json, sys
out, sf = sys.argv[1], sys.argv[2]
runs = {n: json.load(open(f"{out}/executors-{n}.json")) for n in (1, 2, 4)}
lines = [f"# TPC-H SF {sf} on a loopback Ballista cluster (median of 3, ms)", "",
         "| query | db.sql | 1 executor | 2 executors | 4 executors |", "|---|---:|---:|---:|---:|"]
tot = {n: 0.0 for n in runs}
loc = 0.0
for i, q in enumerate(runs[1]):
    l = q["local_ms"]; loc += l
    cells = []
    for n in (1, 2, 4):
        c = runs[n][i]["cluster_ms"]; tot[n] += c; cells.append(f"{c:.0f}")
    lines.append(f"| {q['query']} | {l:.0f} | " + " | ".join(cells) + " |")
lines.append(f"| **total** | **{loc:.0f}** | " + " | ".join(f"**{tot[n]:.0f}**" for n in (1, 2, 4)) + " |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
    ;;
esac
