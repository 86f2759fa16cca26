//! The native half of the `lightning_db` Python package (`lightning_db._lightning_db`).
//!
//! Everything here is a thin layer over the Rust [`lightning_db::Database`]; the Python
//! half (`python/lightning_db/__init__.py`) adds the pyarrow conversions. Three rules:
//!
//! - **No copies of query results.** `sql` hands its record batches to Python through
//!   the Arrow C stream interface (a PyCapsule named `arrow_array_stream`, the Arrow
//!   PyCapsule protocol): pyarrow, Polars and DuckDB import the buffers Rust allocated.
//!   Data coming in (`insert`) arrives the same way.
//! - **The GIL is released** for every call that can do I/O or run a query, so other
//!   Python threads run meanwhile (the database is safe to share between threads).
//! - **Errors keep their kind**: each Rust error becomes an exception class named after
//!   it (`TransactionConflict`, `Corruption`, `WrongKey`, ...), all subclasses of
//!   `LightningError`.

use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow::record_batch::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use lightning_db::datafusion::scalar::ScalarValue;
use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider};
use lightning_db::{
    Database, Durability, Error, KvIter, LightningDbConfig, PreparedStatement, QueryLimits,
    SqlStream, TxId,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyTuple};
use std::sync::Arc;
use std::time::Duration;

mod errors {
    use pyo3::create_exception;
    use pyo3::exceptions::PyException;
    create_exception!(
        _lightning_db,
        LightningError,
        PyException,
        "Any Lightning DB error."
    );
    create_exception!(
        _lightning_db,
        IoError,
        LightningError,
        "An operating-system I/O error."
    );
    create_exception!(
        _lightning_db,
        Corruption,
        LightningError,
        "Damaged bytes on disk."
    );
    create_exception!(
        _lightning_db,
        WrongKey,
        LightningError,
        "A wrong or missing encryption key."
    );
    create_exception!(
        _lightning_db,
        TransactionConflict,
        LightningError,
        "A transaction lost a write conflict; retry it."
    );
    create_exception!(
        _lightning_db,
        TransactionNotFound,
        LightningError,
        "The transaction is finished or unknown."
    );
    create_exception!(
        _lightning_db,
        InvalidArgument,
        LightningError,
        "A bad argument, key, value or configuration."
    );
    create_exception!(
        _lightning_db,
        DatabaseNotFound,
        LightningError,
        "No database at the path."
    );
    create_exception!(
        _lightning_db,
        DatabaseExists,
        LightningError,
        "A database already exists at the path."
    );
    create_exception!(
        _lightning_db,
        Locked,
        LightningError,
        "Another process holds the database open."
    );
    create_exception!(
        _lightning_db,
        Closed,
        LightningError,
        "The database is closed."
    );
    create_exception!(
        _lightning_db,
        ReadOnly,
        LightningError,
        "The database is open read-only."
    );
    create_exception!(
        _lightning_db,
        TableNotFound,
        LightningError,
        "No such table."
    );
    create_exception!(
        _lightning_db,
        TableExists,
        LightningError,
        "The table already exists."
    );
    create_exception!(
        _lightning_db,
        SchemaError,
        LightningError,
        "Data that does not match a table's schema."
    );
    create_exception!(
        _lightning_db,
        SqlError,
        LightningError,
        "An SQL statement that failed to parse, plan or run."
    );
    create_exception!(
        _lightning_db,
        ConstraintViolation,
        LightningError,
        "A row that breaks a table constraint."
    );
    create_exception!(
        _lightning_db,
        QueryLimitExceeded,
        LightningError,
        "A statement went past its memory or time limit and was stopped."
    );
    create_exception!(
        _lightning_db,
        Fatal,
        LightningError,
        "The database stopped after an unrecoverable I/O error."
    );
}
use errors::*;

