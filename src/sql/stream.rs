//! Streamed statement results: a query's batches are handed over as its plan makes
//! them, so memory holds a few batches however large the answer.

use super::{AbortOnDrop, run_sql, sql_span, traced};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::sql::QueryLimits;
use crate::tables::Tables;
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::sql::parser::Statement as DFStatement;
use futures::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Batches handed from the SQL runtime to the reader: this many wait at most.
const IN_FLIGHT: usize = 2;

/// The result of one statement, read batch by batch. The statement runs on the
/// database's SQL runtime; the batches wait (a couple at a time) until read, and
/// dropping the stream cancels the statement. Read it as an async
/// [`futures::Stream`] or, outside async code, with [`SqlStream::next_blocking`].
pub struct SqlStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Result<RecordBatch>>,
    /// Set by the statement when it has sent its last batch: a channel closed before
    /// that is a statement cut short (its task panicked or was stopped), reported as
    /// an error rather than as a quiet end.
    finished: Arc<AtomicBool>,
    reported: bool,
    _task: AbortOnDrop<()>,
}

impl std::fmt::Debug for SqlStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStream")
            .field("schema", &self.schema)
            .finish()
    }
}

impl SqlStream {
    /// The columns of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The stream as an Arrow [`RecordBatchReader`](arrow::record_batch::RecordBatchReader)
    /// that waits for each batch (for readers outside async code: the Arrow C stream
    /// interface, Python). An error arrives as an `ArrowError::ExternalError` holding
    /// the [`Error`].
    pub fn into_reader(mut self) -> Box<dyn arrow::record_batch::RecordBatchReader + Send> {
        let schema = self.schema();
        let batches = std::iter::from_fn(move || {
            self.next_blocking()
                .map(|r| r.map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e))))
        });
        Box::new(arrow::record_batch::RecordBatchIterator::new(
            batches, schema,
        ))
    }

    /// What a closed channel means: the end, or (once) an error.
    fn closed(&mut self) -> Option<Result<RecordBatch>> {
        if self.finished.load(Ordering::Acquire) || self.reported {
            return None;
        }
        self.reported = true;
        Some(Err(Error::Sql(
            "the statement stopped before its end (an internal error)".into(),
        )))
    }
}

impl futures::Stream for SqlStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => Poll::Ready(self.closed()),
            p => p,
        }
    }
}

impl SqlStream {
    /// The next batch, waiting for it (`None` after the last). Inside async code
    /// (where waiting would block a runtime thread) it is an error: poll the stream.
    pub fn next_blocking(&mut self) -> Option<Result<RecordBatch>> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Some(Err(Error::InvalidArgument(
                "blocking read of an SqlStream inside an async runtime; poll it as a Stream".into(),
            )));
        }
        match self.rx.blocking_recv() {
            None => self.closed(),
            some => some,
        }
    }
}

/// Open `query` as a stream in session `exec`: a query is planned and started, and
/// its batches come as they are made; any other statement runs to its end here and
/// its (small) answer is streamed.
async fn open(
    tables: Arc<Tables>,
    query: String,
    exec: SessionContext,
) -> Result<(SchemaRef, SendableRecordBatchStream)> {
    let st = tables.sql_state()?;
    let stmt = st.parse(&tables.config, &query)?;
    let is_query = matches!(
        &stmt,
        DFStatement::Statement(s)
            if matches!(s.as_ref(), datafusion::sql::sqlparser::ast::Statement::Query(_))
    );
    if is_query {
        let plan = st.ctx.state().statement_to_plan(stmt).await?;
        // `SELECT … INTO t` parses as a query but creates a table.
        if !matches!(plan, LogicalPlan::Ddl(_)) {
            st.planned_statements
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let state = exec.state();
            let physical = state.create_physical_plan(&plan).await?;
            let schema = physical.schema();
            let stream = datafusion::physical_plan::execute_stream(physical, state.task_ctx())?;
            return Ok((schema, stream));
        }
    }
    let out = run_sql(tables, query, exec).await?;
    let schema = match out.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::empty()),
    };
    let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
        schema.clone(),
        futures::stream::iter(out.into_iter().map(Ok)),
    );
    Ok((schema, Box::pin(stream)))
}

