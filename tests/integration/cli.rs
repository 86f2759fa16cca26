//! The real `lightning-cli` binary: check (healthy and damaged), KV commands, import and
//! export, and backup/restore while another handle keeps writing. Also the
//! `Database::checkpoint` API behind backups.

use crate::common;

use lightning_db::{Database, LightningDbConfig};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lightning-cli"))
        .args(args)
        .output()
        .expect("lightning-cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seeded(p: &Path) {
    let db = Database::create(p, common::small_config()).unwrap();
    for i in 0..3000 {
        db.put(&common::key(i), &common::value(i, 0)).unwrap();
    }
    db.compact().unwrap();
    db.put(b"in-the-wal", b"yes").unwrap();
}

#[test]
fn check_passes_on_a_healthy_database_and_names_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    seeded(&p);
    let ps = p.to_str().unwrap();
    let (ok, out, err) = cli(&["check", ps, "--checksums", "100", "--verbose"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok:") && out.contains(".sst"), "{out}");
    let (ok, out, _) = cli(&["check", ps, "--checksums", "10"]);
    assert!(ok && out.contains("(10%)"), "{out}");

    let sst = std::fs::read_dir(&p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|x| x == "sst"))
        .unwrap();
    let mut data = std::fs::read(&sst).unwrap();
    data[100] ^= 0x01;
    std::fs::write(&sst, &data).unwrap();
    let (ok, _, err) = cli(&["check", ps, "--checksums", "100"]);
    assert!(!ok);
    let name = sst.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("corruption"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn check_names_a_damaged_column_segment() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let seg = {
        let db = Database::create(
            &p,
            LightningDbConfig {
                columnar_kv: true,
                ..common::small_config()
            },
        )
        .unwrap();
        db.put(b"a", b"1").unwrap();
        db.compact_columnar("kv").unwrap();
        db.columnar_segment_paths("kv").unwrap()[0].clone()
    };
    assert!(cli(&["check", p.to_str().unwrap()]).0);
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n / 2] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    let (ok, _, err) = cli(&["check", p.to_str().unwrap()]);
    assert!(
        !ok && err.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn kv_commands_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let ps = p.to_str().unwrap();
    assert!(cli(&["put", ps, "user:1", "Alice"]).0);
    assert!(cli(&["put", ps, "user:2", "Bob"]).0);
    let (ok, out, _) = cli(&["get", ps, "user:1"]);
    assert!(ok && out.trim() == "Alice");
    let (ok, out, _) = cli(&["scan", ps, "--prefix", "user:"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    let (ok, out, _) = cli(&["scan", ps, "--reverse", "--limit", "1"]);
    assert!(ok && out.starts_with("user:2"), "{out}");
    assert!(cli(&["delete", ps, "user:1"]).0);
    let (ok, _, err) = cli(&["get", ps, "user:1"]);
    assert!(
        !ok && err.starts_with("error:") && err.contains("not found"),
        "{err}"
    );
    let (ok, out, _) = cli(&["stats", ps]);
    assert!(ok && out.contains("health: healthy"), "{out}");
    assert!(cli(&["compact", ps]).0);
    let (ok, _, err) = cli(&["get", dir.path().join("nope").to_str().unwrap(), "k"]);
    assert!(!ok && err.contains("no database found"), "{err}");
}

#[test]
fn import_csv_and_export_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let ps = p.to_str().unwrap();
    let csv = dir.path().join("people.csv");
    let mut text = String::from("id,name,score\n");
    for i in 0..250 {
        text.push_str(&format!("{i},name{i},{}.5\n", i % 7));
    }
    std::fs::write(&csv, text).unwrap();
    assert!(cli(&["put", ps, "k", "v"]).0); // creates the database
    let (ok, out, err) = cli(&[
        "import",
        ps,
        csv.to_str().unwrap(),
        "--table",
        "people",
        "--key",
        "id",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 250 rows"), "{out}");
    let out_pq = dir.path().join("people.parquet");
    let (ok, out, err) = cli(&["export", ps, "people", out_pq.to_str().unwrap()]);
    assert!(ok && out.contains("exported 250 rows"), "{out}{err}");
    // Round trip: import the Parquet file into a second table.
    let (ok, _, err) = cli(&[
        "import",
        ps,
        out_pq.to_str().unwrap(),
        "--table",
        "people2",
        "--key",
        "id",
    ]);
    assert!(ok, "{err}");
    // Without --key the new table is keyless: importing the file twice appends twice.
    for _ in 0..2 {
        let (ok, out, err) = cli(&["import", ps, csv.to_str().unwrap(), "--table", "events"]);
        assert!(ok && out.contains("imported 250 rows"), "{out}{err}");
    }
    let db = Database::open(&p, LightningDbConfig::default()).unwrap();
    let a = db.scan_table("people", 1000).unwrap();
    let b = db.scan_table("people2", 1000).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].num_rows(), 250);
    let events = db.scan_table("events", 1000).unwrap();
    assert_eq!(events[0].num_columns(), 3);
    assert_eq!(events.iter().map(|b| b.num_rows()).sum::<usize>(), 500);
    assert!(db.table_primary_key("events").unwrap().is_empty());
}

#[test]
fn sql_command_and_shell() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let ps = p.to_str().unwrap();
    assert!(cli(&["put", ps, "k", "v"]).0);
    let (ok, out, err) = cli(&[
        "sql",
        ps,
        "-c",
        "CREATE TABLE t (id INT, name VARCHAR, PRIMARY KEY (id))",
    ]);
    assert!(ok && out.contains("OK"), "{out}{err}");
    assert!(
        cli(&[
            "sql",
            ps,
            "-c",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')"
        ])
        .0
    );
    let (ok, out, _) = cli(&["sql", ps, "-c", "SELECT name FROM t ORDER BY id"]);
    assert!(
        ok && out.contains("| one ") && out.contains("(2 rows)"),
        "{out}"
    );
    let (ok, _, err) = cli(&["sql", ps, "-c", "SELECT * FROM missing"]);
    assert!(!ok && err.starts_with("error:"), "{err}");
    // The interactive shell reads statements that span lines from stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightning-cli"))
        .args(["sql", ps])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*)\n  AS n FROM t;\nSELECT nope;\n\\q\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Piped SQL is a script: it ran to the end, and its exit status counts the failure.
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("| 2 |"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error:") && err.contains("1 statement failed"),
        "{err}"
    );
}

