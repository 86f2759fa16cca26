//! The row store's bytes of the fast path's values: keys encoded from values, values
//! read from and written into stored rows, and the `UPDATE` that edits a stored row in
//! its bytes (`codec::RowSpans`), with one-row Arrow batches for what it leaves.

use super::{Calc, Operand, exact, resolve, row_batch, set_values};
use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use lightning_columnar::{TableDef, codec};

/// The encoded row key, or `None` when a key value does not convert exactly.
pub(super) fn key_bytes(
    def: &TableDef,
    key: &[Operand],
    params: &[ScalarValue],
) -> Result<Option<Vec<u8>>> {
    let mut vals = Vec::with_capacity(key.len());
    for (o, &c) in key.iter().zip(&def.key_cols) {
        let Some(v) = resolve(o, params, &[]) else {
            return Ok(None);
        };
        let Some(v) = exact(&v, def.schema.field(c).data_type()) else {
            return Ok(None);
        };
        if v.is_null() {
            return Ok(None);
        }
        vals.push(v);
    }
    let mut k = lightning_columnar::table::table_prefix(def.id).to_vec();
    let mut p = Vec::new();
    for (v, &c) in vals.iter().zip(&def.key_cols) {
        p.clear();
        if payload(v, &mut p).is_none() {
            // A type only Arrow encodes here: the whole key through arrays.
            let arrays = vals
                .iter()
                .map(|v| v.to_array())
                .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            def.row_key(&refs, 0, &mut k);
            return Ok(Some(k));
        }
        codec::encode_key_payload(def.schema.field(c).data_type(), &p, &mut k)?;
    }
    Ok(Some(k))
}

