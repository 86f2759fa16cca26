//! Grouping by dictionary code: an aggregation grouped by columns that every segment the
//! scan reads stores as dictionaries is computed from the dictionary keys instead of the
//! decoded values.
//!
//! DataFusion's hash aggregation hashes every row's group value (for a string column,
//! every row's bytes) and compares it with the groups seen so far. A dictionary-encoded
//! segment batch already says which rows share a value: its few distinct values are
//! interned once per segment dictionary, and each row's group is then a table lookup by
//! its key. Grouped by several such columns, a row's keys combine into one index of a
//! table of the combinations met so far (each interned when first met), as long as the
//! dictionaries are small enough for that table; TPC-H q1 groups by two one-letter
//! flags. The accumulators are DataFusion's own `GroupsAccumulator`s, fed exactly the
//! group indices and argument arrays the hash aggregation would give them, so results
//! and partial-aggregate states are the same. Fresh rows (decoded, not dictionaries) are
//! interned row by row like DataFusion does.
//!
//! [`DictionaryAggregation`] is a physical optimizer rule that replaces a `Partial` or
//! `Single` `AggregateExec` reading straight from a [`LightningScan`] with a
//! [`DictionaryAggregateExec`] when that applies; the exec keeps the scan as its child
//! (for `EXPLAIN`) and reads it through [`LightningScan::open_coded`].

use crate::scan::{LightningScan, SharedUnits};
use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, PrimitiveArray, RecordBatch,
    downcast_integer_array, new_null_array,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{FilterBuilder, filter_record_batch};
use arrow::datatypes::{ArrowNativeType, DataType};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    InputOrderMode, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
    StatisticsArgs,
};
use std::sync::{Arc, OnceLock};

/// Replaces aggregations grouped by dictionary-stored columns of a Lightning scan with a
/// [`DictionaryAggregateExec`]. Runs after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct DictionaryAggregation;

