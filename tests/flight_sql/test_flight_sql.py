"""Lightning DB's Flight SQL server, driven by a client from outside the project: the
ADBC Flight SQL driver (Go, from pip) through its DB-API, over loopback."""

import datetime
import math
import os
import threading
import time

import adbc_driver_flightsql as fs
import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TPCH = os.path.join(ROOT, "datasets", "sample", "tpch-sf0.001")
QUERIES = os.path.join(ROOT, "datasets", "tpch", "queries")
# Minutes of work, in small batches (a statement is cancelled between batches).
SLOW = "SELECT sum(value % 7) FROM generate_series(1, 100000000000)"


def test_statements_dml_and_results(serve):
    s = serve()
    with s.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR, v DOUBLE)")
        cur.execute("INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', 2.5), (3, NULL, NULL)")
        cur.execute("SELECT id, name, v FROM t ORDER BY id")
        t = cur.fetch_arrow_table()
        assert t.column("id").to_pylist() == [1, 2, 3]
        assert t.column("name").to_pylist() == ["a", "b", None]
        # Strings arrive as plain UTF-8 (every client reads them).
        assert t.schema.field("name").type == pa.string()
        cur.execute("UPDATE t SET v = v * 2 WHERE id <= 2")
        cur.execute("DELETE FROM t WHERE id = 3")
        cur.execute("SELECT sum(v) AS s, count(*) AS n FROM t")
        assert cur.fetchone() == (8.0, 2)
        # A statement run as an update reports the rows it changed.
        n = cur.adbc_statement
        n.set_sql_query("INSERT INTO t VALUES (10, 'x', 0), (11, 'y', 0)")
        assert n.execute_update() == 2
        # Errors keep their meaning: a bad statement, a duplicate key.
        with pytest.raises(adbc_driver_manager.ProgrammingError, match="(?i)not found|no table"):
            cur.execute("SELECT * FROM missing")
        with pytest.raises(adbc_driver_manager.Error, match="(?i)duplicate|primary key"):
            cur.execute("INSERT INTO t VALUES (1, 'again', 0)")
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (4,)


def test_prepared_statements_with_parameters(serve):
    s = serve()
    with s.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE p (id BIGINT PRIMARY KEY, name VARCHAR, at DATE)")
        # One prepared INSERT run once per row (DB-API executemany binds them all).
        rows = [(i, f"n{i}", datetime.date(2024, 1, 1 + i)) for i in range(20)]
        cur.executemany("INSERT INTO p VALUES (?, ?, ?)", rows)
        cur.execute("SELECT count(*) FROM p")
        assert cur.fetchone() == (20,)
        # Query parameters, both placeholder styles.
        cur.execute("SELECT name FROM p WHERE id = ?", parameters=(7,))
        assert cur.fetchall() == [("n7",)]
        cur.execute("SELECT count(*) FROM p WHERE id >= $1 AND name <> $2", parameters=(10, "n15"))
        assert cur.fetchone() == (9,)
        cur.execute("SELECT id FROM p WHERE at > ? ORDER BY id", parameters=(datetime.date(2024, 1, 18),))
        assert [r[0] for r in cur.fetchall()] == [18, 19]
        # The same statement text run again with new values.
        for i in (3, 4, 5):
            cur.execute("SELECT name FROM p WHERE id = ?", parameters=(i,))
            assert cur.fetchone() == (f"n{i}",)
        # A prepared UPDATE with parameters.
        cur.executemany("UPDATE p SET name = ? WHERE id = ?", [("u1", 1), ("u2", 2)])
        cur.execute("SELECT name FROM p WHERE id IN (1, 2) ORDER BY id")
        assert cur.fetchall() == [("u1",), ("u2",)]


def test_streams_large_results(serve):
    s = serve()
    with s.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT value AS v, value * 2 AS w FROM generate_series(1, 300000)")
        reader = cur.fetch_record_batch()
        batches = list(reader)
        # Delivered as a stream of many IPC messages, not one.
        assert len(batches) > 1
        t = pa.Table.from_batches(batches)
        assert t.num_rows == 300000
        assert pa.compute.sum(t.column("w")).as_py() == 300000 * 300001


def test_catalog_metadata(serve):
    s = serve()
    with s.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR, total DOUBLE)")
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Lightning DB"
        objs = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"] for c in objs}
        assert "datafusion" in catalogs
        tables = {
            t["table_name"]: t
            for c in objs
            for sch in c["catalog_db_schemas"] or []
            for t in sch["db_schema_tables"] or []
        }
        assert "orders" in tables and tables["orders"]["table_type"] == "TABLE"
        cols = [c["column_name"] for c in tables["orders"]["table_columns"]]
        assert cols == ["id", "customer", "total"]
        schema = conn.adbc_get_table_schema("orders")
        assert schema.names == ["id", "customer", "total"]
        assert schema.field("id").type == pa.int64()
        assert schema.field("customer").type == pa.string()
        assert "TABLE" in conn.adbc_get_table_types()
        # Filters by table name pattern.
        only = conn.adbc_get_objects(depth="tables", table_name_filter="ord%").read_all().to_pylist()
        names = [t["table_name"] for c in only for sch in c["catalog_db_schemas"] or [] for t in sch["db_schema_tables"] or []]
        assert names == ["orders"]


