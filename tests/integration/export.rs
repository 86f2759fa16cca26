//! Table export to open formats (`Database::export_table`): hive-partitioned Parquet and
//! Delta Lake, read back by independent readers (pyarrow, DuckDB, delta-rs's Python
//! `deltalake`), and incremental: a second export writes only the changed segments'
//! files.

use lightning_db::arrow::array::*;
use lightning_db::arrow::datatypes::{DataType, Field, Schema};
use lightning_db::{Database, Error, ExportFormat, ExportOptions, LightningDbConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("qty", DataType::Int32, true),
        Field::new("day", DataType::Date32, true),
        Field::new("price", DataType::Decimal128(12, 2), true),
        Field::new("flag", DataType::UInt8, true),
    ]))
}

const REGIONS: [&str; 4] = ["EU", "US", "APAC", "a b/c%"];

fn rows(ids: std::ops::Range<i64>, qty_of: impl Fn(i64) -> i32) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter(ids.iter().map(|i| match i % 7 {
                6 => None,
                k => Some(REGIONS[k as usize % 4]),
            }))),
            Arc::new(Int32Array::from_iter(ids.iter().map(|i| Some(qty_of(*i))))),
            Arc::new(Date32Array::from_iter(
                ids.iter().map(|i| Some(19_000 + (*i % 300) as i32)),
            )),
            Arc::new(
                Decimal128Array::from_iter(ids.iter().map(|i| Some(*i as i128 * 101)))
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(UInt8Array::from_iter(
                ids.iter().map(|i| Some((*i % 200) as u8)),
            )),
        ],
    )
    .unwrap()
}

fn db_with_rows(dir: &Path, n: i64) -> Database {
    // Compaction rounds only when asked (and by each export), so the segments a test
    // changes are the ones it expects.
    let cfg = LightningDbConfig {
        columnar_background: false,
        ..Default::default()
    };
    let db = Database::create(dir.join("db"), cfg).unwrap();
    db.create_table("sales", schema(), &["id"]).unwrap();
    db.insert("sales", &rows(0..n, |i| (i % 50) as i32))
        .unwrap();
    db
}

/// The answer of `db.sql` as one line: count, sum(qty), sum(price) in cents, and the
/// number of rows per region (nulls as "None").
fn db_answer(db: &Database) -> String {
    let b = db
        .sql("SELECT count(*) AS n, sum(qty) AS q, CAST(sum(price) * 100 AS BIGINT) AS p, sum(CAST(flag AS BIGINT)) AS f FROM sales")
        .unwrap();
    let b = &b[0];
    let i64s = |i: usize| {
        b.column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    let n = i64s(0);
    let q = i64s(1);
    let p = i64s(2);
    let f = i64s(3);
    let regions = db
        .sql("SELECT region, count(*) FROM sales GROUP BY region ORDER BY region NULLS FIRST")
        .unwrap();
    let mut per = Vec::new();
    for b in &regions {
        let r = lightning_db::arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let r = r.as_any().downcast_ref::<StringArray>().unwrap();
        let c = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            let name = if r.is_null(i) {
                "None".to_string()
            } else {
                r.value(i).to_string()
            };
            per.push(format!("{name}:{}", c.value(i)));
        }
    }
    per.sort();
    format!("{n} {q} {p} {f} {}", per.join(","))
}

