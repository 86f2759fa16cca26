//! Table definitions and their place in the row store's key space.
//!
//! ```text
//! 0x00 "catalog/" name          -> table definition (JSON, versioned)
//! 0x00 "meta/next_table_id"     -> next table id (u32 BE; ids are never reused)
//! 0x00 "dropped/" id (u32 BE)   -> a dropped table whose rows are being reclaimed
//! 0x01 table id (u32 BE) key    -> row (key = memcomparable primary key)
//! ```
//!
//! Table id 0 is the built-in `kv(key BINARY PRIMARY KEY, value BINARY)` table that holds
//! the key-value API's data; its keys and values are stored raw.

use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, SchemaRef, TimeUnit};
use lightning_rowstore::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::layout::StoredLayout;
pub use crate::layout::{Fill, Layout, Source};

pub const CATALOG_PREFIX: &[u8] = b"\x00catalog/";
pub const ROWS_TAG: u8 = 0x01;
pub const KV_TABLE_ID: u32 = 0;
pub const KV_TABLE_NAME: &str = "kv";
/// Definitions of tables never altered in place are written as version 1, so a build
/// from before schema versions still reads them; an altered table's is version 2.
const DEF_VERSION: u32 = 1;
const DEF_VERSION_LAYOUT: u32 = 2;

/// The 5-byte prefix of every row of table `id`.
pub fn table_prefix(id: u32) -> [u8; 5] {
    let b = id.to_be_bytes();
    [ROWS_TAG, b[0], b[1], b[2], b[3]]
}

/// The first key after every row of table `id`.
pub fn table_end(id: u32) -> Vec<u8> {
    match id.checked_add(1) {
        Some(n) => table_prefix(n).to_vec(),
        None => vec![ROWS_TAG + 1],
    }
}

/// The next table id to hand out (u32 BE): ids are never reused, so rows a dropped
/// table left behind can never appear in a new table.
pub const NEXT_TABLE_ID_KEY: &[u8] = b"\x00meta/next_table_id";
/// Markers of dropped tables whose rows are still being reclaimed.
pub const DROPPED_PREFIX: &[u8] = b"\x00dropped/";

/// The marker of dropped table `id`.
pub fn dropped_key(id: u32) -> Vec<u8> {
    let mut k = DROPPED_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The table id of a row-store key under [`ROWS_TAG`].
pub fn table_id_of(key: &[u8]) -> Option<u32> {
    (key.len() >= 5 && key[0] == ROWS_TAG)
        .then(|| u32::from_be_bytes(key[1..5].try_into().expect("4 bytes")))
}

pub fn catalog_key(name: &str) -> Vec<u8> {
    let mut k = CATALOG_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The hidden last column of a table created without a primary key: a row id assigned
/// on insert (monotonically, never shown to users), which is the rows' row-store key.
pub const ROW_ID: &str = "__lightning_row_id";

/// A table: its id, name, Arrow schema and primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub id: u32,
    pub name: String,
    /// The stored columns (a keyless table's end with [`ROW_ID`]).
    pub schema: SchemaRef,
    /// Indexes of the primary-key columns in the schema, in key order.
    pub key_cols: Vec<usize>,
    /// Stored raw (the built-in `kv` table).
    pub raw_kv: bool,
    /// Created without a primary key: keyed by the hidden [`ROW_ID`] column.
    pub keyless: bool,
    /// The next row id of a keyless table (shared by every clone of the definition).
    pub row_ids: Arc<RowIds>,
    /// Column -> its `DEFAULT` (SQL expression text, as SQL planning reads it back):
    /// what an INSERT that leaves the column out writes.
    pub defaults: std::collections::BTreeMap<String, String>,
    /// Held shared by every write to the table while it commits (shared by every clone
    /// of the definition): see [`WriteGate`].
    pub gate: Arc<WriteGate>,
    /// The table's schema version and the shapes of its earlier versions: rows and
    /// segments written before an `ALTER TABLE` keep their shape and are read through it.
    pub layout: Arc<Layout>,
}

/// What keeps writes and a statement that replaces a table (`ALTER TABLE`) apart.
/// A write holds the gate shared from before it commits until its commit is done; the
/// replacing statement holds it exclusively while it copies the last changes and
/// publishes the new definition, then retires it. A write that arrives afterwards with
/// the old definition is refused as a conflict (run again, it finds the new table),
/// so no commit can land in a table that was already replaced and be lost with it.
#[derive(Debug, Default)]
pub struct WriteGate(parking_lot::RwLock<bool>);

impl PartialEq for WriteGate {
    fn eq(&self, _: &WriteGate) -> bool {
        true
    }
}

impl WriteGate {
    /// Enter to write: `Err(TransactionConflict)` if the table was replaced.
    pub fn enter(&self) -> Result<parking_lot::RwLockReadGuard<'_, bool>> {
        let g = self.0.read();
        if *g {
            return Err(lightning_rowstore::Error::TransactionConflict(
                "the table was altered or replaced while the statement ran; run it again".into(),
            )
            .into());
        }
        Ok(g)
    }

    /// Close the gate: wait for the writes inside, keep new ones out until the guard is
    /// dropped. Set the guarded flag to retire the definition for good.
    pub fn close(&self) -> parking_lot::RwLockWriteGuard<'_, bool> {
        self.0.write()
    }
}

