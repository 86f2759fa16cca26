//! The column store: loads published segments, runs compaction rounds that turn
//! committed row changes into segments and delete bitmaps, and publishes each round's
//! result with one atomic state replacement.
//!
//! Invariant (checked by the property tests): for a published table view at watermark
//! `W`, the live rows of its segments (rows not in their delete bitmaps) are exactly the
//! latest committed version of every row of the table with commit timestamp <= `W`.
//! To compute the changes in `(W, W']` the store keeps a row-store snapshot at `W` for
//! each table, so neither the versions nor the tombstones it needs are collected.

use crate::codec::{RowDecoder, encode_key_value};
use crate::error::{Error, Result};
use crate::segment::{
    DecodeCache, Segment, SegmentCompression, SegmentInfo, segment_path, write_segment_batched,
    write_segment_chunks,
};
use crate::state::{ColumnarState, DeleteFile, SegmentState, TableState};
use crate::table::{TableDef, table_end, table_prefix};
use arrow::array::*;
use arrow::datatypes::SchemaRef;
use lightning_rowstore::packed::PackedBytes;
use lightning_rowstore::vfs::{self, Vfs};
use lightning_rowstore::{Engine, Snapshot, Ts};
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod check;
mod files;
mod keys;
mod open;
mod rows;

pub use check::check_files;
use files::*;
use keys::KeyIndex;
use rows::SegmentRows;

/// Column-store settings.
#[derive(Debug, Clone)]
pub struct ColumnarOptions {
    pub compression: SegmentCompression,
    /// Most rows in one segment.
    pub segment_rows: usize,
    /// Rows per record batch inside a segment.
    pub batch_rows: usize,
    /// Segments with fewer live rows than this are merged...
    pub small_segment_rows: usize,
    /// ...once at least this many of them exist.
    pub merge_when_small_segments: usize,
    /// Bytes of decoded segment columns kept in memory for later scans (0: none).
    pub cache_bytes: usize,
    /// The file system every file of the column store goes through.
    pub vfs: Arc<dyn Vfs>,
    /// Open without writing anything (the database is open read-only): no state file,
    /// no orphan removal, no rebuild (a table whose segments cannot be used is served
    /// from the row store alone); every method that would write fails with
    /// [`lightning_rowstore::Error::ReadOnly`].
    pub read_only: bool,
}

impl Default for ColumnarOptions {
    fn default() -> Self {
        ColumnarOptions {
            compression: SegmentCompression::Zstd,
            segment_rows: 1 << 20,
            batch_rows: crate::segment::BATCH_ROWS,
            small_segment_rows: 1 << 16,
            merge_when_small_segments: 4,
            cache_bytes: 512 << 20,
            vfs: vfs::std_vfs(),
            read_only: false,
        }
    }
}

/// A segment with its current delete bitmap.
pub struct LoadedSegment {
    pub segment: Arc<Segment>,
    pub deletes: Arc<RoaringBitmap>,
    pub state: SegmentState,
    first_key: Vec<u8>,
    last_key: Vec<u8>,
    /// Every row's encoded key, built the first time changed keys are looked up in the
    /// segment and shared by its later generations (same rows, other delete bitmaps):
    /// a query on changing data then binary-searches memory instead of decoding the
    /// key columns again.
    keys: Arc<std::sync::OnceLock<KeyIndex>>,
}

impl LoadedSegment {
    /// Encoded keys of the segment's first and last row (encoded keys sort like the
    /// key values).
    pub fn key_range(&self) -> (&[u8], &[u8]) {
        (&self.first_key, &self.last_key)
    }

    pub fn live_rows(&self) -> u64 {
        self.state.info.rows - self.deletes.len()
    }

    /// Read the projected columns of the live rows.
    pub fn read_live(&self, projection: Option<&[usize]>) -> Result<RecordBatch> {
        let b = self.segment.read(projection)?;
        if self.deletes.is_empty() {
            return Ok(b);
        }
        let mask = BooleanArray::from_iter(
            (0..b.num_rows() as u32).map(|i| Some(!self.deletes.contains(i))),
        );
        Ok(arrow::compute::filter_record_batch(&b, &mask)?)
    }
}

