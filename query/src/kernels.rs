//! Comparison kernels for the scan's filters, compiled for AVX2 where the CPU has it.
//!
//! Arrow's comparison kernels are compiled for the baseline target (SSE2 on x86-64),
//! where neither a comparison of 64-bit integers nor the packing of answers into bits
//! vectorizes well: a filter such as `amount > 5000` or `status = 'paid'` (a comparison
//! of dictionary keys) cost about a nanosecond per stored row, half of a small query's
//! time. The same loop compiled with `target_feature(enable = "avx2")`, chosen once per
//! call by the CPU's features, takes 0.1–0.3 ns. Other CPUs run the portable loop.
//!
//! Only integers, and types stored as integers (dates, timestamps, decimals compared at
//! one scale), come here: Arrow orders floats totally (NaN above everything, -0.0 below
//! 0.0), which a plain `<` does not.

use arrow::array::{Array, ArrowPrimitiveType, AsArray};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::*;
use datafusion::common::Result;
use datafusion::logical_expr::Operator;
use datafusion::scalar::ScalarValue;

/// `f` of every value, packed into bits (bit `i` is `f(values[i])`).
pub(crate) fn pack<T: Copy>(values: &[T], f: impl Fn(T) -> bool) -> BooleanBuffer {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { pack_avx2(values, f) };
    }
    pack_portable(values, f)
}

/// With AVX2. Answers of 1- and 2-byte values (dictionary keys, small integers) go
/// through a byte per answer and `movemask` (2-3x faster than shifting each into its
/// word); wider ones compare fewer per instruction and gain nothing from it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_avx2<T: Copy>(values: &[T], f: impl Fn(T) -> bool) -> BooleanBuffer {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_slli_epi16};
    if size_of::<T>() > 2 {
        return pack_portable(values, f);
    }
    let mut words: Vec<u64> = Vec::with_capacity(values.len().div_ceil(64));
    let chunks = values.chunks_exact(64);
    let rest = chunks.remainder();
    for chunk in chunks {
        let mut bytes = [0u8; 64];
        for (b, &v) in bytes.iter_mut().zip(chunk) {
            *b = f(v) as u8;
        }
        // Each byte is 0 or 1: shifted to its top bit, `movemask` gathers 32 at once.
        let half = |at: usize| {
            // SAFETY: `bytes` holds 64 bytes, so 32 from `at` (0 or 32) are in bounds;
            // unaligned loads are allowed.
            let v = unsafe { _mm256_loadu_si256(bytes.as_ptr().add(at) as *const __m256i) };
            _mm256_movemask_epi8(_mm256_slli_epi16::<7>(v)) as u32 as u64
        };
        words.push(half(0) | half(32) << 32);
    }
    if !rest.is_empty() {
        words.push(word(rest, &f));
    }
    BooleanBuffer::new(Buffer::from_vec(words), 0, values.len())
}

/// 64 answers per word, written so that the compiler vectorizes the comparison and the
/// packing (with whatever instructions the calling function may use).
#[inline(always)]
fn pack_portable<T: Copy>(values: &[T], f: impl Fn(T) -> bool) -> BooleanBuffer {
    let mut words: Vec<u64> = Vec::with_capacity(values.len().div_ceil(64));
    let chunks = values.chunks_exact(64);
    let rest = chunks.remainder();
    for chunk in chunks {
        words.push(word(chunk, &f));
    }
    if !rest.is_empty() {
        words.push(word(rest, &f));
    }
    BooleanBuffer::new(Buffer::from_vec(words), 0, values.len())
}

/// Up to 64 answers in one word, bit `j` for `values[j]`.
#[inline(always)]
fn word<T: Copy>(values: &[T], f: &impl Fn(T) -> bool) -> u64 {
    let mut w = 0u64;
    for (j, &v) in values.iter().enumerate() {
        w |= (f(v) as u64) << j;
    }
    w
}

/// Whether `op` is one of the six comparisons [`compare`] evaluates.
pub(crate) fn is_comparison(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
    )
}

