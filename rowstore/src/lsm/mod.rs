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
use crate::error::{Error, IoContext, Result};
use crate::iter::{MergeIter, VisibleIter};
use crate::key::Ts;
use crate::log::{self, LogWriter, Tail};
use crate::manifest::{self, Manifest, ManifestState, NUM_LEVELS, VersionEdit};
use crate::memtable::{ChangeChunk, Lookup, MemTable};
use crate::options::{Durability, EngineOptions, StorageKind};
use crate::row_engine::{CommitCheck, EngineSizes, EngineStats, OpenMode, RowEngine};
use crate::snapshot::{At, Snapshot, SnapshotRegistry, TxnSnapshot};
use crate::sst::cache::BlockCache;
use crate::sst::prefetch::Prefetcher;
use crate::sst::{Table, TableBuilder, TableMeta, bloom};
use crate::version::{SuperVersion, Version};
use crate::vfs::{self, MmapBudget, Vfs};
use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format::{WAL_MAGIC, WAL_VERSION};
const MANIFEST_ROTATE_BYTES: u64 = 32 << 20;

mod checkpoint;
mod commit;
mod compaction;
mod flush;
mod ingest;
mod open;
mod read;
mod sync_cpu;
mod validate;
mod versions;
mod wake;

use commit::CommitQueue;
use flush::OutputSink;
pub use ingest::LsmIngest;
pub use read::LsmIter;
use versions::State;

/// An ingested key range: first key, last key, commit timestamp.
type IngestedRange = (Vec<u8>, Vec<u8>, Ts);

struct Inner {
    dir: PathBuf,
    /// The B+Tree engine's tree file, where flushes go instead of level-0 tables.
    tree: Option<Arc<crate::btree::BTree>>,
    vfs: Arc<dyn Vfs>,
    opts: EngineOptions,
    /// Opened with [`OpenMode::ReadOnly`]: every write fails, nothing is flushed.
    read_only: bool,
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
    /// Wakes the writers of a finished commit group (see `wake`).
    wake: wake::GroupWake,
    /// Lets writers waiting for a large group yield before they sleep.
    yield_gate: wake::YieldGate,
    /// Commit times per processor, and the group offered to a writer on a fast one (see
    /// `commit::Role::Offer`).
    sync_cpus: sync_cpu::SyncCpus,
    serial_commit: Mutex<()>,
    wal: Mutex<Option<LogWriter>>,
    registry: Arc<SnapshotRegistry>,
    cache: Option<Arc<BlockCache>>,
    mmap: Option<Arc<MmapBudget>>,
    prefetcher: Option<Arc<Prefetcher>>,
    bg: Mutex<()>,
    bg_cv: Condvar,
    shutdown: AtomicBool,
    /// Someone waits for every memtable to be flushed: the B+Tree engine's flush does
    /// not wait to gather a whole `write_buffer_size` (see `Inner::flush_due`).
    flush_wanted: AtomicBool,
    fatal: Mutex<Option<String>>,
    has_fatal: AtomicBool,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: EngineStats,
    /// Keys committed while transactions were open, with their newest commit ts.
    recent_commits: Mutex<BTreeMap<Vec<u8>, Ts>>,
    /// The commit timestamp at which `recent_commits` was last trimmed.
    recent_trimmed_at: AtomicU64,
    /// Key ranges ingested while transactions were open (first key, last key, commit
    /// timestamp): fast validation looks a key in them up in the tree.
    recent_ingests: Mutex<Vec<IngestedRange>>,
    /// Validate commits against `recent_commits` instead of the LSM tree.
    fast_validation: AtomicBool,
    /// Held while closing, so concurrent `close` calls wait for the first.
    close_lock: Mutex<()>,
    /// The last background flush or compaction failure, until one succeeds again.
    bg_error: Mutex<Option<Error>>,
}

/// The row store's LSM engine (see [`crate::row_engine::RowEngine`] for its contract).
/// `Send + Sync`; share it behind an `Arc`.
pub struct LsmEngine {
    inner: Arc<Inner>,
}

/// How long writes must pause before the background does the work that only pays on an
/// idle database: the B+Tree engine compacts its file, the LSM merges a level 0 below its
/// trigger.
const IDLE_COMPACTION: Duration = Duration::from_secs(2);
/// How long writes must pause before the B+Tree engine flushes memtables that make less
/// than a whole `write_buffer_size`.
const IDLE_FLUSH: Duration = Duration::from_secs(1);
/// At most this many pages (256 MiB) past a compacted tree's end are given back when a
/// B+Tree database closes (about 0.2 s per 100 MiB here); more waits for the idle
/// compaction after the next open, so a close stays quick.
const CLOSE_COMPACTION_PAGES: u64 = 65_536;

