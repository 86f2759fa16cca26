//! The reliability review (issue 11): one test per defect it found, each named after the
//! behaviour that was broken. Heavier repetitions run with the `integration_tests`
//! feature.

use crate::common;

use lightning_db::{Database, Error, LightningDbConfig};

fn sql_ok_or_sql_error(db: &Database, q: &str) {
    match db.sql(q) {
        Ok(_) | Err(Error::Sql(_)) => {}
        Err(e) => panic!("expected a result or Error::Sql, got {e:?}"),
    }
}

/// Item 9: long expressions used to overflow the stack and abort the process.
#[test]
fn long_sql_expressions_get_a_result_or_an_error_never_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::default_config()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT, s VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')").unwrap();
    let terms = |n: usize, t: &str, op: &str| vec![t; n].join(op);
    // Within the depth limit: answered exactly.
    let b = db.sql(&format!("SELECT {}", terms(500, "1", "+"))).unwrap();
    let v = lightning_db::arrow::compute::cast(
        b[0].column(0),
        &lightning_db::arrow::datatypes::DataType::Int64,
    )
    .unwrap();
    let v = v
        .as_any()
        .downcast_ref::<lightning_db::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(v, 500);
    // The shapes that aborted the process: each gets a result or a clear error, fast.
    for n in [5_000, 20_000, 200_000] {
        let started = std::time::Instant::now();
        sql_ok_or_sql_error(&db, &format!("SELECT {}", terms(n, "1", "+")));
        sql_ok_or_sql_error(
            &db,
            &format!(
                "SELECT count(*) FROM t WHERE {}",
                terms(n, "id = 1", " OR ")
            ),
        );
        sql_ok_or_sql_error(&db, &format!("SELECT {} FROM t", terms(n, "s", " || ")));
        sql_ok_or_sql_error(&db, &format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)));
        sql_ok_or_sql_error(&db, &format!("SELECT {}1", "- ".repeat(n)));
        sql_ok_or_sql_error(&db, &format!("SELECT {} true", "NOT ".repeat(n)));
        sql_ok_or_sql_error(&db, &vec!["SELECT 1"; n].join(" UNION ALL "));
        sql_ok_or_sql_error(
            &db,
            &format!(
                "SELECT {}1{}",
                "(SELECT ".repeat(n.min(20_000)),
                ")".repeat(n.min(20_000))
            ),
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{n}: {:?}",
            started.elapsed()
        );
    }
    let e = db
        .sql(&format!("SELECT {}", terms(5_000, "1", "+")))
        .unwrap_err();
    assert!(e.to_string().contains("sql_max_expression_depth"), "{e}");
    assert!(!e.to_string().contains("SQL error: SQL error"), "{e}");
    // Over the size limit: refused before parsing.
    let huge = format!("SELECT {}", terms(600_000, "1", "+"));
    assert!(matches!(db.sql(&huge), Err(Error::Sql(m)) if m.contains("sql_max_statement_bytes")));
    // The database still works.
    db.sql("SELECT count(*) FROM t").unwrap();
}

/// Item 10: dropping a database inside an async runtime used to panic (its own tokio
/// runtime was dropped inside another one).
#[test]
fn dropping_a_database_inside_an_async_runtime_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = Database::create(&path, common::default_config()).unwrap();
        db.sql_async("CREATE TABLE t (id BIGINT, PRIMARY KEY (id))")
            .await
            .unwrap();
        db.sql_async("INSERT INTO t VALUES (1), (2)").await.unwrap();
        let n = db.sql_async("SELECT count(*) FROM t").await.unwrap();
        assert_eq!(n[0].num_rows(), 1);
        drop(db);
    });
    // Also from a task, and with a statement still running (the future dropped).
    rt.block_on(async {
        let db = Database::open(&path, common::default_config()).unwrap();
        tokio::spawn(async move {
            let q = db.sql_async("SELECT count(*) FROM t");
            let _ = tokio::time::timeout(std::time::Duration::from_micros(1), q).await;
            drop(db);
        })
        .await
        .unwrap();
    });
    drop(rt);
    let db = Database::open(&path, common::default_config()).unwrap();
    assert_eq!(db.scan_table("t", 100).unwrap()[0].num_rows(), 2);
}

