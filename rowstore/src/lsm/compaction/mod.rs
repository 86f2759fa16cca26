//! Leveled compaction: choosing what to merge, merging it through an output sink,
//! and installing the result; also the full compaction behind `compact_all`.

use super::*;

pub(super) struct Task {
    pub(super) level: usize,
    pub(super) output_level: usize,
    pub(super) upper: Vec<Arc<Table>>,
    pub(super) lower: Vec<Arc<Table>>,
    pub(super) bottommost: bool,
    pub(super) reserved: Vec<usize>,
}

mod leveled;

pub(crate) use leveled::Leveled;

/// What a compaction strategy sees: the current tree, which levels a running
/// compaction holds, and where each level's round robin stands.
pub(crate) struct Picture<'a> {
    pub version: &'a Version,
    pub busy: &'a [bool; NUM_LEVELS],
    pub pointers: &'a [Option<Vec<u8>>],
}

/// A compaction to run: merge `upper` (tables of `level`) with `lower` (the tables of
/// `level + 1` they overlap) into `level + 1`.
pub(crate) struct Choice {
    pub level: usize,
    pub upper: Vec<Arc<Table>>,
    pub lower: Vec<Arc<Table>>,
    /// No deeper level overlaps the inputs: tombstones can be dropped.
    pub bottommost: bool,
    /// Where `level`'s round robin goes on from next time.
    pub pointer: Option<Vec<u8>>,
}

/// Chooses compactions. `choose` and `due` are pure functions of the picture (no
/// I/O, no locks, no state of their own), so a strategy is tested on its own and a
/// different one (tiered, say) slots in here.
pub(crate) trait Strategy: Send + Sync {
    /// Whether any compaction is due.
    fn due(&self, p: &Picture) -> bool;
    /// The most urgent compaction, if one is due.
    fn choose(&self, p: &Picture) -> Option<Choice>;
}

impl Inner {
    /// `idle`: writes have stopped, so level 0 is merged down from two tables on (see
    /// `compaction_loop`).
    fn strategy(&self, idle: bool) -> Leveled {
        Leveled {
            l0_trigger: if idle {
                2
            } else {
                self.opts.level0_compaction_trigger
            },
            base_bytes: self.opts.level_base_bytes,
            multiplier: self.opts.level_size_multiplier,
        }
    }

    fn picture(st: &State) -> Picture<'_> {
        Picture {
            version: &st.version,
            busy: &st.busy_levels,
            pointers: &st.compact_pointer,
        }
    }

    /// Choose a compaction and reserve its levels.
    pub(super) fn pick(&self, st: &mut State, idle: bool) -> Option<Task> {
        let c = self.strategy(idle).choose(&Self::picture(st))?;
        if c.pointer.is_some() {
            st.compact_pointer[c.level] = c.pointer;
        }
        st.busy_levels[c.level] = true;
        st.busy_levels[c.level + 1] = true;
        Some(Task {
            level: c.level,
            output_level: c.level + 1,
            upper: c.upper,
            lower: c.lower,
            bottommost: c.bottommost,
            reserved: vec![c.level, c.level + 1],
        })
    }

    /// Run one compaction if one is due. Returns whether one ran.
    pub(super) fn compact_once(&self, background: bool) -> Result<bool> {
        self.compact_once_with(background, false)
    }

    fn compact_once_with(&self, background: bool, idle: bool) -> Result<bool> {
        let task = {
            let mut st = self.state.lock();
            self.pick(&mut st, idle)
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

    /// Compacts whatever the strategy says is due. And once writes stop (no commit or
    /// flush for `IDLE_COMPACTION`), it merges a level 0 of two or more tables down
    /// even below the trigger: every read pays for each overlapping level-0 table, and
    /// an idle database (after a bulk load, say) has the time to spare.
    pub(super) fn compaction_loop(self: Arc<Self>) {
        let mut failures = 0;
        let activity = || {
            self.stats.commits.load(Ordering::Relaxed) + self.stats.flushes.load(Ordering::Relaxed)
        };
        let mut seen = activity();
        // A database just opened has had no writes yet: what the last session left in
        // level 0 (a bulk load's tables, say) is merged at once, not a quiet spell
        // later, while reads are most likely to come. Any commit restarts the wait.
        let mut quiet_since = Instant::now()
            .checked_sub(IDLE_COMPACTION)
            .unwrap_or_else(Instant::now);
        loop {
            let mut idle = false;
            {
                let mut g = self.bg.lock();
                loop {
                    if self.shutdown.load(Ordering::Acquire)
                        || self.has_fatal.load(Ordering::Acquire)
                    {
                        return;
                    }
                    let (due, l0) = {
                        let st = self.state.lock();
                        (self.compaction_due(&st), st.version.levels[0].len())
                    };
                    if due {
                        break;
                    }
                    let now = activity();
                    if now != seen {
                        seen = now;
                        quiet_since = Instant::now();
                    } else if l0 >= 2
                        && quiet_since.elapsed() >= IDLE_COMPACTION
                        && self.sv.load().imms.is_empty()
                    {
                        idle = true;
                        break;
                    }
                    self.bg_cv.wait_for(&mut g, Duration::from_millis(200));
                }
            }
            match self.compact_once_with(true, idle) {
                Ok(ran) => {
                    if idle && !ran {
                        // Levels busy (a manual compaction): wait another quiet spell.
                        quiet_since = Instant::now();
                    }
                    self.background_ok()
                }
                Err(e) => {
                    if !self.background_failed(e, &mut failures) {
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn compaction_due(&self, st: &State) -> bool {
        self.strategy(false).due(&Self::picture(st))
    }

    pub(super) fn run_task(&self, task: &Task, background: bool) -> Result<()> {
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
        self.install(VersionEdit::default(), &deleted, &added, &[])?;
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
    pub(super) fn compact_everything(&self) -> Result<()> {
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

    pub(super) fn run_full(
        &self,
        task: &Task,
        l0: Vec<Arc<Table>>,
        runs: Vec<Vec<Arc<Table>>>,
    ) -> Result<()> {
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
        self.install(VersionEdit::default(), &deleted, &added, &[])?;
        for t in task.upper.iter().chain(&task.lower) {
            t.mark_obsolete();
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
