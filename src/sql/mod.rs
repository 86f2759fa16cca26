//! SQL through DataFusion: one session per database with every table registered, DDL
//! routed to the table catalog, DML run as row-store transactions, Parquet export.
//!
//! Every statement is parsed, planned and run as a task on the database's own SQL
//! runtime, whose threads have stacks deep enough for the configured limits
//! (`sql_max_statement_bytes`, `sql_max_expression_depth`), so no statement can
//! overflow the caller's stack: a statement gets a result or an [`Error::Sql`], never
//! an abort. A panic inside the engine comes back as an error too. Every file SQL
//! touches goes through [`guard`].

mod alter;
mod catalog;
mod fast;
pub(crate) mod guard;
mod limits;
mod prepared;
mod shape;
mod stream;

pub use limits::QueryLimits;
pub use prepared::{Params, PreparedStatement};
pub use stream::SqlStream;

use crate::db::Database;
use crate::error::{Error, Result};
use crate::tables::Tables;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use futures::StreamExt;
use lightning_query::LightningTableProvider;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Stack size of the SQL runtime's threads (address space; pages are committed only
/// when used). DataFusion recurses over expression and plan trees while planning,
/// optimizing, evaluating and dropping them; `sql_max_expression_depth` at its maximum
/// (10,000) and the longest statement `sql_max_statement_bytes` allows stay well within
/// this, also in debug builds.
const SQL_STACK_BYTES: usize = 512 << 20;

pub(crate) struct SqlState {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    ctx: SessionContext,
    /// The session's default schema: Lightning's tables and what DataFusion adds.
    schema: Arc<catalog::LightningSchema>,
    /// Bumped by every change to the catalog: compiled statements from before it are
    /// compiled again.
    epoch: std::sync::atomic::AtomicU64,
    /// What `sql` learned about the statements it saw, by text: their fast plan (or
    /// that they have none) and, for queries, their DataFusion plan. Emptied when the
    /// catalog changes.
    statements: parking_lot::Mutex<std::collections::HashMap<String, Arc<Compiled>>>,
    /// Statements that took the fast path, and those DataFusion planned.
    pub(crate) fast_statements: std::sync::atomic::AtomicU64,
    pub(crate) planned_statements: std::sync::atomic::AtomicU64,
    /// Queries whose remembered plan was used.
    pub(crate) plan_cache_hits: std::sync::atomic::AtomicU64,
}

/// What a statement compiled to, for one version of the catalog (`epoch`): kept by
/// prepared statements and remembered by `sql` for the texts it sees.
pub(crate) struct Compiled {
    epoch: u64,
    /// Single-row statements by primary key: run on the row store directly.
    fast: Option<Arc<fast::FastPlan>>,
    /// The DataFusion plan (with placeholders, for a prepared statement).
    plan: Option<LogicalPlan>,
    /// `plan` optimized, for a query whose optimized form does not depend on when it
    /// runs (see [`reusable`]): repeated, it goes straight to physical planning.
    optimized: Option<LogicalPlan>,
}

/// Whether a query's optimized plan can be reused: it calls no function the optimizer
/// would evaluate once at planning time (`now()`, `current_date`: stable) and none that
/// is volatile.
fn reusable(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, Volatility};
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|p| {
        p.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    ok = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(match ok {
            true => TreeNodeRecursion::Continue,
            false => TreeNodeRecursion::Stop,
        })
    });
    ok
}

/// Statements `sql` remembers by text (beyond this, the memory is emptied).
const SQL_CACHE_ENTRIES: usize = 1024;
/// Longest statement the fast path looks at (single-row statements are short).
const FAST_MAX_BYTES: usize = 2048;

impl SqlState {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn catalog_changed(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.statements.lock().clear();
    }

    /// What `sql` remembers of `query` for the current catalog.
    fn remembered(&self, query: &str) -> Option<Arc<Compiled>> {
        let epoch = self.epoch();
        self.statements
            .lock()
            .get(query)
            .filter(|c| c.epoch == epoch)
            .cloned()
    }

