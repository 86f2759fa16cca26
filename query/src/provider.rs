//! The `TableProvider` of a Lightning table.

use crate::dml::{DmlExec, LightningSink, conform, storage, violation};
use crate::fresh::FreshCache;
use crate::scan::{LightningScan, Pruning, SegmentPart, Unit};
use crate::zones::ZoneStats;
use arrow::array::{Array, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Constraint, Constraints};
use datafusion::common::{DFSchema, Result, Statistics};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, cast, col};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::pruning::{PruningPredicate, build_pruning_predicate};
use datafusion::physical_plan::metrics::Count;
use datafusion::physical_plan::{ExecutionPlan, collect};
use lightning_columnar::store::LoadedSegment;
use lightning_columnar::{ColumnStore, TableDef};
use lightning_rowstore::{Engine, Isolation, Transaction};
use parking_lot::Mutex;
use std::sync::Arc;

/// A Lightning table as seen by DataFusion.
#[derive(Clone)]
pub struct LightningTableProvider {
    engine: Arc<Engine>,
    store: Arc<ColumnStore>,
    def: Arc<TableDef>,
    schema: SchemaRef,
    /// The primary key, for DataFusion's functional dependencies (`SELECT pk, other
    /// ... GROUP BY pk`).
    constraints: Constraints,
    /// Column `DEFAULT`s, planned from the definition's SQL text.
    defaults: std::collections::HashMap<String, Expr>,
    /// What the last scan learned about the fresh rows (shared by clones).
    fresh: Arc<FreshCache>,
    /// Where this table's database can be opened by other processes (a distributed
    /// executor): carried into every scan's task description.
    source: Option<Arc<str>>,
}

/// A column `DEFAULT` as the SQL text a table definition keeps.
pub fn default_sql(e: &Expr) -> Result<String> {
    Ok(datafusion::sql::unparser::expr_to_sql(e)?.to_string())
}

/// A stored column `DEFAULT` planned back into an expression (functions resolved by a
/// default session, shared).
fn default_expr(sql: &str) -> Result<Expr> {
    static STATE: std::sync::OnceLock<datafusion::execution::SessionState> =
        std::sync::OnceLock::new();
    let state = STATE.get_or_init(|| {
        datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .build()
    });
    state.create_logical_expr(sql, &DFSchema::empty())
}

/// The type SQL sees for a stored column type: strings as `Utf8View`, as DataFusion's
/// own Parquet reader does (dictionary-encoded segment columns become views without
/// copying a string, and DataFusion's kernels are fastest on views). Everything else is
/// unchanged.
pub fn sql_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        d => d.clone(),
    }
}

/// [`sql_type`] applied to every field.
pub fn sql_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(sql_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `b` with `schema`: each column cast to its field's type (same column count; columns
/// already of that type are shared, not copied).
pub fn cast_batch(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                Ok(arrow::compute::cast(c, f.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
    )?)
}

impl std::fmt::Debug for LightningTableProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LightningTableProvider({})", self.def.name)
    }
}

impl LightningTableProvider {
    /// This provider, its scans labelled with `source`: where another process opens
    /// the same published database (see [`LightningScan::source`]).
    pub fn with_source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The label set by [`LightningTableProvider::with_source`].
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub fn new(engine: Arc<Engine>, store: Arc<ColumnStore>, def: Arc<TableDef>) -> Self {
        // A keyless table's hidden row ids are not among the columns SQL sees.
        let schema = sql_schema(&def.user_schema());
        let constraints = match def.keyless {
            true => Constraints::default(),
            false => {
                Constraints::new_unverified(vec![Constraint::PrimaryKey(def.key_cols.clone())])
            }
        };
        let defaults = def
            .defaults
            .iter()
            .filter_map(|(col, sql)| match default_expr(sql) {
                Ok(e) => Some((col.clone(), e)),
                Err(e) => {
                    tracing::warn!(table = %def.name, column = %col, error = %e,
                        "a stored column DEFAULT does not plan; the column has none");
                    None
                }
            })
            .collect();
        LightningTableProvider {
            engine,
            store,
            def,
            schema,
            constraints,
            defaults,
            fresh: Default::default(),
            source: None,
        }
    }

    pub fn table(&self) -> &TableDef {
        &self.def
    }

