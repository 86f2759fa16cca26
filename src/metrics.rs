//! Metrics and health checks.

use crate::db::Database;
use crate::error::Result;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use lightning_rowstore::counter::{LatencyHistogram, LatencySummary};

/// Bytes on disk per component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub wal_bytes: u64,
    pub sst_bytes: u64,
    /// The B+Tree engine's tree file (free pages included).
    pub tree_bytes: u64,
    pub manifest_bytes: u64,
    pub columnar_bytes: u64,
    pub total_bytes: u64,
}

/// A snapshot of the database's metrics ([`Database::get_metrics`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Reads + writes + deletes per second since the previous `get_metrics` call (at
    /// least one second ago), or since open.
    pub operations_per_second: f64,
    /// Block-cache hits / lookups since open.
    pub cache_hit_rate: f64,
    pub active_transactions: usize,
    pub reads: u64,
    pub writes: u64,
    pub deletes: u64,
    pub commits: u64,
    /// Key-value point reads.
    pub get_latency: LatencySummary,
    /// Every write outside a transaction, through any API: key-value puts, deletes and
    /// batches, table inserts, catalog changes.
    pub put_latency: LatencySummary,
    /// Every transaction commit, validation included: API transactions and SQL DML.
    pub commit_latency: LatencySummary,
    pub wal_bytes_written: u64,
    pub sst_bytes_written: u64,
    pub fsyncs: u64,
    pub fsync_avg_us: f64,
    pub flushes: u64,
    pub flush_bytes: u64,
    pub flush_seconds: f64,
    pub compactions: u64,
    pub compaction_bytes_read: u64,
    pub compaction_bytes_written: u64,
    pub compaction_seconds: f64,
    pub write_stall_seconds: f64,
    pub memtable_bytes: u64,
    pub cache_bytes: u64,
    pub tables_per_level: Vec<usize>,
    /// The row store's structure: `lsm` or `btree`.
    pub storage_engine: &'static str,
    pub disk: DiskUsage,
    /// Column-store segments over all tables.
    pub columnar_segments: u64,
    /// Commit timestamps between the newest commit and the oldest column-store
    /// watermark (how far the column store trails).
    pub columnar_watermark_lag: u64,
    /// Rows stored in column segments over all tables, and how many of them are
    /// deleted or replaced (hidden by delete bitmaps; a segment a quarter dead is
    /// rewritten without them).
    pub columnar_segment_rows: u64,
    pub columnar_deleted_rows: u64,
    /// Bytes of decoded segment columns kept in memory (`columnar_cache_bytes`).
    pub columnar_cache_bytes: u64,
    /// Checksum failures (corruption) met by reads since open.
    pub checksum_failures: u64,
    /// SQL statements run on the single-row fast path (straight to the row store) and
    /// statements planned and run by DataFusion, since open.
    pub sql_fast_statements: u64,
    pub sql_planned_statements: u64,
    /// Of the planned statements, queries whose plan `sql` remembered from an earlier
    /// run of the same text (no parsing or logical planning).
    pub sql_plan_cache_hits: u64,
    /// How the machine is divided: the SQL runtime's worker threads and the nice value
    /// of the analytics threads (see `LightningDbConfig::sql_threads` and
    /// `analytics_nice`)...
    pub sql_threads: usize,
    pub analytics_nice: i32,
    /// ...and the CPU time this process spent since it started, in seconds: in all, on
    /// the SQL runtime's threads and on the column-store compactor's (Linux; 0
    /// elsewhere). The rest went to the callers' threads, commits and row-store
    /// maintenance.
    pub process_cpu_seconds: f64,
    pub sql_cpu_seconds: f64,
    pub columnar_cpu_seconds: f64,
}

