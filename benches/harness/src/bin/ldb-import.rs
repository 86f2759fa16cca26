//! The import harness: TPC-H generated to Parquet once, then imported through SQL, one
//! `INSERT INTO <table> SELECT * FROM <external Parquet table>` per table, into keyed
//! tables (the TPC-H primary keys: every row's key checked for duplicates) and into
//! keyless ones, on a durable default database; and, when a Python with the `duckdb`
//! package is given, DuckDB's `CREATE TABLE … AS SELECT * FROM read_parquet(…)` and
//! its keyed equivalent (`CREATE TABLE … (… PRIMARY KEY …)` + `INSERT … SELECT`) into a
//! database file, in the same run. Reports rows/s per table and overall, and the peak
//! resident memory of each of our statements. Writes `<out>/import.json` and `.md`.
//!
//! `scripts/baseline_import.sh` builds and runs it; by hand:
//! `cargo run --release -p lightning-bench --features olap --bin ldb-import -- --sf 1 --out /tmp/r`

use clap::Parser;
use lightning_bench::{Machine, human, write_results};
use lightning_datasets::tpch;
use lightning_db::{Database, LightningDbConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser, Clone)]
#[command(
    name = "ldb-import",
    about = "TPC-H imported through SQL INSERT … SELECT from Parquet: ours vs DuckDB"
)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Where the databases (and, without --parquet-dir, the Parquet files) go.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Parquet files to import (`<table>.parquet`); generated there when missing.
    #[arg(long)]
    parquet_dir: Option<PathBuf>,
    /// A Python interpreter with the `duckdb` package: also time DuckDB.
    #[arg(long)]
    duckdb_python: Option<PathBuf>,
    /// Where to write import.json / import.md.
    #[arg(long, default_value = "benchmark_results/import")]
    out: PathBuf,
    /// Import only these tables (comma-separated; profiling).
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    /// Only into keyless tables (profiling; the report then has no keyed figures).
    #[arg(long)]
    keyless_only: bool,
    /// The command line to record in the results.
    #[arg(long, default_value = "")]
    command: String,
}

/// One table imported one way.
struct Figure {
    table: &'static str,
    rows: u64,
    secs: f64,
    /// Peak resident memory during the statement above what the process held before.
    peak_rss: u64,
}

/// Peak resident memory of this process since the last [`reset_peak_rss`] (Linux).
fn peak_rss() -> u64 {
    status_kb("VmHWM:")
}

/// Resident memory of this process now (Linux).
fn rss() -> u64 {
    status_kb("VmRSS:")
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    lightning_bench::run_in_scratch("import", args.data_dir.as_deref(), |base, scratch| {
        run_in(&args, base, scratch)
    })
}