/// Run a Python reader; its last stdout line is the answer in `db_answer`'s form.
fn python(script: &str, args: &[&str]) -> String {
    // Leave without the interpreter's teardown: delta-rs's and pyarrow's threads can
    // abort the process there ("terminate called without an active exception") after
    // the answer was printed.
    let script =
        format!("{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_os._exit(0)\n");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python reader failed (install its packages with `pip install pyarrow duckdb deltalake`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const SUMMARY: &str = r#"
import sys, decimal
import pyarrow as pa, pyarrow.compute as pc
def summary(t):
    n = t.num_rows
    q = pc.sum(t.column("qty")).as_py() or 0
    p = int(sum((v for v in t.column("price").to_pylist() if v is not None), decimal.Decimal(0)) * 100)
    f = pc.sum(t.column("flag").cast(pa.int64())).as_py() or 0
    per = {}
    for r in t.column("region").to_pylist():
        k = "None" if r is None or r == "" or r == "__HIVE_DEFAULT_PARTITION__" else str(r)
        per[k] = per.get(k, 0) + 1
    print(n, q, p, f, ",".join(sorted(f"{k}:{v}" for k, v in per.items())))
"#;

fn read_delta(dir: &Path, version: Option<u64>) -> String {
    let script = format!(
        "{SUMMARY}\nfrom deltalake import DeltaTable\nv = None if sys.argv[2] == '-' else int(sys.argv[2])\nt = DeltaTable(sys.argv[1], version=v)\nsummary(t.to_pyarrow_table())\n"
    );
    let v = version.map_or("-".to_string(), |v| v.to_string());
    python(&script, &[dir.to_str().unwrap(), &v])
}

fn read_hive_pyarrow(dir: &Path) -> String {
    let script = format!(
        "{SUMMARY}\nimport pyarrow.dataset as ds\nt = ds.dataset(sys.argv[1], format='parquet', partitioning='hive').to_table()\nt = t.set_column(t.schema.get_field_index('region'), 'region', pc.if_else(pc.equal(t.column('region'), '__HIVE_DEFAULT_PARTITION__'), None, t.column('region')))\nsummary(t)\n"
    );
    python(&script, &[dir.to_str().unwrap()])
}

fn read_duckdb(dir: &Path) -> String {
    let script = format!(
        "{SUMMARY}\nimport duckdb\nt = duckdb.sql(\"SELECT * FROM read_parquet('\" + sys.argv[1] + \"/**/*.parquet', hive_partitioning = true)\").arrow()\nt = t.read_all() if hasattr(t, 'read_all') else t\nsummary(t)\n"
    );
    python(&script, &[dir.to_str().unwrap()])
}

/// Data files under `dir` (relative paths).
fn data_files(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Change a few rows (in the first segment), add some and delete some.
fn change(db: &Database, n: i64) {
    db.sql("UPDATE sales SET qty = qty + 1000 WHERE id < 5")
        .unwrap();
    db.sql("DELETE FROM sales WHERE id >= 10 AND id < 13")
        .unwrap();
    db.insert("sales", &rows(n..n + 500, |i| (i % 9) as i32))
        .unwrap();
}

fn small_segments(db: &Database) {
    // Several segments: later changes touch only some of them.
    db.compact_columnar("sales").unwrap();
}

#[test]
fn delta_export_reads_back_and_grows_incrementally() {
    let tmp = tempfile::tempdir().unwrap();
    let db = db_with_rows(tmp.path(), 3000);
    small_segments(&db);
    db.insert("sales", &rows(3000..6000, |i| (i % 50) as i32))
        .unwrap();
    let out = tmp.path().join("delta");
    let opts = ExportOptions::partition_by(&["region"]);
    let r0 = db
        .export_table_with("sales", &out, ExportFormat::Delta, &opts)
        .unwrap();
    assert_eq!((r0.version, r0.new_version, r0.rows), (0, true, 6000));
    assert!(out.join("_delta_log/00000000000000000000.json").exists());
    let v0_answer = db_answer(&db);
    assert_eq!(read_delta(&out, None), v0_answer);
    let before = data_files(&out);
    assert_eq!(before.len() as u64, r0.files_added);

    // Nothing changed: no new version, nothing written.
    let same = db
        .export_table_with("sales", &out, ExportFormat::Delta, &opts)
        .unwrap();
    assert_eq!(
        (same.version, same.new_version, same.files_added),
        (0, false, 0)
    );
    assert_eq!(data_files(&out), before);

    change(&db, 6000);
    let r1 = db
        .export_table_with("sales", &out, ExportFormat::Delta, &opts)
        .unwrap();
    assert_eq!((r1.version, r1.new_version), (1, true));
    assert_eq!(r1.rows, 6000 - 3 + 500);
    let after = data_files(&out);
    let new: BTreeSet<_> = after.difference(&before).collect();
    assert_eq!(
        new.len() as u64,
        r1.files_added,
        "only the new files appear"
    );
    assert!(
        before.is_subset(&after),
        "Delta keeps removed files for older versions"
    );
    assert!(
        r1.rows_written < r1.rows,
        "an incremental export rewrites only changed segments: {r1:?}"
    );
    assert!(r1.files_removed > 0, "{r1:?}");
    assert_eq!(read_delta(&out, None), db_answer(&db));
    // Time travel: version 0 is still the first export.
    assert_eq!(read_delta(&out, Some(0)), v0_answer);
}

#[test]
fn parquet_export_is_hive_partitioned_and_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    let db = db_with_rows(tmp.path(), 3000);
    small_segments(&db);
    db.insert("sales", &rows(3000..6000, |i| (i % 50) as i32))
        .unwrap();
    let out = tmp.path().join("pq");
    let opts = ExportOptions::partition_by(&["region"]);
    let r0 = db
        .export_table_with("sales", &out, ExportFormat::Parquet, &opts)
        .unwrap();
    assert_eq!(r0.rows, 6000);
    assert!(out.join("region=EU").is_dir());
    assert!(
        out.join("region=a%20b%2Fc%25").is_dir(),
        "special characters are escaped"
    );
    assert!(out.join("region=__HIVE_DEFAULT_PARTITION__").is_dir());
    let answer = db_answer(&db);
    assert_eq!(read_hive_pyarrow(&out), answer);
    assert_eq!(read_duckdb(&out), answer);
    // Row-group statistics for readers that skip by them.
    let stats = python(
        "import sys, glob, pyarrow.parquet as pq\nf = sorted(glob.glob(sys.argv[1] + '/region=EU/*.parquet'))[0]\nm = pq.ParquetFile(f).metadata\ns = m.row_group(0).column(0).statistics\nprint(s.has_min_max, m.schema.column(0).name)\n",
        &[out.to_str().unwrap()],
    );
    assert_eq!(stats, "True id");

    let before = data_files(&out);
    change(&db, 6000);
    let r1 = db
        .export_table_with("sales", &out, ExportFormat::Parquet, &opts)
        .unwrap();
    assert_eq!(r1.version, 1);
    let after = data_files(&out);
    assert_eq!(
        after.difference(&before).count() as u64,
        r1.files_added,
        "only new files are written"
    );
    assert_eq!(before.difference(&after).count() as u64, r1.files_removed);
    assert!(r1.rows_written < r1.rows, "{r1:?}");
    let answer = db_answer(&db);
    assert_eq!(read_hive_pyarrow(&out), answer);
    assert_eq!(read_duckdb(&out), answer);
    let same = db
        .export_table_with("sales", &out, ExportFormat::Parquet, &opts)
        .unwrap();
    assert!(!same.new_version);
}

#[test]
fn unpartitioned_keyless_and_schema_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::create(tmp.path().join("db"), LightningDbConfig::default()).unwrap();
    db.create_table("sales", schema(), &[]).unwrap();
    db.insert("sales", &rows(0..1000, |i| i as i32)).unwrap();
    let out = tmp.path().join("delta");
    let r = db.export_table("sales", &out, ExportFormat::Delta).unwrap();
    assert_eq!(r.rows, 1000);
    assert_eq!(read_delta(&out, None), db_answer(&db));
    // A new column: the next version rewrites every file with the new schema.
    db.sql("ALTER TABLE sales ADD COLUMN note VARCHAR").unwrap();
    let r = db.export_table("sales", &out, ExportFormat::Delta).unwrap();
    assert!(r.full_rewrite && r.version == 1, "{r:?}");
    let cols = python(
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).to_pyarrow_table().column_names)\n",
        &[out.to_str().unwrap()],
    );
    assert_eq!(
        cols,
        "['id', 'region', 'qty', 'day', 'price', 'flag', 'note']"
    );
    assert_eq!(read_delta(&out, None), db_answer(&db));
}