/// Writers put pairs (a/i, b/i) in one batch; a consistent copy has both or neither.
fn check_pairs(p: &Path) -> u64 {
    let db = Database::open(p, common::small_config()).unwrap();
    let a: Vec<_> = db
        .scan_prefix(b"a/")
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    let b: Vec<_> = db
        .scan_prefix(b"b/")
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(a.len(), b.len(), "torn batch in the copy");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x[2..], y[2..]);
    }
    a.len() as u64
}

fn writer(
    db: Arc<Database>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let k = format!("{i:08}");
            db.put_batch(&[
                (format!("a/{k}").into_bytes(), vec![7; 200]),
                (format!("b/{k}").into_bytes(), vec![8; 200]),
            ])
            .unwrap();
            i += 1;
            acked.store(i, Ordering::Release);
        }
    })
}

#[test]
fn backup_while_writing_restores_a_consistent_state() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = Arc::new(Database::create(&p, common::small_config()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let w = writer(db.clone(), stop.clone(), acked.clone());
    let mut copies = Vec::new();
    for n in 0..4 {
        while acked.load(Ordering::Acquire) < 300 * (n + 1) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let before = acked.load(Ordering::Acquire);
        let b = dir.path().join(format!("backup{n}"));
        let (ok, out, err) = cli(&["backup", p.to_str().unwrap(), b.to_str().unwrap()]);
        assert!(ok, "{out}{err}");
        copies.push((b, before));
    }
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    for (n, (b, before)) in copies.iter().enumerate() {
        assert!(cli(&["check", b.to_str().unwrap()]).0);
        let r = dir.path().join(format!("restored{n}"));
        let (ok, _, err) = cli(&["restore", b.to_str().unwrap(), r.to_str().unwrap()]);
        assert!(ok, "{err}");
        let pairs = check_pairs(&r);
        assert!(
            pairs >= *before,
            "backup {n} lost acknowledged writes: {pairs} < {before}"
        );
    }
    // Restoring over an existing path is refused.
    let (ok, _, err) = cli(&[
        "restore",
        copies[0].0.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");
}

#[test]
fn checkpoint_api_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = Arc::new(Database::create(&p, common::small_config()).unwrap());
    db.create_table(
        "t",
        Arc::new(lightning_db::arrow::datatypes::Schema::new(vec![
            lightning_db::arrow::datatypes::Field::new(
                "id",
                lightning_db::arrow::datatypes::DataType::Int64,
                false,
            ),
        ])),
        &["id"],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let w = writer(db.clone(), stop.clone(), acked.clone());
    while acked.load(Ordering::Acquire) < 500 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = acked.load(Ordering::Acquire);
    let cp = dir.path().join("checkpoint");
    db.checkpoint(&cp).unwrap();
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(
        db.checkpoint(&cp).is_err(),
        "checkpoint into an existing path"
    );
    assert!(check_pairs(&cp) >= before);
    let c = Database::open(&cp, common::small_config()).unwrap();
    assert_eq!(
        c.list_tables().unwrap(),
        vec!["kv".to_string(), "t".to_string()]
    );
}

/// `lightning-cli import` is all or nothing: a bad row late in the file leaves no new
/// table and no changed rows behind, and the file is read as a stream of batches.
#[test]
fn import_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let ps = p.to_str().unwrap();
    assert!(cli(&["put", ps, "k", "v"]).0);
    // 150,000 rows in batches of 64K; the last one is not a number.
    let csv = dir.path().join("big.csv");
    let mut text = String::from("id,score\n");
    for i in 0..150_000 {
        text.push_str(&format!("{i},{}\n", i % 100));
    }
    std::fs::write(&csv, &text).unwrap();
    let mut bad = text.clone();
    bad.push_str("150000,not-a-number\n");
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, &bad).unwrap();
    let (ok, _, err) = cli(&[
        "import",
        ps,
        bad_csv.to_str().unwrap(),
        "--table",
        "t",
        "--key",
        "id",
    ]);
    assert!(!ok, "a bad row was accepted");
    assert!(err.contains("bad.csv") || err.contains("parse"), "{err}");
    {
        let db = Database::open(&p, LightningDbConfig::default()).unwrap();
        assert!(!db.list_tables().unwrap().contains(&"t".to_string()));
    }
    let (ok, out, err) = cli(&[
        "import",
        ps,
        csv.to_str().unwrap(),
        "--table",
        "t",
        "--key",
        "id",
    ]);
    assert!(ok && out.contains("imported 150000 rows"), "{out}{err}");
    // Into the existing table: nothing of a failing import lands.
    let mut upd = String::from("id,score\n");
    for i in 0..150_000 {
        upd.push_str(&format!("{i},{}\n", 1000 + i % 100));
    }
    upd.push_str("7,oops\n");
    let upd_csv = dir.path().join("upd.csv");
    std::fs::write(&upd_csv, &upd).unwrap();
    let (ok, _, _) = cli(&["import", ps, upd_csv.to_str().unwrap(), "--table", "t"]);
    assert!(!ok);
    let db = Database::open(&p, LightningDbConfig::default()).unwrap();
    let r = db.sql("SELECT count(*), max(score) FROM t").unwrap();
    use lightning_db::arrow::array::AsArray;
    use lightning_db::arrow::datatypes::Int64Type;
    assert_eq!(r[0].column(0).as_primitive::<Int64Type>().value(0), 150_000);
    assert_eq!(r[0].column(1).as_primitive::<Int64Type>().value(0), 99);
}

/// `lightning-cli repair` rebuilds a lost CURRENT, and with `--truncate-wal` drops WAL
/// damage with a report.
#[test]
fn repair_rebuilds_current_and_truncates_a_damaged_wal_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let ps = p.to_str().unwrap();
    {
        let db = Database::create(&p, common::small_config()).unwrap();
        for i in 0..500 {
            db.put(&common::key(i), &common::value(i, 0)).unwrap();
        }
    }
    std::fs::remove_file(p.join("CURRENT")).unwrap();
    let (ok, _, err) = cli(&["get", ps, "key00000001"]);
    assert!(
        !ok && err.contains("CURRENT") && err.contains("repair"),
        "{err}"
    );
    let (ok, out, err) = cli(&["repair", ps]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("rebuilt CURRENT"), "{out}");
    let (ok, out, _) = cli(&["get", ps, "key00000001"]);
    assert!(ok && out.contains("value-1-0"), "{out}");
}