impl Database {
    /// Run one statement as [`Database::sql`] does, under `limits`, and read its answer
    /// as it is made: memory holds a couple of batches, however many rows a query
    /// returns. Errors in planning (and every error of a statement that is not a
    /// query) come from this call; errors while a query runs come from the stream.
    /// The time limit covers the reading too.
    pub fn sql_stream(&self, query: &str, limits: &QueryLimits) -> Result<SqlStream> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument(
                "blocking SQL call inside an async runtime; use sql_stream_async".into(),
            ));
        }
        let (_, st) = self.sql_tables()?;
        st.runtime().block_on(self.sql_stream_async(query, limits))
    }

    /// [`Database::sql_stream`] for async callers.
    pub async fn sql_stream_async(&self, query: &str, limits: &QueryLimits) -> Result<SqlStream> {
        let (t, st) = self.sql_tables()?;
        let exec = limits.session(&st)?;
        let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Result<SchemaRef>>();
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let (q, limits) = (query.to_string(), limits.clone());
        let run = async move {
            let mut head_tx = Some(head_tx);
            let body = async {
                let (schema, mut stream) = open(t, q, exec).await?;
                if let Some(h) = head_tx.take() {
                    let _ = h.send(Ok(schema));
                }
                while let Some(b) = stream.next().await {
                    // The reader went away: stop (dropping the plan cancels it).
                    if tx.send(b.map_err(Error::from)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            };
            if let Err(e) = limits.deadline(body).await {
                match head_tx.take() {
                    Some(h) => {
                        let _ = h.send(Err(e));
                    }
                    None => {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            }
            done.store(true, Ordering::Release);
        };
        let task = AbortOnDrop(st.runtime().spawn(traced(run, sql_span(query))));
        let schema = head_rx
            .await
            .map_err(|_| Error::Sql("the SQL statement was cancelled".into()))??;
        Ok(SqlStream {
            schema,
            rx,
            finished,
            reported: false,
            _task: task,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Database, Error, LightningDbConfig, QueryLimits};
    use std::time::Duration;

    #[test]
    fn a_query_streams_in_batches_and_other_statements_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap();
        let none = QueryLimits::none();
        let mut s = db
            .sql_stream("SELECT value AS v FROM generate_series(1, 200000)", &none)
            .unwrap();
        assert_eq!(s.schema().field(0).name(), "v");
        let (mut rows, mut batches) = (0, 0);
        while let Some(b) = s.next_blocking() {
            rows += b.unwrap().num_rows();
            batches += 1;
        }
        assert_eq!(rows, 200000);
        assert!(batches > 1);
        // DDL and DML run to their end before the call returns.
        let mut s = db
            .sql_stream("CREATE TABLE t (id BIGINT PRIMARY KEY)", &none)
            .unwrap();
        assert!(s.next_blocking().is_none());
        db.sql_stream("INSERT INTO t VALUES (1), (2)", &none)
            .unwrap();
        assert_eq!(db.sql("SELECT * FROM t").unwrap()[0].num_rows(), 2);
        // Planning errors come from the call.
        assert!(matches!(
            db.sql_stream("SELECT * FROM missing", &none),
            Err(Error::Sql(_)) | Err(Error::TableNotFound(_))
        ));
        // A time limit stops a query while it is read.
        let limits = QueryLimits {
            timeout: Some(Duration::from_millis(300)),
            ..QueryLimits::none()
        };
        let mut s = db
            .sql_stream(
                "SELECT sum(value % 7) FROM generate_series(1, 100000000000)",
                &limits,
            )
            .unwrap();
        let r = s.next_blocking().unwrap();
        assert!(matches!(r, Err(Error::QueryLimit(_))), "{r:?}");
        // Dropping a stream part-way cancels its query.
        let mut s = db
            .sql_stream("SELECT value FROM generate_series(1, 100000000000)", &none)
            .unwrap();
        assert!(s.next_blocking().unwrap().is_ok());
        drop(s);
        db.close().unwrap();
    }
}