    fn remember(&self, query: &str, c: Compiled) {
        let mut m = self.statements.lock();
        if m.len() >= SQL_CACHE_ENTRIES {
            m.clear();
        }
        m.insert(query.to_string(), Arc::new(c));
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Parse one statement and check it against the configured limits.
    fn parse(&self, cfg: &crate::LightningDbConfig, query: &str) -> Result<DFStatement> {
        if query.len() > cfg.sql_max_statement_bytes {
            return Err(Error::Sql(format!(
                "statement of {} bytes exceeds the limit of {} bytes (sql_max_statement_bytes)",
                query.len(),
                cfg.sql_max_statement_bytes
            )));
        }
        let state = self.ctx.state_ref();
        let state = state.read();
        let dialect = state.config().options().sql_parser.dialect;
        let stmt = state.sql_to_statement(query, &dialect)?;
        let depth = expression_depth(&stmt, cfg.sql_max_expression_depth);
        if depth > cfg.sql_max_expression_depth {
            return Err(Error::Sql(format!(
                "expressions nest more than {} deep (sql_max_expression_depth)",
                cfg.sql_max_expression_depth
            )));
        }
        Ok(stmt)
    }

    /// The fast plan of a short statement, from the cache or by parsing it here (on
    /// the caller's thread: the length bound and the parser's recursion limit keep
    /// that shallow). `None`: the statement takes the general path.
    fn fast_plan(&self, tables: &Tables, query: &str) -> Option<Arc<fast::FastPlan>> {
        if let Some(c) = self.remembered(query) {
            return c.fast.clone();
        }
        if query.len() > FAST_MAX_BYTES.min(tables.config.sql_max_statement_bytes) {
            return None;
        }
        let epoch = self.epoch();
        let fast = self
            .parse(&tables.config, query)
            .ok()
            .and_then(|stmt| fast::analyze(tables, &stmt))
            .map(Arc::new);
        self.remember(
            query,
            Compiled {
                epoch,
                fast: fast.clone(),
                plan: None,
                optimized: None,
            },
        );
        fast
    }
}

impl Drop for SqlState {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which tokio forbids (it panics)
        // inside another runtime: a `Database` dropped in an async function after
        // `sql_async` would abort the program. Shutting down in the background never
        // blocks and is allowed anywhere.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Tables {
    fn provider(&self, def: Arc<lightning_columnar::TableDef>) -> Arc<LightningTableProvider> {
        Arc::new(LightningTableProvider::new(
            self.engine.clone(),
            self.store.clone(),
            def,
        ))
    }

