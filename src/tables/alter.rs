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
pub(crate) enum Source {
    /// Column `i` of the old table (as users see it).
    Column(usize),
    /// A new column: one value (its DEFAULT, of the column's type), or `None` (NULL).
    Fill(Option<ArrayRef>),
}

/// A table's shape after `ALTER TABLE`.
pub(crate) struct Alteration {
    /// The columns, as users see them (key columns included).
    pub schema: SchemaRef,
    pub primary_key: Vec<String>,
    pub defaults: BTreeMap<String, String>,
    /// Per column of `schema`.
    pub sources: Vec<Source>,
}

/// A row of the old table: full key, value (`None`: deleted).
type Change = (Vec<u8>, Option<Vec<u8>>);

/// Rows copied per batch.
const COPY_ROWS: usize = 4096;

impl Tables {
    /// Replace table `name` by one of shape `a`, holding every row of it.
    pub(crate) fn alter(self: &Arc<Self>, name: &str, a: Alteration) -> Result<Arc<TableDef>> {
        let old = self.def(name)?;
        if old.raw_kv {
            return Err(Error::Schema(
                "the built-in kv table cannot be altered".into(),
            ));
        }
        if old.keyless != a.primary_key.is_empty() {
            return Err(Error::Schema(
                "ALTER TABLE cannot add or remove a primary key".into(),
            ));
        }
        let pk: Vec<&str> = a.primary_key.iter().map(String::as_str).collect();
        let load = self.begin_load_as(name, a.schema.clone(), &pk, true, a.defaults)?;
        let mut sources = a.sources;
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
        let mut changes: Vec<Result<Change>> = Vec::new();
        self.engine
            .for_each_change(&now, snap.ts(), &prefix, &end, |k, v| -> Result<()> {
                changes.push(Ok((k.to_vec(), v.map(<[u8]>::to_vec))));
                Ok(())
            })?;
        copier.copy(changes.into_iter())?;
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
    fn copy(&self, rows: impl Iterator<Item = Result<(Vec<u8>, Option<Vec<u8>>)>>) -> Result<()> {
        let skip = table_prefix(self.old.id).len();
        let mut dec = RowDecoder::new(
            self.old.schema.clone(),
            &self.old.key_cols,
            false,
            COPY_ROWS,
        );
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(COPY_ROWS);
        let mut out = WriteBatch::new();
        for r in rows {
            let (k, v) = r?;
            let mut nk = table_prefix(self.new.id).to_vec();
            nk.extend_from_slice(&k[skip..]);
            match v {
                Some(v) => {
                    dec.push(&k[skip..], &v)?;
                    keys.push(nk);
                }
                None => out.delete(&nk)?,
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
    fn encode(
        &self,
        batch: &RecordBatch,
        keys: &mut Vec<Vec<u8>>,
        out: &mut WriteBatch,
    ) -> Result<()> {
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
        let mut v = Vec::new();
        for (i, k) in keys.drain(..).enumerate() {
            self.new.row_value(&vals, i, &mut v);
            out.put(&k, &v)?;
        }
        Ok(())
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