    /// The scan's filters as a predicate over zone maps (`None`: nothing to prune by).
    /// DataFusion hands filters with columns qualified by the scan's table name; the
    /// predicate is over this table's own schema. Pruning only saves work: a filter
    /// that cannot be planned (counted nowhere, logged) prunes nothing.
    fn pruning_predicate(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Option<Arc<PruningPredicate>> {
        let unqualified = |e: &Expr| {
            e.clone()
                .transform(|e| match e {
                    Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
                        datafusion::common::Column::new_unqualified(c.name),
                    ))),
                    e => Ok(Transformed::no(e)),
                })
                .data()
        };
        let exprs = filters.iter().map(unqualified).collect::<Result<Vec<_>>>();
        let expr = conjunction(exprs.ok()?)?;
        let df_schema = DFSchema::try_from(self.schema.clone()).ok()?;
        let physical = match state.create_physical_expr(expr, &df_schema) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(table = %self.def.name, "filter not usable for pruning: {e}");
                return None;
            }
        };
        build_pruning_predicate(physical, &self.schema, &Count::new())
    }

    /// The primary-key ordering of the scan's output columns: the longest prefix of the
    /// key whose columns are projected. Float keys stop it (the key encoding orders
    /// -0.0/NaN differently from SQL).
    fn key_ordering(&self, projection: Option<&Vec<usize>>) -> Option<Vec<PhysicalSortExpr>> {
        let mut out = Vec::new();
        for &k in &self.def.key_cols {
            if self.def.schema.field(k).data_type().is_floating() {
                break;
            }
            let pos = match projection {
                Some(p) => match p.iter().position(|&i| i == k) {
                    Some(pos) => pos,
                    None => break,
                },
                None => k,
            };
            let name = self.def.schema.field(k).name();
            out.push(PhysicalSortExpr::new(
                Arc::new(Column::new(name, pos)),
                SortOptions {
                    descending: false,
                    nulls_first: false,
                },
            ));
        }
        (!out.is_empty()).then_some(out)
    }

    async fn physical(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
        exprs: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Over every stored column: UPDATE and DELETE of a keyless table go by the
        // hidden row ids.
        let all = LightningTableProvider {
            schema: sql_schema(&self.def.schema),
            ..self.clone()
        };
        let source = provider_as_source(Arc::new(all));
        let mut b = LogicalPlanBuilder::scan(self.def.name.as_str(), source, None)?;
        if let Some(f) = conjunction(filters) {
            b = b.filter(f)?;
        }
        let plan = b.project(exprs)?.build()?;
        state.create_physical_plan(&plan).await
    }

    /// The transaction an UPDATE or DELETE writes in, begun before its scan takes its
    /// snapshot: a row the statement read that another commit changes before this one
    /// commits is then a write-write conflict, not an overwritten update (the statement
    /// used to begin its transaction only after reading, so a commit in between was
    /// silently lost).
    fn begin_dml(&self) -> Result<Arc<Mutex<Option<Transaction>>>> {
        let txn = Transaction::begin(&self.engine, Isolation::Snapshot).map_err(storage)?;
        Ok(Arc::new(Mutex::new(Some(txn))))
    }
}

/// A DML plan holds one transaction: executing it again would write what its scan read
/// at the first execution's snapshot.
fn executed_twice() -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution(
        "this UPDATE/DELETE plan was already executed; plan the statement again".into(),
    )
}

