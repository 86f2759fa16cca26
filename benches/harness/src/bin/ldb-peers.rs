//! The OLTP peer harness: the same key-value workloads on Lightning DB, redb, fjall and
//! (with `--features rocksdb`) RocksDB, one engine after the other in one run, each in a
//! fresh directory. Prints every figure with the ratio of ours to each peer and writes
//! `<out>/oltp.json` and `<out>/oltp.md`.
//!
//! `scripts/baseline_oltp.sh` builds it in release and runs it; by hand:
//! `cargo run --release -p lightning-bench --no-default-features --bin ldb-peers -- --out /tmp/r`
//!
//! Workloads (keys are 16 bytes, values 100 bytes of random data):
//! * `bulk_load`: N keys in random order, in batches of 1000, every batch a durable commit;
//! * `bulk_load_nosync`: the same into another fresh database opened without commit
//!   syncs (each engine's non-durable mode: Lightning DB `Durability::Buffered`, redb
//!   `Durability::None`, fjall without persist, RocksDB `sync = false`);
//! * `durable_put`: single puts, each durable (fsync) before it returns, 1 thread;
//! * `durable_put_interleaved`: the same, with the engines taking turns in slices of
//!   250 puts (after the rounds below), so every engine's puts meet the same disk;
//! * `durable_put_8t` / `durable_put_64t`: the same from 8 and 64 threads (group commit
//!   is what helps here);
//! * `batch_put`: durable batches of 100 random overwrites;
//! * `get_1t` / `get_2t`: random point reads of loaded keys, 1 and 2 threads;
//! * `scan_100`: 100 entries from a random start key.
//!
//! Each database is closed after its load. Once every engine has loaded, each is
//! reopened (so reads come from the on-disk structures) and given 3 s for the background
//! work a reopen starts, and its directory's allocated bytes are recorded. The reads then
//! run in `--rounds` rounds (3 by default) in which the engines take turns, the
//! first engine rotating, and then the durable writes in as many rounds the same way;
//! each of those figures is the median round's, and the JSON keeps every round's
//! throughput.
//! Each engine gets a 256 MiB block cache and its default durable-commit setting: fsync
//! (fdatasync) on every commit for all four.

use clap::Parser;
use lightning_bench::{Latencies, Machine, disk_usage, human, threaded, write_results};
use rand::prelude::*;
use redb::ReadableDatabase;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CACHE_BYTES: u64 = 256 << 20;
/// Pause after reopening, before the reads, and after each engine's turn of durable
/// writes (the same for every engine).
const SETTLE: Duration = Duration::from_secs(3);
const VALUE_LEN: usize = 100;

#[derive(Parser, Clone)]
#[command(
    name = "ldb-peers",
    about = "Lightning DB against redb, fjall and RocksDB"
)]
struct Args {
    /// Keys to load (the figure is 1M).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Tiny sizes that finish in seconds; results are marked as smoke.
    #[arg(long)]
    smoke: bool,
    /// Where the result files go.
    #[arg(long, default_value = "benchmark_results")]
    out: PathBuf,
    /// Where the databases are created (a fresh subdirectory per engine; removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Only these engines (comma separated: lightning,lightning-btree,redb,fjall,rocksdb;
    /// also lightning-aes, lightning-chacha, lightning-btree-aes and
    /// lightning-btree-chacha: Lightning DB encrypted at rest).
    #[arg(long, value_delimiter = ',')]
    engines: Option<Vec<String>>,
    /// The command line recorded with the results.
    #[arg(long)]
    command: Option<String>,
    /// Rounds of the read workloads, then of the durable write workloads, the engines
    /// taking turns within each round (which engine goes first rotates); each of those
    /// figures is the median round's. Smoke runs make one.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Lightning DB's `commit_yield` (default true): false makes waiting writers
    /// always sleep, to compare.
    #[arg(long)]
    commit_yield: Option<bool>,
}

/// One engine under test. Every write method returns only once the write is durable,
/// unless the engine was opened with `durable = false`.
trait Kv: Send + Sync {
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Res<()>;
    fn put(&self, key: &[u8], value: &[u8]) -> Res<()>;
    /// A reader for one thread (engines that read through a transaction keep one open).
    fn reader(&self) -> Res<Box<dyn Reader + '_>>;
}

