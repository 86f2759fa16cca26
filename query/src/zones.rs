//! Zone maps as DataFusion sees them: values as [`ScalarValue`]s of the column's SQL type,
//! and containers (segments, or record batches of segments) as [`PruningStatistics`], so
//! DataFusion's own `PruningPredicate` decides what a filter can skip, at plan time for
//! the query's filters and at run time for dynamic filters of joins and TopK.

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::Column;
use datafusion::common::pruning::PruningStatistics;
use datafusion::scalar::ScalarValue;
use lightning_columnar::segment::ZoneMap;
use std::collections::HashSet;
use std::sync::Arc;

/// Bytes of a binary zone-map value (lowercase hex, see `segment::zone_hex`).
fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A zone-map value as a scalar of the column's type (`None`: absent or not
/// representable, e.g. a float zone map whose max was NaN).
pub(crate) fn scalar_of(dt: &DataType, v: &serde_json::Value) -> Option<ScalarValue> {
    let i = || v.as_i64();
    let u = || v.as_u64();
    Some(match dt {
        DataType::Int8 => ScalarValue::Int8(Some(i()?.try_into().ok()?)),
        DataType::Int16 => ScalarValue::Int16(Some(i()?.try_into().ok()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i()?.try_into().ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(i()?)),
        DataType::UInt8 => ScalarValue::UInt8(Some(u()?.try_into().ok()?)),
        DataType::UInt16 => ScalarValue::UInt16(Some(u()?.try_into().ok()?)),
        DataType::UInt32 => ScalarValue::UInt32(Some(u()?.try_into().ok()?)),
        DataType::UInt64 => ScalarValue::UInt64(Some(u()?)),
        DataType::Float32 => ScalarValue::Float32(Some(v.as_f64()? as f32)),
        DataType::Float64 => ScalarValue::Float64(Some(v.as_f64()?)),
        DataType::Date32 => ScalarValue::Date32(Some(i()?.try_into().ok()?)),
        DataType::Decimal128(p, s) => {
            ScalarValue::Decimal128(Some(v.as_str()?.parse().ok()?), *p, *s)
        }
        DataType::Timestamp(unit, tz) => {
            let x = Some(i()?);
            match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(x, tz.clone()),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(x, tz.clone()),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(x, tz.clone()),
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(x, tz.clone()),
            }
        }
        DataType::Utf8 => ScalarValue::Utf8(Some(v.as_str()?.to_string())),
        DataType::Utf8View => ScalarValue::Utf8View(Some(v.as_str()?.to_string())),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(v.as_str()?.to_string())),
        DataType::Binary => ScalarValue::Binary(Some(unhex(v.as_str()?)?)),
        DataType::LargeBinary => ScalarValue::LargeBinary(Some(unhex(v.as_str()?)?)),
        DataType::BinaryView => ScalarValue::BinaryView(Some(unhex(v.as_str()?)?)),
        DataType::Boolean => ScalarValue::Boolean(Some(v.as_bool()?)),
        _ => return None,
    })
}

/// Containers with zone maps (each: its zone maps by table column, and its row count)
/// for DataFusion's pruning. A predicate's columns are looked up by name in `schema`;
/// column `i` of `schema` is table column `projection[i]` (or `i`).
pub(crate) struct ZoneStats<'a> {
    pub schema: &'a Schema,
    pub projection: Option<&'a [usize]>,
    pub containers: Vec<(&'a [ZoneMap], u64)>,
}

impl ZoneStats<'_> {
    fn column(&self, c: &Column) -> Option<(usize, &DataType)> {
        let i = self.schema.index_of(c.name()).ok()?;
        let dt = self.schema.field(i).data_type();
        Some((self.projection.map_or(i, |p| p[i]), dt))
    }

    fn bound(&self, c: &Column, max: bool) -> Option<ArrayRef> {
        let (col, dt) = self.column(c)?;
        let null = ScalarValue::try_from(dt).ok()?;
        let values = self.containers.iter().map(|(zones, _)| {
            zones
                .get(col)
                .and_then(|z| scalar_of(dt, if max { &z.max } else { &z.min }))
                .unwrap_or_else(|| null.clone())
        });
        ScalarValue::iter_to_array(values).ok()
    }
}

