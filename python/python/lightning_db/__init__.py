"""Lightning DB for Python: an embedded key-value store, transactions and SQL over
Arrow tables, in one directory.

    import lightning_db
    db = lightning_db.Database.open_or_create("./mydb")
    db.put(b"k", b"v"); db.get(b"k"); db.delete(b"k")
    for k, v in db.scan(b"a", b"z"): ...
    with db.transaction() as tx:          # commits on exit, aborts on an exception
        tx.put(b"a", b"1")
    t = db.sql("SELECT ...")              # a pyarrow.Table; Rust's buffers, not a copy
    db.insert("events", table)            # pyarrow, Polars, pandas, anything with __arrow_c_stream__
    db.export_parquet("events", "events.parquet")

Every error is a subclass of `LightningError` named after its kind
(`TransactionConflict`, `Corruption`, `WrongKey`, `TableNotFound`, `SqlError`, ...).
The GIL is released while the database works, so threads may share one `Database`.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Sequence, Tuple

import pyarrow as pa

from . import _lightning_db as _native
from ._lightning_db import (  # noqa: F401  (re-exported exception classes)
    Closed,
    ConstraintViolation,
    Corruption,
    DatabaseExists,
    DatabaseNotFound,
    Fatal,
    InvalidArgument,
    IoError,
    LightningError,
    Locked,
    QueryLimitExceeded,
    ReadOnly,
    SchemaError,
    SqlError,
    TableExists,
    TableNotFound,
    TransactionConflict,
    TransactionNotFound,
    WrongKey,
)

__all__ = [
    "Database",
    "PreparedStatement",
    "Transaction",
    "LightningError",
    "Closed",
    "ConstraintViolation",
    "QueryLimitExceeded",
    "Corruption",
    "DatabaseExists",
    "DatabaseNotFound",
    "Fatal",
    "InvalidArgument",
    "IoError",
    "Locked",
    "ReadOnly",
    "SchemaError",
    "SqlError",
    "TableExists",
    "TableNotFound",
    "TransactionConflict",
    "TransactionNotFound",
    "WrongKey",
]


def _stream_capsule(data: Any):
    """An `arrow_array_stream` capsule for `data`: anything that speaks the Arrow
    PyCapsule stream protocol (pyarrow, Polars, DuckDB relations), a pyarrow
    RecordBatch, or a pandas DataFrame (through pyarrow)."""
    if hasattr(data, "__arrow_c_stream__"):
        return data.__arrow_c_stream__()
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]).__arrow_c_stream__()
    try:
        import pandas as pd  # optional

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False).__arrow_c_stream__()
    except ImportError:
        pass
    raise TypeError(
        f"cannot insert a {type(data).__name__}: expected an Arrow table or stream "
        "(pyarrow, Polars, anything with __arrow_c_stream__) or a pandas DataFrame"
    )


class Transaction:
    """A snapshot-isolated transaction. As a context manager it commits when the block
    ends normally and aborts when it raises."""

    def __init__(self, native: "_native.NativeTransaction") -> None:
        self._tx = native

    def put(self, key: bytes, value: bytes) -> None:
        self._tx.put(key, value)

    def get(self, key: bytes) -> Optional[bytes]:
        return self._tx.get(key)

    def delete(self, key: bytes) -> None:
        self._tx.delete(key)

    def scan(
        self, start: Optional[bytes] = None, end: Optional[bytes] = None
    ) -> Iterator[Tuple[bytes, bytes]]:
        return self._tx.scan(start, end)

    def commit(self) -> None:
        self._tx.commit()

    def abort(self) -> None:
        self._tx.abort()

    @property
    def finished(self) -> bool:
        return self._tx.finished

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if not self._tx.finished:
                self._tx.commit()
        else:
            self._tx.abort()
        return False


class PreparedStatement:
    """One SQL statement planned once, run many times with `$1`, `$2`, ... bound to
    Python values (None, bool, int, float, str, bytes). Single-row `INSERT`, and
    `UPDATE`/`DELETE`/`SELECT` by the full primary key, run straight on the row store."""

    def __init__(self, native: "_native.NativeStatement") -> None:
        self._st = native

    def execute(self, params: "Optional[Sequence[Any]]" = None) -> pa.Table:
        """Run with `params`; the rows as a pyarrow Table (for INSERT, UPDATE and
        DELETE one row: `count`, the rows affected)."""
        return pa.table(self._st.execute(list(params) if params is not None else None))

    @property
    def sql(self) -> str:
        return self._st.sql

    @property
    def is_fast_path(self) -> bool:
        return self._st.is_fast_path


class Database:
    """A Lightning DB database directory, open in this process.

    Open with `Database.create`, `Database.open` or `Database.open_or_create`; keyword
    arguments set configuration fields (`durability="sync" | "buffered" |
    "group_commit:<us>"`, `cache_size`, `write_buffer_size`, `memtable_size`, `sql_threads`, ...;
    encryption at rest with `encryption_passphrase=` or `encryption_key=<32 bytes>` and
    `cipher="aes-256-gcm" | "chacha20-poly1305"`; `storage_engine="lsm" | "btree"`
    for a new database: the LSM for write-heavy work, the B+Tree for read- and
    scan-heavy work; without it an existing database opens with the engine it records,
    and naming the other one is an `InvalidArgument`).
    `close()` (or leaving a `with` block) flushes and releases the directory lock.
    """

    def __init__(self, native: "_native.NativeDatabase") -> None:
        self._db = native

    @classmethod
    def create(cls, path: "str | os.PathLike[str]", **config: Any) -> "Database":
        return cls(_native.NativeDatabase.create(os.fspath(path), **config))

    @classmethod
    def open(cls, path: "str | os.PathLike[str]", **config: Any) -> "Database":
        return cls(_native.NativeDatabase.open(os.fspath(path), **config))

    @classmethod
    def open_or_create(cls, path: "str | os.PathLike[str]", **config: Any) -> "Database":
        return cls(_native.NativeDatabase.open_or_create(os.fspath(path), **config))

    # -- key-value ---------------------------------------------------------------
    def put(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)

    def get(self, key: bytes) -> Optional[bytes]:
        return self._db.get(key)

    def delete(self, key: bytes) -> None:
        self._db.delete(key)

    def scan(
        self, start: Optional[bytes] = None, end: Optional[bytes] = None
    ) -> Iterator[Tuple[bytes, bytes]]:
        """`(key, value)` pairs with `start <= key < end`, in key order."""
        return self._db.scan(start, end)

    def transaction(self) -> Transaction:
        return Transaction(self._db.begin())

    # -- tables and SQL ------------------------------------------------------------
    def sql(self, query: str) -> pa.Table:
        """Run one SQL statement; its result as a pyarrow Table that shares the
        database's result buffers (no copy)."""
        return pa.table(self._db.sql(query))

    def prepare(self, query: str) -> PreparedStatement:
        """Prepare `query` (positional parameters `$1`, `$2`, ...)."""
        return PreparedStatement(self._db.prepare(query))

    def sql_stream(self, query: str):
        """The result as an object with `__arrow_c_stream__`, for Polars
        (`pl.from_arrow`), DuckDB, `pa.RecordBatchReader.from_stream` or any other
        Arrow PyCapsule consumer; one use. A query's batches are made as the consumer
        reads them, so memory holds a couple of batches however large the result."""
        return self._db.sql_stream(query)

    def insert(self, table: str, data: Any) -> int:
        """Insert (or replace by primary key) every row of `data` into `table`,
        atomically. Columns are matched by name and cast to the table's types.
        Returns the number of rows written."""
        return self._db.insert_stream(table, _stream_capsule(data))

    def export_parquet(self, table_or_query: str, path: "str | os.PathLike[str]") -> int:
        """Write a table (or a SELECT's result) to a Parquet file; returns rows written."""
        return self._db.export_parquet(table_or_query, os.fspath(path))

    def export_table(
        self,
        table: str,
        directory: "str | os.PathLike[str]",
        format: str = "delta",
        partition_by: "list[str] | None" = None,
    ) -> dict:
        """Export a table into `directory` as a Delta Lake table (`format="delta"`) or
        hive-partitioned Parquet files (`format="parquet"`), partitioned by the
        `partition_by` columns. Exporting again into the same directory writes only
        the files of what changed (a new version). Returns what the export did
        (`version`, `rows`, `files_added`, `rows_written`, `files_removed`, ...)."""
        return self._db.export_table(table, os.fspath(directory), format, partition_by)

    def list_tables(self) -> list:
        return self._db.list_tables()

    # -- lifecycle -----------------------------------------------------------------
    def flush(self) -> None:
        self._db.flush()

    def checkpoint(self, directory: "str | os.PathLike[str]") -> None:
        self._db.checkpoint(os.fspath(directory))

    @property
    def path(self) -> str:
        return os.fspath(self._db.path)

    @property
    def storage_engine(self) -> str:
        """"lsm" or "btree": the engine the database was created with."""
        return self._db.storage_engine

    @property
    def encryption_cipher(self) -> Optional[str]:
        """The cipher at rest ("aes-256-gcm" or "chacha20-poly1305"), or None."""
        return self._db.encryption_cipher

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.path
        return f"<lightning_db.Database {state}>"
