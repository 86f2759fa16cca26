//! The OLAP harness: analytic SQL over the `kv` table and the 22 TPC-H queries through
//! our `TableProvider` (column segments + fresh rows), and the same queries through
//! DataFusion over our own Parquet export of the same tables and, when a Python with the
//! `duckdb` package is given, DuckDB over that Parquet. Writes `<out>/olap.json` and
//! `<out>/olap.md` with per-query times and ratios.
//!
//! `scripts/baseline_olap_kv.sh` builds and runs it; by hand:
//! `cargo run --release -p lightning-bench --bin ldb-olap -- --sf 1 --out /tmp/r`

use clap::Parser;
use lightning_bench::{Machine, write_results};
use lightning_datasets::tpch;
use lightning_db::datafusion::prelude::{ParquetReadOptions, SessionContext};
use lightning_db::{Database, Durability, LightningDbConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
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
    let db = Database::create(
        scratch.join("db"),
        LightningDbConfig {
            // One bulk job: no fsync per commit; segments are compacted explicitly below.
            durability: Durability::Buffered,
            columnar_background: false,
            columnar_kv: true,
            // Every core, as DuckDB and DataFusion get in the same run.
            sql_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
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

    eprintln!("generating TPC-H SF {} ...", args.sf);
    let stats = tpch::load(&db, args.sf, 65_536, &mut |_, _| {})?;
    let tpch_rows: u64 = stats.rows.iter().map(|(_, n)| n).sum();
    eprintln!(
        "  {tpch_rows} rows loaded in {:.1} s, compacted in {:.1} s",
        stats.load_secs, stats.compact_secs
    );

    // Settle the row store (flush, one full compaction) so no background compaction
    // of the freshly loaded rows competes with the timed queries of either engine.
    let t = Instant::now();
    db.compact()?;
    eprintln!(
        "  row store compacted in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let pq = match &args.keep_parquet {
        Some(d) => d.clone(),
        None => scratch.join("parquet"),
    };
    std::fs::create_dir_all(&pq)?;
    let t = Instant::now();
    let ctx = SessionContext::new();
    let rt = tokio::runtime::Runtime::new()?;
    let mut tables: Vec<&str> = tpch::TABLES.iter().map(|(t, _)| *t).collect();
    tables.push("kv");
    for t in &tables {
        let f = pq.join(format!("{t}.parquet"));
        db.export_parquet(t, &f)?;
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

    let duck = match &args.duckdb_python {
        Some(py) => Some(run_duckdb(py, &pq, &tables, &queries, args.runs, scratch)?),
        None => None,
    };

    let mut figures = Vec::new();
    for (suite, name, sql) in &queries {
        let (ours, rows) = median_of(args.runs, &mut || {
            Ok(db.sql(sql)?.iter().map(|b| b.num_rows()).sum())
        })
        .map_err(|e| format!("{name} (ours): {e}"))?;
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
    db.close()?;

    let md = markdown(
        args,
        &machine,
        &figures,
        tpch_rows,
        &stats,
        kv_load_secs,
        export_secs,
    );
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
        "load": {
            "tpch_rows": tpch_rows,
            "tpch_load_secs": stats.load_secs,
            "tpch_compact_secs": stats.compact_secs,
            "kv_load_and_compact_secs": kv_load_secs,
            "parquet_export_secs": export_secs,
        },
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

/// Runs `scripts/olap_duckdb.py` with `python`: DuckDB over the Parquet files, median of
/// `runs` per query after a warm-up run. Returns `{query name: ms}`.
fn run_duckdb(
    python: &Path,
    pq: &Path,
    tables: &[&str],
    queries: &[(&'static str, String, String)],
    runs: usize,
    scratch: &Path,
) -> Res<serde_json::Map<String, serde_json::Value>> {
    let spec = scratch.join("duckdb_queries.json");
    let out = scratch.join("duckdb_times.json");
    std::fs::write(
        &spec,
        serde_json::to_string(&json!({
            "parquet_dir": pq,
            "tables": tables,
            "runs": runs,
            "queries": queries.iter().map(|(_, n, q)| json!({"name": n, "sql": q})).collect::<Vec<_>>(),
        }))?,
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/olap_duckdb.py");
    eprintln!("running DuckDB over the Parquet export ...");
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

fn markdown(
    args: &Args,
    machine: &Machine,
    figures: &[QueryFigure],
    tpch_rows: u64,
    stats: &tpch::LoadStats,
    kv_load_secs: f64,
    export_secs: f64,
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
    md.push_str(&format!(
        "\nTPC-H SF {} ({tpch_rows} rows: generated and inserted in {:.1} s, column store \
         compacted in {:.1} s); {} kv keys (loaded and compacted in {:.1} s); Parquet \
         export (zstd) of every table in {:.1} s. The row store is fully compacted before \
         any query runs, so no background work overlaps the timings. Median of {} runs (after a warm-up run) per \
         query. Ours = SQL \
         through our TableProvider over column segments + not-yet-compacted rows; \
         DataFusion and DuckDB read our Parquet export.\n",
        args.sf,
        stats.load_secs,
        stats.compact_secs,
        args.kv_keys,
        kv_load_secs,
        export_secs,
        args.runs
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