/// Allocates a keyless table's row ids: from one past the largest stored when first
/// asked, then in memory.
#[derive(Debug, Default)]
pub struct RowIds(parking_lot::Mutex<Option<u64>>);

impl PartialEq for RowIds {
    fn eq(&self, _: &RowIds) -> bool {
        true
    }
}

#[derive(Serialize, Deserialize)]
struct StoredField {
    name: String,
    r#type: String,
    nullable: bool,
    /// The column's `DEFAULT` as SQL text (absent: none). Readers of older definitions
    /// see none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredDef {
    version: u32,
    id: u32,
    name: String,
    fields: Vec<StoredField>,
    primary_key: Vec<String>,
    /// Present from definition version 2 on (a table altered in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<StoredLayout>,
}

fn unit_name(u: &TimeUnit) -> &'static str {
    match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// Our stable name for a supported type.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Decimal128(p, s) => format!("decimal128({p},{s})"),
        DataType::Timestamp(u, tz) => match tz {
            Some(tz) => format!("timestamp({},{tz})", unit_name(u)),
            None => format!("timestamp({})", unit_name(u)),
        },
        DataType::Time32(u) => format!("time32({})", unit_name(u)),
        DataType::Decimal256(p, s) => format!("decimal256({p},{s})"),
        DataType::FixedSizeBinary(n) => format!("fixedsizebinary({n})"),
        DataType::Interval(IntervalUnit::YearMonth) => "interval(yearmonth)".into(),
        DataType::Interval(IntervalUnit::DayTime) => "interval(daytime)".into(),
        DataType::Interval(IntervalUnit::MonthDayNano) => "interval(monthdaynano)".into(),
        DataType::Time64(u) => format!("time64({})", unit_name(u)),
        DataType::Duration(u) => format!("duration({})", unit_name(u)),
        t => t.to_string().to_lowercase(),
    }
}

pub fn parse_type(s: &str) -> Option<DataType> {
    Some(match s {
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "largeutf8" => DataType::LargeUtf8,
        "binary" => DataType::Binary,
        "boolean" => DataType::Boolean,
        "date32" => DataType::Date32,
        "date64" => DataType::Date64,
        "float16" => DataType::Float16,
        "interval(yearmonth)" => DataType::Interval(IntervalUnit::YearMonth),
        "interval(daytime)" => DataType::Interval(IntervalUnit::DayTime),
        "interval(monthdaynano)" => DataType::Interval(IntervalUnit::MonthDayNano),
        _ => {
            let unit = |u: &str| {
                Some(match u {
                    "s" => TimeUnit::Second,
                    "ms" => TimeUnit::Millisecond,
                    "us" => TimeUnit::Microsecond,
                    "ns" => TimeUnit::Nanosecond,
                    _ => return None,
                })
            };
            let inner = |prefix: &str| s.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
            if let Some(u) = inner("time32(") {
                return Some(DataType::Time32(unit(u)?));
            }
            if let Some(u) = inner("time64(") {
                return Some(DataType::Time64(unit(u)?));
            }
            if let Some(u) = inner("duration(") {
                return Some(DataType::Duration(unit(u)?));
            }
            if let Some(n) = inner("fixedsizebinary(") {
                return Some(DataType::FixedSizeBinary(n.parse().ok()?));
            }
            if let Some(ps) = inner("decimal256(") {
                let (p, sc) = ps.split_once(',')?;
                return Some(DataType::Decimal256(p.parse().ok()?, sc.parse().ok()?));
            }
            if let Some(inner) = s
                .strip_prefix("decimal128(")
                .and_then(|r| r.strip_suffix(')'))
            {
                let (p, sc) = inner.split_once(',')?;
                return Some(DataType::Decimal128(p.parse().ok()?, sc.parse().ok()?));
            }
            let inner = s.strip_prefix("timestamp(")?.strip_suffix(')')?;
            let (u, tz) = match inner.split_once(',') {
                Some((u, tz)) => (u, Some(Arc::from(tz))),
                None => (inner, None),
            };
            let unit = match u {
                "s" => TimeUnit::Second,
                "ms" => TimeUnit::Millisecond,
                "us" => TimeUnit::Microsecond,
                "ns" => TimeUnit::Nanosecond,
                _ => return None,
            };
            DataType::Timestamp(unit, tz)
        }
    })
}