/// The published column-store content of one table.
pub struct TableView {
    pub table_id: u32,
    pub watermark: Ts,
    pub segments: Vec<Arc<LoadedSegment>>,
    /// The table's schema version its segments are read as (each segment maps its own
    /// version's columns to this one's).
    pub schema_version: u32,
}

/// What one compaction round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundStats {
    pub changed_keys: u64,
    pub rows_written: u64,
    pub segments_written: u64,
    pub rows_deleted: u64,
    pub segments_merged: u64,
    /// Segments rewritten without their deleted rows (a quarter or more of them deleted).
    pub segments_rewritten: u64,
    pub watermark: Ts,
}

pub struct ColumnStore {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    opts: ColumnarOptions,
    cache: Arc<DecodeCache>,
    state: Mutex<ColumnarState>,
    views: RwLock<HashMap<u32, Arc<TableView>>>,
    pins: Mutex<HashMap<u32, Snapshot>>,
    round: Mutex<()>,
}

/// Sorted byte keys as big-endian integers (which keep their order), if every one is
/// 8 bytes (a single integer key column): searched as machine words, not through a
/// pointer or offset per key.
pub fn be_u64s<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>) -> Option<Vec<u64>> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(u64::from_be_bytes(k.try_into().ok()?));
    }
    Some(out)
}

