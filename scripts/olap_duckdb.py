#!/usr/bin/env python3
"""DuckDB over Parquet files, for the OLAP baseline (scripts/baseline_olap_kv.sh).

usage: olap_duckdb.py SPEC.json OUT.json

SPEC: {"tables": {name: PARQUET_FILE, ...}, "threads": N, "runs": N,
       "queries": [{"name": ..., "sql": ...}, ...]}
OUT:  {query name: median time of N runs (after a warm-up run) in ms}
"""
import json
import sys
import time

import duckdb


def main() -> int:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    con = duckdb.connect()
    if spec.get("threads"):
        con.execute(f"SET threads = {int(spec['threads'])}")
    for t, path in spec["tables"].items():
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")
    times = {}
    for q in spec["queries"]:
        con.execute(q["sql"]).fetchall()  # warm-up, untimed
        runs = []
        for _ in range(max(1, spec["runs"])):
            t0 = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            runs.append((time.perf_counter() - t0) * 1e3)
        median = sorted(runs)[len(runs) // 2]
        times[q["name"]] = median
        print(f"  duckdb {q['name']:<20} {median:9.1f} ms", file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(times, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
