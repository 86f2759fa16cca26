//! Encryption at rest: no plaintext on disk, every damaged byte detected, keys checked,
//! rotated and kept out of sight.

use lightning_db::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use lightning_db::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider, KeyStore, KeyStoreError};
use lightning_db::{Database, Error, LightningDbConfig, StorageEngine};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MARKER: &str = "ZEBRA-MARKER-7f3a9c";

fn cfg(cipher: Cipher, key: KeyProvider) -> LightningDbConfig {
    cfg_on(StorageEngine::Lsm, cipher, key)
}

/// Encrypted, on either storage engine.
fn cfg_on(engine: StorageEngine, cipher: Cipher, key: KeyProvider) -> LightningDbConfig {
    LightningDbConfig {
        encryption: Some(EncryptionConfig::new(cipher, key)),
        columnar_background: false,
        storage_engine: engine,
        ..LightningDbConfig::default()
    }
}

/// Every storage engine with every cipher.
const ENGINES_AND_CIPHERS: [(StorageEngine, Cipher); 4] = [
    (StorageEngine::Lsm, Cipher::Aes256Gcm),
    (StorageEngine::Lsm, Cipher::ChaCha20Poly1305),
    (StorageEngine::BTree, Cipher::Aes256Gcm),
    (StorageEngine::BTree, Cipher::ChaCha20Poly1305),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn holds(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

fn count(db: &Database, sql: &str) -> i64 {
    let b: Vec<RecordBatch> = db.sql(sql).unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Marker strings through the key-value API, the table API and SQL; some flushed, some
/// in column segments, some only in the WAL.
fn fill(db: &Database) {
    for i in 0..500 {
        db.put(
            format!("k{i:05}").as_bytes(),
            format!("{MARKER}-kv-{i}").as_bytes(),
        )
        .unwrap();
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    db.create_table("t", schema.clone(), &["id"]).unwrap();
    let ids: Vec<i64> = (0..3000).collect();
    let ss: Vec<String> = ids.iter().map(|i| format!("{MARKER}-table-{i}")).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(ss)),
        ],
    )
    .unwrap();
    db.insert("t", &batch).unwrap();
    db.sql("CREATE TABLE q (id BIGINT PRIMARY KEY, s VARCHAR)")
        .unwrap();
    db.sql(&format!(
        "INSERT INTO q SELECT value, '{MARKER}-sql-' || value FROM generate_series(1, 2000)"
    ))
    .unwrap();
    db.flush().unwrap();
    db.compact_columnar("t").unwrap();
    db.compact_columnar("q").unwrap();
    // Only in the WAL:
    db.put(b"wal-only", MARKER.as_bytes()).unwrap();
    db.sql(&format!("INSERT INTO q VALUES (5000, '{MARKER}-wal')"))
        .unwrap();
}

fn check_contents(db: &Database) {
    assert_eq!(
        db.get(b"k00007").unwrap().unwrap(),
        format!("{MARKER}-kv-7").as_bytes()
    );
    assert_eq!(db.get(b"wal-only").unwrap().unwrap(), MARKER.as_bytes());
    assert_eq!(count(db, "SELECT count(*) FROM t"), 3000);
    assert_eq!(
        count(
            db,
            &format!("SELECT count(*) FROM q WHERE s LIKE '{MARKER}%'")
        ),
        2001
    );
}

#[test]
fn no_plaintext_reaches_the_disk_and_everything_reads_back() {
    for (engine, cipher) in ENGINES_AND_CIPHERS {
        let cfg = |cipher, key| cfg_on(engine, cipher, key);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let key = KeyProvider::raw([42; 32]);
        let db = Database::create(&path, cfg(cipher, key.clone())).unwrap();
        assert_eq!(db.storage_engine(), engine);
        assert!(db.is_encrypted());
        fill(&db);
        check_contents(&db);
        let backup = dir.path().join("copy");
        db.checkpoint(&backup).unwrap();
        // Everything on disk, with the WAL still holding unflushed writes.
        for dir in [&path, &backup] {
            let all = files(dir);
            assert!(all.len() >= 5, "{all:?}");
            for f in &all {
                let b = std::fs::read(f).unwrap();
                assert!(
                    !holds(&b, MARKER.as_bytes()),
                    "{engine:?} {cipher:?}: {f:?} holds the marker"
                );
                assert!(!holds(&b, b"k00007"), "{f:?} holds a key");
            }
        }
        drop(db);
        let db = Database::open(&path, cfg(cipher, key.clone())).unwrap();
        check_contents(&db);
        drop(db);
        let copy = Database::open(&backup, cfg(cipher, key.clone())).unwrap();
        assert_eq!(copy.get(b"wal-only").unwrap().unwrap(), MARKER.as_bytes());
        assert_eq!(count(&copy, "SELECT count(*) FROM q"), 2001);
    }
}

fn expect_wrong_key<T>(r: lightning_db::Result<T>, what: &str) {
    match r {
        Err(Error::WrongKey(m)) => {
            assert!(!m.contains("2a2a") && !m.contains("hunter2"), "{m}");
        }
        Err(e) => panic!("{what}: expected WrongKey, got {e}"),
        Ok(_) => panic!("{what}: opened"),
    }
}

#[test]
fn wrong_or_missing_keys_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(&path, cfg(Cipher::Aes256Gcm, KeyProvider::raw([42; 32]))).unwrap();
    db.put(b"a", b"1").unwrap();
    drop(db);
    let before: Vec<(PathBuf, Vec<u8>)> = files(&path)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    expect_wrong_key(
        Database::open(&path, cfg(Cipher::Aes256Gcm, KeyProvider::raw([43; 32]))),
        "wrong key",
    );
    expect_wrong_key(
        Database::open(
            &path,
            cfg(Cipher::Aes256Gcm, KeyProvider::passphrase("hunter2")),
        ),
        "passphrase for a raw key",
    );
    expect_wrong_key(
        Database::open(&path, LightningDbConfig::default()),
        "no key",
    );
    expect_wrong_key(
        Database::open_read_only(&path, LightningDbConfig::default()),
        "no key, read-only",
    );
    let after: Vec<(PathBuf, Vec<u8>)> = files(&path)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert_eq!(before, after, "a refused open changed the directory");
    // A read-only handle with the key reads and writes nothing (no epoch claimed).
    let ro = Database::open_read_only(&path, cfg(Cipher::Aes256Gcm, KeyProvider::raw([42; 32])))
        .unwrap();
    assert_eq!(ro.get(b"a").unwrap().unwrap(), b"1");
    assert!(matches!(
        ro.rotate_key(KeyProvider::raw([1; 32])),
        Err(Error::ReadOnly)
    ));
    drop(ro);
    let after: Vec<(PathBuf, Vec<u8>)> = files(&path)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert_eq!(before, after, "a read-only open changed the directory");

    // A plaintext database with a key configured.
    let plain = dir.path().join("plain");
    Database::create(&plain, LightningDbConfig::default())
        .unwrap()
        .put(b"a", b"1")
        .unwrap();
    expect_wrong_key(
        Database::open(&plain, cfg(Cipher::Aes256Gcm, KeyProvider::raw([42; 32]))),
        "plaintext with a key",
    );
    assert!(Database::open(&plain, LightningDbConfig::default()).is_ok());
}

