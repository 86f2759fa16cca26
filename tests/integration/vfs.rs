//! The storage seam: every file of a database goes through its `Vfs`.

use crate::common;

use lightning_db::vfs::FaultVfs;
use lightning_db::{Database, LightningDbConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        }
    }
}

/// A recording `Vfs` (the fault-injecting one, with no faults) sees the creation of
/// every file and directory that ends up in the database directory, through WAL
/// rotation, flushes, compactions, column-store rounds, SQL, drops and a reopen.
#[test]
fn every_file_in_the_database_directory_is_created_through_the_vfs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let vfs = FaultVfs::new();
    let cfg = LightningDbConfig {
        vfs: Some(Arc::new(vfs.clone())),
        columnar_background: false,
        ..common::small_config()
    };
    {
        let db = Database::create(&path, cfg.clone()).unwrap();
        for i in 0..3000 {
            db.put(&common::key(i), &common::value(i, 0)).unwrap();
        }
        db.sql("CREATE TABLE t (id BIGINT, v VARCHAR, PRIMARY KEY (id))")
            .unwrap();
        db.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .unwrap();
        db.compact_columnar("t").unwrap();
        db.sql("UPDATE t SET v = 'z' WHERE id = 2").unwrap();
        db.compact_columnar("t").unwrap();
        db.sql("CREATE TABLE u (id BIGINT, PRIMARY KEY (id)) AS SELECT id FROM t")
            .unwrap();
        db.drop_table("u").unwrap();
        db.compact().unwrap();
        db.checkpoint(dir.path().join("copy")).unwrap();
    }
    {
        let db = Database::open(&path, cfg).unwrap();
        db.put(b"after", b"reopen").unwrap();
    }
    let created = vfs.created();
    let mut files = Vec::new();
    walk(&path, &mut files);
    walk(&dir.path().join("copy"), &mut files);
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        assert!(
            created.contains(&f),
            "{} was not created through the Vfs",
            f.display()
        );
    }
}
