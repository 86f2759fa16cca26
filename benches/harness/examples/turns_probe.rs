//! Profile aid: the peer harness's durable-write turns on both engines, taking turns,
//! with the background work (flushes, bytes the engine wrote besides its log) logged
//! against the turns.
//!
//! usage: cargo run --release -p lightning-bench --no-default-features --example turns_probe -- <lsm dir> <btree dir> [rounds]
//!
//! Both directories hold loaded databases (`load_probe`'s key format); they are written to.

use lightning_bench::threaded;
use lightning_db::{Database, LightningDbConfig, StorageEngine};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KEYS: u64 = 1_000_000;

fn key(i: u64) -> Vec<u8> {
    format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes()
}

/// A small xorshift: the probe needs no statistical quality.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn phase(db: &Database, threads: usize, per: u64, batch: usize, seed: u64) -> (f64, f64) {
    let op = |th: usize, i: u64| -> Result<(), String> {
        // Each call's own keys, from (seed, thread, call).
        let mut s = (seed ^ (th as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D))
            .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            | 1;
        let res = if batch == 1 {
            db.put(&key(next(&mut s) % KEYS), &[b'v'; 100])
        } else {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..batch)
                .map(|_| (key(next(&mut s) % KEYS), vec![b'w'; 100]))
                .collect();
            db.put_batch(&pairs)
        };
        res.map_err(|e| e.to_string())
    };
    let (el, mut lat) = threaded(threads, per, &op).expect("writes");
    (
        (threads as u64 * per * batch as u64) as f64 / el.as_secs_f64() / 1000.0,
        lat.percentile_us(50.0),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let lsm = std::path::PathBuf::from(args.next().expect("lsm dir"));
    let btree = std::path::PathBuf::from(args.next().expect("btree dir"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("rounds"));
    let open = |dir: &std::path::Path, engine| {
        Database::open(
            dir,
            LightningDbConfig {
                cache_size: 256 << 20,
                storage_engine: engine,
                ..Default::default()
            },
        )
        .expect("open")
    };
    let dbs = [
        ("lsm", open(&lsm, StorageEngine::Lsm)),
        ("btree", open(&btree, StorageEngine::BTree)),
    ];
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // The sampler: each engine's flushes and the bytes it wrote outside its log.
        s.spawn(|| {
            let mut last: Vec<_> = dbs.iter().map(|(_, d)| d.get_metrics()).collect();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                for (i, (name, db)) in dbs.iter().enumerate() {
                    let m = db.get_metrics();
                    let l = &last[i];
                    if m.flushes != l.flushes
                        || m.compactions != l.compactions
                        || m.sst_bytes_written != l.sst_bytes_written
                    {
                        println!(
                            "  [{:6.2}s] {name}: flushes +{} ({:.2} s), compactions +{} ({:.2} s), sst +{:.1} MiB",
                            start.elapsed().as_secs_f64(),
                            m.flushes - l.flushes,
                            m.flush_seconds - l.flush_seconds,
                            m.compactions - l.compactions,
                            m.compaction_seconds - l.compaction_seconds,
                            (m.sst_bytes_written - l.sst_bytes_written) as f64 / (1 << 20) as f64
                        );
                        last[i] = m;
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_secs(3));
        for round in 0..rounds {
            for j in 0..dbs.len() {
                let (name, db) = &dbs[(round + j) % dbs.len()];
                let seed = 0x9E37_79B9 + round as u64;
                let t0 = start.elapsed().as_secs_f64();
                let p1 = phase(db, 1, 2000, 1, seed);
                let p8 = phase(db, 8, 500, 1, seed + 1);
                let p64 = phase(db, 64, 200, 1, seed + 2);
                let pb = phase(db, 1, 300, 100, seed + 3);
                println!(
                    "[{t0:6.2}s..{:6.2}s] round {round} {name}: 1w {:.1}K/s p50 {:.0}µs | 8w {:.1}K | 64w {:.1}K | batches {:.0}K",
                    start.elapsed().as_secs_f64(),
                    p1.0,
                    p1.1,
                    p8.0,
                    p64.0,
                    pb.0
                );
                std::thread::sleep(Duration::from_secs(3));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}
