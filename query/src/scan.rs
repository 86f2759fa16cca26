//! The scan plan: the column segments' record batches that survive zone-map pruning,
//! spread over the session's target partitions and decoded lazily one batch at a time
//! (projected, with deleted and superseded rows masked), plus the fresh rows from the row
//! store.

use arrow::array::{BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Result, Statistics};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use lightning_columnar::segment::{SegmentReader, ZoneMap};
use lightning_columnar::store::LoadedSegment;
use lightning_rowstore::Snapshot;
use roaring::RoaringBitmap;
use std::collections::VecDeque;
use std::sync::Arc;

/// One segment to read: its rows minus `mask`.
pub(crate) struct SegmentPart {
    pub segment: Arc<LoadedSegment>,
    pub mask: RoaringBitmap,
}

/// One record batch of a segment to read (after pruning).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    pub part: usize,
    pub batch: usize,
    /// Rows it yields (batch rows minus masked ones).
    pub live: usize,
}

/// What the planner pruned, for `EXPLAIN`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pruning {
    pub segments_total: usize,
    pub batches_total: usize,
}

/// Scans one Lightning table at one snapshot.
pub struct LightningScanExec {
    table: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    parts: Vec<Arc<SegmentPart>>,
    /// Units of each output partition, in key order within a partition.
    partitions: Vec<Vec<Unit>>,
    delta: Vec<RecordBatch>,
    /// The partition that emits the fresh rows (first); `partitions.len()` when they
    /// have a partition of their own.
    delta_part: usize,
    pruning: Pruning,
    watermark: u64,
    snapshot_ts: u64,
    // Keeps the row-store versions this scan reads alive until the plan is dropped.
    _snapshot: Arc<Snapshot>,
    cache: Arc<PlanProperties>,
}

impl std::fmt::Debug for LightningScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LightningScanExec({})", self.table)
    }
}

/// Split `units` (in key order) into at most `n` contiguous groups of similar row counts.
fn spread(units: Vec<Unit>, n: usize) -> Vec<Vec<Unit>> {
    let total: usize = units.iter().map(|u| u.live).sum();
    let n = n.max(1).min(units.len().max(1));
    let per = total.div_ceil(n).max(1);
    let mut out: Vec<Vec<Unit>> = vec![Vec::new()];
    let mut acc = 0;
    for u in units {
        if acc >= per && out.len() < n {
            out.push(Vec::new());
            acc = 0;
        }
        acc += u.live;
        out.last_mut().expect("one group").push(u);
    }
    out
}

