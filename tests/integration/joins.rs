//! Semi and anti joins (`IN`, `EXISTS`, `NOT EXISTS`, `NOT IN` subqueries) moved below
//! the inner joins of the outer query (`lightning_query::PushSemiJoinDown`): the same
//! answers as plain DataFusion over the same rows, and the plan changes only where the
//! rule says it may.

use crate::answers::{Oracle, lines};
use crate::common;
use lightning_db::{Database, LightningDbConfig};

fn logical_plan(db: &Database, q: &str) -> Vec<String> {
    let plan = db.sql(&format!("EXPLAIN {q}")).unwrap();
    let text = lightning_db::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    text.lines()
        .skip_while(|l| !l.contains("logical_plan"))
        .take_while(|l| !l.contains("physical_plan"))
        .map(str::to_string)
        .collect()
}

/// (line of the subquery's semi or anti join, line of the first join) in `plan`.
fn join_lines(plan: &[String]) -> (usize, usize) {
    let line = |f: &dyn Fn(&str) -> bool| {
        plan.iter()
            .position(|l| f(l))
            .unwrap_or_else(|| panic!("no such join in\n{}", plan.join("\n")))
    };
    (
        line(&|l| l.contains(" Join: ") && l.contains("__correlated_sq")),
        line(&|l| l.contains(" Join: ")),
    )
}

/// The joins' tests' config: the column store compacted only when a test says so, two
/// SQL threads, small row-store files.
fn config() -> LightningDbConfig {
    LightningDbConfig {
        columnar_background: false,
        sql_threads: 2,
        ..common::small_config()
    }
}

fn database(dir: &tempfile::TempDir, cfg: LightningDbConfig) -> Database {
    Database::create(dir.path().join("db"), cfg).unwrap()
}

