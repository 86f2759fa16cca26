//! Prepared statements and the single-row fast path: the same answers and errors as
//! the DataFusion path, statements with clauses the fast path does not model take the
//! general path, values that do not convert exactly too, and compiled statements
//! follow catalog changes.

use crate::common;

use lightning_db::arrow::array::*;
use lightning_db::arrow::datatypes::Int64Type;
use lightning_db::arrow::util::pretty::pretty_format_batches;
use lightning_db::datafusion::common::ScalarValue;
use lightning_db::{Database, Error, LightningDbConfig};

fn db(dir: &std::path::Path) -> Database {
    let db = Database::create(
        dir.join("db"),
        LightningDbConfig {
            columnar_background: false,
            ..common::small_config()
        },
    )
    .unwrap();
    db.sql(
        "CREATE TABLE orders (id BIGINT NOT NULL, customer BIGINT, status VARCHAR, amount BIGINT, PRIMARY KEY (id))",
    )
    .unwrap();
    db
}

fn text(b: &[RecordBatch]) -> String {
    pretty_format_batches(b).unwrap().to_string()
}

fn count(b: &[RecordBatch]) -> u64 {
    b[0].column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("a count column")
        .value(0)
}

fn rows(b: &[RecordBatch]) -> usize {
    b.iter().map(|b| b.num_rows()).sum()
}

fn fast(db: &Database) -> u64 {
    db.get_metrics().sql_fast_statements
}

#[test]
fn prepared_single_row_statements_take_the_fast_path_and_agree_with_datafusion() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path());
    let insert = db
        .prepare("INSERT INTO orders VALUES ($1, $2, $3, $4)")
        .unwrap();
    let update = db
        .prepare("UPDATE orders SET amount = amount + $2, status = 'paid' WHERE id = $1")
        .unwrap();
    let delete = db.prepare("DELETE FROM orders WHERE id = $1").unwrap();
    let get = db.prepare("SELECT * FROM orders WHERE id = $1").unwrap();
    let get_cols = db
        .prepare("SELECT amount, status FROM orders WHERE id = $1")
        .unwrap();
    for s in [&insert, &update, &delete, &get, &get_cols] {
        assert!(s.is_fast_path(), "{}", s.sql());
    }
    let before = fast(&db);
    for i in 0..20i64 {
        assert_eq!(
            count(&insert.execute((i, i * 10, "new", 100 + i)).unwrap()),
            1
        );
    }
    assert_eq!(count(&update.execute((3i64, 5i64)).unwrap()), 1);
    assert_eq!(count(&update.execute((999i64, 5i64)).unwrap()), 0);
    assert_eq!(count(&delete.execute((4i64,)).unwrap()), 1);
    assert_eq!(count(&delete.execute((4i64,)).unwrap()), 0);
    assert_eq!(fast(&db) - before, 24);

    // The fast answers are DataFusion's answers (LIMIT keeps the statement off the
    // fast path).
    for id in [0i64, 3, 4, 19, 20] {
        let slow = db
            .sql(&format!("SELECT * FROM orders WHERE id = {id} LIMIT 5"))
            .unwrap();
        assert_eq!(text(&get.execute((id,)).unwrap()), text(&slow), "id {id}");
        let slow = db
            .sql(&format!(
                "SELECT amount, status FROM orders WHERE id = {id} LIMIT 5"
            ))
            .unwrap();
        assert_eq!(
            text(&get_cols.execute((id,)).unwrap()),
            text(&slow),
            "id {id}"
        );
        if let Some(b) = slow.first() {
            assert_eq!(get_cols.execute((id,)).unwrap()[0].schema(), b.schema());
        }
    }
    let r = get.execute((3i64,)).unwrap();
    assert_eq!(
        r[0].column(3).as_primitive::<Int64Type>().value(0),
        108,
        "amount 103 + 5"
    );
    assert_eq!(rows(&get.execute((4i64,)).unwrap()), 0);

    // The same statements as plain text also take the fast path.
    let before = fast(&db);
    assert_eq!(
        count(
            &db.sql("INSERT INTO orders VALUES (100, 1, 'x', -7)")
                .unwrap()
        ),
        1
    );
    assert_eq!(
        rows(&db.sql("SELECT * FROM orders WHERE id = 100").unwrap()),
        1
    );
    assert_eq!(
        rows(&db.sql("select * from ORDERS where ID = 100").unwrap()),
        1
    );
    assert_eq!(
        count(
            &db.sql("UPDATE orders SET amount = 2 * amount WHERE id = 100")
                .unwrap()
        ),
        1
    );
    assert_eq!(
        count(&db.sql("DELETE FROM orders WHERE id = 100").unwrap()),
        1
    );
    assert_eq!(fast(&db) - before, 5);
}

