//! The B+Tree storage engine through the facade: chosen at create and recorded, the
//! other engine refused at open, key-value reads and scans against a model across
//! flushes and reopen, tables and SQL (bulk inserts go through ingestion), checkpoints,
//! file backups and checks, and the CLI's `--engine` and `stats`.

use lightning_db::arrow::array::{Int64Array, RecordBatch};
use lightning_db::arrow::datatypes::{DataType, Field, Schema};
use lightning_db::{Database, Error, LightningDbConfig, StorageEngine};
use std::collections::BTreeMap;
use std::sync::Arc;

fn btree() -> LightningDbConfig {
    LightningDbConfig {
        storage_engine: StorageEngine::BTree,
        write_buffer_size: 64 * 1024,
        ..Default::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("k{:08}", (i * 7919) % 100_003).into_bytes()
}

fn scan_all(db: &Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(None, None).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn the_engine_is_chosen_at_create_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (b, l) = (dir.path().join("b"), dir.path().join("l"));
    let db = Database::create(&b, btree()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.flush().unwrap();
    assert_eq!(db.storage_engine(), StorageEngine::BTree);
    assert_eq!(db.get_metrics().storage_engine, "btree");
    assert!(db.get_metrics().disk.tree_bytes > 0);
    drop(db);
    let names: Vec<String> = std::fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "TREE"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".sst")), "{names:?}");
    assert_eq!(
        Database::recorded_storage_engine(&b, &LightningDbConfig::default()).unwrap(),
        Some(StorageEngine::BTree)
    );
    // The other engine is refused, with what the database was created with.
    match Database::open(&b, LightningDbConfig::default()) {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("B+Tree"), "{m}"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    let db = Database::open(&b, btree()).unwrap();
    assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    drop(db);

    let db = Database::create(&l, LightningDbConfig::default()).unwrap();
    assert_eq!(db.get_metrics().storage_engine, "lsm");
    drop(db);
    assert!(matches!(
        Database::open(&l, btree()),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(
        Database::recorded_storage_engine(dir.path().join("none"), &btree()).unwrap(),
        None
    );
}

/// Encrypted at rest on the tree: every page sealed on its own, nothing readable on
/// disk, reads, scans, overflow values, compaction (which shortens the file), tables
/// and SQL, checkpoints, file backups and checks through the key, and the wrong key or
/// the other engine refused.
#[test]
fn the_tree_works_encrypted_at_rest() {
    use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider};
    const SECRET: &[u8] = b"PLAINTEXT-NEVER-ON-DISK";
    let enc = |key: u8| LightningDbConfig {
        encryption: Some(EncryptionConfig::new(
            Cipher::Aes256Gcm,
            KeyProvider::raw([key; 32]),
        )),
        ..btree()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, enc(1)).unwrap();
    assert!(db.is_encrypted());
    assert_eq!(db.storage_engine(), StorageEngine::BTree);
    let mut model = BTreeMap::new();
    for round in 0..4u64 {
        for i in 0..3000 {
            let k = key(i + round * 700);
            let mut v = SECRET.to_vec();
            v.extend_from_slice(format!("-{round}-{i}").as_bytes());
            db.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        let big: Vec<u8> = SECRET.iter().copied().cycle().take(50_000).collect();
        db.put(b"big", &big).unwrap();
        model.insert(b"big".to_vec(), big);
        db.flush().unwrap();
    }
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, s VARCHAR)")
        .unwrap();
    db.sql("INSERT INTO t SELECT value, 'PLAINTEXT-NEVER-ON-DISK' FROM generate_series(1, 50000)")
        .unwrap();
    db.flush().unwrap();
    db.compact().unwrap();
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scan_all(&db), want);
    let count = |db: &Database| {
        let b = db
            .sql("SELECT count(*) FROM t WHERE s LIKE 'PLAINTEXT%'")
            .unwrap();
        lightning_db::arrow::util::display::array_value_to_string(b[0].column(0), 0).unwrap()
    };
    assert_eq!(count(&db), "50000");
    let cp = dir.path().join("cp");
    db.checkpoint(&cp).unwrap();
    drop(db);
    let vfs = lightning_db::encryption::vfs_for(
        &path,
        &EncryptionConfig::new(Cipher::Aes256Gcm, KeyProvider::raw([1; 32])),
    )
    .unwrap();
    let bk = dir.path().join("bk");
    lightning_db::backup_files_with(&vfs, &path, &bk).unwrap();
    for d in [&path, &cp, &bk] {
        let tree = std::fs::read(d.join("TREE")).unwrap();
        assert!(tree.len() > 100_000, "{}", tree.len());
        assert!(
            !tree.windows(SECRET.len()).any(|w| w == SECRET),
            "{}: the tree holds plaintext",
            d.display()
        );
        assert!(!tree.windows(7).any(|w| w == b"k000001"));
        let r = lightning_db::check_files_with(&vfs, d, 100, |_| {}).unwrap();
        assert!(r.tree_extents_checked > 0, "{r:?}");
        let db = Database::open(d, enc(1)).unwrap();
        assert_eq!(scan_all(&db), want, "{}", d.display());
        assert_eq!(count(&db), "50000");
    }
    assert!(matches!(
        Database::open(&path, enc(2)),
        Err(Error::WrongKey(_))
    ));
    let lsm = LightningDbConfig {
        storage_engine: StorageEngine::Lsm,
        ..enc(1)
    };
    assert!(matches!(
        Database::open(&path, lsm),
        Err(Error::InvalidConfig(_))
    ));
}

