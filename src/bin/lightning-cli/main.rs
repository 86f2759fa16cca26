//! `lightning-cli`: inspect, check, back up and move data in and out of a Lightning DB
//! database, and a SQL shell (`lightning-cli <db>`). Errors are one line on stderr and a
//! non-zero exit.

mod serve;
mod shell;
mod split;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lightning_db::arrow::array::RecordBatch;
use lightning_db::encryption::{EncryptionConfig, KeyProvider};
use lightning_db::{Database, LightningDbConfig};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "lightning-cli",
    version,
    about = "Lightning DB command-line tool"
)]
#[command(
    override_usage = "lightning-cli [OPTIONS] <DB>          (the SQL shell on DB, created if missing)\n       lightning-cli [OPTIONS] <COMMAND> ..."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Open the database read-only, for inspection: a shared lock (other read-only
    /// sessions may be open, a writer may not), nothing in the directory written, and
    /// every write refused. The database must exist.
    #[arg(long, global = true)]
    read_only: bool,
    /// The database is encrypted with the key in this file (32 bytes, or 64 hex
    /// digits). A new database is created encrypted.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "passphrase_env"
    )]
    key_file: Option<PathBuf>,
    /// The database is encrypted with the passphrase in this environment variable
    /// (stretched with Argon2id).
    #[arg(long, global = true, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// Cipher for a new encrypted database: aes-256-gcm (default) or
    /// chacha20-poly1305.
    #[arg(long, global = true, default_value = "aes-256-gcm")]
    cipher: lightning_db::encryption::Cipher,
    /// Storage engine for a new database: lsm (default; write-heavy work) or btree
    /// (read- and scan-heavy work). An existing database opens with the engine it was
    /// created with; naming the other one is an error.
    #[arg(long, global = true, value_name = "ENGINE")]
    engine: Option<EngineArg>,
}

/// What `lightning-cli export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportKind {
    /// One Parquet file.
    File,
    /// A directory of hive-partitioned Parquet files, exported incrementally.
    Parquet,
    /// A Delta Lake table, exported incrementally.
    Delta,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Lsm,
    Btree,
}

/// Set once from `--engine` before any command runs.
static ENGINE: std::sync::OnceLock<Option<EngineArg>> = std::sync::OnceLock::new();

/// Set once from `--key-file` / `--passphrase-env` before any command runs.
static ENCRYPTION: std::sync::OnceLock<Option<EncryptionConfig>> = std::sync::OnceLock::new();

fn encryption() -> Option<EncryptionConfig> {
    ENCRYPTION.get().cloned().flatten()
}

/// The configuration every command opens databases with.
fn config() -> LightningDbConfig {
    LightningDbConfig {
        encryption: encryption(),
        ..LightningDbConfig::default()
    }
}

/// A key provider from a key file or a passphrase variable (`--passphrase-env`'s
/// variable must be set and not empty).
fn key_provider(file: Option<PathBuf>, env: Option<String>) -> Res<Option<KeyProvider>> {
    Ok(match (file, env) {
        (Some(f), _) => Some(KeyProvider::file(f)),
        (None, Some(var)) => {
            let p = std::env::var(&var)
                .map_err(|_| format!("the environment variable {var} is not set"))?;
            if p.is_empty() {
                return Err(format!("the environment variable {var} is empty").into());
            }
            Some(KeyProvider::passphrase(p))
        }
        (None, None) => None,
    })
}

/// The file system of a database for tools that read its files: the encrypting one
/// when a key was given.
fn tool_vfs(db: &Path, writing: bool) -> Res<Arc<dyn lightning_db::vfs::Vfs>> {
    Ok(match encryption() {
        Some(e) if writing => lightning_db::encryption::vfs_for_writing(db, &e)?,
        Some(e) => lightning_db::encryption::vfs_for(db, &e)?,
        None => lightning_db::vfs::std_vfs(),
    })
}

/// Set once from `--read-only` before any command runs.
static READ_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn read_only() -> bool {
    READ_ONLY.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Subcommand)]
