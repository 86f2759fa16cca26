//! Prepared statements: parsed, checked and planned once, run many times with `$1`,
//! `$2`, … bound to new values.

use super::limits::{QueryLimits, run_plan_limited};
use super::{Compiled, SqlState, fast};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::tables::Tables;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Values for a statement's `$1`, `$2`, …: a tuple of up to 12 values that convert
/// into [`ScalarValue`] (`i64`, `f64`, `&str`, `String`, `bool`, `Option<…>`, …), a
/// `Vec<ScalarValue>` or a slice of them, or `()` for none.
pub trait Params {
    fn into_values(self) -> Vec<ScalarValue>;
}

impl Params for () {
    fn into_values(self) -> Vec<ScalarValue> {
        Vec::new()
    }
}

impl Params for Vec<ScalarValue> {
    fn into_values(self) -> Vec<ScalarValue> {
        self
    }
}

impl Params for &[ScalarValue] {
    fn into_values(self) -> Vec<ScalarValue> {
        self.to_vec()
    }
}

impl<const N: usize> Params for [ScalarValue; N] {
    fn into_values(self) -> Vec<ScalarValue> {
        self.into()
    }
}

macro_rules! tuple_params {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Into<ScalarValue>),+> Params for ($($t,)+) {
            fn into_values(self) -> Vec<ScalarValue> {
                vec![$(self.$i.into()),+]
            }
        }
    };
}
tuple_params!(A 0);
tuple_params!(A 0, B 1);
tuple_params!(A 0, B 1, C 2);
tuple_params!(A 0, B 1, C 2, D 3);
tuple_params!(A 0, B 1, C 2, D 3, E 4);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// A statement prepared by [`Database::prepare`]. It can be run from many threads at
/// once; when a table is created or dropped it is compiled again on its next run.
pub struct PreparedStatement<'db> {
    db: &'db Database,
    tables: Arc<Tables>,
    st: Arc<SqlState>,
    sql: String,
    compiled: RwLock<Arc<Compiled>>,
}

impl std::fmt::Debug for PreparedStatement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedStatement")
            .field("sql", &self.sql)
            .field("fast_path", &self.compiled.read().fast.is_some())
            .finish()
    }
}

impl Database {
    /// Prepare one SQL statement with positional parameters `$1`, `$2`, …:
    ///
    /// ```no_run
    /// # use lightning_db::{Database, LightningDbConfig};
    /// # fn main() -> lightning_db::Result<()> {
    /// # let db = Database::open_or_create("./db", LightningDbConfig::default())?;
    /// let insert = db.prepare("INSERT INTO orders VALUES ($1, $2, $3)")?;
    /// insert.execute((1i64, 42i64, "paid"))?;
    /// let get = db.prepare("SELECT * FROM orders WHERE id = $1")?;
    /// let rows = get.execute((1i64,))?;
    /// # Ok(()) }
    /// ```
    ///
    /// The statement is parsed, checked against the SQL limits and planned once.
    /// Single-row `INSERT … VALUES`, and `UPDATE`, `DELETE` and `SELECT` whose `WHERE`
    /// gives every primary-key column with `=`, run straight on the row store without
    /// DataFusion; everything else runs its cached DataFusion plan.
    ///
    /// `?` placeholders (the DB-API's and JDBC's style) are taken too: the first `?` is
    /// `$1`, the next `$2`, and so on (a statement uses one style or the other).
    pub fn prepare(&self, sql: &str) -> Result<PreparedStatement<'_>> {
        let (tables, st) = self.sql_tables()?;
        let sql = &numbered_placeholders(sql);
        let compiled = self.compile(&tables, &st, sql)?;
        Ok(PreparedStatement {
            db: self,
            tables,
            st,
            sql: sql.to_string(),
            compiled: RwLock::new(Arc::new(compiled)),
        })
    }

    /// Parse, check and plan `sql` on the SQL runtime (deep statements need its
    /// stacks).
    fn compile(&self, tables: &Arc<Tables>, st: &Arc<SqlState>, sql: &str) -> Result<Compiled> {
        let epoch = st.epoch();
        let (t, s, q) = (tables.clone(), st.clone(), sql.to_string());
        self.block_on(async move {
            let stmt = s.parse(&t.config, &q)?;
            let fast = fast::analyze(&t, &stmt).map(Arc::new);
            // A fast statement needs its DataFusion plan only for values that do not
            // convert exactly; one DataFusion cannot plan still runs on the fast path.
            let plan = match s.ctx.state().statement_to_plan(stmt).await {
                Ok(p) => Some(p),
                Err(_) if fast.is_some() => None,
                Err(e) => return Err(e.into()),
            };
            Ok(Compiled {
                epoch,
                fast,
                plan,
                optimized: None,
            })
        })
    }
}

