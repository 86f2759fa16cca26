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
use crate::key::Ts;
use crate::lsm::{LsmEngine, LsmIter};
use crate::memory::{MemIter, MemoryEngine};
use crate::options::EngineOptions;
pub use crate::row_engine::{CommitCheck, EngineSizes, EngineStats, OpenMode, RowEngine};
use crate::snapshot::{Snapshot, TxnSnapshot};
use std::path::Path;
use std::time::Instant;

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
    /// The in-memory engine's entries, and the one last lent by `next_ref`.
    Memory(MemIter, Option<(Vec<u8>, Vec<u8>)>),
}

impl Iterator for DbIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            DbIter::Lsm(i) => i.next(),
            DbIter::Memory(i, _) => i.next(),
        }
    }
}

impl DbIter {
    /// The next entry, borrowed until the next call: no copy per entry on the LSM
    /// engine (see [`crate::iter::VisibleIter::next_ref`]). `Ok(None)` at the end.
    #[inline]
    pub fn next_ref(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        match self {
            DbIter::Lsm(i) => i.next_ref(),
            DbIter::Memory(i, held) => {
                *held = i.next().transpose()?;
                Ok(held.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
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
        let started = Instant::now();
        let ts = each!(self, e => e.write(batch))?;
        self.stats().put_latency.record(started.elapsed());
        Ok(ts)
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        each!(self, e => e.get(key))
    }

    /// [`Engine::get`], lending the value to `f` instead of copying it out.
    #[inline]
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        let mut once = |v: &[u8]| f.take().map(|f| f(v));
        Ok(each!(self, e => e.get_with(key, &mut once))?.flatten())
    }

    #[inline]
    pub fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>> {
        each!(self, e => e.get_at(key, snap))
    }

    pub fn begin_txn(&self) -> Result<TxnSnapshot> {
        each!(self, e => e.begin_txn())
    }

    pub fn commit_checked(&self, batch: WriteBatch, check: CommitCheck) -> Result<Ts> {
        let started = Instant::now();
        let ts = each!(self, e => e.commit_checked(batch, check))?;
        self.stats().commit_latency.record(started.elapsed());
        Ok(ts)
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
            Engine::Memory(e) => e.iter(start, end, reverse).map(|i| DbIter::Memory(i, None)),
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
            Engine::Memory(e) => e
                .iter_at(snap, start, end, reverse)
                .map(|i| DbIter::Memory(i, None)),
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

    /// See [`LsmEngine::commit_yield_holds`] (`None`: an engine without a WAL sync to
    /// wait for).
    pub fn commit_yield_holds(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU32>> {
        self.as_lsm().map(|e| e.commit_yield_holds())
    }

    pub fn background_threads(&self) -> usize {
        self.as_lsm().map_or(0, |e| e.background_threads())
    }

    /// Opened with [`OpenMode::ReadOnly`](crate::OpenMode::ReadOnly).
    pub fn is_read_only(&self) -> bool {
        self.as_lsm().is_some_and(|e| e.is_read_only())
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

/// A write too large for one batch (a bulk import), staged in runs and published by
/// one commit: readers see all of it or none of it, also across a crash. Each run is
/// strictly ascending by key and a later run wins over an earlier one; memory holds
/// what the caller holds, one run at a time (the LSM engine writes each run to a table
/// file at once, see `crate::lsm::LsmIngest`). Dropped without [`Ingest::commit`], it
/// removes what it staged.
pub struct Ingest<'a> {
    kind: IngestKind<'a>,
}

enum IngestKind<'a> {
    Lsm(crate::lsm::LsmIngest),
    Memory {
        engine: &'a MemoryEngine,
        runs: Vec<crate::memory::Run>,
    },
}

impl Engine {
    /// Start a large write (see [`Ingest`]).
    pub fn ingest(&self) -> Result<Ingest<'_>> {
        let kind = match self {
            Engine::Lsm(e) => IngestKind::Lsm(e.ingest()?),
            Engine::Memory(e) => IngestKind::Memory {
                engine: e,
                runs: Vec::new(),
            },
        };
        Ok(Ingest { kind })
    }
}

impl Ingest<'_> {
    /// Stage one run: keys strictly ascending, `None` deletes.
    pub fn add_run<'k>(
        &mut self,
        entries: impl IntoIterator<Item = (&'k [u8], Option<&'k [u8]>)>,
    ) -> Result<()> {
        match &mut self.kind {
            IngestKind::Lsm(i) => i.add_run(entries),
            IngestKind::Memory { runs, .. } => {
                let run: crate::memory::Run = entries
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect();
                if run.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(Error::InvalidArgument(
                        "an ingested run's keys must be strictly ascending".into(),
                    ));
                }
                for (k, v) in &run {
                    crate::batch::check_write(k, v.as_deref())?;
                }
                runs.push(run);
                Ok(())
            }
        }
    }

    /// Runs staged so far.
    pub fn runs(&self) -> usize {
        match &self.kind {
            IngestKind::Lsm(i) => i.runs(),
            IngestKind::Memory { runs, .. } => runs.len(),
        }
    }

    /// A key two staged runs both hold, if any.
    pub fn duplicate_key(&mut self) -> Result<Option<Vec<u8>>> {
        match &mut self.kind {
            IngestKind::Lsm(i) => i.duplicate_key(),
            IngestKind::Memory { runs, .. } => {
                let mut keys: Vec<&[u8]> = runs.iter().flatten().map(|(k, _)| &k[..]).collect();
                keys.sort_unstable();
                Ok(keys
                    .windows(2)
                    .find(|w| w[0] == w[1])
                    .map(|w| w[0].to_vec()))
            }
        }
    }

    /// Publish every staged run in one commit; returns its commit timestamp. With
    /// `conflict_after`, a staged key that another commit wrote after that timestamp
    /// refuses all of it (`Error::TransactionConflict`).
    pub fn commit(self, conflict_after: Option<Ts>) -> Result<Ts> {
        match self.kind {
            IngestKind::Lsm(i) => i.commit(conflict_after),
            IngestKind::Memory { engine, runs } => engine.ingest_runs(&runs, conflict_after),
        }
    }
}
