//! Reading stored rows back into Arrow columns, of whatever schema version they were
//! written in.

use super::*;

/// Decodes (key bytes, value bytes) rows of one table into Arrow columns.
pub struct RowDecoder {
    schema: SchemaRef,
    key_cols: Vec<usize>,
    value_cols: Vec<usize>,
    raw_kv: bool,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    /// Rows each new set of builders reserves.
    cap: usize,
    /// The table, when rows of its earlier schema versions may come.
    table: Option<crate::table::TableDef>,
    /// The schema version of the rows `value_cols` describes.
    version: u32,
    /// How rows of each earlier version are read, made when the first comes.
    older: std::collections::HashMap<u32, OldRows>,
}

/// A value column of an earlier schema version.
enum OldCol {
    /// Read into this table column.
    Into(usize),
    /// Dropped since: parsed into a scratch builder of its type, then discarded.
    Skip(Box<ColumnBuilder>),
}

/// How the value of a row of an earlier schema version is read.
struct OldRows {
    /// Per value column of that version: the builder (table column) it feeds, or `None`
    /// (dropped since) with a scratch builder of its type that only parses it (emptied
    /// with each finished batch).
    cols: Vec<OldCol>,
    /// Table value columns it did not have, with their fill in row format (`None`:
    /// NULL).
    fills: Vec<(usize, Option<Vec<u8>>)>,
}

impl RowDecoder {
    pub fn new(schema: SchemaRef, key_cols: &[usize], raw_kv: bool, cap: usize) -> Self {
        let value_cols = (0..schema.fields().len())
            .filter(|i| !key_cols.contains(i))
            .collect();
        let builders = schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type(), cap))
            .collect();
        RowDecoder {
            schema,
            key_cols: key_cols.to_vec(),
            value_cols,
            raw_kv,
            builders,
            rows: 0,
            cap,
            table: None,
            version: 0,
            older: Default::default(),
        }
    }

    /// A decoder of table `def`'s rows, of whatever schema version they were written
    /// in, into its current schema.
    pub fn for_table(def: &crate::table::TableDef, cap: usize) -> Self {
        let mut d = Self::new(def.schema.clone(), &def.key_cols, def.raw_kv, cap);
        d.version = def.layout.version;
        d.table = Some(def.clone());
        d
    }

    /// How to read rows of schema version `version`.
    fn old_rows(&self, version: u32) -> Result<OldRows> {
        let Some(def) = &self.table else {
            return Err(Error::Schema(format!(
                "row of schema version {version} in a table without versions"
            )));
        };
        let cols = def
            .version_columns(version)
            .ok_or_else(|| def.newer(version))?;
        let key_ids: Vec<u32> = self.key_cols.iter().map(|&k| def.layout.id(k)).collect();
        let old_values: Vec<&(u32, DataType)> = cols
            .iter()
            .filter(|(id, _)| !key_ids.contains(id))
            .collect();
        let col_of = |id: u32| (0..self.schema.fields().len()).find(|&i| def.layout.id(i) == id);
        let cols = old_values
            .iter()
            .map(|(id, t)| match col_of(*id) {
                Some(c) if !self.key_cols.contains(&c) => OldCol::Into(c),
                _ => OldCol::Skip(Box::new(ColumnBuilder::new(t, 1))),
            })
            .collect();
        let fills = self
            .value_cols
            .iter()
            .filter(|&&c| {
                let id = def.layout.id(c);
                !old_values.iter().any(|(o, _)| *o == id)
            })
            .map(|&c| {
                let fill = def.layout.fills.get(&def.layout.id(c));
                (c, fill.map(|f| f.encoded.clone()))
            })
            .collect();
        Ok(OldRows { cols, fills })
    }

    /// Append the value columns of a row of an earlier schema version.
    fn push_old(&mut self, version: u32, c: &mut Cursor) -> Result<()> {
        if !self.older.contains_key(&version) {
            let o = self.old_rows(version)?;
            self.older.insert(version, o);
        }
        let old = self.older.get_mut(&version).expect("inserted");
        let nb = old.cols.len().div_ceil(8);
        let nulls = c.take(nb)?;
        for (j, col) in old.cols.iter_mut().enumerate() {
            let null = nulls[j / 8] & (1 << (j % 8)) != 0;
            match col {
                OldCol::Into(t) if null => self.builders[*t].append_null(),
                OldCol::Into(t) => self.builders[*t].append_value(c)?,
                OldCol::Skip(_) if null => {}
                OldCol::Skip(scratch) => scratch.append_value(c)?,
            }
        }
        for (t, fill) in &old.fills {
            match fill {
                None => self.builders[*t].append_null(),
                Some(f) => {
                    // Format byte, one-byte null bitmap, the value.
                    let mut fc = Cursor { b: f, pos: 2 };
                    if f.get(1).is_some_and(|b| b & 1 != 0) {
                        self.builders[*t].append_null()
                    } else {
                        self.builders[*t].append_value(&mut fc)?
                    }
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append one row from its encoded key (without the table prefix) and value.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.raw_kv {
            self.builders[0].append_raw_binary(Some(key));
            self.builders[1].append_raw_binary(Some(value));
            self.rows += 1;
            return Ok(());
        }
        let mut c = Cursor { b: key, pos: 0 };
        for &k in &self.key_cols {
            self.builders[k].append_key(&mut c)?;
        }
        if c.pos != key.len() {
            return Err(Error::Schema("trailing bytes in encoded key".into()));
        }
        let mut c = Cursor { b: value, pos: 0 };
        let version = c.row_version()?;
        if version != self.version {
            self.push_old(version, &mut c)?;
            if c.pos != value.len() {
                return Err(Error::Schema("trailing bytes in encoded row".into()));
            }
            self.rows += 1;
            return Ok(());
        }
        let nb = self.value_cols.len().div_ceil(8);
        let nulls = c.take(nb)?;
        for (j, &col) in self.value_cols.iter().enumerate() {
            if nulls[j / 8] & (1 << (j % 8)) != 0 {
                self.builders[col].append_null();
            } else {
                self.builders[col].append_value(&mut c)?;
            }
        }
        if c.pos != value.len() {
            return Err(Error::Schema("trailing bytes in encoded row".into()));
        }
        self.rows += 1;
        Ok(())
    }

    /// Finish the batch and start a new one. The next builders reserve the decoder's
    /// capacity in rows and, for variable-width columns, the bytes this batch used per
    /// row: batches of a table are alike, so the next one rarely reallocates.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let (rows, cap) = (self.rows, self.cap);
        let next = self
            .schema
            .fields()
            .iter()
            .zip(&self.builders)
            .map(|(f, b)| {
                let per_row = b.data_bytes().div_ceil(rows.max(1)).max(1);
                ColumnBuilder::with_bytes(f.data_type(), cap, cap * per_row + cap / 8)
            })
            .collect();
        let builders = std::mem::replace(&mut self.builders, next);
        self.rows = 0;
        // Drops the scratch values of dropped columns parsed meanwhile.
        self.older.clear();
        let cols = builders
            .into_iter()
            .map(ColumnBuilder::finish)
            .collect::<Result<Vec<_>>>()?;
        let opts = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &opts,
        )?)
    }
}
