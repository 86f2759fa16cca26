//! Pieces shared by both export formats: splitting rows by partition values, hive-style
//! directory names, the Parquet writer settings, and per-file column statistics.

use super::{ExportedFile, NewFile};
use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef};
use arrow::datatypes::{Float32Type, Float64Type, UInt8Type, UInt16Type, UInt32Type};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::array_value_to_string;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Hive's directory name for a null (or empty) partition value.
pub(crate) const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// Rows per Parquet row group: small enough that readers skip row groups by their
/// statistics, large enough to compress well.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Types a table may be partitioned by (their values name directories).
pub(crate) fn partitionable(t: &DataType) -> bool {
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
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Date32
    )
}

/// One partition's value of each partition column (`None`: null or empty string).
pub(crate) type PartValues = Vec<Option<String>>;

/// The hive-style relative directory of a partition (`a=1/b=x%2Fy`), empty when the
/// table is not partitioned. Every byte outside `[A-Za-z0-9._-]` is %-escaped, which
/// hive-partitioning readers (pyarrow, DuckDB, Spark) decode.
pub(crate) fn hive_dir(names: &[String], values: &PartValues) -> String {
    let mut out = String::new();
    for (n, v) in names.iter().zip(values) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&escape(n));
        out.push('=');
        match v {
            Some(v) => out.push_str(&escape(v)),
            None => out.push_str(HIVE_NULL),
        }
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Split `batch` by the values of its columns `part_cols`: for each partition its
/// values and the row indexes, in order of first appearance. Rows are grouped by their
/// partition columns in Arrow's row format; the values are formatted once per group.
pub(crate) fn split(
    batch: &RecordBatch,
    part_cols: &[usize],
) -> Result<Vec<(PartValues, Vec<u32>)>> {
    if part_cols.is_empty() {
        return Ok(vec![(Vec::new(), (0..batch.num_rows() as u32).collect())]);
    }
    let cols: Vec<ArrayRef> = part_cols.iter().map(|&i| batch.column(i).clone()).collect();
    let conv = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let keys = conv.convert_columns(&cols)?;
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut out: Vec<(PartValues, Vec<u32>)> = Vec::new();
    for row in 0..batch.num_rows() {
        let at = match index.get(keys.row(row).as_ref()) {
            Some(&at) => at,
            None => {
                let mut values = Vec::with_capacity(cols.len());
                for c in &cols {
                    values.push(match c.is_null(row) {
                        true => None,
                        false => Some(array_value_to_string(c, row)?).filter(|s| !s.is_empty()),
                    });
                }
                out.push((values, Vec::new()));
                index.insert(keys.row(row).data(), out.len() - 1);
                out.len() - 1
            }
        };
        out[at].1.push(row as u32);
    }
    Ok(out)
}

