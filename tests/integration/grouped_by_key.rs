//! Aggregations grouped by a primary-key prefix run on the scan's key order
//! (`lightning_query::OrderedPartialAggregation`): the partial and final aggregations
//! run in sorted mode, and answer as a plain model of the rows does, fresh rows,
//! updates and deletes since the last compaction included.

use crate::common;
use lightning_db::{Database, LightningDbConfig};
use std::collections::BTreeMap;

fn lines(db: &Database, q: &str) -> Vec<String> {
    crate::answers::lines(&db.sql(q).unwrap())
}

fn explain(db: &Database, q: &str) -> String {
    let plan = db.sql(&format!("EXPLAIN {q}")).unwrap();
    lightning_db::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string()
}

/// The physical plan's aggregation lines.
fn aggregations(db: &Database, q: &str) -> Vec<String> {
    explain(db, q)
        .lines()
        .skip_while(|l| !l.contains("physical_plan"))
        .filter(|l| l.contains("AggregateExec"))
        .map(str::to_string)
        .collect()
}

#[test]
fn aggregations_grouped_by_a_key_prefix_run_sorted_and_answer_as_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            columnar_background: false,
            columnar_segment_rows: 1000,
            sql_threads: 2,
            ..common::small_config()
        },
    )
    .unwrap();
    db.sql("CREATE TABLE t (a BIGINT, b BIGINT, v BIGINT, PRIMARY KEY (a, b))")
        .unwrap();
    // (a, b) -> v; groups of 1 to 7 rows, so that groups cross batch and segment ends.
    let mut model: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    let mut values = Vec::new();
    for a in 0..3000i64 {
        for b in 0..(a * 7919 % 7 + 1) {
            model.insert((a, b), a * 10 + b);
            values.push(format!("({a}, {b}, {})", a * 10 + b));
        }
    }
    for chunk in values.chunks(2000) {
        db.sql(&format!("INSERT INTO t VALUES {}", chunk.join(",")))
            .unwrap();
    }
    db.compact_columnar("t").unwrap();
    assert!(db.columnar_segment_paths("t").unwrap().len() > 4);
    // Fresh rows since: new rows inside existing groups and new groups between and
    // after the segments' keys, updates and deletes.
    let mut fresh = Vec::new();
    for a in (5..3000i64).step_by(97) {
        model.insert((a, 100), 1);
        fresh.push(format!("({a}, 100, 1)"));
    }
    for a in [3000i64, 3001, 5000] {
        model.insert((a, 0), 7);
        fresh.push(format!("({a}, 0, 7)"));
    }
    db.sql(&format!("INSERT INTO t VALUES {}", fresh.join(",")))
        .unwrap();
    db.sql("UPDATE t SET v = -5 WHERE a % 31 = 0 AND b = 0")
        .unwrap();
    for (k, v) in model.iter_mut() {
        if k.0 % 31 == 0 && k.1 == 0 {
            *v = -5;
        }
    }
    db.sql("DELETE FROM t WHERE a % 53 = 1").unwrap();
    model.retain(|k, _| k.0 % 53 != 1);

    // Small batches, so that a group out of order would come back in another batch.
    db.sql("SET datafusion.execution.batch_size = 64").unwrap();
    // By `a`, by `(a, b)` and by `(b, a)`: sorted in both aggregation steps.
    for q in [
        "SELECT a, sum(v), count(*) FROM t GROUP BY a",
        "SELECT a, b, sum(v) FROM t GROUP BY a, b",
        "SELECT b, a, max(v) FROM t GROUP BY b, a",
        "SELECT a, sum(v) FROM t WHERE v % 3 <> 0 GROUP BY a HAVING count(*) > 2",
    ] {
        let aggs = aggregations(&db, q);
        assert_eq!(aggs.len(), 2, "{aggs:?}");
        assert!(
            aggs.iter().all(|l| l.contains("ordering_mode=Sorted")),
            "{q}: {aggs:?}"
        );
    }
    let mut by_a: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (&(a, _), &v) in &model {
        let e = by_a.entry(a).or_default();
        e.0 += v;
        e.1 += 1;
    }
    let mut expect: Vec<String> = by_a
        .iter()
        .map(|(a, (s, c))| format!("{a}|{s}|{c}"))
        .collect();
    expect.sort();
    assert_eq!(
        lines(&db, "SELECT a, sum(v), count(*) FROM t GROUP BY a"),
        expect
    );
    let mut expect: Vec<String> = model
        .iter()
        .map(|((a, b), v)| format!("{a}|{b}|{v}"))
        .collect();
    expect.sort();
    assert_eq!(
        lines(&db, "SELECT a, b, sum(v) FROM t GROUP BY a, b"),
        expect
    );
    let mut by_a: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (&(a, _), &v) in model.iter().filter(|(_, v)| **v % 3 != 0) {
        let e = by_a.entry(a).or_default();
        e.0 += v;
        e.1 += 1;
    }
    let mut expect: Vec<String> = by_a
        .iter()
        .filter(|(_, (_, c))| *c > 2)
        .map(|(a, (s, _))| format!("{a}|{s}"))
        .collect();
    expect.sort();
    assert_eq!(
        lines(
            &db,
            "SELECT a, sum(v) FROM t WHERE v % 3 <> 0 GROUP BY a HAVING count(*) > 2"
        ),
        expect
    );

    // Not a key prefix: hashed as before.
    let aggs = aggregations(&db, "SELECT b, sum(v) FROM t GROUP BY b");
    assert!(
        aggs.iter().all(|l| !l.contains("ordering_mode")),
        "{aggs:?}"
    );
    let mut by_b: BTreeMap<i64, i64> = BTreeMap::new();
    for (&(_, b), &v) in &model {
        *by_b.entry(b).or_default() += v;
    }
    let mut expect: Vec<String> = by_b.iter().map(|(b, s)| format!("{b}|{s}")).collect();
    expect.sort();
    assert_eq!(lines(&db, "SELECT b, sum(v) FROM t GROUP BY b"), expect);
}
