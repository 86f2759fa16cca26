//! `ALTER TABLE`: adding, dropping and renaming columns.
//!
//! A table's columns are changed by copying its rows into a table of the new shape and
//! publishing that in its place with one commit (the mechanism `CREATE OR REPLACE
//! TABLE` uses): readers see the old table or the new one, never a mix, and a crash
//! part-way leaves the old table and unreachable rows that are reclaimed. Keys are
//! carried over byte for byte (a keyless table's hidden row ids too); values are
//! re-encoded. The copy reads a snapshot while writers go on; then the old table's
//! [`WriteGate`](lightning_columnar::table::WriteGate) is closed (writes in flight
//! finish, new ones wait), the changes committed since the snapshot are copied too, the
//! new table is published and the old definition retired, so a write is either in the
//! new table or refused as a conflict, never lost with the old one. The cost is one
//! pass over the table's rows; the column store rebuilds the table's segments in the
//! background.

use super::*;
use arrow::array::{ArrayRef, UInt32Array, new_null_array};
use arrow::datatypes::Field;

/// Where a column of the altered table takes its values for the rows that exist.
enum Source {
    /// Column `i` of the old table (as users see it).
    Column(usize),
    /// A new column: one value (its DEFAULT, of the column's type), or `None` (NULL).
    Fill(Option<ArrayRef>),
}

/// A table's columns as `ALTER TABLE` operations change them, applied in order to this
/// model; [`Tables::alter`] then rewrites the table once, in the resulting shape. Built
/// from one definition, which must still be the table's when the rewrite publishes.
pub(crate) struct Alteration {
    old: Arc<TableDef>,
    /// The columns as users will see them, each with where its values come from.
    cols: Vec<(Field, Source)>,
    primary_key: Vec<String>,
    defaults: BTreeMap<String, String>,
}

impl Alteration {
    /// Table `old`'s columns, unchanged.
    pub(crate) fn of(old: Arc<TableDef>) -> Result<Alteration> {
        if old.raw_kv {
            return Err(Error::Schema(
                "the built-in kv table cannot be altered".into(),
            ));
        }
        Ok(Alteration {
            cols: old
                .user_schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| (f.as_ref().clone(), Source::Column(i)))
                .collect(),
            primary_key: old.primary_key_names(),
            defaults: old.defaults.clone(),
            old,
        })
    }

    fn find(&self, col: &str) -> Option<usize> {
        self.cols.iter().position(|(f, _)| f.name() == col)
    }

    pub(crate) fn has(&self, col: &str) -> bool {
        self.find(col).is_some()
    }

    fn exists(&self, col: &str) -> Error {
        Error::Schema(format!(
            "column {col} already exists in table {}",
            self.old.name
        ))
    }

    fn missing(&self, col: &str) -> Error {
        Error::Schema(format!("table {} has no column {col}", self.old.name))
    }

    /// Add column `field`; existing rows get `default`'s value (its SQL text, kept as
    /// the column's DEFAULT, and that text evaluated), else NULL.
    pub(crate) fn add(&mut self, field: Field, default: Option<(String, ArrayRef)>) -> Result<()> {
        if self.has(field.name()) {
            return Err(self.exists(field.name()));
        }
        let fill = default.map(|(sql, value)| {
            self.defaults.insert(field.name().clone(), sql);
            value
        });
        self.cols.push((field, Source::Fill(fill)));
        Ok(())
    }

    /// Drop column `col` (not a primary-key column).
    pub(crate) fn drop_column(&mut self, col: &str) -> Result<()> {
        let i = self.find(col).ok_or_else(|| self.missing(col))?;
        if self.primary_key.iter().any(|k| k == col) {
            return Err(Error::Schema(format!(
                "cannot drop column {col}: it is part of the primary key of {}",
                self.old.name
            )));
        }
        self.cols.remove(i);
        self.defaults.remove(col);
        Ok(())
    }

    /// Rename column `from` to `to` (its DEFAULT and primary-key place follow it).
    pub(crate) fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let i = self.find(from).ok_or_else(|| self.missing(from))?;
        if from == to {
            return Ok(());
        }
        if self.has(to) {
            return Err(self.exists(to));
        }
        let f = &mut self.cols[i].0;
        *f = f.clone().with_name(to);
        for k in self.primary_key.iter_mut().filter(|k| *k == from) {
            *k = to.to_string();
        }
        if let Some(d) = self.defaults.remove(from) {
            self.defaults.insert(to.to_string(), d);
        }
        Ok(())
    }
}

/// A row of the old table: full key, value (`None`: deleted).
type Change = (Vec<u8>, Option<Vec<u8>>);

/// Rows copied per batch.
const COPY_ROWS: usize = 4096;

