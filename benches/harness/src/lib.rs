//! Shared pieces of the benchmark harness: the machine description, latency percentiles
//! and the result files (`<out>/<name>.json` and `<out>/<name>.md`).

use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// What the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// Filesystem type, device and size of the filesystem that held the databases, and
    /// whether the kernel reports the device as rotational.
    pub disk: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    /// Reads /proc and /sys; `data_dir` is where the databases live.
    pub fn describe(data_dir: &Path) -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Machine {
            cpu,
            cores,
            memory_gib: (memory_gib * 10.0).round() / 10.0,
            kernel,
            disk: describe_disk(data_dir),
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "Machine: {} ({} cores), {:.1} GiB RAM, Linux {}, disk: {}\n",
            self.cpu, self.cores, self.memory_gib, self.kernel, self.disk
        )
    }
}

fn describe_disk(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // The longest mount point that contains the directory.
    let mounts = read("/proc/mounts");
    let mut best: Option<(String, String, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if dir.starts_with(f[1]) && best.as_ref().is_none_or(|b| f[1].len() > b.1.len()) {
            best = Some((f[0].to_string(), f[1].to_string(), f[2].to_string()));
        }
    }
    let Some((dev, mnt, fs)) = best else {
        return "unknown".into();
    };
    let size = fs_size_gib(Path::new(&mnt));
    let name = dev.rsplit('/').next().unwrap_or("").to_string();
    let rot = read(&format!("/sys/class/block/{name}/queue/rotational"));
    let kind = match rot.trim() {
        "0" => ", non-rotational",
        "1" => ", rotational",
        _ => "",
    };
    format!("{fs} on {dev} ({size:.0} GiB{kind})")
}

fn fs_size_gib(p: &Path) -> f64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return 0.0;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0.0;
        }
        (st.f_blocks as f64 * st.f_frsize as f64) / (1u64 << 30) as f64
    }
}

/// Latency samples (nanoseconds) of one workload.
#[derive(Default)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.0.push(d.as_nanos() as u64);
    }
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }
    /// The `p`-th percentile (0..=100) in microseconds.
    pub fn percentile_us(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let i = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[i.min(self.0.len() - 1)] as f64 / 1e3
    }
}

/// Run `op(thread, i)` for `i` in `0..per_thread` on each of `threads` threads at once;
/// the wall time of the whole and every call's latency. The first error stops its
/// thread and is returned (a panicking thread as "worker panicked").
pub fn threaded<E: Send + From<&'static str>>(
    threads: usize,
    per_thread: u64,
    op: &(dyn Fn(usize, u64) -> Result<(), E> + Sync),
) -> Result<(Duration, Latencies), E> {
    let t = std::time::Instant::now();
    let lats: Vec<Result<Latencies, E>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                s.spawn(move || {
                    let mut lat = Latencies::default();
                    for i in 0..per_thread {
                        let t = std::time::Instant::now();
                        op(th, i)?;
                        lat.record(t.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect()
    });
    let elapsed = t.elapsed();
    let mut all = Latencies::default();
    for l in lats {
        all.extend(l?);
    }
    Ok((elapsed, all))
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, as `du` counts them).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Writes `<out>/<name>.json` (pretty) and `<out>/<name>.md`, and prints the markdown.
pub fn write_results(
    out: &Path,
    name: &str,
    json: &serde_json::Value,
    md: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)? + "\n",
    )?;
    std::fs::write(out.join(format!("{name}.md")), md)?;
    println!("{md}");
    println!("wrote {}/{name}.json and {name}.md", out.display());
    Ok(())
}

/// A number with engineering-style thousands grouping for tables: 1234567 -> "1.23M".
pub fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The `date` the run is filed under (UTC, YYYY-MM-DD), from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Runs a harness: `f(base, scratch)` with `base` the directory the databases go under
/// (`data_dir`, or the system's temporary directory) and `scratch` a fresh
/// `ldb-<name>-<pid>` directory in it, removed afterwards whatever happened; an error
/// is printed and becomes a failing exit code.
pub fn run_in_scratch<E: std::fmt::Display>(
    name: &str,
    data_dir: Option<&Path>,
    f: impl FnOnce(&Path, &Path) -> Result<(), E>,
) -> std::process::ExitCode {
    let base = data_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("error: creating {}: {e}", base.display());
        return std::process::ExitCode::FAILURE;
    }
    let scratch = base.join(format!("ldb-{name}-{}", std::process::id()));
    let result = f(&base, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Imports the Parquet file `path` into a new table `table` the way the README tells
/// users to: `CREATE EXTERNAL TABLE ext_<table> … STORED AS PARQUET`, the table created
/// with the file's columns and primary key `pk` (empty: keyless), then one
/// `INSERT INTO <table> SELECT * FROM ext_<table>`. `before_insert` runs right before
/// that statement (to start a clock or a memory probe). Returns the rows it inserted.
#[cfg(feature = "olap")]
pub fn sql_import(
    db: &lightning_db::Database,
    table: &str,
    pk: &[&str],
    path: &Path,
    before_insert: &mut dyn FnMut(),
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    db.sql(&format!(
        "CREATE EXTERNAL TABLE ext_{table} STORED AS PARQUET LOCATION '{}'",
        path.display()
    ))?;
    let first = db.sql(&format!("SELECT * FROM ext_{table} LIMIT 1"))?;
    let schema = lightning_db::to_table_types(first.first().ok_or("empty Parquet file")?)?.schema();
    db.create_table(table, schema, pk)?;
    before_insert();
    count(&db.sql(&format!("INSERT INTO {table} SELECT * FROM ext_{table}"))?)
}

/// The single count a statement returned (`SELECT count(*)`, or the rows an `INSERT`
/// wrote), whatever its integer type.
#[cfg(feature = "olap")]
pub fn count(
    b: &[lightning_db::arrow::array::RecordBatch],
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use lightning_db::arrow::{array::UInt64Array, compute::cast, datatypes::DataType};
    let c = b.first().ok_or("no count returned")?.column(0);
    let c = cast(c, &DataType::UInt64)?;
    let c = c
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or("count type")?;
    Ok(if c.is_empty() { 0 } else { c.value(0) })
}
