//! Per-statement resource limits: a memory budget and a deadline, for callers that run
//! statements on behalf of others (the Flight SQL server, a service).

use super::{SqlState, run_plan, run_sql, sql_span, traced};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::sql::{AbortOnDrop, joined};
use arrow::array::RecordBatch;
use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// Limits on one statement. The default sets none (as [`Database::sql`] runs).
///
/// `memory` bounds what the statement's operators hold at once (hash tables of joins
/// and aggregations, sort buffers, repartitioning): past it the statement fails with
/// [`Error::QueryLimit`] (or, where an operator can, spills to disk; an encrypted
/// database never spills). It does not count the result handed back, which the
/// caller bounds by the rows it asks for. `timeout` is a deadline for the whole
/// statement: when it passes the statement is cancelled, its writes (which commit
/// atomically at its end) are not made, and [`Error::QueryLimit`] is returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryLimits {
    /// Bytes of operator memory the statement may hold at once.
    pub memory: Option<usize>,
    /// Longest the statement may run.
    pub timeout: Option<Duration>,
}

impl QueryLimits {
    /// No limits.
    pub fn none() -> QueryLimits {
        QueryLimits::default()
    }

    /// A session for executing one statement under these limits: the shared session
    /// when there is no memory limit, else the same catalog and settings with a
    /// memory pool of its own.
    pub(crate) fn session(&self, st: &SqlState) -> Result<SessionContext> {
        let Some(bytes) = self.memory else {
            return Ok(st.ctx.clone());
        };
        let shared = st.ctx.state();
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(bytes),
            NonZeroUsize::new(3).expect("3 is not zero"),
        );
        let env = RuntimeEnvBuilder::from_runtime_env(shared.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(shared)
            .with_runtime_env(env)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// `f` under this deadline (if any).
    pub(crate) async fn deadline<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        match self.timeout {
            None => f.await,
            Some(d) => match tokio::time::timeout(d, f).await {
                Ok(r) => r,
                Err(_) => Err(Error::QueryLimit(format!(
                    "the statement ran past its time limit of {d:?} and was cancelled"
                ))),
            },
        }
    }
}

impl Database {
    /// [`Database::sql`] under `limits`: a memory budget and a deadline for this one
    /// statement. A statement past either fails with [`Error::QueryLimit`] and changes
    /// nothing.
    pub fn sql_limited(&self, query: &str, limits: &QueryLimits) -> Result<Vec<RecordBatch>> {
        let (t, st) = self.sql_tables()?;
        // Single-row statements by primary key run here, straight on the row store
        // (each is bounded by itself).
        if let Some(plan) = st.fast_plan(&t, query)
            && let Some(out) = super::fast::run(&t, &plan, &[])?
        {
            st.fast_statements
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(out);
        }
        let exec = limits.session(&st)?;
        let (q, limits) = (query.to_string(), limits.clone());
        let run = async move { limits.deadline(run_sql(t, q, exec)).await };
        self.block_on(traced(run, sql_span(query)))
    }

    /// [`Database::sql_limited`] for async callers; dropping the future cancels the
    /// statement.
    pub async fn sql_async_limited(
        &self,
        query: &str,
        limits: &QueryLimits,
    ) -> Result<Vec<RecordBatch>> {
        let (t, st) = self.sql_tables()?;
        let exec = limits.session(&st)?;
        let (q, limits) = (query.to_string(), limits.clone());
        let run = async move { limits.deadline(run_sql(t, q, exec)).await };
        let mut task = AbortOnDrop(st.runtime().spawn(traced(run, sql_span(query))));
        joined((&mut task.0).await)
    }
}

/// Run planned statement `plan` under `limits` (for prepared statements).
pub(crate) async fn run_plan_limited(
    tables: Arc<crate::tables::Tables>,
    st: Arc<SqlState>,
    plan: datafusion::logical_expr::LogicalPlan,
    limits: QueryLimits,
) -> Result<Vec<RecordBatch>> {
    let exec = limits.session(&st)?;
    limits
        .deadline(async { run_plan(&tables, &st, &exec, plan).await })
        .await
}

#[cfg(test)]
mod tests {
    use crate::{Database, Error, LightningDbConfig, QueryLimits};
    use std::time::{Duration, Instant};

    #[test]
    fn limits_stop_a_statement_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap();
        let join = "SELECT count(*) AS n FROM generate_series(1, 300000) a \
                    JOIN generate_series(1, 300000) b ON a.value = b.value";
        let memory = QueryLimits {
            memory: Some(1 << 20),
            ..QueryLimits::none()
        };
        let r = db.sql_limited(join, &memory);
        assert!(matches!(r, Err(Error::QueryLimit(_))), "{r:?}");
        // Without the limit (and with a roomy one) the same statement runs.
        let roomy = QueryLimits {
            memory: Some(1 << 30),
            ..QueryLimits::none()
        };
        assert_eq!(db.sql_limited(join, &roomy).unwrap()[0].num_rows(), 1);

        let deadline = QueryLimits {
            timeout: Some(Duration::from_millis(200)),
            ..QueryLimits::none()
        };
        let t0 = Instant::now();
        let r = db.sql_limited(
            "SELECT sum(value % 7) FROM generate_series(1, 100000000000)",
            &deadline,
        );
        assert!(matches!(r, Err(Error::QueryLimit(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(30));
        // A write cut off by its deadline writes nothing.
        db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY)").unwrap();
        let r = db.sql_limited(
            "INSERT INTO t SELECT value FROM generate_series(1, 100000000000)",
            &deadline,
        );
        assert!(matches!(r, Err(Error::QueryLimit(_))), "{r:?}");
        let n = db.sql("SELECT count(*) AS n FROM t").unwrap();
        assert_eq!(
            n[0].column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0),
            0
        );
        // Prepared statements take the same limits.
        let p = db.prepare(join).unwrap();
        assert!(matches!(
            p.execute_limited((), &memory),
            Err(Error::QueryLimit(_))
        ));
        assert!(p.execute_limited((), &roomy).is_ok());
        db.close().unwrap();
    }
}
