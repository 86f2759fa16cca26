//! Transactions: the README's API verbatim, the bank invariant under concurrency and
//! SIGKILL, one test per isolation anomaly, snapshot stability under compaction, and
//! resource limits. Each runs on both storage engines (LSM and B+Tree).

mod common;

use lightning_db::{ConsistencyLevel, Database, Error, LightningDbConfig, StorageEngine};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Both storage engines: every test here runs on each.
const ENGINES: [StorageEngine; 2] = [StorageEngine::Lsm, StorageEngine::BTree];

/// The small test configuration on `engine`.
fn config_on(engine: StorageEngine) -> LightningDbConfig {
    LightningDbConfig {
        storage_engine: engine,
        ..common::small_config()
    }
}

// ---------------------------------------------------------------- the README example

// The product README's `transfer_funds`, verbatim except for one `.as_deref()` per
// read: as written there (`get_tx(..)?.and_then(|v| std::str::from_utf8(&v).ok())`) it
// cannot compile against any API that returns owned values (E0515: the closure returns
// a `&str` borrowed from its own argument), so every read adds `.as_deref()` to borrow
// the value for the rest of the statement instead.
#[rustfmt::skip]
#[allow(clippy::needless_borrow)] // kept as the README writes it
fn transfer_funds(db: &Database, from: &[u8], to: &[u8], amount: u64) -> Result<(), Box<dyn std::error::Error>> {
    let tx = db.begin_transaction()?;
    
    // Read current balances
    let from_balance = db.get_tx(tx, from)?.as_deref()
        .and_then(|v| std::str::from_utf8(&v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
        
    let to_balance = db.get_tx(tx, to)?.as_deref()
        .and_then(|v| std::str::from_utf8(&v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    
    // Check sufficient funds
    if from_balance < amount {
        db.abort_transaction(tx)?;
        return Err("Insufficient funds".into());
    }
    
    // Update balances
    db.put_tx(tx, from, (from_balance - amount).to_string().as_bytes())?;
    db.put_tx(tx, to, (to_balance + amount).to_string().as_bytes())?;
    
    // Commit transaction
    db.commit_transaction(tx)?;
    Ok(())
}

const ACCOUNTS: u64 = 20;
const INITIAL: u64 = 1000;

fn account(i: u64) -> Vec<u8> {
    format!("acct:{i:02}").into_bytes()
}

fn seed_accounts(db: &Database) {
    let batch: Vec<_> = (0..ACCOUNTS)
        .map(|i| (account(i), INITIAL.to_string().into_bytes()))
        .collect();
    db.put_batch(&batch).unwrap();
}

/// Sum of all balances read in one snapshot.
fn snapshot_sum(db: &Database) -> u64 {
    let tx = db.begin_transaction().unwrap();
    let mut sum = 0;
    for i in 0..ACCOUNTS {
        let v = db.get_tx(tx, &account(i)).unwrap().unwrap();
        sum += std::str::from_utf8(&v).unwrap().parse::<u64>().unwrap();
    }
    // The same total through a snapshot scan.
    let scanned: u64 = db
        .scan_tx(tx, Some(b"acct:"), Some(b"acct:~"))
        .unwrap()
        .map(|r| {
            std::str::from_utf8(&r.unwrap().1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        scanned, sum,
        "get_tx and scan_tx disagree within one snapshot"
    );
    db.abort_transaction(tx).unwrap();
    sum
}

fn run_transfers(db: &Database, seed: u64, stop: &AtomicBool, done: &AtomicU64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = x % ACCOUNTS;
        let to = (x >> 8) % ACCOUNTS;
        if from == to {
            continue;
        }
        if transfer_funds(db, &account(from), &account(to), (x >> 16) % 300).is_ok() {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn bank_transfers_keep_the_total_under_concurrency() {
    for engine in ENGINES {
        bank_transfers_on(engine);
    }
}

fn bank_transfers_on(engine: StorageEngine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("db"), config_on(engine)).unwrap());
    seed_accounts(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || run_transfers(&db, t + 1, &stop, &done))
        })
        .collect();
    let mut sums = 0;
    while done.load(Ordering::Relaxed) < 1500 {
        assert_eq!(snapshot_sum(&db), ACCOUNTS * INITIAL);
        sums += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(sums > 10);
    assert_eq!(snapshot_sum(&db), ACCOUNTS * INITIAL);
}

const BANK_ENV: &str = "LDB_BANK_CHILD";

#[test]
fn bank_child() {
    let Ok(var) = std::env::var(BANK_ENV) else {
        return;
    };
    let (engine, dir) = var.split_once('|').unwrap();
    let engine = ENGINES[engine.parse::<usize>().unwrap()];
    let db = Arc::new(Database::open(dir, config_on(engine)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    println!("READY");
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || run_transfers(&db, t + 7, &stop, &done))
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn bank_total_survives_sigkill() {
    if std::env::var(BANK_ENV).is_ok() {
        return;
    }
    for e in 0..ENGINES.len() {
        bank_sigkill_on(e);
    }
}

fn bank_sigkill_on(e: usize) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    {
        let db = Database::create(&p, config_on(ENGINES[e])).unwrap();
        seed_accounts(&db);
    }
    let cycles = if cfg!(feature = "integration_tests") {
        15
    } else {
        5
    };
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["bank_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(BANK_ENV, format!("{e}|{}", p.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        for l in BufReader::new(out).lines() {
            if l.unwrap().contains("READY") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200 + 97 * cycle));
        child.kill().unwrap();
        child.wait().unwrap();
        let db = Database::open(&p, config_on(ENGINES[e])).unwrap();
        assert_eq!(
            snapshot_sum(&db),
            ACCOUNTS * INITIAL,
            "{:?} cycle {cycle}",
            ENGINES[e]
        );
    }
}

// ---------------------------------------------------------------- anomalies

/// A fresh database on each engine.
fn dbs() -> Vec<(tempfile::TempDir, Database)> {
    ENGINES
        .iter()
        .map(|&e| {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::create(dir.path().join("db"), config_on(e)).unwrap();
            (dir, db)
        })
        .collect()
}

#[test]
fn anomaly_dirty_read() {
    for (_d, db) in dbs() {
        db.put(b"k", b"old").unwrap();
        let t1 = db.begin_transaction().unwrap();
        db.put_tx(t1, b"k", b"uncommitted").unwrap();
        let t2 = db.begin_transaction().unwrap();
        assert_eq!(db.get_tx(t2, b"k").unwrap().as_deref(), Some(&b"old"[..]));
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
        db.abort_transaction(t1).unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    }
}

#[test]
fn anomaly_dirty_write() {
    for (_d, db) in dbs() {
        let t1 = db.begin_transaction().unwrap();
        let t2 = db.begin_transaction().unwrap();
        db.put_tx(t1, b"k", b"t1").unwrap();
        db.put_tx(t2, b"k", b"t2").unwrap();
        db.commit_transaction(t1).unwrap();
        assert!(matches!(
            db.commit_transaction(t2),
            Err(Error::TransactionConflict(_))
        ));
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"t1"[..]));
    }
}

#[test]
fn anomaly_fuzzy_read() {
    for (_d, db) in dbs() {
        db.put(b"k", b"v1").unwrap();
        let t1 = db.begin_transaction().unwrap();
        assert_eq!(db.get_tx(t1, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
        db.put(b"k", b"v2").unwrap();
        db.delete(b"k").unwrap();
        assert_eq!(db.get_tx(t1, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    }
}

#[test]
fn anomaly_lost_update() {
    for (_d, db) in dbs() {
        db.put(b"counter", b"0").unwrap();
        let t1 = db.begin_transaction().unwrap();
        let t2 = db.begin_transaction().unwrap();
        for t in [t1, t2] {
            let v: u64 = String::from_utf8(db.get_tx(t, b"counter").unwrap().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            db.put_tx(t, b"counter", (v + 1).to_string().as_bytes())
                .unwrap();
        }
        db.commit_transaction(t1).unwrap();
        assert!(db.commit_transaction(t2).unwrap_err().is_conflict());
        assert_eq!(db.get(b"counter").unwrap().as_deref(), Some(&b"1"[..]));
        // With the retrying closure, concurrent increments are never lost.
        let db = Arc::new(db);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        // `transaction` retries a bounded number of times; a caller that must
                        // not give up loops on a conflict that outlasted them.
                        loop {
                            let r = db.transaction(|tx| {
                                let v: u64 = String::from_utf8(tx.get(b"counter")?.unwrap())
                                    .unwrap()
                                    .parse()
                                    .unwrap();
                                tx.put(b"counter", (v + 1).to_string().as_bytes())
                            });
                            match r {
                                Ok(()) => break,
                                Err(e) if e.is_conflict() => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(db.get(b"counter").unwrap().as_deref(), Some(&b"201"[..]));
    }
}

#[test]
fn anomaly_phantom_read() {
    for (_d, db) in dbs() {
        db.put(b"item:1", b"a").unwrap();
        let t1 = db.begin_transaction().unwrap();
        assert_eq!(
            db.scan_tx(t1, Some(b"item:"), Some(b"item:~"))
                .unwrap()
                .count(),
            1
        );
        db.put(b"item:2", b"b").unwrap();
        assert_eq!(
            db.scan_tx(t1, Some(b"item:"), Some(b"item:~"))
                .unwrap()
                .count(),
            1
        );
        // Own writes appear in the transaction's scans, in order.
        db.put_tx(t1, b"item:0", b"mine").unwrap();
        db.delete_tx(t1, b"item:1").unwrap();
        let keys: Vec<_> = db
            .scan_tx(t1, Some(b"item:"), Some(b"item:~"))
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(keys, vec![b"item:0".to_vec()]);
        // Serializable refuses a commit whose scanned range gained a row.
        let t2 = db
            .begin_transaction_with(ConsistencyLevel::Serializable)
            .unwrap();
        assert_eq!(
            db.scan_tx(t2, Some(b"item:"), Some(b"item:~"))
                .unwrap()
                .count(),
            2
        );
        db.put(b"item:3", b"c").unwrap();
        db.put_tx(t2, b"summary", b"2 items").unwrap();
        assert!(db.commit_transaction(t2).unwrap_err().is_conflict());
    }
}

#[test]
fn anomaly_read_skew() {
    for (_d, db) in dbs() {
        db.put_batch(&[
            (b"x".to_vec(), b"50".to_vec()),
            (b"y".to_vec(), b"50".to_vec()),
        ])
        .unwrap();
        let t1 = db.begin_transaction().unwrap();
        let x = db.get_tx(t1, b"x").unwrap().unwrap();
        // Another transaction moves 25 from x to y and commits.
        db.transaction(|tx| {
            tx.put(b"x", b"25")?;
            tx.put(b"y", b"75")
        })
        .unwrap();
        let y = db.get_tx(t1, b"y").unwrap().unwrap();
        assert_eq!((x.as_slice(), y.as_slice()), (&b"50"[..], &b"50"[..]));
    }
}

fn write_skew(
    engine: StorageEngine,
    level: ConsistencyLevel,
) -> (Result<(), Error>, Result<(), Error>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), config_on(engine)).unwrap();
    {
        // Invariant the application wants: at least one of alice/bob stays on call.
        db.put_batch(&[
            (b"alice".to_vec(), b"on".to_vec()),
            (b"bob".to_vec(), b"on".to_vec()),
        ])
        .unwrap();
        let t1 = db.begin_transaction_with(level).unwrap();
        let t2 = db.begin_transaction_with(level).unwrap();
        for (t, me) in [(t1, &b"alice"[..]), (t2, &b"bob"[..])] {
            let on = [&b"alice"[..], b"bob"]
                .iter()
                .filter(|k| db.get_tx(t, k).unwrap().as_deref() == Some(&b"on"[..]))
                .count();
            assert_eq!(on, 2);
            db.put_tx(t, me, b"off").unwrap();
        }
        (db.commit_transaction(t1), db.commit_transaction(t2))
    }
}

#[test]
fn anomaly_write_skew_allowed_under_snapshot() {
    for engine in ENGINES {
        let (a, b) = write_skew(engine, ConsistencyLevel::Snapshot);
        assert!(a.is_ok() && b.is_ok());
    }
}

#[test]
fn anomaly_write_skew_refused_under_serializable() {
    for engine in ENGINES {
        let (a, b) = write_skew(engine, ConsistencyLevel::Serializable);
        assert!(a.is_ok());
        assert!(b.unwrap_err().is_conflict());
    }
}

#[test]
fn serializable_is_the_database_default_when_configured() {
    for engine in ENGINES {
        serializable_default_on(engine);
    }
}

fn serializable_default_on(engine: StorageEngine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            consistency_level: ConsistencyLevel::Serializable,
            ..config_on(engine)
        },
    )
    .unwrap();
    db.put(b"a", b"1").unwrap();
    let t = db.begin_transaction().unwrap();
    db.get_tx(t, b"a").unwrap();
    db.put(b"a", b"2").unwrap();
    db.put_tx(t, b"b", b"x").unwrap();
    assert!(db.commit_transaction(t).unwrap_err().is_conflict());
    // Overridable per transaction.
    let t = db
        .begin_transaction_with(ConsistencyLevel::Snapshot)
        .unwrap();
    db.get_tx(t, b"a").unwrap();
    db.put(b"a", b"3").unwrap();
    db.put_tx(t, b"b", b"x").unwrap();
    db.commit_transaction(t).unwrap();
}

// ---------------------------------------------------------------- snapshots and GC

#[test]
fn long_snapshot_is_stable_while_others_overwrite_delete_and_compact() {
    for (engine, optimized) in [
        (StorageEngine::Lsm, true),
        (StorageEngine::Lsm, false),
        (StorageEngine::BTree, true),
        (StorageEngine::BTree, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            Database::create(
                dir.path().join("db"),
                LightningDbConfig {
                    use_optimized_transactions: optimized,
                    ..config_on(engine)
                },
            )
            .unwrap(),
        );
        for i in 0..500 {
            db.put(&common::key(i), &common::value(i, 0)).unwrap();
        }
        let t = db.begin_transaction().unwrap();
        let w = {
            let db = db.clone();
            std::thread::spawn(move || {
                for round in 1..6 {
                    for i in 0..500 {
                        if (i + round) % 3 == 0 {
                            db.delete(&common::key(i)).unwrap();
                        } else {
                            db.put(&common::key(i), &common::value(i, round)).unwrap();
                        }
                    }
                    db.compact().unwrap();
                }
            })
        };
        for _ in 0..3 {
            for i in (0..500).step_by(7) {
                assert_eq!(
                    db.get_tx(t, &common::key(i)).unwrap(),
                    Some(common::value(i, 0))
                );
            }
        }
        w.join().unwrap();
        let all: Vec<_> = db
            .scan_tx(t, None, None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(all.len(), 500);
        for (i, (k, v)) in all.iter().enumerate() {
            assert_eq!(
                (k, v),
                (&common::key(i as u64), &common::value(i as u64, 0))
            );
        }
        // Writing a key that others changed since the snapshot conflicts.
        db.put_tx(t, &common::key(1), b"late").unwrap();
        assert!(db.commit_transaction(t).unwrap_err().is_conflict());
    }
}

#[test]
fn overwriting_one_key_many_times_does_not_grow_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            // This test is about garbage collection, not fsync latency.
            durability: lightning_db::Durability::Buffered,
            // The column store keeps the versions committed since its last round (it
            // needs them to see deletions), so what stays on disk is bounded by what is
            // written in one columnar interval, not by the number of overwrites.
            columnar_compaction_interval: Duration::from_millis(200),
            ..common::small_config()
        },
    )
    .unwrap();
    let n: u64 = if cfg!(feature = "integration_tests") {
        1_000_000
    } else {
        100_000
    };
    let mut peak = 0;
    for i in 0..n {
        db.put(b"hot", i.to_string().as_bytes()).unwrap();
        if i % 10_000 == 0 {
            peak = peak.max(db.engine().sizes().bytes_per_level.iter().sum::<u64>());
        }
    }
    // Background compaction keeps the tree small all along, not only after a full
    // compaction.
    assert!(
        peak < 512 * 1024,
        "{peak} bytes on disk at peak for one key"
    );
    db.compact().unwrap();
    let bytes: u64 = db.engine().sizes().bytes_per_level.iter().sum();
    assert!(bytes < 4096, "{bytes} bytes on disk for one key");
    assert_eq!(
        db.get(b"hot").unwrap(),
        Some((n - 1).to_string().into_bytes())
    );
}

// ---------------------------------------------------------------- resources and errors

#[test]
fn unknown_and_finished_transactions_are_errors() {
    for (_d, db) in dbs() {
        assert!(matches!(
            db.commit_transaction(42),
            Err(Error::TransactionNotFound(42))
        ));
        assert!(matches!(
            db.abort_transaction(42),
            Err(Error::TransactionNotFound(42))
        ));
        let t = db.begin_transaction().unwrap();
        db.put_tx(t, b"a", b"1").unwrap();
        db.commit_transaction(t).unwrap();
        assert!(matches!(
            db.commit_transaction(t),
            Err(Error::TransactionNotFound(_))
        ));
        assert!(matches!(
            db.get_tx(t, b"a"),
            Err(Error::TransactionNotFound(_))
        ));
        let t = db.begin_transaction().unwrap();
        db.abort_transaction(t).unwrap();
        assert!(matches!(
            db.abort_transaction(t),
            Err(Error::TransactionNotFound(_))
        ));
        assert!(matches!(
            db.put_tx(t, b"a", b"1"),
            Err(Error::TransactionNotFound(_))
        ));
        // Oversized keys in a transaction are refused.
        let t = db.begin_transaction().unwrap();
        assert!(matches!(
            db.put_tx(t, &vec![0; lightning_db::MAX_KEY_LEN + 1], b""),
            Err(Error::KeyTooLarge { .. })
        ));
    }
}

#[test]
fn max_active_transactions_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            max_active_transactions: 3,
            ..common::small_config()
        },
    )
    .unwrap();
    let ts: Vec<_> = (0..3).map(|_| db.begin_transaction().unwrap()).collect();
    assert!(matches!(
        db.begin_transaction(),
        Err(Error::TooManyTransactions { max: 3 })
    ));
    db.abort_transaction(ts[0]).unwrap();
    db.begin_transaction().unwrap();
}