/// A Rust error as the Python exception of its kind.
fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { .. } => IoError::new_err(msg),
        Error::Corruption { .. } | Error::MissingCurrent { .. } => Corruption::new_err(msg),
        Error::WrongKey(_) => WrongKey::new_err(msg),
        Error::TransactionConflict(_) => TransactionConflict::new_err(msg),
        Error::TransactionNotFound(_) => TransactionNotFound::new_err(msg),
        Error::KeyTooLarge { .. }
        | Error::ValueTooLarge { .. }
        | Error::BatchTooLarge { .. }
        | Error::InvalidConfig(_)
        | Error::InvalidArgument(_)
        | Error::TooManyTransactions { .. }
        | Error::DirectoryNotEmpty { .. } => InvalidArgument::new_err(msg),
        Error::DatabaseNotFound(_) => DatabaseNotFound::new_err(msg),
        Error::DatabaseExists(_) => DatabaseExists::new_err(msg),
        Error::Locked(_) => Locked::new_err(msg),
        Error::Closed => Closed::new_err(msg),
        Error::ReadOnly => ReadOnly::new_err(msg),
        Error::TableNotFound(_) => TableNotFound::new_err(msg),
        Error::TableExists(_) => TableExists::new_err(msg),
        Error::Schema(_) | Error::Arrow(_) => SchemaError::new_err(msg),
        Error::Sql(_) => SqlError::new_err(msg),
        Error::Constraint(_) => ConstraintViolation::new_err(msg),
        Error::QueryLimit(_) => QueryLimitExceeded::new_err(msg),
        Error::Fatal(_) => Fatal::new_err(msg),
        _ => LightningError::new_err(msg),
    }
}

fn arrow_err(e: arrow::error::ArrowError) -> PyErr {
    SchemaError::new_err(e.to_string())
}

/// The configuration from keyword arguments: the `LightningDbConfig` fields a Python
/// user sets, by the same names. An unknown name is a `TypeError`.
fn config(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<LightningDbConfig> {
    let mut c = LightningDbConfig::default();
    let Some(kw) = kwargs else { return Ok(c) };
    let (mut cipher, mut master) = (Cipher::Aes256Gcm, None);
    for (k, v) in kw.iter() {
        let key: String = k.extract()?;
        match key.as_str() {
            "durability" => {
                let s: String = v.extract()?;
                c.durability = match s.as_str() {
                    "sync" => Durability::Sync,
                    "buffered" => Durability::Buffered,
                    other => match other.strip_prefix("group_commit:") {
                        Some(us) => Durability::GroupCommit {
                            max_delay: Duration::from_micros(us.parse().map_err(|_| {
                                InvalidArgument::new_err(format!("bad durability {other:?}"))
                            })?),
                        },
                        None => {
                            return Err(InvalidArgument::new_err(format!(
                                "durability must be \"sync\", \"buffered\" or \"group_commit:<microseconds>\", got {other:?}"
                            )));
                        }
                    },
                };
            }
            "storage_engine" => {
                c.storage_engine = match v.extract::<String>()?.as_str() {
                    "lsm" => lightning_db::StorageEngine::Lsm,
                    "btree" => lightning_db::StorageEngine::BTree,
                    other => {
                        return Err(InvalidArgument::new_err(format!(
                            "storage_engine must be \"lsm\" or \"btree\", got {other:?}"
                        )));
                    }
                }
            }
            "cache_size" => c.cache_size = v.extract()?,
            "write_buffer_size" => c.write_buffer_size = v.extract()?,
            "memtable_size" => c.memtable_size = v.extract()?,
            "compression_enabled" => c.compression_enabled = v.extract()?,
            "max_active_transactions" => c.max_active_transactions = v.extract()?,
            "background_compaction" => c.background_compaction = v.extract()?,
            "columnar_background" => c.columnar_background = v.extract()?,
            "columnar_compaction_interval_ms" => {
                c.columnar_compaction_interval = Duration::from_millis(v.extract()?)
            }
            "sql_threads" => c.sql_threads = v.extract()?,
            "analytics_nice" => c.analytics_nice = v.extract()?,
            "sql_max_statement_bytes" => c.sql_max_statement_bytes = v.extract()?,
            // Encryption at rest: a 32-byte key or a passphrase (Argon2id), and the cipher.
            "encryption_key" => {
                let mut b: Vec<u8> = v.extract()?;
                let raw: Option<[u8; 32]> = b.as_slice().try_into().ok();
                let len = b.len();
                // Our copy of the key is wiped (the provider keeps its own, zeroized).
                for x in b.iter_mut() {
                    // SAFETY: a valid, aligned byte of `b`.
                    unsafe { std::ptr::write_volatile(x, 0) };
                }
                let raw = raw.ok_or_else(|| {
                    InvalidArgument::new_err(format!("encryption_key must be 32 bytes, got {len}"))
                })?;
                master = Some(KeyProvider::raw(raw));
            }
            "encryption_passphrase" => {
                master = Some(KeyProvider::passphrase(v.extract::<String>()?));
            }
            "cipher" => {
                cipher = match v.extract::<String>()?.as_str() {
                    "aes-256-gcm" => Cipher::Aes256Gcm,
                    "chacha20-poly1305" => Cipher::ChaCha20Poly1305,
                    other => {
                        return Err(InvalidArgument::new_err(format!(
                            "cipher must be \"aes-256-gcm\" or \"chacha20-poly1305\", got {other:?}"
                        )));
                    }
                }
            }
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unknown configuration field {other:?}"
                )));
            }
        }
    }
    c.encryption = master.map(|k| EncryptionConfig::new(cipher, k));
    Ok(c)
}

fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}

/// A Lightning DB database. Safe to share between Python threads.
#[pyclass(module = "lightning_db._lightning_db", frozen)]
struct NativeDatabase {
    db: Mutex<Option<Arc<Database>>>,
}

impl NativeDatabase {
    fn db(&self) -> PyResult<Arc<Database>> {
        self.db.lock().clone().ok_or_else(|| py_err(Error::Closed))
    }

    fn opened(
        py: Python<'_>,
        path: std::path::PathBuf,
        kwargs: Option<&Bound<'_, PyDict>>,
        how: fn(std::path::PathBuf, LightningDbConfig) -> lightning_db::Result<Database>,
    ) -> PyResult<Self> {
        let mut cfg = config(kwargs)?;
        let named = kwargs.is_some_and(|k| k.contains("storage_engine").unwrap_or(false));
        let db = py
            .detach(|| {
                // No engine named: an existing database opens with the one it records.
                if !named && let Some(e) = Database::recorded_storage_engine(&path, &cfg)? {
                    cfg.storage_engine = e;
                }
                how(path, cfg)
            })
            .map_err(py_err)?;
        Ok(NativeDatabase {
            db: Mutex::new(Some(Arc::new(db))),
        })
    }
}

#[pymethods]
impl NativeDatabase {
    #[staticmethod]
    #[pyo3(signature = (path, **kwargs))]
    fn create(
        py: Python<'_>,
        path: std::path::PathBuf,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Self::opened(py, path, kwargs, Database::create)
    }