/// Item 11: SQL could write any path, including the database's own files
/// (`COPY … TO '<db>/000004.sst'`), after which the database no longer opened.
#[test]
fn sql_never_reads_or_writes_database_files_and_file_access_is_configurable() {
    use lightning_db::SqlFileAccess;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, common::default_config()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO t VALUES (1), (2), (3)").unwrap();
    db.flush().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let before: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|f| {
            f.ends_with(".sst") || f.starts_with("MANIFEST") || *f == "CURRENT" || *f == "TREE"
        })
        .map(|f| (f.clone(), std::fs::read(path.join(f)).unwrap()))
        .collect();
    assert!(
        before
            .iter()
            .any(|(f, _)| f.ends_with(".sst") || f == "TREE")
    );
    let refused = |q: &str| {
        let e = db.sql(q).unwrap_err();
        assert!(matches!(e, Error::Sql(_)), "{q}: {e:?}");
        assert!(e.to_string().contains("database"), "{q}: {e}");
    };
    for (f, _) in &before {
        let target = path.join(f);
        refused(&format!(
            "COPY (SELECT 1) TO '{}' STORED AS PARQUET",
            target.display()
        ));
        refused(&format!(
            "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{}'",
            target.display()
        ));
    }
    refused(&format!(
        "COPY (SELECT 1) TO '{}/x.parquet' STORED AS PARQUET",
        path.join("columnar").display()
    ));
    // Through a symbolic link, too.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    refused(&format!(
        "COPY (SELECT 1) TO '{}/000004.sst' STORED AS PARQUET",
        link.display()
    ));
    for (f, bytes) in &before {
        assert_eq!(&std::fs::read(path.join(f)).unwrap(), bytes, "{f} changed");
    }
    // Elsewhere is fine by default.
    let out = dir.path().join("out.parquet");
    db.sql(&format!(
        "COPY (SELECT * FROM t) TO '{}' STORED AS PARQUET",
        out.display()
    ))
    .unwrap();
    db.close().unwrap();
    drop(db);
    let db = Database::open(&path, common::default_config()).unwrap();
    assert_eq!(db.scan_table("t", 10).unwrap()[0].num_rows(), 3);
    drop(db);

    // No file access at all.
    let none = LightningDbConfig {
        sql_file_access: SqlFileAccess::None,
        ..common::default_config()
    };
    let db = Database::open(&path, none).unwrap();
    for q in [
        format!(
            "CREATE EXTERNAL TABLE e STORED AS PARQUET LOCATION '{}'",
            out.display()
        ),
        format!(
            "COPY (SELECT 1) TO '{}' STORED AS PARQUET",
            dir.path().join("o2.parquet").display()
        ),
    ] {
        let e = db.sql(&q).unwrap_err();
        assert!(e.to_string().contains("sql_file_access"), "{e}");
    }
    drop(db);

    // Listed directories only.
    let allowed = dir.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::copy(&out, allowed.join("in.parquet")).unwrap();
    let dirs = LightningDbConfig {
        sql_file_access: SqlFileAccess::Directories(vec![allowed.clone()]),
        ..common::default_config()
    };
    let db = Database::open(&path, dirs).unwrap();
    db.sql(&format!(
        "CREATE EXTERNAL TABLE e STORED AS PARQUET LOCATION '{}'",
        allowed.join("in.parquet").display()
    ))
    .unwrap();
    assert_eq!(db.sql("SELECT * FROM e").unwrap()[0].num_rows(), 3);
    let e = db
        .sql(&format!(
            "CREATE EXTERNAL TABLE f STORED AS PARQUET LOCATION '{}'",
            out.display()
        ))
        .unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    // The DataFusion session is guarded the same way.
    let ctx = db.session().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(async {
        ctx.sql(&format!(
            "COPY (SELECT 1) TO '{}/000009.sst' STORED AS CSV",
            path.display()
        ))
        .await?
        .collect()
        .await
    });
    assert!(r.is_err());
    assert!(!path.join("000009.sst").exists());
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const WRITERS: u64 = 8;

fn wkey(t: u64, i: u64) -> Vec<u8> {
    format!("w{t}/{i:08}").into_bytes()
}

/// Writer values: small, or 0.3 to 3 KB (one commit group spans several pages).
fn wval_of(t: u64, i: u64, big: bool) -> Vec<u8> {
    let mut v = common::value(i, t);
    if big {
        v.resize(
            300 + ((i * 7 + t * 13) % 2700) as usize,
            b'0' + (i % 10) as u8,
        );
    }
    v
}

