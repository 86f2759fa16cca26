//! Prepared statements: parsed, checked and planned once, run many times with `$1`,
//! `$2`, … bound to new values.

use super::{Compiled, SqlState, fast, run_plan};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::tables::Tables;
use arrow::array::RecordBatch;
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
    pub fn prepare(&self, sql: &str) -> Result<PreparedStatement<'_>> {
        let (tables, st) = self.sql_tables()?;
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
            .block_on(async move { run_plan(&t, &s, plan).await })
    }
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