    #[staticmethod]
    #[pyo3(signature = (path, **kwargs))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Self::opened(py, path, kwargs, Database::open)
    }

    #[staticmethod]
    #[pyo3(signature = (path, **kwargs))]
    fn open_or_create(
        py: Python<'_>,
        path: std::path::PathBuf,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Self::opened(py, path, kwargs, Database::open_or_create)
    }

    fn put(&self, py: Python<'_>, key: &[u8], value: &[u8]) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.put(key, value)).map_err(py_err)
    }

    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let db = self.db()?;
        let v = py.detach(|| db.get(key)).map_err(py_err)?;
        Ok(v.map(|v| bytes(py, &v)))
    }

    fn delete(&self, py: Python<'_>, key: &[u8]) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.delete(key)).map_err(py_err)
    }

    /// Entries with `start <= key < end` (either bound may be None), in key order.
    #[pyo3(signature = (start=None, end=None))]
    fn scan(
        &self,
        py: Python<'_>,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
    ) -> PyResult<ScanIter> {
        let db = self.db()?;
        let it = py
            .detach(|| db.scan(start.as_deref(), end.as_deref()))
            .map_err(py_err)?;
        Ok(ScanIter::new(it, db))
    }

    /// Begin a transaction (snapshot isolation); see the Python `Transaction` wrapper.
    fn begin(&self) -> PyResult<NativeTransaction> {
        let db = self.db()?;
        let id = db.begin_transaction().map_err(py_err)?;
        Ok(NativeTransaction {
            db,
            id: Mutex::new(Some(id)),
        })
    }

    /// Run `query`; the result as an Arrow C stream (no copy of the batches).
    fn sql(&self, py: Python<'_>, query: &str) -> PyResult<ArrowStream> {
        let db = self.db()?;
        let batches = py.detach(|| db.sql(query)).map_err(py_err)?;
        Ok(ArrowStream::of(batches))
    }

    /// Run one statement and stream its answer: a query's batches are made as they
    /// are read (memory holds a couple of them).
    fn sql_stream(&self, py: Python<'_>, query: &str) -> PyResult<ArrowStream> {
        let db = self.db()?;
        let rows = py
            .detach(|| db.sql_stream(query, &QueryLimits::none()))
            .map_err(py_err)?;
        Ok(ArrowStream::streaming(rows))
    }

    /// Prepare one statement with positional parameters `$1`, `$2`, ...
    fn prepare(&self, py: Python<'_>, query: &str) -> PyResult<NativeStatement> {
        let db = self.db()?;
        let stmt = py.detach(|| db.prepare(query)).map_err(py_err)?;
        // SAFETY: the statement borrows the `Database` inside `db`'s allocation, which
        // does not move and lives as long as the `Arc` the `NativeStatement` keeps;
        // `stmt` is declared before `_db`, so it is dropped first.
        let stmt: PreparedStatement<'static> = unsafe { std::mem::transmute(stmt) };
        Ok(NativeStatement { stmt, _db: db })
    }

    /// Insert (or replace by primary key) every row of an Arrow C stream capsule into
    /// `table`, atomically; columns are matched by name and cast to the table's types.
    /// Returns the rows written.
    fn insert_stream(
        &self,
        py: Python<'_>,
        table: &str,
        capsule: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let db = self.db()?;
        let reader = import_stream(capsule)?;
        let target = db.table_schema(table).map_err(py_err)?;
        // Streamed without the GIL: a producer that needs it (pyarrow over a Python
        // iterator) takes it in its own C callbacks.
        py.detach(|| {
            let batches = reader.map(|b| {
                let b = b.map_err(|e| Error::Arrow(e.to_string()))?;
                conform(&b, &target)
            });
            db.insert_batches(table, batches)
        })
        .map_err(py_err)
    }

    /// Write a table or a query's result to a Parquet file; returns the rows written.
    fn export_parquet(
        &self,
        py: Python<'_>,
        table_or_query: &str,
        path: std::path::PathBuf,
    ) -> PyResult<u64> {
        let db = self.db()?;
        py.detach(|| db.export_parquet(table_or_query, &path))
            .map_err(py_err)
    }

    /// Export a table into `dir` as `format` ("delta" or "parquet": hive-partitioned
    /// Parquet files), partitioned by `partition_by`; a later export into the same
    /// directory writes only what changed. Returns a dict of what it did.
    #[pyo3(signature = (table, dir, format="delta", partition_by=None))]
    fn export_table<'py>(
        &self,
        py: Python<'py>,
        table: &str,
        dir: std::path::PathBuf,
        format: &str,
        partition_by: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let format = match format {
            "delta" => lightning_db::ExportFormat::Delta,
            "parquet" => lightning_db::ExportFormat::Parquet,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "format must be 'delta' or 'parquet', not {other:?}"
                )));
            }
        };
        let opts = lightning_db::ExportOptions {
            partition_by: partition_by.unwrap_or_default(),
        };
        let db = self.db()?;
        let r = py
            .detach(|| db.export_table_with(table, &dir, format, &opts))
            .map_err(py_err)?;
        let d = PyDict::new(py);
        d.set_item("version", r.version)?;
        d.set_item("new_version", r.new_version)?;
        d.set_item("watermark", r.watermark)?;
        d.set_item("rows", r.rows)?;
        d.set_item("files_added", r.files_added)?;
        d.set_item("rows_written", r.rows_written)?;
        d.set_item("bytes_written", r.bytes_written)?;
        d.set_item("files_removed", r.files_removed)?;
        d.set_item("full_rewrite", r.full_rewrite)?;
        Ok(d)
    }

    fn list_tables(&self) -> PyResult<Vec<String>> {
        self.db()?.list_tables().map_err(py_err)
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.flush()).map_err(py_err)
    }

    fn checkpoint(&self, py: Python<'_>, dir: std::path::PathBuf) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.checkpoint(&dir)).map_err(py_err)
    }

    #[getter]
    fn path(&self) -> PyResult<std::path::PathBuf> {
        Ok(self.db()?.path().to_path_buf())
    }

    /// The storage engine the database was created with: "lsm" or "btree".
    #[getter]
    fn storage_engine(&self) -> PyResult<&'static str> {
        Ok(match self.db()?.storage_engine() {
            lightning_db::StorageEngine::BTree => "btree",
            _ => "lsm",
        })
    }

    /// The cipher the database is encrypted with at rest, or None.
    #[getter]
    fn encryption_cipher(&self) -> PyResult<Option<&'static str>> {
        Ok(self.db()?.encryption_cipher().map(|c| c.name()))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.db.lock().is_none()
    }

    /// Flush and release the directory lock. Idempotent. Iterators and transactions
    /// still open fail with `Closed` afterwards.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(db) = self.db.lock().take() else {
            return Ok(());
        };
        py.detach(|| db.close()).map_err(py_err)
    }
}

