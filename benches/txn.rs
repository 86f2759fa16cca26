//! Transaction throughput of Lightning DB (no peers here): committed read-modify-write
//! transactions per second with 1, 2, 4 and 8 threads on uncontended keys (durable, group
//! commit), and the conflict rate of 4 threads incrementing one hot key.
//!
//! `cargo bench --bench txn`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lightning_db::{Database, LightningDbConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PER_THREAD: u64 = 200;

fn rmw(db: &Database, key: &[u8]) -> lightning_db::Result<()> {
    let tx = db.begin_transaction()?;
    let v = db
        .get_tx(tx, key)?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    db.put_tx(tx, key, (v + 1).to_string().as_bytes())?;
    db.commit_transaction(tx)
}

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Arc::new(Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap());
    let mut g = c.benchmark_group("txn");
    g.measurement_time(Duration::from_secs(5));
    for threads in [1u64, 2, 4, 8] {
        g.throughput(Throughput::Elements(threads * PER_THREAD));
        g.bench_function(format!("rmw_uncontended_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let hs: Vec<_> = (0..threads)
                        .map(|w| {
                            let db = db.clone();
                            std::thread::spawn(move || {
                                for i in 0..PER_THREAD {
                                    let k = format!("acct:{w}:{}", i % 64);
                                    rmw(&db, k.as_bytes()).unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().unwrap();
                    }
                }
                t.elapsed()
            })
        });
    }
    g.finish();
}

fn hot_key_conflicts(_c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Arc::new(Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap());
    let attempts = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (db, attempts, conflicts) = (db.clone(), attempts.clone(), conflicts.clone());
            std::thread::spawn(move || {
                for _ in 0..500 {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    match rmw(&db, b"hot") {
                        Ok(()) => {}
                        Err(e) if e.is_conflict() => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let (a, c) = (
        attempts.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
    );
    println!(
        "txn/hot_key_4_threads: {a} attempts, {c} conflicts ({:.1}%), {:.0} commits/s",
        100.0 * c as f64 / a as f64,
        (a - c) as f64 / t.elapsed().as_secs_f64()
    );
}

criterion_group!(benches, uncontended, hot_key_conflicts);
criterion_main!(benches);
