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
            reclaim_pending: AtomicBool::new(true),
            background: cfg.columnar_background,
            config: cfg.clone(),
        });
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
        self.engine.write(all)?;
        Ok(())
    }

    /// Start loading a new table: rows are written under a fresh id that no catalog
    /// entry names yet, so nothing of the table is visible until
    /// [`TableLoad::commit`] publishes its definition in one commit. Memory stays
    /// bounded (rows go to the row store in chunks), and a load that fails or is cut
    /// short by a crash leaves only unreachable rows, which are reclaimed.
    pub(crate) fn begin_load(
        self: &Arc<Self>,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
    ) -> Result<TableLoad> {
        self.begin_load_as(name, schema, primary_key, false, Default::default())
    }

    /// [`Tables::begin_load`]; with `replacing`, a table of that name may exist (the
    /// load will replace it: [`TableLoad::commit_replacing`]).
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

    fn columnar_def(&self, name: &str) -> Result<Arc<TableDef>> {
        let d = self.def(name)?;
        if d.raw_kv && !self.columnar_kv {
            return Err(Error::InvalidArgument(
                "the kv table is not in the column store (set columnar_kv in the config)".into(),
            ));
        }
        Ok(d)
    }

    fn def(&self, name: &str) -> Result<Arc<TableDef>> {
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
                    match self.store.compact(&self.engine, &d) {
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

/// A new table being loaded (see [`Tables::begin_load`]). Dropping it without
/// `commit` abandons the load: its rows are reclaimed.
pub(crate) struct TableLoad {
    tables: Arc<Tables>,
    def: TableDef,
    rows: u64,
    done: bool,
}

impl TableLoad {
    /// The table's schema as users see it (key columns non-nullable).
    pub(crate) fn schema(&self) -> SchemaRef {
        self.def.user_schema()
    }

    /// Write rows (upserted by primary key), in chunks.
    pub(crate) fn insert(&mut self, batch: &RecordBatch) -> Result<()> {
        let engine = &self.tables.engine;
        let mut rest = WriteBatch::new();
        Tables::encode_rows(engine, &self.def, batch, &mut rest, LOAD_CHUNK_BYTES, |b| {
            engine.write(b)?;
            Ok(())
        })?;
        if !rest.is_empty() {
            engine.write(rest)?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Publish the table with every row loaded, in one commit.
    pub(crate) fn commit(self) -> Result<Arc<TableDef>> {
        self.publish(false)
    }

    /// Publish the table in place of the table of the same name, if there is one
    /// (`CREATE OR REPLACE TABLE`): one commit names the new table and marks the old
    /// one dropped, so the name never refers to neither or to half of either.
    pub(crate) fn commit_replacing(self) -> Result<Arc<TableDef>> {
        self.publish(true)
    }

    fn publish(mut self, replace: bool) -> Result<Arc<TableDef>> {
        let t = self.tables.clone();
        let _ddl = t.ddl.lock();
        let old = t.defs.read().get(&self.def.name).cloned();
        let mut b = WriteBatch::new();
        match &old {
            Some(old) if !replace || old.name == KV_TABLE_NAME => {
                return Err(Error::TableExists(old.name.clone()));
            }
            Some(old) => b.put(&dropped_key(old.id), b"")?,
            None => {}
        }
        b.put(&catalog_key(&self.def.name), &self.def.encode())?;
        t.engine.write(b)?;
        self.done = true;
        let replaced = old.is_some();
        if let Some(old) = old {
            t.defs.write().remove(&old.name);
            t.store.drop_table(old.id)?;
            t.reclaim_pending.store(true, Ordering::Release);
        }
        let def = t.publish_def(self.def.clone())?;
        drop(_ddl);
        if replaced
            && !t.background
            && let Err(e) = t.reclaim_dropped()
        {
            tracing::warn!(error = %e, "reclaiming a replaced table failed; retried on open");
        }
        Ok(def)
    }
}

impl Drop for TableLoad {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let t = &self.tables;
        let mut b = WriteBatch::new();
        if b.put(&dropped_key(self.def.id), b"").is_ok() && t.engine.write(b).is_ok() {
            t.reclaim_pending.store(true, Ordering::Release);
            if !t.background
                && let Err(e) = t.reclaim_dropped()
            {
                tracing::warn!(error = %e, "reclaiming an abandoned load failed; retried on open");
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

/// Table API (available with the default `sql` feature).
impl Database {
    fn tables(&self) -> Result<&Arc<Tables>> {
        self.tables.as_ref().ok_or(Error::Closed)
    }

    /// Create a table. `schema` columns may use Int8..Int64, UInt8..UInt64, Float32/64,
    /// Decimal128, Utf8/LargeUtf8, Binary, Boolean, Date32 and Timestamp (with or without
    /// time zone); every column is nullable except the primary-key columns. With an
    /// empty `primary_key` the table is keyless: rows are appended under hidden row ids.
    pub fn create_table(&self, name: &str, schema: SchemaRef, primary_key: &[&str]) -> Result<()> {
        self.tables()?.create_table(name, schema, primary_key)?;
        Ok(())
    }

    /// Drop a table. One commit removes it: from then on it is gone and its rows are
    /// unreachable (table ids are never reused); the rows and segments are deleted
    /// afterwards, in the background, and that work resumes after a crash.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        self.tables()?.drop_table(name)
    }

    /// Names of all tables, `kv` included.
    pub fn list_tables(&self) -> Result<Vec<String>> {
        Ok(self.tables()?.defs.read().keys().cloned().collect())
    }

    /// The schema of a table (primary-key columns are non-nullable).
    pub fn table_schema(&self, name: &str) -> Result<SchemaRef> {
        Ok(self.tables()?.def(name)?.user_schema())
    }

    /// Primary-key column names of a table (none for a keyless one).
    pub fn table_primary_key(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.tables()?.def(name)?.primary_key_names())
    }

    /// Insert or replace (by primary key; appended to a keyless table) every row of
    /// `batch`, atomically. The batch
    /// must have exactly the table's columns (any order) with the table's types; a
    /// mismatch is an error naming the column and nothing is written.
    pub fn insert(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        self.tables()?.insert(name, batch)
    }

    /// Create table `name` holding the rows of `batches`, atomically at any size: the
    /// rows stream into the row store (memory stays bounded) under a table that is
    /// published, with all of them, in one commit once the last batch is in. If a batch
    /// fails (an error from the iterator, a row that does not fit), or the process
    /// dies part-way, the table does not exist and the rows written are reclaimed.
    /// Rows with the same key replace earlier ones. Returns the rows loaded.
    pub fn load_table<I>(
        &self,
        name: &str,
        schema: SchemaRef,
        primary_key: &[&str],
        batches: I,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        let t = self.tables()?;
        let mut load = t.begin_load(name, schema, primary_key)?;
        let mut n = 0;
        for b in batches {
            let b = b?;
            n += b.num_rows() as u64;
            load.insert(&b)?;
        }
        load.commit()?;
        Ok(n)
    }

    /// Insert or replace the rows of every batch into an existing table in one atomic
    /// commit, at any size: all or nothing, also across a crash. The batches are read one
    /// at a time; past `sql_insert_run_bytes` of rows they are staged as sorted runs and
    /// published together at the end (see `lightning_query::RowWriter`), so memory holds
    /// one run. Returns the rows written.
    pub fn insert_batches<I>(&self, name: &str, batches: I) -> Result<u64>
    where
        I: IntoIterator<Item = Result<RecordBatch>>,
    {
        let t = self.tables()?;
        let def = t.def(name)?;
        // The column store's own errors (a schema mismatch naming the column) keep
        // their kind; the rest are converted as SQL's are.
        let writer_error = |e: datafusion::error::DataFusionError| match e {
            datafusion::error::DataFusionError::External(b) => {
                match b.downcast::<lightning_columnar::Error>() {
                    Ok(c) => Error::from(*c),
                    Err(b) => Error::from(datafusion::error::DataFusionError::External(b)),
                }
            }
            e => Error::from(e),
        };
        let mut w = lightning_query::RowWriter::new(self.engine(), &def, true)
            .map_err(writer_error)?
            .strict()
            .with_spill_bytes(t.config.sql_insert_run_bytes);
        for b in batches {
            w.add(&b?).map_err(writer_error)?;
        }
        w.finish().map_err(writer_error)
    }

    /// Delete the rows whose primary keys are given (`keys` holds just the key columns),
    /// atomically. Missing keys are not an error.
    pub fn delete_rows(&self, name: &str, keys: &RecordBatch) -> Result<()> {
        let t = self.tables()?;
        let def = t.def(name)?;
        no_key(&def, "delete_rows")?;
        let cols = def.align(keys, true)?;
        let key_cols: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let mut b = WriteBatch::new();
        let mut k = Vec::new();
        for i in 0..keys.num_rows() {
            def.row_key(&key_cols, i, &mut k);
            b.delete(&k)?;
        }
        self.engine().write(b)?;
        Ok(())
    }

    /// Point lookup by primary key: `key` is a one-row batch of the key columns. Returns
    /// the row (one-row batch with the table's schema) if it exists.
    pub fn get_row(&self, name: &str, key: &RecordBatch) -> Result<Option<RecordBatch>> {
        let t = self.tables()?;
        let def = t.def(name)?;
        no_key(&def, "get_row")?;
        if key.num_rows() != 1 {
            return Err(Error::InvalidArgument(format!(
                "get_row takes a one-row key batch, got {} rows",
                key.num_rows()
            )));
        }
        let cols = def.align(key, true)?;
        let key_cols: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let mut k = Vec::new();
        def.row_key(&key_cols, 0, &mut k);
        let Some(v) = self.engine().get(&k)? else {
            return Ok(None);
        };
        Ok(Some(def.decode_row(&k, &v)?))
    }

    /// Every row of a table read from the row store at one snapshot, in primary-key
    /// order, in batches of up to `batch_rows`.
    pub fn scan_table(&self, name: &str, batch_rows: usize) -> Result<Vec<RecordBatch>> {
        self.scan_table_at(name, None, batch_rows)
    }

    /// Like [`Database::scan_table`], as of commit timestamp `at` (which must still be
    /// readable: at or after the oldest open snapshot, such as a column-store
    /// watermark).
    pub fn scan_table_at(
        &self,
        name: &str,
        at: Option<u64>,
        batch_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let t = self.tables()?;
        let def = t.def(name)?;
        let snap = match at {
            Some(ts) => self.engine().snapshot_at(ts)?,
            None => self.engine().snapshot(),
        };
        let batch_rows = batch_rows.max(1);
        let mut dec = RowDecoder::new(
            def.schema.clone(),
            &def.key_cols,
            def.raw_kv,
            batch_rows.min(65536),
        );
        let mut out = Vec::new();
        let (s, e) = (table_prefix(def.id), table_end(def.id));
        for r in self.engine().iter_at(&snap, Some(&s), Some(&e), false)? {
            let (k, v) = r?;
            dec.push(&k[5..], &v)?;
            if dec.len() >= batch_rows {
                out.push(dec.finish()?);
            }
        }
        if !dec.is_empty() || out.is_empty() {
            out.push(dec.finish()?);
        }
        if def.keyless {
            // The hidden row ids stay hidden.
            let user: Vec<usize> = (0..def.user_width()).collect();
            out = out
                .iter()
                .map(|b| b.project(&user))
                .collect::<std::result::Result<_, _>>()?;
        }
        Ok(out)
    }

    /// Run one column-store compaction round for a table now.
    pub fn compact_columnar(&self, name: &str) -> Result<RoundStats> {
        let t = self.tables()?;
        let def = t.columnar_def(name)?;
        Ok(t.store.compact(&t.engine, &def)?)
    }

    /// Rebuild a table's column segments from the row store.
    pub fn rebuild_columnar(&self, name: &str) -> Result<RoundStats> {
        let t = self.tables()?;
        let def = t.columnar_def(name)?;
        Ok(t.store.rebuild(&t.engine, &def)?)
    }

    /// The live rows of a table's column segments at their published watermark
    /// (optionally only the `projection` columns), with that watermark.
    pub fn columnar_rows(
        &self,
        name: &str,
        projection: Option<&[usize]>,
    ) -> Result<(u64, Vec<RecordBatch>)> {
        let t = self.tables()?;
        let def = t.def(name)?;
        Ok(t.store.scan(def.id, projection)?)
    }

    /// Paths of a table's segment files and its column-store folder (for tools).
    pub fn columnar_segment_paths(&self, name: &str) -> Result<Vec<std::path::PathBuf>> {
        let t = self.tables()?;
        let def = t.def(name)?;
        let dir = t.store.table_dir(def.id);
        Ok(t.store
            .segments(def.id)
            .iter()
            .map(|s| lightning_columnar::segment::segment_path(&dir, s.id))
            .collect())
    }

    /// Bytes of a table's column segments and delete bitmaps.
    pub fn columnar_bytes(&self, name: &str) -> Result<u64> {
        let t = self.tables()?;
        let def = t.def(name)?;
        Ok(t.store.table_bytes(def.id))
    }
}
