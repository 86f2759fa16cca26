//! The OLAP harness: analytic SQL over the `kv` table and the 22 TPC-H queries through
//! our `TableProvider` (column segments + fresh rows), and the same queries through
//! DataFusion and, when a Python with the `duckdb` package is given, DuckDB over the same
//! Parquet files, every engine limited to the same thread count. Writes
//! `<out>/olap.json` and `<out>/olap.md` with per-query times and ratios.
//!
//! TPC-H is loaded the way the README tells users to (`--load sql`, the default): the
//! generator's Parquet files imported through SQL (`CREATE EXTERNAL TABLE`, the table
//! with its primary key, `INSERT … SELECT`), `compact_columnar` on every table, on a
//! durable database with background compaction; the peers read those same files.
//! `--load api` is the old path (table API, then a full row-store compaction; the peers
//! read our Parquet export). Then, with `--mixed-writers N` (default 2), the 22 queries
//! run again while N threads commit single-row durable transactions (updates of
//! `orders`, inserts of new `lineitem` rows); after every run a probe checks that the
//! rows committed before it are counted.
//!
//! `scripts/baseline_olap_kv.sh` builds and runs it; by hand:
//! `cargo run --release -p lightning-bench --bin ldb-olap -- --sf 1 --out /tmp/r`

use clap::Parser;
use lightning_bench::{Machine, write_results};
use lightning_datasets::tpch;
use lightning_db::arrow::array::{Array, Int64Array, RecordBatch};
use lightning_db::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use lightning_db::{Database, Durability, LightningDbConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Clone)]
#[command(
    name = "ldb-olap",
    about = "TPC-H and kv analytics: ours vs DataFusion/DuckDB over Parquet"
)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Keys loaded into the `kv` table through the KV API.
    #[arg(long, default_value_t = 1_000_000)]
    kv_keys: u64,
    /// Timed runs per query and engine (after one warm-up run); the median counts.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tiny sizes (SF 0.01, 20K kv keys, one run); results are marked as smoke.
    #[arg(long)]
    smoke: bool,
    /// Where the result files go.
    #[arg(long, default_value = "benchmark_results")]
    out: PathBuf,
    /// Where the database and the Parquet export are created (removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How TPC-H gets into the database: `sql` (Parquet imported through SQL, as the
    /// README tells users) or `api` (the table API, then a full row-store compaction).
    #[arg(long, value_enum, default_value_t = Load::Sql)]
    load: Load,
    /// The generated TPC-H Parquet files (`<table>.parquet`; generated there when
    /// missing, kept). Default: a scratch directory removed after the run.
    #[arg(long)]
    parquet_dir: Option<PathBuf>,
    /// Threads every engine may use (our `sql_threads`, DataFusion's target partitions,
    /// DuckDB's `threads`). Default: the number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Writer threads committing during a second run of the TPC-H queries (0: no
    /// mixed run).
    #[arg(long, default_value_t = 2)]
    mixed_writers: usize,
    /// Cap the mixed run's writers at this many commits per second in total (0: as
    /// fast as they can commit).
    #[arg(long, default_value_t = 0)]
    writer_rate: u64,
    /// Our `analytics_nice` (the SQL runtime's and compactor's nice value; default:
    /// the config's default).
    #[arg(long)]
    analytics_nice: Option<i32>,
    /// Our `columnar_cache_bytes` in MiB (decoded column data kept between queries;
    /// default: the config's default).
    #[arg(long)]
    columnar_cache_mb: Option<u64>,
    /// Run only these queries (comma-separated names, e.g. `q18,kv_key_range`; for
    /// profiling).
    #[arg(long, value_delimiter = ',')]
    queries: Vec<String>,
    /// Print `EXPLAIN ANALYZE` of this query (e.g. `q7`) after the quiet runs and after
    /// its runs while writers commit (for profiling).
    #[arg(long)]
    explain: Option<String>,
    /// Keep the Parquet export here instead of deleting it.
    #[arg(long)]
    keep_parquet: Option<PathBuf>,
    /// Encrypt the database at rest with this cipher (aes-256-gcm or
    /// chacha20-poly1305), to measure what encryption costs.
    #[arg(long)]
    encrypt: Option<lightning_db::encryption::Cipher>,
    /// A Python interpreter with the `duckdb` package: also time DuckDB over the Parquet.
    #[arg(long)]
    duckdb_python: Option<PathBuf>,
    /// The command line recorded with the results.
    #[arg(long)]
    command: Option<String>,
}

