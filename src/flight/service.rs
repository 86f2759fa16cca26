//! The Flight SQL protocol over [`Database`]: each `FlightSqlService` call mapped to
//! the SQL API.

use super::FlightConfig;
use super::metadata;
use super::state::{Answer, PreparedStatements, Results, off_runtime, status};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::sql::{QueryLimits, SqlStream, plain_schema};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TableExistsOption, TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status, Streaming};

/// Checks every call's `authorization` header against the server's token.
#[derive(Clone)]
pub(super) struct Auth {
    token: Option<Arc<str>>,
}

impl Auth {
    pub fn new(token: Option<String>) -> Auth {
        Auth {
            token: token.map(Arc::from),
        }
    }

    /// Accepts `Bearer <token>`, or `Basic` credentials whose password is the token.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "this server needs a token: send `authorization: Bearer <token>`",
                )
            })?;
        let given = presented_secret(header).unwrap_or_default();
        match bool::from(given.as_slice().ct_eq(token.as_bytes())) {
            true => Ok(req),
            false => Err(Status::unauthenticated("invalid token")),
        }
    }
}

/// The secret an `authorization` header presents: a bearer token, or a Basic
/// password.
fn presented_secret(header: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = header.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Some(rest.trim().as_bytes().to_vec()),
        "basic" => {
            // Padded or not (Go's Flight client sends it unpadded).
            use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
            let engine = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let raw = engine.decode(rest.trim()).ok()?;
            let colon = raw.iter().position(|&b| b == b':')?;
            Some(raw[colon + 1..].to_vec())
        }
        _ => None,
    }
}

pub(super) struct Service {
    db: Arc<Database>,
    config: FlightConfig,
    turns: Arc<Semaphore>,
    results: Arc<Results>,
    prepared: PreparedStatements,
    sql_info: SqlInfoData,
}

type DoGetStream = <Service as FlightService>::DoGetStream;

impl Service {
    pub fn new(db: Arc<Database>, config: FlightConfig) -> Service {
        let sql_info = metadata::sql_info(&db, &config);
        Service {
            turns: Arc::new(Semaphore::new(config.max_concurrent_queries)),
            results: Arc::new(Results::new(
                config.result_ttl,
                config.max_pending_result_bytes,
            )),
            prepared: PreparedStatements::default(),
            db,
            config,
            sql_info,
        }
    }

    /// Drops unfetched results past their time, every few seconds, until the server
    /// is gone.
    pub fn start_sweeper(&self) {
        let results = Arc::downgrade(&self.results);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                match results.upgrade() {
                    Some(r) => r.sweep(),
                    None => return,
                }
            }
        });
    }

    fn limits(&self) -> &QueryLimits {
        &self.config.limits
    }

    /// A turn to run a statement, waiting at most the statement time limit for one.
    async fn turn(&self) -> Result<OwnedSemaphorePermit, Status> {
        let wait = self.turns.clone().acquire_owned();
        let permit = match self.limits().timeout {
            None => wait.await,
            Some(d) => tokio::time::timeout(d, wait).await.map_err(|_| {
                Status::resource_exhausted(format!(
                    "{} statements are running, the most this server runs at once; \
                     none finished within the time limit of {d:?}",
                    self.config.max_concurrent_queries
                ))
            })?,
        };
        permit.map_err(|_| Status::unavailable("the server is shutting down"))
    }

    /// Run one SQL statement under the server's limits.
    async fn run_sql(&self, sql: &str) -> Result<Vec<RecordBatch>, Status> {
        let _turn = self.turn().await?;
        self.db
            .sql_async_limited(sql, self.limits())
            .await
            .map_err(status)
    }

    /// Run prepared statement `handle` once per bound parameter row (once without
    /// parameters when none are bound), and concatenate the answers.
    async fn run_prepared(
        &self,
        handle: &[u8],
        rows: Option<Vec<Vec<ScalarValue>>>,
    ) -> Result<Vec<RecordBatch>, Status> {
        let p = self.prepared.get(handle)?;
        let rows = rows.unwrap_or_else(|| std::mem::take(&mut *p.bound.lock()));
        let _turn = self.turn().await?;
        let limits = self.limits().clone();
        off_runtime(move || {
            if rows.is_empty() {
                return p.stmt.execute_limited((), &limits);
            }
            let mut out = Vec::new();
            for row in rows {
                out.extend(p.stmt.execute_limited(row, &limits)?);
            }
            Ok(out)
        })
        .await?
        .map_err(status)
    }

    /// Keep `batches` for a `DoGet` and describe them.
    fn ticketed(
        &self,
        batches: Vec<RecordBatch>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let batches = batches
            .iter()
            .map(plain)
            .collect::<Result<Vec<_>>>()
            .map_err(status)?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let handle = self.results.put(schema.clone(), Answer::Ready(batches))?;
        let info = ticket_info(&schema, handle, descriptor)?
            .with_total_records(rows as i64)
            .with_total_bytes(bytes as i64);
        Ok(Response::new(info))
    }

    /// A `FlightInfo` whose ticket is the command itself (catalog metadata is made
    /// when it is fetched).
    fn metadata_info(
        &self,
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        Ok(Response::new(flight_info(schema, ticket, descriptor)?))
    }
}

