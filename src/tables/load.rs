//! Loading a new table: rows streamed in under an id no catalog entry names, published
//! with all of them in one commit (or reclaimed when the load is abandoned).

use super::*;

/// A new table being loaded (see [`Tables::begin_load`]). Dropping it without
/// `commit` abandons the load: its rows are reclaimed.
pub(crate) struct TableLoad {
    pub(super) tables: Arc<Tables>,
    pub(super) def: TableDef,
    pub(super) rows: u64,
    pub(super) done: bool,
}

impl TableLoad {
    /// The table's schema as users see it (key columns non-nullable).
    pub(crate) fn schema(&self) -> SchemaRef {
        self.def.user_schema()
    }

    /// Write rows (upserted by primary key), in chunks.
    pub(crate) fn insert(&mut self, batch: &RecordBatch) -> Result<()> {
        let engine = &self.tables.engine;
        let mut rest = WriteBatch::new();
        Tables::encode_rows(engine, &self.def, batch, &mut rest, LOAD_CHUNK_BYTES, |b| {
            engine.write(b)?;
            Ok(())
        })?;
        if !rest.is_empty() {
            engine.write(rest)?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Publish the table with every row loaded, in one commit.
    pub(crate) fn commit(self) -> Result<Arc<TableDef>> {
        self.publish(false)
    }

    /// Publish the table in place of the table of the same name, if there is one
    /// (`CREATE OR REPLACE TABLE`): one commit names the new table and marks the old
    /// one dropped, so the name never refers to neither or to half of either.
    pub(crate) fn commit_replacing(self) -> Result<Arc<TableDef>> {
        self.publish(true)
    }

    fn publish(mut self, replace: bool) -> Result<Arc<TableDef>> {
        let t = self.tables.clone();
        let _ddl = t.ddl.lock();
        let old = t.defs.read().get(&self.def.name).cloned();
        let mut b = WriteBatch::new();
        match &old {
            Some(old) if !replace || old.name == KV_TABLE_NAME => {
                return Err(Error::TableExists(old.name.clone()));
            }
            Some(old) => b.put(&dropped_key(old.id), b"")?,
            None => {}
        }
        b.put(&catalog_key(&self.def.name), &self.def.encode())?;
        t.engine.write(b)?;
        self.done = true;
        let replaced = old.is_some();
        // The new definition takes the name's place in one step (the name is never
        // missing in between), then the old table's segments go.
        let def = t.publish_def(self.def.clone())?;
        if let Some(old) = old {
            t.store.drop_table(old.id)?;
            t.reclaim_pending.store(true, Ordering::Release);
        }
        drop(_ddl);
        if replaced
            && !t.background
            && let Err(e) = t.reclaim_dropped()
        {
            tracing::warn!(error = %e, "reclaiming a replaced table failed; retried on open");
        }
        Ok(def)
    }
}

impl Drop for TableLoad {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let t = &self.tables;
        let mut b = WriteBatch::new();
        if b.put(&dropped_key(self.def.id), b"").is_ok() && t.engine.write(b).is_ok() {
            t.reclaim_pending.store(true, Ordering::Release);
            if !t.background
                && let Err(e) = t.reclaim_dropped()
            {
                tracing::warn!(error = %e, "reclaiming an abandoned load failed; retried on open");
            }
        }
    }
}
