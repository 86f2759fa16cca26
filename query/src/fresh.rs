//! The fresh rows of a table: the row-store changes committed after the column store's
//! watermark, and the rows of older segments they supersede.
//!
//! Both are needed by every scan, and while writers run they are the part of a small
//! query that grows: each change costs a lookup in every segment and a decode. Scans of
//! one published view therefore build on each other: a scan at snapshot `S` starts
//! from what the last scan of the same view found at `S' <= S` and reads only the
//! changes committed in `(S', S]`, so a change is looked up once per view, not once per
//! query. The changed rows are kept in layers: a base, decoded once and shared, and
//! newer runs (one per scan that found changes, merged while a run is at least half the
//! size of the one before it, so there are few), each of which hides the older layers'
//! rows of its keys; the runs are folded into a new base when they pass a quarter of
//! it. A query then looks up, copies and decodes only what changed since the last scan,
//! not every change since the base or the watermark. A new view
//! (a compaction round published) reads the changes after its watermark again, but the
//! segment masks of the old view carry over to the segments both hold.

use arrow::array::{BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{FilterBuilder, FilterPredicate};
use lightning_columnar::codec::RowDecoder;
use lightning_columnar::store::{LoadedSegment, TableView};
use lightning_columnar::table::{table_end, table_prefix};
use lightning_columnar::{ColumnStore, TableDef, be_u64s, gallop};
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
    /// The changes after the watermark, oldest first: a base (the changes up to some
    /// earlier scan, folded into one sorted run) and the runs of later scans. Each is
    /// decoded once and shared by the `Fresh` values built on it, so a query on
    /// changing data copies and decodes only what changed since the last scan.
    layers: Vec<Arc<Layer>>,
    /// Per layer: which of its rows are still current (`None`: all), i.e. not changed
    /// again in a newer layer.
    current: Vec<Option<BooleanBuffer>>,
    /// The rows decoded, once: scans at the same snapshot or with no newer change share
    /// them.
    decoded: OnceLock<Vec<RecordBatch>>,
    /// Per segment id: its rows hidden from scans (deleted, or superseded by the
    /// changes), shared with the next `Fresh` of the view until a change touches the
    /// segment. Made when a change first supersedes one of its rows, or else (deletes
    /// only) when a scan first needs it.
    masks: Mutex<HashMap<u64, Arc<SegmentMask>>>,
}

/// Changes folded into one sorted run.
struct Layer {
    /// Keys changed, sorted.
    changed: Vec<Bytes>,
    /// The newest row of each changed key that still exists (value bytes), sorted.
    rows: Vec<(Bytes, Bytes)>,
    /// `changed` and the keys of `rows` as integers, when every key is 8 bytes: each
    /// new change is searched for in every layer, and a search over machine words
    /// touches a few cache lines where one through a pointer per key touches a line
    /// per step.
    changed_ints: Option<Vec<u64>>,
    row_ints: Option<Vec<u64>>,
    decoded: OnceLock<Vec<RecordBatch>>,
}

/// Calls `hit(i, j)` for each of `needles` (sorted; `i` its position) found in `hay`
/// (sorted, `n` keys; `j` the position), galloping from the last position found: as
/// integers when both sides have them.
fn find_sorted<'a>(
    n: usize,
    hay: impl Fn(usize) -> &'a [u8],
    hay_ints: Option<&[u64]>,
    needles: &[Bytes],
    needle_ints: Option<&[u64]>,
    mut hit: impl FnMut(usize, usize),
) {
    let mut j = 0;
    if let (Some(h), Some(ks)) = (hay_ints, needle_ints) {
        for (i, &k) in ks.iter().enumerate() {
            j = gallop(j, n, |x| h[x] < k);
            if h.get(j) == Some(&k) {
                hit(i, j);
            }
        }
        return;
    }
    for (i, k) in needles.iter().enumerate() {
        j = gallop(j, n, |x| hay(x) < &k[..]);
        if j < n && hay(j) == &k[..] {
            hit(i, j);
        }
    }
}

/// The runs above the base may hold this many keys, or a quarter of the base's, before
/// they are folded into a new base.
const FOLD_KEYS: usize = 4096;

impl Layer {
    fn new(changes: Vec<(Bytes, Option<Bytes>)>) -> Layer {
        Layer::of(
            changes.iter().map(|(k, _)| k.clone()).collect(),
            changes
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
        )
    }

