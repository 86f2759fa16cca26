//! Tables and the column store: the table API, schema errors, the row -> column
//! compactor against the row store (property test), SIGKILL during compaction,
//! corruption of a segment, and a standard Arrow reader (pyarrow) on a segment file.

use crate::common;

use lightning_db::arrow::array::*;
use lightning_db::arrow::datatypes::*;
use lightning_db::{Database, Error, LightningDbConfig};
use proptest::prelude::*;
use std::sync::Arc;

fn cfg() -> LightningDbConfig {
    LightningDbConfig {
        columnar_background: false,
        // Segments of up to three record batches: compaction cuts decoded rows into
        // batches and batches into segments, and dictionaries span a segment's batches.
        columnar_segment_rows: 2500,
        columnar_batch_rows: 1000,
        ..common::small_config()
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("qty", DataType::Int32, true),
        Field::new("price", DataType::Decimal128(12, 2), true),
        Field::new("note", DataType::Utf8, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

fn rows(ids: &[i64], version: i32) -> RecordBatch {
    let n = ids.len();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| ["EU", "US", "APAC"][(*i as usize) % 3]),
            )),
            Arc::new(Int32Array::from_iter(
                ids.iter()
                    .map(|i| (i % 5 != 0).then_some(*i as i32 * version)),
            )),
            Arc::new(
                Decimal128Array::from_iter(
                    ids.iter().map(|i| Some(*i as i128 * 100 + version as i128)),
                )
                .with_precision_and_scale(12, 2)
                .unwrap(),
            ),
            Arc::new(StringArray::from_iter(
                (0..n).map(|j| (j % 2 == 0).then(|| format!("note {version}"))),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|i| 1_700_000_000_000_000 + i),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

fn key_batch(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| ["EU", "US", "APAC"][(*i as usize) % 3]),
            )),
        ],
    )
    .unwrap()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    lightning_db::arrow::compute::concat_batches(&schema(), batches).unwrap()
}

/// Column-store live rows, sorted by key, equal the row store's rows at the watermark.
fn assert_columnar_matches(db: &Database, table: &str) {
    let (w, col) = db.columnar_rows(table, None).unwrap();
    let s = db.table_schema(table).unwrap();
    let col = lightning_db::arrow::compute::concat_batches(&s, &col).unwrap();
    // Sort the column rows by key (segments are each sorted, not globally).
    let order = lightning_db::arrow::compute::lexsort_to_indices(
        &[
            lightning_db::arrow::compute::SortColumn {
                values: col.column(1).clone(),
                options: None,
            },
            lightning_db::arrow::compute::SortColumn {
                values: col.column(0).clone(),
                options: None,
            },
        ],
        None,
    )
    .unwrap();
    let col = lightning_db::arrow::compute::take_record_batch(&col, &order).unwrap();
    let row = db.scan_table_at(table, Some(w), 1 << 20).unwrap();
    let row = lightning_db::arrow::compute::concat_batches(&s, &row).unwrap();
    assert_eq!(
        col, row,
        "column store at watermark {w} differs from the row store"
    );
}

#[test]
fn table_api_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.create_table("orders", schema(), &["region", "id"])
        .unwrap();
    assert_eq!(
        db.list_tables().unwrap(),
        vec!["kv".to_string(), "orders".to_string()]
    );
    assert!(matches!(
        db.create_table("orders", schema(), &["id"]),
        Err(Error::TableExists(_))
    ));
    let s = db.table_schema("orders").unwrap();
    assert!(!s.field(0).is_nullable() && !s.field(1).is_nullable() && s.field(2).is_nullable());
    assert_eq!(
        db.table_primary_key("orders").unwrap(),
        vec!["region", "id"]
    );

    db.insert("orders", &rows(&[1, 2, 3, 4, 5, 6], 1)).unwrap();
    db.insert("orders", &rows(&[2, 3], 2)).unwrap(); // upsert
    let got = db.get_row("orders", &key_batch(&[3])).unwrap().unwrap();
    assert_eq!(got, rows(&[2, 3], 2).slice(1, 1));
    assert!(db.get_row("orders", &key_batch(&[99])).unwrap().is_none());
    db.delete_rows("orders", &key_batch(&[1, 4])).unwrap();
    let all = concat(&db.scan_table("orders", 100).unwrap());
    assert_eq!(all.num_rows(), 4);
    // Primary-key order: (region, id).
    let ids = all.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, vec![2, 5, 3, 6]); // "APAC" < "EU"

    // Reopen keeps tables; drop removes them.
    drop(db);
    let db = Database::open(dir.path().join("db"), cfg()).unwrap();
    assert_eq!(concat(&db.scan_table("orders", 100).unwrap()).num_rows(), 4);
    db.drop_table("orders").unwrap();
    assert!(matches!(
        db.table_schema("orders"),
        Err(Error::TableNotFound(_))
    ));
    assert!(db.drop_table("kv").is_err());
    db.create_table("orders", schema(), &["id"]).unwrap();
    assert_eq!(concat(&db.scan_table("orders", 100).unwrap()).num_rows(), 0);
}