trait Reader {
    /// The value's length, if the key exists.
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>>;
    /// Reads up to `n` entries from `start`; returns how many it read.
    fn scan(&mut self, start: &[u8], n: usize) -> Res<usize>;
}

trait EngineKind {
    fn name(&self) -> &'static str;
    /// `durable = false`: commits return without waiting for a sync.
    fn open(&self, dir: &Path, durable: bool) -> Res<Box<dyn Kv>>;
}

// ---- Lightning DB ------------------------------------------------------------------

/// Lightning DB, plaintext or encrypted at rest (`lightning-aes`, `lightning-chacha`:
/// the cost of encryption, measured side by side; not in the default engine list), and
/// its `commit_yield` (`--commit-yield`).
struct Lightning(
    Option<lightning_db::encryption::Cipher>,
    lightning_db::StorageEngine,
    bool,
);
struct LightningKv(lightning_db::Database);

impl EngineKind for Lightning {
    fn name(&self) -> &'static str {
        use lightning_db::encryption::Cipher;
        match (self.0, self.1) {
            (None, lightning_db::StorageEngine::BTree) => "lightning-btree",
            (None, _) => "lightning",
            (Some(Cipher::Aes256Gcm), lightning_db::StorageEngine::BTree) => "lightning-btree-aes",
            (Some(Cipher::ChaCha20Poly1305), lightning_db::StorageEngine::BTree) => {
                "lightning-btree-chacha"
            }
            (Some(Cipher::Aes256Gcm), _) => "lightning-aes",
            (Some(Cipher::ChaCha20Poly1305), _) => "lightning-chacha",
        }
    }
    fn open(&self, dir: &Path, durable: bool) -> Res<Box<dyn Kv>> {
        use lightning_db::encryption::{EncryptionConfig, KeyProvider};
        let cfg = lightning_db::LightningDbConfig {
            cache_size: CACHE_BYTES,
            storage_engine: self.1,
            durability: if durable {
                lightning_db::Durability::Sync
            } else {
                lightning_db::Durability::Buffered
            },
            encryption: self
                .0
                .map(|c| EncryptionConfig::new(c, KeyProvider::raw([0x5c; 32]))),
            commit_yield: self.2,
            ..Default::default()
        };
        Ok(Box::new(LightningKv(
            lightning_db::Database::open_or_create(dir, cfg)?,
        )))
    }
}

impl Kv for LightningKv {
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Res<()> {
        Ok(self.0.put_batch(pairs)?)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Res<()> {
        Ok(self.0.put(key, value)?)
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        Ok(Box::new(LightningReader(&self.0)))
    }
}

struct LightningReader<'a>(&'a lightning_db::Database);

impl Reader for LightningReader<'_> {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        // The lending read: the value is read where it lies, like redb's guard and
        // RocksDB's pinned slice, not copied.
        Ok(self.0.get_with(key, |v| std::hint::black_box(v.len()))?)
    }
    fn scan(&mut self, start: &[u8], n: usize) -> Res<usize> {
        // The lending scan: entries borrowed like redb's guards and RocksDB's raw
        // iterator, not copied.
        let mut it = self.0.scan_ref(Some(start), None)?;
        let mut got = 0;
        while got < n
            && let Some((_k, v)) = it.next()?
        {
            std::hint::black_box(v.len());
            got += 1;
        }
        Ok(got)
    }
}

// ---- redb ----------------------------------------------------------------------------

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct Redb;
struct RedbKv(redb::Database, bool);

impl RedbKv {
    fn begin(&self) -> Res<redb::WriteTransaction> {
        let mut w = self.0.begin_write()?;
        if !self.1 {
            w.set_durability(redb::Durability::None)?;
        }
        Ok(w)
    }
}

impl EngineKind for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn open(&self, dir: &Path, durable: bool) -> Res<Box<dyn Kv>> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES as usize)
            .create(dir.join("redb.db"))?;
        // Create the table so readers can open it before the first write.
        let w = db.begin_write()?;
        w.open_table(REDB_TABLE)?;
        w.commit()?;
        Ok(Box::new(RedbKv(db, durable)))
    }
}

