//! `Database`: the embedded database handle and its key-value and transaction API.

use crate::config::{ConsistencyLevel, LightningDbConfig};
use crate::error::{Error, Result};
use lightning_rowstore::{self as rowstore, Engine, Isolation, OpenMode, Transaction, WriteBatch};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A transaction id returned by [`Database::begin_transaction`].
pub type TxId = u64;

/// Row-store prefix of the built-in `kv` table (table id 0): `0x01` + id as u32 BE.
/// The key-value API's keys live after it; other tables use other ids and catalog
/// entries live under `0x00`, so no user key can collide with them.
pub(crate) const KV_PREFIX: [u8; 5] = [0x01, 0, 0, 0, 0];
/// First row-store key after the `kv` table.
pub(crate) const KV_END: [u8; 5] = [0x01, 0, 0, 0, 1];

/// The row-store key of a KV key.
#[inline]
pub(crate) fn kv_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(KV_PREFIX.len() + key.len());
    k.extend_from_slice(&KV_PREFIX);
    k.extend_from_slice(key);
    k
}

/// Call `f` with `key` in the KV namespace, built on the stack when it is short (a
/// point read then allocates only its answer).
#[inline]
fn with_kv_key<R>(key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; 64];
    let n = KV_PREFIX.len() + key.len();
    if n > buf.len() {
        return f(&kv_key(key));
    }
    buf[..KV_PREFIX.len()].copy_from_slice(&KV_PREFIX);
    buf[KV_PREFIX.len()..n].copy_from_slice(key);
    f(&buf[..n])
}

fn strip_kv(r: rowstore::Result<(Vec<u8>, Vec<u8>)>) -> rowstore::Result<(Vec<u8>, Vec<u8>)> {
    r.map(|(mut k, v)| {
        k.drain(..KV_PREFIX.len());
        (k, v)
    })
}

struct OpenTxn {
    txn: Transaction,
    last_used: Instant,
}

/// An open Lightning DB database. `Send + Sync`: share it across threads with `Arc`.
///
/// Dropping it (or calling [`Database::close`]) flushes the memtable and joins every
/// background thread.
pub struct Database {
    engine: Arc<Engine>,
    #[cfg(feature = "sql")]
    pub(crate) tables: Option<Arc<crate::tables::Tables>>,
    path: PathBuf,
    config: LightningDbConfig,
    txns: Mutex<HashMap<TxId, Arc<Mutex<Option<OpenTxn>>>>>,
    next_txid: AtomicU64,
    last_sweep: Mutex<Instant>,
    pub(crate) stats: Arc<crate::metrics::FacadeStats>,
    /// The keys of an encrypted database.
    keys: Option<Arc<lightning_rowstore::crypto::KeyState>>,
}

type KvSource = Box<dyn Iterator<Item = rowstore::Result<(Vec<u8>, Vec<u8>)>> + Send>;

enum KvIterSource {
    /// A plain scan: entries lent by the row store, copied once here.
    Lent(KvRefIter),
    /// A transaction's scan (its own writes merged in).
    Owned(KvSource, Arc<crate::metrics::FacadeStats>),
}

/// A streaming iterator over `(key, value)` pairs of one consistent snapshot, each
/// copied into owned vectors; [`KvRefIter`] lends them instead.
pub struct KvIter {
    inner: KvIterSource,
}

impl Iterator for KvIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            KvIterSource::Lent(r) => r
                .next()
                .transpose()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec()))),
            KvIterSource::Owned(o, stats) => o.next().map(|r| Ok(stats.seen(r)?)),
        }
    }
}

impl From<KvRefIter> for KvIter {
    fn from(r: KvRefIter) -> KvIter {
        KvIter {
            inner: KvIterSource::Lent(r),
        }
    }
}

