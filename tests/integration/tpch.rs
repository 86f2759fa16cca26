//! TPC-H at SF 0.01: all 8 tables loaded through the table API (part compacted into
//! column segments, part still only in the row store), the 22 queries run through
//! `db.sql`, answers checked against DataFusion over the same data in memory.

use lightning_db::arrow::array::RecordBatch;
use lightning_db::arrow::datatypes::SchemaRef;
use lightning_db::datafusion::datasource::MemTable;
use lightning_db::datafusion::prelude::SessionContext;
use lightning_db::{Database, LightningDbConfig};
use std::sync::Arc;

fn tables(sf: f64) -> Vec<(&'static str, Vec<&'static str>, Vec<RecordBatch>)> {
    use tpchgen::generators::*;
    use tpchgen_arrow::*;
    fn conv<I: Iterator<Item = Result<RecordBatch, lightning_db::arrow::error::ArrowError>>>(
        it: I,
    ) -> Vec<RecordBatch> {
        it.map(|b| lightning_db::to_table_types(&b.unwrap()).unwrap())
            .collect()
    }
    vec![
        (
            "region",
            vec!["r_regionkey"],
            conv(RegionArrow::new(RegionGenerator::new(sf, 1, 1))),
        ),
        (
            "nation",
            vec!["n_nationkey"],
            conv(NationArrow::new(NationGenerator::new(sf, 1, 1))),
        ),
        (
            "part",
            vec!["p_partkey"],
            conv(PartArrow::new(PartGenerator::new(sf, 1, 1))),
        ),
        (
            "supplier",
            vec!["s_suppkey"],
            conv(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1))),
        ),
        (
            "partsupp",
            vec!["ps_partkey", "ps_suppkey"],
            conv(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1))),
        ),
        (
            "customer",
            vec!["c_custkey"],
            conv(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1))),
        ),
        (
            "orders",
            vec!["o_orderkey"],
            conv(OrderArrow::new(OrderGenerator::new(sf, 1, 1))),
        ),
        (
            "lineitem",
            vec!["l_orderkey", "l_linenumber"],
            conv(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(4096)),
        ),
    ]
}

/// Rows rendered as text and sorted, so engines may break ties differently.
fn canonical(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        let fmt: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                lightning_db::arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &Default::default(),
                )
                .unwrap()
            })
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                fmt.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

#[test]
fn tpch_22_queries_match_datafusion_in_memory() {
    let sf = if cfg!(feature = "integration_tests") {
        0.05
    } else {
        0.01
    };
    let data = tables(sf);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            columnar_background: false,
            ..Default::default()
        },
    )
    .unwrap();
    let reference = SessionContext::new();
    for (name, pk, batches) in &data {
        let schema: SchemaRef = batches[0].schema();
        db.create_table(name, schema.clone(), pk).unwrap();
        // The first half goes into column segments, the rest stays in the row store.
        let half = batches.len().div_ceil(2);
        for (i, b) in batches.iter().enumerate() {
            db.insert(name, b).unwrap();
            if i + 1 == half {
                db.compact_columnar(name).unwrap();
            }
        }
        let ts = db.table_schema(name).unwrap();
        let mem: Vec<RecordBatch> = batches
            .iter()
            .map(|b| RecordBatch::try_new(ts.clone(), b.columns().to_vec()).unwrap())
            .collect();
        reference
            .register_table(*name, Arc::new(MemTable::try_new(ts, vec![mem]).unwrap()))
            .unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut failures = Vec::new();
    for q in 1..=22 {
        let path = format!(
            "{}/datasets/tpch/queries/q{q}.sql",
            env!("CARGO_MANIFEST_DIR")
        );
        let sql = std::fs::read_to_string(&path).unwrap();
        let ours = db.sql(&sql).unwrap_or_else(|e| panic!("q{q}: {e}"));
        let theirs =
            rt.block_on(async { reference.sql(&sql).await.unwrap().collect().await.unwrap() });
        let (a, b) = (canonical(&ours), canonical(&theirs));
        if a != b {
            failures.push(format!(
                "q{q}: {} rows vs {} rows; first: {:?} vs {:?}",
                a.len(),
                b.len(),
                a.first(),
                b.first()
            ));
        }
        assert!(
            !b.is_empty() || q == 0,
            "q{q} returned no rows in the reference"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
