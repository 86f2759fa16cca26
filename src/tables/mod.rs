//! Tables: Arrow-schema tables stored in the row store, continuously compacted into the
//! column store. Every table is an ordered key space `0x01 + table id + memcomparable
//! primary key`; definitions live in the catalog (`0x00 catalog/<name>`). The key-value
//! API's data is the built-in table `kv(key BINARY PRIMARY KEY, value BINARY)`.

use crate::config::LightningDbConfig;
use crate::db::Database;
use crate::error::{Error, Result};
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use lightning_columnar::codec::RowDecoder;
use lightning_columnar::table::{
    CATALOG_PREFIX, DROPPED_PREFIX, KV_TABLE_NAME, NEXT_TABLE_ID_KEY, ROWS_TAG, catalog_key,
    dropped_key, table_end, table_id_of, table_prefix,
};
use lightning_columnar::{ColumnStore, ColumnarOptions, RoundStats, SegmentCompression, TableDef};
use lightning_rowstore::{Engine, Snapshot, WriteBatch};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod alter;
mod api;
mod load;
pub(crate) use alter::Alteration;
pub(crate) use load::TableLoad;

pub(crate) struct Tables {
    pub(crate) engine: Arc<Engine>,
    pub(crate) store: Arc<ColumnStore>,
    pub(crate) defs: RwLock<BTreeMap<String, Arc<TableDef>>>,
    ddl: Mutex<()>,
    worker: Mutex<Option<JoinHandle<()>>>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    interval: Duration,
    rows_threshold: u64,
    bytes_threshold: u64,
    pub(crate) sql: Mutex<Option<Arc<crate::sql::SqlState>>>,
    /// Whether the `kv` table is in the column store (`columnar_kv`).
    columnar_kv: bool,
    /// The next table id (persisted under `NEXT_TABLE_ID_KEY`; ids are never reused).
    next_id: AtomicU32,
    /// Dropped tables may still have rows to reclaim.
    reclaim_pending: AtomicBool,
    /// Whether a background worker reclaims (else drops reclaim inline).
    background: bool,
    pub(crate) config: LightningDbConfig,
}

/// Rows deleted per batch while reclaiming a dropped table.
const RECLAIM_BATCH: usize = 10_000;

/// Row-store writes of a staged load are cut at about this many bytes.
const LOAD_CHUNK_BYTES: usize = 32 << 20;

fn catalog_end() -> Vec<u8> {
    catalog_prefix_end(CATALOG_PREFIX)
}

/// The first key after every key starting with `prefix` (which ends in '/').
fn catalog_prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    *e.last_mut().expect("non-empty") += 1;
    e
}

