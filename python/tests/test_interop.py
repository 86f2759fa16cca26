"""Other tools read Lightning DB results directly (Arrow PyCapsule stream protocol) and
hand it their data the same way."""

import pyarrow as pa
import pytest

import lightning_db


@pytest.fixture
def db(tmp_path):
    with lightning_db.Database.open_or_create(tmp_path / "db") as d:
        d.sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, status VARCHAR, amount BIGINT)")
        d.insert(
            "orders",
            pa.table(
                {
                    "id": pa.array(range(1000), pa.int64()),
                    "status": [["new", "paid", "shipped"][i % 3] for i in range(1000)],
                    "amount": pa.array([i * 10 for i in range(1000)], pa.int64()),
                }
            ),
        )
        yield d


QUERY = "SELECT status, sum(amount) AS revenue, count(*) AS n FROM orders GROUP BY status ORDER BY status"
EXPECTED = {
    "status": ["new", "paid", "shipped"],
    "revenue": [
        sum(i * 10 for i in range(0, 1000, 3)),
        sum(i * 10 for i in range(1, 1000, 3)),
        sum(i * 10 for i in range(2, 1000, 3)),
    ],
    "n": [334, 333, 333],
}


def test_polars_reads_results(db):
    pl = pytest.importorskip("polars")
    df = pl.from_arrow(db.sql(QUERY))
    assert df["status"].to_list() == EXPECTED["status"]
    assert df["revenue"].to_list() == EXPECTED["revenue"]
    # Straight from the stream object, without pyarrow in between.
    df2 = pl.DataFrame(db.sql_stream(QUERY))
    assert df2["n"].to_list() == EXPECTED["n"]


def test_duckdb_reads_results(db):
    duckdb = pytest.importorskip("duckdb")
    result = db.sql(QUERY)  # noqa: F841 (DuckDB finds it by name)
    rows = duckdb.sql("SELECT status, revenue, n FROM result ORDER BY status").fetchall()
    assert [r[0] for r in rows] == EXPECTED["status"]
    assert [r[1] for r in rows] == EXPECTED["revenue"]
    # A DuckDB relation is itself an Arrow stream source: insert it.
    db.sql("CREATE TABLE copy (status VARCHAR PRIMARY KEY, revenue BIGINT, n BIGINT)")
    rel = duckdb.sql("SELECT status, revenue::BIGINT AS revenue, n::BIGINT AS n FROM result")
    db.insert("copy", rel.arrow())
    assert db.sql("SELECT sum(n) FROM copy").column(0).to_pylist() == [1000]


def test_polars_frame_inserts(db):
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"id": [5000, 5001], "status": ["paid", "new"], "amount": [1, 2]})
    assert db.insert("orders", df) == 2
    t = db.sql("SELECT status FROM orders WHERE id >= 5000 ORDER BY id")
    assert t.column(0).to_pylist() == ["paid", "new"]
