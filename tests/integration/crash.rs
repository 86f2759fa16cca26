//! Crash test: a child process writes durable keys and batches and reports every
//! acknowledged write on stdout; the parent kills it with SIGKILL at a random moment,
//! reopens the database and checks that every acknowledged write is present with its
//! exact value and every batch is all-or-nothing. Repeated for many cycles on one
//! database, so kills land during flushes, compactions and WAL rotation too.

use crate::common;

use lightning_db::arrow::array::AsArray;
use lightning_db::arrow::datatypes::Int64Type;
use lightning_db::{Database, Durability, LightningDbConfig};
use rand::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BATCH: u64 = 8;
const ENV: &str = "LDB_CRASH_CHILD";

/// `enc`: 0 plaintext, 1 AES-256-GCM, 2 ChaCha20-Poly1305 at rest, `BTREE` plaintext
/// on the B+Tree engine, `BTREE_ENC` the B+Tree engine with ChaCha20-Poly1305.
fn config(cycle: u64, enc: u8) -> LightningDbConfig {
    use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider};
    let cipher = match enc {
        1 => Some(Cipher::Aes256Gcm),
        2 | BTREE_ENC => Some(Cipher::ChaCha20Poly1305),
        _ => None,
    };
    LightningDbConfig {
        storage_engine: match enc {
            BTREE | BTREE_ENC => lightning_db::StorageEngine::BTree,
            _ => lightning_db::StorageEngine::Lsm,
        },
        encryption: cipher.map(|c| EncryptionConfig::new(c, KeyProvider::raw([3; 32]))),
        page_size: 1024,
        write_buffer_size: 32 * 1024,
        // Every other cycle, memtables a quarter of the write buffer: the LSM flushes
        // several frozen ones merged, the B+Tree engine gathers them per merge.
        memtable_size: if cycle.is_multiple_of(2) {
            8 * 1024
        } else {
            32 * 1024
        },
        level0_compaction_trigger: 2,
        level0_stop_writes_trigger: 8,
        level_base_size: 64 * 1024,
        target_file_size: 32 * 1024,
        durability: if cycle % 3 == 2 {
            Durability::Buffered // survives a process kill (not power loss)
        } else {
            Durability::Sync
        },
        improved_wal: cycle % 4 != 3,
        ..Default::default()
    }
}

fn single_key(cycle: u64, n: u64) -> Vec<u8> {
    format!("s/{cycle:03}/{n:08}").into_bytes()
}
fn batch_key(cycle: u64, n: u64, i: u64) -> Vec<u8> {
    format!("b/{cycle:03}/{n:08}/{i}").into_bytes()
}
fn val(cycle: u64, n: u64) -> Vec<u8> {
    let mut v = format!("v{cycle}:{n}:").into_bytes();
    v.resize(40 + (n % 200) as usize, b'a' + (n % 26) as u8);
    v
}

/// The child's body: runs only when the parent started this binary with `ENV` set.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (dir, cycle, enc) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    );
    let db = Database::open_or_create(dir, config(cycle, enc)).unwrap();
    let threads = 3u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let db = unsafe_share(&db);
            std::thread::spawn(move || {
                let out = std::io::stdout();
                for j in 0.. {
                    let n = j * threads + t;
                    if n.is_multiple_of(2) {
                        db.put(&single_key(cycle, n), &val(cycle, n)).unwrap();
                        writeln!(out.lock(), "ACK S {n}").unwrap();
                    } else {
                        let batch: Vec<_> = (0..BATCH)
                            .map(|i| (batch_key(cycle, n, i), val(cycle, n + i)))
                            .collect();
                        db.put_batch(&batch).unwrap();
                        writeln!(out.lock(), "ACK B {n}").unwrap();
                    }
                    // A counter overwritten again and again.
                    if t == 0 {
                        let c = cycle * 1_000_000_000 + n;
                        db.put(b"counter", c.to_string().as_bytes()).unwrap();
                        writeln!(out.lock(), "ACK C {c}").unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn unsafe_share(db: &Database) -> &'static Database {
    // The child process is killed, never returns: leaking the handle is fine there.
    let p: *const Database = db;
    // SAFETY: `db` lives until the end of `crash_child_writer`, which joins every thread
    // that uses this reference (in practice the process is killed first).
    unsafe { &*p }
}

#[derive(Default)]
struct Expect {
    singles: BTreeMap<(u64, u64), Vec<u8>>,
    batches: Vec<(u64, u64)>,
    counter_min: Option<u64>,
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    let cycles = if cfg!(feature = "integration_tests") {
        60
    } else {
        20
    };
    sigkill_cycles(cycles, 0);
}

/// The same with every file encrypted: a kill leaves torn encrypted blocks at the end
/// of the WAL, and rewrites of the last block must never repeat a nonce.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write_encrypted() {
    let cycles = if cfg!(feature = "integration_tests") {
        30
    } else {
        8
    };
    sigkill_cycles(cycles, 1);
    sigkill_cycles(cycles / 2, 2);
}

/// The same on the B+Tree engine: a kill during a flush leaves the tree file with pages
/// written after its last published root.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write_btree() {
    let cycles = if cfg!(feature = "integration_tests") {
        40
    } else {
        12
    };
    sigkill_cycles(cycles, BTREE);
}

/// The same on the B+Tree engine with the tree encrypted: each page sealed on its own,
/// so a kill mid-flush never reseals a page of the published tree.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write_btree_encrypted() {
    let cycles = if cfg!(feature = "integration_tests") {
        20
    } else {
        6
    };
    sigkill_cycles(cycles, BTREE_ENC);
}