/// Durable writers that count what was acknowledged: writer `t` writes keys
/// `wkey(t, 0..)` in order, and `acked[t]` is how many of them returned.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Write errors are expected (a simulated power loss): writers just stop.
    dying: Arc<AtomicBool>,
    acked: Arc<Vec<AtomicU64>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// Writers of `wval` values (0.3 to 3 KB: one commit group spans several pages).
    fn start_big(db: &Arc<Database>) -> Writers {
        Self::start_with(db, None, true)
    }

    /// Writers of small values.
    fn start(db: &Arc<Database>) -> Writers {
        Self::start_with(db, None, false)
    }

    /// With `wrap`, writer `t` cycles over keys `wkey(t, 0..wrap)` (a busy database
    /// that does not grow).
    fn start_with(db: &Arc<Database>, wrap: Option<u64>, big: bool) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let dying = Arc::new(AtomicBool::new(false));
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let handles = (0..WRITERS)
            .map(|t| {
                let (db, stop, acked) = (db.clone(), stop.clone(), acked.clone());
                let dying = dying.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let k = wkey(t, wrap.map_or(i, |w| i % w));
                        let r = db.put(&k, &wval_of(t, i, big));
                        match r {
                            Ok(()) => {}
                            // After a simulated power loss every write fails.
                            Err(Error::Fatal(_) | Error::Io { .. })
                                if dying.load(Ordering::Relaxed) =>
                            {
                                return;
                            }
                            Err(e) => panic!("writer {t}: {e}"),
                        }
                        i += 1;
                        acked[t as usize].store(i, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Writers {
            stop,
            dying,
            acked,
            handles,
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
    }
}

/// Open the copy at `path` and check it holds at least `acked[t]` keys of writer `t`,
/// contiguous from 0, with their values (`big`: as `Writers::start_big` wrote them).
/// With `sample`, only the newest acknowledged key, the next one if present, and a
/// spread of older ones are read (the full scan grows with the database).
fn check_copy(path: &std::path::Path, acked: &[u64], big: bool, sample: bool) {
    let copy = Database::open(path, common::small_config())
        .unwrap_or_else(|e| panic!("copy {} does not open: {e}", path.display()));
    if sample {
        for t in 0..WRITERS {
            let n = acked[t as usize];
            let mut probe: Vec<u64> = (0..16).map(|j| n * j / 16).collect();
            probe.extend(n.checked_sub(1));
            for i in probe {
                assert_eq!(
                    copy.get(&wkey(t, i)).unwrap(),
                    Some(wval_of(t, i, big)),
                    "copy {}: acknowledged write {i} of writer {t} missing",
                    path.display()
                );
            }
        }
        return;
    }
    for t in 0..WRITERS {
        let prefix = format!("w{t}/").into_bytes();
        let mut n = 0;
        for r in copy.scan_prefix(&prefix).unwrap() {
            let (k, v) = r.unwrap();
            assert_eq!(k, wkey(t, n), "copy {}: gap in writer {t}", path.display());
            assert_eq!(v, wval_of(t, n, big));
            n += 1;
        }
        assert!(
            n >= acked[t as usize],
            "copy {}: writer {t} acknowledged {} writes before the copy began, the copy holds {n}",
            path.display(),
            acked[t as usize]
        );
    }
}

/// Item 1: a checkpoint or backup taken while writers run could copy the live WAL
/// mid-append (a zero page followed by valid records) and not open.
#[test]
fn checkpoints_and_backups_under_durable_writers_open_with_every_acknowledged_write() {
    let rounds = if cfg!(feature = "integration_tests") {
        200
    } else {
        40
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Arc::new(Database::create(&path, common::small_config()).unwrap());
    let writers = Writers::start(&db);
    std::thread::sleep(std::time::Duration::from_millis(50));
    for c in 0..rounds {
        let acked = writers.acked();
        let target = dir.path().join(format!("copy{c}"));
        if c % 2 == 0 {
            db.checkpoint(&target).unwrap();
        } else {
            // From the files alone, as another process would.
            lightning_db::backup_files(&path, &target).unwrap();
        }
        check_copy(&target, &acked, false, c % 10 != 9);
        std::fs::remove_dir_all(&target).unwrap();
    }
    let acked = writers.acked();
    writers.stop();
    assert!(
        acked.iter().sum::<u64>() > 200,
        "writers made no progress: {acked:?}"
    );
}

/// Item 2: `check` on a busy database reported files that a flush or compaction had
/// just replaced, and WAL appends in flight, as damage.
#[test]
fn check_on_a_busy_database_never_reports_a_false_failure() {
    let runs = if cfg!(feature = "integration_tests") {
        500
    } else {
        150
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = LightningDbConfig {
        columnar_compaction_interval: std::time::Duration::from_millis(20),
        ..common::small_config()
    };
    let db = Arc::new(Database::create(&path, cfg).unwrap());
    db.sql("CREATE TABLE t (id BIGINT, v VARCHAR, PRIMARY KEY (id))")
        .unwrap();
    let writers = Writers::start_with(&db, Some(3000), false);
    let sql_writer = {
        let db = db.clone();
        let stop = writers.stop.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                db.sql(&format!(
                    "INSERT OR REPLACE INTO t VALUES ({}, 'v{i}')",
                    i % 500
                ))
                .unwrap();
                i += 1;
            }
        })
    };
    for r in 0..runs {
        if let Err(e) = lightning_db::check_files(&path, 100, |_| {}) {
            panic!("check {r} of a healthy, busy database failed: {e}");
        }
    }
    let m = db.get_metrics();
    writers.stop();
    sql_writer.join().unwrap();
    // (The B+Tree engine has no table compactions: each flush rewrites the tree.)
    let btree = common::test_engine() == lightning_db::StorageEngine::BTree;
    assert!(m.flushes > 0 && (m.compactions > 0 || btree), "{m:?}");
}

/// Item 3: two handles creating one new path at once: the loser waited for the lock,
/// then built an empty database and deleted the winner's files as garbage.
#[test]
fn racing_creates_of_one_new_path_never_delete_another_handles_data() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let path = Arc::new(dir.path().join(format!("db{round}")));
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4u64)
            .map(|i| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = if i % 2 == 0 {
                        Database::create(&*path, common::small_config())
                    } else {
                        Database::open_or_create(&*path, common::small_config())
                    };
                    match r {
                        Ok(db) => {
                            db.put(format!("from{i}").as_bytes(), b"mine").unwrap();
                            db.flush().unwrap();
                            db.close().unwrap();
                            true
                        }
                        Err(Error::DatabaseExists(_) | Error::Locked(_)) => false,
                        Err(e) => panic!("handle {i}: unexpected {e}"),
                    }
                })
            })
            .collect();
        let won: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(won.iter().any(|w| *w));
        let db = Database::open(&*path, common::small_config()).unwrap();
        for (i, w) in won.iter().enumerate() {
            if *w {
                assert_eq!(
                    db.get(format!("from{i}").as_bytes()).unwrap().as_deref(),
                    Some(&b"mine"[..]),
                    "round {round}: the write of handle {i} is gone"
                );
            }
        }
    }
}

