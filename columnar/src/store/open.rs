//! Opening the column store: its published state, the row-store pins each table's
//! watermark needs, the segments loaded with their delete bitmaps and edge keys, and the
//! files no published state names (removed, unless the database is open read-only).

use super::*;

impl ColumnStore {
    /// The lowest published watermark, read before the row store opens so it can pin it.
    pub fn pin_needed(vfs: &dyn Vfs, db_dir: &Path) -> Result<Option<Ts>> {
        Ok(ColumnarState::load(vfs, &db_dir.join("columnar"))?.and_then(|s| s.min_watermark()))
    }

    /// Open the column store of the database in `db_dir`. `open_pin` is the row-store
    /// snapshot taken at `pin_needed()` when the row store opened; `tables` are the
    /// tables that exist.
    pub fn open(
        db_dir: &Path,
        engine: &Engine,
        open_pin: Option<Snapshot>,
        tables: &[TableDef],
        opts: ColumnarOptions,
    ) -> Result<ColumnStore> {
        let vfs = opts.vfs.clone();
        let dir = db_dir.join("columnar");
        // The directory's entry is made durable before anything is published in it.
        if !opts.read_only {
            vfs::create_dir_synced(&*vfs, &dir)?;
        }
        let mut state = ColumnarState::load(&*vfs, &dir)?.unwrap_or_default();
        let live: std::collections::HashSet<u32> = tables.iter().map(|t| t.id).collect();
        state.tables.retain(|id, _| live.contains(id));
        let mut rebuild = Vec::new();
        let mut pins = HashMap::new();
        for t in tables {
            let ts = state.tables.entry(t.id).or_default();
            match engine.snapshot_at(ts.watermark) {
                Ok(s) => {
                    pins.insert(t.id, s);
                }
                // Nothing compacted yet (deletions before now need no marking), or a
                // read-only open, which cannot rebuild: the table starts from the current
                // state of the row store (every row counts as changed since watermark 0).
                Err(_) if ts.segments.is_empty() || opts.read_only => {
                    ts.watermark = 0;
                    ts.segments.clear();
                    pins.insert(t.id, engine.snapshot());
                }
                Err(_) => rebuild.push(t.id),
            }
        }
        drop(open_pin);
        let cache = DecodeCache::new(opts.cache_bytes);
        let mut views = HashMap::new();
        for t in tables {
            let ts = &state.tables[&t.id];
            let tdir = table_dir(&dir, t.id);
            let mut segs = Vec::new();
            // A table being rebuilt gets new segments from its rows; its old ones may be
            // ahead of the row store (even of its definition's schema version, after a
            // crash that lost writes a non-durable configuration had acknowledged).
            for s in ts.segments.iter().filter(|_| !rebuild.contains(&t.id)) {
                segs.push(Arc::new(Self::load_segment(&*vfs, &cache, &tdir, t, s)?));
            }
            views.insert(
                t.id,
                Arc::new(TableView {
                    table_id: t.id,
                    watermark: ts.watermark,
                    segments: segs,
                    schema_version: t.layout.version,
                }),
            );
        }
        if !opts.read_only {
            state.store(&*vfs, &dir)?;
        }
        let read_only = opts.read_only;
        let store = ColumnStore {
            dir,
            vfs,
            opts,
            cache,
            state: Mutex::new(state),
            views: RwLock::new(views),
            pins: Mutex::new(pins),
            round: Mutex::new(()),
        };
        if !read_only {
            store.remove_orphans()?;
        }
        for id in rebuild {
            if let Some(t) = tables.iter().find(|t| t.id == id) {
                tracing::warn!(table = %t.name, "column store lost its row-store pin; rebuilding");
                store.rebuild(engine, t)?;
            }
        }
        Ok(store)
    }

    pub(super) fn load_segment(
        vfs: &dyn Vfs,
        cache: &Arc<DecodeCache>,
        tdir: &Path,
        def: &TableDef,
        s: &SegmentState,
    ) -> Result<LoadedSegment> {
        let seg = Arc::new(Segment::open_for(vfs, tdir, &s.info, def)?.with_cache(cache.clone()));
        let deletes = match &s.deletes {
            Some(d) => read_deletes(vfs, tdir, s.info.id, d)?,
            None => RoaringBitmap::new(),
        };
        let (first_key, last_key) = Self::edge_keys(&seg, def)?;
        Ok(LoadedSegment {
            segment: seg,
            deletes: Arc::new(deletes),
            state: s.clone(),
            first_key,
            last_key,
            keys: Default::default(),
        })
    }

    /// The first and last key a segment holds (deleted rows included). Rows are in key
    /// order, so only the first and the last batch that hold rows are decoded (every
    /// key of every segment was, at each open: at TPC-H SF 10 a quarter of opening's
    /// 2.5 s).
    fn edge_keys(seg: &Segment, def: &TableDef) -> Result<(Vec<u8>, Vec<u8>)> {
        let (mut first, mut last) = (Vec::new(), Vec::new());
        let mut with_rows = (0..seg.num_batches()).filter(|&i| !seg.batch_range(i).is_empty());
        let Some(a) = with_rows.next() else {
            return Ok((first, last));
        };
        let z = with_rows.next_back().unwrap_or(a);
        let b = seg.read_one(Some(&def.key_cols), a)?;
        row_key(def, b.columns(), 0, &mut first);
        let b = match z == a {
            true => b,
            false => seg.read_one(Some(&def.key_cols), z)?,
        };
        row_key(def, b.columns(), b.num_rows() - 1, &mut last);
        Ok((first, last))
    }

    /// Delete files in `columnar/` that the published state does not name: the
    /// column store's own names only (`t<id>/`, `seg-*`, `STATE.tmp`).
    fn remove_orphans(&self) -> Result<()> {
        let vfs = &*self.vfs;
        let st = self.state.lock().clone();
        for name in vfs::list(vfs, &self.dir)? {
            let path = self.dir.join(&name);
            if name == "STATE.tmp" {
                vfs::remove_file_if_exists(vfs, &path)?;
                continue;
            }
            let Some(id) = name
                .strip_prefix('t')
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let keep: std::collections::HashSet<String> = st
                .tables
                .get(&id)
                .map(|ts| {
                    ts.segments
                        .iter()
                        .flat_map(|s| {
                            let mut v = vec![format!("seg-{:06}.arrow", s.info.id)];
                            if let Some(d) = &s.deletes {
                                v.push(format!("seg-{:06}.del-{}", s.info.id, d.generation));
                            }
                            v
                        })
                        .collect()
                })
                .unwrap_or_default();
            let Ok(files) = vfs.list(&path) else {
                continue;
            };
            let mut removed = false;
            for f in files {
                if f.starts_with("seg-") && !keep.contains(&f) {
                    vfs::remove_file_if_exists(vfs, &path.join(&f))?;
                    removed = true;
                }
            }
            if !st.tables.contains_key(&id) && vfs.list(&path).is_ok_and(|l| l.is_empty()) {
                let _ = vfs.remove_dir_all(&path);
                removed = true;
            }
            if removed {
                vfs::sync_dir(vfs, &path).or_else(|_| vfs::sync_dir(vfs, &self.dir))?;
            }
        }
        Ok(())
    }
}
