//! Lightning as DataFusion's default schema (`datafusion.public`), so that DDL and DML
//! through [`crate::Database::session`] (`ctx.sql`, the DataFrame API) land in Lightning
//! storage exactly as through `db.sql`, and `information_schema` / `SHOW TABLES` list
//! Lightning tables.
//!
//! The schema lists every Lightning table (one provider per table, kept so its fresh-row
//! cache is shared) and, beside them, what DataFusion registers that is not a table of
//! rows: views, external tables, tables a caller registers itself. DataFusion creates a
//! table (`CREATE TABLE`, `CREATE TABLE … AS SELECT`) by registering a `MemTable`; this
//! schema turns that into a Lightning table with the same columns, primary key and rows
//! (keyless without a key), published in one commit. `DROP TABLE` of a Lightning table
//! drops it from storage.

use crate::tables::Tables;
use crate::{Error, Result};
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::{Constraint, DataFusionError};
use datafusion::datasource::TableProvider;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// The default schema of a database's SQL session (see the module docs).
#[derive(Debug)]
pub(crate) struct LightningSchema {
    tables: Weak<Tables>,
    /// Lightning tables by name.
    lightning: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// Views, external tables and other providers registered through DataFusion.
    others: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl LightningSchema {
    pub(crate) fn new(tables: Weak<Tables>) -> Self {
        LightningSchema {
            tables,
            lightning: Default::default(),
            others: Default::default(),
        }
    }

    /// A Lightning table was published (or replaced): serve `provider` for it.
    pub(crate) fn put(&self, name: &str, provider: Arc<dyn TableProvider>) {
        self.lightning.write().insert(name.to_string(), provider);
    }

    /// A Lightning table was dropped.
    pub(crate) fn remove(&self, name: &str) {
        self.lightning.write().remove(name);
    }

    fn tables(&self) -> Result<Arc<Tables>> {
        self.tables.upgrade().ok_or(Error::Closed)
    }

    /// Create a Lightning table from a `MemTable` DataFusion made for `CREATE TABLE`:
    /// its columns (in the types tables store), primary key and rows, in one commit.
    fn create_from(&self, name: &str, mem: &MemTable) -> Result<()> {
        let tables = self.tables()?;
        let schema = Arc::new(crate::tables::to_table_schema(&mem.schema()));
        let mut pk: Vec<String> = Vec::new();
        for c in mem.constraints().map(|c| c.iter()).into_iter().flatten() {
            if let Constraint::PrimaryKey(idx) = c {
                pk = idx
                    .iter()
                    .map(|&i| schema.field(i).name().clone())
                    .collect();
            }
        }
        let pk: Vec<&str> = pk.iter().map(String::as_str).collect();
        let mut defaults = std::collections::BTreeMap::new();
        for f in schema.fields() {
            if let Some(e) = mem.get_column_default(f.name()) {
                defaults.insert(f.name().clone(), lightning_query::default_sql(e)?);
            }
        }
        let mut load = tables.begin_load_as(name, schema, &pk, false, defaults)?;
        let target = load.schema();
        for part in &mem.batches {
            let part = part.try_read().map_err(|_| {
                Error::Sql(format!("the rows of new table {name} are being written"))
            })?;
            for b in part.iter() {
                load.insert(&lightning_query::cast_batch(b, &target)?)?;
            }
        }
        load.commit()?;
        Ok(())
    }
}

fn df(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl SchemaProvider for LightningSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lightning.read().keys().cloned().collect();
        names.extend(self.others.read().keys().cloned());
        names.sort();
        names
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.lightning.read().get(name) {
            return Ok(Some(t.clone()));
        }
        Ok(self.others.read().get(name).cloned())
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if self.table_exist(&name) {
            return Err(DataFusionError::Execution(format!(
                "The table {name} already exists"
            )));
        }
        match table.downcast_ref::<MemTable>() {
            // `CREATE TABLE`: a Lightning table, as through `db.sql`.
            Some(mem) => self.create_from(&name, mem).map_err(df)?,
            None => {
                self.others.write().insert(name, table);
            }
        }
        Ok(None)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.others.write().remove(name) {
            return Ok(Some(t));
        }
        let Some(t) = self.lightning.read().get(name).cloned() else {
            return Ok(None);
        };
        self.tables().map_err(df)?.drop_table(name).map_err(df)?;
        Ok(Some(t))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.lightning.read().contains_key(name) || self.others.read().contains_key(name)
    }
}
