//! Row-store encodings of table rows.
//!
//! - **Keys** are memcomparable: the bytes of encoded keys sort exactly like the key
//!   values (column by column), so the row store's byte order is primary-key order.
//!   Integers are big-endian with the sign bit flipped, floats use their total-order
//!   bits, strings and binaries escape 0x00 as 0x00 0xFF and end with 0x00 0x01.
//! - **Values** (the non-key columns) are a version byte, a null bitmap, then each
//!   non-null value: fixed-width little-endian, or varint length + bytes.
//!
//! Both are documented in FORMAT.md; the layout is ours (not arrow-row's, whose format
//! may change between Arrow versions).

use crate::error::{Error, Result};
use arrow::array::*;
use arrow::datatypes::*;
use std::sync::Arc;

mod decode;
mod inplace;
pub use decode::RowDecoder;
pub use inplace::{RowSpans, Width, encode_key_payload, value_width};

const ROW_FORMAT_VERSION: u8 = 1;
/// Row format 2: format 1 with the table's schema version (a varint) after the format
/// byte. Written by tables altered in place (schema version > 0).
const ROW_FORMAT_VERSIONED: u8 = 2;

/// Is `t` a type tables may use?
pub fn supported(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::Boolean
            | DataType::Date32
            | DataType::Timestamp(_, _)
            | DataType::Date64
            | DataType::Time32(TimeUnit::Second | TimeUnit::Millisecond)
            | DataType::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond)
            | DataType::Duration(_)
    ) || fixed_layout(t).is_some()
}

/// How the fixed-width types without an Arrow builder of their own here are stored:
/// their bytes as Arrow holds them (little-endian), and for keys, what they are made
/// of (each signed integer big-endian with its sign bit flipped; a half float by its
/// total-order bits; binary as it is).
#[derive(Clone, Copy, Debug)]
pub enum Fixed {
    Raw,
    Ints(&'static [usize]),
    Half,
}

/// Width and [`Fixed`] kind of `Float16`, `Decimal256`, `FixedSizeBinary` and
/// intervals.
fn fixed_layout(t: &DataType) -> Option<(usize, Fixed)> {
    Some(match t {
        DataType::Float16 => (2, Fixed::Half),
        DataType::Decimal256(_, _) => (32, Fixed::Ints(&[32])),
        DataType::FixedSizeBinary(n) if *n > 0 => (*n as usize, Fixed::Raw),
        DataType::Interval(IntervalUnit::YearMonth) => (4, Fixed::Ints(&[4])),
        DataType::Interval(IntervalUnit::DayTime) => (8, Fixed::Ints(&[4, 4])),
        DataType::Interval(IntervalUnit::MonthDayNano) => (16, Fixed::Ints(&[4, 4, 8])),
        _ => return None,
    })
}

/// The stored bytes of row `i` of a [`fixed_layout`] column (its width is the type's).
fn fixed_bytes(col: &dyn Array, i: usize, out: &mut Vec<u8>) {
    use arrow::datatypes::ToByteSlice;
    fn native<T: ArrowPrimitiveType>(col: &dyn Array, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(col.as_primitive::<T>().value(i).to_byte_slice())
    }
    match col.data_type() {
        DataType::FixedSizeBinary(_) => out.extend_from_slice(col.as_fixed_size_binary().value(i)),
        DataType::Float16 => native::<Float16Type>(col, i, out),
        DataType::Decimal256(_, _) => native::<Decimal256Type>(col, i, out),
        DataType::Interval(IntervalUnit::YearMonth) => native::<IntervalYearMonthType>(col, i, out),
        DataType::Interval(IntervalUnit::DayTime) => native::<IntervalDayTimeType>(col, i, out),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            native::<IntervalMonthDayNanoType>(col, i, out)
        }
        t => unreachable!("{t} is not a fixed-width stored type"),
    }
}

