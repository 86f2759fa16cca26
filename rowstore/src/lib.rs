//! # lightning-rowstore
//!
//! The row store of Lightning DB: a durable, crash-safe, ordered, multi-versioned
//! key-value engine. It owns everything in the database directory except `columnar/`:
//! write-ahead log segments (`*.log`), sorted tables (`*.sst`), the manifest
//! (`MANIFEST-*`, named by `CURRENT`) and the `LOCK` file. Formats are described in
//! `FORMAT.md` next to this crate.
//!
//! Every key is stored with the commit timestamp of the write (MVCC), so the memtable,
//! tables and iterators all serve reads at a snapshot. Writes are atomic batches that go
//! through one commit pipeline (WAL, group commit, memtable); flush and leveled compaction
//! run on background threads.
//!
//! This layer knows nothing of tables, SQL or Arrow, and never panics on bad input or bad
//! bytes on disk: those are typed errors.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod backup;
pub mod batch;
pub mod btree;
pub mod cache_line;
pub mod check;
pub mod coding;
pub mod compression;
pub mod counter;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod files;
pub mod format;
pub mod iter;
pub mod key;
pub mod log;
mod log_zero;
pub mod lsm;
pub mod manifest;
pub mod memory;
pub mod memtable;
pub mod options;
pub mod packed;
pub mod repair;
pub mod row_engine;
pub(crate) mod skiplist;
pub mod snapshot;
pub mod sst;
pub mod txn;
pub mod version;
pub mod vfs;

pub use batch::{BatchOp, WriteBatch};
pub use compression::Compression;
pub use engine::{
    CommitCheck, DbIter, Engine, EngineSizes, EngineStats, Ingest, OpenMode, RowEngine,
};
pub use error::{Error, Result};
pub use key::Ts;
pub use lsm::LsmEngine;
pub use memory::MemoryEngine;
pub use options::{DEFAULT_MEMTABLE_SIZE, Durability, EngineOptions, StorageKind};
pub use snapshot::{Snapshot, TxnSnapshot};
pub use txn::{Isolation, Transaction, TxnIter};

/// Largest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 32 * 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// Largest write batch accepted (sum of keys, values and framing), in bytes.
pub const MAX_BATCH_BYTES: usize = 512 * 1024 * 1024;
