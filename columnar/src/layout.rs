//! Schema versions: how a table altered in place reads rows and segments written under
//! any of its earlier shapes (see [`Layout`]).

use crate::error::{Error, Result};
use crate::table::{TableDef, parse_type, type_name};
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Schema versions of a table.
///
/// `ALTER TABLE` changes a table in place: it writes a new definition with the next
/// schema version and copies nothing. Every column has an id that never changes and is
/// never reused (renaming keeps it, dropping retires it, adding takes a new one), so
/// data written under any earlier version is read by matching ids: a column the version
/// did not have takes the value its `ADD COLUMN` gave existing rows (its *fill*: the
/// DEFAULT then, else NULL), and a column dropped since is skipped. Row values of a
/// version after 0 carry their version (row format 2); segments record theirs in the
/// column-store state. Compaction rewrites what it merges in the current version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    /// The current schema version (0: never altered).
    pub version: u32,
    /// The id of each stored column, in schema order (empty: the column's index, as for
    /// every table never altered).
    pub ids: Vec<u32>,
    /// The id the next added column takes.
    pub next_id: u32,
    /// Earlier versions: their stored columns (id and type), in their order.
    pub past: std::collections::BTreeMap<u32, Vec<(u32, DataType)>>,
    /// Per added column id: the value rows written before it existed hold (one value,
    /// of the column's type; absent: NULL).
    pub fills: std::collections::BTreeMap<u32, Fill>,
}

/// The value of a column for rows written before the column was added.
#[derive(Debug, Clone)]
pub struct Fill {
    /// One value of the column's type.
    pub value: ArrayRef,
    /// The value in row format (format byte, null bitmap, value).
    pub encoded: Vec<u8>,
}

impl PartialEq for Fill {
    fn eq(&self, o: &Fill) -> bool {
        self.encoded == o.encoded
    }
}

impl Fill {
    /// `value` (one value) as a fill.
    pub fn new(value: ArrayRef) -> Result<Fill> {
        if value.len() != 1 {
            return Err(Error::Schema(format!(
                "a column's fill is one value, not {}",
                value.len()
            )));
        }
        if !crate::codec::supported(value.data_type()) {
            return Err(Error::Schema(format!(
                "unsupported type {}",
                value.data_type()
            )));
        }
        let mut encoded = Vec::new();
        crate::codec::encode_row_value(&[value.as_ref()], 0, &mut encoded);
        Ok(Fill { value, encoded })
    }

    fn decode(t: &DataType, encoded: &[u8]) -> Result<Fill> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", t.clone(), true)]));
        let mut dec = crate::codec::RowDecoder::new(schema, &[], false, 1);
        dec.push(&[], encoded)?;
        Fill::new(dec.finish()?.column(0).clone())
    }

    /// The fill repeated for `n` rows.
    pub fn repeat(&self, n: usize) -> Result<ArrayRef> {
        Ok(arrow::compute::take(
            self.value.as_ref(),
            &arrow::array::UInt32Array::from(vec![0u32; n]),
            None,
        )?)
    }
}

/// Where a table column's values come from in data of an earlier schema version.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// That version's stored column at this index.
    Column(usize),
    /// The column did not exist then: its fill (`None`: NULL).
    Fill(Option<Fill>),
}

impl Layout {
    /// The id of stored column `i`.
    pub fn id(&self, i: usize) -> u32 {
        self.ids.get(i).copied().unwrap_or(i as u32)
    }
}

/// A layout as the table definition stores it (JSON).
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredLayout {
    version: u32,
    /// Ids of the stored columns (a keyless table's row id last).
    ids: Vec<u32>,
    next_id: u32,
    /// Earlier versions: version and its stored columns as (id, type name).
    past: Vec<(u32, Vec<(u32, String)>)>,
    /// Column id, type name and the fill in row format (hex).
    fills: Vec<(u32, String, String)>,
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(Error::Schema("damaged table definition: odd hex".into()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| Error::Schema("damaged table definition: bad hex".into()))
        })
        .collect()
}

impl Layout {
    /// The stored form, for a table altered at least once (`None`: never altered, the
    /// definition stays version 1). `n`: the table's stored columns.
    pub(crate) fn stored(&self, n: usize) -> Option<StoredLayout> {
        (self.version > 0).then(|| StoredLayout {
            version: self.version,
            ids: (0..n).map(|i| self.id(i)).collect(),
            next_id: self.next_id,
            past: self
                .past
                .iter()
                .map(|(v, cols)| (*v, cols.iter().map(|(id, t)| (*id, type_name(t))).collect()))
                .collect(),
            fills: self
                .fills
                .iter()
                .map(|(id, f)| (*id, type_name(f.value.data_type()), to_hex(&f.encoded)))
                .collect(),
        })
    }

