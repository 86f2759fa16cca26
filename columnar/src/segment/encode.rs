//! Column encodings chosen per segment: narrow types, dictionaries (one per column,
//! shared by every batch) and run ends.

use super::*;

/// Number of runs of equal adjacent values.
pub(super) fn count_runs(col: &ArrayRef) -> Result<usize> {
    Ok(arrow::compute::partition(std::slice::from_ref(col))?.len())
}

/// A column given as parts (one per batch of the segment), dictionary-encoded: its
/// distinct non-null values in order of first appearance and, per part, each row's index
/// into them with the part's own null buffer.
pub(super) struct Dict {
    pub(super) values: ArrayRef,
    pub(super) keys: Vec<(Vec<u32>, Option<arrow::buffer::NullBuffer>)>,
}

impl Dict {
    fn len(&self) -> usize {
        self.values.len()
    }

    /// The parts as dictionary arrays with `key` keys, all sharing one values array (the
    /// IPC file format allows one dictionary per column).
    fn into_parts(self, key: &DataType) -> Result<Vec<ArrayRef>> {
        macro_rules! build {
            ($k:ty, $n:ty) => {
                self.keys
                    .into_iter()
                    .map(|(k, nulls)| -> Result<ArrayRef> {
                        let keys = PrimitiveArray::<$k>::new(
                            k.into_iter().map(|x| x as $n).collect(),
                            nulls,
                        );
                        Ok(Arc::new(DictionaryArray::<$k>::try_new(
                            keys,
                            self.values.clone(),
                        )?))
                    })
                    .collect()
            };
        }
        match key {
            DataType::Int8 => build!(Int8Type, i8),
            DataType::Int16 => build!(Int16Type, i16),
            _ => build!(Int32Type, i32),
        }
    }
}

/// Dictionary keys of `parts`: `rows` yields each part's values (`None` for NULL); each
/// new value goes to `add` and is numbered in order of first appearance, in the same
/// hash lookup that counts it. `None` once more than `limit` distinct values.
pub(super) fn assign_keys<'a, K, I>(
    parts: &'a [ArrayRef],
    limit: usize,
    rows: impl Fn(&'a ArrayRef) -> I,
    mut add: impl FnMut(K),
) -> Option<Vec<(Vec<u32>, Option<arrow::buffer::NullBuffer>)>>
where
    K: std::hash::Hash + Eq + Copy,
    I: Iterator<Item = Option<K>>,
{
    let mut ids: FastMap<K, u32> = FastMap::default();
    let mut keys = Vec::with_capacity(parts.len());
    for p in parts {
        let mut k = Vec::with_capacity(p.len());
        for v in rows(p) {
            let id = match v {
                None => 0,
                Some(v) => {
                    let next = ids.len() as u32;
                    *ids.entry(v).or_insert_with(|| {
                        add(v);
                        next
                    })
                }
            };
            if ids.len() > limit {
                return None;
            }
            k.push(id);
        }
        keys.push((k, p.nulls().cloned()));
    }
    Some(keys)
}

/// Dictionary of a string column, or `None` once it has more than `limit` distinct
/// values.
pub(super) fn string_dictionary<O: OffsetSizeTrait>(
    parts: &[ArrayRef],
    limit: usize,
) -> Option<Dict> {
    let mut values = GenericStringBuilder::<O>::new();
    let keys = assign_keys(
        parts,
        limit,
        |p| p.as_string::<O>().iter(),
        |s: &str| values.append_value(s),
    )?;
    Some(Dict {
        values: Arc::new(values.finish()),
        keys,
    })
}

/// Dictionary of a fixed-width column by the bit patterns of its values (exact for
/// every type, floats included), or `None` once above `limit` distinct values.
pub(super) fn fixed_dictionary<T>(parts: &[ArrayRef], limit: usize) -> Option<Dict>
where
    T: ArrowNativeType + std::hash::Hash + Eq,
{
    let dt = parts.first()?.data_type().clone();
    let mut vals: Vec<T> = Vec::new();
    let bits = |p: &ArrayRef| {
        let d = p.to_data();
        let v = arrow::buffer::ScalarBuffer::<T>::new(d.buffers()[0].clone(), d.offset(), d.len());
        let nulls = d.nulls().cloned();
        (0..d.len()).map(move |i| nulls.as_ref().is_none_or(|n| n.is_valid(i)).then(|| v[i]))
    };
    let keys = assign_keys(parts, limit, bits, |v| vals.push(v))?;
    let data = ArrayData::builder(dt)
        .len(vals.len())
        .add_buffer(Buffer::from_vec(vals))
        .build()
        .ok()?;
    Some(Dict {
        values: make_array(data),
        keys,
    })
}

/// [`fixed_dictionary`] by the column's value width.
pub(super) fn primitive_dictionary(parts: &[ArrayRef], limit: usize) -> Option<Dict> {
    match parts.first()?.data_type().primitive_width()? {
        2 => fixed_dictionary::<i16>(parts, limit),
        4 => fixed_dictionary::<i32>(parts, limit),
        8 => fixed_dictionary::<i64>(parts, limit),
        16 => fixed_dictionary::<i128>(parts, limit),
        _ => None,
    }
}

/// The first rows of a column: where encodings judge cardinality before paying for a
/// full pass.
pub(super) fn sample(parts: &[ArrayRef]) -> [ArrayRef; 1] {
    let p = &parts[0];
    [p.slice(0, p.len().min(8192))]
}

/// Casts that must fail rather than turn an unrepresentable value into NULL.
pub(super) fn strict() -> arrow::compute::CastOptions<'static> {
    arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    }
}

