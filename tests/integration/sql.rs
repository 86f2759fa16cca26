//! SQL through DataFusion over Lightning tables: DDL, DML with constraints, freshness,
//! pruning in EXPLAIN, external Parquet tables, COPY/export read by pyarrow and DuckDB.

use crate::common;

use lightning_db::arrow::array::*;
use lightning_db::arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use lightning_db::{Database, Error, LightningDbConfig};
use std::sync::Arc;

fn cfg() -> LightningDbConfig {
    LightningDbConfig {
        columnar_segment_rows: 1000,
        columnar_compaction_interval: std::time::Duration::from_millis(50),
        // Queries split into two partitions on any machine, so plans that depend on
        // several partitions are tested everywhere.
        sql_threads: 2,
        ..common::small_config()
    }
}

/// A database whose tables compact only when asked, into segments of up to 10,000 rows
/// in record batches of 1,000 (the unit of zone-map pruning).
fn batched_db(dir: &std::path::Path) -> Database {
    let cfg = LightningDbConfig {
        columnar_background: false,
        columnar_segment_rows: 10_000,
        columnar_batch_rows: 1000,
        ..cfg()
    };
    Database::create(dir.join("db"), cfg).unwrap()
}

fn scalar_i64(db: &Database, q: &str) -> i64 {
    let b = db.sql(q).unwrap();
    let c = b[0].column(0);
    lightning_db::arrow::compute::cast(c, &lightning_db::arrow::datatypes::DataType::Int64)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

#[test]
fn ddl_dml_and_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT, name VARCHAR, x INT, PRIMARY KEY (id))")
        .unwrap();
    assert!(db.list_tables().unwrap().contains(&"t".to_string()));
    db.sql("INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)")
        .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 3);
    assert_eq!(scalar_i64(&db, "SELECT sum(x) FROM t"), 60);
    // Duplicate keys (existing, or twice in one statement) and NULL keys are refused,
    // and nothing of the statement is written.
    let e = db
        .sql("INSERT INTO t VALUES (4, 'd', 1), (1, 'dup', 1)")
        .unwrap_err();
    assert!(matches!(e, Error::Constraint(_)), "{e}");
    let e = db
        .sql("INSERT INTO t VALUES (5, 'e', 1), (5, 'e2', 1)")
        .unwrap_err();
    assert!(matches!(e, Error::Constraint(_)), "{e}");
    let e = db.sql("INSERT INTO t VALUES (NULL, 'n', 1)").unwrap_err();
    assert!(matches!(e, Error::Constraint(_) | Error::Sql(_)), "{e}");
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 3);
    // Upserts.
    db.sql("INSERT OR REPLACE INTO t VALUES (1, 'A', 11), (4, 'd', 40)")
        .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT sum(x) FROM t"), 11 + 20 + 30 + 40);
    db.sql("REPLACE INTO t VALUES (2, 'B', 22)").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT x FROM t WHERE id = 2"), 22);
    // UPDATE and DELETE.
    let r = db.sql("UPDATE t SET x = x + 1 WHERE id >= 3").unwrap();
    assert_eq!(r[0].column(0).as_primitive::<UInt64Type>().value(0), 2);
    assert_eq!(scalar_i64(&db, "SELECT sum(x) FROM t"), 11 + 22 + 31 + 41);
    db.sql("UPDATE t SET id = 10 WHERE id = 4").unwrap(); // key change
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t WHERE id = 10"), 1);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t WHERE id = 4"), 0);
    db.sql("DELETE FROM t WHERE name = 'c'").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 3);
    // Errors are clear and change nothing.
    assert!(matches!(db.sql("SELEC 1"), Err(Error::Sql(_))));
    assert!(matches!(db.sql("SELECT * FROM nope"), Err(Error::Sql(_))));
    assert!(matches!(db.sql("SELECT nope FROM t"), Err(Error::Sql(_))));
    // Without a PRIMARY KEY the table is keyless (appends, duplicates kept).
    db.sql("CREATE TABLE k2 (a INT)").unwrap();
    assert!(db.table_primary_key("k2").unwrap().is_empty());
    assert!(matches!(
        db.sql("CREATE TABLE t (id BIGINT, PRIMARY KEY (id))"),
        Err(Error::TableExists(_))
    ));
    // The row store and the table API see the same rows.
    assert_eq!(db.scan_table("t", 100).unwrap()[0].num_rows(), 3);
    db.sql("DROP TABLE t").unwrap();
    assert!(db.sql("SELECT * FROM t").is_err());
    // The kv table is queryable.
    db.put(b"k1", b"v1").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM kv"), 1);
}

#[test]
fn reads_are_fresh_and_explain_shows_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            columnar_background: false,
            ..cfg()
        },
    )
    .unwrap();
    db.sql("CREATE TABLE m (id BIGINT, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    for chunk in 0..5 {
        let values: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| format!("({i}, {i})"))
            .collect();
        db.sql(&format!("INSERT INTO m VALUES {}", values.join(",")))
            .unwrap();
        db.compact_columnar("m").unwrap();
    }
    assert_eq!(db.columnar_segment_paths("m").unwrap().len(), 5);
    // Written after the last compaction: only in the row store.
    db.sql("UPDATE m SET v = -1 WHERE id = 42").unwrap();
    db.sql("DELETE FROM m WHERE id = 43").unwrap();
    db.sql("INSERT INTO m VALUES (99999, 7)").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM m"), 5000);
    assert_eq!(scalar_i64(&db, "SELECT v FROM m WHERE id = 42"), -1);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM m WHERE id = 43"), 0);
    let plan = db
        .sql("EXPLAIN SELECT sum(v) FROM m WHERE id >= 4000 AND id < 4100")
        .unwrap();
    let text = lightning_db::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(text.contains("segments scanned=1/5"), "{text}");
    assert_eq!(
        scalar_i64(&db, "SELECT sum(v) FROM m WHERE id >= 4000 AND id < 4100"),
        (4000..4100).sum::<i64>()
    );

    let ordered = |db: &Database, t: &str| ids(db, &format!("SELECT id FROM {t} ORDER BY id"));
    let mut expect: Vec<i64> = (0..5000).filter(|&i| i != 43).collect();
    expect.push(99999);
    assert_eq!(ordered(&db, "m"), expect);
    db.compact_columnar("m").unwrap();
    assert_eq!(ordered(&db, "m"), expect);

    // One segment batch: the scan declares its key order, so no sort is planned; fresh
    // rows come from a partition of their own and merge in order.
    db.sql("CREATE TABLE o (id BIGINT, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..500).map(|i| format!("({}, {i})", i * 2)).collect();
    db.sql(&format!("INSERT INTO o VALUES {}", values.join(",")))
        .unwrap();
    db.compact_columnar("o").unwrap();
    let text = explain(&db, "SELECT id FROM o ORDER BY id");
    assert!(!text.contains("SortExec"), "{text}");
    db.sql("INSERT INTO o VALUES (7, 7), (2001, 1)").unwrap();
    db.sql("DELETE FROM o WHERE id = 4").unwrap();
    let text = explain(&db, "SELECT id FROM o ORDER BY id");
    assert!(!text.contains("SortExec"), "{text}");
    assert!(text.contains("SortPreservingMergeExec"), "{text}");
    let mut expect: Vec<i64> = (0..500).map(|i| i * 2).filter(|&i| i != 4).collect();
    expect.extend([7, 2001]);
    expect.sort();
    assert_eq!(ordered(&db, "o"), expect);
    // Several partitions of batches: no order is declared up front, but each partition
    // holds a key range in order, so the sort DataFusion planned is dropped and the
    // partitions are merged.
    let text = explain(&db, "SELECT id FROM m ORDER BY id");
    assert!(!text.contains("SortExec"), "{text}");
    assert!(text.contains("SortPreservingMergeExec"), "{text}");
    let mut m_rows: Vec<i64> = (0..5000).filter(|&i| i != 43).collect();
    m_rows.push(99999);
    assert_eq!(ordered(&db, "m"), m_rows);
}

