//! The row-engine seam: what the layers above (the column store, the query layer and
//! the facade) need from a row engine, as a trait with its contract, and [`Engine`],
//! the enum over the engines there are. Calls go through one `match` per call (not a
//! `dyn` call), so the hot paths stay monomorphic.
//!
//! Engines: [`LsmEngine`] (`crate::lsm`, the durable one) and [`MemoryEngine`]
//! (`crate::memory`, an ordered map of versions: the oracle the LSM is tested against).
//! A B+Tree engine would be a third variant implementing [`RowEngine`].

use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::key::{KeyRange, Ts};
use crate::lsm::{LsmEngine, LsmIter};
use crate::memory::{MemIter, MemoryEngine};
use crate::options::EngineOptions;
use crate::snapshot::{Snapshot, TxnSnapshot};
use std::path::Path;

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
    pub flushes: std::sync::atomic::AtomicU64,
    pub flush_bytes: std::sync::atomic::AtomicU64,
    pub compactions: std::sync::atomic::AtomicU64,
    pub compaction_bytes_read: std::sync::atomic::AtomicU64,
    pub compaction_bytes_written: std::sync::atomic::AtomicU64,
    pub stall_micros: std::sync::atomic::AtomicU64,
    pub flush_micros: std::sync::atomic::AtomicU64,
    pub compaction_micros: std::sync::atomic::AtomicU64,
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
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
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
}

/// A row engine: one of the engines there are. Hot-path calls dispatch with a `match`.
pub enum Engine {
    Lsm(LsmEngine),
    Memory(Box<MemoryEngine>),
}

macro_rules! each {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            Engine::Lsm($e) => $body,
            Engine::Memory($e) => $body,
        }
    };
}

/// An iterator of any engine.
pub enum DbIter {
    Lsm(LsmIter),
    Memory(MemIter),
}

impl Iterator for DbIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            DbIter::Lsm(i) => i.next(),
            DbIter::Memory(i) => i.next(),
        }
    }
}

impl Engine {
    /// Create or open the LSM database in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: EngineOptions, mode: OpenMode) -> Result<Engine> {
        LsmEngine::open(dir, opts, mode).map(Engine::Lsm)
    }

    /// [`LsmEngine::open_pinned`].
    pub fn open_pinned(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        mode: OpenMode,
        pin: Option<Ts>,
    ) -> Result<(Engine, Option<Snapshot>)> {
        LsmEngine::open_pinned(dir, opts, mode, pin).map(|(e, p)| (Engine::Lsm(e), p))
    }

    /// A new, empty in-memory engine (nothing is written to disk).
    pub fn memory(opts: EngineOptions) -> Engine {
        Engine::Memory(Box::new(MemoryEngine::new(opts)))
    }

    /// The LSM engine, if that is what this is.
    pub fn as_lsm(&self) -> Option<&LsmEngine> {
        match self {
            Engine::Lsm(e) => Some(e),
            Engine::Memory(_) => None,
        }
    }

    fn lsm_only(&self, what: &str) -> Result<&LsmEngine> {
        self.as_lsm()
            .ok_or_else(|| Error::InvalidArgument(format!("{what} needs an on-disk engine")))
    }

    pub fn dir(&self) -> &Path {
        match self {
            Engine::Lsm(e) => e.dir(),
            Engine::Memory(_) => Path::new(""),
        }
    }

    pub fn options(&self) -> &EngineOptions {
        each!(self, e => e.options())
    }

    pub fn write(&self, batch: WriteBatch) -> Result<Ts> {
        each!(self, e => e.write(batch))
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        each!(self, e => e.get(key))
    }

    #[inline]
    pub fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>> {
        each!(self, e => e.get_at(key, snap))
    }

    pub fn begin_txn(&self) -> Result<TxnSnapshot> {
        each!(self, e => e.begin_txn())
    }

    pub fn commit_checked(&self, batch: WriteBatch, check: CommitCheck) -> Result<Ts> {
        each!(self, e => e.commit_checked(batch, check))
    }

    /// Validate through the recent-commit index (true) or full lookups (false).
    pub fn set_fast_validation(&self, on: bool) {
        if let Engine::Lsm(e) = self {
            e.set_fast_validation(on)
        }
    }

    pub fn active_transactions(&self) -> usize {
        each!(self, e => e.active_transactions())
    }

    pub fn snapshot_at(&self, ts: Ts) -> Result<Snapshot> {
        each!(self, e => e.snapshot_at(ts))
    }

    /// For every user key in `[start, end)` whose newest version at or below `hi` was
    /// committed after `lo`, in key order: `f(key, that version's value or None if
    /// deleted)`. The caller holds a snapshot at or below `lo` and `hi` itself.
    pub fn for_each_change<E: From<Error>>(
        &self,
        hi: &Snapshot,
        lo: Ts,
        start: &[u8],
        end: &[u8],
        f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        each!(self, e => e.for_each_change(hi, lo, start, end, f))
    }

    pub fn snapshot(&self) -> Snapshot {
        each!(self, e => e.snapshot())
    }

    pub fn iter(&self, start: Option<&[u8]>, end: Option<&[u8]>, reverse: bool) -> Result<DbIter> {
        match self {
            Engine::Lsm(e) => e.iter(start, end, reverse).map(DbIter::Lsm),
            Engine::Memory(e) => e.iter(start, end, reverse).map(DbIter::Memory),
        }
    }

    pub fn iter_at(
        &self,
        snap: &Snapshot,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<DbIter> {
        match self {
            Engine::Lsm(e) => e.iter_at(snap, start, end, reverse).map(DbIter::Lsm),
            Engine::Memory(e) => e.iter_at(snap, start, end, reverse).map(DbIter::Memory),
        }
    }

    pub fn latest_commit_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        each!(self, e => e.latest_commit_ts(key))
    }

    pub fn visible_ts(&self) -> Ts {
        each!(self, e => e.visible_ts())
    }

    pub fn flush(&self) -> Result<()> {
        each!(self, e => e.flush())
    }

    pub fn compact_all(&self) -> Result<()> {
        each!(self, e => e.compact_all())
    }

    pub fn sizes(&self) -> EngineSizes {
        each!(self, e => e.sizes())
    }

    pub fn stats(&self) -> &EngineStats {
        each!(self, e => e.stats())
    }

    pub fn mmapped_bytes(&self) -> u64 {
        self.as_lsm().map_or(0, |e| e.mmapped_bytes())
    }

    pub fn background_threads(&self) -> usize {
        self.as_lsm().map_or(0, |e| e.background_threads())
    }

    pub fn is_closed(&self) -> bool {
        each!(self, e => e.is_closed())
    }

    pub fn fatal_error(&self) -> Option<String> {
        self.as_lsm().and_then(|e| e.fatal_error())
    }

    pub fn verify_tables(&self) -> Result<u64> {
        self.as_lsm().map_or(Ok(0), |e| e.verify_tables())
    }

    pub fn close(&self) -> Result<()> {
        each!(self, e => e.close())
    }

    /// [`LsmEngine::checkpoint`].
    pub fn checkpoint(&self, target: &Path, dst_vfs: Option<&dyn crate::vfs::Vfs>) -> Result<()> {
        self.lsm_only("a checkpoint")?.checkpoint(target, dst_vfs)
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
    is::<DbIter>();
    is::<Snapshot>();
}
