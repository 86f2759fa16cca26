//! DML plans: INSERT, UPDATE and DELETE, each applied in one row-store transaction when
//! the plan runs.

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::future::BoxFuture;
use lightning_columnar::TableDef;
use lightning_rowstore::{CommitCheck, Engine, Ingest, WriteBatch};
use std::sync::Arc;

/// A statement broke a table constraint (duplicate or NULL primary key).
#[derive(Debug)]
pub struct ConstraintViolation(pub String);

impl std::fmt::Display for ConstraintViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "constraint violation: {}", self.0)
    }
}

impl std::error::Error for ConstraintViolation {}

pub(crate) fn violation(msg: String) -> DataFusionError {
    DataFusionError::External(Box::new(ConstraintViolation(msg)))
}

pub(crate) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

type Work = Arc<dyn Fn(Arc<TaskContext>) -> BoxFuture<'static, Result<u64>> + Send + Sync>;

/// Runs one DML statement when executed; yields one row: `count` of affected rows.
pub(crate) struct DmlExec {
    what: &'static str,
    table: String,
    work: Work,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl std::fmt::Debug for DmlExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DmlExec({} {})", self.what, self.table)
    }
}

impl DmlExec {
    pub(crate) fn new(what: &'static str, table: &str, work: Work) -> Self {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let cache = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DmlExec {
            what,
            table: table.to_string(),
            work,
            schema,
            cache: Arc::new(cache),
        }
    }
}

impl DisplayAs for DmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "LightningDmlExec: {} table={}", self.what, self.table)
    }
}