/// A `FlightInfo` for the result under `handle`, fetched with one `DoGet`.
fn ticket_info(
    schema: &Schema,
    handle: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let ticket = TicketStatementQuery {
        statement_handle: handle.into(),
    };
    let ticket = Ticket::new(ticket.as_any().encode_to_vec());
    Ok(flight_info(schema, ticket, descriptor)?.with_ordered(true))
}

/// A `FlightInfo` with one endpoint: `ticket`, fetched from this server.
fn flight_info(
    schema: &Schema,
    ticket: Ticket,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding a schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor))
}

/// A running query's batches as one `DoGet` stream of Arrow IPC messages; `turn` is
/// given back when the stream ends or is dropped.
fn live_stream(
    schema: SchemaRef,
    rows: SqlStream,
    turn: OwnedSemaphorePermit,
) -> Response<DoGetStream> {
    let batches = rows.map(move |b| {
        let _turn = &turn;
        b.and_then(|b| plain(&b))
            .map_err(|e| FlightError::Tonic(Box::new(status(e))))
    });
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(s))
}

/// `batches` as one `DoGet` stream of Arrow IPC messages.
pub(super) fn stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DoGetStream> {
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(s))
}

/// `b` in the types of [`plain_schema`].
fn plain(b: &RecordBatch) -> Result<RecordBatch> {
    let schema = Arc::new(plain_schema(&b.schema()));
    if schema == b.schema() {
        return Ok(b.clone());
    }
    Ok(lightning_query::cast_batch(b, &schema)?)
}

/// The rows a `DoPut` carries, decoded.
fn decoded(
    request: Request<PeekableFlightDataStream>,
) -> impl Stream<Item = Result<RecordBatch, Status>> {
    FlightRecordBatchStream::new_from_flight_data(request.into_inner().map_err(FlightError::from))
        .map_err(Status::from)
}

/// Every row of the parameter batches a `DoPut` carries.
async fn parameter_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let batches: Vec<RecordBatch> = decoded(request).try_collect().await?;
    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let row = b
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(format!("a parameter value: {e}")))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The rows a write statement's answer says it changed (`count`), 0 for DDL.
fn affected(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter(|b| b.num_columns() == 1 && b.schema().field(0).name() == "count")
        .filter_map(|b| {
            let c = arrow::compute::cast(b.column(0), &DataType::UInt64).ok()?;
            let c = c.as_primitive::<UInt64Type>();
            Some(
                (0..c.len())
                    .filter(|&i| c.is_valid(i))
                    .map(|i| c.value(i))
                    .sum::<u64>(),
            )
        })
        .sum::<u64>() as i64
}