#[test]
fn semi_and_anti_joins_below_inner_joins_answer_as_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(
        &dir,
        LightningDbConfig {
            columnar_segment_rows: 1000,
            ..config()
        },
    );
    db.sql("CREATE TABLE c (ck BIGINT, name VARCHAR, PRIMARY KEY (ck))")
        .unwrap();
    db.sql("CREATE TABLE o (ok BIGINT, ck BIGINT, status VARCHAR, price BIGINT, PRIMARY KEY (ok))")
        .unwrap();
    db.sql("CREATE TABLE l (ok BIGINT, ln BIGINT, qty BIGINT, supp BIGINT, PRIMARY KEY (ok, ln))")
        .unwrap();
    let cs: Vec<String> = (0..50).map(|i| format!("({i}, 'c{i}')")).collect();
    db.sql(&format!("INSERT INTO c VALUES {}", cs.join(", ")))
        .unwrap();
    // Orders with a NULL customer, customers with no order, orders with no lines.
    let os: Vec<String> = (0..600)
        .map(|i| {
            let ck = if i % 37 == 0 {
                "NULL".to_string()
            } else {
                (i % 45).to_string()
            };
            format!(
                "({i}, {ck}, '{}', {})",
                ["F", "O", "P"][i % 3],
                i * 7 % 1000
            )
        })
        .collect();
    db.sql(&format!("INSERT INTO o VALUES {}", os.join(", ")))
        .unwrap();
    let ls: Vec<String> = (0..600)
        .filter(|i| i % 11 != 0)
        .flat_map(|i| {
            (1..=(i % 7 + 1)).map(move |ln| {
                let supp = if (i + ln) % 13 == 0 {
                    "NULL".to_string()
                } else {
                    ((i * ln) % 9).to_string()
                };
                format!("({i}, {ln}, {}, {supp})", (i * 31 + ln * 17) % 50)
            })
        })
        .collect();
    db.sql(&format!("INSERT INTO l VALUES {}", ls.join(", ")))
        .unwrap();
    // Part of each table in column segments, part only in the row store.
    for t in ["c", "o", "l"] {
        db.compact_columnar(t).unwrap();
    }
    db.sql("INSERT INTO l VALUES (5, 9, 49, 1), (7, 9, 48, NULL), (700, 1, 49, 2)")
        .unwrap();
    db.sql("UPDATE o SET price = price + 1 WHERE ok % 5 = 0")
        .unwrap();

    let oracle = Oracle::over(&db, &["c", "o", "l"]);
    let same = |q: &str| oracle.same(&db, q);

    // TPC-H q18's shape: the IN filter moves below both inner joins, onto `o`.
    let q18 = "SELECT c.name, c.ck, o.ok, o.price, sum(l.qty) FROM c, o, l \
               WHERE o.ok IN (SELECT ok FROM l GROUP BY ok HAVING sum(qty) > 120) \
               AND c.ck = o.ck AND o.ok = l.ok GROUP BY c.name, c.ck, o.ok, o.price";
    same(q18);
    let plan = logical_plan(&db, q18);
    let (semi, first) = join_lines(&plan);
    assert!(semi > first, "{}", plan.join("\n"));
    // EXISTS and NOT EXISTS with a condition across both sides.
    for q in [
        "SELECT o.ok, c.name FROM o JOIN c ON o.ck = c.ck WHERE EXISTS \
         (SELECT 1 FROM l WHERE l.ok = o.ok AND l.qty > o.price % 50)",
        "SELECT count(*) FROM c JOIN o ON c.ck = o.ck WHERE NOT EXISTS \
         (SELECT 1 FROM l WHERE l.ok = o.ok)",
        "SELECT c.ck, count(*) FROM c JOIN o ON c.ck = o.ck WHERE o.ok IN \
         (SELECT ok FROM l WHERE qty > 40) GROUP BY c.ck",
    ] {
        same(q);
        let plan = logical_plan(&db, q);
        let (semi, first) = join_lines(&plan);
        assert!(semi > first, "{q}\n{}", plan.join("\n"));
    }
    // Left where they are: the condition reads both inputs of the inner join, the
    // other input filters (it may be the selective step), and NOT IN (null-aware: one
    // NULL in the subquery empties it).
    for q in [
        "SELECT o.ok, c.name, l.ln FROM o JOIN c ON o.ck = c.ck JOIN l ON l.ok = o.ok \
         WHERE NOT EXISTS (SELECT 1 FROM l l2 WHERE l2.ok = o.ok AND l2.supp <> l.supp)",
        "SELECT o.ok, c.name FROM o JOIN c ON o.ck = c.ck WHERE c.name LIKE 'c1%' AND \
         o.ok IN (SELECT ok FROM l WHERE qty > 40)",
        "SELECT o.ok FROM o JOIN c ON o.ck = c.ck WHERE o.ck NOT IN \
         (SELECT supp FROM l WHERE qty > 45)",
        "SELECT o.ok FROM o JOIN c ON o.ck = c.ck WHERE o.ck NOT IN \
         (SELECT supp FROM l WHERE qty > 45 AND supp IS NOT NULL)",
    ] {
        same(q);
        let plan = logical_plan(&db, q);
        let (semi, first) = join_lines(&plan);
        assert_eq!(semi, first, "{q}\n{}", plan.join("\n"));
    }
}

/// Rows not yet in column segments still give the planner bounds: DataFusion sizes
/// joins from the key columns' bounds, and a table being written to always has some.
#[test]
fn fresh_rows_keep_column_bounds_in_the_scan_statistics() {
    use lightning_db::datafusion::common::stats::Precision;
    use lightning_db::datafusion::scalar::ScalarValue;
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir, config());
    db.sql("CREATE TABLE t (id BIGINT, v BIGINT, f DOUBLE, PRIMARY KEY (id))")
        .unwrap();
    let rows: Vec<String> = (0..3000)
        .map(|i| format!("({i}, {}, {i}.5)", i % 100))
        .collect();
    db.sql(&format!("INSERT INTO t VALUES {}", rows.join(", ")))
        .unwrap();
    db.compact_columnar("t").unwrap();
    // Fresh: new rows above every key, an update with a larger value, a NULL.
    db.sql("INSERT INTO t VALUES (5000, -7, NULL), (5001, NULL, 1.0)")
        .unwrap();
    db.sql("UPDATE t SET v = 900 WHERE id = 10").unwrap();
    let stats = crate::sql::scan_statistics(&db, "SELECT id, v, f FROM t");
    assert_eq!(stats.num_rows.get_value(), Some(&3002), "{stats:?}");
    let (id, v, f) = (
        &stats.column_statistics[0],
        &stats.column_statistics[1],
        &stats.column_statistics[2],
    );
    let int = |x| Precision::Inexact(ScalarValue::Int64(Some(x)));
    assert_eq!(id.min_value, int(0));
    assert_eq!(id.max_value, int(5001));
    assert_eq!(v.min_value, int(-7));
    assert_eq!(v.max_value, int(900));
    // Fresh float rows leave float bounds unknown (NaN orders differently in SQL).
    assert_eq!(f.max_value, Precision::Absent);
}