/// `count(*)` needs no column: the scan counts the rows its own filters keep (or a
/// batch's live rows, when its zone maps prove the filters or there are none) and
/// decodes nothing, with deleted, replaced and fresh rows, and fetch limits, counted as
/// a query that reads a column counts them.
#[test]
fn counting_rows_reads_no_column_and_counts_like_a_query_that_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE c (id BIGINT, v BIGINT NOT NULL, tag VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..20_000)
        .map(|i| format!("({i}, {}, '{}')", i % 1000, ["x", "y", "z"][i as usize % 3]))
        .collect();
    db.sql(&format!("INSERT INTO c VALUES {}", values.join(",")))
        .unwrap();
    db.compact_columnar("c").unwrap();
    // Deleted and replaced rows in the segments, then fresh ones in the row store.
    db.sql("DELETE FROM c WHERE id % 7 = 0").unwrap();
    db.sql("UPDATE c SET v = v + 500, tag = 'x' WHERE id % 11 = 0")
        .unwrap();
    db.compact_columnar("c").unwrap();
    db.sql("DELETE FROM c WHERE id % 13 = 0").unwrap();
    db.sql("UPDATE c SET tag = 'y' WHERE id % 17 = 0").unwrap();
    db.sql("INSERT INTO c VALUES (50000, 999, 'x'), (50001, 1, NULL)")
        .unwrap();
    let filters = [
        "tag = 'x' AND v > 500",
        "tag = 'y'",
        "tag IS NULL",
        "v >= 0",
        "id < 5000",
        "id >= 3000 AND id < 3100 AND v % 2 = 0",
        "v > 100000",
    ];
    for f in filters {
        let counted = format!("SELECT count(*) FROM c WHERE {f}");
        let text = explain(&db, &counted);
        assert!(text.contains("rows counted only"), "{f}: {text}");
        let read = scalar_i64(&db, &format!("SELECT count(v) FROM c WHERE {f}"));
        let via_ids = ids(&db, &format!("SELECT id FROM c WHERE {f}")).len() as i64;
        assert_eq!(scalar_i64(&db, &counted), read, "{f}");
        assert_eq!(read, via_ids, "{f}");
        // Below a fetch limit, and without any filter.
        let limited = format!("SELECT count(*) FROM (SELECT 1 FROM c WHERE {f} LIMIT 100)");
        assert_eq!(scalar_i64(&db, &limited), read.min(100), "{f}");
    }
    let all = ids(&db, "SELECT id FROM c").len() as i64;
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM c"), all);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM c WHERE true"), all);
    // A filter that fails on a value still fails when only counted.
    assert!(
        db.sql("SELECT count(*) FROM c WHERE CAST(tag AS BIGINT) > 0")
            .is_err()
    );
}

#[test]
fn zone_maps_prune_batches_inside_a_segment_and_feed_the_planner() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE b (id BIGINT, v BIGINT, tag VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..5000)
        .map(|i| format!("({i}, {}, '{}')", i % 100, ["x", "y"][i as usize % 2]))
        .collect();
    db.sql(&format!("INSERT INTO b VALUES {}", values.join(",")))
        .unwrap();
    db.compact_columnar("b").unwrap();
    assert_eq!(db.columnar_segment_paths("b").unwrap().len(), 1);
    // Deleted and updated rows inside the batch that is read, after the compaction.
    db.sql("DELETE FROM b WHERE id = 2500").unwrap();
    db.sql("UPDATE b SET v = 1000 WHERE id = 2501").unwrap();
    let q = "SELECT count(*), sum(v) FROM b WHERE id >= 2100 AND id < 2900";
    let text = explain(&db, q);
    assert!(text.contains("segments scanned=1/1"), "{text}");
    assert!(text.contains("batches scanned=1/5"), "{text}");
    let r = db.sql(q).unwrap();
    let count = r[0].column(0).as_primitive::<Int64Type>().value(0);
    let sum = r[0].column(1).as_primitive::<Int64Type>().value(0);
    assert_eq!(count, 799);
    let expect: i64 = (2100..2900)
        .filter(|&i| i != 2500)
        .map(|i| i % 100)
        .sum::<i64>()
        - 1
        + 1000;
    assert_eq!(sum, expect);
    // Every batch is read when nothing prunes, in any number of partitions.
    // (id 2500, deleted, was an x)
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM b WHERE tag = 'x'"),
        2499
    );
    assert_eq!(
        scalar_i64(&db, "SELECT sum(v) FROM b"),
        (0..5000).map(|i| i % 100).sum::<i64>() - 1 + 1000
    );
    // Row counts and bounds from the zone maps reach the planner.
    let stats = scan_statistics(&db, "SELECT id, tag FROM b WHERE id >= 3000");
    use lightning_db::datafusion::common::stats::Precision;
    use lightning_db::datafusion::scalar::ScalarValue;
    // Batches 3 and 4 survive pruning, and their zone maps prove `id >= 3000` for every
    // row; the scan filters the fresh row (the update of id 2501) itself, so the count
    // stays exact.
    assert_eq!(stats.num_rows, Precision::Exact(2000));
    db.compact_columnar("b").unwrap();
    let stats = scan_statistics(&db, "SELECT id, tag FROM b WHERE id >= 3000");
    // The updated row went to a second segment that overlaps the first: the scan
    // claims no order and DataFusion sorts.
    let text = explain(&db, "SELECT id FROM b ORDER BY id");
    assert!(text.contains("SortExec"), "{text}");
    assert_eq!(
        ids(&db, "SELECT id FROM b ORDER BY id"),
        (0..5000).filter(|&i| i != 2500).collect::<Vec<i64>>()
    );
    // Batches 3 and 4 hold no deleted or updated row: their zone maps are exact.
    assert_eq!(stats.num_rows, Precision::Exact(2000));
    let id = &stats.column_statistics[0];
    assert_eq!(
        id.min_value,
        Precision::Exact(ScalarValue::Int64(Some(3000)))
    );
    assert_eq!(
        id.max_value,
        Precision::Exact(ScalarValue::Int64(Some(4999)))
    );
    let tag = &stats.column_statistics[1];
    assert_eq!(
        tag.max_value,
        Precision::Exact(ScalarValue::Utf8View(Some("y".into())))
    );
    // The planner may answer min/max from exact statistics: they must stay right as
    // rows change, whether compacted or not.
    let minmax = |db: &Database| {
        (
            scalar_i64(db, "SELECT min(v) FROM b"),
            scalar_i64(db, "SELECT max(v) FROM b"),
        )
    };
    assert_eq!(minmax(&db), (0, 1000));
    db.sql("UPDATE b SET v = 5000 WHERE id = 10").unwrap();
    db.sql("DELETE FROM b WHERE id = 2501").unwrap();
    db.sql("UPDATE b SET v = -3 WHERE id = 4990").unwrap();
    assert_eq!(minmax(&db), (-3, 5000));
    db.compact_columnar("b").unwrap();
    assert_eq!(minmax(&db), (-3, 5000));
    db.sql("DELETE FROM b WHERE id IN (10, 4990)").unwrap();
    assert_eq!(minmax(&db), (0, 99));
    db.compact_columnar("b").unwrap();
    assert_eq!(minmax(&db), (0, 99));
    // A limit with no filter reads only the first batch.
    let q = "SELECT id, v FROM b LIMIT 10";
    let text = explain(&db, q);
    assert!(text.contains("batches scanned=1/"), "{text}");
    // DataFusion hands the limit to the scan as its fetch; statistics count it.
    assert!(text.contains("fetch=10"), "{text}");
    assert_eq!(scan_statistics(&db, q).num_rows, Precision::Exact(10));
    let rows: usize = db.sql(q).unwrap().iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 10);
}

#[test]
fn decimal_timestamp_and_in_list_filters_prune_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE p (id BIGINT, price DECIMAL(10, 2), at TIMESTAMP, PRIMARY KEY (id))")
        .unwrap();
    // price = id / 100 and at = id seconds after 2026-01-01: both rise with the key, so
    // each 1000-row batch has its own range of them.
    let values: Vec<String> = (0..5000)
        .map(|i| {
            format!(
                "({i}, {}.{:02}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{i} seconds')",
                i / 100,
                i % 100
            )
        })
        .collect();
    db.sql(&format!("INSERT INTO p VALUES {}", values.join(",")))
        .unwrap();
    db.compact_columnar("p").unwrap();
    let q = "SELECT count(*) FROM p WHERE price >= 42.50";
    assert!(explain(&db, q).contains("batches scanned=1/5"));
    assert_eq!(scalar_i64(&db, q), 750);
    let q = "SELECT count(*) FROM p WHERE at < TIMESTAMP '2026-01-01 00:16:40'";
    assert!(explain(&db, q).contains("batches scanned=1/5"));
    assert_eq!(scalar_i64(&db, q), 1000);
    let q = "SELECT count(*) FROM p WHERE id IN (10, 4500)";
    assert!(explain(&db, q).contains("batches scanned=2/5"));
    assert_eq!(scalar_i64(&db, q), 2);
    // A filter pruning cannot use (a function of the column) scans everything.
    let q = "SELECT count(*) FROM p WHERE id % 1000 = 0";
    assert!(explain(&db, q).contains("batches scanned=5/5"));
    assert_eq!(scalar_i64(&db, q), 5);
}