/// Append `v`'s payload (non-null; the row format's bytes of the value, see
/// [`codec::RowSpans`]). `None`: a type left to the Arrow path.
fn payload(v: &ScalarValue, out: &mut Vec<u8>) -> Option<()> {
    use ScalarValue as S;
    match v {
        S::Int8(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::Int16(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::Int32(Some(x)) | S::Date32(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::Time32Second(Some(x)) | S::Time32Millisecond(Some(x)) => {
            out.extend_from_slice(&x.to_le_bytes())
        }
        S::Int64(Some(x))
        | S::Date64(Some(x))
        | S::Time64Microsecond(Some(x))
        | S::Time64Nanosecond(Some(x))
        | S::TimestampSecond(Some(x), _)
        | S::TimestampMillisecond(Some(x), _)
        | S::TimestampMicrosecond(Some(x), _)
        | S::TimestampNanosecond(Some(x), _)
        | S::DurationSecond(Some(x))
        | S::DurationMillisecond(Some(x))
        | S::DurationMicrosecond(Some(x))
        | S::DurationNanosecond(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::UInt8(Some(x)) => out.push(*x),
        S::UInt16(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::UInt32(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::UInt64(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::Float32(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::Float64(Some(x)) => out.extend_from_slice(&x.to_le_bytes()),
        S::Decimal128(Some(x), _, _) => out.extend_from_slice(&x.to_le_bytes()),
        S::Boolean(Some(x)) => out.push(u8::from(*x)),
        S::Utf8(Some(x)) | S::LargeUtf8(Some(x)) => out.extend_from_slice(x.as_bytes()),
        S::Binary(Some(x)) => out.extend_from_slice(x),
        _ => return None,
    }
    Some(())
}

/// The value of type `dt` whose payload is `p`. `None`: a type left to the Arrow path,
/// or bytes that do not make a value of it (the Arrow path then says why).
fn scalar_of(dt: &DataType, p: &[u8]) -> Option<ScalarValue> {
    use ScalarValue as S;
    use arrow::datatypes::TimeUnit as U;
    fn le<const N: usize>(p: &[u8]) -> Option<[u8; N]> {
        p.try_into().ok()
    }
    let i32_ = || le::<4>(p).map(i32::from_le_bytes);
    let i64_ = || le::<8>(p).map(i64::from_le_bytes);
    Some(match dt {
        DataType::Int8 => S::Int8(Some(i8::from_le_bytes(le(p)?))),
        DataType::Int16 => S::Int16(Some(i16::from_le_bytes(le(p)?))),
        DataType::Int32 => S::Int32(Some(i32_()?)),
        DataType::Int64 => S::Int64(Some(i64_()?)),
        DataType::UInt8 => S::UInt8(Some(u8::from_le_bytes(le(p)?))),
        DataType::UInt16 => S::UInt16(Some(u16::from_le_bytes(le(p)?))),
        DataType::UInt32 => S::UInt32(Some(u32::from_le_bytes(le(p)?))),
        DataType::UInt64 => S::UInt64(Some(u64::from_le_bytes(le(p)?))),
        DataType::Float32 => S::Float32(Some(f32::from_le_bytes(le(p)?))),
        DataType::Float64 => S::Float64(Some(f64::from_le_bytes(le(p)?))),
        DataType::Decimal128(pr, sc) => S::Decimal128(Some(i128::from_le_bytes(le(p)?)), *pr, *sc),
        DataType::Boolean => S::Boolean(Some(le::<1>(p)?[0] != 0)),
        DataType::Date32 => S::Date32(Some(i32_()?)),
        DataType::Date64 => S::Date64(Some(i64_()?)),
        DataType::Time32(U::Second) => S::Time32Second(Some(i32_()?)),
        DataType::Time32(U::Millisecond) => S::Time32Millisecond(Some(i32_()?)),
        DataType::Time64(U::Microsecond) => S::Time64Microsecond(Some(i64_()?)),
        DataType::Time64(U::Nanosecond) => S::Time64Nanosecond(Some(i64_()?)),
        DataType::Timestamp(u, tz) => {
            let (x, tz) = (Some(i64_()?), tz.clone());
            match u {
                U::Second => S::TimestampSecond(x, tz),
                U::Millisecond => S::TimestampMillisecond(x, tz),
                U::Microsecond => S::TimestampMicrosecond(x, tz),
                U::Nanosecond => S::TimestampNanosecond(x, tz),
            }
        }
        DataType::Duration(u) => {
            let x = Some(i64_()?);
            match u {
                U::Second => S::DurationSecond(x),
                U::Millisecond => S::DurationMillisecond(x),
                U::Microsecond => S::DurationMicrosecond(x),
                U::Nanosecond => S::DurationNanosecond(x),
            }
        }
        DataType::Utf8 => S::Utf8(Some(std::str::from_utf8(p).ok()?.to_owned())),
        DataType::LargeUtf8 => S::LargeUtf8(Some(std::str::from_utf8(p).ok()?.to_owned())),
        DataType::Binary => S::Binary(Some(p.to_vec())),
        _ => return None,
    })
}

/// Decode one stored row into a value per column.
fn decode(def: &TableDef, k: &[u8], v: &[u8]) -> Result<Vec<ScalarValue>> {
    let b = def.decode_row(k, v)?;
    (0..b.num_columns())
        .map(|i| Ok(ScalarValue::try_from_array(b.column(i), 0)?))
        .collect()
}

/// What [`update_in_place`] made of a stored row.
pub(super) enum Edit {
    /// The new stored value.
    Row(Vec<u8>),
    /// A value does not convert exactly: DataFusion decides.
    Inexact,
    /// The row or a type needs the Arrow path (a row of an earlier schema version, a
    /// key column read by a `SET`, a type without a payload here).
    ArrowPath,
}

/// The `UPDATE` of stored row value `v` edited in its bytes: only the columns a `SET`
/// reads are decoded, only the columns it writes are encoded, the rest is copied.
pub(super) fn update_in_place(
    def: &TableDef,
    v: &[u8],
    sets: &[(usize, Calc)],
    params: &[ScalarValue],
) -> Result<Edit> {
    let Some(spans) = codec::RowSpans::locate(def, v)? else {
        return Ok(Edit::ArrowPath);
    };
    // Value column `j` of table column `c` (`None`: a key column).
    let value_col = |c: usize| {
        (!def.key_cols.contains(&c)).then(|| c - def.key_cols.iter().filter(|&&k| k < c).count())
    };
    let mut old = vec![ScalarValue::Null; def.schema.fields().len()];
    for (_, calc) in sets {
        let (a, b) = match calc {
            Calc::One(a) => (a, None),
            Calc::Bin(a, _, b) => (a, Some(b)),
        };
        for o in std::iter::once(a).chain(b) {
            let Operand::Col(c) = o else { continue };
            let Some(j) = value_col(*c) else {
                return Ok(Edit::ArrowPath);
            };
            let dt = def.schema.field(*c).data_type();
            old[*c] = match spans.payload(v, j) {
                None => ScalarValue::try_from(dt)?,
                Some(p) => match scalar_of(dt, p) {
                    Some(x) => x,
                    None => return Ok(Edit::ArrowPath),
                },
            };
        }
    }
    let Some(new) = set_values(def, sets, params, &old) else {
        return Ok(Edit::Inexact);
    };
    let mut bytes = Vec::new();
    let mut at = Vec::with_capacity(new.len());
    for (c, x) in &new {
        let f = def.schema.field(*c);
        if x.is_null() {
            if !f.is_nullable() {
                return Err(Error::Constraint(format!(
                    "table {}: column {} contains NULL but is NOT NULL",
                    def.name,
                    f.name()
                )));
            }
            at.push((*c, None));
            continue;
        }
        let start = bytes.len();
        if payload(x, &mut bytes).is_none() {
            return Ok(Edit::ArrowPath);
        }
        at.push((*c, Some(start..bytes.len())));
    }
    let edits: Vec<(usize, Option<&[u8]>)> = at
        .into_iter()
        .map(|(c, r)| {
            (
                value_col(c).expect("SET never names a key column"),
                r.map(|r| &bytes[r]),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(v.len() + bytes.len());
    spans.rebuild(v, &edits, &mut out)?;
    Ok(Edit::Row(out))
}

/// The `UPDATE` of stored row (`k`, `v`) through one-row Arrow batches: rows of an
/// earlier schema version, and types [`update_in_place`] leaves to Arrow. `None`: a
/// value does not convert exactly.
pub(super) fn update_through_arrow(
    def: &TableDef,
    k: &[u8],
    v: &[u8],
    sets: &[(usize, Calc)],
    params: &[ScalarValue],
) -> Result<Option<Vec<u8>>> {
    let mut row = decode(def, k, v)?;
    let Some(new) = set_values(def, sets, params, &row) else {
        return Ok(None);
    };
    for (c, x) in new {
        row[c] = x;
    }
    let b = row_batch(def, &row)?;
    let cols = def.align(&b, false).map_err(|e| match e {
        lightning_columnar::Error::Schema(m) => Error::Constraint(m),
        e => e.into(),
    })?;
    let vals: Vec<&dyn Array> = def.value_cols().iter().map(|&i| cols[i].as_ref()).collect();
    let mut out = Vec::new();
    def.row_value(&vals, 0, &mut out);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::super::Op;
    use super::*;
    use arrow::array::*;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    /// A table of many types (key: `id`, `name`) and three rows of it, with edge values
    /// and NULLs; `must` is NOT NULL; `h` and `fsb` have no payload here (Arrow path).
    fn table() -> (TableDef, RecordBatch) {
        let cols: Vec<(&str, ArrayRef, bool)> = vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![-1, 0, i64::MAX])),
                false,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec!["a\0", "", "ü"])),
                false,
            ),
            (
                "must",
                Arc::new(Int32Array::from(vec![1, -2, i32::MAX])),
                false,
            ),
            (
                "i8",
                Arc::new(Int8Array::from(vec![Some(i8::MIN), None, Some(1)])),
                true,
            ),
            (
                "u16",
                Arc::new(UInt16Array::from(vec![Some(7), Some(u16::MAX), None])),
                true,
            ),
            (
                "u64",
                Arc::new(UInt64Array::from(vec![None, Some(0), Some(u64::MAX)])),
                true,
            ),
            (
                "f32",
                Arc::new(Float32Array::from(vec![Some(-0.0), Some(1.5), None])),
                true,
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![Some(f64::MAX), None, Some(-3.25)])),
                true,
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
                true,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("x"), Some(""), None])),
                true,
            ),
            (
                "ls",
                Arc::new(LargeStringArray::from(vec![None, Some("large"), Some("z")])),
                true,
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x00"[..]),
                    None,
                    Some(&b""[..]),
                ])),
                true,
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
                true,
            ),
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(19000), None, Some(-1)])),
                true,
            ),
            (
                "d64",
                Arc::new(Date64Array::from(vec![Some(0), Some(86_400_000), None])),
                true,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1), None, Some(-1)])
                        .with_timezone("UTC"),
                ),
                true,
            ),
            (
                "tn",
                Arc::new(TimestampNanosecondArray::from(vec![None, Some(5), Some(6)])),
                true,
            ),
            (
                "t32",
                Arc::new(Time32MillisecondArray::from(vec![Some(1), Some(2), None])),
                true,
            ),
            (
                "t64",
                Arc::new(Time64MicrosecondArray::from(vec![None, Some(3), Some(4)])),
                true,
            ),
            (
                "dur",
                Arc::new(DurationSecondArray::from(vec![Some(-9), None, Some(9)])),
                true,
            ),
            (
                "h",
                arrow::compute::cast(
                    &Float32Array::from(vec![Some(1.0), None, Some(-2.0)]),
                    &DataType::Float16,
                )
                .unwrap(),
                true,
            ),
            (
                "fsb",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        vec![Some(vec![1u8, 2]), None, Some(vec![0, 0])].into_iter(),
                        2,
                    )
                    .unwrap(),
                ),
                true,
            ),
        ];
        let schema = Schema::new(
            cols.iter()
                .map(|(n, c, null)| Field::new(*n, c.data_type().clone(), *null))
                .collect::<Vec<_>>(),
        );
        let def = TableDef::new(42, "many", &schema, &["id", "name"]).unwrap();
        let batch = RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|c| c.1).collect())
            .unwrap();
        (def, batch)
    }

    /// Row `i` as stored: (key, value).
    fn stored(def: &TableDef, b: &RecordBatch, i: usize) -> (Vec<u8>, Vec<u8>) {
        let keys: Vec<&dyn Array> = def.key_cols.iter().map(|&c| b.column(c).as_ref()).collect();
        let vals: Vec<&dyn Array> = def
            .value_cols()
            .iter()
            .map(|&c| b.column(c).as_ref())
            .collect();
        let (mut k, mut v) = (Vec::new(), Vec::new());
        def.row_key(&keys, i, &mut k);
        def.row_value(&vals, i, &mut v);
        (k, v)
    }

    /// Both update paths on one row: the same stored bytes, the same error, or both
    /// inexact.
    fn same(
        def: &TableDef,
        k: &[u8],
        v: &[u8],
        sets: &[(usize, Calc)],
        params: &[ScalarValue],
    ) -> bool {
        let arrow = update_through_arrow(def, k, v, sets, params);
        match (update_in_place(def, v, sets, params), arrow) {
            (Ok(Edit::Row(a)), Ok(Some(b))) => assert_eq!(a, b, "{sets:?} {params:?}"),
            (Ok(Edit::Inexact), Ok(None)) => {}
            (Ok(Edit::ArrowPath), Ok(_)) => return false,
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!(
                "{sets:?} {params:?}: in place {:?}, arrow {b:?}",
                a.map(|e| match e {
                    Edit::Row(r) => format!("row {r:?}"),
                    Edit::Inexact => "inexact".into(),
                    Edit::ArrowPath => "arrow path".into(),
                })
            ),
        }
        true
    }

    #[test]
    fn in_place_updates_equal_arrow_updates() {
        let (def, b) = table();
        let arrow_only = ["h", "fsb"];
        for r in 0..b.num_rows() {
            let (k, v) = stored(&def, &b, r);
            for c in def.value_cols() {
                let name = def.schema.field(c).name().as_str();
                // Each column set to each row's value of it (NULLs included: an error
                // for the NOT NULL column), from a parameter and from itself.
                for r2 in 0..b.num_rows() {
                    let x = ScalarValue::try_from_array(b.column(c), r2).unwrap();
                    let in_place = x.is_null() || !arrow_only.contains(&name);
                    let direct = same(&def, &k, &v, &[(c, Calc::One(Operand::Param(0)))], &[x]);
                    assert_eq!(direct, in_place, "{name}");
                }
                let null = ScalarValue::Null;
                same(&def, &k, &v, &[(c, Calc::One(Operand::Param(0)))], &[null]);
                same(&def, &k, &v, &[(c, Calc::One(Operand::Col(c)))], &[]);
                // Arithmetic, overflow (inexact) included.
                for op in [Op::Add, Op::Sub, Op::Mul] {
                    let lit = Operand::Lit(ScalarValue::Int64(Some(3)));
                    same(
                        &def,
                        &k,
                        &v,
                        &[(c, Calc::Bin(Operand::Col(c), op, lit))],
                        &[],
                    );
                }
            }
            // Several columns at once; one reads a key column (Arrow path).
            let sets = [
                (
                    2,
                    Calc::Bin(
                        Operand::Col(2),
                        Op::Add,
                        Operand::Lit(ScalarValue::Int32(Some(1))),
                    ),
                ),
                (9, Calc::One(Operand::Param(0))),
                (3, Calc::One(Operand::Lit(ScalarValue::Int8(None)))),
            ];
            assert!(same(
                &def,
                &k,
                &v,
                &sets,
                &[ScalarValue::Utf8(Some("new".into()))]
            ));
            let from_key = [(
                7,
                Calc::Bin(
                    Operand::Col(0),
                    Op::Mul,
                    Operand::Lit(ScalarValue::Float64(Some(0.5))),
                ),
            )];
            assert!(!same(&def, &k, &v, &from_key, &[]));
        }
    }

    #[test]
    fn keys_from_payloads_equal_keys_from_arrays() {
        let (def, b) = table();
        let key = [Operand::Param(0), Operand::Param(1)];
        for r in 0..b.num_rows() {
            let params: Vec<ScalarValue> = def
                .key_cols
                .iter()
                .map(|&c| ScalarValue::try_from_array(b.column(c), r).unwrap())
                .collect();
            let (k, _) = stored(&def, &b, r);
            assert_eq!(key_bytes(&def, &key, &params).unwrap(), Some(k));
        }
        // A key value that does not convert exactly, or NULL: no key.
        let inexact = [
            ScalarValue::Float64(Some(1.5)),
            ScalarValue::Utf8(Some("a".into())),
        ];
        assert_eq!(key_bytes(&def, &key, &inexact).unwrap(), None);
        let null = [
            ScalarValue::Int64(None),
            ScalarValue::Utf8(Some("a".into())),
        ];
        assert_eq!(key_bytes(&def, &key, &null).unwrap(), None);
    }
}