impl Tables {
    /// Rewrite the table `a` was made from in `a`'s shape, holding every row of it,
    /// and publish it in the old one's place.
    pub(crate) fn alter(self: &Arc<Self>, a: Alteration) -> Result<Arc<TableDef>> {
        let Alteration {
            old,
            cols,
            primary_key,
            defaults,
        } = a;
        let name = &old.name;
        let (fields, mut sources): (Vec<Field>, Vec<Source>) = cols.into_iter().unzip();
        let pk: Vec<&str> = primary_key.iter().map(String::as_str).collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let load = self.begin_load_as(name, schema, &pk, true, defaults)?;
        if old.keyless {
            // The hidden row id, last in both.
            sources.push(Source::Column(old.schema.fields().len() - 1));
        }
        let copier = Copier {
            engine: &self.engine,
            old: &old,
            new: &load.def,
            sources: &sources,
        };
        let (prefix, end) = (table_prefix(old.id), table_end(old.id));
        let snap = self.engine.snapshot();
        let rows = self
            .engine
            .iter_at(&snap, Some(&prefix), Some(&end), false)?
            .map(|r| r.map(|(k, v)| (k, Some(v))).map_err(Error::from));
        copier.copy(rows)?;
        // No write to the old table from here on: copy what was committed since the
        // snapshot, publish, retire the old definition.
        let gate = old.gate.clone();
        let mut closed = gate.close();
        if *closed {
            return Err(Error::TransactionConflict(format!(
                "table {name} was altered or replaced by another statement meanwhile"
            )));
        }
        let now = self.engine.snapshot();
        let mut changes: Vec<Change> = Vec::new();
        self.engine
            .for_each_change(&now, snap.ts(), &prefix, &end, |k, v| -> Result<()> {
                changes.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                Ok(())
            })?;
        copier.copy(changes.into_iter().map(Ok))?;
        let def = load.commit_altering(old.id)?;
        *closed = true;
        Ok(def)
    }
}

impl Tables {
    /// Rename table `from` to `to`: one commit moves its definition to the new name.
    /// The table keeps its id, rows and segments; nothing is copied.
    pub(crate) fn rename_table(&self, from: &str, to: &str) -> Result<()> {
        if from == KV_TABLE_NAME || to == KV_TABLE_NAME {
            return Err(Error::Schema(
                "the built-in kv table cannot be renamed".into(),
            ));
        }
        let _ddl = self.ddl.lock();
        let old = self.def(from)?;
        if from == to {
            return Ok(());
        }
        if self.defs.read().contains_key(to) {
            return Err(Error::TableExists(to.to_string()));
        }
        // The clone shares the table's row-id counter and write gate: same table.
        let mut def = (*old).clone();
        def.name = to.to_string();
        let mut b = WriteBatch::new();
        b.delete(&catalog_key(from))?;
        b.put(&catalog_key(to), &def.encode())?;
        self.engine.write(b)?;
        let def = Arc::new(def);
        {
            let mut defs = self.defs.write();
            defs.remove(from);
            defs.insert(def.name.clone(), def.clone());
        }
        self.sql_deregister(from)?;
        self.sql_register(&def)
    }
}

struct Copier<'a> {
    engine: &'a Engine,
    old: &'a TableDef,
    new: &'a TableDef,
    sources: &'a [Source],
}

impl Copier<'_> {
    /// Write `rows` (old full keys; `None`: deleted) into the new table, in chunks.
    fn copy(&self, rows: impl Iterator<Item = Result<Change>>) -> Result<()> {
        let skip = table_prefix(self.old.id).len();
        let prefix = table_prefix(self.new.id);
        let mut dec = RowDecoder::new(
            self.old.schema.clone(),
            &self.old.key_cols,
            false,
            COPY_ROWS,
        );
        // The decoded rows' keys (old prefix dropped), back to back.
        let mut keys = Keys::default();
        let mut nk = prefix.to_vec();
        let mut out = WriteBatch::new();
        for r in rows {
            let (k, v) = r?;
            let key = &k[skip..];
            match v {
                Some(v) => {
                    dec.push(key, &v)?;
                    keys.push(key);
                }
                None => {
                    nk.truncate(prefix.len());
                    nk.extend_from_slice(key);
                    out.delete(&nk)?;
                }
            }
            if dec.len() >= COPY_ROWS {
                self.encode(&dec.finish()?, &mut keys, &mut out)?;
                self.engine.write(std::mem::take(&mut out))?;
            }
        }
        if !dec.is_empty() {
            self.encode(&dec.finish()?, &mut keys, &mut out)?;
        }
        if !out.is_empty() {
            self.engine.write(out)?;
        }
        Ok(())
    }

    /// Puts of `batch`'s rows (old stored columns) under `keys`, in the new shape.
    fn encode(&self, batch: &RecordBatch, keys: &mut Keys, out: &mut WriteBatch) -> Result<()> {
        let n = batch.num_rows();
        let fields = self.new.schema.fields();
        let cols = self
            .sources
            .iter()
            .zip(fields.iter())
            .map(|(s, f)| column(batch, s, f, n))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let vals: Vec<&dyn Array> = self
            .new
            .value_cols()
            .iter()
            .map(|&i| cols[i].as_ref())
            .collect();
        let (mut k, mut v) = (table_prefix(self.new.id).to_vec(), Vec::new());
        let prefix = k.len();
        for i in 0..n {
            k.truncate(prefix);
            k.extend_from_slice(keys.get(i));
            self.new.row_value(&vals, i, &mut v);
            out.put(&k, &v)?;
        }
        keys.clear();
        Ok(())
    }
}

/// Keys back to back in one buffer.
#[derive(Default)]
struct Keys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    fn push(&mut self, k: &[u8]) {
        self.bytes.extend_from_slice(k);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// The values of new column `f` for `n` existing rows.
fn column(batch: &RecordBatch, s: &Source, f: &Field, n: usize) -> Result<ArrayRef> {
    let a = match s {
        Source::Column(i) => batch.column(*i).clone(),
        Source::Fill(None) => new_null_array(f.data_type(), n),
        Source::Fill(Some(v)) => {
            arrow::compute::take(v.as_ref(), &UInt32Array::from(vec![0; n]), None)?
        }
    };
    if !f.is_nullable() && a.null_count() > 0 {
        return Err(Error::Constraint(format!(
            "column {} is NOT NULL but existing rows would have no value for it (give it a DEFAULT)",
            f.name()
        )));
    }
    Ok(a)
}
