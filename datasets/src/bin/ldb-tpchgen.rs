//! Generates TPC-H at any scale factor straight into a new Lightning database.
//!
//! ```text
//! cargo run --release -p lightning-datasets -- --sf 1 ./tpch.ldb
//! cargo run --release -p lightning-datasets -- --sf 0.1 --export-parquet ./pq ./tpch.ldb
//! ```

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use lightning_datasets::tpch;
use lightning_db::{Database, Durability, LightningDbConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ldb-tpchgen",
    about = "Generate TPC-H (tpchgen-arrow) straight into a new Lightning database"
)]
struct Args {
    /// Scale factor (1 = about 8.7 million rows, 6 million of them in lineitem).
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Rows per inserted batch (one transaction each).
    #[arg(long, default_value_t = 65536)]
    batch_rows: usize,
    /// Also export every table to `<DIR>/<table>.parquet` (zstd) when done.
    #[arg(long, value_name = "DIR")]
    export_parquet: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
    /// Where to create the database (must not exist).
    db: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> lightning_db::Result<()> {
    // The load is one bulk job: commits need not be fsynced one by one; closing the
    // database flushes everything to SSTs and segments.
    let db = Database::create(
        &args.db,
        LightningDbConfig {
            durability: Durability::Buffered,
            ..Default::default()
        },
    )?;
    let total: u64 = tpch::TABLES
        .iter()
        .map(|(t, _)| tpch::row_estimate(t, args.sf))
        .sum();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{elapsed_precise}] {wide_bar} {human_pos}/~{human_len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut done_before = 0u64;
    let mut current = String::new();
    let mut current_rows = 0u64;
    let stats = tpch::load(&db, args.sf, args.batch_rows, &mut |table, rows| {
        if table != current {
            done_before += current_rows;
            current = table.to_string();
            bar.set_message(current.clone());
        }
        current_rows = rows;
        bar.set_position(done_before + rows);
    })?;
    bar.finish_and_clear();
    let rows: u64 = stats.rows.iter().map(|(_, n)| n).sum();
    println!(
        "TPC-H SF {}: {} rows in {:.1} s ({:.0} rows/s), column store compacted in {:.1} s",
        args.sf,
        rows,
        stats.load_secs,
        rows as f64 / stats.load_secs.max(1e-9),
        stats.compact_secs
    );
    for (t, n) in &stats.rows {
        println!("  {t:<9} {n:>10} rows");
    }
    if let Some(dir) = &args.export_parquet {
        std::fs::create_dir_all(dir).map_err(|e| lightning_db::Error::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        for (t, _) in tpch::TABLES {
            let path = dir.join(format!("{t}.parquet"));
            let n = db.export_parquet(t, &path)?;
            println!("  exported {n} rows to {}", path.display());
        }
    }
    db.close()?;
    Ok(())
}
