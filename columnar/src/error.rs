//! The column store's error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] lightning_rowstore::Error),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Data of a table written under a schema version newer than the reader's definition
    /// (an `ALTER TABLE` committed while the reader ran): run again.
    #[error("{0}")]
    Altered(String),
    /// A schema, type, or value that does not fit a table.
    #[error("{0}")]
    Schema(String),
}

impl Error {
    /// An I/O error; a read that failed authentication in an encrypted file is
    /// corruption of that file instead.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if let Some(a) = lightning_rowstore::crypto::AuthFailure::find(&source) {
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
}
