//! ALTER TABLE ADD / DROP / RENAME COLUMN: through SQL and the table API, on keyed and
//! keyless tables, across a reopen and the column store, refused cleanly when it cannot
//! apply, and with writers running (no committed write lost).

use crate::common;

use lightning_db::arrow::array::*;
use lightning_db::arrow::datatypes::{DataType, Field, Int64Type};
use lightning_db::arrow::util::pretty::pretty_format_batches;
use lightning_db::{Database, Error, LightningDbConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn cfg() -> LightningDbConfig {
    LightningDbConfig {
        columnar_segment_rows: 1000,
        columnar_compaction_interval: std::time::Duration::from_millis(50),
        ..common::small_config()
    }
}

fn show(db: &Database, q: &str) -> String {
    pretty_format_batches(&db.sql(q).unwrap())
        .unwrap()
        .to_string()
}

fn scalar(db: &Database, q: &str) -> i64 {
    let b = db.sql(q).unwrap();
    lightning_db::arrow::compute::cast(b[0].column(0), &DataType::Int64)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn add_drop_rename_columns_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Database::create(&path, cfg()).unwrap();
        db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR, x INT)")
            .unwrap();
        db.sql("INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)")
            .unwrap();
        db.compact_columnar("t").unwrap();
        db.sql("INSERT INTO t VALUES (4, 'd', 40)").unwrap();

        let get = db.prepare("SELECT * FROM t WHERE id = $1").unwrap();
        let put = db
            .prepare("INSERT INTO t (id, name) VALUES ($1, $2)")
            .unwrap();
        assert_eq!(get.execute((1i64,)).unwrap()[0].num_columns(), 3);
        db.sql("ALTER TABLE t ADD COLUMN score DOUBLE").unwrap();
        db.sql("ALTER TABLE t ADD tag VARCHAR DEFAULT 'new'")
            .unwrap();
        // Prepared statements are planned again for the new shape.
        assert_eq!(get.execute((1i64,)).unwrap()[0].num_columns(), 5);
        put.execute((100i64, "p")).unwrap();
        assert_eq!(
            scalar(&db, "SELECT count(*) FROM t WHERE id = 100 AND tag = 'new'"),
            1
        );
        db.sql("DELETE FROM t WHERE id = 100").unwrap();
        assert_eq!(
            lines(&show(&db, "SELECT * FROM t ORDER BY id")),
            vec![
                "+----+------+----+-------+-----+",
                "| id | name | x  | score | tag |",
                "+----+------+----+-------+-----+",
                "| 1  | a    | 10 |       | new |",
                "| 2  | b    | 20 |       | new |",
                "| 3  | c    | 30 |       | new |",
                "| 4  | d    | 40 |       | new |",
                "+----+------+----+-------+-----+",
            ]
        );
        // The DEFAULT stays the column's: an INSERT leaving it out gets it.
        db.sql("INSERT INTO t (id, name, x, score) VALUES (5, 'e', 50, 1.5)")
            .unwrap();
        assert_eq!(scalar(&db, "SELECT count(*) FROM t WHERE tag = 'new'"), 5);

        db.sql("ALTER TABLE t DROP COLUMN x").unwrap();
        db.sql("ALTER TABLE t RENAME COLUMN name TO label").unwrap();
        // Several operations in one statement apply in order.
        db.sql("ALTER TABLE t ADD COLUMN n BIGINT DEFAULT 7, DROP COLUMN score")
            .unwrap();
        let cols: Vec<String> = db
            .table_schema("t")
            .unwrap()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(cols, ["id", "label", "tag", "n"]);
        assert_eq!(
            show(
                &db,
                "SELECT column_name FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position"
            ),
            show(
                &db,
                "SELECT * FROM (VALUES ('id'), ('label'), ('tag'), ('n')) AS v(column_name)"
            )
        );
        // Writes, updates and point queries see the new shape.
        db.sql("UPDATE t SET label = 'z' WHERE id = 2").unwrap();
        db.sql("INSERT INTO t (id, label) VALUES (6, 'f')").unwrap();
        assert_eq!(scalar(&db, "SELECT sum(n) FROM t"), 42);
        let e = db.sql("SELECT x FROM t").unwrap_err();
        assert!(matches!(e, Error::Sql(_)), "{e}");
    }
    // Reopened, and after the column store rebuilt the table.
    let db = Database::open(&path, cfg()).unwrap();
    db.compact_columnar("t").unwrap();
    assert_eq!(
        lines(&show(&db, "SELECT * FROM t ORDER BY id")),
        vec![
            "+----+-------+-----+---+",
            "| id | label | tag | n |",
            "+----+-------+-----+---+",
            "| 1  | a     | new | 7 |",
            "| 2  | z     | new | 7 |",
            "| 3  | c     | new | 7 |",
            "| 4  | d     | new | 7 |",
            "| 5  | e     | new | 7 |",
            "| 6  | f     | new | 7 |",
            "+----+-------+-----+---+",
        ]
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM t WHERE id = 3"), 1);
}