#[test]
fn dynamic_filters_of_joins_and_topk_prune_batches_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE big (id BIGINT, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..10_000).map(|i| format!("({i}, {})", i % 7)).collect();
    db.sql(&format!("INSERT INTO big VALUES {}", values.join(",")))
        .unwrap();
    db.sql("CREATE TABLE pick (id BIGINT, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO pick VALUES (5000), (5001), (5003)")
        .unwrap();
    db.compact_columnar("big").unwrap();
    db.compact_columnar("pick").unwrap();
    // The join builds on `pick` (3 rows) and pushes its key bounds [5000, 5003] into
    // the scan of `big`: 9 of its 10 batches are skipped once the build side is done.
    let q = "SELECT count(*), sum(big.v) FROM big JOIN pick ON big.id = pick.id";
    let text = explain(&db, &format!("EXPLAIN ANALYZE {q}"));
    assert!(text.contains("pruning filters=[DynamicFilter"), "{text}");
    assert!(text.contains("batches_pruned_at_run_time=9"), "{text}");
    let r = db.sql(q).unwrap();
    assert_eq!(r[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    let sum = r[0].column(1).as_primitive::<Int64Type>().value(0);
    assert_eq!(sum, [5000, 5001, 5003].iter().map(|i| i % 7).sum::<i64>());
    // Its one segment is in key order in every partition: a sort by the key is dropped
    // and a limit stops the scan early.
    for q in [
        "SELECT id FROM big ORDER BY id",
        "SELECT id, v FROM big ORDER BY id LIMIT 3",
    ] {
        let text = explain(&db, q);
        assert!(!text.contains("SortExec"), "{text}");
    }
    assert_eq!(
        ids(&db, "SELECT id, v FROM big ORDER BY id LIMIT 3"),
        vec![0, 1, 2]
    );
    assert_eq!(
        ids(&db, "SELECT id FROM big ORDER BY id"),
        (0..10_000).collect::<Vec<i64>>()
    );
    // Descending, or by another column: DataFusion sorts.
    assert!(explain(&db, "SELECT id FROM big ORDER BY id DESC").contains("SortExec"));
    assert!(explain(&db, "SELECT id FROM big ORDER BY v").contains("SortExec"));
    // Descending by the key: DataFusion keeps its TopK, the scan reads each partition's
    // batches from the highest keys down, and the TopK's filter prunes the rest.
    let q = "SELECT id FROM big ORDER BY id DESC LIMIT 3";
    assert_eq!(ids(&db, q), vec![9999, 9998, 9997]);
    let text = explain(&db, &format!("EXPLAIN ANALYZE {q}"));
    let pruned: usize = text
        .split("batches_pruned_at_run_time=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(pruned >= 7, "{text}");
    // Fresh rows are never pruned: they carry no zone maps.
    db.sql("INSERT INTO big VALUES (20000, 1)").unwrap();
    db.sql("INSERT INTO big VALUES (-1, 1)").unwrap();
    assert_eq!(
        ids(&db, "SELECT id, v FROM big ORDER BY id LIMIT 3"),
        vec![-1, 0, 1]
    );
    let mut all: Vec<i64> = (0..10_000).collect();
    all.insert(0, -1);
    all.push(20000);
    assert_eq!(ids(&db, "SELECT id FROM big ORDER BY id"), all);
    db.sql("DELETE FROM big WHERE id = -1").unwrap();
    db.sql("INSERT INTO pick VALUES (20000)").unwrap();
    assert_eq!(
        scalar_i64(
            &db,
            "SELECT count(*) FROM big JOIN pick ON big.id = pick.id"
        ),
        4
    );
    // TopK tightens its filter as it goes: the answer stays exact.
    assert_eq!(
        ids(&db, "SELECT id FROM big ORDER BY id DESC LIMIT 3"),
        vec![20000, 9999, 9998]
    );
    let text = explain(
        &db,
        "EXPLAIN ANALYZE SELECT id FROM big ORDER BY v, id LIMIT 2",
    );
    assert!(text.contains("batches_pruned_at_run_time="), "{text}");
    assert_eq!(
        ids(&db, "SELECT id FROM big ORDER BY v, id LIMIT 2"),
        vec![0, 7]
    );
}

/// The first column of `q`'s result, as i64s.
fn ids(db: &Database, q: &str) -> Vec<i64> {
    db.sql(q)
        .unwrap()
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

/// The statistics the planner gets from the table scan (the leaf) of `q`'s plan.
pub(crate) fn scan_statistics(
    db: &Database,
    q: &str,
) -> Arc<lightning_db::datafusion::common::Statistics> {
    use lightning_db::datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let df = db.session().unwrap().sql(q).await.unwrap();
        let mut plan = df.create_physical_plan().await.unwrap();
        while let Some(c) = plan.children().first() {
            plan = (*c).clone();
        }
        assert_eq!(plan.name(), "DataSourceExec");
        let src = plan
            .downcast_ref::<lightning_db::datafusion::datasource::source::DataSourceExec>()
            .unwrap();
        assert!(
            src.data_source()
                .downcast_ref::<lightning_query::LightningScan>()
                .is_some()
        );
        StatisticsContext::new()
            .compute(plan.as_ref(), &StatisticsArgs::new())
            .unwrap()
    })
}

fn explain(db: &Database, q: &str) -> String {
    let q = if q.starts_with("EXPLAIN") {
        q.to_string()
    } else {
        format!("EXPLAIN {q}")
    };
    let plan = db.sql(&q).unwrap();
    lightning_db::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string()
}

#[test]
fn freshness_under_concurrent_writes_with_the_compactor_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("db"), cfg()).unwrap());
    db.sql("CREATE TABLE acct (id BIGINT, bal BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..100).map(|i| format!("({i}, 100)")).collect();
    db.sql(&format!("INSERT INTO acct VALUES {}", values.join(",")))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut next_id = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 300 {
                let (a, b) = (n % 100, (n * 7 + 3) % 100);
                if a != b {
                    // Moves keep the total; one statement is one transaction.
                    let r = db.sql(&format!(
                        "UPDATE acct SET bal = CASE WHEN id = {a} THEN bal - 5 ELSE bal + 5 END WHERE id IN ({a}, {b})"
                    ));
                    if let Err(e) = r {
                        assert!(e.is_conflict(), "{e}");
                    }
                }
                // Zero-balance rows come and go: count changes, total does not.
                db.sql(&format!("INSERT INTO acct VALUES ({next_id}, 0)"))
                    .unwrap();
                assert_eq!(
                    scalar_i64(
                        &db,
                        &format!("SELECT count(*) FROM acct WHERE id = {next_id}")
                    ),
                    1,
                    "a committed insert is visible to the next query"
                );
                db.sql(&format!("DELETE FROM acct WHERE id = {}", next_id - 1))
                    .unwrap();
                next_id += 1;
                n += 1;
            }
        })
    };
    let mut checks = 0;
    while !w.is_finished() {
        let b = db.sql("SELECT count(*), sum(bal) FROM acct").unwrap();
        let count = b[0].column(0).as_primitive::<Int64Type>().value(0);
        let sum = b[0].column(1).as_primitive::<Int64Type>().value(0);
        assert_eq!(sum, 100 * 100, "a query saw a half-applied transaction");
        assert!((100..=102).contains(&count), "count {count}");
        checks += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    w.join().unwrap();
    assert!(checks > 5);
    assert!(
        db.get_metrics().columnar_segments > 0,
        "the compactor ran during the test"
    );
}

#[test]
fn external_parquet_import_and_export_read_by_pyarrow_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.sql("CREATE TABLE s (id BIGINT, grp VARCHAR, amount DOUBLE, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..500)
        .map(|i| format!("({i}, 'g{}', {}.25)", i % 4, i))
        .collect();
    db.sql(&format!("INSERT INTO s VALUES {}", values.join(",")))
        .unwrap();
    let out = dir.path().join("s.parquet");
    assert_eq!(db.export_parquet("s", &out).unwrap(), 500);
    let out2 = dir.path().join("q.parquet");
    db.sql(&format!(
        "COPY (SELECT id, amount FROM s WHERE id < 100) TO '{}' STORED AS PARQUET",
        out2.display()
    ))
    .unwrap();
    // Parquet back in through an external table, into a new Lightning table.
    db.sql(&format!(
        "CREATE EXTERNAL TABLE ext STORED AS PARQUET LOCATION '{}'",
        out.display()
    ))
    .unwrap();
    db.sql("CREATE TABLE s2 (id BIGINT, grp VARCHAR, amount DOUBLE, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO s2 SELECT * FROM ext").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM s2"), 500);
    let sum = db.sql("SELECT sum(amount) FROM s").unwrap()[0]
        .column(0)
        .as_primitive::<Float64Type>()
        .value(0);
    let script = r#"
import sys, pyarrow.parquet as pq, duckdb
t = pq.read_table(sys.argv[1])
con = duckdb.connect()
d = con.execute(f"select count(*), sum(amount) from read_parquet('{sys.argv[1]}')").fetchall()[0]
q = con.execute(f"select count(*) from read_parquet('{sys.argv[2]}')").fetchall()[0]
print(t.num_rows, sum(t.column('amount').to_pylist()), d[0], d[1], q[0])
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .arg(&out2)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pyarrow/duckdb failed (pip install pyarrow duckdb): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f[0], "500");
    assert_eq!(f[2], "500");
    assert_eq!(f[4], "100");
    assert!((f[1].parse::<f64>().unwrap() - sum).abs() < 1e-6);
    assert!((f[3].parse::<f64>().unwrap() - sum).abs() < 1e-6);
}

