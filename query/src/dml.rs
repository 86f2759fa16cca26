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
use lightning_rowstore::{CommitCheck, Engine, WriteBatch};
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
///
/// The rows go into one write batch committed with the transaction's write-write
/// check (a key another commit wrote since the statement's snapshot is a conflict); a
/// keyless table's rows take new row ids, so there is nothing to check. Existing keys
/// are found by walking the table's rows between the statement's smallest and largest
/// key alongside its sorted keys, and by point reads once that walk passes more rows
/// than a few per key: an import into an empty or new key range costs one pass, not a
/// lookup per row.
pub fn write_rows(
    engine: &Engine,
    def: &TableDef,
    batches: &[RecordBatch],
    replace: bool,
) -> Result<u64> {
    let snap = engine.begin_txn().map_err(storage)?;
    let check = !replace && !def.keyless;
    let mut wb = WriteBatch::new();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    let value_idx = def.value_cols();
    for b in batches {
        // A keyless table's rows get new row ids (so never a duplicate).
        let b = match def.keyless {
            true => def
                .with_row_ids(engine, &conform_to(def, b, &def.user_schema())?)
                .map_err(storage)?,
            false => conform(def, b)?,
        };
        let cols = def.align(&b, false).map_err(|e| match e {
            lightning_columnar::Error::Schema(m) if m.contains("NULL") => violation(m),
            e => storage(e),
        })?;
        let key_cols: Vec<&dyn Array> = def.key_cols.iter().map(|&i| cols[i].as_ref()).collect();
        let val_cols: Vec<&dyn Array> = value_idx.iter().map(|&i| cols[i].as_ref()).collect();
        for i in 0..b.num_rows() {
            def.row_key(&key_cols, i, &mut k);
            def.row_value(&val_cols, i, &mut v);
            wb.put(&k, &v).map_err(storage)?;
            n += 1;
        }
    }
    if check {
        // The batch's own keys, sorted: no copy per row.
        let mut keys: Vec<&[u8]> = wb.ops().iter().map(|op| op.key()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(violation(format!(
                "duplicate primary key in the rows inserted into {}",
                def.name
            )));
        }
        if any_exists(engine, snap.snapshot(), &keys).map_err(storage)? {
            return Err(violation(format!(
                "a row with this primary key already exists in {} (use INSERT OR REPLACE to upsert)",
                def.name
            )));
        }
    }
    if def.keyless {
        engine.write(wb).map_err(storage)?;
    } else if !wb.is_empty() {
        let check = CommitCheck {
            start_ts: snap.ts(),
            read_keys: Vec::new(),
            read_ranges: Vec::new(),
        };
        engine.commit_checked(wb, check).map_err(storage)?;
    }
    Ok(n)
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