/// `stored op lit` for each row of a primitive integer-like array (NULL rows false), with
/// `lit` converted to the array's own type (a narrower integer or decimal than the
/// column's, as segments store small values); `None` when the array is of another
/// type or `lit` has no exact equal in its type (the caller evaluates it another way).
pub(crate) fn compare(
    stored: &dyn Array,
    op: Operator,
    lit: &ScalarValue,
) -> Result<Option<BooleanBuffer>> {
    let t = stored.data_type();
    if !is_comparison(op) || lit.is_null() {
        return Ok(None);
    }
    let Ok(l) = lit.cast_to(t) else {
        return Ok(None);
    };
    if l.is_null() || l.cast_to(&lit.data_type()).ok().as_ref() != Some(lit) {
        return Ok(None);
    }
    macro_rules! go {
        ($p:ty) => {
            typed::<$p>(stored, op, &l)
        };
    }
    let bits = match t {
        DataType::Int8 => go!(Int8Type),
        DataType::Int16 => go!(Int16Type),
        DataType::Int32 => go!(Int32Type),
        DataType::Int64 => go!(Int64Type),
        DataType::UInt8 => go!(UInt8Type),
        DataType::UInt16 => go!(UInt16Type),
        DataType::UInt32 => go!(UInt32Type),
        DataType::UInt64 => go!(UInt64Type),
        DataType::Date32 => go!(Date32Type),
        DataType::Date64 => go!(Date64Type),
        DataType::Timestamp(TimeUnit::Second, _) => go!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => go!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => go!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => go!(TimestampNanosecondType),
        DataType::Decimal32(_, _) => go!(Decimal32Type),
        DataType::Decimal64(_, _) => go!(Decimal64Type),
        DataType::Decimal128(_, _) => go!(Decimal128Type),
        _ => return Ok(None),
    }?;
    Ok(Some(valid_only(stored, bits)))
}

/// `bits` false where `stored` is NULL.
fn valid_only(stored: &dyn Array, bits: BooleanBuffer) -> BooleanBuffer {
    match stored.logical_nulls() {
        Some(valid) => &bits & valid.inner(),
        None => bits,
    }
}

fn typed<P: ArrowPrimitiveType>(
    stored: &dyn Array,
    op: Operator,
    lit: &ScalarValue,
) -> Result<BooleanBuffer>
where
    P::Native: PartialOrd,
{
    let l = lit.to_array_of_size(1)?;
    let l = l.as_primitive::<P>().value(0);
    let v = stored.as_primitive::<P>().values();
    Ok(match op {
        Operator::Eq => pack(v, |x| x == l),
        Operator::NotEq => pack(v, |x| x != l),
        Operator::Lt => pack(v, |x| x < l),
        Operator::LtEq => pack(v, |x| x <= l),
        Operator::Gt => pack(v, |x| x > l),
        _ => pack(v, |x| x >= l),
    })
}

/// `$go!(ArrowType)` for a data type `$t` among the integer types an `i64` holds,
/// `$other` for any other.
macro_rules! by_int_type {
    ($t:expr, $go:ident, $other:expr) => {
        match $t {
            DataType::Int8 => $go!(Int8Type),
            DataType::Int16 => $go!(Int16Type),
            DataType::Int32 => $go!(Int32Type),
            DataType::Int64 => $go!(Int64Type),
            DataType::UInt8 => $go!(UInt8Type),
            DataType::UInt16 => $go!(UInt16Type),
            DataType::UInt32 => $go!(UInt32Type),
            _ => $other,
        }
    };
}

/// A set of integers as a bitmap over their span: membership in one load, whatever
/// the set's size (what a hash join's build keys become in the probe scan).
#[derive(Debug)]
pub(crate) struct IntSet {
    min: i64,
    span: u64,
    bits: Vec<u64>,
}

