//! Decimal arithmetic without a checked 128-bit operation per row.
//!
//! Arrow computes `+`, `-` and `*` of `Decimal128` operands with checked 128-bit
//! arithmetic per row (`checked_mul` compiles to a call, and every value goes through
//! a `Result`): in TPC-H q1, `l_extendedprice * (1 - l_discount) * (1 + l_tax)` took
//! about half of the query's CPU, the two `1 ± rate` alone a fifth. Stored decimals
//! are small (TPC-H's prices and rates fit in 64 bits many times over), and with both
//! operands within 64 bits no product, and no sum of operands brought to a common
//! scale (multipliers up to 10^18), can overflow 128 bits: [`DecimalArithmetic`] checks
//! that a batch's operands fit (one pass) and then computes unchecked; a batch with a
//! larger value goes to Arrow's own kernel, so results and errors are exactly
//! DataFusion's. [`FastDecimalArithmetic`] puts it in place of every decimal `+`, `-`
//! and `*` in projections, filters and aggregate arguments.

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, PrimitiveArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Decimal128Type, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::scalar::ScalarValue;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// `left op right` over two `Decimal128` operands, `op` one of `*`, `+`, `-` (see the
/// module documentation).
#[derive(Debug)]
pub struct DecimalArithmetic {
    left: Arc<dyn PhysicalExpr>,
    right: Arc<dyn PhysicalExpr>,
    op: Arith,
    /// Arrow's result type (for `*`: precision `p1 + p2 + 1`, at most 38, scale
    /// `s1 + s2`).
    out: DataType,
    /// The expression it stands for, evaluated for batches it does not handle.
    original: Arc<dyn PhysicalExpr>,
}

// By hand, as DataFusion's own expressions do (rust-lang/rust#78808): the original
// expression says everything the others do.
impl PartialEq for DecimalArithmetic {
    fn eq(&self, other: &Self) -> bool {
        self.original.eq(&other.original)
    }
}

impl Eq for DecimalArithmetic {}

impl Hash for DecimalArithmetic {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.original.hash(state);
    }
}

impl DecimalArithmetic {
    /// `expr` as 64-bit decimal arithmetic, when it is a `*`, `+` or `-` of two
    /// `Decimal128` operands (over `schema`) with Arrow's result type.
    fn of(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<DecimalArithmetic>> {
        let Some(b) = expr.downcast_ref::<BinaryExpr>() else {
            return Ok(None);
        };
        let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) =
            (b.left().data_type(schema)?, b.right().data_type(schema)?)
        else {
            return Ok(None);
        };
        // Arrow's result types (Hive's rules) and the multipliers that bring both
        // operands to the result's scale.
        let (op, out) = match b.op() {
            Operator::Multiply => {
                let scale = s1.saturating_add(s2);
                let precision = p1.saturating_add(p2 + 1).min(38);
                (Arith::Mul, DataType::Decimal128(precision, scale))
            }
            Operator::Plus | Operator::Minus => {
                let scale = s1.max(s2);
                let whole = (p1 as i8 - s1).max(p2 as i8 - s2);
                let precision = (scale.saturating_add(whole) as u8)
                    .saturating_add(1)
                    .min(38);
                if scale - s1 > 18 || scale - s2 > 18 {
                    return Ok(None);
                }
                let (l, r) = (
                    10i128.pow((scale - s1) as u32),
                    10i128.pow((scale - s2) as u32),
                );
                let op = match b.op() {
                    Operator::Plus => Arith::Add(l, r),
                    _ => Arith::Sub(l, r),
                };
                (op, DataType::Decimal128(precision, scale))
            }
            _ => return Ok(None),
        };
        let DataType::Decimal128(_, scale) = out else {
            return Ok(None);
        };
        if !(0..=38).contains(&scale) || expr.data_type(schema)? != out {
            return Ok(None);
        }
        Ok(Some(DecimalArithmetic {
            left: b.left().clone(),
            right: b.right().clone(),
            op,
            out,
            original: expr.clone(),
        }))
    }