/// Run the calling thread at `nice` (Linux), never below its current nice value:
/// analytics threads give way to the commit path. Failures are ignored (the thread
/// then keeps its priority). (Analytics exist with the `sql` feature only.)
#[cfg(feature = "sql")]
pub(crate) fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread's id; no memory is passed.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            if current < nice {
                libc::setpriority(libc::PRIO_PROCESS, tid, nice);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Counts the calling thread as at work (or not) in `holds` (see
/// [`lightning_rowstore::Engine::commit_yield_holds`]): while any analytics thread
/// works, writers waiting for a commit group sleep instead of yielding, so they take no
/// processor time from it. Idempotent per thread: each thread counts at most once.
#[cfg(feature = "sql")]
pub(crate) fn analytics_busy(holds: &Option<Arc<std::sync::atomic::AtomicU32>>, busy: bool) {
    thread_local! {
        static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let Some(h) = holds else { return };
    COUNTED.with(|c| {
        if c.replace(busy) != busy {
            match busy {
                true => h.fetch_add(1, Ordering::Relaxed),
                false => h.fetch_sub(1, Ordering::Relaxed),
            };
        }
    });
}

/// CPU seconds of this process: (all threads, threads named `ldb-sql*`, `ldb-columnar`).
fn cpu_split() -> (f64, f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let jiffies = |stat: &str| -> f64 {
        // utime and stime are fields 14 and 15; the command (field 2) may hold spaces.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |n: usize| {
            f.get(n - 3)
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        get(14) + get(15)
    };
    let all = std::fs::read_to_string("/proc/self/stat")
        .map(|s| jiffies(&s))
        .unwrap_or(0.0);
    let (mut sql, mut col) = (0.0, 0.0);
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            let comm = comm.trim();
            let is_sql = comm.starts_with("ldb-sql");
            if !is_sql && comm != "ldb-columnar" {
                continue;
            }
            let j = std::fs::read_to_string(p.join("stat"))
                .map(|s| jiffies(&s))
                .unwrap_or(0.0);
            if is_sql { sql += j } else { col += j }
        }
    }
    (all / tick, sql / tick, col / tick)
}

/// The result of [`Database::health_check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthStatus {
    pub is_healthy: bool,
    pub issues: Vec<String>,
}

/// Per-database counters kept by the facade.
pub(crate) struct FacadeStats {
    pub get: LatencyHistogram,
    pub checksum_failures: AtomicU64,
    pub opened: Instant,
    pub last_rate: parking_lot::Mutex<(Instant, u64, f64)>,
}