impl IntSet {
    /// The set of `values`; `None` when empty or spread too thin for a bitmap (a span
    /// over 2^26 values, or over 2^20 — 128 KiB — and 64 per member).
    pub(crate) fn new(values: &[i64]) -> Option<IntSet> {
        let (&min, &max) = (values.iter().min()?, values.iter().max()?);
        let span = (max as i128 - min as i128 + 1) as u128;
        if span > 1 << 26 || (span > 1 << 20 && span > 64 * values.len() as u128) {
            return None;
        }
        let span = span as u64;
        let mut bits = vec![0u64; span.div_ceil(64) as usize];
        for &v in values {
            let o = v.wrapping_sub(min) as u64;
            bits[(o >> 6) as usize] |= 1 << (o & 63);
        }
        Some(IntSet { min, span, bits })
    }

    /// The set of `values` (each within `lo..=hi`) as a bitmap over `lo..=hi`,
    /// however thinly they are spread: for a table of a filter's answers over a
    /// domain (the caller bounds the span).
    pub(crate) fn spanning(lo: i64, hi: i64, values: &[i64]) -> IntSet {
        let span = (hi as i128 - lo as i128 + 1).max(0) as u64;
        let mut bits = vec![0u64; span.div_ceil(64) as usize];
        for &v in values {
            let o = v.wrapping_sub(lo) as u64;
            if o < span {
                bits[(o >> 6) as usize] |= 1 << (o & 63);
            }
        }
        IntSet {
            min: lo,
            span,
            bits,
        }
    }

    #[inline(always)]
    fn contains(&self, v: i64) -> bool {
        let o = v.wrapping_sub(self.min) as u64;
        o < self.span && (self.bits[(o >> 6) as usize] >> (o & 63)) & 1 == 1
    }

    /// For each row of an integer array, whether its value is in the set (NULL rows
    /// false); `None` for an array of another type.
    pub(crate) fn members(&self, stored: &dyn Array) -> Option<BooleanBuffer> {
        macro_rules! go {
            ($p:ty) => {
                pack(stored.as_primitive::<$p>().values(), |x| {
                    self.contains(x as i64)
                })
            };
        }
        let bits = by_int_type!(stored.data_type(), go, return None);
        Some(valid_only(stored, bits))
    }
}

/// The smallest and largest value of an integer array (NULLs left out); `None` for an
/// array of another type or with no value.
pub(crate) fn int_bounds(stored: &dyn Array) -> Option<(i64, i64)> {
    macro_rules! go {
        ($p:ty) => {{
            let a = stored.as_primitive::<$p>();
            let lo = arrow::compute::min(a)?;
            let hi = arrow::compute::max(a)?;
            (lo as i64, hi as i64)
        }};
    }
    Some(by_int_type!(stored.data_type(), go, return None))
}