#[test]
fn rotation_keeps_every_row_and_retires_the_old_key() {
    for engine in [StorageEngine::Lsm, StorageEngine::BTree] {
        rotation_on(engine);
    }
}

fn rotation_on(engine: StorageEngine) {
    let cfg = |cipher, key| cfg_on(engine, cipher, key);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old = KeyProvider::passphrase("correct horse battery staple");
    let new = KeyProvider::raw([7; 32]);
    let db = Database::create(&path, cfg(Cipher::ChaCha20Poly1305, old.clone())).unwrap();
    fill(&db);
    db.rotate_key(new.clone()).unwrap();
    // Online: the open handle keeps working and writing.
    db.put(b"after", b"rotation").unwrap();
    check_contents(&db);
    drop(db);
    expect_wrong_key(
        Database::open(&path, cfg(Cipher::ChaCha20Poly1305, old)),
        "old key after rotation",
    );
    let db = Database::open(&path, cfg(Cipher::ChaCha20Poly1305, new)).unwrap();
    check_contents(&db);
    assert_eq!(db.get(b"after").unwrap().unwrap(), b"rotation");
}

#[test]
fn key_providers_from_env_file_and_a_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let hex: String = (0..32).map(|i| format!("{:02x}", i * 7 % 256)).collect();
    let keyfile = dir.path().join("master.key");
    std::fs::write(&keyfile, format!("{hex}\n")).unwrap();
    // SAFETY: set before any thread of this test reads the environment; the name is
    // unique to this test.
    unsafe { std::env::set_var("LIGHTNING_TEST_ENCRYPTION_KEY_1", &hex) };
    let path = dir.path().join("db");
    let db = Database::create(&path, cfg(Cipher::Aes256Gcm, KeyProvider::file(&keyfile))).unwrap();
    db.put(b"a", b"1").unwrap();
    drop(db);
    // The same key through the environment.
    let db = Database::open(
        &path,
        cfg(
            Cipher::Aes256Gcm,
            KeyProvider::env("LIGHTNING_TEST_ENCRYPTION_KEY_1"),
        ),
    )
    .unwrap();
    assert_eq!(db.get(b"a").unwrap().unwrap(), b"1");

    /// A "KMS" that XORs with its own secret.
    struct Xor(u8);
    impl KeyStore for Xor {
        fn wrap(&self, key: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
            Ok(key.iter().map(|b| b ^ self.0).chain([self.0]).collect())
        }
        fn unwrap(&self, w: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
            if w.last() != Some(&self.0) {
                return Err("not my key".into());
            }
            Ok(w[..w.len() - 1].iter().map(|b| b ^ self.0).collect())
        }
    }
    db.rotate_key(KeyProvider::custom(Xor(0x5a))).unwrap();
    drop(db);
    expect_wrong_key(
        Database::open(&path, cfg(Cipher::Aes256Gcm, KeyProvider::custom(Xor(1)))),
        "another key store",
    );
    let db = Database::open(
        &path,
        cfg(Cipher::Aes256Gcm, KeyProvider::custom(Xor(0x5a))),
    )
    .unwrap();
    assert_eq!(db.get(b"a").unwrap().unwrap(), b"1");
}

