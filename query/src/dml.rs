//! DML plans: INSERT, UPDATE and DELETE, each applied in one row-store transaction when
//! the plan runs.

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::sink::DataSink;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;
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

/// Where DataFusion's `DataSinkExec` writes an `INSERT` into a Lightning table: the
/// input plan stays a child of the sink's plan (visible in `EXPLAIN`), and the rows
/// stream through a [`RowWriter`] (one atomic statement at any size).
pub(crate) struct LightningSink {
    engine: Arc<Engine>,
    def: Arc<TableDef>,
    /// The columns SQL writes, every one nullable: a NULL key is the writer's
    /// constraint violation, not the sink's generic not-null error.
    schema: SchemaRef,
    replace: bool,
}

impl LightningSink {
    pub(crate) fn new(
        engine: Arc<Engine>,
        def: Arc<TableDef>,
        schema: &SchemaRef,
        replace: bool,
    ) -> Self {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| (**f).clone().with_nullable(true))
            .collect();
        LightningSink {
            engine,
            def,
            schema: Arc::new(Schema::new(fields)),
            replace,
        }
    }
}

impl std::fmt::Debug for LightningSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LightningSink({})", self.def.name)
    }
}

impl DisplayAs for LightningSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let how = if self.replace {
            "insert or replace"
        } else {
            "insert"
        };
        write!(f, "LightningSink: {how} table={}", self.def.name)
    }
}

