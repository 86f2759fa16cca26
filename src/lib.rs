//! # Lightning DB
//!
//! An embedded database: a durable, crash-safe, transactional ordered key-value store
//! (this crate's API), built on an LSM row store with MVCC snapshots.
//!
//! ```no_run
//! use lightning_db::{Database, LightningDbConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::create("./mydb", LightningDbConfig::default())?;
//! db.put(b"hello", b"world")?;
//! assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"world"[..]));
//! db.delete(b"hello")?;
//! # Ok(()) }
//! ```
//!
//! Limits: keys up to [`MAX_KEY_LEN`] bytes, values up to [`MAX_VALUE_LEN`] bytes, one
//! batch or transaction up to [`MAX_BATCH_BYTES`]; larger inputs are refused with
//! [`Error::KeyTooLarge`], [`Error::ValueTooLarge`] or [`Error::BatchTooLarge`].
//!
//! Layering (see ARCHITECTURE.md): this facade sits on `lightning-rowstore`; with the default
//! `sql` feature it also uses `lightning-columnar` and `lightning-query`. Built with
//! `default-features = false` it is a pure KV store with no Arrow or DataFusion.

#![deny(unsafe_op_in_unsafe_fn)]

mod config;
mod db;
pub mod encryption;
mod error;
#[cfg(feature = "sql")]
mod export;
#[cfg(feature = "flight")]
pub mod flight;
mod metrics;
pub mod monitoring;
#[cfg(feature = "sql")]
mod sql;
#[cfg(feature = "sql")]
mod tables;

/// The exact `arrow` crate the table API uses (use it to build `RecordBatch`es, so
/// versions always match).
#[cfg(feature = "sql")]
pub use arrow;
/// The exact `datafusion` crate the SQL layer uses.
#[cfg(feature = "sql")]
pub use datafusion;
#[cfg(feature = "sql")]
pub use export::{ExportFormat, ExportOptions, ExportReport};
#[cfg(feature = "sql")]
pub use lightning_columnar::RoundStats as ColumnarRoundStats;
#[cfg(feature = "sql")]
pub use sql::{Params, PreparedStatement, QueryLimits, SqlStream};
#[cfg(feature = "sql")]
pub use tables::to_table_types;

pub use config::{
    ConsistencyLevel, Durability, LightningDbConfig, SqlFileAccess, StorageEngine,
    default_columnar_cache_bytes,
};
pub use db::{Database, KvIter, KvRefIter, Tx, TxId};
pub use error::{Error, Result};
/// A batch of key-value puts and deletes, applied atomically by
/// [`Database::write_batch`].
pub use lightning_rowstore::WriteBatch as KvBatch;
pub use lightning_rowstore::repair::{DroppedWal, RepairOptions, RepairReport};
pub use metrics::{DiskUsage, HealthStatus, LatencySummary, Metrics};

/// The file-system seam every database file goes through (see
/// [`LightningDbConfig::vfs`]): the operating system's ([`vfs::StdVfs`]) and a
/// fault-injecting one for tests ([`vfs::FaultVfs`]: I/O errors, full disks, torn
/// writes, power loss).
pub mod vfs {
    pub use lightning_rowstore::vfs::{
        FaultKind, FaultOp, FaultRule, FaultVfs, Metadata, PowerLoss, StdVfs, Vfs, VfsFile,
        VfsLock, std_vfs,
    };
}

/// What [`check_files`] verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub tables_checked: u64,
    pub blocks_checked: u64,
    pub blocks_total: u64,
    pub wal_records_checked: u64,
    pub wal_torn_tails: u64,
    /// The B+Tree engine: extents of the tree checked (every one it reaches).
    pub tree_extents_checked: u64,
    pub segments_checked: u64,
    pub segments_total: u64,
}

