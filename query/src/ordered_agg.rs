//! A physical optimizer rule: a partial aggregation grouped by a prefix of a table's
//! primary key runs on sorted input.
//!
//! Segments are disjoint and sorted by primary key, and every partition of a scan
//! takes its batches in key order, so each partition yields its rows in key order.
//! The scan does not declare that order when it has several partitions: DataFusion
//! would then keep the order through its hash repartitions by merging, which measured
//! slower (see `LightningScan::new`). But a partial aggregation grouped by a key prefix
//! gains much from it: on sorted input DataFusion emits each group once the next one
//! starts, so its hash table holds one batch's groups instead of all of them. TPC-H
//! q18's `GROUP BY l_orderkey` over 60 M rows at SF 10 builds 7.5 M groups per
//! partition otherwise.
//!
//! [`OrderedPartialAggregation`] finds each partial aggregation right under the
//! repartition (or coalesce) that feeds its final aggregation, whose input is a
//! Lightning scan through projections and filters only, and rebuilds it over the scan
//! declaring its key order. It keeps the result only if DataFusion then aggregates in
//! sorted mode. The repartition above does not merge (its `preserve_order` was decided
//! before, without the order), and may take the extra partition the scan gives its
//! fresh rows.

use crate::scan::LightningScan;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, InputOrderMode, Partitioning, ReplaceChildrenOptions,
};
use std::sync::Arc;

/// Runs partial aggregations grouped by a primary-key prefix on the scan's key order
/// (see the module documentation). Runs after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct OrderedPartialAggregation;

impl PhysicalOptimizerRule for OrderedPartialAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(new) = merged_final(&node)? {
                return Ok(Transformed::yes(new));
            }
            // Only below an operator that takes any number of input partitions.
            if !(node.is::<RepartitionExec>() || node.is::<CoalescePartitionsExec>()) {
                return Ok(Transformed::no(node));
            }
            let child = &node.children()[0];
            match ordered(child)? {
                Some(agg) => Ok(Transformed::yes(rebuild(&node, agg)?)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "lightning_ordered_partial_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` rebuilt over a scan declaring its key order, when it is a partial aggregation
/// that then runs in sorted mode.
fn ordered(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *agg.mode() != AggregateMode::Partial
        || *agg.input_order_mode() != InputOrderMode::Linear
        || !agg.group_expr().is_single()
        || agg.group_expr().expr().is_empty()
        || agg.limit_options().is_some()
    {
        return Ok(None);
    }
    let Some(input) = with_ordered_scan(agg.input())? else {
        return Ok(None);
    };
    let new = rebuild(node, input)?;
    let sorted = new
        .downcast_ref::<AggregateExec>()
        .is_some_and(|a| *a.input_order_mode() == InputOrderMode::Sorted);
    Ok(sorted.then_some(new))
}

/// `node` rebuilt to run in sorted mode, when it is a final aggregation whose hash
/// repartition is fed by a partial one in sorted mode: the repartition then merges its
/// inputs by the group key, so that the final aggregation too emits each group as soon
/// as the next one starts instead of holding them all.
fn merged_final(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *agg.mode() != AggregateMode::FinalPartitioned
        || *agg.input_order_mode() != InputOrderMode::Linear
    {
        return Ok(None);
    }
    let Some(rep) = agg.input().downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    let sorted_partial = rep
        .input()
        .downcast_ref::<AggregateExec>()
        .is_some_and(|p| {
            *p.mode() == AggregateMode::Partial && *p.input_order_mode() == InputOrderMode::Sorted
        });
    if rep.preserve_order() || !sorted_partial {
        return Ok(None);
    }
    let Partitioning::Hash(..) = rep.partitioning() else {
        return Ok(None);
    };
    let merging = RepartitionExec::try_new(rep.input().clone(), rep.partitioning().clone())?
        .with_preserve_order();
    let new = rebuild(node, Arc::new(merging))?;
    let sorted = new
        .downcast_ref::<AggregateExec>()
        .is_some_and(|a| *a.input_order_mode() == InputOrderMode::Sorted);
    Ok(sorted.then_some(new))
}

/// `plan` (projections and filters over a Lightning scan) rebuilt
/// over the scan declaring its key order; `None` when it is anything else or the scan
/// has no order to declare.
fn with_ordered_scan(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(ds) = plan.downcast_ref::<DataSourceExec>() {
        let Some(scan) = ds.data_source().downcast_ref::<LightningScan>() else {
            return Ok(None);
        };
        return Ok(scan.ordered_by_key().map(|s| {
            Arc::new(ds.clone().with_data_source(Arc::new(s))) as Arc<dyn ExecutionPlan>
        }));
    }
    if !(plan.is::<ProjectionExec>() || plan.is::<FilterExec>()) {
        return Ok(None);
    }
    let Some(child) = with_ordered_scan(plan.children()[0])? else {
        return Ok(None);
    };
    rebuild(plan, child).map(Some)
}

/// `plan` over `child` instead of its one child, its properties recomputed.
fn rebuild(
    plan: &Arc<dyn ExecutionPlan>,
    child: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.clone().replace_children(
        vec![child],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}
