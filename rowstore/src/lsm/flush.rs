//! Flush: immutable memtables become level-0 tables (on a background thread, or inline
//! when background work is off), and the WAL segments they covered are removed. Also
//! the sink that writes merged entries into tables, shared with compaction, and the
//! retry policy of background work (a full disk is retried; anything else is fatal).

use super::*;
use crate::iter::Source;
use crate::memtable::MemTableIter;

impl Inner {
    pub(super) fn wait_for_flushes(&self) -> Result<()> {
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
            // Asked again at every turn: a flush clears the wish as it starts, and
            // memtables frozen during it wait for the next.
            self.flush_wanted.store(true, Ordering::Release);
            self.bg_cv.notify_all();
            self.bg_cv.wait_for(&mut g, Duration::from_millis(50));
        }
    }

    pub(super) fn flush_all_inline(&self) -> Result<()> {
        while self.flush_pending()? {}
        Ok(())
    }

    /// Whether the background should flush now. The LSM flushes each memtable as soon
    /// as it is frozen. The B+Tree engine waits until its frozen memtables make a whole
    /// `write_buffer_size` (each merge rewrites the leaves it touches, so it merges
    /// few large batches), unless someone waits for the flush or writes have paused
    /// (`quiet`: the commit count last seen and since when).
    fn flush_due(&self, quiet: &mut (u64, Instant)) -> bool {
        let sv = self.sv.load();
        if sv.imms.is_empty() {
            return false;
        }
        if self.tree.is_none()
            || sv.imms.len() >= self.opts.memtables_per_buffer()
            || self.flush_wanted.load(Ordering::Acquire)
        {
            return true;
        }
        let commits = self.stats.commits.load(Ordering::Relaxed);
        if commits != quiet.0 {
            *quiet = (commits, Instant::now());
            return false;
        }
        quiet.1.elapsed() >= IDLE_FLUSH
    }

    /// Flush every immutable memtable, merged, to level-0 tables (the LSM) or into
    /// the tree (the B+Tree engine). Returns false if none waits.
    pub(super) fn flush_pending(&self) -> Result<bool> {
        self.flush_wanted.store(false, Ordering::Release);
        let sv = self.sv.load_full();
        // Newest first, as in the super-version; all of them, so no older memtable is
        // ever left behind a newer one's flush.
        let imms = sv.imms.clone();
        let (Some(max_ts), Some(last_segment)) = (
            imms.iter().map(|m| m.max_ts()).max(),
            imms.iter().map(|m| m.wal_segment()).max(),
        ) else {
            return Ok(false);
        };
        let entries: usize = imms.iter().map(|m| m.len()).sum();
        let _span = tracing::info_span!("flush", memtables = imms.len(), entries).entered();
        let started = Instant::now();
        let horizon = self.gc_horizon();
        let (added, bytes) = match &self.tree {
            Some(tree) => {
                // The B+Tree engine: merge the memtables into the tree and publish it.
                let mut changes = Vec::with_capacity(entries);
                for_each_version(&imms, |k, ts, v| {
                    changes.push((k.to_vec(), ts, v.map(<[u8]>::to_vec)));
                    Ok(())
                })?;
                let bytes: u64 = changes
                    .iter()
                    .map(|(k, _, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
                    .sum();
                tree.apply(changes, horizon, max_ts)?;
                (Vec::new(), bytes)
            }
            None => {
                let outputs = self.flush_to_table(&imms, horizon)?;
                let bytes: u64 = outputs.iter().map(|t| t.meta().file_size).sum();
                (
                    outputs.into_iter().map(|t| (0, t)).collect::<Vec<_>>(),
                    bytes,
                )
            }
        };
        let edit = VersionEdit {
            last_ts: Some(max_ts),
            log_number: self.opts.wal_enabled.then_some(last_segment + 1),
            ..Default::default()
        };
        self.install(edit, &[], &added, &imms)?;
        if self.opts.wal_enabled {
            // Every segment up to the newest flushed memtable's is now in tables.
            if let Ok(names) = self.vfs.list(&self.dir) {
                for name in names {
                    if let crate::files::DbFile::Wal(n) = crate::files::classify(&name)
                        && n <= last_segment
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

    /// Write `imms` to level-0 tables (the LSM's flush).
    fn flush_to_table(&self, imms: &[Arc<MemTable>], horizon: Ts) -> Result<Vec<Arc<Table>>> {
        let mut out = OutputSink::new(self, horizon, false, None);
        // A table that cannot be written (a full disk, say) is removed; the memtables
        // stay and the flush is tried again later.
        match for_each_version(imms, |k, ts, v| out.add(k, ts, v)) {
            Ok(()) => out.finish(),
            Err(e) => {
                out.abandon();
                Err(e)
            }
        }
    }

    pub(super) fn flush_loop(self: Arc<Self>) {
        let mut failures = 0;
        // The B+Tree engine gives free pages back once writes pause after a flush.
        let mut last_flush: Option<Instant> = None;
        let mut quiet = (0, Instant::now());
        loop {
            let mut idle = false;
            {
                let mut g = self.bg.lock();
                while !self.flush_due(&mut quiet)
                    && !self.shutdown.load(Ordering::Acquire)
                    && !self.has_fatal.load(Ordering::Acquire)
                {
                    self.bg_cv.wait_for(&mut g, Duration::from_millis(200));
                    if self.tree.is_some()
                        && last_flush.is_some_and(|t| t.elapsed() >= IDLE_COMPACTION)
                        && self.sv.load().imms.is_empty()
                    {
                        idle = true;
                        break;
                    }
                }
            }
            if self.shutdown.load(Ordering::Acquire) || self.has_fatal.load(Ordering::Acquire) {
                return;
            }
            if idle {
                last_flush = None;
                match self.compact_tree(None) {
                    Ok(()) => self.background_ok(),
                    Err(e) => {
                        if !self.background_failed(e, &mut failures) {
                            return;
                        }
                    }
                }
                continue;
            }
            match self.flush_pending() {
                Ok(true) => {
                    last_flush = Some(Instant::now());
                    self.background_ok()
                }
                Ok(false) => self.background_ok(),
                Err(e) => {
                    if !self.background_failed(e, &mut failures) {
                        return;
                    }
                }
            }
        }
    }

    /// The B+Tree engine's compaction: move the tree's nodes down into free pages and
    /// shorten the file, installing each version it publishes
    /// ([`crate::btree::BTree::compact_with`]; `within`: only if at most that many pages
    /// lie past the end the file would shrink to).
    pub(super) fn compact_tree(&self, within: Option<u64>) -> Result<()> {
        let Some(tree) = &self.tree else {
            return Ok(());
        };
        // The read view moves to each new version as it is published, so the one the
        // relocation left is not held by it when the second step frees its pages.
        let shrunk = tree.compact_with(self.gc_horizon(), within, || {
            let mut st = self.state.lock();
            self.install_locked(&mut st, VersionEdit::default(), &[], &[], &[])
        })?;
        if shrunk > 0 {
            tracing::debug!(pages = shrunk, "tree file shortened");
        }
        Ok(())
    }

    /// A background flush or compaction succeeded: clear the failure writers see.
    pub(super) fn background_ok(&self) {
        if self.bg_error.lock().take().is_some() {
            tracing::info!("background work succeeds again");
        }
    }

    /// A background flush or compaction failed with `e`. A full disk is retried after a
    /// growing pause, and writers that would wait for this work get the error meanwhile
    /// instead of waiting; anything else is fatal (returns false: the thread stops).
    pub(super) fn background_failed(&self, e: Error, failures: &mut u32) -> bool {
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
}

/// Receives merged entries in internal-key order, drops versions no snapshot can see,
/// and writes tables, cutting only between user keys.
pub(super) struct OutputSink<'a> {
    pub(super) inner: &'a Inner,
    pub(super) horizon: Ts,
    pub(super) bottommost: bool,
    pub(super) split_size: Option<u64>,
    pub(super) builder: Option<TableBuilder>,
    pub(super) done: Vec<TableMeta>,
    /// Ids of every table started, removed if the sink fails or is abandoned.
    pub(super) created: Vec<u64>,
    pub(super) last_key: Vec<u8>,
    pub(super) have_last: bool,
    /// The newest version <= horizon of `last_key` has been seen: older ones are dead.
    pub(super) covered: bool,
}

impl<'a> OutputSink<'a> {
    pub(super) fn new(
        inner: &'a Inner,
        horizon: Ts,
        bottommost: bool,
        split_size: Option<u64>,
    ) -> Self {
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

    pub(super) fn add(&mut self, key: &[u8], ts: Ts, value: Option<&[u8]>) -> Result<()> {
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
    pub(super) fn finish(mut self) -> Result<Vec<Arc<Table>>> {
        let r = self.finish_tables();
        if r.is_err() {
            self.remove_created();
        }
        r
    }

    pub(super) fn finish_tables(&mut self) -> Result<Vec<Arc<Table>>> {
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
    pub(super) fn abandon(mut self) {
        self.builder.take();
        self.remove_created();
    }

    pub(super) fn remove_created(&mut self) {
        for id in self.created.drain(..) {
            let _ = self
                .inner
                .vfs
                .remove(&crate::sst::table_path(&self.inner.dir, id));
        }
    }
}

/// Every version in `imms` (newest memtable first, as a super-version lists them) in
/// internal-key order.
fn for_each_version(
    imms: &[Arc<MemTable>],
    mut f: impl FnMut(&[u8], Ts, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    if let [only] = imms {
        let mut res = Ok(());
        only.for_each(|k, ts, v| {
            if res.is_ok() {
                res = f(k, ts, v);
            }
        });
        return res;
    }
    let sources = imms
        .iter()
        .map(|m| Source::Mem(MemTableIter::new(m.clone(), None, None, false)))
        .collect();
    let mut merged = MergeIter::new(sources, false);
    while let Some((k, ts, v)) = merged.current() {
        f(k, ts, v)?;
        merged.advance()?;
    }
    Ok(())
}
