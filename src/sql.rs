//! SQL through DataFusion: one session per database with every table registered, DDL
//! routed to the table catalog, DML run as row-store transactions, Parquet export.

use crate::db::Database;
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use lightning_query::LightningTableProvider;
use std::path::Path;
use std::sync::Arc;

pub(crate) struct SqlState {
    runtime: tokio::runtime::Runtime,
    ctx: SessionContext,
}

impl crate::tables::Tables {
    fn provider(&self, def: Arc<lightning_columnar::TableDef>) -> Arc<LightningTableProvider> {
        Arc::new(LightningTableProvider::new(
            self.engine.clone(),
            self.store.clone(),
            def,
        ))
    }

    pub(crate) fn sql_state(&self) -> Result<Arc<SqlState>> {
        let mut g = self.sql.lock();
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("ldb-sql")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                context: "starting the SQL runtime".into(),
                source: e,
            })?;
        let mut cfg = SessionConfig::new().with_information_schema(true);
        // Tables store Utf8, so SQL string types map to Utf8.
        cfg.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let ctx = SessionContext::new_with_config(cfg);
        for d in self.defs.read().values() {
            ctx.register_table(d.name.as_str(), self.provider(d.clone()))?;
        }
        let s = Arc::new(SqlState { runtime, ctx });
        *g = Some(s.clone());
        Ok(s)
    }

    pub(crate) fn sql_register(&self, def: &Arc<lightning_columnar::TableDef>) -> Result<()> {
        if let Some(s) = self.sql.lock().as_ref() {
            s.ctx
                .register_table(def.name.as_str(), self.provider(def.clone()))?;
        }
        Ok(())
    }

    pub(crate) fn sql_deregister(&self, name: &str) -> Result<()> {
        if let Some(s) = self.sql.lock().as_ref() {
            s.ctx.deregister_table(name)?;
        }
        Ok(())
    }
}

#[allow(dead_code)]
fn assert_sql_future_is_send(db: &Database) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&db.sql_async("SELECT 1"));
}

impl Database {
    fn sql_state(&self) -> Result<Arc<SqlState>> {
        self.tables.as_ref().ok_or(Error::Closed)?.sql_state()
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument(
                "blocking SQL call inside an async runtime; use sql_async".into(),
            ));
        }
        let st = self.sql_state()?;
        st.runtime.block_on(f)
    }

    /// Run one SQL statement and return its result rows. DDL (`CREATE TABLE .. PRIMARY
    /// KEY (..)`, `DROP TABLE`) changes Lightning tables; `INSERT` (`INSERT OR REPLACE`
    /// to upsert), `UPDATE` and `DELETE` are atomic row-store transactions; any other
    /// DataFusion statement (`CREATE EXTERNAL TABLE`, `COPY .. TO`, `EXPLAIN`) works
    /// too. A write committed before the call is in its result.
    pub fn sql(&self, query: &str) -> Result<Vec<RecordBatch>> {
        self.block_on(self.sql_async(query))
    }

    /// [`Database::sql`] for async callers.
    pub async fn sql_async(&self, query: &str) -> Result<Vec<RecordBatch>> {
        use tracing::Instrument;
        let span = tracing::info_span!("sql", query = %query.chars().take(200).collect::<String>());
        self.run_sql(query).instrument(span).await
    }

    async fn run_sql(&self, query: &str) -> Result<Vec<RecordBatch>> {
        let st = self.sql_state()?;
        let ctx = st.ctx.clone();
        let plan = ctx.state().create_logical_plan(query).await?;
        match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
                let name = c.name.table().to_string();
                let tables = self.tables.as_ref().ok_or(Error::Closed)?;
                if tables.has_table(&name) {
                    if c.if_not_exists {
                        return Ok(Vec::new());
                    }
                    return Err(Error::TableExists(name));
                }
                let schema = Arc::new(c.input.schema().as_arrow().clone());
                let mut pk = Vec::new();
                for con in c.constraints.iter() {
                    if let datafusion::common::Constraint::PrimaryKey(idx) = con {
                        pk = idx
                            .iter()
                            .map(|&i| schema.field(i).name().clone())
                            .collect();
                    }
                }
                if pk.is_empty() {
                    return Err(Error::Sql(format!(
                        "CREATE TABLE {name} needs a PRIMARY KEY (Lightning tables are keyed)"
                    )));
                }
                let pk_refs: Vec<&str> = pk.iter().map(String::as_str).collect();
                self.create_table(&name, schema, &pk_refs)?;
                // CREATE TABLE .. AS SELECT: load the rows.
                if !matches!(c.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
                    let rows = ctx
                        .execute_logical_plan((*c.input).clone())
                        .await?
                        .collect()
                        .await?;
                    for b in rows {
                        let b =
                            RecordBatch::try_new(self.table_schema(&name)?, b.columns().to_vec())?;
                        self.insert(&name, &b)?;
                    }
                }
                Ok(Vec::new())
            }
            LogicalPlan::Ddl(DdlStatement::DropTable(d))
                if self
                    .tables
                    .as_ref()
                    .is_some_and(|t| t.has_table(d.name.table())) =>
            {
                self.drop_table(d.name.table())?;
                Ok(Vec::new())
            }
            _ => Ok(ctx.execute_logical_plan(plan).await?.collect().await?),
        }
    }

    /// A DataFusion session with every table (and `kv`) registered, for the DataFrame
    /// API. It is the session `sql` uses; create tables through `sql` or the table API.
    pub fn session(&self) -> Result<SessionContext> {
        Ok(self.sql_state()?.ctx.clone())
    }

    /// Write a table, or the result of a query, to a zstd-compressed Parquet file,
    /// streaming (memory stays bounded by a few batches). Returns the rows written.
    pub fn export_parquet(&self, table_or_query: &str, path: impl AsRef<Path>) -> Result<u64> {
        let q = if self
            .tables
            .as_ref()
            .is_some_and(|t| t.has_table(table_or_query))
        {
            format!("SELECT * FROM \"{table_or_query}\"")
        } else {
            table_or_query.to_string()
        };
        let path = path.as_ref().to_path_buf();
        let st = self.sql_state()?;
        self.block_on(async move {
            let df = st.ctx.sql(&q).await?;
            // SQL reads strings as Utf8View; the file holds plain UTF-8 strings, the
            // type every Parquet reader maps to its string type.
            let plain = |t: &DataType| match t {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                t => t.clone(),
            };
            let schema = Arc::new(Schema::new_with_metadata(
                df.schema()
                    .as_arrow()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
                    .collect::<Vec<_>>(),
                df.schema().as_arrow().metadata().clone(),
            ));
            let mut stream = df.execute_stream().await?;
            let f = std::fs::File::create(&path).map_err(|e| Error::Io {
                context: format!("creating {}", path.display()),
                source: e,
            })?;
            let props = datafusion::parquet::file::properties::WriterProperties::builder()
                .set_compression(datafusion::parquet::basic::Compression::ZSTD(
                    Default::default(),
                ))
                .build();
            let mut w =
                datafusion::parquet::arrow::ArrowWriter::try_new(f, schema.clone(), Some(props))
                    .map_err(|e| Error::Arrow(e.to_string()))?;
            let mut n = 0u64;
            while let Some(b) = stream.next().await {
                let b = lightning_query::cast_batch(&b?, &schema)?;
                n += b.num_rows() as u64;
                w.write(&b).map_err(|e| Error::Arrow(e.to_string()))?;
            }
            w.close().map_err(|e| Error::Arrow(e.to_string()))?;
            Ok(n)
        })
    }
}
