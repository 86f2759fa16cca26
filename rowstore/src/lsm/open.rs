//! Opening a database: deciding (under the directory lock) whether one exists,
//! recovering the WAL into a table, writing a fresh manifest, and removing the files
//! the new manifest no longer needs.

use super::*;
use crate::files::{self, DbFile};

/// How many file ids are reserved (recorded in the manifest) ahead of use: every file
/// the engine creates has an id below the recorded reservation, so garbage collection
/// can tell the engine's own leftovers from files it never numbered.
pub(super) const ID_CHUNK: u64 = 64;

/// Take the directory lock (shared for a read-only open), retrying for up to a second:
/// a process forked by this one (any `Command::spawn`) briefly shares every open file,
/// and with it the lock, until it execs, so a lock that was just released may look held
/// for a moment. A `Vfs` without shared locks gives the exclusive one.
fn acquire_lock(vfs: &dyn Vfs, dir: &Path, shared: bool) -> Result<Box<dyn crate::vfs::VfsLock>> {
    let lock_path = dir.join(files::LOCK);
    let mut shared = shared;
    let mut attempts = 0;
    loop {
        let r = match shared {
            true => vfs.lock_shared(&lock_path),
            false => vfs.lock(&lock_path),
        };
        match r {
            Ok(l) => return Ok(l),
            Err(e) if shared && e.kind() == std::io::ErrorKind::Unsupported => shared = false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Locked(dir.to_path_buf()));
            }
            Err(e) => return Err(Error::io(format!("locking {}", lock_path.display()), e)),
        }
    }
}

/// A short description of the names found: manifests and WAL segments first (they
/// matter most for a repair), then the rest, then counts of what is left out.
fn list_names(names: &[&String]) -> String {
    let rank = |n: &str| match files::classify(n) {
        DbFile::Manifest(_) => 0,
        DbFile::CurrentTmp => 1,
        DbFile::Wal(_) => 2,
        DbFile::Columnar => 3,
        DbFile::Table(_) => 4,
        _ => 5,
    };
    let mut v: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    v.sort_unstable_by_key(|n| (rank(n), *n));
    let more = v.len().saturating_sub(8);
    v.truncate(8);
    let mut s = v.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// Whether the engine may delete `name` as garbage: one of its own names, numbered by
/// this database (below the id reservation recorded in the manifest, and not a file
/// found there that it did not create), not live.
fn is_garbage(
    f: DbFile,
    limit: u64,
    foreign: &BTreeSet<u64>,
    live: &HashSet<u64>,
    keep: &[u64],
) -> bool {
    match f {
        DbFile::Table(n) => n < limit && !foreign.contains(&n) && !live.contains(&n),
        DbFile::Wal(n) | DbFile::Manifest(n) => {
            n < limit && !foreign.contains(&n) && !keep.contains(&n)
        }
        DbFile::CurrentTmp => true,
        _ => false,
    }
}

use std::collections::{BTreeSet, HashSet};

impl Inner {
    /// Register the snapshot `open_pinned` was asked for (at most the newest commit),
    /// before any background work can collect what it needs.
    fn register_pin(&self, pin: Option<Ts>) -> Result<Option<Snapshot>> {
        let last = self.last_ts.load(Ordering::Acquire);
        pin.map(|ts| {
            self.registry
                .register(At::Unchecked(ts.min(last)), &self.visible_ts)
        })
        .transpose()
    }

    /// The shared state of an engine just opened (no background thread yet).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn new(
        dir: PathBuf,
        vfs: Arc<dyn Vfs>,
        opts: EngineOptions,
        lock: Box<dyn crate::vfs::VfsLock>,
        (manifest, mstate): (Option<Manifest>, ManifestState),
        (mem, version): (Arc<MemTable>, Arc<Version>),
        (next_file_id, foreign, last_ts): (AtomicU64, Arc<BTreeSet<u64>>, Ts),
        (wal, cache, mmap): (
            Option<LogWriter>,
            Option<Arc<BlockCache>>,
            Option<Arc<MmapBudget>>,
        ),
        read_only: bool,
        tree: Option<Arc<crate::btree::BTree>>,
    ) -> Arc<Inner> {
        let id_limit = mstate.next_file_id;
        // A read-only handle starts no thread, not even the prefetcher's.
        let prefetcher = match read_only {
            false => opts.prefetch.map(|(w, _)| Prefetcher::start(w)),
            true => None,
        };
        Arc::new(Inner {
            sv: ArcSwap::from_pointee(SuperVersion {
                mem,
                imms: Vec::new(),
                version: version.clone(),
            }),
            state: Mutex::new(State {
                manifest,
                mstate,
                version,
                busy_levels: [false; NUM_LEVELS],
                compact_pointer: vec![None; NUM_LEVELS],
            }),
            next_file_id,
            id_limit: AtomicU64::new(id_limit),
            foreign_ids: foreign,
            visible_ts: AtomicU64::new(last_ts),
            last_ts: AtomicU64::new(last_ts),
            queue: Mutex::new(CommitQueue::default()),
            wake: Default::default(),
            yield_gate: Default::default(),
            sync_cpus: Default::default(),
            serial_commit: Mutex::new(()),
            wal: Mutex::new(wal),
            registry: Arc::new(SnapshotRegistry::default()),
            cache,
            mmap,
            prefetcher,
            bg: Mutex::new(()),
            bg_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            flush_wanted: AtomicBool::new(false),
            fatal: Mutex::new(None),
            has_fatal: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            stats: EngineStats::default(),
            recent_commits: Mutex::new(BTreeMap::new()),
            recent_trimmed_at: AtomicU64::new(0),
            fast_validation: AtomicBool::new(true),
            recent_ingests: Mutex::new(Vec::new()),
            close_lock: Mutex::new(()),
            bg_error: Mutex::new(None),
            lock_file: Mutex::new(Some(lock)),
            read_only,
            tree,
            vfs,
            dir,
            opts,
        })
    }
}

