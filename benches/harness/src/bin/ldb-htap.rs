//! The HTAP harness: transactions and analytics on the same `orders` table at once,
//! Lightning DB beside DuckDB (through `scripts/htap_duckdb.py`, when a Python with the
//! `duckdb` package is given), in one run.
//!
//! Phases: bulk load; OLTP alone (W = 2 and 8 writer threads, single-row durable
//! transactions: 80% `amount = amount + 1` updates of preloaded rows, 20% inserts;
//! through the table API and through SQL prepared statements); primary-key `SELECT`s;
//! OLAP alone (one thread looping three small analytic queries); mixed (writers and the
//! query thread together, with a probe that inserts a row and counts it at once); then
//! the totals are checked. Each phase records the CPU the rest of the machine used, so
//! a noisy run shows as such. Writes `<out>/htap.json` and `<out>/htap.md`.
//!
//! `scripts/baseline_htap.sh` builds and runs it; by hand:
//! `cargo run --release -p lightning-bench --bin ldb-htap -- --out /tmp/r`

use clap::Parser;
use lightning_bench::{Latencies, Machine, human, write_results};
use lightning_db::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use lightning_db::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lightning_db::{Database, LightningDbConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Clone)]
#[command(
    name = "ldb-htap",
    about = "Orders HTAP workload: Lightning DB vs DuckDB"
)]
struct Args {
    /// Rows preloaded into `orders`.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Writer thread counts of the OLTP and mixed phases.
    #[arg(long, value_delimiter = ',', default_value = "2,8")]
    writers: Vec<usize>,
    /// Tiny sizes (20K rows, 1 s phases); results are marked as smoke.
    #[arg(long)]
    smoke: bool,
    /// Where the result files go.
    #[arg(long, default_value = "benchmark_results")]
    out: PathBuf,
    /// Where the databases are created (removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A Python interpreter with the `duckdb` package: also run the workload on DuckDB.
    #[arg(long)]
    duckdb_python: Option<PathBuf>,
    /// The command line recorded with the results.
    #[arg(long)]
    command: Option<String>,
    /// Override `sql_threads` (default: the database's default).
    #[arg(long)]
    sql_threads: Option<usize>,
    /// Override `analytics_nice`.
    #[arg(long)]
    analytics_nice: Option<i32>,
    /// Override `commit_yield` (true or false).
    #[arg(long)]
    commit_yield: Option<bool>,
    /// Override `columnar_compaction_interval`, in milliseconds.
    #[arg(long)]
    columnar_interval_ms: Option<u64>,
    /// Override `columnar_compression` (0 none, 1 Zstd, 2 LZ4).
    #[arg(long)]
    columnar_compression: Option<u8>,
    /// Cap Lightning DB's writers at this many commits per second in total (OLTP and
    /// mixed phases alike; 0: as fast as they go): e.g. DuckDB's rate, to compare the
    /// query slowdown at equal write load.
    #[arg(long, default_value_t = 0)]
    writer_rate: u64,
}

/// Commits per second all writers together may make (0: no cap); see `--writer-rate`.
static WRITER_RATE: AtomicU64 = AtomicU64::new(0);

const STATUS: [&str; 4] = ["new", "paid", "shipped", "done"];

/// The deterministic row of an id (the DuckDB script uses the same formulas).
fn customer(id: u64) -> i64 {
    (id.wrapping_mul(7919) % 50_000) as i64
}
fn status(id: u64) -> &'static str {
    STATUS[(id % 4) as usize]
}
fn amount(id: u64) -> i64 {
    (id.wrapping_mul(37) % 10_000) as i64
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Int64, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]))
}

fn batch(ids: impl Iterator<Item = u64> + Clone, amounts: Option<&[i64]>) -> RecordBatch {
    let id: Int64Array = ids.clone().map(|i| i as i64).collect();
    let c: Int64Array = ids.clone().map(customer).collect();
    let s: StringArray = ids.clone().map(|i| Some(status(i))).collect();
    let a: Int64Array = match amounts {
        Some(a) => a.iter().copied().collect(),
        None => ids.map(amount).collect(),
    };
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(id), Arc::new(c), Arc::new(s), Arc::new(a)],
    )
    .expect("the orders schema")
}