impl TableDef {
    /// Validate a user's schema and key and build a definition. Key columns become
    /// non-nullable.
    pub fn new(id: u32, name: &str, schema: &Schema, primary_key: &[&str]) -> Result<TableDef> {
        if name.is_empty() || name.len() > 256 || name.contains('\0') {
            return Err(Error::Schema(format!("invalid table name {name:?}")));
        }
        // A keyless table may have no columns of its own (it has its row id).
        if schema.fields().is_empty() && !primary_key.is_empty() {
            return Err(Error::Schema(format!("table {name} has no columns")));
        }
        let mut seen = std::collections::HashSet::new();
        for f in schema.fields() {
            if f.name() == ROW_ID {
                return Err(Error::Schema(format!(
                    "column name {ROW_ID} is reserved (table {name})"
                )));
            }
            if !seen.insert(f.name().as_str()) {
                return Err(Error::Schema(format!(
                    "duplicate column {} in table {name}",
                    f.name()
                )));
            }
            if !crate::codec::supported(f.data_type()) {
                return Err(Error::Schema(format!(
                    "column {} has unsupported type {}",
                    f.name(),
                    f.data_type()
                )));
            }
        }
        let mut key_cols = Vec::new();
        for k in primary_key {
            let i = schema.index_of(k).map_err(|_| {
                Error::Schema(format!("primary key column {k} is not in table {name}"))
            })?;
            if key_cols.contains(&i) {
                return Err(Error::Schema(format!(
                    "primary key column {k} listed twice"
                )));
            }
            key_cols.push(i);
        }
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Field::new(
                    f.name(),
                    f.data_type().clone(),
                    f.is_nullable() && !key_cols.contains(&i),
                )
            })
            .collect();
        let keyless = key_cols.is_empty();
        if keyless {
            key_cols.push(fields.len());
            fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        }
        Ok(TableDef {
            id,
            name: name.to_string(),
            schema: Arc::new(Schema::new(fields)),
            key_cols,
            raw_kv: false,
            keyless,
            row_ids: Default::default(),
            gate: Default::default(),
            defaults: Default::default(),
            layout: Arc::new(Layout {
                next_id: schema.fields().len() as u32 + u32::from(keyless),
                ..Default::default()
            }),
        })
    }

    /// The columns users see: all but a keyless table's hidden [`ROW_ID`].
    pub fn user_schema(&self) -> SchemaRef {
        match self.keyless {
            true => Arc::new(
                self.schema
                    .project(&(0..self.user_width()).collect::<Vec<_>>())
                    .expect("columns in range"),
            ),
            false => self.schema.clone(),
        }
    }

    /// How many columns users see.
    pub fn user_width(&self) -> usize {
        self.schema.fields().len() - usize::from(self.keyless)
    }

    /// `batch` (the user's columns) with a keyless table's row ids appended: `n` new
    /// ids from `engine`'s largest stored one, or from the last assigned. Any other
    /// table's batch is returned as it is.
    pub fn with_row_ids(&self, engine: &Engine, batch: &RecordBatch) -> Result<RecordBatch> {
        if !self.keyless {
            return Ok(batch.clone());
        }
        if batch.schema().index_of(ROW_ID).is_ok() {
            return Err(Error::Schema(format!(
                "table {}: column {ROW_ID} is assigned by the table",
                self.name
            )));
        }
        let n = batch.num_rows() as u64;
        let first = {
            let mut next = self.row_ids.0.lock();
            let first = match *next {
                Some(f) => f,
                None => self.stored_row_ids_end(engine)?,
            };
            *next = Some(first + n);
            first
        };
        let mut fields = batch.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(ROW_ID, DataType::UInt64, false)));
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(arrow::array::UInt64Array::from_iter_values(
            first..first + n,
        )));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n as usize)),
        )?)
    }

    /// One past the largest row id stored (0 for an empty table).
    fn stored_row_ids_end(&self, engine: &Engine) -> Result<u64> {
        let (s, e) = (table_prefix(self.id), table_end(self.id));
        let Some(r) = engine.iter(Some(&s), Some(&e), true)?.next() else {
            return Ok(0);
        };
        let (k, v) = r?;
        let row = self.decode_row(&k, &v)?;
        let id = row
            .column(self.key_cols[0])
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .value(0);
        Ok(id + 1)
    }

    /// The built-in `kv` table.
    pub fn kv() -> TableDef {
        TableDef {
            id: KV_TABLE_ID,
            name: KV_TABLE_NAME.to_string(),
            schema: Arc::new(Schema::new(vec![
                Field::new("key", DataType::Binary, false),
                Field::new("value", DataType::Binary, false),
            ])),
            key_cols: vec![0],
            raw_kv: true,
            keyless: false,
            row_ids: Default::default(),
            gate: Default::default(),
            defaults: Default::default(),
            layout: Arc::new(Layout {
                next_id: 2,
                ..Default::default()
            }),
        }
    }

    /// The primary-key column names (none for a keyless table).
    pub fn primary_key_names(&self) -> Vec<String> {
        if self.keyless {
            return Vec::new();
        }
        self.key_cols
            .iter()
            .map(|&i| self.schema.field(i).name().clone())
            .collect()
    }

    pub fn value_cols(&self) -> Vec<usize> {
        (0..self.schema.fields().len())
            .filter(|i| !self.key_cols.contains(i))
            .collect()
    }

    /// The columns of `batch` in this table's order (all columns, or only the key
    /// columns), checked against the schema: a mismatch is an error naming the column.
    pub fn align(&self, batch: &RecordBatch, only_key: bool) -> Result<Vec<ArrayRef>> {
        let bs = batch.schema();
        let wanted: Vec<usize> = if only_key {
            self.key_cols.clone()
        } else {
            (0..self.schema.fields().len()).collect()
        };
        for f in bs.fields() {
            let known = self.schema.index_of(f.name()).ok();
            if known.is_none_or(|i| !wanted.contains(&i)) {
                return Err(Error::Schema(format!(
                    "table {}: unexpected column {}{}",
                    self.name,
                    f.name(),
                    if only_key {
                        " (expected only primary-key columns)"
                    } else {
                        ""
                    }
                )));
            }
        }
        wanted
            .iter()
            .map(|&i| {
                let f = self.schema.field(i);
                let col = batch.column_by_name(f.name()).ok_or_else(|| {
                    Error::Schema(format!("table {}: missing column {}", self.name, f.name()))
                })?;
                if col.data_type() != f.data_type() {
                    return Err(Error::Schema(format!(
                        "table {}: column {} has type {}, expected {}",
                        self.name,
                        f.name(),
                        col.data_type(),
                        f.data_type()
                    )));
                }
                if !f.is_nullable() && col.null_count() > 0 {
                    return Err(Error::Schema(format!(
                        "table {}: column {} contains NULL but is NOT NULL{}",
                        self.name,
                        f.name(),
                        if self.key_cols.contains(&i) {
                            " (primary key)"
                        } else {
                            ""
                        }
                    )));
                }
                Ok(col.clone())
            })
            .collect()
    }

    /// The full row-store key (table prefix + encoded key) of row `i`, given the key
    /// columns in key order.
    pub fn row_key(&self, key_cols: &[&dyn Array], i: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&table_prefix(self.id));
        if self.raw_kv {
            out.extend_from_slice(key_cols[0].as_binary::<i32>().value(i));
        } else {
            for c in key_cols {
                crate::codec::encode_key_value(*c, i, out);
            }
        }
    }

    /// One stored row (its full row-store key, as [`TableDef::row_key`] makes it, and
    /// value) as a one-row batch of the table's schema.
    pub fn decode_row(&self, key: &[u8], value: &[u8]) -> Result<RecordBatch> {
        let prefix = table_prefix(self.id).len();
        let key = key.get(prefix..).ok_or_else(|| {
            Error::Schema(format!(
                "row key of table {} shorter than its prefix",
                self.name
            ))
        })?;
        let mut dec = crate::codec::RowDecoder::for_table(self, 1);
        dec.push(key, value)?;
        dec.finish()
    }

    /// The row-store value of row `i`, given the non-key columns in schema order.
    pub fn row_value(&self, value_cols: &[&dyn Array], i: usize, out: &mut Vec<u8>) {
        out.clear();
        if self.raw_kv {
            out.extend_from_slice(value_cols[0].as_binary::<i32>().value(i));
        } else {
            crate::codec::encode_row_value_at(value_cols, i, self.layout.version, out);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let layout = self.layout.stored(self.schema.fields().len());
        let d = StoredDef {
            version: if layout.is_some() {
                DEF_VERSION_LAYOUT
            } else {
                DEF_VERSION
            },
            layout,
            id: self.id,
            name: self.name.clone(),
            fields: self
                .user_schema()
                .fields()
                .iter()
                .map(|f| StoredField {
                    name: f.name().clone(),
                    r#type: type_name(f.data_type()),
                    nullable: f.is_nullable(),
                    default: self.defaults.get(f.name()).cloned(),
                })
                .collect(),
            primary_key: self.primary_key_names(),
        };
        serde_json::to_vec(&d).expect("serializable")
    }

    pub fn decode(b: &[u8]) -> Result<TableDef> {
        let d: StoredDef = serde_json::from_slice(b)
            .map_err(|e| Error::Schema(format!("damaged table definition: {e}")))?;
        if d.version != DEF_VERSION && d.version != DEF_VERSION_LAYOUT {
            return Err(Error::Schema(format!(
                "unsupported table definition version {}",
                d.version
            )));
        }
        let fields = d
            .fields
            .iter()
            .map(|f| {
                parse_type(&f.r#type)
                    .map(|t| Field::new(&f.name, t, f.nullable))
                    .ok_or_else(|| Error::Schema(format!("unknown stored type {}", f.r#type)))
            })
            .collect::<Result<Vec<_>>>()?;
        let pk: Vec<&str> = d.primary_key.iter().map(String::as_str).collect();
        let defaults = d
            .fields
            .iter()
            .filter_map(|f| Some((f.name.clone(), f.default.clone()?)))
            .collect();
        let mut def =
            TableDef::new(d.id, &d.name, &Schema::new(fields), &pk)?.with_defaults(defaults)?;
        if let Some(l) = d.layout {
            def.layout = Arc::new(Layout::from_stored(l, def.schema.fields().len(), &d.name)?);
        }
        Ok(def)
    }

    /// This definition with `defaults` (column -> SQL expression text) for the columns
    /// it names.
    pub fn with_defaults(
        mut self,
        defaults: std::collections::BTreeMap<String, String>,
    ) -> Result<TableDef> {
        for c in defaults.keys() {
            if self.user_schema().index_of(c).is_err() {
                return Err(Error::Schema(format!(
                    "DEFAULT for column {c}, which table {} does not have",
                    self.name
                )));
            }
        }
        self.defaults = defaults;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_roundtrip_and_bad_ones_are_refused() {
        let s = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("name", DataType::Utf8, true),
        ]);
        let d = TableDef::new(7, "orders", &s, &["id"]).unwrap();
        assert!(!d.schema.field(0).is_nullable());
        assert_eq!(TableDef::decode(&d.encode()).unwrap(), d);
        assert!(TableDef::new(1, "t", &s, &["nope"]).is_err());
        // Without a key: keyed by a hidden row id, stored as "no primary key".
        let k = TableDef::new(1, "t", &s, &[]).unwrap();
        assert!(k.keyless && k.primary_key_names().is_empty());
        assert_eq!(k.schema.fields().len(), s.fields().len() + 1);
        assert_eq!(k.schema.field(k.key_cols[0]).name(), ROW_ID);
        assert_eq!(k.user_schema().fields().len(), s.fields().len());
        assert_eq!(TableDef::decode(&k.encode()).unwrap(), k);
        let hidden = Schema::new(vec![Field::new(ROW_ID, DataType::Int64, true)]);
        assert!(TableDef::new(1, "t", &hidden, &[]).is_err());
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let bad = Schema::new(vec![Field::new("x", list, false)]);
        assert!(TableDef::new(1, "t", &bad, &["x"]).is_err());
        // Every supported type's name reads back as that type.
        for t in [
            DataType::Float16,
            DataType::Date64,
            DataType::Time32(TimeUnit::Millisecond),
            DataType::Time64(TimeUnit::Nanosecond),
            DataType::Duration(TimeUnit::Second),
            DataType::Decimal256(50, 2),
            DataType::FixedSizeBinary(16),
            DataType::Interval(IntervalUnit::MonthDayNano),
            DataType::Interval(IntervalUnit::YearMonth),
            DataType::Interval(IntervalUnit::DayTime),
        ] {
            assert_eq!(parse_type(&type_name(&t)), Some(t.clone()), "{t}");
        }
        assert!(TableDef::decode(b"{").is_err());
        assert!(table_prefix(1) < table_prefix(2));
        assert_eq!(table_end(1), table_prefix(2).to_vec());
    }
}