#[test]
fn exports_refuse_what_they_cannot_do_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let db = db_with_rows(tmp.path(), 100);
    let invalid = |r: lightning_db::Result<lightning_db::ExportReport>| match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let out = tmp.path().join("out");
    // Unknown, float and duplicate partition columns; every column partitioned.
    let m = invalid(db.export_table_with(
        "sales",
        &out,
        ExportFormat::Parquet,
        &ExportOptions::partition_by(&["nope"]),
    ));
    assert!(m.contains("no such column"), "{m}");
    db.sql("CREATE TABLE f (x DOUBLE, y INT, PRIMARY KEY (y))")
        .unwrap();
    let m = invalid(db.export_table_with(
        "f",
        &out,
        ExportFormat::Parquet,
        &ExportOptions::partition_by(&["x"]),
    ));
    assert!(m.contains("cannot partition"), "{m}");
    let m = invalid(db.export_table_with(
        "sales",
        &out,
        ExportFormat::Delta,
        &ExportOptions::partition_by(&["id", "id"]),
    ));
    assert!(m.contains("twice"), "{m}");
    // Inside the database directory.
    let m = invalid(db.export_table(
        "sales",
        tmp.path().join("db").join("x"),
        ExportFormat::Parquet,
    ));
    assert!(m.contains("database directory"), "{m}");
    // A directory holding something else.
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("mine.txt"), b"x").unwrap();
    assert!(matches!(
        db.export_table("sales", &busy, ExportFormat::Delta),
        Err(Error::DirectoryNotEmpty { .. })
    ));
    // Other partition columns, or another table, into an existing export.
    db.export_table_with(
        "sales",
        &out,
        ExportFormat::Delta,
        &ExportOptions::partition_by(&["region"]),
    )
    .unwrap();
    let m = invalid(db.export_table("sales", &out, ExportFormat::Delta));
    assert!(m.contains("partitioned by [region]"), "{m}");
    db.sql("INSERT INTO f VALUES (1.5, 1)").unwrap();
    let m = invalid(db.export_table("f", &out, ExportFormat::Delta));
    assert!(m.contains("not f"), "{m}");
    // Too many partitions in one segment: refused, and no file is left behind.
    db.insert("sales", &rows(100..5000, |_| 1)).unwrap();
    let many = tmp.path().join("many");
    let m = invalid(db.export_table_with(
        "sales",
        &many,
        ExportFormat::Parquet,
        &ExportOptions::partition_by(&["id"]),
    ));
    assert!(m.contains("more than 4096 partitions"), "{m}");
    assert!(data_files(&many).is_empty());
    // A missing table is its own error.
    assert!(matches!(
        db.export_table("missing", tmp.path().join("m"), ExportFormat::Delta),
        Err(Error::TableNotFound(_))
    ));
}

#[test]
fn racing_exports_into_one_directory_leave_one_consistent_table() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(db_with_rows(tmp.path(), 2000));
    let out = tmp.path().join("delta");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (db, out) = (db.clone(), out.clone());
            std::thread::spawn(move || {
                if i % 2 == 1 {
                    db.insert("sales", &rows(10_000 + i * 10..10_000 + i * 10 + 5, |_| 1))
                        .unwrap();
                }
                db.export_table("sales", &out, ExportFormat::Delta)
            })
        })
        .collect();
    for h in handles {
        match h.join().unwrap() {
            Ok(_) => {}
            Err(Error::InvalidArgument(m)) => assert!(m.contains("another"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    // Whatever raced, one more export brings the table up to date, and it reads back.
    db.export_table("sales", &out, ExportFormat::Delta).unwrap();
    assert_eq!(read_delta(&out, None), db_answer(&db));
}
