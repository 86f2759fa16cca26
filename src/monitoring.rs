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
//! The server runs on its own thread until [`PrometheusExporter::stop`] or drop. With
//! [`PrometheusExporter::with_bearer_token`], requests must carry
//! `Authorization: Bearer <token>` (compared in constant time) or get 401.

use crate::db::Database;
use crate::error::{Error, Result};
use crate::metrics::{LatencySummary, Metrics};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Something that can produce metrics on the exporter's thread.
type Source = Arc<dyn Fn() -> (Metrics, bool) + Send + Sync>;

/// Serves a database's metrics in the Prometheus text format.
pub struct PrometheusExporter {
    source: Source,
    token: Option<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl PrometheusExporter {
    pub fn new(db: &Database) -> Self {
        let h = db.metrics_handle();
        PrometheusExporter {
            source: Arc::new(move || h.collect()),
            token: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: parking_lot::Mutex::new(None),
        }
    }

    /// Require `Authorization: Bearer <token>`.
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().into_bytes());
        self
    }

    /// The current metrics as Prometheus text.
    pub fn render(&self) -> String {
        let (m, healthy) = (self.source)();
        render(&m, healthy)
    }

    /// Bind `addr` and serve `/metrics` on a background thread. Returns the bound
    /// address (useful with port 0).
    pub fn serve(&self, addr: impl ToSocketAddrs) -> Result<SocketAddr> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::Io {
            context: "binding the metrics server".into(),
            source: e,
        })?;
        let local = listener.local_addr().map_err(|e| Error::Io {
            context: "reading the metrics server address".into(),
            source: e,
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::Io {
            context: "configuring the metrics server".into(),
            source: e,
        })?;
        let (source, token, stop) = (self.source.clone(), self.token.clone(), self.stop.clone());
        let h = std::thread::Builder::new()
            .name("ldb-prometheus".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = handle(s, &source, token.as_deref());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| Error::Io {
                context: "spawning the metrics server".into(),
                source: e,
            })?;
        if let Some(old) = self.thread.lock().replace(h) {
            // A second serve() call: the first server keeps running until stop().
            drop(old);
        }
        Ok(local)
    }

    /// Stop serving and join the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Equal-length comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

fn handle(mut s: TcpStream, source: &Source, token: Option<&[u8]>) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 || buf.len() > 16 * 1024 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let req = String::from_utf8_lossy(&buf);
    let mut lines = req.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let auth = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let reply = |s: &mut TcpStream, status: &str, ctype: &str, body: &str, extra: &str| {
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    if let Some(t) = token {
        let ok = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), t));
        if !ok {
            return reply(
                &mut s,
                "401 Unauthorized",
                "text/plain",
                "unauthorized\n",
                "WWW-Authenticate: Bearer\r\n",
            );
        }
    }
    if method != "GET" {
        return reply(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n",
            "",
        );
    }
    if path != "/metrics" && !path.starts_with("/metrics?") {
        return reply(&mut s, "404 Not Found", "text/plain", "not found\n", "");
    }
    let (m, healthy) = source();
    let body = render(&m, healthy);
    reply(&mut s, "200 OK", "text/plain; version=0.0.4", &body, "")
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
    c(
        &mut o,
        "checksum_failures_total",
        "Checksum failures met by reads",
        m.checksum_failures,
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
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