/// The newest of the tree's two meta pages damaged (a flipped bit, not a torn write):
/// falling back to the older tree would silently lose the commits of the last flush,
/// whose WAL is gone, so the open reports corruption instead.
#[test]
fn a_damaged_newest_meta_page_is_corruption_not_a_step_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, btree()).unwrap();
    for round in 0..3u64 {
        for i in 0..500 {
            db.put(&key(i), format!("r{round}").as_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    drop(db);
    let tree = path.join("TREE");
    let pristine = std::fs::read(&tree).unwrap();
    let generation = |slot: usize| {
        let at = slot * 4096 + 12;
        u64::from_le_bytes(pristine[at..at + 8].try_into().unwrap())
    };
    let (newest, older) = if generation(0) > generation(1) {
        (0, 1)
    } else {
        (1, 0)
    };
    // The older slot damaged: the newest tree is used, nothing is lost.
    let mut b = pristine.clone();
    b[older * 4096 + 20] ^= 0x01;
    std::fs::write(&tree, &b).unwrap();
    let db = Database::open(&path, btree()).unwrap();
    assert_eq!(db.get(&key(7)).unwrap().as_deref(), Some(&b"r2"[..]));
    drop(db);
    let mut b = pristine.clone();
    b[newest * 4096 + 20] ^= 0x01;
    std::fs::write(&tree, &b).unwrap();
    match Database::open(&path, btree()) {
        Err(e) => assert!(e.is_corruption(), "{e}"),
        Ok(db) => panic!(
            "opened on the older tree: k7 = {:?}",
            db.get(&key(7)).unwrap()
        ),
    }
}

#[test]
fn reads_and_scans_match_a_model_across_flushes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut db = Database::create(&path, btree()).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..6u64 {
        for i in 0..4000 {
            let k = key(i + round * 1500);
            if (i + round) % 9 == 0 {
                db.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("v{round}-{i}").into_bytes();
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        // A large value goes to overflow pages.
        let big = vec![round as u8; 100_000];
        db.put(b"big", &big).unwrap();
        model.insert(b"big".to_vec(), big);
        if round % 2 == 1 {
            db.flush().unwrap();
        }
        if round % 3 == 2 {
            drop(db);
            db = Database::open(&path, btree()).unwrap();
        }
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(scan_all(&db), want, "round {round}");
        let rev: Vec<_> = db
            .scan_reverse(Some(b"k0002"), Some(b"k0005"))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let want_rev: Vec<_> = model
            .range(b"k0002".to_vec()..b"k0005".to_vec())
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(rev, want_rev);
        for i in (0..9000).step_by(97) {
            assert_eq!(db.get(&key(i)).unwrap(), model.get(&key(i)).cloned());
        }
    }
    let r = lightning_db::check_files(&path, 100, |_| {}).unwrap();
    assert!(r.tree_extents_checked > 0, "{r:?}");
    assert_eq!(r.tables_checked, 0);
    // Rewrites leave the replaced pages free in the file; compaction gives them back.
    for round in 0..4u64 {
        for i in 0..9000 {
            let v = format!("w{round}-{i}").into_bytes();
            db.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        db.flush().unwrap();
    }
    let before = db.get_metrics().disk.tree_bytes;
    db.compact().unwrap();
    let after = db.get_metrics().disk.tree_bytes;
    assert!(after < before, "{before} -> {after}");
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scan_all(&db), want);
    drop(db);
    let db = Database::open(&path, btree()).unwrap();
    assert_eq!(scan_all(&db), want);
    lightning_db::check_files(&path, 100, |_| {}).unwrap();
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

#[test]
fn tables_sql_checkpoints_and_backups_work_on_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, btree()).unwrap();
    db.create_table("t", schema(), &["id"]).unwrap();
    let ids: Vec<i64> = (0..5000).collect();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(
                ids.iter().map(|i| i * 2).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    db.insert("t", &batch).unwrap();
    // Enough rows for one statement to go through bulk ingestion (several MiB).
    db.sql("CREATE TABLE big (id BIGINT NOT NULL, pad VARCHAR NOT NULL, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO big SELECT value, repeat('x', 100) FROM generate_series(1, 200000)")
        .unwrap();
    let one = |q: &str| -> String {
        let b = db.sql(q).unwrap();
        lightning_db::arrow::util::display::array_value_to_string(b[0].column(0), 0).unwrap()
    };
    assert_eq!(one("SELECT count(*) FROM big"), "200000");
    assert_eq!(one("SELECT sum(v) FROM t"), (4999 * 5000).to_string());
    db.sql("UPDATE t SET v = 0 WHERE id < 100").unwrap();
    db.sql("DELETE FROM big WHERE id > 150000").unwrap();
    db.flush().unwrap();
    db.compact_columnar("t").unwrap();
    assert_eq!(one("SELECT count(*) FROM big"), "150000");
    let sum = one("SELECT sum(v) FROM t");

    let cp = dir.path().join("cp");
    db.checkpoint(&cp).unwrap();
    let bk = dir.path().join("bk");
    lightning_db::backup_files(&path, &bk).unwrap();
    drop(db);
    for copy in [&cp, &bk, &path] {
        let c = Database::open(copy, btree()).unwrap();
        let one = |q: &str| -> String {
            let b = c.sql(q).unwrap();
            lightning_db::arrow::util::display::array_value_to_string(b[0].column(0), 0).unwrap()
        };
        assert_eq!(
            one("SELECT count(*) FROM big"),
            "150000",
            "{}",
            copy.display()
        );
        assert_eq!(one("SELECT sum(v) FROM t"), sum, "{}", copy.display());
        drop(c);
        lightning_db::check_files(copy, 100, |_| {}).unwrap();
    }
}

#[test]
fn the_cli_creates_with_engine_and_opens_with_the_recorded_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cli = env!("CARGO_BIN_EXE_lightning-cli");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(cli).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let p = path.to_str().unwrap();
    let (ok, _, err) = run(&["--engine", "btree", "put", p, "k", "v"]);
    assert!(ok, "{err}");
    // No --engine: the recorded one.
    let (ok, out, err) = run(&["stats", p]);
    assert!(ok, "{err}");
    assert!(out.contains("storage engine: btree"), "{out}");
    let (ok, out, _) = run(&["get", p, "k"]);
    assert!(ok && out.contains('v'), "{out}");
    let (ok, _, err) = run(&["--engine", "lsm", "stats", p]);
    assert!(!ok && err.contains("B+Tree"), "{err}");
    assert!(out_of(&run(&["stats", p])).contains("encryption at rest: none"));
    // Encrypted on the tree, through every command that opens it.
    let key = dir.path().join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let (k, e) = (key.to_str().unwrap(), dir.path().join("enc"));
    let e = e.to_str().unwrap();
    let with_key = |args: &[&str]| {
        let mut a = vec!["--key-file", k, "--cipher", "chacha20-poly1305"];
        a.extend_from_slice(args);
        run(&a)
    };
    let (ok, _, err) = with_key(&["--engine", "btree", "put", e, "k", "secret-value"]);
    assert!(ok, "{err}");
    let out = out_of(&with_key(&["stats", e]));
    assert!(out.contains("storage engine: btree"), "{out}");
    assert!(
        out.contains("encryption at rest: chacha20-poly1305"),
        "{out}"
    );
    assert!(out_of(&with_key(&["get", e, "k"])).contains("secret-value"));
    assert!(out_of(&with_key(&["check", e])).contains("tree extents"));
    let (ok, _, _) = run(&["get", e, "k"]);
    assert!(!ok, "read without the key");
}

fn out_of(r: &(bool, String, String)) -> String {
    assert!(r.0, "{}{}", r.1, r.2);
    r.1.clone()
}

/// Checks and file backups of a tree another thread keeps flushing and compacting
/// (shortening the file): each one succeeds, and each backup opens with what was
/// acknowledged before it started.
#[test]
fn checks_and_backups_follow_a_tree_that_flushes_and_compacts_under_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Arc::new(Database::create(&path, btree()).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..2000 {
                    db.put(&key(i), format!("r{round}-{i}").as_bytes()).unwrap();
                }
                db.flush().unwrap();
                if round % 3 == 2 {
                    db.compact().unwrap();
                }
                done.store(round + 1, std::sync::atomic::Ordering::Release);
                round += 1;
            }
        })
    };
    // Until the writer has flushed a dozen times and compacted four.
    for n in 0..400 {
        let rounds = done.load(std::sync::atomic::Ordering::Acquire);
        if n >= 8 && rounds >= 12 {
            break;
        }
        lightning_db::check_files(&path, 100, |_| {}).unwrap();
        let bk = dir.path().join(format!("bk{n}"));
        lightning_db::backup_files(&path, &bk).unwrap();
        let copy = Database::open(&bk, btree()).unwrap();
        if rounds > 0 {
            // Every key was written in each finished round.
            assert_eq!(scan_all(&copy).len(), 2000, "backup {n}");
        }
        drop(copy);
        std::fs::remove_dir_all(&bk).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

/// A load leaves about one tree's worth of free pages behind its last flush; closing
/// the database gives them back (the backlog is small), and what was written reads
/// back after the reopen.
#[test]
fn closing_gives_free_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, btree()).unwrap();
    for round in 0..5u64 {
        for i in 0..6000 {
            db.put(
                &key(i),
                format!("v{round}-{i}-{}", "x".repeat(40)).as_bytes(),
            )
            .unwrap();
        }
        db.flush().unwrap();
    }
    let open_bytes = db.get_metrics().disk.tree_bytes;
    drop(db);
    let closed_bytes = std::fs::metadata(path.join("TREE")).unwrap().len();
    assert!(
        closed_bytes * 10 < open_bytes * 8,
        "{open_bytes} bytes while open, {closed_bytes} after close"
    );
    let db = Database::open(&path, btree()).unwrap();
    for i in (0..6000).step_by(53) {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap(),
            format!("v4-{i}-{}", "x".repeat(40)).as_bytes()
        );
    }
    assert_eq!(scan_all(&db).len(), 6000);
}
