"""The Python API of Lightning DB: key-value, transactions, SQL, insert, export,
errors, lifecycle, zero copy and the GIL."""

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lightning_db


@pytest.fixture
def db(tmp_path):
    with lightning_db.Database.open_or_create(tmp_path / "db") as d:
        yield d


def test_kv_roundtrip_and_scan(db):
    db.put(b"k", b"v")
    assert db.get(b"k") == b"v"
    db.delete(b"k")
    assert db.get(b"k") is None
    for i in range(10):
        db.put(b"key%02d" % i, b"val%d" % i)
    got = list(db.scan(b"key03", b"key07"))
    assert got == [(b"key%02d" % i, b"val%d" % i) for i in range(3, 7)]
    assert len(list(db.scan())) == 10
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in db.scan())


def test_create_open_and_config(tmp_path):
    p = tmp_path / "db"
    with pytest.raises(lightning_db.DatabaseNotFound):
        lightning_db.Database.open(p)
    d = lightning_db.Database.create(p, durability="sync", cache_size=8 << 20, sql_threads=1)
    d.put(b"a", b"1")
    with pytest.raises(lightning_db.Locked):
        lightning_db.Database.open(p)
    d.close()
    assert d.closed
    d.close()  # idempotent
    with pytest.raises(lightning_db.DatabaseExists):
        lightning_db.Database.create(p)
    with lightning_db.Database.open(p) as d2:
        assert d2.get(b"a") == b"1"
    with pytest.raises(TypeError):
        lightning_db.Database.open(p, no_such_field=1)
    with pytest.raises(lightning_db.InvalidArgument):
        lightning_db.Database.open(p, durability="sometimes")


def test_encrypted_database_and_wrong_key(tmp_path):
    p = tmp_path / "enc"
    with lightning_db.Database.create(p, encryption_passphrase="correct horse battery") as d:
        d.put(b"secret", b"value")
        d.flush()
    with pytest.raises(lightning_db.WrongKey):
        lightning_db.Database.open(p, encryption_passphrase="wrong")
    with pytest.raises(lightning_db.WrongKey):
        lightning_db.Database.open(p)  # no key for an encrypted database
    with lightning_db.Database.open(p, encryption_passphrase="correct horse battery") as d:
        assert d.get(b"secret") == b"value"
    # Raw 32-byte keys and the other cipher.
    q = tmp_path / "enc2"
    key = bytes(range(32))
    with lightning_db.Database.create(q, encryption_key=key, cipher="chacha20-poly1305") as d:
        d.put(b"a", b"b")
    with pytest.raises(lightning_db.WrongKey):
        lightning_db.Database.open(q, encryption_key=bytes(32))
    with lightning_db.Database.open(q, encryption_key=key, cipher="chacha20-poly1305") as d:
        assert d.get(b"a") == b"b"
    with pytest.raises(lightning_db.InvalidArgument):
        lightning_db.Database.open(q, encryption_key=b"short")


def test_storage_engine_is_chosen_at_create_and_recorded(tmp_path):
    p = tmp_path / "tree"
    key = bytes(range(32))
    with lightning_db.Database.create(
        p, storage_engine="btree", encryption_key=key, cipher="aes-256-gcm"
    ) as d:
        assert d.storage_engine == "btree"
        assert d.encryption_cipher == "aes-256-gcm"
        for i in range(2000):
            d.put(b"k%05d" % i, b"v%d" % i)
        d.flush()
        d.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, s VARCHAR)")
        d.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    # The recorded engine is used; naming the other one is refused.
    with lightning_db.Database.open(p, encryption_key=key) as d:
        assert d.storage_engine == "btree"
        assert d.get(b"k01234") == b"v1234"
        assert len(list(d.scan(b"k00100", b"k00200"))) == 100
        assert d.sql("SELECT count(*) AS n FROM t").column("n")[0].as_py() == 2
    with pytest.raises(lightning_db.InvalidArgument, match="B\\+Tree"):
        lightning_db.Database.open(p, encryption_key=key, storage_engine="lsm")
    with lightning_db.Database.create(tmp_path / "lsm") as d:
        assert d.storage_engine == "lsm"
        assert d.encryption_cipher is None
    with pytest.raises(lightning_db.InvalidArgument):
        lightning_db.Database.create(tmp_path / "x", storage_engine="hash")


def test_close_releases_lock_and_later_calls_fail(tmp_path):
    p = tmp_path / "db"
    d = lightning_db.Database.create(p)
    d.close()
    with pytest.raises(lightning_db.Closed):
        d.put(b"a", b"b")
    # The lock is free: another handle opens at once.
    lightning_db.Database.open(p).close()