/// A selective join key spread over every batch: zone maps skip no batch, but the scan
/// drops the rows the join's dynamic filter rules out before the join hashes them.
#[test]
fn dynamic_join_filters_drop_probe_rows_in_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(
        &dir,
        LightningDbConfig {
            columnar_batch_rows: 1000,
            ..config()
        },
    );
    db.sql("CREATE TABLE big (id BIGINT, k BIGINT, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    for chunk in 0..4 {
        let rows: Vec<String> = (chunk * 5000..(chunk + 1) * 5000)
            .map(|i| format!("({i}, {}, {})", i % 500, i % 13))
            .collect();
        db.sql(&format!("INSERT INTO big VALUES {}", rows.join(", ")))
            .unwrap();
    }
    db.sql("CREATE TABLE pick (k BIGINT, name VARCHAR, PRIMARY KEY (k))")
        .unwrap();
    db.sql("INSERT INTO pick VALUES (3, 'a'), (250, 'b'), (499, 'c')")
        .unwrap();
    db.compact_columnar("big").unwrap();
    db.compact_columnar("pick").unwrap();
    // Fresh rows of `big` too: they come whole (the filter is not known yet).
    db.sql("INSERT INTO big VALUES (100000, 250, 1), (100001, 7, 1)")
        .unwrap();
    let q = "SELECT pick.name, count(*), sum(big.v) FROM big JOIN pick ON big.k = pick.k \
             GROUP BY pick.name ORDER BY pick.name";
    let expected = |k: i64| {
        let ids = (0..20_000i64).filter(|i| i % 500 == k);
        let (n, s) = ids.fold((0, 0), |(n, s), i| (n + 1, s + i % 13));
        (n + i64::from(k == 250), s + i64::from(k == 250))
    };
    let want: Vec<String> = [("a", 3), ("b", 250), ("c", 499)]
        .iter()
        .map(|(name, k)| {
            let (n, s) = expected(*k);
            format!("{name}|{n}|{s}")
        })
        .collect();
    assert_eq!(lines(&db.sql(q).unwrap()), want);
    let plan = db.sql(&format!("EXPLAIN ANALYZE {q}")).unwrap();
    let text = lightning_db::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    let dropped = filtered_at_run_time(&text).into_iter().fold(0.0, f64::max);
    // 120 of the 20,000 segment rows match; every batch holds some of them.
    assert!(dropped >= 19_000.0, "{text}");
    // A key prefix (stored run-end encoded, a run per order) as the join key, with the
    // scan's own filter too: the same rows as without either.
    db.sql("CREATE TABLE lines (ok BIGINT, ln BIGINT, qty BIGINT, PRIMARY KEY (ok, ln))")
        .unwrap();
    let rows: Vec<String> = (0..20_000)
        .map(|i| format!("({}, {}, {})", i / 4, i % 4, i % 50))
        .collect();
    db.sql(&format!("INSERT INTO lines VALUES {}", rows.join(", ")))
        .unwrap();
    db.compact_columnar("lines").unwrap();
    let q = "SELECT pick.name, count(*), sum(lines.qty) FROM lines JOIN pick ON lines.ok = pick.k \
             WHERE lines.qty > 10 GROUP BY pick.name ORDER BY pick.name";
    let want: Vec<String> = [("a", 3), ("b", 250), ("c", 499)]
        .iter()
        .filter_map(|(name, k)| {
            let qty = (k * 4..k * 4 + 4).map(|i| i % 50).filter(|q| *q > 10);
            let (n, s) = qty.fold((0, 0), |(n, s), q| (n + 1, s + q));
            (n > 0).then(|| format!("{name}|{n}|{s}"))
        })
        .collect();
    assert_eq!(want.len(), 2, "order 250's lines all have qty <= 10");
    assert_eq!(lines(&db.sql(q).unwrap()), want);
}

