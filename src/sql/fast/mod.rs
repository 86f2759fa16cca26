//! The single-row fast path: `INSERT … VALUES (one row)`, and `UPDATE`, `DELETE` and
//! `SELECT` whose `WHERE` pins every primary-key column with `=`, go straight to the row
//! store: no DataFusion logical or physical planning, no hop to the SQL runtime. Every
//! other statement takes the general path, and so does a fast statement whose values
//! cannot be stored exactly as given (DataFusion then decides, with its own coercions
//! and messages).
//!
//! A statement qualifies only if it is exactly the shape modelled here: after
//! extracting its parts, the statement is printed again from them and compared with
//! the parser's own rendering of the whole statement. Any clause not modelled
//! (`RETURNING`, `LIMIT`, `ORDER BY`, joins, aliases, …) makes the two differ, and the
//! statement takes the general path: a clause is never silently ignored.

use crate::error::{Error, Result};
use crate::tables::Tables;
use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FromTable, Ident, ObjectName, ObjectNamePart,
    SelectItem, SetExpr, SqliteOnConflict, Statement, TableFactor, TableObject, UnaryOperator,
    Value,
};
use lightning_columnar::TableDef;
use lightning_rowstore::{Isolation, Transaction};
use std::sync::Arc;

mod bytes;
use bytes::{Edit, key_bytes, update_in_place, update_through_arrow};

/// Where a value comes from.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    /// `$n` (0-based here).
    Param(usize),
    Lit(ScalarValue),
    /// A column of the row being updated.
    Col(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
}

/// A value computed for `SET col = …`.
#[derive(Debug, Clone)]
pub(crate) enum Calc {
    One(Operand),
    Bin(Operand, Op, Operand),
}

#[derive(Debug, Clone)]
pub(crate) enum FastPlan {
    /// One row, every column of the table in table order.
    Insert {
        def: Arc<TableDef>,
        values: Vec<Operand>,
        replace: bool,
    },
    Update {
        def: Arc<TableDef>,
        key: Vec<Operand>,
        sets: Vec<(usize, Calc)>,
    },
    Delete {
        def: Arc<TableDef>,
        key: Vec<Operand>,
    },
    Select {
        def: Arc<TableDef>,
        key: Vec<Operand>,
        projection: Vec<usize>,
    },
}

impl FastPlan {
    /// How many positional parameters the statement takes.
    pub(crate) fn params(&self) -> usize {
        let mut n = 0;
        let mut see = |o: &Operand| {
            if let Operand::Param(i) = o {
                n = n.max(i + 1);
            }
        };
        match self {
            FastPlan::Insert { values, .. } => values.iter().for_each(&mut see),
            FastPlan::Update { key, sets, .. } => {
                key.iter().for_each(&mut see);
                for (_, c) in sets {
                    match c {
                        Calc::One(a) => see(a),
                        Calc::Bin(a, _, b) => {
                            see(a);
                            see(b);
                        }
                    }
                }
            }
            FastPlan::Delete { key, .. } | FastPlan::Select { key, .. } => {
                key.iter().for_each(&mut see)
            }
        }
        n
    }
}

/// An identifier as DataFusion resolves it: unquoted ones are lower-cased.
fn ident(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

fn single_name(n: &ObjectName) -> Option<String> {
    match n.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(ident(i)),
        _ => None,
    }
}

fn column(def: &TableDef, name: &str) -> Option<usize> {
    def.schema.index_of(name).ok()
}

/// A literal or a `$n` parameter.
fn operand(e: &Expr) -> Option<Operand> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => {
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                (n >= 1).then(|| Operand::Param(n - 1))
            }
            Value::Number(s, _) => number(s, false).map(Operand::Lit),
            Value::SingleQuotedString(s) => Some(Operand::Lit(ScalarValue::Utf8(Some(s.clone())))),
            Value::Boolean(b) => Some(Operand::Lit(ScalarValue::Boolean(Some(*b)))),
            Value::Null => Some(Operand::Lit(ScalarValue::Null)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(s, _) => number(s, true).map(Operand::Lit),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn number(s: &str, negative: bool) -> Option<ScalarValue> {
    let s = if negative {
        format!("-{s}")
    } else {
        s.to_string()
    };
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return s.parse::<i64>().ok().map(|v| ScalarValue::Int64(Some(v)));
    }
    // A decimal literal: DataFusion reads it as a float unless configured otherwise.
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(ScalarValue::Float64(Some(v)))
}