/// The rows of a stream, cast by column name to the table's schema.
fn conform(b: &RecordBatch, target: &SchemaRef) -> lightning_db::Result<RecordBatch> {
    let mut cols = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        let Some(c) = b.column_by_name(f.name()) else {
            return Err(Error::Schema(format!(
                "the data has no column {:?}",
                f.name()
            )));
        };
        cols.push(if c.data_type() == f.data_type() {
            c.clone()
        } else {
            // `safe: false`: a value that does not convert is an error, not a NULL.
            let opts = arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            };
            arrow::compute::cast_with_options(c, f.data_type(), &opts)
                .map_err(|e| Error::Schema(format!("column {:?}: {e}", f.name())))?
        });
    }
    if b.num_columns() != cols.len() {
        return Err(Error::Schema(format!(
            "the data has {} columns, the table {}",
            b.num_columns(),
            cols.len()
        )));
    }
    RecordBatch::try_new(target.clone(), cols).map_err(|e| Error::Schema(e.to_string()))
}

/// Take the stream out of an `arrow_array_stream` capsule (the capsule is left with a
/// released stream, as the protocol asks of a consumer).
fn import_stream(capsule: &Bound<'_, PyAny>) -> PyResult<ArrowArrayStreamReader> {
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| PyTypeError::new_err("expected an arrow_array_stream PyCapsule"))?;
    let ptr = capsule
        .pointer_checked(Some(c"arrow_array_stream"))
        .map_err(|_| PyTypeError::new_err("expected a PyCapsule named arrow_array_stream"))?;
    // SAFETY: a capsule named `arrow_array_stream` holds an `ArrowArrayStream` (the
    // Arrow PyCapsule protocol); `from_raw` moves it out and leaves it released.
    unsafe { ArrowArrayStreamReader::from_raw(ptr.as_ptr().cast::<FFI_ArrowArrayStream>()) }
        .map_err(arrow_err)
}

/// A prepared statement; `execute` binds Python values to `$1`, `$2`, ...
#[pyclass(module = "lightning_db._lightning_db", frozen)]
struct NativeStatement {
    // Declared first: dropped before the database it borrows.
    stmt: PreparedStatement<'static>,
    _db: Arc<Database>,
}