#[test]
fn abandoned_transactions_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            transaction_timeout: Duration::from_millis(50),
            ..common::small_config()
        },
    )
    .unwrap();
    let abandoned = db.begin_transaction().unwrap();
    db.put_tx(abandoned, b"k", b"never").unwrap();
    std::thread::sleep(Duration::from_millis(120));
    let fresh = db.begin_transaction().unwrap(); // sweeps expired ones
    assert_eq!(db.active_transactions(), 1);
    assert!(matches!(
        db.commit_transaction(abandoned),
        Err(Error::TransactionNotFound(_))
    ));
    assert_eq!(db.engine().active_transactions(), 1);
    db.commit_transaction(fresh).unwrap();
    assert_eq!(db.get(b"k").unwrap(), None);
}

#[test]
fn transaction_closure_commits_aborts_and_retries() {
    for (_d, db) in dbs() {
        let r: Result<(), Error> = db.transaction(|tx| {
            tx.put(b"a", b"1")?;
            Err(Error::InvalidArgument("changed my mind".into()))
        });
        assert!(r.is_err());
        assert_eq!(db.get(b"a").unwrap(), None);
        assert_eq!(db.active_transactions(), 0);
        let mut attempts = 0;
        db.transaction(|tx| {
            attempts += 1;
            let _ = tx.get(b"a")?;
            if attempts == 1 {
                // A concurrent commit to the same key makes the first attempt conflict.
                db.put(b"a", b"other").unwrap();
            }
            tx.put(b"a", b"mine")
        })
        .unwrap();
        assert_eq!(attempts, 2);
        assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"mine"[..]));
    }
}
