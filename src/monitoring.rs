//! Prometheus metrics over HTTP.
//!
//! ```no_run
//! # use lightning_db::{Database, LightningDbConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let db = Database::create("./mydb", LightningDbConfig::default())?;
//! use lightning_db::monitoring::PrometheusExporter;
//! let exporter = PrometheusExporter::new(&db);
//! exporter.serve("127.0.0.1:9090")?;   // GET /metrics, text exposition format
//! # Ok(()) }
//! ```
//!
//! The server (hyper on a tokio runtime of its own) runs until
//! [`PrometheusExporter::stop`] or drop; every connection is served concurrently, within
//! deadlines, up to a connection limit. With [`PrometheusExporter::with_bearer_token`],
//! requests must carry `Authorization: Bearer <token>` (scheme in any case; the token
//! compared in time that reveals neither its content nor its length) or get 401.

use crate::db::Database;
use crate::error::{Error, Result};
use crate::metrics::{LatencySummary, Metrics};
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Something that can produce metrics on the exporter's thread.
type Source = Arc<dyn Fn() -> (Metrics, bool) + Send + Sync>;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its whole request head within this time.
const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it is doing.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

struct Running {
    runtime: tokio::runtime::Runtime,
    shutdown: tokio::sync::watch::Sender<bool>,
    addr: SocketAddr,
}

/// Serves a database's metrics in the Prometheus text format.
///
/// The server is hyper (HTTP/1.1) on a small tokio runtime of its own: each connection
/// is its own task, with a deadline for the request head and one for the whole
/// connection, and at most 64 are served at once, so a slow or stuck client never
/// blocks a scrape.
pub struct PrometheusExporter {
    source: Source,
    token: Option<Arc<Vec<u8>>>,
    server: parking_lot::Mutex<Option<Running>>,
    stopped: AtomicBool,
}

impl PrometheusExporter {
    pub fn new(db: &Database) -> Self {
        let h = db.metrics_handle();
        PrometheusExporter {
            source: Arc::new(move || h.collect()),
            token: None,
            server: parking_lot::Mutex::new(None),
            stopped: AtomicBool::new(false),
        }
    }

    /// Require `Authorization: Bearer <token>` (the scheme in any case).
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Arc::new(token.into().into_bytes()));
        self
    }

    /// The current metrics as Prometheus text.
    pub fn render(&self) -> String {
        let (m, healthy) = (self.source)();
        render(&m, healthy)
    }

    /// Bind `addr` and serve `/metrics` in the background. Returns the bound address
    /// (useful with port 0). An exporter serves one address at a time, and cannot serve
    /// again after [`PrometheusExporter::stop`].
    pub fn serve(&self, addr: impl ToSocketAddrs) -> Result<SocketAddr> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::InvalidArgument(
                "the metrics exporter was stopped; create a new one to serve again".into(),
            ));
        }
        let mut server = self.server.lock();
        if let Some(r) = server.as_ref() {
            return Err(Error::InvalidArgument(format!(
                "the metrics exporter is already serving on {}",
                r.addr
            )));
        }
        let io = |context: &str| {
            let context = context.to_string();
            move |source| Error::Io { context, source }
        };
        let listener =
            std::net::TcpListener::bind(addr).map_err(io("binding the metrics server"))?;
        let local = listener
            .local_addr()
            .map_err(io("reading the metrics server address"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("configuring the metrics server"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ldb-prometheus")
            .enable_all()
            .build()
            .map_err(io("starting the metrics server"))?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let listener = {
            let _g = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(io("starting the metrics server"))?
        };
        runtime.spawn(accept_loop(
            listener,
            self.source.clone(),
            self.token.clone(),
            rx,
        ));
        *server = Some(Running {
            runtime,
            shutdown: tx,
            addr: local,
        });
        Ok(local)
    }

    /// Stop serving: the listener closes and open connections are dropped. Further
    /// `serve` calls are errors.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(r) = self.server.lock().take() {
            let _ = r.shutdown.send(true);
            if tokio::runtime::Handle::try_current().is_ok() {
                r.runtime.shutdown_background();
            } else {
                r.runtime.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    source: Source,
    token: Option<Arc<Vec<u8>>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (source, token) = (source.clone(), token.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let reply = respond(&req, &source, token.as_deref().map(|t| t.as_slice()));
                async move { Ok::<_, std::convert::Infallible>(reply) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
        });
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn reply(status: u16, ctype: &str, body: String) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("Content-Type", ctype)
        .header("Connection", "close")
        .body(Body::new(body.into()))
        .expect("a valid response")
}

fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    source: &Source,
    token: Option<&[u8]>,
) -> hyper::Response<Body> {
    if let Some(t) = token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        if !given.is_some_and(|g| token_matches(g, t)) {
            let mut r = reply(401, "text/plain", "unauthorized\n".into());
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", "method not allowed\n".into());
    }
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "not found\n".into());
    }
    let (m, healthy) = source();
    reply(200, "text/plain; version=0.0.4", render(&m, healthy))
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme is matched
/// case-insensitively (RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let v = value.trim_ascii();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Whether `given` equals `secret`, in time that depends only on `given.len()` (the
/// caller's own input): neither the secret's content nor its length leaks.
fn token_matches(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return given.is_empty();
    }
    let mut diff = u8::from(given.len() != secret.len());
    for (i, &g) in given.iter().enumerate() {
        diff |= std::hint::black_box(g ^ secret[i % secret.len()]);
    }
    std::hint::black_box(diff) == 0 && !given.is_empty()
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP lightning_db_{name} {help}");
    let _ = writeln!(out, "# TYPE lightning_db_{name} {kind}");
    let _ = writeln!(out, "lightning_db_{name} {value}");
}