#[test]
fn constraints_and_errors_match_the_general_path() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path());
    let insert = db
        .prepare("INSERT INTO orders VALUES ($1, $2, $3, $4)")
        .unwrap();
    insert.execute((1i64, 1i64, "a", 1i64)).unwrap();
    // A duplicate key is a constraint violation; OR REPLACE upserts.
    assert!(matches!(
        insert.execute((1i64, 2i64, "b", 2i64)),
        Err(Error::Constraint(_))
    ));
    assert!(matches!(
        db.sql("INSERT INTO orders VALUES (1, 2, 'b', 2)"),
        Err(Error::Constraint(_))
    ));
    let upsert = db
        .prepare("INSERT OR REPLACE INTO orders VALUES ($1, $2, $3, $4)")
        .unwrap();
    assert!(upsert.is_fast_path());
    upsert.execute((1i64, 2i64, "b", 2i64)).unwrap();
    let one = db.sql("SELECT customer FROM orders WHERE id = 1").unwrap();
    assert_eq!(one[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    // A NULL key is refused, nothing is written.
    assert!(
        insert
            .execute((ScalarValue::Int64(None), 1i64, "a", 1i64))
            .is_err()
    );
    assert!(
        db.sql("INSERT INTO orders VALUES (NULL, 1, 'a', 1)")
            .is_err()
    );
    // Values that do not convert exactly go to DataFusion, which decides.
    assert!(
        db.sql("INSERT INTO orders VALUES ('not a number', 1, 'a', 1)")
            .is_err()
    );
    assert!(insert.execute(("nope", 1i64, "a", 1i64)).is_err());
    assert_eq!(
        rows(&db.sql("SELECT * FROM orders WHERE id = 1.5").unwrap()),
        0
    );
    assert_eq!(
        rows(&db.sql("SELECT * FROM orders WHERE id = 1.0").unwrap()),
        1
    );
    // Fewer parameters than the statement takes is an error, not a panic.
    assert!(matches!(insert.execute((5i64,)), Err(Error::Sql(_))));
    // Nothing above wrote a second row.
    let n = db.sql("SELECT count(*) FROM orders").unwrap();
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    // A column list, in any order, with the rest NULL.
    db.sql("INSERT INTO orders (amount, id) VALUES (9, 7)")
        .unwrap();
    let r = db
        .sql("SELECT customer, amount FROM orders WHERE id = 7")
        .unwrap();
    assert!(r[0].column(0).is_null(0));
    assert_eq!(r[0].column(1).as_primitive::<Int64Type>().value(0), 9);
}

#[test]
fn clauses_the_fast_path_does_not_model_are_never_ignored() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path());
    for i in 0..5 {
        db.sql(&format!("INSERT INTO orders VALUES ({i}, {i}, 's', {i})"))
            .unwrap();
    }
    let before = fast(&db);
    assert_eq!(
        rows(&db.sql("SELECT * FROM orders WHERE id = 1 LIMIT 0").unwrap()),
        0
    );
    assert_eq!(
        rows(
            &db.sql("SELECT * FROM orders WHERE id = 1 AND amount = 2")
                .unwrap()
        ),
        0
    );
    assert_eq!(
        rows(
            &db.sql("SELECT * FROM orders WHERE id = 1 OR id = 2")
                .unwrap()
        ),
        2
    );
    assert_eq!(
        rows(&db.sql("SELECT id + 1 FROM orders WHERE id = 1").unwrap()),
        1
    );
    assert_eq!(
        count(
            &db.sql("UPDATE orders SET amount = 0 WHERE id = 1 AND amount = 99")
                .unwrap()
        ),
        0
    );
    assert_eq!(
        count(
            &db.sql("DELETE FROM orders WHERE id = 2 AND status = 'zzz'")
                .unwrap()
        ),
        0
    );
    assert_eq!(
        rows(&db.sql("SELECT * FROM orders WHERE id = 2").unwrap()),
        1
    );
    let prepared = db.prepare("SELECT * FROM orders WHERE id >= $1").unwrap();
    assert!(!prepared.is_fast_path());
    assert_eq!(rows(&prepared.execute((3i64,)).unwrap()), 2);
    // Only the last statement above (id = 2) was a fast one.
    assert_eq!(fast(&db) - before, 1);
}