#[test]
fn readme_sql_example() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("db"), LightningDbConfig::default())?;
    let (inp, out, orders) = (
        dir.path().join("in.parquet"),
        dir.path().join("out.parquet"),
        dir.path().join("orders.parquet"),
    );
    db.sql(
        "CREATE TABLE orders (id BIGINT, customer VARCHAR, amount DECIMAL(12,2), PRIMARY KEY (id))",
    )?;
    db.sql("INSERT INTO orders VALUES (1, 'alice', 10.50), (2, 'bob', 3.25)")?; // duplicate key = error
    db.sql("INSERT OR REPLACE INTO orders VALUES (2, 'bob', 4.00)")?; // upsert (also REPLACE INTO)
    db.sql("UPDATE orders SET amount = amount * 2 WHERE customer = 'alice'")?;
    db.sql("DELETE FROM orders WHERE id = 2")?;
    let batches = db.sql("SELECT customer, sum(amount) FROM orders GROUP BY customer")?;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    db.sql(&format!(
        "COPY (SELECT id + 10 AS id, customer, amount FROM orders) TO '{}' STORED AS PARQUET",
        inp.display()
    ))?;
    db.sql(&format!(
        "CREATE EXTERNAL TABLE ext STORED AS PARQUET LOCATION '{}'",
        inp.display()
    ))?;
    db.sql("INSERT INTO orders SELECT * FROM ext")?; // Parquet import
    db.sql(&format!(
        "COPY (SELECT * FROM orders) TO '{}' STORED AS PARQUET",
        out.display()
    ))?;
    assert_eq!(db.export_parquet("orders", &orders)?, 2); // zstd, streaming
    let ctx = db.session()?; // DataFusion DataFrame API
    assert!(ctx.table_exist("orders")?);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM orders"), 2);
    Ok(())
}

/// Scans of one published view build on each other (each reads only the changes since
/// the last one): updates, deletes and re-inserts between queries, with and without a
/// compaction round in between, always give the row store's rows.
#[test]
fn repeated_queries_on_changing_data_see_exactly_the_row_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, v BIGINT, s VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..3000).map(|i| format!("({i}, {i}, 'a{i}')")).collect();
    db.sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .unwrap();
    db.compact_columnar("t").unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..40 {
        for _ in 0..25 {
            let id = next() % 3500;
            let q = match next() % 4 {
                0 => format!("DELETE FROM t WHERE id = {id}"),
                1 => format!("INSERT OR REPLACE INTO t VALUES ({id}, {round}, 'r{round}')"),
                _ => format!("UPDATE t SET v = v + 1000 WHERE id = {id}"),
            };
            db.sql(&q).unwrap();
        }
        // A new column-store view every few rounds: the scans' figures of the old view
        // carry over to the segments both hold.
        if round % 5 == 4 || round % 13 == 12 {
            db.compact_columnar("t").unwrap();
        }
        // Thousands of changes at once: the scans fold them into their shared base.
        if round == 21 {
            let values: Vec<String> = (3500..8000)
                .map(|i| format!("({i}, {i}, 'b{i}')"))
                .collect();
            db.sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
                .unwrap();
        }
        let got = ids(&db, "SELECT id FROM t ORDER BY id");
        let sum = scalar_i64(&db, "SELECT sum(v) FROM t");
        let rows = db.scan_table("t", 1 << 20).unwrap();
        let want: Vec<i64> = rows
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        let want_sum: i64 = rows
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().iter().flatten())
            .sum();
        assert_eq!(got, want, "round {round}");
        assert_eq!(sum, want_sum, "round {round}");
    }
}

/// `q`'s rows as sorted text lines (order-insensitive comparison of results).
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| lightning_db::arrow::util::display::array_value_to_string(c, r).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}

/// Run `queries` through `db.sql` and through plain DataFusion over table `t`'s rows
/// (read with `scan_table`), twice — the second time after a compaction caught the
/// column store up — and require the same answers.
fn same_answers_as_datafusion(db: &Database, queries: &[&str], label: &str) {
    use lightning_db::datafusion::datasource::MemTable;
    use lightning_db::datafusion::prelude::SessionContext;
    let rows = db.scan_table("t", 1 << 20).unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(rows[0].schema(), vec![rows]).unwrap()),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..2 {
        for q in queries {
            let want = rt
                .block_on(async { ctx.sql(q).await?.collect().await })
                .unwrap();
            let got = db.sql(q).unwrap();
            assert_eq!(lines(&got), lines(&want), "{label} round {round}: {q}");
        }
        db.compact_columnar("t").unwrap();
    }
}

#[test]
fn filters_the_scan_applies_itself_match_a_filter_over_the_live_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    // `s` has few distinct values (stored dictionary-encoded) and NULLs; `n` holds
    // numbers as text, except in rows that are later replaced or deleted.
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, v BIGINT, s VARCHAR, n VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    let s = |i: u64| match i % 5 {
        0 => "NULL".to_string(),
        k => format!("'k{k}'"),
    };
    let values: Vec<String> = (0..4000u64)
        .map(|i| {
            let n = if i % 3 == 0 {
                "'bad'".to_string()
            } else {
                format!("'{i}'")
            };
            format!("({i}, {}, {}, {n})", i * 7 % 1000, s(i))
        })
        .collect();
    db.sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .unwrap();
    db.compact_columnar("t").unwrap();
    // Every row whose `n` is not a number is replaced (some in the column store after a
    // compaction, some only in the row store) or deleted.
    for i in (0..4000u64).filter(|i| i % 3 == 0) {
        let q = match i % 4 {
            0 => format!("DELETE FROM t WHERE id = {i}"),
            _ => format!(
                "INSERT OR REPLACE INTO t VALUES ({i}, {}, {}, '{i}')",
                i % 100,
                s(i + 1)
            ),
        };
        db.sql(&q).unwrap();
        if i == 2001 {
            db.compact_columnar("t").unwrap();
        }
    }
    let queries = [
        "SELECT id FROM t WHERE s = 'k3'",
        "SELECT id FROM t WHERE s <> 'k3'",
        "SELECT id FROM t WHERE s IS NULL",
        "SELECT id, s FROM t WHERE s IS NOT NULL AND v > 500",
        "SELECT id FROM t WHERE coalesce(s, 'none') = 'none'",
        "SELECT id FROM t WHERE s IN ('k1', 'k2') AND v BETWEEN 10 AND 700",
        "SELECT id FROM t WHERE s LIKE 'k1%' OR v < 20",
        "SELECT id FROM t WHERE upper(s) = 'K4' AND id % 2 = 0",
        // Only deleted and replaced rows hold 'bad': evaluated on every stored value
        // this cast fails, over the live rows it does not.
        "SELECT id FROM t WHERE CAST(n AS BIGINT) > 3000",
        "SELECT count(*) FROM t WHERE s = 'k2'",
        "SELECT count(*), sum(v) FROM t WHERE s = 'k2' AND v > 100",
        "SELECT s, count(*) FROM t WHERE v > 100 GROUP BY s",
        "SELECT id FROM t WHERE s = 'k1' ORDER BY id LIMIT 7",
        "SELECT id FROM t WHERE v = 42 ORDER BY id DESC LIMIT 3",
        "SELECT id FROM t WHERE s = 'nothing'",
        // `v` is stored narrowed (values below 1000): literals that fit are compared
        // as stored, those that do not take the general path.
        "SELECT id FROM t WHERE v < 100000",
        "SELECT id FROM t WHERE v <> -70000 AND v >= 990",
        "SELECT id FROM t WHERE 500 > v AND v != 7",
    ];
    same_answers_as_datafusion(&db, &queries, "filters");
    // The scan applies static filters itself: no FilterExec is left above it. A volatile
    // filter stays above the scan.
    let plan = explain(&db, "SELECT id FROM t WHERE s = 'k3' AND v > 10");
    assert!(!plan.contains("FilterExec"), "{plan}");
    let plan = explain(&db, "SELECT id FROM t WHERE v > random() * 1000");
    assert!(plan.contains("FilterExec"), "{plan}");
    // An empty answer still names its columns.
    let none = db.sql("SELECT id, s FROM t WHERE s = 'nothing'").unwrap();
    assert_eq!(none.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(none[0].schema().field(1).name(), "s");
    // A query whose conjunct fails on the live rows too still fails.
    assert!(
        db.sql("SELECT id FROM t WHERE CAST(s AS BIGINT) > 0")
            .is_err()
    );
}

#[test]
fn decoded_segment_columns_are_kept_within_their_budget() {
    let run = |cache: u64| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LightningDbConfig {
            columnar_background: false,
            columnar_segment_rows: 10_000,
            columnar_batch_rows: 1000,
            columnar_cache_bytes: cache,
            ..cfg()
        };
        let db = Database::create(dir.path().join("db"), cfg).unwrap();
        db.sql("CREATE TABLE t (id BIGINT NOT NULL, v BIGINT, s VARCHAR, PRIMARY KEY (id))")
            .unwrap();
        let values: Vec<String> = (0..5000)
            .map(|i| format!("({i}, {i}, 's{}')", i % 7))
            .collect();
        db.sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .unwrap();
        db.compact_columnar("t").unwrap();
        let q = "SELECT s, sum(v), count(*) FROM t WHERE v % 3 = 1 GROUP BY s";
        let first = lines(&db.sql(q).unwrap());
        let held = db.get_metrics().columnar_cache_bytes;
        // A second run reads what the first kept; the answer is the same.
        assert_eq!(lines(&db.sql(q).unwrap()), first);
        assert!(held <= cache, "{held} > {cache}");
        // Rewriting the table replaces its segments, which gives their bytes back.
        db.sql("DELETE FROM t WHERE id < 4000").unwrap();
        db.rebuild_columnar("t").unwrap();
        // (The first scan of the new segments lets go of the last view of the old.)
        assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t WHERE v >= 0"), 1000);
        let after = db.get_metrics().columnar_cache_bytes;
        (first, held, after)
    };
    let (with, held, after) = run(64 << 20);
    // (Integers are stored narrowed: these take 2 bytes a value.)
    assert!(held > 5000 * 2, "kept only {held} bytes");
    assert!(after < held, "{after} >= {held}");
    let (without, none, _) = run(0);
    assert_eq!(none, 0);
    assert_eq!(with, without);
    // A budget smaller than the table keeps part of it.
    let (_, some, _) = run(30_000);
    assert!(some > 0 && some <= 30_000, "{some}");
}