    fn of(changed: Vec<Bytes>, rows: Vec<(Bytes, Bytes)>) -> Layer {
        Layer {
            changed_ints: be_u64s(changed.iter().map(|k| &k[..])),
            row_ints: be_u64s(rows.iter().map(|(k, _)| &k[..])),
            changed,
            rows,
            decoded: OnceLock::new(),
        }
    }

    /// `self` with `newer` applied: the newest row of every key either changed.
    fn fold(&self, newer: &Layer) -> Layer {
        Layer::of(
            merge_sorted(&self.changed, &newer.changed),
            overlay(&self.rows, newer.changes(), |v| v),
        )
    }

    /// Every changed key with its newest row (`None`: deleted), in key order.
    fn changes(&self) -> impl Iterator<Item = (Bytes, Option<Bytes>)> + '_ {
        let mut rows = self.rows.iter().peekable();
        self.changed.iter().map(move |k| {
            let v = rows.next_if(|(r, _)| r == k).map(|(_, v)| v.clone());
            (k.clone(), v)
        })
    }

    fn batches(&self, def: &TableDef) -> lightning_columnar::Result<&Vec<RecordBatch>> {
        if let Some(b) = self.decoded.get() {
            return Ok(b);
        }
        let out = decode(def, self.rows.iter().map(|(k, v)| (k, v)))?;
        Ok(self.decoded.get_or_init(|| out))
    }
}

/// Rows (key, value bytes) decoded into batches of the table's schema.
fn decode<'a>(
    def: &TableDef,
    rows: impl Iterator<Item = (&'a Bytes, &'a Bytes)>,
) -> lightning_columnar::Result<Vec<RecordBatch>> {
    let mut dec = RowDecoder::for_table(def, 1024);
    let mut out = Vec::new();
    for (k, v) in rows {
        dec.push(k, v)?;
        if dec.len() >= 8192 {
            out.push(dec.finish()?);
        }
    }
    if !dec.is_empty() {
        out.push(dec.finish()?);
    }
    Ok(out)
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
    /// Rows kept (set bits).
    pub count: usize,
    filter: OnceLock<FilterPredicate>,
}

