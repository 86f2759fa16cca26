#!/usr/bin/env python3
"""DuckDB's imports of TPC-H Parquet files, for the import baseline
(scripts/baseline_import.sh, benches/harness/src/bin/ldb-import.rs).

usage: import_duckdb.py PARQUET_DIR SCRATCH_DIR OUT.json

For each table, into a database file (durable, as ours):
  ctas:  CREATE TABLE t AS SELECT * FROM read_parquet('t.parquet')
  keyed: CREATE TABLE t (<columns>, PRIMARY KEY (<TPC-H key>)) then
         INSERT INTO t SELECT * FROM read_parquet('t.parquet')
OUT: {"version": ..., "ctas": {table: secs}, "keyed": {table: secs}}
"""
import json
import os
import sys
import time

import duckdb

TABLES = [
    ("region", ["r_regionkey"]),
    ("nation", ["n_nationkey"]),
    ("part", ["p_partkey"]),
    ("supplier", ["s_suppkey"]),
    ("partsupp", ["ps_partkey", "ps_suppkey"]),
    ("customer", ["c_custkey"]),
    ("orders", ["o_orderkey"]),
    ("lineitem", ["l_orderkey", "l_linenumber"]),
]


def main() -> int:
    pq, scratch, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {"version": duckdb.__version__, "ctas": {}, "keyed": {}}
    for kind in ("ctas", "keyed"):
        path = os.path.join(scratch, f"duckdb-{kind}.db")
        if os.path.exists(path):
            os.remove(path)
        con = duckdb.connect(path)
        for t, pk in TABLES:
            src = f"read_parquet('{os.path.join(pq, t + '.parquet')}')"
            t0 = time.perf_counter()
            if kind == "ctas":
                con.execute(f"CREATE TABLE {t} AS SELECT * FROM {src}")
            else:
                cols = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
                defs = ", ".join(f"{c[0]} {c[1]}" for c in cols)
                con.execute(f"CREATE TABLE {t} ({defs}, PRIMARY KEY ({', '.join(pk)}))")
                con.execute(f"INSERT INTO {t} SELECT * FROM {src}")
            con.execute("CHECKPOINT")
            dt = time.perf_counter() - t0
            out[kind][t] = dt
            print(f"  duckdb {kind:<5} {t:<9} {dt:7.2f} s", file=sys.stderr)
        con.close()
        os.remove(path)
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