/// Whether `t` is one of the integer types [`IntSet`] and [`int_bounds`] handle (those
/// whose every value an `i64` holds).
pub(crate) fn is_int(t: &DataType) -> bool {
    macro_rules! yes {
        ($p:ty) => {
            true
        };
    }
    by_int_type!(t, yes, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Decimal32Array, Int8Array, Int16Array, Int64Array};
    use arrow::compute::kernels::cmp;
    use std::sync::Arc;

    fn ops() -> [Operator; 6] {
        [
            Operator::Eq,
            Operator::NotEq,
            Operator::Lt,
            Operator::LtEq,
            Operator::Gt,
            Operator::GtEq,
        ]
    }

    /// Arrow's answer with NULL as false.
    fn arrow_answer(a: &ArrayRef, op: Operator, lit: &ScalarValue) -> Vec<bool> {
        let l = lit.cast_to(a.data_type()).unwrap().to_scalar().unwrap();
        let r = match op {
            Operator::Eq => cmp::eq(a, &l),
            Operator::NotEq => cmp::neq(a, &l),
            Operator::Lt => cmp::lt(a, &l),
            Operator::LtEq => cmp::lt_eq(a, &l),
            Operator::Gt => cmp::gt(a, &l),
            _ => cmp::gt_eq(a, &l),
        }
        .unwrap();
        (0..r.len()).map(|i| r.is_valid(i) && r.value(i)).collect()
    }

    #[test]
    fn every_operator_agrees_with_arrow_across_word_boundaries_and_nulls() {
        // 200 rows: three full words and a remainder, NULLs sprinkled, values around
        // the literal on both sides.
        let vals: Vec<Option<i64>> = (0..200)
            .map(|i| (i % 7 != 3).then_some((i * 37 % 23) as i64 - 11))
            .collect();
        let wide: ArrayRef = Arc::new(Int64Array::from(vals.clone()));
        let narrow: ArrayRef = Arc::new(Int16Array::from(
            vals.iter().map(|v| v.map(|v| v as i16)).collect::<Vec<_>>(),
        ));
        let tiny: ArrayRef = Arc::new(Int8Array::from(
            vals.iter().map(|v| v.map(|v| v as i8)).collect::<Vec<_>>(),
        ));
        for lit in [-11i64, 0, 5, 11] {
            let lit = ScalarValue::Int64(Some(lit));
            for op in ops() {
                let want = arrow_answer(&wide, op, &lit);
                for a in [&wide, &narrow, &tiny] {
                    let got = compare(a.as_ref(), op, &lit).unwrap().unwrap();
                    assert_eq!(
                        got.iter().collect::<Vec<_>>(),
                        want,
                        "{op} {lit} on {}",
                        a.data_type()
                    );
                }
            }
        }
        // A slice (offset into the buffer) compares its own rows.
        let sliced = wide.slice(13, 100);
        let lit = ScalarValue::Int64(Some(0));
        let got = compare(sliced.as_ref(), Operator::Gt, &lit)
            .unwrap()
            .unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            arrow_answer(&sliced, Operator::Gt, &lit)
        );
    }

    #[test]
    fn a_literal_without_an_exact_equal_in_the_stored_type_is_left_to_the_caller() {
        let narrow: ArrayRef = Arc::new(Int16Array::from(vec![1, 2, 3]));
        let big = ScalarValue::Int64(Some(100_000));
        assert!(
            compare(narrow.as_ref(), Operator::Lt, &big)
                .unwrap()
                .is_none()
        );
        let floats: ArrayRef = Arc::new(arrow::array::Float64Array::from(vec![1.0, f64::NAN]));
        let one = ScalarValue::Float64(Some(1.0));
        assert!(
            compare(floats.as_ref(), Operator::Gt, &one)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_integer_set_answers_membership_of_any_integer_width() {
        let set = IntSet::new(&[-3, 7, 64, 65, 1000]).unwrap();
        let vals: Vec<Option<i64>> = (-10..1100)
            .map(|i| (i % 13 != 0).then_some(i as i64))
            .collect();
        let want: Vec<bool> = vals
            .iter()
            .map(|v| v.is_some_and(|v| [-3, 7, 64, 65, 1000].contains(&v)))
            .collect();
        let wide: ArrayRef = Arc::new(Int64Array::from(vals.clone()));
        let narrow: ArrayRef = Arc::new(Int16Array::from(
            vals.iter().map(|v| v.map(|v| v as i16)).collect::<Vec<_>>(),
        ));
        for a in [&wide, &narrow] {
            let got = set.members(a.as_ref()).unwrap();
            assert_eq!(got.iter().collect::<Vec<_>>(), want);
        }
        // Too thin a spread for a bitmap.
        assert!(IntSet::new(&[0, 1 << 30]).is_none());
        assert!(IntSet::new(&[]).is_none());
    }

    #[test]
    fn decimals_stored_narrower_compare_at_the_literals_scale() {
        // DECIMAL(15,2) values stored as decimal32(9,2): 0.04, 0.05, 0.06, 0.07, 0.08.
        let stored: ArrayRef = Arc::new(
            Decimal32Array::from(vec![4, 5, 6, 7, 8])
                .with_precision_and_scale(9, 2)
                .unwrap(),
        );
        let lit = ScalarValue::Decimal128(Some(5), 15, 2);
        let got = compare(stored.as_ref(), Operator::GtEq, &lit)
            .unwrap()
            .unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            [false, true, true, true, true]
        );
        // 0.055 has no equal at scale 2: not compared here.
        let lit = ScalarValue::Decimal128(Some(55), 15, 3);
        assert!(
            compare(stored.as_ref(), Operator::Lt, &lit)
                .unwrap()
                .is_none()
        );
    }
}
