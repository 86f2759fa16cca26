//! A logical optimizer rule: semi and anti joins filter as early as they can.
//!
//! DataFusion turns `x IN (subquery)` and `EXISTS (...)` into a semi join (`NOT ...`
//! into an anti join) placed above the joins of the outer query's `FROM` list. TPC-H
//! q18 is the clearest case: `orders.o_orderkey IN (the 57 order keys whose lines sum
//! past 300)` is applied to the result of `customer ⋈ orders ⋈ lineitem` (6 M rows)
//! instead of to `orders` (1.5 M rows, 57 kept), so the join builds a hash table over
//! every order and probes it with every line before the semi join throws all but 399
//! rows away.
//!
//! [`PushSemiJoinDown`] moves a semi or anti join below an inner join (and the
//! projections between them) onto the input that holds every left column the semi
//! join reads, when the inner join's other input is a plain table scan: a scan with no
//! filters cannot make the inner join drop many rows, so filtering before the join is
//! never more work than filtering after it, and usually much less. When the other input
//! filters (q21's `supplier ⋈ nation = 'SAUDI ARABIA'`, orders with one status), the
//! inner join may be the selective step and the semi join stays where it is.
//!
//! Both forms give the same rows: an inner join keeps a row of input `A` (with its
//! matches) or drops it by the join keys alone, and the semi join keeps or drops it by
//! `A`'s columns alone, so the two filters commute. NOT IN (a null-aware anti join)
//! is left where it is.

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use std::collections::HashSet;
use std::sync::Arc;

/// Pushes semi and anti joins below inner joins whose other input is an unfiltered
/// table scan (see the module documentation).
#[derive(Debug, Default)]
pub struct PushSemiJoinDown;

impl OptimizerRule for PushSemiJoinDown {
    fn name(&self) -> &str {
        "lightning_push_semi_join_down"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(semi) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if !matches!(semi.join_type, JoinType::LeftSemi | JoinType::LeftAnti) || semi.null_aware {
            return Ok(Transformed::no(plan));
        }
        // Every column of the left input the semi join reads.
        let mut cols = HashSet::new();
        for (l, _) in &semi.on {
            cols.extend(l.column_refs().into_iter().cloned());
        }
        if let Some(f) = &semi.filter {
            cols.extend(
                f.column_refs()
                    .into_iter()
                    .filter(|c| semi.left.schema().has_column(c))
                    .cloned(),
            );
        }
        if cols.is_empty() {
            return Ok(Transformed::no(plan));
        }
        match push(&semi.left, &cols, semi)? {
            Some(left) => Ok(Transformed::yes(left)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// `input` with `semi` applied below its top inner join, or `None` when it cannot be
/// moved there.
fn push(input: &LogicalPlan, cols: &HashSet<Column>, semi: &Join) -> Result<Option<LogicalPlan>> {
    match input {
        // Through a projection that passes the columns on unchanged.
        LogicalPlan::Projection(p) => {
            let passes = cols.iter().all(|c| {
                p.schema
                    .index_of_column(c)
                    .is_ok_and(|i| matches!(&p.expr[i], Expr::Column(x) if x == c))
            });
            if !passes {
                return Ok(None);
            }
            let Some(inner) = push(&p.input, cols, semi)? else {
                return Ok(None);
            };
            Ok(Some(LogicalPlan::Projection(
                Projection::try_new_with_schema(p.expr.clone(), Arc::new(inner), p.schema.clone())?,
            )))
        }
        LogicalPlan::Join(j) if j.join_type == JoinType::Inner => {
            let within = |side: &LogicalPlan| cols.iter().all(|c| side.schema().has_column(c));
            let onto = |side: &Arc<LogicalPlan>| -> Result<Arc<LogicalPlan>> {
                Ok(Arc::new(match push(side, cols, semi)? {
                    Some(p) => p,
                    None => rejoin(semi, side.clone(), semi.right.clone())?,
                }))
            };
            let (left, right) = if within(&j.left) && unfiltered(&j.right) {
                (onto(&j.left)?, j.right.clone())
            } else if within(&j.right) && unfiltered(&j.left) {
                (j.left.clone(), onto(&j.right)?)
            } else {
                return Ok(None);
            };
            Ok(Some(rejoin(j, left, right)?))
        }
        _ => Ok(None),
    }
}

/// Join `j` (its type, keys and filter) over new inputs.
fn rejoin(j: &Join, left: Arc<LogicalPlan>, right: Arc<LogicalPlan>) -> Result<LogicalPlan> {
    Ok(LogicalPlan::Join(Join::try_new(
        left,
        right,
        j.on.clone(),
        j.filter.clone(),
        j.join_type,
        j.join_constraint,
        j.null_equality,
        j.null_aware,
    )?))
}

/// A table scan with no filters and no limit, maybe under projections and aliases:
/// an inner join with it as one input drops rows of the other only when their keys
/// have no match.
fn unfiltered(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(s) => s.filters.is_empty() && s.fetch.is_none(),
        LogicalPlan::Projection(p) => unfiltered(&p.input),
        LogicalPlan::SubqueryAlias(a) => unfiltered(&a.input),
        _ => false,
    }
}
