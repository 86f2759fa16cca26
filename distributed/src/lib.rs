//! # lightning-distributed
//!
//! Distributed SQL over Lightning DB tables on an Apache DataFusion Ballista cluster.
//!
//! The cluster reads a **published, read-only copy** of a database: a checkpoint
//! ([`lightning_db::Database::checkpoint`]) on storage every process can reach (a local
//! directory for a loopback cluster, a shared file system for several machines). A
//! checkpoint never changes, so every process that opens it sees the same segments and
//! the same fresh rows at the same snapshot: the scheduler can plan a scan once and each
//! executor rebuilds exactly the part it was given. The live directory would not do: its
//! segments and row store change under a running query, and an executor opening it later
//! than the scheduler planned would see another snapshot (the scan task checks for that
//! and fails rather than answer from a mix).
//!
//! - [`LightningLogicalCodec`] carries a table from the client to the scheduler as
//!   (database path, table name); the scheduler opens the checkpoint and plans the scan.
//! - [`LightningPhysicalCodec`] carries each scan as a task: for every output partition
//!   the segment batches it reads ([`lightning_query::ScanTask`]), the pushed filters as
//!   DataFusion expressions, and the checkpoint path. An executor opens the checkpoint
//!   (once per process), rebuilds the scan and reads only its partitions' batches; the
//!   fresh rows come from its own copy of the row store at the task's snapshot.
//! - Every other node goes through Ballista's own codecs.
//!
//! Executors log each scan partition they run (`scan task: …` on stderr), which is
//! how the scripts show that the work was spread.

use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use lightning_db::{Database, LightningDbConfig};
use lightning_query::{LightningScan, LightningTableProvider, ScanTask};
use parking_lot::Mutex;
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod exec;
mod table;
pub use exec::ClusterScanExec;
pub use table::ClusterTable;

const TABLE_MAGIC: &[u8] = b"LDBT1";
const SCAN_MAGIC: &[u8] = b"LDBS1";

/// The published databases this process has open, by path (opened read-only, once).
fn databases() -> &'static Mutex<HashMap<PathBuf, Arc<Database>>> {
    static DBS: OnceLock<Mutex<HashMap<PathBuf, Arc<Database>>>> = OnceLock::new();
    DBS.get_or_init(Default::default)
}

/// Open (or reuse) the published database at `path`, read-only.
pub fn open_published(path: &Path) -> Result<Arc<Database>> {
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut dbs = databases().lock();
    if let Some(db) = dbs.get(&key) {
        return Ok(db.clone());
    }
    let cfg = LightningDbConfig {
        columnar_background: false,
        ..Default::default()
    };
    let db = Database::open_read_only(&key, cfg).map_err(|e| {
        DataFusionError::Execution(format!(
            "cannot open the published database {}: {e}",
            key.display()
        ))
    })?;
    let db = Arc::new(db);
    dbs.insert(key, db.clone());
    Ok(db)
}

/// The tables looked up so far, by (published path, name): a published database never
/// changes, so every scan task decoded later reuses the provider.
type TableCache = Mutex<HashMap<(PathBuf, String), LightningTableProvider>>;

fn tables() -> &'static TableCache {
    static TABLES: OnceLock<TableCache> = OnceLock::new();
    TABLES.get_or_init(Default::default)
}

/// Table `name` of the published database at `path`, its scans labelled with the path.
pub fn published_table(path: &Path, name: &str) -> Result<LightningTableProvider> {
    let key = (path.to_path_buf(), name.to_string());
    if let Some(p) = tables().lock().get(&key) {
        return Ok(p.clone());
    }
    // Opening the database's SQL session blocks on its own runtime, which a thread of
    // another runtime (the scheduler's, the executor's) must not do.
    let p = std::thread::scope(|s| {
        s.spawn(|| table_now(path, name))
            .join()
            .unwrap_or_else(|_| Err(DataFusionError::Internal("table lookup panicked".into())))
    })?;
    tables().lock().insert(key, p.clone());
    Ok(p)
}

fn table_now(path: &Path, name: &str) -> Result<LightningTableProvider> {
    let db = open_published(path)?;
    let ctx = db
        .session()
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let p = futures::executor::block_on(ctx.table_provider(name))?;
    let p = p
        .downcast_ref::<LightningTableProvider>()
        .ok_or_else(|| DataFusionError::Plan(format!("{name} is not a Lightning table")))?;
    Ok(p.clone().with_source(path.to_string_lossy().to_string()))
}

fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads length-prefixed frames.
struct Frames<'a>(&'a [u8]);

impl<'a> Frames<'a> {
    fn next(&mut self) -> Result<&'a [u8]> {
        let bad = || DataFusionError::Internal("truncated Lightning plan node".into());
        if self.0.len() < 4 {
            return Err(bad());
        }
        let n = u32::from_le_bytes(self.0[..4].try_into().expect("4 bytes")) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err(bad());
        }
        let (a, b) = rest.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.next()?)
            .map_err(|_| DataFusionError::Internal("bad UTF-8 in a Lightning plan node".into()))
    }
}