/// Analytic queries over the built-in `kv` table (binary key and value columns).
const KV_QUERIES: [(&str, &str); 4] = [
    (
        "kv_count_bytes",
        "SELECT count(*) AS n, sum(length(CAST(value AS VARCHAR))) AS bytes FROM kv",
    ),
    (
        "kv_key_range",
        "SELECT count(*) AS n, avg(length(CAST(value AS VARCHAR))) AS avg_len FROM kv \
         WHERE key >= CAST('user:0000100000' AS BYTEA) AND key < CAST('user:0000200000' AS BYTEA)",
    ),
    (
        "kv_group_by_prefix",
        "SELECT substr(CAST(key AS VARCHAR), 1, 10) AS bucket, count(*) AS n, \
         max(length(CAST(value AS VARCHAR))) AS max_len FROM kv GROUP BY bucket ORDER BY bucket",
    ),
    (
        "kv_top_values",
        "SELECT key, length(CAST(value AS VARCHAR)) AS len FROM kv \
         ORDER BY len DESC, key LIMIT 10",
    ),
];

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Debug)]
enum Load {
    Sql,
    Api,
}

fn kv_key(i: u64) -> Vec<u8> {
    format!("user:{i:010}").into_bytes()
}

/// Values of 50..=150 bytes, so length aggregates have something to find.
fn kv_value(i: u64) -> Vec<u8> {
    let len = 50 + (i.wrapping_mul(2_654_435_761) % 101) as usize;
    let mut v = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

#[derive(serde::Serialize)]
struct QueryFigure {
    suite: &'static str,
    query: String,
    rows: usize,
    ours_ms: f64,
    datafusion_parquet_ms: f64,
    duckdb_ms: Option<f64>,
}

/// One untimed warm-up run, then the median of `runs` timed ones.
fn median_of(runs: usize, f: &mut dyn FnMut() -> Res<usize>) -> Res<(Duration, usize)> {
    f()?;
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        rows = f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], rows))
}

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.sf = args.sf.min(0.01);
        args.kv_keys = args.kv_keys.min(20_000);
        args.runs = 1;
    }
    lightning_bench::run_in_scratch("olap", args.data_dir.as_deref(), |base, scratch| {
        run_in(&args, base, scratch)
    })
}