    pub(crate) fn sql_state(self: &Arc<Self>) -> Result<Arc<SqlState>> {
        let mut g = self.sql.lock();
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let threads = self.config.sql_worker_threads();
        let nice = self.config.analytics_nice;
        // The workers count as busy in the engine's commit-yield holds from unpark to
        // park: writers then sleep rather than yield (see `analytics_busy`). Not from
        // thread start: a worker parks before its first task, and blocking-pool
        // threads (ALTER's) never park through these hooks, so a start mark would
        // hold yields off for as long as an idle blocking thread lives.
        let holds = self.engine.commit_yield_holds();
        let mark = |busy: bool| {
            let h = holds.clone();
            move || crate::metrics::analytics_busy(&h, busy)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("ldb-sql")
            .on_thread_start(move || crate::metrics::lower_thread_priority(nice))
            .on_thread_stop(mark(false))
            .on_thread_park(mark(false))
            .on_thread_unpark(mark(true))
            .thread_stack_size(SQL_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                context: "starting the SQL runtime".into(),
                source: e,
            })?;
        let mut cfg = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(threads)
            .with_extension(Arc::new(lightning_query::InsertOptions {
                run_bytes: self.config.sql_insert_run_bytes,
            }));
        // Tables store Utf8, so SQL string types map to Utf8.
        cfg.options_mut().sql_parser.map_string_types_to_utf8view = false;
        // A partial aggregation that has seen one batch (8192 rows) with nearly as many
        // groups as rows stops aggregating and passes rows on to the final one
        // (DataFusion waits for 100K rows, which a small query never reaches; grouping
        // 100K rows by a 50K-value key measured 2.6 -> 2.1 ms).
        cfg.options_mut()
            .execution
            .skip_partial_aggregation_probe_rows_threshold = 8192;
        // Aggregations grouped by a dictionary-stored column group by dictionary key.
        // An encrypted database never has query data written in plaintext: no spill
        // files (the memory pool is unbounded, so none are made anyway; this makes it
        // a rule).
        let mut env = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if self.config.encryption.is_some() {
            use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
            env = env.with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            );
        }
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(cfg)
            .with_runtime_env(Arc::new(env.build()?))
            .with_default_features()
            // Decimal arithmetic of small values unchecked (before the rules
            // that wrap aggregations).
            .with_physical_optimizer_rule(Arc::new(lightning_query::FastDecimalArithmetics))
            .with_physical_optimizer_rule(Arc::new(lightning_query::DictionaryAggregation))
            // Partial aggregations grouped by a key prefix run on the scans' key order.
            .with_physical_optimizer_rule(Arc::new(lightning_query::OrderedPartialAggregation))
            // Scans read once the hash joins above them have their filters complete.
            .with_physical_optimizer_rule(Arc::new(lightning_query::WaitForJoinFilters))
            // Semi/anti joins below the inner joins they would otherwise wait for.
            .with_optimizer_rule(Arc::new(lightning_query::PushSemiJoinDown))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // Every file:// access of the session goes through the guard.
        let rule = Arc::new(guard::Rule::new(
            self.engine.dir(),
            &self.config.sql_file_access,
        ));
        let local = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        ctx.runtime_env()
            .register_object_store(local.as_ref(), Arc::new(guard::GuardedFiles::new(rule)));
        // Lightning is the default schema: DDL and DML through `session()` land here too.
        let schema = Arc::new(catalog::LightningSchema::new(Arc::downgrade(self)));
        for d in self.defs.read().values() {
            schema.put(&d.name, self.provider(d.clone()));
        }
        let default = ctx.state().config().options().catalog.clone();
        ctx.catalog(&default.default_catalog)
            .ok_or_else(|| Error::Sql("the SQL session has no default catalog".into()))?
            .register_schema(&default.default_schema, schema.clone())?;
        let s = Arc::new(SqlState {
            runtime: Some(runtime),
            ctx,
            schema,
            epoch: Default::default(),
            statements: Default::default(),
            fast_statements: Default::default(),
            planned_statements: Default::default(),
            plan_cache_hits: Default::default(),
        });
        *g = Some(s.clone());
        Ok(s)
    }

    /// (fast-path statements, planned statements, remembered plans used) since open.
    pub(crate) fn sql_figures(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.sql.lock().as_ref() {
            Some(s) => (
                s.fast_statements.load(Relaxed),
                s.planned_statements.load(Relaxed),
                s.plan_cache_hits.load(Relaxed),
            ),
            None => (0, 0, 0),
        }
    }

    pub(crate) fn sql_register(&self, def: &Arc<lightning_columnar::TableDef>) -> Result<()> {
        if let Some(s) = self.sql.lock().as_ref() {
            s.catalog_changed();
            s.schema.put(&def.name, self.provider(def.clone()));
        }
        Ok(())
    }

    pub(crate) fn sql_deregister(&self, name: &str) -> Result<()> {
        if let Some(s) = self.sql.lock().as_ref() {
            s.catalog_changed();
            s.schema.remove(name);
        }
        Ok(())
    }
}

#[allow(dead_code)]
fn assert_sql_future_is_send(db: &Database) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&db.sql_async("SELECT 1"));
}

