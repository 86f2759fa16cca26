//! Column segments: immutable Arrow IPC files of rows sorted by primary key.
//!
//! A segment is a standard Arrow IPC *file* (`seg-NNNNNN.arrow`), readable by any Arrow
//! IPC reader (e.g. `pyarrow.ipc.open_file`). It holds the rows as record batches of
//! [`BATCH_ROWS`] rows (format version 1 wrote one batch), the unit of lazy decoding and
//! of zone-map pruning inside a segment. Columns are
//! stored with encodings Arrow itself defines, chosen per column: dictionary encoding
//! for low-cardinality strings, run-end encoding where runs pay; buffers are compressed
//! with zstd or LZ4 (IPC buffer compression). The footer's custom metadata carries the
//! format version, row count, per-column zone maps (min, max, null count) of the segment
//! and of every batch, the batch row counts, the encodings
//! and a CRC32C of the file body; the column-store state additionally records a CRC32C
//! of the whole file, verified when the segment is opened. Reads memory-map the file and
//! decode only the projected columns.

use crate::error::{Error, Result};
use arrow::array::*;
use arrow::buffer::Buffer;
use arrow::datatypes::*;
use arrow::ipc::reader::{FileDecoder, read_footer_length};
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::ipc::{CompressionType, root_as_footer};
use lightning_rowstore::vfs::Vfs;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

pub const SEGMENT_FORMAT_VERSION: u32 = 2;
/// Rows per record batch inside a segment: small enough that a decoded batch of a few
/// columns stays in cache and a zone map skips a useful slice, large enough that buffer
/// compression and per-message metadata stay cheap.
pub const BATCH_ROWS: usize = 65_536;
const META_VERSION: &str = "lightning.format_version";
const META_ROWS: &str = "lightning.rows";
const META_ZONES: &str = "lightning.zone_maps";
const META_BATCH_ROWS: &str = "lightning.batch_rows";
const META_BATCH_ZONES: &str = "lightning.batch_zone_maps";
const META_ENCODINGS: &str = "lightning.encodings";
const META_BODY_CRC: &str = "lightning.body_crc32c";
const META_BODY_LEN: &str = "lightning.body_len";
/// zstd level of segment buffers. Level 1 (also the parquet crate's default) compacts
/// TPC-H lineitem ~8% faster than level 3 for 1.5% larger files (`cargo bench --bench
/// columnar`); decompression speed is the same.
const ZSTD_LEVEL: i32 = 1;

/// Buffer compression of segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentCompression {
    None,
    Zstd,
    Lz4,
}

/// Per-column statistics of a segment. Values are JSON: integers, dates and raw
/// timestamps as numbers, floats as numbers, decimals as strings of the unscaled
/// integer, strings as strings, binaries as hex strings, booleans as booleans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneMap {
    pub column: String,
    pub min: serde_json::Value,
    pub max: serde_json::Value,
    pub null_count: u64,
}

/// How a column is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    Plain,
    Dictionary,
    RunEnd,
}

/// How zone maps hold binary values: lowercase hex, which sorts like the bytes.
pub fn zone_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// Zone map of one column: min/max by the column's own order (nulls excluded), with
/// Arrow's aggregate kernels (one pass, no sort).
fn zone_map(name: &str, col: &ArrayRef) -> Result<ZoneMap> {
    use arrow::compute::{
        max, max_binary, max_boolean, max_string, min, min_binary, min_boolean, min_string,
    };
    use serde_json::Value as J;
    let nulls = col.null_count() as u64;
    macro_rules! prim {
        ($t:ty) => {{
            let a = col.as_primitive::<$t>();
            (min(a).map(J::from), max(a).map(J::from))
        }};
    }
    let (lo, hi): (Option<J>, Option<J>) = match col.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => {
            let a = col.as_primitive::<Float32Type>();
            (
                min(a).map(|v| J::from(v as f64)),
                max(a).map(|v| J::from(v as f64)),
            )
        }
        DataType::Float64 => prim!(Float64Type),
        DataType::Date32 => prim!(Date32Type),
        DataType::Decimal128(_, _) => {
            let a = col.as_primitive::<Decimal128Type>();
            (
                min(a).map(|v| J::from(v.to_string())),
                max(a).map(|v| J::from(v.to_string())),
            )
        }
        DataType::Timestamp(_, _) => {
            let d = col.to_data();
            let vals = &d.buffers()[0].typed_data::<i64>()[d.offset()..d.offset() + d.len()];
            let it = || {
                vals.iter()
                    .enumerate()
                    .filter(|(i, _)| col.is_valid(*i))
                    .map(|(_, v)| *v)
            };
            (it().min().map(J::from), it().max().map(J::from))
        }
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            (min_string(a).map(J::from), max_string(a).map(J::from))
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            (min_string(a).map(J::from), max_string(a).map(J::from))
        }
        DataType::Binary => {
            let a = col.as_binary::<i32>();
            (
                min_binary(a).map(|v| J::from(zone_hex(v))),
                max_binary(a).map(|v| J::from(zone_hex(v))),
            )
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            (min_boolean(a).map(J::from), max_boolean(a).map(J::from))
        }
        _ => (None, None),
    };
    Ok(ZoneMap {
        column: name.to_string(),
        min: lo.unwrap_or(J::Null),
        max: hi.unwrap_or(J::Null),
        null_count: nulls,
    })
}