fn run_in(args: &Args, base: &Path, scratch: &Path) -> Res<()> {
    let machine = Machine::describe(base);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let api = args.load == Load::Api;
    let config_cache_bytes = args
        .columnar_cache_mb
        .map_or(LightningDbConfig::default().columnar_cache_bytes, |m| {
            m << 20
        });
    let db = Database::create(
        scratch.join("db"),
        LightningDbConfig {
            // The table-API path is one bulk job: no fsync per commit, segments compacted
            // explicitly. The SQL path keeps the defaults a user gets (durable commits,
            // background compaction).
            durability: if api {
                Durability::Buffered
            } else {
                LightningDbConfig::default().durability
            },
            columnar_background: !api,
            columnar_kv: true,
            sql_threads: threads,
            analytics_nice: args
                .analytics_nice
                .unwrap_or(LightningDbConfig::default().analytics_nice),
            columnar_cache_bytes: config_cache_bytes,
            encryption: args.encrypt.map(|c| {
                lightning_db::encryption::EncryptionConfig::new(
                    c,
                    lightning_db::encryption::KeyProvider::raw([0x5c; 32]),
                )
            }),
            ..Default::default()
        },
    )?;
    if let Some(c) = args.encrypt {
        eprintln!("encrypted at rest with {}", c.name());
    }

    eprintln!("loading {} kv keys ...", args.kv_keys);
    let t = Instant::now();
    let mut i = 0;
    while i < args.kv_keys {
        let end = (i + 10_000).min(args.kv_keys);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (i..end).map(|j| (kv_key(j), kv_value(j))).collect();
        db.put_batch(&pairs)?;
        i = end;
    }
    db.compact_columnar("kv")?;
    let kv_load_secs = t.elapsed().as_secs_f64();

    // Parquet files the peers read: the generator's own (SQL load) or our export.
    let export = match &args.keep_parquet {
        Some(d) => d.clone(),
        None => scratch.join("parquet"),
    };
    std::fs::create_dir_all(&export)?;
    let generated = args
        .parquet_dir
        .clone()
        .unwrap_or_else(|| scratch.join("tpch-parquet"));
    let stats = if api {
        eprintln!("generating TPC-H SF {} into the table API ...", args.sf);
        let stats = tpch::load(&db, args.sf, 65_536, &mut |_, _| {})?;
        // Settle the row store (flush, one full compaction) so no background compaction
        // of the freshly loaded rows competes with the timed queries of either engine.
        let t = Instant::now();
        db.compact()?;
        eprintln!(
            "  row store compacted in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        stats
    } else {
        sql_load(&db, args.sf, &generated)?
    };
    let tpch_rows: u64 = stats.rows.iter().map(|(_, n)| n).sum();
    eprintln!(
        "  {tpch_rows} rows loaded in {:.1} s, compacted in {:.1} s",
        stats.load_secs, stats.compact_secs
    );
    // A user's database is queried long after its import: let the row store's
    // background flushes and compactions of the imported rows finish first, so they do
    // not share the cores with the timed queries of any engine.
    let settle_secs = settle(&db, Duration::from_secs(900));
    eprintln!("  background work settled in {settle_secs:.1} s");

    let t = Instant::now();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(threads));
    let rt = tokio::runtime::Runtime::new()?;
    let mut files = Vec::new();
    for (t, _) in tpch::TABLES {
        files.push((
            t,
            if api {
                export.clone()
            } else {
                generated.clone()
            },
        ));
    }
    files.push(("kv", export.clone()));
    for (t, dir) in &files {
        let f = dir.join(format!("{t}.parquet"));
        if dir == &export {
            db.export_parquet(t, &f)?;
        }
        rt.block_on(ctx.register_parquet(
            *t,
            f.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        ))?;
    }
    let export_secs = t.elapsed().as_secs_f64();

    let mut queries: Vec<(&'static str, String, String)> = KV_QUERIES
        .iter()
        .map(|(n, q)| ("kv", n.to_string(), q.to_string()))
        .collect();
    for n in 1..=22 {
        let q = tpch::query(n).ok_or("missing TPC-H query")?;
        queries.push(("tpch", format!("q{n}"), q.to_string()));
    }
    if !args.queries.is_empty() {
        queries.retain(|(_, name, _)| args.queries.contains(name));
    }

    let duck = match &args.duckdb_python {
        Some(py) => Some(run_duckdb(
            py, &files, &queries, args.runs, threads, scratch,
        )?),
        None => None,
    };

    let mut figures = Vec::new();
    // Cores our TPC-H runs use when alone (to set the mixed run's beside).
    let (mut quiet_sql_cpu, mut quiet_cpu, mut quiet_secs) = (0.0, 0.0, 0.0);
    for (suite, name, sql) in &queries {
        let (before, began) = (db.get_metrics(), Instant::now());
        let (ours, rows) = median_of(args.runs, &mut || {
            Ok(db.sql(sql)?.iter().map(|b| b.num_rows()).sum())
        })
        .map_err(|e| format!("{name} (ours): {e}"))?;
        if *suite == "tpch" {
            let after = db.get_metrics();
            quiet_sql_cpu += after.sql_cpu_seconds - before.sql_cpu_seconds;
            quiet_cpu += after.process_cpu_seconds - before.process_cpu_seconds;
            quiet_secs += began.elapsed().as_secs_f64();
        }
        let (theirs, their_rows) = median_of(args.runs, &mut || {
            let b = rt.block_on(async { ctx.sql(sql).await?.collect().await })?;
            Ok(b.iter().map(|b| b.num_rows()).sum())
        })
        .map_err(|e| format!("{name} (DataFusion over Parquet): {e}"))?;
        if rows != their_rows {
            return Err(format!(
                "{name}: we returned {rows} rows, DataFusion over Parquet {their_rows}"
            )
            .into());
        }
        let duckdb_ms = duck
            .as_ref()
            .and_then(|d| d.get(name.as_str()))
            .and_then(|v| v.as_f64());
        eprintln!(
            "  {name:<20} ours {:>9.1} ms  datafusion/parquet {:>9.1} ms{}",
            ours.as_secs_f64() * 1e3,
            theirs.as_secs_f64() * 1e3,
            duckdb_ms
                .map(|d| format!("  duckdb {d:>9.1} ms"))
                .unwrap_or_default()
        );
        figures.push(QueryFigure {
            suite,
            query: name.clone(),
            rows,
            ours_ms: ours.as_secs_f64() * 1e3,
            datafusion_parquet_ms: theirs.as_secs_f64() * 1e3,
            duckdb_ms,
        });
    }
    // The mixed run needs the background compaction the table-API path turns off.
    if let Some(q) = &args.explain {
        let sql = &queries.iter().find(|x| &x.1 == q).ok_or("no such query")?.2;
        let p = db.sql(&format!("EXPLAIN ANALYZE {sql}"))?;
        eprintln!(
            "{}",
            lightning_db::arrow::util::pretty::pretty_format_batches(&p)?
        );
    }
    let cache = db.get_metrics();
    let cache_used_mb = cache.columnar_cache_bytes as f64 / (1 << 20) as f64;
    eprintln!("  decoded-column cache after the quiet runs: {cache_used_mb:.0} MiB");
    let mixed = if args.mixed_writers > 0 && !api {
        let tpch: Vec<_> = queries.iter().filter(|q| q.0 == "tpch").cloned().collect();
        Some(mixed_run(
            &db,
            args.mixed_writers,
            args.writer_rate,
            &tpch,
            args.runs,
            args.explain.as_deref(),
        )?)
    } else {
        None
    };
    db.close()?;

    let load = LoadFigures {
        tpch_rows,
        stats,
        kv_load_secs,
        export_secs,
        settle_secs,
        cache_used_mb,
        cache_limit_mb: config_cache_bytes as f64 / (1 << 20) as f64,
        quiet_sql_cores: quiet_sql_cpu / f64::max(quiet_secs, 1e-9),
        quiet_other_cores: (quiet_cpu - quiet_sql_cpu) / f64::max(quiet_secs, 1e-9),
    };
    let md = markdown(args, &machine, &figures, &load, threads, mixed.as_ref());
    let quiet_ms = |name: &str| {
        figures
            .iter()
            .find(|f| f.query == name)
            .map_or(0.0, |f| f.ours_ms)
    };
    let mixed_json = mixed.as_ref().map(|m| {
        let (quiet, during): (f64, f64) = m
            .times
            .iter()
            .map(|(q, ms)| (quiet_ms(q), *ms))
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        json!({
            "writers": m.writers,
            "writer_rate_cap": m.rate,
            "commits": m.commits,
            "commits_per_sec": m.commits as f64 / m.secs.max(1e-9),
            "fsyncs": m.fsyncs,
            "sql_cores": m.sql_cores,
            "other_cores": m.other_cores,
            "quiet_sql_cores": load.quiet_sql_cores,
            "quiet_other_cores": load.quiet_other_cores,
            "probes": m.probes,
            "stale_probes": m.stale,
            "totals_ms": {"quiet": quiet, "mixed": during, "ratio": during / quiet.max(1e-9)},
            "results": m.times.iter().map(|(q, ms)| json!({"query": q, "quiet_ms": quiet_ms(q), "mixed_ms": ms})).collect::<Vec<_>>(),
        })
    });
    let total = |suite: &str, f: &dyn Fn(&QueryFigure) -> Option<f64>| -> Option<f64> {
        figures
            .iter()
            .filter(|q| q.suite == suite)
            .map(f)
            .sum::<Option<f64>>()
    };
    let json = json!({
        "kind": "olap",
        "date": lightning_bench::today(),
        "smoke": args.smoke,
        "command": args.command,
        "machine": machine,
        "scale_factor": args.sf,
        "kv_keys": args.kv_keys,
        "runs": args.runs,
        "threads": threads,
        "analytics_nice": args.analytics_nice.unwrap_or(LightningDbConfig::default().analytics_nice),
        "load": {
            "mode": format!("{:?}", args.load).to_lowercase(),
            "tpch_rows": load.tpch_rows,
            "tpch_load_secs": load.stats.load_secs,
            "tpch_compact_secs": load.stats.compact_secs,
            "settle_secs": load.settle_secs,
            "columnar_cache_mb": {"used": load.cache_used_mb, "limit": load.cache_limit_mb},
            "kv_load_and_compact_secs": load.kv_load_secs,
            "parquet_export_secs": load.export_secs,
        },
        "mixed": mixed_json,
        "totals_ms": {
            "tpch": {
                "ours": total("tpch", &|q| Some(q.ours_ms)),
                "datafusion_parquet": total("tpch", &|q| Some(q.datafusion_parquet_ms)),
                "duckdb": total("tpch", &|q| q.duckdb_ms),
            },
            "kv": {
                "ours": total("kv", &|q| Some(q.ours_ms)),
                "datafusion_parquet": total("kv", &|q| Some(q.datafusion_parquet_ms)),
                "duckdb": total("kv", &|q| q.duckdb_ms),
            },
        },
        "results": figures,
    });
    write_results(&args.out, "olap", &json, &md)?;
    Ok(())
}

/// TPC-H the way the README tells users to load it: the generator's Parquet files
/// (written to `dir` unless there already) imported through SQL into tables with their
/// primary keys, then `compact_columnar` on every table.
fn sql_load(db: &Database, sf: f64, dir: &Path) -> Res<tpch::LoadStats> {
    if tpch::TABLES
        .iter()
        .any(|(t, _)| !dir.join(format!("{t}.parquet")).exists())
    {
        eprintln!(
            "generating TPC-H SF {sf} Parquet into {} ...",
            dir.display()
        );
        let t = Instant::now();
        tpch::write_parquet(dir, sf)?;
        eprintln!("  generated in {:.1} s", t.elapsed().as_secs_f64());
    }
    eprintln!("importing TPC-H through SQL ...");
    let mut stats = tpch::LoadStats::default();
    let t = Instant::now();
    for (table, pk) in tpch::TABLES {
        let path = dir.join(format!("{table}.parquet"));
        let rows = lightning_bench::sql_import(db, table, pk, &path, &mut || {})?;
        stats.rows.push((table.to_string(), rows));
    }
    stats.load_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (table, _) in tpch::TABLES {
        db.compact_columnar(table)?;
    }
    stats.compact_secs = t.elapsed().as_secs_f64();
    Ok(stats)
}

/// Waits until the database's background work (row-store flushes and compactions of
/// freshly loaded rows) has finished: the process used under 5% of a core over 2 s, or
/// `limit` passed. Returns the seconds waited.
fn settle(db: &Database, limit: Duration) -> f64 {
    let t = Instant::now();
    let mut last = db.get_metrics().process_cpu_seconds;
    while t.elapsed() < limit {
        std::thread::sleep(Duration::from_secs(2));
        let now = db.get_metrics().process_cpu_seconds;
        if now - last < 0.1 {
            break;
        }
        last = now;
    }
    t.elapsed().as_secs_f64()
}

/// New `lineitem` rows written during the mixed run have order keys from here up, far
/// above any generated order key, so a probe can count exactly them.
const NEW_ORDER_KEYS: i64 = 1 << 40;

/// Per query `(name, median ms)`, probes run, stale probes.
type MixedTimes = (Vec<(String, f64)>, u64, u64);

/// The TPC-H queries run again while writers commit.
struct Mixed {
    writers: usize,
    /// The cap on commits/s in total (0: none).
    rate: u64,
    /// `(query, median ms)` in query order.
    times: Vec<(String, f64)>,
    commits: u64,
    /// WAL fsyncs during the run (commits per fsync: how well commits were grouped).
    fsyncs: u64,
    /// Cores used on average during the run by the SQL threads, and by every other
    /// thread of the process (writers, commits, compactors).
    sql_cores: f64,
    other_cores: f64,
    secs: f64,
    /// Probes run after each query run, and how many of them missed a committed row.
    probes: u64,
    stale: u64,
}

/// Runs `queries` (warm-up + `runs` timed each, median) while `writers` threads commit
/// single-row durable transactions, alternating an `UPDATE` of a random existing order
/// (prepared statement) and the insert of a new `lineitem` row (table API). After every
/// run a probe counts the new `lineitem` rows: it must see every insert that committed
/// before it started.
fn mixed_run(
    db: &Database,
    writers: usize,
    rate: u64,
    queries: &[(&'static str, String, String)],
    runs: usize,
    explain: Option<&str>,
) -> Res<Mixed> {
    eprintln!("TPC-H again while {writers} writers commit ...");
    let keys: Vec<i64> = db
        .sql("SELECT o_orderkey FROM orders")?
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_any().downcast_ref::<Int64Array>();
            c.map(|c| c.values().to_vec()).unwrap_or_default()
        })
        .collect();
    if keys.is_empty() {
        return Err("orders has no Int64 keys to update".into());
    }
    let template = lightning_db::to_table_types(
        db.sql("SELECT * FROM lineitem LIMIT 1")?
            .first()
            .ok_or("lineitem is empty")?,
    )?;
    let update = db.prepare("UPDATE orders SET o_comment = $2 WHERE o_orderkey = $1")?;
    let (stop, inserted, commits) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let next_key = AtomicU64::new(0);
    let probe = format!("SELECT count(*) FROM lineitem WHERE l_orderkey >= {NEW_ORDER_KEYS}");
    let before = db.get_metrics();
    let began = Instant::now();
    let result = std::thread::scope(|s| -> Res<MixedTimes> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (update, template, keys) = (&update, &template, &keys);
                let (stop, inserted, commits, next_key) = (&stop, &inserted, &commits, &next_key);
                s.spawn(move || -> Res<()> {
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
                    let mut i = 0u64;
                    let per_writer = rate as f64 / writers as f64;
                    let began = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if per_writer > 0.0 {
                            let due = began + Duration::from_secs_f64(i as f64 / per_writer);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait.min(Duration::from_millis(50)));
                                continue;
                            }
                        }
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if i.is_multiple_of(2) {
                            // Each writer updates its own share of the orders (every
                            // `writers`-th key), so the writers never conflict with each
                            // other; a conflict all the same (a tiny table) is retried
                            // with another key, as an application would.
                            let share = (keys.len() / writers).max(1) as u64;
                            let at = (w + writers * (x % share) as usize) % keys.len();
                            let comment = format!("updated by writer {w} ({i})");
                            match update.execute((keys[at], comment)) {
                                Err(lightning_db::Error::TransactionConflict(_)) => continue,
                                r => {
                                    r?;
                                }
                            }
                        } else {
                            let key =
                                NEW_ORDER_KEYS + next_key.fetch_add(1, Ordering::Relaxed) as i64;
                            db.insert("lineitem", &with_order_key(template, key)?)?;
                            inserted.fetch_add(1, Ordering::SeqCst);
                        }
                        commits.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        let run = || -> Res<MixedTimes> {
            let (mut times, mut probes, mut stale) = (Vec::new(), 0, 0);
            for (_, name, sql) in queries {
                let mut ms = Vec::new();
                for r in 0..=runs.max(1) {
                    let t = Instant::now();
                    db.sql(sql).map_err(|e| format!("{name} (mixed): {e}"))?;
                    if r > 0 {
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    let committed = inserted.load(Ordering::SeqCst);
                    let seen = lightning_bench::count(&db.sql(&probe)?)?;
                    probes += 1;
                    if seen < committed {
                        stale += 1;
                    }
                }
                if explain == Some(name.as_str()) {
                    let p = db.sql(&format!("EXPLAIN ANALYZE {sql}"))?;
                    eprintln!(
                        "{}",
                        lightning_db::arrow::util::pretty::pretty_format_batches(&p)?
                    );
                }
                ms.sort_by(f64::total_cmp);
                eprintln!(
                    "  {name:<20} ours {:>9.1} ms while writing",
                    ms[ms.len() / 2]
                );
                times.push((name.clone(), ms[ms.len() / 2]));
            }
            Ok((times, probes, stale))
        };
        let out = run();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().map_err(|_| "writer panicked")??;
        }
        out
    })?;
    let secs = began.elapsed().as_secs_f64();
    let after = db.get_metrics();
    Ok(Mixed {
        fsyncs: after.fsyncs - before.fsyncs,
        sql_cores: (after.sql_cpu_seconds - before.sql_cpu_seconds) / secs.max(1e-9),
        other_cores: ((after.process_cpu_seconds - before.process_cpu_seconds)
            - (after.sql_cpu_seconds - before.sql_cpu_seconds))
            / secs.max(1e-9),
        writers,
        rate,
        times: result.0,
        commits: commits.load(Ordering::Relaxed),
        secs,
        probes: result.1,
        stale: result.2,
    })
}