impl LsmEngine {
    /// Create or open the database in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: EngineOptions, mode: OpenMode) -> Result<LsmEngine> {
        Self::open_pinned(dir, opts, mode, None).map(|(e, _)| e)
    }

    /// Open, registering a snapshot at `pin` before any background work starts, so no
    /// version newer than `pin` (nor the newest at or below it) is collected. Used by
    /// layers that derive data from changes since a persisted timestamp.
    ///
    /// Whether a database exists is decided only while holding the directory lock: two
    /// handles racing to create the same path never both create (the loser waits for
    /// the lock, then finds the winner's database or gets [`Error::Locked`]), and no
    /// handle ever deletes another's files.
    pub fn open_pinned(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        mode: OpenMode,
        pin: Option<Ts>,
    ) -> Result<(LsmEngine, Option<Snapshot>)> {
        opts.validate()?;
        let vfs = opts.vfs.clone();
        let dir = dir.as_ref().to_path_buf();
        let _span = tracing::info_span!("open", dir = %dir.display()).entered();
        match vfs.metadata(&dir) {
            Ok(m) if m.is_dir => {}
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{} is a file, not a database directory",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if matches!(mode, OpenMode::Open | OpenMode::ReadOnly) {
                    return Err(Error::DatabaseNotFound(dir));
                }
                crate::vfs::create_dir_synced(&*vfs, &dir)?;
            }
            Err(e) => return Err(Error::io(format!("stat of {}", dir.display()), e)),
        }
        // A read-only open decides first, so it never creates a LOCK file where there
        // is no database, and locks (shared) only to read one.
        let read_only = mode == OpenMode::ReadOnly;
        let lock = match read_only {
            false => Some(acquire_lock(&*vfs, &dir, false)?),
            true => None,
        };

        // Decide, under the lock, what is there.
        let names = crate::vfs::list(&*vfs, &dir)?;
        let has_current = names.iter().any(|n| n == files::CURRENT);
        let create = match (mode, has_current) {
            (OpenMode::Create, true) => return Err(Error::DatabaseExists(dir)),
            (_, true) => false,
            (_, false) => {
                let db_files: Vec<&String> = names
                    .iter()
                    .filter(|n| files::classify(n).is_database_file())
                    .collect();
                if !db_files.is_empty() {
                    return Err(Error::MissingCurrent {
                        dir,
                        found: list_names(&db_files),
                    });
                }
                if matches!(mode, OpenMode::Open | OpenMode::ReadOnly) {
                    return Err(Error::DatabaseNotFound(dir));
                }
                let others: Vec<&String> = names
                    .iter()
                    .filter(|n| files::classify(n) != DbFile::Lock)
                    .collect();
                if !others.is_empty() {
                    return Err(Error::DirectoryNotEmpty {
                        dir,
                        found: list_names(&others),
                    });
                }
                true
            }
        };
        let (lock, names) = match lock {
            Some(l) => (l, names),
            // No writer can change the directory from here on: list it again.
            None => {
                let l = acquire_lock(&*vfs, &dir, true)?;
                (l, crate::vfs::list(&*vfs, &dir)?)
            }
        };

        let (mut mstate, old_manifest) = if create {
            (ManifestState::new(), None)
        } else {
            let id = manifest::read_current(&*vfs, &dir)?;
            (manifest::replay(&*vfs, &dir, id)?, Some(id))
        };
        // The storage structure: chosen at creation, recorded in the manifest.
        if create {
            mstate.engine = opts.storage;
        } else if mstate.engine != opts.storage {
            return Err(Error::InvalidConfig(format!(
                "{} was created with the {} storage engine; the configuration names {}",
                dir.display(),
                mstate.engine.title(),
                opts.storage.title()
            )));
        }
        let tree = match mstate.engine {
            StorageKind::Lsm => None,
            StorageKind::BTree => {
                let p = files::tree_path(&dir);
                let t = if create {
                    crate::btree::BTree::create(&*vfs, &p)?
                } else {
                    let map = opts.mmap_size.is_none_or(|n| n > 0);
                    crate::btree::BTree::open(&*vfs, &p, map, !read_only)?
                }
                .with_cache(opts.cache_size);
                // A writer honours pins of readers in other processes.
                Some(Arc::new(if read_only {
                    t
                } else {
                    t.with_pins(vfs.clone())
                }))
            }
        };
        // Ids below this were reserved by (so possibly used by) this database; a
        // numbered file at or above it (or recorded as such) was put there by someone
        // else: it is never deleted, and its number is never used.
        let old_limit = mstate.next_file_id;
        let mut foreign = BTreeSet::new();
        let mut wal_ids = Vec::new();
        for name in &names {
            match files::classify(name) {
                DbFile::Table(n) | DbFile::Manifest(n)
                    if n >= old_limit || mstate.foreign.contains(&n) =>
                {
                    foreign.insert(n);
                }
                DbFile::Wal(n) if n >= old_limit || mstate.foreign.contains(&n) => {
                    foreign.insert(n);
                }
                DbFile::Wal(n) if n >= mstate.log_number => wal_ids.push(n),
                _ => {}
            }
        }
        if !foreign.is_empty() {
            tracing::warn!(
                ?foreign,
                "leaving numbered files this database did not create"
            );
        }
        mstate.foreign = foreign.clone();
        wal_ids.sort_unstable();
        let next_file_id = AtomicU64::new(old_limit.max(1));
        let foreign = Arc::new(foreign);
        let alloc = || loop {
            let id = next_file_id.fetch_add(1, Ordering::Relaxed);
            if !foreign.contains(&id) {
                break id;
            }
        };

        let cache = (opts.cache_size > 0)
            .then(|| Arc::new(BlockCache::new(opts.cache_size, opts.sharded_cache)));
        let mmap = opts.mmap_size.filter(|&n| n > 0).map(MmapBudget::new);

        // Open every live table (verifies footers, indexes and filters).
        let mut version = Version::default();
        let mut last_ts = mstate.last_ts;
        for (level, tables) in mstate.levels.iter().enumerate() {
            for m in tables.values() {
                let mut t = Table::open(&vfs, &dir, m.id, mmap.as_ref(), cache.clone())?;
                if let Some(ts) = m.global_ts {
                    t = t.with_global_ts(ts);
                }
                last_ts = last_ts.max(t.meta().max_ts);
                version.levels[level].push(Arc::new(t));
            }
        }
        version.sort();
        // Commits up to the tree's mark are in the tree: replay only those after it.
        let in_tree = tree.as_ref().map_or(0, |t| t.current().meta.applied);
        // Every commit the manifest counts was in a published tree before the manifest
        // recorded it (a flush publishes, then installs its edit, then drops the WAL).
        // A tree behind the manifest is an older meta page chosen because the newest
        // one is damaged: its commits' WAL may be gone, so this is corruption, never a
        // silent step back.
        if tree.is_some() && in_tree < mstate.last_ts {
            return Err(Error::corruption(
                files::tree_path(&dir),
                0,
                format!(
                    "the B+Tree's newest valid meta page holds commits up to {in_tree}, \
                     but the manifest records commits up to {}: the newest meta page is \
                     damaged",
                    mstate.last_ts
                ),
            ));
        }
        if let Some(t) = &tree {
            version.tree = Some(t.current());
            last_ts = last_ts.max(in_tree);
        }

        // Replay the WAL into a recovery memtable.
        let recovered = MemTable::new(0);
        let mut wal_records = 0usize;
        for (i, &id) in wal_ids.iter().enumerate() {
            let p = files::wal_path(&dir, id);
            let c = log::read_log(&*vfs, &p, WAL_MAGIC)?;
            if let Tail::Torn {
                offset,
                bytes,
                dropped_records,
            } = c.tail
            {
                if i + 1 != wal_ids.len() {
                    return Err(Error::corruption(
                        &p,
                        offset,
                        "damaged record in a WAL segment that is not the newest",
                    ));
                }
                tracing::warn!(
                    file = %p.display(),
                    offset,
                    bytes,
                    dropped_records,
                    "dropping the torn, never durable tail of the WAL"
                );
            }
            for (off, rec) in &c.records {
                let (ts, batch) = WriteBatch::decode(rec)
                    .map_err(|why| Error::corruption(&p, *off, format!("bad WAL record: {why}")))?;
                if ts <= in_tree {
                    continue;
                }
                // One change-log chunk per commit, as the commit path makes them.
                recovered.apply(batch.ops().map(|op| (op.key(), ts, op.value())));
                last_ts = last_ts.max(ts);
                wal_records += 1;
            }
        }
        if read_only {
            // The replayed WAL stays in memory as the memtable; nothing is written.
            mstate.last_ts = last_ts;
            tracing::info!(
                wal_records,
                tables = version.num_tables(),
                last_ts,
                "database opened read-only"
            );
            let inner = Inner::new(
                dir,
                vfs,
                opts,
                lock,
                (None, mstate),
                (Arc::new(recovered), Arc::new(version)),
                (next_file_id, foreign, last_ts),
                (None, cache, mmap),
                true,
                tree,
            );
            let pin = inner.register_pin(pin)?;
            return Ok((LsmEngine { inner }, pin));
        }
        if let (Some(t), false) = (&tree, recovered.is_empty()) {
            // The B+Tree engine: the recovered commits go into the tree (nothing
            // collected: no snapshot is registered yet, a pin may follow).
            let mut changes = Vec::with_capacity(recovered.len());
            recovered.for_each(|k, ts, v| changes.push((k.to_vec(), ts, v.map(<[u8]>::to_vec))));
            t.apply(changes, 0, recovered.max_ts())?;
            version.tree = Some(t.current());
        } else if !recovered.is_empty() {
            let id = alloc();
            let mut b = TableBuilder::create(
                &vfs,
                &dir,
                id,
                opts.block_size,
                opts.compression,
                opts.bloom_bits_per_key,
            )?;
            let mut res = Ok(());
            recovered.for_each(|k, ts, v| {
                if res.is_ok() {
                    res = b.add(k, ts, v);
                }
            });
            res?;
            let meta = b.finish()?;
            crate::vfs::sync_dir(&*vfs, &dir)?;
            let t = Table::open(&vfs, &dir, id, mmap.as_ref(), cache.clone())?;
            mstate.levels[0].insert(id, meta);
            version.levels[0].push(Arc::new(t));
            version.sort();
        }
        let manifest_id = alloc();
        let wal_id = opts.wal_enabled.then(alloc);
        if let Some(w) = wal_id {
            mstate.log_number = w;
        } else if !wal_ids.is_empty() {
            mstate.log_number = wal_ids.last().copied().unwrap_or(0) + 1;
        }
        mstate.last_ts = last_ts;
        let id_limit = next_file_id.load(Ordering::Relaxed) + ID_CHUNK;
        mstate.next_file_id = id_limit;
        // The manifest (and CURRENT) first: from here on the recovered WAL lives in a
        // table, and a crash before the new WAL exists leaves a database that opens.
        let manifest = Manifest::create(&*vfs, &dir, manifest_id, &mstate)?;
        let wal = match wal_id {
            Some(id) => {
                let mut w =
                    LogWriter::create(&*vfs, &files::wal_path(&dir, id), WAL_MAGIC, WAL_VERSION)?;
                w.preallocate(wal_prealloc(&opts));
                Some(w)
            }
            None => None,
        };

        // The new manifest is live: what it does not name, of the engine's own files,
        // is garbage.
        if !create {
            let live: HashSet<u64> = mstate
                .levels
                .iter()
                .flat_map(|l| l.keys().copied())
                .collect();
            let keep: Vec<u64> = wal_id.into_iter().chain([manifest_id]).collect();
            let mut removed = 0;
            for name in &names {
                let f = files::classify(name);
                // Replayed WAL segments are in the recovered table now.
                let replayed = matches!(f, DbFile::Wal(n) if wal_ids.contains(&n));
                if replayed || is_garbage(f, old_limit, &foreign, &live, &keep) {
                    crate::vfs::remove_file_if_exists(&*vfs, &dir.join(name))?;
                    removed += 1;
                }
            }
            if removed > 0 {
                crate::vfs::sync_dir(&*vfs, &dir)?;
            }
        }
        tracing::info!(
            wal_records,
            old_manifest,
            tables = version.num_tables(),
            last_ts,
            "database opened"
        );

        let mem = Arc::new(MemTable::new(wal_id.unwrap_or(0)));
        let inner = Inner::new(
            dir,
            vfs,
            opts,
            lock,
            (Some(manifest), mstate),
            (mem, Arc::new(version)),
            (next_file_id, foreign, last_ts),
            (wal, cache, mmap),
            false,
            tree,
        );
        let pin = inner.register_pin(pin)?;
        if inner.opts.background_compaction {
            let mut threads = inner.threads.lock();
            let i2 = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ldb-flush".into())
                    .spawn(move || i2.flush_loop())
                    .ctx(|| "spawning the flush thread".into())?,
            );
            for w in 0..inner.opts.compaction_workers {
                let i2 = inner.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("ldb-compact-{w}"))
                        .spawn(move || i2.compaction_loop())
                        .ctx(|| "spawning a compaction thread".into())?,
                );
            }
        }
        Ok((LsmEngine { inner }, pin))
    }
}
