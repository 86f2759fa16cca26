//! DataFusion's own sqllogictest files (from the `datafusion-sqllogictest` crate of the
//! release we build on, read unmodified from its source in the cargo registry), run
//! record by record through `Database::sql` and, side by side, through plain DataFusion
//! (that crate's own engine and test context), with the same runner, normalization and
//! validators. A record counts as passed when the `sqllogictest` runner accepts its
//! result. `EXPLAIN` records are left out (plans name our operators).
//!
//! Writes `target/slt/conformance.md` (passes per file for both, and every record plain
//! DataFusion passes and we do not, with our answer) and fails if we pass less than
//! `MIN_RATIO` of the records DataFusion passes. `LDB_SLT_FILES=a.slt,b.slt` runs
//! other files; `LDB_SLT_DIR` points at another copy of the test files.

use datafusion_sqllogictest::{
    DFColumnType, DFOutput, DFSqlLogicTestError, DataFusion, TestContext, convert_batches,
    convert_schema_to_types, df_value_validator, value_normalizer,
};
use lightning_db::{Database, LightningDbConfig};
use sqllogictest::{AsyncDB, DBOutput, Record, Runner, parse_file, strict_column_validator};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files the issue asks for, by topic: DDL and DML, aggregation, joins, ordering,
/// windows, subqueries, set operations, types and functions.
const FILES: &[&str] = &[
    "ddl.slt",
    "insert.slt",
    "update.slt",
    "delete.slt",
    "truncate.slt",
    "aggregate.slt",
    "group_by.slt",
    "joins.slt",
    "order.slt",
    "limit.slt",
    "window.slt",
    "subquery.slt",
    "cte.slt",
    "union.slt",
    "select.slt",
    "decimal.slt",
    "datetime/dates.slt",
    "strings.slt",
    "case.slt",
    "nullif.slt",
];

/// The share of the records plain DataFusion passes that we must pass: a regression
/// guard just under the measured 97.2% (2026-11-30; the goal is 97%). What is missing
/// is listed and explained in `slt/CONFORMANCE.md`.
const MIN_RATIO: f64 = 0.965;

/// Lightning DB as a sqllogictest database: every statement through `Database::sql`.
struct Lightning {
    db: Arc<Database>,
}

#[async_trait::async_trait]
impl AsyncDB for Lightning {
    type Error = DFSqlLogicTestError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DFOutput, DFSqlLogicTestError> {
        let batches = self.db.sql_async(sql).await.map_err(|e| match e {
            // DataFusion's own failure inside `db.sql` (planning, execution): the
            // same message, labelled as the plain engine labels it.
            lightning_db::Error::Sql(m) => {
                DFSqlLogicTestError::Other(format!("DataFusion error: {m}"))
            }
            e => DFSqlLogicTestError::Other(e.to_string()),
        })?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        let schema = first.schema();
        let types = convert_schema_to_types(schema.fields());
        let rows = convert_batches(&schema, batches, false)?;
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
    }

    fn engine_name(&self) -> &str {
        "Lightning"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }

    async fn shutdown(&mut self) {}
}

fn test_files_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("LDB_SLT_DIR") {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok()?;
    let src = home.join("registry/src");
    for index in std::fs::read_dir(src).ok()?.flatten() {
        let d = index
            .path()
            .join("datafusion-sqllogictest-55.2.0/test_files");
        if d.is_dir() {
            return Some(d);
        }
    }
    None
}

/// What one engine did with one file's records.
#[derive(Default)]
struct Outcome {
    /// Per executed record: passed?
    passed: Vec<bool>,
    /// Per executed record: the failure, if any.
    errors: Vec<Option<String>>,
}

/// The records of a file that both engines run, in order (up to a `halt`).
fn records(path: &Path) -> Vec<Record<DFColumnType>> {
    let mut out = Vec::new();
    for r in parse_file::<DFColumnType>(path).unwrap_or_default() {
        if matches!(r, Record::Halt { .. }) {
            break;
        }
        out.push(r);
    }
    out
}

/// The SQL of an executable record (statements and queries), or `None`.
fn sql_of(r: &Record<DFColumnType>) -> Option<&str> {
    match r {
        Record::Statement { sql, .. } | Record::Query { sql, .. } => Some(sql),
        _ => None,
    }
}

fn is_explain(sql: &str) -> bool {
    sql.trim_start()
        .get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case("explain"))
}

async fn run_records<D, M>(runner: &mut Runner<D, M>, records: &[Record<DFColumnType>]) -> Outcome
where
    D: AsyncDB<ColumnType = DFColumnType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    let mut o = Outcome::default();
    for r in records {
        let counted = sql_of(r).is_some_and(|s| !is_explain(s));
        let res = runner.run_async(r.clone()).await;
        if counted {
            o.passed.push(res.is_ok());
            o.errors.push(res.err().map(|e| e.to_string()));
        }
    }
    o
}