#[test]
fn schema_mismatches_name_the_column_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.create_table("orders", schema(), &["id"]).unwrap();
    let good = rows(&[1, 2], 1);
    // Wrong type.
    let mut cols = good.columns().to_vec();
    cols[2] = Arc::new(Int64Array::from(vec![1, 2]));
    let mut fields: Vec<Field> = schema().fields().iter().map(|f| (**f).clone()).collect();
    fields[2] = Field::new("qty", DataType::Int64, true);
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let e = db.insert("orders", &bad).unwrap_err();
    assert!(
        e.to_string().contains("qty") && e.to_string().contains("Int64"),
        "{e}"
    );
    // Missing column.
    let e = db
        .insert("orders", &good.project(&[0, 1, 2, 3, 5]).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("missing column note"), "{e}");
    // NULL key.
    let nullable = Arc::new(Schema::new(
        schema()
            .fields()
            .iter()
            .map(|f| (**f).clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let mut cols = good.columns().to_vec();
    cols[0] = Arc::new(Int64Array::from(vec![Some(1), None]));
    let e = db
        .insert("orders", &RecordBatch::try_new(nullable, cols).unwrap())
        .unwrap_err();
    assert!(
        e.to_string().contains("id") && e.to_string().contains("NULL"),
        "{e}"
    );
    assert_eq!(concat(&db.scan_table("orders", 10).unwrap()).num_rows(), 0);
    assert!(matches!(
        db.insert("nope", &good),
        Err(Error::TableNotFound(_))
    ));
    // Unsupported type at create.
    let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    let s = Arc::new(Schema::new(vec![Field::new("x", list, false)]));
    assert!(matches!(
        db.create_table("t", s, &["x"]),
        Err(Error::Schema(_))
    ));
}

#[test]
fn kv_api_data_is_the_kv_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    // By default the kv table stays out of the column store...
    assert!(matches!(
        db.compact_columnar("kv"),
        Err(Error::InvalidArgument(_))
    ));
    drop(db);
    let db = Database::create(
        dir.path().join("db2"),
        LightningDbConfig {
            columnar_kv: true,
            ..cfg()
        },
    )
    .unwrap();
    db.put(b"b", b"2").unwrap();
    db.put(b"a", b"1").unwrap();
    db.compact_columnar("kv").unwrap();
    let (_, b) = db.columnar_rows("kv", None).unwrap();
    let b = &b[0];
    assert_eq!(b.column(0).as_binary::<i32>().value(0), b"a");
    assert_eq!(b.column(1).as_binary::<i32>().value(1), b"2");
    db.delete(b"a").unwrap();
    db.compact_columnar("kv").unwrap();
    let (_, b) = db.columnar_rows("kv", None).unwrap();
    assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<i64>, i32),
    Delete(Vec<i64>),
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let ids = proptest::collection::vec(0i64..3000, 1..400);
    prop_oneof![
        5 => (ids.clone(), 1i32..100).prop_map(|(mut v, n)| { v.sort(); v.dedup(); Op::Upsert(v, n) }),
        2 => ids.prop_map(|mut v| { v.sort(); v.dedup(); Op::Delete(v) }),
        3 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(feature = "integration_tests") { 64 } else { 12 }, ..ProptestConfig::default() })]

    #[test]
    fn column_store_equals_row_store_after_every_compaction(
        ops in proptest::collection::vec(op(), 1..25),
        btree in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        // Both storage engines under the column store.
        let cfg = || LightningDbConfig {
            storage_engine: if btree {
                lightning_db::StorageEngine::BTree
            } else {
                lightning_db::StorageEngine::Lsm
            },
            ..cfg()
        };
        let mut db = Database::create(&p, cfg()).unwrap();
        db.create_table("t", schema(), &["region", "id"]).unwrap();
        for op in ops {
            match op {
                Op::Upsert(ids, v) => db.insert("t", &rows(&ids, v)).unwrap(),
                Op::Delete(ids) => db.delete_rows("t", &key_batch(&ids)).unwrap(),
                Op::Compact => {
                    db.compact_columnar("t").unwrap();
                    assert_columnar_matches(&db, "t");
                }
                Op::Reopen => {
                    drop(db);
                    db = Database::open(&p, cfg()).unwrap();
                    assert_columnar_matches(&db, "t");
                }
            }
        }
        db.compact_columnar("t").unwrap();
        assert_columnar_matches(&db, "t");
        // A rebuild gives the same content.
        db.rebuild_columnar("t").unwrap();
        assert_columnar_matches(&db, "t");
    }
}