impl Kept {
    fn new(bits: BooleanBuffer) -> Kept {
        Kept {
            count: bits.count_set_bits(),
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
        // Keys the prior figures did not know supersede segment rows they did not
        // mask; a key changed again supersedes nothing new. (Without prior figures
        // every segment is searched for every changed key, below.)
        let run = Layer::new(delta);
        let new_keys = match &prior {
            Some(p) => unknown(&run, &p.layers),
            None => Vec::new(),
        };
        let (layers, current) = match &base {
            Some(b) => with_run(&b.layers, &b.current, run),
            None => (vec![Arc::new(run)], vec![None]),
        };
        let all = &layers[0].changed;
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
            // A new base: its keys are every change after the watermark.
            for s in &view.segments {
                let id = s.state.info.id;
                let kept = held
                    .get(&id)
                    .is_some_and(|old| Arc::ptr_eq(&old.segment, &s.segment));
                if !kept {
                    let rows = ColumnStore::superseded_rows(s, def, all)?;
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
        let fresh = Arc::new(Fresh {
            view: view.clone(),
            at: snap.ts(),
            layers,
            current,
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

/// The keys `run` changed that no layer of `layers` changed, in one pass over each.
fn unknown(run: &Layer, layers: &[Arc<Layer>]) -> Vec<Bytes> {
    let mut known = vec![false; run.changed.len()];
    for l in layers {
        find_sorted(
            l.changed.len(),
            |x| &l.changed[x][..],
            l.changed_ints.as_deref(),
            &run.changed,
            run.changed_ints.as_deref(),
            |i, _| known[i] = true,
        );
    }
    run.changed
        .iter()
        .zip(known)
        .filter(|(_, known)| !known)
        .map(|(k, _)| k.clone())
        .collect()
}

/// `old` (sorted) overlaid with `new` (sorted, newer): one entry per key, `new`'s where
/// both have one, mapped by `keep` (`None` drops the key).
fn overlay<V: Clone, W>(
    old: &[(Bytes, V)],
    new: impl IntoIterator<Item = (Bytes, W)>,
    keep: impl Fn(W) -> Option<V>,
) -> Vec<(Bytes, V)> {
    let mut out = Vec::with_capacity(old.len());
    let mut i = 0;
    for (k, v) in new {
        while i < old.len() && old[i].0 < k {
            out.push(old[i].clone());
            i += 1;
        }
        if i < old.len() && old[i].0 == k {
            i += 1;
        }
        if let Some(v) = keep(v) {
            out.push((k, v));
        }
    }
    out.extend_from_slice(&old[i..]);
    out
}

/// `current` (which of `layer`'s rows are current; `None`: all) with the rows of
/// `newer`'s keys (changed again) no longer current. Shared, unchanged, when no key is
/// among the rows.
fn supersede(
    layer: &Layer,
    current: &Option<BooleanBuffer>,
    newer: &Layer,
) -> Option<BooleanBuffer> {
    let rows = &layer.rows;
    let mut out: Option<BooleanBufferBuilder> = None;
    find_sorted(
        rows.len(),
        |x| &rows[x].0[..],
        layer.row_ints.as_deref(),
        &newer.changed,
        newer.changed_ints.as_deref(),
        |_, j| {
            out.get_or_insert_with(|| {
                let mut b = BooleanBufferBuilder::new(rows.len());
                match current {
                    Some(c) => b.append_buffer(c),
                    None => b.append_n(rows.len(), true),
                }
                b
            })
            .set_bit(j, false)
        },
    );
    match out {
        Some(mut b) => Some(b.finish()),
        None => current.clone(),
    }
}

/// `layers` (with which rows of each are `current`) and `run`, newer than all, on top:
/// the older layers' rows of its keys stop being current, and runs are merged while the
/// newest is at least half the size of the one below it (so there are about log2 of
/// their keys), or all folded into a new base once they pass a quarter of it.
fn with_run(
    layers: &[Arc<Layer>],
    current: &[Option<BooleanBuffer>],
    run: Layer,
) -> (Vec<Arc<Layer>>, Vec<Option<BooleanBuffer>>) {
    let mut current: Vec<_> = layers
        .iter()
        .zip(current)
        .map(|(l, c)| supersede(l, c, &run))
        .collect();
    let mut layers = layers.to_vec();
    layers.push(Arc::new(run));
    current.push(None);
    while layers.len() > 2 {
        let n = layers.len();
        if layers[n - 1].changed.len() * 2 < layers[n - 2].changed.len() {
            break;
        }
        // The newest run has no newer layer: all its rows are current, and so are
        // those of the merge.
        let newer = layers.pop().expect("two runs");
        let older = layers.pop().expect("two runs");
        current.truncate(layers.len());
        layers.push(Arc::new(older.fold(&newer)));
        current.push(None);
    }
    let runs: usize = layers[1..].iter().map(|l| l.changed.len()).sum();
    if runs > FOLD_KEYS.max(layers[0].rows.len() / 4) {
        // The runs merged first (newest into older), so the base is copied once.
        let mut top = layers.pop().expect("a run");
        while layers.len() > 1 {
            top = Arc::new(layers.pop().expect("a run").fold(&top));
        }
        return (vec![Arc::new(layers[0].fold(&top))], vec![None]);
    }
    (layers, current)
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

    /// The fresh rows decoded into batches of the table's schema; in key order if
    /// `sorted`, else the base's current rows and then the newer ones.
    pub(crate) fn batches(
        &self,
        def: &TableDef,
        sorted: bool,
    ) -> lightning_columnar::Result<Vec<RecordBatch>> {
        if self.layers.len() == 1 {
            return Ok(self.layers[0].batches(def)?.clone());
        }
        if sorted {
            return self.sorted(def);
        }
        if let Some(b) = self.decoded.get() {
            return Ok(b.clone());
        }
        let mut out = Vec::new();
        for (layer, current) in self.layers.iter().zip(&self.current) {
            let mut at = 0;
            for b in layer.batches(def)? {
                let n = b.num_rows();
                let keep = current.as_ref().map(|c| c.slice(at, n));
                at += n;
                match keep {
                    Some(k) if k.count_set_bits() < n => {
                        let b = arrow::compute::filter_record_batch(b, &BooleanArray::new(k, None))
                            .map_err(lightning_columnar::Error::from)?;
                        if b.num_rows() > 0 {
                            out.push(b);
                        }
                    }
                    _ => out.push(b.clone()),
                }
            }
        }
        Ok(self.decoded.get_or_init(|| out).clone())
    }

    /// The fresh rows decoded in key order: the layers folded, as a fold into a new
    /// base would make them.
    fn sorted(&self, def: &TableDef) -> lightning_columnar::Result<Vec<RecordBatch>> {
        let mut rows = self.layers[0].rows.clone();
        for l in &self.layers[1..] {
            rows = overlay(&rows, l.changes(), |v| v);
        }
        decode(def, rows.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(i: u64) -> Bytes {
        Bytes::from(&i.to_be_bytes()[..])
    }

    /// `i` in as few bytes as it needs after its length: ordered as `i`, 1 to 9 bytes.
    fn var_key(i: u64) -> Bytes {
        let b = i.to_be_bytes();
        let skip = b.iter().take_while(|&&x| x == 0).count();
        let mut out = vec![(8 - skip) as u8];
        out.extend_from_slice(&b[skip..]);
        Bytes::from(out)
    }

    /// Layers built from random change sets agree with a map of the newest values,
    /// both as the current rows of every layer and folded in key order, and stay few.
    #[test]
    fn layers_fold_and_hide_like_a_map_of_newest_rows() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..50 {
            // Few keys (changed again and again) or many (mostly new).
            let space = if round % 2 == 0 { 3000 } else { 50_000 };
            // Every third round, keys of varying length (searched as bytes); else
            // 8-byte keys (searched as integers).
            let kf = |i: u64| if round % 3 == 2 { var_key(i) } else { key(i) };
            let mut model: BTreeMap<u64, Option<u64>> = BTreeMap::new();
            let mut changes = |model: &mut BTreeMap<u64, Option<u64>>, n: u64| {
                let mut c: BTreeMap<u64, Option<u64>> = BTreeMap::new();
                for _ in 0..n {
                    let v = next();
                    c.insert(next() % space, (v % 3 != 0).then_some(v));
                }
                model.extend(c.iter().map(|(k, v)| (*k, *v)));
                c.into_iter()
                    .map(|(k, v)| (kf(k), v.map(kf)))
                    .collect::<Vec<_>>()
            };
            let base = changes(&mut model, 2000);
            let (mut layers, mut current) = (vec![Arc::new(Layer::new(base))], vec![None]);
            let (mut folds, mut most) = (0, 0);
            for _ in 0..40 {
                let delta = changes(&mut model, 1 + round % 7 * 20);
                // Keys no layer knew: exactly those not in the model before.
                let run = Layer::new(delta);
                let new = unknown(&run, &layers);
                assert!(
                    new.iter()
                        .all(|k| layers.iter().all(|l| !l.changed.contains(k)))
                );
                let all_new = run
                    .changed
                    .iter()
                    .filter(|k| layers.iter().all(|l| !l.changed.contains(k)))
                    .count();
                assert_eq!(new.len(), all_new);
                let before = layers[0].clone();
                (layers, current) = with_run(&layers, &current, run);
                folds += !Arc::ptr_eq(&before, &layers[0]) as usize;
                most = most.max(layers.len());
            }
            let want_changed: Vec<Bytes> = model.keys().map(|&k| kf(k)).collect();
            let want_rows: Vec<(Bytes, Bytes)> = model
                .iter()
                .filter_map(|(&k, v)| Some((kf(k), kf((*v)?))))
                .collect();
            // Layered: every layer's current rows.
            let mut got: Vec<(Bytes, Bytes)> = Vec::new();
            for (l, c) in layers.iter().zip(&current) {
                assert_eq!(c.as_ref().map_or(l.rows.len(), |c| c.len()), l.rows.len());
                got.extend(
                    l.rows
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| c.as_ref().is_none_or(|c| c.value(*i)))
                        .map(|(_, r)| r.clone()),
                );
            }
            got.sort();
            assert_eq!(got, want_rows);
            // Folded: exactly the newest rows and every key changed.
            let mut folded = Layer::new(Vec::new()).fold(&layers[0]);
            for l in &layers[1..] {
                folded = folded.fold(l);
            }
            assert_eq!(folded.changed, want_changed);
            assert_eq!(folded.rows, want_rows);
            assert!(most <= 12, "{most} layers");
            assert_eq!(
                layers.iter().all(|l| l.changed_ints.is_some()),
                round % 3 != 2,
                "keys searched as integers exactly when all are 8 bytes"
            );
            if round % 7 == 6 && space > 3000 {
                assert!(folds > 0, "runs of 121 new keys never folded into the base");
            }
        }
    }
}