impl Kv for RedbKv {
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Res<()> {
        let w = self.begin()?;
        {
            let mut t = w.open_table(REDB_TABLE)?;
            for (k, v) in pairs {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
        w.commit()?;
        Ok(())
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Res<()> {
        let w = self.begin()?;
        w.open_table(REDB_TABLE)?.insert(key, value)?;
        w.commit()?;
        Ok(())
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        // One read transaction per thread for the whole phase, as redb's own benchmark
        // does: the cheapest way to read from redb.
        let r = self.0.begin_read()?;
        Ok(Box::new(RedbReader(r.open_table(REDB_TABLE)?)))
    }
}

struct RedbReader(redb::ReadOnlyTable<&'static [u8], &'static [u8]>);

impl Reader for RedbReader {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.value().len()))
    }
    fn scan(&mut self, start: &[u8], n: usize) -> Res<usize> {
        let mut got = 0;
        for r in self.0.range(start..)?.take(n) {
            let (_k, v) = r?;
            std::hint::black_box(v.value().len());
            got += 1;
        }
        Ok(got)
    }
}

// ---- fjall ---------------------------------------------------------------------------

struct Fjall;
struct FjallKv {
    db: fjall::Database,
    ks: fjall::Keyspace,
    durable: bool,
}

impl EngineKind for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn open(&self, dir: &Path, durable: bool) -> Res<Box<dyn Kv>> {
        let db = fjall::Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .open()?;
        let ks = db.keyspace("kv", fjall::KeyspaceCreateOptions::default)?;
        Ok(Box::new(FjallKv { db, ks, durable }))
    }
}

impl Kv for FjallKv {
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Res<()> {
        let mut b = self
            .db
            .batch()
            .durability(self.durable.then_some(fjall::PersistMode::SyncData));
        for (k, v) in pairs {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        b.commit()?;
        Ok(())
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.ks.insert(key, value)?;
        if self.durable {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader(&self.ks)))
    }
}

struct FjallReader<'a>(&'a fjall::Keyspace);

impl Reader for FjallReader<'_> {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.len()))
    }
    fn scan(&mut self, start: &[u8], n: usize) -> Res<usize> {
        let mut got = 0;
        for g in self.0.range(start.to_vec()..).take(n) {
            let (_k, v) = g.into_inner()?;
            std::hint::black_box(v.len());
            got += 1;
        }
        Ok(got)
    }
}

// ---- RocksDB (opt-in) ----------------------------------------------------------------

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;

    pub struct Rocks;
    pub struct RocksKv(rocksdb::DB, bool);

    impl RocksKv {
        fn opts(&self) -> rocksdb::WriteOptions {
            let mut w = rocksdb::WriteOptions::default();
            w.set_sync(self.1);
            w
        }
    }

    impl EngineKind for Rocks {
        fn name(&self) -> &'static str {
            "rocksdb"
        }
        fn open(&self, dir: &Path, durable: bool) -> Res<Box<dyn Kv>> {
            let mut o = rocksdb::Options::default();
            o.create_if_missing(true);
            o.increase_parallelism(2);
            let mut t = rocksdb::BlockBasedOptions::default();
            t.set_block_cache(&rocksdb::Cache::new_lru_cache(CACHE_BYTES as usize));
            t.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&t);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            Ok(Box::new(RocksKv(rocksdb::DB::open(&o, dir)?, durable)))
        }
    }

    impl Kv for RocksKv {
        fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Res<()> {
            let mut b = rocksdb::WriteBatch::default();
            for (k, v) in pairs {
                b.put(k, v);
            }
            self.0.write_opt(b, &self.opts())?;
            Ok(())
        }
        fn put(&self, key: &[u8], value: &[u8]) -> Res<()> {
            self.0.put_opt(key, value, &self.opts())?;
            Ok(())
        }
        fn reader(&self) -> Res<Box<dyn Reader + '_>> {
            Ok(Box::new(RocksReader(&self.0)))
        }
    }

    struct RocksReader<'a>(&'a rocksdb::DB);

    impl Reader for RocksReader<'_> {
        fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
            Ok(self.0.get_pinned(key)?.map(|v| v.len()))
        }
        fn scan(&mut self, start: &[u8], n: usize) -> Res<usize> {
            let mut it = self.0.raw_iterator();
            it.seek(start);
            let mut got = 0;
            while got < n && it.valid() {
                std::hint::black_box(it.value().map(|v| v.len()));
                got += 1;
                it.next();
            }
            it.status()?;
            Ok(got)
        }
    }
}

// ---- workloads -------------------------------------------------------------------------