/// A new database holding `common::key(0..n)` with `common::value(i, version)`.
fn seeded_db(path: &std::path::Path, n: u64, version: u64) -> Database {
    let db = Database::create(path, common::small_config()).unwrap();
    for i in 0..n {
        db.put(&common::key(i), &common::value(i, version)).unwrap();
    }
    db
}

/// Item 4: `open_or_create` on a directory whose `CURRENT` was lost created a fresh
/// database and deleted the data. Now it is an error naming what was found, and
/// `repair` rebuilds `CURRENT` from the newest valid manifest.
#[test]
fn a_missing_current_is_an_error_and_repair_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seeded_db(&path, 2000, 1).close().unwrap();
    std::fs::remove_file(path.join("CURRENT")).unwrap();
    let listing = |p: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let files = listing(&path);
    for r in [
        Database::open_or_create(&path, common::small_config()),
        Database::open(&path, common::small_config()),
        Database::create(&path, common::small_config()),
    ] {
        match r {
            Err(Error::MissingCurrent { found, .. }) => {
                assert!(found.contains("MANIFEST-"), "{found}")
            }
            Err(Error::DirectoryNotEmpty { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a database without CURRENT"),
        }
    }
    assert_eq!(listing(&path), files, "files changed");
    let report = lightning_db::repair(&path, Default::default()).unwrap();
    assert!(report.current_rebuilt.is_some(), "{report:?}");
    let db = Database::open(&path, common::small_config()).unwrap();
    for i in 0..2000 {
        assert_eq!(db.get(&common::key(i)).unwrap(), Some(common::value(i, 1)));
    }
}

/// Item 5: `Database::create` in a non-empty directory deleted files it did not write
/// (`*.tmp`, numbered `*.sst`, `MANIFEST-*`).
#[test]
fn create_refuses_a_non_empty_directory_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine");
    std::fs::create_dir_all(&path).unwrap();
    let precious = [
        "notes.tmp",
        "000007.sst",
        "MANIFEST-000003",
        "000001.log",
        "data.csv",
    ];
    for f in precious {
        std::fs::write(path.join(f), f.as_bytes()).unwrap();
    }
    for r in [
        Database::create(&path, common::small_config()),
        Database::open_or_create(&path, common::small_config()),
    ] {
        match r {
            Err(e @ (Error::DirectoryNotEmpty { .. } | Error::MissingCurrent { .. })) => {
                assert!(
                    e.to_string().contains("000007.sst") || e.to_string().contains("not empty"),
                    "{e}"
                )
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("created a database in a non-empty directory"),
        }
    }
    let only_user = dir.path().join("user");
    std::fs::create_dir_all(&only_user).unwrap();
    std::fs::write(only_user.join("data.csv"), b"x").unwrap();
    assert!(matches!(
        Database::create(&only_user, common::small_config()),
        Err(Error::DirectoryNotEmpty { .. })
    ));
    for f in precious {
        assert_eq!(std::fs::read(path.join(f)).unwrap(), f.as_bytes(), "{f}");
    }
    // An empty directory is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    Database::create(&empty, common::small_config()).unwrap();
    // Opening a database never removes files it did not number itself.
    let db_path = dir.path().join("db");
    Database::create(&db_path, common::small_config())
        .unwrap()
        .close()
        .unwrap();
    let foreign = [
        "999999999.sst",
        "notes.tmp",
        "MANIFEST-999999999",
        "readme.txt",
    ];
    for f in foreign {
        std::fs::write(db_path.join(f), b"keep").unwrap();
    }
    let db = Database::open(&db_path, common::small_config()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    drop(db);
    Database::open(&db_path, common::small_config()).unwrap();
    for f in foreign {
        assert_eq!(std::fs::read(db_path.join(f)).unwrap(), b"keep", "{f}");
    }
}

const DROP_CHILD: &str = "LDB_DROP_TABLE_CHILD";

fn table_cfg() -> LightningDbConfig {
    LightningDbConfig {
        columnar_compaction_interval: std::time::Duration::from_millis(50),
        ..common::small_config()
    }
}

/// The child of `drop_table_is_one_commit_and_table_ids_are_never_reused`: opens the
/// database, says so, drops the big table, says so, and waits to be killed.
#[test]
fn drop_table_child() {
    let Ok(path) = std::env::var(DROP_CHILD) else {
        return;
    };
    let db = Database::open(&path, table_cfg()).unwrap();
    println!("READY");
    db.drop_table("big").unwrap();
    println!("DROPPED");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A fresh `FaultVfs` and the default configuration on it.
fn on_fault_vfs() -> (lightning_db::vfs::FaultVfs, LightningDbConfig) {
    let vfs = lightning_db::vfs::FaultVfs::new();
    let cfg = LightningDbConfig {
        vfs: Some(Arc::new(vfs.clone())),
        storage_engine: common::test_engine(),
        ..LightningDbConfig::default()
    };
    (vfs, cfg)
}

/// Rows of `table`, read through the table API.
fn table_row_count(db: &Database, table: &str) -> usize {
    let batches = db.scan_table(table, 100_000).unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Rows in the row store under any user table id (everything after the `kv` table).
fn raw_table_rows(db: &Database) -> u64 {
    db.engine()
        .iter(Some(&[0x01, 0, 0, 0, 1]), Some(&[0x02]), false)
        .unwrap()
        .count() as u64
}

/// Item 6: a SIGKILL during `drop_table` left the rows behind, and the next table got
/// the same id and so "held" the dropped table's rows.
#[test]
fn drop_table_is_one_commit_and_table_ids_are_never_reused() {
    use lightning_db::arrow::array::{Int64Array, RecordBatch, StringArray};
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    use std::io::BufRead;
    if std::env::var(DROP_CHILD).is_ok() {
        return;
    }
    let cycles = if cfg!(feature = "integration_tests") {
        12
    } else {
        4
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    let rows = 60_000i64;
    let exe = std::env::current_exe().unwrap();
    for cycle in 0..cycles {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = Database::create(&path, table_cfg()).unwrap();
            db.create_table("big", schema.clone(), &["id"]).unwrap();
            for chunk in 0..(rows / 10_000) {
                let ids: Vec<i64> = (chunk * 10_000..(chunk + 1) * 10_000).collect();
                let b = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ids.clone())),
                        Arc::new(StringArray::from_iter_values(
                            ids.iter().map(|i| format!("row {i}")),
                        )),
                    ],
                )
                .unwrap();
                db.insert("big", &b).unwrap();
            }
            db.close().unwrap();
        }
        let mut child = std::process::Command::new(&exe)
            .args([
                common::test_name(module_path!(), "drop_table_child").as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DROP_CHILD, &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("READY") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child died");
        }
        // Kill it at a different moment of the drop each cycle.
        std::thread::sleep(std::time::Duration::from_millis(cycle as u64 * 15));
        child.kill().unwrap();
        child.wait().unwrap();

        let db = Database::open(&path, table_cfg()).unwrap();
        if db.list_tables().unwrap().contains(&"big".to_string()) {
            // The drop never committed: the table is whole.
            let n = table_row_count(&db, "big");
            assert_eq!(n as i64, rows, "cycle {cycle}: half-dropped table");
            continue;
        }
        db.create_table("fresh", schema.clone(), &["id"]).unwrap();
        let n = table_row_count(&db, "fresh");
        assert_eq!(
            n, 0,
            "cycle {cycle}: a new table holds a dropped table's rows"
        );
        let c = db.sql("SELECT count(*) FROM fresh").unwrap();
        assert_eq!(
            lightning_db::arrow::array::AsArray::as_primitive::<
                lightning_db::arrow::datatypes::Int64Type,
            >(c[0].column(0))
            .value(0),
            0
        );
        // The dropped rows are reclaimed in the background, after the crash too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while raw_table_rows(&db) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "cycle {cycle}: {} rows of the dropped table never reclaimed",
                raw_table_rows(&db)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // Ids are never reused, also across reopens.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, table_cfg()).unwrap();
    db.create_table("a", schema.clone(), &["id"]).unwrap();
    db.insert(
        "a",
        &RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap(),
    )
    .unwrap();
    db.drop_table("a").unwrap();
    drop(db);
    let db = Database::open(&path, table_cfg()).unwrap();
    db.create_table("b", schema.clone(), &["id"]).unwrap();
    assert_eq!(db.scan_table("b", 10).unwrap()[0].num_rows(), 0);
}

/// A new database on a `FaultVfs`, compacting into the column store only when asked.
fn fault_db(path: &std::path::Path) -> (lightning_db::vfs::FaultVfs, Database) {
    let vfs = lightning_db::vfs::FaultVfs::new();
    let cfg = LightningDbConfig {
        columnar_background: false,
        vfs: Some(Arc::new(vfs.clone())),
        ..common::small_config()
    };
    (vfs, Database::create(path, cfg).unwrap())
}

/// Item 7: a column-store round that failed after writing some delete-bitmap files left
/// them behind; every later round then failed on them (`AlreadyExists`) until restart,
/// so the watermark stopped and row-store garbage collection stayed pinned.
#[test]
fn a_failed_column_store_round_leaves_nothing_behind_and_the_next_one_succeeds() {
    use lightning_db::arrow::array::{Int64Array, RecordBatch};
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    use lightning_db::vfs::{FaultKind, FaultOp, FaultRule};
    let dir = tempfile::tempdir().unwrap();
    let (vfs, db) = fault_db(&dir.path().join("db"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]));
    db.create_table("t", schema.clone(), &["id"]).unwrap();
    let put = |ids: std::ops::Range<i64>, v: i64| {
        let ids: Vec<i64> = ids.collect();
        let vs = vec![v; ids.len()];
        db.insert(
            "t",
            &RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(Int64Array::from(vs)),
                ],
            )
            .unwrap(),
        )
        .unwrap();
    };
    // Two segments, each with a delete bitmap.
    put(0..3000, 1);
    db.compact_columnar("t").unwrap();
    put(3000..6000, 1);
    db.compact_columnar("t").unwrap();
    put(0..10, 2);
    put(3000..3010, 2);
    db.compact_columnar("t").unwrap();
    assert_eq!(db.columnar_segment_paths("t").unwrap().len(), 3);
    let listing = || {
        let tdir = db.columnar_segment_paths("t").unwrap()[0]
            .parent()
            .unwrap()
            .to_path_buf();
        let mut v: Vec<String> = std::fs::read_dir(&tdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    // Change rows of both old segments; the round's second delete bitmap fails.
    put(10..20, 3);
    put(3010..3020, 3);
    vfs.inject(
        FaultRule::new(FaultOp::Create, FaultKind::NoSpace)
            .on(".del-")
            .after(1)
            .times(1),
    );
    let e = db.compact_columnar("t").unwrap_err();
    assert!(
        e.to_string().contains("No space") || e.to_string().contains("os error 28"),
        "{e}"
    );
    assert_eq!(listing(), before, "the failed round left files behind");
    vfs.clear_faults();
    // The next round succeeds, and the column store is exact.
    let r = db.compact_columnar("t").unwrap();
    assert!(r.rows_deleted >= 20, "{r:?}");
    let (_, batches) = db.columnar_rows("t", None).unwrap();
    let mut sum = 0i64;
    let mut n = 0;
    for b in &batches {
        let v = lightning_db::arrow::array::AsArray::as_primitive::<
            lightning_db::arrow::datatypes::Int64Type,
        >(b.column(1));
        sum += v.iter().map(|x| x.unwrap()).sum::<i64>();
        n += b.num_rows();
    }
    assert_eq!(n, 6000);
    assert_eq!(sum, 5960 + 20 * 2 + 20 * 3);
    // And so does `compact`, which needs the column store's watermark to move.
    db.compact().unwrap();
}

/// Item 8: after a power loss during a group commit, the newest WAL segment could hold a
/// damaged record followed by valid ones, none of them acknowledged, and the database
/// refused to open. Damage to records that had been durable is still refused, and
/// `repair --truncate-wal` drops it with a report.
#[test]
fn power_loss_during_group_commit_opens_with_every_acknowledged_write() {
    use lightning_db::vfs::PowerLoss;
    let seeds = if cfg!(feature = "integration_tests") {
        40
    } else {
        12
    };
    let mut torn_tails = 0;
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (vfs, cfg) = on_fault_vfs();
        let db = Arc::new(Database::create(&path, cfg).unwrap());
        let writers = Writers::start_big(&db);
        std::thread::sleep(std::time::Duration::from_millis(30 + seed * 7));
        writers.dying.store(true, Ordering::Relaxed);
        vfs.power_loss(PowerLoss::Torn { seed }).unwrap();
        let acked = writers.acked();
        // The process is gone: its threads only see errors now.
        writers.stop.store(true, Ordering::Relaxed);
        for h in writers.handles {
            let _ = h.join();
        }
        drop(db);
        let before = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count();
        assert!(before > 0);
        // Open on what survived, with a plain file system.
        check_copy(&path, &acked, true, false);
        // Was there an unsynced tail that recovery had to drop?
        if acked.iter().sum::<u64>() > 0 {
            torn_tails += 1;
        }
    }
    assert!(torn_tails > 0);
}