/// A streaming scan of one consistent snapshot that lends each `(key, value)`: the
/// slices point into the row store's own blocks, memtable and tree pages and stay valid
/// until the next call, so reading an entry copies nothing. From
/// [`Database::scan_ref`] and [`Database::scan_reverse_ref`].
///
/// ```no_run
/// # fn f(db: &lightning_db::Database) -> lightning_db::Result<()> {
/// let mut it = db.scan_ref(Some(b"user:".as_slice()), Some(b"user;".as_slice()))?;
/// while let Some((key, value)) = it.next()? {
///     println!("{} = {} bytes", String::from_utf8_lossy(key), value.len());
/// }
/// # Ok(()) }
/// ```
pub struct KvRefIter {
    inner: rowstore::DbIter,
    stats: Arc<crate::metrics::FacadeStats>,
}

impl KvRefIter {
    /// The next entry, borrowed until the next call; `Ok(None)` at the end. After an
    /// error the scan is over.
    #[allow(clippy::should_implement_trait)] // a lending iterator cannot be an Iterator
    pub fn next(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        let entry = self.stats.seen(self.inner.next_ref())?;
        Ok(entry.map(|(k, v)| (&k[KV_PREFIX.len()..], v)))
    }
}

fn check_range(start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(Error::InvalidArgument(
            "scan range start is after its end (ranges are [start, end) in key order; \
             use scan_reverse to iterate backwards)"
                .into(),
        ));
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > crate::MAX_KEY_LEN {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: crate::MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Row-store bounds of a KV range.
fn kv_range(start: Option<&[u8]>, end: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    (
        start.map_or(KV_PREFIX.to_vec(), kv_key),
        end.map_or(KV_END.to_vec(), kv_key),
    )
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Database {
    /// Create a new database at `path` (the directory is created if missing). Fails
    /// with [`Error::DatabaseExists`] if one is already there, and with
    /// [`Error::DirectoryNotEmpty`] if the directory holds other files: nothing that was
    /// there is ever touched.
    pub fn create(path: impl AsRef<Path>, config: LightningDbConfig) -> Result<Database> {
        Self::open_mode(path.as_ref(), config, OpenMode::Create)
    }

    /// Open the existing database at `path`, recovering from its WAL. Fails with
    /// [`Error::DatabaseNotFound`] if there is none.
    pub fn open(path: impl AsRef<Path>, config: LightningDbConfig) -> Result<Database> {
        Self::open_mode(path.as_ref(), config, OpenMode::Open)
    }

    /// Open the database at `path`, creating it if there is none (a missing or empty
    /// directory). Whether one exists is decided while holding the directory lock, so
    /// two callers racing on a new path never both create it. A directory with database
    /// files but no `CURRENT` is an error ([`Error::MissingCurrent`]), never a new
    /// database.
    pub fn open_or_create(path: impl AsRef<Path>, config: LightningDbConfig) -> Result<Database> {
        Self::open_mode(path.as_ref(), config, OpenMode::OpenOrCreate)
    }

    /// Open the existing database at `path` for reading only, e.g. to inspect it.
    ///
    /// Takes the directory lock shared: any number of read-only handles (in this or
    /// other processes) may be open at once, but not together with a writer — opening
    /// fails with [`Error::Locked`] while a read-write handle is open, and a read-write
    /// open fails while a read-only one is. Nothing in the directory is written,
    /// created or removed: the WAL is replayed into memory, no background thread
    /// starts, and the column store is used as found (a table whose column segments
    /// lag is served from the row store). Every write, DDL statement, flush, or
    /// compaction fails with [`Error::ReadOnly`]; reads, SQL queries, read-only
    /// transactions, `check` and backups work.
    pub fn open_read_only(path: impl AsRef<Path>, config: LightningDbConfig) -> Result<Database> {
        Self::open_mode(path.as_ref(), config, OpenMode::ReadOnly)
    }

    /// Whether this handle was opened with [`Database::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.engine.is_read_only()
    }

    fn open_mode(path: &Path, config: LightningDbConfig, mode: OpenMode) -> Result<Database> {
        let mut opts = config.validate()?;
        let keys = Self::encryption(path, &config, &mut opts, mode)?;
        #[cfg(feature = "sql")]
        let pin = if mode != OpenMode::Create {
            lightning_columnar::ColumnStore::pin_needed(&*opts.vfs, path)?
        } else {
            None
        };
        #[cfg(not(feature = "sql"))]
        let pin = None;
        let (engine, pin) = Engine::open_pinned(path, opts, mode, pin)?;
        engine.set_fast_validation(config.use_optimized_transactions);
        let engine = Arc::new(engine);
        #[cfg(feature = "sql")]
        let tables = Some(crate::tables::Tables::open(
            engine.clone(),
            pin,
            &config,
            mode == OpenMode::ReadOnly,
        )?);
        #[cfg(not(feature = "sql"))]
        drop(pin);
        Ok(Database {
            engine,
            #[cfg(feature = "sql")]
            tables,
            path: path.to_path_buf(),
            config,
            txns: Mutex::new(HashMap::new()),
            next_txid: AtomicU64::new(1),
            last_sweep: Mutex::new(Instant::now()),
            stats: Arc::new(crate::metrics::FacadeStats::default()),
            keys,
        })
    }

    /// Check the key of an encrypted database (or that a plaintext one was not given a
    /// key) before anything is opened, and route every file through the encrypting
    /// file system.
    fn encryption(
        path: &Path,
        config: &LightningDbConfig,
        opts: &mut rowstore::EngineOptions,
        mode: OpenMode,
    ) -> Result<Option<Arc<lightning_rowstore::crypto::KeyState>>> {
        use lightning_rowstore::crypto::{KeyState, is_encrypted_dir};
        let Some(enc) = &config.encryption else {
            if is_encrypted_dir(&*opts.vfs, path)? {
                return Err(Error::WrongKey(format!(
                    "the database at {} is encrypted; configure its key \
                     (LightningDbConfig::encryption) to open it",
                    path.display()
                )));
            }
            return Ok(None);
        };
        let keys = Arc::new(KeyState::new(opts.vfs.clone(), path, enc));
        keys.set_read_only(mode == OpenMode::ReadOnly);
        keys.check()?;
        opts.vfs = Arc::new(lightning_rowstore::vfs::EncryptedVfs::new(
            opts.vfs.clone(),
            keys.clone(),
        ));
        Ok(Some(keys))
    }

    /// The storage engine the database at `path` was created with, or `None` if there
    /// is no database there. Tools that open databases they did not create use it to
    /// configure [`LightningDbConfig::storage_engine`]. Reads only (an encrypted
    /// database needs `config`'s key).
    pub fn recorded_storage_engine(
        path: impl AsRef<Path>,
        config: &LightningDbConfig,
    ) -> Result<Option<crate::StorageEngine>> {
        let path = path.as_ref();
        let mut config = config.clone();
        config.storage_engine = crate::StorageEngine::Lsm;
        let mut opts = config.validate()?;
        if !lightning_rowstore::vfs::exists(&*opts.vfs, &path.join("CURRENT"))? {
            return Ok(None);
        }
        Self::encryption(path, &config, &mut opts, OpenMode::ReadOnly)?;
        Ok(rowstore::manifest::recorded_storage(&*opts.vfs, path)?
            .map(crate::StorageEngine::from_kind))
    }

    /// The storage engine this database runs on.
    pub fn storage_engine(&self) -> crate::StorageEngine {
        self.config.storage_engine
    }

    /// Whether the database is encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The cipher the database is encrypted with at rest, if it is.
    pub fn encryption_cipher(&self) -> Option<crate::encryption::Cipher> {
        self.keys.as_ref().map(|k| k.cipher())
    }

    /// Replace the master key of an encrypted database, online: the database key is
    /// wrapped with the new key and the `ENCRYPTION` file replaced atomically (nothing
    /// else is rewritten, so it takes milliseconds at any size). From then on only
    /// `key` opens the database; the old key gets [`Error::WrongKey`]. Fails with
    /// [`Error::InvalidArgument`] on a plaintext database.
    pub fn rotate_key(&self, key: crate::encryption::KeyProvider) -> Result<()> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "the database is not encrypted: there is no key to rotate".into(),
            )
        })?;
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        keys.rotate(key)?;
        tracing::info!(path = %self.path.display(), "encryption key rotated");
        Ok(())
    }

    /// The directory of this database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &LightningDbConfig {
        &self.config
    }

    /// The row-store engine (for tools and lower-level access). Keys there are in
    /// row-store form (see FORMAT.md), not the key-value API's keys.
    pub(crate) fn engine_arc(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    // ------------------------------------------------------------------ KV

    /// Set `key` to `value` (an implicit one-shot transaction, durable per config).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        let mut b = WriteBatch::with_capacity(1, KV_PREFIX.len() + key.len() + value.len());
        b.put_prefixed(&KV_PREFIX, key, value)?;
        self.write(b)
    }

    /// The newest committed value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(key, <[u8]>::to_vec)
    }

    /// The newest committed value of `key`, lent to `f` where it lies (in memory, a
    /// cached block or a mapped page) instead of copied into a new `Vec`: the fastest
    /// point read. `f` runs at most once, only when the key has a value, while the
    /// read still holds its view of the database: keep it short.
    ///
    /// ```no_run
    /// # fn f(db: &lightning_db::Database) -> lightning_db::Result<()> {
    /// if let Some(len) = db.get_with(b"user:1", |value| value.len())? {
    ///     println!("user:1 holds {len} bytes");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        check_key(key)?;
        let t = Instant::now();
        let r = with_kv_key(key, |k| self.engine.get_with(k, f));
        self.stats.get.record(t.elapsed());
        Ok(self.seen(r)?)
    }

    /// Delete `key` (deleting a missing key is not an error).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        check_key(key)?;
        let mut b = WriteBatch::new();
        b.delete(&kv_key(key))?;
        self.write(b)
    }

    /// Put every pair atomically: after a crash either all or none are present.
    pub fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let bytes = pairs
            .iter()
            .map(|(k, v)| KV_PREFIX.len() + k.len() + v.len())
            .sum();
        let mut b = WriteBatch::with_capacity(pairs.len(), bytes);
        for (k, v) in pairs {
            check_key(k)?;
            b.put_prefixed(&KV_PREFIX, k, v)?;
        }
        self.write(b)
    }

    /// Values of several keys, read at one snapshot.
    pub fn get_batch(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            check_key(k)?;
        }
        let snap = self.engine.snapshot();
        keys.iter()
            .map(|k| Ok(self.seen(self.engine.get_at(&kv_key(k), &snap))?))
            .collect()
    }

    /// Delete every key atomically.
    pub fn delete_batch(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut b = WriteBatch::new();
        for k in keys {
            check_key(k)?;
            b.delete_prefixed(&KV_PREFIX, k)?;
        }
        self.write(b)
    }

    /// Apply a prepared batch of key-value writes atomically.
    pub fn write_batch(&self, batch: &crate::KvBatch) -> Result<()> {
        let mut b = WriteBatch::new();
        for op in batch.ops() {
            match op {
                rowstore::BatchOp::Put(k, v) => b.put_prefixed(&KV_PREFIX, k, v)?,
                rowstore::BatchOp::Delete(k) => b.delete_prefixed(&KV_PREFIX, k)?,
            }
        }
        self.write(b)
    }

    /// Apply a row-store batch (keys already in row-store form).
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<()> {
        self.maybe_sweep();
        self.engine.write(batch)?;
        Ok(())
    }

    /// Count a corruption error met by a read (for metrics and health checks).
    pub(crate) fn seen<T>(&self, r: rowstore::Result<T>) -> rowstore::Result<T> {
        self.stats.seen(r)
    }

    /// Keys in `[start, end)` in ascending order (`None` = unbounded), streamed lazily
    /// from one consistent snapshot.
    pub fn scan(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<KvIter> {
        self.scan_ref(start, end).map(KvIter::from)
    }

    /// Like [`Database::scan`], but each entry is lent instead of copied (see
    /// [`KvRefIter`]): the fastest way to read a range.
    pub fn scan_ref(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<KvRefIter> {
        self.lent_scan(start, end, false)
    }

    /// Keys starting with `prefix`, ascending.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<KvIter> {
        let end = prefix_end(prefix);
        self.scan(Some(prefix), end.as_deref())
    }

    /// Keys in `[start, end)` in descending order.
    pub fn scan_reverse(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<KvIter> {
        self.scan_reverse_ref(start, end).map(KvIter::from)
    }

    /// Like [`Database::scan_reverse`], each entry lent (see [`KvRefIter`]).
    pub fn scan_reverse_ref(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<KvRefIter> {
        self.lent_scan(start, end, true)
    }

    fn lent_scan(
        &self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<KvRefIter> {
        check_range(start, end)?;
        let (s, e) = kv_range(start, end);
        Ok(KvRefIter {
            inner: self.seen(self.engine.iter(Some(&s), Some(&e), reverse))?,
            stats: self.stats.clone(),
        })
    }

    /// Write the memtable to a table file (the WAL is then no longer needed for it).
    pub fn flush(&self) -> Result<()> {
        Ok(self.engine.flush()?)
    }

    /// Flush and compact everything into one sorted run, reclaiming the space of
    /// overwritten and deleted entries that no open snapshot can still see.
    pub fn compact(&self) -> Result<()> {
        // The column store holds a snapshot at each table's watermark so it can see
        // deletions; bring them up to date first so the full compaction can drop
        // everything that is no longer needed.
        #[cfg(feature = "sql")]
        if let Some(t) = &self.tables {
            t.compact_all_columnar()?;
        }
        Ok(self.engine.compact_all()?)
    }

    /// Write a consistent copy of the database into `dir` (which must not exist) while
    /// writers keep running. The copy holds every write acknowledged before the call:
    /// the live files are captured under the commit pipeline's WAL lock (the WAL is
    /// copied up to the end of its last whole record), then copied without blocking
    /// writers. Table files are hard-linked when `dir` is on the same file system,
    /// else copied and verified by checksum. Open the copy with [`Database::open`]. The
    /// column store is derived data and is rebuilt from the rows by the copy's
    /// compactor.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        let _span = tracing::info_span!("checkpoint").entered();
        Ok(self.engine.checkpoint(dir.as_ref(), None)?)
    }

    /// Flush, stop background threads and release the directory lock. Idempotent; also
    /// done on drop. After a fatal error ([`Error::Fatal`]) nothing is flushed and
    /// `close` returns that error (every time it is called).
    pub fn close(&self) -> Result<()> {
        self.txns.lock().clear();
        #[cfg(feature = "sql")]
        if let Some(t) = &self.tables {
            t.stop_worker();
        }
        Ok(self.engine.close()?)
    }

    // ------------------------------------------------------------------ transactions

    /// Begin a transaction at the database's default [`ConsistencyLevel`].
    pub fn begin_transaction(&self) -> Result<TxId> {
        self.begin_transaction_with(self.config.consistency_level)
    }

    /// Begin a transaction at an explicit isolation level.
    pub fn begin_transaction_with(&self, level: ConsistencyLevel) -> Result<TxId> {
        self.sweep_expired();
        let mut txns = self.txns.lock();
        if txns.len() >= self.config.max_active_transactions {
            return Err(Error::TooManyTransactions {
                max: self.config.max_active_transactions,
            });
        }
        let iso = match level {
            ConsistencyLevel::Snapshot => Isolation::Snapshot,
            ConsistencyLevel::Serializable => Isolation::Serializable,
        };
        let txn = Transaction::begin(&self.engine, iso)?;
        let id = self.next_txid.fetch_add(1, Ordering::Relaxed);
        txns.insert(
            id,
            Arc::new(Mutex::new(Some(OpenTxn {
                txn,
                last_used: Instant::now(),
            }))),
        );
        Ok(id)
    }

    fn with_txn<T>(&self, tx: TxId, f: impl FnOnce(&mut Transaction) -> Result<T>) -> Result<T> {
        let slot = self
            .txns
            .lock()
            .get(&tx)
            .cloned()
            .ok_or(Error::TransactionNotFound(tx))?;
        let mut g = slot.lock();
        let open = g.as_mut().ok_or(Error::TransactionNotFound(tx))?;
        open.last_used = Instant::now();
        f(&mut open.txn)
    }

    fn take_txn(&self, tx: TxId) -> Result<Transaction> {
        let slot = self
            .txns
            .lock()
            .remove(&tx)
            .ok_or(Error::TransactionNotFound(tx))?;
        let t = slot.lock().take().ok_or(Error::TransactionNotFound(tx))?;
        Ok(t.txn)
    }

    /// Read `key` in transaction `tx`: its snapshot, plus its own writes.
    pub fn get_tx(&self, tx: TxId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.with_txn(tx, |t| Ok(self.seen(t.get(&self.engine, &kv_key(key)))?))
    }

    /// Buffer a put in transaction `tx` (applied at commit).
    pub fn put_tx(&self, tx: TxId, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        self.with_txn(tx, |t| Ok(t.put(&kv_key(key), value)?))
    }

    /// Buffer a delete in transaction `tx`.
    pub fn delete_tx(&self, tx: TxId, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.with_txn(tx, |t| Ok(t.delete(&kv_key(key))?))
    }

    /// Scan `[start, end)` at `tx`'s snapshot, including its own writes.
    pub fn scan_tx(&self, tx: TxId, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<KvIter> {
        check_range(start, end)?;
        let (s, e) = kv_range(start, end);
        self.with_txn(tx, |t| {
            Ok(KvIter {
                inner: KvIterSource::Owned(
                    Box::new(
                        t.scan(&self.engine, Some(&s), Some(&e), false)?
                            .map(strip_kv),
                    ),
                    self.stats.clone(),
                ),
            })
        })
    }

    /// Validate and commit `tx` atomically. On [`Error::TransactionConflict`] nothing of
    /// it was written and the transaction is finished; begin a new one to retry.
    pub fn commit_transaction(&self, tx: TxId) -> Result<()> {
        let t = self.take_txn(tx)?;
        t.commit(&self.engine)?;
        Ok(())
    }

    /// Discard `tx` and its buffered writes.
    pub fn abort_transaction(&self, tx: TxId) -> Result<()> {
        self.take_txn(tx).map(drop)
    }

    /// Run `f` in a transaction: commit on `Ok`, abort on `Err`, and retry from the start
    /// (up to 16 attempts in all, with randomized exponential backoff) when the commit
    /// loses a conflict. After the last attempt the conflict error is returned.
    pub fn transaction<T, F>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(&mut Tx<'_>) -> Result<T>,
    {
        const ATTEMPTS: usize = 16;
        let mut backoff = Duration::from_micros(50);
        for attempt in 1..=ATTEMPTS {
            let id = self.begin_transaction()?;
            let mut tx = Tx { db: self, id };
            match f(&mut tx) {
                Ok(v) => match self.commit_transaction(id) {
                    Ok(()) => return Ok(v),
                    Err(e) if e.is_conflict() && attempt < ATTEMPTS => {}
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    let _ = self.abort_transaction(id);
                    if !(e.is_conflict() && attempt < ATTEMPTS) {
                        return Err(e);
                    }
                }
            }
            // Randomized exponential backoff, so conflicting retries do not stay in step.
            let jitter = u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos()),
            ) % (backoff.as_micros() as u64 + 1);
            std::thread::sleep(backoff / 2 + Duration::from_micros(jitter));
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
        unreachable!("the last attempt returns")
    }

    /// Number of open transactions.
    pub fn active_transactions(&self) -> usize {
        self.txns.lock().len()
    }

    fn maybe_sweep(&self) {
        let due = {
            let mut last = self.last_sweep.lock();
            if last.elapsed() < Duration::from_secs(1) {
                false
            } else {
                *last = Instant::now();
                true
            }
        };
        if due {
            self.sweep_expired();
        }
    }

    /// Abort transactions idle for longer than `transaction_timeout`.
    fn sweep_expired(&self) {
        let timeout = self.config.transaction_timeout;
        let mut txns = self.txns.lock();
        txns.retain(|id, slot| {
            let keep = match slot.try_lock() {
                Some(g) => g.as_ref().is_some_and(|t| t.last_used.elapsed() < timeout),
                None => true, // in use right now
            };
            if !keep {
                tracing::warn!(
                    tx = id,
                    "aborting transaction idle past transaction_timeout"
                );
            }
            keep
        });
    }
}

/// A transaction handle passed to [`Database::transaction`].
pub struct Tx<'a> {
    db: &'a Database,
    id: TxId,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "error while closing the database");
        }
    }
}