    /// The layout `l` stores, checked against the table's `n` stored columns.
    pub(crate) fn from_stored(l: StoredLayout, n: usize, table: &str) -> Result<Layout> {
        let ty = |t: &str| {
            parse_type(t).ok_or_else(|| Error::Schema(format!("unknown stored type {t}")))
        };
        if l.ids.len() != n || l.ids.iter().any(|&id| id >= l.next_id) {
            return Err(Error::Schema(format!(
                "damaged table definition of {table}: {} column ids for {n} columns",
                l.ids.len()
            )));
        }
        Ok(Layout {
            version: l.version,
            ids: l.ids,
            next_id: l.next_id,
            past: l
                .past
                .into_iter()
                .map(|(v, cols)| {
                    let cols = cols
                        .into_iter()
                        .map(|(id, t)| Ok((id, ty(&t)?)))
                        .collect::<Result<Vec<_>>>()?;
                    Ok((v, cols))
                })
                .collect::<Result<_>>()?,
            fills: l
                .fills
                .into_iter()
                .map(|(id, t, hex)| Ok((id, Fill::decode(&ty(&t)?, &from_hex(&hex)?)?)))
                .collect::<Result<_>>()?,
        })
    }
}

impl TableDef {
    /// The stored columns (id, type) of schema version `version`, if the table had it.
    pub fn version_columns(&self, version: u32) -> Option<Vec<(u32, DataType)>> {
        if version == self.layout.version {
            return Some(
                self.schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (self.layout.id(i), f.data_type().clone()))
                    .collect(),
            );
        }
        self.layout.past.get(&version).cloned()
    }

    /// Where each stored column of this definition takes its values from, in data
    /// written under schema version `version` (see [`Layout`]).
    pub fn sources(&self, version: u32) -> Result<Vec<Source>> {
        let cols = self
            .version_columns(version)
            .ok_or_else(|| self.newer(version))?;
        Ok((0..self.schema.fields().len())
            .map(|i| {
                let id = self.layout.id(i);
                match cols.iter().position(|(c, _)| *c == id) {
                    Some(p) => Source::Column(p),
                    None => Source::Fill(self.layout.fills.get(&id).cloned()),
                }
            })
            .collect())
    }

    /// The error for data of a schema version this definition does not know: written
    /// after an `ALTER TABLE` that a reader holding this definition has not seen.
    pub fn newer(&self, version: u32) -> Error {
        Error::Altered(format!(
            "table {} was altered while the statement ran (data of schema version {version}, \
             the statement has version {}); run it again",
            self.name, self.layout.version
        ))
    }

    /// This table in a new shape, as `ALTER TABLE` makes it in place: `columns` are the
    /// user columns in their new order, each an earlier user column (its index, carrying
    /// its id and stored values; a new name renames it) or a new column with the value
    /// existing rows take (`None`: NULL). The next schema version; nothing is copied.
    pub fn altered(
        &self,
        columns: Vec<(Field, Result<usize, Option<ArrayRef>>)>,
        primary_key: &[&str],
        defaults: std::collections::BTreeMap<String, String>,
    ) -> Result<TableDef> {
        if self.raw_kv {
            return Err(Error::Schema(
                "the built-in kv table cannot be altered".into(),
            ));
        }
        let fields: Vec<Field> = columns.iter().map(|(f, _)| f.clone()).collect();
        let mut def = TableDef::new(self.id, &self.name, &Schema::new(fields), primary_key)?
            .with_defaults(defaults)?;
        if def.keyless != self.keyless {
            return Err(Error::Schema(format!(
                "ALTER TABLE cannot add or remove the primary key of {}",
                self.name
            )));
        }
        let old = &self.layout;
        let mut layout = Layout {
            version: old.version + 1,
            ids: Vec::new(),
            next_id: old.next_id,
            past: old.past.clone(),
            fills: old.fills.clone(),
        };
        layout.past.insert(
            old.version,
            self.version_columns(old.version).expect("current version"),
        );
        for (f, src) in columns {
            match src {
                Ok(i) => {
                    if i >= self.user_width() {
                        return Err(Error::Schema(format!("no column {i} in {}", self.name)));
                    }
                    if self.schema.field(i).data_type() != f.data_type() {
                        return Err(Error::Schema(format!(
                            "ALTER TABLE cannot change the type of column {}",
                            f.name()
                        )));
                    }
                    layout.ids.push(old.id(i));
                }
                Err(fill) => {
                    let id = layout.next_id;
                    layout.next_id += 1;
                    layout.ids.push(id);
                    if let Some(v) = fill {
                        if v.data_type() != f.data_type() {
                            return Err(Error::Schema(format!(
                                "the value for new column {} is {}, not {}",
                                f.name(),
                                v.data_type(),
                                f.data_type()
                            )));
                        }
                        if v.is_valid(0) {
                            layout.fills.insert(id, Fill::new(v)?);
                        }
                    }
                }
            }
        }
        if self.keyless {
            layout.ids.push(old.id(self.schema.fields().len() - 1));
        }
        def.layout = Arc::new(layout);
        def.row_ids = self.row_ids.clone();
        Ok(def)
    }
}