#[test]
fn damage_to_durable_wal_records_is_refused_and_repair_truncates_it_with_a_report() {
    use lightning_db::vfs::PowerLoss;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (vfs, cfg) = on_fault_vfs();
    let db = Database::create(&path, cfg).unwrap();
    for i in 0..100 {
        db.put(&common::key(i), &common::value(i, 0)).unwrap();
    }
    // Power goes: everything acknowledged is in the WAL, which nothing flushed.
    vfs.power_loss(PowerLoss::Clean).unwrap();
    drop(db);
    let wal = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let mut data = std::fs::read(&wal).unwrap();
    // Damage the 10th record (each is a few dozen bytes after the 24-byte header).
    let at = 24 + 10 * 60;
    data[at] ^= 0x55;
    std::fs::write(&wal, &data).unwrap();
    match Database::open(&path, common::default_config()) {
        Err(e) => assert!(e.is_corruption(), "{e}"),
        Ok(_) => panic!("opened over damaged durable WAL records"),
    }
    // Repair without --truncate-wal only reports.
    let r = lightning_db::repair(&path, Default::default()).unwrap();
    assert!(r.needs_truncate(), "{r:?}");
    assert!(Database::open(&path, common::default_config()).is_err());
    let r =
        lightning_db::repair(&path, lightning_db::RepairOptions { truncate_wal: true }).unwrap();
    assert_eq!(r.wal_dropped.len(), 1, "{r:?}");
    let d = &r.wal_dropped[0];
    assert!(d.commits >= 80 && d.operations == d.commits, "{d:?}");
    assert!(d.saved_as.exists());
    let db = Database::open(&path, common::default_config()).unwrap();
    let kept = (0..100)
        .take_while(|&i| db.get(&common::key(i)).unwrap().is_some())
        .count();
    assert!((5..=11).contains(&kept), "{kept} writes kept");
    assert_eq!(kept as u64 + d.commits, 99.max(kept as u64 + d.commits));
}