enum Cmd {
    /// Replace the master key of an encrypted database (give the current one with
    /// --key-file or --passphrase-env). Only the key file is rewritten, atomically.
    Rekey {
        db: PathBuf,
        /// The new key, in a file (32 bytes, or 64 hex digits).
        #[arg(long, value_name = "PATH", conflicts_with = "new_passphrase_env")]
        new_key_file: Option<PathBuf>,
        /// The new passphrase, in this environment variable.
        #[arg(long, value_name = "VAR")]
        new_passphrase_env: Option<String>,
    },
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
    /// Import a CSV (with header), Parquet, JSON lines (.json, .jsonl, .ndjson) or Arrow
    /// IPC (.arrow, .ipc, .feather) file into a table (created if missing, as is the
    /// database).
    Import {
        db: PathBuf,
        file: PathBuf,
        #[arg(long)]
        table: String,
        /// Primary-key columns, comma-separated, of a table the import creates; without
        /// it the new table is keyless (every row appended under a hidden row id).
        #[arg(long)]
        key: Option<String>,
        /// Rows whose key the table already holds replace them (without it, such a row
        /// fails the whole import).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        csv: CsvOptions,
    },
    /// Export a table: to one zstd-compressed Parquet file (`--format file`, the
    /// default), or into a directory of hive-partitioned Parquet files (`--format
    /// parquet`) or a Delta Lake table (`--format delta`). Exporting again into the same
    /// directory writes only what changed since (a new version).
    Export {
        db: PathBuf,
        table: String,
        /// The file (`--format file`) or directory to write.
        out: PathBuf,
        #[arg(long, value_enum, default_value = "file")]
        format: ExportKind,
        /// Partition the directory by these columns (comma-separated, outermost
        /// first; `parquet` and `delta` only).
        #[arg(long, value_delimiter = ',', value_name = "COLS")]
        partition_by: Vec<String>,
        /// Encrypt the file (Parquet modular encryption, AES-GCM) under a key in this
        /// file (32 bytes, or 64 hex digits); it is plaintext otherwise.
        #[arg(long, value_name = "PATH", conflicts_with = "encrypt_passphrase_env")]
        encrypt_key_file: Option<PathBuf>,
        /// Encrypt the file under the passphrase in this environment variable.
        #[arg(long, value_name = "VAR")]
        encrypt_passphrase_env: Option<String>,
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
    /// Run SQL (the database is created if missing): `-c "<sql>"` runs one statement,
    /// `-f FILE` a script; SQL piped on standard input runs as a script; otherwise an
    /// interactive shell (history, statements end with `;` and may span lines, `.help`
    /// lists the meta-commands, `.quit` leaves). A failed statement never ends a script:
    /// every statement runs and the exit status says how many failed.
    Sql {
        db: PathBuf,
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        #[arg(short = 'f', long = "file", conflicts_with = "command")]
        file: Option<PathBuf>,
    },
    /// Serve the database (created if missing) to Arrow Flight SQL clients (ADBC, JDBC,
    /// ...): queries, prepared statements, DML, bulk ingestion and catalog metadata,
    /// with optional bearer-token auth and TLS, and per-statement limits. Runs until
    /// Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// `lightning-cli <DB>`: the SQL shell on DB, as `sql <DB>` opens it.
    #[command(external_subcommand)]
    Shell(Vec<OsString>),
}

/// How a CSV file is read (types are inferred from its first 1,000 rows).
#[derive(clap::Args, Clone)]
struct CsvOptions {
    /// The CSV field delimiter.
    #[arg(long, default_value_t = ',')]
    delimiter: char,
    /// The CSV file has no header line (columns are named column_1, column_2, …).
    #[arg(long)]
    no_header: bool,
    /// A CSV field equal to this text is NULL (an empty field always is).
    #[arg(long)]
    null: Option<String>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The configuration to open the database at `p` with: the storage engine `--engine`
/// names, else the one the database records (the default for a new one).
fn config_for(p: &Path) -> Res<LightningDbConfig> {
    let mut c = config();
    c.storage_engine = match ENGINE.get().copied().flatten() {
        Some(EngineArg::Lsm) => lightning_db::StorageEngine::Lsm,
        Some(EngineArg::Btree) => lightning_db::StorageEngine::BTree,
        None => Database::recorded_storage_engine(p, &c)?.unwrap_or_default(),
    };
    Ok(c)
}

fn open(p: &Path) -> Res<Database> {
    Ok(match read_only() {
        true => Database::open_read_only(p, config_for(p)?)?,
        false => Database::open(p, config_for(p)?)?,
    })
}

/// Open the database at `p`, creating it (and saying so on stderr) when there is none
/// (unless `--read-only`).
fn open_or_create(p: &Path) -> Res<Database> {
    if read_only() {
        return open(p);
    }
    let new = !shell::exists(p);
    let db = Database::open_or_create(p, config_for(p)?)?;
    if new {
        eprintln!("created a new database at {}", p.display());
    }
    Ok(db)
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {human_pos} [{elapsed}, {per_sec}]")
            .expect("valid template"),
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
    let vfs = tool_vfs(db, false);
    let r: Res<_> = match (&vfs, encryption()) {
        (_, None) => lightning_db::check_files(db, percent, &mut say).map_err(Into::into),
        (Ok(vfs), Some(_)) => {
            lightning_db::check_files_with(vfs, db, percent, &mut say).map_err(Into::into)
        }
        (Err(e), Some(_)) => Err(e.to_string().into()),
    };
    pb.finish_and_clear();
    let r = r?;
    println!(
        "ok: manifest, {} tables ({} of {} blocks), {} tree extents, {} WAL records{}, {} of {} column segments checked ({}%)",
        r.tables_checked,
        r.blocks_checked,
        r.blocks_total,
        r.tree_extents_checked,
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
    println!("storage engine: {}", m.storage_engine);
    println!(
        "encryption at rest: {}",
        db.encryption_cipher().map_or("none", |c| c.name())
    );
    println!("lsm tables per level: {:?}", m.tables_per_level);
    println!(
        "disk: wal {} B, tables {} B, tree {} B, manifest {} B, column store {} B, total {} B",
        m.disk.wal_bytes,
        m.disk.sst_bytes,
        m.disk.tree_bytes,
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
fn open_file(
    file: &Path,
    csv: &CsvOptions,
) -> Res<(lightning_db::arrow::datatypes::SchemaRef, Batches)> {
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
            if !csv.delimiter.is_ascii() {
                return Err(
                    format!("--delimiter {:?} is not one ASCII character", csv.delimiter).into(),
                );
            }
            let mut fmt = Format::default()
                .with_header(!csv.no_header)
                .with_delimiter(csv.delimiter as u8);
            if let Some(n) = &csv.null {
                let re = regex::Regex::new(&format!("^(|{})$", regex::escape(n)))?;
                fmt = fmt.with_null_regex(re);
            }
            let mut probe = std::fs::File::open(file)?;
            let (schema, _) = fmt.infer_schema(&mut probe, Some(1000))?;
            let schema = Arc::new(schema);
            let r = lightning_db::arrow::csv::ReaderBuilder::new(schema.clone())
                .with_format(fmt)
                .with_batch_size(64 * 1024)
                .build(f)?;
            Ok((schema, Box::new(r)))
        }
        "json" | "jsonl" | "ndjson" => {
            let mut probe = std::io::BufReader::new(std::fs::File::open(file)?);
            let (schema, _) =
                lightning_db::arrow::json::reader::infer_json_schema(&mut probe, Some(1000))?;
            let schema = Arc::new(schema);
            let r = lightning_db::arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(64 * 1024)
                .build(std::io::BufReader::new(f))?;
            Ok((schema, Box::new(r)))
        }
        "arrow" | "ipc" | "feather" => {
            let r = lightning_db::arrow::ipc::reader::FileReader::try_new(f, None)?;
            Ok((r.schema(), Box::new(r)))
        }
        _ => Err(format!(
            "{}: expected a .csv, .parquet, .json/.jsonl/.ndjson or .arrow/.ipc file",
            file.display()
        )
        .into()),
    }
}

/// Import a file into a table, streaming, all or nothing: a new table appears with all
/// the rows once the last one is in; an existing table gets all rows in one commit.
fn import(
    db: &Path,
    file: &Path,
    table: &str,
    key: Option<String>,
    replace: bool,
    csv: &CsvOptions,
) -> Res<()> {
    let (_, batches) = open_file(file, csv)?;
    let db = open_or_create(db)?;
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
    let n = if exists && replace {
        db.insert_batches(table, rows)?
    } else if exists {
        db.append_batches(table, rows)?
    } else {
        let cols: Vec<&str> = key
            .as_deref()
            .map(|k| k.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let schema = first_schema.ok_or("the file holds no rows")?;
        db.load_table(table, schema, &cols, rows)?
    };
    let secs = pb.elapsed().as_secs_f64();
    pb.finish_and_clear();
    println!(
        "imported {n} rows into {table} in {secs:.2} s ({:.0} rows/s)",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// One path for plaintext and encrypted exports: the database's own streaming writer.
fn export(db: &Path, table: &str, out: &Path, encrypt: Option<KeyProvider>) -> Res<()> {
    let db = open(db)?;
    let pb = spinner("exporting rows");
    pb.enable_steady_tick(std::time::Duration::from_millis(100));
    let n = match &encrypt {
        None => db.export_parquet(table, out)?,
        Some(key) => db.export_parquet_encrypted(table, out, key)?,
    };
    pb.finish_and_clear();
    let how = if encrypt.is_some() {
        " (encrypted)"
    } else {
        ""
    };
    println!("exported {n} rows of {table} to {}{how}", out.display());
    Ok(())
}

/// An incremental export into a directory (partitioned Parquet or Delta Lake).
fn export_dir(
    db: &Path,
    table: &str,
    out: &Path,
    kind: ExportKind,
    partition_by: Vec<String>,
) -> Res<()> {
    let db = open(db)?;
    let format = match kind {
        ExportKind::Delta => lightning_db::ExportFormat::Delta,
        _ => lightning_db::ExportFormat::Parquet,
    };
    let opts = lightning_db::ExportOptions { partition_by };
    let r = db.export_table_with(table, out, format, &opts)?;
    let what = match kind {
        ExportKind::Delta => "Delta table version",
        _ => "export version",
    };
    match r.new_version {
        true => println!(
            "exported {table} to {} ({what} {}): {} rows; wrote {} files ({} rows, {} bytes), removed {} files{}",
            out.display(),
            r.version,
            r.rows,
            r.files_added,
            r.rows_written,
            r.bytes_written,
            r.files_removed,
            if r.full_rewrite {
                " (schema changed: full rewrite)"
            } else {
                ""
            }
        ),
        false => println!(
            "{} is current ({what} {}, {} rows): nothing to write",
            out.display(),
            r.version,
            r.rows
        ),
    }
    Ok(())
}

fn sql(db: &Path, command: Option<String>, file: Option<PathBuf>) -> Res<()> {
    let db = open_or_create(db)?;
    let history = db.path().join(".sql_history");
    let mut sh = shell::Shell::new(db);
    let piped = !std::io::IsTerminal::is_terminal(&std::io::stdin());
    if let Some(q) = command {
        sh.run_script(&q);
    } else if let Some(f) = file {
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        sh.run_script(&text);
    } else if piped {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        sh.run_script(&text);
    } else {
        interactive(&mut sh, &history)?;
    }
    match sh.failed {
        0 => Ok(()),
        1 => Err("1 statement failed".into()),
        n => Err(format!("{n} statements failed").into()),
    }
}

/// The interactive shell: line editing and history; a failed statement prints its
/// error and the shell goes on.
fn interactive(sh: &mut shell::Shell, history: &Path) -> Res<()> {
    let mut rl = rustyline::DefaultEditor::new()?;
    let _ = rl.load_history(history);
    loop {
        let prompt = if sh.pending() {
            "       ..> "
        } else {
            "lightning> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.trim_end());
                }
                if sh.line(&line) == shell::Flow::Quit {
                    break;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => sh.discard(),
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // A read-only session writes nothing into the database directory.
    if !read_only() {
        let _ = rl.save_history(history);
    }
    // Errors were shown as they happened; leaving the shell is not a failure.
    sh.failed = 0;
    Ok(())
}

fn run(cli: Cli) -> Res<()> {
    READ_ONLY.store(cli.read_only, std::sync::atomic::Ordering::Relaxed);
    let key = key_provider(cli.key_file.clone(), cli.passphrase_env.clone())?;
    let _ = ENCRYPTION.set(key.map(|k| EncryptionConfig::new(cli.cipher, k)));
    let _ = ENGINE.set(cli.engine);
    let Some(cmd) = cli.cmd else {
        return Err("give a database path (the SQL shell) or a command; --help lists them".into());
    };
    if cli.read_only
        && matches!(
            cmd,
            Cmd::Repair { .. } | Cmd::Restore { .. } | Cmd::Rekey { .. }
        )
    {
        return Err(
            "repair, restore and rekey write a database; they cannot run with --read-only".into(),
        );
    }
    match cmd {
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
            let db = open_or_create(&db)?;
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
            replace,
            csv,
        } => import(&db, &file, &table, key, replace, &csv),
        Cmd::Export {
            db,
            table,
            out,
            format,
            partition_by,
            encrypt_key_file,
            encrypt_passphrase_env,
        } => {
            let key = key_provider(encrypt_key_file, encrypt_passphrase_env)?;
            match format {
                ExportKind::File if partition_by.is_empty() => export(&db, &table, &out, key),
                ExportKind::File => Err("--partition-by needs --format parquet or delta".into()),
                _ if key.is_some() => {
                    Err("encrypted exports are single files (--format file)".into())
                }
                _ => export_dir(&db, &table, &out, format, partition_by),
            }
        }
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
            let r = match encryption() {
                None => lightning_db::backup_files(&db, &dir).map_err(Into::into),
                Some(_) => tool_vfs(&db, false).and_then(|vfs| {
                    lightning_db::backup_files_with(&vfs, &db, &dir).map_err(Into::into)
                }),
            };
            pb.finish_and_clear();
            r?;
            println!("backup written to {}", dir.display());
            Ok(())
        }
        Cmd::Sql { db, command, file } => sql(&db, command, file),
        Cmd::Serve(a) => {
            let db = open_or_create(a.db())?;
            serve::serve(a, db)
        }
        Cmd::Rekey {
            db,
            new_key_file,
            new_passphrase_env,
        } => {
            if encryption().is_none() {
                return Err(
                    "rekey needs the current key: give --key-file or --passphrase-env".into(),
                );
            }
            let new = key_provider(new_key_file, new_passphrase_env)?
                .ok_or("give the new key with --new-key-file or --new-passphrase-env")?;
            let d = open(&db)?;
            d.rotate_key(new)?;
            d.close()?;
            println!("rekeyed {}: only the new key opens it now", db.display());
            Ok(())
        }
        // (`lightning-cli DB --read-only`: flags after DB reach here unparsed.)
        Cmd::Shell(args) => match args.as_slice() {
            [db] => sql(Path::new(db), None, None),
            [db, flag] if flag == "--read-only" => {
                READ_ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
                sql(Path::new(db), None, None)
            }
            _ => Err(format!(
                "unknown command {:?}; give a database path alone for the SQL shell, or \
                 a command (--help lists them)",
                args.first()
                    .map(|a| a.to_string_lossy())
                    .unwrap_or_default()
            )
            .into()),
        },
        Cmd::Repair { db, truncate_wal } => {
            let opts = lightning_db::RepairOptions { truncate_wal };
            let r = match encryption() {
                None => lightning_db::repair(&db, opts)?,
                Some(_) => lightning_db::repair_with(&tool_vfs(&db, true)?, &db, opts)?,
            };
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
            match encryption() {
                None => lightning_db::backup_files(&backup, &db)?,
                Some(_) => {
                    lightning_db::backup_files_with(&tool_vfs(&backup, false)?, &backup, &db)?
                }
            }
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