impl PhysicalOptimizerRule for DictionaryAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            Ok(match rewrite(&node) {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "lightning_dictionary_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The replacement of `node`, when it is an aggregation the exec computes the same way.
fn rewrite(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let agg = node.downcast_ref::<AggregateExec>()?;
    let finish = match agg.mode() {
        AggregateMode::Partial => Finish::State,
        AggregateMode::Single => Finish::Evaluate,
        _ => return None,
    };
    let by = agg.group_expr();
    if !by.is_single() || by.expr().is_empty() || by.expr().len() > MAX_GROUP_COLUMNS {
        return None;
    }
    let group = by
        .expr()
        .iter()
        .map(|(e, _)| Some(e.downcast_ref::<Column>()?.index()))
        .collect::<Option<Vec<usize>>>()?;
    if (1..group.len()).any(|i| group[..i].contains(&group[i])) {
        return None;
    }
    if agg.limit_options().is_some()
        || *agg.input_order_mode() != InputOrderMode::Linear
        || agg.filter_expr().iter().any(Option::is_some)
    {
        return None;
    }
    // Arguments over a group column would see its dictionary, not its values.
    let plain = |a: &Arc<AggregateFunctionExpr>| {
        !a.is_distinct()
            && a.order_bys().is_empty()
            && a.groups_accumulator_supported()
            && a.expressions().iter().all(|e| {
                collect_columns(e)
                    .iter()
                    .all(|c| !group.contains(&c.index()))
            })
    };
    if !agg.aggr_expr().iter().all(plain) {
        return None;
    }
    let (scan, projection) = lightning_input(agg.input())?;
    // The scan columns grouped by: through a projection (DataFusion puts one below the
    // aggregation for subexpressions its arguments share, as in q1) only as columns
    // passed through, and none of its computed columns may read them.
    let coded = match projection {
        Some(p) => {
            let coded = group
                .iter()
                .map(|&g| Some(p.expr()[g].expr.downcast_ref::<Column>()?.index()))
                .collect::<Option<Vec<usize>>>()?;
            let reads_coded = p.expr().iter().enumerate().any(|(i, e)| {
                !group.contains(&i)
                    && collect_columns(&e.expr)
                        .iter()
                        .any(|c| coded.contains(&c.index()))
            });
            if reads_coded {
                return None;
            }
            coded
        }
        None => group.clone(),
    };
    if !coded.iter().all(|&c| c < 64 && scan.dictionary_column(c)) {
        return None;
    }
    Some(Arc::new(DictionaryAggregateExec {
        agg: Arc::new(agg.clone()),
        input: agg.input().clone(),
        group: group.into(),
        coded: coded.into(),
        finish,
        shared: Arc::new(OnceLock::new()),
        metrics: ExecutionPlanMetricsSet::new(),
    }))
}

/// What the aggregation emits per group.
#[derive(Debug, Clone, Copy)]
enum Finish {
    /// Accumulator states (a `Partial` aggregation, merged by a final one).
    State,
    /// Final values (a `Single` aggregation).
    Evaluate,
}

/// Group columns an aggregation may have to be grouped by dictionary key.
const MAX_GROUP_COLUMNS: usize = 4;

/// Combinations of several group columns' dictionary keys (NULL counting as one more
/// key each) a batch may have for its rows to be grouped through a table of them;
/// beyond, its columns are decoded and hashed as DataFusion does. (One column's table
/// is as long as its dictionary, whatever that is.)
const MAX_COMBINATIONS: usize = 1 << 16;

/// A `Partial` or `Single` aggregation grouped by columns `group` of a Lightning scan,
/// grouping dictionary-encoded batches by key (see the module docs). Same output schema,
/// partitioning and results as the `AggregateExec` it replaces.
#[derive(Debug)]
pub struct DictionaryAggregateExec {
    agg: Arc<AggregateExec>,
    /// The scan (a `DataSourceExec` over a [`LightningScan`]), or a projection of it.
    input: Arc<dyn ExecutionPlan>,
    /// The group columns, as the aggregation's input numbers them.
    group: Arc<[usize]>,
    /// The same columns as the scan numbers them (read as dictionary keys).
    coded: Arc<[usize]>,
    finish: Finish,
    /// The batches its partitions share in one execution (as `DataSourceExec` keeps
    /// for the scan it replaces); made by the first partition opened.
    shared: Arc<OnceLock<Option<Arc<SharedUnits>>>>,
    metrics: ExecutionPlanMetricsSet,
}

/// The Lightning scan `plan` is (a `DataSourceExec` over it, possibly wrapped in the
/// `CooperativeExec` DataFusion adds above a single-partition source).
fn lightning_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&LightningScan> {
    let plan = match plan.downcast_ref::<CooperativeExec>() {
        Some(c) => c.input(),
        None => plan,
    };
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<LightningScan>()
}

/// The Lightning scan `plan` is, or projects, and the projection if there is one.
fn lightning_input(
    plan: &Arc<dyn ExecutionPlan>,
) -> Option<(&LightningScan, Option<&ProjectionExec>)> {
    match plan.downcast_ref::<ProjectionExec>() {
        Some(p) => Some((lightning_scan(p.input())?, Some(p))),
        None => Some((lightning_scan(plan)?, None)),
    }
}

impl DictionaryAggregateExec {
    fn scan(&self) -> Result<(&LightningScan, Option<&ProjectionExec>)> {
        lightning_input(&self.input).ok_or_else(|| {
            DataFusionError::Internal("dictionary aggregation over a non-Lightning scan".into())
        })
    }
}

impl DisplayAs for DictionaryAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let by: Vec<&str> = self
            .agg
            .group_expr()
            .expr()
            .iter()
            .map(|(_, n)| n.as_str())
            .collect();
        let aggr: Vec<&str> = self.agg.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "DictionaryAggregateExec: mode={:?}, gby=[{}] by dictionary key, aggr=[{}]",
            self.agg.mode(),
            by.join(", "),
            aggr.join(", ")
        )
    }
}