def test_transaction_commits_and_aborts(db):
    with db.transaction() as tx:
        tx.put(b"a", b"1")
        tx.put(b"b", b"2")
        assert tx.get(b"a") == b"1"
        assert db.get(b"a") is None  # not visible outside before commit
    assert db.get(b"a") == b"1" and db.get(b"b") == b"2"

    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.put(b"c", b"3")
            raise RuntimeError("boom")
    assert db.get(b"c") is None
    assert tx.finished

    tx = db.transaction()
    tx.put(b"d", b"4")
    tx.commit()
    with pytest.raises(lightning_db.TransactionNotFound):
        tx.put(b"e", b"5")


def test_transaction_conflict_is_typed(db):
    db.put(b"x", b"0")
    t1 = db.transaction()
    t2 = db.transaction()
    t1.get(b"x")
    t2.get(b"x")
    t1.put(b"x", b"1")
    t2.put(b"x", b"2")
    t1.commit()
    with pytest.raises(lightning_db.TransactionConflict):
        t2.commit()
    assert issubclass(lightning_db.TransactionConflict, lightning_db.LightningError)
    assert db.get(b"x") == b"1"


def test_sql_returns_arrow_and_insert_accepts_arrow(db):
    db.sql("CREATE TABLE events (id BIGINT PRIMARY KEY, name VARCHAR, score DOUBLE)")
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "name": pa.array(["a", "b", None]),
            "score": pa.array([1.5, 2.5, 3.5]),
        }
    )
    assert db.insert("events", data) == 3
    t = db.sql("SELECT id, name, score FROM events ORDER BY id")
    assert isinstance(t, pa.Table)
    assert t.column("id").to_pylist() == [1, 2, 3]
    assert t.column("name").to_pylist() == ["a", "b", None]
    # Replace by primary key; columns matched by name, in any order, cast to the table's types.
    db.insert("events", pa.table({"score": [9.0], "name": ["z"], "id": pa.array([2], pa.int32())}))
    assert db.sql("SELECT name FROM events WHERE id = 2").column(0).to_pylist() == ["z"]
    # A RecordBatch and a pandas DataFrame work too.
    db.insert("events", pa.RecordBatch.from_pydict({"id": [4], "name": ["d"], "score": [4.0]}))
    pd = pytest.importorskip("pandas")
    db.insert("events", pd.DataFrame({"id": [5], "name": ["e"], "score": [5.0]}))
    assert db.sql("SELECT count(*) AS n FROM events").column(0).to_pylist() == [5]
    assert "events" in db.list_tables()


def test_prepared_statements(db):
    db.sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, status VARCHAR, paid BOOLEAN, note BYTEA)")
    ins = db.prepare("INSERT INTO orders VALUES ($1, $2, $3, $4, $5)")
    assert ins.is_fast_path
    for i in range(20):
        out = ins.execute([i, i % 3, "paid" if i % 2 else "new", bool(i % 2), b"n%d" % i])
        assert out.column("count").to_pylist() == [1]
    ins.execute((100, None, None, None, None))
    get = db.prepare("SELECT customer, status, paid, note FROM orders WHERE id = $1")
    assert get.is_fast_path
    row = get.execute([7]).to_pylist()
    assert row == [{"customer": 1, "status": "paid", "paid": True, "note": b"n7"}]
    assert get.execute([100]).to_pylist() == [{"customer": None, "status": None, "paid": None, "note": None}]
    assert get.execute([999]).num_rows == 0
    upd = db.prepare("UPDATE orders SET status = $2 WHERE id = $1")
    assert upd.execute([3, "shipped"]).column(0).to_pylist() == [1]
    agg = db.prepare("SELECT count(*) AS n FROM orders WHERE customer = $1 AND status = $2")
    assert not agg.is_fast_path
    assert agg.execute([1, "new"]).column(0).to_pylist() == [sum(1 for i in range(20) if i % 3 == 1 and i % 2 == 0)]
    with pytest.raises(TypeError):
        get.execute([object()])
    with pytest.raises(lightning_db.SqlError):
        db.prepare("SELECT * FROM orders WHERE id = $1 AND")


def test_insert_errors_write_nothing(db):
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
    with pytest.raises(lightning_db.TableNotFound):
        db.insert("nope", pa.table({"id": [1], "v": [1]}))
    with pytest.raises(lightning_db.SchemaError):
        db.insert("t", pa.table({"id": [1], "w": [1]}))
    with pytest.raises(lightning_db.SchemaError):
        db.insert("t", pa.table({"id": [1], "v": ["not a number"]}))
    with pytest.raises(TypeError):
        db.insert("t", [1, 2, 3])
    assert db.sql("SELECT count(*) FROM t").column(0).to_pylist() == [0]