/// A Python value as an SQL parameter: None, bool, int, float, str or bytes.
fn scalar(v: &Bound<'_, PyAny>) -> PyResult<ScalarValue> {
    if v.is_none() {
        return Ok(ScalarValue::Null);
    }
    // bool before int: Python's bool is an int.
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(ScalarValue::Boolean(Some(b.is_true())));
    }
    if let Ok(i) = v.extract::<i64>() {
        return Ok(ScalarValue::Int64(Some(i)));
    }
    if let Ok(f) = v.extract::<f64>() {
        return Ok(ScalarValue::Float64(Some(f)));
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(ScalarValue::Utf8(Some(s)));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(ScalarValue::Binary(Some(b.as_bytes().to_vec())));
    }
    Err(PyTypeError::new_err(format!(
        "unsupported SQL parameter type {}",
        v.get_type().name()?
    )))
}

#[pymethods]
impl NativeStatement {
    #[pyo3(signature = (params=None))]
    fn execute(
        &self,
        py: Python<'_>,
        params: Option<Vec<Bound<'_, PyAny>>>,
    ) -> PyResult<ArrowStream> {
        let values = params
            .unwrap_or_default()
            .iter()
            .map(scalar)
            .collect::<PyResult<Vec<_>>>()?;
        let batches = py.detach(|| self.stmt.execute(values)).map_err(py_err)?;
        Ok(ArrowStream::of(batches))
    }

    #[getter]
    fn sql(&self) -> String {
        self.stmt.sql().to_string()
    }

    #[getter]
    fn is_fast_path(&self) -> bool {
        self.stmt.is_fast_path()
    }
}

/// Iterator of `(key, value)` over a key range.
#[pyclass(module = "lightning_db._lightning_db", frozen)]
struct ScanIter {
    state: Mutex<Scan>,
    _db: Arc<Database>,
}

/// The entries pulled from the iterator and not yet returned, and what ended it.
struct Scan {
    it: Option<KvIter>,
    ready: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    failed: Option<Error>,
}

/// Entries pulled per release of the GIL: one release per entry would cost more than
/// reading most entries.
const SCAN_CHUNK: usize = 256;

impl ScanIter {
    fn new(it: KvIter, db: Arc<Database>) -> ScanIter {
        ScanIter {
            state: Mutex::new(Scan {
                it: Some(it),
                ready: Default::default(),
                failed: None,
            }),
            _db: db,
        }
    }
}

#[pymethods]
impl ScanIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let mut g = self.state.lock();
        if g.ready.is_empty() && g.it.is_some() {
            let s = &mut *g;
            py.detach(|| {
                while s.ready.len() < SCAN_CHUNK {
                    match s.it.as_mut().and_then(Iterator::next) {
                        Some(Ok(kv)) => s.ready.push_back(kv),
                        Some(Err(e)) => {
                            s.failed = Some(e);
                            s.it = None;
                        }
                        None => s.it = None,
                    }
                    if s.it.is_none() {
                        break;
                    }
                }
            });
        }
        match g.ready.pop_front() {
            Some((k, v)) => Ok(Some(PyTuple::new(py, [bytes(py, &k), bytes(py, &v)])?)),
            None => g.failed.take().map_or(Ok(None), |e| Err(py_err(e))),
        }
    }
}

/// An open transaction; the Python `Transaction` wrapper adds the context manager.
#[pyclass(module = "lightning_db._lightning_db", frozen)]
struct NativeTransaction {
    db: Arc<Database>,
    id: Mutex<Option<TxId>>,
}

impl NativeTransaction {
    fn id(&self) -> PyResult<TxId> {
        self.id
            .lock()
            .ok_or_else(|| TransactionNotFound::new_err("the transaction is finished"))
    }
}