impl LightningScanExec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        table: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        parts: Vec<SegmentPart>,
        units: Vec<Unit>,
        target_partitions: usize,
        delta: Vec<RecordBatch>,
        pruning: Pruning,
        watermark: u64,
        snapshot: Arc<Snapshot>,
        ordering: Option<Vec<PhysicalSortExpr>>,
    ) -> Self {
        let partitions = spread(units, target_partitions);
        // Declared only for one partition of segment batches: with several, DataFusion
        // keeps the order through hash repartitions by merging (`preserve_order`), which
        // measured 2.1x slower on TPC-H q3 and 1.3x on q18 than repartitioning freely
        // and sorting where needed.
        let ordering = ordering.filter(|_| partitions.len() == 1);
        // Fresh rows come in key order but interleave with the segments' keys: when the
        // output is declared ordered they get a partition of their own.
        let delta_part = match (&ordering, delta.iter().any(|b| b.num_rows() > 0)) {
            (Some(_), true) => partitions.len(),
            _ => 0,
        };
        let n = partitions.len() + usize::from(delta_part == partitions.len());
        let eq = match ordering {
            Some(o) => EquivalenceProperties::new_with_orderings(schema.clone(), [o]),
            None => EquivalenceProperties::new(schema.clone()),
        };
        let cache = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        LightningScanExec {
            table,
            schema,
            projection,
            parts: parts.into_iter().map(Arc::new).collect(),
            partitions,
            delta,
            delta_part,
            pruning,
            watermark,
            snapshot_ts: snapshot.ts(),
            _snapshot: snapshot,
            cache: Arc::new(cache),
        }
    }

    /// Segments read / segments published.
    pub fn segments_scanned(&self) -> (usize, usize) {
        (self.parts.len(), self.pruning.segments_total)
    }

    /// Record batches read / record batches in the published segments.
    pub fn batches_scanned(&self) -> (usize, usize) {
        let n = self.partitions.iter().map(Vec::len).sum();
        (n, self.pruning.batches_total)
    }

    /// Statistics of the rows `units` (and the fresh rows when `delta`) yield: exact row
    /// counts, column bounds from the zone maps of the batches read.
    fn stats<'a>(&self, units: impl Iterator<Item = &'a Unit>, delta: bool) -> Statistics {
        let fields: Vec<(usize, &DataType)> = match &self.projection {
            Some(p) => p
                .iter()
                .zip(self.schema.fields())
                .map(|(&i, f)| (i, f.data_type()))
                .collect(),
            None => self
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (i, f.data_type()))
                .collect(),
        };
        #[derive(Clone)]
        enum Bound {
            Empty,
            Val(ScalarValue),
            Unknown,
        }
        let fold_bound = |b: &mut Bound, v: Option<ScalarValue>, keep: std::cmp::Ordering| {
            *b = match (std::mem::replace(b, Bound::Unknown), v) {
                (Bound::Empty, Some(v)) => Bound::Val(v),
                (Bound::Val(a), Some(v)) => match v.partial_cmp(&a) {
                    Some(o) if o == keep => Bound::Val(v),
                    Some(_) => Bound::Val(a),
                    None => Bound::Unknown,
                },
                _ => Bound::Unknown,
            };
        };
        let mut rows = 0usize;
        let mut lo = vec![Bound::Empty; fields.len()];
        let mut hi = vec![Bound::Empty; fields.len()];
        let mut nulls: Vec<Option<usize>> = vec![Some(0); fields.len()];
        let mut fold = |zones: Option<&[ZoneMap]>, n: usize| {
            if n == 0 {
                return;
            }
            for (c, &(i, dt)) in fields.iter().enumerate() {
                match zones.and_then(|z| z.get(i)) {
                    Some(z) => {
                        nulls[c] = nulls[c].map(|k| k + z.null_count as usize);
                        if (z.null_count as usize) < n {
                            fold_bound(&mut lo[c], scalar_of(dt, &z.min), std::cmp::Ordering::Less);
                            fold_bound(
                                &mut hi[c],
                                scalar_of(dt, &z.max),
                                std::cmp::Ordering::Greater,
                            );
                        }
                    }
                    None => {
                        nulls[c] = None;
                        lo[c] = Bound::Unknown;
                        hi[c] = Bound::Unknown;
                    }
                }
            }
        };
        // The zone maps describe exactly the rows read when no row of a batch read is
        // masked and no fresh row is added.
        let mut exact = true;
        for u in units {
            let part = &self.parts[u.part];
            let seg = &part.segment.segment;
            rows += u.live;
            exact &= u.live == seg.batch_range(u.batch).len();
            fold(Some(seg.batch_zone_maps(u.batch)), u.live);
        }
        if delta {
            let n: usize = self.delta.iter().map(|b| b.num_rows()).sum();
            rows += n;
            exact &= n == 0;
            // Fresh rows have no zone maps: bounds are unknown once there are any.
            fold(None, n);
        }
        let column_statistics = (0..fields.len())
            .map(|c| {
                // Float zone maps leave NaN out, which SQL's min/max would see: never
                // exact.
                let exact = exact && !fields[c].1.is_floating();
                let bound = |b: &Bound| match b {
                    Bound::Val(v) if exact => Precision::Exact(v.clone()),
                    Bound::Val(v) => Precision::Inexact(v.clone()),
                    _ => Precision::Absent,
                };
                ColumnStatistics {
                    null_count: match nulls[c] {
                        Some(n) if exact => Precision::Exact(n),
                        Some(n) => Precision::Inexact(n),
                        None => Precision::Absent,
                    },
                    min_value: bound(&lo[c]),
                    max_value: bound(&hi[c]),
                    ..ColumnStatistics::new_unknown()
                }
            })
            .collect();
        Statistics {
            num_rows: Precision::Exact(rows),
            total_byte_size: Precision::Absent,
            column_statistics,
        }
    }
}

