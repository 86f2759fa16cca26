//! Profile aid: durable single puts from T writer threads through the facade; prints
//! throughput, commits per WAL sync (the group size), the average sync and p50/p99.
//!
//! usage: cargo run --release -p lightning-bench --no-default-features --example commit_probe -- <dir> [threads] [puts per thread] [nosync]
//!
//! `nosync` (Durability::Buffered): the same pipeline without the fsync, which shows
//! what the hand-offs between threads alone allow on this machine.

use lightning_bench::threaded;
use lightning_db::{Database, LightningDbConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("a directory"));
    let threads: u64 = args.next().map_or(64, |s| s.parse().expect("threads"));
    let per: u64 = args.next().map_or(500, |s| s.parse().expect("puts"));
    let nosync = args.next().as_deref() == Some("nosync");
    // PROBE_REUSE=1: write into the database already there (a loaded one, say).
    let reuse = std::env::var("PROBE_REUSE").is_ok_and(|v| v == "1") && dir.exists();
    if !reuse {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let cfg = LightningDbConfig {
        durability: if nosync {
            lightning_db::Durability::Buffered
        } else {
            lightning_db::Durability::Sync
        },
        // PROBE_ENGINE=btree: the B+Tree engine (the LSM otherwise).
        storage_engine: match std::env::var("PROBE_ENGINE").as_deref() {
            Ok("btree") => lightning_db::StorageEngine::BTree,
            _ => lightning_db::StorageEngine::Lsm,
        },
        ..Default::default()
    };
    let db = if reuse {
        Database::open(&dir, cfg).expect("open")
    } else {
        Database::create(&dir, cfg).expect("create")
    };
    for round in 0..3 {
        let before = db.get_metrics();
        let put = |th: usize, i: u64| -> Result<(), String> {
            let k = format!("{:08x}{:08x}", th, i ^ round);
            db.put(k.as_bytes(), &[b'v'; 100])
                .map_err(|e| e.to_string())
        };
        let (el, mut lat) = threaded(threads as usize, per, &put).expect("puts");
        let el = el.as_secs_f64();
        let m = db.get_metrics();
        let mut pct = |p: f64| lat.percentile_us(p);
        let syncs = m.fsyncs - before.fsyncs;
        println!(
            "{threads} writers: {:.1}K puts/s, {:.1} commits/sync, sync avg {:.0} µs, p50 {:.0} µs, p99 {:.0} µs",
            (threads * per) as f64 / el / 1000.0,
            (threads * per) as f64 / syncs.max(1) as f64,
            m.fsync_avg_us,
            pct(50.0),
            pct(99.0)
        );
    }
}
