#!/usr/bin/env python3
"""Side-by-side figures for the Flight SQL server (a benchmark, not a test).

Starts `lightning-cli serve` (give a release build: --cli target/release/lightning-cli)
on loopback, loads TPC-H lineitem from a Parquet file through ADBC bulk ingestion, then
times TPC-H Q1 and Q6 and a large streamed result through the ADBC Flight SQL driver,
and the same queries in DuckDB in-process over the same Parquet file. Prints JSON.

  pip install adbc-driver-flightsql pyarrow duckdb tpchgen-cli
  tpchgen-cli parquet -s 1 --tables=lineitem --output-dir=/tmp/sf1
  python3 scripts/flight_sql_bench.py --cli target/release/lightning-cli \\
      --lineitem /tmp/sf1/lineitem.parquet --runs 5
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def timed(f, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--lineitem", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stream-rows", type=int, default=20_000_000)
    a = ap.parse_args()

    queries = {}
    for q in ("q1", "q6"):
        with open(os.path.join(ROOT, "datasets", "tpch", "queries", f"{q}.sql")) as f:
            queries[q] = f.read()
    stream_sql = f"SELECT value AS a, value * 2 AS b FROM generate_series(1, {a.stream_rows})"

    res = {"runs": a.runs}
    with tempfile.TemporaryDirectory() as d:
        srv = subprocess.Popen(
            [a.cli, "serve", os.path.join(d, "db"), "--flight", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            uri = re.search(r"listening on (\S+)", srv.stdout.readline()).group(1)
            with flight_sql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
                table = pq.read_table(a.lineitem)
                t = time.perf_counter()
                # The Go client refuses messages over 16 MiB: send batches of 64K rows.
                chunks = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=65536))
                cur.adbc_ingest("lineitem", chunks, mode="create")
                secs = time.perf_counter() - t
                res["ingest_rows_per_s"] = round(table.num_rows / secs)
                res["rows"] = table.num_rows
                # Let the column store catch up before timing queries.
                time.sleep(5)
                for q, sql in queries.items():
                    def run(sql=sql):
                        cur.execute(sql)
                        cur.fetch_arrow_table()
                    run()
                    res[f"flight_{q}_ms"] = round(timed(run, a.runs) * 1000, 1)

                def stream():
                    cur.execute(stream_sql)
                    n = sum(b.num_rows for b in cur.fetch_record_batch())
                    assert n == a.stream_rows
                res["flight_stream_rows_per_s"] = round(a.stream_rows / timed(stream, max(1, a.runs // 2)))
        finally:
            srv.terminate()
            srv.wait()

    con = duckdb.connect()

    def arrow(sql):
        r = con.sql(sql)
        return r.to_arrow_table() if hasattr(r, "to_arrow_table") else r.arrow()

    con.execute(f"CREATE VIEW lineitem AS SELECT * FROM read_parquet('{a.lineitem}')")
    for q, sql in queries.items():
        arrow(sql)
        res[f"duckdb_{q}_ms"] = round(timed(lambda sql=sql: arrow(sql), a.runs) * 1000, 1)
    res["duckdb_stream_rows_per_s"] = round(
        a.stream_rows / timed(lambda: arrow(f"SELECT range AS a, range * 2 AS b FROM range({a.stream_rows})"), max(1, a.runs // 2))
    )
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
