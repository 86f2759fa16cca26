//! Dynamic filters evaluated row by row in the scan.
//!
//! A hash join pushes its build side's keys into the probe side's scan as a dynamic
//! filter (`key IN (…)` and key bounds) once the build side is complete; a TopK pushes
//! the bound of its heap. Zone maps prune whole batches with them, but a selective join
//! key is spread over every batch (q17: parts of one brand and container match 0.1% of
//! lineitem, in every batch), so the scan would still hand the join every row to hash and
//! drop. [`RuntimeFilter`] evaluates the filters' current state on each decoded batch and
//! passes on only the rows that can still match, as Parquet's `pushdown_filters` does.
//!
//! The filters stay unapplied for DataFusion (the join still checks every row), so
//! evaluating them here only ever saves work, and it stops as soon as it does not: after
//! [`TRIAL_ROWS`] rows of which more than [`KEEP_LIMIT`] pass, the filter is left to the
//! operator above until it changes again (a TopK heap tightening).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
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
    current: Option<Arc<dyn PhysicalExpr>>,
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

    /// `b` without the rows the filters' current state rules out.
    pub(crate) fn apply(&mut self, b: RecordBatch) -> Result<RecordBatch> {
        if self.exprs.is_empty() || b.num_rows() == 0 {
            return Ok(b);
        }
        let generation = self
            .exprs
            .iter()
            .fold(0u64, |g, f| g.wrapping_add(snapshot_generation(f)));
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
            self.current = (!parts.is_empty()).then(|| conjunction(parts));
        }
        let Some(expr) = self.current.as_ref().filter(|_| !self.off) else {
            return Ok(b);
        };
        // A filter the batch cannot be evaluated against (a dictionary column where the
        // expression expects plain values, say) is left to the operator above.
        let mask = match expr.evaluate(&b).and_then(|v| v.into_array(b.num_rows())) {
            Ok(m) if m.data_type() == &DataType::Boolean => m,
            _ => {
                self.off = true;
                return Ok(b);
            }
        };
        let kept = filter_record_batch(&b, mask.as_boolean())?;
        let rows = b.num_rows();
        self.seen += rows;
        self.kept += kept.num_rows();
        self.dropped.add(rows - kept.num_rows());
        if self.seen >= TRIAL_ROWS && self.kept * 10 > self.seen * KEEP_LIMIT {
            self.off = true;
        }
        Ok(kept)
    }
}

fn always_true(e: &Arc<dyn PhysicalExpr>) -> bool {
    e.downcast_ref::<Literal>()
        .is_some_and(|l| l.value() == &ScalarValue::Boolean(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{
        BinaryExpr, Column, DynamicFilterPhysicalExpr, lit,
    };

    fn batch(from: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let a = Int64Array::from_iter_values(from..from + 1000);
        RecordBatch::try_new(schema, vec![Arc::new(a)]).unwrap()
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
        assert_eq!(f.apply(batch(0)).unwrap().num_rows(), 1000);
        assert_eq!(dropped.value(), 0);
        // Selective: evaluated on every batch.
        dynamic.update(below(10)).unwrap();
        for _ in 0..100 {
            assert_eq!(f.apply(batch(0)).unwrap().num_rows(), 10);
        }
        assert_eq!(dropped.value(), 99_000);
        // Keeping 95% of rows does not pay: after the trial rows, batches pass whole.
        dynamic.update(below(950)).unwrap();
        let kept: Vec<usize> = (0..100)
            .map(|_| f.apply(batch(0)).unwrap().num_rows())
            .collect();
        let trial = TRIAL_ROWS.div_ceil(1000);
        assert!(kept[..trial].iter().all(|&n| n == 950), "{kept:?}");
        assert!(kept[trial..].iter().all(|&n| n == 1000), "{kept:?}");
        // A new state is tried again.
        dynamic.update(below(5)).unwrap();
        assert_eq!(f.apply(batch(0)).unwrap().num_rows(), 5);
        // A batch the filter cannot be evaluated against passes whole.
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
        let strings = arrow::array::StringArray::from(vec!["x"; 10]);
        let b = RecordBatch::try_new(schema, vec![Arc::new(strings)]).unwrap();
        dynamic.update(below(7)).unwrap();
        assert_eq!(f.apply(b).unwrap().num_rows(), 10);
    }
}