impl ExecutionPlan for DmlExec {
    fn name(&self) -> &'static str {
        "LightningDmlExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }
    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let fut = (self.work)(context);
        let schema = self.schema.clone();
        let s2 = schema.clone();
        let stream = futures::stream::once(async move {
            let n = fut.await?;
            Ok(RecordBatch::try_new(
                s2,
                vec![Arc::new(UInt64Array::from(vec![n]))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Write rows (table schema) in one transaction. Without `replace`, an existing key or a
/// key repeated in the statement is a constraint violation and nothing is written.
/// See [`RowWriter`].
pub fn write_rows(
    engine: &Engine,
    def: &TableDef,
    batches: &[RecordBatch],
    replace: bool,
) -> Result<u64> {
    let mut w = RowWriter::new(engine, def, replace)?;
    for b in batches {
        w.add(b)?;
    }
    w.finish()
}

/// Statement size past which an INSERT stops collecting one write batch and stages
/// its rows as sorted runs of this size (see [`RowWriter`]), unless the session says
/// otherwise ([`InsertOptions`]).
pub const SPILL_BYTES: usize = 64 << 20;

/// How SQL INSERTs write, as a DataFusion session config extension.
#[derive(Debug, Clone)]
pub struct InsertOptions {
    /// [`SPILL_BYTES`] for this session.
    pub run_bytes: usize,
}

/// The rows of one INSERT, written as one atomic statement whatever their number.
///
/// Rows are encoded into one write batch; a statement that stays under
/// [`SPILL_BYTES`] commits it with the write-write check of a transaction begun
/// before the statement read anything (a keyless table's batch is written plainly:
/// its new row ids cannot collide). A larger statement streams: every
/// [`SPILL_BYTES`] of rows are sorted by key and staged as one run of an
/// [`Ingest`] (a table file, outside the memtable and WAL), and the runs are published
/// by one commit at the end — all rows or none, also across a crash — so memory holds
/// one run, not the statement. Without `replace` the statement's own keys must be
/// distinct (within a run when it is sorted, across runs by a merge of the ones whose
/// key ranges overlap) and absent from the table: each sorted run walks the table's
/// rows between its smallest and largest key alongside its keys, falling back to point
/// reads once that walk passes more rows than a few per key, so an import into an
/// empty or new key range costs one pass, not a lookup per row; a key another commit
/// writes meanwhile is a conflict at the commit.
pub struct RowWriter<'a> {
    engine: &'a Engine,
    def: &'a TableDef,
    snap: lightning_rowstore::TxnSnapshot,
    replace: bool,
    wb: WriteBatch,
    ingest: Option<Ingest<'a>>,
    rows: u64,
    k: Vec<u8>,
    v: Vec<u8>,
    spill_bytes: usize,
}

impl<'a> RowWriter<'a> {
    pub fn new(engine: &'a Engine, def: &'a TableDef, replace: bool) -> Result<Self> {
        Ok(RowWriter {
            engine,
            def,
            snap: engine.begin_txn().map_err(storage)?,
            replace,
            wb: WriteBatch::new(),
            ingest: None,
            rows: 0,
            k: Vec::new(),
            v: Vec::new(),
            spill_bytes: SPILL_BYTES,
        })
    }

    /// Stage runs of about `bytes` instead of [`SPILL_BYTES`].
    pub fn with_spill_bytes(mut self, bytes: usize) -> Self {
        self.spill_bytes = bytes.max(1);
        self
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Add a batch of rows (in the table's columns, or the user's for a keyless table).
    pub fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let def = self.def;
        // A keyless table's rows get new row ids (so never a duplicate).
        let b = match def.keyless {
            true => def
                .with_row_ids(self.engine, &conform_to(def, b, &def.user_schema())?)
                .map_err(storage)?,
            false => conform(def, b)?,
        };
        let cols = def.align(&b, false).map_err(|e| match e {
            lightning_columnar::Error::Schema(m) if m.contains("NULL") => violation(m),
            e => storage(e),
        })?;
        let value_idx = def.value_cols();
        let key_cols: Vec<&dyn Array> = def.key_cols.iter().map(|&i| cols[i].as_ref()).collect();
        let val_cols: Vec<&dyn Array> = value_idx.iter().map(|&i| cols[i].as_ref()).collect();
        for i in 0..b.num_rows() {
            def.row_key(&key_cols, i, &mut self.k);
            def.row_value(&val_cols, i, &mut self.v);
            self.wb.put(&self.k, &self.v).map_err(storage)?;
            self.rows += 1;
            if self.wb.approximate_bytes() >= self.spill_bytes {
                self.spill()?;
            }
        }
        Ok(())
    }

    fn check(&self) -> bool {
        !self.replace && !self.def.keyless
    }

    fn duplicate(&self) -> DataFusionError {
        violation(format!(
            "duplicate primary key in the rows inserted into {}",
            self.def.name
        ))
    }

    fn exists(&self) -> DataFusionError {
        violation(format!(
            "a row with this primary key already exists in {} (use INSERT OR REPLACE to upsert)",
            self.def.name
        ))
    }

    /// Stage the batch collected so far as one sorted run.
    fn spill(&mut self) -> Result<()> {
        if self.wb.is_empty() {
            return Ok(());
        }
        {
            let Some(run) = sorted_run(&self.wb, !self.check()) else {
                return Err(self.duplicate());
            };
            if self.check() {
                let keys: Vec<&[u8]> = run.iter().map(|e| e.0).collect();
                if any_exists(self.engine, self.snap.snapshot(), &keys).map_err(storage)? {
                    return Err(self.exists());
                }
            }
            let ing = match &mut self.ingest {
                Some(i) => i,
                None => self.ingest.insert(self.engine.ingest().map_err(storage)?),
            };
            ing.add_run(run.iter().map(|&(k, v)| (k, Some(v))))
                .map_err(storage)?;
        }
        self.wb = WriteBatch::new();
        Ok(())
    }

    /// Commit every row added: one commit, all or nothing. Returns the row count.
    pub fn finish(mut self) -> Result<u64> {
        let conflict_after = (!self.def.keyless).then(|| self.snap.ts());
        if self.ingest.is_some() {
            self.spill()?;
            let ing = self.ingest.take().expect("checked above");
            if self.check() && ing.duplicate_key().map_err(storage)?.is_some() {
                return Err(self.duplicate());
            }
            ing.commit(conflict_after).map_err(storage)?;
            return Ok(self.rows);
        }
        if self.check() {
            // The batch's own keys, sorted: no copy per row.
            let mut keys: Vec<&[u8]> = self.wb.ops().iter().map(|op| op.key()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(self.duplicate());
            }
            if any_exists(self.engine, self.snap.snapshot(), &keys).map_err(storage)? {
                return Err(self.exists());
            }
        }
        let wb = std::mem::take(&mut self.wb);
        match conflict_after {
            None => {
                self.engine.write(wb).map_err(storage)?;
            }
            Some(_) if wb.is_empty() => {}
            Some(start_ts) => {
                let check = CommitCheck {
                    start_ts,
                    read_keys: Vec::new(),
                    read_ranges: Vec::new(),
                };
                self.engine.commit_checked(wb, check).map_err(storage)?;
            }
        }
        Ok(self.rows)
    }
}

/// `wb`'s entries sorted by key. A repeated key: with `last_wins` its last write
/// stays, without it there is no run (`None`).
fn sorted_run(wb: &WriteBatch, last_wins: bool) -> Option<Vec<(&[u8], &[u8])>> {
    let mut run: Vec<(&[u8], &[u8])> = wb
        .ops()
        .iter()
        .map(|op| (op.key(), op.value().unwrap_or_default()))
        .collect();
    run.sort_by(|a, b| a.0.cmp(b.0)); // stable: equal keys keep their order
    if run.windows(2).any(|w| w[0].0 == w[1].0) {
        if !last_wins {
            return None;
        }
        let mut out: Vec<(&[u8], &[u8])> = Vec::with_capacity(run.len());
        for e in run {
            match out.last_mut() {
                Some(l) if l.0 == e.0 => *l = e,
                _ => out.push(e),
            }
        }
        run = out;
    }
    Some(run)
}

/// Whether any of `keys` (sorted, distinct, non-empty) exists at `snap`.
fn any_exists(
    engine: &Engine,
    snap: &lightning_rowstore::Snapshot,
    keys: &[&[u8]],
) -> lightning_rowstore::Result<bool> {
    let (Some(&first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(false);
    };
    let mut end = last.to_vec();
    end.push(0); // just past the last key
    let budget = keys.len() * 4 + 1024;
    let mut i = 0;
    for (walked, r) in engine
        .iter_at(snap, Some(first), Some(&end), false)?
        .enumerate()
    {
        let (have, _) = r?;
        while i < keys.len() && keys[i] < have.as_slice() {
            i += 1;
        }
        match keys.get(i) {
            None => return Ok(false),
            Some(&k) if k == have.as_slice() => return Ok(true),
            Some(_) => {}
        }
        if walked > budget {
            // Existing rows are dense here: look the remaining keys up one by one
            // (every key before `keys[i]` was passed by the walk, so it is absent).
            for &k in &keys[i..] {
                if engine.get_at(k, snap)?.is_some() {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
    }
    Ok(false)
}

/// Give `b` the table's field names and types (DataFusion may hand over nullable fields
/// or different names for the same columns in order).
pub(crate) fn conform(def: &TableDef, b: &RecordBatch) -> Result<RecordBatch> {
    conform_to(def, b, &def.schema)
}

/// [`conform`] to `schema` (the table's stored columns, or those users see).
fn conform_to(def: &TableDef, b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if b.num_columns() != schema.fields().len() {
        return Err(DataFusionError::Plan(format!(
            "table {} has {} columns, got {}",
            def.name,
            schema.fields().len(),
            b.num_columns()
        )));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| (**f).clone().with_nullable(true))
        .collect();
    crate::provider::cast_batch(b, &Arc::new(Schema::new(fields)))
}
