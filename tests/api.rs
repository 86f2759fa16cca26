//! The README's key-value API, exactly as users write it, and its error contract.

mod common;

use common::{key, small_config, value};
use lightning_db::{Database, Durability, Error, LightningDbConfig};
use std::sync::Arc;

// The README's code is kept verbatim, `&vec![..]` included.
#[allow(clippy::useless_vec)]
#[test]
fn readme_api_compiles_and_works_unchanged() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mydb");
    let db = Database::create(&path, LightningDbConfig::default())?;
    db.put(b"hello", b"world")?;
    assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"world"[..]));
    db.delete(b"hello")?;
    assert!(db.get(b"hello")?.is_none());
    db.put_batch(&vec![(b"user:1".to_vec(), b"Alice".to_vec())])?; // atomic
    let values = db.get_batch(&vec![b"user:1".to_vec()])?; // Vec<Option<..>>
    assert_eq!(values, vec![Some(b"Alice".to_vec())]);
    let mut n = 0;
    for r in db.scan(Some(b"user:"), Some(b"user:~"))? {
        let (k, v) = r?;
        assert_eq!(
            (k.as_slice(), v.as_slice()),
            (&b"user:1"[..], &b"Alice"[..])
        );
        n += 1;
    }
    assert_eq!(n, 1);
    db.delete_batch(&vec![b"user:1".to_vec()])?;
    assert_eq!(db.scan_prefix(b"user:")?.count(), 0);
    assert_eq!(db.scan_reverse(None, None)?.count(), 0);

    // The README's batch and range sections.
    let batch = vec![
        (b"user:1".to_vec(), b"Alice".to_vec()),
        (b"user:2".to_vec(), b"Bob".to_vec()),
        (b"user:3".to_vec(), b"Charlie".to_vec()),
    ];
    db.put_batch(&batch)?;
    let keys = vec![b"user:1".to_vec(), b"user:2".to_vec()];
    let values = db.get_batch(&keys)?;
    assert_eq!(values, vec![Some(b"Alice".to_vec()), Some(b"Bob".to_vec())]);
    let pre: Vec<_> = db
        .scan_prefix(b"user:")?
        .take(10)
        .collect::<Result<_, _>>()?;
    assert_eq!(pre.len(), 3);
    let rev: Vec<_> = db
        .scan_reverse(None, None)?
        .take(5)
        .collect::<Result<_, _>>()?;
    assert_eq!(rev[0].0, b"user:3");
    assert_eq!(rev[2].0, b"user:1");
    db.delete_batch(&keys)?;
    assert_eq!(db.get_batch(&keys)?, vec![None, None]);
    Ok(())
}

#[test]
fn readme_configuration_block_is_accepted() -> Result<(), Box<dyn std::error::Error>> {
    use lightning_db::ConsistencyLevel;
    let config = LightningDbConfig {
        page_size: 4096,
        cache_size: 256 * 1024 * 1024,
        mmap_size: Some(1024 * 1024 * 1024),
        compression_enabled: true,
        compression_type: 1,
        max_active_transactions: 10000,
        use_optimized_transactions: true,
        prefetch_enabled: true,
        prefetch_distance: 16,
        prefetch_workers: 4,
        use_lock_free_cache: true,
        wal_enabled: true,
        improved_wal: true,
        background_compaction: true,
        parallel_compaction_workers: 2,
        consistency_level: ConsistencyLevel::Snapshot,
        ..Default::default()
    };
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("mydb"), config)?;
    db.put(b"a", b"b")?;
    Ok(())
}

