//! `ALTER TABLE … ADD [COLUMN] / DROP [COLUMN] / RENAME COLUMN … TO …` on Lightning
//! tables (DataFusion has no ALTER TABLE): the operations are applied in order to the
//! table's columns, and the table is rewritten once in the new shape (see
//! `tables/alter.rs`).

use super::SqlState;
use crate::error::{Error, Result};
use crate::tables::{Alteration, Tables};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::Field;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::planner::IdentNormalizer;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, ColumnOption, Ident, RenameTableNameKind,
};
use std::sync::Arc;

pub(super) async fn alter_table(
    tables: &Arc<Tables>,
    st: &SqlState,
    a: &AlterTable,
) -> Result<Vec<RecordBatch>> {
    let norm = IdentNormalizer::new(
        st.ctx
            .state()
            .config()
            .options()
            .sql_parser
            .enable_ident_normalization,
    );
    let Some(table) = a.name.0.last().and_then(|p| p.as_ident()) else {
        return Err(Error::Sql(format!(
            "ALTER TABLE: bad table name {}",
            a.name
        )));
    };
    let name = norm.normalize(table.clone());
    let def = match tables.def(&name) {
        Err(Error::TableNotFound(_)) if a.if_exists => return Ok(Vec::new()),
        d => d?,
    };
    if let [AlterTableOperation::RenameTable { table_name }] = &a.operations[..] {
        let (RenameTableNameKind::To(to) | RenameTableNameKind::As(to)) = table_name;
        let Some(to) = to.0.last().and_then(|p| p.as_ident()) else {
            return Err(Error::Sql(format!("ALTER TABLE: bad table name {to}")));
        };
        tables.rename_table(&name, &norm.normalize(to.clone()))?;
        return Ok(Vec::new());
    }
    let mut alt = Alteration::of(def)?;
    for op in &a.operations {
        match op {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                column_position,
                ..
            } => {
                if column_position.is_some() {
                    return Err(unsupported("ADD COLUMN … FIRST / AFTER"));
                }
                let col = norm.normalize(column_def.name.clone());
                if *if_not_exists && alt.has(&col) {
                    continue;
                }
                if column_def.options.iter().any(|o| {
                    matches!(
                        o.option,
                        ColumnOption::PrimaryKey(_) | ColumnOption::Unique(_)
                    )
                }) {
                    return Err(unsupported("ADD COLUMN … PRIMARY KEY / UNIQUE"));
                }
                let (field, default) = plan_column(st, column_def).await?;
                let default = match default {
                    Some(sql) => {
                        let v = default_value(st, &sql, &field).await?;
                        Some((sql, v))
                    }
                    None => None,
                };
                alt.add(field.with_name(col), default)?;
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for c in column_names {
                    let c = norm.normalize(c.clone());
                    if alt.has(&c) || !*if_exists {
                        alt.drop_column(&c)?;
                    }
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => alt.rename(
                &norm.normalize(old_column_name.clone()),
                &norm.normalize(new_column_name.clone()),
            )?,
            other => {
                let text = other.to_string();
                let what = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(unsupported(&what));
            }
        }
    }
    let t = tables.clone();
    tokio::task::spawn_blocking(move || t.alter(alt))
        .await
        .map_err(|e| Error::Sql(format!("ALTER TABLE failed: {e}")))??;
    Ok(Vec::new())
}

fn unsupported(what: &str) -> Error {
    Error::Sql(format!(
        "ALTER TABLE {what} is not supported (supported: ADD [COLUMN], DROP [COLUMN], RENAME COLUMN … TO …, and RENAME TO … alone)"
    ))
}

/// The field (in the types tables store) and `DEFAULT` (SQL text) of a column
/// definition, as `CREATE TABLE` would make them.
async fn plan_column(
    st: &SqlState,
    column_def: &datafusion::sql::sqlparser::ast::ColumnDef,
) -> Result<(Field, Option<String>)> {
    let mut probe = column_def.clone();
    probe.name = Ident::new("c");
    let sql = format!("CREATE TABLE __lightning_alter_probe ({probe})");
    let state = st.ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let stmt = state.sql_to_statement(&sql, &dialect)?;
    let plan = state.statement_to_plan(stmt).await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) = plan else {
        return Err(Error::Sql(format!(
            "ALTER TABLE: cannot plan column {}",
            column_def.name
        )));
    };
    let schema = crate::tables::to_table_schema(c.input.schema().as_arrow());
    let field = schema.field(0).clone();
    let default = match c.column_defaults.iter().find(|(n, _)| n == "c") {
        Some((_, e)) => Some(lightning_query::default_sql(e)?),
        None => None,
    };
    Ok((field, default))
}

/// `DEFAULT sql` evaluated once, as one value of `field`'s type: what the existing rows
/// hold in the new column.
async fn default_value(st: &SqlState, sql: &str, field: &Field) -> Result<ArrayRef> {
    let out = st
        .ctx
        .sql(&format!("SELECT {sql}"))
        .await?
        .collect()
        .await?;
    let Some(b) = out.iter().find(|b| b.num_rows() > 0) else {
        return Err(Error::Sql(format!("DEFAULT {sql} has no value")));
    };
    let v = b.column(0).slice(0, 1);
    Ok(arrow::compute::cast(&v, field.data_type())?)
}