/// Aborts the task when the caller stops waiting for it (a dropped `sql_async`).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Sql(format!(
                "internal error while running SQL: {msg}"
            )))
        }
        Err(_) => Err(Error::Sql("the SQL statement was cancelled".into())),
    }
}

/// The deepest expression nesting in a statement, stopping once past `max`.
fn expression_depth(stmt: &DFStatement, max: usize) -> usize {
    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
    use std::ops::ControlFlow;
    struct Depth {
        cur: usize,
        deepest: usize,
        max: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.cur += 1;
            self.deepest = self.deepest.max(self.cur);
            if self.cur > self.max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.cur -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut d = Depth {
        cur: 0,
        deepest: 0,
        max,
    };
    let mut s = stmt;
    loop {
        match s {
            DFStatement::Statement(st) => {
                if let datafusion::sql::sqlparser::ast::Statement::Query(q) = st.as_ref() {
                    d.deepest = d.deepest.max(set_operation_depth(&q.body));
                    if d.deepest > max {
                        return d.deepest;
                    }
                }
                let _ = st.visit(&mut d);
            }
            DFStatement::CopyTo(c) => {
                if let CopyToSource::Query(q) = &c.source {
                    let _ = q.visit(&mut d);
                }
            }
            DFStatement::Explain(e) => {
                s = &e.statement;
                continue;
            }
            DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {}
        }
        return d.deepest;
    }
}

fn sql_span(query: &str) -> tracing::Span {
    tracing::info_span!("sql", query = %query.chars().take(200).collect::<String>())
}

fn traced<F: std::future::Future>(
    f: F,
    span: tracing::Span,
) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(f, span)
}