/// `k1 = v1 AND k2 = v2 …` covering every key column exactly once.
fn key_lookup(def: &TableDef, e: &Expr) -> Option<Vec<Operand>> {
    let mut found: Vec<Option<Operand>> = vec![None; def.key_cols.len()];
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                stack.push(left);
                stack.push(right);
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let (c, v) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Identifier(c), v) | (v, Expr::Identifier(c)) => (c, v),
                    _ => return None,
                };
                let i = column(def, &ident(c))?;
                let slot = def.key_cols.iter().position(|&k| k == i)?;
                if found[slot].is_some() {
                    return None;
                }
                found[slot] = Some(operand(v)?);
            }
            Expr::Nested(inner) => stack.push(inner),
            _ => return None,
        }
    }
    found.into_iter().collect()
}

fn calc(def: &TableDef, e: &Expr) -> Option<Calc> {
    let side = |e: &Expr| match e {
        Expr::Identifier(c) => column(def, &ident(c)).map(Operand::Col),
        e => operand(e),
    };
    match e {
        Expr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Plus => Op::Add,
                BinaryOperator::Minus => Op::Sub,
                BinaryOperator::Multiply => Op::Mul,
                _ => return None,
            };
            Some(Calc::Bin(side(left)?, op, side(right)?))
        }
        e => side(e).map(Calc::One),
    }
}

fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fast plan of `stmt`, if it has one of the modelled shapes exactly.
pub(crate) fn analyze(tables: &Tables, stmt: &DFStatement) -> Option<FastPlan> {
    let DFStatement::Statement(s) = stmt else {
        return None;
    };
    let whole = s.to_string();
    let def_of = |n: &ObjectName| {
        let name = single_name(n)?;
        let def = tables.defs.read().get(&name).cloned()?;
        // A keyless table has no key to go by (its rows' ids are assigned on insert).
        (!def.raw_kv && !def.keyless).then_some(def)
    };
    match s.as_ref() {
        Statement::Insert(ins) => {
            let TableObject::TableName(tn) = &ins.table else {
                return None;
            };
            let def = def_of(tn)?;
            let source = ins.source.as_ref()?;
            let SetExpr::Values(values) = source.body.as_ref() else {
                return None;
            };
            let [row] = values.rows.as_slice() else {
                return None;
            };
            let row: &Vec<Expr> = row;
            let replace = match ins.or {
                None => false,
                Some(SqliteOnConflict::Replace) => true,
                _ => return None,
            };
            let width = def.schema.fields().len();
            let cols: Vec<usize> = if ins.columns.is_empty() {
                (0..width).collect()
            } else {
                ins.columns
                    .iter()
                    .map(|c| column(&def, &single_name(c)?))
                    .collect::<Option<_>>()?
            };
            if cols.len() != row.len() {
                return None;
            }
            // A column left out that has a DEFAULT: DataFusion's planner fills it in.
            if (0..width).any(|c| {
                !cols.contains(&c) && def.defaults.contains_key(def.schema.field(c).name())
            }) {
                return None;
            }
            let mut out = vec![Operand::Lit(ScalarValue::Null); width];
            let mut seen = vec![false; width];
            for (&c, e) in cols.iter().zip(row) {
                if std::mem::replace(&mut seen[c], true) {
                    return None;
                }
                out[c] = operand(e)?;
            }
            let rebuilt = format!(
                "INSERT {}INTO {tn}{} VALUES ({})",
                if replace { "OR REPLACE " } else { "" },
                if ins.columns.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", joined(&ins.columns))
                },
                joined(row)
            );
            (rebuilt == whole).then_some(FastPlan::Insert {
                def,
                values: out,
                replace,
            })
        }
        Statement::Update(up) => {
            if !up.table.joins.is_empty() {
                return None;
            }
            let TableFactor::Table { name, .. } = &up.table.relation else {
                return None;
            };
            let def = def_of(name)?;
            let key = key_lookup(&def, up.selection.as_ref()?)?;
            let mut sets = Vec::new();
            for a in &up.assignments {
                let AssignmentTarget::ColumnName(c) = &a.target else {
                    return None;
                };
                let i = column(&def, &single_name(c)?)?;
                if def.key_cols.contains(&i) || sets.iter().any(|(j, _)| *j == i) {
                    return None;
                }
                sets.push((i, calc(&def, &a.value)?));
            }
            let rebuilt = format!(
                "UPDATE {name} SET {} WHERE {}",
                joined(&up.assignments),
                up.selection.as_ref()?
            );
            (rebuilt == whole).then_some(FastPlan::Update { def, key, sets })
        }
        Statement::Delete(del) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &del.from;
            let [t] = from.as_slice() else {
                return None;
            };
            if !t.joins.is_empty() || !del.tables.is_empty() {
                return None;
            }
            let TableFactor::Table { name, .. } = &t.relation else {
                return None;
            };
            let def = def_of(name)?;
            let key = key_lookup(&def, del.selection.as_ref()?)?;
            let rebuilt = format!("DELETE FROM {name} WHERE {}", del.selection.as_ref()?);
            (rebuilt == whole).then_some(FastPlan::Delete { def, key })
        }
        Statement::Query(q) => {
            let SetExpr::Select(sel) = q.body.as_ref() else {
                return None;
            };
            let [t] = sel.from.as_slice() else {
                return None;
            };
            if !t.joins.is_empty() {
                return None;
            }
            let TableFactor::Table { name, .. } = &t.relation else {
                return None;
            };
            let def = def_of(name)?;
            let key = key_lookup(&def, sel.selection.as_ref()?)?;
            let mut projection = Vec::new();
            for item in &sel.projection {
                match item {
                    SelectItem::Wildcard(_) => {
                        projection.extend(0..def.schema.fields().len());
                    }
                    SelectItem::UnnamedExpr(Expr::Identifier(c)) => {
                        projection.push(column(&def, &ident(c))?);
                    }
                    _ => return None,
                }
            }
            let rebuilt = format!(
                "SELECT {} FROM {name} WHERE {}",
                joined(&sel.projection),
                sel.selection.as_ref()?
            );
            (rebuilt == whole).then_some(FastPlan::Select {
                def,
                key,
                projection,
            })
        }
        _ => None,
    }
}