/// The first `i` in `from..n` for which `before(i)` is false (`before` is true, then
/// false), or `n`. Gallops from `from` (steps 1, 2, 4, …) before bisecting, so a search
/// costs the log of the distance to the answer: walking sorted probes through a sorted
/// list, one search per probe, each starting where the last ended.
pub fn gallop(from: usize, n: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut step) = (from, 1);
    while lo + step < n && before(lo + step) {
        lo += step;
        step *= 2;
    }
    let mut hi = (lo + step + 1).min(n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl LoadedSegment {
    /// Build the encoded-key index from the rows just written (`batches`, in the
    /// segment's order), on the compactor's thread: the first query that looks up
    /// changed keys in a new segment then does not decode its key column first.
    fn index_keys(&self, def: &TableDef, batches: &[RecordBatch]) {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows as u64 == self.state.info.rows {
            let parts = batches
                .iter()
                .map(|b| def.key_cols.iter().map(|&c| b.column(c).clone()).collect());
            let _ = self.keys.set(KeyIndex::new(pack_keys(def, parts)));
        }
    }

    /// The encoded key of every row, in row (= key) order: built by the compactor when
    /// it wrote the segment, or else from the stored key columns on first use.
    fn encoded_keys(&self, def: &TableDef) -> Result<&KeyIndex> {
        if let Some(k) = self.keys.get() {
            return Ok(k);
        }
        let b = self.segment.read(Some(&def.key_cols))?;
        Ok(self
            .keys
            .get_or_init(|| KeyIndex::new(pack_keys(def, [b.columns().to_vec()]))))
    }
}

/// The row-store keys (without table prefix) of the rows of `parts` (each: a table's
/// key columns, of equal length), packed in order.
fn pack_keys(def: &TableDef, parts: impl IntoIterator<Item = Vec<ArrayRef>>) -> PackedBytes {
    let mut keys = PackedBytes::default();
    let mut buf = Vec::new();
    for cols in parts {
        for i in 0..cols.first().map_or(0, |c| c.len()) {
            row_key(def, &cols, i, &mut buf);
            keys.push(&buf);
        }
    }
    keys
}

/// The row-store key (without table prefix) of row `i`.
fn row_key(def: &TableDef, key_cols: &[ArrayRef], i: usize, out: &mut Vec<u8>) {
    out.clear();
    if def.raw_kv {
        out.extend_from_slice(key_cols[0].as_binary::<i32>().value(i));
    } else {
        for c in key_cols {
            encode_key_value(c.as_ref(), i, out);
        }
    }
}

impl ColumnStore {
    /// Refuse a write when open read-only.
    fn check_writable(&self) -> Result<()> {
        match self.opts.read_only {
            true => Err(lightning_rowstore::Error::ReadOnly.into()),
            false => Ok(()),
        }
    }

    /// The budget of decoded segment columns kept in memory.
    pub fn decode_cache(&self) -> &DecodeCache {
        &self.cache
    }

    /// The published view of a table (empty if nothing was compacted yet).
    pub fn view(&self, table_id: u32) -> Arc<TableView> {
        self.views
            .read()
            .get(&table_id)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(TableView {
                    table_id,
                    watermark: 0,
                    segments: Vec::new(),
                    schema_version: 0,
                })
            })
    }

    /// Live rows of a table's segments at its published watermark.
    pub fn scan(
        &self,
        table_id: u32,
        projection: Option<&[usize]>,
    ) -> Result<(Ts, Vec<RecordBatch>)> {
        let v = self.view(table_id);
        let mut out = Vec::new();
        for s in &v.segments {
            out.push(s.read_live(projection)?);
        }
        Ok((v.watermark, out))
    }

    /// Bytes of segment and delete-bitmap files of a table.
    pub fn table_bytes(&self, table_id: u32) -> u64 {
        self.view(table_id)
            .segments
            .iter()
            .map(|s| s.state.info.file_len + s.state.deletes.as_ref().map_or(0, |d| d.file_len))
            .sum()
    }

    fn alloc_id(&self) -> u64 {
        let mut st = self.state.lock();
        let id = st.next_file_id;
        st.next_file_id += 1;
        id
    }

    /// A new segment id, its file registered with the round (an orphan of a crashed
    /// round with the same name is replaced).
    fn new_segment(&self, files: &mut RoundFiles, tdir: &Path) -> Result<u64> {
        let id = self.alloc_id();
        let p = segment_path(tdir, id);
        vfs::remove_file_if_exists(&*self.vfs, &p)?;
        files.add(p);
        Ok(id)
    }

    fn write_rows(
        &self,
        files: &mut RoundFiles,
        tdir: &Path,
        def: &TableDef,
        batch: &RecordBatch,
    ) -> Result<LoadedSegment> {
        let id = self.new_segment(files, tdir)?;
        let info = write_segment_batched(
            &*self.vfs,
            tdir,
            id,
            batch,
            self.opts.compression,
            self.opts.batch_rows,
        )?;
        let seg = self.loaded(tdir, def, info)?;
        seg.index_keys(def, std::slice::from_ref(batch));
        Ok(seg)
    }

    fn write_chunks(
        &self,
        files: &mut RoundFiles,
        tdir: &Path,
        def: &TableDef,
        chunks: &[RecordBatch],
    ) -> Result<LoadedSegment> {
        let id = self.new_segment(files, tdir)?;
        let info = write_segment_chunks(&*self.vfs, tdir, id, chunks, self.opts.compression)?;
        let seg = self.loaded(tdir, def, info)?;
        seg.index_keys(def, chunks);
        Ok(seg)
    }

    fn loaded(&self, tdir: &Path, def: &TableDef, mut info: SegmentInfo) -> Result<LoadedSegment> {
        info.schema_version = def.layout.version;
        let st = SegmentState {
            info,
            deletes: None,
        };
        Self::load_segment(&*self.vfs, &self.cache, tdir, def, &st)
    }

    /// Register a new table (empty, watermark 0).
    pub fn add_table(&self, engine: &Engine, def: &TableDef) -> Result<()> {
        self.check_writable()?;
        let _r = self.round.lock();
        let mut st = self.state.lock();
        st.tables.entry(def.id).or_default();
        st.store(&*self.vfs, &self.dir)?;
        drop(st);
        self.pins.lock().insert(def.id, engine.snapshot());
        Ok(())
    }

    /// Remove a dropped table's segments.
    pub fn drop_table(&self, table_id: u32) -> Result<()> {
        self.check_writable()?;
        let _r = self.round.lock();
        let mut st = self.state.lock();
        st.tables.remove(&table_id);
        st.store(&*self.vfs, &self.dir)?;
        drop(st);
        self.views.write().remove(&table_id);
        self.pins.lock().remove(&table_id);
        let tdir = table_dir(&self.dir, table_id);
        if vfs::exists(&*self.vfs, &tdir)? {
            // Unpublished already; what is left of it is an orphan, removed on open if
            // this fails.
            let _ = self.vfs.remove_dir_all(&tdir);
            let _ = vfs::sync_dir(&*self.vfs, &self.dir);
        }
        Ok(())
    }

    /// One compaction round for `def`: fold the changes committed since its watermark
    /// into segments and delete bitmaps, merge small segments, publish.
    pub fn compact(&self, engine: &Engine, def: &TableDef) -> Result<RoundStats> {
        self.check_writable()?;
        let _r = self.round.lock();
        let _span = tracing::info_span!("columnar_compaction", table = %def.name).entered();
        let Some(view) = self.current_view(def)? else {
            // `def` is older than the table's: the next round has the new one.
            return Ok(RoundStats {
                watermark: self.view(def.id).watermark,
                ..Default::default()
            });
        };
        let hi = engine.snapshot();
        let mut stats = RoundStats {
            watermark: view.watermark,
            ..Default::default()
        };
        if hi.ts() <= view.watermark {
            return Ok(stats);
        }
        let tdir = table_dir(&self.dir, def.id);
        vfs::create_dir_synced(&*self.vfs, &tdir)?;
        let prefix = table_prefix(def.id);
        let end = table_end(def.id);
        let mut changed: Vec<Vec<u8>> = Vec::new();
        let mut files = RoundFiles::new(self.vfs.clone());
        let mut rows = SegmentRows::new(self, &mut files, &tdir, def);
        // Superseded rows can only be in segments that already exist.
        let track_changed = !view.segments.is_empty();
        let result =
            engine.for_each_change(&hi, view.watermark, &prefix, &end, |k, v| -> Result<()> {
                let key = &k[prefix.len()..];
                stats.changed_keys += 1;
                if let Some(v) = v {
                    rows.push(key, v)?;
                }
                if track_changed {
                    changed.push(key.to_vec());
                }
                Ok(())
            });
        let new_segs = rows.finish(result)?;
        stats.rows_written = new_segs.iter().map(|s| s.state.info.rows).sum();
        stats.segments_written = new_segs.len() as u64;

        // Rows of older segments whose key changed are superseded.
        let mut segments: Vec<Arc<LoadedSegment>> = Vec::new();
        let mut obsolete: Vec<PathBuf> = Vec::new();
        for s in &view.segments {
            let rows = Self::superseded_rows(s, def, &changed)?;
            if rows.is_empty() {
                segments.push(s.clone());
                continue;
            }
            stats.rows_deleted += rows.len() as u64;
            let mut bm = (*s.deletes).clone();
            bm.extend(rows);
            if let Some(d) = &s.state.deletes {
                obsolete.push(del_path(&tdir, s.state.info.id, d.generation));
            }
            if bm.len() == s.state.info.rows {
                obsolete.push(segment_path(&tdir, s.state.info.id));
                continue; // every row superseded: drop the segment
            }
            // A new generation number from the store's counter: never one an earlier,
            // failed round could have used.
            let generation = self.alloc_id();
            let df = write_deletes(&mut files, &tdir, s.state.info.id, generation, &bm)?;
            segments.push(Arc::new(LoadedSegment {
                segment: s.segment.clone(),
                deletes: Arc::new(bm),
                state: SegmentState {
                    info: s.state.info.clone(),
                    deletes: Some(df),
                },
                first_key: s.first_key.clone(),
                last_key: s.last_key.clone(),
                keys: s.keys.clone(),
            }));
        }
        segments.extend(new_segs.into_iter().map(Arc::new));

        // Merge small segments into larger ones.
        let small: Vec<usize> = (0..segments.len())
            .filter(|&i| segments[i].live_rows() < self.opts.small_segment_rows as u64)
            .collect();
        if small.len() >= self.opts.merge_when_small_segments {
            let merged = self.merge(
                &mut files,
                &tdir,
                def,
                small.iter().map(|&i| segments[i].clone()).collect(),
            )?;
            stats.segments_merged = small.len() as u64;
            for &i in &small {
                let s = &segments[i];
                obsolete.push(segment_path(&tdir, s.state.info.id));
                if let Some(d) = &s.state.deletes {
                    obsolete.push(del_path(&tdir, s.state.info.id, d.generation));
                }
            }
            let keep: Vec<_> = segments
                .iter()
                .enumerate()
                .filter(|(i, _)| !small.contains(i))
                .map(|(_, s)| s.clone())
                .collect();
            segments = keep;
            segments.extend(merged.into_iter().map(Arc::new));
        }

        // Rewrite the segment with the largest share of deleted rows, once a quarter of
        // them are: every scan filters deleted rows out of each batch it reads and looks
        // changed keys up among all rows, so dead rows cost every query. One per round
        // bounds the work of a round.
        let densest = (0..segments.len())
            .filter(|&i| {
                let s = &segments[i];
                s.deletes.len() * 4 >= s.state.info.rows && !s.deletes.is_empty()
            })
            .max_by_key(|&i| {
                let s = &segments[i];
                s.deletes.len() * 1000 / s.state.info.rows.max(1)
            });
        if let Some(i) = densest {
            let s = segments.remove(i);
            let rewritten = self.merge(&mut files, &tdir, def, vec![s.clone()])?;
            obsolete.push(segment_path(&tdir, s.state.info.id));
            if let Some(d) = &s.state.deletes {
                obsolete.push(del_path(&tdir, s.state.info.id, d.generation));
            }
            stats.segments_rewritten += 1;
            segments.extend(rewritten.into_iter().map(Arc::new));
        }
        vfs::sync_dir(&*self.vfs, &tdir)?;
        stats.watermark = hi.ts();
        self.publish(def.id, def.layout.version, hi, segments, obsolete, files)?;
        Ok(stats)
    }

    /// Positions of live rows of `s` whose key is in `changed` (sorted).
    pub fn superseded_rows<K: AsRef<[u8]>>(
        s: &LoadedSegment,
        def: &TableDef,
        changed: &[K],
    ) -> Result<Vec<u32>> {
        let lo = changed.partition_point(|k| k.as_ref() < s.first_key.as_slice());
        let hi = changed.partition_point(|k| k.as_ref() <= s.last_key.as_slice());
        if lo >= hi {
            return Ok(Vec::new());
        }
        let index = s.encoded_keys(def)?;
        let mut out = Vec::new();
        // Both sides are sorted: each search gallops from where the previous one ended,
        // so a key costs the log of the distance to its row, not of the segment.
        let mut from = 0;
        for k in &changed[lo..hi] {
            let k = k.as_ref();
            // Segments overlap in keys (updated rows go to newer ones) and a search is
            // a few cache misses; most segments do not hold a given key.
            if !index.may_contain(k) {
                continue;
            }
            let (a, found) = index.seek(from, k);
            if found && !s.deletes.contains(a as u32) {
                out.push(a as u32);
            }
            from = a;
        }
        Ok(out)
    }

    /// Live rows of `segs`, sorted by key, rewritten as new segments.
    fn merge(
        &self,
        files: &mut RoundFiles,
        tdir: &Path,
        def: &TableDef,
        segs: Vec<Arc<LoadedSegment>>,
    ) -> Result<Vec<LoadedSegment>> {
        let mut batches = Vec::new();
        for s in &segs {
            batches.push(s.read_live(None)?);
        }
        let schema: SchemaRef = def.schema.clone();
        let all = arrow::compute::concat_batches(&schema, &batches)?;
        let key_cols: Vec<ArrayRef> = def
            .key_cols
            .iter()
            .map(|&i| all.column(i).clone())
            .collect();
        let mut keys: Vec<(Vec<u8>, u32)> = Vec::with_capacity(all.num_rows());
        for i in 0..all.num_rows() {
            let mut k = Vec::new();
            row_key(def, &key_cols, i, &mut k);
            keys.push((k, i as u32));
        }
        keys.sort_unstable();
        let idx = UInt32Array::from_iter_values(keys.iter().map(|(_, i)| *i));
        let sorted = arrow::compute::take_record_batch(&all, &idx)?;
        let mut out = Vec::new();
        let mut off = 0;
        while off < sorted.num_rows() {
            let len = (sorted.num_rows() - off).min(self.opts.segment_rows);
            out.push(self.write_rows(files, tdir, def, &sorted.slice(off, len))?);
            off += len;
        }
        Ok(out)
    }

    /// The published view of `def`'s table read as `def`'s columns: remapped (and
    /// republished) if `def` is newer than the view, `None` if it is older. Called with
    /// the round lock held.
    fn current_view(&self, def: &TableDef) -> Result<Option<Arc<TableView>>> {
        let view = self.view(def.id);
        let v = def.layout.version;
        if v == view.schema_version {
            return Ok(Some(view));
        }
        if v < view.schema_version {
            return Ok(None);
        }
        let segments = view
            .segments
            .iter()
            .map(|s| {
                Ok(Arc::new(LoadedSegment {
                    segment: Arc::new(s.segment.remap(def)?),
                    deletes: s.deletes.clone(),
                    state: s.state.clone(),
                    first_key: s.first_key.clone(),
                    last_key: s.last_key.clone(),
                    keys: s.keys.clone(),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let next = Arc::new(TableView {
            table_id: def.id,
            watermark: view.watermark,
            segments,
            schema_version: v,
        });
        self.views.write().insert(def.id, next.clone());
        Ok(Some(next))
    }

    /// `def` (the table altered in place) is the table's definition from now on: its
    /// segments are read as its columns. Segment files and the state do not change.
    pub fn alter_table(&self, def: &TableDef) -> Result<()> {
        self.check_writable()?;
        let _r = self.round.lock();
        self.current_view(def)?;
        Ok(())
    }

    fn publish(
        &self,
        table_id: u32,
        schema_version: u32,
        hi: Snapshot,
        segments: Vec<Arc<LoadedSegment>>,
        obsolete: Vec<PathBuf>,
        files: RoundFiles,
    ) -> Result<()> {
        let mut st = self.state.lock();
        let mut next = st.clone();
        next.tables.insert(
            table_id,
            TableState {
                watermark: hi.ts(),
                segments: segments.iter().map(|s| s.state.clone()).collect(),
            },
        );
        next.store(&*self.vfs, &self.dir)?;
        files.publish();
        *st = next;
        drop(st);
        self.views.write().insert(
            table_id,
            Arc::new(TableView {
                table_id,
                watermark: hi.ts(),
                segments,
                schema_version,
            }),
        );
        self.pins.lock().insert(table_id, hi);
        for p in obsolete {
            let _ = vfs::remove_file_if_exists(&*self.vfs, &p);
        }
        Ok(())
    }

    /// Rebuild a table's segments from the row store's current state.
    pub fn rebuild(&self, engine: &Engine, def: &TableDef) -> Result<RoundStats> {
        self.check_writable()?;
        let _r = self.round.lock();
        let Some(view) = self.current_view(def)? else {
            return Err(def.newer(self.view(def.id).schema_version));
        };
        let hi = engine.snapshot();
        let tdir = table_dir(&self.dir, def.id);
        vfs::create_dir_synced(&*self.vfs, &tdir)?;
        let prefix = table_prefix(def.id);
        let end = table_end(def.id);
        let mut files = RoundFiles::new(self.vfs.clone());
        let mut out = SegmentRows::new(self, &mut files, &tdir, def);
        let mut rows = 0;
        let result = (|| -> Result<()> {
            for r in engine.iter_at(&hi, Some(&prefix), Some(&end), false)? {
                let (k, v) = r?;
                out.push(&k[prefix.len()..], &v)?;
                rows += 1;
            }
            Ok(())
        })();
        let segments: Vec<Arc<LoadedSegment>> =
            out.finish(result)?.into_iter().map(Arc::new).collect();
        vfs::sync_dir(&*self.vfs, &tdir)?;
        let mut obsolete = Vec::new();
        for s in &view.segments {
            obsolete.push(segment_path(&tdir, s.state.info.id));
            if let Some(d) = &s.state.deletes {
                obsolete.push(del_path(&tdir, s.state.info.id, d.generation));
            }
        }
        let stats = RoundStats {
            rows_written: rows,
            segments_written: segments.len() as u64,
            watermark: hi.ts(),
            ..Default::default()
        };
        self.publish(def.id, def.layout.version, hi, segments, obsolete, files)?;
        Ok(stats)
    }

    /// Watermark of a table.
    pub fn watermark(&self, table_id: u32) -> Ts {
        self.view(table_id).watermark
    }

    /// Segment infos of a table (for tools and tests).
    pub fn segments(&self, table_id: u32) -> Vec<SegmentInfo> {
        self.view(table_id)
            .segments
            .iter()
            .map(|s| s.state.info.clone())
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the folder holding a table's files.
    pub fn table_dir(&self, table_id: u32) -> PathBuf {
        table_dir(&self.dir, table_id)
    }
}
