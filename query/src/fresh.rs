//! The fresh rows of a table: the row-store changes committed after the column store's
//! watermark, and the rows of older segments they supersede.
//!
//! Both are needed by every scan, and while writers run they are the part of a small
//! query that grows: each change costs a lookup in every segment and a decode. Scans of
//! one published view therefore build on each other: a scan at snapshot `S` starts
//! from what the last scan of the same view found at `S' <= S` and reads only the
//! changes committed in `(S', S]`, so a change is looked up once per view, not once per
//! query. A new view (a compaction round published) starts afresh.

use arrow::array::{BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{FilterBuilder, FilterPredicate};
use lightning_columnar::codec::RowDecoder;
use lightning_columnar::store::{LoadedSegment, TableView};
use lightning_columnar::table::{table_end, table_prefix};
use lightning_columnar::{ColumnStore, TableDef};
use lightning_rowstore::{Engine, Snapshot, Ts};
use parking_lot::Mutex;
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Shared bytes: the cached keys and rows are carried from scan to scan uncopied.
type Bytes = Arc<[u8]>;

/// What the scans of one view know at one snapshot.
pub(crate) struct Fresh {
    view: Arc<TableView>,
    /// The snapshot these figures are at.
    at: Ts,
    /// Keys changed after the watermark, sorted.
    changed: Vec<Bytes>,
    /// The newest row of each changed key that still exists (value bytes), sorted.
    rows: Vec<(Bytes, Bytes)>,
    /// `rows` decoded, once: scans at the same snapshot or with no newer change share it.
    decoded: OnceLock<Vec<RecordBatch>>,
    /// Per segment id: its rows hidden from scans (deleted, or superseded by the
    /// changes), shared with the next `Fresh` of the view until a change touches the
    /// segment. Made when a change first supersedes one of its rows, or else (deletes
    /// only) when a scan first needs it.
    masks: Mutex<HashMap<u64, Arc<SegmentMask>>>,
}

/// The rows of one segment a scan must skip (deleted or superseded), with what each
/// record batch keeps, built once and shared by every scan until it changes.
pub(crate) struct SegmentMask {
    mask: RoaringBitmap,
    /// Rows each batch keeps.
    pub live: Vec<usize>,
    /// Per batch: which rows it keeps, when it keeps fewer than all (built on first use).
    keep: Vec<OnceLock<Option<Arc<Kept>>>>,
}

/// The rows a batch keeps, as bits and as a ready filter (its iteration plan built
/// once, not per scan and column).
pub(crate) struct Kept {
    pub bits: BooleanBuffer,
    filter: OnceLock<FilterPredicate>,
}

impl Kept {
    fn new(bits: BooleanBuffer) -> Kept {
        Kept {
            bits,
            filter: OnceLock::new(),
        }
    }

    /// The filter of these rows, built by the first scan that reads the batch.
    pub fn filter(&self) -> &FilterPredicate {
        self.filter.get_or_init(|| {
            FilterBuilder::new(&BooleanArray::new(self.bits.clone(), None))
                .optimize()
                .build()
        })
    }
}

/// Rows of `r` not in `mask`.
fn unmasked(mask: &RoaringBitmap, r: std::ops::Range<usize>) -> usize {
    r.len() - mask.range_cardinality(r.start as u32..r.end as u32) as usize
}

impl SegmentMask {
    /// `s`'s deleted rows and `superseded` (ascending).
    fn new(s: &LoadedSegment, superseded: &[u32]) -> SegmentMask {
        let mut mask = (*s.deletes).clone();
        mask.extend(superseded.iter().copied());
        let seg = &s.segment;
        let live = (0..seg.num_batches())
            .map(|b| unmasked(&mask, seg.batch_range(b)))
            .collect();
        SegmentMask {
            mask,
            live,
            keep: (0..seg.num_batches()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// This mask with `rows` (ascending, none masked yet) masked too. Batches `rows`
    /// misses keep their filters; those it hits get their kept bits with `rows` cleared.
    fn with_more(&self, s: &LoadedSegment, rows: &[u32]) -> SegmentMask {
        let mut mask = self.mask.clone();
        mask.extend(rows.iter().copied());
        let seg = &s.segment;
        let mut live = self.live.clone();
        let keep = (0..seg.num_batches())
            .map(|b| {
                let r = seg.batch_range(b);
                let lo = rows.partition_point(|&x| (x as usize) < r.start);
                let hi = rows.partition_point(|&x| (x as usize) < r.end);
                let out = OnceLock::new();
                if lo == hi {
                    if let Some(k) = self.keep[b].get() {
                        let _ = out.set(k.clone());
                    }
                    return out;
                }
                live[b] = unmasked(&mask, r.clone());
                if let Some(Some(k)) = self.keep[b].get() {
                    let mut bits = BooleanBufferBuilder::new(r.len());
                    bits.append_buffer(&k.bits);
                    for &x in &rows[lo..hi] {
                        bits.set_bit(x as usize - r.start, false);
                    }
                    let _ = out.set(Some(Arc::new(Kept::new(bits.finish()))));
                }
                out
            })
            .collect();
        SegmentMask { mask, live, keep }
    }

    /// Which rows of batch `b` (rows `range` of the segment) are kept; `None`: all.
    pub fn keep(&self, b: usize, range: std::ops::Range<usize>) -> Option<Arc<Kept>> {
        self.keep[b]
            .get_or_init(|| {
                if self.live[b] == range.len() {
                    return None;
                }
                // All kept, then the masked rows cleared: one pass over the bitmap's
                // range, not a lookup per row.
                let mut keep = BooleanBufferBuilder::new(range.len());
                keep.append_n(range.len(), true);
                for row in self.mask.range(range.start as u32..range.end as u32) {
                    keep.set_bit(row as usize - range.start, false);
                }
                Some(Arc::new(Kept::new(keep.finish())))
            })
            .clone()
    }
}

/// The last [`Fresh`] of a table, shared by its scans.
#[derive(Default)]
pub(crate) struct FreshCache(Mutex<Option<Arc<Fresh>>>);

impl FreshCache {
    /// The fresh rows and superseded positions of `view` at `snap`.
    ///
    /// Built from the last [`Fresh`] when it is at or before `snap`: of the same view,
    /// only the changes after it are read and only keys changed for the first time are
    /// looked up in the segments. Of an older view of the table (the compactor has since
    /// published), the changes after the new watermark are read again, but the masks of
    /// the segments both views hold carry over: a row the old figures masked stays
    /// masked (its key changed after the old watermark, so it is either deleted in the
    /// new view or changed after the new watermark), and only the segment's newly
    /// deleted rows and the keys the old figures did not know are added. Only segments
    /// the compactor wrote since are searched for every changed key.
    pub(crate) fn get(
        &self,
        engine: &Engine,
        def: &TableDef,
        view: &Arc<TableView>,
        snap: &Snapshot,
    ) -> lightning_columnar::Result<Arc<Fresh>> {
        let last = self.0.lock().clone();
        let prior = last.filter(|f| {
            f.at <= snap.ts()
                && f.view.table_id == view.table_id
                && f.view.watermark <= view.watermark
        });
        let base = prior.clone().filter(|f| Arc::ptr_eq(&f.view, view));
        let lo = base.as_ref().map_or(view.watermark, |f| f.at);
        let (prefix, end) = (table_prefix(def.id), table_end(def.id));
        // The changes after `lo`, in key order, with their newest value at `snap`.
        let mut delta: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        engine.for_each_change(
            snap,
            lo,
            &prefix,
            &end,
            |k, v| -> lightning_columnar::Result<()> {
                delta.push((Bytes::from(&k[prefix.len()..]), v.map(Bytes::from)));
                Ok(())
            },
        )?;
        if let Some(b) = &base
            && delta.is_empty()
        {
            return Ok(b.clone());
        }
        let (old_changed, old_rows) = match &base {
            Some(b) => (&b.changed[..], &b.rows[..]),
            None => (&[][..], &[][..]),
        };
        // Keys the prior figures did not know supersede segment rows they did not
        // mask; a key changed again supersedes nothing new.
        let known = prior.as_ref().map_or(&[][..], |p| &p.changed[..]);
        let new_keys = difference(delta.iter().map(|(k, _)| k), known);
        let mut masks = match &prior {
            Some(p) => p.masks.lock().clone(),
            None => HashMap::new(),
        };
        if base.is_some() {
            for s in &view.segments {
                let rows = ColumnStore::superseded_rows(s, def, &new_keys)?;
                if !rows.is_empty() {
                    let id = s.state.info.id;
                    // A segment's mask is carried forward with the new rows cleared,
                    // batch by batch, instead of being rebuilt whole.
                    let m = match masks.get(&id) {
                        Some(m) => m.with_more(s, &rows),
                        None => SegmentMask::new(s, &rows),
                    };
                    masks.insert(id, Arc::new(m));
                }
            }
        } else {
            let carried = std::mem::take(&mut masks);
            let held: HashMap<u64, &Arc<LoadedSegment>> = prior
                .as_ref()
                .map(|p| {
                    p.view
                        .segments
                        .iter()
                        .map(|s| (s.state.info.id, s))
                        .collect()
                })
                .unwrap_or_default();
            let all: Vec<Bytes> = delta.iter().map(|(k, _)| k.clone()).collect();
            for s in &view.segments {
                let id = s.state.info.id;
                let kept = held
                    .get(&id)
                    .is_some_and(|old| Arc::ptr_eq(&old.segment, &s.segment));
                if !kept {
                    let rows = ColumnStore::superseded_rows(s, def, &all)?;
                    if !rows.is_empty() {
                        masks.insert(id, Arc::new(SegmentMask::new(s, &rows)));
                    }
                    continue;
                }
                let mut rows = ColumnStore::superseded_rows(s, def, &new_keys)?;
                match carried.get(&id) {
                    Some(m) => {
                        rows.extend(&*s.deletes - &m.mask);
                        rows.sort_unstable();
                        rows.dedup();
                        let m = match rows.is_empty() {
                            true => m.clone(),
                            false => Arc::new(m.with_more(s, &rows)),
                        };
                        masks.insert(id, m);
                    }
                    // The prior figures masked none of its rows.
                    None if !rows.is_empty() => {
                        masks.insert(id, Arc::new(SegmentMask::new(s, &rows)));
                    }
                    None => {}
                }
            }
        }
        let changed = match &base {
            Some(_) => merge_sorted(old_changed, &new_keys),
            None => delta.iter().map(|(k, _)| k.clone()).collect(),
        };
        // The rows: the old ones with every changed key replaced by its newest state
        // (none if it was deleted).
        let mut rows = Vec::with_capacity(old_rows.len() + delta.len());
        let mut i = 0;
        for (k, v) in delta {
            while i < old_rows.len() && old_rows[i].0 < k {
                rows.push(old_rows[i].clone());
                i += 1;
            }
            if i < old_rows.len() && old_rows[i].0 == k {
                i += 1;
            }
            if let Some(v) = v {
                rows.push((k, v));
            }
        }
        rows.extend_from_slice(&old_rows[i..]);
        let fresh = Arc::new(Fresh {
            view: view.clone(),
            at: snap.ts(),
            changed,
            rows,
            decoded: Default::default(),
            masks: Mutex::new(masks),
        });
        let mut g = self.0.lock();
        if g.as_ref()
            .is_none_or(|f| !Arc::ptr_eq(&f.view, view) || f.at <= fresh.at)
        {
            *g = Some(fresh.clone());
        }
        Ok(fresh)
    }
}

/// The keys of `keys` (sorted) not in `known` (sorted), in one pass over both.
fn difference<'a>(keys: impl Iterator<Item = &'a Bytes>, known: &[Bytes]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut j = 0;
    for k in keys {
        // Gallop: the known keys are often many more than the changed ones.
        let mut step = 1;
        while j + step < known.len() && known[j + step] < *k {
            j += step;
            step *= 2;
        }
        j += known[j..(j + step + 1).min(known.len())].partition_point(|x| x < k);
        if known.get(j) != Some(k) {
            out.push(k.clone());
        }
    }
    out
}

/// The union of two sorted key lists.
fn merge_sorted(a: &[Bytes], b: &[Bytes]) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            if a[i] == b[j] {
                j += 1;
            }
            out.push(a[i].clone());
            i += 1;
        } else {
            out.push(b[j].clone());
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Fresh {
    /// The rows of segment `s` (of this view) scans skip.
    pub(crate) fn mask(&self, s: &LoadedSegment) -> Arc<SegmentMask> {
        let id = s.state.info.id;
        if let Some(m) = self.masks.lock().get(&id) {
            return m.clone();
        }
        // No mask yet: no row of the segment is superseded.
        let m = Arc::new(SegmentMask::new(s, &[]));
        self.masks.lock().entry(id).or_insert(m).clone()
    }

    /// The fresh rows decoded into batches of the table's schema.
    pub(crate) fn batches(&self, def: &TableDef) -> lightning_columnar::Result<Vec<RecordBatch>> {
        if let Some(b) = self.decoded.get() {
            return Ok(b.clone());
        }
        let mut dec = RowDecoder::new(def.schema.clone(), &def.key_cols, def.raw_kv, 1024);
        let mut out = Vec::new();
        for (k, v) in &self.rows {
            dec.push(k, v)?;
            if dec.len() >= 8192 {
                out.push(dec.finish()?);
            }
        }
        if !dec.is_empty() {
            out.push(dec.finish()?);
        }
        Ok(self.decoded.get_or_init(|| out).clone())
    }
}