/// Number of runs of equal adjacent values.
fn count_runs(col: &ArrayRef) -> Result<usize> {
    Ok(arrow::compute::partition(std::slice::from_ref(col))?.len())
}

type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A column given as parts (one per batch of the segment), dictionary-encoded: its
/// distinct non-null values in order of first appearance and, per part, each row's index
/// into them with the part's own null buffer.
struct Dict {
    values: ArrayRef,
    keys: Vec<(Vec<u32>, Option<arrow::buffer::NullBuffer>)>,
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
fn assign_keys<'a, K, I>(
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
fn string_dictionary<O: OffsetSizeTrait>(parts: &[ArrayRef], limit: usize) -> Option<Dict> {
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
fn fixed_dictionary<T>(parts: &[ArrayRef], limit: usize) -> Option<Dict>
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
fn primitive_dictionary(parts: &[ArrayRef], limit: usize) -> Option<Dict> {
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
fn sample(parts: &[ArrayRef]) -> [ArrayRef; 1] {
    let p = &parts[0];
    [p.slice(0, p.len().min(8192))]
}

/// Casts that must fail rather than turn an unrepresentable value into NULL.
fn strict() -> arrow::compute::CastOptions<'static> {
    arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    }
}

/// The narrowest storage type that holds every value of `col` exactly, by its zone map:
/// integers in a smaller integer type, decimals in 32 or 64 bits when their values fit.
/// Readers cast back to the table's type, which is cheap and lossless.
fn narrow_type(dt: &DataType, zone: &ZoneMap) -> Option<DataType> {
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
struct EncodedColumn {
    encoding: Encoding,
    field: Field,
    parts: Vec<ArrayRef>,
}

/// Pick an encoding for a column (given as one part per batch, `zone` its zone map over
/// all of them) and convert it.
fn encode_column(field: &Field, parts: Vec<ArrayRef>, zone: &ZoneMap) -> Result<EncodedColumn> {
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
    if n >= 16 && !parts.iter().any(|p| p.null_count() > 0) && !matches!(dt, DataType::Boolean) {
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

/// What the column-store state records about a written segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub id: u64,
    pub rows: u64,
    pub file_len: u64,
    pub file_crc32c: u32,
    pub zone_maps: Vec<ZoneMap>,
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:06}.arrow"))
}

/// Order of two zone-map values of a column of type `dt` (`None`: not comparable).
fn zone_cmp(
    dt: &DataType,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<std::cmp::Ordering> {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
            },
        },
        (J::String(x), J::String(y)) if matches!(dt, DataType::Decimal128(_, _)) => {
            Some(x.parse::<i128>().ok()?.cmp(&y.parse::<i128>().ok()?))
        }
        // Strings compare by bytes; hex of binaries keeps the byte order.
        (J::String(x), J::String(y)) => Some(x.cmp(y)),
        (J::Bool(x), J::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Fold the zone map of one batch into the segment's.
fn merge_zone(dt: &DataType, acc: &mut ZoneMap, z: &ZoneMap) {
    use std::cmp::Ordering::{Greater, Less};
    acc.null_count += z.null_count;
    if acc.min.is_null() || (!z.min.is_null() && zone_cmp(dt, &z.min, &acc.min) == Some(Less)) {
        acc.min = z.min.clone();
    }
    if acc.max.is_null() || (!z.max.is_null() && zone_cmp(dt, &z.max, &acc.max) == Some(Greater)) {
        acc.max = z.max.clone();
    }
}

/// Write `batch` (sorted by primary key, table schema) as segment `id` in `dir`.
pub fn write_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    batch: &RecordBatch,
    compression: SegmentCompression,
) -> Result<SegmentInfo> {
    write_segment_batched(vfs, dir, id, batch, compression, BATCH_ROWS)
}

/// [`write_segment`] with `batch_rows` rows per record batch in the file.
pub fn write_segment_batched(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    batch: &RecordBatch,
    compression: SegmentCompression,
    batch_rows: usize,
) -> Result<SegmentInfo> {
    let n = batch.num_rows();
    let batch_rows = batch_rows.max(1);
    let chunks: Vec<RecordBatch> = (0..n.div_ceil(batch_rows).max(1))
        .map(|i| {
            let off = (i * batch_rows).min(n);
            batch.slice(off, batch_rows.min(n - off))
        })
        .collect();
    write_segment_chunks(vfs, dir, id, &chunks, compression)
}

/// Write `chunks` (together sorted by primary key, all of the table schema) as segment
/// `id` in `dir`, one record batch in the file per chunk.
pub fn write_segment_chunks(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    chunks: &[RecordBatch],
    compression: SegmentCompression,
) -> Result<SegmentInfo> {
    let Some(first) = chunks.first() else {
        return Err(Error::Schema("a segment needs at least one batch".into()));
    };
    let schema = first.schema();
    if let Some(c) = chunks.iter().find(|c| c.schema() != schema) {
        return Err(Error::Schema(format!(
            "segment batches disagree on their schema: {} vs {}",
            c.schema(),
            schema
        )));
    }
    let rows: Vec<usize> = chunks.iter().map(|c| c.num_rows()).collect();
    let n: usize = rows.iter().sum();
    let mut fields = Vec::new();
    // Encoded columns, one entry per batch.
    let mut cols: Vec<Vec<ArrayRef>> = vec![Vec::new(); chunks.len()];
    let mut encodings = Vec::new();
    let mut zones = Vec::new();
    let mut batch_zones: Vec<Vec<ZoneMap>> = vec![Vec::new(); chunks.len()];
    for (j, f) in schema.fields().iter().enumerate() {
        let mut seg_zone = ZoneMap {
            column: f.name().clone(),
            min: serde_json::Value::Null,
            max: serde_json::Value::Null,
            null_count: 0,
        };
        for (i, c) in chunks.iter().enumerate() {
            let z = zone_map(f.name(), c.column(j))?;
            merge_zone(f.data_type(), &mut seg_zone, &z);
            batch_zones[i].push(z);
        }
        // The encoding is chosen once per column, over all batches: a dictionary is
        // shared by every batch (the IPC file format allows one dictionary per column);
        // run-end arrays are encoded per batch.
        let parts = chunks.iter().map(|c| c.column(j).clone()).collect();
        let enc = encode_column(f, parts, &seg_zone)?;
        zones.push(seg_zone);
        for (i, p) in enc.parts.into_iter().enumerate() {
            cols[i].push(p);
        }
        encodings.push(enc.encoding);
        fields.push(enc.field);
    }
    let enc_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut opts = IpcWriteOptions::default().try_with_compression(match compression {
        SegmentCompression::None => None,
        SegmentCompression::Zstd => Some(CompressionType::ZSTD),
        SegmentCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
    })?;
    if compression == SegmentCompression::Zstd {
        opts = opts.try_with_compression_level(Some(ZSTD_LEVEL))?;
    }
    let mut w = FileWriter::try_new_with_options(Vec::new(), &enc_schema, opts)?;
    for (cols, &len) in cols.into_iter().zip(&rows) {
        let b = RecordBatch::try_new_with_options(
            enc_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(len)),
        )?;
        w.write(&b)?;
    }
    w.flush()?;
    let body_len = w.get_ref().len();
    let body_crc = crc32c::crc32c(&w.get_ref()[..body_len]);
    w.write_metadata(META_VERSION, SEGMENT_FORMAT_VERSION.to_string());
    w.write_metadata(META_ROWS, n.to_string());
    w.write_metadata(
        META_BATCH_ROWS,
        serde_json::to_string(&rows).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.write_metadata(
        META_BATCH_ZONES,
        serde_json::to_string(&batch_zones).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.write_metadata(META_BODY_LEN, body_len.to_string());
    w.write_metadata(META_BODY_CRC, body_crc.to_string());
    w.write_metadata(
        META_ZONES,
        serde_json::to_string(&zones).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.write_metadata(
        META_ENCODINGS,
        serde_json::to_string(&encodings).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.finish()?;
    let bytes = w.into_inner()?;
    let path = segment_path(dir, id);
    lightning_rowstore::vfs::create_new_synced(vfs, &path, &bytes)?;
    Ok(SegmentInfo {
        id,
        rows: n as u64,
        file_len: bytes.len() as u64,
        file_crc32c: crc32c::crc32c(&bytes),
        zone_maps: zones,
    })
}

/// An open, verified, memory-mapped segment.
pub struct Segment {
    path: PathBuf,
    info: SegmentInfo,
    buffer: Buffer,
    table_schema: SchemaRef,
    file_schema: SchemaRef,
    version: arrow::ipc::MetadataVersion,
    dict_blocks: Vec<arrow::ipc::Block>,
    batch_blocks: Vec<arrow::ipc::Block>,
    /// First row of each batch, plus the row count at the end.
    batch_starts: Vec<usize>,
    batch_zones: Vec<Vec<ZoneMap>>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

impl Segment {
    /// Map and verify a segment against what the state recorded about it.
    pub fn open(
        vfs: &dyn Vfs,
        dir: &Path,
        info: &SegmentInfo,
        table_schema: SchemaRef,
    ) -> Result<Segment> {
        let path = segment_path(dir, info.id);
        let file = vfs
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .len()
            .map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
        if len != info.file_len || len < 10 {
            return Err(Error::corruption(
                &path,
                0,
                format!("segment is {len} bytes, expected {}", info.file_len),
            ));
        }
        // Segment files are immutable once published: nothing writes to or truncates
        // them while mapped, and they are only unlinked, which leaves a mapping valid.
        // A `Vfs` that cannot map (an encrypting one) gives the bytes read into memory.
        let map = file
            .map()
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        let buffer = match map {
            Some(map) => {
                let ptr = NonNull::new(map.as_ptr() as *mut u8).expect("mmap pointer is not null");
                let n = map.len();
                // SAFETY: `ptr` points to `n` readable bytes owned by `map`, which the
                // buffer keeps alive (as its owner) for as long as any slice of it exists.
                unsafe { Buffer::from_custom_allocation(ptr, n, Arc::new(map)) }
            }
            None => {
                // An aligned allocation, as Arrow's decoders expect of IPC bodies.
                let mut b = arrow::buffer::MutableBuffer::from_len_zeroed(len as usize);
                file.read_at(b.as_slice_mut(), 0)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                b.into()
            }
        };
        if buffer.len() as u64 != len {
            return Err(Error::corruption(
                &path,
                0,
                "segment changed size while opened",
            ));
        }
        let crc = crc32c::crc32c(&buffer);
        if crc != info.file_crc32c {
            return Err(Error::corruption(&path, 0, "segment checksum mismatch"));
        }
        let n = buffer.len();
        let bad = |why: String| Error::corruption(&path, 0, why);
        let trailer: [u8; 10] = buffer[n - 10..].try_into().expect("10 bytes");
        let footer_len = read_footer_length(trailer).map_err(|e| bad(e.to_string()))?;
        if footer_len + 10 > n {
            return Err(bad("footer length exceeds file".into()));
        }
        let footer = root_as_footer(&buffer[n - 10 - footer_len..n - 10])
            .map_err(|e| bad(format!("bad footer: {e}")))?;
        let fb_schema = footer
            .schema()
            .ok_or_else(|| bad("footer has no schema".into()))?;
        let file_schema = Arc::new(arrow::ipc::convert::fb_to_schema(fb_schema));
        let meta: std::collections::HashMap<String, String> = footer
            .custom_metadata()
            .map(|kv| {
                kv.iter()
                    .filter_map(|e| Some((e.key()?.to_string(), e.value()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let version: u32 = meta
            .get(META_VERSION)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("missing format version".into()))?;
        if version == 0 || version > SEGMENT_FORMAT_VERSION {
            return Err(bad(format!("unsupported segment format version {version}")));
        }
        let body_len: usize = meta
            .get(META_BODY_LEN)
            .and_then(|v| v.parse().ok())
            .filter(|&l| l <= n)
            .ok_or_else(|| bad("bad body length".into()))?;
        let body_crc: u32 = meta
            .get(META_BODY_CRC)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("missing body checksum".into()))?;
        if crc32c::crc32c(&buffer[..body_len]) != body_crc {
            return Err(bad("segment body checksum mismatch".into()));
        }
        let batch_blocks: Vec<arrow::ipc::Block> = footer
            .recordBatches()
            .ok_or_else(|| bad("no record batches".into()))?
            .iter()
            .copied()
            .collect();
        let (batch_rows, batch_zones): (Vec<usize>, Vec<Vec<ZoneMap>>) = if version == 1 {
            (vec![info.rows as usize], vec![info.zone_maps.clone()])
        } else {
            let rows = meta
                .get(META_BATCH_ROWS)
                .and_then(|v| serde_json::from_str(v).ok())
                .ok_or_else(|| bad("missing batch row counts".into()))?;
            let zones = meta
                .get(META_BATCH_ZONES)
                .and_then(|v| serde_json::from_str(v).ok())
                .ok_or_else(|| bad("missing batch zone maps".into()))?;
            (rows, zones)
        };
        if batch_blocks.is_empty()
            || batch_rows.len() != batch_blocks.len()
            || batch_zones.len() != batch_blocks.len()
            || batch_rows.iter().sum::<usize>() as u64 != info.rows
        {
            return Err(bad(format!(
                "{} record batches do not match the recorded batch rows ({}) and row count ({})",
                batch_blocks.len(),
                batch_rows.len(),
                info.rows
            )));
        }
        let mut batch_starts = vec![0];
        for r in &batch_rows {
            batch_starts.push(batch_starts.last().unwrap() + r);
        }
        let dict_blocks = footer
            .dictionaries()
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        if file_schema.fields().len() != table_schema.fields().len() {
            return Err(bad("segment columns do not match the table".into()));
        }
        Ok(Segment {
            version: footer.version(),
            path,
            info: info.clone(),
            buffer,
            table_schema,
            file_schema,
            dict_blocks,
            batch_blocks,
            batch_starts,
            batch_zones,
        })
    }

    pub fn info(&self) -> &SegmentInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_rows(&self) -> usize {
        self.info.rows as usize
    }

    fn block_buf(&self, b: &arrow::ipc::Block) -> Result<Buffer> {
        let start = b.offset() as usize;
        let len = b.metaDataLength() as usize + b.bodyLength() as usize;
        if start.checked_add(len).is_none_or(|e| e > self.buffer.len()) {
            return Err(Error::corruption(
                &self.path,
                start as u64,
                "block outside the file",
            ));
        }
        Ok(self.buffer.slice_with_length(start, len))
    }

    /// Record batches in the file.
    pub fn num_batches(&self) -> usize {
        self.batch_blocks.len()
    }

    /// Rows `[start, end)` of batch `i` within the segment.
    pub fn batch_range(&self, i: usize) -> std::ops::Range<usize> {
        self.batch_starts[i]..self.batch_starts[i + 1]
    }

    /// Zone maps of batch `i` (the segment's own for a format-1 file).
    pub fn batch_zone_maps(&self, i: usize) -> &[ZoneMap] {
        &self.batch_zones[i]
    }

    fn projection(&self, projection: Option<&[usize]>) -> Vec<usize> {
        projection
            .map(<[usize]>::to_vec)
            .unwrap_or_else(|| (0..self.table_schema.fields().len()).collect())
    }

    fn wrap(&self, e: arrow::error::ArrowError) -> Error {
        Error::corruption(&self.path, 0, e.to_string())
    }

    /// A decoder of the projected columns with the file's dictionaries loaded.
    fn decoder(&self, proj: &[usize]) -> Result<FileDecoder> {
        let mut dec =
            FileDecoder::new(self.file_schema.clone(), self.version).with_projection(proj.to_vec());
        for b in &self.dict_blocks {
            dec.read_dictionary(b, &self.block_buf(b)?)
                .map_err(|e| self.wrap(e))?;
        }
        Ok(dec)
    }

    /// Decode batch `i` with `dec` into the table's own types (`out_schema`).
    fn decode(&self, dec: &FileDecoder, i: usize, out_schema: &SchemaRef) -> Result<RecordBatch> {
        let block = &self.batch_blocks[i];
        let batch = dec
            .read_record_batch(block, &self.block_buf(block)?)
            .map_err(|e| self.wrap(e))?
            .ok_or_else(|| Error::corruption(&self.path, 0, "empty record batch block"))?;
        let rows = self.batch_range(i).len();
        if batch.num_rows() != rows {
            return Err(Error::corruption(
                &self.path,
                block.offset() as u64,
                format!("batch {i} has {} rows, expected {rows}", batch.num_rows()),
            ));
        }
        let cols = batch
            .columns()
            .iter()
            .zip(out_schema.fields())
            .map(|(c, f)| to_type(c, f.data_type()).map_err(|e| self.wrap(e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            out_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// A reader that decodes the projected columns (indexes into the table schema;
    /// `None` = all) one batch at a time.
    pub fn reader(self: &Arc<Self>, projection: Option<&[usize]>) -> Result<SegmentReader> {
        let proj = self.projection(projection);
        let out_schema = Arc::new(self.table_schema.project(&proj)?);
        self.reader_as(projection, out_schema)
    }

    /// [`Segment::reader`] that decodes into `schema` instead of the table's types: one
    /// field per projected column, of a type the stored column casts to (e.g. `Utf8View`
    /// for a string column, which a dictionary becomes without copying its strings).
    pub fn reader_as(
        self: &Arc<Self>,
        projection: Option<&[usize]>,
        schema: SchemaRef,
    ) -> Result<SegmentReader> {
        let proj = self.projection(projection);
        if schema.fields().len() != proj.len() {
            return Err(Error::Schema(format!(
                "{} output fields for {} projected columns",
                schema.fields().len(),
                proj.len()
            )));
        }
        Ok(SegmentReader {
            dec: self.decoder(&proj)?,
            out_schema: schema,
            seg: self.clone(),
        })
    }

    /// Read the projected columns (indexes into the table schema; `None` = all) of every
    /// row, decoded to the table's own types.
    pub fn read(&self, projection: Option<&[usize]>) -> Result<RecordBatch> {
        let proj = self.projection(projection);
        let dec = self.decoder(&proj)?;
        let out_schema = Arc::new(self.table_schema.project(&proj)?);
        let batches = (0..self.num_batches())
            .map(|i| self.decode(&dec, i, &out_schema))
            .collect::<Result<Vec<_>>>()?;
        if batches.len() == 1 {
            return Ok(batches.into_iter().next().expect("one batch"));
        }
        Ok(arrow::compute::concat_batches(&out_schema, &batches)?)
    }
}

/// Cast a stored column to the type a reader asked for. A dictionary is unpacked by
/// casting its (few) values and gathering them by key: for a string dictionary read as
/// `Utf8View` that copies one 16-byte view per row instead of rebuilding each view from
/// the string bytes.
fn to_type(c: &ArrayRef, t: &DataType) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    if c.data_type() == t {
        return Ok(c.clone());
    }
    if let Some(d) = c.as_any_dictionary_opt()
        && !matches!(t, DataType::Dictionary(_, _))
    {
        let values = arrow::compute::cast(d.values(), t)?;
        return arrow::compute::take(values.as_ref(), d.keys(), None);
    }
    arrow::compute::cast(c, t)
}

/// Decodes one segment's batches on demand (see [`Segment::reader`]).
pub struct SegmentReader {
    seg: Arc<Segment>,
    dec: FileDecoder,
    out_schema: SchemaRef,
}

impl SegmentReader {
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// Decode batch `i` (rows [`Segment::batch_range`]`(i)`).
    pub fn read_batch(&self, i: usize) -> Result<RecordBatch> {
        if i >= self.seg.num_batches() {
            return Err(Error::Schema(format!(
                "batch {i} of a segment with {} batches",
                self.seg.num_batches()
            )));
        }
        self.seg.decode(&self.dec, i, &self.out_schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_rowstore::vfs::StdVfs;

    fn sample(n: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("flag", DataType::Utf8, true),
            Field::new("qty", DataType::Int32, true),
            Field::new("price", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 7 != 0).then(|| ["A", "N", "R"][i % 3])),
                )),
                Arc::new(Int32Array::from_iter_values(
                    (0..n).map(|i| (i / 10) as i32),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 * 1.5),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn write_read_roundtrip_with_encodings_and_projection() {
        let d = tempfile::tempdir().unwrap();
        let b = sample(1000);
        for (id, c) in [
            (1, SegmentCompression::Zstd),
            (2, SegmentCompression::Lz4),
            (3, SegmentCompression::None),
        ] {
            let info = write_segment(&StdVfs, d.path(), id, &b, c).unwrap();
            assert_eq!(info.rows, 1000);
            assert_eq!(info.zone_maps[0].min, serde_json::json!(0));
            assert_eq!(info.zone_maps[0].max, serde_json::json!(999));
            assert_eq!(info.zone_maps[1].null_count, 143);
            let s = Segment::open(&StdVfs, d.path(), &info, b.schema()).unwrap();
            assert_eq!(s.read(None).unwrap(), b);
            let p = s.read(Some(&[3, 0])).unwrap();
            assert_eq!(p.num_columns(), 2);
            assert_eq!(p.column(1).as_ref(), b.column(0).as_ref());
        }
        // A standard IPC reader reads it too, with the encodings visible.
        let f = std::fs::File::open(segment_path(d.path(), 1)).unwrap();
        let r = arrow::ipc::reader::FileReader::try_new(f, None).unwrap();
        let schema = r.schema();
        assert!(matches!(
            schema.field(1).data_type(),
            DataType::Dictionary(_, _)
        ));
        assert!(matches!(
            schema.field(2).data_type(),
            DataType::RunEndEncoded(_, _)
        ));
        assert_eq!(r.custom_metadata()[META_VERSION], "2");
    }

    #[test]
    fn batches_share_dictionaries_and_carry_their_own_zone_maps() {
        let d = tempfile::tempdir().unwrap();
        let b = sample(1000);
        let info =
            write_segment_batched(&StdVfs, d.path(), 4, &b, SegmentCompression::Zstd, 300).unwrap();
        assert_eq!(info.zone_maps[0].min, serde_json::json!(0));
        assert_eq!(info.zone_maps[0].max, serde_json::json!(999));
        assert_eq!(info.zone_maps[1].null_count, 143);
        assert_eq!(info.zone_maps[3].max, serde_json::json!(999.0 * 1.5));
        let s = Arc::new(Segment::open(&StdVfs, d.path(), &info, b.schema()).unwrap());
        assert_eq!(s.num_batches(), 4);
        assert_eq!(s.batch_range(3), 900..1000);
        assert_eq!(s.batch_zone_maps(1)[0].min, serde_json::json!(300));
        assert_eq!(s.batch_zone_maps(1)[0].max, serde_json::json!(599));
        assert_eq!(s.batch_zone_maps(1)[2].min, serde_json::json!(30));
        assert_eq!(s.read(None).unwrap(), b);
        let r = s.reader(Some(&[2, 1])).unwrap();
        for i in 0..4 {
            let range = s.batch_range(i);
            let got = r.read_batch(i).unwrap();
            assert_eq!(
                got,
                b.project(&[2, 1]).unwrap().slice(range.start, range.len())
            );
        }
        assert!(r.read_batch(4).is_err());
        // Standard readers see four batches, dictionary- and run-end-encoded.
        let f = std::fs::File::open(segment_path(d.path(), 4)).unwrap();
        let r = arrow::ipc::reader::FileReader::try_new(f, None).unwrap();
        assert_eq!(r.num_batches(), 4);
        let rows: usize = r.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1000);
        // An empty segment is one empty batch.
        let empty = b.slice(0, 0);
        let info = write_segment(&StdVfs, d.path(), 5, &empty, SegmentCompression::Lz4).unwrap();
        let s = Segment::open(&StdVfs, d.path(), &info, b.schema()).unwrap();
        assert_eq!(s.num_batches(), 1);
        assert_eq!(s.read(None).unwrap().num_rows(), 0);
    }

    #[test]
    fn narrow_storage_and_numeric_dictionaries_read_back_exactly() {
        let d = tempfile::tempdir().unwrap();
        let n = 5000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("discount", DataType::Decimal128(15, 2), false),
            Field::new("big", DataType::Decimal128(38, 0), false),
            Field::new("day", DataType::Date32, false),
            Field::new("wide", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(
                    Decimal128Array::from_iter(
                        (0..n).map(|i| (i % 9 != 0).then_some(i as i128 * 7919 % 10_000_000)),
                    )
                    .with_precision_and_scale(15, 2)
                    .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from_iter_values((0..n).map(|i| (i % 11) as i128))
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from_iter_values((0..n).map(|i| i as i128 * 10i128.pow(30)))
                        .with_precision_and_scale(38, 0)
                        .unwrap(),
                ),
                Arc::new(Date32Array::from_iter_values((0..n).map(|i| i * 31 % 200))),
                Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| i as i64 * (1 << 40)),
                )),
            ],
        )
        .unwrap();
        let info = write_segment_batched(&StdVfs, d.path(), 1, &b, SegmentCompression::Zstd, 1024)
            .unwrap();
        let s = Segment::open(&StdVfs, d.path(), &info, schema).unwrap();
        assert_eq!(s.read(None).unwrap(), b);
        let f = std::fs::File::open(segment_path(d.path(), 1)).unwrap();
        let r = arrow::ipc::reader::FileReader::try_new(f, None).unwrap();
        let stored: Vec<DataType> = r
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(stored[0], DataType::Int16);
        assert_eq!(stored[1], DataType::Decimal32(9, 2));
        assert_eq!(
            stored[2],
            DataType::Dictionary(
                Box::new(DataType::Int8),
                Box::new(DataType::Decimal32(9, 2))
            )
        );
        assert_eq!(stored[3], DataType::Decimal128(38, 0));
        assert_eq!(
            stored[4],
            DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Date32))
        );
        assert_eq!(stored[5], DataType::Int64);
    }

    #[test]
    fn segment_chunks_must_exist_and_agree_on_their_schema() {
        let d = tempfile::tempdir().unwrap();
        assert!(write_segment_chunks(&StdVfs, d.path(), 1, &[], SegmentCompression::Zstd).is_err());
        let b = sample(100);
        let other = b.project(&[0, 1]).unwrap();
        let e = write_segment_chunks(
            &StdVfs,
            d.path(),
            2,
            &[b.clone(), other],
            SegmentCompression::Zstd,
        );
        assert!(e.unwrap_err().to_string().contains("schema"));
        // Chunks of any sizes become the file's batches, in order.
        let chunks = [b.slice(0, 10), b.slice(10, 0), b.slice(10, 90)];
        let info =
            write_segment_chunks(&StdVfs, d.path(), 3, &chunks, SegmentCompression::Lz4).unwrap();
        let s = Segment::open(&StdVfs, d.path(), &info, b.schema()).unwrap();
        assert_eq!(s.num_batches(), 3);
        assert_eq!(s.batch_range(2), 10..100);
        assert_eq!(s.read(None).unwrap(), b);
    }

    #[test]
    fn zone_hex_is_lowercase_and_sorts_like_the_bytes() {
        assert_eq!(zone_hex(&[0x00, 0x0a, 0xab, 0xff]), "000aabff");
        assert!(zone_hex(b"ab") < zone_hex(b"abc") && zone_hex(&[0x0f]) < zone_hex(&[0xf0]));
    }

    #[test]
    fn flipped_byte_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        let b = sample(500);
        let info = write_segment(&StdVfs, d.path(), 9, &b, SegmentCompression::Zstd).unwrap();
        let p = segment_path(d.path(), 9);
        let orig = std::fs::read(&p).unwrap();
        for pos in [10, orig.len() / 2, orig.len() - 20] {
            let mut bad = orig.clone();
            bad[pos] ^= 0x20;
            std::fs::write(&p, &bad).unwrap();
            let e = Segment::open(&StdVfs, d.path(), &info, b.schema()).unwrap_err();
            assert!(matches!(e, Error::Corruption { .. }), "{e}");
        }
    }
}