#[test]
fn concurrent_updates_of_the_same_rows_fail_as_conflicts_and_lose_nothing() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.sql("CREATE TABLE c (id BIGINT NOT NULL, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let values: Vec<String> = (0..200).map(|i| format!("({i}, 0)")).collect();
    db.sql(&format!("INSERT INTO c VALUES {}", values.join(",")))
        .unwrap();
    let (ok, conflicts) = (AtomicU64::new(0), AtomicU64::new(0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                // Until a few conflicts were seen (or a minute passed).
                while conflicts.load(Ordering::Relaxed) < 3 && std::time::Instant::now() < deadline
                {
                    // Many rows: DataFusion's DML path, not the single-row fast path.
                    match db.sql("UPDATE c SET v = v + 1 WHERE id < 100") {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            assert!(e.is_conflict(), "{e:?}");
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "no conflict in a minute"
    );
    // Every UPDATE that succeeded added 1 to each of the 100 rows; none was lost and
    // none that failed left anything behind.
    let ok = ok.load(Ordering::Relaxed) as i64;
    assert_eq!(scalar_i64(&db, "SELECT sum(v) FROM c"), 100 * ok);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM c WHERE v <> 0"), 100);
}

#[test]
fn grouping_by_a_dictionary_column_matches_datafusion() {
    // One SQL thread plans a single-step aggregation, two a partial and a final one.
    for threads in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LightningDbConfig {
            columnar_background: false,
            columnar_segment_rows: 10_000,
            columnar_batch_rows: 1000,
            sql_threads: threads,
            ..cfg()
        };
        let db = Database::create(dir.path().join("db"), cfg).unwrap();
        // `s` (text) and `g` (integer) have few distinct values, so segments store them
        // as dictionaries; both have NULLs, and so does `v`.
        db.sql(
            "CREATE TABLE t (id BIGINT NOT NULL, s VARCHAR, g BIGINT, v BIGINT, PRIMARY KEY (id))",
        )
        .unwrap();
        let row = |i: u64, salt: u64| {
            if salt == 0 && i % 50 == 1 {
                // Deleted below, after compaction: only rows the scan drops have it.
                return format!("({i}, 'rare', 1000, -1)");
            }
            let s = match (i + salt) % 6 {
                0 => "NULL".to_string(),
                k => format!("'k{k}'"),
            };
            let g = match (i + salt) % 9 {
                0 => "NULL".to_string(),
                k => (k * 1000).to_string(),
            };
            let v = match i % 11 {
                0 => "NULL".to_string(),
                _ => ((i * 37 + salt) % 5000).to_string(),
            };
            format!("({i}, {s}, {g}, {v})")
        };
        let values: Vec<String> = (0..6000u64).map(|i| row(i, 0)).collect();
        db.sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .unwrap();
        db.compact_columnar("t").unwrap();
        let plan = explain(&db, "SELECT s, sum(v) FROM t GROUP BY s");
        assert!(plan.contains("DictionaryAggregateExec"), "{plan}");
        // Replaced rows (some with values no segment dictionary holds), deleted rows,
        // and new rows, some compacted and some only in the row store.
        for i in (0..6000u64).step_by(7) {
            match i % 3 {
                0 => db.sql(&format!("DELETE FROM t WHERE id = {i}")).unwrap(),
                1 => db
                    .sql(&format!("INSERT OR REPLACE INTO t VALUES {}", row(i, 1)))
                    .unwrap(),
                _ => db
                    .sql(&format!(
                        "INSERT OR REPLACE INTO t VALUES ({i}, 'new{}', {}, {i})",
                        i % 4,
                        i % 5
                    ))
                    .unwrap(),
            };
            if i == 3003 {
                db.compact_columnar("t").unwrap();
            }
        }
        let more: Vec<String> = (6000..6500u64).map(|i| row(i, 2)).collect();
        db.sql(&format!("INSERT INTO t VALUES {}", more.join(", ")))
            .unwrap();
        // Every row of one value deleted: segment dictionaries still hold it, no live
        // row has it, so it must not come out as a group (nor one filtered out). Most
        // of each batch's rows stay live, so batches come whole with a mask: its rows
        // are aggregated as if they were not there, and an argument that fails only
        // on them (`v + 1` is 0 only there) does not fail the query.
        db.sql("DELETE FROM t WHERE s = 'rare'").unwrap();
        db.sql("DELETE FROM t WHERE s = 'k5' AND id < 1000")
            .unwrap();
        let queries = [
            "SELECT s, count(*) FROM t GROUP BY s",
            "SELECT s, sum(1000 / (v + 1)), count(*) FROM t GROUP BY s",
            "SELECT s, g, sum(1000 / (v + 1)) FROM t GROUP BY s, g",
            "SELECT g, count(*) FROM t WHERE v IS NOT NULL GROUP BY g",
            "SELECT s, count(*), sum(v) FROM t WHERE s = 'k1' GROUP BY s",
            "SELECT s, g, count(*) FROM t WHERE s = 'k2' AND g = 3000 GROUP BY s, g",
            "SELECT g, count(*), sum(v) FROM t WHERE v > 4990 GROUP BY g",
            "SELECT s, count(*), count(v), sum(v), min(v), max(v), avg(v) FROM t GROUP BY s",
            "SELECT g, count(*), sum(v), avg(v) FROM t GROUP BY g",
            "SELECT s, sum(v) FROM t WHERE v > 1000 AND g IS NOT NULL GROUP BY s",
            "SELECT s, count(*) AS n FROM t GROUP BY s HAVING count(*) > 10 ORDER BY n DESC, s",
            "SELECT count(*) FROM (SELECT s FROM t GROUP BY s)",
            "SELECT s, sum(v + id), min(v * 2) FROM t GROUP BY s",
            // Not grouped by key (they read the group column, or need more than a
            // groups accumulator); still the same answers.
            "SELECT s, max(s), count(*) FROM t GROUP BY s",
            "SELECT s, count(DISTINCT v) FROM t GROUP BY s",
            "SELECT s, sum(v) FILTER (WHERE v > 10) FROM t GROUP BY s",
            // Grouped by both dictionary columns: by combinations of keys.
            "SELECT s, g, count(*) FROM t GROUP BY s, g",
            "SELECT g, s, count(*), count(v), sum(v), min(v), max(v), avg(v) FROM t GROUP BY g, s",
            "SELECT s, g, sum(v) FROM t WHERE v > 1000 GROUP BY s, g HAVING count(*) > 3",
            "SELECT s, g, max(s), count(*) FROM t GROUP BY s, g",
            // Subexpressions the arguments share are computed by a projection below
            // the aggregation (as in TPC-H q1); one that reads a group column too.
            "SELECT s, g, sum(v * 2), sum(v * 2 + id), avg(v * 2) FROM t WHERE v > 10 GROUP BY s, g",
            "SELECT s, sum(length(s) * v), sum(length(s) * v + 1) FROM t GROUP BY s",
        ];
        same_answers_as_datafusion(&db, &queries, &format!("threads {threads}"));
        let plan = explain(&db, "SELECT g, avg(v) FROM t WHERE v > 10 GROUP BY g");
        assert!(plan.contains("DictionaryAggregateExec"), "{plan}");
        let plan = explain(&db, "SELECT s, count(DISTINCT v) FROM t GROUP BY s");
        assert!(!plan.contains("DictionaryAggregateExec"), "{plan}");
        let plan = explain(&db, "SELECT s, g, avg(v) FROM t GROUP BY s, g");
        assert!(plan.contains("gby=[s, g] by dictionary key"), "{plan}");
        let plan = explain(
            &db,
            "SELECT s, g, sum(v * 2), sum(v * 2 + id) FROM t GROUP BY s, g",
        );
        assert!(plan.contains("__common_expr"), "{plan}");
        assert!(plan.contains("gby=[s, g] by dictionary key"), "{plan}");
        let plan = explain(&db, "SELECT s, id, count(*) FROM t GROUP BY s, id");
        assert!(!plan.contains("DictionaryAggregateExec"), "{plan}");
    }
}

#[test]
fn repeated_queries_reuse_their_optimized_plan_but_not_a_frozen_clock() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let q = "SELECT count(*) FROM t WHERE v > 10";
    let hits = |db: &Database| db.get_metrics().sql_plan_cache_hits;
    for i in 0..5i64 {
        db.sql(&format!("INSERT INTO t VALUES ({i}, {})", 20 + i))
            .unwrap();
        // Planned once, optimized once; every run still sees the newest rows.
        assert_eq!(scalar_i64(&db, q), i + 1);
    }
    let before = hits(&db);
    assert_eq!(scalar_i64(&db, q), 5);
    assert!(hits(&db) > before);
    // A plan that reads the clock is optimized again each time.
    let now = |db: &Database| {
        let b = db.sql("SELECT CAST(now() AS BIGINT) AS t").unwrap();
        b[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    let a = now(&db);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(now(&db) > a);
    // New options apply to remembered statements.
    db.sql("SET datafusion.optimizer.max_passes = 1").unwrap();
    assert_eq!(scalar_i64(&db, q), 5);
}

/// Queries that differ only in the integers they compare columns with share one plan
/// (their shape's), and answer exactly as if each were planned from its own text; a
/// literal whose type differs from the column's takes the ordinary path.
#[test]
fn queries_differing_in_integer_literals_share_a_plan_and_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, c BIGINT, small INT, v DOUBLE, PRIMARY KEY (id))")
        .unwrap();
    let rows: Vec<String> = (0..2000)
        .map(|i| format!("({i}, {}, {}, {}.5)", i % 7, i % 100, i % 13))
        .collect();
    db.sql(&format!("INSERT INTO t VALUES {}", rows.join(",")))
        .unwrap();
    let hits = |db: &Database| db.get_metrics().sql_plan_cache_hits;
    let q = |lo: i64, c: i64| {
        format!(
            "SELECT c, count(*) AS n, sum(id) AS s FROM t WHERE id >= {lo} AND {c} <> c \
             GROUP BY c ORDER BY s DESC, c LIMIT 3"
        )
    };
    let expect = |lo: i64, c: i64| -> Vec<String> {
        let mut g: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
        for i in lo.max(0)..2000 {
            if i % 7 != c {
                let e = g.entry(i % 7).or_default();
                e.0 += 1;
                e.1 += i;
            }
        }
        let mut v: Vec<(i64, i64, i64)> = g.into_iter().map(|(k, (n, s))| (k, n, s)).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        // (`lines` sorts the rows: the top 3 are compared as a set.)
        let mut top: Vec<String> = v
            .into_iter()
            .take(3)
            .map(|(k, n, s)| format!("{k}|{n}|{s}"))
            .collect();
        top.sort();
        top
    };
    let before = hits(&db);
    for (lo, c) in [(0, 3), (1500, 0), (1999, 6), (2500, 1), (-5, 2), (700, 9)] {
        let got = db.sql(&q(lo, c)).unwrap();
        assert_eq!(lines(&got), expect(lo, c), "lo {lo}, c {c}");
    }
    assert!(
        hits(&db) - before >= 4,
        "later literals reuse the first one's shape"
    );
    // A column of another type: the shape is not reused, answers stay right.
    for lo in [10, 50, 99] {
        assert_eq!(
            scalar_i64(&db, &format!("SELECT count(*) FROM t WHERE small >= {lo}")),
            20 * (100 - lo)
        );
    }
    // Zone maps still prune with the bound literal.
    db.compact_columnar("t").unwrap();
    for lo in [1990, 1995] {
        assert_eq!(
            scalar_i64(&db, &format!("SELECT count(*) FROM t WHERE id > {lo}")),
            1999 - lo
        );
    }
}

/// Shapes whose plan is optimized once and bound per query answer exactly as the same
/// query planned on its own (a parenthesized literal is not parameterized), across
/// filters the optimizer folds, contradicts, pushes into scans and joins.
#[test]
fn bound_shape_plans_answer_as_the_queries_own_plans() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, c BIGINT, s VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    db.sql("CREATE TABLE u (c BIGINT NOT NULL, w BIGINT, PRIMARY KEY (c))")
        .unwrap();
    let rows: Vec<String> = (0..3000)
        .map(|i| format!("({i}, {}, 's{}')", i % 11, i % 5))
        .collect();
    db.sql(&format!("INSERT INTO t VALUES {}", rows.join(",")))
        .unwrap();
    db.sql("INSERT INTO u VALUES (0, 1), (3, 30), (7, 70), (10, 100)")
        .unwrap();
    db.compact_columnar("t").unwrap();
    db.sql("INSERT INTO t VALUES (5000, 3, 'new'), (5001, 7, 'new')")
        .unwrap();
    let shapes = [
        "SELECT count(*), sum(c) FROM t WHERE id >= {a} AND id < {b}",
        "SELECT count(*) FROM t WHERE id > {a} OR c = {b}",
        "SELECT c, count(*) FROM t WHERE {a} <= id AND c <> {b} GROUP BY c",
        "SELECT t.c, sum(u.w) FROM t JOIN u ON t.c = u.c WHERE t.id < {a} AND u.w > {b} GROUP BY t.c",
        "SELECT s, max(id) FROM t WHERE c = {a} AND id <> {b} GROUP BY s",
        "SELECT id FROM t WHERE id = {a} OR id = {b}",
        "SELECT count(*) FROM t WHERE id IN (SELECT c FROM u WHERE w >= {a}) AND id < {b}",
    ];
    let pairs = [
        (0, 3000),
        (2990, 10),
        (5, 3),
        (5000, 7),
        (-1, 0),
        (3000, 5001),
    ];
    let hits = db.get_metrics().sql_plan_cache_hits;
    for shape in shapes {
        for (a, b) in pairs {
            let q = shape
                .replace("{a}", &a.to_string())
                .replace("{b}", &b.to_string());
            let own = shape
                .replace("{a}", &format!("({a})"))
                .replace("{b}", &format!("({b})"));
            assert_eq!(
                lines(&db.sql(&q).unwrap()),
                lines(&db.sql(&own).unwrap()),
                "{q}"
            );
        }
    }
    // Six shapes (the subquery's is not parameterized), four reuses each.
    assert!(
        db.get_metrics().sql_plan_cache_hits - hits >= 20,
        "the shapes' plans were reused"
    );
}