#[test]
fn keyless_tables_keep_their_rows_and_row_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.sql("CREATE TABLE log (at BIGINT, msg VARCHAR)").unwrap();
    db.sql("INSERT INTO log VALUES (1, 'a'), (2, 'b'), (2, 'b')")
        .unwrap();
    db.sql("ALTER TABLE log ADD COLUMN level INT DEFAULT 3")
        .unwrap();
    db.sql("ALTER TABLE log RENAME COLUMN msg TO message")
        .unwrap();
    // New rows get row ids after the copied ones: nothing is overwritten.
    db.sql("INSERT INTO log (at, message) VALUES (3, 'c')")
        .unwrap();
    db.sql("DELETE FROM log WHERE at = 1").unwrap();
    assert_eq!(
        lines(&show(&db, "SELECT * FROM log ORDER BY at")),
        vec![
            "+----+---------+-------+",
            "| at | message | level |",
            "+----+---------+-------+",
            "| 2  | b       | 3     |",
            "| 2  | b       | 3     |",
            "| 3  | c       | 3     |",
            "+----+---------+-------+",
        ]
    );
}

#[test]
fn alterations_that_cannot_apply_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR)")
        .unwrap();
    db.sql("INSERT INTO t VALUES (1, 'a'), (2, NULL)").unwrap();
    let before = show(&db, "SELECT * FROM t ORDER BY id");
    for (q, what) in [
        ("ALTER TABLE t DROP COLUMN id", "primary key"),
        ("ALTER TABLE t ADD COLUMN v INT", "already exists"),
        ("ALTER TABLE t RENAME COLUMN nope TO x", "no column"),
        ("ALTER TABLE t DROP COLUMN nope", "no column"),
        ("ALTER TABLE t RENAME COLUMN v TO id", "already exists"),
    ] {
        let e = db.sql(q).unwrap_err();
        assert!(e.to_string().contains(what), "{q}: {e}");
    }
    // NOT NULL without a DEFAULT: existing rows would have no value.
    let e = db
        .sql("ALTER TABLE t ADD COLUMN w INT NOT NULL")
        .unwrap_err();
    assert!(matches!(e, Error::Constraint(_)), "{e}");
    assert!(matches!(
        db.sql("ALTER TABLE missing ADD COLUMN a INT").unwrap_err(),
        Error::TableNotFound(_)
    ));
    db.sql("ALTER TABLE IF EXISTS missing ADD COLUMN a INT")
        .unwrap();
    db.sql("ALTER TABLE t ADD COLUMN IF NOT EXISTS v INT")
        .unwrap();
    db.sql("ALTER TABLE t DROP COLUMN IF EXISTS nope").unwrap();
    assert_eq!(show(&db, "SELECT * FROM t ORDER BY id"), before);
    assert_eq!(db.list_tables().unwrap().len(), 2, "kv and t only");
    // NOT NULL with a DEFAULT fills the existing rows.
    db.sql("ALTER TABLE t ADD COLUMN w INT NOT NULL DEFAULT 0")
        .unwrap();
    assert_eq!(scalar(&db, "SELECT count(*) FROM t WHERE w = 0"), 2);
    let e = db
        .sql("INSERT INTO t (id, v, w) VALUES (3, 'c', NULL)")
        .unwrap_err();
    assert!(matches!(e, Error::Constraint(_) | Error::Sql(_)), "{e}");
}