impl Tables {
    pub(crate) fn open(
        engine: Arc<Engine>,
        pin: Option<Snapshot>,
        cfg: &LightningDbConfig,
        read_only: bool,
    ) -> Result<Arc<Tables>> {
        let mut defs = BTreeMap::new();
        let kv = TableDef::kv();
        defs.insert(kv.name.clone(), Arc::new(kv));
        for r in engine.iter(Some(CATALOG_PREFIX), Some(&catalog_end()), false)? {
            let (_, v) = r?;
            let d = TableDef::decode(&v)?;
            defs.insert(d.name.clone(), Arc::new(d));
        }
        let list: Vec<TableDef> = defs
            .values()
            .filter(|d| cfg.columnar_kv || !d.raw_kv)
            .map(|d| (**d).clone())
            .collect();
        let opts = ColumnarOptions {
            compression: match cfg.columnar_compression {
                0 => SegmentCompression::None,
                2 => SegmentCompression::Lz4,
                _ => SegmentCompression::Zstd,
            },
            segment_rows: cfg.columnar_segment_rows,
            batch_rows: cfg.columnar_batch_rows,
            cache_bytes: usize::try_from(cfg.columnar_cache_bytes).unwrap_or(usize::MAX),
            vfs: engine.options().vfs.clone(),
            read_only,
            ..Default::default()
        };
        let store = Arc::new(ColumnStore::open(engine.dir(), &engine, pin, &list, opts)?);
        let (next_id, orphans) = Self::recover_ids(&engine, &defs)?;
        let t = Arc::new(Tables {
            engine,
            store,
            defs: RwLock::new(defs),
            ddl: Mutex::new(()),
            worker: Mutex::new(None),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            interval: cfg.columnar_compaction_interval,
            rows_threshold: cfg.columnar_compaction_rows,
            bytes_threshold: cfg.columnar_compaction_bytes,
            sql: Mutex::new(None),
            columnar_kv: cfg.columnar_kv,
            next_id: AtomicU32::new(next_id),
            reclaim_pending: AtomicBool::new(!read_only),
            background: cfg.columnar_background && !read_only,
            config: cfg.clone(),
        });
        if read_only {
            // Nothing is reclaimed or compacted; orphaned rows stay for a writer.
            return Ok(t);
        }
        if !orphans.is_empty() {
            // Rows under ids no table owns (a drop or a staged load cut short by a
            // crash): mark them for reclaiming.
            let mut b = WriteBatch::new();
            for id in &orphans {
                b.put(&dropped_key(*id), b"")?;
            }
            t.engine.write(b)?;
            tracing::info!(tables = orphans.len(), "reclaiming rows of dropped tables");
        }
        if !cfg.columnar_background {
            t.reclaim_dropped()?;
        }
        if cfg.columnar_background {
            let t2 = t.clone();
            let nice = cfg.analytics_nice;
            let h = std::thread::Builder::new()
                .name("ldb-columnar".into())
                .spawn(move || {
                    crate::metrics::lower_thread_priority(nice);
                    t2.worker_loop()
                })
                .map_err(|e| Error::Io {
                    context: "spawning the column compactor".into(),
                    source: e,
                })?;
            *t.worker.lock() = Some(h);
        }
        Ok(t)
    }

    /// The next table id, and ids whose rows no table owns: the persisted counter,
    /// raised past every id in the catalog and every id that has rows (databases from
    /// before the counter existed, or rows written after the counter was read).
    fn recover_ids(
        engine: &Engine,
        defs: &BTreeMap<String, Arc<TableDef>>,
    ) -> Result<(u32, Vec<u32>)> {
        // (An iterator, not a get: internal reads are not the user's.)
        let mut key_end = NEXT_TABLE_ID_KEY.to_vec();
        key_end.push(0);
        let stored = engine
            .iter(Some(NEXT_TABLE_ID_KEY), Some(&key_end), false)?
            .next()
            .transpose()?;
        let mut next = match stored {
            Some((_, v)) if v.len() == 4 => u32::from_be_bytes(v[..4].try_into().expect("4 bytes")),
            _ => 1,
        };
        let live: std::collections::HashSet<u32> = defs.values().map(|d| d.id).collect();
        next = next.max(live.iter().max().map_or(1, |m| m + 1));
        let mut marked = std::collections::HashSet::new();
        let end = catalog_prefix_end(DROPPED_PREFIX);
        for r in engine.iter(Some(DROPPED_PREFIX), Some(&end), false)? {
            let (k, _) = r?;
            if let Ok(b) = <[u8; 4]>::try_from(&k[DROPPED_PREFIX.len()..]) {
                let id = u32::from_be_bytes(b);
                marked.insert(id);
                next = next.max(id.saturating_add(1));
            }
        }
        // Jump from table to table through the row key space: one seek per table
        // that has rows.
        let mut orphans = Vec::new();
        let mut x = 1u32;
        loop {
            let first = engine
                .iter(Some(&table_prefix(x)), Some(&[ROWS_TAG + 1]), false)?
                .next()
                .transpose()?;
            let Some(id) = first.and_then(|(k, _)| table_id_of(&k)) else {
                break;
            };
            if !live.contains(&id) && !marked.contains(&id) {
                orphans.push(id);
            }
            next = next.max(id.saturating_add(1));
            match id.checked_add(1) {
                Some(n) => x = n,
                None => break,
            }
        }
        Ok((next, orphans))
    }