fn http_get(addr: std::net::SocketAddr, auth: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    (status, resp)
}

/// Item 12: the exporter served one connection at a time with a 2 s timeout per read,
/// so one client sending a byte every 1.9 s blocked every scrape.
#[test]
fn a_slow_or_idle_client_never_blocks_a_metrics_scrape() {
    use lightning_db::monitoring::PrometheusExporter;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::small_config()).unwrap();
    let exporter = PrometheusExporter::new(&db).with_bearer_token("s3cret");
    let addr = exporter.serve("127.0.0.1:0").unwrap();
    // Idle connections, and one that trickles its request a byte at a time.
    let idle: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: yyyyyyyyyyyyyyyy" {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let (status, body) = http_get(addr, Some("Bearer s3cret"));
        assert_eq!(status, 200, "{body}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "scrape took {:?}",
            t.elapsed()
        );
    }
    // The scheme is case-insensitive; the token is not.
    assert_eq!(http_get(addr, Some("bearer s3cret")).0, 200);
    assert_eq!(http_get(addr, Some("BEARER s3cret")).0, 200);
    assert_eq!(http_get(addr, Some("Bearer S3cret")).0, 401);
    assert_eq!(http_get(addr, Some("Bearer s3cre")).0, 401);
    assert_eq!(http_get(addr, None).0, 401);
    stop.store(true, Ordering::Relaxed);
    exporter.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err() || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let _ = write!(s, "GET /metrics HTTP/1.1\r\n\r\n");
            let mut b = [0u8; 1];
            !matches!(std::io::Read::read(&mut s, &mut b), Ok(1))
        },
        "still serving after stop"
    );
    // Serving again after stop is an error.
    assert!(exporter.serve("127.0.0.1:0").is_err());
    drop(idle);
    slow.join().unwrap();
}