/// The rows `rows` of `batch`, only the columns `keep`.
pub(crate) fn take(
    batch: &RecordBatch,
    rows: &[u32],
    keep: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.to_vec());
    let all = rows.len() == batch.num_rows();
    let cols = keep
        .iter()
        .map(|&i| match all {
            true => Ok(batch.column(i).clone()),
            false => arrow::compute::take(batch.column(i), &idx, None),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// A Parquet file being written: zstd, row groups of [`ROW_GROUP_ROWS`] with chunk and
/// page statistics, and (for Delta) the statistics of its columns for the log.
pub(crate) struct PartFile {
    pub rel_path: String,
    pub path: PathBuf,
    pub values: PartValues,
    writer: ArrowWriter<File>,
    pub rows: u64,
    pub stats: Vec<ColumnStats>,
}

impl PartFile {
    pub(crate) fn create(
        root: &Path,
        rel_dir: &str,
        name: String,
        values: PartValues,
        schema: &SchemaRef,
        arrow_metadata: bool,
    ) -> Result<PartFile> {
        let dir = root.join(rel_dir);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "creating", e))?;
        let path = dir.join(&name);
        let f = File::create(&path).map_err(|e| io(&path, "creating", e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(Default::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let opts = ArrowWriterOptions::new()
            .with_properties(props)
            .with_skip_arrow_metadata(!arrow_metadata);
        let writer = ArrowWriter::try_new_with_options(f, schema.clone(), opts)
            .map_err(|e| Error::Arrow(e.to_string()))?;
        let rel_path = match rel_dir.is_empty() {
            true => name,
            false => format!("{rel_dir}/{name}"),
        };
        Ok(PartFile {
            rel_path,
            path,
            values,
            writer,
            rows: 0,
            stats: schema
                .fields()
                .iter()
                .map(|_| ColumnStats::default())
                .collect(),
        })
    }

    pub(crate) fn write(&mut self, b: &RecordBatch) -> Result<()> {
        for (s, c) in self.stats.iter_mut().zip(b.columns()) {
            s.add(c);
        }
        self.rows += b.num_rows() as u64;
        self.writer
            .write(b)
            .map_err(|e| Error::Arrow(e.to_string()))
    }

    /// Finish the file, flushed to disk, as a file of export unit `unit`.
    pub(crate) fn finish(self, unit: &str) -> Result<NewFile> {
        let f = self
            .writer
            .into_inner()
            .map_err(|e| Error::Arrow(e.to_string()))?;
        f.sync_all().map_err(|e| io(&self.path, "syncing", e))?;
        let size = f
            .metadata()
            .map_err(|e| io(&self.path, "reading the size of", e))?
            .len();
        Ok(NewFile {
            file: ExportedFile {
                unit: unit.to_string(),
                path: self.rel_path,
                values: self.values,
                size,
                rows: self.rows,
            },
            stats: self.stats,
        })
    }
}

pub(crate) fn io(p: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        context: format!("{what} {}", p.display()),
        source: e,
    }
}

/// A value kept for a column's minimum or maximum.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub(crate) enum Stat {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Null count and bounds of one column of one file, for the Delta log's data skipping.
/// Bounds are kept only where they are exact: integers, finite floats, dates, and
/// strings (a long minimum is cut to a prefix, which still bounds; a long maximum is
/// dropped).
#[derive(Debug, Default, Clone)]
pub(crate) struct ColumnStats {
    pub nulls: u64,
    pub min: Option<Stat>,
    pub max: Option<Stat>,
    /// A value was seen whose bounds cannot be kept (no bounds for the file).
    pub unbounded: bool,
}

const STRING_STAT_CHARS: usize = 32;

impl ColumnStats {
    fn widen(&mut self, lo: Stat, hi: Stat) {
        if self.min.as_ref().is_none_or(|m| lo < *m) {
            self.min = Some(lo);
        }
        if self.max.as_ref().is_none_or(|m| hi > *m) {
            self.max = Some(hi);
        }
    }

    fn add(&mut self, c: &ArrayRef) {
        self.nulls += c.null_count() as u64;
        if self.unbounded || c.null_count() == c.len() {
            return;
        }
        macro_rules! ints {
            ($t:ty) => {{
                let a = c.as_primitive::<$t>();
                let lo = arrow::compute::min(a).map(|v| v as i64);
                let hi = arrow::compute::max(a).map(|v| v as i64);
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    self.widen(Stat::Int(lo), Stat::Int(hi));
                }
            }};
        }
        macro_rules! floats {
            ($t:ty) => {{
                let a = c.as_primitive::<$t>();
                if a.iter().flatten().any(|v| !(v as f64).is_finite()) {
                    self.unbounded = true;
                    return;
                }
                let lo = arrow::compute::min(a).map(|v| v as f64);
                let hi = arrow::compute::max(a).map(|v| v as f64);
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    self.widen(Stat::Float(lo), Stat::Float(hi));
                }
            }};
        }
        match c.data_type() {
            DataType::Int8 => ints!(Int8Type),
            DataType::Int16 => ints!(Int16Type),
            DataType::Int32 => ints!(Int32Type),
            DataType::Int64 => ints!(Int64Type),
            DataType::UInt8 => ints!(UInt8Type),
            DataType::UInt16 => ints!(UInt16Type),
            DataType::UInt32 => ints!(UInt32Type),
            DataType::Float32 => floats!(Float32Type),
            DataType::Float64 => floats!(Float64Type),
            DataType::Date32 => {
                let a = c.as_primitive::<arrow::datatypes::Date32Type>();
                let lo = arrow::compute::min(a);
                let hi = arrow::compute::max(a);
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    // ISO dates of years 0..9999 order like the days they name.
                    let day = |d: i32| {
                        arrow::temporal_conversions::date32_to_datetime(d)
                            .map(|t| t.date().to_string())
                            .filter(|s| s.len() == 10)
                    };
                    match (day(lo), day(hi)) {
                        (Some(lo), Some(hi)) => self.widen(Stat::Text(lo), Stat::Text(hi)),
                        _ => self.unbounded = true,
                    }
                }
            }
            DataType::Utf8 => {
                let a = c.as_string::<i32>();
                let lo = arrow::compute::min_string(a).map(|s| s.to_string());
                let hi = arrow::compute::max_string(a).map(|s| s.to_string());
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    self.widen(Stat::Text(lo), Stat::Text(hi));
                }
            }
            _ => self.unbounded = true,
        }
    }

    /// The bounds as JSON values for the Delta log (`None`: not kept).
    pub(crate) fn json_bounds(&self) -> Option<(serde_json::Value, Option<serde_json::Value>)> {
        if self.unbounded {
            return None;
        }
        let json = |s: &Stat| match s {
            Stat::Int(v) => serde_json::json!(v),
            Stat::Float(v) => serde_json::json!(v),
            Stat::Text(t) => serde_json::json!(t),
        };
        let (lo, hi) = (self.min.as_ref()?, self.max.as_ref()?);
        match (lo, hi) {
            (Stat::Text(lo), Stat::Text(hi)) => {
                let lo: String = lo.chars().take(STRING_STAT_CHARS).collect();
                let hi = (hi.chars().count() <= STRING_STAT_CHARS)
                    .then(|| json(&Stat::Text(hi.clone())));
                Some((serde_json::json!(lo), hi))
            }
            _ => Some((json(lo), Some(json(hi)))),
        }
    }
}