const CHILD_ENV: &str = "LDB_COLUMNAR_CHILD";

#[test]
fn columnar_child() {
    let Ok(p) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Database::open(&p, cfg()).unwrap();
    println!("READY");
    for round in 0i64.. {
        let base = (round * 37) % 2500;
        let ids: Vec<i64> = (base..base + 300).collect();
        db.insert("t", &rows(&ids, (round % 90) as i32 + 1))
            .unwrap();
        db.delete_rows("t", &key_batch(&ids[..50])).unwrap();
        db.compact_columnar("t").unwrap();
    }
}

#[test]
fn sigkill_during_compaction_leaves_a_consistent_column_store() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    {
        let db = Database::create(&p, cfg()).unwrap();
        db.create_table("t", schema(), &["region", "id"]).unwrap();
    }
    let cycles = if cfg!(feature = "integration_tests") {
        20
    } else {
        6
    };
    for cycle in 0..cycles {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                common::test_name(module_path!(), "columnar_child").as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &p)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let out = child.stdout.take().unwrap();
        for l in std::io::BufReader::new(out).lines() {
            if l.unwrap().contains("READY") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(150 + 83 * cycle));
        child.kill().unwrap();
        child.wait().unwrap();
        let db = Database::open(&p, cfg()).unwrap();
        assert_columnar_matches(&db, "t");
        db.compact_columnar("t").unwrap();
        assert_columnar_matches(&db, "t");
    }
}

#[test]
fn flipped_byte_in_a_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let seg = {
        let db = Database::create(&p, cfg()).unwrap();
        db.create_table("t", schema(), &["id"]).unwrap();
        db.insert("t", &rows(&(0..500).collect::<Vec<_>>(), 1))
            .unwrap();
        db.compact_columnar("t").unwrap();
        db.columnar_segment_paths("t").unwrap()[0].clone()
    };
    let mut data = std::fs::read(&seg).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x08;
    std::fs::write(&seg, &data).unwrap();
    match Database::open(&p, cfg()) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, seg),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a damaged segment must not be served"),
    }
}

#[test]
fn pyarrow_reads_a_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.create_table("t", schema(), &["id"]).unwrap();
    let ids: Vec<i64> = (0..900).collect();
    db.insert("t", &rows(&ids, 3)).unwrap();
    db.compact_columnar("t").unwrap();
    let seg = &db.columnar_segment_paths("t").unwrap()[0];
    let script = r#"
import sys
import pyarrow as pa, pyarrow.compute as pc
t = pa.ipc.open_file(sys.argv[1]).read_all()
print(t.num_rows, pc.sum(t.column("id")).as_py(), pc.sum(t.column("qty")).as_py(), t.column("region").to_pylist()[:3])
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(seg)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyarrow could not read the segment (install it with `pip install pyarrow`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let qty: i64 = ids.iter().filter(|i| *i % 5 != 0).map(|i| i * 3).sum();
    assert_eq!(
        text.trim(),
        format!("900 {} {qty} ['EU', 'US', 'APAC']", ids.iter().sum::<i64>())
    );
}

#[test]
fn readme_tables_example() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("db"), LightningDbConfig::default())?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    db.create_table("users", schema.clone(), &["id"])?;
    let rows = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["Alice", "Bob"])),
        ],
    )?;
    db.insert("users", &rows)?; // upsert by primary key, atomic per batch
    let key = rows.project(&[0])?.slice(0, 1); // a one-row batch of the key columns
    let alice = db.get_row("users", &key)?; // Option<RecordBatch>
    assert_eq!(alice.unwrap(), rows.slice(0, 1));
    db.delete_rows("users", &key)?;
    let all = db.scan_table("users", 8192)?; // row store, primary-key order
    assert_eq!(all[0].num_rows(), 1);
    db.compact_columnar("users")?; // force a column-store round now
    let (watermark, segments) = db.columnar_rows("users", None)?;
    assert!(watermark > 0);
    assert_eq!(segments.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    Ok(())
}

