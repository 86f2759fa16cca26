//! The scan: a DataFusion [`DataSource`] (run by `DataSourceExec`) over the column
//! segments' record batches that survive zone-map pruning, spread over the session's
//! target partitions and decoded lazily one batch at a time (projected, with deleted and
//! superseded rows masked), plus the fresh rows from the row store.
//!
//! Being a `DataSource`, the scan receives the filters DataFusion pushes down while it
//! optimizes the plan, among them the dynamic filters of hash joins (the build side's
//! key bounds) and of TopK (the current k-th value). Each partition re-prunes its
//! remaining batches by their zone maps whenever such a filter changes, so a join probe
//! skips the batches whose keys cannot match.
//!
//! When no order is declared, the partitions of one execution share their batches: each
//! takes the next one from a common queue (DataFusion's sibling state) instead of
//! reading a fixed share. A partition whose thread is held up (preempted by writers, a
//! slow decode) then takes fewer batches and the others more, so the query waits for
//! one batch, not for the slowest share.

use crate::fresh::SegmentMask;
use crate::partition::PartitionIter;
use crate::runtime_filter::RuntimeFilter;
use crate::select::Selection;
use crate::zones::scalar_of;
use arrow::array::{ArrayRef, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Result, Statistics};
use datafusion::datasource::source::DataSource;
use datafusion::datasource::source::OpenArgs;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayFormatType, Partitioning, SendableRecordBatchStream, SortOrderPushdownResult,
};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use lightning_columnar::segment::ZoneMap;
use lightning_columnar::store::LoadedSegment;
use lightning_rowstore::Snapshot;
use parking_lot::Mutex;
use stats::DeltaBounds;
use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

/// One segment to read: its rows minus `mask`.
pub(crate) struct SegmentPart {
    pub segment: Arc<LoadedSegment>,
    pub mask: Arc<SegmentMask>,
}

/// One record batch of a segment to read (after pruning).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    pub part: usize,
    pub batch: usize,
    /// Rows it yields (batch rows minus masked ones).
    pub live: usize,
    /// Its zone maps prove the scan's own filters true for every row: it yields `live`
    /// rows, none dropped by them, and they need not be evaluated.
    pub passes: bool,
}

/// What the planner pruned, for `EXPLAIN`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pruning {
    pub segments_total: usize,
    pub batches_total: usize,
}

/// Scans one Lightning table at one snapshot; runs inside DataFusion's `DataSourceExec`.
#[derive(Clone)]
pub struct LightningScan {
    pub(crate) table: String,
    pub(crate) schema: SchemaRef,
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) parts: Vec<Arc<SegmentPart>>,
    /// Units of each output partition, in key order within a partition.
    pub(crate) partitions: Vec<Vec<Unit>>,
    pub(crate) delta: Vec<RecordBatch>,
    /// Per output column, the bounds of `delta` (see [`delta_bounds`]), worked out once
    /// per `delta` when the planner first asks for statistics.
    pub(crate) delta_bounds: Arc<OnceLock<Vec<DeltaBounds>>>,
    /// The partition that emits the fresh rows (first); `partitions.len()` when they
    /// have a partition of their own.
    pub(crate) delta_part: usize,
    pub(crate) pruning: Pruning,
    pub(crate) watermark: u64,
    // Keeps the row-store versions this scan reads alive until the plan is dropped.
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) eq: EquivalenceProperties,
    /// The primary-key columns as sort expressions, when the segments read are
    /// disjoint (each partition's batches then follow the key).
    pub(crate) key_exprs: Option<Vec<PhysicalSortExpr>>,
    /// Filters pushed down by DataFusion (static, or dynamic ones from joins and TopK):
    /// used to skip batches by their zone maps at run time, never trusted to filter.
    pub(crate) filters: Vec<Arc<dyn PhysicalExpr>>,
    /// The hash joins' dynamic filters among `filters`: each partition waits for them
    /// to be complete before it reads (see [`crate::WaitForJoinFilters`]).
    pub(crate) join_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// The pushed-down filters the scan applies itself (reported applied).
    pub(crate) selection: Selection,
    /// Those of them not yet applied to `delta` (could not be evaluated while planning:
    /// a scalar subquery's value is known only once it ran).
    pub(crate) delta_pending: Selection,
    /// Most rows each partition emits.
    pub(crate) fetch: Option<usize>,
    /// Nothing above reads a column (`count(*)`, with or without a filter the scan
    /// applies): batches carry only their row counts, and no column is decoded for them.
    pub(crate) count_only: bool,
    /// The partitions read from the highest keys down (for a descending TopK).
    pub(crate) reversed: bool,
    /// Per entry of `filters`: whether the scan applies it itself (it is in `selection`).
    pub(crate) applied: Vec<bool>,
    /// Rebuilt from a task in another process: partitions never share batches.
    pub(crate) isolated: bool,
    /// See [`LightningScan::source`].
    pub(crate) source: Option<Arc<str>>,
    pub(crate) metrics: ExecutionPlanMetricsSet,
}

