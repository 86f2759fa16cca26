//! How a Lightning scan becomes tasks a Ballista scheduler can split.
//!
//! Ballista gives each task of a stage a slice of the stage's partitions and, before
//! shipping the plan, cuts every leaf down to that slice. It knows how to cut file and
//! in-memory scans, and leaves any other scan whole, so every task of the stage would
//! read the whole table. [`ClusterScanExec`] therefore keeps the Lightning scan inside
//! itself and has one child Ballista can cut: an in-memory source of one tiny *marker*
//! batch per scan partition (a single `UInt32` naming the partition). After the cut, a
//! task's `ClusterScanExec` has only its slice of markers; running its output partition
//! `j` reads marker `j` to learn which scan partition to read, and reads only that one.

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, Statistics};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

const MARKER: &str = "lightning_scan_partition";

fn marker_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        MARKER,
        DataType::UInt32,
        false,
    )]))
}

/// An in-memory source with one marker batch per scan partition.
pub(crate) fn markers(n: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = marker_schema();
    let parts = (0..n as u32)
        .map(|k| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt32Array::from(vec![k]))])
                .map(|b| vec![b])
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let src = MemorySourceConfig::try_new(&parts, schema, None)?;
    Ok(DataSourceExec::from_data_source(src))
}

/// A Lightning scan on a cluster (see the module docs).
#[derive(Debug)]
pub struct ClusterScanExec {
    /// The whole scan (a `DataSourceExec` over a `LightningScan`).
    pub(crate) scan: Arc<dyn ExecutionPlan>,
    /// One marker per partition this node outputs.
    markers: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
    /// Names the executor in the log line of each partition it runs.
    label: Option<String>,
}

impl ClusterScanExec {
    pub(crate) fn new(
        scan: Arc<dyn ExecutionPlan>,
        markers: Arc<dyn ExecutionPlan>,
        label: Option<String>,
    ) -> Self {
        let n = markers.output_partitioning().partition_count();
        let props = PlanProperties::new(
            scan.equivalence_properties().clone(),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ClusterScanExec {
            scan,
            markers,
            props: Arc::new(props),
            label,
        }
    }

    /// Wrap a whole scan, one marker per scan partition.
    pub(crate) fn over(scan: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let n = scan.output_partitioning().partition_count();
        Ok(Self::new(scan, markers(n)?, None))
    }
}

impl DisplayAs for ClusterScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "ClusterScanExec: partitions={}/{}, ",
            self.props.output_partitioning().partition_count(),
            self.scan.output_partitioning().partition_count()
        )?;
        self.scan.fmt_as(t, f)
    }
}

impl ExecutionPlan for ClusterScanExec {
    fn name(&self) -> &str {
        "ClusterScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.markers]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [markers] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ClusterScanExec has one child".into()))?;
        Ok(Arc::new(Self::new(
            self.scan.clone(),
            markers,
            self.label.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut markers = self.markers.execute(partition, context.clone())?;
        let scan = self.scan.clone();
        let label = self.label.clone();
        let schema = self.scan.schema();
        // Every scan partition whose marker arrives here is read (normally exactly
        // one; any redistribution of the markers still reads each partition once).
        let stream = futures::stream::once(async move {
            let mut which = Vec::new();
            while let Some(b) = markers.next().await {
                let b = b?;
                let k = b.column(0).as_primitive::<UInt32Type>();
                which.extend(k.values().iter().map(|&k| k as usize));
            }
            let n = scan.output_partitioning().partition_count();
            let mut streams = Vec::with_capacity(which.len());
            for k in which {
                if k >= n {
                    return Err(DataFusionError::Internal(format!(
                        "scan partition marker {k} of a scan with {n} partitions"
                    )));
                }
                if let Some(l) = &label {
                    eprintln!(
                        "scan task: executor={l} {} partition={k}/{n} task={} pid={}",
                        scan_label(&scan),
                        context.task_id().unwrap_or_default(),
                        std::process::id()
                    );
                }
                streams.push(scan.execute(k, context.clone())?);
            }
            Ok(futures::stream::iter(streams).flatten())
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    /// The markers are a handful of tiny batches: spreading them over more partitions
    /// gains nothing.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.scan.metrics()
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        // The whole scan's statistics (for join planning); a partition's are unknown
        // here (which scan partition it reads is known only when it runs).
        match args.partition() {
            #[allow(deprecated)]
            None => self.scan.partition_statistics(None),
            Some(_) => Ok(Arc::new(Statistics::new_unknown(&self.scan.schema()))),
        }
    }
}

/// `table=<name>` of the scan, for log lines.
fn scan_label(scan: &Arc<dyn ExecutionPlan>) -> String {
    scan.downcast_ref::<DataSourceExec>()
        .and_then(|d| {
            d.data_source()
                .downcast_ref::<lightning_query::LightningScan>()
                .map(|s| format!("table={}", s.table()))
        })
        .unwrap_or_else(|| "scan".into())
}