#[test]
fn a_segment_a_quarter_dead_is_rewritten_without_its_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.create_table("orders", schema(), &["region", "id"])
        .unwrap();
    let ids: Vec<i64> = (0..2500).collect();
    db.insert("orders", &rows(&ids, 0)).unwrap();
    let first = db.compact_columnar("orders").unwrap();
    assert_eq!((first.segments_written, first.segments_rewritten), (1, 0));
    // A fifth of the rows replaced: below the threshold, nothing is rewritten.
    let some: Vec<i64> = (0..500).map(|i| i * 5).collect();
    db.insert("orders", &rows(&some, 1)).unwrap();
    let r = db.compact_columnar("orders").unwrap();
    assert_eq!((r.rows_deleted, r.segments_rewritten), (500, 0));
    assert_columnar_matches(&db, "orders");
    // Another tenth: the first segment is now 30% dead and is rewritten.
    let more: Vec<i64> = (0..250).map(|i| i * 10 + 1).collect();
    db.insert("orders", &rows(&more, 2)).unwrap();
    let r = db.compact_columnar("orders").unwrap();
    assert_eq!((r.rows_deleted, r.segments_rewritten), (250, 1));
    assert_columnar_matches(&db, "orders");
    let (_, live) = db.columnar_rows("orders", None).unwrap();
    assert_eq!(live.iter().map(|b| b.num_rows()).sum::<usize>(), 2500);
    // No segment keeps dead rows past the threshold, and a reopen reads the result.
    drop(db);
    let db = Database::open(dir.path().join("db"), cfg()).unwrap();
    assert_columnar_matches(&db, "orders");
}

/// `insert_batches` (and `lightning-cli import` into an existing table) at any size:
/// staged in runs past `sql_insert_run_bytes`, published in one commit, nothing of it
/// written when a batch fails part-way, and batches must have the table's types.
#[test]
fn insert_batches_of_any_size_are_one_atomic_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let config = LightningDbConfig {
        sql_insert_run_bytes: 4096, // a staged run every few dozen rows
        ..cfg()
    };
    let db = Database::create(&path, config.clone()).unwrap();
    db.create_table("t", schema(), &["region", "id"]).unwrap();
    db.insert("t", &rows(&[1, 2, 3], 1)).unwrap();
    // Upserts across runs: later batches replace earlier rows with the same key.
    let batches = (0..40).map(|i| {
        let ids: Vec<i64> = (i * 100..i * 100 + 100).map(|x| x % 3000).collect();
        Ok(rows(&ids, i as i32 + 1))
    });
    assert_eq!(db.insert_batches("t", batches).unwrap(), 4000);
    let all = concat(&db.scan_table("t", 10_000).unwrap());
    assert_eq!(all.num_rows(), 3000);
    // The column store folds the ingested rows in like any others.
    db.compact_columnar("t").unwrap();
    assert_columnar_matches(&db, "t");
    // A failing batch part-way: nothing of the call is written.
    let failing = (0..10).map(|i| match i {
        7 => Err(Error::InvalidArgument("the source failed".into())),
        i => Ok(rows(&[10_000 + i], 1)),
    });
    assert!(db.insert_batches("t", failing).is_err());
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)])),
        vec![Arc::new(Int32Array::from(vec![1]))],
    )
    .unwrap();
    assert!(matches!(
        db.insert_batches("t", [Ok(wrong)]),
        Err(Error::Schema(_))
    ));
    db.close().unwrap();
    drop(db);
    let db = Database::open(&path, config).unwrap();
    assert_eq!(
        concat(&db.scan_table("t", 10_000).unwrap()).num_rows(),
        3000
    );
}

/// Batches of two interleaved streams, each in key order (as a parallel scan's
/// partitions arrive), are staged without sorting; a later batch that rewrites keys of
/// both still wins, and every row is there once.
#[test]
fn interleaved_ordered_batches_stage_as_lanes_and_later_writes_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = LightningDbConfig {
        sql_insert_run_bytes: 8192,
        ..cfg()
    };
    let db = Database::create(dir.path().join("db"), config).unwrap();
    db.create_table("t", schema(), &["id"]).unwrap();
    let mut batches = Vec::new();
    for i in 0..30i64 {
        let a: Vec<i64> = (i * 50..i * 50 + 50).collect();
        let b: Vec<i64> = (100_000 + i * 50..100_000 + i * 50 + 50).collect();
        batches.push(Ok(rows(&a, 1)));
        batches.push(Ok(rows(&b, 1)));
    }
    // Rewrites of keys from both streams, last.
    batches.push(Ok(rows(&[5, 700, 100_005, 101_400], 9)));
    assert_eq!(db.insert_batches("t", batches).unwrap(), 3004);
    let all = concat(&db.scan_table("t", 10_000).unwrap());
    assert_eq!(all.num_rows(), 3000);
    let ids = all.column(0).as_primitive::<Int64Type>();
    let qty = all.column(2).as_primitive::<Int32Type>();
    for i in 0..all.num_rows() {
        let id = ids.value(i);
        let v = if [5, 700, 100_005, 101_400].contains(&id) {
            9
        } else {
            1
        };
        if qty.is_valid(i) {
            assert_eq!(qty.value(i), id as i32 * v, "id {id}");
        }
    }
}