/// `template` (one `lineitem` row) with its order key set to `key`.
fn with_order_key(template: &RecordBatch, key: i64) -> Res<RecordBatch> {
    let mut cols = template.columns().to_vec();
    cols[0] = lightning_db::arrow::compute::cast(
        &Int64Array::from(vec![key]),
        template.schema().field(0).data_type(),
    )?;
    Ok(RecordBatch::try_new(template.schema(), cols)?)
}

/// Runs `scripts/olap_duckdb.py` with `python`: DuckDB over the Parquet files (`<dir>/
/// <table>.parquet` per table) with `threads` threads, median of `runs` per query after
/// a warm-up run. Returns `{query name: ms}`.
fn run_duckdb(
    python: &Path,
    files: &[(&str, PathBuf)],
    queries: &[(&'static str, String, String)],
    runs: usize,
    threads: usize,
    scratch: &Path,
) -> Res<serde_json::Map<String, serde_json::Value>> {
    let spec = scratch.join("duckdb_queries.json");
    let out = scratch.join("duckdb_times.json");
    std::fs::write(
        &spec,
        serde_json::to_string(&json!({
            "tables": files
                .iter()
                .map(|(t, dir)| (t.to_string(), json!(dir.join(format!("{t}.parquet")))))
                .collect::<serde_json::Map<_, _>>(),
            "threads": threads,
            "runs": runs,
            "queries": queries.iter().map(|(_, n, q)| json!({"name": n, "sql": q})).collect::<Vec<_>>(),
        }))?,
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/olap_duckdb.py");
    eprintln!("running DuckDB over the same Parquet files ...");
    let status = std::process::Command::new(python)
        .arg(&script)
        .arg(&spec)
        .arg(&out)
        .status()
        .map_err(|e| format!("starting {}: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("{} {} failed: {status}", python.display(), script.display()).into());
    }
    match serde_json::from_slice(&std::fs::read(&out)?)? {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err("olap_duckdb.py wrote something other than a JSON object".into()),
    }
}

/// How the data got in, for the report.
struct LoadFigures {
    tpch_rows: u64,
    stats: tpch::LoadStats,
    kv_load_secs: f64,
    export_secs: f64,
    /// Seconds waited after the load for the background work to finish.
    settle_secs: f64,
    /// The decoded-column cache after the quiet runs: MiB held, and its budget.
    cache_used_mb: f64,
    cache_limit_mb: f64,
    /// Cores the quiet TPC-H runs used on average: our SQL threads, the rest.
    quiet_sql_cores: f64,
    quiet_other_cores: f64,
}

fn markdown(
    args: &Args,
    machine: &Machine,
    figures: &[QueryFigure],
    load: &LoadFigures,
    threads: usize,
    mixed: Option<&Mixed>,
) -> String {
    let duck = figures.iter().any(|f| f.duckdb_ms.is_some());
    let mut md = format!(
        "# OLAP baseline {}{}\n\n{}",
        lightning_bench::today(),
        if args.smoke {
            " (SMOKE: tiny sizes, not a measurement)"
        } else {
            ""
        },
        machine.markdown()
    );
    let (how, peers) = if args.load == Load::Api {
        (
            "generated and inserted through the table API in {load} s, column store \
             compacted in {compact} s, then the row store fully compacted, on a \
             buffered-durability database without background compaction",
            "DataFusion and DuckDB read our Parquet export (zstd) of the same tables",
        )
    } else {
        (
            "the generator's Parquet files imported through SQL (`CREATE EXTERNAL TABLE`, \
             the table with its primary key, `INSERT … SELECT`) in {load} s, then \
             `compact_columnar` on every table in {compact} s, on a database with the \
             default config (durable commits, background compaction)",
            "DataFusion and DuckDB read the same Parquet files the import read",
        )
    };
    let how = how
        .replace("{load}", &format!("{:.1}", load.stats.load_secs))
        .replace("{compact}", &format!("{:.1}", load.stats.compact_secs));
    let how = format!(
        "{how}; no query ran until the process was idle (under 5% of a core over a \
         2-s check: the row store's background work on the loaded rows done), {:.1} s \
         later. Decoded-column cache (`columnar_cache_bytes`): \
         {:.0} of {:.0} MiB held after the quiet runs",
        load.settle_secs, load.cache_used_mb, load.cache_limit_mb
    );
    md.push_str(&format!(
        "\nTPC-H SF {} ({} rows): {how}. {} kv keys (loaded and compacted in {:.1} s; \
         exported to Parquet for the peers). Parquet registered/exported in {:.1} s. \
         Every engine limited to {threads} threads. Median of {} runs (after a warm-up \
         run) per query. Ours = SQL through our TableProvider over column segments + \
         not-yet-compacted rows; {peers}.\n",
        args.sf, load.tpch_rows, args.kv_keys, load.kv_load_secs, load.export_secs, args.runs
    ));
    if let Some(c) = &args.command {
        md.push_str(&format!("Command: `{c}`\n"));
    }
    if !duck {
        md.push_str("\nDuckDB: not run (no Python with the duckdb package was given).\n");
    }
    for suite in ["kv", "tpch"] {
        md.push_str(&format!(
            "\n## {}\n\n| query | rows | ours (ms) | DataFusion/Parquet (ms) | {}ratio vs DataFusion |{}\n|---|---:|---:|---:|{}---:|{}\n",
            if suite == "kv" { "Analytics over the kv table" } else { "TPC-H" },
            if duck { "DuckDB/Parquet (ms) | " } else { "" },
            if duck { " ratio vs DuckDB |" } else { "" },
            if duck { "---:|" } else { "" },
            if duck { "---:|" } else { "" },
        ));
        let (mut o, mut d, mut k) = (0.0, 0.0, Some(0.0));
        for f in figures.iter().filter(|f| f.suite == suite) {
            o += f.ours_ms;
            d += f.datafusion_parquet_ms;
            k = k.zip(f.duckdb_ms).map(|(a, b)| a + b);
            md.push_str(&row(
                &f.query,
                Some(f.rows),
                f.ours_ms,
                f.datafusion_parquet_ms,
                f.duckdb_ms,
                duck,
            ));
        }
        md.push_str(&row("**total**", None, o, d, k, duck));
    }
    md.push_str("\nRatios are peer time / our time: above 1 means Lightning DB is faster.\n");
    if let Some(m) = mixed {
        md.push_str(&format!(
            "\n## TPC-H while {} writers commit\n\nThe 22 queries again (warm-up + {} runs, \
             median) while {} threads commit single-row durable transactions, alternating an \
             `UPDATE orders SET o_comment = … WHERE o_orderkey = …` (prepared) and the insert \
             of a new `lineitem` row{}: {} commits in {:.1} s = {:.0} commits/s. Our SQL \
             threads run at nice {} (`analytics_nice`). {:.2} commits per WAL fsync; \
             the SQL threads used {:.2} cores on average, the rest of the process (writers, \
             commits, compactors) {:.2} (quiet runs: {:.2} and {:.2}). After every \
             run a probe counted the new `lineitem` rows: {} of {} probes saw every insert \
             committed before them.\n\n| query | quiet (ms) | while writing (ms) | ratio |\n|---|---:|---:|---:|\n",
            m.writers,
            args.runs,
            m.writers,
            if m.rate > 0 {
                format!(", capped at {} commits/s in total", m.rate)
            } else {
                ", as fast as they can".to_string()
            },
            m.commits,
            m.secs,
            m.commits as f64 / m.secs.max(1e-9),
            args.analytics_nice
                .unwrap_or(LightningDbConfig::default().analytics_nice),
            m.commits as f64 / m.fsyncs.max(1) as f64,
            m.sql_cores,
            m.other_cores,
            load.quiet_sql_cores,
            load.quiet_other_cores,
            m.probes - m.stale,
            m.probes
        ));
        let (mut q, mut w) = (0.0, 0.0);
        for (name, ms) in &m.times {
            let quiet = figures
                .iter()
                .find(|f| &f.query == name)
                .map_or(0.0, |f| f.ours_ms);
            q += quiet;
            w += ms;
            md.push_str(&format!(
                "| {name} | {quiet:.1} | {ms:.1} | {:.2}x |\n",
                ms / quiet.max(1e-9)
            ));
        }
        md.push_str(&format!(
            "| **total** | {q:.1} | {w:.1} | {:.2}x |\n\nratio = time while writing / quiet time.\n",
            w / q.max(1e-9)
        ));
    }
    md
}

fn row(
    name: &str,
    rows: Option<usize>,
    ours: f64,
    df: f64,
    duck: Option<f64>,
    with_duck: bool,
) -> String {
    let mut s = format!(
        "| {name} | {} | {ours:.1} | {df:.1} | ",
        rows.map(|r| r.to_string()).unwrap_or_default()
    );
    if with_duck {
        s.push_str(
            &duck
                .map(|d| format!("{d:.1} | "))
                .unwrap_or_else(|| "- | ".into()),
        );
    }
    s.push_str(&format!("{:.2}x |", df / ours.max(1e-9)));
    if with_duck {
        s.push_str(
            &duck
                .map(|d| format!(" {:.2}x |", d / ours.max(1e-9)))
                .unwrap_or_else(|| " - |".into()),
        );
    }
    s.push('\n');
    s
}
