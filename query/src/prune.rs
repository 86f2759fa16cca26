//! Zone-map pruning: can a segment hold a row matching a filter?

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use lightning_columnar::segment::{ZoneMap, zone_hex};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Val {
    I(i128),
    F(f64),
    S(String),
}

fn from_scalar(v: &ScalarValue) -> Option<Val> {
    Some(match v {
        ScalarValue::Int8(Some(x)) => Val::I(*x as i128),
        ScalarValue::Int16(Some(x)) => Val::I(*x as i128),
        ScalarValue::Int32(Some(x)) => Val::I(*x as i128),
        ScalarValue::Int64(Some(x)) => Val::I(*x as i128),
        ScalarValue::UInt8(Some(x)) => Val::I(*x as i128),
        ScalarValue::UInt16(Some(x)) => Val::I(*x as i128),
        ScalarValue::UInt32(Some(x)) => Val::I(*x as i128),
        ScalarValue::UInt64(Some(x)) => Val::I(*x as i128),
        ScalarValue::Date32(Some(x)) => Val::I(*x as i128),
        ScalarValue::Float32(Some(x)) => Val::F(*x as f64),
        ScalarValue::Float64(Some(x)) => Val::F(*x),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Val::S(s.clone()),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b)) => Val::S(zone_hex(b)),
        _ => return None,
    })
}

fn from_json(v: &serde_json::Value, like: &Val) -> Option<Val> {
    match (v, like) {
        (serde_json::Value::Number(n), Val::I(_)) => n
            .as_i64()
            .map(|x| Val::I(x as i128))
            .or_else(|| n.as_u64().map(|x| Val::I(x as i128))),
        (serde_json::Value::Number(n), Val::F(_)) => n.as_f64().map(Val::F),
        (serde_json::Value::String(s), Val::S(_)) => Some(Val::S(s.clone())),
        _ => None,
    }
}

fn cmp(a: &Val, b: &Val) -> Option<Ordering> {
    a.partial_cmp(b)
}

fn column_of(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(&c.name),
        _ => None,
    }
}

fn literal_of(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::Eq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

/// False if the zone maps prove no row of the segment satisfies `filter`.
pub fn may_match(filter: &Expr, zones: &[ZoneMap], rows: u64) -> bool {
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => may_match(left, zones, rows) && may_match(right, zones, rows),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => may_match(left, zones, rows) || may_match(right, zones, rows),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, lit, op) = match (
                column_of(left),
                literal_of(right),
                column_of(right),
                literal_of(left),
            ) {
                (Some(c), Some(l), _, _) => (c, l, *op),
                (_, _, Some(c), Some(l)) => match flip(*op) {
                    Some(o) => (c, l, o),
                    None => return true,
                },
                _ => return true,
            };
            let Some(z) = zones.iter().find(|z| z.column == col) else {
                return true;
            };
            let Some(lit) = from_scalar(lit) else {
                return true;
            };
            if z.null_count >= rows {
                return false; // all NULL: no comparison is true
            }
            let (Some(min), Some(max)) = (from_json(&z.min, &lit), from_json(&z.max, &lit)) else {
                return true;
            };
            let (Some(lo), Some(hi)) = (cmp(&lit, &min), cmp(&lit, &max)) else {
                return true;
            };
            match op {
                Operator::Eq => lo != Ordering::Less && hi != Ordering::Greater,
                Operator::Lt => lo == Ordering::Greater,
                Operator::LtEq => lo != Ordering::Less,
                Operator::Gt => hi == Ordering::Less,
                Operator::GtEq => hi != Ordering::Greater,
                _ => true,
            }
        }
        Expr::Between(b) if !b.negated => {
            let lo = Expr::BinaryExpr(BinaryExpr::new(
                b.expr.clone(),
                Operator::GtEq,
                b.low.clone(),
            ));
            let hi = Expr::BinaryExpr(BinaryExpr::new(
                b.expr.clone(),
                Operator::LtEq,
                b.high.clone(),
            ));
            may_match(&lo, zones, rows) && may_match(&hi, zones, rows)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn zone(min: serde_json::Value, max: serde_json::Value) -> Vec<ZoneMap> {
        vec![ZoneMap {
            column: "k".into(),
            min,
            max,
            null_count: 0,
        }]
    }

    #[test]
    fn ranges_on_numbers_strings_and_binaries_prune() {
        use serde_json::json;
        let z = zone(json!(10), json!(20));
        assert!(may_match(&col("k").gt_eq(lit(15i64)), &z, 5));
        assert!(!may_match(&col("k").gt(lit(20i64)), &z, 5));
        assert!(!may_match(
            &col("k").lt(lit(10i64)).or(col("k").eq(lit(21i64))),
            &z,
            5
        ));
        let z = zone(json!("b"), json!("d"));
        assert!(!may_match(&col("k").eq(lit("e")), &z, 5));
        assert!(may_match(&col("k").eq(lit("c")), &z, 5));
        // b"user:1" .. b"user:3" as hex.
        let hex = |s: &[u8]| json!(zone_hex(s));
        let z = zone(hex(b"user:1"), hex(b"user:3"));
        let bin = |s: &[u8]| lit(ScalarValue::Binary(Some(s.to_vec())));
        assert!(may_match(&col("k").gt_eq(bin(b"user:2")), &z, 5));
        assert!(!may_match(&col("k").gt_eq(bin(b"user:4")), &z, 5));
        assert!(!may_match(&col("k").lt(bin(b"user:0")), &z, 5));
        assert!(!may_match(&col("k").lt(bin(b"user:1")), &z, 5));
        assert!(may_match(&col("k").lt(bin(b"user:10")), &z, 5));
    }
}