/// `b`'s columns matched by name to `target`'s and cast to its types.
fn conform(b: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    let opts = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut cols = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        let c = b
            .column_by_name(f.name())
            .ok_or_else(|| Error::Schema(format!("the data has no column {:?}", f.name())))?;
        cols.push(
            arrow::compute::cast_with_options(c, f.data_type(), &opts)
                .map_err(|e| Error::Schema(format!("column {:?}: {e}", f.name())))?,
        );
    }
    if b.num_columns() != target.fields().len() {
        return Err(Error::Schema(format!(
            "the data has {} columns, the table {}",
            b.num_columns(),
            target.fields().len()
        )));
    }
    RecordBatch::try_new(target.clone(), cols).map_err(|e| Error::Schema(e.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // The interceptor has checked the credentials; hand back the bearer token.
        let token = self.config.token.clone().unwrap_or_default();
        let out = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        })]);
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(out));
        drop(request);
        if !token.is_empty() {
            let v = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", v);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(Status::unimplemented("Flight SQL transactions"));
        }
        // The query starts now; its rows are made as the client reads them.
        let turn = self.turn().await?;
        let rows = self
            .db
            .sql_stream_async(&query.query, self.limits())
            .await
            .map_err(status)?;
        let schema = Arc::new(plain_schema(&rows.schema()));
        let handle = self.results.put(schema.clone(), Answer::Live(rows, turn))?;
        Ok(Response::new(ticket_info(
            &schema,
            handle,
            request.into_inner(),
        )?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let batches = self
            .run_prepared(&cmd.prepared_statement_handle, None)
            .await?;
        self.ticketed(batches, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let p = self.results.take(&ticket.statement_handle).ok_or_else(|| {
            Status::not_found("no result under this ticket (fetched already, or expired)")
        })?;
        Ok(match p.answer {
            Answer::Ready(batches) => stream(p.schema, batches),
            Answer::Live(rows, turn) => live_stream(p.schema, rows, turn),
        })
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batches = self
            .run_prepared(&cmd.prepared_statement_handle, None)
            .await?
            .iter()
            .map(plain)
            .collect::<Result<Vec<_>>>()
            .map_err(status)?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => Arc::new(Schema::empty()),
        };
        Ok(stream(schema, batches))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        if cmd.transaction_id.is_some() {
            return Err(Status::unimplemented("Flight SQL transactions"));
        }
        Ok(affected(&self.run_sql(&cmd.query).await?))
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let p = self.prepared.get(&cmd.prepared_statement_handle)?;
        *p.bound.lock() = parameter_rows(request).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let rows = parameter_rows(request).await?;
        let rows = (!rows.is_empty()).then_some(rows);
        let out = self
            .run_prepared(&cmd.prepared_statement_handle, rows)
            .await?;
        Ok(affected(&out))
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        if cmd.temporary || cmd.transaction_id.is_some() {
            return Err(Status::unimplemented(
                "temporary tables and transactions in bulk ingestion",
            ));
        }
        let opts = cmd.table_definition_options.unwrap_or_default();
        let table = cmd.table;
        let exists = self.db.table_schema(&table).is_ok();
        let mode = match (exists, opts.if_exists(), opts.if_not_exist()) {
            (true, TableExistsOption::Append, _) => Ingest::Append,
            (true, TableExistsOption::Replace, _) => Ingest::Replace,
            (true, _, _) => return Err(Status::already_exists(format!("table {table:?} exists"))),
            (false, _, TableNotExistOption::Create) => Ingest::Create,
            (false, _, _) => return Err(status(Error::TableNotFound(table))),
        };
        let mut batches = Box::pin(decoded(request));
        let first = batches.try_next().await?;
        let target = match (&mode, &first) {
            (Ingest::Append, _) => self.db.table_schema(&table).map_err(status)?,
            (_, Some(b)) => Arc::new(crate::tables::to_table_schema(&b.schema())),
            (_, None) => return Err(Status::invalid_argument("no rows and no schema to ingest")),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
        let _turn = self.turn().await?;
        let db = self.db.clone();
        let schema = target.clone();
        let worker = off_runtime(move || {
            let rows = std::iter::from_fn(move || rx.blocking_recv());
            match mode {
                Ingest::Append => db.append_batches(&table, rows),
                Ingest::Create => db.load_table(&table, schema, &[], rows),
                Ingest::Replace => db.replace_table(&table, schema, &[], rows),
            }
        });
        let feed = async move {
            let mut next = first;
            while let Some(b) = next {
                if tx.send(conform(&b, &target)).await.is_err() {
                    return;
                }
                next = match batches.try_next().await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(Error::Arrow(e.message().to_string()))).await;
                        return;
                    }
                };
            }
        };
        let ((), n) = tokio::join!(feed, worker);
        Ok(n?.map_err(status)? as i64)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        if query.transaction_id.is_some() {
            return Err(Status::unimplemented("Flight SQL transactions"));
        }
        let db = self.db.clone();
        let p = off_runtime(move || super::state::Prepared::new(db, &query.query))
            .await?
            .map_err(status)?;
        let dataset = p.stmt.schema().map_err(status)?;
        let params = Schema::new(
            p.stmt
                .parameter_types()
                .map_err(status)?
                .into_iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("${}", i + 1), t.unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        );
        let ipc = |s: &Schema| -> Result<_, Status> {
            let opts = arrow::ipc::writer::IpcWriteOptions::default();
            let IpcMessage(bytes) = SchemaAsIpc::new(s, &opts)
                .try_into()
                .map_err(|e| Status::internal(format!("encoding a schema: {e}")))?;
            Ok(bytes)
        };
        let plain_dataset = plain_schema(&dataset);
        Ok(ActionCreatePreparedStatementResult {
            dataset_schema: ipc(&plain_dataset)?,
            parameter_schema: ipc(&params)?,
            prepared_statement_handle: self.prepared.insert(p).into(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        self.prepared.remove(&query.prepared_statement_handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let b = metadata::catalogs(&self.db, query).map_err(status)?;
        Ok(stream(b.schema(), vec![b]))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let b = metadata::db_schemas(&self.db, query).map_err(status)?;
        Ok(stream(b.schema(), vec![b]))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let b = metadata::tables(&self.db, query).await.map_err(status)?;
        Ok(stream(b.schema(), vec![b]))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let b = metadata::table_types().map_err(status)?;
        self.metadata_info(&b.schema(), query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let b = metadata::table_types().map_err(status)?;
        Ok(stream(b.schema(), vec![b]))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        let b = builder
            .build()
            .map_err(|e| Status::internal(format!("building SqlInfo: {e}")))?;
        Ok(stream(schema, vec![b]))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// What a bulk ingestion does with its table.
enum Ingest {
    Append,
    Create,
    Replace,
}

#[cfg(test)]
mod tests {
    use super::presented_secret as secret;

    #[test]
    fn bearer_and_basic_credentials() {
        assert_eq!(secret("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(secret("bearer  abc "), Some(b"abc".to_vec()));
        // base64("user:s3cret"), padded and unpadded.
        assert_eq!(secret("Basic dXNlcjpzM2NyZXQ="), Some(b"s3cret".to_vec()));
        assert_eq!(secret("Basic dXNlcjpzM2NyZXQ"), Some(b"s3cret".to_vec()));
        // A password may hold colons; the user may not.
        assert_eq!(secret("Basic dTphOmI="), Some(b"a:b".to_vec()));
        assert_eq!(secret("Basic !!!"), None);
        assert_eq!(secret("Digest abc"), None);
        assert_eq!(secret("Bearer"), None);
    }
}
