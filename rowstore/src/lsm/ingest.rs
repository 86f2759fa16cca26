//! Ingestion: a write too large for one WAL record and one memtable, staged as sorted
//! table files outside the tree and published by one manifest edit.
//!
//! The caller hands over runs (each strictly ascending by key). Each run becomes a table
//! file at once (synced, under a reserved file number, named by no manifest), so memory
//! holds one run at a time. The commit goes through the commit pipeline as one request
//! that runs alone: if a memtable holds a key in the runs' range, it switches the
//! memtable and waits until every memtable is in tables (so nothing in memory is older
//! than the ingested data for any key they share), checks for conflicts,
//! renumbers the files (level 0 is ordered by number: they are the newest), places each
//! in the deepest level where nothing above it overlaps it, and logs one edit that adds
//! them all with commit timestamps `T..T+n` (run `i` at `T+i`, so a later run wins) and
//! moves the last timestamp past them. Readers see none of the runs before that edit and
//! all of them after it; after a crash before it the files are unnamed numbers below
//! the reservation, which recovery deletes. Nothing goes through the WAL: the files are
//! durable before the edit names them.

use super::*;
use crate::iter::Source;
use crate::key::MAX_TS;
use crate::sst::TableIter;

/// Work the commit leader does for an ingestion (see the module docs).
pub(super) struct IngestJob {
    tables: Vec<Arc<Table>>,
    conflict_after: Option<Ts>,
    /// Numbers of the staged files on disk and not yet published; emptied on publish.
    staged: Arc<Mutex<Vec<u64>>>,
}

/// A large write being staged into an LSM engine (see the module docs). Dropped
/// without [`LsmIngest::commit`], it removes its files and nothing was written.
pub struct LsmIngest {
    inner: Arc<Inner>,
    tables: Vec<Arc<Table>>,
    staged: Arc<Mutex<Vec<u64>>>,
    bytes: u64,
    /// The last runs' table files (oldest first), each being written on a helper
    /// thread while the caller prepares the next run (at most [`BUILDING`] at a time);
    /// each thread hands its run's buffer back for a later one.
    building: std::collections::VecDeque<std::thread::JoinHandle<Result<Built>>>,
    /// Buffers the next runs are copied into (kept from run to run: a run is tens of
    /// MiB, allocated and faulted in a few times per ingestion, not once per run).
    spare: Vec<OwnedRun>,
}

/// Runs whose table files are written at once. Compressing a run's blocks costs about
/// as much as encoding its rows, so with one the caller often waits for the previous
/// file; with two, a second core (idle then) compresses the next run meanwhile.
const BUILDING: usize = 2;

/// A run's table file, and its buffer back for the next run.
type Built = (Arc<Table>, OwnedRun);

/// A run copied out of the caller's memory: entries back to back, in order.
#[derive(Default)]
struct OwnedRun {
    bytes: Vec<u8>,
    /// Per entry: key length, value length (`u32::MAX`: a delete).
    lens: Vec<(u32, u32)>,
}

/// Value length that marks a delete in an [`OwnedRun`].
const DELETE: u32 = u32::MAX;

impl LsmEngine {
    /// Start staging a large write.
    pub fn ingest(&self) -> Result<LsmIngest> {
        self.inner.check_writable()?;
        Ok(LsmIngest {
            inner: self.inner.clone(),
            tables: Vec::new(),
            staged: Arc::new(Mutex::new(Vec::new())),
            bytes: 0,
            building: Default::default(),
            spare: Vec::new(),
        })
    }
}