#[test]
fn table_api_adds_drops_and_renames() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), cfg()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR DEFAULT 'd')")
        .unwrap();
    db.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')").unwrap();
    db.add_column("t", Field::new("f", DataType::Float64, true))
        .unwrap();
    db.rename_column("t", "id", "key").unwrap();
    db.rename_column("t", "v", "value").unwrap();
    assert_eq!(db.table_primary_key("t").unwrap(), ["key"]);
    db.drop_column("t", "f").unwrap();
    assert!(db.drop_column("t", "key").is_err());
    assert!(
        db.add_column("t", Field::new("g", DataType::Int32, false))
            .is_err(),
        "a NOT NULL column without values for the existing rows"
    );
    // The renamed column's DEFAULT followed it.
    db.sql("INSERT INTO t (key) VALUES (3)").unwrap();
    assert_eq!(
        lines(&show(&db, "SELECT * FROM t ORDER BY key")),
        vec![
            "+-----+-------+",
            "| key | value |",
            "+-----+-------+",
            "| 1   | a     |",
            "| 2   | b     |",
            "| 3   | d     |",
            "+-----+-------+",
        ]
    );
}

/// Writers insert and update while the table is altered again and again: every write
/// that reported success is in the final table, every refused one is a conflict.
#[test]
fn writers_running_during_alter_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("db"), cfg()).unwrap());
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
        .unwrap();
    let rows: Vec<String> = (0..20_000).map(|i| format!("({i}, 0)")).collect();
    db.sql(&format!("INSERT INTO t VALUES {}", rows.join(",")))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(20_000));
    let conflicts = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (db, stop, next, conflicts) =
                (db.clone(), stop.clone(), next.clone(), conflicts.clone());
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let r = if w == 0 {
                        db.sql(&format!("INSERT INTO t (id, v) VALUES ({id}, 1)"))
                    } else {
                        let b = RecordBatch::try_from_iter([
                            (
                                "id",
                                Arc::new(Int64Array::from(vec![id as i64])) as ArrayRef,
                            ),
                            ("v", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                        ])
                        .unwrap();
                        db.insert("t", &b).map(|_| Vec::new())
                    };
                    match r {
                        Ok(_) => ok.push(id),
                        Err(e) if e.is_conflict() => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        // Between two ALTERs a statement may find the columns changed.
                        Err(e @ (Error::Sql(_) | Error::Schema(_))) => {
                            let _ = e;
                        }
                        Err(e) => panic!("write failed: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    for i in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(30));
        match i % 2 {
            0 => db.sql("ALTER TABLE t ADD COLUMN extra INT DEFAULT 5"),
            _ => db.sql("ALTER TABLE t DROP COLUMN extra"),
        }
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let ok: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(!ok.is_empty());
    let total = scalar(&db, "SELECT count(*) FROM t");
    assert_eq!(
        total as usize,
        20_000 + ok.len(),
        "every acknowledged insert is there"
    );
    assert_eq!(scalar(&db, "SELECT sum(v) FROM t") as usize, ok.len());
    for id in ok.iter().step_by(97) {
        assert_eq!(
            scalar(&db, &format!("SELECT count(*) FROM t WHERE id = {id}")),
            1
        );
    }
}

#[test]
fn rename_table_moves_the_name_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Database::create(&path, cfg()).unwrap();
        db.sql("CREATE TABLE a (id BIGINT PRIMARY KEY, v VARCHAR DEFAULT 'd')")
            .unwrap();
        db.sql("CREATE TABLE other (x INT)").unwrap();
        db.sql("INSERT INTO a VALUES (1, 'x'), (2, 'y')").unwrap();
        db.compact_columnar("a").unwrap();
        db.sql("INSERT INTO a (id) VALUES (3)").unwrap();
        db.sql("ALTER TABLE a RENAME TO b").unwrap();
        assert!(matches!(
            db.sql("SELECT * FROM a").unwrap_err(),
            Error::Sql(_) | Error::TableNotFound(_)
        ));
        assert_eq!(scalar(&db, "SELECT count(*) FROM b WHERE v = 'd'"), 1);
        db.sql("INSERT INTO b (id) VALUES (4)").unwrap();
        assert!(matches!(
            db.sql("ALTER TABLE b RENAME TO other").unwrap_err(),
            Error::TableExists(_)
        ));
        assert!(db.rename_table("kv", "kv2").is_err());
        db.rename_table("other", "other2").unwrap();
        let mut names = db.list_tables().unwrap();
        names.sort();
        assert_eq!(names, ["b", "kv", "other2"]);
    }
    let db = Database::open(&path, cfg()).unwrap();
    db.compact_columnar("b").unwrap();
    assert_eq!(
        lines(&show(&db, "SELECT * FROM b ORDER BY id")),
        vec![
            "+----+---+",
            "| id | v |",
            "+----+---+",
            "| 1  | x |",
            "| 2  | y |",
            "| 3  | d |",
            "| 4  | d |",
            "+----+---+",
        ]
    );
    db.sql("CREATE TABLE a (z INT)").unwrap();
    assert_eq!(scalar(&db, "SELECT count(*) FROM a"), 0);
}

