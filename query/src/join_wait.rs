//! A physical optimizer rule: a scan on the probe side of a hash join reads once the
//! join's dynamic filter is complete.
//!
//! A hash join pushes a dynamic filter (its build side's key bounds and key set) into
//! the scans of its probe side, and the scan drops the rows it rejects before they are
//! decoded (see `runtime_filter`). That only pays if the filter is complete when the
//! scan reads. DataFusion polls a join's probe side after the build side is done, but
//! some operators start their inputs at once when executed: `CoalescePartitionsExec` and
//! `RepartitionExec` spawn a task per input partition, which reads as fast as it can.
//! A scan under one of them reads before the build side above it finished, with the
//! filter still `true`. TPC-H q21 at SF 10 shows what that costs: `supplier` is the
//! build side of a join whose output is probed by `nation = 'SAUDI ARABIA'`; read
//! early through a `CoalescePartitionsExec`, all 100 K suppliers were kept instead of
//! 4 K, the join behind them emitted 18.3 M lineitem rows instead of 0.7 M, and so did
//! the joins above.
//!
//! [`WaitForJoinFilters`] finds the hash joins of the final plan and makes every
//! Lightning scan that holds one of their filters wait for it to be complete before it
//! reads. This never adds a wait DataFusion does not already have: a hash join's
//! filter is complete once every partition's build side is, and each partition of the
//! join waits for exactly that before it polls its probe side; the build side never
//! depends on the probe side. Only hash joins' filters are waited for: a TopK's filter
//! is complete only after the TopK read its whole input, which would be this scan.

use crate::scan::LightningScan;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use std::collections::HashSet;
use std::sync::Arc;

/// Makes scans wait for the dynamic filters of the hash joins above them (see the
/// module documentation). Runs after DataFusion's own rules, which push the filters.
#[derive(Debug, Default)]
pub struct WaitForJoinFilters;

impl PhysicalOptimizerRule for WaitForJoinFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The expression ids of the filters the plan's hash joins produce.
        let mut joins = HashSet::new();
        plan.apply(|node| {
            if let Some(j) = node.downcast_ref::<HashJoinExec>() {
                joins.extend(
                    j.dynamic_expressions_produced()
                        .iter()
                        .filter_map(|e| e.expression_id()),
                );
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if joins.is_empty() {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(ds) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(scan) = ds.data_source().downcast_ref::<LightningScan>() else {
                return Ok(Transformed::no(node));
            };
            let mut waits = Vec::new();
            for f in scan.pushed_filters() {
                join_filters(f, &joins, &mut waits)?;
            }
            if waits.is_empty() {
                return Ok(Transformed::no(node));
            }
            let scan = Arc::new(scan.waiting_for(waits));
            Ok(Transformed::yes(Arc::new(
                ds.clone().with_data_source(scan),
            )))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "lightning_wait_for_join_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Adds to `out` the dynamic filters within `expr` that one of the hash joins `joins`
/// (by expression id) produced.
fn join_filters(
    expr: &Arc<dyn PhysicalExpr>,
    joins: &HashSet<u64>,
    out: &mut Vec<Arc<dyn PhysicalExpr>>,
) -> Result<()> {
    expr.apply(|e| {
        if let Some(d) = e.downcast_ref::<DynamicFilterPhysicalExpr>()
            && d.expression_id().is_some_and(|id| joins.contains(&id))
        {
            out.push(e.clone());
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}
