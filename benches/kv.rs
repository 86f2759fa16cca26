//! Key-value microbenchmarks of Lightning DB (no peers here; the side-by-side peer
//! harness is separate): random point reads over 1M cached keys (16 B keys, 100 B
//! values), durable single puts, batch puts of 1000, 100-entry range scans, and durable
//! puts from 64 concurrent writers sharing fsyncs through group commit.
//!
//! `cargo bench --bench kv` (set `LDB_BENCH_KEYS` to change the 1M key count).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lightning_db::{Database, LightningDbConfig};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(i: u64) -> [u8; 16] {
    // 16-byte keys, spread so that sequential ids are not adjacent in key order.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> [u8; 100] {
    let mut v = [0u8; 100];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8);
    }
    v
}

fn n_keys() -> u64 {
    std::env::var("LDB_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn loaded_db(dir: &std::path::Path, n: u64) -> Database {
    let db = Database::create(dir.join("db"), LightningDbConfig::default()).unwrap();
    for start in (0..n).step_by(1000) {
        let batch: Vec<_> = (start..(start + 1000).min(n))
            .map(|i| (key(i).to_vec(), value(i).to_vec()))
            .collect();
        db.put_batch(&batch).unwrap();
    }
    db.compact().unwrap();
    // Warm the block cache.
    for r in db.scan(None, None).unwrap() {
        r.unwrap();
    }
    db
}

fn reads_and_scans(c: &mut Criterion) {
    let n = n_keys();
    let dir = tempfile::tempdir().unwrap();
    let db = loaded_db(dir.path(), n);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("kv");
    g.throughput(Throughput::Elements(1));
    g.bench_function("get_random_cached", |b| {
        b.iter(|| {
            let i = rng.random_range(0..n);
            let v = db.get(&key(i)).unwrap();
            debug_assert!(v.is_some());
            v
        })
    });
    // Two reader threads, as in the peer figures (redb ~1M/s, RocksDB ~430K/s here).
    let db = Arc::new(db);
    g.throughput(Throughput::Elements(2 * 1000));
    g.bench_function("get_random_cached_2_threads", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let hs: Vec<_> = (0..2u64)
                .map(|w| {
                    let db = db.clone();
                    std::thread::spawn(move || {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                        for _ in 0..iters * 1000 {
                            let v = db.get(&key(rng.random_range(0..n))).unwrap();
                            debug_assert!(v.is_some());
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            t.elapsed()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("get_missing", |b| {
        b.iter(|| db.get(&key(n + rng.random_range(0..n))).unwrap())
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("scan_100", |b| {
        b.iter(|| {
            let start = key(rng.random_range(0..n));
            db.scan(Some(&start), None)
                .unwrap()
                .take(100)
                .map(|r| r.unwrap().1.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv");
    g.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap();
    let mut i = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_durable", |b| {
        b.iter(|| {
            i += 1;
            db.put(&key(i), &value(i)).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1000));
    let mut j = 1u64 << 40;
    g.bench_function("put_batch_1000_durable", |b| {
        b.iter_batched(
            || {
                (0..1000)
                    .map(|_| {
                        j += 1;
                        (key(j).to_vec(), value(j).to_vec())
                    })
                    .collect::<Vec<_>>()
            },
            |batch| db.put_batch(&batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let db = Arc::new(db);
    for writers in [8u64, 64] {
        g.throughput(Throughput::Elements(writers * 50));
        let mut round = 0u64;
        g.bench_function(format!("put_durable_{writers}_threads"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let base = (2u64 << 40) + round * 1_000_000;
                    let t = Instant::now();
                    let hs: Vec<_> = (0..writers)
                        .map(|w| {
                            let db = db.clone();
                            std::thread::spawn(move || {
                                for k in 0..50 {
                                    let id = base + w * 1000 + k;
                                    db.put(&key(id), &value(id)).unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().unwrap();
                    }
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reads_and_scans, writes);
criterion_main!(benches);