impl PruningStatistics for ZoneStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn num_containers(&self) -> usize {
        self.containers.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let (col, _) = self.column(column)?;
        let counts = self
            .containers
            .iter()
            .map(|(zones, _)| zones.get(col).map(|z| z.null_count));
        Some(Arc::new(counts.collect::<UInt64Array>()))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let rows = self.containers.iter().map(|(_, n)| Some(*n));
        Some(Arc::new(rows.collect::<UInt64Array>()))
    }

    #[allow(clippy::mutable_key_type)] // the trait's signature
    fn contained(&self, _: &Column, _: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::{Expr, col, lit};
    use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
    use datafusion::prelude::SessionContext;
    use lightning_columnar::segment::zone_hex;
    use serde_json::json;

    #[test]
    fn zone_values_become_scalars_of_the_column_type() {
        assert_eq!(
            scalar_of(&DataType::Int32, &json!(7)),
            Some(ScalarValue::Int32(Some(7)))
        );
        assert_eq!(scalar_of(&DataType::Int8, &json!(700)), None);
        assert_eq!(
            scalar_of(&DataType::Decimal128(15, 2), &json!("-1250")),
            Some(ScalarValue::Decimal128(Some(-1250), 15, 2))
        );
        assert_eq!(
            scalar_of(&DataType::Utf8, &json!("x")),
            Some(ScalarValue::Utf8(Some("x".into())))
        );
        assert_eq!(scalar_of(&DataType::Utf8, &json!(null)), None);
        assert_eq!(scalar_of(&DataType::Float64, &json!(null)), None);
        assert_eq!(
            scalar_of(&DataType::Binary, &json!(zone_hex(b"\x00k\xff"))),
            Some(ScalarValue::Binary(Some(b"\x00k\xff".to_vec())))
        );
        assert_eq!(scalar_of(&DataType::Binary, &json!("0")), None);
        assert_eq!(scalar_of(&DataType::Binary, &json!("zz")), None);
    }

    /// Which of `containers` (zone maps of column `k` of type `dt`: min, max, nulls,
    /// rows) `filter` keeps.
    fn keeps(
        dt: DataType,
        filter: Expr,
        containers: &[(serde_json::Value, serde_json::Value, u64, u64)],
    ) -> Vec<bool> {
        let schema = Schema::new(vec![Field::new("k", dt, true)]);
        let zones: Vec<Vec<ZoneMap>> = containers
            .iter()
            .map(|(min, max, nulls, _)| {
                vec![ZoneMap {
                    column: "k".into(),
                    min: min.clone(),
                    max: max.clone(),
                    null_count: *nulls,
                }]
            })
            .collect();
        let stats = ZoneStats {
            schema: &schema,
            projection: None,
            containers: zones
                .iter()
                .zip(containers)
                .map(|(z, c)| (&z[..], c.3))
                .collect(),
        };
        let df = DFSchema::try_from(schema.clone()).unwrap();
        let expr = SessionContext::new()
            .create_physical_expr(filter, &df)
            .unwrap();
        let p = PruningPredicateBuilder::new()
            .with_file_schema(Arc::new(schema.clone()))
            .try_build(expr)
            .unwrap();
        p.prune(&stats).unwrap()
    }

    #[test]
    fn ranges_on_numbers_decimals_strings_and_binaries_prune() {
        let z = [(json!(10), json!(20), 0, 5), (json!(30), json!(40), 0, 5)];
        assert_eq!(
            keeps(DataType::Int64, col("k").gt_eq(lit(15i64)), &z),
            [true, true]
        );
        assert_eq!(
            keeps(DataType::Int64, col("k").gt(lit(20i64)), &z),
            [false, true]
        );
        let f = col("k").lt(lit(10i64)).or(col("k").eq(lit(21i64)));
        assert_eq!(keeps(DataType::Int64, f, &z), [false, false]);
        let f = col("k").in_list(vec![lit(12i64), lit(50i64)], false);
        assert_eq!(keeps(DataType::Int64, f, &z), [true, false]);
        // All NULL: no comparison holds. Unknown bounds keep the container.
        let z = [
            (json!(null), json!(null), 5, 5),
            (json!(null), json!(null), 0, 5),
        ];
        assert_eq!(
            keeps(DataType::Int64, col("k").eq(lit(1i64)), &z),
            [false, true]
        );
        // Decimals (unscaled strings), compared at the column's scale.
        let z = [(json!("500"), json!("700"), 0, 5)];
        let d = |v: i128| lit(ScalarValue::Decimal128(Some(v), 15, 2));
        assert_eq!(
            keeps(DataType::Decimal128(15, 2), col("k").gt(d(800)), &z),
            [false]
        );
        assert_eq!(
            keeps(DataType::Decimal128(15, 2), col("k").lt_eq(d(500)), &z),
            [true]
        );
        let z = [(json!("b"), json!("d"), 0, 5)];
        assert_eq!(
            keeps(DataType::Utf8View, col("k").eq(lit("e")), &z),
            [false]
        );
        assert_eq!(keeps(DataType::Utf8View, col("k").eq(lit("c")), &z), [true]);
        // b"user:1" .. b"user:3" as hex.
        let hex = |s: &[u8]| json!(zone_hex(s));
        let z = [(hex(b"user:1"), hex(b"user:3"), 0, 5)];
        let bin = |s: &[u8]| lit(ScalarValue::Binary(Some(s.to_vec())));
        for (filter, keep) in [
            (col("k").gt_eq(bin(b"user:2")), true),
            (col("k").gt_eq(bin(b"user:4")), false),
            (col("k").lt(bin(b"user:1")), false),
            (col("k").lt(bin(b"user:10")), true),
        ] {
            assert_eq!(keeps(DataType::Binary, filter, &z), [keep]);
        }
        // A float zone map whose max was NaN (stored as null) prunes nothing above.
        let z = [(json!(1.0), json!(null), 0, 5)];
        assert_eq!(keeps(DataType::Float64, col("k").gt(lit(5.0)), &z), [true]);
    }
}