/// The three small analytic queries; `{lo}` is the id where the newest 100K begin.
const QUERIES: [(&str, &str); 3] = [
    (
        "revenue_by_status",
        "SELECT status, sum(amount) AS revenue, count(*) AS n FROM orders GROUP BY status ORDER BY status",
    ),
    (
        "top_customers_recent",
        "SELECT customer, sum(amount) AS s FROM orders WHERE id >= {lo} GROUP BY customer ORDER BY s DESC, customer LIMIT 10",
    ),
    (
        "filtered_count",
        "SELECT count(*) AS n FROM orders WHERE status = 'paid' AND amount > 5000",
    ),
];

/// CPU time of the whole machine and of this process, to tell how much of the machine
/// something else used during a phase.
struct LoadProbe {
    t: Instant,
    busy: u64,
    total: u64,
    own: u64,
}

fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// This process's CPU time in clock ticks (USER_HZ = 100), as the database reports it.
fn own_jiffies(db: &Database) -> u64 {
    (db.get_metrics().process_cpu_seconds * 100.0).round() as u64
}

impl LoadProbe {
    fn start(db: &Database) -> LoadProbe {
        let (busy, total) = cpu_jiffies();
        LoadProbe {
            t: Instant::now(),
            busy,
            total,
            own: own_jiffies(db),
        }
    }

    /// (machine busy %, % of the machine used by other processes).
    fn stop(&self, db: &Database) -> Value {
        let (busy, total) = cpu_jiffies();
        let own = own_jiffies(db);
        let dt = (total - self.total).max(1) as f64;
        let busy = (busy - self.busy) as f64 / dt * 100.0;
        let ours = own.saturating_sub(self.own) as f64 / dt * 100.0;
        json!({
            "secs": self.t.elapsed().as_secs_f64(),
            "machine_busy_pct": round1(busy),
            "ours_pct": round1(ours),
            "other_pct": round1((busy - ours).max(0.0)),
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Expected totals, kept by every writer.
#[derive(Default)]
struct Ledger {
    rows: AtomicU64,
    amount: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Table,
    Sql,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `writers` threads doing single-row transactions until `stop`; returns commits.
fn write_load(
    db: &Database,
    api: Api,
    writers: usize,
    preloaded: u64,
    ledger: &Ledger,
    stop: &AtomicBool,
) -> Res<(u64, Latencies)> {
    let update = db.prepare("UPDATE orders SET amount = amount + 1 WHERE id = $1")?;
    let insert = db.prepare("INSERT INTO orders VALUES ($1, $2, $3, $4)")?;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let (update, insert) = (&update, &insert);
                s.spawn(move || -> Res<(u64, Latencies)> {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1000_0001));
                    let mut lat = Latencies::default();
                    let mut n = 0u64;
                    let began = Instant::now();
                    let rate = WRITER_RATE.load(Ordering::Relaxed) as f64 / writers as f64;
                    while !stop.load(Ordering::Relaxed) {
                        if rate > 0.0 {
                            let due = began + Duration::from_secs_f64(n as f64 / rate);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let r = rng.next();
                        let t = Instant::now();
                        if r % 10 < 8 {
                            // An id of this writer's share of the preloaded rows.
                            let per = (preloaded / writers as u64).max(1);
                            let id = (r >> 8) % per * writers as u64 + w as u64;
                            let id = id.min(preloaded - 1);
                            if id % writers as u64 != w as u64 {
                                continue;
                            }
                            match api {
                                Api::Table => {
                                    let key = RecordBatch::try_new(
                                        Arc::new(Schema::new(vec![Field::new(
                                            "id",
                                            DataType::Int64,
                                            false,
                                        )])),
                                        vec![Arc::new(Int64Array::from(vec![id as i64]))],
                                    )?;
                                    let row = db.get_row("orders", &key)?.ok_or("missing row")?;
                                    let a = row
                                        .column(3)
                                        .as_any()
                                        .downcast_ref::<Int64Array>()
                                        .ok_or("amount type")?
                                        .value(0);
                                    db.insert("orders", &batch([id].into_iter(), Some(&[a + 1])))?;
                                }
                                Api::Sql => {
                                    update.execute((id as i64,))?;
                                }
                            }
                            ledger.amount.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let id = ledger.next_id.fetch_add(1, Ordering::Relaxed);
                            match api {
                                Api::Table => {
                                    db.insert("orders", &batch([id].into_iter(), None))?
                                }
                                Api::Sql => {
                                    insert.execute((
                                        id as i64,
                                        customer(id),
                                        status(id),
                                        amount(id),
                                    ))?;
                                }
                            }
                            ledger.rows.fetch_add(1, Ordering::Relaxed);
                            ledger
                                .amount
                                .fetch_add(amount(id) as u64, Ordering::Relaxed);
                        }
                        lat.record(t.elapsed());
                        n += 1;
                    }
                    Ok((n, lat))
                })
            })
            .collect();
        let mut total = 0;
        let mut lat = Latencies::default();
        for h in hs {
            let (n, l) = h.join().map_err(|_| "writer panicked")??;
            total += n;
            lat.extend(l);
        }
        Ok((total, lat))
    })
}

