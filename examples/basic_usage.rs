//! The main job on an embedded default: one database in a local directory doing both of
//! its jobs — durable key-value writes and transactions, and SQL analytics over tables
//! loaded from the bundled TPC-H sample that see every committed write at once — then an
//! `UPDATE`, a Parquet export and a reopen, printed as a short report.
//!
//! `cargo run --release --example basic_usage [-- <dir>]` (default `./mydb`, replaced;
//! the export goes next to it as `<dir>.revenue_by_nation.parquet`).

use lightning_db::arrow::array::{AsArray, RecordBatch};
use lightning_db::arrow::datatypes::{DataType, Int64Type};
use lightning_db::arrow::util::pretty::pretty_format_batches;
use lightning_db::{Database, LightningDbConfig};
use std::path::Path;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The TPC-H tables the report loads from `datasets/sample/tpch-sf0.001/`, with their keys.
const TABLES: [(&str, &[&str]); 4] = [
    ("nation", &["n_nationkey"]),
    ("customer", &["c_custkey"]),
    ("orders", &["o_orderkey"]),
    ("lineitem", &["l_orderkey", "l_linenumber"]),
];

fn main() -> Res<()> {
    let started = Instant::now();
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./mydb".to_string());
    if Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let db = Database::create(&dir, LightningDbConfig::default())?;
    println!("Lightning DB: the main job, in {dir}\n");

    key_value(&db)?;
    load_sample(&db)?;
    analytics(&db)?;
    fresh_and_update(&db)?;
    let export = format!("{dir}.revenue_by_nation.parquet");
    export_parquet(&db, &export)?;

    db.close()?;
    drop(db);
    let db = Database::open(&dir, LightningDbConfig::default())?;
    let keys = db.scan_prefix(b"k")?.count();
    let orders = count(&db, "SELECT count(*) FROM orders")?;
    println!("\n7. Reopened: {keys} bulk keys and {orders} orders are still there.");
    println!("\ndone in {:.2?}", started.elapsed());
    Ok(())
}

/// 1. Key-value writes, a transaction, a bulk load and durable single puts.
fn key_value(db: &Database) -> Res<()> {
    println!("1. Key-value");
    db.put(b"hello", b"world")?;
    assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"world"[..]));
    db.delete(b"hello")?;
    assert!(db.get(b"hello")?.is_none());
    println!("   put, get, delete: ok");

    db.put(b"acct:alice", b"100")?;
    db.put(b"acct:bob", b"50")?;
    let amount = |v: Option<Vec<u8>>| -> u64 {
        String::from_utf8_lossy(&v.unwrap_or_default())
            .parse()
            .unwrap_or(0)
    };
    db.transaction(|tx| {
        let a = amount(tx.get(b"acct:alice")?);
        let b = amount(tx.get(b"acct:bob")?);
        tx.put(b"acct:alice", (a - 30).to_string().as_bytes())?;
        tx.put(b"acct:bob", (b + 30).to_string().as_bytes())?;
        Ok(())
    })?;
    println!(
        "   transaction (transfer 30): alice 100 -> {}, bob 50 -> {}",
        amount(db.get(b"acct:alice")?),
        amount(db.get(b"acct:bob")?)
    );

    let t = Instant::now();
    for chunk in 0..100u32 {
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
            .map(|i| {
                let n = chunk * 1000 + i;
                (format!("k{n:010}").into_bytes(), vec![b'v'; 100])
            })
            .collect();
        db.put_batch(&batch)?;
    }
    let el = t.elapsed();
    println!(
        "   bulk load: 100,000 keys in batches of 1,000: {el:.2?} ({:.0} keys/s)",
        100_000.0 / el.as_secs_f64()
    );
    let t = Instant::now();
    for i in 0..200u32 {
        db.put(format!("durable:{i}").as_bytes(), b"x")?;
    }
    let el = t.elapsed();
    println!(
        "   durable single puts (each synced before it returns): 200 in {el:.2?} ({:.0}/s)",
        200.0 / el.as_secs_f64()
    );
    Ok(())
}

