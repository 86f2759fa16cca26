//! The one error type of the `lightning_db` API.

use std::path::PathBuf;

/// Result alias for the `lightning_db` API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure Lightning DB reports. Nothing in the API panics on bad input or bad
/// bytes on disk; it returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Damaged bytes on disk (failed checksum or structure check), with file and offset.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A key longer than [`crate::MAX_KEY_LEN`].
    #[error("key of {len} bytes exceeds the maximum of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    /// A value longer than [`crate::MAX_VALUE_LEN`].
    #[error("value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    /// A batch larger than [`crate::MAX_BATCH_BYTES`].
    #[error("batch of {len} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge { len: usize, max: usize },
    /// A configuration value refused at create/open.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument refused by the API (for example an inverted scan range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `Database::create` on a path that already holds a database.
    #[error("a database already exists at {0}")]
    DatabaseExists(PathBuf),
    /// `Database::open` on a path that holds no database.
    #[error("no database found at {0}")]
    DatabaseNotFound(PathBuf),
    /// The directory holds database files but no `CURRENT` naming the live manifest
    /// (lost, or a create that never finished). Nothing was changed; `lightning-cli
    /// repair` rebuilds it from the newest valid manifest.
    #[error(
        "{dir} holds database files ({found}) but no CURRENT file naming the live \
         manifest; nothing was changed. Run `lightning-cli repair {dir}` to rebuild \
         CURRENT from the newest valid manifest"
    )]
    MissingCurrent { dir: PathBuf, found: String },
    /// `Database::create` on a directory that holds other files.
    #[error("cannot create a database in {dir}: the directory is not empty (it holds {found})")]
    DirectoryNotEmpty { dir: PathBuf, found: String },
    /// The database is open in another process or handle.
    #[error("database at {0} is locked by another process or handle")]
    Locked(PathBuf),
    /// The database was closed.
    #[error("database is closed")]
    Closed,
    /// A write (or compaction, or DDL) on a database opened with
    /// [`crate::Database::open_read_only`].
    #[error("the database is open read-only")]
    ReadOnly,
    /// An encrypted database opened without a key or with the wrong one (key,
    /// passphrase or key store), or a plaintext database opened with a key. Nothing was
    /// changed. The message never contains key material.
    #[error("wrong encryption key: {0}")]
    WrongKey(String),
    /// An earlier WAL/fsync or background write failed; the instance no longer accepts
    /// writes (fail-stop). Reopen the database to recover from the last durable state.
    #[error("database stopped after a fatal error: {0}")]
    Fatal(String),
    /// A transaction lost a conflict with a concurrent committed transaction; retrying
    /// it from the start may succeed.
    #[error("transaction conflict: {0}")]
    TransactionConflict(String),
    /// Unknown, finished, or expired transaction id.
    #[error("transaction {0} is not active")]
    TransactionNotFound(u64),
    /// `max_active_transactions` transactions are already open.
    #[error("too many active transactions (limit {max})")]
    TooManyTransactions { max: usize },
    /// A table, column, type or row that does not fit (names the table or column).
    #[error("{0}")]
    Schema(String),
    /// No table of that name.
    #[error("table {0} does not exist")]
    TableNotFound(String),
    /// `create_table` of a name that is taken.
    #[error("Table '{0}' already exists")]
    TableExists(String),
    /// An error from Arrow while encoding or decoding columns.
    #[error("arrow error: {0}")]
    Arrow(String),
    /// A SQL statement that could not be parsed, planned or run (bad syntax, unknown
    /// table or column, type mismatch...). Nothing was changed.
    #[error("SQL error: {0}")]
    Sql(String),
    /// A statement broke a constraint (duplicate or NULL primary key). Nothing was
    /// changed.
    #[error("{0}")]
    Constraint(String),
    /// A statement went past a limit it ran under (its memory budget or its deadline,
    /// see `QueryLimits`) and was stopped. Nothing was changed.
    #[error("query limit: {0}")]
    QueryLimit(String),
}

