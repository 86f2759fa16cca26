//! What the Flight SQL server keeps between calls: query results waiting for their
//! `DoGet`, prepared statements with their bound parameters, and the turns of the
//! concurrent-statement cap.

use crate::db::Database;
use crate::error::Error;
use crate::sql::{PreparedStatement, SqlStream};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

/// A new opaque handle: unique within the process and not guessable from another.
pub(super) fn new_handle() -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&n.to_be_bytes());
    for salt in [0x9e37_79b9_7f4a_7c15u64, 0xc2b2_ae3d_27d4_eb4f] {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n ^ salt);
        out.extend_from_slice(&h.finish().to_be_bytes());
    }
    out
}

/// A statement's answer: its rows, or a running query that makes them as they are
/// read (holding its turn until then).
pub(super) enum Answer {
    Ready(Vec<RecordBatch>),
    Live(SqlStream, OwnedSemaphorePermit),
}

/// A query result waiting for its `DoGet`.
pub(super) struct Pending {
    pub schema: SchemaRef,
    pub answer: Answer,
    bytes: usize,
    at: Instant,
}

/// Results waiting for their `DoGet`, each once, for at most `ttl`, and at most
/// `max_bytes` of them in all.
pub(super) struct Results {
    map: Mutex<(HashMap<Vec<u8>, Pending>, usize)>,
    ttl: Duration,
    max_bytes: usize,
}

impl Results {
    pub fn new(ttl: Duration, max_bytes: usize) -> Results {
        Results {
            map: Mutex::new((HashMap::new(), 0)),
            ttl,
            max_bytes,
        }
    }

    /// Drop the results nobody fetched in time (a running query among them is
    /// cancelled, and its turn given back).
    pub fn sweep(&self) {
        let expired: Vec<Pending> = {
            let mut g = self.map.lock();
            let (map, total) = &mut *g;
            let now = Instant::now();
            let old: Vec<Vec<u8>> = map
                .iter()
                .filter(|(_, p)| now.duration_since(p.at) >= self.ttl)
                .map(|(k, _)| k.clone())
                .collect();
            old.iter()
                .filter_map(|k| map.remove(k))
                .inspect(|p| *total -= p.bytes)
                .collect()
        };
        // Dropped outside the lock.
        drop(expired);
    }

    /// Keep a result; returns its ticket handle. (Expired ones are dropped by the
    /// server's sweeper, every few seconds.)
    pub fn put(&self, schema: SchemaRef, answer: Answer) -> Result<Vec<u8>, Status> {
        let bytes: usize = match &answer {
            Answer::Ready(batches) => batches.iter().map(|b| b.get_array_memory_size()).sum(),
            Answer::Live(..) => 0,
        };
        let mut g = self.map.lock();
        let (map, total) = &mut *g;
        let now = Instant::now();
        if *total + bytes > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "results waiting to be fetched would take {} bytes, over the server's limit \
                 of {} bytes; fetch earlier results first",
                *total + bytes,
                self.max_bytes
            )));
        }
        let handle = new_handle();
        *total += bytes;
        map.insert(
            handle.clone(),
            Pending {
                schema,
                answer,
                bytes,
                at: now,
            },
        );
        Ok(handle)
    }

    /// Take the result under `handle` (each is fetched once).
    pub fn take(&self, handle: &[u8]) -> Option<Pending> {
        let mut g = self.map.lock();
        let (map, total) = &mut *g;
        let p = map.remove(handle)?;
        *total -= p.bytes;
        Some(p)
    }
}

/// A prepared statement and the parameter rows bound to it (by `DoPut`) for its next
/// run.
pub(super) struct Prepared {
    // Declared before `_db`: dropped first (it borrows the database `_db` keeps).
    pub stmt: PreparedStatement<'static>,
    pub bound: Mutex<Vec<Vec<ScalarValue>>>,
    _db: Arc<Database>,
}

impl Prepared {
    /// Prepare `sql` on `db` (blocking: call it off the async runtime).
    pub fn new(db: Arc<Database>, sql: &str) -> Result<Prepared, Error> {
        let stmt = db.prepare(sql)?;
        // SAFETY: `stmt` borrows the `Database` inside `db`'s allocation, which never
        // moves and lives as long as the `Arc` kept in `_db`; `stmt` is dropped
        // before `_db` (field order), so the borrow never outlives the database.
        let stmt: PreparedStatement<'static> = unsafe { std::mem::transmute(stmt) };
        Ok(Prepared {
            stmt,
            bound: Mutex::new(Vec::new()),
            _db: db,
        })
    }
}

/// Prepared statements by handle, until the client closes them.
#[derive(Default)]
pub(super) struct PreparedStatements {
    map: Mutex<HashMap<Vec<u8>, Arc<Prepared>>>,
}

impl PreparedStatements {
    pub fn insert(&self, p: Prepared) -> Vec<u8> {
        let handle = new_handle();
        self.map.lock().insert(handle.clone(), Arc::new(p));
        handle
    }

    pub fn get(&self, handle: &[u8]) -> Result<Arc<Prepared>, Status> {
        self.map.lock().get(handle).cloned().ok_or_else(|| {
            Status::not_found("no prepared statement under this handle (closed, or never made)")
        })
    }

    pub fn remove(&self, handle: &[u8]) {
        self.map.lock().remove(handle);
    }
}

/// Run `f` on a thread of its own, off the async runtime: the blocking database calls
/// (preparing, running a prepared statement, ingesting) wait on the SQL runtime, which
/// they refuse to do from inside another runtime.
pub(super) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ldb-flight".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Status::internal(format!("starting a worker thread: {e}")))?;
    rx.await
        .map_err(|_| Status::internal("a worker thread stopped before it answered"))
}

/// The gRPC status for an error from the database.
pub(super) fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::Sql(_)
        | Error::Schema(_)
        | Error::Arrow(_)
        | Error::InvalidArgument(_)
        | Error::KeyTooLarge { .. }
        | Error::ValueTooLarge { .. }
        | Error::BatchTooLarge { .. } => Status::invalid_argument(msg),
        Error::TableNotFound(_) => Status::not_found(msg),
        Error::TableExists(_) => Status::already_exists(msg),
        Error::Constraint(_) | Error::ReadOnly => Status::failed_precondition(msg),
        Error::TransactionConflict(_) => Status::aborted(msg),
        Error::QueryLimit(_) | Error::TooManyTransactions { .. } => Status::resource_exhausted(msg),
        Error::Closed => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}