/// Memcomparable form of fixed-width little-endian bytes `le`.
fn fixed_key(kind: Fixed, le: &[u8], out: &mut Vec<u8>) {
    match kind {
        Fixed::Raw => out.extend_from_slice(le),
        Fixed::Half => {
            let b = u16::from_le_bytes([le[0], le[1]]);
            let b = if b >> 15 == 1 { !b } else { b | (1 << 15) };
            out.extend_from_slice(&b.to_be_bytes())
        }
        Fixed::Ints(widths) => {
            let mut at = 0;
            for &w in widths {
                let start = out.len();
                out.extend(le[at..at + w].iter().rev());
                out[start] ^= 0x80;
                at += w;
            }
        }
    }
}

/// The little-endian bytes [`fixed_key`] encoded as `key`.
fn fixed_unkey(kind: Fixed, key: &[u8], out: &mut Vec<u8>) {
    match kind {
        Fixed::Raw => out.extend_from_slice(key),
        Fixed::Half => {
            let b = u16::from_be_bytes([key[0], key[1]]);
            let b = if b >> 15 == 1 { b & !(1 << 15) } else { !b };
            out.extend_from_slice(&b.to_le_bytes())
        }
        Fixed::Ints(widths) => {
            let mut at = 0;
            for &w in widths {
                let start = out.len();
                out.extend(key[at..at + w].iter().rev());
                out[start + w - 1] ^= 0x80;
                at += w;
            }
        }
    }
}

/// Row `i` of `col`, downcast to the first of the primitive array types that fits.
macro_rules! value_of_first {
    ($col:expr, $i:expr, $($t:ty),*) => {{
        $(if let Some(a) = $col.as_any().downcast_ref::<PrimitiveArray<$t>>() {
            return a.value($i);
        })*
        unreachable!("column of type {} is not stored as {}", $col.data_type(), stringify!($($t),*))
    }};
}

/// Row `i` of a column whose values are 64-bit integers underneath (`Int64`,
/// timestamps, `Time64`, durations, `Date64`).
fn native_i64(col: &dyn Array, i: usize) -> i64 {
    value_of_first!(
        col,
        i,
        Int64Type,
        TimestampNanosecondType,
        TimestampMicrosecondType,
        TimestampMillisecondType,
        TimestampSecondType,
        Time64NanosecondType,
        Time64MicrosecondType,
        DurationNanosecondType,
        DurationMicrosecondType,
        DurationMillisecondType,
        DurationSecondType,
        Date64Type
    )
}

