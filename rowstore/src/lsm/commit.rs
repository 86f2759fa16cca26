//! The commit pipeline: writers queue their batches; one leader at a time takes every
//! queued batch, validates transactional ones, assigns commit timestamps, writes them
//! to the WAL with one write and one fdatasync (group commit), applies them to the
//! memtable and publishes the new visible timestamp. It also makes room: switching a
//! full memtable behind a new WAL segment, and stalling writers while flush or
//! compaction falls behind.

use super::sync_cpu;
use super::*;

/// What a writer does with its queued request.
enum Role {
    /// Wait until the leader says the request is done, or hands the lead on.
    Follow,
    /// Gather and take a group.
    Lead,
    /// Write the group taken.
    Took((Vec<Arc<WriteReq>>, u64)),
    /// This request completed the group being gathered, on a processor whose syncs
    /// complete slowly: leave the group a moment to a writer of it on a faster one
    /// (see `SyncCpus`), then take it if none did.
    Offer,
}

/// How long a writer that completed a group on a slow processor waits for one on a
/// fast processor to take it before it takes the group itself.
const OFFER_WAIT: Duration = Duration::from_micros(15);

/// The longest a writer waits for its group by yielding (see `wake::YieldGate`); it
/// yields for at most twice the last group's commit time, up to this.
const MAX_YIELD_WAIT: Duration = Duration::from_micros(1000);
/// Writers yield only while at least this many were seen around the last group: the
/// wake-ups of a smaller group cost too little to be worth the processor time.
const YIELD_MIN_WRITERS: usize = 8;

pub(super) enum ReqState {
    Waiting,
    Lead,
    Done(Result<Ts>),
}

pub(super) struct WriteReq {
    pub(super) batch: WriteBatch,
    /// Switch to a new memtable before applying (used by `flush`).
    pub(super) force_switch: bool,
    /// Conflict validation for transactional commits.
    pub(super) check: Option<CommitCheck>,
    /// An ingestion (with an empty batch): run by the leader before the group's
    /// batches, with its result in `ts` / `rejected`.
    pub(super) job: Option<Mutex<Option<super::ingest::IngestJob>>>,
    /// Set by the leader when validation refused this request.
    pub(super) rejected: Mutex<Option<Error>>,
    pub(super) ts: AtomicU64,
    pub(super) state: Mutex<ReqState>,
    /// The commit group this request joins and its tag for targeted wake-ups (see
    /// `wake`), set when it is queued.
    pub(super) group: AtomicU64,
    pub(super) tag: AtomicU32,
}

#[derive(Default)]
pub(super) struct CommitQueue {
    pub(super) pending: Vec<Arc<WriteReq>>,
    pub(super) leader_active: bool,
    pub(super) closed: bool,
    /// Writers seen in flight around the last group: its size plus those that queued
    /// while it was being written. The next leader waits (briefly) for that many.
    pub(super) concurrency: usize,
    /// Duration of the last WAL sync; the most worth waiting to fill a group.
    pub(super) last_sync: Duration,
    /// While a leader gathers its group: the number of queued requests it waits for.
    /// The writer whose request reaches it takes the group (see `Inner::gather`).
    pub(super) gather_target: Option<usize>,
    /// Groups taken so far: requests queued now join group number `taken`.
    pub(super) taken: u64,
    /// Requests queued so far (their tags).
    pub(super) queued: u32,
}

impl Inner {
    pub(super) fn submit(&self, batch: WriteBatch, force_switch: bool) -> Result<Ts> {
        self.submit_checked(batch, force_switch, None)
    }

    pub(super) fn submit_checked(
        &self,
        batch: WriteBatch,
        force_switch: bool,
        check: Option<CommitCheck>,
    ) -> Result<Ts> {
        self.submit_req(WriteReq {
            batch,
            force_switch,
            check,
            job: None,
            rejected: Mutex::new(None),
            ts: AtomicU64::new(0),
            state: Mutex::new(ReqState::Waiting),
            group: AtomicU64::new(0),
            tag: AtomicU32::new(0),
        })
    }