impl FacadeStats {
    /// Count a corruption error met by a read (for metrics and health checks).
    pub(crate) fn seen<T>(
        &self,
        r: lightning_rowstore::Result<T>,
    ) -> lightning_rowstore::Result<T> {
        if let Err(e) = &r
            && e.is_corruption()
        {
            self.checksum_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl Default for FacadeStats {
    fn default() -> Self {
        FacadeStats {
            get: LatencyHistogram::default(),
            checksum_failures: AtomicU64::new(0),
            opened: Instant::now(),
            last_rate: parking_lot::Mutex::new((Instant::now(), 0, 0.0)),
        }
    }
}

pub(crate) fn disk_usage(vfs: &dyn lightning_rowstore::vfs::Vfs, dir: &Path) -> DiskUsage {
    use lightning_rowstore::files::{self, DbFile};
    fn walk(vfs: &dyn lightning_rowstore::vfs::Vfs, p: &Path) -> u64 {
        let Ok(names) = vfs.list(p) else {
            return 0;
        };
        names
            .iter()
            .map(|n| {
                let q = p.join(n);
                match vfs.metadata(&q) {
                    Ok(m) if m.is_dir => walk(vfs, &q),
                    Ok(m) => m.len,
                    Err(_) => 0,
                }
            })
            .sum()
    }
    let mut u = DiskUsage::default();
    if let Ok(names) = vfs.list(dir) {
        for name in names {
            let p = dir.join(&name);
            let Ok(m) = vfs.metadata(&p) else { continue };
            match files::classify(&name) {
                DbFile::Columnar if m.is_dir => u.columnar_bytes += walk(vfs, &p),
                DbFile::Wal(_) => u.wal_bytes += m.len,
                DbFile::Table(_) => u.sst_bytes += m.len,
                DbFile::Tree => u.tree_bytes += m.len,
                DbFile::Manifest(_) | DbFile::Current => u.manifest_bytes += m.len,
                _ => {}
            }
        }
    }
    u.total_bytes = u.wal_bytes + u.sst_bytes + u.tree_bytes + u.manifest_bytes + u.columnar_bytes;
    u
}

/// Bytes available to unprivileged users on the file system holding `p`.
pub(crate) fn free_disk_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs we own.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (r == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// Everything metrics and health need, shareable with a server thread.
#[derive(Clone)]
pub(crate) struct MetricsHandle {
    pub engine: Arc<lightning_rowstore::Engine>,
    pub stats: Arc<FacadeStats>,
    #[cfg(feature = "sql")]
    pub tables: Option<Arc<crate::tables::Tables>>,
    pub config: crate::config::LightningDbConfig,
    pub path: std::path::PathBuf,
}

impl Database {
    pub(crate) fn metrics_handle(&self) -> MetricsHandle {
        MetricsHandle {
            engine: self.engine_arc(),
            stats: self.stats.clone(),
            #[cfg(feature = "sql")]
            tables: self.tables.clone(),
            config: self.config().clone(),
            path: self.path().to_path_buf(),
        }
    }

    /// Current metrics: throughput, cache hit rate, counters, latency percentiles,
    /// I/O, flush/compaction work, memory and disk use, column-store lag.
    pub fn get_metrics(&self) -> Metrics {
        self.metrics_handle().metrics()
    }

    /// Check the database: disk space, background threads, a stopped (fatal) state,
    /// compaction backlog (write-stall risk), and checksum failures seen by reads.
    pub fn health_check(&self) -> Result<HealthStatus> {
        if self.engine().is_closed() {
            return Ok(HealthStatus {
                is_healthy: false,
                issues: vec!["database is closed".into()],
            });
        }
        Ok(self.metrics_handle().health())
    }
}

impl MetricsHandle {
    /// Metrics and whether the health check passes.
    pub fn collect(&self) -> (Metrics, bool) {
        (self.metrics(), self.health().is_healthy)
    }

    pub fn metrics(&self) -> Metrics {
        let e = &self.engine;
        let st = e.stats();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sizes = e.sizes();
        let reads = st.gets.get();
        let writes = l(&st.puts);
        let deletes = l(&st.deletes);
        let ops = reads + writes + deletes;
        let fs = &self.stats;
        let rate = {
            let mut last = fs.last_rate.lock();
            let el = last.0.elapsed();
            if el >= Duration::from_secs(1) || last.2 == 0.0 {
                let (since, base) = if last.1 == 0 && last.2 == 0.0 {
                    (fs.opened.elapsed(), 0)
                } else {
                    (el, last.1)
                };
                let r = (ops - base) as f64 / since.as_secs_f64().max(1e-3);
                *last = (Instant::now(), ops, r);
            }
            last.2
        };
        let lookups = sizes.cache_hits + sizes.cache_misses;
        let syncs = l(&st.wal_syncs);
        #[cfg(feature = "sql")]
        let (segments, lag, seg_rows, seg_deleted, seg_cached) = self
            .tables
            .as_ref()
            .map(|t| t.columnar_figures(sizes.visible_ts))
            .unwrap_or((0, 0, 0, 0, 0));
        #[cfg(not(feature = "sql"))]
        let (segments, lag, seg_rows, seg_deleted, seg_cached) = (0, 0, 0, 0, 0);
        #[cfg(feature = "sql")]
        let (fast, planned, plan_hits) = self
            .tables
            .as_ref()
            .map(|t| t.sql_figures())
            .unwrap_or((0, 0, 0));
        #[cfg(not(feature = "sql"))]
        let (fast, planned, plan_hits) = (0, 0, 0);
        let (process_cpu_seconds, sql_cpu_seconds, columnar_cpu_seconds) = cpu_split();
        Metrics {
            columnar_segment_rows: seg_rows,
            columnar_deleted_rows: seg_deleted,
            columnar_cache_bytes: seg_cached,
            sql_threads: self.config.sql_worker_threads(),
            analytics_nice: self.config.analytics_nice,
            process_cpu_seconds,
            sql_cpu_seconds,
            columnar_cpu_seconds,
            sql_fast_statements: fast,
            sql_planned_statements: planned,
            sql_plan_cache_hits: plan_hits,
            operations_per_second: rate,
            cache_hit_rate: if lookups == 0 {
                0.0
            } else {
                sizes.cache_hits as f64 / lookups as f64
            },
            active_transactions: e.active_transactions(),
            reads,
            writes,
            deletes,
            commits: l(&st.commits),
            get_latency: fs.get.summary(),
            put_latency: st.put_latency.summary(),
            commit_latency: st.commit_latency.summary(),
            wal_bytes_written: l(&st.wal_bytes),
            sst_bytes_written: l(&st.flush_bytes) + l(&st.compaction_bytes_written),
            fsyncs: syncs,
            fsync_avg_us: if syncs == 0 {
                0.0
            } else {
                l(&st.wal_sync_micros) as f64 / syncs as f64
            },
            flushes: l(&st.flushes),
            flush_bytes: l(&st.flush_bytes),
            flush_seconds: l(&st.flush_micros) as f64 / 1e6,
            compactions: l(&st.compactions),
            compaction_bytes_read: l(&st.compaction_bytes_read),
            compaction_bytes_written: l(&st.compaction_bytes_written),
            compaction_seconds: l(&st.compaction_micros) as f64 / 1e6,
            write_stall_seconds: l(&st.stall_micros) as f64 / 1e6,
            memtable_bytes: sizes.memtable_bytes,
            cache_bytes: sizes.cache_bytes,
            tables_per_level: sizes.tables_per_level.clone(),
            storage_engine: self.config.storage_engine.name(),
            disk: disk_usage(&*e.options().vfs, &self.path),
            columnar_segments: segments,
            columnar_watermark_lag: lag,
            checksum_failures: fs.checksum_failures.load(Ordering::Relaxed),
        }
    }

    pub fn health(&self) -> HealthStatus {
        let mut issues = Vec::new();
        let e = &self.engine;
        let cfg = &self.config;
        // A read-only handle starts no background thread by design.
        let threads_expected = !e.is_read_only();
        if e.options().background_compaction && threads_expected {
            let want = 1 + cfg.parallel_compaction_workers;
            let alive = e.background_threads();
            if alive < want {
                issues.push(format!(
                    "{} of {want} background threads are not running",
                    want - alive
                ));
            }
        }
        #[cfg(feature = "sql")]
        if let Some(t) = &self.tables
            && cfg.columnar_background
            && threads_expected
            && !t.worker_alive()
        {
            issues.push("the column-store compactor thread is not running".into());
        }
        if let Some(f) = e.fatal_error() {
            issues.push(format!("writes are stopped after a fatal error: {f}"));
        }
        match free_disk_bytes(&self.path) {
            Some(free) if free < cfg.health_min_free_disk_bytes => issues.push(format!(
                "low disk space: {free} bytes free, below the {} byte threshold",
                cfg.health_min_free_disk_bytes
            )),
            Some(_) => {}
            None => issues.push("cannot read free disk space".into()),
        }
        let sizes = e.sizes();
        let l0 = sizes.tables_per_level.first().copied().unwrap_or(0);
        if l0 + 2 >= cfg.level0_stop_writes_trigger {
            issues.push(format!(
                "compaction backlog: {l0} level-0 tables, writes stall at {}",
                cfg.level0_stop_writes_trigger
            ));
        }
        let bad = self.stats.checksum_failures.load(Ordering::Relaxed);
        if bad > 0 {
            issues.push(format!(
                "{bad} checksum failure(s) seen by reads; run `lightning-cli check`"
            ));
        }
        HealthStatus {
            is_healthy: issues.is_empty(),
            issues,
        }
    }
}
