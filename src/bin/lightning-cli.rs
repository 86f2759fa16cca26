//! `lightning-cli`: inspect, check, back up and move data in and out of a Lightning DB
//! database. Errors are one line on stderr and a non-zero exit.

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lightning_db::arrow::array::RecordBatch;
use lightning_db::{Database, LightningDbConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "lightning-cli",
    version,
    about = "Lightning DB command-line tool"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify checksums of the manifest, tables, WAL and column segments.
    Check {
        db: PathBuf,
        /// Percentage of table blocks and column segments to verify (100 = all).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
        checksums: u8,
        #[arg(long)]
        verbose: bool,
    },
    /// Print sizes, counters and health.
    Stats { db: PathBuf },
    /// Print the value of a key.
    Get { db: PathBuf, key: String },
    /// Set a key to a value.
    Put {
        db: PathBuf,
        key: String,
        value: String,
    },
    /// Delete a key.
    Delete { db: PathBuf, key: String },
    /// Print key-value pairs in key order.
    Scan {
        db: PathBuf,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        reverse: bool,
    },
    /// Import a CSV (with header) or Parquet file into a table (created if missing).
    Import {
        db: PathBuf,
        file: PathBuf,
        #[arg(long)]
        table: String,
        /// Primary-key columns, comma-separated, of a table the import creates; without
        /// it the new table is keyless (every row appended under a hidden row id).
        #[arg(long)]
        key: Option<String>,
    },
    /// Export a table to a zstd-compressed Parquet file.
    Export {
        db: PathBuf,
        table: String,
        out: PathBuf,
    },
    /// Flush and fully compact the database.
    Compact { db: PathBuf },
    /// Write a consistent copy of a database, also while another process writes to it.
    Backup { db: PathBuf, dir: PathBuf },
    /// Restore a backup into a new database directory.
    Restore { backup: PathBuf, db: PathBuf },
    /// Repair a database that does not open: rebuild a missing or damaged CURRENT from
    /// the newest valid manifest, and report WAL damage.
    Repair {
        db: PathBuf,
        /// Also drop the WAL from its first damaged record on (the dropped bytes are
        /// saved beside the segment and described in the report).
        #[arg(long)]
        truncate_wal: bool,
    },
    /// Run SQL: `-c "<query>"` runs one statement; without it, an interactive shell
    /// (history, statements end with `;` and may span lines, `\q` quits).
    Sql {
        db: PathBuf,
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
    },
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn open(p: &Path) -> Res<Database> {
    Ok(Database::open(p, LightningDbConfig::default())?)
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} [{elapsed}]").expect("valid template"),
    );
    pb.set_message(msg.to_string());
    pb
}

fn check(db: &Path, percent: u8, verbose: bool) -> Res<()> {
    if !db.join("CURRENT").exists() {
        return Err(format!("no database found at {}", db.display()).into());
    }
    let pb = spinner("checking");
    let mut say = |m: &str| {
        pb.inc(1);
        if verbose {
            pb.suspend(|| println!("{m}"));
        }
    };
    let r = lightning_db::check_files(db, percent, &mut say);
    pb.finish_and_clear();
    let r = r?;
    println!(
        "ok: manifest, {} tables ({} of {} blocks), {} WAL records{}, {} of {} column segments checked ({}%)",
        r.tables_checked,
        r.blocks_checked,
        r.blocks_total,
        r.wal_records_checked,
        if r.wal_torn_tails > 0 {
            " (torn tail, repaired on open)"
        } else {
            ""
        },
        r.segments_checked,
        r.segments_total,
        percent
    );
    Ok(())
}

fn stats(db: &Path) -> Res<()> {
    let db = open(db)?;
    let m = db.get_metrics();
    let h = db.health_check()?;
    println!("path: {}", db.path().display());
    println!("tables: {}", db.list_tables()?.join(", "));
    println!("lsm tables per level: {:?}", m.tables_per_level);
    println!(
        "disk: wal {} B, tables {} B, manifest {} B, column store {} B, total {} B",
        m.disk.wal_bytes,
        m.disk.sst_bytes,
        m.disk.manifest_bytes,
        m.disk.columnar_bytes,
        m.disk.total_bytes
    );
    println!(
        "column segments: {}, watermark lag: {}",
        m.columnar_segments, m.columnar_watermark_lag
    );
    println!(
        "health: {}",
        if h.is_healthy {
            "healthy".to_string()
        } else {
            h.issues.join("; ")
        }
    );
    Ok(())
}

