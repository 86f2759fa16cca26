//! An Arrow Flight SQL server over one database (`lightning-cli serve <db> --flight
//! ADDR`): statements, prepared statements with parameters, DML, bulk ingestion and
//! catalog metadata for any Flight SQL client (ADBC, JDBC, the Go and C++ clients).
//!
//! Every call carries `authorization: Bearer <token>` when the server has a token
//! (a handshake with HTTP Basic, any user and the token as password, returns it too).
//! Each statement runs under the server's [`QueryLimits`] and at most
//! `max_concurrent_queries` run at once; the rest wait their turn (as long as their
//! deadline allows). A query is planned and started when the client asks for its
//! `FlightInfo`, and its rows are made as the client reads them with `DoGet` (Arrow
//! IPC messages; the query holds its turn until then, or until `result_ttl` passes
//! and it is cancelled). Other statements (DDL, DML) and prepared statements run to
//! their end first, and their answer waits under the ticket.

mod metadata;
mod service;
mod state;

use crate::db::Database;
use crate::error::{Error, Result};
use crate::sql::QueryLimits;
use arrow_flight::flight_service_server::FlightServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// How a [`FlightSqlServer`] serves.
#[derive(Clone)]
pub struct FlightConfig {
    /// Clients must send `authorization: Bearer <token>`. `None`: no authentication
    /// (only sensible on a loopback address).
    pub token: Option<String>,
    /// PEM certificate chain and private key: serve gRPC over TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// The limits every statement runs under.
    pub limits: QueryLimits,
    /// Statements that may run at once; more wait for a turn.
    pub max_concurrent_queries: usize,
    /// How long a query's result waits for its `DoGet` before it is dropped.
    pub result_ttl: Duration,
    /// Results waiting for their `DoGet` are refused past this many bytes in all.
    pub max_pending_result_bytes: usize,
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig {
            token: None,
            tls: None,
            limits: QueryLimits::none(),
            max_concurrent_queries: 16,
            result_ttl: Duration::from_secs(300),
            max_pending_result_bytes: 4 << 30,
        }
    }
}

impl std::fmt::Debug for FlightConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("max_concurrent_queries", &self.max_concurrent_queries)
            .field("result_ttl", &self.result_ttl)
            .field("max_pending_result_bytes", &self.max_pending_result_bytes)
            .finish()
    }
}

/// An Arrow Flight SQL server over one database.
pub struct FlightSqlServer {
    db: Arc<Database>,
    config: FlightConfig,
}

impl FlightSqlServer {
    /// A server for `db` (which must have been opened with SQL).
    pub fn new(db: Arc<Database>, config: FlightConfig) -> Result<FlightSqlServer> {
        if config.max_concurrent_queries == 0 {
            return Err(Error::InvalidConfig(
                "max_concurrent_queries must be at least 1".into(),
            ));
        }
        if config.token.as_deref().is_some_and(str::is_empty) {
            return Err(Error::InvalidConfig("the token is empty".into()));
        }
        Ok(FlightSqlServer { db, config })
    }

    /// Serve on `listener` until `shutdown` completes; calls under way finish first.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let auth = service::Auth::new(self.config.token.clone());
        let tls = self.config.tls.clone();
        let svc = service::Service::new(self.db, self.config);
        svc.start_sweeper();
        let svc = FlightServiceServer::new(svc)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let svc = tonic::service::interceptor::InterceptedService::new(svc, move |r| auth.check(r));
        let mut builder = Server::builder();
        if let Some((cert, key)) = tls {
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .map_err(|e| Error::InvalidConfig(format!("TLS certificate or key: {e}")))?;
        }
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| Error::Io {
                context: "serving Flight SQL".into(),
                source: std::io::Error::other(e),
            })
    }
}

/// Bind `addr` (port 0: any free port) for a [`FlightSqlServer`]; the listener's
/// `local_addr` is the address to give clients.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io {
            context: format!("binding {addr}"),
            source: e,
        })
}