fn run_in(args: &Args, base: &Path, scratch: &Path) -> Res<()> {
    let machine = Machine::describe(base);
    let pq = args
        .parquet_dir
        .clone()
        .unwrap_or_else(|| base.join(format!("tpch-sf{}-parquet", args.sf)));
    if tpch::TABLES
        .iter()
        .any(|(t, _)| !pq.join(format!("{t}.parquet")).exists())
    {
        eprintln!("generating TPC-H SF {} into {} ...", args.sf, pq.display());
        let t = Instant::now();
        tpch::write_parquet(&pq, args.sf)?;
        eprintln!("  generated in {:.1} s", t.elapsed().as_secs_f64());
    }
    let mut ours = Vec::new();
    for keyed in [true, false] {
        if keyed && args.keyless_only {
            continue;
        }
        let label = if keyed { "keyed" } else { "keyless" };
        eprintln!("importing into {label} tables ...");
        let db = Database::create(scratch.join(label), LightningDbConfig::default())?;
        let mut figures = Vec::new();
        for (t, pk) in tpch::TABLES {
            if !args.tables.is_empty() && !args.tables.iter().any(|x| x == t) {
                continue;
            }
            let path = pq.join(format!("{t}.parquet"));
            let mut before = 0;
            let mut start = Instant::now();
            let rows = lightning_bench::sql_import(
                &db,
                t,
                if keyed { pk } else { &[] },
                &path,
                &mut || {
                    reset_peak_rss();
                    before = rss();
                    start = Instant::now();
                },
            )?;
            let secs = start.elapsed().as_secs_f64();
            // What the statement added to the process's resident memory at its peak.
            let peak = peak_rss().saturating_sub(before);
            eprintln!(
                "  {t:<9} {rows:>9} rows in {secs:>6.2} s = {:>7}/s, peak RSS +{} MiB",
                human(rows as f64 / secs),
                peak >> 20
            );
            figures.push(Figure {
                table: t,
                rows,
                secs,
                peak_rss: peak,
            });
        }
        // Every row is visible through SQL.
        for f in &figures {
            let got =
                lightning_bench::count(&db.sql(&format!("SELECT count(*) FROM {}", f.table))?)?;
            if got != f.rows {
                return Err(format!("{}: {} rows imported, {got} counted", f.table, f.rows).into());
            }
        }
        db.close()?;
        ours.push((label, figures));
    }
    if args.keyless_only {
        let (rows, secs) = ours[0]
            .1
            .iter()
            .fold((0, 0.0), |(r, s), f| (r + f.rows, s + f.secs));
        eprintln!(
            "keyless: {rows} rows in {secs:.2} s = {}/s",
            human(rows as f64 / secs)
        );
        return Ok(());
    }
    let duck = match &args.duckdb_python {
        Some(py) => Some(run_duckdb(py, &pq, scratch)?),
        None => None,
    };

    let total = |f: &[Figure]| {
        let rows: u64 = f.iter().map(|x| x.rows).sum();
        let secs: f64 = f.iter().map(|x| x.secs).sum();
        (rows, secs)
    };
    let mut md = String::new();
    md.push_str(&format!(
        "# TPC-H SF {} imported through SQL from Parquet\n\n{}\n\n",
        args.sf,
        machine.markdown()
    ));
    md.push_str(
        "Ours: `INSERT INTO t SELECT * FROM ext_t` (external Parquet table) into a table \
         created with the TPC-H primary key (keyed) or without one (keyless), durable \
         default configuration, statements run one after another. DuckDB: `CREATE TABLE t \
         AS SELECT * FROM read_parquet(...)` (keyless) and `CREATE TABLE t (... PRIMARY KEY \
         ...)` + `INSERT INTO t SELECT * FROM read_parquet(...)` (keyed), into a database \
         file.\n\n",
    );
    md.push_str("| table | rows | ours keyed rows/s | ours keyless rows/s | statement's peak RSS growth keyed / keyless MiB |");
    if duck.is_some() {
        md.push_str(" DuckDB keyed rows/s | DuckDB CTAS rows/s |");
    }
    md.push_str("\n|---|---:|---:|---:|---:|");
    if duck.is_some() {
        md.push_str("---:|---:|");
    }
    md.push('\n');
    let (k, nk) = (&ours[0].1, &ours[1].1);
    let mut json_tables = Vec::new();
    for (a, b) in k.iter().zip(nk.iter()) {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} |",
            a.table,
            a.rows,
            human(a.rows as f64 / a.secs),
            human(b.rows as f64 / b.secs),
            a.peak_rss >> 20,
            b.peak_rss >> 20
        ));
        let mut j = json!({
            "table": a.table, "rows": a.rows,
            "keyed_secs": a.secs, "keyless_secs": b.secs,
            "keyed_peak_rss": a.peak_rss, "keyless_peak_rss": b.peak_rss,
        });
        if let Some(d) = &duck {
            let ds = |kind: &str| d[kind][a.table].as_f64().unwrap_or(f64::NAN);
            md.push_str(&format!(
                " {} | {} |",
                human(a.rows as f64 / ds("keyed")),
                human(a.rows as f64 / ds("ctas"))
            ));
            j["duckdb_keyed_secs"] = json!(ds("keyed"));
            j["duckdb_ctas_secs"] = json!(ds("ctas"));
        }
        md.push('\n');
        json_tables.push(j);
    }
    let ((rk, sk), (rn, sn)) = (total(k), total(nk));
    md.push_str(&format!(
        "| **all** | {rk} | **{}** | **{}** | |",
        human(rk as f64 / sk),
        human(rn as f64 / sn)
    ));
    let mut summary = json!({
        "keyed_rows_per_sec": rk as f64 / sk,
        "keyless_rows_per_sec": rn as f64 / sn,
        "keyed_secs": sk, "keyless_secs": sn,
    });
    if let Some(d) = &duck {
        let sum = |kind: &str| -> f64 {
            d[kind]
                .as_object()
                .map_or(0.0, |m| m.values().filter_map(|v| v.as_f64()).sum())
        };
        md.push_str(&format!(
            " **{}** | **{}** |",
            human(rk as f64 / sum("keyed")),
            human(rk as f64 / sum("ctas"))
        ));
        summary["duckdb_keyed_rows_per_sec"] = json!(rk as f64 / sum("keyed"));
        summary["duckdb_ctas_rows_per_sec"] = json!(rk as f64 / sum("ctas"));
        summary["duckdb_version"] = d["version"].clone();
    }
    md.push_str(&format!("\n\nCommand: `{}`\n", args.command));
    let json = json!({
        "sf": args.sf,
        "machine": machine,
        "command": args.command,
        "summary": summary,
        "tables": json_tables,
    });
    write_results(&args.out, "import", &json, &md)?;
    Ok(())
}

/// Runs `scripts/import_duckdb.py`: DuckDB's imports of the same Parquet files.
fn run_duckdb(python: &Path, pq: &Path, scratch: &Path) -> Res<serde_json::Value> {
    let out = scratch.join("duckdb_import.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/import_duckdb.py");
    eprintln!("running DuckDB's imports ...");
    let status = std::process::Command::new(python)
        .arg(&script)
        .arg(pq)
        .arg(scratch)
        .arg(&out)
        .status()
        .map_err(|e| format!("starting {}: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("{} {} failed: {status}", python.display(), script.display()).into());
    }
    Ok(serde_json::from_slice(&std::fs::read(&out)?)?)
}