fn key(i: u64) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

fn value(rng: &mut impl Rng) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    rng.fill_bytes(&mut v);
    v
}

/// Sizes of one run.
struct Plan {
    keys: u64,
    durable_puts: u64,
    durable_puts_per_thread: u64,
    durable_puts_per_thread_64: u64,
    batches: u64,
    /// The interleaved single puts: slices, and puts per slice.
    slices: u64,
    slice_puts: u64,
    gets: u64,
    scans: u64,
}

impl Plan {
    fn new(keys: u64, smoke: bool) -> Plan {
        let keys = keys.max(1000);
        if smoke {
            Plan {
                keys,
                durable_puts: 100,
                durable_puts_per_thread: 25,
                durable_puts_per_thread_64: 5,
                batches: 20,
                slices: 2,
                slice_puts: 20,
                gets: keys.min(20_000),
                scans: 1_000,
            }
        } else {
            Plan {
                keys,
                durable_puts: 2_000,
                durable_puts_per_thread: 500,
                durable_puts_per_thread_64: 200,
                batches: 300,
                slices: 12,
                slice_puts: 250,
                gets: keys.min(1_000_000),
                scans: 50_000,
            }
        }
    }
}

#[derive(Clone, serde::Serialize)]
struct Figure {
    workload: &'static str,
    engine: &'static str,
    /// What one op is: "key" for loads and batches (throughput in keys/s), else "op".
    unit: &'static str,
    ops: u64,
    secs: f64,
    per_sec: f64,
    /// Latency of one call (a whole batch for batch workloads).
    p50_us: f64,
    p99_us: f64,
    /// Reads and durable writes: every round's throughput (the figure is the median
    /// round's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rounds_per_sec: Vec<f64>,
}

fn figure(
    workload: &'static str,
    engine: &'static str,
    unit: &'static str,
    ops: u64,
    elapsed: Duration,
    mut lat: Latencies,
) -> Figure {
    let secs = elapsed.as_secs_f64();
    let f = Figure {
        workload,
        engine,
        unit,
        ops,
        secs,
        per_sec: ops as f64 / secs.max(1e-9),
        p50_us: lat.percentile_us(50.0),
        p99_us: lat.percentile_us(99.0),
        rounds_per_sec: Vec::new(),
    };
    eprintln!(
        "  {:<15} {:>10}/s  p50 {:>9.1} µs  p99 {:>9.1} µs",
        workload,
        human(f.per_sec),
        f.p50_us,
        f.p99_us
    );
    f
}

/// Runs `per_thread` calls of `op` on each of `threads` threads; `op(thread, i)`.
fn run_reads(
    db: &dyn Kv,
    threads: usize,
    plan: &Plan,
    scan: bool,
) -> Res<(u64, Duration, Latencies)> {
    let per_thread = if scan { plan.scans } else { plan.gets };
    let keys = plan.keys;
    let t = Instant::now();
    let lats: Vec<Res<Latencies>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                s.spawn(move || {
                    let mut r = db.reader()?;
                    let mut rng = StdRng::seed_from_u64(7 + th as u64);
                    let mut lat = Latencies::default();
                    lat.0.reserve(per_thread as usize);
                    for _ in 0..per_thread {
                        let k = key(rng.random_range(0..keys));
                        let t = Instant::now();
                        let found = if scan {
                            r.scan(&k, 100)? > 0
                        } else {
                            r.get(&k)?.is_some()
                        };
                        lat.record(t.elapsed());
                        if !found {
                            return Err(
                                format!("key {:?} missing", String::from_utf8_lossy(&k)).into()
                            );
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("reader panicked".into())))
            .collect()
    });
    let elapsed = t.elapsed();
    let mut all = Latencies::default();
    for l in lats {
        all.extend(l?);
    }
    Ok((per_thread * threads as u64, elapsed, all))
}

