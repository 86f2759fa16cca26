//! `Database::open_read_only`: everything readable, nothing written, a shared lock.

use crate::common;

use common::{key, value};
use lightning_db::arrow::array::{AsArray, RecordBatch};
use lightning_db::arrow::datatypes::Int64Type;
use lightning_db::vfs::{FaultVfs, PowerLoss};
use lightning_db::{Database, Error, LightningDbConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, &mut m);
    m
}

fn count(db: &Database, sql: &str) -> i64 {
    let b: Vec<RecordBatch> = db.sql(sql).unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn assert_read_only<T: std::fmt::Debug>(r: lightning_db::Result<T>, what: &str) {
    match r {
        Err(Error::ReadOnly) => {}
        other => panic!("{what}: expected Error::ReadOnly, got {other:?}"),
    }
}

/// A database whose data sits in every place it can: flushed tables, column segments,
/// and a WAL that no one replayed (the power went out before the close).
fn build(path: &Path) {
    let vfs = FaultVfs::new();
    let cfg = LightningDbConfig {
        vfs: Some(Arc::new(vfs.clone())),
        columnar_background: false,
        ..LightningDbConfig::default()
    };
    let db = Database::create(path, cfg).unwrap();
    db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
        .unwrap();
    db.sql("INSERT INTO t SELECT value, value * 2 FROM generate_series(1, 5000)")
        .unwrap();
    for i in 0..200 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    db.flush().unwrap();
    db.compact_columnar("t").unwrap();
    // After the flush and the column-store round: only in the WAL.
    db.sql("UPDATE t SET v = -1 WHERE id <= 100").unwrap();
    db.sql("DELETE FROM t WHERE id > 4900").unwrap();
    db.sql("INSERT INTO t VALUES (10001, 7), (10002, 8)")
        .unwrap();
    for i in 200..300 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    db.delete(&key(0)).unwrap();
    vfs.power_loss(PowerLoss::Clean).unwrap();
    drop(db);
}

#[test]
fn a_read_only_handle_reads_every_committed_write_and_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    build(&path);
    let before = contents(&path);
    assert!(
        before
            .keys()
            .any(|p| p.extension().is_some_and(|e| e == "log") && before[p].len() > 64),
        "the WAL holds the last writes"
    );

    let db = Database::open_read_only(&path, LightningDbConfig::default()).unwrap();
    assert!(db.is_read_only());
    assert_eq!(db.engine().background_threads(), 0);
    let h = db.health_check().unwrap();
    assert!(
        h.is_healthy,
        "a read-only handle is healthy: {:?}",
        h.issues
    );
    // Key-value reads, including the writes only the WAL held.
    assert_eq!(db.get(&key(0)).unwrap(), None);
    assert_eq!(db.get(&key(1)).unwrap(), Some(value(1, 0)));
    assert_eq!(db.get(&key(250)).unwrap(), Some(value(250, 0)));
    assert_eq!(db.scan(None, None).unwrap().count(), 299);
    // SQL over column segments plus the changes after them.
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 4902);
    assert_eq!(count(&db, "SELECT count(*) FROM t WHERE v = -1"), 100);
    assert_eq!(
        count(&db, "SELECT sum(v) FROM t WHERE id > 100 AND id <= 4900"),
        (101..=4900).map(|i| i * 2).sum::<i64>()
    );
    assert_eq!(count(&db, "SELECT max(id) FROM t"), 10002);
    // A transaction that only reads commits.
    let tx = db.begin_transaction().unwrap();
    assert_eq!(db.get_tx(tx, &key(2)).unwrap(), Some(value(2, 0)));
    db.commit_transaction(tx).unwrap();

    // Every way to write is refused, with the same typed error.
    assert_read_only(db.put(b"x", b"y"), "put");
    assert_read_only(db.delete(&key(1)), "delete");
    assert_read_only(db.put_batch(&[(b"x".to_vec(), b"y".to_vec())]), "put_batch");
    assert_read_only(db.flush(), "flush");
    assert_read_only(db.compact(), "compact");
    assert_read_only(db.compact_columnar("t"), "compact_columnar");
    assert_read_only(db.sql("INSERT INTO t VALUES (20000, 1)"), "INSERT");
    assert_read_only(db.sql("UPDATE t SET v = 0"), "UPDATE");
    assert_read_only(db.sql("DELETE FROM t"), "DELETE");
    assert_read_only(
        db.sql("CREATE TABLE u (a BIGINT PRIMARY KEY)"),
        "CREATE TABLE",
    );
    assert_read_only(db.sql("DROP TABLE t"), "DROP TABLE");
    let tx = db.begin_transaction().unwrap();
    db.put_tx(tx, b"x", b"y").unwrap();
    assert_read_only(db.commit_transaction(tx), "a transaction's commit");
    // Still all there.
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 4902);
    assert_eq!(db.get(b"x").unwrap(), None);
    db.close().unwrap();
    drop(db);
    assert_eq!(
        contents(&path),
        before,
        "a read-only session changed the directory"
    );

    // A writer then recovers the same state.
    let db = Database::open(&path, LightningDbConfig::default()).unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM t"), 4902);
    assert_eq!(db.get(&key(250)).unwrap(), Some(value(250, 0)));
}

#[test]
fn read_only_handles_share_the_lock_and_exclude_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, LightningDbConfig::default()).unwrap();
    db.put(b"k", b"v").unwrap();
    // A writer is open: no read-only handle.
    assert!(matches!(
        Database::open_read_only(&path, LightningDbConfig::default()),
        Err(Error::Locked(_))
    ));
    drop(db);
    let r1 = Database::open_read_only(&path, LightningDbConfig::default()).unwrap();
    let r2 = Database::open_read_only(&path, LightningDbConfig::default()).unwrap();
    assert_eq!(r1.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(r2.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    // Readers are open: no writer.
    assert!(matches!(
        Database::open(&path, LightningDbConfig::default()),
        Err(Error::Locked(_))
    ));
    drop(r1);
    assert!(matches!(
        Database::open(&path, LightningDbConfig::default()),
        Err(Error::Locked(_))
    ));
    drop(r2);
    let db = Database::open(&path, LightningDbConfig::default()).unwrap();
    db.put(b"k", b"w").unwrap();
}

#[test]
fn read_only_never_creates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none");
    assert!(matches!(
        Database::open_read_only(&path, LightningDbConfig::default()),
        Err(Error::DatabaseNotFound(_))
    ));
    assert!(!path.exists());
    std::fs::create_dir(&path).unwrap();
    assert!(matches!(
        Database::open_read_only(&path, LightningDbConfig::default()),
        Err(Error::DatabaseNotFound(_))
    ));
}