    /// The results, when every operand value (NULL slots too) fits in 64 bits: then
    /// no product (of two such values, or of one and a multiplier up to 10^18) and no
    /// sum of two products overflows 128 bits, so nothing needs checking.
    fn narrow(&self, l: &ColumnarValue, r: &ColumnarValue, rows: usize) -> Option<ArrayRef> {
        let l = Side::of(l, rows)?;
        let r = Side::of(r, rows)?;
        let f = |x: i128, y: i128| match self.op {
            Arith::Mul => x * y,
            Arith::Add(a, b) => x * a + y * b,
            Arith::Sub(a, b) => x * a - y * b,
        };
        let values: Vec<i128> = match (&l, &r) {
            (Side::Array(a), Side::Array(b)) => a
                .values()
                .iter()
                .zip(b.values().iter())
                .map(|(&x, &y)| f(x as i64 as i128, y as i64 as i128))
                .collect(),
            (Side::Array(a), Side::Scalar(k)) => a
                .values()
                .iter()
                .map(|&x| f(x as i64 as i128, *k))
                .collect(),
            (Side::Scalar(k), Side::Array(b)) => b
                .values()
                .iter()
                .map(|&y| f(*k, y as i64 as i128))
                .collect(),
            (Side::Scalar(_), Side::Scalar(_)) => return None,
        };
        let out: Decimal128Array =
            PrimitiveArray::new(values.into(), NullBuffer::union(l.nulls(), r.nulls()));
        Some(Arc::new(out.with_data_type(self.out.clone())))
    }
}

/// The arithmetic of a [`DecimalArithmetic`]: `+` and `-` with the multipliers of their
/// left and right operands.
#[derive(Debug, Clone, Copy)]
enum Arith {
    Mul,
    Add(i128, i128),
    Sub(i128, i128),
}

/// One operand of a batch, every value of it within 64 bits.
enum Side<'a> {
    Array(&'a Decimal128Array),
    Scalar(i128),
}

impl<'a> Side<'a> {
    fn of(v: &'a ColumnarValue, rows: usize) -> Option<Side<'a>> {
        let fits = |x: i128| x == x as i64 as i128;
        match v {
            ColumnarValue::Array(a) => {
                let a = a.as_primitive_opt::<Decimal128Type>()?;
                (a.len() == rows && a.values().iter().all(|&x| fits(x))).then_some(Side::Array(a))
            }
            // A NULL scalar: Arrow's kernel answers.
            ColumnarValue::Scalar(ScalarValue::Decimal128(Some(k), ..)) if fits(*k) => {
                Some(Side::Scalar(*k))
            }
            ColumnarValue::Scalar(_) => None,
        }
    }

    fn nulls(&self) -> Option<&NullBuffer> {
        match self {
            Side::Array(a) => a.nulls(),
            Side::Scalar(_) => None,
        }
    }
}

impl fmt::Display for DecimalArithmetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Arith::Mul => "*",
            Arith::Add(..) => "+",
            Arith::Sub(..) => "-",
        };
        write!(f, "{} {op} {}", self.left, self.right)
    }
}

impl PhysicalExpr for DecimalArithmetic {
    fn data_type(&self, _schema: &Schema) -> Result<DataType> {
        Ok(self.out.clone())
    }