    /// Delete the rows of dropped tables (in bounded batches), then their markers.
    /// Resumable: a crash leaves the marker, and the next run goes on.
    pub(crate) fn reclaim_dropped(&self) -> Result<u64> {
        if !self.reclaim_pending.swap(false, Ordering::AcqRel) {
            return Ok(0);
        }
        let end = catalog_prefix_end(DROPPED_PREFIX);
        let mut ids = Vec::new();
        for r in self.engine.iter(Some(DROPPED_PREFIX), Some(&end), false)? {
            let (k, _) = r?;
            if let Ok(b) = <[u8; 4]>::try_from(&k[DROPPED_PREFIX.len()..]) {
                ids.push(u32::from_be_bytes(b));
            }
        }
        let mut n = 0;
        let res = (|| -> Result<()> {
            for id in ids {
                let (start, end) = (table_prefix(id), table_end(id));
                loop {
                    if *self.stop.lock() {
                        return Err(Error::Closed);
                    }
                    let mut b = WriteBatch::new();
                    for r in self
                        .engine
                        .iter(Some(&start), Some(&end), false)?
                        .take(RECLAIM_BATCH)
                    {
                        b.delete(&r?.0)?;
                    }
                    if b.is_empty() {
                        break;
                    }
                    n += b.len() as u64;
                    self.engine.write(b)?;
                }
                let mut b = WriteBatch::new();
                b.delete(&dropped_key(id))?;
                self.engine.write(b)?;
            }
            Ok(())
        })();
        if res.is_err() {
            self.reclaim_pending.store(true, Ordering::Release);
        }
        res.map(|()| n)
    }

    /// A new table id, durably taken (written before anything uses it).
    fn take_id(&self) -> Result<u32> {
        let id = self.next_id.load(Ordering::Acquire);
        let next = id
            .checked_add(1)
            .ok_or_else(|| Error::Schema("no table ids left".into()))?;
        let mut b = WriteBatch::new();
        b.put(NEXT_TABLE_ID_KEY, &next.to_be_bytes())?;
        self.engine.write(b)?;
        self.next_id.store(next, Ordering::Release);
        Ok(id)
    }