#[async_trait]
impl TableProvider for LightningTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Zone maps prune whole segments; DataFusion still applies the filter to rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        let v = self.store.view(self.def.id);
        let rows: u64 = v.segments.iter().map(|s| s.live_rows()).sum();
        Some(Statistics::new_unknown(&self.schema).with_num_rows(Precision::Inexact(rows as usize)))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let _span = tracing::debug_span!("scan", table = %self.def.name).entered();
        // Every column SQL sees, when it asks for all (a keyless table stores one more).
        let all: Vec<usize>;
        let projection = match projection {
            None if self.schema.fields().len() < self.def.schema.fields().len() => {
                all = (0..self.schema.fields().len()).collect();
                Some(&all)
            }
            p => p,
        };
        // The view first, then the snapshot: the snapshot is at or after the watermark.
        let view = self.store.view(self.def.id);
        let def = &self.def;
        if !view.segments.is_empty() && view.schema_version != def.layout.version {
            // An `ALTER TABLE` committed since this statement was planned: its segments
            // read as the other version's columns.
            return Err(storage(def.newer(view.schema_version)));
        }
        let snap = Arc::new(self.engine.snapshot());
        let fresh_state = self
            .fresh
            .get(&self.engine, def, &view, &snap)
            .map_err(storage)?;
        // In key order: when no two segments overlap, every partition's units then come
        // in key order and the scan declares its output sorted by the primary key (and
        // the fresh rows must come in key order too).
        let mut segments: Vec<&Arc<LoadedSegment>> = view.segments.iter().collect();
        segments.sort_by(|a, b| a.key_range().0.cmp(b.key_range().0));
        let disjoint = segments
            .windows(2)
            .all(|w| w[0].key_range().1 < w[1].key_range().0);
        let key_ordering = disjoint.then(|| self.key_ordering(projection)).flatten();
        let fresh = fresh_state
            .batches(def, key_ordering.is_some())
            .map_err(storage)?;
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let fresh = fresh
            .into_iter()
            .map(|b| {
                let b = match projection {
                    Some(p) => b.project(p)?,
                    None => b,
                };
                cast_batch(&b, &schema)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut parts = Vec::new();
        let mut units = Vec::new();
        let mut pruning = Pruning {
            segments_total: view.segments.len(),
            batches_total: 0,
        };
        let predicate = self.pruning_predicate(state, filters);
        let keep_segments = match &predicate {
            Some(p) => p.prune(&ZoneStats {
                schema: &self.schema,
                projection: None,
                containers: segments
                    .iter()
                    .map(|s| (s.segment.zone_maps(), s.state.info.rows))
                    .collect(),
            })?,
            None => vec![true; segments.len()],
        };
        for (s, keep) in segments.into_iter().zip(keep_segments) {
            let seg = &s.segment;
            pruning.batches_total += seg.num_batches();
            if !keep {
                continue;
            }
            let mask = fresh_state.mask(s);
            if mask.live.iter().all(|&n| n == 0) {
                continue;
            }
            let keep_batches = match &predicate {
                Some(p) => p.prune(&ZoneStats {
                    schema: &self.schema,
                    projection: None,
                    containers: (0..seg.num_batches())
                        .map(|b| (seg.batch_zone_maps(b), seg.batch_range(b).len() as u64))
                        .collect(),
                })?,
                None => vec![true; seg.num_batches()],
            };
            let part = parts.len();
            let before = units.len();
            for (batch, keep) in keep_batches.into_iter().enumerate() {
                let live = mask.live[batch];
                if live > 0 && keep {
                    units.push(Unit {
                        part,
                        batch,
                        live,
                        passes: false,
                    });
                }
            }
            if units.len() > before {
                parts.push(SegmentPart {
                    segment: s.clone(),
                    mask,
                });
            }
        }
        // Limit pushdown: with no filter to apply above the scan, the fresh rows and the
        // first batches in key order that hold `limit` rows are all that is needed.
        if let (Some(n), true) = (limit, filters.is_empty()) {
            let mut have: usize = fresh.iter().map(|b| b.num_rows()).sum();
            let keep = units
                .iter()
                .take_while(|u| {
                    let more = have < n;
                    have += u.live;
                    more
                })
                .count();
            units.truncate(keep);
            let used = units.last().map_or(0, |u| u.part + 1);
            parts.truncate(used);
        }
        let mut scan = LightningScan::new(
            def.name.clone(),
            schema,
            projection.cloned(),
            parts,
            units,
            state.config().target_partitions(),
            fresh,
            pruning,
            view.watermark,
            snap,
            key_ordering,
        );
        scan.source = self.source.clone();
        Ok(DataSourceExec::from_data_source(scan))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let replace = match insert_op {
            InsertOp::Append => false,
            InsertOp::Replace => true,
            InsertOp::Overwrite => {
                return Err(datafusion::error::DataFusionError::NotImplemented(
                    "INSERT OVERWRITE is not supported; use DELETE then INSERT".into(),
                ));
            }
        };
        let sink = LightningSink::new(self.engine.clone(), self.def.clone(), &self.schema, replace);
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    /// `TRUNCATE`: every row deleted in one transaction (a `DELETE` without a
    /// condition).
    async fn truncate(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        self.delete_from(state, Vec::new()).await
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Keys in their stored types: the row key encoding reads those.
        let keys: Vec<Expr> = self
            .def
            .key_cols
            .iter()
            .map(|&k| {
                let f = self.def.schema.field(k);
                cast(col(f.name()), f.data_type().clone()).alias(f.name())
            })
            .collect();
        let txn = self.begin_dml()?;
        let plan = self.physical(state, filters, keys).await?;
        let (engine, def) = (self.engine.clone(), self.def.clone());
        Ok(Arc::new(DmlExec::new(
            "delete",
            &self.def.name,
            Arc::new(move |ctx| {
                let (engine, def, plan) = (engine.clone(), def.clone(), plan.clone());
                let txn = txn.lock().take();
                Box::pin(async move {
                    let mut txn = txn.ok_or_else(executed_twice)?;
                    let batches = collect(plan, ctx).await?;
                    let mut k = Vec::new();
                    let mut n = 0;
                    for b in &batches {
                        let cols: Vec<&dyn Array> =
                            b.columns().iter().map(|c| c.as_ref()).collect();
                        for i in 0..b.num_rows() {
                            def.row_key(&cols, i, &mut k);
                            txn.delete(&k).map_err(storage)?;
                            n += 1;
                        }
                    }
                    let _gate = def.gate.enter().map_err(storage)?;
                    txn.commit(&engine).map_err(storage)?;
                    Ok(n)
                })
            }),
        )))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let def = self.def.clone();
        let mut exprs = Vec::new();
        for f in def.schema.fields() {
            let e = match assignments.iter().find(|(c, _)| c == f.name()) {
                Some((_, e)) => cast(e.clone(), f.data_type().clone()),
                None => col(f.name()),
            };
            exprs.push(e.alias(f.name()));
        }
        for (j, &k) in def.key_cols.iter().enumerate() {
            let f = def.schema.field(k);
            exprs.push(cast(col(f.name()), f.data_type().clone()).alias(format!("__old_key_{j}")));
        }
        let txn = self.begin_dml()?;
        let plan = self.physical(state, filters, exprs).await?;
        let engine = self.engine.clone();
        Ok(Arc::new(DmlExec::new(
            "update",
            &self.def.name,
            Arc::new(move |ctx| {
                let (engine, def, plan) = (engine.clone(), def.clone(), plan.clone());
                let txn = txn.lock().take();
                Box::pin(async move {
                    let mut txn = txn.ok_or_else(executed_twice)?;
                    let batches = collect(plan, ctx).await?;
                    let width = def.schema.fields().len();
                    let (mut old, mut new, mut v) = (Vec::new(), Vec::new(), Vec::new());
                    let mut n = 0;
                    let value_idx = def.value_cols();
                    for b in &batches {
                        let rows = conform(&def, &b.project(&(0..width).collect::<Vec<_>>())?)?;
                        let cols = def
                            .align(&rows, false)
                            .map_err(|e| violation(e.to_string()))?;
                        let key_cols: Vec<&dyn Array> =
                            def.key_cols.iter().map(|&i| cols[i].as_ref()).collect();
                        let val_cols: Vec<&dyn Array> =
                            value_idx.iter().map(|&i| cols[i].as_ref()).collect();
                        let old_cols: Vec<&dyn Array> = (width..b.num_columns())
                            .map(|i| b.column(i).as_ref())
                            .collect();
                        for i in 0..b.num_rows() {
                            def.row_key(&old_cols, i, &mut old);
                            def.row_key(&key_cols, i, &mut new);
                            if old != new {
                                if txn.get(&engine, &new).map_err(storage)?.is_some() {
                                    return Err(violation(format!(
                                        "UPDATE would create a duplicate primary key in {}",
                                        def.name
                                    )));
                                }
                                txn.delete(&old).map_err(storage)?;
                            }
                            def.row_value(&val_cols, i, &mut v);
                            txn.put(&new, &v).map_err(storage)?;
                            n += 1;
                        }
                    }
                    let _gate = def.gate.enter().map_err(storage)?;
                    txn.commit(&engine).map_err(storage)?;
                    Ok(n)
                })
            }),
        )))
    }
}
