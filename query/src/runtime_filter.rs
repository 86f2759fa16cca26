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
//! to the operator above until it changes again (a TopK heap tightening). Filters over
//! different columns are judged, and ordered, each on its own: the one that kept the
//! smallest share of its rows so far runs first, and the others only on what it kept.

use crate::select::Conjunct;
use arrow::array::ArrayRef;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::utils::{collect_columns, conjunction};
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
    /// The filters' state at `generation`, one part per set of columns read; empty when
    /// it keeps every row.
    current: Vec<Part>,
    /// Rows dropped (`rows_filtered_at_run_time`).
    dropped: Count,
}

/// The filters over one set of columns, and how they did since `generation`.
struct Part {
    conjunct: Conjunct,
    /// Rows evaluated and rows kept.
    seen: usize,
    kept: usize,
    /// Keeps too many rows, or cannot be evaluated here.
    off: bool,
    /// Whether it may be tabulated over its column's values (see
    /// [`Conjunct::tabulated`]); the bounds of the values it was evaluated on, those of
    /// its table, and the rows evaluated without the table since it was made.
    tabulable: bool,
    bounds: Option<(i64, i64)>,
    table: Option<(i64, i64)>,
    slow: usize,
}

impl Part {
    /// Whether this part kept a smaller share of its rows than `other` (one not yet
    /// tried counts as keeping none, so it is tried first).
    fn keeps_less(&self, other: &Part) -> std::cmp::Ordering {
        let share = |p: &Part| p.kept as f64 / p.seen.max(1) as f64;
        share(self).total_cmp(&share(other))
    }
}

impl Part {
    fn new(conjunct: Conjunct) -> Part {
        Part {
            tabulable: conjunct.tabulable(),
            conjunct,
            seen: 0,
            kept: 0,
            off: false,
            bounds: None,
            table: None,
            slow: 0,
        }
    }

    /// Widens the bounds of the values evaluated by those of this batch's column;
    /// whether its table answers for the batch. A batch with no bounds (not plain
    /// integers: runs and dictionaries are evaluated once per run or value already)
    /// ends tabulation.
    fn widen(&mut self, stored: &[ArrayRef]) -> bool {
        let Some((a, b)) = self.conjunct.int_bounds(stored) else {
            self.tabulable = false;
            return false;
        };
        self.bounds = Some(match self.bounds {
            Some((lo, hi)) => (a.min(lo), b.max(hi)),
            None => (a, b),
        });
        self.table.is_some_and(|(lo, hi)| lo <= a && b <= hi)
    }

    /// Once it was evaluated without a table on as many rows as the values seen span,
    /// this part tabulated over them (a cost paid at most once more, as in renting
    /// skis until their price is spent): the rows after are answered from the table,
    /// except in batches with values outside it, which count towards a wider one.
    fn tabulate_if_due(&mut self) {
        let Some((lo, hi)) = self.bounds else {
            return;
        };
        if (self.slow as i128) < hi as i128 - lo as i128 + 1 {
            return;
        }
        match self.conjunct.tabulated(lo, hi) {
            Ok(Some(table)) => {
                self.conjunct = table;
                self.table = Some((lo, hi));
                self.slow = 0;
            }
            _ => self.tabulable = false,
        }
    }
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
            current: Vec::new(),
            dropped,
        }
    }

    /// The rows of one stored batch (`stored`: the scan's output columns as the segment
    /// holds them, `rows` long, decoded into `schema`) among `within` (all when `None`)
    /// that the filters' current state may keep; `None` when it is not evaluated. Only
    /// the rows `within` are evaluated (those the scan's own filters keep).
    ///
    /// Filters over different columns (q21's lineitem: the orders join's `l_orderkey`
    /// set of 7 M keys, the supplier join's `l_suppkey` set of 4 K) are evaluated one
    /// after the other, each on the rows the ones before kept, the one that kept the
    /// smallest share so far first: the cheap, selective lookup then spares the large
    /// one most of its rows.
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
            self.current = parts(&self.exprs, schema)?;
        }
        self.current.sort_by(Part::keeps_less);
        // The rows still in: those `within`, then those each part kept.
        let candidates = within.map_or(rows, |w| w.count_set_bits());
        let mut left = candidates;
        let mut kept: Option<BooleanBuffer> = None;
        for part in self.current.iter_mut().filter(|p| !p.off) {
            if left == 0 {
                break;
            }
            let tabled = part.tabulable && part.widen(stored);
            // A filter the batch cannot be evaluated against is left to the operator above.
            let Ok(bits) = part
                .conjunct
                .evaluate(stored, rows, schema, kept.as_ref().or(within))
            else {
                part.off = true;
                continue;
            };
            let n = bits.count_set_bits();
            part.seen += left;
            part.kept += n;
            if part.seen >= TRIAL_ROWS && part.kept * 10 > part.seen * KEEP_LIMIT {
                part.off = true;
            }
            if part.tabulable && !tabled {
                part.slow += left;
                part.tabulate_if_due();
            }
            (left, kept) = (n, Some(bits));
        }
        if kept.is_some() {
            self.dropped.add(candidates - left);
        }
        Ok(kept)
    }
}

