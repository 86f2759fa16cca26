//! [`MemoryEngine`]: the row-engine contract kept by the simplest thing that can keep
//! it: an ordered map from key to its versions (newest first), one lock, no files. It
//! is the oracle the model tests hold the LSM engine to, operation by operation.

use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::key::{Ts, display_key};
use crate::options::EngineOptions;
use crate::row_engine::{CommitCheck, EngineSizes, EngineStats, RowEngine};
use crate::snapshot::{At, Snapshot, SnapshotRegistry, TxnSnapshot};
use parking_lot::{Mutex, RwLock};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Key -> (commit timestamp, newest first) -> value, or `None` for a delete.
type Versions = BTreeMap<Vec<u8>, BTreeMap<Reverse<Ts>, Option<Vec<u8>>>>;

/// An in-memory engine: every version of every key in one ordered map.
pub struct MemoryEngine {
    opts: EngineOptions,
    data: RwLock<Versions>,
    /// Serializes commits (validation, timestamp, apply, publish).
    commit: Mutex<()>,
    visible: AtomicU64,
    registry: Arc<SnapshotRegistry>,
    closed: AtomicBool,
    stats: EngineStats,
}

/// One staged run of an ingestion: keys ascending, `None` deletes.
pub type Run = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// An iterator over a copy of the entries it covers (the oracle does not stream).
pub type MemIter = std::vec::IntoIter<Result<(Vec<u8>, Vec<u8>)>>;

fn bounds<'a>(
    start: Option<&'a [u8]>,
    end: Option<&'a [u8]>,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        start.map_or(Bound::Unbounded, Bound::Included),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

