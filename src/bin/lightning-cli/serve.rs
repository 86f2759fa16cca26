//! `lightning-cli serve <db> --flight ADDR`: the database as an Arrow Flight SQL server.

use lightning_db::QueryLimits;
use lightning_db::flight::{FlightConfig, FlightSqlServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What `serve` takes.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The database (created if missing).
    db: PathBuf,
    /// Serve Arrow Flight SQL on this address (`127.0.0.1:50051`; port 0 picks a free
    /// port, printed on start).
    #[arg(long, value_name = "ADDR")]
    flight: SocketAddr,
    /// Clients must send `authorization: Bearer <token>` with the token in this file
    /// (surrounding whitespace ignored). Without it the server takes any client.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Serve over TLS with this PEM certificate (chain)...
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ...and this PEM private key.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Operator memory one statement may hold (joins, aggregations, sorts), e.g.
    /// `2GiB`, `512MiB`, `1000000`; `0` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    query_memory_limit: usize,
    /// Seconds one statement may run before it is cancelled; `0` for no limit.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    query_timeout: u64,
    /// Statements that run at once; more wait for a turn.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_concurrent_queries: u32,
}

impl ServeArgs {
    pub fn db(&self) -> &std::path::Path {
        &self.db
    }
}

/// `2GiB`, `512MiB`, `64KiB`, `10GB`, `1000`: a size in bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mul: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} (use B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

pub fn serve(a: ServeArgs, db: lightning_db::Database) -> super::Res<()> {
    let token = match &a.token_file {
        None => None,
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| format!("reading the token file {}: {e}", p.display()))?;
            Some(t.trim().to_string())
        }
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
            Some((read(c)?, read(k)?))
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let config = FlightConfig {
        token,
        tls,
        limits: QueryLimits {
            memory: (a.query_memory_limit > 0).then_some(a.query_memory_limit),
            timeout: (a.query_timeout > 0).then(|| Duration::from_secs(a.query_timeout)),
        },
        max_concurrent_queries: a.max_concurrent_queries as usize,
        ..FlightConfig::default()
    };
    let db = Arc::new(db);
    let server = FlightSqlServer::new(db.clone(), config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ldb-flight-io")
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = lightning_db::flight::bind(a.flight).await?;
        let addr = listener.local_addr()?;
        // The line a supervisor (or a test) waits for.
        println!("Flight SQL server listening on {scheme}://{addr}");
        use std::io::Write;
        std::io::stdout().flush()?;
        server.serve(listener, shutdown_signal()).await?;
        eprintln!("Flight SQL server stopped");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(rt);
    db.close()?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10kb"), Ok(10_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