/// Loads the engine's database twice, durable and without syncs (the second one is
/// removed), and records both loads. The durable database stays on disk, closed.
fn load_engine(
    kind: &dyn EngineKind,
    dir: &Path,
    plan: &Plan,
    figures: &mut Vec<Figure>,
) -> Res<()> {
    let name = kind.name();
    eprintln!("{name}:");
    let mut rng = StdRng::seed_from_u64(42);
    let mut order: Vec<u64> = (0..plan.keys).collect();
    order.shuffle(&mut rng);

    // Bulk load, durable; then the same into a second database without syncs.
    let load = |dir: &Path, durable: bool, rng: &mut StdRng| -> Res<(Duration, Latencies)> {
        let db = kind.open(dir, durable)?;
        let mut lat = Latencies::default();
        let t = Instant::now();
        for chunk in order.chunks(1000) {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                chunk.iter().map(|&i| (key(i), value(rng))).collect();
            let t = Instant::now();
            db.put_batch(&pairs)?;
            lat.record(t.elapsed());
        }
        Ok((t.elapsed(), lat))
    };
    let (el, lat) = load(dir, true, &mut rng)?;
    figures.push(figure("bulk_load", name, "key", plan.keys, el, lat));
    let nosync_dir = dir.with_extension("nosync");
    let r = load(&nosync_dir, false, &mut rng.clone());
    let _ = std::fs::remove_dir_all(&nosync_dir);
    let (el, lat) = r?;
    figures.push(figure("bulk_load_nosync", name, "key", plan.keys, el, lat));
    Ok(())
}

/// Reopens a loaded database (reads come from the on-disk structures) and gives it
/// [`SETTLE`] for the background work a reopen starts (compaction of what the load left
/// in level 0), so reads measure a settled database rather than the race with that
/// work. Returns it with the space the load took.
fn reopen_engine(kind: &dyn EngineKind, dir: &Path) -> Res<(Arc<dyn Kv>, u64)> {
    let db: Arc<dyn Kv> = Arc::from(kind.open(dir, true)?);
    std::thread::sleep(SETTLE);
    let bytes = disk_usage(dir);
    eprintln!(
        "{}: disk after load {:.1} MiB",
        kind.name(),
        bytes as f64 / (1 << 20) as f64
    );
    Ok((db, bytes))
}

/// The read workloads, in the order one round runs them.
const READS: [(&str, usize, bool); 3] = [
    ("get_1t", 1, false),
    ("get_2t", 2, false),
    ("scan_100", 1, true),
];

/// One round of reads on one engine: each of [`READS`] once.
fn read_round(name: &'static str, db: &dyn Kv, plan: &Plan) -> Res<Vec<Figure>> {
    eprintln!("{name}:");
    let mut out = Vec::new();
    for (workload, threads, scan) in READS {
        let (n, el, lat) = run_reads(db, threads, plan, scan)?;
        out.push(figure(workload, name, "op", n, el, lat));
    }
    Ok(out)
}

/// Of several rounds' figures for one workload, the one with the median throughput,
/// carrying every round's throughput.
fn median_round(mut rounds: Vec<Figure>) -> Figure {
    let all: Vec<f64> = rounds.iter().map(|f| f.per_sec).collect();
    rounds.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    let mut f = rounds.swap_remove(rounds.len() / 2);
    f.rounds_per_sec = all;
    f
}

/// One round of the durable write workloads on a loaded (reopened) database.
fn write_round(name: &'static str, db: &dyn Kv, plan: &Plan) -> Res<Vec<Figure>> {
    eprintln!("{name}:");
    let mut figures = Vec::new();
    // Durable single puts (overwrites of random loaded keys).
    let keys = plan.keys;
    let put = |th: usize, i: u64| -> Res<()> {
        let mut rng = StdRng::seed_from_u64(1000 + th as u64 * 1_000_003 + i);
        let k = key(rng.random_range(0..keys));
        db.put(&k, &value(&mut rng))
    };
    let (el, lat) = threaded(1, plan.durable_puts, &put)?;
    figures.push(figure(
        "durable_put",
        name,
        "op",
        plan.durable_puts,
        el,
        lat,
    ));
    let (el, lat) = threaded(8, plan.durable_puts_per_thread, &put)?;
    figures.push(figure(
        "durable_put_8t",
        name,
        "op",
        8 * plan.durable_puts_per_thread,
        el,
        lat,
    ));
    let (el, lat) = threaded(64, plan.durable_puts_per_thread_64, &put)?;
    figures.push(figure(
        "durable_put_64t",
        name,
        "op",
        64 * plan.durable_puts_per_thread_64,
        el,
        lat,
    ));

    // Durable batches of 100 random overwrites.
    let batch = |th: usize, i: u64| -> Res<()> {
        let mut rng = StdRng::seed_from_u64(5000 + th as u64 * 1_000_003 + i);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..100)
            .map(|_| (key(rng.random_range(0..keys)), value(&mut rng)))
            .collect();
        db.put_batch(&pairs)
    };
    let (el, lat) = threaded(1, plan.batches, &batch)?;
    figures.push(figure(
        "batch_put_100",
        name,
        "key",
        plan.batches * 100,
        el,
        lat,
    ));
    Ok(figures)
}