/// The logical codec: Lightning tables by (database path, name), the path being the
/// one their provider was published from ([`published_table`]); everything else
/// through Ballista's codec.
#[derive(Debug)]
pub struct LightningLogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl LightningLogicalCodec {
    pub fn new() -> Self {
        LightningLogicalCodec {
            inner: Arc::new(ballista_core::serde::BallistaLogicalExtensionCodec::default()),
        }
    }
}

impl Default for LightningLogicalCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl LogicalExtensionCodec for LightningLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: arrow::datatypes::SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(rest) = buf.strip_prefix(TABLE_MAGIC) else {
            return self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        let mut f = Frames(rest);
        let (db, table) = (f.str()?, f.str()?);
        Ok(Arc::new(ClusterTable::new(published_table(
            Path::new(db),
            table,
        )?)))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let p = match node.downcast_ref::<ClusterTable>() {
            Some(t) => &t.inner,
            None => match node.downcast_ref::<LightningTableProvider>() {
                Some(p) => p,
                None => return self.inner.try_encode_table_provider(table_ref, node, buf),
            },
        };
        let Some(db) = p.source() else {
            return Err(DataFusionError::Plan(format!(
                "table {table_ref} has no published database to read on the cluster (register it with lightning_distributed::published_table)"
            )));
        };
        buf.extend_from_slice(TABLE_MAGIC);
        frame(buf, db.as_bytes());
        frame(buf, table_ref.table().as_bytes());
        Ok(())
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn datafusion::datasource::file_format::FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn datafusion::datasource::file_format::FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}

/// The physical codec: Lightning scans as scan tasks; everything else through
/// Ballista's codec.
#[derive(Debug)]
pub struct LightningPhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
    /// Names this process in the scan-task log lines (executors).
    label: Option<String>,
}

impl LightningPhysicalCodec {
    pub fn new() -> Self {
        LightningPhysicalCodec {
            inner: Arc::new(ballista_core::serde::BallistaPhysicalExtensionCodec::default()),
            label: None,
        }
    }

    /// An executor's codec: decoded scans log each partition they run as `label`.
    pub fn for_executor(label: impl Into<String>) -> Self {
        LightningPhysicalCodec {
            label: Some(label.into()),
            ..Self::new()
        }
    }
}

impl Default for LightningPhysicalCodec {
    fn default() -> Self {
        Self::new()
    }
}

fn lightning_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&LightningScan> {
    node.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<LightningScan>()
}

