#!/usr/bin/env python3
"""DuckDB side of the HTAP baseline (scripts/baseline_htap.sh, ldb-htap).

usage: htap_duckdb.py SPEC.json OUT.json

Runs the same orders workload as ldb-htap on a file-backed DuckDB database: bulk load,
single-row transactions from W writer threads (80% `amount = amount + 1` updates of
preloaded rows, 20% inserts) alone, primary-key SELECTs, the three analytic queries
alone, then writers and the query thread together with a freshness probe, then the
totals. Writes the figures as JSON in the shape ldb-htap uses for its own.
"""
import json
import os
import sys
import threading
import time

import duckdb

STATUS = ["new", "paid", "shipped", "done"]


def customer(i):
    return (i * 7919) % 50_000


def status(i):
    return STATUS[i % 4]


def amount(i):
    return (i * 37) % 10_000


def cpu_jiffies():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    total = sum(fields)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return total - idle, total


def own_jiffies():
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


class LoadProbe:
    def __init__(self):
        self.t = time.perf_counter()
        self.busy, self.total = cpu_jiffies()
        self.own = own_jiffies()

    def stop(self):
        busy, total = cpu_jiffies()
        own = own_jiffies()
        dt = max(1, total - self.total)
        b = (busy - self.busy) / dt * 100
        o = (own - self.own) / dt * 100
        return {
            "secs": time.perf_counter() - self.t,
            "machine_busy_pct": round(b, 1),
            "ours_pct": round(o, 1),
            "other_pct": round(max(0.0, b - o), 1),
        }


def p(values, q):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


class Ledger:
    def __init__(self, rows):
        self.lock = threading.Lock()
        self.rows = rows
        self.amount = sum(amount(i) for i in range(rows))
        self.next_id = rows

    def new_id(self):
        with self.lock:
            i = self.next_id
            self.next_id += 1
            return i

    def add(self, rows, amt):
        with self.lock:
            self.rows += rows
            self.amount += amt


def retrying(cur, sql, params):
    while True:
        try:
            cur.execute(sql, params)
            return
        except duckdb.TransactionException:
            continue