/// Row `i` of a column whose values are 32-bit integers underneath (`Int32`, `Date32`,
/// `Time32`).
fn native_i32(col: &dyn Array, i: usize) -> i32 {
    value_of_first!(
        col,
        i,
        Int32Type,
        Date32Type,
        Time32SecondType,
        Time32MillisecondType
    )
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_escaped(out: &mut Vec<u8>, b: &[u8]) {
    for &x in b {
        out.push(x);
        if x == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

macro_rules! prim {
    ($arr:expr, $t:ty) => {
        $arr.as_any()
            .downcast_ref::<PrimitiveArray<$t>>()
            .expect("type checked")
    };
}

/// Append the memcomparable encoding of row `i` of `col` (non-null) to `out`.
pub fn encode_key_value(col: &dyn Array, i: usize, out: &mut Vec<u8>) {
    match col.data_type() {
        DataType::Int8 => out.push((prim!(col, Int8Type).value(i) as u8) ^ 0x80),
        DataType::Int16 => out.extend_from_slice(
            &((prim!(col, Int16Type).value(i) as u16) ^ (1 << 15)).to_be_bytes(),
        ),
        DataType::Int32 => out.extend_from_slice(
            &((prim!(col, Int32Type).value(i) as u32) ^ (1 << 31)).to_be_bytes(),
        ),
        DataType::Int64 => out.extend_from_slice(
            &((prim!(col, Int64Type).value(i) as u64) ^ (1 << 63)).to_be_bytes(),
        ),
        DataType::Date32 => out.extend_from_slice(
            &((prim!(col, Date32Type).value(i) as u32) ^ (1 << 31)).to_be_bytes(),
        ),
        DataType::Timestamp(_, _)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Date64 => {
            out.extend_from_slice(&((native_i64(col, i) as u64) ^ (1 << 63)).to_be_bytes())
        }
        DataType::Time32(_) => {
            out.extend_from_slice(&((native_i32(col, i) as u32) ^ (1 << 31)).to_be_bytes())
        }
        DataType::UInt8 => out.push(prim!(col, UInt8Type).value(i)),
        DataType::UInt16 => out.extend_from_slice(&prim!(col, UInt16Type).value(i).to_be_bytes()),
        DataType::UInt32 => out.extend_from_slice(&prim!(col, UInt32Type).value(i).to_be_bytes()),
        DataType::UInt64 => out.extend_from_slice(&prim!(col, UInt64Type).value(i).to_be_bytes()),
        DataType::Float32 => {
            let b = prim!(col, Float32Type).value(i).to_bits();
            let b = if b >> 31 == 1 { !b } else { b | (1 << 31) };
            out.extend_from_slice(&b.to_be_bytes())
        }
        DataType::Float64 => {
            let b = prim!(col, Float64Type).value(i).to_bits();
            let b = if b >> 63 == 1 { !b } else { b | (1 << 63) };
            out.extend_from_slice(&b.to_be_bytes())
        }
        DataType::Decimal128(_, _) => {
            let v = prim!(col, Decimal128Type).value(i);
            out.extend_from_slice(&((v as u128) ^ (1 << 127)).to_be_bytes())
        }
        DataType::Boolean => out.push(col.as_boolean().value(i) as u8),
        DataType::Utf8 => put_escaped(out, col.as_string::<i32>().value(i).as_bytes()),
        DataType::LargeUtf8 => put_escaped(out, col.as_string::<i64>().value(i).as_bytes()),
        DataType::Binary => put_escaped(out, col.as_binary::<i32>().value(i)),
        t => match fixed_layout(t) {
            Some((w, kind)) => {
                let mut le = Vec::with_capacity(w);
                fixed_bytes(col, i, &mut le);
                fixed_key(kind, &le, out)
            }
            None => unreachable!("unsupported key type {t} passed validation"),
        },
    }
}

/// Append the value encoding of row `i` of `cols` (the non-key columns) to `out`.
pub fn encode_row_value(cols: &[&dyn Array], i: usize, out: &mut Vec<u8>) {
    out.push(ROW_FORMAT_VERSION);
    encode_row_body(cols, i, out)
}

/// [`encode_row_value`] for a table at schema version `version`.
pub fn encode_row_value_at(cols: &[&dyn Array], i: usize, version: u32, out: &mut Vec<u8>) {
    if version == 0 {
        return encode_row_value(cols, i, out);
    }
    out.push(ROW_FORMAT_VERSIONED);
    put_varint(out, u64::from(version));
    encode_row_body(cols, i, out)
}

fn encode_row_body(cols: &[&dyn Array], i: usize, out: &mut Vec<u8>) {
    let nb = cols.len().div_ceil(8);
    let start = out.len();
    out.resize(start + nb, 0);
    for (c, col) in cols.iter().enumerate() {
        if col.is_null(i) {
            out[start + c / 8] |= 1 << (c % 8);
            continue;
        }
        match col.data_type() {
            DataType::Int8 => out.push(prim!(col, Int8Type).value(i) as u8),
            DataType::Int16 => out.extend_from_slice(&prim!(col, Int16Type).value(i).to_le_bytes()),
            DataType::Int32 => out.extend_from_slice(&prim!(col, Int32Type).value(i).to_le_bytes()),
            DataType::Int64 => out.extend_from_slice(&prim!(col, Int64Type).value(i).to_le_bytes()),
            DataType::Date32 => {
                out.extend_from_slice(&prim!(col, Date32Type).value(i).to_le_bytes())
            }
            DataType::Timestamp(_, _)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Date64 => out.extend_from_slice(&native_i64(*col, i).to_le_bytes()),
            DataType::Time32(_) => out.extend_from_slice(&native_i32(*col, i).to_le_bytes()),
            DataType::UInt8 => out.push(prim!(col, UInt8Type).value(i)),
            DataType::UInt16 => {
                out.extend_from_slice(&prim!(col, UInt16Type).value(i).to_le_bytes())
            }
            DataType::UInt32 => {
                out.extend_from_slice(&prim!(col, UInt32Type).value(i).to_le_bytes())
            }
            DataType::UInt64 => {
                out.extend_from_slice(&prim!(col, UInt64Type).value(i).to_le_bytes())
            }
            DataType::Float32 => {
                out.extend_from_slice(&prim!(col, Float32Type).value(i).to_le_bytes())
            }
            DataType::Float64 => {
                out.extend_from_slice(&prim!(col, Float64Type).value(i).to_le_bytes())
            }
            DataType::Decimal128(_, _) => {
                out.extend_from_slice(&prim!(col, Decimal128Type).value(i).to_le_bytes())
            }
            DataType::Boolean => out.push(col.as_boolean().value(i) as u8),
            DataType::Utf8 => {
                let s = col.as_string::<i32>().value(i).as_bytes();
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s)
            }
            DataType::LargeUtf8 => {
                let s = col.as_string::<i64>().value(i).as_bytes();
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s)
            }
            DataType::Binary => {
                let s = col.as_binary::<i32>().value(i);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s)
            }
            t => match fixed_layout(t) {
                Some(_) => fixed_bytes(*col, i, out),
                None => unreachable!("unsupported type {t} passed validation"),
            },
        }
    }
}