#[test]
fn the_primary_key_gives_functional_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE t (a BIGINT NOT NULL, b VARCHAR NOT NULL, v BIGINT, w VARCHAR, PRIMARY KEY (a, b))")
        .unwrap();
    db.sql("INSERT INTO t VALUES (1, 'x', 10, 'p'), (1, 'y', 20, 'q'), (2, 'x', 30, 'r')")
        .unwrap();
    // Columns other than the key may be selected when grouping by the whole key.
    let got = db
        .sql("SELECT a, b, v, w, count(*) AS n FROM t GROUP BY a, b ORDER BY a, b")
        .unwrap();
    assert_eq!(
        lines(&got),
        ["1|x|10|p|1", "1|y|20|q|1", "2|x|30|r|1"].map(String::from)
    );
    // Not by part of it.
    assert!(db.sql("SELECT a, v FROM t GROUP BY a").is_err());
}

#[test]
fn keyless_tables_take_every_statement_and_keep_duplicates() {
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let count = |db: &Database, t: &str| scalar_i64(db, &format!("SELECT count(*) FROM {t}"));
    {
        let db = Database::create(
            &path,
            LightningDbConfig {
                columnar_background: false,
                ..cfg()
            },
        )
        .unwrap();
        db.sql("CREATE TABLE e (a INT, b VARCHAR)").unwrap();
        db.sql("INSERT INTO e VALUES (1, 'x'), (1, 'x'), (2, NULL)")
            .unwrap();
        db.sql("INSERT INTO e VALUES (1, 'x')").unwrap();
        assert_eq!(count(&db, "e"), 4);
        // The hidden row ids are not columns anyone sees.
        let all = db.sql("SELECT * FROM e").unwrap();
        assert_eq!(all[0].num_columns(), 2);
        assert_eq!(db.table_schema("e").unwrap().fields().len(), 2);
        assert!(db.table_primary_key("e").unwrap().is_empty());
        assert!(db.sql("SELECT __lightning_row_id FROM e").is_err());
        let cols = db
            .sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'e'")
            .unwrap();
        assert_eq!(
            cols[0].column(0).as_primitive::<Int64Type>().value(0),
            2,
            "information_schema lists the user's columns"
        );
        db.compact_columnar("e").unwrap();
        db.sql("INSERT INTO e VALUES (3, 'z')").unwrap();
        assert_eq!(count(&db, "e"), 5);
        // UPDATE and DELETE by condition, over segment rows and fresh ones.
        let n = scalar_i64(&db, "UPDATE e SET b = 'y' WHERE a = 1");
        assert_eq!(n, 3);
        assert_eq!(scalar_i64(&db, "SELECT count(*) FROM e WHERE b = 'y'"), 3);
        assert_eq!(count(&db, "e"), 5);
        assert_eq!(scalar_i64(&db, "DELETE FROM e WHERE a = 3 OR b IS NULL"), 2);
        assert_eq!(count(&db, "e"), 3);
        db.compact_columnar("e").unwrap();
        assert_eq!(
            lines(&db.sql("SELECT a, b FROM e").unwrap()),
            ["1|y", "1|y", "1|y"].map(String::from)
        );
        // CREATE TABLE .. AS VALUES / AS SELECT make keyless tables too.
        db.sql("CREATE TABLE v AS VALUES (1, 'a'), (1, 'a'), (2, 'b')")
            .unwrap();
        assert_eq!(count(&db, "v"), 3);
        db.sql("CREATE TABLE s AS SELECT a, b FROM e WHERE a = 1")
            .unwrap();
        assert_eq!(count(&db, "s"), 3);
        db.sql("TRUNCATE TABLE s").unwrap();
        assert_eq!(count(&db, "s"), 0);
        // The table API: an empty key list, appends, scans without the row ids.
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Utf8, true),
        ]));
        db.create_table("api", schema.clone(), &[]).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 7])),
                Arc::new(StringArray::from(vec!["p", "p"])),
            ],
        )
        .unwrap();
        db.insert("api", &batch).unwrap();
        db.insert("api", &batch).unwrap();
        let rows = db.scan_table("api", 100).unwrap();
        assert_eq!(rows[0].num_columns(), 2);
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
        assert!(matches!(
            db.get_row("api", &batch.project(&[0]).unwrap()),
            Err(Error::InvalidArgument(_))
        ));
        // A column may not take the hidden name.
        assert!(db.sql("CREATE TABLE bad (__lightning_row_id INT)").is_err());
    }
    // After a reopen new rows get new ids: nothing already there is overwritten.
    let db = Database::open(&path, cfg()).unwrap();
    db.sql("INSERT INTO e VALUES (9, 'n'), (9, 'n')").unwrap();
    assert_eq!(count(&db, "e"), 5);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM e WHERE b = 'y'"), 3);
    assert_eq!(count(&db, "api"), 4);
}