#[pymethods]
impl NativeTransaction {
    fn put(&self, py: Python<'_>, key: &[u8], value: &[u8]) -> PyResult<()> {
        let id = self.id()?;
        py.detach(|| self.db.put_tx(id, key, value)).map_err(py_err)
    }

    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let id = self.id()?;
        let v = py.detach(|| self.db.get_tx(id, key)).map_err(py_err)?;
        Ok(v.map(|v| bytes(py, &v)))
    }

    fn delete(&self, py: Python<'_>, key: &[u8]) -> PyResult<()> {
        let id = self.id()?;
        py.detach(|| self.db.delete_tx(id, key)).map_err(py_err)
    }

    #[pyo3(signature = (start=None, end=None))]
    fn scan(
        &self,
        py: Python<'_>,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
    ) -> PyResult<ScanIter> {
        let id = self.id()?;
        let it = py
            .detach(|| self.db.scan_tx(id, start.as_deref(), end.as_deref()))
            .map_err(py_err)?;
        Ok(ScanIter::new(it, self.db.clone()))
    }

    /// Commit; `TransactionConflict` when another transaction wrote the same keys first.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let Some(id) = self.id.lock().take() else {
            return Err(TransactionNotFound::new_err("the transaction is finished"));
        };
        py.detach(|| self.db.commit_transaction(id)).map_err(py_err)
    }

    /// Discard the transaction's writes. Idempotent.
    fn abort(&self) -> PyResult<()> {
        match self.id.lock().take() {
            Some(id) => self.db.abort_transaction(id).map_err(py_err),
            None => Ok(()),
        }
    }

    #[getter]
    fn finished(&self) -> bool {
        self.id.lock().is_none()
    }
}

/// Query results, exported once through the Arrow PyCapsule stream protocol.
#[pyclass(module = "lightning_db._lightning_db", frozen)]
struct ArrowStream {
    reader: Mutex<Option<Box<dyn RecordBatchReader + Send>>>,
}

impl ArrowStream {
    fn of(batches: Vec<RecordBatch>) -> ArrowStream {
        // A result without batches (DDL, or no rows and no batch) has an empty schema.
        let schema: SchemaRef = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
        ArrowStream {
            reader: Mutex::new(Some(Box::new(reader))),
        }
    }

    /// A running query's batches, made as the consumer reads them.
    fn streaming(rows: SqlStream) -> ArrowStream {
        ArrowStream {
            reader: Mutex::new(Some(rows.into_reader())),
        }
    }
}

#[pymethods]
impl ArrowStream {
    /// The batches as an `arrow_array_stream` capsule; the buffers are shared, not
    /// copied. A requested schema is ignored (the result has the query's types).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = self
            .reader
            .lock()
            .take()
            .ok_or_else(|| PyException::new_err("the result stream was already consumed"))?;
        // The capsule owns the stream; its destructor releases it unless a consumer
        // moved it out (which leaves `release` null).
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), c"arrow_array_stream")
    }
}

#[pymodule]
fn _lightning_db(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeDatabase>()?;
    m.add_class::<NativeTransaction>()?;
    m.add_class::<ScanIter>()?;
    m.add_class::<ArrowStream>()?;
    m.add_class::<NativeStatement>()?;
    m.add("LightningError", py.get_type::<LightningError>())?;
    m.add("IoError", py.get_type::<IoError>())?;
    m.add("Corruption", py.get_type::<Corruption>())?;
    m.add("WrongKey", py.get_type::<WrongKey>())?;
    m.add("TransactionConflict", py.get_type::<TransactionConflict>())?;
    m.add("TransactionNotFound", py.get_type::<TransactionNotFound>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("DatabaseNotFound", py.get_type::<DatabaseNotFound>())?;
    m.add("DatabaseExists", py.get_type::<DatabaseExists>())?;
    m.add("Locked", py.get_type::<Locked>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("ReadOnly", py.get_type::<ReadOnly>())?;
    m.add("TableNotFound", py.get_type::<TableNotFound>())?;
    m.add("TableExists", py.get_type::<TableExists>())?;
    m.add("SchemaError", py.get_type::<SchemaError>())?;
    m.add("SqlError", py.get_type::<SqlError>())?;
    m.add("ConstraintViolation", py.get_type::<ConstraintViolation>())?;
    m.add("QueryLimitExceeded", py.get_type::<QueryLimitExceeded>())?;
    m.add("Fatal", py.get_type::<Fatal>())?;
    Ok(())
}