def test_bulk_ingest(serve):
    s = serve()
    data = pa.table({"x": pa.array(range(50000), pa.int64()), "s": [f"r{i % 7}" for i in range(50000)]})
    with s.connect() as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("events", data, mode="create") == 50000
        assert cur.adbc_ingest("events", data.slice(0, 10), mode="append") == 10
        cur.execute("SELECT count(*), sum(x) FROM events")
        assert cur.fetchone() == (50010, sum(range(50000)) + sum(range(10)))
        with pytest.raises(adbc_driver_manager.Error):
            cur.adbc_ingest("events", data, mode="create")
        assert cur.adbc_ingest("events", data.slice(0, 3), mode="replace") == 3
        cur.execute("SELECT count(*) FROM events")
        assert cur.fetchone() == (3,)


def _load_tpch(cur):
    for t in ("lineitem", "orders", "customer", "nation", "region", "part", "partsupp", "supplier"):
        tbl = pq.read_table(os.path.join(TPCH, f"{t}.parquet"))
        cur.adbc_ingest(t, tbl, mode="create")


@pytest.mark.parametrize("q", ["q1", "q6"])
def test_tpch_matches_duckdb(serve, q):
    s = serve()
    with open(os.path.join(QUERIES, f"{q}.sql")) as f:
        sql = f.read()
    with s.connect() as conn, conn.cursor() as cur:
        _load_tpch(cur)
        cur.execute(sql)
        ours = cur.fetchall()
    con = duckdb.connect()
    for t in ("lineitem",):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{os.path.join(TPCH, t + '.parquet')}')")
    theirs = con.execute(sql).fetchall()
    assert len(ours) == len(theirs) and len(ours) > 0
    for a, b in zip(ours, theirs):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            if isinstance(x, (float, int)) and not isinstance(x, bool) or hasattr(x, "as_integer_ratio"):
                assert math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-6), (q, a, b)
            else:
                assert x == y, (q, a, b)


def test_wrong_or_missing_token_is_refused(serve):
    s = serve()
    for token in ("wrong", "", None):
        with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated"):
            with s.connect(token=token) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
    with s.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone() == (1,)
    # A Basic handshake (any user, the token as password) is answered with the token.
    with s.connect(token=None, username="analyst", password=s.token) as conn, conn.cursor() as cur:
        cur.execute("SELECT 2 AS two")
        assert cur.fetchone() == (2,)
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated"):
        with s.connect(token=None, username="analyst", password="guess") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")


def test_memory_limit_stops_a_statement_not_the_server(serve):
    s = serve("--query-memory-limit", "1MiB")
    with s.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="(?i)resource|memory|limit"):
            # A query starts at execute; a failure while it runs comes with its rows.
            cur.execute(
                "SELECT count(*) FROM generate_series(1, 2000000) a "
                "JOIN generate_series(1, 2000000) b ON a.value = b.value"
            )
            cur.fetchall()
        cur.execute("SELECT count(*) FROM generate_series(1, 1000)")
        assert cur.fetchone() == (1000,)


def test_time_limit_cancels_a_statement(serve):
    s = serve("--query-timeout", "1")
    with s.connect() as conn, conn.cursor() as cur:
        t0 = time.monotonic()
        with pytest.raises(adbc_driver_manager.Error, match="(?i)time limit"):
            cur.execute(SLOW)
            cur.fetchall()
        assert time.monotonic() - t0 < 20
        cur.execute("SELECT 2 AS two")
        assert cur.fetchone() == (2,)


def test_concurrent_statement_cap(serve):
    # One statement at a time: a second waits for the first (here cancelled by its
    # 3 s limit) before it runs.
    s = serve("--max-concurrent-queries", "1", "--query-timeout", "3")
    slow_err = []

    def slow():
        with s.connect() as conn, conn.cursor() as cur:
            try:
                cur.execute(SLOW)
                cur.fetchall()
            except adbc_driver_manager.Error as e:
                slow_err.append(str(e))

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(1.0)
    with s.connect() as conn, conn.cursor() as cur:
        t0 = time.monotonic()
        cur.execute("SELECT 3 AS three")
        waited = time.monotonic() - t0
        assert cur.fetchone() == (3,)
    th.join()
    assert slow_err and "time limit" in slow_err[0]
    assert waited > 1.0, waited


def test_tls(serve, tmp_path):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    s = serve(tls=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))
    assert s.uri.startswith("grpc+tls://")
    opts = {fs.DatabaseOptions.TLS_ROOT_CERTS.value: cert_pem.decode()}
    with s.connect(**opts) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'over tls' AS s")
        assert cur.fetchone() == ("over tls",)
    # A client that does not trust the certificate is refused.
    with pytest.raises(adbc_driver_manager.Error):
        with s.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