/// A zone-map value as a scalar of the column's type.
fn scalar_of(dt: &DataType, v: &serde_json::Value) -> Option<ScalarValue> {
    let i = || v.as_i64();
    let u = || v.as_u64();
    Some(match dt {
        DataType::Int8 => ScalarValue::Int8(Some(i()?.try_into().ok()?)),
        DataType::Int16 => ScalarValue::Int16(Some(i()?.try_into().ok()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i()?.try_into().ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(i()?)),
        DataType::UInt8 => ScalarValue::UInt8(Some(u()?.try_into().ok()?)),
        DataType::UInt16 => ScalarValue::UInt16(Some(u()?.try_into().ok()?)),
        DataType::UInt32 => ScalarValue::UInt32(Some(u()?.try_into().ok()?)),
        DataType::UInt64 => ScalarValue::UInt64(Some(u()?)),
        DataType::Float32 => ScalarValue::Float32(Some(v.as_f64()? as f32)),
        DataType::Float64 => ScalarValue::Float64(Some(v.as_f64()?)),
        DataType::Date32 => ScalarValue::Date32(Some(i()?.try_into().ok()?)),
        DataType::Decimal128(p, s) => {
            ScalarValue::Decimal128(Some(v.as_str()?.parse().ok()?), *p, *s)
        }
        DataType::Timestamp(unit, tz) => {
            let x = Some(i()?);
            match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(x, tz.clone()),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(x, tz.clone()),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(x, tz.clone()),
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(x, tz.clone()),
            }
        }
        DataType::Utf8 => ScalarValue::Utf8(Some(v.as_str()?.to_string())),
        DataType::Utf8View => ScalarValue::Utf8View(Some(v.as_str()?.to_string())),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(v.as_str()?.to_string())),
        DataType::Boolean => ScalarValue::Boolean(Some(v.as_bool()?)),
        _ => return None,
    })
}

impl DisplayAs for LightningScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let delta: usize = self.delta.iter().map(|b| b.num_rows()).sum();
        let (b, bt) = self.batches_scanned();
        write!(
            f,
            "LightningScanExec: table={}, segments scanned={}/{} total, batches scanned={b}/{bt}, fresh rows={}, watermark={}, snapshot={}",
            self.table,
            self.parts.len(),
            self.pruning.segments_total,
            delta,
            self.watermark,
            self.snapshot_ts
        )
    }
}