/// Bytes to preallocate for a WAL segment: what one memtable's records take, plus slack.
fn wal_prealloc(opts: &EngineOptions) -> u64 {
    opts.memtable_switch_bytes() as u64 + (1 << 20)
}

impl LsmEngine {
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// Validate through the recent-commit index (true) or LSM lookups (false).
    pub fn set_fast_validation(&self, on: bool) {
        self.inner.fast_validation.store(on, Ordering::Relaxed);
    }

    fn iter_in(
        &self,
        sv: Arc<SuperVersion>,
        s: Ts,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<LsmIter> {
        let prefetch = match (&self.inner.prefetcher, self.inner.opts.prefetch) {
            (Some(p), Some((_, d))) => Some((p.clone(), d)),
            _ => None,
        };
        let merge = MergeIter::over(&sv, start, end, reverse, prefetch)?;
        Ok(LsmIter {
            inner: VisibleIter::new(merge, s, reverse),
            _sv: sv,
        })
    }

    /// A count of threads at work that writers waiting for their commit group must not
    /// take the processor from by yielding (see `EngineOptions::commit_yield`): while
    /// it is above zero, waiting writers sleep at once. The facade counts its SQL
    /// runtime's and column compactor's busy threads here.
    pub fn commit_yield_holds(&self) -> Arc<AtomicU32> {
        self.inner.yield_gate.holds.clone()
    }

    /// Bytes currently memory-mapped for table reads.
    pub fn mmapped_bytes(&self) -> u64 {
        self.inner.mmap.as_ref().map_or(0, |m| m.used())
    }

    /// Opened with [`OpenMode::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
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
}

impl RowEngine for LsmEngine {
    type Iter = LsmIter;
    /// Apply `batch` atomically; returns its commit timestamp.
    fn write(&self, batch: WriteBatch) -> Result<Ts> {
        self.inner.check_writable()?;
        if batch.is_empty() {
            return Ok(self.inner.visible_ts.load(Ordering::Acquire));
        }
        self.inner.submit(batch, false)
    }

    /// Commit `batch` if no transaction that committed after `check.start_ts` wrote a
    /// key in the batch or (for serializable checks) in the read set.
    fn commit_checked(&self, batch: WriteBatch, check: CommitCheck) -> Result<Ts> {
        self.inner.check_writable()?;
        self.inner.submit_checked(batch, false, Some(check))
    }

    /// Newest value of `key`, lent to `f`.
    #[inline]
    fn get_with<R>(&self, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Result<Option<R>> {
        self.inner.check_open()?;
        self.inner.stats.gets.add(1);
        // Same protocol as `read_view`, with a cheap guard instead of an Arc clone (a
        // shared refcount would bounce between reader cores).
        loop {
            let sv = self.inner.sv.load();
            let s = self.inner.visible_ts.load(Ordering::Acquire);
            if !sv.mem.is_frozen() {
                return self.inner.get_in_with(&sv, key, s, f);
            }
            std::hint::spin_loop();
        }
    }

    /// Value of `key` as of `snap`.
    fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.stats.gets.add(1);
        let sv = self.inner.sv.load();
        self.inner.get_in(&sv, key, snap.ts())
    }

    /// Newest commit timestamp of `key` across all sources (for conflict detection).
    fn latest_commit_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        let sv = self.inner.sv.load_full();
        self.inner.latest_ts_in(&sv, key)
    }

    /// Take a registered snapshot of the current state.
    fn snapshot(&self) -> Snapshot {
        self.inner.registry.register_now(&self.inner.visible_ts)
    }

    /// Register a snapshot at an earlier timestamp `ts`. Only possible while no version
    /// `ts` needs can have been collected yet: `ts` must be at or above the current GC
    /// horizon (an older registered snapshot, such as an open pin, keeps it there).
    fn snapshot_at(&self, ts: Ts) -> Result<Snapshot> {
        self.inner
            .registry
            .register(At::Checked(ts), &self.inner.visible_ts)
    }

    /// Begin a transaction's snapshot: registered for GC and counted as an open
    /// transaction until the returned guard drops.
    fn begin_txn(&self) -> Result<TxnSnapshot> {
        // A read-only database still runs transactions that only read.
        self.inner.check_healthy()?;
        self.inner.registry.begin_txn(&self.inner.visible_ts)
    }

    /// Iterate user keys in `[start, end)` at the current state.
    fn iter(&self, start: Option<&[u8]>, end: Option<&[u8]>, reverse: bool) -> Result<LsmIter> {
        self.inner.check_open()?;
        let (sv, s) = self.inner.read_view();
        self.iter_in(sv, s, start, end, reverse)
    }