/// Item 13: `close()` after a fatal error returned `Ok`.
#[test]
fn close_after_a_fatal_error_returns_that_error() {
    use lightning_db::vfs::{FaultKind, FaultOp, FaultRule, FaultVfs};
    let dir = tempfile::tempdir().unwrap();
    let vfs = FaultVfs::new();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            vfs: Some(Arc::new(vfs.clone())),
            ..common::small_config()
        },
    )
    .unwrap();
    db.put(b"a", b"1").unwrap();
    vfs.inject(FaultRule::new(FaultOp::Sync, FaultKind::Eio).on(".log"));
    assert!(matches!(db.put(b"b", b"2"), Err(Error::Fatal(_))));
    assert!(matches!(db.close(), Err(Error::Fatal(_))));
    assert!(matches!(db.close(), Err(Error::Fatal(_))), "every time");
    vfs.clear_faults();
    drop(db);
    let db = Database::open(dir.path().join("db"), common::small_config()).unwrap();
    assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    db.close().unwrap();
}

/// Item 13: a backup removed directories it did not create (its temporary names), and
/// copies to another file system were not verified.
#[test]
fn backups_never_remove_what_they_did_not_create_and_verify_copies_on_other_media() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = seeded_db(&path, 3000, 2);
    // Settle: no background compaction removes tables (and so links) under the test.
    db.compact().unwrap();
    let target = dir.path().join("bk");
    let mut theirs = Vec::new();
    for name in ["bk.partial0", "bk.partial1", "bk.partial", "bk.tmp"] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("mine.txt"), name).unwrap();
        theirs.push(d);
    }
    // A target that exists is refused and left alone.
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), b"k").unwrap();
    assert!(db.checkpoint(&target).is_err());
    assert!(lightning_db::backup_files(&path, &target).is_err());
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"k");
    std::fs::remove_dir_all(&target).unwrap();
    lightning_db::backup_files(&path, &target).unwrap();
    db.checkpoint(dir.path().join("cp")).unwrap();
    for d in &theirs {
        let name = d.file_name().unwrap().to_str().unwrap();
        assert_eq!(std::fs::read(d.join("mine.txt")).unwrap(), name.as_bytes());
    }
    // Only our copies are left next to them.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bk",
            "bk.partial",
            "bk.partial0",
            "bk.partial1",
            "bk.tmp",
            "cp",
            "db"
        ]
    );
    // On another file system (tmpfs), tables are real copies, not links.
    use std::os::unix::fs::MetadataExt;
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && std::fs::metadata(shm).unwrap().dev() != std::fs::metadata(dir.path()).unwrap().dev()
    {
        let other = tempfile::tempdir_in(shm).unwrap();
        for (i, t) in ["a", "b"].iter().enumerate() {
            let to = other.path().join(t);
            if i == 0 {
                db.checkpoint(&to).unwrap();
            } else {
                lightning_db::backup_files(&path, &to).unwrap();
            }
            let mut tables = 0;
            for e in std::fs::read_dir(&to).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".sst") || name == "TREE" {
                    tables += 1;
                    assert_eq!(e.metadata().unwrap().nlink(), 1);
                }
            }
            assert!(tables > 0);
            let copy = Database::open(&to, common::small_config()).unwrap();
            assert_eq!(
                copy.get(&common::key(2999)).unwrap(),
                Some(common::value(2999, 2))
            );
        }
    }
    // On the same file system, tables are hard links.
    let linked = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .all(|e| e.metadata().unwrap().nlink() > 1);
    assert!(linked);
}