impl MemoryEngine {
    pub fn new(opts: EngineOptions) -> MemoryEngine {
        MemoryEngine {
            opts,
            data: RwLock::new(BTreeMap::new()),
            commit: Mutex::new(()),
            visible: AtomicU64::new(0),
            registry: Arc::new(SnapshotRegistry::default()),
            closed: AtomicBool::new(false),
            stats: EngineStats::default(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    fn read_at(&self, key: &[u8], ts: Ts) -> Option<Option<Vec<u8>>> {
        let d = self.data.read();
        let versions = d.get(key)?;
        versions.range(Reverse(ts)..).next().map(|(_, v)| v.clone())
    }

    fn apply(&self, batch: &WriteBatch) -> Ts {
        let ts = self.visible.load(Ordering::Acquire) + 1;
        let mut d = self.data.write();
        let (mut puts, mut dels) = (0, 0);
        for op in batch.ops() {
            match op.value() {
                Some(_) => puts += 1,
                None => dels += 1,
            }
            d.entry(op.key().to_vec())
                .or_default()
                .insert(Reverse(ts), op.value().map(<[u8]>::to_vec));
        }
        drop(d);
        self.stats.puts.fetch_add(puts, Ordering::Relaxed);
        self.stats.deletes.fetch_add(dels, Ordering::Relaxed);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.visible.store(ts, Ordering::SeqCst);
        ts
    }

    fn newer(&self, key: &[u8], than: Ts) -> bool {
        self.latest(key).is_some_and(|t| t > than)
    }

    fn latest(&self, key: &[u8]) -> Option<Ts> {
        let d = self.data.read();
        d.get(key)
            .and_then(|v| v.keys().next())
            .map(|Reverse(t)| *t)
    }

    fn entries_at(
        &self,
        ts: Ts,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> MemIter {
        if start.zip(end).is_some_and(|(s, e)| s >= e) {
            return Vec::new().into_iter();
        }
        let d = self.data.read();
        let mut out: Vec<Result<(Vec<u8>, Vec<u8>)>> = d
            .range::<[u8], _>(bounds(start, end))
            .filter_map(|(k, versions)| {
                let v = versions.range(Reverse(ts)..).next()?.1.as_ref()?;
                Some(Ok((k.clone(), v.clone())))
            })
            .collect();
        if reverse {
            out.reverse();
        }
        out.into_iter()
    }

    /// Publish staged runs in one commit, later runs winning (the oracle of
    /// [`crate::engine::Ingest`]): refused if a key of theirs was written after
    /// `conflict_after`.
    pub fn ingest_runs(&self, runs: &[Run], conflict_after: Option<Ts>) -> Result<Ts> {
        self.check_open()?;
        let _c = self.commit.lock();
        if runs.iter().all(Vec::is_empty) {
            return Ok(self.visible.load(Ordering::Acquire));
        }
        if let Some(lo) = conflict_after {
            for (k, _) in runs.iter().flatten() {
                if self.newer(k, lo) {
                    return Err(Error::TransactionConflict(format!(
                        "key {} was changed by a transaction that committed after this write began",
                        display_key(k)
                    )));
                }
            }
        }
        let ts = self.visible.load(Ordering::Acquire) + 1;
        let mut d = self.data.write();
        for (k, v) in runs.iter().flatten() {
            d.entry(k.clone())
                .or_default()
                .insert(Reverse(ts), v.clone());
        }
        drop(d);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.visible.store(ts, Ordering::SeqCst);
        Ok(ts)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl RowEngine for MemoryEngine {
    type Iter = MemIter;
    fn write(&self, batch: WriteBatch) -> Result<Ts> {
        self.check_open()?;
        let _c = self.commit.lock();
        if batch.is_empty() {
            return Ok(self.visible.load(Ordering::Acquire));
        }
        Ok(self.apply(&batch))
    }

    fn commit_checked(&self, batch: WriteBatch, check: CommitCheck) -> Result<Ts> {
        self.check_open()?;
        let _c = self.commit.lock();
        let conflict = |what: &str, k: &[u8]| {
            Error::TransactionConflict(format!(
                "{what} key {} was changed by a transaction that committed after this one began",
                display_key(k)
            ))
        };
        for op in batch.ops() {
            if self.newer(op.key(), check.start_ts) {
                return Err(conflict("written", op.key()));
            }
        }
        for k in &check.read_keys {
            if self.newer(k, check.start_ts) {
                return Err(conflict("read", k));
            }
        }
        for (start, end) in &check.read_ranges {
            let d = self.data.read();
            let range = d.range::<[u8], _>(bounds(start.as_deref(), end.as_deref()));
            for (k, versions) in range {
                if versions
                    .keys()
                    .next()
                    .is_some_and(|Reverse(t)| *t > check.start_ts)
                {
                    return Err(conflict("scanned", k));
                }
            }
        }
        if batch.is_empty() {
            return Ok(self.visible.load(Ordering::Acquire));
        }
        Ok(self.apply(&batch))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.stats.gets.add(1);
        Ok(self
            .read_at(key, self.visible.load(Ordering::Acquire))
            .flatten())
    }

    fn get_with<R>(&self, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Result<Option<R>> {
        Ok(self.get(key)?.map(|v| f(&v)))
    }

    fn get_at(&self, key: &[u8], snap: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.stats.gets.add(1);
        Ok(self.read_at(key, snap.ts()).flatten())
    }

    fn latest_commit_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        Ok(self.latest(key))
    }

    fn snapshot(&self) -> Snapshot {
        self.registry.register_now(&self.visible)
    }

    fn snapshot_at(&self, ts: Ts) -> Result<Snapshot> {
        self.registry.register(At::Checked(ts), &self.visible)
    }

    fn begin_txn(&self) -> Result<TxnSnapshot> {
        self.check_open()?;
        self.registry.begin_txn(&self.visible)
    }

    fn iter(&self, start: Option<&[u8]>, end: Option<&[u8]>, reverse: bool) -> Result<MemIter> {
        self.check_open()?;
        Ok(self.entries_at(self.visible.load(Ordering::Acquire), start, end, reverse))
    }

    fn iter_at(
        &self,
        snap: &Snapshot,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<MemIter> {
        self.check_open()?;
        Ok(self.entries_at(snap.ts(), start, end, reverse))
    }

    fn visible_ts(&self) -> Ts {
        self.visible.load(Ordering::Acquire)
    }

    /// Nothing to flush: the data is only in memory.
    fn flush(&self) -> Result<()> {
        self.check_open()
    }

    /// Drop every version that no registered snapshot (nor the newest state) can see.
    fn compact_all(&self) -> Result<()> {
        self.check_open()?;
        let _c = self.commit.lock();
        let horizon = self.registry.horizon(self.visible.load(Ordering::Acquire));
        let mut d = self.data.write();
        d.retain(|_, versions| {
            // Keep everything newer than the horizon, and the newest version at or
            // below it (unless that is a delete with nothing older to hide).
            let cut = versions.range(Reverse(horizon)..).next().map(|(t, _)| *t);
            if let Some(cut) = cut {
                let older: Vec<Reverse<Ts>> =
                    versions.range(cut..).skip(1).map(|(t, _)| *t).collect();
                for t in older {
                    versions.remove(&t);
                }
                if versions.get(&cut).is_some_and(|v| v.is_none()) && versions.len() == 1 {
                    versions.remove(&cut);
                }
            }
            !versions.is_empty()
        });
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn for_each_change<E: From<Error>>(
        &self,
        hi: &Snapshot,
        lo: Ts,
        start: &[u8],
        end: &[u8],
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.check_open()?;
        let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let d = self.data.read();
            d.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
                .filter_map(|(k, versions)| {
                    let (Reverse(t), v) = versions.range(Reverse(hi.ts())..).next()?;
                    (*t > lo).then(|| (k.clone(), v.clone()))
                })
                .collect()
        };
        for (k, v) in &changes {
            f(k, v.as_deref())?;
        }
        Ok(())
    }

    fn active_transactions(&self) -> usize {
        self.registry.active_txns()
    }

    fn sizes(&self) -> EngineSizes {
        EngineSizes {
            visible_ts: self.visible_ts(),
            ..Default::default()
        }
    }

    fn stats(&self) -> &EngineStats {
        &self.stats
    }
}