/// A typed builder for one column, fed from encoded bytes.
pub enum ColumnBuilder {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, DataType),
    /// Strings are collected as bytes and their UTF-8 checked once per batch, over the
    /// whole buffer, when the builder finishes (not value by value).
    Str(BinaryBuilder),
    LStr(LargeBinaryBuilder),
    Bin(BinaryBuilder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    /// 64-bit integers shown as `DataType` (timestamps, `Time64`, durations, `Date64`).
    Ts(Int64Builder, DataType),
    /// 32-bit integers shown as `DataType` (`Time32`).
    T32(Int32Builder, DataType),
    /// Values of a [`fixed_layout`] type: their bytes, one after another.
    Fixed {
        data: Vec<u8>,
        nulls: arrow::array::NullBufferBuilder,
        width: usize,
        kind: Fixed,
        t: DataType,
    },
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Read a stored row value's header: its table schema version (0 for format 1).
    fn row_version(&mut self) -> Result<u32> {
        match self.take(1)?[0] {
            ROW_FORMAT_VERSION => Ok(0),
            ROW_FORMAT_VERSIONED => u32::try_from(self.varint()?)
                .map_err(|_| Error::Schema("bad schema version in encoded row".into())),
            _ => Err(Error::Schema("unknown row format version".into())),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.pos < n {
            return Err(Error::Schema("encoded row is truncated".into()));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn varint(&mut self) -> Result<usize> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(v).map_err(|_| Error::Schema("length overflow".into()));
            }
        }
        Err(Error::Schema("bad varint in encoded row".into()))
    }
    fn escaped(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let x = self.take(1)?[0];
            if x != 0 {
                out.push(x);
                continue;
            }
            match self.take(1)?[0] {
                0xFF => out.push(0),
                1 => return Ok(out),
                _ => return Err(Error::Schema("bad escape in encoded key".into())),
            }
        }
    }
}

impl ColumnBuilder {
    pub fn new(t: &DataType, cap: usize) -> ColumnBuilder {
        Self::with_bytes(t, cap, cap * 8)
    }