#[cfg(feature = "sql")]
impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        // Our own error inside one of DataFusion's wrappers: a broken constraint, a lost
        // conflict and damaged bytes keep their kind (a caller retries on
        // `is_conflict()`, alerts on `is_corruption()`).
        fn ours(b: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<Error> {
            if let Some(c) = b.downcast_ref::<lightning_query::ConstraintViolation>() {
                return Some(Error::Constraint(c.to_string()));
            }
            let row = |r: &lightning_rowstore::Error| match r {
                lightning_rowstore::Error::TransactionConflict(m) => {
                    Some(Error::TransactionConflict(m.clone()))
                }
                lightning_rowstore::Error::Corruption { .. } => Some(Error::from(r.share())),
                lightning_rowstore::Error::ReadOnly => Some(Error::ReadOnly),
                _ => None,
            };
            if let Some(Error::ReadOnly) = b.downcast_ref::<Error>() {
                return Some(Error::ReadOnly);
            }
            if let Some(r) = b.downcast_ref::<lightning_rowstore::Error>() {
                return row(r);
            }
            match b.downcast_ref::<lightning_columnar::Error>()? {
                lightning_columnar::Error::Storage(r) => row(r),
                lightning_columnar::Error::Altered(m) => {
                    Some(Error::TransactionConflict(m.clone()))
                }
                lightning_columnar::Error::Corruption {
                    file,
                    offset,
                    reason,
                } => Some(Error::Corruption {
                    file: file.clone(),
                    offset: *offset,
                    reason: reason.clone(),
                }),
                _ => None,
            }
        }
        // A boxed error: one of ours, or a DataFusion error wrapped once more.
        fn external(b: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<Error> {
            match b.downcast_ref::<D>() {
                Some(inner) => find(inner),
                None => ours(b),
            }
        }
        fn find(e: &D) -> Option<Error> {
            match e {
                D::ResourcesExhausted(m) => Some(Error::QueryLimit(m.clone())),
                D::External(b) => external(b.as_ref()),
                D::ArrowError(a, _) => match a.as_ref() {
                    arrow::error::ArrowError::ExternalError(b) => external(b.as_ref()),
                    _ => None,
                },
                D::Context(_, inner) => find(inner),
                D::Shared(inner) => find(inner),
                _ => None,
            }
        }
        match find(&e) {
            Some(x) => x,
            None => {
                // DataFusion's SQL errors carry their own "SQL error: " prefix; ours
                // adds it once.
                let msg = match &e {
                    D::SQL(p, _) => p.to_string(),
                    e => e.strip_backtrace(),
                };
                if msg.contains("transaction conflict") {
                    Error::TransactionConflict(msg)
                } else {
                    Error::Sql(msg)
                }
            }
        }
    }
}

/// An I/O error, or the corruption an encrypted block that failed authentication is.
fn io_error(context: String, source: std::io::Error) -> Error {
    match lightning_rowstore::crypto::AuthFailure::find(&source) {
        Some(a) => Error::Corruption {
            file: a.path.clone(),
            offset: a.offset,
            reason: a.reason.clone(),
        },
        None => Error::Io { context, source },
    }
}

#[cfg(feature = "sql")]
impl From<lightning_columnar::Error> for Error {
    fn from(e: lightning_columnar::Error) -> Self {
        use lightning_columnar::Error as E;
        match e {
            E::Storage(e) => e.into(),
            E::Arrow(e) => Error::Arrow(e.to_string()),
            E::Io { context, source } => io_error(context, source),
            E::Corruption {
                file,
                offset,
                reason,
            } => Error::Corruption {
                file,
                offset,
                reason,
            },
            E::Schema(m) => Error::Schema(m),
            E::Altered(m) => Error::TransactionConflict(m),
        }
    }
}

#[cfg(feature = "sql")]
impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Arrow(e.to_string())
    }
}

impl Error {
    /// True if bytes on disk were found damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// True if retrying the transaction may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::TransactionConflict(_))
    }
}

impl From<lightning_rowstore::Error> for Error {
    fn from(e: lightning_rowstore::Error) -> Self {
        use lightning_rowstore::Error as E;
        match e {
            E::Io { context, source } => io_error(context, source),
            E::Corruption {
                file,
                offset,
                reason,
            } => Error::Corruption {
                file,
                offset,
                reason,
            },
            E::KeyTooLarge { len, max } => Error::KeyTooLarge { len, max },
            E::ValueTooLarge { len, max } => Error::ValueTooLarge { len, max },
            E::BatchTooLarge { len, max } => Error::BatchTooLarge { len, max },
            E::InvalidConfig(m) => Error::InvalidConfig(m),
            E::InvalidArgument(m) => Error::InvalidArgument(m),
            E::DatabaseExists(p) => Error::DatabaseExists(p),
            E::DatabaseNotFound(p) => Error::DatabaseNotFound(p),
            E::MissingCurrent { dir, found } => Error::MissingCurrent { dir, found },
            E::DirectoryNotEmpty { dir, found } => Error::DirectoryNotEmpty { dir, found },
            E::Locked(p) => Error::Locked(p),
            E::Closed => Error::Closed,
            E::ReadOnly => Error::ReadOnly,
            E::WrongKey(m) => Error::WrongKey(m),
            E::Fatal(m) => Error::Fatal(m),
            E::TransactionConflict(m) => Error::TransactionConflict(m),
            E::TransactionNotFound(id) => Error::TransactionNotFound(id),
            E::TooManyTransactions { max } => Error::TooManyTransactions { max },
        }
    }
}
