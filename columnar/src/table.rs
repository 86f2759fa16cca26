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
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const CATALOG_PREFIX: &[u8] = b"\x00catalog/";
pub const ROWS_TAG: u8 = 0x01;
pub const KV_TABLE_ID: u32 = 0;
pub const KV_TABLE_NAME: &str = "kv";
const DEF_VERSION: u32 = 1;

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

/// A table: its id, name, Arrow schema and primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub id: u32,
    pub name: String,
    pub schema: SchemaRef,
    /// Indexes of the primary-key columns in the schema, in key order.
    pub key_cols: Vec<usize>,
    /// Stored raw (the built-in `kv` table).
    pub raw_kv: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredField {
    name: String,
    r#type: String,
    nullable: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredDef {
    version: u32,
    id: u32,
    name: String,
    fields: Vec<StoredField>,
    primary_key: Vec<String>,
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
        _ => {
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
        if schema.fields().is_empty() {
            return Err(Error::Schema(format!("table {name} has no columns")));
        }
        if primary_key.is_empty() {
            return Err(Error::Schema(format!("table {name} needs a primary key")));
        }
        let mut seen = std::collections::HashSet::new();
        for f in schema.fields() {
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
        let fields: Vec<Field> = schema
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
        Ok(TableDef {
            id,
            name: name.to_string(),
            schema: Arc::new(Schema::new(fields)),
            key_cols,
            raw_kv: false,
        })
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
        }
    }

    pub fn primary_key_names(&self) -> Vec<String> {
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
        let mut dec =
            crate::codec::RowDecoder::new(self.schema.clone(), &self.key_cols, self.raw_kv, 1);
        dec.push(key, value)?;
        dec.finish()
    }

    /// The row-store value of row `i`, given the non-key columns in schema order.
    pub fn row_value(&self, value_cols: &[&dyn Array], i: usize, out: &mut Vec<u8>) {
        out.clear();
        if self.raw_kv {
            out.extend_from_slice(value_cols[0].as_binary::<i32>().value(i));
        } else {
            crate::codec::encode_row_value(value_cols, i, out);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let d = StoredDef {
            version: DEF_VERSION,
            id: self.id,
            name: self.name.clone(),
            fields: self
                .schema
                .fields()
                .iter()
                .map(|f| StoredField {
                    name: f.name().clone(),
                    r#type: type_name(f.data_type()),
                    nullable: f.is_nullable(),
                })
                .collect(),
            primary_key: self.primary_key_names(),
        };
        serde_json::to_vec(&d).expect("serializable")
    }

    pub fn decode(b: &[u8]) -> Result<TableDef> {
        let d: StoredDef = serde_json::from_slice(b)
            .map_err(|e| Error::Schema(format!("damaged table definition: {e}")))?;
        if d.version != DEF_VERSION {
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
        TableDef::new(d.id, &d.name, &Schema::new(fields), &pk)
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
        assert!(TableDef::new(1, "t", &s, &[]).is_err());
        let bad = Schema::new(vec![Field::new("x", DataType::Float16, false)]);
        assert!(TableDef::new(1, "t", &bad, &["x"]).is_err());
        assert!(TableDef::decode(b"{").is_err());
        assert!(table_prefix(1) < table_prefix(2));
        assert_eq!(table_end(1), table_prefix(2).to_vec());
    }
}
