//! Profile aid: single-row SQL statements through the fast path, no fsync; prints µs per
//! statement for INSERT, UPDATE and point SELECT on a 16-column table.
//!
//! usage: cargo run --release -p lightning-bench --example sql_probe -- <dir> [rows]

use lightning_db::{Database, LightningDbConfig};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("a directory"));
    let n: i64 = args.next().map_or(100_000, |s| s.parse().expect("rows"));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LightningDbConfig {
        durability: lightning_db::Durability::Buffered,
        ..Default::default()
    };
    let db = Database::create(&dir, cfg).expect("create");
    db.sql(
        "CREATE TABLE orders (o_orderkey BIGINT PRIMARY KEY, o_custkey BIGINT NOT NULL, \
         o_orderstatus VARCHAR NOT NULL, o_totalprice DECIMAL(15,2) NOT NULL, \
         o_orderdate DATE NOT NULL, o_orderpriority VARCHAR NOT NULL, o_clerk VARCHAR NOT NULL, \
         o_shippriority INT NOT NULL, o_comment VARCHAR NOT NULL)",
    )
    .expect("create table");
    let ins = db
        .prepare("INSERT INTO orders VALUES ($1, $2, 'O', 123.45, '1996-01-02', '5-LOW', 'Clerk#000000951', 0, $3)")
        .expect("prepare insert");
    let t = Instant::now();
    for i in 0..n {
        ins.execute((i, i * 7, format!("comment {i}")))
            .expect("insert");
    }
    let el = t.elapsed().as_secs_f64();
    println!("insert: {:.2} µs/row", el * 1e6 / n as f64);
    let up = db
        .prepare("UPDATE orders SET o_comment = $2 WHERE o_orderkey = $1")
        .expect("prepare update");
    let t = Instant::now();
    for i in 0..n {
        up.execute(((i * 7919) % n, format!("updated {i}")))
            .expect("update");
    }
    let el = t.elapsed().as_secs_f64();
    println!("update: {:.2} µs/row", el * 1e6 / n as f64);
    let sel = db
        .prepare("SELECT o_comment FROM orders WHERE o_orderkey = $1")
        .expect("prepare select");
    let t = Instant::now();
    for i in 0..n {
        sel.execute(((i * 104729) % n,)).expect("select");
    }
    let el = t.elapsed().as_secs_f64();
    println!("select: {:.2} µs/row", el * 1e6 / n as f64);
    db.close().expect("close");
}