/// Flip bytes all over every file: the database either refuses to open or read with a
/// corruption error, or (for the WAL's torn-tail rule and unused bytes) opens with
/// correct data — never wrong data.
#[test]
fn a_flipped_byte_anywhere_is_detected_never_returned_as_data() {
    for engine in [StorageEngine::Lsm, StorageEngine::BTree] {
        flips_on(engine);
    }
}

fn flips_on(engine: StorageEngine) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let key = KeyProvider::raw([42; 32]);
    let db = Database::create(&path, cfg_on(engine, Cipher::Aes256Gcm, key.clone())).unwrap();
    for i in 0..300 {
        db.put(format!("k{i:05}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    db.sql("CREATE TABLE q (id BIGINT PRIMARY KEY, v BIGINT)")
        .unwrap();
    db.sql("INSERT INTO q SELECT value, value * 3 FROM generate_series(1, 3000)")
        .unwrap();
    db.flush().unwrap();
    db.compact_columnar("q").unwrap();
    for i in 300..400 {
        db.put(format!("k{i:05}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    drop(db);
    let pristine = dir.path().join("pristine");
    copy_dir(&path, &pristine);
    let mut detected = 0;
    for f in files(&pristine) {
        let rel = f.strip_prefix(&pristine).unwrap().to_path_buf();
        let len = std::fs::metadata(&f).unwrap().len() as usize;
        if len == 0 || rel.file_name().is_some_and(|n| n == "LOCK") {
            continue;
        }
        // A few positions per file: the header, the first block (and the B+Tree's
        // second page: its meta pages are its first two), the middle, the end.
        for at in [0, 40, 4096 + 20, 4096 + 4124 + 20, len / 2, len - 1] {
            if at >= len {
                continue;
            }
            let _ = std::fs::remove_dir_all(&path);
            copy_dir(&pristine, &path);
            let target = path.join(&rel);
            let mut b = std::fs::read(&target).unwrap();
            b[at] ^= 0x10;
            std::fs::write(&target, &b).unwrap();
            match verify(&path, engine, key.clone()) {
                Ok(()) => {}
                Err(e) => {
                    detected += 1;
                    let text = e.to_string();
                    assert!(
                        e.is_corruption() || matches!(e, Error::WrongKey(_)),
                        "{engine:?} {rel:?}@{at}: {text}"
                    );
                }
            }
        }
    }
    assert!(
        detected > 5,
        "{engine:?}: only {detected} flips were detected"
    );
}

/// Open and read everything; any difference from what was written panics.
fn verify(path: &Path, engine: StorageEngine, key: KeyProvider) -> lightning_db::Result<()> {
    let db = Database::open(path, cfg_on(engine, Cipher::Aes256Gcm, key))?;
    for i in 0..400 {
        let got = db.get(format!("k{i:05}").as_bytes())?;
        // A flip in the WAL's last record may drop it as a torn tail (as without
        // encryption); otherwise every value is exact.
        if let Some(v) = got {
            assert_eq!(v, format!("v{i}").as_bytes(), "wrong data for k{i}");
        } else {
            assert!(i >= 300, "k{i} lost");
        }
    }
    let b: Vec<RecordBatch> = db.sql("SELECT sum(v), count(*) FROM q")?;
    if b[0].column(1).as_primitive::<Int64Type>().value(0) != 3000
        || b[0].column(0).as_primitive::<Int64Type>().value(0) != 3 * 3000 * 3001 / 2
    {
        panic!("wrong data from SQL");
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

#[test]
fn config_debug_never_shows_the_key() {
    let c = cfg(Cipher::Aes256Gcm, KeyProvider::raw([0xab; 32]));
    let s = format!("{c:?}");
    assert!(
        !s.contains("171") && !s.to_lowercase().contains("abab"),
        "{s}"
    );
    let c = cfg(Cipher::Aes256Gcm, KeyProvider::passphrase("hunter2"));
    assert!(!format!("{c:?}").contains("hunter2"));
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lightning-cli"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("lightning-cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lightning-cli` with `--key-file` / `--passphrase-env` on every command, and `rekey`.
#[test]
fn the_cli_takes_keys_for_every_command_and_rekeys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let ks = db.to_str().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, [5u8; 32]).unwrap();
    let kf = key.to_str().unwrap();
    let (ok, out, err) = cli(&["--key-file", kf, "put", ks, "secret-key", MARKER], &[]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(
        &[
            "--key-file",
            kf,
            "sql",
            ks,
            "-c",
            &format!(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, s VARCHAR); INSERT INTO t VALUES (1, '{MARKER}');"
            ),
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["--key-file", kf, "get", ks, "secret-key"], &[]);
    assert!(ok && out.trim() == MARKER, "{out}{err}");
    let (ok, out, err) = cli(&["--key-file", kf, "check", ks], &[]);
    assert!(ok && out.contains("ok:"), "{out}{err}");
    // Without the key, or with another: a clear error, not garbage.
    let (ok, _, err) = cli(&["get", ks, "secret-key"], &[]);
    assert!(!ok && err.contains("encrypt"), "{err}");
    let (ok, _, err) = cli(&["check", ks], &[]);
    assert!(!ok && err.contains("encrypt"), "{err}");
    let (ok, _, err) = cli(
        &["--passphrase-env", "LDB_PW", "get", ks, "secret-key"],
        &[("LDB_PW", "nope")],
    );
    assert!(!ok && err.contains("wrong encryption key"), "{err}");
    // A backup stays encrypted and opens with the same key.
    let bk = dir.path().join("backup");
    let (ok, out, err) = cli(&["--key-file", kf, "backup", ks, bk.to_str().unwrap()], &[]);
    assert!(ok, "{out}{err}");
    for f in files(&bk) {
        assert!(
            !holds(&std::fs::read(&f).unwrap(), MARKER.as_bytes()),
            "{f:?}"
        );
    }
    let (ok, out, err) = cli(
        &["--key-file", kf, "get", bk.to_str().unwrap(), "secret-key"],
        &[],
    );
    assert!(ok && out.trim() == MARKER, "{out}{err}");
    // An encrypted Parquet export of the table, under its own key.
    let pq = dir.path().join("t.parquet");
    let (ok, out, err) = cli(
        &[
            "--key-file",
            kf,
            "export",
            ks,
            "t",
            pq.to_str().unwrap(),
            "--encrypt-passphrase-env",
            "LDB_PQ",
        ],
        &[("LDB_PQ", "parquet secret")],
    );
    assert!(ok && out.contains("exported 1 rows"), "{out}{err}");
    assert!(!holds(&std::fs::read(&pq).unwrap(), MARKER.as_bytes()));
    let back = lightning_db::encryption::read_encrypted_parquet(
        &pq,
        KeyProvider::passphrase("parquet secret"),
    )
    .unwrap();
    assert_eq!(back[0].num_rows(), 1);
    // Rekey to a passphrase: the old key stops working.
    let (ok, out, err) = cli(
        &[
            "--key-file",
            kf,
            "rekey",
            ks,
            "--new-passphrase-env",
            "LDB_NEW",
        ],
        &[("LDB_NEW", "a new passphrase")],
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli(&["--key-file", kf, "get", ks, "secret-key"], &[]);
    assert!(!ok && err.contains("wrong encryption key"), "{err}");
    let (ok, out, err) = cli(
        &[
            "--passphrase-env",
            "LDB_NEW",
            "sql",
            ks,
            "-c",
            "SELECT s FROM t",
        ],
        &[("LDB_NEW", "a new passphrase")],
    );
    assert!(ok && out.contains(MARKER), "{out}{err}");
}

#[test]
fn parquet_exports_are_plaintext_unless_encryption_is_asked_for() {
    use lightning_db::encryption::read_encrypted_parquet;
    let d = tempfile::tempdir().unwrap();
    let db = Database::create(d.path().join("db"), LightningDbConfig::default()).unwrap();
    db.sql("CREATE TABLE q (id BIGINT PRIMARY KEY, s VARCHAR)")
        .unwrap();
    db.sql(&format!(
        "INSERT INTO q SELECT value, '{MARKER}-' || value FROM generate_series(1, 2000)"
    ))
    .unwrap();
    let plain = d.path().join("plain.parquet");
    assert_eq!(db.export_parquet("q", &plain).unwrap(), 2000);
    let plain_bytes = std::fs::read(&plain).unwrap();
    assert!(holds(&plain_bytes, MARKER.as_bytes()) && holds(&plain_bytes, b"ARROW:schema"));

    for (name, key, wrong) in [
        ("raw", KeyProvider::raw([3; 32]), KeyProvider::raw([4; 32])),
        (
            "passphrase",
            KeyProvider::passphrase("correct horse"),
            KeyProvider::passphrase("wrong horse"),
        ),
    ] {
        let out = d.path().join(format!("{name}.parquet"));
        assert_eq!(db.export_parquet_encrypted("q", &out, &key).unwrap(), 2000);
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            !holds(&bytes, MARKER.as_bytes()),
            "{name}: plaintext in the file"
        );
        assert!(
            !holds(&bytes, b"ARROW:schema"),
            "{name}: the footer (schema) is encrypted too"
        );
        // An ordinary reader without the key gets nothing out.
        use lightning_db::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        assert!(
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap()).is_err()
        );
        assert!(
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&plain).unwrap()).is_ok()
        );
        let back = read_encrypted_parquet(&out, key.clone()).unwrap();
        let rows: usize = back.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 2000, "{name}");
        let ids = back[0].column(0).as_primitive::<Int64Type>();
        let s = back[0].column(1).as_string::<i32>();
        assert_eq!(s.value(0), format!("{MARKER}-{}", ids.value(0)));
        expect_wrong_key(read_encrypted_parquet(&out, wrong), name);
        // A damaged byte is found, never returned as data.
        let mut bad = bytes.clone();
        let mid = bad.len() / 3;
        bad[mid] ^= 0x40;
        let damaged = d.path().join(format!("{name}-damaged.parquet"));
        std::fs::write(&damaged, &bad).unwrap();
        assert!(read_encrypted_parquet(&damaged, key).is_err(), "{name}");
    }
}
