//! Profile aid: load N random keys into one engine through the facade, reopen, then
//! time 100-entry scans and random gets on one thread.
//!
//! usage: cargo run --release -p lightning-bench --no-default-features --example scan_probe -- <lsm|btree> <dir> [keys]

use lightning_db::{Database, LightningDbConfig, StorageEngine};
use std::time::Instant;

/// The next number of a xorshift64 sequence (the probe's reproducible randomness).
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn main() {
    let mut args = std::env::args().skip(1);
    let engine = match args.next().as_deref() {
        Some("btree") => StorageEngine::BTree,
        _ => StorageEngine::Lsm,
    };
    let dir = std::path::PathBuf::from(args.next().expect("a directory"));
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("keys"));
    // PROBE_REUSE=1: read the database a previous run loaded (profile reads alone).
    let reuse = std::env::var("PROBE_REUSE").is_ok_and(|v| v == "1") && dir.exists();
    if !reuse {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let cfg = LightningDbConfig {
        storage_engine: engine,
        ..Default::default()
    };
    // Keys and values as the peer harness makes them: `key{i:013}` loaded in a shuffled
    // order, 100 random (incompressible) bytes each.
    let key = |i: u64| format!("key{i:013}").into_bytes();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || xorshift(&mut seed);
    if !reuse {
        let t = Instant::now();
        let db = Database::create(&dir, cfg.clone()).expect("create");
        let mut order: Vec<u64> = (0..n).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(1000) {
            let pairs: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let v: Vec<u8> = (0..13).flat_map(|_| next().to_le_bytes()).collect();
                    (key(i), v[..100].to_vec())
                })
                .collect();
            db.put_batch(&pairs).expect("put");
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "load: {:.0} keys/s (durable batches of 1000)",
            n as f64 / el
        );
    }
    let db = Database::open(&dir, cfg).expect("open");
    // PROBE_FILL=N: first write N other keys, left in the memtable (reads then search a
    // populated memtable before the tree or tables, as they do while writers run).
    let fill: u64 = std::env::var("PROBE_FILL").map_or(0, |s| s.parse().expect("PROBE_FILL"));
    for c in 0..fill.div_ceil(1000) {
        let pairs: Vec<_> = (c * 1000..((c + 1) * 1000).min(fill))
            .map(|i| (format!("fill{i:012}").into_bytes(), vec![7u8; 100]))
            .collect();
        db.put_batch(&pairs).expect("fill");
    }
    let mut x = 0x1234_5678u64;
    let mut rnd = || xorshift(&mut x);
    for _ in 0..3 {
        let scans: u64 =
            std::env::var("PROBE_SCANS").map_or(200_000, |s| s.parse().expect("PROBE_SCANS"));
        // PROBE_LEN=N: entries per scan (100 by default; 1 shows a scan's fixed cost).
        let len: u64 = std::env::var("PROBE_LEN").map_or(100, |s| s.parse().expect("PROBE_LEN"));
        let t = Instant::now();
        let mut got = 0u64;
        for _ in 0..scans {
            let mut it = db.scan_ref(Some(&key(rnd() % n)), None).expect("scan");
            for _ in 0..len {
                match it.next().expect("entry") {
                    Some((_k, v)) => std::hint::black_box(v.len()),
                    None => break,
                };
                got += 1;
            }
        }
        let el = t.elapsed().as_secs_f64();
        let gets: u64 =
            std::env::var("PROBE_GETS").map_or(1_000_000, |s| s.parse().expect("PROBE_GETS"));
        let t = Instant::now();
        for _ in 0..gets {
            db.get_with(&key(rnd() % n), |v| std::hint::black_box(v.len()))
                .expect("get");
        }
        let g = t.elapsed().as_secs_f64();
        println!(
            "scan: {:.0} scans/s ({:.2} us, {got} entries); get: {:.0}/s; tables per level {:?}",
            scans as f64 / el,
            el * 1e6 / scans as f64,
            gets as f64 / g,
            db.get_metrics().tables_per_level
        );
    }
}
