//! The fresh rows of a table: the row-store changes committed after the column store's
//! watermark, and the rows of older segments they supersede.
//!
//! Both are needed by every scan, and while writers run they are the part of a small
//! query that grows: each change costs a lookup in every segment and a decode. Scans of
//! one published view therefore build on each other: a scan at snapshot `S` starts
//! from what the last scan of the same view found at `S' <= S` and reads only the
//! changes committed in `(S', S]`, so a change is looked up once per view, not once per
//! query. A new view (a compaction round published) starts afresh.

use arrow::array::RecordBatch;
use lightning_columnar::codec::RowDecoder;
use lightning_columnar::store::TableView;
use lightning_columnar::table::{table_end, table_prefix};
use lightning_columnar::{ColumnStore, TableDef};
use lightning_rowstore::{Engine, Snapshot, Ts};
use parking_lot::Mutex;
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Per segment id: its rows superseded by the changes (shared with the next
    /// `Fresh` of the view until a new change touches that segment).
    pub superseded: HashMap<u64, Arc<RoaringBitmap>>,
    /// `rows` decoded, once: scans at the same snapshot or with no newer change share it.
    decoded: std::sync::OnceLock<Vec<RecordBatch>>,
}

/// The last [`Fresh`] of a table, shared by its scans.
#[derive(Default)]
pub(crate) struct FreshCache(Mutex<Option<Arc<Fresh>>>);

impl FreshCache {
    /// The fresh rows and superseded positions of `view` at `snap`.
    pub(crate) fn get(
        &self,
        engine: &Engine,
        def: &TableDef,
        view: &Arc<TableView>,
        snap: &Snapshot,
    ) -> lightning_columnar::Result<Arc<Fresh>> {
        let last = self.0.lock().clone();
        let base = last.filter(|f| Arc::ptr_eq(&f.view, view) && f.at <= snap.ts());
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
        let (old_changed, old_rows, mut superseded) = match &base {
            Some(b) => (&b.changed[..], &b.rows[..], b.superseded.clone()),
            None => (&[][..], &[][..], HashMap::new()),
        };
        // Keys seen for the first time supersede segment rows; a key changed again
        // supersedes nothing new.
        let new_keys: Vec<Bytes> = delta
            .iter()
            .filter(|(k, _)| old_changed.binary_search(k).is_err())
            .map(|(k, _)| k.clone())
            .collect();
        for s in &view.segments {
            let rows = ColumnStore::superseded_rows(s, def, &new_keys)?;
            if !rows.is_empty() {
                Arc::make_mut(superseded.entry(s.state.info.id).or_default()).extend(rows);
            }
        }
        let changed = merge_sorted(old_changed, &new_keys);
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
            superseded,
            decoded: Default::default(),
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
