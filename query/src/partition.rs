//! One partition's batches of a [`LightningScan`](crate::scan::LightningScan): the
//! fresh rows (if it is their partition), then each segment batch it takes from the
//! queue, re-pruned by zone maps when a pushed-down filter changed, decoded, masked and
//! filtered by the dynamic filters' current state (see [`RuntimeFilter`]).

use crate::runtime_filter::RuntimeFilter;
use crate::scan::{SegmentPart, SharedUnits, Unit, ext};
use crate::select::Selection;
use crate::zones::ZoneStats;
use arrow::array::RecordBatch;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_optimizer::pruning::build_pruning_predicate;
use datafusion::physical_plan::metrics::Count;
use lightning_columnar::segment::SegmentReader;
use std::collections::VecDeque;
use std::sync::Arc;

/// Yields one partition's batches: the fresh rows (if it is their partition), then every
/// unit's segment batch, decoded when asked for and masked. Before each batch it re-prunes
/// the remaining ones if a pushed-down filter changed (a join's build side finished, a
/// TopK heap tightened).
pub(crate) struct PartitionIter {
    pub(crate) schema: SchemaRef,
    pub(crate) parts: Vec<Arc<SegmentPart>>,
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) units: Arc<SharedUnits>,
    pub(crate) reader: Option<(usize, SegmentReader)>,
    /// Batches ready to emit, each with the rows to aggregate when masked.
    pub(crate) ready: VecDeque<(RecordBatch, Option<BooleanBuffer>)>,
    pub(crate) filters: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) selection: Selection,
    /// The columns (bit `i`: column `i`) a segment batch keeps as stored when that is a
    /// dictionary.
    pub(crate) coded: u64,
    /// Rows still to emit when the scan has a fetch limit.
    pub(crate) left: Option<usize>,
    /// Emit row counts only (see `LightningScan::count_only`).
    pub(crate) count_only: bool,
    /// Segment batches may come whole with the rows kept as a mask (see
    /// [`LightningScan::open_coded`]).
    pub(crate) masked: bool,
    /// The dynamic filters, evaluated on each decoded batch while they drop rows.
    pub(crate) runtime: RuntimeFilter,
    pub(crate) batches_pruned: Count,
    pub(crate) errors: Count,
}

impl PartitionIter {
    fn next_unit(&mut self, u: Unit) -> Result<()> {
        let p = &self.parts[u.part];
        let selection = match u.passes {
            true => &Selection::default(),
            false => &self.selection,
        };
        if self.count_only && selection.is_empty() {
            // The batch's live rows, known since planning: nothing read.
            self.ready
                .push_back((crate::select::rows_only(u.live), None));
            return Ok(());
        }
        if self.reader.as_ref().is_none_or(|(i, _)| *i != u.part) {
            let r = p
                .segment
                .segment
                .reader_as(self.projection.as_deref(), self.schema.clone())
                .map_err(ext)?;
            self.reader = Some((u.part, r));
        }
        let (_, r) = self.reader.as_ref().expect("reader set above");
        let stored = r.read_stored(u.batch).map_err(ext)?;
        let range = r.segment().batch_range(u.batch);
        let live = p.mask.keep(u.batch, range.clone());
        if self.count_only {
            let n = selection.count(stored, range.len(), live, r.schema())?;
            self.ready
                .extend((n > 0).then(|| (crate::select::rows_only(n), None)));
        } else {
            let (rows, schema) = (range.len(), r.schema());
            let runtime = Some(&mut self.runtime);
            let b =
                selection.apply(stored, rows, live, schema, self.coded, self.masked, runtime)?;
            self.ready.extend(b);
        }
        Ok(())
    }

    /// Drop the remaining units whose zone maps rule out the current filters.
    fn prune(&self) -> Result<()> {
        if self.filters.is_empty() {
            return Ok(());
        }
        let generation = crate::runtime_filter::generation(&self.filters);
        let mut pending = self.units.0.lock();
        if pending.units.is_empty() || pending.pruned_at == Some(generation) {
            return Ok(());
        }
        pending.pruned_at = Some(generation);
        self.prune_units(&mut pending.units)
    }

    fn prune_units(&self, units: &mut VecDeque<Unit>) -> Result<()> {
        let exprs = self
            .filters
            .iter()
            .map(|f| snapshot_physical_expr(f.clone()))
            .collect::<Result<Vec<_>>>()?;
        // Pruning only saves work: a predicate it cannot build from (counted in
        // `pruning_predicate_errors`) prunes nothing, like a trivially true one.
        let Some(p) = build_pruning_predicate(conjunction(exprs), &self.schema, &self.errors)
        else {
            return Ok(());
        };
        let containers = units.iter().map(|u| {
            let seg = &self.parts[u.part].segment.segment;
            let rows = seg.batch_range(u.batch).len() as u64;
            (seg.batch_zone_maps(u.batch), rows)
        });
        let stats = ZoneStats {
            schema: &self.schema,
            projection: self.projection.as_deref(),
            containers: containers.collect(),
        };
        let keep = p.prune(&stats)?;
        let before = units.len();
        let mut k = keep.into_iter();
        units.retain(|_| k.next().unwrap_or(true));
        self.batches_pruned.add(before - units.len());
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<(RecordBatch, Option<BooleanBuffer>)>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            self.prune()?;
            let Some(u) = self.units.0.lock().units.pop_front() else {
                return Ok(None);
            };
            self.next_unit(u)?;
        }
    }
}

impl PartitionIter {
    /// The next batch and its mask (none unless `masked`), with no fetch limit applied.
    pub(crate) fn next_masked(&mut self) -> Option<Result<(RecordBatch, Option<BooleanBuffer>)>> {
        match self.next_batch() {
            Ok(b) => b.map(Ok),
            Err(e) => {
                // This partition stops (the query fails as a whole).
                self.units = SharedUnits::new([]);
                self.ready.clear();
                Some(Err(e))
            }
        }
    }
}

impl Iterator for PartitionIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == Some(0) {
            return None;
        }
        let b = match self.next_masked()? {
            Ok((b, _)) => b,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(match &mut self.left {
            Some(left) => {
                let b = b.slice(0, b.num_rows().min(*left));
                *left -= b.num_rows();
                b
            }
            None => b,
        }))
    }
}