def test_sql_errors_are_typed(db):
    with pytest.raises(lightning_db.SqlError):
        db.sql("SELEC nonsense")
    with pytest.raises(lightning_db.LightningError):
        db.sql("SELECT * FROM missing_table")


def test_export_parquet(db, tmp_path):
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR)")
    db.sql("INSERT INTO t VALUES (1, 'x'), (2, 'y')")
    out = tmp_path / "t.parquet"
    assert db.export_parquet("t", out) == 2
    back = pq.read_table(out)
    assert sorted(back.column("id").to_pylist()) == [1, 2]


def test_export_table_delta_and_parquet(db, tmp_path):
    db.sql("CREATE TABLE s (id BIGINT PRIMARY KEY, region VARCHAR, qty INT)")
    db.sql("INSERT INTO s VALUES (1, 'EU', 3), (2, 'US', 4), (3, 'EU', 5)")
    out = tmp_path / "s_delta"
    r = db.export_table("s", out, format="delta", partition_by=["region"])
    assert (r["version"], r["rows"], r["new_version"]) == (0, 3, True)
    assert (out / "_delta_log" / "00000000000000000000.json").exists()
    assert (out / "region=EU").is_dir()
    assert not db.export_table("s", out, format="delta", partition_by=["region"])["new_version"]
    db.sql("INSERT INTO s VALUES (4, 'US', 6)")
    r = db.export_table("s", out, format="delta", partition_by=["region"])
    assert (r["version"], r["rows"], r["rows_written"]) == (1, 4, 1)
    pq_out = tmp_path / "s_pq"
    db.export_table("s", pq_out, format="parquet")
    back = pq.read_table(pq_out)
    assert sorted(back.column("qty").to_pylist()) == [3, 4, 5, 6]
    with pytest.raises(ValueError):
        db.export_table("s", tmp_path / "x", format="iceberg")


def test_sql_result_is_not_copied(db):
    """The result's buffers are Rust's: importing allocates nothing in pyarrow's pool,
    and the column data does not live in pyarrow-allocated memory."""
    db.sql("CREATE TABLE big (id BIGINT PRIMARY KEY, v BIGINT)")
    n = 500_000
    db.insert("big", pa.table({"id": pa.array(range(n), pa.int64()), "v": pa.array(range(n), pa.int64())}))
    before = pa.total_allocated_bytes()
    t = db.sql("SELECT id, v FROM big")
    after = pa.total_allocated_bytes()
    assert t.num_rows == n
    data_bytes = sum(c.nbytes for c in t.columns)
    assert data_bytes >= 2 * 8 * n
    # Not one column's worth of data was allocated by pyarrow for the import.
    assert after - before < 8 * n // 10, (before, after)
    # And the buffers stay valid after the stream object is gone.
    assert pa.compute.sum(t.column("v")).as_py() == n * (n - 1) // 2


def test_gil_released_during_queries(db):
    """Another Python thread keeps running while a query runs."""
    db.sql("CREATE TABLE g (id BIGINT PRIMARY KEY, v BIGINT)")
    n = 300_000
    db.insert("g", pa.table({"id": pa.array(range(n), pa.int64()), "v": pa.array(range(n), pa.int64())}))
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    th = threading.Thread(target=tick)
    th.start()
    try:
        # One call that runs for a while: with the GIL held the ticker could not run
        # at all until it returned.
        start = time.perf_counter()
        db.sql("SELECT v % 97 AS k, count(*), sum(v) FROM g GROUP BY v % 97")
        end = time.perf_counter()
    finally:
        stop.set()
        th.join()
    during = [t for t in ticks if start <= t <= end]
    expected = (end - start) / 0.001 / 10  # a tenth of the ticks an idle GIL allows
    assert len(during) >= max(3, expected), (len(during), end - start)


def test_threads_share_one_database(db):
    errors = []

    def work(w):
        try:
            for i in range(200):
                db.put(b"w%d-%d" % (w, i), b"x")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list(db.scan())) == 800


def test_sql_stream_makes_batches_as_they_are_read(db):
    # A result far larger than what is read: only the batches read are ever made.
    huge = "SELECT value AS v FROM generate_series(1, 100000000000)"
    reader = pa.RecordBatchReader.from_stream(db.sql_stream(huge))
    assert reader.schema.names == ["v"]
    first = reader.read_next_batch()
    assert first.num_rows > 0 and first.column(0)[0].as_py() == 1
    reader.close()  # cancels the query
    small = pa.RecordBatchReader.from_stream(db.sql_stream("SELECT value AS v FROM generate_series(1, 100000)"))
    assert small.read_all().num_rows == 100000
    with pytest.raises(lightning_db.SqlError):
        db.sql_stream("SELECT * FROM no_such_table")
