//! Catalog metadata for Flight SQL clients: catalogs, schemas, tables (with their
//! Arrow schemas), table types and the server's `SqlInfo`.

use super::FlightConfig;
use crate::db::Database;
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, SqlInfo, SqlSupportedTransaction,
};
use datafusion::datasource::TableType;
use std::sync::Arc;

fn arrow_error(e: impl std::fmt::Display) -> Error {
    Error::Arrow(e.to_string())
}

/// What the server tells clients about itself.
pub(super) fn sql_info(db: &Database, config: &FlightConfig) -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Lightning DB");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, db.is_read_only());
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    let secs = |d: Option<std::time::Duration>| {
        d.map(|d| d.as_secs().clamp(1, i32::MAX as u64) as i32)
            .unwrap_or(0)
    };
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        secs(config.limits.timeout),
    );
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlMaxStatementLength, {
        let n = db.config().sql_max_statement_bytes;
        n.min(i64::MAX as usize) as i64
    });
    // The builder only fails on a value of the wrong kind for its id; these are fixed.
    b.build().unwrap_or_else(|_| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Lightning DB");
        b.build().expect("one string SqlInfo value always builds")
    })
}

/// Every catalog of the SQL session.
pub(super) fn catalogs(db: &Database, query: CommandGetCatalogs) -> Result<RecordBatch> {
    let ctx = db.session()?;
    let mut b = query.into_builder();
    for c in ctx.catalog_names() {
        b.append(c);
    }
    b.build().map_err(arrow_error)
}

/// Every (catalog, schema) pair the query's filters let through.
pub(super) fn db_schemas(db: &Database, query: CommandGetDbSchemas) -> Result<RecordBatch> {
    let ctx = db.session()?;
    let mut b = query.into_builder();
    for c in ctx.catalog_names() {
        let Some(cat) = ctx.catalog(&c) else { continue };
        for s in cat.schema_names() {
            b.append(&c, s);
        }
    }
    b.build().map_err(arrow_error)
}

/// Every table the query's filters let through, with its Arrow schema when asked.
pub(super) async fn tables(db: &Database, query: CommandGetTables) -> Result<RecordBatch> {
    let ctx = db.session()?;
    let with_schema = query.include_schema;
    let mut b = query.into_builder();
    let empty = arrow::datatypes::Schema::empty();
    for c in ctx.catalog_names() {
        let Some(cat) = ctx.catalog(&c) else { continue };
        for s in cat.schema_names() {
            let Some(schema) = cat.schema(&s) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for t in names {
                let Some(p) = schema.table(&t).await? else {
                    continue;
                };
                let kind = match p.table_type() {
                    TableType::Base => "TABLE",
                    TableType::View => "VIEW",
                    TableType::Temporary => "LOCAL TEMPORARY",
                };
                let table_schema = crate::sql::plain_schema(&p.schema());
                let sch = if with_schema { &table_schema } else { &empty };
                b.append(&c, &s, &t, kind, sch).map_err(arrow_error)?;
            }
        }
    }
    b.build().map_err(arrow_error)
}

/// The kinds of table there are.
pub(super) fn table_types() -> Result<RecordBatch> {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("table_type", arrow::datatypes::DataType::Utf8, false),
    ]));
    let types = arrow::array::StringArray::from(vec!["LOCAL TEMPORARY", "TABLE", "VIEW"]);
    RecordBatch::try_new(schema, vec![Arc::new(types)]).map_err(arrow_error)
}