const BTREE: u8 = 9;
const BTREE_ENC: u8 = 10;

fn sigkill_cycles(cycles: u64, enc: u8) {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut expect = Expect::default();
    let mut rng = rand::rng();
    let exe = std::env::current_exe().unwrap();
    let mut total_acks = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                common::test_name(module_path!(), "crash_child_writer").as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, format!("{}|{cycle}|{enc}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines() {
                    let Ok(l) = l else { break };
                    lines.lock().unwrap().push(l);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let lines = lines.lock().unwrap();
        let mut acks = 0;
        for l in lines.iter() {
            let mut parts = l.split_whitespace();
            if parts.next() != Some("ACK") {
                continue;
            }
            let (Some(kind), Some(n)) = (parts.next(), parts.next().and_then(|n| n.parse().ok()))
            else {
                continue;
            };
            acks += 1;
            match kind {
                "S" => {
                    expect.singles.insert((cycle, n), val(cycle, n));
                }
                "B" => expect.batches.push((cycle, n)),
                "C" => {
                    expect.counter_min = Some(expect.counter_min.map_or(n, |m: u64| m.max(n)));
                }
                _ => {}
            }
        }
        total_acks += acks;

        // Recover and check everything acknowledged so far, in all cycles.
        let db = Database::open(&path, config(cycle, enc)).unwrap();
        for ((c, n), v) in &expect.singles {
            assert_eq!(
                db.get(&single_key(*c, *n)).unwrap().as_ref(),
                Some(v),
                "cycle {cycle}: acknowledged put {c}/{n} lost"
            );
        }
        for (c, n) in &expect.batches {
            for i in 0..BATCH {
                assert_eq!(
                    db.get(&batch_key(*c, *n, i)).unwrap(),
                    Some(val(*c, n + i)),
                    "cycle {cycle}: acknowledged batch {c}/{n} incomplete"
                );
            }
        }
        // Every batch present at all is complete (acknowledged or not).
        let prefix = format!("b/{cycle:03}/").into_bytes();
        let mut per_batch: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for r in db.scan_prefix(&prefix).unwrap() {
            let (k, _) = r.unwrap();
            let id = k[..k.iter().rposition(|&b| b == b'/').unwrap()].to_vec();
            *per_batch.entry(id).or_default() += 1;
        }
        for (id, n) in per_batch {
            assert_eq!(n, BATCH, "batch {} is torn", String::from_utf8_lossy(&id));
        }
        if let Some(min) = expect.counter_min {
            let c: u64 = String::from_utf8(db.get(b"counter").unwrap().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert!(c >= min, "counter went back from acknowledged {min} to {c}");
        }
        db.engine().verify_tables().unwrap();
        db.close().unwrap();
    }
    assert!(
        total_acks > 100,
        "the child wrote too little to test anything ({total_acks})"
    );
    eprintln!("{cycles} SIGKILL cycles, {total_acks} acknowledged writes verified");
}

const SQL_ENV: &str = "LDB_CRASH_SQL_CHILD";
/// Run child test `test` (its environment variable `env` naming the database at
/// `path`), SIGKILL it after a random time in `ms`, and return what it acknowledged:
/// the `ACK <kind> <n>` lines of its stdout.
fn run_and_kill(
    test: &str,
    env: &str,
    path: &std::path::Path,
    ms: std::ops::Range<u64>,
) -> Vec<(String, i64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            common::test_name(module_path!(), test).as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, path.display().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(|l| l.ok())
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(rand::rng().random_range(ms)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = Vec::new();
    for l in reader.join().unwrap() {
        // The test harness's own "test … " line may precede the first ACK.
        let Some(at) = l.find("ACK") else { continue };
        let p: Vec<&str> = l[at..].split_whitespace().collect();
        if let ["ACK", kind, n] = p[..] {
            acked.push((kind.to_string(), n.parse().unwrap()));
        }
    }
    acked
}

/// Rows of one large `INSERT … SELECT` in the SQL crash test.
const STMT_ROWS: i64 = 40_000;

fn sql_config() -> LightningDbConfig {
    LightningDbConfig {
        sql_insert_run_bytes: 128 << 10, // several staged runs per statement
        write_buffer_size: 256 << 10,
        ..Default::default()
    }
}

/// The SQL child: large `INSERT … SELECT` statements into a keyed and a keyless table,
/// each acknowledged on stdout once it returned.
#[test]
fn crash_child_sql_importer() {
    let Ok(dir) = std::env::var(SQL_ENV) else {
        return;
    };
    let db = Database::open_or_create(&dir, sql_config()).unwrap();
    db.sql("CREATE TABLE IF NOT EXISTS k (id BIGINT PRIMARY KEY, stmt BIGINT, s VARCHAR)")
        .unwrap();
    db.sql("CREATE TABLE IF NOT EXISTS e (stmt BIGINT, s VARCHAR)")
        .unwrap();
    let out = std::io::stdout();
    let first = db.sql("SELECT coalesce(max(stmt), -1) + 1 FROM k").unwrap()[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    for n in first.. {
        // Keys in a scattered order: runs overlap, so the statement's merge runs too.
        db.sql(&format!(
            "INSERT INTO k SELECT {base} + (value * 7919) % {STMT_ROWS} AS id, {n} AS stmt, \
             concat('r', CAST(value AS VARCHAR)) AS s FROM generate_series(0, {last})",
            base = n * STMT_ROWS,
            last = STMT_ROWS - 1
        ))
        .unwrap();
        writeln!(out.lock(), "ACK K {n}").unwrap();
        db.sql(&format!(
            "INSERT INTO e SELECT {n} AS stmt, concat('r', CAST(value AS VARCHAR)) AS s \
             FROM generate_series(0, {last})",
            last = STMT_ROWS - 1
        ))
        .unwrap();
        writeln!(out.lock(), "ACK E {n}").unwrap();
    }
}

/// SIGKILL in the middle of large `INSERT … SELECT` statements: every statement is
/// all or nothing (none of a killed statement's rows), every acknowledged one is there.
#[test]
fn sigkill_during_large_sql_inserts_leaves_whole_statements_only() {
    if std::env::var(SQL_ENV).is_ok() || std::env::var(ENV).is_ok() {
        return;
    }
    let cycles = if cfg!(feature = "integration_tests") {
        12
    } else {
        4
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (mut acked_k, mut acked_e) = (Vec::new(), Vec::new());
    for cycle in 0..cycles {
        for (kind, n) in run_and_kill("crash_child_sql_importer", SQL_ENV, &path, 800..2500) {
            match kind.as_str() {
                "K" => acked_k.push(n),
                _ => acked_e.push(n),
            }
        }
        let db = Database::open(&path, sql_config()).unwrap();
        for (table, acked) in [("k", &acked_k), ("e", &acked_e)] {
            let rows = db
                .sql(&format!(
                    "SELECT stmt, count(*), count(DISTINCT s) FROM {table} GROUP BY stmt"
                ))
                .unwrap();
            let mut present = BTreeMap::new();
            for b in &rows {
                for i in 0..b.num_rows() {
                    let stmt = b.column(0).as_primitive::<Int64Type>().value(i);
                    let n = b.column(1).as_primitive::<Int64Type>().value(i);
                    let d = b.column(2).as_primitive::<Int64Type>().value(i);
                    present.insert(stmt, (n, d));
                }
            }
            for (stmt, (n, d)) in &present {
                assert_eq!(
                    (*n, *d),
                    (STMT_ROWS, STMT_ROWS),
                    "cycle {cycle}: statement {stmt} into {table} is torn"
                );
            }
            for n in acked {
                assert!(
                    present.contains_key(n),
                    "cycle {cycle}: acknowledged statement {n} into {table} lost"
                );
            }
        }
        db.engine().verify_tables().unwrap();
        db.close().unwrap();
    }
    assert!(
        !acked_k.is_empty(),
        "the child committed no statement to test anything"
    );
    eprintln!(
        "{cycles} SIGKILL cycles, {} + {} acknowledged large INSERTs verified",
        acked_k.len(),
        acked_e.len()
    );
}

const ALTER_ENV: &str = "LDB_CRASH_ALTER_CHILD";
/// Rows of the table the ALTER crash test rewrites again and again.
const ALTER_ROWS: i64 = 30_000;

/// The ALTER child: adds column `c<n>` (DEFAULT n) to `t`, then drops the others,
/// acknowledging each statement on stdout once it returned.
#[test]
fn crash_child_alter() {
    let Ok(dir) = std::env::var(ALTER_ENV) else {
        return;
    };
    let db = Database::open(&dir, sql_config()).unwrap();
    let out = std::io::stdout();
    let cols: Vec<i64> = db
        .table_schema("t")
        .unwrap()
        .fields()
        .iter()
        .filter_map(|f| f.name().strip_prefix('c')?.parse().ok())
        .collect();
    let first = cols.iter().max().map_or(0, |m| m + 1);
    let mut cols = cols;
    for n in first.. {
        db.sql(&format!("ALTER TABLE t ADD COLUMN c{n} BIGINT DEFAULT {n}"))
            .unwrap();
        writeln!(out.lock(), "ACK ADD {n}").unwrap();
        for m in std::mem::take(&mut cols) {
            db.sql(&format!("ALTER TABLE t DROP COLUMN c{m}")).unwrap();
            writeln!(out.lock(), "ACK DROP {m}").unwrap();
        }
        cols.push(n);
    }
}

/// SIGKILL while ALTER TABLE rewrites a table: after every kill the table has all its
/// rows, every acknowledged ADD COLUMN (not dropped since) with its DEFAULT in every
/// row, no acknowledged DROP undone, and no half-added column.
#[test]
fn sigkill_during_alter_table_leaves_old_or_new_shape() {
    if std::env::var(ALTER_ENV).is_ok()
        || std::env::var(SQL_ENV).is_ok()
        || std::env::var(ENV).is_ok()
    {
        return;
    }
    let cycles = if cfg!(feature = "integration_tests") {
        10
    } else {
        4
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Database::create(&path, sql_config()).unwrap();
        db.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")
            .unwrap();
        db.sql(&format!(
            "INSERT INTO t SELECT value AS id, value * 2 AS v FROM generate_series(0, {})",
            ALTER_ROWS - 1
        ))
        .unwrap();
        db.close().unwrap();
    }
    let (mut added, mut dropped) = (Vec::new(), Vec::new());
    for cycle in 0..cycles {
        for (kind, n) in run_and_kill("crash_child_alter", ALTER_ENV, &path, 700..2000) {
            match kind.as_str() {
                "ADD" => added.push(n),
                _ => dropped.push(n),
            }
        }
        let db = Database::open(&path, sql_config()).unwrap();
        let cols: Vec<i64> = db
            .table_schema("t")
            .unwrap()
            .fields()
            .iter()
            .filter_map(|f| f.name().strip_prefix('c')?.parse().ok())
            .collect();
        for n in &dropped {
            assert!(
                !cols.contains(n),
                "cycle {cycle}: dropped column c{n} is back"
            );
        }
        // The child adds c<k> and then drops the others: an acknowledged column may be
        // missing only if a later one's ADD committed (its DROP then may have too,
        // unacknowledged).
        for n in added.iter().filter(|n| !dropped.contains(n)) {
            assert!(
                cols.contains(n) || cols.iter().any(|m| m > n),
                "cycle {cycle}: acknowledged column c{n} lost (columns {cols:?})"
            );
        }
        for n in &cols {
            let max = added.iter().max().copied().unwrap_or(-1);
            assert!(
                added.contains(n) || *n == max + 1,
                "cycle {cycle}: column c{n} was never added"
            );
        }
        // What the kill left is what later cycles start from: an unacknowledged ADD
        // that committed counts as added, an unacknowledged DROP as dropped.
        for n in added.clone() {
            if !cols.contains(&n) && !dropped.contains(&n) {
                dropped.push(n);
            }
        }
        for n in &cols {
            if !added.contains(n) {
                added.push(*n);
            }
        }
        let mut q = String::from("SELECT count(*), sum(v)");
        for n in &cols {
            q.push_str(&format!(", count(*) FILTER (WHERE c{n} = {n})"));
        }
        q.push_str(" FROM t");
        let b = &db.sql(&q).unwrap()[0];
        let v = |i: usize| b.column(i).as_primitive::<Int64Type>().value(0);
        assert_eq!(v(0), ALTER_ROWS, "cycle {cycle}: rows");
        assert_eq!(v(1), ALTER_ROWS * (ALTER_ROWS - 1), "cycle {cycle}: values");
        for (i, n) in cols.iter().enumerate() {
            assert_eq!(v(2 + i), ALTER_ROWS, "cycle {cycle}: column c{n} torn");
        }
        db.engine().verify_tables().unwrap();
        db.close().unwrap();
    }
    assert!(!added.is_empty(), "the child altered nothing");
    eprintln!(
        "{cycles} SIGKILL cycles, {} ADD and {} DROP COLUMN statements verified",
        added.len(),
        dropped.len()
    );
}
