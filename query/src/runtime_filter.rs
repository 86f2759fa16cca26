//! Dynamic filters evaluated row by row in the scan.
//!
//! A hash join pushes its build side's keys into the probe side's scan as a dynamic
//! filter (`key IN (…)` and key bounds) once the build side is complete; a TopK pushes
//! the bound of its heap. Zone maps prune whole batches with them, but a selective join
//! key is spread over every batch (q17: parts of one brand and container match 0.1% of
//! lineitem, in every batch), so the scan would still hand the join every row to hash and
//! drop. [`RuntimeFilter`] evaluates the filters' current state on each stored batch's
//! filter columns first; the scan then decodes only the rows that can still match of
//! the other columns (late materialization), as Parquet's `pushdown_filters` does.
//!
//! The filters stay unapplied for DataFusion (the join still checks every row), so
//! evaluating them here only ever saves work, and it stops as soon as it does not: after
//! [`TRIAL_ROWS`] rows of which more than [`KEEP_LIMIT`] tenths pass, the filter is left
//! to the operator above until it changes again (a TopK heap tightening).

use crate::select::Conjunct;
use arrow::array::ArrayRef;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::utils::conjunction;
use datafusion::physical_expr_common::physical_expr::{
    is_volatile, snapshot_generation, snapshot_physical_expr,
};
use datafusion::physical_plan::metrics::Count;
use datafusion::scalar::ScalarValue;
use std::sync::Arc;

/// Rows a filter is tried on before it is judged.
pub(crate) const TRIAL_ROWS: usize = 1 << 16;
/// The share of rows (in tenths) a filter may keep and still be worth evaluating.
pub(crate) const KEEP_LIMIT: usize = 8;

/// The pushed-down dynamic filters of one partition, evaluated on its batches while they
/// pay for themselves.
pub(crate) struct RuntimeFilter {
    /// The dynamic, non-volatile filters (static ones are the scan's `Selection`).
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The generation of `exprs` that `current` was taken at.
    generation: Option<u64>,
    /// The filters' state at `generation`, `None` when it keeps every row.
    current: Option<Conjunct>,
    /// Rows evaluated and rows kept since `generation`.
    seen: usize,
    kept: usize,
    /// The filter at `generation` keeps too many rows, or cannot be evaluated here.
    off: bool,
    /// Rows dropped (`rows_filtered_at_run_time`).
    dropped: Count,
}

impl RuntimeFilter {
    pub(crate) fn new(filters: &[Arc<dyn PhysicalExpr>], dropped: Count) -> Self {
        let exprs = filters
            .iter()
            .filter(|f| !is_volatile(f) && snapshot_generation(f) != 0)
            .cloned()
            .collect();
        RuntimeFilter {
            exprs,
            generation: None,
            current: None,
            seen: 0,
            kept: 0,
            off: false,
            dropped,
        }
    }

    /// The rows of one stored batch (`stored`: the scan's output columns as the segment
    /// holds them, `rows` long, decoded into `schema`) among `within` (all when `None`)
    /// that the filters' current state may keep; `None` when it is not evaluated. Only
    /// the rows `within` are evaluated (those the scan's own filters keep).
    pub(crate) fn keep(
        &mut self,
        stored: &[ArrayRef],
        rows: usize,
        schema: &SchemaRef,
        within: Option<&BooleanBuffer>,
    ) -> Result<Option<BooleanBuffer>> {
        if self.exprs.is_empty() || rows == 0 {
            return Ok(None);
        }
        let generation = generation(&self.exprs);
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            (self.seen, self.kept, self.off) = (0, 0, false);
            let mut parts = Vec::with_capacity(self.exprs.len());
            for f in &self.exprs {
                let e = snapshot_physical_expr(f.clone())?;
                if !always_true(&e) {
                    parts.push(e);
                }
            }
            // One conjunct: a key stored in runs or as a dictionary takes one
            // evaluation per run or value for all the filters; key bounds and an integer
            // key list otherwise go to the kernels (the list as a bitmap).
            self.current = match parts.is_empty() {
                true => None,
                false => Some(Conjunct::new(&conjunction(parts), schema)?),
            };
        }
        let Some(c) = self.current.as_ref().filter(|_| !self.off) else {
            return Ok(None);
        };
        let candidates = within.map_or(rows, |w| w.count_set_bits());
        if candidates == 0 {
            return Ok(None);
        }
        // A filter the batch cannot be evaluated against is left to the operator above.
        let Ok(bits) = c.evaluate(stored, rows, schema, within) else {
            self.off = true;
            return Ok(None);
        };
        let kept = bits.count_set_bits();
        self.seen += candidates;
        self.kept += kept;
        self.dropped.add(candidates - kept);
        if self.seen >= TRIAL_ROWS && self.kept * 10 > self.seen * KEEP_LIMIT {
            self.off = true;
        }
        Ok(Some(bits))
    }
}

/// The generation of `filters`' current state, which changes whenever one of them does
/// (a join's build side finished, a TopK heap tightened).
pub(crate) fn generation(filters: &[Arc<dyn PhysicalExpr>]) -> u64 {
    filters
        .iter()
        .fold(0u64, |g, f| g.wrapping_add(snapshot_generation(f)))
}