impl PreparedStatement<'_> {
    /// The statement's text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Whether the statement runs on the single-row fast path.
    pub fn is_fast_path(&self) -> bool {
        self.current().map(|c| c.fast.is_some()).unwrap_or(false)
    }

    fn current(&self) -> Result<Arc<Compiled>> {
        let c = self.compiled.read().clone();
        if c.epoch == self.st.epoch() {
            return Ok(c);
        }
        let fresh = Arc::new(self.db.compile(&self.tables, &self.st, &self.sql)?);
        *self.compiled.write() = fresh.clone();
        Ok(fresh)
    }

    /// Run the statement with `params` bound to `$1`, `$2`, … and return its rows (for
    /// `INSERT`, `UPDATE` and `DELETE`, one row: `count`, the rows affected).
    pub fn execute(&self, params: impl Params) -> Result<Vec<RecordBatch>> {
        self.execute_limited(params, &QueryLimits::none())
    }

    /// [`PreparedStatement::execute`] under `limits` (see [`QueryLimits`]).
    pub fn execute_limited(
        &self,
        params: impl Params,
        limits: &QueryLimits,
    ) -> Result<Vec<RecordBatch>> {
        let params = params.into_values();
        let c = self.current()?;
        if let Some(f) = &c.fast
            && let Some(out) = fast::run(&self.tables, f, &params)?
        {
            self.st.fast_statements.fetch_add(1, Ordering::Relaxed);
            return Ok(out);
        }
        let plan = c.plan.clone().ok_or_else(|| {
            Error::Sql(format!(
                "the values given do not fit the columns of: {}",
                self.sql
            ))
        })?;
        let plan = bind(plan, params)?;
        let (t, s) = (self.tables.clone(), self.st.clone());
        self.db
            .block_on(run_plan_limited(t, s, plan, limits.clone()))
    }

    /// The types DataFusion inferred for the statement's parameters, in order
    /// (`None` where the statement leaves one open, and none at all for a statement
    /// only the single-row path understands).
    pub fn parameter_types(&self) -> Result<Vec<Option<DataType>>> {
        let c = self.current()?;
        let Some(plan) = &c.plan else {
            return Ok(Vec::new());
        };
        let mut types: Vec<(usize, Option<DataType>)> = plan
            .get_parameter_types()?
            .into_iter()
            .filter_map(|(k, t)| Some((k.strip_prefix('$')?.parse().ok()?, t)))
            .collect();
        types.sort_by_key(|(i, _)| *i);
        Ok(types.into_iter().map(|(_, t)| t).collect())
    }

    /// The columns the statement returns (for `INSERT`, `UPDATE` and `DELETE`: `count`).
    pub fn schema(&self) -> Result<SchemaRef> {
        let c = self.current()?;
        match &c.plan {
            Some(plan) => Ok(Arc::new(plan.schema().as_arrow().clone())),
            None => Ok(Arc::new(Schema::empty())),
        }
    }
}

/// `sql` with each `?` placeholder (outside string literals, quoted identifiers and
/// comments) numbered in order: `$1`, `$2`, ... Text without one is returned as is.
fn numbered_placeholders(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('?') {
        return sql.into();
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut i, mut from, mut n) = (0, 0, 0);
    while i < b.len() {
        match b[i] {
            // '…' and "…": a doubled quote stays inside.
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'?' => {
                n += 1;
                out.push_str(&sql[from..i]);
                out.push_str(&format!("${n}"));
                i += 1;
                from = i;
            }
            _ => i += 1,
        }
    }
    if n == 0 {
        return sql.into();
    }
    out.push_str(&sql[from.min(sql.len())..]);
    out.into()
}

/// `plan` with its placeholders replaced by `params`, each cast to the type DataFusion
/// inferred for its placeholder.
fn bind(plan: LogicalPlan, mut params: Vec<ScalarValue>) -> Result<LogicalPlan> {
    let types = plan.get_parameter_types()?;
    for (i, v) in params.iter_mut().enumerate() {
        if let Some(Some(dt)) = types.get(&format!("${}", i + 1))
            && &v.data_type() != dt
        {
            *v = v.cast_to(dt).map_err(|e| {
                Error::Sql(format!(
                    "parameter ${}: cannot convert {v} to {dt}: {e}",
                    i + 1
                ))
            })?;
        }
    }
    let want = types.len();
    if params.len() < want {
        return Err(Error::Sql(format!(
            "the statement takes {want} parameters, {} given",
            params.len()
        )));
    }
    Ok(plan.with_param_values(ParamValues::from(params))?)
}

#[cfg(test)]
mod tests {
    use super::numbered_placeholders as n;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(n("SELECT 1"), "SELECT 1");
        assert_eq!(
            n("SELECT * FROM t WHERE a = ? AND b > ?"),
            "SELECT * FROM t WHERE a = $1 AND b > $2"
        );
        assert_eq!(
            n("SELECT '?', \"a?\", 'it''s ?' FROM t WHERE x = ? -- why?\n AND y = ?"),
            "SELECT '?', \"a?\", 'it''s ?' FROM t WHERE x = $1 -- why?\n AND y = $2"
        );
        assert_eq!(n("SELECT /* ? */ ?"), "SELECT /* ? */ $1");
        // Unterminated quotes and comments end the text without a panic.
        assert_eq!(n("SELECT 'abc?"), "SELECT 'abc?");
        assert_eq!(n("SELECT ? /* x"), "SELECT $1 /* x");
    }
}