#[async_trait::async_trait]
impl DataSink for LightningSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let run_bytes = context
            .session_config()
            .get_extension::<InsertOptions>()
            .map_or(SPILL_BYTES, |o| o.run_bytes);
        // The writer's snapshot is taken before the input is read; memory holds one
        // staged run and a few input batches, not the statement.
        let mut w =
            RowWriter::new(&self.engine, &self.def, self.replace)?.with_spill_bytes(run_bytes);
        // The input runs as its own task, a couple of batches ahead: decoding it (a
        // Parquet file of one row group is one partition, read on one thread) overlaps
        // with encoding its rows here instead of taking turns with it. Dropping the
        // stream (an error here, a cancelled statement) aborts the task.
        let mut ahead = RecordBatchReceiverStreamBuilder::new(data.schema(), 2);
        let tx = ahead.tx();
        ahead.spawn(async move {
            while let Some(b) = data.next().await {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut input = ahead.build();
        while let Some(b) = input.next().await {
            w.add(&b?)?;
        }
        w.finish()
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
    /// The rows collected since the last run: encoded keys and values back to back,
    /// and where each row's are. Kept (cleared, not freed) from run to run.
    buf: Vec<u8>,
    at: Vec<Row>,
    /// The rows of a run in key order (reused).
    order: Vec<u32>,
    /// The rows collected since the last run as lanes of rows in key order (see
    /// `place`); `None` once they are not.
    lanes: Option<Vec<Vec<u32>>>,
    ingest: Option<Ingest<'a>>,
    rows: u64,
    k: Vec<u8>,
    v: Vec<u8>,
    spill_bytes: usize,
    /// Batches must already have the table's column types (the table API's rule)
    /// instead of being cast to them (SQL's).
    strict: bool,
}

/// Where one collected row's encoded key and value are in [`RowWriter`]'s buffer.
#[derive(Clone, Copy)]
struct Row {
    at: usize,
    key_len: u32,
    value_len: u32,
}

/// Bytes one row counts for besides its key and value (as a write batch counts it).
const ROW_OVERHEAD: usize = 12;

/// A statement's rows (encoded) from which they are ingested as table files even when
/// they fit one write batch.
const INGEST_MIN_BYTES: usize = 4 << 20;

/// Lanes of ordered batches a run may have before it is sorted instead.
const MAX_LANES: usize = 16;

impl<'a> RowWriter<'a> {
    pub fn new(engine: &'a Engine, def: &'a TableDef, replace: bool) -> Result<Self> {
        Ok(RowWriter {
            engine,
            def,
            snap: engine.begin_txn().map_err(storage)?,
            replace,
            buf: Vec::new(),
            at: Vec::new(),
            order: Vec::new(),
            lanes: Some(Vec::new()),
            ingest: None,
            rows: 0,
            k: Vec::new(),
            v: Vec::new(),
            spill_bytes: SPILL_BYTES,
            strict: false,
        })
    }

    /// Take batches only in the table's own column types (a mismatch is the column
    /// store's schema error naming the column), as the table API does.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
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
        let b = match (def.keyless, self.strict) {
            (true, false) => def
                .with_row_ids(self.engine, &conform_to(def, b, &def.user_schema())?)
                .map_err(storage)?,
            (true, true) => def.with_row_ids(self.engine, b).map_err(storage)?,
            (false, false) => conform(def, b)?,
            (false, true) => b.clone(),
        };
        let cols = def.align(&b, false).map_err(|e| match e {
            lightning_columnar::Error::Schema(m) if m.contains("NULL") => violation(m),
            e => storage(e),
        })?;
        let value_idx = def.value_cols();
        let key_cols: Vec<&dyn Array> = def.key_cols.iter().map(|&i| cols[i].as_ref()).collect();
        let val_cols: Vec<&dyn Array> = value_idx.iter().map(|&i| cols[i].as_ref()).collect();
        let first = self.at.len();
        let mut increasing = true;
        for i in 0..b.num_rows() {
            def.row_key(&key_cols, i, &mut self.k);
            def.row_value(&val_cols, i, &mut self.v);
            if self.k.len() > lightning_rowstore::MAX_KEY_LEN
                || self.v.len() > lightning_rowstore::MAX_VALUE_LEN
            {
                // The same typed error a write batch gives.
                WriteBatch::new().put(&self.k, &self.v).map_err(storage)?;
            }
            if i > 0 && increasing {
                increasing = self.key(self.at.len() as u32 - 1) < self.k.as_slice();
            }
            self.at.push(Row {
                at: self.buf.len(),
                key_len: self.k.len() as u32,
                value_len: self.v.len() as u32,
            });
            self.buf.extend_from_slice(&self.k);
            self.buf.extend_from_slice(&self.v);
            self.rows += 1;
        }
        self.place(first as u32, self.at.len() as u32, increasing);
        // Whole batches per run: a run exceeds the size by at most one batch.
        if self.buf.len() + self.at.len() * ROW_OVERHEAD >= self.spill_bytes {
            self.spill()?;
        }
        Ok(())
    }

    fn key(&self, i: u32) -> &[u8] {
        let r = self.at[i as usize];
        &self.buf[r.at..r.at + r.key_len as usize]
    }

    /// Put the rows `[first, end)` of one batch in a lane: a sequence of batches each
    /// in key order and starting after the lane's last key. Input in key order is one
    /// lane; a parallel scan's partitions interleaving their batches are one lane each.
    /// Lanes are staged as runs without sorting and, not overlapping, without a merge
    /// to find duplicates. Rows not in key order, or too many lanes, and the run is
    /// sorted instead.
    fn place(&mut self, first: u32, end: u32, increasing: bool) {
        if first == end || self.lanes.is_none() {
            return;
        }
        if !increasing {
            self.lanes = None;
            return;
        }
        let lanes = self.lanes.as_ref().expect("checked");
        // The lane whose last key is the greatest below this batch's first key.
        let mut best: Option<usize> = None;
        for (n, l) in lanes.iter().enumerate() {
            let last = *l.last().expect("lanes are never empty");
            if self.key(last) < self.key(first)
                && best
                    .is_none_or(|b| self.key(*lanes[b].last().expect("non-empty")) < self.key(last))
            {
                best = Some(n);
            }
        }
        let lanes = self.lanes.as_mut().expect("checked");
        match best {
            Some(n) => lanes[n].extend(first..end),
            None if lanes.len() < MAX_LANES => lanes.push((first..end).collect()),
            None => self.lanes = None,
        }
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

    /// Put the collected rows in key order in `order`, keeping the last of equal keys
    /// with `replace`; without it a repeated key is a violation.
    fn sort(&mut self) -> Result<()> {
        let (buf, at) = (&self.buf, &self.at);
        let key = |i: u32| {
            let r = at[i as usize];
            &buf[r.at..r.at + r.key_len as usize]
        };
        self.order.clear();
        self.order.extend(0..at.len() as u32);
        // Imports often arrive in key order (and a keyless table's new ids always do).
        if self.order.windows(2).all(|w| key(w[0]) < key(w[1])) {
            return Ok(());
        }
        self.order.sort_by(|&a, &b| key(a).cmp(key(b))); // stable: later stays later
        if self.order.windows(2).any(|w| key(w[0]) == key(w[1])) {
            if self.check() {
                return Err(self.duplicate());
            }
            let mut out = 0;
            for j in 0..self.order.len() {
                let last_of_key = self
                    .order
                    .get(j + 1)
                    .is_none_or(|&n| key(n) != key(self.order[j]));
                if last_of_key {
                    self.order[out] = self.order[j];
                    out += 1;
                }
            }
            self.order.truncate(out);
        }
        Ok(())
    }

    fn entry(&self, i: u32) -> (&[u8], &[u8]) {
        let r = self.at[i as usize];
        let k = r.at + r.key_len as usize;
        (&self.buf[r.at..k], &self.buf[k..k + r.value_len as usize])
    }

    /// Refuse the statement if a key of rows `order` (in key order) exists at its
    /// snapshot.
    fn check_absent(&self, order: &[u32]) -> Result<()> {
        let keys: Vec<&[u8]> = order.iter().map(|&i| self.key(i)).collect();
        match any_exists(self.engine, self.snap.snapshot(), &keys).map_err(storage)? {
            true => Err(self.exists()),
            false => Ok(()),
        }
    }

    /// Stage the rows collected so far: each lane as a run if the lanes' key ranges
    /// are disjoint (so no key is in two and run order cannot matter), else all of them
    /// as one sorted run.
    fn spill(&mut self) -> Result<()> {
        if self.at.is_empty() {
            return Ok(());
        }
        let mut lanes = self.lanes.take().unwrap_or_default();
        let disjoint = {
            let mut ranges: Vec<(&[u8], &[u8])> = lanes
                .iter()
                .map(|l| (self.key(l[0]), self.key(*l.last().expect("non-empty"))))
                .collect();
            ranges.sort();
            !lanes.is_empty() && ranges.windows(2).all(|w| w[0].1 < w[1].0)
        };
        if !disjoint {
            self.sort()?;
            lanes = vec![std::mem::take(&mut self.order)];
        }
        for lane in &lanes {
            self.stage(lane)?;
        }
        if !disjoint {
            self.order = lanes.pop().unwrap_or_default();
        }
        self.buf.clear();
        self.at.clear();
        self.lanes = Some(Vec::new());
        Ok(())
    }

    /// Stage rows `order` (in key order) as one run.
    fn stage(&mut self, order: &[u32]) -> Result<()> {
        if self.check() {
            self.check_absent(order)?;
        }
        let mut ing = match self.ingest.take() {
            Some(i) => i,
            None => self.engine.ingest().map_err(storage)?,
        };
        let r = ing.add_run(order.iter().map(|&i| {
            let (k, v) = self.entry(i);
            (k, Some(v))
        }));
        self.ingest = Some(ing);
        r.map_err(storage)
    }

    /// Commit every row added: one commit, all or nothing. Returns the row count.
    pub fn finish(mut self) -> Result<u64> {
        let conflict_after = (!self.def.keyless).then(|| self.snap.ts());
        // Several MiB of rows go to a table file too: one file write instead of a log
        // write, memtable inserts and, later, a flush of the same bytes.
        if self.ingest.is_none() && self.buf.len() >= INGEST_MIN_BYTES {
            self.spill()?;
        }
        if self.ingest.is_some() {
            self.spill()?;
            let mut ing = self.ingest.take().expect("checked above");
            if self.check() && ing.duplicate_key().map_err(storage)?.is_some() {
                return Err(self.duplicate());
            }
            let _gate = self.def.gate.enter().map_err(storage)?;
            ing.commit(conflict_after).map_err(storage)?;
            return Ok(self.rows);
        }
        if self.check() {
            self.sort()?;
            self.check_absent(&self.order)?;
        }
        // In the order given: with OR REPLACE the last write of a key wins.
        let mut wb = WriteBatch::new();
        for i in 0..self.at.len() as u32 {
            let (k, v) = self.entry(i);
            wb.put(k, v).map_err(storage)?;
        }
        let _gate = self.def.gate.enter().map_err(storage)?;
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