/// How deeply set operations (`UNION`, `INTERSECT`, `EXCEPT`) nest in a query body,
/// counted without recursion.
fn set_operation_depth(body: &datafusion::sql::sqlparser::ast::SetExpr) -> usize {
    use datafusion::sql::sqlparser::ast::SetExpr;
    let mut deepest = 0;
    let mut stack = vec![(body, 0usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        match e {
            SetExpr::SetOperation { left, right, .. } => {
                stack.push((left, d + 1));
                stack.push((right, d + 1));
            }
            SetExpr::Query(q) => stack.push((&q.body, d)),
            _ => {}
        }
    }
    deepest
}

/// Plan and run one statement (on a SQL runtime thread), executing it in session
/// `exec` (see [`QueryLimits::session`]).
async fn run_sql(
    tables: Arc<Tables>,
    query: String,
    exec: SessionContext,
) -> Result<Vec<RecordBatch>> {
    let st = tables.sql_state()?;
    let epoch = st.epoch();
    let known = st.remembered(&query);
    if let Some(p) = known.as_ref().and_then(|c| c.optimized.clone()) {
        st.plan_cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return run_optimized(&st, &exec, p).await;
    }
    let plan = match known.as_ref().and_then(|c| c.plan.clone()) {
        Some(p) => {
            st.plan_cache_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            p
        }
        None => {
            let stmt = st.parse(&tables.config, &query)?;
            if let DFStatement::Statement(s) = &stmt
                && let datafusion::sql::sqlparser::ast::Statement::AlterTable(a) = s.as_ref()
            {
                st.planned_statements
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return alter::alter_table(&tables, &st, a).await;
            }
            let is_query = matches!(
                &stmt,
                DFStatement::Statement(s)
                    if matches!(s.as_ref(), datafusion::sql::sqlparser::ast::Statement::Query(_))
            );
            // A known shape: its optimized plan, bound. An optimizer rule may have
            // treated a placeholder unlike a literal, so a failure runs the query the
            // ordinary way (queries write nothing).
            if is_query
                && let Some((shape, values)) = shape::parameterize(&stmt)
                && let Some(optimized) = shaped_plan(&st, epoch, shape).await
                && let Ok(bound) =
                    optimized.with_param_values(datafusion::common::ParamValues::from(values))
                && let Ok(out) = run_optimized(&st, &exec, bound).await
            {
                return Ok(out);
            }
            let plan = st.ctx.state().statement_to_plan(stmt).await?;
            // `SELECT … INTO t` parses as a query but creates a table.
            let is_query = is_query && !matches!(plan, LogicalPlan::Ddl(_));
            // Queries (no DDL, DML or file access: those change what a plan would
            // mean) are remembered by their text until the catalog changes.
            if is_query {
                let fast = known.and_then(|c| c.fast.clone());
                let optimized = match reusable(&plan) {
                    true => Some(st.ctx.state().optimize(&plan)?),
                    false => None,
                };
                st.remember(
                    &query,
                    Compiled {
                        epoch,
                        fast,
                        plan: Some(plan.clone()),
                        optimized: optimized.clone(),
                    },
                );
                if let Some(p) = optimized {
                    return run_optimized(&st, &exec, p).await;
                }
            }
            plan
        }
    };
    run_plan(&tables, &st, &exec, plan).await
}

/// Where the plans of query shapes are remembered (see [`shape`]): no statement text
/// starts so.
const SHAPE_KEY: &str = "\u{0}shape\u{0}";

/// The optimized plan of query shape `shape` (see [`shape`]), with placeholders;
/// planned and remembered on first sight. `None`: the shape cannot stand for its
/// queries (DataFusion typed a placeholder other than as the literal was, the plan
/// depends on when it runs, or it could not be planned), and they take the ordinary
/// path.
async fn shaped_plan(st: &SqlState, epoch: u64, shape: DFStatement) -> Option<LogicalPlan> {
    let key = format!("{SHAPE_KEY}{shape}");
    if let Some(c) = st.remembered(&key) {
        let p = c.optimized.clone()?;
        st.plan_cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Some(p);
    }
    let optimized = st
        .ctx
        .state()
        .statement_to_plan(shape)
        .await
        .ok()
        .filter(|p| {
            !matches!(p, LogicalPlan::Ddl(_))
                && reusable(p)
                && p.get_parameter_types()
                    .is_ok_and(|t| t.values().all(|d| d.as_ref() == Some(&DataType::Int64)))
        })
        .and_then(|p| st.ctx.state().optimize(&p).ok());
    st.remember(
        &key,
        Compiled {
            epoch,
            fast: None,
            plan: None,
            optimized: optimized.clone(),
        },
    );
    optimized
}

/// Run an optimized query plan (the logical optimizer already ran) in session `exec`.
async fn run_optimized(
    st: &SqlState,
    exec: &SessionContext,
    plan: LogicalPlan,
) -> Result<Vec<RecordBatch>> {
    st.planned_statements
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let state = exec.state();
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let physical = state
        .query_planner()
        .create_physical_plan(&plan, &state)
        .await?;
    let out = datafusion::physical_plan::collect(physical, state.task_ctx()).await?;
    Ok(named(out, schema))
}

/// `s` with string and binary views as plain strings and binaries: the types every
/// Parquet reader and every Flight SQL client (JDBC, older Arrow libraries) reads.
pub(crate) fn plain_schema(s: &Schema) -> Schema {
    let plain = |t: &DataType| match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        t => t.clone(),
    };
    Schema::new_with_metadata(
        s.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
            .collect::<Vec<_>>(),
        s.metadata().clone(),
    )
}

/// An empty answer still names its columns (as the fast path's does), however many
/// batches the plan's operators happened to emit.
fn named(out: Vec<RecordBatch>, schema: SchemaRef) -> Vec<RecordBatch> {
    match out.is_empty() && !schema.fields().is_empty() {
        true => vec![RecordBatch::new_empty(schema)],
        false => out,
    }
}

