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
    CATALOG_PREFIX, KV_TABLE_NAME, catalog_key, table_end, table_prefix,
};
use lightning_columnar::{ColumnStore, ColumnarOptions, RoundStats, SegmentCompression, TableDef};
use lightning_rowstore::{Engine, Snapshot, WriteBatch};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
}

fn catalog_end() -> Vec<u8> {
    let mut e = CATALOG_PREFIX.to_vec();
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
            vfs: engine.options().vfs.clone(),
            ..Default::default()
        };
        let store = Arc::new(ColumnStore::open(engine.dir(), &engine, pin, &list, opts)?);
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
        });
        if cfg.columnar_background {
            let t2 = t.clone();
            let h = std::thread::Builder::new()
                .name("ldb-columnar".into())
                .spawn(move || t2.worker_loop())
                .map_err(|e| Error::Io {
                    context: "spawning the column compactor".into(),
                    source: e,
                })?;
            *t.worker.lock() = Some(h);
        }
        Ok(t)
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

    /// (segments over all tables, visible ts minus the oldest watermark)
    pub(crate) fn columnar_figures(&self, visible: u64) -> (u64, u64) {
        let ids: Vec<u32> = self.columnar_defs().iter().map(|d| d.id).collect();
        let mut segs = 0;
        let mut oldest = visible;
        for id in ids {
            let v = self.store.view(id);
            segs += v.segments.len() as u64;
            oldest = oldest.min(v.watermark);
        }
        (segs, visible - oldest)
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

/// Cast a batch's columns to the types tables store, where Arrow has an equivalent
/// one: `Utf8View` to `Utf8`, `BinaryView`/`LargeBinary` to `Binary` (as produced by
/// Parquet readers and data generators). Other columns are kept as they are.
pub fn to_table_types(b: &RecordBatch) -> Result<RecordBatch> {
    use arrow::datatypes::{DataType, Field, Schema};
    let fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                t => t.clone(),
            };
            Field::new(f.name(), t, f.is_nullable())
        })
        .collect();
    let cols = b
        .columns()
        .iter()
        .zip(&fields)
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Table API (available with the default `sql` feature).
impl Database {
    fn tables(&self) -> Result<&Arc<Tables>> {
        self.tables.as_ref().ok_or(Error::Closed)
    }

    /// Create a table. `schema` columns may use Int8..Int64, UInt8..UInt64, Float32/64,
    /// Decimal128, Utf8/LargeUtf8, Binary, Boolean, Date32 and Timestamp (with or without
    /// time zone); every column is nullable except the primary-key columns.
    pub fn create_table(&self, name: &str, schema: SchemaRef, primary_key: &[&str]) -> Result<()> {
        let t = self.tables()?;
        let _ddl = t.ddl.lock();
        if t.defs.read().contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        let id = t.defs.read().values().map(|d| d.id).max().unwrap_or(0) + 1;
        let def = TableDef::new(id, name, &schema, primary_key)?;
        let mut b = WriteBatch::new();
        b.put(&catalog_key(name), &def.encode())?;
        self.engine().write(b)?;
        t.store.add_table(&t.engine, &def)?;
        let def = Arc::new(def);
        t.defs.write().insert(name.to_string(), def.clone());
        t.sql_register(&def)?;
        Ok(())
    }

    /// Drop a table and all of its rows and segments.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        let t = self.tables()?;
        if name == KV_TABLE_NAME {
            return Err(Error::Schema(
                "the built-in kv table cannot be dropped".into(),
            ));
        }
        let _ddl = t.ddl.lock();
        let def = t.def(name)?;
        // The catalog entry goes first (atomically): from then on the table is gone.
        let mut b = WriteBatch::new();
        b.delete(&catalog_key(name))?;
        self.engine().write(b)?;
        t.defs.write().remove(name);
        t.sql_deregister(name)?;
        t.store.drop_table(def.id)?;
        // Then its rows, in bounded batches.
        let (start, end) = (table_prefix(def.id), table_end(def.id));
        loop {
            let mut b = WriteBatch::new();
            for r in self
                .engine()
                .iter(Some(&start), Some(&end), false)?
                .take(10_000)
            {
                b.delete(&r?.0)?;
            }
            if b.is_empty() {
                break;
            }
            self.engine().write(b)?;
        }
        Ok(())
    }

    /// Names of all tables, `kv` included.
    pub fn list_tables(&self) -> Result<Vec<String>> {
        Ok(self.tables()?.defs.read().keys().cloned().collect())
    }

    /// The schema of a table (primary-key columns are non-nullable).
    pub fn table_schema(&self, name: &str) -> Result<SchemaRef> {
        Ok(self.tables()?.def(name)?.schema.clone())
    }

    /// Primary-key column names of a table.
    pub fn table_primary_key(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.tables()?.def(name)?.primary_key_names())
    }

    /// Insert or replace (by primary key) every row of `batch`, atomically. The batch
    /// must have exactly the table's columns (any order) with the table's types; a
    /// mismatch is an error naming the column and nothing is written.
    pub fn insert(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        let t = self.tables()?;
        let def = t.def(name)?;
        let cols = def.align(batch, false)?;
        let key_cols: Vec<&dyn Array> = def.key_cols.iter().map(|&i| cols[i].as_ref()).collect();
        let val_cols: Vec<&dyn Array> =
            def.value_cols().iter().map(|&i| cols[i].as_ref()).collect();
        let mut b = WriteBatch::new();
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for i in 0..batch.num_rows() {
            def.row_key(&key_cols, i, &mut k);
            def.row_value(&val_cols, i, &mut v);
            b.put(&k, &v)?;
        }
        self.engine().write(b)?;
        Ok(())
    }

    /// Delete the rows whose primary keys are given (`keys` holds just the key columns),
    /// atomically. Missing keys are not an error.
    pub fn delete_rows(&self, name: &str, keys: &RecordBatch) -> Result<()> {
        let t = self.tables()?;
        let def = t.def(name)?;
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
        let mut dec = RowDecoder::new(def.schema.clone(), &def.key_cols, def.raw_kv, 1);
        dec.push(&k[5..], &v)?;
        Ok(Some(dec.finish()?))
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