/// Durable single puts with the engines interleaved: `plan.slices` slices of
/// `plan.slice_puts` puts, every engine taking one turn per slice (the first engine
/// rotating). The fsync time of this virtual disk drifts by a third over minutes, and
/// the rounds of [`write_round`] put each engine's single puts minutes apart; here every
/// engine's puts are spread over the same few seconds, so ratios between engines bound
/// by the same fsync (our two engines, say) compare like with like.
fn interleaved_puts(names: &[&'static str], dbs: &[Arc<dyn Kv>], plan: &Plan) -> Res<Vec<Figure>> {
    eprintln!("durable puts, engines interleaved");
    let keys = plan.keys;
    let mut spent: Vec<(Duration, Latencies, Vec<f64>)> = (0..names.len())
        .map(|_| (Duration::ZERO, Latencies::default(), Vec::new()))
        .collect();
    for slice in 0..plan.slices {
        for j in 0..names.len() {
            let e = (j + slice as usize) % names.len();
            let db = &*dbs[e];
            let put = |_th: usize, i: u64| -> Res<()> {
                let mut rng = StdRng::seed_from_u64(9000 + slice * 1_000_003 + i);
                db.put(&key(rng.random_range(0..keys)), &value(&mut rng))
            };
            let (el, lat) = threaded(1, plan.slice_puts, &put)?;
            let s = &mut spent[e];
            s.0 += el;
            s.1.extend(lat);
            s.2.push(plan.slice_puts as f64 / el.as_secs_f64().max(1e-9));
        }
    }
    Ok(names
        .iter()
        .zip(spent)
        .map(|(name, (el, lat, slices))| {
            let mut f = figure(
                "durable_put_interleaved",
                name,
                "op",
                plan.slices * plan.slice_puts,
                el,
                lat,
            );
            f.rounds_per_sec = slices;
            f
        })
        .collect())
}

/// One round of some workloads on one engine (named), its figures in a fixed order.
type RoundFn<'a> = dyn Fn(&'static str, &dyn Kv) -> Res<Vec<Figure>> + 'a;

/// `rounds` rounds of `one` on every engine, the engines taking turns within a round
/// (which engine goes first rotates), then per engine and workload the median round.
///
/// `settle`: a pause after each turn, so that the background work a turn's writes leave
/// behind (flushes, compactions, the B+Tree's idle flush one second after its writes
/// stop) runs on its own engine's time, not on the next engine's fsyncs.
fn in_rounds(
    what: &str,
    rounds: usize,
    names: &[&'static str],
    dbs: &[Arc<dyn Kv>],
    one: &RoundFn,
    settle: Duration,
    figures: &mut Vec<Figure>,
) -> Res<()> {
    let mut per_engine: Vec<Vec<Vec<Figure>>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        eprintln!("{what}, round {} of {rounds}", round + 1);
        for j in 0..names.len() {
            let e = (j + round) % names.len();
            per_engine[e].push(one(names[e], &*dbs[e])?);
            std::thread::sleep(settle);
        }
    }
    for engine_rounds in per_engine {
        let workloads = engine_rounds.first().map_or(0, Vec::len);
        for w in 0..workloads {
            figures.push(median_round(
                engine_rounds.iter().map(|r| r[w].clone()).collect(),
            ));
        }
    }
    Ok(())
}

fn engines(selected: &Option<Vec<String>>, commit_yield: bool) -> Vec<Box<dyn EngineKind>> {
    use lightning_db::StorageEngine::{BTree, Lsm};
    #[allow(unused_mut)]
    let mut all: Vec<Box<dyn EngineKind>> = vec![
        Box::new(Lightning(None, Lsm, commit_yield)),
        Box::new(Lightning(None, BTree, commit_yield)),
        Box::new(Redb),
        Box::new(Fjall),
    ];
    #[cfg(feature = "rocksdb")]
    all.push(Box::new(rocks::Rocks));
    // Only when named.
    if selected.is_some() {
        use lightning_db::encryption::Cipher;
        for storage in [Lsm, BTree] {
            for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
                all.push(Box::new(Lightning(Some(cipher), storage, commit_yield)));
            }
        }
    }
    all.into_iter()
        .filter(|e| {
            selected
                .as_ref()
                .is_none_or(|s| s.iter().any(|n| n == e.name()))
        })
        .collect()
}