#[test]
fn create_and_open_rules() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    assert!(matches!(
        Database::open(&p, LightningDbConfig::default()),
        Err(Error::DatabaseNotFound(_))
    ));
    let db = Database::create(&p, LightningDbConfig::default()).unwrap();
    // A second handle on the same directory is refused while the first is open.
    assert!(matches!(
        Database::open(&p, LightningDbConfig::default()),
        Err(Error::Locked(_))
    ));
    db.put(b"k", b"v").unwrap();
    drop(db);
    assert!(matches!(
        Database::create(&p, LightningDbConfig::default()),
        Err(Error::DatabaseExists(_))
    ));
    let db = Database::open(&p, LightningDbConfig::default()).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    db.close().unwrap();
    assert!(matches!(db.get(b"k"), Err(Error::Closed)));
    assert!(matches!(db.put(b"k", b"v"), Err(Error::Closed)));
    db.close().unwrap(); // idempotent
    // close released the lock.
    let db2 = Database::open(&p, LightningDbConfig::default()).unwrap();
    assert_eq!(db2.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn invalid_config_is_refused_at_create_and_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let bad = LightningDbConfig {
        compression_type: 7,
        ..Default::default()
    };
    assert!(matches!(
        Database::create(&p, bad.clone()),
        Err(Error::InvalidConfig(_))
    ));
    assert!(
        !p.join("CURRENT").exists(),
        "nothing created for a refused config"
    );
    Database::create(&p, LightningDbConfig::default()).unwrap();
    assert!(matches!(
        Database::open(&p, bad),
        Err(Error::InvalidConfig(_))
    ));
    for bad in [
        LightningDbConfig {
            columnar_batch_rows: 10,
            ..Default::default()
        },
        LightningDbConfig {
            columnar_segment_rows: 0,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            Database::open(&p, bad),
            Err(Error::InvalidConfig(_))
        ));
    }
}

#[test]
fn size_limits_are_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), LightningDbConfig::default()).unwrap();
    let big_key = vec![b'k'; lightning_db::MAX_KEY_LEN + 1];
    assert!(matches!(
        db.put(&big_key, b"v"),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(db.get(&big_key), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(
        db.delete(&big_key),
        Err(Error::KeyTooLarge { .. })
    ));
    let big_val = vec![0u8; lightning_db::MAX_VALUE_LEN + 1];
    assert!(matches!(
        db.put(b"k", &big_val),
        Err(Error::ValueTooLarge { .. })
    ));
    // A batch with one bad entry writes none of its entries.
    let batch = vec![
        (b"ok".to_vec(), b"1".to_vec()),
        (big_key.clone(), b"2".to_vec()),
    ];
    assert!(db.put_batch(&batch).is_err());
    assert_eq!(db.get(b"ok").unwrap(), None);
    // Largest accepted sizes work.
    let max_key = vec![b'm'; lightning_db::MAX_KEY_LEN];
    db.put(&max_key, b"v").unwrap();
    assert_eq!(db.get(&max_key).unwrap().as_deref(), Some(&b"v"[..]));
    db.put(b"", b"empty key is a key").unwrap();
    assert!(db.get(b"").unwrap().is_some());
    // Inverted ranges are refused with a clear error.
    assert!(matches!(
        db.scan(Some(b"z"), Some(b"a")),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn large_values_roundtrip_through_flush_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), small_config()).unwrap();
    let big = (0..3_000_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>();
    db.put(b"big", &big).unwrap();
    db.compact().unwrap();
    assert_eq!(db.get(b"big").unwrap().unwrap(), big);
}

fn fill_and_check(config: LightningDbConfig, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    {
        let db = Database::create(&p, config.clone()).unwrap();
        for i in 0..n {
            db.put(&key(i), &value(i, 0)).unwrap();
        }
        for i in (0..n).step_by(3) {
            db.delete(&key(i)).unwrap();
        }
        for i in (1..n).step_by(3) {
            db.put(&key(i), &value(i, 1)).unwrap();
        }
    }
    let db = Database::open(&p, config).unwrap();
    for i in 0..n {
        let expect = match i % 3 {
            0 => None,
            1 => Some(value(i, 1)),
            _ => Some(value(i, 0)),
        };
        assert_eq!(db.get(&key(i)).unwrap(), expect, "key {i}");
    }
    let all: Vec<_> = db.scan(None, None).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all.len() as u64, n - n.div_ceil(3));
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn every_codec_and_read_path_gives_the_same_answers() {
    for compression_type in [1u8, 2, 3] {
        fill_and_check(
            LightningDbConfig {
                compression_type,
                ..small_config()
            },
            1500,
        );
    }
    fill_and_check(
        LightningDbConfig {
            compression_enabled: false,
            mmap_size: None,
            cache_size: 0,
            prefetch_enabled: false,
            use_lock_free_cache: false,
            ..small_config()
        },
        1500,
    );
}

#[test]
fn foreground_mode_starts_no_threads_and_still_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LightningDbConfig {
        background_compaction: false,
        ..small_config()
    };
    let db = Database::create(dir.path().join("db"), config.clone()).unwrap();
    assert_eq!(db.engine().background_threads(), 0);
    for i in 0..3000 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    let sizes = db.engine().sizes();
    assert!(
        db.engine()
            .stats()
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        db.engine()
            .stats()
            .compactions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        sizes.tables_per_level[0] < config.level0_compaction_trigger,
        "{sizes:?}"
    );
    drop(db);
    fill_and_check(config, 1000);
}

#[test]
fn background_mode_runs_the_configured_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = LightningDbConfig {
        parallel_compaction_workers: 3,
        ..small_config()
    };
    let db = Database::create(dir.path().join("db"), config).unwrap();
    // One flush thread plus three compaction workers.
    assert_eq!(db.engine().background_threads(), 4);
    db.close().unwrap();
    assert_eq!(db.engine().background_threads(), 0);
}