    /// Create a table: its definition and the id counter in one commit.
    pub(crate) fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
    ) -> Result<Arc<TableDef>> {
        self.create_table_with(name, schema, primary_key, Default::default())
    }

    /// [`Tables::create_table`] with column `DEFAULT`s (column -> SQL expression text).
    pub(crate) fn create_table_with(
        &self,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
        defaults: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<TableDef>> {
        let _ddl = self.ddl.lock();
        if self.defs.read().contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        let id = self.next_id.load(Ordering::Acquire);
        let def = TableDef::new(id, name, &schema, primary_key)?.with_defaults(defaults)?;
        let next = id
            .checked_add(1)
            .ok_or_else(|| Error::Schema("no table ids left".into()))?;
        let mut b = WriteBatch::new();
        b.put(&catalog_key(name), &def.encode())?;
        b.put(NEXT_TABLE_ID_KEY, &next.to_be_bytes())?;
        self.engine.write(b)?;
        self.next_id.store(next, Ordering::Release);
        self.publish_def(def)
    }

    /// Make a committed definition visible to the column store and SQL.
    fn publish_def(&self, def: TableDef) -> Result<Arc<TableDef>> {
        self.store.add_table(&self.engine, &def)?;
        let def = Arc::new(def);
        self.defs.write().insert(def.name.clone(), def.clone());
        self.sql_register(&def)?;
        Ok(def)
    }

    /// Drop a table: one commit removes its definition and marks its id dropped; from
    /// then on its rows are unreachable (ids are never reused). The rows are deleted
    /// afterwards, in the background (resumed after a crash).
    pub(crate) fn drop_table(&self, name: &str) -> Result<()> {
        if name == KV_TABLE_NAME {
            return Err(Error::Schema(
                "the built-in kv table cannot be dropped".into(),
            ));
        }
        let _ddl = self.ddl.lock();
        let def = self.def(name)?;
        let mut b = WriteBatch::new();
        b.delete(&catalog_key(name))?;
        b.put(&dropped_key(def.id), b"")?;
        self.engine.write(b)?;
        self.defs.write().remove(name);
        self.sql_deregister(name)?;
        self.store.drop_table(def.id)?;
        self.reclaim_pending.store(true, Ordering::Release);
        drop(_ddl);
        if !self.background {
            self.reclaim_dropped()?;
        }
        Ok(())
    }

    /// Encode `batch`'s rows for `def` into row-store puts appended to `out`, handing
    /// `out` to `full` whenever it holds `chunk_bytes` or more (what is left stays in
    /// `out`).
    fn encode_rows(
        engine: &lightning_rowstore::Engine,
        def: &TableDef,
        batch: &RecordBatch,
        out: &mut WriteBatch,
        chunk_bytes: usize,
        mut full: impl FnMut(WriteBatch) -> Result<()>,
    ) -> Result<()> {
        // A keyless table's rows get new row ids: appended, never a duplicate check.
        let batch = &def.with_row_ids(engine, batch)?;
        let cols = def.align(batch, false)?;
        let key_cols: Vec<&dyn Array> = def.key_cols.iter().map(|&i| cols[i].as_ref()).collect();
        let val_cols: Vec<&dyn Array> =
            def.value_cols().iter().map(|&i| cols[i].as_ref()).collect();
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for i in 0..batch.num_rows() {
            def.row_key(&key_cols, i, &mut k);
            def.row_value(&val_cols, i, &mut v);
            out.put(&k, &v)?;
            if out.approximate_bytes() >= chunk_bytes {
                full(std::mem::take(out))?;
            }
        }
        Ok(())
    }

    /// Insert or replace rows, atomically.
    pub(crate) fn insert(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        let def = self.def(name)?;
        let mut all = WriteBatch::new();
        Self::encode_rows(&self.engine, &def, batch, &mut all, usize::MAX, |_| Ok(()))?;
        let _gate = def.gate.enter()?;
        self.engine.write(all)?;
        Ok(())
    }

    /// Start loading a new table: rows are written under a fresh id that no catalog
    /// entry names yet, so nothing of the table is visible until
    /// [`TableLoad::commit`] publishes its definition in one commit. Memory stays
    /// bounded (rows go to the row store in chunks), and a load that fails or is cut
    /// short by a crash leaves only unreachable rows, which are reclaimed.
    ///
    /// With `replacing`, a table of that name may exist (the load will replace it:
    /// [`TableLoad::commit_replacing`]).
    pub(crate) fn begin_load_as(
        self: &Arc<Self>,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
        replacing: bool,
        defaults: std::collections::BTreeMap<String, String>,
    ) -> Result<TableLoad> {
        let _ddl = self.ddl.lock();
        if !replacing && self.defs.read().contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        // Check the definition before taking an id.
        TableDef::new(
            self.next_id.load(Ordering::Acquire),
            name,
            &schema,
            primary_key,
        )?;
        let id = self.take_id()?;
        let def = TableDef::new(id, name, &schema, primary_key)?.with_defaults(defaults)?;
        Ok(TableLoad {
            tables: self.clone(),
            def,
            rows: 0,
            done: false,
        })
    }

    pub(crate) fn has_table(&self, name: &str) -> bool {
        self.defs.read().contains_key(name)
    }

    /// Tables kept in the column store.
    fn columnar_defs(&self) -> Vec<Arc<TableDef>> {
        self.defs
            .read()
            .values()
            .filter(|d| self.columnar_kv || !d.raw_kv)
            .cloned()
            .collect()
    }

    pub(crate) fn columnar_def(&self, name: &str) -> Result<Arc<TableDef>> {
        let d = self.def(name)?;
        if d.raw_kv && !self.columnar_kv {
            return Err(Error::InvalidArgument(
                "the kv table is not in the column store (set columnar_kv in the config)".into(),
            ));
        }
        Ok(d)
    }

    /// The definition of table `name`.
    pub(crate) fn def(&self, name: &str) -> Result<Arc<TableDef>> {
        self.defs
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TableNotFound(name.to_string()))
    }

    /// One column-store round for every table.
    pub(crate) fn compact_all_columnar(&self) -> Result<()> {
        for d in self.columnar_defs() {
            self.store.compact(&self.engine, &d)?;
        }
        Ok(())
    }

    /// Over all tables: (segments, visible ts minus the oldest watermark, rows in
    /// segments, of them deleted, bytes of decoded columns kept).
    pub(crate) fn columnar_figures(&self, visible: u64) -> (u64, u64, u64, u64, u64) {
        let ids: Vec<u32> = self.columnar_defs().iter().map(|d| d.id).collect();
        let (mut segs, mut rows, mut deleted) = (0, 0, 0);
        let mut oldest = visible;
        for id in ids {
            let v = self.store.view(id);
            segs += v.segments.len() as u64;
            for s in &v.segments {
                rows += s.state.info.rows;
                deleted += s.deletes.len();
            }
            oldest = oldest.min(v.watermark);
        }
        let cached = self.store.decode_cache().used() as u64;
        (segs, visible - oldest, rows, deleted, cached)
    }

    pub(crate) fn worker_alive(&self) -> bool {
        self.worker
            .lock()
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    pub(crate) fn stop_worker(&self) {
        *self.stop.lock() = true;
        self.stop_cv.notify_all();
        if let Some(h) = self.worker.lock().take() {
            let _ = h.join();
        }
    }

    fn worker_loop(self: Arc<Self>) {
        let stats = self.engine.stats();
        let ops = || stats.puts.load(Ordering::Relaxed) + stats.deletes.load(Ordering::Relaxed);
        let bytes = || stats.wal_bytes.load(Ordering::Relaxed);
        let (mut last_ops, mut last_bytes) = (ops(), bytes());
        let mut last_round: HashMap<u32, Instant> = HashMap::new();
        let tick = self.interval.min(Duration::from_millis(100));
        loop {
            {
                let mut stop = self.stop.lock();
                if !*stop {
                    self.stop_cv.wait_for(&mut stop, tick);
                }
                if *stop {
                    return;
                }
            }
            if self.reclaim_pending.load(Ordering::Acquire)
                && let Err(e) = self.reclaim_dropped()
                && !matches!(e, Error::Closed)
            {
                tracing::error!(error = %e, "reclaiming dropped tables failed; will retry");
            }
            let (o, b) = (ops(), bytes());
            let pressure =
                o - last_ops >= self.rows_threshold || b - last_bytes >= self.bytes_threshold;
            let defs = self.columnar_defs();
            let visible = self.engine.visible_ts();
            for d in defs {
                if *self.stop.lock() {
                    return;
                }
                let aged = last_round
                    .get(&d.id)
                    .is_none_or(|t| t.elapsed() >= self.interval);
                if visible > self.store.watermark(d.id) && (pressure || aged) {
                    let holds = self.engine.commit_yield_holds();
                    crate::metrics::analytics_busy(&holds, true);
                    let compacted = self.store.compact(&self.engine, &d);
                    crate::metrics::analytics_busy(&holds, false);
                    match compacted {
                        Ok(_) => {
                            last_round.insert(d.id, Instant::now());
                        }
                        Err(e) => {
                            tracing::error!(table = %d.name, error = %e, "column compaction failed");
                            last_round.insert(d.id, Instant::now());
                        }
                    }
                }
            }
            if pressure {
                last_ops = o;
                last_bytes = b;
            }
        }
    }
}