fn scan(
    db: &Path,
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: usize,
    reverse: bool,
) -> Res<()> {
    let db = open(db)?;
    let it = match (&prefix, reverse) {
        (Some(p), false) => db.scan_prefix(p.as_bytes())?,
        (Some(_), true) => return Err("--prefix and --reverse cannot be combined".into()),
        (None, false) => db.scan(
            start.as_deref().map(str::as_bytes),
            end.as_deref().map(str::as_bytes),
        )?,
        (None, true) => db.scan_reverse(
            start.as_deref().map(str::as_bytes),
            end.as_deref().map(str::as_bytes),
        )?,
    };
    for r in it.take(limit) {
        let (k, v) = r?;
        println!(
            "{}\t{}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    Ok(())
}

type Batches =
    Box<dyn Iterator<Item = Result<RecordBatch, lightning_db::arrow::error::ArrowError>>>;

/// Open a CSV (with header) or Parquet file as a stream of record batches.
fn open_file(file: &Path) -> Res<(lightning_db::arrow::datatypes::SchemaRef, Batches)> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    let f =
        std::fs::File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    match ext.as_str() {
        "parquet" => {
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?
                .with_batch_size(64 * 1024)
                .build()?;
            Ok((
                lightning_db::arrow::array::RecordBatchReader::schema(&r),
                Box::new(r),
            ))
        }
        "csv" => {
            use lightning_db::arrow::csv::reader::Format;
            let fmt = Format::default().with_header(true);
            let mut probe = std::fs::File::open(file)?;
            let (schema, _) = fmt.infer_schema(&mut probe, Some(1000))?;
            let schema = Arc::new(schema);
            let r = lightning_db::arrow::csv::ReaderBuilder::new(schema.clone())
                .with_format(fmt)
                .with_batch_size(64 * 1024)
                .build(f)?;
            Ok((schema, Box::new(r)))
        }
        _ => Err(format!("{}: expected a .csv or .parquet file", file.display()).into()),
    }
}

/// Import a file into a table, streaming, all or nothing: a new table appears with all
/// the rows once the last one is in; an existing table gets all rows in one commit.
fn import(db: &Path, file: &Path, table: &str, key: Option<String>) -> Res<()> {
    let (_, batches) = open_file(file)?;
    let db = open(db)?;
    let exists = db.list_tables()?.iter().any(|t| t == table);
    let pb = spinner("importing rows");
    let name = file.display().to_string();
    let mut first_schema = None;
    let mut batches = batches.peekable();
    if let Some(Ok(b)) = batches.peek() {
        first_schema = Some(lightning_db::to_table_types(b)?.schema());
    }
    let rows = batches.map(|b| -> lightning_db::Result<RecordBatch> {
        let b = b.map_err(|e| lightning_db::Error::Arrow(format!("{name}: {e}")))?;
        let b = lightning_db::to_table_types(&b)?;
        pb.inc(b.num_rows() as u64);
        Ok(b)
    });
    let n = if exists {
        db.insert_batches(table, rows)?
    } else {
        let cols: Vec<&str> = key
            .as_deref()
            .map(|k| k.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let schema = first_schema.ok_or("the file holds no rows")?;
        db.load_table(table, schema, &cols, rows)?
    };
    pb.finish_and_clear();
    println!("imported {n} rows into {table}");
    Ok(())
}

fn export(db: &Path, table: &str, out: &Path) -> Res<()> {
    let db = open(db)?;
    let schema = db.table_schema(table)?;
    let f =
        std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, Some(props))?;
    let pb = spinner("exporting rows");
    let mut n = 0;
    for b in db.scan_table(table, 65536)? {
        n += b.num_rows();
        pb.inc(b.num_rows() as u64);
        w.write(&b)?;
    }
    w.close()?;
    pb.finish_and_clear();
    println!("exported {n} rows of {table} to {}", out.display());
    Ok(())
}

fn print_result(batches: &[RecordBatch]) -> Res<()> {
    if batches.is_empty()
        || batches
            .iter()
            .all(|b| b.num_rows() == 0 && b.num_columns() == 0)
    {
        println!("OK");
        return Ok(());
    }
    println!(
        "{}",
        lightning_db::arrow::util::pretty::pretty_format_batches(batches)?
    );
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("({rows} row{})", if rows == 1 { "" } else { "s" });
    Ok(())
}

fn sql(db: &Path, command: Option<String>) -> Res<()> {
    let db = Database::open(db, LightningDbConfig::default())?;
    if let Some(q) = command {
        return print_result(&db.sql(&q)?);
    }
    let mut rl = rustyline::DefaultEditor::new()?;
    let history = db.path().join(".sql_history");
    let _ = rl.load_history(&history);
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "lightning> "
        } else {
            "       ..> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if buf.is_empty() && (t == "\\q" || t == "quit" || t == "exit") {
                    break;
                }
                buf.push_str(&line);
                buf.push('\n');
                if t.ends_with(';') {
                    let q = std::mem::take(&mut buf);
                    let _ = rl.add_history_entry(q.trim());
                    let started = std::time::Instant::now();
                    match db.sql(&q) {
                        Ok(r) => {
                            print_result(&r)?;
                            println!("{:.3}s", started.elapsed().as_secs_f64());
                        }
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => buf.clear(),
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = rl.save_history(&history);
    Ok(())
}

fn run(cli: Cli) -> Res<()> {
    match cli.cmd {
        Cmd::Check {
            db,
            checksums,
            verbose,
        } => check(&db, checksums, verbose),
        Cmd::Stats { db } => stats(&db),
        Cmd::Get { db, key } => {
            let db = open(&db)?;
            match db.get(key.as_bytes())? {
                Some(v) => println!("{}", String::from_utf8_lossy(&v)),
                None => return Err(format!("key {key:?} not found").into()),
            }
            Ok(())
        }
        Cmd::Put { db, key, value } => {
            let db = Database::open_or_create(&db, LightningDbConfig::default())?;
            db.put(key.as_bytes(), value.as_bytes())?;
            Ok(())
        }
        Cmd::Delete { db, key } => Ok(open(&db)?.delete(key.as_bytes())?),
        Cmd::Scan {
            db,
            prefix,
            start,
            end,
            limit,
            reverse,
        } => scan(&db, prefix, start, end, limit, reverse),
        Cmd::Import {
            db,
            file,
            table,
            key,
        } => import(&db, &file, &table, key),
        Cmd::Export { db, table, out } => export(&db, &table, &out),
        Cmd::Compact { db } => {
            let db = open(&db)?;
            let pb = spinner("compacting");
            pb.enable_steady_tick(std::time::Duration::from_millis(100));
            db.compact()?;
            pb.finish_and_clear();
            println!("compacted");
            Ok(())
        }
        Cmd::Backup { db, dir } => {
            if !db.join("CURRENT").exists() {
                return Err(format!("no database found at {}", db.display()).into());
            }
            let pb = spinner("backing up");
            pb.enable_steady_tick(std::time::Duration::from_millis(100));
            let r = lightning_db::backup_files(&db, &dir);
            pb.finish_and_clear();
            r?;
            println!("backup written to {}", dir.display());
            Ok(())
        }
        Cmd::Sql { db, command } => sql(&db, command),
        Cmd::Repair { db, truncate_wal } => {
            let r = lightning_db::repair(&db, lightning_db::RepairOptions { truncate_wal })?;
            for n in &r.notes {
                println!("{n}");
            }
            if r.needs_truncate() {
                return Err(
                    "the WAL is damaged; rerun with --truncate-wal to drop everything from the damaged record on"
                        .into(),
                );
            }
            println!("repaired {}", db.display());
            Ok(())
        }
        Cmd::Restore { backup, db } => {
            if db.exists() {
                return Err(
                    format!("{} already exists; restore into a new path", db.display()).into(),
                );
            }
            lightning_db::backup_files(&backup, &db)?;
            // Opening replays the copied WAL and proves the copy is usable.
            let d = open(&db)?;
            d.close()?;
            println!("restored {} into {}", backup.display(), db.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
