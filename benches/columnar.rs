//! Column-store compaction of TPC-H `lineitem` (tpchgen-arrow, SF 0.1 by default; set
//! `LDB_SF`): rows/s of one compaction round (wall clock and per CPU-second) and the
//! bytes of the resulting segments against the same rows written as Parquet with zstd
//! (parquet crate defaults), the peer format for analytics.
//!
//! `cargo bench --bench columnar`

use lightning_db::arrow::array::RecordBatch;
use lightning_db::{Database, Durability, LightningDbConfig};
use std::time::Instant;
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::LineItemArrow;

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    let sf: f64 = std::env::var("LDB_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.1);
    let batches: Vec<RecordBatch> = LineItemArrow::new(LineItemGenerator::new(sf, 1, 1))
        .with_batch_size(65536)
        .map(|b| lightning_db::to_table_types(&b.unwrap()).unwrap())
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let schema = batches[0].schema();

    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            columnar_background: false,
            durability: Durability::Buffered,
            ..Default::default()
        },
    )
    .unwrap();
    db.create_table("lineitem", schema.clone(), &["l_orderkey", "l_linenumber"])
        .unwrap();
    let t = Instant::now();
    for b in &batches {
        db.insert("lineitem", b).unwrap();
    }
    let load = t.elapsed();

    let (t, c) = (Instant::now(), cpu_seconds());
    let stats = db.compact_columnar("lineitem").unwrap();
    let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    assert_eq!(stats.rows_written as usize, rows);
    let seg_bytes = db.columnar_bytes("lineitem").unwrap();

    let (t, c) = (Instant::now(), cpu_seconds());
    db.rebuild_columnar("lineitem").unwrap();
    let (rwall, rcpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);

    let mut pq = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut pq, schema, Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();

    println!("lineitem SF {sf}: {rows} rows, loaded through db.insert in {load:.2?}");
    println!(
        "compaction round: {wall:.2} s wall, {cpu:.2} s CPU -> {:.0} rows/s, {:.0} rows per CPU-second",
        rows as f64 / wall,
        rows as f64 / cpu
    );
    println!(
        "rebuild from row store: {rwall:.2} s wall, {rcpu:.2} s CPU -> {:.0} rows per CPU-second",
        rows as f64 / rcpu
    );
    println!(
        "segments: {} bytes in {} segment(s); Parquet (zstd): {} bytes; ratio {:.2}x",
        seg_bytes,
        db.columnar_segment_paths("lineitem").unwrap().len(),
        pq.len(),
        seg_bytes as f64 / pq.len() as f64
    );
}