/// Run a planned statement: DDL on Lightning tables goes to the table catalog, the
/// rest to DataFusion, executed in session `exec` (the shared one, or one with a
/// query's own memory limit).
async fn run_plan(
    tables: &Arc<Tables>,
    st: &SqlState,
    exec: &SessionContext,
    plan: LogicalPlan,
) -> Result<Vec<RecordBatch>> {
    st.planned_statements
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
        // External tables and views change the catalog too, and `SET` the options the
        // remembered plans were optimized with.
        st.catalog_changed();
    }
    let ctx = exec.clone();
    match &plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
            let name = c.name.table().to_string();
            if c.or_replace && c.if_not_exists {
                return Err(Error::Sql(
                    "Execution error: 'IF NOT EXISTS' cannot coexist with 'REPLACE'".into(),
                ));
            }
            if tables.has_table(&name) && !c.or_replace {
                if c.if_not_exists {
                    return Ok(Vec::new());
                }
                return Err(Error::TableExists(name));
            }
            // In the types tables store: SQL reads strings as views.
            let schema = Arc::new(crate::tables::to_table_schema(c.input.schema().as_arrow()));
            let mut pk = Vec::new();
            for con in c.constraints.iter() {
                if let datafusion::common::Constraint::PrimaryKey(idx) = con {
                    pk = idx
                        .iter()
                        .map(|&i| schema.field(i).name().clone())
                        .collect();
                }
            }
            // Without a PRIMARY KEY the table is keyless: rows are keyed by a hidden,
            // monotonically assigned row id.
            let pk_refs: Vec<&str> = pk.iter().map(String::as_str).collect();
            // Column DEFAULTs are kept as SQL text, planned again when the table is.
            let defaults = c
                .column_defaults
                .iter()
                .map(|(col, e)| Ok((col.clone(), lightning_query::default_sql(e)?)))
                .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
            if matches!(c.input.as_ref(), LogicalPlan::EmptyRelation(_)) && !c.or_replace {
                tables.create_table_with(&name, schema, &pk_refs, defaults)?;
                return Ok(Vec::new());
            }
            // CREATE TABLE .. AS SELECT: atomic. The rows stream into a table that
            // is published (with all of them) only once the query finished.
            let mut load = tables.begin_load_as(&name, schema, &pk_refs, c.or_replace, defaults)?;
            let target = load.schema();
            let mut stream = ctx
                .execute_logical_plan((*c.input).clone())
                .await?
                .execute_stream()
                .await?;
            while let Some(b) = stream.next().await {
                let b = lightning_query::cast_batch(&b?, &target)?;
                load.insert(&b)?;
            }
            match c.or_replace {
                true => load.commit_replacing()?,
                false => load.commit()?,
            };
            Ok(Vec::new())
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(d)) if tables.has_table(d.name.table()) => {
            tables.drop_table(d.name.table())?;
            Ok(Vec::new())
        }
        _ => {
            let df = ctx.execute_logical_plan(plan).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            Ok(named(df.collect().await?, schema))
        }
    }
}

impl Database {
    fn sql_tables(&self) -> Result<(Arc<Tables>, Arc<SqlState>)> {
        let t = self.tables.clone().ok_or(Error::Closed)?;
        if self.engine().is_closed() {
            return Err(Error::Closed);
        }
        let st = t.sql_state()?;
        Ok((t, st))
    }

