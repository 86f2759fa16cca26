//! `lightning-ballista`: a Ballista scheduler and executors that read Lightning tables,
//! and a client that publishes a database and runs queries on the cluster.
//!
//! ```text
//! lightning-ballista publish <db> <published-dir>      # checkpoint + column segments
//! lightning-ballista scheduler --port 50050
//! lightning-ballista executor --port 50051 --grpc-port 50052 --scheduler-port 50050
//! lightning-ballista run --scheduler df://127.0.0.1:50050 --db <published-dir> --tpch --compare
//! ```

use clap::{Parser, Subcommand};
use lightning_distributed::{LightningLogicalCodec, LightningPhysicalCodec, compare};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "lightning-ballista",
    about = "Lightning DB tables on a Ballista cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate TPC-H at scale factor `--sf` into a new database (for smoke runs).
    Tpch {
        #[arg(long, default_value_t = 0.01)]
        sf: f64,
        db: PathBuf,
    },
    /// Publish a read-only copy of a database for the cluster: a checkpoint with every
    /// table's column segments built.
    Publish {
        db: PathBuf,
        dir: PathBuf,
        /// Rows per segment batch, the unit a scan task reads (default: the
        /// database's); smaller batches spread a small table over more tasks.
        #[arg(long)]
        batch_rows: Option<usize>,
    },
    /// Run a Ballista scheduler on 127.0.0.1.
    Scheduler {
        #[arg(long, default_value_t = 50050)]
        port: u16,
    },
    /// Run a Ballista executor on 127.0.0.1.
    Executor {
        #[arg(long, default_value_t = 50051)]
        port: u16,
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        #[arg(long, default_value_t = 50050)]
        scheduler_port: u16,
        /// Tasks it runs at once.
        #[arg(long, default_value_t = 2)]
        concurrent_tasks: usize,
        /// Where it keeps shuffle files.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Its name in the scan-task log lines.
        #[arg(long)]
        name: Option<String>,
    },
    /// Run queries on the cluster against a published database.
    Run {
        #[arg(long, default_value = "df://127.0.0.1:50050")]
        scheduler: String,
        /// The published database (see `publish`), at the same path for every process.
        #[arg(long)]
        db: PathBuf,
        /// The 22 TPC-H queries.
        #[arg(long)]
        tpch: bool,
        /// A file of SQL queries separated by `;` (instead of `--tpch`).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also run each query through `db.sql` on the same database and fail on any
        /// difference.
        #[arg(long)]
        compare: bool,
        /// Runs per query (the median is reported).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Partitions a scan is split into (tasks per stage).
        #[arg(long, default_value_t = 4)]
        partitions: usize,
        /// Write the timings as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let res: Res<()> = match cli.cmd {
        Cmd::Tpch { sf, db } => tpch(sf, &db),
        Cmd::Publish {
            db,
            dir,
            batch_rows,
        } => publish(&db, &dir, batch_rows),
        Cmd::Scheduler { port } => rt.block_on(scheduler(port)),
        Cmd::Executor {
            port,
            grpc_port,
            scheduler_port,
            concurrent_tasks,
            work_dir,
            name,
        } => rt.block_on(executor(
            port,
            grpc_port,
            scheduler_port,
            concurrent_tasks,
            work_dir,
            name.unwrap_or_else(|| format!("executor-{port}")),
        )),
        Cmd::Run {
            scheduler,
            db,
            tpch,
            file,
            compare,
            repeat,
            partitions,
            json,
        } => {
            let queries = match (tpch, file) {
                (true, None) => (1..=22)
                    .map(|n| {
                        let q = lightning_datasets::tpch::query(n).expect("22 queries");
                        (format!("q{n:02}"), q.to_string())
                    })
                    .collect(),
                (false, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))
                    .map(|t| {
                        t.split(';')
                            .map(str::trim)
                            .filter(|q| !q.is_empty())
                            .enumerate()
                            .map(|(i, q)| (format!("query{}", i + 1), q.to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => {
                    eprintln!("error: give --tpch or --file");
                    std::process::exit(2);
                }
            };
            rt.block_on(run(
                &scheduler, &db, queries, compare, repeat, partitions, json,
            ))
        }
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn tpch(sf: f64, db: &std::path::Path) -> Res<()> {
    let d = lightning_db::Database::create(db, lightning_db::LightningDbConfig::default())?;
    let s = lightning_datasets::tpch::load(&d, sf, 100_000, &mut |_, _| {})?;
    let rows: u64 = s.rows.iter().map(|(_, n)| n).sum();
    println!("generated TPC-H SF {sf} into {}: {rows} rows", db.display());
    Ok(())
}

fn publish(db: &std::path::Path, dir: &std::path::Path, batch_rows: Option<usize>) -> Res<()> {
    let t = Instant::now();
    let d = lightning_db::Database::open(db, lightning_db::LightningDbConfig::default())?;
    let rows = lightning_distributed::publish_with(&d, dir, batch_rows)?;
    println!(
        "published {} as {} ({rows} rows in column segments) in {:.2} s",
        db.display(),
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn scheduler(port: u16) -> Res<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let config = SchedulerConfig {
        bind_host: "127.0.0.1".into(),
        external_host: "127.0.0.1".into(),
        bind_port: port,
        override_logical_codec: Some(Arc::new(LightningLogicalCodec::new())),
        override_physical_codec: Some(Arc::new(LightningPhysicalCodec::new())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    eprintln!("lightning-ballista scheduler listening on {addr}");
    ballista_scheduler::scheduler_process::start_server(cluster, addr, Arc::new(config)).await?;
    Ok(())
}

async fn executor(
    port: u16,
    grpc_port: u16,
    scheduler_port: u16,
    tasks: usize,
    work_dir: Option<PathBuf>,
    name: String,
) -> Res<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let config = ExecutorProcessConfig {
        bind_host: "127.0.0.1".into(),
        external_host: Some("127.0.0.1".into()),
        port,
        grpc_port,
        scheduler_host: "127.0.0.1".into(),
        scheduler_port,
        // Retry the scheduler for a while: started together, it may not listen yet
        // (with 0, one failed connection ends the executor).
        scheduler_connect_timeout_seconds: 30,
        vcores: tasks.max(1),
        work_dir: work_dir.map(|d| d.to_string_lossy().to_string()),
        executor_heartbeat_interval_seconds: 2,
        override_logical_codec: Some(Arc::new(LightningLogicalCodec::new())),
        override_physical_codec: Some(Arc::new(LightningPhysicalCodec::for_executor(name.clone()))),
        ..Default::default()
    };
    eprintln!(
        "lightning-ballista executor {name} on 127.0.0.1:{port} (scheduler port {scheduler_port})"
    );
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

#[derive(Default)]
struct Timing {
    name: String,
    cluster_ms: f64,
    local_ms: Option<f64>,
    rows: usize,
}

async fn run(
    scheduler: &str,
    db: &std::path::Path,
    queries: Vec<(String, String)>,
    check: bool,
    repeat: usize,
    partitions: usize,
    json: Option<PathBuf>,
) -> Res<()> {
    let ctx = lightning_distributed::cluster_context(scheduler, db, partitions).await?;
    let local = lightning_distributed::open_published(db)?;
    let mut timings = Vec::new();
    let mut differ = Vec::new();
    for (name, q) in &queries {
        let mut t = Timing {
            name: name.clone(),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut remote = Vec::new();
        for _ in 0..repeat.max(1) {
            let start = Instant::now();
            remote = ctx.sql(q).await?.collect().await?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        t.cluster_ms = median(&mut times);
        t.rows = remote.iter().map(|b| b.num_rows()).sum();
        if std::env::var_os("LDB_PRINT").is_some() {
            println!("{}", arrow::util::pretty::pretty_format_batches(&remote)?);
        }
        if check {
            let mut times = Vec::new();
            let mut here = Vec::new();
            for _ in 0..repeat.max(1) {
                let start = Instant::now();
                here = local.sql_async(q).await?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            t.local_ms = Some(median(&mut times));
            match compare(&remote, &here) {
                Ok(()) => {}
                Err(why) => differ.push(format!("{name}: {why}")),
            }
        }
        println!(
            "{name}: cluster {:.1} ms{} rows={}",
            t.cluster_ms,
            t.local_ms
                .map_or(String::new(), |l| format!(", db.sql {l:.1} ms")),
            t.rows
        );
        timings.push(t);
    }
    let total: f64 = timings.iter().map(|t| t.cluster_ms).sum();
    let local_total: Option<f64> = timings.iter().map(|t| t.local_ms).sum();
    println!(
        "total: cluster {:.1} ms{}",
        total,
        local_total.map_or(String::new(), |l| format!(", db.sql {l:.1} ms"))
    );
    if let Some(p) = json {
        let rows: Vec<String> = timings
            .iter()
            .map(|t| {
                format!(
                    "{{\"query\":\"{}\",\"cluster_ms\":{:.3},\"local_ms\":{},\"rows\":{}}}",
                    t.name,
                    t.cluster_ms,
                    t.local_ms.map_or("null".to_string(), |l| format!("{l:.3}")),
                    t.rows
                )
            })
            .collect();
        std::fs::write(&p, format!("[\n{}\n]\n", rows.join(",\n")))?;
    }
    if !differ.is_empty() {
        for d in &differ {
            eprintln!("DIFFERENT {d}");
        }
        return Err(format!(
            "{} of {} answers differ from db.sql",
            differ.len(),
            queries.len()
        )
        .into());
    }
    if check {
        println!("all {} answers match db.sql", queries.len());
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