/// Verify the database files in `dir` without opening the database (it may be open
/// elsewhere): the manifest, every live table's index and `percent`% of its blocks,
/// every WAL record, and `percent`% of the column segments. The first damage found is
/// returned as [`Error::Corruption`] naming the file and offset.
///
/// It works while the database is open and busy (in this process or another): a file
/// that a flush or compaction replaces while it is read is not reported; the check goes
/// on with the newer version, and the live WAL is read only up to its last whole record.
pub fn check_files(
    dir: &std::path::Path,
    percent: u8,
    progress: impl FnMut(&str),
) -> Result<CheckReport> {
    encryption::refuse_encrypted(dir)?;
    check_files_with(&vfs::std_vfs(), dir, percent, progress)
}

/// [`check_files`] through a given [`vfs::Vfs`].
pub fn check_files_with(
    vfs: &std::sync::Arc<dyn vfs::Vfs>,
    dir: &std::path::Path,
    percent: u8,
    mut progress: impl FnMut(&str),
) -> Result<CheckReport> {
    let r = lightning_rowstore::check::check_dir(vfs, dir, percent, &mut progress)?;
    #[cfg(feature = "sql")]
    let (segments_checked, segments_total) =
        lightning_columnar::store::check_files(&**vfs, dir, percent, &mut progress)?;
    #[cfg(not(feature = "sql"))]
    let (segments_checked, segments_total) = (0, 0);
    Ok(CheckReport {
        tables_checked: r.tables_checked,
        blocks_checked: r.blocks_checked,
        blocks_total: r.blocks_total,
        wal_records_checked: r.wal_records_checked,
        wal_torn_tails: r.wal_torn_tails,
        tree_extents_checked: r.tree_extents_checked,
        segments_checked,
        segments_total,
    })
}

/// Write a consistent file-level copy of the database in `dir` into `target` (which
/// must not exist), also while another process has it open and writes to it: every
/// write acknowledged before the call is in the copy. Tables are hard-linked on the
/// same file system, else copied and verified by checksum; the live WAL is copied up to
/// its last whole record. Nothing that existed before is removed. See
/// [`Database::checkpoint`] for a copy taken by the process that has it open.
pub fn backup_files(dir: &std::path::Path, target: &std::path::Path) -> Result<()> {
    encryption::refuse_encrypted(dir)?;
    backup_files_with(&vfs::std_vfs(), dir, target)
}

/// [`backup_files`] through a given [`vfs::Vfs`]; with [`encryption::vfs_for`] the
/// backup of an encrypted database stays encrypted under the same keys.
pub fn backup_files_with(
    vfs: &std::sync::Arc<dyn vfs::Vfs>,
    dir: &std::path::Path,
    target: &std::path::Path,
) -> Result<()> {
    Ok(lightning_rowstore::backup::backup_dir(
        &**vfs, dir, &**vfs, target,
    )?)
}

/// Repair a database directory that does not open (it must not be open): rebuild a
/// missing or damaged `CURRENT` from the newest valid manifest, and with
/// [`RepairOptions::truncate_wal`] drop WAL damage from the first damaged record on
/// (the dropped bytes are saved beside the segment, and the report says what they
/// held). Without `truncate_wal`, WAL damage is only reported.
pub fn repair(dir: &std::path::Path, options: RepairOptions) -> Result<RepairReport> {
    encryption::refuse_encrypted(dir)?;
    repair_with(&vfs::std_vfs(), dir, options)
}

/// [`repair`] through a given [`vfs::Vfs`] (an encrypted database: [`encryption::vfs_for`]).
pub fn repair_with(
    vfs: &std::sync::Arc<dyn vfs::Vfs>,
    dir: &std::path::Path,
    options: RepairOptions,
) -> Result<RepairReport> {
    Ok(lightning_rowstore::repair::repair_dir(
        &**vfs, dir, options,
    )?)
}

/// Largest key accepted, in bytes (32 KiB less 64 bytes reserved for table prefixes).
pub const MAX_KEY_LEN: usize = lightning_rowstore::MAX_KEY_LEN - 64;
/// Largest value accepted, in bytes (64 MiB).
pub const MAX_VALUE_LEN: usize = lightning_rowstore::MAX_VALUE_LEN;
/// Largest batch or transaction (keys + values + framing), in bytes (512 MiB).
pub const MAX_BATCH_BYTES: usize = lightning_rowstore::MAX_BATCH_BYTES;

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Database>();
}