impl PhysicalExtensionCodec for LightningPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(rest) = buf.strip_prefix(SCAN_MAGIC) else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        let [markers] = inputs else {
            return Err(DataFusionError::Internal(
                "a Lightning cluster scan has one input".into(),
            ));
        };
        let mut f = Frames(rest);
        let db = f.str()?;
        let task = ScanTask::from_json(f.str()?)?;
        let provider = published_table(Path::new(db), &task.table)?;
        let state = SessionStateBuilder::new()
            .with_config(ctx.session_config().clone())
            .with_runtime_env(ctx.runtime_env())
            .build();
        let base = futures::executor::block_on(provider.scan(
            &state,
            task.projection.as_ref(),
            &[],
            None,
        ))?;
        let base = lightning_scan(&base).ok_or_else(|| {
            DataFusionError::Internal("a Lightning table planned another scan".into())
        })?;
        let schema = base.table_schema();
        // One filter per entry of `applied`.
        let mut filters = Vec::with_capacity(task.applied.len());
        for _ in 0..task.applied.len() {
            let node = datafusion_proto::protobuf::PhysicalExprNode::decode(f.next()?)
                .map_err(|e| DataFusionError::Internal(format!("bad filter: {e}")))?;
            filters.push(
                datafusion_proto::physical_plan::from_proto::parse_physical_expr(
                    &node, ctx, &schema, self,
                )?,
            );
        }
        let scan = LightningScan::from_task(base, &task, filters)?;
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(scan);
        Ok(Arc::new(ClusterScanExec::new(
            scan,
            markers.clone(),
            self.label.clone(),
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(cluster) = node.downcast_ref::<ClusterScanExec>() else {
            if lightning_scan(&node).is_some() {
                return Err(DataFusionError::Plan(
                    "a Lightning scan runs on the cluster only inside a ClusterScanExec".into(),
                ));
            }
            return self.inner.try_encode(node, buf, proto_converter);
        };
        let scan = lightning_scan(&cluster.scan)
            .ok_or_else(|| DataFusionError::Internal("ClusterScanExec without a scan".into()))?;
        let Some(db) = scan.source() else {
            return Err(DataFusionError::Plan(
                "a Lightning scan without a published database cannot run on the cluster".into(),
            ));
        };
        let (task, filters) = scan.task();
        buf.extend_from_slice(SCAN_MAGIC);
        frame(buf, db.as_bytes());
        frame(buf, task.to_json().as_bytes());
        for e in &filters {
            let node = datafusion_proto::physical_plan::to_proto::serialize_physical_expr(e, self)?;
            frame(buf, &node.encode_to_vec());
        }
        Ok(())
    }
}

/// Session settings for queries on the cluster: Ballista's, with our codecs. Each scan
/// partition runs as a task of its own, so the scan's partitions never share batches
/// (and `enable_file_stream_work_stealing` is off for DataFusion's own scans).
pub fn cluster_config(target_partitions: usize) -> SessionConfig {
    use ballista_core::extension::SessionConfigExt;
    SessionConfig::new_with_ballista()
        .with_target_partitions(target_partitions.max(1))
        .set_bool(
            "datafusion.execution.enable_file_stream_work_stealing",
            false,
        )
        .with_ballista_logical_extension_codec(Arc::new(LightningLogicalCodec::new()))
        .with_ballista_physical_extension_codec(Arc::new(LightningPhysicalCodec::new()))
}

/// A client session on the Ballista scheduler at `scheduler_url` (`df://host:port`)
/// with every table of the published database at `db` registered.
pub async fn cluster_context(
    scheduler_url: &str,
    db: &Path,
    target_partitions: usize,
) -> Result<SessionContext> {
    use ballista::prelude::SessionContextExt;
    let state = SessionStateBuilder::new()
        .with_config(cluster_config(target_partitions))
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(scheduler_url, state).await?;
    let database = open_published(db)?;
    let names = database
        .list_tables()
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    for name in names {
        ctx.register_table(
            name.as_str(),
            Arc::new(ClusterTable::new(published_table(db, &name)?)),
        )?;
    }
    Ok(ctx)
}

/// Publish a read-only copy of `db` into `dir` (which must not exist) for a cluster: a
/// checkpoint ([`Database::checkpoint`], consistent while writers keep running), opened
/// once to build every table's column segments (a checkpoint carries rows only), then
/// closed. Returns the rows written to segments.
pub fn publish(db: &Database, dir: &Path) -> lightning_db::Result<u64> {
    publish_with(db, dir, None)
}

/// [`publish`], the segments written in batches of `batch_rows` rows (the unit a scan
/// task reads; smaller batches spread a small table over more tasks).
pub fn publish_with(
    db: &Database,
    dir: &Path,
    batch_rows: Option<usize>,
) -> lightning_db::Result<u64> {
    db.checkpoint(dir)?;
    let mut cfg = LightningDbConfig {
        columnar_background: false,
        ..Default::default()
    };
    if let Some(n) = batch_rows {
        cfg.columnar_batch_rows = n;
    }
    let copy = Database::open(dir, cfg)?;
    let mut rows = 0;
    for t in copy.list_tables()? {
        match copy.compact_columnar(&t) {
            Ok(r) => rows += r.rows_written,
            // The raw `kv` table lives in the row store only (unless `columnar_kv`).
            Err(lightning_db::Error::InvalidArgument(_)) if t == "kv" => {}
            Err(e) => return Err(e),
        }
    }
    copy.compact()?;
    copy.close()?;
    Ok(rows)
}

/// Compare two query answers as multisets of rows: equal when every cell is equal,
/// floating-point cells within a relative 1e-9. `Err` says where they differ.
pub fn compare(
    a: &[arrow::array::RecordBatch],
    b: &[arrow::array::RecordBatch],
) -> std::result::Result<(), String> {
    let (ra, rb) = (rows_of(a)?, rows_of(b)?);
    if ra.len() != rb.len() {
        return Err(format!("{} rows against {}", ra.len(), rb.len()));
    }
    for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
        if x.len() != y.len() {
            return Err(format!("row {i}: {} columns against {}", x.len(), y.len()));
        }
        for (c, (p, q)) in x.iter().zip(y).enumerate() {
            let same = match (p, q) {
                (Cell::F(p), Cell::F(q)) => {
                    p == q || (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0)
                }
                (Cell::S(p), Cell::S(q)) => p == q,
                _ => false,
            };
            if !same {
                return Err(format!("row {i} column {c}: {p:?} against {q:?}"));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    F(f64),
    S(String),
}

/// Every row as cells, sorted (floats rounded for the sort key only).
fn rows_of(batches: &[arrow::array::RecordBatch]) -> std::result::Result<Vec<Vec<Cell>>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float32Type, Float64Type};
    let mut rows: Vec<(String, Vec<Cell>)> = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut cells = Vec::with_capacity(b.num_columns());
            let mut key = String::new();
            for c in b.columns() {
                let cell = match c.data_type() {
                    _ if c.is_null(r) => Cell::S("NULL".into()),
                    DataType::Float64 => Cell::F(c.as_primitive::<Float64Type>().value(r)),
                    DataType::Float32 => Cell::F(c.as_primitive::<Float32Type>().value(r) as f64),
                    _ => Cell::S(
                        arrow::util::display::array_value_to_string(c, r)
                            .map_err(|e| e.to_string())?,
                    ),
                };
                match &cell {
                    Cell::F(v) => key.push_str(&format!("{v:.6e}|")),
                    Cell::S(s) => {
                        key.push_str(s);
                        key.push('|');
                    }
                }
                cells.push(cell);
            }
            rows.push((key, cells));
        }
    }
    rows.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(rows.into_iter().map(|(_, c)| c).collect())
}