fn rows(b: &[RecordBatch]) -> usize {
    b.iter().map(|b| b.num_rows()).sum()
}

fn scalar_i64(b: &[RecordBatch], col: usize) -> Res<i64> {
    let b = b.first().ok_or("no result")?;
    let c = b.column(col);
    if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
        return Ok(a.value(0));
    }
    let c = lightning_db::arrow::compute::cast(c, &DataType::Int64)?;
    Ok(c.as_any()
        .downcast_ref::<Int64Array>()
        .ok_or("not an integer")?
        .value(0))
}

/// One thread looping the three queries until `stop` (or `min_loops` rounds when no
/// stop is set); every `probe_every`th round also inserts a row and counts it at once.
fn query_load(
    db: &Database,
    ledger: &Ledger,
    stop: &AtomicBool,
    probe_every: usize,
) -> Res<(Vec<Latencies>, u64, u64)> {
    let mut lats: Vec<Latencies> = QUERIES.iter().map(|_| Latencies::default()).collect();
    let (mut probes, mut fresh) = (0u64, 0u64);
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        for (i, (_, q)) in QUERIES.iter().enumerate() {
            let lo = ledger
                .next_id
                .load(Ordering::Relaxed)
                .saturating_sub(100_000);
            let q = q.replace("{lo}", &lo.to_string());
            let t = Instant::now();
            let out = db.sql(&q)?;
            lats[i].record(t.elapsed());
            if rows(&out) == 0 {
                return Err(format!("{} returned no rows", QUERIES[i].0).into());
            }
        }
        round += 1;
        if probe_every > 0 && round % probe_every == 0 {
            let id = ledger.next_id.fetch_add(1, Ordering::Relaxed);
            db.insert("orders", &batch([id].into_iter(), None))?;
            ledger.rows.fetch_add(1, Ordering::Relaxed);
            ledger
                .amount
                .fetch_add(amount(id) as u64, Ordering::Relaxed);
            let n = scalar_i64(
                &db.sql(&format!("SELECT count(*) FROM orders WHERE id = {id}"))?,
                0,
            )?;
            probes += 1;
            fresh += (n == 1) as u64;
        }
    }
    Ok((lats, probes, fresh))
}

fn p50s(lats: &mut [Latencies]) -> Vec<f64> {
    lats.iter_mut()
        .map(|l| round3(l.percentile_us(50.0) / 1e3))
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn timed<T>(secs: f64, f: impl FnOnce(&AtomicBool) -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
        });
        f(&stop)
    })
}

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.rows = args.rows.min(20_000);
        args.secs = args.secs.min(1.0);
    }
    lightning_bench::run_in_scratch("htap", args.data_dir.as_deref(), |base, scratch| {
        run_in(&args, base, scratch)
    })
}