#[test]
fn export_writes_a_delta_table_and_partitioned_parquet_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let ps = p.to_str().unwrap();
    let (ok, out, err) = cli(&[
        "sql",
        ps,
        "-c",
        "CREATE TABLE t (id BIGINT, g VARCHAR, v INT, PRIMARY KEY (id)); \
         INSERT INTO t SELECT value, CASE WHEN value % 2 = 0 THEN 'even' ELSE 'odd' END, CAST(value AS INT) AS v FROM generate_series(1, 1000)",
    ]);
    assert!(ok, "{out}{err}");
    let delta = dir.path().join("delta");
    let ds = delta.to_str().unwrap();
    let export_delta = || {
        cli(&[
            "export",
            ps,
            "t",
            ds,
            "--format",
            "delta",
            "--partition-by",
            "g",
        ])
    };
    let (ok, out, err) = export_delta();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Delta table version 0") && out.contains("1000 rows"),
        "{out}"
    );
    assert!(delta.join("_delta_log/00000000000000000000.json").exists());
    assert!(delta.join("g=even").is_dir() && delta.join("g=odd").is_dir());
    let (ok, out, err) = export_delta();
    assert!(ok && out.contains("is current"), "{out}{err}");
    let (ok, out, err) = cli(&["sql", ps, "-c", "INSERT INTO t VALUES (5000, 'odd', 7)"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = export_delta();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("version 1")
            && out.contains("1001 rows")
            && out.contains("wrote 1 files (1 rows"),
        "{out}"
    );
    // The other partitioning into the same directory is refused with a clear message.
    let (ok, _, err) = cli(&["export", ps, "t", ds, "--format", "delta"]);
    assert!(!ok && err.contains("partitioned by [g]"), "{err}");

    let pq = dir.path().join("pq");
    let (ok, out, err) = cli(&[
        "export",
        ps,
        "t",
        pq.to_str().unwrap(),
        "--format",
        "parquet",
        "--partition-by",
        "g",
    ]);
    assert!(ok && out.contains("export version 0"), "{out}{err}");
    assert!(pq.join("_lightning_export.json").exists() && pq.join("g=odd").is_dir());
    let (ok, _, err) = cli(&["export", ps, "t", "x.parquet", "--partition-by", "g"]);
    assert!(!ok && err.contains("--format parquet or delta"), "{err}");
}