/// The README's keyless-table lines, as written there.
#[test]
fn readme_keyless_example() -> Result<(), Box<dyn std::error::Error>> {
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("db"), cfg())?;
    let schema = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
    db.sql("CREATE TABLE events (at TIMESTAMP, kind VARCHAR, value DOUBLE)")?; // no PRIMARY KEY
    db.sql("INSERT INTO events VALUES (now(), 'click', 1.0), (now(), 'click', 1.0)")?; // both kept
    db.sql("CREATE TABLE clicks AS SELECT * FROM events WHERE kind = 'click'")?; // AS SELECT / AS VALUES
    db.sql("UPDATE events SET value = 2 WHERE kind = 'click'")?;
    db.sql("TRUNCATE TABLE clicks")?;
    db.create_table("log", schema, &[])?; // table API: no key
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM events WHERE value = 2"),
        2
    );
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM clicks"), 0);
    Ok(())
}

#[test]
fn insert_finds_existing_keys_by_walking_or_looking_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = batched_db(dir.path());
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let values = |ids: &mut dyn Iterator<Item = i64>| {
        ids.map(|i| format!("({i}, {i})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    db.sql(&format!(
        "INSERT INTO t VALUES {}",
        values(&mut (0..10_000).map(|i| i * 2))
    ))
    .unwrap();
    let refused = |db: &Database, q: &str| matches!(db.sql(q), Err(Error::Constraint(_)));
    // One existing key among many new ones (the walk meets it).
    let mut ids = (10_000..12_000).map(|i| i * 2 + 1).chain([4_000]);
    assert!(refused(
        &db,
        &format!("INSERT INTO t VALUES {}", values(&mut ids))
    ));
    // Two keys around 10,000 existing rows: the walk gives up and looks them up.
    assert!(refused(&db, "INSERT INTO t VALUES (-1, 0), (19998, 0)"));
    db.sql("INSERT INTO t VALUES (-1, 0), (30001, 0)").unwrap();
    // Keys repeated within the statement, and new keys between existing ones.
    assert!(refused(&db, "INSERT INTO t VALUES (7, 0), (7, 1)"));
    db.sql(&format!(
        "INSERT INTO t VALUES {}",
        values(&mut (0..10_000).map(|i| i * 2 + 1))
    ))
    .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 20_002);
    assert_eq!(
        scalar_i64(&db, "SELECT sum(v) FROM t"),
        (0..20_000).sum::<i64>()
    );
}

/// `INSERT … SELECT` past `sql_insert_run_bytes` streams its rows into staged runs
/// published by one commit: the same answers as a small INSERT, all or nothing on a
/// violation, invisible to a query until it commits, and durable across reopening.
#[test]
fn large_inserts_stream_in_runs_and_stay_one_atomic_statement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let config = LightningDbConfig {
        sql_insert_run_bytes: 16 << 10, // a run every few hundred rows
        ..cfg()
    };
    let db = Database::create(&path, config.clone()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, g BIGINT, s VARCHAR)")
        .unwrap();
    db.sql("CREATE TABLE e (g BIGINT, s VARCHAR)").unwrap();
    db.sql("INSERT INTO t VALUES (-1, 0, 'before')").unwrap();
    // Keys out of order, so the runs overlap and their merge decides uniqueness.
    let select = "SELECT (value * 7919) % 20000 AS id, value % 10 AS g, \
                  concat('row-', CAST(value AS VARCHAR)) AS s FROM generate_series(0, 19999)";
    db.sql(&format!("INSERT INTO t {select}")).unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 20_001);
    assert_eq!(
        scalar_i64(&db, "SELECT sum(id) FROM t"),
        (0..20_000).sum::<i64>() - 1
    );
    // Keyless: appended with new row ids.
    db.sql("INSERT INTO e SELECT g, s FROM t").unwrap();
    db.sql("INSERT INTO e SELECT g, s FROM t WHERE g < 5")
        .unwrap();
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM e"),
        20_001 + 10_000 + 1
    );

    // A duplicate inside the statement (in different runs), or of an existing row:
    // nothing of the statement is written.
    let dup = "INSERT INTO t SELECT value + 100000 AS id, 1 AS g, 'x' AS s \
               FROM generate_series(0, 9999) UNION ALL SELECT 100005, 2, 'y'";
    let e = db.sql(dup).unwrap_err();
    assert!(matches!(e, Error::Constraint(_)), "{e}");
    let e = db
        .sql("INSERT INTO t SELECT value + 50000 AS id, 1 AS g, 'x' AS s FROM generate_series(0, 9999) UNION ALL SELECT -1, 2, 'y'")
        .unwrap_err();
    assert!(matches!(e, Error::Constraint(_)), "{e}");
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM t WHERE id >= 50000"),
        0
    );
    // OR REPLACE overwrites, also across runs.
    db.sql("INSERT OR REPLACE INTO t SELECT id, g + 100 AS g, s FROM t WHERE id % 2 = 0")
        .unwrap();
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM t WHERE g >= 100"),
        10_000
    );
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 20_001);
    same_answers_as_datafusion(
        &db,
        &[
            "SELECT g, count(*), min(id), max(s) FROM t GROUP BY g ORDER BY g",
            "SELECT count(*), sum(id) FROM t WHERE id BETWEEN 1000 AND 1999",
        ],
        "after large inserts",
    );
    db.close().unwrap();
    drop(db);
    let db = Database::open(&path, config).unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM t"), 20_001);
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM e"), 30_002);
    assert_eq!(
        db.sql("SELECT s FROM t WHERE id = 7919 % 20000").unwrap()[0]
            .column(0)
            .len(),
        1
    );
}

/// Lightning is DataFusion's default schema: DDL and DML through `db.session()` (SQL
/// and the DataFrame API) land in Lightning storage exactly as through `db.sql`, views
/// and external tables live beside the tables, `information_schema` lists them all, and
/// an INSERT is DataFusion's `DataSinkExec` over its input plan.
#[test]
fn the_session_catalog_is_lightning_storage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, cfg()).unwrap();
    let ctx = db.session().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |q: &str| rt.block_on(async { ctx.sql(q).await?.collect().await });
    run("CREATE TABLE s (id BIGINT PRIMARY KEY, v VARCHAR NOT NULL)").unwrap();
    run("INSERT INTO s VALUES (1, 'a'), (2, 'b'), (3, 'c')").unwrap();
    assert!(db.list_tables().unwrap().contains(&"s".to_string()));
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM s"), 3);
    // The key is a real primary key: a duplicate is refused, nothing written.
    let e = run("INSERT INTO s VALUES (4, 'd'), (1, 'again')").unwrap_err();
    assert!(e.to_string().contains("primary key"), "{e}");
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM s"), 3);
    // CREATE TABLE … AS SELECT through the session makes a (keyless) Lightning table.
    run("CREATE TABLE c AS SELECT id * 10 AS x, v FROM s WHERE id > 1").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT sum(x) FROM c"), 50);
    db.sql("INSERT INTO c VALUES (7, 'z')").unwrap();
    // The DataFrame API writes into Lightning too.
    rt.block_on(async {
        let df = ctx.sql("SELECT x + 1 AS x, v FROM c WHERE x = 7").await?;
        df.write_table(
            "c",
            lightning_db::datafusion::dataframe::DataFrameWriteOptions::new(),
        )
        .await
    })
    .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM c"), 4);
    // Views live beside the tables; information_schema lists both.
    run("CREATE VIEW big AS SELECT * FROM c WHERE x > 10").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM big"), 2);
    assert!(!db.list_tables().unwrap().contains(&"big".to_string()));
    let names = db
        .sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")
        .unwrap();
    let names: Vec<String> = lines(&names);
    assert!(
        ["big", "c", "s"]
            .iter()
            .all(|n| names.iter().any(|l| l.contains(n))),
        "{names:?}"
    );
    // INSERT plans are DataFusion's sink over the input plan.
    let plan = explain(&db, "INSERT INTO s SELECT id + 100, v FROM s");
    assert!(
        plan.contains("DataSinkExec") && plan.contains("LightningSink"),
        "{plan}"
    );
    assert!(plan.contains("DataSourceExec"), "{plan}");
    // DROP TABLE through the session drops the Lightning table.
    run("DROP VIEW big").unwrap();
    run("DROP TABLE c").unwrap();
    assert!(!db.list_tables().unwrap().contains(&"c".to_string()));
    assert!(db.sql("SELECT * FROM c").is_err());
    drop(ctx);
    db.close().unwrap();
    drop(db);
    let db = Database::open(&path, cfg()).unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM s"), 3);
    assert!(!db.table_schema("s").unwrap().field(1).is_nullable());
}