    /// A builder for `cap` values; variable-width columns reserve `bytes` of data.
    pub fn with_bytes(t: &DataType, cap: usize, bytes: usize) -> ColumnBuilder {
        match t {
            DataType::Int8 => ColumnBuilder::I8(Int8Builder::with_capacity(cap)),
            DataType::Int16 => ColumnBuilder::I16(Int16Builder::with_capacity(cap)),
            DataType::Int32 => ColumnBuilder::I32(Int32Builder::with_capacity(cap)),
            DataType::Int64 => ColumnBuilder::I64(Int64Builder::with_capacity(cap)),
            DataType::UInt8 => ColumnBuilder::U8(UInt8Builder::with_capacity(cap)),
            DataType::UInt16 => ColumnBuilder::U16(UInt16Builder::with_capacity(cap)),
            DataType::UInt32 => ColumnBuilder::U32(UInt32Builder::with_capacity(cap)),
            DataType::UInt64 => ColumnBuilder::U64(UInt64Builder::with_capacity(cap)),
            DataType::Float32 => ColumnBuilder::F32(Float32Builder::with_capacity(cap)),
            DataType::Float64 => ColumnBuilder::F64(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(_, _) => {
                ColumnBuilder::Dec(Decimal128Builder::with_capacity(cap), t.clone())
            }
            DataType::Utf8 => ColumnBuilder::Str(BinaryBuilder::with_capacity(cap, bytes)),
            DataType::LargeUtf8 => {
                ColumnBuilder::LStr(LargeBinaryBuilder::with_capacity(cap, bytes))
            }
            DataType::Binary => ColumnBuilder::Bin(BinaryBuilder::with_capacity(cap, bytes)),
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(_, _)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Date64 => ColumnBuilder::Ts(Int64Builder::with_capacity(cap), t.clone()),
            DataType::Time32(_) => ColumnBuilder::T32(Int32Builder::with_capacity(cap), t.clone()),
            t if fixed_layout(t).is_some() => {
                let (width, kind) = fixed_layout(t).expect("checked");
                ColumnBuilder::Fixed {
                    data: Vec::with_capacity(cap * width),
                    nulls: arrow::array::NullBufferBuilder::new(cap),
                    width,
                    kind,
                    t: t.clone(),
                }
            }
            t => unreachable!("unsupported type {t} passed validation"),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::I8(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) => b.append_null(),
            ColumnBuilder::U8(b) => b.append_null(),
            ColumnBuilder::U16(b) => b.append_null(),
            ColumnBuilder::U32(b) => b.append_null(),
            ColumnBuilder::U64(b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Dec(b, _) => b.append_null(),
            ColumnBuilder::Str(b) => b.append_null(),
            ColumnBuilder::LStr(b) => b.append_null(),
            ColumnBuilder::Bin(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Ts(b, _) => b.append_null(),
            ColumnBuilder::T32(b, _) => b.append_null(),
            ColumnBuilder::Fixed {
                data, nulls, width, ..
            } => {
                data.resize(data.len() + *width, 0);
                nulls.append_null();
            }
        }
    }

    /// Decode one key column value (memcomparable) and append it.
    fn append_key(&mut self, c: &mut Cursor) -> Result<()> {
        match self {
            ColumnBuilder::I8(b) => b.append_value((c.arr::<1>()?[0] ^ 0x80) as i8),
            ColumnBuilder::I16(b) => {
                b.append_value((u16::from_be_bytes(c.arr()?) ^ (1 << 15)) as i16)
            }
            ColumnBuilder::I32(b) => {
                b.append_value((u32::from_be_bytes(c.arr()?) ^ (1 << 31)) as i32)
            }
            ColumnBuilder::I64(b) => {
                b.append_value((u64::from_be_bytes(c.arr()?) ^ (1 << 63)) as i64)
            }
            ColumnBuilder::Date(b) => {
                b.append_value((u32::from_be_bytes(c.arr()?) ^ (1 << 31)) as i32)
            }
            ColumnBuilder::Ts(b, _) => {
                b.append_value((u64::from_be_bytes(c.arr()?) ^ (1 << 63)) as i64)
            }
            ColumnBuilder::T32(b, _) => {
                b.append_value((u32::from_be_bytes(c.arr()?) ^ (1 << 31)) as i32)
            }
            ColumnBuilder::Fixed {
                data,
                nulls,
                width,
                kind,
                ..
            } => {
                fixed_unkey(*kind, c.take(*width)?, data);
                nulls.append_non_null();
            }
            ColumnBuilder::U8(b) => b.append_value(c.arr::<1>()?[0]),
            ColumnBuilder::U16(b) => b.append_value(u16::from_be_bytes(c.arr()?)),
            ColumnBuilder::U32(b) => b.append_value(u32::from_be_bytes(c.arr()?)),
            ColumnBuilder::U64(b) => b.append_value(u64::from_be_bytes(c.arr()?)),
            ColumnBuilder::F32(b) => {
                let x = u32::from_be_bytes(c.arr()?);
                let x = if x >> 31 == 1 { x & !(1 << 31) } else { !x };
                b.append_value(f32::from_bits(x))
            }
            ColumnBuilder::F64(b) => {
                let x = u64::from_be_bytes(c.arr()?);
                let x = if x >> 63 == 1 { x & !(1 << 63) } else { !x };
                b.append_value(f64::from_bits(x))
            }
            ColumnBuilder::Dec(b, _) => {
                b.append_value((u128::from_be_bytes(c.arr()?) ^ (1 << 127)) as i128)
            }
            ColumnBuilder::Bool(b) => b.append_value(c.arr::<1>()?[0] != 0),
            ColumnBuilder::Str(b) => b.append_value(c.escaped()?),
            ColumnBuilder::LStr(b) => b.append_value(c.escaped()?),
            ColumnBuilder::Bin(b) => b.append_value(c.escaped()?),
        }
        Ok(())
    }

    /// Decode one non-null value column entry and append it.
    fn append_value(&mut self, c: &mut Cursor) -> Result<()> {
        match self {
            ColumnBuilder::I8(b) => b.append_value(c.arr::<1>()?[0] as i8),
            ColumnBuilder::I16(b) => b.append_value(i16::from_le_bytes(c.arr()?)),
            ColumnBuilder::I32(b) => b.append_value(i32::from_le_bytes(c.arr()?)),
            ColumnBuilder::I64(b) => b.append_value(i64::from_le_bytes(c.arr()?)),
            ColumnBuilder::Date(b) => b.append_value(i32::from_le_bytes(c.arr()?)),
            ColumnBuilder::Ts(b, _) => b.append_value(i64::from_le_bytes(c.arr()?)),
            ColumnBuilder::T32(b, _) => b.append_value(i32::from_le_bytes(c.arr()?)),
            ColumnBuilder::Fixed {
                data, nulls, width, ..
            } => {
                data.extend_from_slice(c.take(*width)?);
                nulls.append_non_null();
            }
            ColumnBuilder::U8(b) => b.append_value(c.arr::<1>()?[0]),
            ColumnBuilder::U16(b) => b.append_value(u16::from_le_bytes(c.arr()?)),
            ColumnBuilder::U32(b) => b.append_value(u32::from_le_bytes(c.arr()?)),
            ColumnBuilder::U64(b) => b.append_value(u64::from_le_bytes(c.arr()?)),
            ColumnBuilder::F32(b) => b.append_value(f32::from_le_bytes(c.arr()?)),
            ColumnBuilder::F64(b) => b.append_value(f64::from_le_bytes(c.arr()?)),
            ColumnBuilder::Dec(b, _) => b.append_value(i128::from_le_bytes(c.arr()?)),
            ColumnBuilder::Bool(b) => b.append_value(c.arr::<1>()?[0] != 0),
            ColumnBuilder::Str(b) => {
                let n = c.varint()?;
                b.append_value(c.take(n)?)
            }
            ColumnBuilder::LStr(b) => {
                let n = c.varint()?;
                b.append_value(c.take(n)?)
            }
            ColumnBuilder::Bin(b) => {
                let n = c.varint()?;
                b.append_value(c.take(n)?)
            }
        }
        Ok(())
    }

    /// Append raw bytes as a Binary value (the built-in `kv` table stores raw values).
    pub fn append_raw_binary(&mut self, v: Option<&[u8]>) {
        if let ColumnBuilder::Bin(b) = self {
            b.append_option(v);
        }
    }

    /// Bytes of variable-width data appended so far (0 for fixed-width columns).
    fn data_bytes(&self) -> usize {
        match self {
            ColumnBuilder::Str(b) => b.values_slice().len(),
            ColumnBuilder::LStr(b) => b.values_slice().len(),
            ColumnBuilder::Bin(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    pub fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnBuilder::I8(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I16(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I32(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::U8(mut b) => Arc::new(b.finish()),
            ColumnBuilder::U16(mut b) => Arc::new(b.finish()),
            ColumnBuilder::U32(mut b) => Arc::new(b.finish()),
            ColumnBuilder::U64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::F32(mut b) => Arc::new(b.finish()),
            ColumnBuilder::F64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Dec(mut b, t) => Arc::new(b.finish().with_data_type(t)),
            ColumnBuilder::Str(mut b) => Arc::new(
                StringArray::try_from_binary(b.finish())
                    .map_err(|_| Error::Schema("stored string is not UTF-8".into()))?,
            ),
            ColumnBuilder::LStr(mut b) => Arc::new(
                LargeStringArray::try_from_binary(b.finish())
                    .map_err(|_| Error::Schema("stored string is not UTF-8".into()))?,
            ),
            ColumnBuilder::Bin(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(mut b, t) => {
                let a = b.finish();
                arrow::compute::cast(&a, &t)?
            }
            ColumnBuilder::T32(mut b, t) => {
                let a = b.finish();
                arrow::compute::cast(&a, &t)?
            }
            ColumnBuilder::Fixed {
                data,
                mut nulls,
                width,
                t,
                ..
            } => {
                let data = ArrayData::builder(t)
                    .len(data.len() / width)
                    .add_buffer(arrow::buffer::Buffer::from_vec(data))
                    .nulls(nulls.finish())
                    .build()?;
                make_array(data)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(cols: &[ArrayRef], i: usize) -> Vec<u8> {
        let mut k = Vec::new();
        for c in cols {
            encode_key_value(c.as_ref(), i, &mut k);
        }
        k
    }

    #[test]
    fn key_bytes_sort_like_values() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![i64::MIN, -5, -1, 0, 1, 7, i64::MAX]));
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-9,
            3.0,
            f64::INFINITY,
        ]));
        let strs: ArrayRef = Arc::new(StringArray::from(vec![
            "", "\0", "\0\0", "a", "a\0", "ab", "b",
        ]));
        for col in [ints, floats, strs] {
            let keys: Vec<_> = (0..col.len())
                .map(|i| key_of(std::slice::from_ref(&col), i))
                .collect();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "{:?}",
                col.data_type()
            );
        }
        // Composite keys: first column dominates.
        let a: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "ab"]));
        let b: ArrayRef = Arc::new(Int32Array::from(vec![5, 9, -3]));
        let keys: Vec<_> = (0..3).map(|i| key_of(&[a.clone(), b.clone()], i)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn rows_roundtrip_with_nulls_and_every_type() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("i8", DataType::Int8, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("dec", DataType::Decimal128(12, 2), true),
            Field::new("ls", DataType::LargeUtf8, true),
            Field::new("bin", DataType::Binary, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![1, -2])),
            Arc::new(StringArray::from(vec!["x\0y", ""])),
            Arc::new(Int8Array::from(vec![Some(-3), None])),
            Arc::new(UInt64Array::from(vec![None, Some(u64::MAX)])),
            Arc::new(Float32Array::from(vec![Some(1.5), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(LargeStringArray::from(vec![None, Some("large")])),
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01"[..]), None])),
            Arc::new(BooleanArray::from(vec![Some(true), None])),
            Arc::new(Date32Array::from(vec![Some(19000), None])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000), None])
                    .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let key_cols = [0usize, 1];
        let mut dec = RowDecoder::new(schema.clone(), &key_cols, false, 2);
        for i in 0..2 {
            let k: Vec<ArrayRef> = key_cols.iter().map(|&c| batch.column(c).clone()).collect();
            let key = key_of(&k, i);
            let vals: Vec<&dyn Array> = (2..11).map(|c| batch.column(c).as_ref()).collect();
            let mut v = Vec::new();
            encode_row_value(&vals, i, &mut v);
            dec.push(&key, &v).unwrap();
            // Damaged rows are errors, not panics.
            assert!(
                RowDecoder::new(schema.clone(), &key_cols, false, 1)
                    .push(&key, &v[..v.len() - 1])
                    .is_err()
            );
        }
        assert_eq!(dec.finish().unwrap(), batch);
    }
}