/// The narrowest storage type that holds every value of `col` exactly, by its zone map:
/// integers in a smaller integer type, decimals in 32 or 64 bits when their values fit.
/// Readers cast back to the table's type, which is cheap and lossless.
pub(super) fn narrow_type(dt: &DataType, zone: &ZoneMap) -> Option<DataType> {
    let (lo, hi) = (zone.min.as_i64(), zone.max.as_i64());
    let int = |w: usize| -> Option<DataType> {
        let (lo, hi) = (lo?, hi?);
        let fits = |a: i64, b: i64| lo >= a && hi <= b;
        let t = if fits(i8::MIN as i64, i8::MAX as i64) {
            (DataType::Int8, 1)
        } else if fits(i16::MIN as i64, i16::MAX as i64) {
            (DataType::Int16, 2)
        } else if fits(i32::MIN as i64, i32::MAX as i64) {
            (DataType::Int32, 4)
        } else {
            return None;
        };
        (t.1 < w).then_some(t.0)
    };
    match dt {
        DataType::Int16 => int(2),
        DataType::Int32 => int(4),
        DataType::Int64 => int(8),
        DataType::Decimal128(p, s) => {
            // The values' own magnitude decides, not the declared precision: a
            // DECIMAL(15,2) column whose values stay below 10^9 (unscaled) is stored as
            // decimal32(9,2), which holds exactly the same values.
            let unscaled = |v: &serde_json::Value| v.as_str()?.parse::<i128>().ok();
            let m = unscaled(&zone.min)?.abs().max(unscaled(&zone.max)?.abs());
            if m < 1_000_000_000 && *s >= 0 && *s <= 9 && *p > 9 {
                Some(DataType::Decimal32(9, *s))
            } else if m < 1_000_000_000_000_000_000 && *s >= 0 && *s <= 18 && *p > 18 {
                Some(DataType::Decimal64(18, *s))
            } else if *p <= 9 {
                Some(DataType::Decimal32(*p, *s))
            } else if *p <= 18 {
                Some(DataType::Decimal64(*p, *s))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A column chosen an encoding and converted: the stored field and one array per batch.
pub(super) struct EncodedColumn {
    pub(super) encoding: Encoding,
    pub(super) field: Field,
    pub(super) parts: Vec<ArrayRef>,
}

/// Pick an encoding for a column (given as one part per batch, `zone` its zone map over
/// all of them) and convert it.
pub(super) fn encode_column(
    field: &Field,
    parts: Vec<ArrayRef>,
    zone: &ZoneMap,
) -> Result<EncodedColumn> {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let done = |encoding: Encoding, parts: Vec<ArrayRef>| {
        let t = parts[0].data_type().clone();
        EncodedColumn {
            encoding,
            field: Field::new(field.name(), t, field.is_nullable()),
            parts,
        }
    };
    let dt = field.data_type();
    if n >= 16 && matches!(dt, DataType::Utf8 | DataType::LargeUtf8) {
        // Judge cardinality on a sample first: a high-cardinality column is refused
        // after a few thousand rows rather than after a full pass.
        let dict = |parts: &[ArrayRef], limit: usize| match dt {
            DataType::Utf8 => string_dictionary::<i32>(parts, limit),
            _ => string_dictionary::<i64>(parts, limit),
        };
        let s = sample(&parts);
        if dict(&s, s[0].len() / 4).is_some()
            && let Some(d) = dict(&parts, n / 2)
            && d.len() < i32::MAX as usize
        {
            let key = match d.len() {
                0..=127 => DataType::Int8,
                128..=32_767 => DataType::Int16,
                _ => DataType::Int32,
            };
            return Ok(done(Encoding::Dictionary, d.into_parts(&key)?));
        }
    }
    let parts = match narrow_type(dt, zone) {
        Some(t) => parts
            .iter()
            .map(|p| arrow::compute::cast_with_options(p, &t, &strict()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap_or(parts),
        None => parts,
    };
    let w = parts[0].data_type().primitive_width();
    if n >= 16 && w.is_some_and(|w| w >= 2) && !matches!(dt, DataType::Boolean) {
        // Int8 keys up to 127 values, Int16 keys up to 32,767, and only when the keys
        // are narrower than the values.
        let s = sample(&parts);
        if primitive_dictionary(&s, (s[0].len() / 2).max(16)).is_some()
            && let Some(d) = primitive_dictionary(&parts, (n / 4).min(i16::MAX as usize))
        {
            if d.len() <= i8::MAX as usize {
                return Ok(done(Encoding::Dictionary, d.into_parts(&DataType::Int8)?));
            }
            if w > Some(2) {
                return Ok(done(Encoding::Dictionary, d.into_parts(&DataType::Int16)?));
            }
        }
    }
    // Run-end encoding only for the types it is known to take.
    let runs_ok = !matches!(
        dt,
        DataType::Boolean
            | DataType::Float16
            | DataType::Decimal256(_, _)
            | DataType::FixedSizeBinary(_)
            | DataType::Interval(_)
    );
    if n >= 16 && !parts.iter().any(|p| p.null_count() > 0) && runs_ok {
        let mut runs = 0;
        for p in &parts {
            runs += count_runs(p)?;
        }
        if runs * 2 <= n {
            let t = DataType::RunEndEncoded(
                Arc::new(Field::new("run_ends", DataType::Int32, false)),
                Arc::new(Field::new("values", parts[0].data_type().clone(), true)),
            );
            let parts = parts
                .iter()
                .map(|p| arrow::compute::cast(p, &t))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            return Ok(done(Encoding::RunEnd, parts));
        }
    }
    Ok(done(Encoding::Plain, parts))
}
