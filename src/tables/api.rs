//! The table API of [`Database`]: create, load, insert, scan and drop tables.

use super::*;

/// Table API (available with the default `sql` feature).
impl Database {
    fn tables(&self) -> Result<&Arc<Tables>> {
        self.tables.as_ref().ok_or(Error::Closed)
    }

    /// Create a table. `schema` columns may use Int8..Int64, UInt8..UInt64, Float32/64,
    /// Decimal128, Utf8/LargeUtf8, Binary, Boolean, Date32 and Timestamp (with or without
    /// time zone); every column is nullable except the primary-key columns. With an
    /// empty `primary_key` the table is keyless: rows are appended under hidden row ids.
    pub fn create_table(&self, name: &str, schema: SchemaRef, primary_key: &[&str]) -> Result<()> {
        self.tables()?.create_table(name, schema, primary_key)?;
        Ok(())
    }

    /// Drop a table. One commit removes it: from then on it is gone and its rows are
    /// unreachable (table ids are never reused); the rows and segments are deleted
    /// afterwards, in the background, and that work resumes after a crash.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        self.tables()?.drop_table(name)
    }

    /// Names of all tables, `kv` included.
    pub fn list_tables(&self) -> Result<Vec<String>> {
        Ok(self.tables()?.defs.read().keys().cloned().collect())
    }

    /// The schema of a table (primary-key columns are non-nullable).
    pub fn table_schema(&self, name: &str) -> Result<SchemaRef> {
        Ok(self.tables()?.def(name)?.user_schema())
    }

    /// Primary-key column names of a table (none for a keyless one).
    pub fn table_primary_key(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.tables()?.def(name)?.primary_key_names())
    }

    /// Add column `field` to table `name` (`ALTER TABLE … ADD COLUMN`): existing rows
    /// hold NULL in it, so a non-nullable field can be added only to an empty table
    /// (through SQL, a `DEFAULT` fills them instead). The table is rewritten in one
    /// atomic step; see [`Database::sql`] for `ALTER TABLE`.
    pub fn add_column(&self, name: &str, field: arrow::datatypes::Field) -> Result<()> {
        self.alter_columns(name, |a| a.add(field, None))
    }

    /// Drop column `column` of table `name` (not a primary-key column).
    pub fn drop_column(&self, name: &str, column: &str) -> Result<()> {
        self.alter_columns(name, |a| a.drop_column(column))
    }

    /// Rename column `from` of table `name` to `to`.
    pub fn rename_column(&self, name: &str, from: &str, to: &str) -> Result<()> {
        self.alter_columns(name, |a| a.rename(from, to))
    }

    /// Rename table `from` to `to` (`ALTER TABLE from RENAME TO to`): its rows and
    /// column segments stay where they are; one commit moves the name.
    pub fn rename_table(&self, from: &str, to: &str) -> Result<()> {
        self.tables()?.rename_table(from, to)
    }

    /// Rewrite table `name` with its columns changed by `change`.
    fn alter_columns(
        &self,
        name: &str,
        change: impl FnOnce(&mut crate::tables::Alteration) -> Result<()>,
    ) -> Result<()> {
        let t = self.tables()?;
        let mut a = crate::tables::Alteration::of(t.def(name)?)?;
        change(&mut a)?;
        t.alter(a)?;
        Ok(())
    }

    /// Insert or replace (by primary key; appended to a keyless table) every row of
    /// `batch`, atomically. The batch
    /// must have exactly the table's columns (any order) with the table's types; a
    /// mismatch is an error naming the column and nothing is written.
    pub fn insert(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        self.tables()?.insert(name, batch)
    }

    /// Create table `name` holding the rows of `batches`, atomically at any size: the
    /// rows stream into the row store (memory stays bounded) under a table that is
    /// published, with all of them, in one commit once the last batch is in. If a batch
    /// fails (an error from the iterator, a row that does not fit), or the process
    /// dies part-way, the table does not exist and the rows written are reclaimed.
    /// Rows with the same key replace earlier ones. Returns the rows loaded.
    pub fn load_table<I>(
        &self,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
        batches: I,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        self.load_as(name, schema, primary_key, false, batches)
    }

    /// [`Database::load_table`], except that a table already named `name` is replaced:
    /// readers see the old table until the one commit that publishes the new one with
    /// all its rows. A failure part-way leaves the old table as it was.
    pub fn replace_table<I>(
        &self,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
        batches: I,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        self.load_as(name, schema, primary_key, true, batches)
    }

    fn load_as<I>(
        &self,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
        replacing: bool,
        batches: I,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        let t = self.tables()?;
        let mut load = t.begin_load_as(name, schema, primary_key, replacing, Default::default())?;
        let mut n = 0;
        for b in batches {
            let b = b?;
            n += b.num_rows() as u64;
            load.insert(&b)?;
        }
        match replacing {
            true => load.commit_replacing()?,
            false => load.commit()?,
        };
        Ok(n)
    }

    /// Insert or replace the rows of every batch into an existing table in one atomic
    /// commit, at any size: all or nothing, also across a crash. The batches are read one
    /// at a time; past `sql_insert_run_bytes` of rows they are staged as sorted runs and
    /// published together at the end (see `lightning_query::RowWriter`), so memory holds
    /// one run. Returns the rows written.
    pub fn insert_batches<I>(&self, name: &str, batches: I) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        self.write_batches(name, batches, true)
    }

    /// [`Database::insert_batches`], except that a row whose primary key the table (or
    /// an earlier row of the batches) already holds is refused with
    /// [`Error::Constraint`](crate::Error::Constraint) and nothing is written, as SQL's
    /// `INSERT` does.
    pub fn append_batches<I>(&self, name: &str, batches: I) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        self.write_batches(name, batches, false)
    }

    fn write_batches<I>(&self, name: &str, batches: I, replace: bool) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        let t = self.tables()?;
        let def = t.def(name)?;
        // The column store's own errors (a schema mismatch naming the column) keep
        // their kind; the rest are converted as SQL's are.
        let writer_error = |e: datafusion::error::DataFusionError| match e {
            datafusion::error::DataFusionError::External(b) => {
                match b.downcast::<lightning_columnar::Error>() {
                    Ok(c) => Error::from(*c),
                    Err(b) => Error::from(datafusion::error::DataFusionError::External(b)),
                }
            }
            e => Error::from(e),
        };
        let mut w = lightning_query::RowWriter::new(self.engine(), &def, replace)
            .map_err(writer_error)?
            .strict()
            .with_spill_bytes(t.config.sql_insert_run_bytes);
        for b in batches {
            w.add(&b?).map_err(writer_error)?;
        }
        w.finish().map_err(writer_error)
    }

    /// Delete the rows whose primary keys are given (`keys` holds just the key columns),
    /// atomically. Missing keys are not an error.
    pub fn delete_rows(&self, name: &str, keys: &RecordBatch) -> Result<()> {
        let t = self.tables()?;
        let def = t.def(name)?;
        no_key(&def, "delete_rows")?;
        let cols = def.align(keys, true)?;
        let key_cols: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let mut b = WriteBatch::new();
        let mut k = Vec::new();
        for i in 0..keys.num_rows() {
            def.row_key(&key_cols, i, &mut k);
            b.delete(&k)?;
        }
        let _gate = def.gate.enter()?;
        self.engine().write(b)?;
        Ok(())
    }

    /// Point lookup by primary key: `key` is a one-row batch of the key columns. Returns
    /// the row (one-row batch with the table's schema) if it exists.
    pub fn get_row(&self, name: &str, key: &RecordBatch) -> Result<Option<RecordBatch>> {
        let t = self.tables()?;
        let def = t.def(name)?;
        no_key(&def, "get_row")?;
        if key.num_rows() != 1 {
            return Err(Error::InvalidArgument(format!(
                "get_row takes a one-row key batch, got {} rows",
                key.num_rows()
            )));
        }
        let cols = def.align(key, true)?;
        let key_cols: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let mut k = Vec::new();
        def.row_key(&key_cols, 0, &mut k);
        let Some(v) = self.engine().get(&k)? else {
            return Ok(None);
        };
        Ok(Some(def.decode_row(&k, &v)?))
    }

    /// Every row of a table read from the row store at one snapshot, in primary-key
    /// order, in batches of up to `batch_rows`.
    pub fn scan_table(&self, name: &str, batch_rows: usize) -> Result<Vec<RecordBatch>> {
        self.scan_table_at(name, None, batch_rows)
    }

    /// Like [`Database::scan_table`], as of commit timestamp `at` (which must still be
    /// readable: at or after the oldest open snapshot, such as a column-store
    /// watermark).
    pub fn scan_table_at(
        &self,
        name: &str,
        at: Option<u64>,
        batch_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let t = self.tables()?;
        let def = t.def(name)?;
        let snap = match at {
            Some(ts) => self.engine().snapshot_at(ts)?,
            None => self.engine().snapshot(),
        };
        let batch_rows = batch_rows.max(1);
        let mut dec = RowDecoder::for_table(&def, batch_rows.min(65536));
        let mut out = Vec::new();
        let (s, e) = (table_prefix(def.id), table_end(def.id));
        for r in self.engine().iter_at(&snap, Some(&s), Some(&e), false)? {
            let (k, v) = r?;
            dec.push(&k[5..], &v)?;
            if dec.len() >= batch_rows {
                out.push(dec.finish()?);
            }
        }
        if !dec.is_empty() || out.is_empty() {
            out.push(dec.finish()?);
        }
        if def.keyless {
            // The hidden row ids stay hidden.
            let user: Vec<usize> = (0..def.user_width()).collect();
            out = out
                .iter()
                .map(|b| b.project(&user))
                .collect::<std::result::Result<_, _>>()?;
        }
        Ok(out)
    }

    /// Run one column-store compaction round for a table now.
    pub fn compact_columnar(&self, name: &str) -> Result<RoundStats> {
        let t = self.tables()?;
        let def = t.columnar_def(name)?;
        Ok(t.store.compact(&t.engine, &def)?)
    }

    /// Rebuild a table's column segments from the row store.
    pub fn rebuild_columnar(&self, name: &str) -> Result<RoundStats> {
        let t = self.tables()?;
        let def = t.columnar_def(name)?;
        Ok(t.store.rebuild(&t.engine, &def)?)
    }

    /// The live rows of a table's column segments at their published watermark
    /// (optionally only the `projection` columns), with that watermark.
    pub fn columnar_rows(
        &self,
        name: &str,
        projection: Option<&[usize]>,
    ) -> Result<(u64, Vec<RecordBatch>)> {
        let t = self.tables()?;
        let def = t.def(name)?;
        Ok(t.store.scan(def.id, projection)?)
    }

    /// Paths of a table's segment files and its column-store folder (for tools).
    pub fn columnar_segment_paths(&self, name: &str) -> Result<Vec<std::path::PathBuf>> {
        let t = self.tables()?;
        let def = t.def(name)?;
        let dir = t.store.table_dir(def.id);
        Ok(t.store
            .segments(def.id)
            .iter()
            .map(|s| lightning_columnar::segment::segment_path(&dir, s.id))
            .collect())
    }

    /// Bytes of a table's column segments and delete bitmaps.
    pub fn columnar_bytes(&self, name: &str) -> Result<u64> {
        let t = self.tables()?;
        let def = t.def(name)?;
        Ok(t.store.table_bytes(def.id))
    }
}