#[test]
fn prepared_statements_follow_catalog_changes_and_run_from_many_threads() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path());
    let insert = db
        .prepare("INSERT INTO orders VALUES ($1, $2, $3, $4)")
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4i64 {
            let insert = &insert;
            s.spawn(move || {
                for i in 0..50 {
                    insert.execute((t * 1000 + i, t, "x", i)).unwrap();
                }
            });
        }
    });
    let n = db.sql("SELECT count(*) FROM orders").unwrap();
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 200);
    // Drop and recreate the table with another layout: the statement follows it.
    db.sql("DROP TABLE orders").unwrap();
    assert!(matches!(
        insert.execute((1i64, 1i64, "a", 1i64)),
        Err(Error::Sql(_) | Error::TableNotFound(_))
    ));
    db.sql("CREATE TABLE orders (id BIGINT NOT NULL, customer BIGINT, status VARCHAR, amount BIGINT, note VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    let insert5 = db
        .prepare("INSERT INTO orders VALUES ($1, $2, $3, $4, $5)")
        .unwrap();
    insert5.execute((1i64, 1i64, "a", 1i64, "n")).unwrap();
    let get = db.prepare("SELECT note FROM orders WHERE id = $1").unwrap();
    assert_eq!(rows(&get.execute((1i64,)).unwrap()), 1);
    // A composite key: every key column pinned is fast, part of it is not.
    db.sql(
        "CREATE TABLE pairs (a BIGINT NOT NULL, b VARCHAR NOT NULL, v DOUBLE, PRIMARY KEY (a, b))",
    )
    .unwrap();
    db.sql("INSERT INTO pairs VALUES (1, 'x', 0.5), (1, 'y', 1.5)")
        .unwrap();
    let both = db
        .prepare("SELECT v FROM pairs WHERE b = $2 AND a = $1")
        .unwrap();
    assert!(both.is_fast_path());
    let r = both.execute((1i64, "y")).unwrap();
    assert_eq!(
        r[0].column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0),
        1.5
    );
    let part = db.prepare("SELECT v FROM pairs WHERE a = $1").unwrap();
    assert!(!part.is_fast_path());
    assert_eq!(rows(&part.execute((1i64,)).unwrap()), 2);
}

/// `sql` remembers the plans of queries by their text: a repeated query still sees
/// every write, functions of the clock are evaluated again, and a catalog change makes
/// it plan afresh.
#[test]
fn remembered_query_plans_stay_fresh() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path());
    let q = "SELECT count(*) AS n, sum(amount) AS s FROM orders WHERE amount > 0";
    let total = |db: &Database| {
        let b = db.sql(q).unwrap();
        b[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    assert_eq!(total(&db), 0);
    let before = db.get_metrics().sql_planned_statements;
    for i in 1..=3i64 {
        db.sql(&format!("INSERT INTO orders VALUES ({i}, 1, 'x', 5)"))
            .unwrap();
        assert_eq!(total(&db), i);
    }
    assert_eq!(db.get_metrics().sql_planned_statements - before, 3);
    let now = |db: &Database| {
        let b = db.sql("SELECT CAST(now() AS VARCHAR) AS t").unwrap();
        b[0].column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(0).to_string())
            .unwrap_or_else(|| format!("{:?}", b[0].column(0)))
    };
    let t1 = now(&db);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_ne!(t1, now(&db));
    // Same text, another table behind the name: planned again.
    db.sql("DROP TABLE orders").unwrap();
    db.sql("CREATE TABLE orders (id BIGINT NOT NULL, amount BIGINT, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO orders VALUES (1, 7), (2, 9)").unwrap();
    let hits = db.get_metrics().sql_plan_cache_hits;
    let b = db.sql(q).unwrap();
    assert_eq!(b[0].column(1).as_primitive::<Int64Type>().value(0), 16);
    assert_eq!(db.get_metrics().sql_plan_cache_hits, hits);
}