fn first_line(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

#[test]
fn datafusion_sqllogictest_files_through_db_sql() {
    let Some(dir) = test_files_dir() else {
        panic!(
            "datafusion-sqllogictest 55.2.0's test files were not found in the cargo \
             registry (build this crate, or set LDB_SLT_DIR)"
        );
    };
    let files: Vec<String> = match std::env::var("LDB_SLT_FILES") {
        Ok(s) => s.split(',').map(str::to_string).collect(),
        Err(_) => FILES.iter().map(|s| s.to_string()).collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Relative paths in the files (scratch output, test data) resolve from here.
    let work = tempfile::tempdir().unwrap();
    std::env::set_current_dir(work.path()).unwrap();
    let mut table = String::from(
        "| file | records | DataFusion passes | Lightning passes | Lightning of DataFusion's |\n\
         |---|---:|---:|---:|---:|\n",
    );
    let mut differences = String::new();
    let (mut all, mut df_all, mut ours_all, mut both_all) = (0, 0, 0, 0);
    for f in &files {
        let path = dir.join(f);
        let relative = PathBuf::from(f);
        let recs = records(&path);
        let df = rt.block_on(async {
            let relative = relative.clone();
            let ctx = TestContext::try_new_for_test_file(&relative).await?;
            // Files written under the scratch directory start empty for each engine.
            let _ = datafusion_sqllogictest::setup_scratch_dir(&relative);
            let session = ctx.session_ctx().clone();
            let mut runner = Runner::new(move || {
                let s = session.clone();
                let rel = relative.clone();
                async move { Ok(DataFusion::new(s, rel, indicatif::ProgressBar::hidden())) }
            });
            runner.add_label("Datafusion");
            runner.with_column_validator(strict_column_validator);
            runner.with_normalizer(value_normalizer);
            runner.with_validator(df_value_validator);
            Some(run_records(&mut runner, &recs).await)
        });
        let Some(df) = df else {
            continue;
        };
        let _ = datafusion_sqllogictest::setup_scratch_dir(&relative);
        let db_dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            Database::create(
                db_dir.path().join("db"),
                LightningDbConfig {
                    // As DataFusion's test context: four partitions.
                    sql_threads: 4,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let ours = {
            let db = db.clone();
            let mut runner = Runner::new(move || {
                let db = db.clone();
                async move { Ok(Lightning { db }) }
            });
            runner.add_label("Datafusion");
            runner.with_column_validator(strict_column_validator);
            runner.with_normalizer(value_normalizer);
            runner.with_validator(df_value_validator);
            // `db.sql` runs on the database's own runtime; the runner only awaits it.
            rt.block_on(run_records(&mut runner, &recs))
        };
        let _ = db.close();
        let n = df.passed.len();
        let df_pass = df.passed.iter().filter(|p| **p).count();
        let ours_pass = ours.passed.iter().filter(|p| **p).count();
        let both = df
            .passed
            .iter()
            .zip(&ours.passed)
            .filter(|(a, b)| **a && **b)
            .count();
        table.push_str(&format!(
            "| {f} | {n} | {df_pass} | {ours_pass} | {both} / {df_pass} ({:.1}%) |\n",
            100.0 * both as f64 / df_pass.max(1) as f64
        ));
        let executable: Vec<&Record<DFColumnType>> = recs
            .iter()
            .filter(|r| sql_of(r).is_some_and(|s| !is_explain(s)))
            .collect();
        for (i, r) in executable.iter().enumerate() {
            if df.passed[i] && !ours.passed[i] {
                let line = match r {
                    Record::Statement { loc, .. } | Record::Query { loc, .. } => loc.line(),
                    _ => 0,
                };
                differences.push_str(&format!(
                    "- `{f}:{line}` `{}` — {}\n",
                    first_line(sql_of(r).unwrap_or_default(), 100),
                    first_line(ours.errors[i].as_deref().unwrap_or_default(), 240)
                ));
            }
        }
        all += n;
        df_all += df_pass;
        ours_all += ours_pass;
        both_all += both;
        eprintln!("{f}: {n} records, DataFusion {df_pass}, Lightning {ours_pass}, both {both}");
    }
    let ratio = both_all as f64 / df_all.max(1) as f64;
    table.push_str(&format!(
        "| **all** | {all} | {df_all} | {ours_all} | **{both_all} / {df_all} ({:.1}%)** |\n",
        100.0 * ratio
    ));
    let report = format!(
        "# DataFusion 55.2.0 sqllogictest files through Lightning DB\n\n\
         Each record run through `Database::sql` and through plain DataFusion (its own \
         sqllogictest engine and test context), same runner and validators; `EXPLAIN` \
         records left out. Records that need DataFusion's test data directory (not part \
         of the crate) fail on both sides.\n\n{table}\n\
         ## Records DataFusion passes and Lightning does not\n\n{differences}"
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/slt");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("conformance.md"), &report);
    eprintln!("{table}");
    assert!(
        ratio >= MIN_RATIO,
        "Lightning passes {both_all} of the {df_all} records DataFusion passes ({:.1}%, \
         below {:.1}%); see target/slt/conformance.md",
        100.0 * ratio,
        100.0 * MIN_RATIO
    );
}
