//! One stored row, read and edited in place: the single-row `UPDATE` locates the value
//! columns of the stored bytes, reads the few it needs, and writes the row back with
//! some of them replaced, without a one-row Arrow batch either way (each costs dozens
//! of allocations per row).
//!
//! Values move in and out as *payloads*: a fixed-width value's little-endian bytes
//! (exactly as the row format stores them), or a string's or binary's bytes.

use super::*;

/// How a non-null value column entry is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    /// This many little-endian bytes.
    Fixed(usize),
    /// A varint length, then the bytes.
    Var,
}

/// How values of type `t` are stored (`t` a [`supported`] type).
pub fn value_width(t: &DataType) -> Width {
    Width::Fixed(match t {
        DataType::Int8 | DataType::UInt8 | DataType::Boolean => 1,
        DataType::Int16 | DataType::UInt16 => 2,
        DataType::Int32
        | DataType::UInt32
        | DataType::Float32
        | DataType::Date32
        | DataType::Time32(_) => 4,
        DataType::Int64
        | DataType::UInt64
        | DataType::Float64
        | DataType::Timestamp(_, _)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Date64 => 8,
        DataType::Decimal128(_, _) => 16,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary => return Width::Var,
        t => match fixed_layout(t) {
            Some((w, _)) => w,
            None => unreachable!("unsupported type {t} passed validation"),
        },
    })
}

/// Append the memcomparable key encoding of a value given as its payload; the same
/// bytes [`encode_key_value`] writes for that value. An error if the payload's length
/// does not fit the type.
pub fn encode_key_payload(t: &DataType, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if let Width::Fixed(w) = value_width(t)
        && payload.len() != w
    {
        return Err(Error::Schema(format!(
            "a {t} key value takes {w} bytes, not {}",
            payload.len()
        )));
    }
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary => put_escaped(out, payload),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            out.extend(payload.iter().rev())
        }
        DataType::Boolean => out.push(payload[0]),
        DataType::Float32 => {
            let b = u32::from_le_bytes(payload.try_into().expect("width checked"));
            let b = if b >> 31 == 1 { !b } else { b | (1 << 31) };
            out.extend_from_slice(&b.to_be_bytes())
        }
        DataType::Float64 => {
            let b = u64::from_le_bytes(payload.try_into().expect("width checked"));
            let b = if b >> 63 == 1 { !b } else { b | (1 << 63) };
            out.extend_from_slice(&b.to_be_bytes())
        }
        t => match fixed_layout(t) {
            Some((_, kind)) => fixed_key(kind, payload, out),
            // Every other type is one signed integer: big-endian, sign bit flipped.
            None => {
                let width: &'static [usize] = match payload.len() {
                    1 => &[1],
                    2 => &[2],
                    4 => &[4],
                    8 => &[8],
                    _ => &[16],
                };
                fixed_key(Fixed::Ints(width), payload, out)
            }
        },
    }
    Ok(())
}

/// The value columns of one stored row, located in its bytes.
#[derive(Debug)]
pub struct RowSpans {
    /// Bytes before the null bitmap (the format byte and, if any, the schema version).
    header: usize,
    /// Per value column (the table's columns in schema order, key columns left out):
    /// how it is stored, and its payload's start and end in the value (`None`: NULL).
    cols: Vec<(Width, Option<(usize, usize)>)>,
}

impl RowSpans {
    /// Locate the value columns of `value`, a row of table `def`. `Ok(None)`: the row
    /// was written at an earlier schema version (or the table stores raw bytes); read
    /// it with a [`RowDecoder`] instead.
    pub fn locate(def: &crate::table::TableDef, value: &[u8]) -> Result<Option<RowSpans>> {
        if def.raw_kv {
            return Ok(None);
        }
        let mut c = Cursor { b: value, pos: 0 };
        let version = c.row_version()?;
        if version != def.layout.version {
            return Ok(None);
        }
        let header = c.pos;
        let n = def.schema.fields().len() - def.key_cols.len();
        let nulls = c.take(n.div_ceil(8))?;
        let mut cols = Vec::with_capacity(n);
        let value_cols = (0..def.schema.fields().len()).filter(|i| !def.key_cols.contains(i));
        for (j, i) in value_cols.enumerate() {
            let w = value_width(def.schema.field(i).data_type());
            if nulls[j / 8] & (1 << (j % 8)) != 0 {
                cols.push((w, None));
                continue;
            }
            let len = match w {
                Width::Fixed(len) => len,
                Width::Var => c.varint()?,
            };
            let start = c.pos;
            c.take(len)?;
            cols.push((w, Some((start, c.pos))));
        }
        if c.pos != value.len() {
            return Err(Error::Schema("trailing bytes in encoded row".into()));
        }
        Ok(Some(RowSpans { header, cols }))
    }

