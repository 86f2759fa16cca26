//! Decimal `+ - *` through SQL (`lightning_query::FastDecimalArithmetic`: unchecked on
//! operands within 64 bits, Arrow's kernels otherwise) answer as DataFusion does over
//! the same rows: in projections, filters and aggregate arguments, with NULLs, mixed
//! scales, values past 64 bits, and an overflow that fails the same way.

use crate::answers::Oracle;
use crate::common;
use lightning_db::{Database, LightningDbConfig};

#[test]
fn decimal_arithmetic_answers_as_datafusion() {
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
    db.sql(
        "CREATE TABLE d (id BIGINT, price DECIMAL(15,2), rate DECIMAL(15,4), \
         big DECIMAL(38,0), flag VARCHAR, PRIMARY KEY (id))",
    )
    .unwrap();
    let values: Vec<String> = (0..2000i64)
        .map(|i| {
            let price = match i % 13 {
                0 => "NULL".to_string(),
                _ => format!("{}.{:02}", i * 37 % 100_000, i % 100),
            };
            // Past 64 bits unscaled in one row of every hundred.
            let big = match i % 100 {
                7 => format!("{}", 10i128.pow(25) + i as i128),
                _ => format!("{}", i * 1000),
            };
            format!(
                "({i}, {price}, 0.{:04}, {big}, '{}')",
                i * 7 % 10_000,
                ["a", "b", "c"][i as usize % 3]
            )
        })
        .collect();
    db.sql(&format!("INSERT INTO d VALUES {}", values.join(",")))
        .unwrap();
    db.compact_columnar("d").unwrap();
    // Fresh rows too.
    db.sql("INSERT INTO d VALUES (5000, 99999.99, 0.9999, -5, 'a'), (5001, NULL, NULL, NULL, 'b')")
        .unwrap();

    let oracle = Oracle::over(&db, &["d"]);
    let same = |q: &str| oracle.same(&db, q);
    same("SELECT id, price * (1 - rate), price * (1 - rate) * (1 + rate), rate - price FROM d");
    same("SELECT id FROM d WHERE price * rate > 1000.5 OR big * price < 0");
    same(
        "SELECT flag, sum(price * (1 - rate)), sum(price * (1 - rate) * (1 + rate)), \
         avg(big + price), count(*) FROM d GROUP BY flag",
    );
    same("SELECT sum(big * rate), sum(big - price) FROM d");
    // An overflow past 128 bits is an error, as in DataFusion (not a wrong answer).
    let q = "SELECT big * big * big FROM d WHERE id = 7";
    assert!(db.sql(q).is_err());
    assert!(oracle.run(q).is_err());
}