impl ExecutionPlan for DictionaryAggregateExec {
    fn name(&self) -> &'static str {
        "DictionaryAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "DictionaryAggregateExec has one child".into(),
            ));
        }
        let input = children.swap_remove(0);
        let agg = self.agg.clone().replace_children(vec![input], options)?;
        // Still over a dictionary-stored column of a Lightning scan: keep grouping by
        // key; otherwise DataFusion's aggregation.
        Ok(rewrite(&agg).unwrap_or(agg))
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

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DictionaryAggregateExec {
            agg: self.agg.clone(),
            input: self.input.clone(),
            group: self.group.clone(),
            coded: self.coded.clone(),
            finish: self.finish,
            shared: Arc::new(OnceLock::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (scan, projection) = self.scan()?;
        let projection: Option<Vec<Arc<dyn PhysicalExpr>>> =
            projection.map(|p| p.expr().iter().map(|e| e.expr.clone()).collect());
        let shared = self
            .shared
            .get_or_init(|| scan.sibling_state(context.session_config().options()))
            .clone();
        let batches = scan.open_coded(partition, &self.coded, shared)?;
        let schema = self.agg.schema();
        let k = self.group.len();
        let group_fields: Vec<_> = schema.fields()[..k].to_vec();
        let aggr = self.agg.aggr_expr();
        let mut args: Vec<Vec<Argument>> = aggr
            .iter()
            .map(|a| a.expressions().into_iter().map(Argument::new).collect())
            .collect();
        let mut accs = aggr
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let mut groups = Grouper {
            values: new_group_values(
                Arc::new(arrow::datatypes::Schema::new(group_fields.clone())),
                &GroupOrdering::None,
            )?,
            types: group_fields.iter().map(|f| f.data_type().clone()).collect(),
            table: None,
            ids: Vec::new(),
            known: new_group_values(
                Arc::new(arrow::datatypes::Schema::new(group_fields[..1].to_vec())),
                &GroupOrdering::None,
            )?,
            known_groups: Vec::new(),
            null_group: UNMET,
        };
        let memory = MemoryConsumer::new(format!("DictionaryAggregateExec[{partition}]"))
            .register(context.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let (group, coded) = (self.group.clone(), self.coded.clone());
        let (finish, out_schema) = (self.finish, schema.clone());
        let ready = scan.join_filters_ready();
        let stream = futures::stream::once(async move {
            ready.await;
            let timer = baseline.elapsed_compute().timer();
            let mut updated = false;
            for b in batches {
                let (b, mask) = b?;
                // The arguments' values first, computed for every row of a masked
                // batch: one that fails on a row the mask drops must not fail the
                // query, so the batch is then taken without those rows.
                let (b, mask, values) = match arguments(&b, &projection, &group, &coded, &mut args)
                {
                    Ok(values) => (b, mask, values),
                    Err(e) => {
                        let Some(m) = mask else { return Err(e) };
                        let b = filter_record_batch(&b, &BooleanArray::new(m, None))?;
                        let values = arguments(&b, &projection, &group, &coded, &mut args)?;
                        (b, None, values)
                    }
                };
                let cols: Vec<&ArrayRef> = coded.iter().map(|&c| b.column(c)).collect();
                groups.assign(&cols, mask.as_ref())?;
                let total = groups.values.len() + 1;
                let mut size = groups.values.size();
                for (acc, values) in accs.iter_mut().zip(values) {
                    acc.update_batch(&values, &groups.ids, None, total)?;
                    size += acc.size();
                }
                updated = true;
                memory.try_resize(size)?;
            }
            let mut cols = groups.values.emit(EmitTo::All)?;
            for acc in &mut accs {
                // The dropped rows' group goes first, unseen and not evaluated (its
                // state taken as it is: an average of no row would divide by zero).
                if updated {
                    acc.state(EmitTo::First(1))?;
                }
                match finish {
                    Finish::State => cols.extend(acc.state(EmitTo::All)?),
                    Finish::Evaluate => cols.push(acc.evaluate(EmitTo::All)?),
                }
            }
            let out = RecordBatch::try_new(out_schema, cols)?;
            timer.done();
            drop(memory);
            Ok(out.record_output(&baseline))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.agg.statistics_from_inputs(input_stats, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.agg.child_stats_requests(partition)
    }
}

/// An aggregate function's argument. One that reads no column (`count(*)`'s `1`) is the
/// same for every row of every batch: its array is made once and sliced.
struct Argument {
    expr: Arc<dyn PhysicalExpr>,
    constant: bool,
    made: Option<ArrayRef>,
}

impl Argument {
    fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        let constant = collect_columns(&expr).is_empty() && !is_volatile(&expr);
        Argument {
            expr,
            constant,
            made: None,
        }
    }

    /// Its values for the rows of `b`.
    fn evaluate(&mut self, b: &RecordBatch) -> Result<ArrayRef> {
        let n = b.num_rows();
        match &self.made {
            Some(a) if a.len() >= n => Ok(a.slice(0, n)),
            _ => {
                let a = self.expr.evaluate(b)?.into_array(n)?;
                if self.constant {
                    self.made = Some(a.clone());
                }
                Ok(a)
            }
        }
    }
}

/// Each aggregate function's argument values over the rows of scan batch `b` (through
/// the projection, if there is one).
fn arguments(
    b: &RecordBatch,
    projection: &Option<Vec<Arc<dyn PhysicalExpr>>>,
    group: &[usize],
    coded: &[usize],
    args: &mut [Vec<Argument>],
) -> Result<Vec<Vec<ArrayRef>>> {
    // The arguments read the projection's columns; the group columns among them (which
    // no argument reads) pass through as dictionaries.
    let projected;
    let b = match projection {
        Some(exprs) => {
            projected = project(b, exprs, group, coded)?;
            &projected
        }
        None => b,
    };
    args.iter_mut()
        .map(|a| a.iter_mut().map(|a| a.evaluate(b)).collect())
        .collect()
}

/// `exprs` evaluated over `b`, except that output column `group[i]` is `b`'s column
/// `coded[i]` as it is (a dictionary the projection's schema does not say).
fn project(
    b: &RecordBatch,
    exprs: &[Arc<dyn PhysicalExpr>],
    group: &[usize],
    coded: &[usize],
) -> Result<RecordBatch> {
    let n = b.num_rows();
    let cols = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| match group.iter().position(|&g| g == i) {
            Some(j) => Ok(b.column(coded[j]).clone()),
            None => e.evaluate(b)?.into_array(n),
        })
        .collect::<Result<Vec<_>>>()?;
    let fields: Vec<arrow::datatypes::Field> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| arrow::datatypes::Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

/// Assigns each row of a batch its group.
struct Grouper {
    values: Box<dyn GroupValues>,
    /// The group columns' types (as the aggregation outputs them).
    types: Vec<DataType>,
    /// The groups of the key combinations of the last dictionaries seen.
    table: Option<KeyTable>,
    /// The group of each row of the last batch.
    ids: Vec<usize>,
    /// One column: every dictionary value seen (met by a kept row or not), so a batch
    /// whose dictionary differs from the last (its values in another order, one more)
    /// finds its values' groups by interning its few values here, not its rows.
    known: Box<dyn GroupValues>,
    /// Per value of `known`: its group, or [`UNMET`].
    known_groups: Vec<usize>,
    /// NULL's group, or [`UNMET`].
    null_group: usize,
}

/// The group of each combination of the group columns' dictionary keys (kept while
/// the batches read have the same dictionaries). A combination's index is the sum of each column's key times its stride, a
/// NULL counting as the key one past the dictionary's last. A combination is interned
/// when a row first has it: a dictionary may hold values that no row the scan keeps has
/// (deleted or filtered out), and those must not become groups.
struct KeyTable {
    /// Each column's dictionary values.
    dictionaries: Vec<ArrayRef>,
    strides: Vec<usize>,
    /// Per combination: its group, or [`UNMET`].
    groups: Vec<usize>,
    /// One column: each key's value in [`Grouper::known`].
    known: Vec<usize>,
}

/// Dictionaries longer than this are not interned into [`Grouper::known`] (their rows'
/// groups are found by the values they hold).
const KNOWN_VALUES: usize = 1024;

/// A combination no row has had yet.
const UNMET: usize = usize::MAX;

/// The accumulators' group of the rows a mask drops: aggregated like the others (no
/// filter to test per row, no copy of the batch without them), and never emitted.
const DROPPED: usize = 0;

impl Grouper {
    /// Each row's group into `ids`, numbered as the accumulators number them: group
    /// `g` of `values` is `g + 1`, and [`DROPPED`] holds the rows a `mask` drops (they
    /// make no group).
    fn assign(&mut self, cols: &[&ArrayRef], mask: Option<&BooleanBuffer>) -> Result<()> {
        self.ids.clear();
        self.group_rows(cols, mask)?;
        if let Some(mask) = mask {
            for at in (!mask).set_indices() {
                self.ids[at] = DROPPED;
            }
        }
        Ok(())
    }

    /// [`Grouper::assign`] but for the rows `mask` drops, which may have any id.
    fn group_rows(&mut self, cols: &[&ArrayRef], mask: Option<&BooleanBuffer>) -> Result<()> {
        let dictionaries: Option<Vec<_>> = cols.iter().map(|c| c.as_any_dictionary_opt()).collect();
        // One column's table is as long as its dictionary; several columns' only up to
        // a bound.
        let combinations = dictionaries.as_ref().and_then(|d| {
            d.iter()
                .try_fold(1usize, |n, d| n.checked_mul(d.values().len() + 1))
                .filter(|&n| cols.len() == 1 || n <= MAX_COMBINATIONS)
        });
        let (Some(dictionaries), Some(combinations)) = (dictionaries, combinations) else {
            // Decoded (fresh rows), or too many combinations for a table.
            let plain = cols
                .iter()
                .zip(&self.types)
                .map(|(c, t)| lightning_columnar::segment::to_type(c, t))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let Some(mask) = mask else {
                self.values.intern(&plain, &mut self.ids)?;
                self.ids.iter_mut().for_each(|g| *g += 1);
                return Ok(());
            };
            let f = FilterBuilder::new(&BooleanArray::new(mask.clone(), None)).build();
            let kept = plain
                .iter()
                .map(|c| f.filter(c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let mut kept_ids = Vec::with_capacity(f.count());
            self.values.intern(&kept, &mut kept_ids)?;
            let mut kept_ids = kept_ids.into_iter();
            let ids = mask.iter().map(|k| match k {
                true => kept_ids.next().map_or(DROPPED, |g| g + 1),
                false => DROPPED,
            });
            self.ids.extend(ids);
            return Ok(());
        };
        // Segments encode each batch's dictionary on its own, so a table is kept while
        // the dictionaries hold the same values (compared when they are small).
        let same = matches!(&self.table, Some(t) if t
            .dictionaries
            .iter()
            .zip(&dictionaries)
            .all(|(a, d)| same_values(a, d.values())));
        if !same {
            let mut strides = Vec::with_capacity(cols.len());
            let mut stride = 1;
            for d in &dictionaries {
                strides.push(stride);
                stride *= d.values().len() + 1;
            }
            let mut groups = vec![UNMET; combinations];
            let mut known = Vec::new();
            if let [d] = dictionaries[..]
                && d.values().len() <= KNOWN_VALUES
            {
                let v = lightning_columnar::segment::to_type(d.values(), &self.types[0])?;
                self.known.intern(&[v], &mut known)?;
                self.known_groups.resize(self.known.len(), UNMET);
                for (g, &k) in groups.iter_mut().zip(&known) {
                    *g = self.known_groups[k];
                }
                groups[known.len()] = self.null_group;
            }
            self.table = Some(KeyTable {
                dictionaries: dictionaries.iter().map(|d| d.values().clone()).collect(),
                strides,
                groups,
                known,
            });
        }
        // One column: the rows' groups are read by key; a value (or NULL) no row had
        // before is interned first, so no group is made for a value no row has.
        if let [d] = dictionaries[..] {
            let Grouper {
                values,
                types,
                table,
                ids,
                known_groups,
                null_group,
                ..
            } = &mut *self;
            let t = table.as_mut().expect("set above");
            let (size, keys) = (d.values().len(), d.keys());
            let gathered = downcast_integer_array!(
                keys => keys_to_groups(keys, &t.groups, size, ids),
                _ => Gathered::OutOfRange
            );
            match gathered {
                Gathered::All => return Ok(()),
                Gathered::Unmet => {
                    // Rarely (once per value per segment at most): the values some row
                    // has that have no group yet are interned, then the rows gathered
                    // again.
                    let mut met = vec![false; size + 1];
                    downcast_integer_array!(
                        keys => mark_met(keys, ids, mask, size, &mut met),
                        _ => {}
                    );
                    let mut one = Vec::with_capacity(1);
                    let first = met.iter().enumerate().filter(|(_, m)| **m).map(|(k, _)| k);
                    for key in first {
                        if t.groups[key] != UNMET {
                            continue;
                        }
                        let v = match key == size {
                            true => new_null_array(&types[0], 1),
                            false => lightning_columnar::segment::to_type(
                                &d.values().slice(key, 1),
                                &types[0],
                            )?,
                        };
                        one.clear();
                        values.intern(&[v], &mut one)?;
                        t.groups[key] = one[0] + 1;
                        if key == size {
                            *null_group = one[0] + 1;
                        } else if let Some(&k) = t.known.get(key) {
                            known_groups[k] = one[0] + 1;
                        }
                    }
                    ids.clear();
                    let again = downcast_integer_array!(
                        keys => keys_to_groups(keys, &t.groups, size, ids),
                        _ => Gathered::OutOfRange
                    );
                    match again {
                        // Unmet: rows the mask drops, whose values no kept row has.
                        Gathered::All | Gathered::Unmet => return Ok(()),
                        Gathered::OutOfRange => ids.clear(),
                    }
                }
                // Reported below.
                Gathered::OutOfRange => ids.clear(),
            }
        }
        let Grouper {
            values,
            types,
            table,
            ids,
            ..
        } = self;
        let table = table.as_mut().expect("set above");
        let mut index = vec![0usize; cols[0].len()];
        for (d, &stride) in dictionaries.iter().zip(&table.strides) {
            let (size, keys) = (d.values().len(), d.keys());
            let ok = downcast_integer_array!(
                keys => add_keys(keys, size, stride, &mut index),
                _ => false
            );
            if !ok {
                return Err(DataFusionError::Execution(format!(
                    "dictionary keys of type {} out of range of its {size} values",
                    keys.data_type(),
                )));
            }
        }
        let mut one = Vec::with_capacity(1);
        // Combinations met for the first time are interned first (rarely: once per
        // query at most), so the rows' groups are then one gather.
        let unmet = index.iter().any(|&x| table.groups[x] == UNMET);
        if unmet {
            for (at, &x) in index.iter().enumerate() {
                if table.groups[x] == UNMET && mask.is_none_or(|m| m.value(at)) {
                    // First met: intern the combination's values.
                    let row = table
                        .dictionaries
                        .iter()
                        .zip(&table.strides)
                        .zip(types.iter())
                        .map(|((v, &stride), t)| {
                            let key = x / stride % (v.len() + 1);
                            if key == v.len() {
                                return Ok(new_null_array(t, 1));
                            }
                            Ok(lightning_columnar::segment::to_type(&v.slice(key, 1), t)?)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    one.clear();
                    values.intern(&row, &mut one)?;
                    table.groups[x] = one[0] + 1;
                }
            }
        }
        let groups: &[usize] = &table.groups;
        ids.extend(index.iter().map(|&x| groups[x]));
        Ok(())
    }
}

/// What [`keys_to_groups`] found.
enum Gathered {
    /// Every row's group.
    All,
    /// Some rows' values had no group yet (their ids are [`UNMET`]).
    Unmet,
    /// A key out of range.
    OutOfRange,
}

/// Each row's group, `groups[key]` (a NULL's at `groups[size]`), appended to `ids`.
fn keys_to_groups<K: ArrowPrimitiveType>(
    keys: &PrimitiveArray<K>,
    groups: &[usize],
    size: usize,
    ids: &mut Vec<usize>,
) -> Gathered {
    let mut ok = true;
    let mut group = |k: K::Native| match k.to_usize().filter(|&k| k < size) {
        Some(k) => groups[k],
        None => {
            ok = false;
            0
        }
    };
    let from = ids.len();
    match keys.nulls().filter(|n| n.null_count() > 0) {
        Some(valid) => {
            let null = groups[size];
            let rows = keys.values().iter().zip(valid.iter());
            ids.extend(rows.map(|(&k, v)| if v { group(k) } else { null }));
        }
        None => {
            // Range-checked in one pass first (a negative key wraps to a large one), so
            // the gather is a plain lookup.
            let keys = keys.values();
            let max = keys.iter().fold(0, |m, k| m.max(k.as_usize()));
            if !keys.is_empty() && max >= size {
                return Gathered::OutOfRange;
            }
            let groups = &groups[..size];
            ids.extend(keys.iter().map(|k| groups[k.as_usize()]));
        }
    }
    if !ok {
        return Gathered::OutOfRange;
    }
    // One more pass over the ids (cheaper than a branch per row above), unless every
    // key has its group.
    let looked_up = match keys.null_count() {
        0 => &groups[..size],
        _ => &groups[..=size],
    };
    if !looked_up.contains(&UNMET) {
        return Gathered::All;
    }
    match ids[from..]
        .iter()
        .fold(0, |m, &g| m | usize::from(g == UNMET))
    {
        0 => Gathered::All,
        _ => Gathered::Unmet,
    }
}

/// Dictionaries longer than this are compared by identity only.
const COMPARED_DICTIONARY: usize = 256;

/// Whether dictionary values `a` and `b` are the same: the same buffers, or equal and
/// short.
fn same_values(a: &ArrayRef, b: &ArrayRef) -> bool {
    a.to_data().ptr_eq(&b.to_data())
        || (a.len() == b.len() && a.len() <= COMPARED_DICTIONARY && a.as_ref() == b.as_ref())
}

/// Marks in `met` the key (`size` for NULL) of each row `mask` keeps (every row
/// without one) whose id is [`UNMET`]; the keys are in range (gathered before).
fn mark_met<K: ArrowPrimitiveType>(
    keys: &PrimitiveArray<K>,
    ids: &[usize],
    mask: Option<&BooleanBuffer>,
    size: usize,
    met: &mut [bool],
) {
    let unmet = ids.iter().enumerate().filter(|(_, g)| **g == UNMET);
    for (at, _) in unmet.filter(|(at, _)| mask.is_none_or(|m| m.value(*at))) {
        let key = match keys.is_null(at) {
            true => size,
            false => keys.value(at).to_usize().unwrap_or(size),
        };
        met[key] = true;
    }
}

/// Add each row's key of one dictionary column (`size` values; a NULL counts as key
/// `size`) times `stride` to its combination `index`; false if a key is out of range.
fn add_keys<K: ArrowPrimitiveType>(
    keys: &PrimitiveArray<K>,
    size: usize,
    stride: usize,
    index: &mut [usize],
) -> bool {
    let mut ok = true;
    let mut key = |k: K::Native| match k.to_usize().filter(|&k| k < size) {
        Some(k) => k,
        None => {
            ok = false;
            0
        }
    };
    match keys.nulls() {
        Some(valid) => {
            for ((x, &k), v) in index.iter_mut().zip(keys.values()).zip(valid.iter()) {
                *x += if v { key(k) } else { size } * stride;
            }
        }
        None => {
            for (x, &k) in index.iter_mut().zip(keys.values()) {
                *x += key(k) * stride;
            }
        }
    }
    ok
}