impl LsmIngest {
    /// Stage one run (keys strictly ascending; `None` deletes) as a table file. The run
    /// is checked and copied here; its file is written on a helper thread while the
    /// caller goes on preparing the next run (a statement's own thread is its import's
    /// bottleneck: encoding rows and compressing blocks then overlap). An error of that
    /// write surfaces at the next call.
    pub fn add_run<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<()> {
        self.inner.check_writable()?;
        let mut run = self.spare.pop().unwrap_or_default();
        run.bytes.clear();
        run.lens.clear();
        let mut last: Option<&[u8]> = None;
        for (k, v) in entries {
            if last.is_some_and(|l| l >= k) {
                return Err(Error::InvalidArgument(
                    "an ingested run's keys must be strictly ascending".into(),
                ));
            }
            crate::batch::check_write(k, v)?;
            run.bytes.extend_from_slice(k);
            if let Some(v) = v {
                run.bytes.extend_from_slice(v);
            }
            run.lens
                .push((k.len() as u32, v.map_or(DELETE, |v| v.len() as u32)));
            last = Some(k);
        }
        if run.lens.is_empty() {
            self.spare.push(run);
            return Ok(());
        }
        while self.building.len() >= BUILDING {
            self.wait_oldest()?;
        }
        let inner = &self.inner;
        let id = inner.alloc_id()?;
        self.staged.lock().push(id);
        let o = &inner.opts;
        let b = TableBuilder::create(
            &inner.vfs,
            &inner.dir,
            id,
            o.block_size,
            o.compression,
            o.bloom_bits_per_key,
        )?;
        let inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("ldb-ingest".into())
            .spawn(move || build_run(&inner, b, id, &run).map(|t| (t, run)))
            .map_err(|e| Error::Io {
                context: "starting an ingestion thread".into(),
                source: e,
            })?;
        self.building.push_back(thread);
        Ok(())
    }

    /// Wait for every run being written.
    fn wait_built(&mut self) -> Result<()> {
        while !self.building.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }

    /// Wait for the oldest run being written (files are kept in the order of their
    /// runs: a later run wins over an earlier one).
    fn wait_oldest(&mut self) -> Result<()> {
        let Some(t) = self.building.pop_front() else {
            return Ok(());
        };
        let (table, run) = t.join().map_err(|_| Error::Io {
            context: "writing an ingested run".into(),
            source: std::io::Error::other("the ingestion thread panicked"),
        })??;
        if self.spare.len() < BUILDING {
            self.spare.push(run);
        }
        self.bytes += table.meta().file_size;
        self.tables.push(table);
        Ok(())
    }

    /// Runs staged so far.
    pub fn runs(&self) -> usize {
        self.tables.len() + self.building.len()
    }

    /// Bytes of the staged files (written so far).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A key two runs both hold, if any. Runs whose key ranges do not overlap (an
    /// import in key order) are not read at all.
    pub fn duplicate_key(&mut self) -> Result<Option<Vec<u8>>> {
        self.wait_built()?;
        let mut order: Vec<&Arc<Table>> = self.tables.iter().collect();
        order.sort_by(|a, b| a.meta().smallest.user_key.cmp(&b.meta().smallest.user_key));
        let overlap = order
            .windows(2)
            .any(|w| w[1].meta().smallest.user_key <= w[0].meta().largest.user_key);
        if !overlap {
            return Ok(None);
        }
        let sources = self
            .tables
            .iter()
            .map(|t| TableIter::new(t.clone(), None, None, false, None).map(Source::Table))
            .collect::<Result<Vec<_>>>()?;
        let mut m = MergeIter::new(sources, false);
        let mut last: Option<Vec<u8>> = None;
        while let Some((k, _, _)) = m.current() {
            if last.as_deref() == Some(k) {
                return Ok(last);
            }
            last = Some(k.to_vec());
            m.advance()?;
        }
        Ok(None)
    }

    /// Publish every run in one commit and return its (last) commit timestamp. With
    /// `conflict_after`, a key of the runs that another commit wrote after that
    /// timestamp refuses the whole ingestion (`Error::TransactionConflict`).
    pub fn commit(mut self, conflict_after: Option<Ts>) -> Result<Ts> {
        self.wait_built()?;
        if self.tables.is_empty() {
            self.inner.check_writable()?;
            return Ok(self.inner.visible_ts.load(Ordering::Acquire));
        }
        let job = IngestJob {
            tables: self.tables.clone(),
            conflict_after,
            staged: self.staged.clone(),
        };
        self.inner.check_writable()?;
        self.inner.submit_ingest(job)
    }
}

/// Write `run` with `b` as staged table file `id` (synced) and open it.
fn build_run(inner: &Inner, mut b: TableBuilder, id: u64, run: &OwnedRun) -> Result<Arc<Table>> {
    let mut at = 0;
    for &(kl, vl) in &run.lens {
        let k = &run.bytes[at..at + kl as usize];
        at += kl as usize;
        let v = match vl {
            DELETE => None,
            n => {
                let v = &run.bytes[at..at + n as usize];
                at += n as usize;
                Some(v)
            }
        };
        b.add(k, 0, v)?;
    }
    b.finish()?;
    Ok(Arc::new(Table::open(
        &inner.vfs, &inner.dir, id, None, None,
    )?))
}

