//! Corruption tests: real bytes flipped in table files and in the WAL. A damaged byte is
//! reported as `Error::Corruption` (naming the file), or for the WAL's last record
//! treated as a torn write, and never returned as data.

mod common;

use common::{key, value};
use lightning_db::{Database, Error, LightningDbConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ENV: &str = "LDB_CORRUPTION_CHILD";

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Length of a WAL's written part (segments are preallocated; the rest is zeros).
fn written_len(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    data.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}

fn flip(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0x5a;
    std::fs::write(path, data).unwrap();
}

#[test]
fn flipped_byte_in_a_table_is_reported_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let cfg = LightningDbConfig {
        compression_enabled: false,
        ..common::small_config()
    };
    let n = 3000;
    {
        let db = Database::create(&p, cfg.clone()).unwrap();
        for i in 0..n {
            db.put(&key(i), &value(i, 0)).unwrap();
        }
        db.compact().unwrap();
    }
    let tables = files_with_ext(&p, "sst");
    assert!(!tables.is_empty());
    // Damage several positions in the data area of one table, one at a time.
    let victim = &tables[tables.len() / 2];
    let len = std::fs::metadata(victim).unwrap().len();
    let original = std::fs::read(victim).unwrap();
    for frac in [0.1, 0.3, 0.5, 0.7] {
        std::fs::write(victim, &original).unwrap();
        flip(victim, (len as f64 * frac) as u64);
        let mut corruption_seen = false;
        match Database::open(&p, cfg.clone()) {
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                corruption_seen = true;
            }
            Ok(db) => {
                for i in 0..n {
                    match db.get(&key(i)) {
                        Ok(v) => assert_eq!(v, Some(value(i, 0)), "wrong data returned"),
                        Err(Error::Corruption { file, .. }) => {
                            assert_eq!(&file, victim);
                            corruption_seen = true;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                let mut scan_err = false;
                for r in db.scan(None, None).unwrap() {
                    match r {
                        Ok((k, v)) => {
                            let i: u64 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
                            assert_eq!(v, value(i, 0));
                        }
                        Err(e) => {
                            assert!(e.is_corruption());
                            scan_err = true;
                        }
                    }
                }
                assert!(scan_err, "a full scan must meet the damaged block");
                assert!(db.engine().verify_tables().unwrap_err().is_corruption());
            }
        }
        assert!(
            corruption_seen,
            "flip at {frac} of {} not detected",
            victim.display()
        );
    }
}

fn wal_config() -> LightningDbConfig {
    LightningDbConfig {
        write_buffer_size: 1 << 20,
        ..Default::default()
    }
}

/// Child: write durable records, report, and wait to be killed (leaving a live WAL).
#[test]
fn corruption_child_writer() {
    let Ok(dir) = std::env::var(ENV) else {
        return;
    };
    let db = Database::create(&dir, wal_config()).unwrap();
    for i in 0..200 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    writeln!(std::io::stdout(), "READY").unwrap();
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(600));
}

fn db_with_live_wal(path: &Path) -> PathBuf {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "corruption_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, path)
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
    child.kill().unwrap();
    child.wait().unwrap();
    let wals = files_with_ext(path, "log");
    assert_eq!(wals.len(), 1);
    wals[0].clone()
}

#[test]
fn flipped_byte_in_the_wal_body_is_corruption() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let wal = db_with_live_wal(&p);
    let len = written_len(&wal);
    flip(&wal, len / 2);
    match Database::open(&p, wal_config()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, wal);
            assert!(offset > 0 && offset <= len / 2);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a damaged WAL body must not open silently"),
    }
}

#[test]
fn damaged_last_wal_record_is_a_torn_write() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let wal = db_with_live_wal(&p);
    let len = written_len(&wal);
    flip(&wal, len - 3);
    let db = Database::open(&p, wal_config()).unwrap();
    for i in 0..199 {
        assert_eq!(db.get(&key(i)).unwrap(), Some(value(i, 0)));
    }
    // The damaged last record is dropped, never returned with wrong bytes.
    assert_eq!(db.get(&key(199)).unwrap(), None);
    // Garbage in the preallocated space after the last record is a torn write too.
    drop(db);
    let wal = db_with_live_wal(&dir.path().join("db3"));
    flip(&wal, written_len(&wal) + 5000);
    let db = Database::open(dir.path().join("db3"), wal_config()).unwrap();
    assert_eq!(db.get(&key(199)).unwrap(), Some(value(199, 0)));
    // A truncated tail (a write cut short) is also a torn write.
    drop(db);
    let wal = db_with_live_wal(&dir.path().join("db2"));
    let len = written_len(&wal);
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len - 10).unwrap();
    let db = Database::open(dir.path().join("db2"), wal_config()).unwrap();
    assert_eq!(db.get(&key(198)).unwrap(), Some(value(198, 0)));
    assert_eq!(db.get(&key(199)).unwrap(), None);
}

#[test]
fn damaged_manifest_or_current_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    {
        let db = Database::create(&p, common::small_config()).unwrap();
        for i in 0..500 {
            db.put(&key(i), &value(i, 0)).unwrap();
        }
    }
    let manifest = std::fs::read_dir(&p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .unwrap();
    let original = std::fs::read(&manifest).unwrap();
    flip(&manifest, 30);
    let e = Database::open(&p, common::small_config())
        .err()
        .expect("must fail");
    assert!(e.is_corruption(), "{e}");
    std::fs::write(&manifest, &original).unwrap();
    flip(&p.join("CURRENT"), 3);
    let e = Database::open(&p, common::small_config())
        .err()
        .expect("must fail");
    assert!(e.is_corruption(), "{e}");
}
