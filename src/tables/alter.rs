//! `ALTER TABLE`: adding, dropping and renaming columns.
//!
//! A table's columns are changed in place, by schema versions: one catalog commit
//! publishes the table's next version, whose columns carry ids that never change
//! (see [`Layout`](lightning_columnar::table::Layout)). Nothing is copied, so the
//! statement costs the same on an empty table and a billion rows: rows and segments
//! written before keep their version's shape and are read through it (a new column
//! takes its fill — the `DEFAULT` given, else NULL — a dropped one is skipped), and
//! compaction rewrites what it merges in the current version. While the definition is
//! replaced, the old one's [`WriteGate`](lightning_columnar::table::WriteGate) is closed
//! (writes in flight finish, new ones wait) and then retired: a write still holding the
//! old definition is refused as a conflict, never written without the new columns. A
//! crash leaves the old definition or the new one (one commit).

use super::*;
use arrow::array::ArrayRef;
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
        // (The built-in kv table is refused when the alteration applies:
        // `TableDef::altered`.)
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

impl Tables {
    /// Change the table `a` was made from to `a`'s shape, in place: one catalog commit
    /// publishes its next schema version; no row or segment is copied (data written
    /// before reads through the version it was written in, see
    /// [`Layout`](lightning_columnar::table::Layout)).
    pub(crate) fn alter(self: &Arc<Self>, a: Alteration) -> Result<Arc<TableDef>> {
        let Alteration {
            old,
            cols,
            primary_key,
            defaults,
        } = a;
        let name = old.name.clone();
        // New NOT NULL columns without a value for existing rows need an empty table.
        let needs_empty: Vec<String> = cols
            .iter()
            .filter(|(f, s)| matches!(s, Source::Fill(None)) && !f.is_nullable())
            .map(|(f, _)| f.name().clone())
            .collect();
        let columns = cols
            .into_iter()
            .map(|(f, s)| match s {
                Source::Column(i) => (f, Ok(i)),
                Source::Fill(v) => (f, Err(v)),
            })
            .collect();
        let pk: Vec<&str> = primary_key.iter().map(String::as_str).collect();
        let def = old.altered(columns, &pk, defaults)?;
        let _ddl = self.ddl.lock();
        // Writes in flight finish first; a write still holding the old definition after
        // this is refused as a conflict (its rows would lack the new columns' values).
        let gate = old.gate.clone();
        let mut closed = gate.close();
        // A retired gate: altered by another statement; another id (or none) under the
        // name: replaced or dropped.
        let current = self.defs.read().get(&name).map(|c| c.id);
        if *closed || current != Some(old.id) {
            return Err(Error::TransactionConflict(format!(
                "table {name} was altered, replaced or dropped by another statement meanwhile"
            )));
        }
        if let Some(col) = needs_empty.first() {
            let (prefix, end) = (table_prefix(old.id), table_end(old.id));
            if self
                .engine
                .iter(Some(&prefix), Some(&end), false)?
                .next()
                .is_some()
            {
                return Err(Error::Constraint(format!(
                    "column {col} is NOT NULL but existing rows would have no value for it (give it a DEFAULT)"
                )));
            }
        }
        let mut b = WriteBatch::new();
        b.put(&catalog_key(&name), &def.encode())?;
        self.engine.write(b)?;
        let def = Arc::new(def);
        self.store.alter_table(&def)?;
        self.defs.write().insert(name, def.clone());
        self.sql_register(&def)?;
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