#[test]
fn wal_disabled_keeps_data_across_clean_close() {
    let config = LightningDbConfig {
        wal_enabled: false,
        ..small_config()
    };
    fill_and_check(config.clone(), 500);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = Database::create(&p, config).unwrap();
    db.put(b"a", b"1").unwrap();
    let logs = std::fs::read_dir(&p)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(logs, 0, "no WAL segment is written when the WAL is off");
}

#[test]
fn durability_modes_and_serial_wal_work() {
    for durability in [
        Durability::Sync,
        Durability::Buffered,
        Durability::GroupCommit {
            max_delay: std::time::Duration::from_micros(200),
        },
    ] {
        for improved_wal in [true, false] {
            fill_and_check(
                LightningDbConfig {
                    durability,
                    improved_wal,
                    ..small_config()
                },
                300,
            );
        }
    }
}

#[test]
fn mmap_budget_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            mmap_size: Some(40 * 1024),
            ..small_config()
        },
    )
    .unwrap();
    for i in 0..4000 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    db.flush().unwrap();
    let used = db.engine().mmapped_bytes();
    assert!(used > 0 && used <= 40 * 1024, "mapped {used}");
    for i in 0..4000 {
        assert!(db.get(&key(i)).unwrap().is_some());
    }
}

#[test]
fn concurrent_writers_and_readers_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("db"), small_config()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..400u64 {
                    let k = key(t * 1_000_000 + i);
                    db.put(&k, &value(i, t)).unwrap();
                    assert_eq!(db.get(&k).unwrap(), Some(value(i, t)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.scan(None, None).unwrap().count(), 8 * 400);
    // Group commit shared fsyncs among the 8 writers.
    let stats = db.engine().stats();
    let syncs = stats.wal_syncs.load(std::sync::atomic::Ordering::Relaxed);
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(commits, 3200);
    assert!(syncs <= commits);
}

#[test]
fn iterators_see_one_state_while_writes_and_compactions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("db"), small_config()).unwrap());
    for i in 0..2000 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    let it = db.scan(None, None).unwrap();
    let rev = db.scan_reverse(None, None).unwrap();
    // Overwrite and delete everything, flush and compact, while the iterators are open.
    let w = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..2000 {
                if i % 2 == 0 {
                    db.delete(&key(i)).unwrap();
                } else {
                    db.put(&key(i), &value(i, 1)).unwrap();
                }
                db.put(&key(10_000 + i), b"new").unwrap();
            }
            db.compact().unwrap();
        })
    };
    let got: Vec<_> = it.map(|r| r.unwrap()).collect();
    w.join().unwrap();
    let got_rev: Vec<_> = rev.map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 2000);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(k, &key(i as u64));
        assert_eq!(v, &value(i as u64, 0));
    }
    assert_eq!(got_rev.len(), 2000);
    assert_eq!(got_rev[0].0, key(1999));
    // And a new scan sees the new state.
    assert_eq!(db.scan(None, None).unwrap().count(), 1000 + 2000);
}

#[test]
fn overwrites_do_not_grow_the_database_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), small_config()).unwrap();
    for round in 0..200u64 {
        for i in 0..50 {
            db.put(&key(i), &value(i, round)).unwrap();
        }
    }
    db.compact().unwrap();
    let sizes = db.engine().sizes();
    let bytes: u64 = sizes.bytes_per_level.iter().sum();
    assert!(bytes < 20_000, "{bytes} bytes for 50 live keys: {sizes:?}");
    for i in 0..50 {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i, 199)));
    }
    // Deleting everything and compacting leaves nothing behind (tombstones dropped at
    // the bottom level).
    for i in 0..50 {
        db.delete(&key(i)).unwrap();
    }
    db.compact().unwrap();
    assert_eq!(db.engine().sizes().bytes_per_level.iter().sum::<u64>(), 0);
}