/// Refuse a by-key operation on a keyless table.
fn no_key(def: &TableDef, what: &str) -> Result<()> {
    match def.keyless {
        true => Err(Error::InvalidArgument(format!(
            "{what}: table {} has no primary key (created without one); use SQL with a \
             condition instead",
            def.name
        ))),
        false => Ok(()),
    }
}

/// Cast a batch's columns to the types tables store, where Arrow has an equivalent
/// one: `Utf8View` to `Utf8`, `BinaryView`/`LargeBinary` to `Binary` (as produced by
/// Parquet readers and data generators). Other columns are kept as they are.
pub fn to_table_types(b: &RecordBatch) -> Result<RecordBatch> {
    let schema = Arc::new(to_table_schema(&b.schema()));
    let cols = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// `schema` with the types tables store (see [`to_table_types`]).
pub(crate) fn to_table_schema(schema: &arrow::datatypes::Schema) -> arrow::datatypes::Schema {
    use arrow::datatypes::{Field, Schema};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), table_type(f.data_type()), f.is_nullable()))
        .collect();
    Schema::new(fields)
}

/// The type a table stores for a column of type `t`: strings and binaries in their
/// plain layout, a dictionary as its values.
fn table_type(t: &arrow::datatypes::DataType) -> arrow::datatypes::DataType {
    use arrow::datatypes::DataType;
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, v) => table_type(v),
        t => t.clone(),
    }
}