/// The figures the in-place test checks at each stage: rows, non-null `name`s, sum of
/// `score` (as thousandths), sum of `y`, rows the zone maps of the fill columns keep or
/// skip, and one point query.
fn in_place_figures(db: &Database) -> Vec<i64> {
    vec![
        scalar(db, "SELECT count(*) FROM t"),
        scalar(db, "SELECT count(name) FROM t"),
        scalar(db, "SELECT CAST(sum(score) * 1000 AS BIGINT) FROM t"),
        scalar(db, "SELECT sum(y) FROM t"),
        scalar(db, "SELECT count(*) FROM t WHERE score > 2"),
        scalar(db, "SELECT count(*) FROM t WHERE score = 1.5"),
        scalar(db, "SELECT count(*) FROM t WHERE name IS NULL"),
        scalar(db, "SELECT count(*) FROM t WHERE name = 'late'"),
        scalar(db, "SELECT y FROM t WHERE id = 5"),
        scalar(db, "SELECT count(*) FROM t WHERE y < 0"),
    ]
}

#[test]
fn alter_is_in_place_and_data_of_every_schema_version_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = || LightningDbConfig {
        columnar_segment_rows: 1000,
        // Rounds run only when the test asks: segment files stay put between checks
        // (no background rounds, which the rows or bytes thresholds could start on a
        // loaded machine).
        columnar_background: false,
        columnar_compaction_interval: std::time::Duration::from_secs(3600),
        ..common::small_config()
    };
    let expected;
    {
        let db = Database::create(&path, cfg()).unwrap();
        db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR, x INT)")
            .unwrap();
        db.sql(
            "INSERT INTO t SELECT value AS id, 'n' || CAST(value AS VARCHAR) AS name, \
             CAST(value AS INT) AS x FROM generate_series(0, 1999)",
        )
        .unwrap();
        db.compact_columnar("t").unwrap();
        // Schema version 0 rows in the row store, one superseding a segment row.
        db.sql("INSERT INTO t VALUES (2000, 'a', 2000), (2001, 'b', 2001)")
            .unwrap();
        db.sql("UPDATE t SET x = -5 WHERE id = 5").unwrap();
        let segments = db.columnar_segment_paths("t").unwrap();
        assert!(segments.len() >= 2, "{segments:?}");

        db.sql("ALTER TABLE t ADD COLUMN score DOUBLE DEFAULT 1.5")
            .unwrap();
        // Version 1 rows.
        db.sql("INSERT INTO t VALUES (3000, 'c', 1, 2.5)").unwrap();
        db.sql("UPDATE t SET x = -6 WHERE id = 6").unwrap();
        db.sql("ALTER TABLE t DROP COLUMN name").unwrap();
        // A new column of the dropped one's name: none of the old values come back.
        db.sql("ALTER TABLE t ADD COLUMN name VARCHAR").unwrap();
        db.sql("ALTER TABLE t RENAME COLUMN x TO y").unwrap();
        // Version 4 rows.
        db.sql("INSERT INTO t (id, y, name) VALUES (4000, 7, 'late')")
            .unwrap();
        assert_eq!(
            db.columnar_segment_paths("t").unwrap(),
            segments,
            "ALTER TABLE rewrote segments"
        );
        assert_eq!(
            show(
                &db,
                "SELECT * FROM t WHERE id IN (5, 3000, 4000) ORDER BY id"
            ),
            [
                "+------+----+-------+------+",
                "| id   | y  | score | name |",
                "+------+----+-------+------+",
                "| 5    | -5 | 1.5   |      |",
                "| 3000 | 1  | 2.5   |      |",
                "| 4000 | 7  | 1.5   | late |",
                "+------+----+-------+------+",
            ]
            .join("\n")
        );
        let sum_x: i64 = (0..2000).sum::<i64>() - 5 - 5 - 6 - 6 + 2000 + 2001 + 1 + 7;
        expected = vec![2004, 1, 2003 * 1500 + 2500, sum_x, 1, 2003, 2003, 1, -5, 2];
        assert_eq!(in_place_figures(&db), expected);
        // The table API reads the rows of every version too.
        let rows: usize = db
            .scan_table("t", 1000)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 2004);
    }
    // Reopened: the definition keeps its versions.
    let db = Database::open(&path, cfg()).unwrap();
    assert_eq!(in_place_figures(&db), expected);
    // A round folds the row-store changes into segments of the current version, beside
    // the old ones; a rebuild leaves only the current version.
    db.compact_columnar("t").unwrap();
    assert_eq!(in_place_figures(&db), expected);
    db.sql("UPDATE t SET score = 3 WHERE id < 10").unwrap();
    db.compact_columnar("t").unwrap();
    let mut after = expected.clone();
    after[2] += 10 * 1500;
    after[4] += 10;
    after[5] -= 10;
    assert_eq!(in_place_figures(&db), after);
    drop(db);
    let db = Database::open(&path, cfg()).unwrap();
    assert_eq!(in_place_figures(&db), after);
}