/// DDL as DataFusion's own conformance files use it: `SELECT … INTO`, `CREATE OR
/// REPLACE TABLE` (one commit swaps the table; the old rows are reclaimed), a table
/// without columns, dictionary columns stored as their values.
#[test]
fn select_into_create_or_replace_and_columnless_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, cfg()).unwrap();
    db.sql("SELECT * INTO users FROM (VALUES (1, 2), (2, 3))")
        .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT sum(column1) FROM users"), 3);
    let e = db
        .sql("SELECT * INTO users FROM (VALUES (1, 2))")
        .unwrap_err();
    assert!(matches!(e, Error::TableExists(_)), "{e}");
    db.sql("CREATE OR REPLACE TABLE users AS VALUES (5, 6), (7, 8), (9, 10)")
        .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT sum(column1) FROM users"), 21);
    db.sql("CREATE OR REPLACE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR)")
        .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM users"), 0);
    db.sql("INSERT INTO users VALUES (1, 'a')").unwrap();
    assert!(
        db.sql("CREATE OR REPLACE TABLE IF NOT EXISTS users (x INT)")
            .is_err()
    );
    db.sql("CREATE TABLE empty").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM empty"), 0);
    db.sql("CREATE TABLE d AS SELECT arrow_cast(column1, 'Dictionary(Int32, Utf8)') AS s FROM (VALUES ('x'), ('y'), ('x'))")
        .unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM d WHERE s = 'x'"), 2);
    db.close().unwrap();
    drop(db);
    let db = Database::open(&path, cfg()).unwrap();
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM users"), 1);
    assert_eq!(
        db.list_tables()
            .unwrap()
            .iter()
            .filter(|t| *t == "users")
            .count(),
        1
    );
}

/// Time, duration and 64-bit date columns: stored in rows and segments, as keys too,
/// with the same answers as DataFusion over the same rows (fresh and compacted).
#[test]
fn time_duration_and_date64_columns_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = batched_db(dir.path());
    db.sql(
        "CREATE TABLE t AS SELECT value AS id, \
         arrow_cast(value * 1000000000, 'Time64(Nanosecond)') AS t64n, \
         arrow_cast(value * 1000, 'Time64(Microsecond)') AS t64u, \
         arrow_cast(CAST(value % 86400 AS INT), 'Time32(Second)') AS t32s, \
         arrow_cast(CAST(value * 1000 % 86400000 AS INT), 'Time32(Millisecond)') AS t32m, \
         arrow_cast(value % 97, 'Duration(Second)') AS ds, \
         arrow_cast(value * 1000, 'Duration(Millisecond)') AS dms, \
         CASE WHEN value % 10 = 0 THEN NULL ELSE arrow_cast((value % 30) * 86400000, 'Date64') END AS d64 \
         FROM generate_series(0, 20000)",
    )
    .unwrap();
    let queries = [
        "SELECT count(*), min(t64n), max(t64u), min(t32s), max(t32m), min(ds), max(dms) FROM t",
        "SELECT d64, count(*), min(ds), max(t64n) FROM t GROUP BY d64 ORDER BY d64 NULLS FIRST",
        "SELECT id, t32s FROM t WHERE t64n > arrow_cast(19990000000000, 'Time64(Nanosecond)') ORDER BY id",
        "SELECT ds, count(*) FROM t WHERE ds < arrow_cast(5, 'Duration(Second)') GROUP BY ds ORDER BY ds",
        "SELECT id, dms FROM t ORDER BY dms DESC LIMIT 3",
    ];
    same_answers_as_datafusion(&db, &queries, "time types");
    // A time as the primary key.
    db.sql("CREATE TABLE k (at TIME PRIMARY KEY, v INT)")
        .unwrap();
    db.sql("INSERT INTO k VALUES ('10:00:00', 1), ('09:30:00', 2), ('23:59:59.5', 3)")
        .unwrap();
    assert!(db.sql("INSERT INTO k VALUES ('10:00:00', 4)").is_err());
    assert_eq!(scalar_i64(&db, "SELECT v FROM k WHERE at = '09:30:00'"), 2);
    assert_eq!(
        lines(&db.sql("SELECT at FROM k ORDER BY at").unwrap()).join("|"),
        lines(&db.sql("SELECT at FROM (VALUES (TIME '09:30:00'), (TIME '10:00:00'), (TIME '23:59:59.5')) v(at) ORDER BY at").unwrap()).join("|")
    );
    db.close().unwrap();
    drop(db);
    let db = Database::open(path, cfg()).unwrap();
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM t WHERE d64 IS NULL"),
        2001
    );
    assert_eq!(
        scalar_i64(&db, "SELECT v FROM k WHERE at = '23:59:59.5'"),
        3
    );
}

/// Half floats, 256-bit decimals, fixed-size binaries and intervals: stored in rows and
/// segments (as keys too) with the same answers as DataFusion over the same rows.
#[test]
fn fixed_width_columns_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = batched_db(dir.path());
    db.sql(
        "CREATE TABLE t AS SELECT value AS id, \
         arrow_cast(CAST(value % 50 AS DOUBLE) / 4 - 6, 'Float16') AS h, \
         CASE WHEN value % 7 = 0 THEN NULL ELSE CAST(value * 1234567 - 9000000000 AS DECIMAL(50, 2)) END AS big, \
         arrow_cast(decode(lpad(to_hex(value % 300), 8, '0'), 'hex'), 'FixedSizeBinary(4)') AS fb, \
         arrow_cast(concat(CAST(value % 13 AS VARCHAR), ' days ', CAST(value % 5 AS VARCHAR), ' seconds'), 'Interval(MonthDayNano)') AS iv, \
         arrow_cast(concat(CAST(value % 11 AS VARCHAR), ' months'), 'Interval(YearMonth)') AS ym \
         FROM generate_series(0, 20000)",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let queries = [
        "SELECT count(*), min(h), max(h), min(big), max(big), min(fb), max(fb), count(DISTINCT iv) FROM t",
        "SELECT h, count(*), sum(big) FROM t GROUP BY h ORDER BY h",
        "SELECT id, fb FROM t WHERE fb = arrow_cast(decode('0000010a', 'hex'), 'FixedSizeBinary(4)') ORDER BY id",
        "SELECT ym, count(*) FROM t GROUP BY ym ORDER BY count(*), ym",
        "SELECT id, big FROM t WHERE big > 24000000000 ORDER BY big DESC LIMIT 3",
    ];
    same_answers_as_datafusion(&db, &queries, "fixed-width types");
    db.sql("CREATE TABLE k (d DECIMAL(60, 3) PRIMARY KEY, f VARCHAR)")
        .unwrap();
    db.sql("INSERT INTO k VALUES (-2.5, 'a'), (1e40, 'b'), (0, 'c'), (-1e45, 'd')")
        .unwrap();
    assert_eq!(
        lines(&db.sql("SELECT f FROM k ORDER BY d").unwrap()).join(""),
        lines(
            &db.sql("SELECT f FROM (VALUES ('d'), ('a'), ('c'), ('b')) v(f)")
                .unwrap()
        )
        .join("")
    );
    db.close().unwrap();
    drop(db);
    let db = Database::open(path, cfg()).unwrap();
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM t WHERE big IS NULL"),
        2858
    );
    assert_eq!(scalar_i64(&db, "SELECT count(*) FROM k WHERE d < 0"), 2);
}

/// Column `DEFAULT`s: kept in the table definition (across reopening) and written by
/// an INSERT that leaves the column out, evaluated per statement.
#[test]
fn column_defaults_fill_omitted_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, cfg()).unwrap();
    db.sql(
        "CREATE TABLE d (id BIGINT PRIMARY KEY, n INT DEFAULT 100*2+300, \
         s VARCHAR DEFAULT lower('DEFAULT_TEXT'), at TIMESTAMP DEFAULT now(), k INT NOT NULL DEFAULT NULL)",
    )
    .unwrap();
    db.sql("INSERT INTO d (id, k) VALUES (1, 7)").unwrap();
    db.sql("INSERT INTO d (id, n, s, k) VALUES (2, 5, 'x', 8)")
        .unwrap();
    assert!(matches!(
        db.sql("INSERT INTO d (id) VALUES (3)").unwrap_err(),
        Error::Constraint(_)
    ));
    let check = |db: &Database| {
        assert_eq!(
            lines(&db.sql("SELECT id, n, s, at IS NOT NULL AND at <= now() FROM d ORDER BY id").unwrap()),
            lines(&db.sql("SELECT * FROM (VALUES (1, 500, 'default_text', true), (2, 5, 'x', true)) v(id, n, s, ok)").unwrap())
        );
    };
    check(&db);
    db.close().unwrap();
    drop(db);
    let db = Database::open(&path, cfg()).unwrap();
    check(&db);
    db.sql("INSERT INTO d (id, k) VALUES (4, 9)").unwrap();
    assert_eq!(scalar_i64(&db, "SELECT n FROM d WHERE id = 4"), 500);
}
