//! The LSM engine: commit pipeline (WAL + group commit), memtables, flush, leveled
//! compaction, and snapshot reads.
//!
//! Invariants relied on below:
//! - Commit timestamps are assigned by the single commit leader, in WAL order, and a
//!   batch becomes visible (`visible_ts`) only after all of its entries are in the
//!   memtable. Readers never see a partial batch.
//! - A memtable is frozen before any write goes to its successor. A reader that loads a
//!   super-version, then reads `visible_ts`, and then finds the memtable still unfrozen
//!   knows every commit <= its snapshot is reachable from that super-version.
//! - Flush and compaction drop a version only if a newer version of the same key is at
//!   or below the GC horizon (the oldest registered snapshot, or `visible_ts` when none),
//!   so every snapshot that can still be read keeps the version it needs.
//! - Within one super-version the sources are ordered newest first, and for any key the
//!   versions in a newer source are newer than those in an older one.

use crate::batch::WriteBatch;
use crate::cache::BlockCache;
use crate::error::{Error, IoContext, Result};
use crate::iter::{MergeIter, VisibleIter};
use crate::key::{KeyRange, Ts};
use crate::log::{self, LogWriter, Tail};
use crate::manifest::{self, Manifest, ManifestState, NUM_LEVELS, VersionEdit};
use crate::memtable::{Lookup, MemTable};
use crate::options::{Durability, EngineOptions};
use crate::prefetch::Prefetcher;
use crate::sst::{Table, TableBuilder, TableMeta, bloom};
use crate::version::{SuperVersion, Version};
use crate::vfs::{self, MmapBudget, Vfs};
use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format::{WAL_MAGIC, WAL_VERSION};
const MANIFEST_ROTATE_BYTES: u64 = 32 << 20;

mod checkpoint;
mod open;

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
    pub commits: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub wal_sync_micros: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_bytes: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub stall_micros: AtomicU64,
    pub flush_micros: AtomicU64,
    pub compaction_micros: AtomicU64,
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

/// A registered snapshot: flush and compaction keep every version it can see.
pub struct Snapshot {
    inner: Arc<Inner>,
    ts: Ts,
}

impl Snapshot {
    pub fn ts(&self) -> Ts {
        self.ts
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut m = self.inner.snapshots.lock();
        if let Some(c) = m.get_mut(&self.ts) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.ts);
            }
        }
    }
}

/// The snapshot of an open transaction; dropping it ends the transaction's hold.
pub struct TxnSnapshot {
    snap: Snapshot,
}

impl TxnSnapshot {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }
    pub fn ts(&self) -> Ts {
        self.snap.ts
    }
}

impl Drop for TxnSnapshot {
    fn drop(&mut self) {
        self.snap.inner.active_txns.fetch_sub(1, Ordering::SeqCst);
    }
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

/// A user-visible iterator over one consistent state of the database.
pub struct DbIter {
    inner: VisibleIter,
    // Pins the tables and memtables being read.
    _sv: Arc<SuperVersion>,
}

impl Iterator for DbIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

enum ReqState {
    Waiting,
    Lead,
    Done(Result<Ts>),
}

struct WriteReq {
    batch: WriteBatch,
    /// Switch to a new memtable before applying (used by `flush`).
    force_switch: bool,
    /// Conflict validation for transactional commits.
    check: Option<CommitCheck>,
    /// Set by the leader when validation refused this request.
    rejected: Mutex<Option<Error>>,
    ts: AtomicU64,
    state: Mutex<ReqState>,
    cv: Condvar,
}

impl WriteReq {
    fn finish(&self, r: Result<Ts>) {
        *self.state.lock() = ReqState::Done(r);
        self.cv.notify_one();
    }
}

#[derive(Default)]
struct CommitQueue {
    pending: Vec<Arc<WriteReq>>,
    leader_active: bool,
    closed: bool,
    /// Writers seen in flight around the last group: its size plus those that queued
    /// while it was being written. The next leader waits (briefly) for that many.
    concurrency: usize,
    /// Duration of the last WAL sync; the most worth waiting to fill a group.
    last_sync: Duration,
}

struct State {
    manifest: Manifest,
    mstate: ManifestState,
    version: Arc<Version>,
    busy_levels: [bool; NUM_LEVELS],
    compact_pointer: Vec<Option<Vec<u8>>>,
}

struct Inner {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    opts: EngineOptions,
    lock_file: Mutex<Option<Box<dyn crate::vfs::VfsLock>>>,
    sv: ArcSwap<SuperVersion>,
    state: Mutex<State>,
    next_file_id: AtomicU64,
    /// Ids below this are reserved in the manifest (see `open::ID_CHUNK`).
    id_limit: AtomicU64,
    /// Numbers of files found in the directory that this database did not create.
    foreign_ids: Arc<std::collections::BTreeSet<u64>>,
    visible_ts: AtomicU64,
    last_ts: AtomicU64,
    queue: Mutex<CommitQueue>,
    serial_commit: Mutex<()>,
    wal: Mutex<Option<LogWriter>>,
    snapshots: Mutex<BTreeMap<Ts, usize>>,
    cache: Option<Arc<BlockCache>>,
    mmap: Option<Arc<MmapBudget>>,
    prefetcher: Option<Arc<Prefetcher>>,
    bg: Mutex<()>,
    bg_cv: Condvar,
    shutdown: AtomicBool,
    fatal: Mutex<Option<String>>,
    has_fatal: AtomicBool,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: EngineStats,
    /// Open transactions (see the Dekker note in `commit_group`).
    active_txns: std::sync::atomic::AtomicUsize,
    /// Keys committed while transactions were open, with their newest commit ts.
    recent_commits: Mutex<BTreeMap<Vec<u8>, Ts>>,
    /// Validate commits against `recent_commits` instead of the LSM tree.
    fast_validation: AtomicBool,
    /// Held while closing, so concurrent `close` calls wait for the first.
    close_lock: Mutex<()>,
    /// The last background flush or compaction failure, until one succeeds again.
    bg_error: Mutex<Option<Error>>,
}

/// The row store's LSM engine. `Send + Sync`; share it behind an `Arc`.
pub struct Engine {
    inner: Arc<Inner>,
}

/// Bytes to preallocate for a WAL segment: what one memtable's records take, plus slack.
fn wal_prealloc(opts: &EngineOptions) -> u64 {
    opts.write_buffer_size as u64 + (1 << 20)
}

impl Engine {
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// Apply `batch` atomically; returns its commit timestamp.
    pub fn write(&self, batch: WriteBatch) -> Result<Ts> {
        self.inner.check_writable()?;
        if batch.is_empty() {
            return Ok(self.inner.visible_ts.load(Ordering::Acquire));
        }
        self.inner.submit(batch, false)
    }

    /// Newest value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.stats.gets.add(1);
        // Same protocol as `read_view`, with a cheap guard instead of an Arc clone (a
        // shared refcount would bounce between reader cores).
        loop {
            let sv = self.inner.sv.load();
            let s = self.inner.visible_ts.load(Ordering::Acquire);
            if !sv.mem.is_frozen() {
                return self.inner.get_in(&sv, key, s);
            }
            std::hint::spin_loop();
        }
    }