/// The user-key range `[first key, just past the last key)` that `tables` cover.
fn key_span(tables: &[Arc<Table>]) -> Option<(&[u8], Vec<u8>)> {
    let start = tables.iter().map(|t| &t.meta().smallest.user_key).min()?;
    let mut end = tables
        .iter()
        .map(|t| &t.meta().largest.user_key)
        .max()?
        .clone();
    end.push(0);
    Some((start, end))
}

impl Drop for LsmIngest {
    fn drop(&mut self) {
        // The file being written must be finished before it is removed.
        for t in self.building.drain(..) {
            let _ = t.join();
        }
        self.tables.clear();
        for id in self.staged.lock().drain(..) {
            let _ = vfs::remove_file_if_exists(
                &*self.inner.vfs,
                &crate::sst::table_path(&self.inner.dir, id),
            );
        }
    }
}

impl Inner {
    /// Run an ingestion; called by the commit leader with no write in flight (see the
    /// module docs).
    pub(super) fn ingest_now(&self, job: IngestJob) -> Result<Ts> {
        if let Some(tree) = &self.tree {
            return self.ingest_into_tree(tree, job);
        }
        // Every version in memory of a key the runs hold must be in tables first (they
        // are older than the runs, and readers look in memory before tables). Memtables
        // with nothing in the runs' key range stay: their keys never meet the runs'.
        if self.memtables_overlap(&job.tables) {
            self.switch_memtable()?;
            self.wait_for_flushes()?;
        }
        let sv = self.sv.load_full();
        debug_assert!(!self.memtables_overlap(&job.tables));
        if let Some(lo) = job.conflict_after {
            self.ingest_conflict(&sv, &job.tables, lo)?;
        }
        let n = job.tables.len() as u64;
        let mut st = self.state.lock();
        let base = self.last_ts.load(Ordering::Relaxed) + 1;
        let last = base + n - 1;

        // Renumber: level 0 is ordered by file number, and these are the newest.
        let mut renamed = Vec::with_capacity(job.tables.len());
        for t in &job.tables {
            let id = self.alloc_id_locked(&mut st)?;
            let from = crate::sst::table_path(&self.dir, t.id());
            let to = crate::sst::table_path(&self.dir, id);
            self.vfs
                .rename(&from, &to)
                .ctx(|| format!("renaming {} to {}", from.display(), to.display()))?;
            let mut staged = job.staged.lock();
            staged.retain(|&s| s != t.id());
            staged.push(id);
            renamed.push(id);
        }
        vfs::sync_dir(&*self.vfs, &self.dir)?;
        let mut added = Vec::with_capacity(renamed.len());
        for (i, &id) in renamed.iter().enumerate() {
            let t = Table::open(
                &self.vfs,
                &self.dir,
                id,
                self.mmap.as_ref(),
                self.cache.clone(),
            )?
            .with_global_ts(base + i as u64);
            added.push(Arc::new(t));
        }

        // Place each in the deepest level whose key range above and at it is free.
        let runs_overlap = {
            let mut r: Vec<&TableMeta> = added.iter().map(|t| t.meta()).collect();
            r.sort_by(|a, b| a.smallest.user_key.cmp(&b.smallest.user_key));
            r.windows(2)
                .any(|w| w[1].smallest.user_key <= w[0].largest.user_key)
        };
        let placed: Vec<(usize, Arc<Table>)> = added
            .into_iter()
            .map(|t| {
                let mut level = 0;
                if !runs_overlap {
                    let m = t.meta();
                    let (lo, hi) = (&m.smallest.user_key, &m.largest.user_key);
                    for l in 0..NUM_LEVELS {
                        let busy = l > 0 && st.busy_levels[l];
                        if busy || !st.version.overlapping(l, lo, hi).is_empty() {
                            break;
                        }
                        level = l;
                    }
                }
                (level, t)
            })
            .collect();
        let edit = VersionEdit {
            last_ts: Some(last),
            ..Default::default()
        };
        self.install_locked(&mut st, edit, &[], &placed, &[])?;
        job.staged.lock().clear();
        drop(st);

        self.last_ts.store(last, Ordering::Relaxed);
        self.visible_ts.store(last, Ordering::SeqCst);
        if self.registry.active_txns_seqcst() > 0 {
            let mut r = self.recent_ingests.lock();
            for (_, t) in &placed {
                let m = t.meta();
                r.push((
                    m.smallest.user_key.clone(),
                    m.largest.user_key.clone(),
                    last,
                ));
            }
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.puts.fetch_add(
            placed
                .iter()
                .map(|(_, t)| t.meta().num_entries - t.meta().num_deletes)
                .sum(),
            Ordering::Relaxed,
        );
        self.notify();
        Ok(last)
    }

    /// The B+Tree engine's ingestion: every commit so far goes into the tree first (the
    /// tree's mark says which commits it holds, and the runs' timestamps follow them),
    /// then the runs are merged into the tree at their commit timestamps and published
    /// with it, durably, before the commit is visible. Writers wait meanwhile.
    fn ingest_into_tree(&self, tree: &crate::btree::BTree, job: IngestJob) -> Result<Ts> {
        self.switch_memtable()?;
        self.wait_for_flushes()?;
        let sv = self.sv.load_full();
        if let Some(lo) = job.conflict_after {
            self.ingest_conflict(&sv, &job.tables, lo)?;
        }
        let n = job.tables.len() as u64;
        let base = self.last_ts.load(Ordering::Relaxed) + 1;
        let last = base + n - 1;
        let mut changes = Vec::new();
        for (i, t) in job.tables.iter().enumerate() {
            let mut it = TableIter::new(t.clone(), None, None, false, None)?;
            while let Some((k, _, v)) = it.current() {
                changes.push((k.to_vec(), base + i as u64, v.map(<[u8]>::to_vec)));
                it.advance()?;
            }
        }
        // Runs may hold the same key: the later run's version is the newer.
        changes.sort_by(|a, b| crate::key::cmp_internal(&a.0, a.1, &b.0, b.1));
        let (puts, entries) = (
            changes.iter().filter(|c| c.2.is_some()).count() as u64,
            changes.len(),
        );
        tree.apply(changes, self.gc_horizon(), last)?;
        let mut st = self.state.lock();
        let edit = VersionEdit {
            last_ts: Some(last),
            ..Default::default()
        };
        self.install_locked(&mut st, edit, &[], &[], &[])?;
        drop(st);
        for id in job.staged.lock().drain(..) {
            let _ = vfs::remove_file_if_exists(&*self.vfs, &crate::sst::table_path(&self.dir, id));
        }
        self.last_ts.store(last, Ordering::Relaxed);
        self.visible_ts.store(last, Ordering::SeqCst);
        if self.registry.active_txns_seqcst() > 0
            && let Some((start, mut end)) = key_span(&job.tables).map(|(s, e)| (s.to_vec(), e))
        {
            end.pop();
            self.recent_ingests.lock().push((start, end, last));
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.puts.fetch_add(puts, Ordering::Relaxed);
        tracing::debug!(entries, last, "ingested into the tree");
        self.notify();
        Ok(last)
    }

    /// Whether a memtable holds a key in the range the runs `tables` cover.
    fn memtables_overlap(&self, tables: &[Arc<Table>]) -> bool {
        let Some((start, end)) = key_span(tables) else {
            return false;
        };
        let sv = self.sv.load_full();
        std::iter::once(&sv.mem).chain(sv.imms.iter()).any(|m| {
            crate::memtable::MemTableIter::new(m.clone(), Some(start), Some(&end), false)
                .current()
                .is_some()
        })
    }

    /// Refuse an ingestion if a commit after `lo` wrote a key one of `tables` holds.
    /// Every commit to a key in their range is in tables here (see `ingest_now`).
    fn ingest_conflict(&self, sv: &SuperVersion, tables: &[Arc<Table>], lo: Ts) -> Result<()> {
        let Some((start, end)) = key_span(tables) else {
            return Ok(());
        };
        let mut m = MergeIter::over_tables_newer_than(sv, start, &end, lo)?;
        while let Some((k, ts, _)) = m.current() {
            if ts > lo {
                let h = bloom::key_hash(k);
                for t in tables {
                    if t.meta().overlaps(Some(k), Some(k))
                        && t.may_contain_hash(h)
                        && !matches!(t.get(k, MAX_TS)?, Lookup::NotFound)
                    {
                        return Err(Error::TransactionConflict(format!(
                            "key {} was changed by a transaction that committed after this \
                             write began",
                            crate::key::display_key(k)
                        )));
                    }
                }
            }
            m.advance()?;
        }
        Ok(())
    }
}
