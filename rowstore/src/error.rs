//! The row store's error type: one enum, with variants a caller can act on.

use std::path::PathBuf;

/// Result alias used throughout the row store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the row store reports. No variant is ever produced by a panic path:
/// bad input and bad bytes on disk come back as values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what we were doing when it happened.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk failed a checksum or a structural check. Never returned as data.
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
    /// A batch whose encoded size exceeds [`crate::MAX_BATCH_BYTES`].
    #[error("batch of {len} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge { len: usize, max: usize },
    /// A configuration value was refused at create/open.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument was refused (e.g. an empty or inverted range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `create` was called on a directory that already holds a database.
    #[error("a database already exists at {0}")]
    DatabaseExists(PathBuf),
    /// `open` was called on a directory that holds no database.
    #[error("no database found at {0}")]
    DatabaseNotFound(PathBuf),
    /// The directory holds database files but no `CURRENT` naming the live manifest
    /// (lost, or a create that never finished). Nothing was changed.
    #[error(
        "{dir} holds database files ({found}) but no CURRENT file naming the live \
         manifest; nothing was changed. Run `lightning-cli repair {dir}` to rebuild \
         CURRENT from the newest valid manifest"
    )]
    MissingCurrent { dir: PathBuf, found: String },
    /// `create` on a directory that holds files of its own.
    #[error("cannot create a database in {dir}: the directory is not empty (it holds {found})")]
    DirectoryNotEmpty { dir: PathBuf, found: String },
    /// Another process (or another handle in this process) has the database open.
    #[error("database at {0} is locked by another process or handle")]
    Locked(PathBuf),
    /// The database was closed.
    #[error("database is closed")]
    Closed,
    /// A write to a database opened read-only ([`crate::OpenMode::ReadOnly`]).
    #[error("the database is open read-only")]
    ReadOnly,
    /// An encrypted database opened without its key or with another one, or a
    /// plaintext database opened with a key. Nothing was changed.
    #[error("wrong encryption key: {0}")]
    WrongKey(String),
    /// A write or fsync of the WAL or a table file failed earlier. The instance stops
    /// accepting writes (fail-stop): retrying after a failed fsync could silently lose
    /// data, because the kernel may have dropped the dirty pages. Reopen to recover.
    #[error("database stopped after a fatal background or write error: {0}")]
    Fatal(String),
    /// A transaction lost a write-write (or, under Serializable, read-write) conflict.
    #[error("transaction conflict: {0}")]
    TransactionConflict(String),
    /// A transaction id that is unknown, already committed, aborted, or expired.
    #[error("transaction {0} is not active")]
    TransactionNotFound(u64),
    /// Too many transactions open at once.
    #[error("too many active transactions (limit {max})")]
    TooManyTransactions { max: usize },
}

impl Error {
    /// An I/O error; a read that failed authentication in an encrypted file
    /// ([`crate::crypto::AuthFailure`]) is corruption of that file instead.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if let Some(a) = crate::crypto::AuthFailure::find(&source) {
            return Error::corruption(&a.path, a.offset, a.reason.clone());
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy of this error for another waiter on the same failure (I/O errors keep
    /// their kind and message).
    pub fn share(&self) -> Error {
        match self {
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            Error::Corruption {
                file,
                offset,
                reason,
            } => Error::Corruption {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::Closed => Error::Closed,
            Error::ReadOnly => Error::ReadOnly,
            Error::WrongKey(m) => Error::WrongKey(m.clone()),
            Error::Fatal(m) => Error::Fatal(m.clone()),
            e => Error::Fatal(e.to_string()),
        }
    }

    /// True for a full disk or an exhausted quota: the one I/O failure that goes away
    /// by itself. The engine reports it and works again once space returns; every
    /// other write or sync failure stops the instance (fail-stop).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || source.kind() == std::io::ErrorKind::StorageFull
                || source.kind() == std::io::ErrorKind::QuotaExceeded)
    }

    /// True for errors that mean bytes on disk are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

/// Extension to attach context to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