#[test]
fn keyless_tables_alter_in_place_beside_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Database::create(&path, cfg()).unwrap();
        db.sql("CREATE TABLE log (at BIGINT, msg VARCHAR)").unwrap();
        db.sql("INSERT INTO log SELECT value, 'm' FROM generate_series(1, 1500)")
            .unwrap();
        db.compact_columnar("log").unwrap();
        db.sql("ALTER TABLE log ADD COLUMN level INT DEFAULT 3")
            .unwrap();
        db.sql("INSERT INTO log VALUES (2000, 'x', 9)").unwrap();
        db.sql("ALTER TABLE log DROP COLUMN msg").unwrap();
        db.sql("INSERT INTO log VALUES (3000, 1)").unwrap();
        assert_eq!(scalar(&db, "SELECT count(*) FROM log"), 1502);
        assert_eq!(scalar(&db, "SELECT sum(level) FROM log"), 1500 * 3 + 9 + 1);
        db.compact_columnar("log").unwrap();
        assert_eq!(
            scalar(&db, "SELECT sum(level) FROM log WHERE at > 1499"),
            3 + 9 + 1
        );
    }
    let db = Database::open(&path, cfg()).unwrap();
    assert_eq!(
        show(&db, "SELECT * FROM log WHERE at >= 1500 ORDER BY at"),
        [
            "+------+-------+",
            "| at   | level |",
            "+------+-------+",
            "| 1500 | 3     |",
            "| 2000 | 9     |",
            "| 3000 | 1     |",
            "+------+-------+",
        ]
        .join("\n")
    );
    // New row ids continue after the old ones.
    db.sql("INSERT INTO log VALUES (4000, 4)").unwrap();
    assert_eq!(scalar(&db, "SELECT count(*) FROM log"), 1503);
}