    /// Iterate user keys in `[start, end)` as of `snap`.
    fn iter_at(
        &self,
        snap: &Snapshot,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<LsmIter> {
        self.inner.check_open()?;
        let sv = self.inner.sv.load_full();
        self.iter_in(sv, snap.ts(), start, end, reverse)
    }

    /// The newest visible commit timestamp.
    fn visible_ts(&self) -> Ts {
        self.inner.visible_ts.load(Ordering::Acquire)
    }

    /// Write the memtable to a table file and wait until no memtable awaits flush.
    fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.submit(WriteBatch::new(), true)?;
        self.inner.wait_for_flushes()
    }

    /// Flush, then merge every table into the last populated level, dropping every
    /// overwritten version and tombstone that no snapshot needs.
    fn compact_all(&self) -> Result<()> {
        self.flush()?;
        if self.inner.tree.is_some() {
            // The B+Tree engine: move the tree down and give free pages back.
            self.inner.check_writable()?;
            return self.inner.compact_tree(None);
        }
        self.inner.compact_everything()
    }

    /// Flush, stop background threads and release the directory lock. Idempotent.
    fn close(&self) -> Result<()> {
        self.inner.close()
    }

    fn for_each_change<E: From<Error>>(
        &self,
        hi: &Snapshot,
        lo: Ts,
        start: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.inner.check_open()?;
        let sv = self.inner.sv.load_full();
        let hi_ts = hi.ts();
        // What the memtables changed in (lo, hi]: from their commit-ordered change logs,
        // so the cost follows the number of changes, not the size of the memtables.
        // Every memtable version of a key is newer than every table version of it.
        let chunks: Vec<Arc<ChangeChunk>> = std::iter::once(&sv.mem)
            .chain(sv.imms.iter())
            .flat_map(|m| m.changes_between(lo, hi_ts))
            .collect();
        // (key, commit timestamp, position in the log, value)
        type Change<'a> = (&'a [u8], Ts, u32, Option<&'a [u8]>);
        let mut mem: Vec<Change> = Vec::new();
        let mut seq = 0u32;
        for c in &chunks {
            for i in 0..c.len() {
                let (k, ts, v) = c.get(i);
                seq += 1;
                if ts > lo && ts <= hi_ts && k >= start && k < end {
                    mem.push((k, ts, seq, v));
                }
            }
        }
        // Key ascending, then newest first (a later write at the same timestamp wins).
        mem.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
        mem.dedup_by(|later, first| later.0 == first.0);
        let mut mem = mem.into_iter().peekable();

        // What the table files changed: the first version <= hi of each key decides.
        let mut merge = MergeIter::over_tables_newer_than(&sv, start, end, lo)?;
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
            if !decided && ts <= hi_ts {
                decided = true;
                if ts > lo {
                    let mut shadowed = false;
                    while let Some(&(mk, _, _, mv)) = mem.peek() {
                        if mk > k {
                            break;
                        }
                        shadowed = mk == k;
                        f(mk, mv)?;
                        mem.next();
                    }
                    if !shadowed {
                        f(k, v)?;
                    }
                }
            }
            merge.advance()?;
        }
        for (k, _, _, v) in mem {
            f(k, v)?;
        }
        Ok(())
    }

    /// Number of open transactions.
    fn active_transactions(&self) -> usize {
        self.inner.registry.active_txns()
    }

    /// Sizes and cache figures right now.
    fn sizes(&self) -> EngineSizes {
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

    fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }
}

impl Drop for LsmEngine {
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
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_healthy()
    }

    /// Open and not stopped by a fatal error (reads may still be refused writes).
    fn check_healthy(&self) -> Result<()> {
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

    /// The oldest timestamp whose versions flush and compaction must keep.
    pub(super) fn gc_horizon(&self) -> Ts {
        self.registry
            .horizon(self.visible_ts.load(Ordering::Acquire))
    }

    fn notify(&self) {
        let _g = self.bg.lock();
        self.bg_cv.notify_all();
    }

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
        if !self.has_fatal.load(Ordering::Acquire) && !self.read_only {
            // (Not held past this: a held read view keeps the tree's old pages.)
            if !self.sv.load().mem.is_empty() {
                result = self.switch_memtable();
            }
            if result.is_ok() {
                result = self.flush_all_inline();
            }
            // The B+Tree engine gives free pages back at close when that is quick (a
            // load leaves about one tree's worth free behind its last flush); a larger
            // backlog waits for the idle compaction of the next open.
            if result.is_ok() {
                result = self.compact_tree(Some(CLOSE_COMPACTION_PAGES));
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

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<LsmEngine>();
    is::<LsmIter>();
}