def writers(con, n, preloaded, ledger, stop):
    counts = [0] * n
    lats = [[] for _ in range(n)]
    errors = []

    def work(w):
        cur = con.cursor()
        x = 0x9E3779B97F4A7C15 ^ ((w + 1) * 0x10000001)
        per = max(1, preloaded // n)
        try:
            while not stop.is_set():
                x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
                x ^= x >> 7
                x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
                t = time.perf_counter()
                if x % 10 < 8:
                    i = min((x >> 8) % per * n + w, preloaded - 1)
                    if i % n != w:
                        continue
                    retrying(cur, "UPDATE orders SET amount = amount + 1 WHERE id = ?", [i])
                    ledger.add(0, 1)
                else:
                    i = ledger.new_id()
                    retrying(cur, "INSERT INTO orders VALUES (?, ?, ?, ?)",
                             [i, customer(i), status(i), amount(i)])
                    ledger.add(1, amount(i))
                lats[w].append(time.perf_counter() - t)
                counts[w] += 1
        except Exception as e:  # surfaced after join
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    return threads, counts, lats, errors


def queries_loop(con, spec, ledger, stop, probe_every):
    cur = con.cursor()
    lats = [[] for _ in spec["queries"]]
    probes = fresh = 0
    rnd = 0
    while not stop.is_set():
        for i, q in enumerate(spec["queries"]):
            lo = max(0, ledger.next_id - 100_000)
            sql = q["sql"].replace("{lo}", str(lo))
            t = time.perf_counter()
            cur.execute(sql).fetchall()
            lats[i].append((time.perf_counter() - t) * 1e3)
        rnd += 1
        if probe_every and rnd % probe_every == 0:
            i = ledger.new_id()
            retrying(cur, "INSERT INTO orders VALUES (?, ?, ?, ?)",
                     [i, customer(i), status(i), amount(i)])
            ledger.add(1, amount(i))
            n = cur.execute("SELECT count(*) FROM orders WHERE id = ?", [i]).fetchone()[0]
            probes += 1
            fresh += n == 1
    return lats, probes, fresh


def timed(secs, fn):
    stop = threading.Event()
    timer = threading.Timer(secs, stop.set)
    timer.start()
    try:
        return fn(stop)
    finally:
        timer.cancel()


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    rows, secs = spec["rows"], spec["secs"]
    if os.path.exists(spec["db"]):
        os.remove(spec["db"])
    con = duckdb.connect(spec["db"])
    out = {}
    print(f"duckdb: loading {rows} rows ...", file=sys.stderr)
    probe = LoadProbe()
    con.execute("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, status VARCHAR, amount BIGINT)")
    con.execute(
        "INSERT INTO orders SELECT i, (i * 7919) % 50000, "
        "['new', 'paid', 'shipped', 'done'][i % 4 + 1], (i * 37) % 10000 FROM range(?) t(i)",
        [rows],
    )
    con.execute("CHECKPOINT")
    load = probe.stop()
    out["load"] = {"rows_per_sec": rows / load["secs"], "load": load}
    ledger = Ledger(rows)

    solo = {}
    for w in spec["writers"]:
        print(f"duckdb: oltp sql_w{w} ...", file=sys.stderr)
        probe = LoadProbe()

        def run(stop, w=w):
            threads, counts, lats, errors = writers(con, w, rows, ledger, stop)
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            return counts, lats

        counts, lats = timed(secs, run)
        load = probe.stop()
        flat = [x for l in lats for x in l]
        solo[f"sql_w{w}"] = {
            "commits_per_sec": sum(counts) / load["secs"],
            "p50_ms": round(p(flat, 50) * 1e3, 3),
            "p99_ms": round(p(flat, 99) * 1e3, 3),
            "load": load,
        }
    out["oltp_solo"] = solo

    print("duckdb: pk select ...", file=sys.stderr)
    cur = con.cursor()
    lat = []
    probe = LoadProbe()
    x = 7
    deadline = time.perf_counter() + min(secs, 3.0)
    while time.perf_counter() < deadline:
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        i = x % rows
        t = time.perf_counter()
        r = cur.execute("SELECT * FROM orders WHERE id = ?", [i]).fetchall()
        lat.append((time.perf_counter() - t) * 1e6)
        assert len(r) == 1
    out["pk_select"] = {"p50_us": round(p(lat, 50), 1), "p99_us": round(p(lat, 99), 1),
                        "count": len(lat), "load": probe.stop()}

    print("duckdb: olap alone ...", file=sys.stderr)
    probe = LoadProbe()
    lats, _, _ = timed(secs, lambda stop: queries_loop(con, spec, ledger, stop, 0))
    load = probe.stop()
    out["olap_solo"] = {
        "queries_per_sec": sum(len(l) for l in lats) / load["secs"],
        "p50_ms": [round(p(l, 50), 3) for l in lats],
        "load": load,
    }

    mixed = {}
    for w in spec["writers"]:
        print(f"duckdb: mixed w{w} ...", file=sys.stderr)
        probe = LoadProbe()

        def run(stop, w=w):
            threads, counts, wl, errors = writers(con, w, rows, ledger, stop)
            q = queries_loop(con, spec, ledger, stop, 3)
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            return counts, q

        counts, (lats, probes, fresh) = timed(secs, run)
        load = probe.stop()
        mixed[f"w{w}"] = {
            "commits_per_sec": sum(counts) / load["secs"],
            "query_p50_ms": [round(p(l, 50), 3) for l in lats],
            "probes": probes,
            "fresh": fresh,
            "load": load,
        }
    out["mixed"] = mixed

    n, s = con.execute("SELECT count(*), sum(amount) FROM orders").fetchone()
    out["totals"] = {"rows": n, "expected_rows": ledger.rows, "amount": int(s),
                     "expected_amount": ledger.amount,
                     "exact": n == ledger.rows and int(s) == ledger.amount}
    con.close()
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