/// 2. Tables loaded from the bundled TPC-H sample (read as Parquet through SQL).
fn load_sample(db: &Database) -> Res<()> {
    println!("\n2. Tables from the bundled TPC-H sample (SF 0.001, Parquet)");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/tpch-sf0.001");
    let t = Instant::now();
    let mut loaded = Vec::new();
    for (name, key) in TABLES {
        let file = sample.join(format!("{name}.parquet"));
        db.sql(&format!(
            "CREATE EXTERNAL TABLE sample_{name} STORED AS PARQUET LOCATION '{}'",
            file.display()
        ))?;
        let batches = db.sql(&format!("SELECT * FROM sample_{name}"))?;
        let first = lightning_db::to_table_types(&batches[0])?;
        db.create_table(name, first.schema(), key)?;
        let mut rows = 0;
        for b in &batches {
            let b = lightning_db::to_table_types(b)?;
            db.insert(name, &b)?;
            rows += b.num_rows();
        }
        // Fold the rows into column segments now (the background compactor would soon).
        db.compact_columnar(name)?;
        loaded.push(format!("{name} {rows}"));
    }
    println!(
        "   {} rows, keyed by their TPC-H primary keys, in {:.2?}",
        loaded.join(", "),
        t.elapsed()
    );
    Ok(())
}

/// 3. An analytic query over the column segments.
fn analytics(db: &Database) -> Res<()> {
    println!("\n3. SQL analytics: pricing summary (the shape of TPC-H Q1)");
    let t = Instant::now();
    let out = db.sql(
        "SELECT l_returnflag AS flag, l_linestatus AS status, count(*) AS lines, \
                sum(l_quantity) AS quantity, \
                CAST(sum(l_extendedprice * (1 - l_discount)) AS DECIMAL(15, 2)) AS revenue \
         FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' \
         GROUP BY l_returnflag, l_linestatus ORDER BY flag, status",
    )?;
    print_indented(&out)?;
    println!("   ({:.2?})", t.elapsed());
    Ok(())
}

/// 4.–5. A row committed a moment ago is in the next query; an `UPDATE` too.
fn fresh_and_update(db: &Database) -> Res<()> {
    println!("\n4. Fresh: a committed row is in the very next query");
    let q = "SELECT count(*) FROM orders WHERE o_custkey = 1";
    let before = count(db, q)?;
    db.sql(
        "INSERT INTO orders VALUES (6000001, 1, 'O', 1234.56, DATE '1998-08-01', \
         '1-URGENT', 'Clerk#000000001', 0, 'inserted by the main job')",
    )?;
    let after = count(db, q)?;
    println!("   orders of customer 1: {before} before the INSERT, {after} right after");
    assert_eq!(after, before + 1);

    println!("\n5. UPDATE, and the aggregate over the same rows moves at once");
    let revenue = |db: &Database| -> Res<String> {
        let b = db.sql(
            "SELECT CAST(sum(l_extendedprice * (1 - l_discount)) AS DECIMAL(15, 2)) \
             FROM lineitem WHERE l_shipmode = 'AIR'",
        )?;
        Ok(lightning_db::arrow::util::display::array_value_to_string(
            b[0].column(0),
            0,
        )?)
    };
    let was = revenue(db)?;
    let t = Instant::now();
    let changed = count(
        db,
        "UPDATE lineitem SET l_discount = 0 WHERE l_shipmode = 'AIR'",
    )?;
    let el = t.elapsed();
    println!(
        "   UPDATE lineitem SET l_discount = 0 WHERE l_shipmode = 'AIR': {changed} rows in {el:.2?}"
    );
    println!("   AIR revenue: {was} before, {} after", revenue(db)?);
    Ok(())
}

/// 6. A query's result written as zstd Parquet.
fn export_parquet(db: &Database, path: &str) -> Res<()> {
    println!("\n6. Parquet export");
    let rows = db.export_parquet(
        "SELECT n_name AS nation, count(DISTINCT o_orderkey) AS orders, \
                sum(l_extendedprice * (1 - l_discount)) AS revenue \
         FROM lineitem JOIN orders ON l_orderkey = o_orderkey \
           JOIN customer ON o_custkey = c_custkey \
           JOIN nation ON c_nationkey = n_nationkey \
         GROUP BY n_name ORDER BY revenue DESC",
        path,
    )?;
    let bytes = std::fs::metadata(path)?.len();
    println!("   revenue by nation: {rows} rows -> {path} ({bytes} bytes)");
    Ok(())
}

/// The first value of the first column of `q`'s result, as an integer.
fn count(db: &Database, q: &str) -> Res<i64> {
    let b = db.sql(q)?;
    let c = lightning_db::arrow::compute::cast(b[0].column(0), &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().value(0))
}

fn print_indented(batches: &[RecordBatch]) -> Res<()> {
    let batches: Vec<RecordBatch> = batches
        .iter()
        .filter(|b| b.num_rows() > 0 || b.num_columns() == 0)
        .cloned()
        .collect();
    for line in pretty_format_batches(&batches)?.to_string().lines() {
        println!("   {line}");
    }
    Ok(())
}