    /// Queue an ingestion as a commit of its own.
    pub(super) fn submit_ingest(&self, job: super::ingest::IngestJob) -> Result<Ts> {
        self.submit_req(WriteReq {
            batch: WriteBatch::new(),
            force_switch: false,
            check: None,
            job: Some(Mutex::new(Some(job))),
            rejected: Mutex::new(None),
            ts: AtomicU64::new(0),
            state: Mutex::new(ReqState::Waiting),
            group: AtomicU64::new(0),
            tag: AtomicU32::new(0),
        })
    }

    fn submit_req(&self, req: WriteReq) -> Result<Ts> {
        let req = Arc::new(req);
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
        let spin;
        // Whether this writer may be offered its group (see `Role::Offer`).
        let offers;
        let mut role = {
            let mut q = self.queue.lock();
            if q.closed {
                return Err(Error::Closed);
            }
            // Only a large group's wake-ups cost enough to be worth yielding for.
            spin = match self.opts.commit_yield && q.concurrency >= YIELD_MIN_WRITERS {
                true => (2 * q.last_sync).min(MAX_YIELD_WAIT),
                false => Duration::ZERO,
            };
            offers = !spin.is_zero() && q.concurrency <= self.sync_cpus.offer_max_writers();
            req.group.store(q.taken, Ordering::Relaxed);
            req.tag.store(q.queued, Ordering::Relaxed);
            q.queued = q.queued.wrapping_add(1);
            q.pending.push(req.clone());
            if !q.leader_active {
                q.leader_active = true;
                Role::Lead
            } else if q.gather_target.is_some_and(|t| q.pending.len() >= t) {
                // This request completes the group the leader sleeps gathering: this
                // writer, awake already, takes the group and writes it. Waking the
                // leader instead would put a cross-core wake-up on every group's path.
                // The leader finds its group taken when it wakes (see `gather`) and
                // waits for it as a follower.
                q.gather_target = None;
                // Only while the group's writers yield: they notice the offer.
                if offers && self.yield_gate.open() && !self.sync_cpus.here_is_fast() {
                    self.sync_cpus.offer(q.taken);
                    Role::Offer
                } else {
                    self.stats.gather_handoffs.fetch_add(1, Ordering::Relaxed);
                    Role::Took(self.take_group(&mut q))
                }
            } else {
                Role::Follow
            }
        };
        let (my_group, tag) = (
            req.group.load(Ordering::Relaxed),
            req.tag.load(Ordering::Relaxed),
        );
        let (group, number) = loop {
            match role {
                Role::Took(taken) => break taken,
                Role::Offer => {
                    let until = Instant::now() + OFFER_WAIT;
                    while self.sync_cpus.offered(my_group) && Instant::now() < until {
                        std::thread::yield_now();
                    }
                    // Nobody faster took it: write it here after all.
                    role = match self.take_offered(my_group) {
                        Some(taken) => {
                            self.stats.gather_handoffs.fetch_add(1, Ordering::Relaxed);
                            Role::Took(taken)
                        }
                        None => Role::Follow,
                    };
                }
                Role::Follow => {
                    // Yield a while before sleeping (see `wake::YieldGate`); a writer
                    // on a fast processor takes its group if it is offered.
                    let mut take = false;
                    if !spin.is_zero()
                        && self.yield_gate.wait(spin, || {
                            take = offers
                                && self.sync_cpus.offered(my_group)
                                && self.sync_cpus.here_is_fast();
                            take || req
                                .state
                                .try_lock()
                                .is_some_and(|st| !matches!(*st, ReqState::Waiting))
                        })
                        && !take
                    {
                        self.stats.commit_yields.fetch_add(1, Ordering::Relaxed);
                    }
                    if take && let Some(taken) = self.take_offered(my_group) {
                        self.stats.offers_taken.fetch_add(1, Ordering::Relaxed);
                        role = Role::Took(taken);
                        continue;
                    }
                    let mut out = None;
                    self.wake.wait(my_group, tag, || {
                        let mut st = req.state.lock();
                        match &*st {
                            ReqState::Waiting => false,
                            // Handed the lead: the state reads `Waiting` again, since a
                            // writer may yet take this group from us (see `gather`).
                            ReqState::Lead => {
                                *st = ReqState::Waiting;
                                true
                            }
                            ReqState::Done(_) => {
                                out = Some(std::mem::replace(&mut *st, ReqState::Waiting));
                                true
                            }
                        }
                    });
                    if let Some(ReqState::Done(r)) = out {
                        return r;
                    }
                    role = Role::Lead;
                }
                Role::Lead => {
                    // This thread leads one group: everything pending, its own request
                    // among them.
                    if let Durability::GroupCommit { max_delay } = self.opts.durability {
                        std::thread::sleep(max_delay);
                    }
                    role = match self.gather(my_group, tag) {
                        Some(taken) => Role::Took(taken),
                        None => Role::Follow,
                    };
                }
            }
        };
        let cpu = sync_cpu::current();
        let t0 = Instant::now();
        let res = self.commit_group(&group);
        let took = t0.elapsed();
        self.sync_cpus.record(cpu, took);
        // Hand leadership on first, so the next group's WAL write overlaps with waking
        // this group's followers.
        let next = {
            let mut q = self.queue.lock();
            q.concurrency = group.len() + q.pending.len();
            q.last_sync = took;
            match q.pending.first() {
                Some(next) => {
                    *next.state.lock() = ReqState::Lead;
                    Some((
                        next.group.load(Ordering::Relaxed),
                        next.tag.load(Ordering::Relaxed),
                    ))
                }
                None => {
                    q.leader_active = false;
                    None
                }
            }
        };
        if let Some((g, tag)) = next {
            self.wake.wake_one(g, tag);
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
            *r.state.lock() = ReqState::Done(out);
        }
        // One call wakes the whole group (see `wake`).
        if group.len() > 1 {
            self.wake.wake_group(number);
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
    ///
    /// Returns the group taken (its requests and number), or `None` when the writer whose
    /// request completed the group took it (the caller's request is in it: the caller
    /// then waits for it as a follower). `my_group` is the number of the group the
    /// caller's request joined, the one being formed, and `tag` its request's tag.
    pub(super) fn gather(&self, my_group: u64, tag: u32) -> Option<(Vec<Arc<WriteReq>>, u64)> {
        let mut q = self.queue.lock();
        debug_assert_eq!(
            q.taken, my_group,
            "a leader gathers the group it belongs to"
        );
        let gathers = matches!(self.opts.durability, Durability::Sync) && self.opts.wal_enabled;
        let target = q.concurrency;
        if gathers && target > 1 && q.pending.len() < target {
            // Sleep rather than spin: a spinning leader takes a core from every other
            // thread (queries among them) for up to the whole budget, to save one
            // wakeup. Nobody wakes this sleep: the writer completing the group takes it.
            // It waits on its group's wake-up slot, so that when a writer takes the
            // group, the group's completion wakes this writer with the rest.
            let deadline = Instant::now() + q.last_sync.min(Duration::from_micros(500));
            q.gather_target = Some(target);
            drop(q);
            self.wake.wait_until(my_group, tag, deadline, || {
                self.queue.lock().taken != my_group
            });
            q = self.queue.lock();
            if q.taken != my_group {
                return None;
            }
            q.gather_target = None;
        }
        Some(self.take_group(&mut q))
    }

    /// Take the group offered by the writer that completed it (see `Role::Offer`), if it
    /// is still `my_group` and still offered.
    fn take_offered(&self, my_group: u64) -> Option<(Vec<Arc<WriteReq>>, u64)> {
        let mut q = self.queue.lock();
        if q.taken != my_group || !self.sync_cpus.offered(my_group) {
            return None;
        }
        Some(self.take_group(&mut q))
    }

    /// Take every queued request as the next group: its requests and its number. An
    /// offer of it ends (whoever takes it).
    fn take_group(&self, q: &mut CommitQueue) -> (Vec<Arc<WriteReq>>, u64) {
        if self.sync_cpus.offered(q.taken) {
            self.sync_cpus.withdraw();
        }
        q.taken += 1;
        (std::mem::take(&mut q.pending), q.taken - 1)
    }

    /// Write a group of batches: one WAL write, at most one sync, then the memtable.
    pub(super) fn commit_group(&self, group: &[Arc<WriteReq>]) -> Result<()> {
        let _span = tracing::trace_span!("commit", batches = group.len()).entered();
        let force = group.iter().any(|r| r.force_switch);
        self.make_room(force)?;
        if self.has_fatal.load(Ordering::Acquire) {
            return Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default()));
        }
        // Ingestions first: each publishes its files and timestamps by itself, before
        // the batches of this group take theirs.
        for r in group {
            if let Some(job) = r.job.as_ref().and_then(|j| j.lock().take()) {
                match self.ingest_now(job) {
                    Ok(ts) => r.ts.store(ts, Ordering::Relaxed),
                    Err(e) if self.has_fatal.load(Ordering::Acquire) => return Err(e),
                    Err(e) => *r.rejected.lock() = Some(e),
                }
            }
        }
        let sv = self.sv.load_full();
        // Validate transactional commits in order; a request refused here is skipped.
        // Keys written by earlier requests of this group count as newer than any
        // snapshot, since they commit after every snapshot taken so far.
        let mut accepted: Vec<bool> = group.iter().map(|r| r.job.is_none()).collect();
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
                written.extend(r.batch.ops().map(|o| o.key()));
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
            if let Err(e) = w.write_framed(&mut framed) {
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
        sv.mem.apply(
            group
                .iter()
                .enumerate()
                .filter(|(i, _)| accepted[*i])
                .flat_map(|(_, r)| {
                    let t = r.ts.load(Ordering::Relaxed);
                    r.batch.ops().map(move |op| (op.key(), t, op.value()))
                })
                .inspect(|(_, _, v)| match v {
                    Some(_) => puts += 1,
                    None => dels += 1,
                }),
        );
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
        if self.registry.active_txns_seqcst() > 0 {
            let mut recent = self.recent_commits.lock();
            for (i, r) in group.iter().enumerate() {
                if accepted[i] {
                    let t = r.ts.load(Ordering::Relaxed);
                    for op in r.batch.ops() {
                        match recent.get_mut(op.key()) {
                            Some(v) => *v = t,
                            None => {
                                recent.insert(op.key().to_vec(), t);
                            }
                        }
                    }
                }
            }
            // Drop what no open transaction can conflict with, once a quarter of the
            // map's size in commits has passed since the last time: a pass visits at
            // most ~4 entries per commit however long an old snapshot holds the horizon
            // back (a fixed period made a pass over a map grown by such a snapshot
            // every 256 commits).
            let last = self.recent_trimmed_at.load(Ordering::Relaxed);
            if recent.len() > 4096 && ts.saturating_sub(last) >= (recent.len() / 4) as u64 {
                let h = self.gc_horizon();
                recent.retain(|_, t| *t > h);
                self.recent_ingests.lock().retain(|r| r.2 > h);
                self.recent_trimmed_at.store(ts, Ordering::Relaxed);
            }
        } else if !self.recent_commits.lock().is_empty() {
            self.recent_commits.lock().clear();
            self.recent_ingests.lock().clear();
        } else if !self.recent_ingests.lock().is_empty() {
            self.recent_ingests.lock().clear();
        }
        Ok(())
    }

    /// Called by the commit leader before writing: switch a full memtable, and stall
    /// while too much is waiting for flush or compaction.
    pub(super) fn make_room(&self, force: bool) -> Result<()> {
        let stall_start = Instant::now();
        let mut stalled = false;
        loop {
            if self.has_fatal.load(Ordering::Acquire) {
                return Err(Error::Fatal(self.fatal.lock().clone().unwrap_or_default()));
            }
            let sv = self.sv.load_full();
            let full = sv.mem.approximate_bytes() >= self.opts.memtable_switch_bytes();
            let want_switch = (force && !sv.mem.is_empty()) || full;
            if self.opts.background_compaction {
                let g = self.bg.lock();
                let sv = self.sv.load_full();
                let too_many_imms = want_switch
                    && sv.imms.len()
                        >= self.opts.max_immutable_memtables * self.opts.memtables_per_buffer();
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
    pub(super) fn switch_memtable(&self) -> Result<()> {
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
}