fn run_in(args: &Args, base: &Path, scratch: &Path) -> Res<()> {
    let machine = Machine::describe(base);
    let ours = run_lightning(args, scratch)?;
    let duck = match &args.duckdb_python {
        Some(py) => Some(run_duckdb(py, args, scratch)?),
        None => None,
    };
    let result = json!({
        "benchmark": "htap",
        "date": lightning_bench::today(),
        "smoke": args.smoke,
        "command": args.command,
        "machine": machine,
        "rows": args.rows,
        "secs_per_phase": args.secs,
        "writers": args.writers,
        "queries": QUERIES.iter().map(|(n, q)| json!({"name": n, "sql": q})).collect::<Vec<_>>(),
        "lightning": ours,
        "duckdb": duck,
    });
    let md = markdown(args, &machine, &result);
    write_results(&args.out, "htap", &result, &md)?;
    Ok(())
}

fn run_lightning(args: &Args, scratch: &Path) -> Res<Value> {
    let dir = scratch.join("lightning");
    let mut cfg = LightningDbConfig::default();
    if let Some(n) = args.sql_threads {
        cfg.sql_threads = n;
    }
    if let Some(n) = args.analytics_nice {
        cfg.analytics_nice = n;
    }
    if let Some(y) = args.commit_yield {
        cfg.commit_yield = y;
    }
    WRITER_RATE.store(args.writer_rate, Ordering::Relaxed);
    if let Some(c) = args.columnar_compression {
        cfg.columnar_compression = c;
    }
    if let Some(ms) = args.columnar_interval_ms {
        cfg.columnar_compaction_interval = Duration::from_millis(ms);
    }
    let db = Database::create(&dir, cfg)?;
    let mut phases = serde_json::Map::new();

    eprintln!("lightning: loading {} rows ...", args.rows);
    let probe = LoadProbe::start(&db);
    db.sql(
        "CREATE TABLE orders (id BIGINT NOT NULL, customer BIGINT, status VARCHAR, amount BIGINT, PRIMARY KEY (id))",
    )?;
    let mut i = 0;
    while i < args.rows {
        let end = (i + 50_000).min(args.rows);
        db.insert("orders", &batch(i..end, None))?;
        i = end;
    }
    db.compact_columnar("orders")?;
    let load = probe.stop(&db);
    let load_secs = load["secs"].as_f64().unwrap_or(0.0);
    phases.insert(
        "load".into(),
        json!({"rows_per_sec": args.rows as f64 / load_secs, "load": load}),
    );
    let ledger = Ledger::default();
    ledger.rows.store(args.rows, Ordering::Relaxed);
    ledger.amount.store(
        (0..args.rows).map(|i| amount(i) as u64).sum(),
        Ordering::Relaxed,
    );
    ledger.next_id.store(args.rows, Ordering::Relaxed);

    // OLTP alone.
    let mut solo = serde_json::Map::new();
    for &w in &args.writers {
        for api in [Api::Table, Api::Sql] {
            let name = format!("{}_w{w}", if api == Api::Table { "table" } else { "sql" });
            eprintln!("lightning: oltp {name} ...");
            let probe = LoadProbe::start(&db);
            let (n, mut lat) = timed(args.secs, |stop| {
                write_load(&db, api, w, args.rows, &ledger, stop)
            })?;
            let load = probe.stop(&db);
            let secs = load["secs"].as_f64().unwrap_or(args.secs);
            solo.insert(
                name,
                json!({"commits_per_sec": n as f64 / secs, "p50_ms": round3(lat.percentile_us(50.0) / 1e3),
                       "p99_ms": round3(lat.percentile_us(99.0) / 1e3), "load": load}),
            );
        }
    }
    phases.insert("oltp_solo".into(), Value::Object(solo));

    // Primary-key point queries through SQL.
    eprintln!("lightning: pk select ...");
    let get = db.prepare("SELECT * FROM orders WHERE id = $1")?;
    let mut lat = Latencies::default();
    let mut rng = Rng(7);
    let probe = LoadProbe::start(&db);
    let deadline = Instant::now() + Duration::from_secs_f64(args.secs.min(3.0));
    while Instant::now() < deadline {
        let id = (rng.next() % args.rows) as i64;
        let t = Instant::now();
        let out = get.execute((id,))?;
        lat.record(t.elapsed());
        if rows(&out) != 1 {
            return Err(format!("pk select of {id}: {} rows", rows(&out)).into());
        }
    }
    phases.insert(
        "pk_select".into(),
        json!({"p50_us": round1(lat.percentile_us(50.0)), "p99_us": round1(lat.percentile_us(99.0)),
               "count": lat.0.len(), "load": probe.stop(&db)}),
    );

    // Where a small query's time goes: a statement with no table (session, planning
    // and runtime overhead) and a count over the table (the scan's fixed cost).
    let mut diag = serde_json::Map::new();
    for (name, q) in [
        ("select_1", "SELECT 1"),
        ("count_star", "SELECT count(*) FROM orders"),
    ] {
        let mut lat = Latencies::default();
        for _ in 0..200 {
            let t = Instant::now();
            db.sql(q)?;
            lat.record(t.elapsed());
        }
        diag.insert(name.into(), json!(round3(lat.percentile_us(50.0) / 1e3)));
    }
    phases.insert("diagnostics_p50_ms".into(), Value::Object(diag));

    let m = db.get_metrics();
    phases.insert(
        "columnar_before_olap".into(),
        json!({"segments": m.columnar_segments, "rows": m.columnar_segment_rows,
               "deleted": m.columnar_deleted_rows, "watermark_lag": m.columnar_watermark_lag}),
    );

    // OLAP alone.
    eprintln!("lightning: olap alone ...");
    let probe = LoadProbe::start(&db);
    let (mut lats, _, _) = timed(args.secs, |stop| query_load(&db, &ledger, stop, 0))?;
    let n: usize = lats.iter().map(|l| l.0.len()).sum();
    let load = probe.stop(&db);
    let olap_p50 = p50s(&mut lats);
    phases.insert(
        "olap_solo".into(),
        json!({"queries_per_sec": n as f64 / load["secs"].as_f64().unwrap_or(args.secs),
               "p50_ms": olap_p50, "load": load}),
    );

    // Mixed: writers (table API) and the query thread together.
    let mut mixed = serde_json::Map::new();
    for &w in &args.writers {
        eprintln!("lightning: mixed w{w} ...");
        let probe = LoadProbe::start(&db);
        let ((n, mut wl), q) = timed(args.secs, |stop| {
            std::thread::scope(|s| {
                let q = s.spawn(|| query_load(&db, &ledger, stop, 3));
                let wr = write_load(&db, Api::Table, w, args.rows, &ledger, stop);
                let q = q.join().map_err(|_| "query thread panicked")?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((wr?, q?))
            })
        })?;
        let (mut lats, probes, fresh) = q;
        let load = probe.stop(&db);
        let secs = load["secs"].as_f64().unwrap_or(args.secs);
        mixed.insert(
            format!("w{w}"),
            json!({"commits_per_sec": n as f64 / secs, "writer_p50_ms": round3(wl.percentile_us(50.0) / 1e3),
                   "query_p50_ms": p50s(&mut lats), "probes": probes, "fresh": fresh, "load": load}),
        );
    }
    phases.insert("mixed".into(), Value::Object(mixed));

    // Totals after everything.
    let out = db.sql("SELECT count(*) AS n, sum(amount) AS s FROM orders")?;
    let (got_rows, got_amount) = (scalar_i64(&out, 0)?, scalar_i64(&out, 1)?);
    let want_rows = ledger.rows.load(Ordering::Relaxed) as i64;
    let want_amount = ledger.amount.load(Ordering::Relaxed) as i64;
    phases.insert(
        "totals".into(),
        json!({"rows": got_rows, "expected_rows": want_rows, "amount": got_amount,
               "expected_amount": want_amount, "exact": got_rows == want_rows && got_amount == want_amount}),
    );
    let m = db.get_metrics();
    phases.insert(
        "metrics".into(),
        json!({"memtable_bytes": m.memtable_bytes, "columnar_segments": m.columnar_segments,
               "columnar_segment_rows": m.columnar_segment_rows,
               "columnar_deleted_rows": m.columnar_deleted_rows,
               "columnar_watermark_lag": m.columnar_watermark_lag,
               "write_stall_seconds": m.write_stall_seconds, "commits": m.commits,
               "sql_threads": m.sql_threads, "analytics_nice": m.analytics_nice,
               "process_cpu_seconds": m.process_cpu_seconds, "sql_cpu_seconds": m.sql_cpu_seconds,
               "columnar_cpu_seconds": m.columnar_cpu_seconds,
               "sql_fast_statements": m.sql_fast_statements,
               "sql_planned_statements": m.sql_planned_statements}),
    );
    db.close()?;
    Ok(Value::Object(phases))
}