/// Item 13: the `columnar/` directory's entry was never fsynced, so a power loss could
/// take the column store's published state with it.
#[test]
fn the_column_store_survives_a_power_loss_right_after_it_published() {
    use lightning_db::arrow::array::{Int64Array, RecordBatch};
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    use lightning_db::vfs::PowerLoss;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (vfs, db) = fault_db(&path);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    db.create_table("t", schema.clone(), &["id"]).unwrap();
    let rows = |r: std::ops::Range<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(r))],
        )
        .unwrap()
    };
    db.insert("t", &rows(0..5000)).unwrap();
    let w = db.compact_columnar("t").unwrap().watermark;
    assert!(w > 0);
    db.insert("t", &rows(5000..6000)).unwrap();
    vfs.power_loss(PowerLoss::Clean).unwrap();
    drop(db);
    let db = Database::open(
        &path,
        LightningDbConfig {
            columnar_background: false,
            ..common::small_config()
        },
    )
    .unwrap();
    let (watermark, batches) = db.columnar_rows("t", None).unwrap();
    assert_eq!(watermark, w, "the published column store was lost");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5000);
    assert_eq!(db.sql("SELECT count(*) FROM t").unwrap()[0].num_rows(), 1);
}

/// Item 13: `CREATE TABLE … AS SELECT` created the table first and inserted the rows
/// after, so a failing query left a table with part of them.
#[test]
fn create_table_as_select_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), table_cfg()).unwrap();
    db.sql("CREATE TABLE src (id BIGINT, PRIMARY KEY (id))")
        .unwrap();
    let mut b = lightning_db::KvBatch::new();
    let _ = &mut b;
    for chunk in 0..10 {
        let values: Vec<String> = (chunk * 5000..(chunk + 1) * 5000)
            .map(|i| format!("({i})"))
            .collect();
        db.sql(&format!("INSERT INTO src VALUES {}", values.join(",")))
            .unwrap();
    }
    let before = raw_table_rows(&db);
    // Fails on the last row only, after many batches went through.
    let e = db
        .sql(
            "CREATE TABLE dst (id BIGINT, x BIGINT, PRIMARY KEY (id)) AS \
             SELECT id, 10 / (id - 49999) FROM src",
        )
        .unwrap_err();
    assert!(matches!(e, Error::Sql(_)), "{e}");
    assert!(!db.list_tables().unwrap().contains(&"dst".to_string()));
    assert!(db.sql("SELECT * FROM dst").is_err());
    // The rows it had written are reclaimed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while raw_table_rows(&db) > before {
        assert!(std::time::Instant::now() < deadline, "rows never reclaimed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A good one appears whole.
    db.sql(
        "CREATE TABLE dst (id BIGINT, x BIGINT, PRIMARY KEY (id)) AS SELECT id, id * 2 FROM src",
    )
    .unwrap();
    let n = db.sql("SELECT count(*), sum(x) FROM dst").unwrap();
    use lightning_db::arrow::array::AsArray;
    use lightning_db::arrow::datatypes::Int64Type;
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 50_000);
}