    /// Value of `key` as of `snap`.
    pub fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.stats.gets.add(1);
        let sv = self.inner.sv.load();
        self.inner.get_in(&sv, key, snap.ts)
    }

    /// Begin a transaction's snapshot: registered for GC and counted as an open
    /// transaction until the returned guard drops.
    pub fn begin_txn(&self) -> Result<TxnSnapshot> {
        self.inner.check_writable()?;
        self.inner.active_txns.fetch_add(1, Ordering::SeqCst);
        let mut m = self.inner.snapshots.lock();
        let ts = self.inner.visible_ts.load(Ordering::SeqCst);
        *m.entry(ts).or_insert(0) += 1;
        drop(m);
        Ok(TxnSnapshot {
            snap: Snapshot {
                inner: self.inner.clone(),
                ts,
            },
        })
    }

    /// Commit `batch` if no transaction that committed after `check.start_ts` wrote a
    /// key in the batch or (for serializable checks) in the read set.
    pub fn commit_checked(&self, batch: WriteBatch, check: CommitCheck) -> Result<Ts> {
        self.inner.check_writable()?;
        self.inner.submit_checked(batch, false, Some(check))
    }

    /// Validate through the recent-commit index (true) or LSM lookups (false).
    pub fn set_fast_validation(&self, on: bool) {
        self.inner.fast_validation.store(on, Ordering::Relaxed);
    }

    /// Number of open transactions.
    pub fn active_transactions(&self) -> usize {
        self.inner.active_txns.load(Ordering::Relaxed)
    }

    /// Register a snapshot at an earlier timestamp `ts`. Only possible while no version
    /// `ts` needs can have been collected yet: `ts` must be at or above the current GC
    /// horizon (an older registered snapshot, such as an open pin, keeps it there).
    pub fn snapshot_at(&self, ts: Ts) -> Result<Snapshot> {
        let mut m = self.inner.snapshots.lock();
        let v = self.inner.visible_ts.load(Ordering::Acquire);
        let horizon = m.keys().next().map_or(v, |&s| s.min(v));
        if ts < horizon || ts > v {
            return Err(Error::InvalidArgument(format!(
                "cannot take a snapshot at {ts}: versions are kept only from {horizon} to {v}"
            )));
        }
        *m.entry(ts).or_insert(0) += 1;
        Ok(Snapshot {
            inner: self.inner.clone(),
            ts,
        })
    }

    /// For every user key in `[start, end)` whose newest version at or below `hi` was
    /// committed after `lo`, in key order: `f(key, that version's value or None if
    /// deleted)`, with slices valid only during the call. The caller must hold a snapshot
    /// at or below `lo` (so the versions and tombstones in `(lo, hi]` were not
    /// collected) and `hi` itself.
    pub fn for_each_change<E: From<Error>>(
        &self,
        hi: &Snapshot,
        lo: Ts,
        start: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.inner.check_open()?;
        let sv = self.inner.sv.load_full();
        let mut merge =
            MergeIter::over_newer_than(&sv, Some(start), Some(end), false, None, Some(lo))?;
        let mut key: Vec<u8> = Vec::new();
        let mut have_key = false;
        let mut decided = false;
        while let Some((k, ts, v)) = merge.current() {
            if !have_key || k != key.as_slice() {
                key.clear();
                key.extend_from_slice(k);
                have_key = true;
                decided = false;
            }
            // Versions of a key arrive newest first: the first one <= hi decides.
            if !decided && ts <= hi.ts {
                decided = true;
                if ts > lo {
                    f(k, v)?;
                }
            }
            merge.advance()?;
        }
        Ok(())
    }

    /// Take a registered snapshot of the current state.
    pub fn snapshot(&self) -> Snapshot {
        let mut m = self.inner.snapshots.lock();
        let ts = self.inner.visible_ts.load(Ordering::Acquire);
        *m.entry(ts).or_insert(0) += 1;
        Snapshot {
            inner: self.inner.clone(),
            ts,
        }
    }

    /// Iterate user keys in `[start, end)` at the current state.
    pub fn iter(&self, start: Option<&[u8]>, end: Option<&[u8]>, reverse: bool) -> Result<DbIter> {
        self.inner.check_open()?;
        let (sv, s) = self.inner.read_view();
        self.iter_in(sv, s, start, end, reverse)
    }

    /// Iterate user keys in `[start, end)` as of `snap`.
    pub fn iter_at(
        &self,
        snap: &Snapshot,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<DbIter> {
        self.inner.check_open()?;
        let sv = self.inner.sv.load_full();
        self.iter_in(sv, snap.ts, start, end, reverse)
    }

    fn iter_in(
        &self,
        sv: Arc<SuperVersion>,
        s: Ts,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<DbIter> {
        let prefetch = match (&self.inner.prefetcher, self.inner.opts.prefetch) {
            (Some(p), Some((_, d))) => Some((p.clone(), d)),
            _ => None,
        };
        let merge = MergeIter::over(&sv, start, end, reverse, prefetch)?;
        Ok(DbIter {
            inner: VisibleIter::new(merge, s, reverse),
            _sv: sv,
        })
    }

    /// Newest commit timestamp of `key` across all sources (for conflict detection).
    pub fn latest_commit_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        let sv = self.inner.sv.load_full();
        self.inner.latest_ts_in(&sv, key)
    }

    /// The newest visible commit timestamp.
    pub fn visible_ts(&self) -> Ts {
        self.inner.visible_ts.load(Ordering::Acquire)
    }

    /// Write the memtable to a table file and wait until no memtable awaits flush.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.submit(WriteBatch::new(), true)?;
        self.inner.wait_for_flushes()
    }

    /// Flush, then merge every table into the last populated level, dropping every
    /// overwritten version and tombstone that no snapshot needs.
    pub fn compact_all(&self) -> Result<()> {
        self.flush()?;
        self.inner.compact_everything()
    }

    /// Sizes and cache figures right now.
    pub fn sizes(&self) -> EngineSizes {
        let sv = self.inner.sv.load_full();
        let v = &sv.version;
        EngineSizes {
            tables_per_level: v.levels.iter().map(Vec::len).collect(),
            bytes_per_level: (0..NUM_LEVELS).map(|l| v.level_bytes(l)).collect(),
            memtable_bytes: (sv.mem.approximate_bytes()
                + sv.imms.iter().map(|m| m.approximate_bytes()).sum::<usize>())
                as u64,
            immutable_memtables: sv.imms.len(),
            cache_bytes: self.inner.cache.as_ref().map_or(0, |c| c.used_bytes()),
            cache_hits: self.inner.cache.as_ref().map_or(0, |c| c.hits()),
            cache_misses: self.inner.cache.as_ref().map_or(0, |c| c.misses()),
            visible_ts: self.visible_ts(),
            wal_bytes_on_disk: self.inner.wal.lock().as_ref().map_or(0, |w| w.len()),
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Bytes currently memory-mapped for table reads.
    pub fn mmapped_bytes(&self) -> u64 {
        self.inner.mmap.as_ref().map_or(0, |m| m.used())
    }

    /// Number of background threads running (flush, compaction, prefetch excluded).
    pub fn background_threads(&self) -> usize {
        self.inner
            .threads
            .lock()
            .iter()
            .filter(|h| !h.is_finished())
            .count()
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The fatal error that stopped writes, if any.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner.fatal.lock().clone()
    }

    /// Verify every block of every live table; returns the number of entries checked.
    pub fn verify_tables(&self) -> Result<u64> {
        let sv = self.inner.sv.load_full();
        let mut n = 0;
        for l in &sv.version.levels {
            for t in l {
                n += t.verify()?;
            }
        }
        Ok(n)
    }

    /// Flush, stop background threads and release the directory lock. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.inner.close() {
            tracing::error!(error = %e, "error while closing the database");
        }
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.has_fatal.load(Ordering::Acquire) {
            return Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default()));
        }
        Ok(())
    }

    fn set_fatal(&self, e: &Error) {
        tracing::error!(error = %e, "fatal error: the database stops accepting writes");
        let mut f = self.fatal.lock();
        if f.is_none() {
            *f = Some(e.to_string());
        }
        self.has_fatal.store(true, Ordering::Release);
        self.notify();
    }

    /// Stop the instance for good after `e` (fail-stop) and return what the caller
    /// gets: [`Error::Fatal`].
    fn fail(&self, e: Error) -> Error {
        self.set_fatal(&e);
        match e {
            Error::Fatal(_) => e,
            e => Error::Fatal(e.to_string()),
        }
    }

    fn notify(&self) {
        let _g = self.bg.lock();
        self.bg_cv.notify_all();
    }

    /// A super-version and a snapshot timestamp such that every commit <= the snapshot
    /// is reachable from the super-version and no version visible at the snapshot has
    /// been garbage collected from it.
    fn read_view(&self) -> (Arc<SuperVersion>, Ts) {
        loop {
            let sv = self.sv.load_full();
            let s = self.visible_ts.load(Ordering::Acquire);
            if !sv.mem.is_frozen() {
                return (sv, s);
            }
            std::hint::spin_loop();
        }
    }

    fn gc_horizon(&self) -> Ts {
        let m = self.snapshots.lock();
        let v = self.visible_ts.load(Ordering::Acquire);
        m.keys().next().map_or(v, |&s| s.min(v))
    }

    fn get_in(&self, sv: &SuperVersion, key: &[u8], s: Ts) -> Result<Option<Vec<u8>>> {
        let resolve = |l: Lookup| match l {
            Lookup::Found(v) => Some(Some(v)),
            Lookup::Deleted => Some(None),
            Lookup::NotFound => None,
        };
        if let Some(r) = resolve(sv.mem.get(key, s)) {
            return Ok(r);
        }
        for m in &sv.imms {
            if let Some(r) = resolve(m.get(key, s)) {
                return Ok(r);
            }
        }
        let h = bloom::key_hash(key);
        for t in &sv.version.levels[0] {
            if t.meta().overlaps(Some(key), Some(key))
                && t.may_contain_hash(h)
                && let Some(r) = resolve(t.get(key, s)?)
            {
                return Ok(r);
            }
        }
        for level in 1..NUM_LEVELS {
            if let Some(t) = sv.version.find_in_level(level, key)
                && t.may_contain_hash(h)
                && let Some(r) = resolve(t.get(key, s)?)
            {
                return Ok(r);
            }
        }
        Ok(None)
    }

    fn latest_ts_in(&self, sv: &SuperVersion, key: &[u8]) -> Result<Option<Ts>> {
        if let Some(t) = sv.mem.latest_ts(key) {
            return Ok(Some(t));
        }
        for m in &sv.imms {
            if let Some(t) = m.latest_ts(key) {
                return Ok(Some(t));
            }
        }
        let h = bloom::key_hash(key);
        for t in &sv.version.levels[0] {
            if t.meta().overlaps(Some(key), Some(key))
                && t.may_contain_hash(h)
                && let Some(ts) = t.latest_ts(key)?
            {
                return Ok(Some(ts));
            }
        }
        for level in 1..NUM_LEVELS {
            if let Some(t) = sv.version.find_in_level(level, key)
                && t.may_contain_hash(h)
                && let Some(ts) = t.latest_ts(key)?
            {
                return Ok(Some(ts));
            }
        }
        Ok(None)
    }

    // ---------------------------------------------------------------- commit path

    fn submit(&self, batch: WriteBatch, force_switch: bool) -> Result<Ts> {
        self.submit_checked(batch, force_switch, None)
    }

    fn submit_checked(
        &self,
        batch: WriteBatch,
        force_switch: bool,
        check: Option<CommitCheck>,
    ) -> Result<Ts> {
        let req = Arc::new(WriteReq {
            batch,
            force_switch,
            check,
            rejected: Mutex::new(None),
            ts: AtomicU64::new(0),
            state: Mutex::new(ReqState::Waiting),
            cv: Condvar::new(),
        });
        if !self.opts.group_commit {
            // One commit at a time, each with its own WAL write and sync.
            let _g = self.serial_commit.lock();
            self.check_writable()?;
            let group = [req.clone()];
            self.commit_group(&group)?;
            return match req.rejected.lock().take() {
                Some(e) => Err(e),
                None => Ok(req.ts.load(Ordering::Relaxed)),
            };
        }
        let lead = {
            let mut q = self.queue.lock();
            if q.closed {
                return Err(Error::Closed);
            }
            q.pending.push(req.clone());
            if q.leader_active {
                false
            } else {
                q.leader_active = true;
                true
            }
        };
        if !lead {
            let mut st = req.state.lock();
            loop {
                match &*st {
                    ReqState::Waiting => req.cv.wait(&mut st),
                    ReqState::Lead => break,
                    ReqState::Done(_) => {
                        let ReqState::Done(r) = std::mem::replace(&mut *st, ReqState::Waiting)
                        else {
                            unreachable!()
                        };
                        return r;
                    }
                }
            }
        }
        // This thread leads one group: everything pending, including its own request.
        if let Durability::GroupCommit { max_delay } = self.opts.durability {
            std::thread::sleep(max_delay);
        }
        self.gather();
        let group = std::mem::take(&mut self.queue.lock().pending);
        let t0 = Instant::now();
        let res = self.commit_group(&group);
        let took = t0.elapsed();
        // Hand leadership on first, so the next group's WAL write overlaps with waking
        // this group's followers.
        {
            let mut q = self.queue.lock();
            q.concurrency = group.len() + q.pending.len();
            q.last_sync = took;
            match q.pending.first() {
                Some(next) => {
                    *next.state.lock() = ReqState::Lead;
                    next.cv.notify_one();
                }
                None => q.leader_active = false,
            }
        }
        for r in &group {
            if Arc::ptr_eq(r, &req) {
                continue;
            }
            let out = match &res {
                Ok(()) => match r.rejected.lock().take() {
                    Some(e) => Err(e),
                    None => Ok(r.ts.load(Ordering::Relaxed)),
                },
                Err(e) => Err(e.share()),
            };
            r.finish(out);
        }
        res?;
        match req.rejected.lock().take() {
            Some(e) => Err(e),
            None => Ok(req.ts.load(Ordering::Relaxed)),
        }
    }

    /// Under concurrent durable writes, commits that finished one group re-queue while
    /// the next group is being synced, so without help the writers split into two
    /// cohorts that alternate and each fsync serves only half of them. Before taking its
    /// group, a leader therefore waits, for at most about one sync's duration, until as
    /// many writers are queued as were in flight around the last group. A lone writer
    /// never waits.
    fn gather(&self) {
        if !matches!(self.opts.durability, Durability::Sync) || !self.opts.wal_enabled {
            return;
        }
        let (target, budget) = {
            let q = self.queue.lock();
            (q.concurrency, q.last_sync.min(Duration::from_micros(500)))
        };
        if target <= 1 {
            return;
        }
        let deadline = Instant::now() + budget;
        loop {
            if self.queue.lock().pending.len() >= target || Instant::now() >= deadline {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Write a group of batches: one WAL write, at most one sync, then the memtable.
    fn commit_group(&self, group: &[Arc<WriteReq>]) -> Result<()> {
        let _span = tracing::trace_span!("commit", batches = group.len()).entered();
        let force = group.iter().any(|r| r.force_switch);
        self.make_room(force)?;
        if self.has_fatal.load(Ordering::Acquire) {
            return Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default()));
        }
        let sv = self.sv.load_full();
        // Validate transactional commits in order; a request refused here is skipped.
        // Keys written by earlier requests of this group count as newer than any
        // snapshot, since they commit after every snapshot taken so far.
        let mut accepted: Vec<bool> = vec![true; group.len()];
        if group.iter().any(|r| r.check.is_some()) {
            let mut written: std::collections::BTreeSet<&[u8]> = Default::default();
            for (i, r) in group.iter().enumerate() {
                if let Some(c) = &r.check
                    && let Err(e) = self.validate(&sv, c, &r.batch, &written)
                {
                    *r.rejected.lock() = Some(e);
                    accepted[i] = false;
                    continue;
                }
                written.extend(r.batch.ops().iter().map(|o| o.key()));
            }
        }
        let mut ts = self.last_ts.load(Ordering::Relaxed);
        let mut framed = Vec::new();
        // Only the commit leader writes to or switches the WAL, so its framing and
        // synced length stay valid until this group is written.
        let framing = if self.opts.wal_enabled {
            let wal = self.wal.lock();
            Some(
                wal.as_ref()
                    .map(|w| (w.framing(), w.synced_len()))
                    .ok_or(Error::Closed)?,
            )
        } else {
            None
        };
        for (i, r) in group.iter().enumerate() {
            if !accepted[i] {
                continue;
            }
            if r.batch.is_empty() {
                r.ts.store(ts, Ordering::Relaxed);
                continue;
            }
            ts += 1;
            r.ts.store(ts, Ordering::Relaxed);
            if let Some((f, synced)) = framing {
                // One record per batch, framed in place: each says how far the log was
                // durable when it was written, which makes a group torn by a power
                // loss recognizable as never durable (see `log`).
                let start = f.begin_record(&mut framed);
                r.batch.encode(ts, &mut framed);
                f.finish_record(&mut framed, start, synced);
            }
        }
        if !framed.is_empty() {
            let mut wal = self.wal.lock();
            let w = wal.as_mut().ok_or(Error::Closed)?;
            let before = w.len();
            if let Err(e) = w.write_framed(&framed) {
                // A full disk: nothing of the group was acknowledged or applied. Cut
                // off whatever part of it reached the file, durably, so that no record
                // of it can ever be replayed, and go on: the callers get the error, and
                // commits work again once space returns. Any other write failure, or a
                // failed cleanup, is fatal.
                if !e.is_out_of_space() {
                    return Err(self.fail(e));
                }
                return match w.truncate_to(before) {
                    Ok(()) => Err(e),
                    Err(e2) => Err(self.fail(e2)),
                };
            }
            let res = match self.opts.durability {
                Durability::Sync | Durability::GroupCommit { .. } => {
                    let t0 = Instant::now();
                    let r = w.sync();
                    self.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .wal_sync_micros
                        .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    r
                }
                Durability::Buffered => Ok(()),
            };
            // A failed fsync is fail-stop: the kernel may have dropped the pages, so
            // retrying could acknowledge data that is not on disk.
            if let Err(e) = res {
                return Err(self.fail(e));
            }
            self.stats
                .wal_bytes
                .fetch_add(framed.len() as u64, Ordering::Relaxed);
        }
        let mut puts = 0;
        let mut dels = 0;
        for (i, r) in group.iter().enumerate() {
            if !accepted[i] {
                continue;
            }
            let t = r.ts.load(Ordering::Relaxed);
            for op in r.batch.ops() {
                match op.value() {
                    Some(_) => puts += 1,
                    None => dels += 1,
                }
                sv.mem.insert(op.key(), t, op.value());
            }
        }
        self.stats.puts.fetch_add(puts, Ordering::Relaxed);
        self.stats.deletes.fetch_add(dels, Ordering::Relaxed);
        self.stats
            .commits
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        self.last_ts.store(ts, Ordering::Relaxed);
        self.visible_ts.store(ts, Ordering::SeqCst);
        // Record what committed for fast conflict checks, but only while a transaction
        // could care. Dekker-style: a transaction increments `active_txns` and then reads
        // `visible_ts` (both SeqCst); we publish `visible_ts` and then read
        // `active_txns`. Either we see the transaction, or it sees our commit in its
        // snapshot and cannot conflict with it.
        if self.active_txns.load(Ordering::SeqCst) > 0 {
            let mut recent = self.recent_commits.lock();
            for (i, r) in group.iter().enumerate() {
                if accepted[i] {
                    let t = r.ts.load(Ordering::Relaxed);
                    for op in r.batch.ops() {
                        recent.insert(op.key().to_vec(), t);
                    }
                }
            }
            if recent.len() > 4096 && ts.is_multiple_of(256) {
                let h = self.gc_horizon();
                recent.retain(|_, t| *t > h);
            }
        } else if !self.recent_commits.lock().is_empty() {
            self.recent_commits.lock().clear();
        }
        Ok(())
    }

    /// Refuse a transactional commit whose write set (and, when serializable, read set)
    /// was changed by a commit newer than its snapshot.
    fn validate(
        &self,
        sv: &SuperVersion,
        c: &CommitCheck,
        batch: &WriteBatch,
        group_written: &std::collections::BTreeSet<&[u8]>,
    ) -> Result<()> {
        let conflict = |what: &str, key: &[u8]| {
            Error::TransactionConflict(format!(
                "{what} key {} was changed by a transaction that committed after this one began",
                crate::key::display_key(key)
            ))
        };
        let newer = |key: &[u8]| -> Result<bool> {
            if group_written.contains(key) {
                return Ok(true);
            }
            let latest = if self.opts_fast_validation() {
                self.recent_commits.lock().get(key).copied()
            } else {
                self.latest_ts_in(sv, key)?
            };
            Ok(latest.is_some_and(|t| t > c.start_ts))
        };
        for op in batch.ops() {
            if newer(op.key())? {
                return Err(conflict("written", op.key()));
            }
        }
        for k in &c.read_keys {
            if newer(k)? {
                return Err(conflict("read", k));
            }
        }
        for (start, end) in &c.read_ranges {
            let in_range = |k: &[u8]| {
                start.as_deref().is_none_or(|s| k >= s) && end.as_deref().is_none_or(|e| k < e)
            };
            if let Some(k) = group_written.iter().find(|k| in_range(k)) {
                return Err(conflict("scanned", k));
            }
            if self.opts_fast_validation() {
                let recent = self.recent_commits.lock();
                let lo = start
                    .clone()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included);
                let hi = end
                    .clone()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                if let Some((k, _)) = recent.range((lo, hi)).find(|(_, t)| **t > c.start_ts) {
                    return Err(conflict("scanned", k));
                }
            } else {
                let mut m = MergeIter::over(sv, start.as_deref(), end.as_deref(), false, None)?;
                while let Some((k, ts, _)) = m.current() {
                    if ts > c.start_ts {
                        return Err(conflict("scanned", k));
                    }
                    m.advance()?;
                }
            }
        }
        Ok(())
    }

    fn opts_fast_validation(&self) -> bool {
        self.fast_validation.load(Ordering::Relaxed)
    }

    /// Called by the commit leader before writing: switch a full memtable, and stall
    /// while too much is waiting for flush or compaction.
    fn make_room(&self, force: bool) -> Result<()> {
        let stall_start = Instant::now();
        let mut stalled = false;
        loop {
            if self.has_fatal.load(Ordering::Acquire) {
                return Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default()));
            }
            let sv = self.sv.load_full();
            let full = sv.mem.approximate_bytes() >= self.opts.write_buffer_size;
            let want_switch = (force && !sv.mem.is_empty()) || full;
            if self.opts.background_compaction {
                let g = self.bg.lock();
                let sv = self.sv.load_full();
                let too_many_imms =
                    want_switch && sv.imms.len() >= self.opts.max_immutable_memtables;
                let l0_stall = sv.version.levels[0].len() >= self.opts.level0_stop_writes_trigger;
                if (too_many_imms || l0_stall) && !self.shutdown.load(Ordering::Acquire) {
                    // The work this commit waits for is failing: say why now.
                    if let Some(e) = self.bg_error.lock().as_ref() {
                        return Err(e.share());
                    }
                    stalled = true;
                    let mut g = g;
                    self.bg_cv.wait_for(&mut g, Duration::from_millis(50));
                    continue;
                }
                drop(g);
            }
            if stalled {
                self.stats
                    .stall_micros
                    .fetch_add(stall_start.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            if want_switch {
                self.switch_memtable()?;
                if !self.opts.background_compaction {
                    self.flush_all_inline()?;
                    while self.compact_once(false)? {}
                }
            }
            return Ok(());
        }
    }

    /// Freeze the active memtable and start a new one with a new WAL segment. Only the
    /// commit leader (or `close`, once writers are stopped) calls this.
    fn switch_memtable(&self) -> Result<()> {
        let mut wal = self.wal.lock();
        let new_seg = if self.opts.wal_enabled {
            let id = match self.alloc_id() {
                Ok(id) => id,
                Err(e) => {
                    return Err(self.fail(e));
                }
            };
            // The old segment must be complete on disk before the new one is used, so
            // only the newest segment can ever have a torn tail.
            if let Some(w) = wal.as_mut()
                && let Err(e) = w.sync()
            {
                return Err(self.fail(e));
            }
            let path = crate::files::wal_path(&self.dir, id);
            match LogWriter::create(&*self.vfs, &path, WAL_MAGIC, WAL_VERSION) {
                Ok(mut w) => {
                    w.preallocate(wal_prealloc(&self.opts));
                    *wal = Some(w)
                }
                Err(e) => {
                    let _ = vfs::remove_file_if_exists(&*self.vfs, &path);
                    // No room for a new segment: keep writing to the old one, which is
                    // intact and synced, and try again on the next commit.
                    if e.is_out_of_space() {
                        return Err(e);
                    }
                    return Err(self.fail(e));
                }
            }
            id
        } else {
            0
        };
        drop(wal);
        let _st = self.state.lock();
        let old = self.sv.load_full();
        old.mem.freeze();
        let mut imms = Vec::with_capacity(old.imms.len() + 1);
        imms.push(old.mem.clone());
        imms.extend(old.imms.iter().cloned());
        self.sv.store(Arc::new(SuperVersion {
            mem: Arc::new(MemTable::new(new_seg)),
            imms,
            version: old.version.clone(),
        }));
        drop(_st);
        self.notify();
        Ok(())
    }

    // ---------------------------------------------------------------- flush

    fn wait_for_flushes(&self) -> Result<()> {
        if !self.opts.background_compaction {
            return self.flush_all_inline();
        }
        let mut g = self.bg.lock();
        loop {
            if self.has_fatal.load(Ordering::Acquire) {
                return Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default()));
            }
            if self.sv.load().imms.is_empty() {
                return Ok(());
            }
            if self.shutdown.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            self.bg_cv.wait_for(&mut g, Duration::from_millis(50));
        }
    }

    fn flush_all_inline(&self) -> Result<()> {
        while self.flush_one()? {}
        Ok(())
    }

    /// Flush the oldest immutable memtable to an L0 table. Returns false if none waits.
    fn flush_one(&self) -> Result<bool> {
        let sv = self.sv.load_full();
        let Some(imm) = sv.imms.last().cloned() else {
            return Ok(false);
        };
        let _span = tracing::info_span!("flush", entries = imm.len()).entered();
        let started = Instant::now();
        let horizon = self.gc_horizon();
        let mut out = OutputSink::new(self, horizon, false, None);
        let mut res = Ok(());
        imm.for_each(|k, ts, v| {
            if res.is_ok() {
                res = out.add(k, ts, v);
            }
        });
        // A table that cannot be written (a full disk, say) is removed; the memtable
        // stays and the flush is tried again later.
        let outputs = match res {
            Ok(()) => out.finish(),
            Err(e) => {
                out.abandon();
                Err(e)
            }
        }?;
        let bytes: u64 = outputs.iter().map(|t| t.meta().file_size).sum();
        let edit = VersionEdit {
            last_ts: Some(imm.max_ts()),
            log_number: self.opts.wal_enabled.then(|| imm.wal_segment() + 1),
            ..Default::default()
        };
        let added: Vec<_> = outputs.into_iter().map(|t| (0, t)).collect();
        self.install(edit, &[], &added, Some(&imm))?;
        if self.opts.wal_enabled {
            // Every segment up to this memtable's is now in tables.
            if let Ok(names) = self.vfs.list(&self.dir) {
                for name in names {
                    if let crate::files::DbFile::Wal(n) = crate::files::classify(&name)
                        && n <= imm.wal_segment()
                    {
                        let _ = vfs::remove_file_if_exists(&*self.vfs, &self.dir.join(&name));
                    }
                }
            }
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.flush_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.stats
            .flush_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.notify();
        Ok(true)
    }

    /// Install a new version: log `edit` (completed with the added and deleted tables
    /// and the file-id counter) durably in the manifest, apply it to the current
    /// version, and publish a super-version with it (without `flushed`, the immutable
    /// memtable whose tables these are). A failure to log is fatal.
    fn install(
        &self,
        mut edit: VersionEdit,
        deleted: &[(usize, u64)],
        added: &[(usize, Arc<Table>)],
        flushed: Option<&Arc<MemTable>>,
    ) -> Result<()> {
        let mut st = self.state.lock();
        edit.next_file_id = Some(self.next_file_id.load(Ordering::Relaxed));
        edit.last_ts = edit.last_ts.map(|t| t.max(st.mstate.last_ts));
        edit.added = added.iter().map(|(l, t)| (*l, t.meta().clone())).collect();
        edit.deleted = deleted.to_vec();
        if let Err(e) = self.log_edit(&mut st, &edit) {
            drop(st);
            return Err(self.fail(e));
        }
        st.version = Arc::new(st.version.apply(deleted, added));
        debug_assert!(st.version.check_invariants(), "level invariant broken");
        let cur = self.sv.load_full();
        let imms = match flushed {
            Some(imm) => cur
                .imms
                .iter()
                .filter(|m| !Arc::ptr_eq(m, imm))
                .cloned()
                .collect(),
            None => cur.imms.clone(),
        };
        self.sv.store(Arc::new(SuperVersion {
            mem: cur.mem.clone(),
            imms,
            version: st.version.clone(),
        }));
        Ok(())
    }

    /// Append an edit to the manifest (durably) and to the in-memory manifest state,
    /// rotating the manifest when it grows large.
    fn log_edit(&self, st: &mut State, edit: &VersionEdit) -> Result<()> {
        st.manifest.log_edit(edit)?;
        st.mstate.apply(edit);
        if st.manifest.size() > MANIFEST_ROTATE_BYTES {
            let id = self.alloc_id_locked(st)?;
            let old = st.manifest.id();
            st.manifest = Manifest::create(&*self.vfs, &self.dir, id, &st.mstate)?;
            vfs::remove_file_if_exists(&*self.vfs, &manifest::manifest_path(&self.dir, old))?;
        }
        Ok(())
    }

    /// A new file id. Ids come from one counter and are reserved in the manifest
    /// ahead of use ([`open::ID_CHUNK`] at a time), so every file the engine creates
    /// has an id below the reservation the manifest records.
    fn alloc_id(&self) -> Result<u64> {
        let id = self.next_id();
        if id < self.id_limit.load(Ordering::Acquire) {
            return Ok(id);
        }
        let mut st = self.state.lock();
        self.reserve_ids(&mut st, id)?;
        Ok(id)
    }

    /// [`Inner::alloc_id`] for a caller that holds the state lock.
    fn alloc_id_locked(&self, st: &mut State) -> Result<u64> {
        let id = self.next_id();
        self.reserve_ids(st, id)?;
        Ok(id)
    }

    /// The next number from the counter that no foreign file holds.
    fn next_id(&self) -> u64 {
        loop {
            let id = self.next_file_id.fetch_add(1, Ordering::Relaxed);
            if !self.foreign_ids.contains(&id) {
                return id;
            }
        }
    }

    fn reserve_ids(&self, st: &mut State, id: u64) -> Result<()> {
        if id < self.id_limit.load(Ordering::Acquire) {
            return Ok(());
        }
        let limit = id + 1 + open::ID_CHUNK;
        let edit = VersionEdit {
            next_file_id: Some(limit),
            ..Default::default()
        };
        st.manifest.log_edit(&edit)?;
        st.mstate.apply(&edit);
        self.id_limit.store(limit, Ordering::Release);
        Ok(())
    }

    fn flush_loop(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            {
                let mut g = self.bg.lock();
                while self.sv.load().imms.is_empty()
                    && !self.shutdown.load(Ordering::Acquire)
                    && !self.has_fatal.load(Ordering::Acquire)
                {
                    self.bg_cv.wait_for(&mut g, Duration::from_millis(200));
                }
            }
            if self.shutdown.load(Ordering::Acquire) || self.has_fatal.load(Ordering::Acquire) {
                return;
            }
            match self.flush_one() {
                Ok(_) => self.background_ok(),
                Err(e) => {
                    if !self.background_failed(e, &mut failures) {
                        return;
                    }
                }
            }
        }
    }

    /// A background flush or compaction succeeded: clear the failure writers see.
    fn background_ok(&self) {
        if self.bg_error.lock().take().is_some() {
            tracing::info!("background work succeeds again");
        }
    }

    /// A background flush or compaction failed with `e`. A full disk is retried after a
    /// growing pause, and writers that would wait for this work get the error meanwhile
    /// instead of waiting; anything else is fatal (returns false: the thread stops).
    fn background_failed(&self, e: Error, failures: &mut u32) -> bool {
        if matches!(e, Error::Closed) || self.has_fatal.load(Ordering::Acquire) {
            return false;
        }
        if !e.is_out_of_space() {
            self.set_fatal(&e);
            return false;
        }
        tracing::error!(error = %e, "background flush or compaction failed; will retry");
        *self.bg_error.lock() = Some(e);
        *failures += 1;
        let pause = Duration::from_millis(20 << (*failures).min(6));
        let mut g = self.bg.lock();
        self.bg_cv.wait_for(&mut g, pause);
        !self.shutdown.load(Ordering::Acquire)
    }

    // ---------------------------------------------------------------- compaction

    fn level_target(&self, level: usize) -> u64 {
        let mut t = self.opts.level_base_bytes;
        for _ in 1..level {
            t = t.saturating_mul(self.opts.level_size_multiplier);
        }
        t
    }

    /// Choose a compaction and reserve its levels. `force_l0` compacts L0 even below
    /// its trigger (used when draining).
    fn pick(&self, st: &mut State) -> Option<Task> {
        let v = st.version.clone();
        let mut best: Option<(f64, usize)> = None;
        for level in 0..NUM_LEVELS - 1 {
            if st.busy_levels[level] || st.busy_levels[level + 1] {
                continue;
            }
            let score = if level == 0 {
                v.levels[0].len() as f64 / self.opts.level0_compaction_trigger as f64
            } else {
                v.level_bytes(level) as f64 / self.level_target(level) as f64
            };
            if score >= 1.0 && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, level));
            }
        }
        let (_, level) = best?;
        let upper: Vec<Arc<Table>> = if level == 0 {
            v.levels[0].clone()
        } else {
            // Round-robin through the level so every key range gets its turn.
            let files = &v.levels[level];
            let ptr = st.compact_pointer[level].clone();
            let f = files
                .iter()
                .find(|t| ptr.as_ref().is_none_or(|p| t.meta().smallest.user_key > *p))
                .or_else(|| files.first())?
                .clone();
            st.compact_pointer[level] = Some(f.meta().largest.user_key.clone());
            vec![f]
        };
        let lo = upper
            .iter()
            .map(|t| t.meta().smallest.user_key.clone())
            .min()?;
        let hi = upper
            .iter()
            .map(|t| t.meta().largest.user_key.clone())
            .max()?;
        let lower = v.overlapping(level + 1, &lo, &hi);
        let (lo2, hi2) = lower.iter().fold((lo, hi), |(a, b), t| {
            (
                a.min(t.meta().smallest.user_key.clone()),
                b.max(t.meta().largest.user_key.clone()),
            )
        });
        let bottommost = (level + 2..NUM_LEVELS).all(|l| v.overlapping(l, &lo2, &hi2).is_empty());
        st.busy_levels[level] = true;
        st.busy_levels[level + 1] = true;
        Some(Task {
            level,
            output_level: level + 1,
            upper,
            lower,
            bottommost,
            reserved: vec![level, level + 1],
        })
    }

    /// Run one compaction if one is due. Returns whether one ran.
    fn compact_once(&self, background: bool) -> Result<bool> {
        let task = {
            let mut st = self.state.lock();
            self.pick(&mut st)
        };
        let Some(task) = task else {
            return Ok(false);
        };
        let r = self.run_task(&task, background);
        {
            let mut st = self.state.lock();
            for &l in &task.reserved {
                st.busy_levels[l] = false;
            }
        }
        self.notify();
        r.map(|_| true)
    }

    fn compaction_loop(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            {
                let mut g = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::Acquire)
                        || self.has_fatal.load(Ordering::Acquire)
                    {
                        return;
                    }
                    let due = {
                        let st = self.state.lock();
                        self.compaction_due(&st)
                    };
                    if due {
                        break;
                    }
                    self.bg_cv.wait_for(&mut g, Duration::from_millis(200));
                }
            }
            match self.compact_once(true) {
                Ok(_) => self.background_ok(),
                Err(e) => {
                    if !self.background_failed(e, &mut failures) {
                        return;
                    }
                }
            }
        }
    }

    fn compaction_due(&self, st: &State) -> bool {
        let v = &st.version;
        (0..NUM_LEVELS - 1).any(|level| {
            !st.busy_levels[level]
                && !st.busy_levels[level + 1]
                && if level == 0 {
                    v.levels[0].len() >= self.opts.level0_compaction_trigger
                } else {
                    v.level_bytes(level) >= self.level_target(level)
                }
        })
    }

    fn run_task(&self, task: &Task, background: bool) -> Result<()> {
        let _span = tracing::info_span!(
            "compaction",
            level = task.level,
            inputs = task.upper.len() + task.lower.len()
        )
        .entered();
        let started = Instant::now();
        let in_bytes: u64 = task
            .upper
            .iter()
            .chain(&task.lower)
            .map(|t| t.meta().file_size)
            .sum();
        let deleted: Vec<(usize, u64)> = task
            .upper
            .iter()
            .map(|t| (task.level, t.id()))
            .chain(task.lower.iter().map(|t| (task.output_level, t.id())))
            .collect();
        // A table with nothing to merge with just moves down a level.
        let outputs: Vec<Arc<Table>> = if task.level > 0
            && task.lower.is_empty()
            && task.upper.len() == 1
        {
            task.upper.clone()
        } else {
            let horizon = self.gc_horizon();
            let mut merge = if task.level == 0 {
                MergeIter::over_tables(&task.upper, vec![task.lower.clone()])?
            } else {
                MergeIter::over_tables(&[], vec![task.upper.clone(), task.lower.clone()])?
            };
            let mut out = OutputSink::new(
                self,
                horizon,
                task.bottommost,
                Some(self.opts.target_file_size),
            );
            let mut n = 0u64;
            let res = (|| {
                while let Some((k, ts, v)) = merge.current() {
                    out.add(k, ts, v)?;
                    merge.advance()?;
                    n += 1;
                    if background && n.is_multiple_of(4096) && self.shutdown.load(Ordering::Acquire)
                    {
                        return Err(Error::Closed);
                    }
                }
                Ok(())
            })();
            match res {
                Ok(()) => out.finish()?,
                Err(e) => {
                    out.abandon();
                    return Err(e);
                }
            }
        };
        let out_bytes: u64 = outputs.iter().map(|t| t.meta().file_size).sum();
        let added: Vec<_> = outputs
            .iter()
            .map(|t| (task.output_level, t.clone()))
            .collect();
        self.install(VersionEdit::default(), &deleted, &added, None)?;
        let moved: std::collections::HashSet<u64> = outputs.iter().map(|t| t.id()).collect();
        for t in task.upper.iter().chain(&task.lower) {
            if !moved.contains(&t.id()) {
                t.mark_obsolete();
            }
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .compaction_bytes_read
            .fetch_add(in_bytes, Ordering::Relaxed);
        self.stats
            .compaction_bytes_written
            .fetch_add(out_bytes, Ordering::Relaxed);
        self.stats
            .compaction_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Merge every table into one sorted run at the deepest populated level.
    fn compact_everything(&self) -> Result<()> {
        // Reserve every level, waiting for running compactions to finish.
        let task = loop {
            self.check_writable()?;
            let mut st = self.state.lock();
            if st.busy_levels.iter().all(|b| !b) {
                st.busy_levels = [true; NUM_LEVELS];
                let v = st.version.clone();
                let deepest = (1..NUM_LEVELS)
                    .rev()
                    .find(|&l| !v.levels[l].is_empty())
                    .unwrap_or(1);
                let upper: Vec<Arc<Table>> =
                    v.levels[..deepest].iter().flatten().cloned().collect();
                break Task {
                    level: 0,
                    output_level: deepest,
                    upper,
                    lower: v.levels[deepest].clone(),
                    bottommost: true,
                    reserved: (0..NUM_LEVELS).collect(),
                };
            }
            drop(st);
            let mut g = self.bg.lock();
            self.bg_cv.wait_for(&mut g, Duration::from_millis(20));
        };
        let r = if task.upper.is_empty()
            && task.lower.len() <= 1
            && task.lower.iter().all(|t| t.meta().num_deletes == 0)
        {
            Ok(())
        } else {
            // Sources: L0 tables one by one, then each deeper level as a sorted run.
            let sv = self.sv.load_full();
            let v = &sv.version;
            let l0: Vec<Arc<Table>> = task
                .upper
                .iter()
                .filter(|t| v.levels[0].iter().any(|x| x.id() == t.id()))
                .cloned()
                .collect();
            let mut runs: Vec<Vec<Arc<Table>>> = (1..task.output_level)
                .map(|l| v.levels[l].clone())
                .collect();
            runs.push(task.lower.clone());
            self.run_full(&task, l0, runs)
        };
        let mut st = self.state.lock();
        st.busy_levels = [false; NUM_LEVELS];
        drop(st);
        self.notify();
        r
    }

    fn run_full(&self, task: &Task, l0: Vec<Arc<Table>>, runs: Vec<Vec<Arc<Table>>>) -> Result<()> {
        let horizon = self.gc_horizon();
        let mut merge = MergeIter::over_tables(&l0, runs)?;
        let mut out = OutputSink::new(self, horizon, true, Some(self.opts.target_file_size));
        let res = (|| {
            while let Some((k, ts, v)) = merge.current() {
                out.add(k, ts, v)?;
                merge.advance()?;
            }
            Ok(())
        })();
        let outputs = match res {
            Ok(()) => out.finish()?,
            Err(e) => {
                out.abandon();
                return Err(e);
            }
        };
        let sv = self.sv.load_full();
        let mut deleted = Vec::new();
        for (l, tables) in sv.version.levels.iter().enumerate() {
            for t in tables {
                if task
                    .upper
                    .iter()
                    .chain(&task.lower)
                    .any(|x| x.id() == t.id())
                {
                    deleted.push((l, t.id()));
                }
            }
        }
        let added: Vec<_> = outputs
            .iter()
            .map(|t| (task.output_level, t.clone()))
            .collect();
        self.install(VersionEdit::default(), &deleted, &added, None)?;
        for t in task.upper.iter().chain(&task.lower) {
            t.mark_obsolete();
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    // ---------------------------------------------------------------- close

    fn close(&self) -> Result<()> {
        let _closing = self.close_lock.lock();
        let fatal = || -> Result<()> {
            match self.has_fatal.load(Ordering::Acquire) {
                true => Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default())),
                false => Ok(()),
            }
        };
        if self.closed.load(Ordering::Acquire) {
            // Closing again reports what the first close found: a database stopped by
            // a fatal error never closes cleanly.
            return fatal();
        }
        // Stop new writes and wait for the running commit group to finish.
        {
            let mut q = self.queue.lock();
            q.closed = true;
        }
        loop {
            let busy = self.queue.lock().leader_active;
            if !busy {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let serial = self.serial_commit.lock();
        // Stop background work.
        self.shutdown.store(true, Ordering::Release);
        self.notify();
        let handles: Vec<_> = self.threads.lock().drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
        // Final flush so the next open has no WAL to replay.
        let mut result = Ok(());
        if !self.has_fatal.load(Ordering::Acquire) {
            let sv = self.sv.load_full();
            if !sv.mem.is_empty() {
                result = self.switch_memtable();
            }
            if result.is_ok() {
                result = self.flush_all_inline();
            }
        }
        if let Some(w) = self.wal.lock().as_mut()
            && !self.has_fatal.load(Ordering::Acquire)
        {
            let r = w.sync();
            if result.is_ok() {
                result = r;
            }
        }
        // After a fatal error (fail-stop) nothing was flushed or synced: the next open
        // recovers from the last durable state, and the caller learns why.
        if result.is_ok() {
            result = fatal();
        }
        drop(serial);
        self.closed.store(true, Ordering::Release);
        if let Some(p) = &self.prefetcher {
            p.shutdown();
        }
        self.wal.lock().take();
        self.lock_file.lock().take();
        result
    }
}

struct Task {
    level: usize,
    output_level: usize,
    upper: Vec<Arc<Table>>,
    lower: Vec<Arc<Table>>,
    bottommost: bool,
    reserved: Vec<usize>,
}

/// Receives merged entries in internal-key order, drops versions no snapshot can see,
/// and writes tables, cutting only between user keys.
struct OutputSink<'a> {
    inner: &'a Inner,
    horizon: Ts,
    bottommost: bool,
    split_size: Option<u64>,
    builder: Option<TableBuilder>,
    done: Vec<TableMeta>,
    /// Ids of every table started, removed if the sink fails or is abandoned.
    created: Vec<u64>,
    last_key: Vec<u8>,
    have_last: bool,
    /// The newest version <= horizon of `last_key` has been seen: older ones are dead.
    covered: bool,
}

impl<'a> OutputSink<'a> {
    fn new(inner: &'a Inner, horizon: Ts, bottommost: bool, split_size: Option<u64>) -> Self {
        OutputSink {
            inner,
            horizon,
            bottommost,
            split_size,
            builder: None,
            done: Vec::new(),
            created: Vec::new(),
            last_key: Vec::new(),
            have_last: false,
            covered: false,
        }
    }

    fn add(&mut self, key: &[u8], ts: Ts, value: Option<&[u8]>) -> Result<()> {
        if !self.have_last || key != self.last_key.as_slice() {
            self.last_key.clear();
            self.last_key.extend_from_slice(key);
            self.have_last = true;
            self.covered = false;
            if let (Some(limit), Some(b)) = (self.split_size, &self.builder)
                && b.estimated_size() >= limit
            {
                let b = self.builder.take().expect("checked above");
                self.done.push(b.finish()?);
            }
        }
        if self.covered {
            return Ok(());
        }
        if ts <= self.horizon {
            self.covered = true;
            if value.is_none() && self.bottommost {
                return Ok(());
            }
        }
        if self.builder.is_none() {
            let id = self.inner.alloc_id()?;
            self.created.push(id);
            let o = &self.inner.opts;
            self.builder = Some(TableBuilder::create(
                &self.inner.vfs,
                &self.inner.dir,
                id,
                o.block_size,
                o.compression,
                o.bloom_bits_per_key,
            )?);
        }
        self.builder
            .as_mut()
            .expect("created above")
            .add(key, ts, value)
    }

    /// Finish the open table, sync the directory and open the outputs for reading.
    /// Finish the open table, sync the directory and open the outputs for reading. On
    /// failure every table this sink created is removed.
    fn finish(mut self) -> Result<Vec<Arc<Table>>> {
        let r = self.finish_tables();
        if r.is_err() {
            self.remove_created();
        }
        r
    }

    fn finish_tables(&mut self) -> Result<Vec<Arc<Table>>> {
        if let Some(b) = self.builder.take() {
            self.done.push(b.finish()?);
        }
        let inner = self.inner;
        let metas = std::mem::take(&mut self.done);
        if metas.is_empty() {
            return Ok(Vec::new());
        }
        vfs::sync_dir(&*inner.vfs, &inner.dir)?;
        metas
            .iter()
            .map(|m| {
                Table::open(
                    &inner.vfs,
                    &inner.dir,
                    m.id,
                    inner.mmap.as_ref(),
                    inner.cache.clone(),
                )
                .map(Arc::new)
            })
            .collect()
    }

    /// Give up: remove every table this sink created.
    fn abandon(mut self) {
        self.builder.take();
        self.remove_created();
    }

    fn remove_created(&mut self) {
        for id in self.created.drain(..) {
            let _ = self
                .inner
                .vfs
                .remove(&crate::sst::table_path(&self.inner.dir, id));
        }
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
    is::<DbIter>();
    is::<Snapshot>();
}