    /// Run `f` as a task on the SQL runtime and wait for it on this (non-async) thread.
    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument(
                "blocking SQL call inside an async runtime; use sql_async".into(),
            ));
        }
        let (_, st) = self.sql_tables()?;
        let rt = st.runtime();
        let mut task = AbortOnDrop(rt.spawn(f));
        joined(rt.block_on(&mut task.0))
    }

    /// Run one SQL statement and return its result rows. DDL (`CREATE TABLE .. PRIMARY
    /// KEY (..)`, `DROP TABLE`) changes Lightning tables; `INSERT` (`INSERT OR REPLACE`
    /// to upsert), `UPDATE` and `DELETE` are atomic row-store transactions; any other
    /// DataFusion statement (`CREATE EXTERNAL TABLE`, `COPY .. TO`, `EXPLAIN`) works
    /// too. A write committed before the call is in its result.
    ///
    /// Statements longer than `sql_max_statement_bytes` or nesting expressions deeper
    /// than `sql_max_expression_depth` are refused with [`Error::Sql`]. Files are read
    /// and written only as `sql_file_access` allows, and never inside a database
    /// directory.
    pub fn sql(&self, query: &str) -> Result<Vec<RecordBatch>> {
        self.sql_limited(query, &QueryLimits::none())
    }

    /// [`Database::sql`] for async callers. The statement runs on the database's SQL
    /// runtime; dropping the returned future cancels it.
    pub async fn sql_async(&self, query: &str) -> Result<Vec<RecordBatch>> {
        self.sql_async_limited(query, &QueryLimits::none()).await
    }

    /// A DataFusion session with every table (and `kv`) registered, for the DataFrame
    /// API. It is the session `sql` uses (file access is guarded the same way); create
    /// tables through `sql` or the table API. Plans built through it run on the
    /// caller's threads.
    pub fn session(&self) -> Result<SessionContext> {
        Ok(self.sql_tables()?.1.ctx.clone())
    }

    /// Write a table, or the result of a query, to a zstd-compressed Parquet file,
    /// streaming (memory stays bounded by a few batches). Returns the rows written.
    pub fn export_parquet(&self, table_or_query: &str, path: impl AsRef<Path>) -> Result<u64> {
        self.export_parquet_as(table_or_query, path.as_ref(), None)
    }

    /// [`Database::export_parquet`], encrypted with Parquet modular encryption
    /// (AES-GCM, footer and every column) under a random key made for this file and
    /// wrapped for `key` in the file's footer key metadata. Read it back with
    /// [`crate::encryption::read_encrypted_parquet`] or, in the parquet crate's readers,
    /// [`crate::encryption::parquet_decryption`]. Exports are plaintext unless asked.
    pub fn export_parquet_encrypted(
        &self,
        table_or_query: &str,
        path: impl AsRef<Path>,
        key: &crate::encryption::KeyProvider,
    ) -> Result<u64> {
        let props = crate::encryption::file_encryption(key)?;
        self.export_parquet_as(table_or_query, path.as_ref(), Some(props))
    }

    fn export_parquet_as(
        &self,
        table_or_query: &str,
        path: &Path,
        encryption: Option<Arc<datafusion::parquet::encryption::encrypt::FileEncryptionProperties>>,
    ) -> Result<u64> {
        let (tables, st) = self.sql_tables()?;
        let q = if tables.has_table(table_or_query) {
            format!("SELECT * FROM \"{table_or_query}\"")
        } else {
            table_or_query.to_string()
        };
        let path: PathBuf = std::path::absolute(path).unwrap_or(path.into());
        if let Some(why) = guard::Rule::new(self.path(), &crate::SqlFileAccess::Any).refusal(&path)
        {
            return Err(Error::InvalidArgument(why));
        }
        let ctx = st.ctx.clone();
        self.block_on(async move {
            let df = ctx.sql(&q).await?;
            // SQL reads strings as Utf8View; the file holds plain UTF-8 strings, the
            // type every Parquet reader maps to its string type.
            let schema = Arc::new(plain_schema(df.schema().as_arrow()));
            let mut stream = df.execute_stream().await?;
            let f = std::fs::File::create(&path).map_err(|e| Error::Io {
                context: format!("creating {}", path.display()),
                source: e,
            })?;
            let mut props = datafusion::parquet::file::properties::WriterProperties::builder()
                .set_compression(datafusion::parquet::basic::Compression::ZSTD(
                    Default::default(),
                ));
            if let Some(e) = encryption {
                props = props.with_file_encryption_properties(e);
            }
            let props = props.build();
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