fn summary(out: &mut String, name: &str, help: &str, s: &LatencySummary) {
    let _ = writeln!(out, "# HELP lightning_db_{name}_seconds {help}");
    let _ = writeln!(out, "# TYPE lightning_db_{name}_seconds summary");
    for (q, v) in [("0.5", s.p50_us), ("0.99", s.p99_us), ("0.999", s.p999_us)] {
        let _ = writeln!(
            out,
            "lightning_db_{name}_seconds{{quantile=\"{q}\"}} {}",
            v / 1e6
        );
    }
    let _ = writeln!(out, "lightning_db_{name}_seconds_count {}", s.count);
}

/// Render metrics in the Prometheus text exposition format (version 0.0.4).
pub fn render(m: &Metrics, healthy: bool) -> String {
    let mut o = String::new();
    let c = |o: &mut String, n: &str, h: &str, v: u64| metric(o, n, "counter", h, v as f64);
    let g = |o: &mut String, n: &str, h: &str, v: f64| metric(o, n, "gauge", h, v);
    g(
        &mut o,
        "up",
        "1 if the last health check passed",
        if healthy { 1.0 } else { 0.0 },
    );
    g(
        &mut o,
        "operations_per_second",
        "Reads, writes and deletes per second",
        m.operations_per_second,
    );
    g(
        &mut o,
        "cache_hit_rate",
        "Block cache hit rate since open",
        m.cache_hit_rate,
    );
    g(
        &mut o,
        "active_transactions",
        "Open transactions",
        m.active_transactions as f64,
    );
    c(&mut o, "reads_total", "Point reads", m.reads);
    c(&mut o, "writes_total", "Keys written", m.writes);
    c(&mut o, "deletes_total", "Keys deleted", m.deletes);
    c(
        &mut o,
        "commits_total",
        "Committed batches and transactions",
        m.commits,
    );
    summary(&mut o, "get_latency", "Latency of get", &m.get_latency);
    summary(
        &mut o,
        "put_latency",
        "Latency of writes (put, delete, batches)",
        &m.put_latency,
    );
    summary(
        &mut o,
        "commit_latency",
        "Latency of transaction commits",
        &m.commit_latency,
    );
    c(
        &mut o,
        "wal_bytes_written_total",
        "Bytes written to the WAL",
        m.wal_bytes_written,
    );
    c(
        &mut o,
        "sst_bytes_written_total",
        "Bytes written to table files",
        m.sst_bytes_written,
    );
    c(&mut o, "fsyncs_total", "WAL fsyncs", m.fsyncs);
    g(
        &mut o,
        "fsync_avg_seconds",
        "Mean WAL fsync latency",
        m.fsync_avg_us / 1e6,
    );
    c(&mut o, "flushes_total", "Memtable flushes", m.flushes);
    c(
        &mut o,
        "flush_bytes_total",
        "Bytes written by flushes",
        m.flush_bytes,
    );
    g(
        &mut o,
        "flush_seconds_total",
        "Time spent flushing",
        m.flush_seconds,
    );
    c(&mut o, "compactions_total", "Compactions", m.compactions);
    c(
        &mut o,
        "compaction_bytes_read_total",
        "Bytes read by compactions",
        m.compaction_bytes_read,
    );
    c(
        &mut o,
        "compaction_bytes_written_total",
        "Bytes written by compactions",
        m.compaction_bytes_written,
    );
    g(
        &mut o,
        "compaction_seconds_total",
        "Time spent compacting",
        m.compaction_seconds,
    );
    g(
        &mut o,
        "write_stall_seconds_total",
        "Time writers waited for flush or compaction",
        m.write_stall_seconds,
    );
    g(
        &mut o,
        "memtable_bytes",
        "Bytes in memtables",
        m.memtable_bytes as f64,
    );
    g(
        &mut o,
        "cache_bytes",
        "Bytes in the block cache",
        m.cache_bytes as f64,
    );
    g(
        &mut o,
        "disk_wal_bytes",
        "WAL bytes on disk",
        m.disk.wal_bytes as f64,
    );
    g(
        &mut o,
        "disk_sst_bytes",
        "Table bytes on disk",
        m.disk.sst_bytes as f64,
    );
    g(
        &mut o,
        "disk_manifest_bytes",
        "Manifest bytes on disk",
        m.disk.manifest_bytes as f64,
    );
    g(
        &mut o,
        "disk_columnar_bytes",
        "Column-store bytes on disk",
        m.disk.columnar_bytes as f64,
    );
    g(
        &mut o,
        "columnar_segments",
        "Column-store segments",
        m.columnar_segments as f64,
    );
    g(
        &mut o,
        "columnar_watermark_lag",
        "Commits not yet in the column store (timestamps)",
        m.columnar_watermark_lag as f64,
    );
    g(
        &mut o,
        "columnar_segment_rows",
        "Rows stored in column segments",
        m.columnar_segment_rows as f64,
    );
    g(
        &mut o,
        "columnar_deleted_rows",
        "Rows of column segments hidden by delete bitmaps",
        m.columnar_deleted_rows as f64,
    );
    g(
        &mut o,
        "columnar_cache_bytes",
        "Bytes of decoded column-segment data kept in memory",
        m.columnar_cache_bytes as f64,
    );
    c(
        &mut o,
        "checksum_failures_total",
        "Checksum failures met by reads",
        m.checksum_failures,
    );
    g(
        &mut o,
        "sql_threads",
        "Worker threads of the SQL runtime",
        m.sql_threads as f64,
    );
    g(
        &mut o,
        "process_cpu_seconds",
        "CPU seconds this process used",
        m.process_cpu_seconds,
    );
    g(
        &mut o,
        "sql_cpu_seconds",
        "CPU seconds used by the SQL runtime's threads",
        m.sql_cpu_seconds,
    );
    g(
        &mut o,
        "columnar_cpu_seconds",
        "CPU seconds used by the column-store compactor",
        m.columnar_cpu_seconds,
    );
    c(
        &mut o,
        "sql_fast_statements_total",
        "SQL statements run on the single-row fast path",
        m.sql_fast_statements,
    );
    c(
        &mut o,
        "sql_planned_statements_total",
        "SQL statements planned and run by DataFusion",
        m.sql_planned_statements,
    );
    c(
        &mut o,
        "sql_plan_cache_hits_total",
        "Queries run from a remembered plan",
        m.sql_plan_cache_hits,
    );
    let _ = writeln!(o, "# HELP lightning_db_level_tables Tables per LSM level");
    let _ = writeln!(o, "# TYPE lightning_db_level_tables gauge");
    for (l, n) in m.tables_per_level.iter().enumerate() {
        let _ = writeln!(o, "lightning_db_level_tables{{level=\"{l}\"}} {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret2", b"secret"));
        assert!(!token_matches(b"secre", b"secret"));
        assert!(!token_matches(b"", b"secret"));
        assert!(!token_matches(b"secretsecret", b"secret"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
