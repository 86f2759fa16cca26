//! The row-engine contract: the [`RowEngine`] trait every engine implements, and the
//! types it speaks in. Engines (`crate::lsm`, `crate::memory`) depend on this module;
//! `crate::engine` puts them together, so no module depends on one that depends on it.

use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::key::{KeyRange, Ts};
use crate::snapshot::{Snapshot, TxnSnapshot};

/// Whether `open` creates a new database or opens an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Fail if a database exists at the path (or the directory holds other files).
    Create,
    /// Fail if no database exists at the path.
    Open,
    /// Open the database at the path, or create one if the directory is empty or
    /// missing.
    OpenOrCreate,
    /// Open an existing database for reading only: a shared lock instead of the
    /// exclusive one (any number of read-only handles, in any processes, at once; a
    /// writer cannot open while one is held, nor one while a writer is), the WAL
    /// replayed into memory, nothing in the directory written, created or removed, no
    /// background thread. Writes fail with [`crate::Error::ReadOnly`].
    ReadOnly,
}

/// Counters kept by the engine (monotonic since open).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub gets: crate::counter::StripedCounter,
    pub commits: std::sync::atomic::AtomicU64,
    pub puts: std::sync::atomic::AtomicU64,
    pub deletes: std::sync::atomic::AtomicU64,
    pub wal_bytes: std::sync::atomic::AtomicU64,
    pub wal_syncs: std::sync::atomic::AtomicU64,
    pub wal_sync_micros: std::sync::atomic::AtomicU64,
    /// Commit groups taken by the writer whose request completed them, rather than by
    /// the leader that waited for them (see the LSM's `gather`).
    pub gather_handoffs: std::sync::atomic::AtomicU64,
    /// Groups completed on a slow processor and taken by one of their writers on a
    /// faster one (see the LSM's `sync_cpu`).
    pub offers_taken: std::sync::atomic::AtomicU64,
    /// Waits for a commit group that saw it done while yielding the processor, without
    /// sleeping (see `EngineOptions::commit_yield`).
    pub commit_yields: std::sync::atomic::AtomicU64,
    pub flushes: std::sync::atomic::AtomicU64,
    pub flush_bytes: std::sync::atomic::AtomicU64,
    pub compactions: std::sync::atomic::AtomicU64,
    pub compaction_bytes_read: std::sync::atomic::AtomicU64,
    pub compaction_bytes_written: std::sync::atomic::AtomicU64,
    pub stall_micros: std::sync::atomic::AtomicU64,
    pub flush_micros: std::sync::atomic::AtomicU64,
    pub compaction_micros: std::sync::atomic::AtomicU64,
    /// Latency of every write outside a transaction ([`crate::engine::Engine::write`]):
    /// key-value puts, deletes and batches, table writes, SQL DML, catalog changes.
    pub put_latency: crate::counter::LatencyHistogram,
    /// Latency of every checked commit ([`crate::engine::Engine::commit_checked`]:
    /// transactions through any API, validation included).
    pub commit_latency: crate::counter::LatencyHistogram,
}

/// A point-in-time view of engine sizes.
#[derive(Debug, Clone, Default)]
pub struct EngineSizes {
    pub tables_per_level: Vec<usize>,
    pub bytes_per_level: Vec<u64>,
    pub memtable_bytes: u64,
    pub immutable_memtables: usize,
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub visible_ts: Ts,
    pub wal_bytes_on_disk: u64,
}

/// What a transactional commit must validate.
#[derive(Debug, Clone, Default)]
pub struct CommitCheck {
    /// The transaction's snapshot timestamp.
    pub start_ts: Ts,
    /// Keys read (serializable only).
    pub read_keys: Vec<Vec<u8>>,
    /// Ranges `[start, end)` scanned (serializable only).
    pub read_ranges: Vec<KeyRange>,
}

/// What every row engine provides. The contract (the model tests check it on every
/// engine, against [`MemoryEngine`]):
///
/// - **Versions.** Every write is a batch committed atomically at one commit timestamp,
///   greater than every earlier one; a reader at snapshot `s` sees exactly the newest
///   version at or below `s` of every key, and never part of a batch.
/// - **Snapshots.** A registered [`Snapshot`] at `s` keeps every version it can see
///   readable until it drops; versions in `(lo, hi]` stay readable while a snapshot at
///   or below `lo` is registered (what [`RowEngine::for_each_change`] relies on).
/// - **Transactions.** [`RowEngine::commit_checked`] refuses a batch if a commit after
///   `check.start_ts` wrote one of its keys, or (serializable) one of the keys or
///   ranges it read: first committer wins.
/// - **Durability.** A write that returned is durable as the options say; an I/O
///   failure that could lose acknowledged data stops the engine (fail-stop,
///   `Error::Fatal`).
pub trait RowEngine: Send + Sync {
    type Iter: Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send;

    /// Apply `batch` atomically; returns its commit timestamp.
    fn write(&self, batch: WriteBatch) -> Result<Ts>;
    /// Commit `batch` if it passes `check` (see the trait docs).
    fn commit_checked(&self, batch: WriteBatch, check: CommitCheck) -> Result<Ts>;
    /// The newest value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(key, &mut <[u8]>::to_vec)
    }
    /// [`RowEngine::get`], lending the newest value to `f` (called at most once, only
    /// when there is a value) where it lies instead of copying it out.
    fn get_with<R>(&self, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Result<Option<R>>;
    /// The value of `key` at `snap`.
    fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>>;
    /// The newest commit timestamp of `key`, if it was ever written.
    fn latest_commit_ts(&self, key: &[u8]) -> Result<Option<Ts>>;
    /// A snapshot of the newest commit.
    fn snapshot(&self) -> Snapshot;
    /// A snapshot at an earlier `ts` (refused if versions it needs may be gone).
    fn snapshot_at(&self, ts: Ts) -> Result<Snapshot>;
    /// A transaction's snapshot (counted as an open transaction until it drops).
    fn begin_txn(&self) -> Result<TxnSnapshot>;
    /// Keys in `[start, end)` at the newest commit, ascending or descending.
    fn iter(&self, start: Option<&[u8]>, end: Option<&[u8]>, reverse: bool) -> Result<Self::Iter>;
    /// Keys in `[start, end)` at `snap`.
    fn iter_at(
        &self,
        snap: &Snapshot,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<Self::Iter>;
    /// The newest visible commit timestamp.
    fn visible_ts(&self) -> Ts;
    /// Make everything written so far independent of the WAL (no-op where there is
    /// none).
    fn flush(&self) -> Result<()>;
    /// Flush, then merge everything and drop what no snapshot needs.
    fn compact_all(&self) -> Result<()>;
    /// Stop background work and release resources; later calls fail with `Closed`.
    fn close(&self) -> Result<()>;
    /// For every user key in `[start, end)` whose newest version at or below `hi` was
    /// committed after `lo`, in key order: `f(key, that version's value or None if
    /// deleted)`, with slices valid only during the call. The caller holds a snapshot
    /// at or below `lo` (so the versions and tombstones in `(lo, hi]` are still there)
    /// and `hi` itself. What the column store folds into segments.
    fn for_each_change<E: From<Error>>(
        &self,
        hi: &Snapshot,
        lo: Ts,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E>;
    /// Open transactions.
    fn active_transactions(&self) -> usize;
    /// Sizes of the engine's structures, for metrics.
    fn sizes(&self) -> EngineSizes;
    /// Counters since open.
    fn stats(&self) -> &EngineStats;
}