/// `v` as a value of type `dt`, if it converts exactly (`None`: let DataFusion decide).
fn exact(v: &ScalarValue, dt: &DataType) -> Option<ScalarValue> {
    if v.is_null() {
        return ScalarValue::try_from(dt).ok();
    }
    let from = v.data_type();
    if &from == dt {
        return Some(v.clone());
    }
    let c = v.cast_to(dt).ok()?;
    if c.is_null() {
        return None;
    }
    // Round trip: 1.5 into an integer column, or 300 into Int8, are not exact.
    let back = c.cast_to(&from).ok()?;
    (&back == v).then_some(c)
}

fn resolve(o: &Operand, params: &[ScalarValue], row: &[ScalarValue]) -> Option<ScalarValue> {
    match o {
        Operand::Param(i) => params.get(*i).cloned(),
        Operand::Lit(v) => Some(v.clone()),
        Operand::Col(i) => row.get(*i).cloned(),
    }
}

fn count_batch(n: u64) -> Result<Vec<RecordBatch>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    Ok(vec![RecordBatch::try_new(
        schema,
        vec![Arc::new(UInt64Array::from(vec![n]))],
    )?])
}

/// A one-row batch of the table's schema (every field nullable: the write path checks).
fn row_batch(def: &TableDef, row: &[ScalarValue]) -> Result<RecordBatch> {
    let fields: Vec<Field> = def
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let cols = row
        .iter()
        .map(|v| v.to_array())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn arith(a: ScalarValue, op: Op, b: ScalarValue) -> Option<ScalarValue> {
    // A literal or parameter takes the column's type (both sides numeric).
    let (a, b) = if a.data_type() == b.data_type() {
        (a, b)
    } else if b.data_type().is_numeric() && a.data_type().is_numeric() {
        let dt = a.data_type();
        match exact(&b, &dt) {
            Some(b) => (a, b),
            None => (exact(&a, &b.data_type())?, b),
        }
    } else {
        return None;
    };
    match op {
        Op::Add => a.add_checked(&b),
        Op::Sub => a.sub_checked(&b),
        Op::Mul => a.mul_checked(&b),
    }
    .ok()
}

/// The values `sets` compute for a row whose columns read as `old`; `None`: one does
/// not convert exactly.
fn set_values(
    def: &TableDef,
    sets: &[(usize, Calc)],
    params: &[ScalarValue],
    old: &[ScalarValue],
) -> Option<Vec<(usize, ScalarValue)>> {
    sets.iter()
        .map(|(c, calc)| {
            let dt = def.schema.field(*c).data_type();
            let v = match calc {
                Calc::One(o) => resolve(o, params, old),
                Calc::Bin(a, op, b) => match (resolve(a, params, old), resolve(b, params, old)) {
                    (Some(a), Some(b)) if a.is_null() || b.is_null() => {
                        ScalarValue::try_from(dt).ok()
                    }
                    (Some(a), Some(b)) => arith(a, *op, b),
                    _ => None,
                },
            };
            Some((*c, v.and_then(|v| exact(&v, dt))?))
        })
        .collect()
}

/// Run `plan` with `params`. `Ok(None)`: a value does not convert exactly; run the
/// statement through DataFusion instead (nothing was written).
pub(crate) fn run(
    tables: &Tables,
    plan: &FastPlan,
    params: &[ScalarValue],
) -> Result<Option<Vec<RecordBatch>>> {
    let engine = &*tables.engine;
    if params.len() < plan.params() {
        return Err(Error::Sql(format!(
            "the statement takes {} parameters, {} given",
            plan.params(),
            params.len()
        )));
    }
    match plan {
        FastPlan::Insert {
            def,
            values,
            replace,
        } => {
            let mut row = Vec::with_capacity(values.len());
            for (o, f) in values.iter().zip(def.schema.fields()) {
                let Some(v) = resolve(o, params, &[]).and_then(|v| exact(&v, f.data_type())) else {
                    return Ok(None);
                };
                row.push(v);
            }
            let b = row_batch(def, &row)?;
            let n = lightning_query::write_rows(engine, def, &[b], *replace)?;
            Ok(Some(count_batch(n)?))
        }
        FastPlan::Update { def, key, sets } => {
            let Some(k) = key_bytes(def, key, params)? else {
                return Ok(None);
            };
            let mut txn = Transaction::begin(engine, Isolation::Snapshot)?;
            let Some(v) = txn.get(engine, &k)? else {
                return Ok(Some(count_batch(0)?));
            };
            let out = match update_in_place(def, &v, sets, params)? {
                Edit::Row(out) => out,
                Edit::Inexact => return Ok(None),
                Edit::ArrowPath => match update_through_arrow(def, &k, &v, sets, params)? {
                    Some(out) => out,
                    None => return Ok(None),
                },
            };
            txn.put(&k, &out)?;
            let _gate = def.gate.enter()?;
            txn.commit(engine)?;
            Ok(Some(count_batch(1)?))
        }
        FastPlan::Delete { def, key } => {
            let Some(k) = key_bytes(def, key, params)? else {
                return Ok(None);
            };
            let mut txn = Transaction::begin(engine, Isolation::Snapshot)?;
            if txn.get(engine, &k)?.is_none() {
                return Ok(Some(count_batch(0)?));
            }
            txn.delete(&k)?;
            let _gate = def.gate.enter()?;
            txn.commit(engine)?;
            Ok(Some(count_batch(1)?))
        }
        FastPlan::Select {
            def,
            key,
            projection,
        } => {
            let Some(k) = key_bytes(def, key, params)? else {
                return Ok(None);
            };
            let schema = Arc::new(lightning_query::sql_schema(&def.schema).project(projection)?);
            // No row: an empty batch that names the columns, as `sql` answers.
            let Some(v) = engine.get(&k)? else {
                return Ok(Some(vec![RecordBatch::new_empty(schema)]));
            };
            let b = def.decode_row(&k, &v)?.project(projection)?;
            Ok(Some(vec![lightning_query::cast_batch(&b, &schema)?]))
        }
    }
}