fn ext(e: lightning_columnar::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Yields one partition's batches: the fresh rows (if it is their partition), then every unit's
/// segment batch, decoded when asked for, masked and cut to the session's batch size.
struct PartitionIter {
    schema: SchemaRef,
    parts: Vec<Arc<SegmentPart>>,
    projection: Option<Vec<usize>>,
    units: VecDeque<Unit>,
    reader: Option<(usize, SegmentReader)>,
    ready: VecDeque<RecordBatch>,
    batch_size: usize,
}

impl PartitionIter {
    fn next_unit(&mut self, u: Unit) -> Result<()> {
        let p = &self.parts[u.part];
        if self.reader.as_ref().is_none_or(|(i, _)| *i != u.part) {
            let r = p
                .segment
                .segment
                .reader_as(self.projection.as_deref(), self.schema.clone())
                .map_err(ext)?;
            self.reader = Some((u.part, r));
        }
        let (_, r) = self.reader.as_ref().expect("reader set above");
        let b = r.read_batch(u.batch).map_err(ext)?;
        let range = r.segment().batch_range(u.batch);
        // The planner counted the live rows: fewer than the batch's means a mask.
        let b = if u.live == range.len() {
            b
        } else {
            // All kept, then the masked rows of this batch cleared: one pass over the
            // bitmap's range, not a lookup per row.
            let mut keep = BooleanBufferBuilder::new(range.len());
            keep.append_n(range.len(), true);
            for row in p.mask.range(range.start as u32..range.end as u32) {
                keep.set_bit(row as usize - range.start, false);
            }
            let keep = BooleanArray::new(keep.finish(), None);
            arrow::compute::filter_record_batch(&b, &keep)?
        };
        let mut off = 0;
        while off < b.num_rows() {
            let n = (b.num_rows() - off).min(self.batch_size);
            self.ready.push_back(b.slice(off, n));
            off += n;
        }
        Ok(())
    }
}

impl Iterator for PartitionIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Some(Ok(b));
            }
            let u = self.units.pop_front()?;
            if let Err(e) = self.next_unit(u) {
                self.units.clear();
                return Some(Err(e));
            }
        }
    }
}

impl ExecutionPlan for LightningScanExec {
    fn name(&self) -> &'static str {
        "LightningScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(match args.partition() {
            None => self.stats(self.partitions.iter().flatten(), true),
            Some(p) if p == self.delta_part && p == self.partitions.len() => {
                self.stats([].iter(), true)
            }
            Some(p) => match self.partitions.get(p) {
                Some(units) => self.stats(units.iter(), p == self.delta_part),
                None => {
                    return Err(DataFusionError::Internal(format!("no partition {p}")));
                }
            },
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let units: &[Unit] = match self.partitions.get(partition) {
            Some(u) => u,
            None if partition == self.delta_part => &[],
            None => {
                return Err(DataFusionError::Internal(format!(
                    "no partition {partition}"
                )));
            }
        };
        let ready = if partition == self.delta_part {
            self.delta.iter().cloned().collect()
        } else {
            VecDeque::new()
        };
        let it = PartitionIter {
            schema: self.schema.clone(),
            parts: self.parts.clone(),
            projection: self.projection.clone(),
            units: units.iter().copied().collect(),
            reader: None,
            ready,
            batch_size: context.session_config().batch_size().max(1),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(it),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_order_and_balances_rows() {
        let u = |part, batch, live| Unit { part, batch, live };
        let units = vec![
            u(0, 0, 10),
            u(0, 1, 10),
            u(1, 0, 10),
            u(1, 1, 10),
            u(2, 0, 5),
        ];
        let g = spread(units.clone(), 2);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].len() + g[1].len(), 5);
        assert_eq!((g[0][0].part, g[0][0].batch), (0, 0));
        assert_eq!(spread(units.clone(), 1).len(), 1);
        assert_eq!(spread(units, 16).len(), 5);
        // No units still gives one partition (for the fresh rows).
        assert_eq!(spread(Vec::new(), 4).len(), 1);
    }

    #[test]
    fn zone_values_become_scalars_of_the_column_type() {
        use serde_json::json;
        assert_eq!(
            scalar_of(&DataType::Int32, &json!(7)),
            Some(ScalarValue::Int32(Some(7)))
        );
        assert_eq!(scalar_of(&DataType::Int8, &json!(700)), None);
        assert_eq!(
            scalar_of(&DataType::Decimal128(15, 2), &json!("-1250")),
            Some(ScalarValue::Decimal128(Some(-1250), 15, 2))
        );
        assert_eq!(
            scalar_of(&DataType::Utf8, &json!("x")),
            Some(ScalarValue::Utf8(Some("x".into())))
        );
        assert_eq!(scalar_of(&DataType::Utf8, &json!(null)), None);
        assert_eq!(scalar_of(&DataType::Binary, &json!("00")), None);
    }
}