    fn nullable(&self, schema: &Schema) -> Result<bool> {
        self.original.nullable(schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let l = self.left.evaluate(batch)?;
        let r = self.right.evaluate(batch)?;
        if let Some(out) = self.narrow(&l, &r, batch.num_rows()) {
            return Ok(ColumnarValue::Array(out));
        }
        self.original.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.left, &self.right]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let original = self.original.clone().with_new_children(children.clone())?;
        Ok(Arc::new(DecimalArithmetic {
            left: children[0].clone(),
            right: children[1].clone(),
            op: self.op,
            out: self.out.clone(),
            original,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.original.fmt_sql(f)
    }
}

/// `expr` with every decimal `*`, `+` and `-` in it a [`DecimalArithmetic`].
fn rewrite(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.clone().transform_up(|e| {
        Ok(match DecimalArithmetic::of(&e, schema)? {
            Some(p) => Transformed::yes(Arc::new(p) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
}

/// Puts [`DecimalArithmetic`] in place of the decimal arithmetic of projections,
/// filters and aggregate arguments. Runs before the rules that wrap aggregations.
#[derive(Debug, Default)]
pub struct FastDecimalArithmetics;

impl PhysicalOptimizerRule for FastDecimalArithmetics {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let new = if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                projection(p)?
            } else if let Some(f) = node.downcast_ref::<FilterExec>() {
                filter(f)?
            } else if let Some(a) = node.downcast_ref::<AggregateExec>() {
                aggregate(a)?
            } else {
                None
            };
            Ok(match new {
                Some(n) => Transformed::yes(n),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "lightning_fast_decimal_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn projection(p: &ProjectionExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let schema = p.input().schema();
    let mut changed = false;
    let mut exprs = Vec::with_capacity(p.expr().len());
    for e in p.expr() {
        let t = rewrite(&e.expr, &schema)?;
        changed |= t.transformed;
        exprs.push(ProjectionExpr {
            expr: t.data,
            alias: e.alias.clone(),
        });
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(Arc::new(ProjectionExec::try_new(
        exprs,
        p.input().clone(),
    )?)))
}

fn filter(f: &FilterExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    // (One that also projects or stops at a fetch limit keeps Arrow's kernels: rare,
    // and rebuilt differently.)
    if f.projection().is_some() || f.fetch().is_some() {
        return Ok(None);
    }
    let t = rewrite(f.predicate(), &f.input().schema())?;
    if !t.transformed {
        return Ok(None);
    }
    Ok(Some(Arc::new(FilterExec::try_new(
        t.data,
        f.input().clone(),
    )?)))
}

fn aggregate(a: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let schema = a.input_schema();
    let mut changed = false;
    let mut aggs = Vec::with_capacity(a.aggr_expr().len());
    for agg in a.aggr_expr() {
        let mut args = Vec::new();
        let mut any = false;
        for e in agg.expressions() {
            let t = rewrite(&e, &schema)?;
            any |= t.transformed;
            args.push(t.data);
        }
        if !any {
            aggs.push(agg.clone());
            continue;
        }
        let order: Vec<_> = agg.order_bys().iter().map(|s| s.expr.clone()).collect();
        match agg.with_new_expressions(args, order) {
            Some(new) => {
                changed = true;
                aggs.push(Arc::new(new));
            }
            None => aggs.push(agg.clone()),
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut new = AggregateExec::try_new(
        *a.mode(),
        a.group_expr().clone(),
        aggs,
        a.filter_expr().to_vec(),
        a.input().clone(),
        schema,
    )?;
    if let Some(l) = a.limit_options() {
        new = new.with_limit_options(Some(l));
    }
    Ok(Some(Arc::new(new)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{Column, Literal};

    fn batch(a: Vec<Option<i128>>, b: Vec<Option<i128>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Decimal128(15, 2), true),
            Field::new("b", DataType::Decimal128(16, 4), true),
        ]));
        let a = Decimal128Array::from(a)
            .with_precision_and_scale(15, 2)
            .unwrap();
        let b = Decimal128Array::from(b)
            .with_precision_and_scale(16, 4)
            .unwrap();
        RecordBatch::try_new(schema, vec![Arc::new(a), Arc::new(b)]).unwrap()
    }

    fn product(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
        s: &Schema,
    ) -> (Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>) {
        let original = Arc::new(BinaryExpr::new(l, op, r)) as Arc<dyn PhysicalExpr>;
        let fast = DecimalArithmetic::of(&original, s)
            .unwrap()
            .expect("decimal arithmetic");
        (original, Arc::new(fast))
    }

    fn array(v: ColumnarValue, rows: usize) -> ArrayRef {
        v.into_array(rows).unwrap()
    }

    #[test]
    fn arithmetic_equals_arrows_with_nulls_scalars_scales_and_values_past_64_bits() {
        let a = Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        let b = Arc::new(Column::new("b", 1)) as Arc<dyn PhysicalExpr>;
        let k = Arc::new(Literal::new(ScalarValue::Decimal128(Some(-150), 3, 2)))
            as Arc<dyn PhysicalExpr>;
        let small = batch(
            vec![Some(12345), None, Some(-7), Some(i64::MAX as i128)],
            vec![Some(-3), Some(5), None, Some(i64::MIN as i128)],
        );
        // One value past 64 bits: Arrow's kernel answers (here: no overflow either).
        let wide = batch(vec![Some(1 << 70), Some(2)], vec![Some(3), Some(1 << 64)]);
        let s = small.schema();
        let pairs = [
            (a.clone(), b.clone()),
            (a.clone(), k.clone()),
            (k.clone(), b.clone()),
        ];
        let ops = [Operator::Multiply, Operator::Plus, Operator::Minus];
        for ((l, r), op) in pairs.iter().flat_map(|p| ops.map(|o| (p, o))) {
            let (original, fast) = product(l.clone(), op, r.clone(), &s);
            assert_eq!(fast.data_type(&s).unwrap(), original.data_type(&s).unwrap());
            for batch in [&small, &wide] {
                let n = batch.num_rows();
                let want = array(original.evaluate(batch).unwrap(), n);
                let got = array(fast.evaluate(batch).unwrap(), n);
                assert_eq!(got.as_ref(), want.as_ref());
                assert_eq!(got.data_type(), want.data_type());
            }
        }
        // An overflow fails as Arrow's does.
        let huge = batch(vec![Some(10i128.pow(15) - 1)], vec![Some(i128::MAX / 2)]);
        let (original, fast) = product(a.clone(), Operator::Multiply, b.clone(), &s);
        assert!(original.evaluate(&huge).is_err());
        assert!(fast.evaluate(&huge).is_err());
        // Not decimals: left alone.
        let ints = Schema::new(vec![Field::new("a", DataType::Int64, false)]);
        let i = Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        let e =
            Arc::new(BinaryExpr::new(i.clone(), Operator::Multiply, i)) as Arc<dyn PhysicalExpr>;
        assert!(DecimalArithmetic::of(&e, &ints).unwrap().is_none());
    }
}