/// Every scan's `rows_filtered_at_run_time` in an `EXPLAIN ANALYZE` text, in plan
/// order (a count as it shows them: `19.88 K`, `950`).
fn filtered_at_run_time(text: &str) -> Vec<f64> {
    text.split("rows_filtered_at_run_time=")
        .skip(1)
        .filter_map(|r| {
            let mut words = r.split([',', ']']).next()?.split(' ');
            let n: f64 = words.next()?.parse().ok()?;
            Some(n * if words.next() == Some("K") { 1e3 } else { 1.0 })
        })
        .collect()
}

/// TPC-H q21's shape: a dimension table (`supp`, read through a `CoalescePartitionsExec`
/// that starts it when the plan runs) builds the join whose output a filtered `nat`
/// probes. The scan of `supp` waits for `nat`'s join filter and keeps only the
/// suppliers of one nation, so the join behind it emits only their lines.
#[test]
fn scans_wait_for_the_join_filters_above_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(
        &dir,
        LightningDbConfig {
            columnar_batch_rows: 1000,
            ..config()
        },
    );
    db.sql("CREATE TABLE nat (nk BIGINT, name VARCHAR, PRIMARY KEY (nk))")
        .unwrap();
    db.sql("CREATE TABLE supp (sk BIGINT, nk BIGINT, sname VARCHAR, PRIMARY KEY (sk))")
        .unwrap();
    db.sql("CREATE TABLE big (id BIGINT, k BIGINT, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let ns: Vec<String> = (0..25).map(|i| format!("({i}, 'n{i}')")).collect();
    db.sql(&format!("INSERT INTO nat VALUES {}", ns.join(", ")))
        .unwrap();
    let ss: Vec<String> = (0..4000)
        .map(|i| format!("({i}, {}, 's{}')", i % 25, i % 400))
        .collect();
    db.sql(&format!("INSERT INTO supp VALUES {}", ss.join(", ")))
        .unwrap();
    let bs: Vec<String> = (0..20_000)
        .map(|i| format!("({i}, {}, {})", i % 4000, i % 7))
        .collect();
    db.sql(&format!("INSERT INTO big VALUES {}", bs.join(", ")))
        .unwrap();
    for t in ["nat", "supp", "big"] {
        db.compact_columnar(t).unwrap();
    }
    let q = "SELECT supp.sname, count(*) AS n, sum(big.v) FROM supp, big, nat \
             WHERE supp.sk = big.k AND big.v <> 3 AND supp.nk = nat.nk AND nat.name = 'n7' \
             GROUP BY supp.sname ORDER BY n DESC, supp.sname LIMIT 5";
    // The answer, computed here: per supplier name, the lines of nation 7's suppliers.
    let mut per: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for i in (0..20_000i64).filter(|i| i % 7 != 3 && (i % 4000) % 25 == 7) {
        let e = per.entry(format!("s{}", (i % 4000) % 400)).or_default();
        (e.0, e.1) = (e.0 + 1, e.1 + i % 7);
    }
    let mut want: Vec<(String, i64, i64)> = per.into_iter().map(|(k, (n, s))| (k, n, s)).collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut want: Vec<String> = want[..5]
        .iter()
        .map(|(k, n, s)| format!("{k}|{n}|{s}"))
        .collect();
    want.sort();
    assert_eq!(lines(&db.sql(q).unwrap()), want);
    let plan = db.sql(&format!("EXPLAIN ANALYZE {q}")).unwrap();
    let text = lightning_db::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    let scan_of = |t: &str| {
        text.split("LightningScan: table=")
            .skip(1)
            .find(|s| s.starts_with(&format!("{t},")))
            .unwrap_or_else(|| panic!("no scan of {t} in {text}"))
            .to_string()
    };
    let (supp, big) = (scan_of("supp"), scan_of("big"));
    assert!(supp.contains("waits for 1 join filter"), "{text}");
    // 3,840 of the 4,000 suppliers are of other nations; of the 17,143 lines with
    // `v <> 3`, 16,457 are theirs (686 kept).
    assert_eq!(filtered_at_run_time(&supp).first(), Some(&3840.0), "{text}");
    assert!(
        filtered_at_run_time(&big).first() >= Some(&16_000.0),
        "{text}"
    );
}
