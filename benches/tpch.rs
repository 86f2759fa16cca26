//! TPC-H through SQL: the 22 queries through our `TableProvider` (column segments +
//! fresh rows) and, in the same run, through DataFusion over the same tables exported
//! to Parquet (zstd). Prints per-query and total times and the ratio.
//!
//! `LDB_SF=1 cargo bench --bench tpch` (default SF 0.1).

use lightning_db::arrow::array::RecordBatch;
use lightning_db::datafusion::prelude::{ParquetReadOptions, SessionContext};
use lightning_db::{Database, Durability, LightningDbConfig};
use std::time::{Duration, Instant};

fn load(
    db: &Database,
    name: &str,
    pk: &[&str],
    it: impl Iterator<Item = Result<RecordBatch, lightning_db::arrow::error::ArrowError>>,
) {
    let mut created = false;
    for b in it {
        let b = lightning_db::to_table_types(&b.unwrap()).unwrap();
        if !created {
            db.create_table(name, b.schema(), pk).unwrap();
            created = true;
        }
        db.insert(name, &b).unwrap();
    }
    db.compact_columnar(name).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    use tpchgen::generators::*;
    use tpchgen_arrow::*;
    let sf: f64 = std::env::var("LDB_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.1);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            columnar_background: false,
            durability: Durability::Buffered,
            // Segments are the unit of scan parallelism; LDB_SEGMENT_ROWS overrides.
            columnar_segment_rows: std::env::var("LDB_SEGMENT_ROWS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    load(
        &db,
        "region",
        &["r_regionkey"],
        RegionArrow::new(RegionGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "nation",
        &["n_nationkey"],
        NationArrow::new(NationGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "part",
        &["p_partkey"],
        PartArrow::new(PartGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "supplier",
        &["s_suppkey"],
        SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "partsupp",
        &["ps_partkey", "ps_suppkey"],
        PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "customer",
        &["c_custkey"],
        CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "orders",
        &["o_orderkey"],
        OrderArrow::new(OrderGenerator::new(sf, 1, 1)),
    );
    load(
        &db,
        "lineitem",
        &["l_orderkey", "l_linenumber"],
        LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)),
    );
    println!("TPC-H SF {sf}: loaded and compacted in {:.1?}", t.elapsed());

    let pq = dir.path().join("parquet");
    std::fs::create_dir_all(&pq).unwrap();
    let ctx = SessionContext::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for t in [
        "region", "nation", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
    ] {
        let f = pq.join(format!("{t}.parquet"));
        db.export_parquet(t, &f).unwrap();
        rt.block_on(ctx.register_parquet(t, f.to_str().unwrap(), ParquetReadOptions::default()))
            .unwrap();
    }
    let (mut ours_total, mut theirs_total) = (Duration::ZERO, Duration::ZERO);
    println!(
        "{:>4} {:>10} {:>12} {:>7}",
        "q", "ours (ms)", "parquet (ms)", "ratio"
    );
    for q in 1..=22 {
        let sql = std::fs::read_to_string(format!(
            "{}/datasets/tpch/queries/q{q}.sql",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        // Best of 3 for each side.
        let best = |f: &mut dyn FnMut()| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let ours = best(&mut || {
            db.sql(&sql).unwrap();
        });
        let theirs = best(&mut || {
            rt.block_on(async { ctx.sql(&sql).await.unwrap().collect().await.unwrap() });
        });
        ours_total += ours;
        theirs_total += theirs;
        println!(
            "{q:>4} {:>10.1} {:>12.1} {:>7.2}",
            ours.as_secs_f64() * 1e3,
            theirs.as_secs_f64() * 1e3,
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
    println!(
        "total: ours {:.2} s, DataFusion over Parquet {:.2} s, ratio {:.2}",
        ours_total.as_secs_f64(),
        theirs_total.as_secs_f64(),
        ours_total.as_secs_f64() / theirs_total.as_secs_f64()
    );
}