fn run_duckdb(py: &Path, args: &Args, scratch: &Path) -> Res<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/htap_duckdb.py");
    let spec = json!({
        "db": scratch.join("duck.db"),
        "rows": args.rows,
        "secs": args.secs,
        "writers": args.writers,
        "queries": QUERIES.iter().map(|(n, q)| json!({"name": n, "sql": q})).collect::<Vec<_>>(),
    });
    let spec_path = scratch.join("htap_spec.json");
    let out_path = scratch.join("htap_duckdb.json");
    std::fs::create_dir_all(scratch)?;
    std::fs::write(&spec_path, serde_json::to_string(&spec)?)?;
    let st = std::process::Command::new(py)
        .arg(&script)
        .arg(&spec_path)
        .arg(&out_path)
        .status()?;
    if !st.success() {
        return Err(format!("{} failed: {st}", script.display()).into());
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(&out_path)?)?)
}

fn get(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    }
}

fn markdown(args: &Args, machine: &Machine, r: &Value) -> String {
    let l = &r["lightning"];
    let d = &r["duckdb"];
    let mut md = format!(
        "# HTAP: orders, {} rows preloaded, {} s per phase{}\n\n{}\nCommand: `{}`\n\n",
        human(args.rows as f64),
        args.secs,
        if args.smoke {
            " (smoke: sizes too small to mean anything)"
        } else {
            ""
        },
        machine.markdown(),
        args.command.as_deref().unwrap_or("ldb-htap"),
    );
    if let Some(m) = l.get("metrics") {
        md += &format!(
            "Lightning DB: sql_threads {}, analytics_nice {}; SQL writers use prepared statements, \
             mixed-phase writers the table API. DuckDB: every phase through its Python API with \
             parameters.\n\n",
            m["sql_threads"], m["analytics_nice"]
        );
    }
    if args.writer_rate > 0 {
        md += &format!(
            "Lightning DB's writers capped at {} commits/s in total (`--writer-rate`).\n\n",
            args.writer_rate
        );
    }
    md += "| | Lightning DB | DuckDB | ratio |\n|---|---:|---:|---:|\n";
    let mut row = |name: String, a: Option<f64>, b: Option<f64>, fmt: &dyn Fn(f64) -> String| {
        md += &format!(
            "| {name} | {} | {} | {} |\n",
            a.map_or("–".into(), fmt),
            b.map_or("–".into(), fmt),
            ratio(a, b)
        );
    };
    let k = |x: f64| human(x);
    row(
        "bulk load, rows/s".into(),
        get(l, &["load", "rows_per_sec"]),
        get(d, &["load", "rows_per_sec"]),
        &k,
    );
    for w in &args.writers {
        for api in ["table", "sql"] {
            row(
                format!("OLTP alone, {api}, W={w}: commits/s"),
                get(l, &["oltp_solo", &format!("{api}_w{w}"), "commits_per_sec"]),
                get(d, &["oltp_solo", &format!("sql_w{w}"), "commits_per_sec"]),
                &k,
            );
        }
    }
    let us = |x: f64| format!("{x:.1} µs");
    row(
        "PK SELECT p50".into(),
        get(l, &["pk_select", "p50_us"]),
        get(d, &["pk_select", "p50_us"]),
        &us,
    );
    let ms = |x: f64| format!("{x:.2} ms");
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        let p = |v: &Value, ph: &str| v.get(ph)?.get("p50_ms")?.get(i)?.as_f64();
        row(
            format!("{name} p50 alone"),
            p(l, "olap_solo"),
            p(d, "olap_solo"),
            &ms,
        );
    }
    let pct = |x: f64| format!("{x:.0}%");
    let xx = |x: f64| format!("{x:.2}x");
    for w in &args.writers {
        let wk = format!("w{w}");
        let share = |v: &Value| {
            Some(
                get(v, &["mixed", &wk, "commits_per_sec"])?
                    / get(v, &["oltp_solo", &format!("table_w{w}"), "commits_per_sec"]).or_else(
                        || get(v, &["oltp_solo", &format!("sql_w{w}"), "commits_per_sec"]),
                    )?
                    * 100.0,
            )
        };
        row(
            format!("writers while queries run, W={w}, % of alone"),
            share(l),
            share(d),
            &pct,
        );
        for (i, (name, _)) in QUERIES.iter().enumerate() {
            let slow = |v: &Value| {
                Some(
                    v.get("mixed")?
                        .get(&wk)?
                        .get("query_p50_ms")?
                        .get(i)?
                        .as_f64()?
                        / v.get("olap_solo")?.get("p50_ms")?.get(i)?.as_f64()?,
                )
            };
            row(
                format!("{name} p50 mixed W={w}, x alone"),
                slow(l),
                slow(d),
                &xx,
            );
        }
        let fresh = |v: &Value| {
            let p = get(v, &["mixed", &wk, "probes"])?;
            (p > 0.0).then(|| get(v, &["mixed", &wk, "fresh"]).unwrap_or(0.0) / p * 100.0)
        };
        row(
            format!("freshness W={w}, probes visible at once"),
            fresh(l),
            fresh(d),
            &pct,
        );
    }
    let exact = |v: &Value| v.get("totals")?.get("exact")?.as_bool();
    md += &format!(
        "| totals exact | {} | {} | |\n",
        exact(l).map_or("–".into(), |b| b.to_string()),
        exact(d).map_or("–".into(), |b| b.to_string())
    );
    md += "\nratio = Lightning DB / DuckDB: above 1 is better for rows/s, commits/s and \
           percentages, below 1 for times and slowdowns.\n";
    md += "\nOther load on the machine per phase (% of all cores used by other processes):\n\n";
    md += "| phase | Lightning run | DuckDB run |\n|---|---:|---:|\n";
    let other = |v: &Value, path: &[String]| {
        let mut v = v;
        for p in path {
            v = v.get(p.as_str())?;
        }
        v.get("load")?.get("other_pct")?.as_f64()
    };
    let mut list: Vec<(String, Vec<String>, Vec<String>)> =
        vec![("load".into(), vec!["load".into()], vec!["load".into()])];
    for w in &args.writers {
        for a in ["table", "sql"] {
            list.push((
                format!("OLTP {a} W={w}"),
                vec!["oltp_solo".into(), format!("{a}_w{w}")],
                vec!["oltp_solo".into(), format!("sql_w{w}")],
            ));
        }
    }
    list.push((
        "OLAP alone".into(),
        vec!["olap_solo".into()],
        vec!["olap_solo".into()],
    ));
    for w in &args.writers {
        list.push((
            format!("mixed W={w}"),
            vec!["mixed".into(), format!("w{w}")],
            vec!["mixed".into(), format!("w{w}")],
        ));
    }
    for (name, lp, dp) in list {
        let pct = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.1}%"));
        md += &format!(
            "| {name} | {} | {} |\n",
            pct(other(l, &lp)),
            pct(other(d, &dp))
        );
    }
    md
}