fn always_true(e: &Arc<dyn PhysicalExpr>) -> bool {
    e.downcast_ref::<Literal>()
        .is_some_and(|l| l.value() == &ScalarValue::Boolean(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{
        BinaryExpr, Column, DynamicFilterPhysicalExpr, InListExpr, lit,
    };

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]))
    }

    /// Rows of a stored batch `0..1000` (stored narrower than its type) `f` keeps.
    fn keeps(f: &mut RuntimeFilter) -> usize {
        let a = arrow::array::Int16Array::from_iter_values(0..1000);
        let stored: Vec<ArrayRef> = vec![Arc::new(a)];
        f.keep(&stored, 1000, &schema(), None)
            .unwrap()
            .map_or(1000, |k| k.count_set_bits())
    }

    fn below(n: i64) -> Arc<dyn PhysicalExpr> {
        let a = Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        Arc::new(BinaryExpr::new(a, Operator::Lt, lit(n)))
    }

    #[test]
    fn drops_rows_while_selective_and_stops_when_not() {
        let a = Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![a], lit(true)));
        let dropped = Count::new();
        // A static filter is the scan's selection, never evaluated here.
        let filters = [below(10), dynamic.clone() as Arc<dyn PhysicalExpr>];
        let mut f = RuntimeFilter::new(&filters, dropped.clone());
        assert_eq!(f.exprs.len(), 1);
        // Still `true` (the join's build side is not done): every row passes.
        assert_eq!(keeps(&mut f), 1000);
        assert_eq!(dropped.value(), 0);
        // Selective: evaluated on every batch.
        dynamic.update(below(10)).unwrap();
        for _ in 0..100 {
            assert_eq!(keeps(&mut f), 10);
        }
        assert_eq!(dropped.value(), 99_000);
        // Keeping 95% of rows does not pay: after the trial rows, batches pass whole.
        dynamic.update(below(950)).unwrap();
        let kept: Vec<usize> = (0..100).map(|_| keeps(&mut f)).collect();
        let trial = TRIAL_ROWS.div_ceil(1000);
        assert!(kept[..trial].iter().all(|&n| n == 950), "{kept:?}");
        assert!(kept[trial..].iter().all(|&n| n == 1000), "{kept:?}");
        // A new state is tried again.
        dynamic.update(below(5)).unwrap();
        assert_eq!(keeps(&mut f), 5);
        // Only the rows the scan's own filters keep are evaluated, and stay in place.
        let a = arrow::array::Int16Array::from_iter_values(0..1000);
        let stored: Vec<ArrayRef> = vec![Arc::new(a)];
        let within = BooleanBuffer::collect_bool(1000, |i| i % 2 == 1);
        let k = f.keep(&stored, 1000, &schema(), Some(&within)).unwrap();
        let rows: Vec<usize> = k.unwrap().set_indices().collect();
        assert_eq!(rows, [1, 3]);
        // Run-end encoded (a key prefix): evaluated once per run.
        let ends = arrow::array::Int32Array::from(vec![2, 3, 6]);
        let values = arrow::array::Int64Array::from(vec![4, 7, 2]);
        let runs = arrow::array::RunArray::<Int32Type>::try_new(&ends, &values).unwrap();
        let stored: Vec<ArrayRef> = vec![Arc::new(runs)];
        let k = f.keep(&stored, 6, &schema(), None).unwrap().unwrap();
        assert_eq!(
            k.iter().collect::<Vec<_>>(),
            [true, true, false, true, true, true]
        );
        let within = BooleanBuffer::collect_bool(6, |i| i != 0);
        let k = f
            .keep(&stored, 6, &schema(), Some(&within))
            .unwrap()
            .unwrap();
        assert_eq!(
            k.iter().collect::<Vec<_>>(),
            [false, true, false, true, true, true]
        );
        // A batch the filter cannot be evaluated against passes whole.
        let strings = arrow::array::StringArray::from(vec!["x"; 10]);
        let stored: Vec<ArrayRef> = vec![Arc::new(strings)];
        dynamic.update(below(7)).unwrap();
        let utf8 = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
        assert_eq!(f.keep(&stored, 10, &utf8, None).unwrap(), None);
    }

    #[test]
    fn a_join_key_list_with_bounds_keeps_its_members_within_the_scans_rows() {
        // What a hash join with a small build side pushes: bounds and the key list.
        let a = Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![a.clone()], lit(true)));
        let list = Arc::new(
            InListExpr::try_new(
                a.clone(),
                vec![lit(10i64), lit(200i64), lit(500i64)],
                false,
                &schema(),
            )
            .unwrap(),
        );
        let bounds = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(a.clone(), Operator::GtEq, lit(10i64))),
            Operator::And,
            Arc::new(BinaryExpr::new(a, Operator::LtEq, lit(500i64))),
        ));
        dynamic
            .update(Arc::new(BinaryExpr::new(bounds, Operator::And, list)))
            .unwrap();
        let filters = [dynamic as Arc<dyn PhysicalExpr>];
        let mut f = RuntimeFilter::new(&filters, Count::new());
        // Stored narrower than the column (Int16 for Int64): compared as stored.
        let a = arrow::array::Int16Array::from_iter_values(0..1000);
        let stored: Vec<ArrayRef> = vec![Arc::new(a)];
        let k = f.keep(&stored, 1000, &schema(), None).unwrap().unwrap();
        assert_eq!(k.set_indices().collect::<Vec<_>>(), [10, 200, 500]);
        // Three parts by the kernels, the list by its bitmap.
        assert_eq!(f.current.as_ref().unwrap().kernel_parts(), (3, true));
        let within = BooleanBuffer::collect_bool(1000, |i| i != 200);
        let k = f
            .keep(&stored, 1000, &schema(), Some(&within))
            .unwrap()
            .unwrap();
        assert_eq!(k.set_indices().collect::<Vec<_>>(), [10, 500]);
    }
}
