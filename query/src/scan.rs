//! The scan plan: one partition per column segment (read lazily, projected, with deleted
//! and superseded rows masked) and one for the fresh rows from the row store.

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use lightning_columnar::store::LoadedSegment;
use lightning_rowstore::Snapshot;
use roaring::RoaringBitmap;
use std::sync::Arc;

/// One segment to read: its rows minus `mask`.
pub(crate) struct SegmentPart {
    pub segment: Arc<LoadedSegment>,
    pub mask: RoaringBitmap,
}

/// Scans one Lightning table at one snapshot.
pub struct LightningScanExec {
    table: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    parts: Vec<Arc<SegmentPart>>,
    delta: Vec<RecordBatch>,
    segments_total: usize,
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

impl LightningScanExec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        table: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        parts: Vec<SegmentPart>,
        delta: Vec<RecordBatch>,
        segments_total: usize,
        watermark: u64,
        snapshot: Arc<Snapshot>,
    ) -> Self {
        let n = parts.len() + 1;
        let cache = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        LightningScanExec {
            table,
            schema,
            projection,
            parts: parts.into_iter().map(Arc::new).collect(),
            delta,
            segments_total,
            watermark,
            snapshot_ts: snapshot.ts(),
            _snapshot: snapshot,
            cache: Arc::new(cache),
        }
    }

    /// Segments read / segments published.
    pub fn segments_scanned(&self) -> (usize, usize) {
        (self.parts.len(), self.segments_total)
    }
}

impl DisplayAs for LightningScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let delta: usize = self.delta.iter().map(|b| b.num_rows()).sum();
        write!(
            f,
            "LightningScanExec: table={}, segments scanned={}/{} total, fresh rows={}, watermark={}, snapshot={}",
            self.table,
            self.parts.len(),
            self.segments_total,
            delta,
            self.watermark,
            self.snapshot_ts
        )
    }
}

fn ext(e: lightning_columnar::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
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

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = if partition < self.parts.len() {
            let p = self.parts[partition].clone();
            let b = p
                .segment
                .segment
                .read(self.projection.as_deref())
                .map_err(ext)?;
            let b = if p.mask.is_empty() {
                b
            } else {
                let keep = BooleanArray::from_iter(
                    (0..b.num_rows() as u32).map(|i| Some(!p.mask.contains(i))),
                );
                arrow::compute::filter_record_batch(&b, &keep)?
            };
            // Hand out bounded batches.
            let mut out = Vec::new();
            let mut off = 0;
            while off < b.num_rows() {
                let n = (b.num_rows() - off).min(8192);
                out.push(b.slice(off, n));
                off += n;
            }
            out
        } else if partition == self.parts.len() {
            self.delta.clone()
        } else {
            return Err(DataFusionError::Internal(format!(
                "no partition {partition}"
            )));
        };
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema.clone(),
            None,
        )?))
    }
}
