//! The checked-in sample and the generator agree: the sample is what `tpch::load` at
//! SF 0.001 writes, exported by our own Parquet export.

use lightning_datasets::{sample, tpch};
use lightning_db::arrow::array::{Array, Float64Array, Int64Array};
use lightning_db::{Database, LightningDbConfig};

fn config() -> LightningDbConfig {
    LightningDbConfig {
        columnar_background: false,
        ..Default::default()
    }
}

/// (rows, sum of l_extendedprice, sum of l_quantity) of lineitem, and orders' row count.
fn fingerprint(db: &Database) -> (i64, f64, f64, i64) {
    let b = db
        .sql(
            "SELECT count(*) AS n, CAST(sum(l_extendedprice) AS DOUBLE) AS p, \
             CAST(sum(l_quantity) AS DOUBLE) AS q FROM lineitem",
        )
        .unwrap();
    let n = b[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let p = b[0]
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .value(0);
    let q = b[0]
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .value(0);
    let o = db.sql("SELECT count(*) FROM orders").unwrap();
    let o = o[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    (n, p, q, o)
}

#[test]
fn sample_loads_and_matches_a_fresh_generation() {
    let d = tempfile::tempdir().unwrap();
    let from_sample = Database::create(d.path().join("sample"), config()).unwrap();
    let rows = sample::load_tpch(&from_sample).unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|(_, n)| *n > 0), "{rows:?}");

    let generated = Database::create(d.path().join("gen"), config()).unwrap();
    let mut calls = 0;
    let stats = tpch::load(&generated, sample::SCALE_FACTOR, 1000, &mut |_, _| {
        calls += 1
    })
    .unwrap();
    assert!(calls >= 8, "progress is reported per batch");
    let lineitem = stats.rows.iter().find(|(t, _)| t == "lineitem").unwrap().1;
    assert_eq!(lineitem, 6005);

    let a = fingerprint(&from_sample);
    assert_eq!(a, fingerprint(&generated));
    assert_eq!(a.0, 6005);
    // Every table holds the same number of rows either way (partsupp has duplicate keys
    // at this tiny scale; the upsert keeps one row per key in both).
    for (t, _) in tpch::TABLES {
        let q = format!("SELECT count(*) FROM {t}");
        let x = from_sample.sql(&q).unwrap();
        let y = generated.sql(&q).unwrap();
        assert_eq!(
            x[0].column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            y[0].column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            "{t}"
        );
    }
}

#[test]
fn all_22_queries_run_on_the_sample() {
    let d = tempfile::tempdir().unwrap();
    let db = Database::create(d.path().join("db"), config()).unwrap();
    sample::load_tpch(&db).unwrap();
    for n in 1..=22 {
        let q = tpch::query(n).unwrap();
        let batches = db.sql(q).unwrap_or_else(|e| panic!("q{n}: {e}"));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        // q1 groups lineitem by return flag and line status: 4 groups in every TPC-H set.
        if n == 1 {
            assert_eq!(rows, 4);
            assert!(batches[0].column(0).len() <= 4);
        }
    }
    assert!(tpch::query(0).is_none() && tpch::query(23).is_none());
}

#[test]
fn bad_scale_factors_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let db = Database::create(d.path().join("db"), config()).unwrap();
    for sf in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = tpch::load(&db, sf, 1000, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, lightning_db::Error::InvalidArgument(_)), "{e}");
    }
    assert!(db.list_tables().unwrap().iter().all(|t| t == "kv"));
}