/// The batches a partition has still to read: its own, or those not yet taken by any
/// partition of one execution (see the module docs), in the order they are handed out.
pub struct SharedUnits(pub(crate) Mutex<Pending>);

impl std::fmt::Debug for SharedUnits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedUnits({} left)", self.0.lock().units.len())
    }
}

pub(crate) struct Pending {
    pub units: VecDeque<Unit>,
    /// Snapshot generation of the filters `units` were last pruned with.
    pub pruned_at: Option<u64>,
}

impl SharedUnits {
    pub(crate) fn new(units: impl IntoIterator<Item = Unit>) -> Arc<SharedUnits> {
        Arc::new(SharedUnits(Mutex::new(Pending {
            units: units.into_iter().collect(),
            pruned_at: None,
        })))
    }
}

impl std::fmt::Debug for LightningScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LightningScan({})", self.table)
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

impl LightningScan {
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
        key_exprs: Option<Vec<PhysicalSortExpr>>,
    ) -> Self {
        let partitions = spread(units, target_partitions);
        // Declared only for one partition of segment batches: with several, DataFusion
        // keeps the order through hash repartitions by merging (`preserve_order`), which
        // measured 2.1x slower on TPC-H q3 and 1.3x on q18 than repartitioning freely
        // and sorting where needed.
        let declared = key_exprs.clone().filter(|_| partitions.len() == 1);
        // Fresh rows come in key order but interleave with the segments' keys: when the
        // output is declared ordered they get a partition of their own.
        let delta_part = match (&declared, delta.iter().any(|b| b.num_rows() > 0)) {
            (Some(_), true) => partitions.len(),
            _ => 0,
        };
        let eq = match declared {
            Some(o) => EquivalenceProperties::new_with_orderings(schema.clone(), [o]),
            None => EquivalenceProperties::new(schema.clone()),
        };
        LightningScan {
            table,
            schema,
            projection,
            parts: parts.into_iter().map(Arc::new).collect(),
            partitions,
            delta,
            delta_bounds: Default::default(),
            delta_part,
            pruning,
            watermark,
            snapshot,
            eq,
            key_exprs,
            filters: Vec::new(),
            join_filters: Vec::new(),
            selection: Selection::default(),
            delta_pending: Selection::default(),
            fetch: None,
            count_only: false,
            reversed: false,
            applied: Vec::new(),
            isolated: false,
            source: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The table this scan reads.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table columns this scan reads (the schema its pushed filters refer to).
    pub fn table_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Where another process opens the database this scan reads (set by
    /// [`crate::LightningTableProvider::with_source`]; `None` for a local scan).
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The filters pushed down into this scan (static, or dynamic ones of joins and TopK).
    pub(crate) fn pushed_filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.filters
    }

    /// This scan, its partitions waiting for `filters` (hash joins' dynamic filters
    /// among its own) to be complete before they read.
    pub(crate) fn waiting_for(&self, filters: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        let mut s = self.clone();
        s.join_filters = filters;
        s
    }

    /// Ready once every hash-join filter this scan waits for is complete (at once when
    /// there is none).
    pub(crate) fn join_filters_ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let filters = self.join_filters.clone();
        async move {
            for f in filters {
                if let Some(d) = f.downcast_ref::<DynamicFilterPhysicalExpr>() {
                    d.wait_complete().await;
                }
            }
        }
    }

    /// Whether the partitions of an execution may share their batches: there are
    /// several and no fetch limit (whose row counts assume fixed shares). A declared
    /// order holds either way: the shared batches are handed out in key order, so
    /// each partition's still follow the key (the fresh rows, which do not, have a
    /// partition of their own then).
    fn shares(&self) -> bool {
        self.partitions.len() > 1 && self.fetch.is_none()
    }

    /// This scan declaring the key order its partitions already yield their rows in
    /// (segments are disjoint and read in key order), the fresh rows moved to a
    /// partition of their own: for an aggregation grouped by a key prefix to run on
    /// sorted input. `None` when there is no key order to declare or one is declared.
    pub(crate) fn ordered_by_key(&self) -> Option<Self> {
        let key = self.key_exprs.clone()?;
        if self.count_only
            || self.reversed
            || self.fetch.is_some()
            || self.eq.output_ordering().is_some()
        {
            return None;
        }
        let mut s = self.clone();
        if self.delta.iter().any(|b| b.num_rows() > 0) {
            s.delta_part = s.partitions.len();
        }
        s.eq = EquivalenceProperties::new_with_orderings(self.schema.clone(), [key]);
        Some(s)
    }

    /// The state the partitions of one execution share, when they do (`None`: each
    /// reads its own share). `enable_file_stream_work_stealing` off (executors that run
    /// each partition as an isolated task) keeps the fixed shares.
    pub(crate) fn sibling_state(&self, config: &ConfigOptions) -> Option<Arc<SharedUnits>> {
        if !self.shares() || self.isolated || !config.execution.enable_file_stream_work_stealing {
            return None;
        }
        // The partitions' shares are contiguous key ranges in the scan's direction.
        Some(SharedUnits::new(self.partitions.iter().flatten().copied()))
    }

    /// Rows partition `p` yields before any fetch limit.
    fn partition_rows(&self, p: usize) -> usize {
        let segment_rows: usize = self
            .partitions
            .get(p)
            .map_or(0, |u| u.iter().map(|u| u.live).sum());
        let fresh = if p == self.delta_part {
            self.delta.iter().map(|b| b.num_rows()).sum()
        } else {
            0
        };
        segment_rows + fresh
    }

    /// Whether every partition yields its rows in primary-key order: the segments are
    /// disjoint and the fresh rows, if any, have a partition of their own.
    fn sorted_by_key(&self) -> bool {
        self.key_exprs.is_some()
            && !self.reversed
            && (self.delta_part == self.partitions.len()
                || self.delta.iter().all(|b| b.num_rows() == 0))
    }

    fn num_partitions(&self) -> usize {
        self.partitions.len() + usize::from(self.delta_part == self.partitions.len())
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
}

pub(crate) fn ext(e: lightning_columnar::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl LightningScan {
    /// Whether every segment the scan reads stores output column `col` as a dictionary.
    pub(crate) fn dictionary_column(&self, col: usize) -> bool {
        let c = match &self.projection {
            Some(p) => p.get(col).copied(),
            None => Some(col),
        };
        let Some(c) = c else {
            return false;
        };
        !self.parts.is_empty()
            && self.parts.iter().all(|p| {
                matches!(
                    p.segment.segment.stored_type(c),
                    Some(DataType::Dictionary(_, _))
                )
            })
    }

    /// Partition `partition`'s batches, for an aggregation: as `open` yields them except
    /// that the output columns `coded` (each below 64) of a segment batch stay
    /// dictionaries where stored as such (that batch's schema says so; fresh rows come
    /// decoded), and that a segment batch most of whose rows are kept (live and
    /// selected) may come whole with the kept rows as a mask, for the aggregation to
    /// set the others aside rather than have the batch copied without them. `shared`: the
    /// execution's sibling state ([`Self::sibling_state`]).
    pub(crate) fn open_coded(
        &self,
        partition: usize,
        coded: &[usize],
        shared: Option<Arc<SharedUnits>>,
    ) -> Result<impl Iterator<Item = Result<(RecordBatch, Option<BooleanBuffer>)>> + Send + use<>>
    {
        let coded = coded.iter().filter(|&&c| c < 64).fold(0, |m, c| m | 1 << c);
        let mut it = self.partition_iter(partition, coded, shared)?;
        it.masked = self.fetch.is_none() && !self.count_only;
        Ok(std::iter::from_fn(move || match it.masked {
            // A fetch limit: as `open` does.
            false => it.next().map(|b| b.map(|b| (b, None))),
            true => it.next_masked(),
        }))
    }

    fn partition_iter(
        &self,
        partition: usize,
        coded: u64,
        shared: Option<Arc<SharedUnits>>,
    ) -> Result<PartitionIter> {
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
            self.delta
                .iter()
                .map(|b| {
                    let b = self.delta_pending.filter(b)?;
                    Ok(match self.count_only {
                        true => (crate::select::rows_only(b.num_rows()), None),
                        false => (b, None),
                    })
                })
                .collect::<Result<_>>()?
        } else {
            VecDeque::new()
        };
        let it = PartitionIter {
            schema: self.schema.clone(),
            parts: self.parts.clone(),
            projection: self.projection.clone(),
            // The fresh rows' own partition reads no segment batch, shared or not.
            units: match shared {
                Some(s) if partition < self.partitions.len() => s,
                _ => SharedUnits::new(units.iter().copied()),
            },
            reader: None,
            ready,
            filters: self.filters.clone(),
            selection: self.selection.clone(),
            coded,
            left: self.fetch,
            count_only: self.count_only,
            masked: false,
            runtime: RuntimeFilter::new(
                &self.filters,
                MetricBuilder::new(&self.metrics).counter("rows_filtered_at_run_time", partition),
            ),
            batches_pruned: MetricBuilder::new(&self.metrics)
                .counter("batches_pruned_at_run_time", partition),
            errors: MetricBuilder::new(&self.metrics)
                .counter("pruning_predicate_errors", partition),
        };
        Ok(it)
    }
}

impl DataSource for LightningScan {
    fn open(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.open_with_args(OpenArgs::new(partition, context))
    }

    fn create_sibling_state(&self, config: &ConfigOptions) -> Option<Arc<dyn Any + Send + Sync>> {
        self.sibling_state(config)
            .map(|s| s as Arc<dyn Any + Send + Sync>)
    }

    fn open_with_args(&self, args: OpenArgs) -> Result<SendableRecordBatchStream> {
        let shared = args
            .sibling_state
            .and_then(|s| s.downcast::<SharedUnits>().ok());
        let it = self.partition_iter(args.partition, 0, shared)?;
        let ready = self.join_filters_ready();
        let stream = futures::stream::once(async move {
            ready.await;
            futures::stream::iter(it)
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.eq.schema().clone(),
            stream,
        )))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let delta: usize = self.delta.iter().map(|b| b.num_rows()).sum();
        let (b, bt) = self.batches_scanned();
        write!(
            f,
            "LightningScan: table={}, segments scanned={}/{} total, batches scanned={b}/{bt}, fresh rows={}, watermark={}, snapshot={}",
            self.table,
            self.parts.len(),
            self.pruning.segments_total,
            delta,
            self.watermark,
            self.snapshot.ts()
        )?;
        if let Some(n) = self.fetch {
            write!(f, ", fetch={n}")?;
        }
        if self.count_only {
            write!(f, ", rows counted only")?;
        }
        match self.join_filters.len() {
            0 => {}
            1 => write!(f, ", waits for 1 join filter")?,
            n => write!(f, ", waits for {n} join filters")?,
        }
        if !self.filters.is_empty() && !matches!(t, DisplayFormatType::TreeRender) {
            let shown: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", pruning filters=[{}]", shown.join(", "))?;
        }
        Ok(())
    }

    fn output_partitioning(&self) -> Partitioning {
        Partitioning::UnknownPartitioning(self.num_partitions())
    }

    fn eq_properties(&self) -> EquivalenceProperties {
        self.eq.clone()
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let stats = self.statistics(partition)?;
        if !self.count_only {
            return Ok(stats);
        }
        let mut rows = Arc::unwrap_or_clone(stats);
        rows.column_statistics.clear();
        rows.total_byte_size = Precision::Absent;
        Ok(Arc::new(rows))
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn DataSource>> {
        let mut s = self.clone();
        s.fetch = limit;
        Some(Arc::new(s))
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn metrics(&self) -> ExecutionPlanMetricsSet {
        self.metrics.clone()
    }

    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn DataSource>>> {
        // Column projections are pushed into the scan through the provider already.
        // One that keeps no column leaves the scan counting rows.
        if projection.iter().next().is_some() || self.count_only {
            return Ok(None);
        }
        let mut s = self.clone();
        s.count_only = true;
        s.eq = EquivalenceProperties::new(Arc::new(Schema::empty()));
        Ok(Some(Arc::new(s)))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in &self.filters {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn DataSource>>> {
        // Whether `order` is a prefix of the key columns, all ascending or all descending
        // (key columns hold no NULLs, so where NULLs would sort does not matter).
        let prefix_of = |key: &[PhysicalSortExpr], descending: bool| {
            !self.count_only
                && !order.is_empty()
                && order.len() <= key.len()
                && order.iter().zip(key).all(|(o, k)| {
                    o.options.descending == descending && o.expr.as_ref() == k.expr.as_ref()
                })
        };
        // Ascending, and every partition is in key order: declare it, DataFusion drops
        // its sort.
        if let Some(key) = &self.key_exprs
            && self.sorted_by_key()
            && prefix_of(key, false)
        {
            let mut s = self.clone();
            s.eq = EquivalenceProperties::new_with_orderings(self.schema.clone(), [key.clone()]);
            return Ok(SortOrderPushdownResult::Exact {
                inner: Arc::new(s) as Arc<dyn DataSource>,
            });
        }
        // Descending: each partition reads its batches from the highest keys down. The
        // sort stays, but a TopK above fills with its winners first and its dynamic
        // filter then prunes the remaining batches. Only when no order is declared,
        // since the reversed batches no longer follow it.
        if let Some(key) = &self.key_exprs
            && prefix_of(key, true)
            && self.eq.output_ordering().is_none()
        {
            let mut s = self.clone();
            s.reversed = true;
            // Whole partitions too, so that the batches in partition order (as shared
            // between partitions) run from the highest keys down.
            s.partitions.reverse();
            s.partitions.iter_mut().for_each(|p| p.reverse());
            return Ok(SortOrderPushdownResult::Inexact {
                inner: Arc::new(s) as Arc<dyn DataSource>,
            });
        }
        Ok(SortOrderPushdownResult::Unsupported)
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn DataSource>>> {
        // Every filter is kept for pruning. The deterministic, static ones the scan also
        // applies itself (see `select`) and reports applied; the others (dynamic filters
        // of joins and TopK, volatile ones) the operator above still evaluates. Never
        // below a fetch limit, which counts rows before any filter.
        // A count-only scan has no column a filter could read.
        if filters.is_empty() || self.count_only {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                vec![PushedDown::No; filters.len()],
            ));
        }
        let mut s = self.clone();
        let mut applied = Vec::with_capacity(filters.len());
        let mut new = Selection::default();
        for f in &filters {
            if self.fetch.is_none() && Selection::can_apply(f) {
                new.add(f, &self.schema)?;
                applied.push(PushedDown::Yes);
            } else {
                applied.push(PushedDown::No);
            }
        }
        s.selection.and(&new);
        // The fresh rows are few and in memory: filtered now, so that their count is
        // known exactly to the planner; when a filter cannot be evaluated yet (or one
        // before it could not), when the partition is opened.
        if !new.is_empty() && s.delta.iter().any(|b| b.num_rows() > 0) {
            let filtered = match s.delta_pending.is_empty() {
                true => s.delta.iter().map(|b| new.filter(b)).collect(),
                false => Err(DataFusionError::Internal("filters pending".into())),
            };
            match filtered {
                Ok(d) => {
                    s.delta = d;
                    s.delta_bounds = Default::default();
                }
                Err(_) => s.delta_pending.and(&new),
            }
        }
        s.filters.extend(filters);
        s.applied
            .extend(applied.iter().map(|a| matches!(a, PushedDown::Yes)));
        for u in s.partitions.iter_mut().flatten() {
            let seg = &s.parts[u.part].segment.segment;
            u.passes = s.selection.proven(
                seg.batch_zone_maps(u.batch),
                s.projection.as_deref(),
                &s.schema,
            );
        }
        Ok(
            FilterPushdownPropagation::with_parent_pushdown_result(applied)
                .with_updated_node(Arc::new(s) as Arc<dyn DataSource>),
        )
    }
}

#[path = "scan_stats.rs"]
mod stats;

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