    /// How many value columns the row has.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Value column `j`'s payload in `value` (the bytes it was located in); `None` for
    /// NULL.
    pub fn payload<'a>(&self, value: &'a [u8], j: usize) -> Option<&'a [u8]> {
        self.cols[j].1.map(|(s, e)| &value[s..e])
    }

    /// `value` (the bytes it was located in) with the value columns named in `new`
    /// replaced by those payloads (`None`: NULL), into `out`. An error if a payload's
    /// length does not fit its column's type.
    pub fn rebuild(
        &self,
        value: &[u8],
        new: &[(usize, Option<&[u8]>)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        out.extend_from_slice(&value[..self.header]);
        let bitmap = out.len();
        out.resize(bitmap + self.cols.len().div_ceil(8), 0);
        for (j, (w, old)) in self.cols.iter().enumerate() {
            let v = match new.iter().rev().find(|(c, _)| *c == j) {
                Some((_, v)) => *v,
                None => old.map(|(s, e)| &value[s..e]),
            };
            let Some(v) = v else {
                out[bitmap + j / 8] |= 1 << (j % 8);
                continue;
            };
            match w {
                Width::Fixed(n) if v.len() != *n => {
                    return Err(Error::Schema(format!(
                        "value column {j} takes {n} bytes, not {}",
                        v.len()
                    )));
                }
                Width::Fixed(_) => {}
                Width::Var => put_varint(out, v.len() as u64),
            }
            out.extend_from_slice(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableDef;
    use arrow::datatypes::i256;

    /// Columns of every stored type, edge values first, then a NULL.
    fn columns() -> Vec<ArrayRef> {
        let ints = [i64::MIN, -1, 0, 1, i64::MAX];
        vec![
            Arc::new(Int8Array::from(vec![
                Some(i8::MIN),
                Some(-1),
                Some(0),
                Some(i8::MAX),
                None,
            ])),
            Arc::new(Int16Array::from(vec![
                Some(i16::MIN),
                Some(-1),
                Some(0),
                Some(i16::MAX),
                None,
            ])),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(-1),
                Some(0),
                Some(i32::MAX),
                None,
            ])),
            Arc::new(Int64Array::from(
                ints.iter()
                    .map(|&v| Some(v))
                    .chain([None])
                    .collect::<Vec<_>>(),
            )),
            Arc::new(UInt8Array::from(vec![
                Some(0),
                Some(1),
                Some(u8::MAX),
                None,
            ])),
            Arc::new(UInt16Array::from(vec![
                Some(0),
                Some(1),
                Some(u16::MAX),
                None,
            ])),
            Arc::new(UInt32Array::from(vec![
                Some(0),
                Some(1),
                Some(u32::MAX),
                None,
            ])),
            Arc::new(UInt64Array::from(vec![
                Some(0),
                Some(1),
                Some(u64::MAX),
                None,
            ])),
            Arc::new(Float32Array::from(vec![
                Some(f32::NEG_INFINITY),
                Some(-1.5),
                Some(-0.0),
                Some(0.0),
                Some(f32::NAN),
                None,
            ])),
            Arc::new(Float64Array::from(vec![
                Some(-2.5),
                Some(-0.0),
                Some(1e300),
                Some(f64::INFINITY),
                None,
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(-12345), Some(0), Some(i128::MAX), None])
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(vec![
                Some(""),
                Some("a\0b"),
                Some("ünï"),
                None,
            ])),
            Arc::new(LargeStringArray::from(vec![Some("x"), Some(""), None])),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                Some(&b""[..]),
                None,
            ])),
            Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
            Arc::new(Date32Array::from(vec![Some(-1), Some(19000), None])),
            Arc::new(Date64Array::from(vec![Some(-86_400_000), Some(0), None])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(-5), Some(1_700_000_000_000_000), None])
                    .with_timezone("UTC"),
            ),
            Arc::new(Time32SecondArray::from(vec![Some(0), Some(86_399), None])),
            Arc::new(Time64NanosecondArray::from(vec![Some(0), Some(1), None])),
            Arc::new(DurationMillisecondArray::from(vec![
                Some(-7),
                Some(7),
                None,
            ])),
            arrow::compute::cast(
                &Float32Array::from(vec![Some(-1.0), Some(2.0), None]),
                &DataType::Float16,
            )
            .unwrap(),
            Arc::new(Decimal256Array::from(vec![
                Some(i256::from_i128(-3)),
                Some(i256::MAX),
                None,
            ])),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![Some(vec![0u8, 1, 2]), Some(vec![255, 0, 9]), None].into_iter(),
                    3,
                )
                .unwrap(),
            ),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(-1, 2, -3)),
                Some(IntervalMonthDayNano::new(0, 0, 0)),
                None,
            ])),
        ]
    }

    /// A table `(id Int32 PRIMARY KEY, v <t>)`.
    fn table(t: &DataType) -> TableDef {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("v", t.clone(), true),
        ]);
        TableDef::new(7, "t", &schema, &["id"]).unwrap()
    }

    fn stored(col: &dyn Array, i: usize) -> Vec<u8> {
        let mut v = Vec::new();
        encode_row_value(&[col], i, &mut v);
        v
    }

    #[test]
    fn payload_keys_equal_array_keys_for_every_type() {
        for col in columns() {
            let def = table(col.data_type());
            for i in 0..col.len() {
                let v = stored(col.as_ref(), i);
                let spans = RowSpans::locate(&def, &v)
                    .unwrap()
                    .expect("current version");
                assert_eq!(spans.len(), 1);
                let Some(p) = spans.payload(&v, 0) else {
                    assert!(col.is_null(i));
                    continue;
                };
                let (mut want, mut got) = (Vec::new(), Vec::new());
                encode_key_value(col.as_ref(), i, &mut want);
                encode_key_payload(col.data_type(), p, &mut got).unwrap();
                assert_eq!(got, want, "{} row {i}", col.data_type());
            }
        }
        // A payload of the wrong width is an error, not a panic.
        assert!(encode_key_payload(&DataType::Int64, &[1, 2], &mut Vec::new()).is_err());
    }

    #[test]
    fn rebuilt_rows_equal_rows_encoded_from_arrays() {
        // A table of every type (key: the Int32 column, first); each row rebuilt with
        // each column taken from another row equals that mix encoded from arrays.
        let cols = columns();
        let n = cols.iter().map(|c| c.len()).min().unwrap();
        let mut fields = vec![Field::new("id", DataType::Int32, false)];
        fields.extend(
            cols.iter()
                .enumerate()
                .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true)),
        );
        let def = TableDef::new(9, "all", &Schema::new(fields), &["id"]).unwrap();
        let refs: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let rows: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut v = Vec::new();
                encode_row_value(&refs, i, &mut v);
                v
            })
            .collect();
        let mut out = Vec::new();
        for (a, row) in rows.iter().enumerate() {
            let spans = RowSpans::locate(&def, row).unwrap().unwrap();
            assert_eq!(spans.len(), cols.len());
            for (b, other) in rows.iter().enumerate() {
                let o = RowSpans::locate(&def, other).unwrap().unwrap();
                for j in 0..cols.len() {
                    spans
                        .rebuild(row, &[(j, o.payload(other, j))], &mut out)
                        .unwrap();
                    // Expected: row a with column j of row b, through the arrays.
                    let mixed: Vec<ArrayRef> = cols
                        .iter()
                        .enumerate()
                        .map(|(k, c)| c.slice(if k == j { b } else { a }, 1))
                        .collect();
                    let mixed: Vec<&dyn Array> = mixed.iter().map(|c| c.as_ref()).collect();
                    let mut want = Vec::new();
                    encode_row_value(&mixed, 0, &mut want);
                    assert_eq!(out, want, "row {a} with column {j} of row {b}");
                }
            }
        }
    }

    #[test]
    fn damaged_and_older_rows() {
        let col = Int64Array::from(vec![Some(5)]);
        let def = table(&DataType::Int64);
        let v = stored(&col, 0);
        // Truncated, trailing bytes, unknown format: errors.
        assert!(RowSpans::locate(&def, &v[..v.len() - 1]).is_err());
        assert!(RowSpans::locate(&def, &[v.clone(), vec![0]].concat()).is_err());
        assert!(RowSpans::locate(&def, &[9, 0]).is_err());
        assert!(RowSpans::locate(&def, &[]).is_err());
        // A row of another schema version: not located (the decoder reads it).
        let mut older = Vec::new();
        encode_row_value_at(&[&col], 0, 3, &mut older);
        assert!(RowSpans::locate(&def, &older).unwrap().is_none());
        // A payload of the wrong width is an error.
        let spans = RowSpans::locate(&def, &v).unwrap().unwrap();
        assert!(
            spans
                .rebuild(&v, &[(0, Some(&[1, 2, 3]))], &mut Vec::new())
                .is_err()
        );
        // NULL in, NULL out.
        let mut out = Vec::new();
        spans.rebuild(&v, &[(0, None)], &mut out).unwrap();
        let null = stored(&Int64Array::from(vec![None::<i64>]), 0);
        assert_eq!(out, null);
    }
}