/// The current state of `exprs` as parts, one per set of columns the filters read: a
/// key stored in runs or as a dictionary then takes one evaluation per run or value
/// for all the filters on it; key bounds and an integer key list otherwise go to the
/// kernels (the list as a bitmap).
fn parts(exprs: &[Arc<dyn PhysicalExpr>], schema: &SchemaRef) -> Result<Vec<Part>> {
    // (the columns read, the filters reading exactly them)
    type Group = (Vec<usize>, Vec<Arc<dyn PhysicalExpr>>);
    let mut by_columns: Vec<Group> = Vec::new();
    for f in exprs {
        let e = snapshot_physical_expr(f.clone())?;
        if always_true(&e) {
            continue;
        }
        let mut cols: Vec<usize> = collect_columns(&e).iter().map(|c| c.index()).collect();
        cols.sort_unstable();
        cols.dedup();
        match by_columns.iter_mut().find(|(c, _)| *c == cols) {
            Some((_, group)) => group.push(e),
            None => by_columns.push((cols, vec![e])),
        }
    }
    by_columns
        .into_iter()
        .map(|(_, group)| Ok(Part::new(Conjunct::new(&conjunction(group), schema)?)))
        .collect()
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
        // Fewer rows to evaluate than runs: row by row.
        let within = BooleanBuffer::collect_bool(6, |i| i == 3);
        let k = f.keep(&stored, 6, &schema(), Some(&within));
        assert_eq!(
            k.unwrap().unwrap().iter().collect::<Vec<_>>(),
            [false, false, false, true, false, false]
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
        assert_eq!(f.current[0].conjunct.kernel_parts(), (3, true));
        let within = BooleanBuffer::collect_bool(1000, |i| i != 200);
        let k = f
            .keep(&stored, 1000, &schema(), Some(&within))
            .unwrap()
            .unwrap();
        assert_eq!(k.set_indices().collect::<Vec<_>>(), [10, 500]);
    }

    #[test]
    fn a_filter_looked_up_per_row_is_tabulated_over_its_columns_values_once_that_pays() {
        // `a % 97 = 3` stands for a join's hash-table lookup: no kernel evaluates it.
        let a = Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        let lookup = |a: Arc<dyn PhysicalExpr>| {
            let m = Arc::new(BinaryExpr::new(a, Operator::Modulo, lit(97i64)));
            Arc::new(BinaryExpr::new(m, Operator::Eq, lit(3i64))) as Arc<dyn PhysicalExpr>
        };
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![a.clone()], lit(true)));
        dynamic.update(lookup(a.clone())).unwrap();
        let filters = [dynamic.clone() as Arc<dyn PhysicalExpr>];
        let mut f = RuntimeFilter::new(&filters, Count::new());
        let batch = |from: i64, n: i64, nulls: bool| -> Vec<ArrayRef> {
            let v = (from..from + n).map(|x| (!nulls || x % 5 != 0).then_some(x as i32));
            vec![Arc::new(arrow::array::Int32Array::from_iter(v))]
        };
        let want = |from: i64, n: i64, nulls: bool| -> Vec<usize> {
            (0..n)
                .filter(|i| (from + i) % 97 == 3 && (!nulls || (from + i) % 5 != 0))
                .map(|i| i as usize)
                .collect()
        };
        // Values 0..4000 in batches of 1000 in key order: tabulated over the first
        // batch's 1000 values once it was evaluated on 1000 rows; the next batches lie
        // outside, and once 3000 more rows were evaluated without it (the span seen),
        // tabulated over 0..4000.
        let mut tables = Vec::new();
        for round in 0..3 {
            for from in [0, 1000, 2000, 3000] {
                let k = f.keep(&batch(from, 1000, round == 2), 1000, &schema(), None);
                let k = k.unwrap().unwrap();
                assert_eq!(
                    k.set_indices().collect::<Vec<_>>(),
                    want(from, 1000, round == 2)
                );
                assert!(f.current[0].conjunct.is_table());
                tables.push(f.current[0].table.unwrap());
            }
        }
        assert_eq!(tables[..5], [(0, 999); 5]);
        assert_eq!(tables[5..], [(0, 3999); 7]);
        // A batch with values outside the table: evaluated as before, still right.
        let k = f.keep(&batch(3500, 1000, false), 1000, &schema(), None);
        assert_eq!(
            k.unwrap().unwrap().set_indices().collect::<Vec<_>>(),
            want(3500, 1000, false)
        );
        // Only the rows `within`.
        let within = BooleanBuffer::collect_bool(1000, |i| i < 500);
        let k = f.keep(&batch(0, 1000, false), 1000, &schema(), Some(&within));
        assert_eq!(
            k.unwrap().unwrap().set_indices().collect::<Vec<_>>(),
            want(0, 500, false)
        );

        // True for NULL: never tabulated (the table holds values only).
        let or_null = Arc::new(BinaryExpr::new(
            lookup(a.clone()),
            Operator::Or,
            Arc::new(datafusion::physical_expr::expressions::IsNullExpr::new(a)),
        ));
        dynamic.update(or_null).unwrap();
        for _ in 0..10 {
            let k = f.keep(&batch(0, 1000, true), 1000, &schema(), None);
            let k = k.unwrap().unwrap();
            let nulls = (0..1000).filter(|i| i % 5 == 0 || i % 97 == 3).count();
            assert_eq!(k.count_set_bits(), nulls);
        }
        assert!(!f.current[0].conjunct.is_table());
    }

    #[test]
    fn filters_on_different_columns_run_the_most_selective_first() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]));
        let col = |n: &str, i| Arc::new(Column::new(n, i)) as Arc<dyn PhysicalExpr>;
        let lt = |c, n: i64| Arc::new(BinaryExpr::new(c, Operator::Lt, lit(n))) as Arc<_>;
        let on_a = Arc::new(DynamicFilterPhysicalExpr::new(vec![col("a", 0)], lit(true)));
        let on_b = Arc::new(DynamicFilterPhysicalExpr::new(vec![col("b", 1)], lit(true)));
        on_a.update(lt(col("a", 0), 900)).unwrap();
        on_b.update(lt(col("b", 1), 10)).unwrap();
        let filters = [on_a as Arc<dyn PhysicalExpr>, on_b as Arc<dyn PhysicalExpr>];
        let dropped = Count::new();
        let mut f = RuntimeFilter::new(&filters, dropped.clone());
        // `a` keeps 90% of the rows, `b` 1%, on rows of their own.
        let a = arrow::array::Int64Array::from_iter_values(0..1000);
        let b = arrow::array::Int64Array::from_iter_values((0..1000).map(|i| i * 7 % 1000));
        let stored: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b)];
        let want: Vec<usize> = (0..1000)
            .filter(|&i| i < 900 && i * 7 % 1000 < 10)
            .collect();
        for _ in 0..20 {
            let k = f.keep(&stored, 1000, &schema, None).unwrap().unwrap();
            assert_eq!(k.set_indices().collect::<Vec<_>>(), want);
        }
        assert_eq!(dropped.value(), 20 * (1000 - want.len()));
        // The first batch in the order given (`a`, then `b` on its 900 rows); from the
        // second on, `b` first on every row and `a` on the 10 that `b` keeps.
        assert_eq!(f.current.len(), 2);
        assert_eq!(f.current[0].seen, 900 + 19 * 1000);
        assert_eq!(f.current[1].seen, 1000 + 19 * 10);
    }
}