impl Tx<'_> {
    pub fn id(&self) -> TxId {
        self.id
    }
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_tx(self.id, key)
    }
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put_tx(self.id, key, value)
    }
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.db.delete_tx(self.id, key)
    }
    pub fn scan(&mut self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<KvIter> {
        self.db.scan_tx(self.id, start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    /// The SQL runtime's workers count in the engine's commit-yield holds while they
    /// work and not once parked, so writers never yield processor time away from a
    /// query (see `metrics::analytics_busy`).
    #[test]
    fn sql_workers_hold_commit_yields_only_while_at_work() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap();
        let holds = db.engine.commit_yield_holds().unwrap();
        db.sql("CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT)")
            .unwrap();
        db.sql("INSERT INTO t SELECT value, value * 7 FROM generate_series(1, 20000)")
            .unwrap();
        // While queries run back to back, the workers count most of the time (they
        // park only between queries).
        let (busy, samples) = (
            std::sync::atomic::AtomicU32::new(0),
            std::sync::atomic::AtomicU32::new(0),
        );
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Relaxed) {
                    samples.fetch_add(1, Relaxed);
                    if holds.load(Relaxed) > 0 {
                        busy.fetch_add(1, Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            });
            for _ in 0..20 {
                db.sql("SELECT v % 97, count(*), sum(k) FROM t GROUP BY v % 97")
                    .unwrap();
            }
            done.store(true, Relaxed);
        });
        let (busy, samples) = (busy.load(Relaxed), samples.load(Relaxed));
        assert!(
            busy * 4 >= samples,
            "SQL workers counted busy in {busy} of {samples} samples while queries ran"
        );
        // Idle again: every worker parks, and the count drops to zero.
        let t = std::time::Instant::now();
        while holds.load(Relaxed) > 0 {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "holds stuck"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_thread_counts_once_in_the_holds() {
        let holds = Some(Arc::new(std::sync::atomic::AtomicU32::new(0)));
        let count = || {
            holds
                .as_ref()
                .unwrap()
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        crate::metrics::analytics_busy(&holds, true);
        crate::metrics::analytics_busy(&holds, true);
        assert_eq!(count(), 1);
        std::thread::scope(|s| {
            s.spawn(|| crate::metrics::analytics_busy(&holds, true));
        });
        assert_eq!(count(), 2);
        crate::metrics::analytics_busy(&holds, false);
        crate::metrics::analytics_busy(&holds, false);
        assert_eq!(count(), 1);
    }
}