const WORKLOADS: [(&str, &str); 10] = [
    ("bulk_load", "bulk load, durable batches of 1000 (keys/s)"),
    (
        "bulk_load_nosync",
        "bulk load, batches of 1000, no sync (keys/s)",
    ),
    ("durable_put", "durable put, 1 thread (ops/s)"),
    (
        "durable_put_interleaved",
        "durable put, 1 thread, engines interleaved (ops/s)",
    ),
    ("durable_put_8t", "durable put, 8 threads (ops/s)"),
    ("durable_put_64t", "durable put, 64 threads (ops/s)"),
    ("batch_put_100", "durable batches of 100 (keys/s)"),
    ("get_1t", "random get, 1 thread (ops/s)"),
    ("get_2t", "random get, 2 threads (ops/s)"),
    ("scan_100", "scan 100 entries (ops/s)"),
];

fn markdown(
    args: &Args,
    machine: &Machine,
    names: &[&str],
    figures: &[Figure],
    disk: &[(&str, u64)],
) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "# OLTP baseline {}{}\n\n",
        lightning_bench::today(),
        if args.smoke {
            " (SMOKE: tiny sizes, not a measurement)"
        } else {
            ""
        }
    ));
    md.push_str(&machine.markdown());
    md.push_str(&format!(
        "\n{} keys of 16 B with 100 B values; every write durable (fsync) before it returns \
         except in the no-sync load; 256 MiB block cache each; reads start once every \
         database has been reopened after its load and given 3 s; {}.\n",
        args.keys,
        match args.rounds {
            1 => "reads and writes ran once".to_string(),
            n => format!(
                "read and durable-write figures are each the median of {n} rounds in which \
                 the engines take turns (the first engine rotates; all reads come before \
                 the writes)"
            ),
        }
    ));
    if let Some(c) = &args.command {
        md.push_str(&format!("Command: `{c}`\n"));
    }
    md.push_str("\nThroughput (p50 / p99 latency per call):\n\n| workload |");
    for n in names {
        md.push_str(&format!(" {n} |"));
    }
    // Each of our engines against each peer.
    let ours: Vec<&&str> = names
        .iter()
        .filter(|n| n.starts_with("lightning"))
        .collect();
    let peers: Vec<&&str> = names
        .iter()
        .filter(|n| !n.starts_with("lightning"))
        .collect();
    let pairs: Vec<(&str, &str)> = ours
        .iter()
        .flat_map(|o| peers.iter().map(move |p| (**o, **p)))
        .collect();
    let short = |o: &str| o.strip_prefix("lightning-").unwrap_or("lsm").to_string();
    for (o, p) in &pairs {
        md.push_str(&format!(" {}/{p} |", short(o)));
    }
    md.push_str("\n|---|");
    for _ in 0..names.len() + pairs.len() {
        md.push_str("---:|");
    }
    md.push('\n');
    let find = |w: &str, e: &str| figures.iter().find(|f| f.workload == w && f.engine == e);
    for (w, label) in WORKLOADS {
        md.push_str(&format!("| {label} |"));
        for n in names {
            match find(w, n) {
                Some(f) => md.push_str(&format!(
                    " {} ({} / {} µs) |",
                    human(f.per_sec),
                    fmt_us(f.p50_us),
                    fmt_us(f.p99_us)
                )),
                None => md.push_str(" - |"),
            }
        }
        for (o, p) in &pairs {
            match (find(w, o), find(w, p)) {
                (Some(a), Some(b)) => md.push_str(&format!(" {:.2}x |", a.per_sec / b.per_sec)),
                _ => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    md.push_str("| disk after load (MiB) |");
    let size = |e: &str| disk.iter().find(|d| d.0 == e).map(|d| d.1);
    for n in names {
        match disk.iter().find(|d| d.0 == *n) {
            Some(d) => md.push_str(&format!(" {:.1} |", d.1 as f64 / (1 << 20) as f64)),
            None => md.push_str(" - |"),
        }
    }
    for (o, p) in &pairs {
        match (size(o), size(p)) {
            (Some(a), Some(b)) if b > 0 => md.push_str(&format!(" {:.2}x |", a as f64 / b as f64)),
            _ => md.push_str(" - |"),
        }
    }
    md.push_str(
        "\n\nRatios are ours / peer (lsm: the default engine, btree: the B+Tree engine): \
         above 1 means Lightning DB is faster \
         (for disk, above 1 means it uses more space).\n",
    );
    md
}

fn fmt_us(us: f64) -> String {
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Res<()> {
    let keys = if args.smoke {
        args.keys.min(20_000)
    } else {
        args.keys
    };
    let plan = Plan::new(keys, args.smoke);
    // What this run makes, recorded as such: smoke runs make one round.
    let args = Args {
        keys: plan.keys,
        rounds: if args.smoke { 1 } else { args.rounds.max(1) },
        ..args.clone()
    };
    let rounds = args.rounds;
    let base = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base)?;
    let scratch = base.join(format!("ldb-peers-{}", std::process::id()));
    let machine = Machine::describe(&base);
    let kinds = engines(&args.engines, args.commit_yield.unwrap_or(true));
    let mut figures = Vec::new();
    let mut disk = Vec::new();
    let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
    let dirs: Vec<PathBuf> = kinds.iter().map(|k| scratch.join(k.name())).collect();
    let r = (|| -> Res<()> {
        // Loads, one engine after the other, each database closed after its load.
        for (k, dir) in kinds.iter().zip(&dirs) {
            load_engine(k.as_ref(), dir, &plan, &mut figures)?;
        }
        // Reads: every database reopened and settled, then rounds in which the engines
        // take turns, so a slow spell of this shared machine lands on one round of
        // every engine rather than on all of one engine's reads.
        let mut dbs = Vec::new();
        for (k, dir) in kinds.iter().zip(&dirs) {
            let (db, bytes) = reopen_engine(k.as_ref(), dir)?;
            disk.push((k.name(), bytes));
            dbs.push(db);
        }
        in_rounds(
            "reads",
            rounds,
            &names,
            &dbs,
            &|name, db| read_round(name, db, &plan),
            Duration::ZERO,
            &mut figures,
        )?;
        // Then the durable writes, the same way (our two engines' single puts are
        // compared with each other, and each engine's fsyncs follow another's writes).
        in_rounds(
            "durable writes",
            rounds,
            &names,
            &dbs,
            &|name, db| write_round(name, db, &plan),
            if args.smoke { Duration::ZERO } else { SETTLE },
            &mut figures,
        )?;
        figures.extend(interleaved_puts(&names, &dbs, &plan)?);
        Ok(())
    })();
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    r?;
    let _ = std::fs::remove_dir_all(&scratch);
    let md = markdown(&args, &machine, &names, &figures, &disk);
    let json = json!({
        "kind": "oltp",
        "date": lightning_bench::today(),
        "smoke": args.smoke,
        "command": args.command,
        "machine": machine,
        "keys": plan.keys,
        "key_bytes": 16,
        "value_bytes": VALUE_LEN,
        "engines": names,
        "results": figures,
        "disk_bytes": disk.iter().map(|(e, b)| json!({"engine": e, "bytes": b})).collect::<Vec<_>>(),
    });
    write_results(&args.out, "oltp", &json, &md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(per_sec: f64) -> Figure {
        Figure {
            workload: "get_1t",
            engine: "redb",
            unit: "op",
            ops: 1,
            secs: 1.0 / per_sec,
            per_sec,
            p50_us: per_sec / 1000.0,
            p99_us: 0.0,
            rounds_per_sec: Vec::new(),
        }
    }

    #[test]
    fn the_median_round_is_reported_with_every_rounds_throughput() {
        let f = median_round(vec![fig(900.0), fig(400.0), fig(700.0)]);
        assert_eq!(f.per_sec, 700.0);
        // The latencies are that round's, not another's.
        assert_eq!(f.p50_us, 0.7);
        assert_eq!(f.rounds_per_sec, vec![900.0, 400.0, 700.0]);
        assert_eq!(median_round(vec![fig(5.0)]).per_sec, 5.0);
    }
}
