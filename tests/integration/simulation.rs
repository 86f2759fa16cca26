//! Deterministic simulation: a seeded random workload on a database whose files go
//! through a `FaultVfs`, with one fault at a random step: a power loss between two
//! operations or in the middle of one (at the n-th write or sync of a file), a failing
//! fsync, or a full disk for a while. Background work is off, so for a given seed the
//! same operations reach the file system in the same order and a failing seed replays
//! exactly: `LDB_SIM_SEED=<seed> cargo test --test integration -- simulation:: --nocapture`.
//!
//! After the fault the database is reopened on what survived, and:
//! - every acknowledged write is there (all writes are durable before they return), and
//!   the one operation the fault interrupted is there whole or not at all;
//! - SQL answers equal the row store's, and the column store equals a rebuild;
//! - a failing fsync stops the instance (`Error::Fatal`); a full disk is a clear error
//!   and the database works again once space returns, without reopening;
//! - nothing panics.
//!
//! `LDB_SIM_SEEDS` sets how many seeds run (default 40; 400 with `integration_tests`).

use lightning_db::arrow::array::{AsArray, Int64Array, RecordBatch};
use lightning_db::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use lightning_db::vfs::{FaultKind, FaultOp, FaultRule, FaultVfs, PowerLoss};
use lightning_db::{Database, Durability, Error, LightningDbConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    t: BTreeMap<i64, i64>,
    /// Table `t` has its third column `extra` (added and dropped in place by `ALTER
    /// TABLE`, so rows and segments of several schema versions meet).
    extra: bool,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    PowerLossBetween(PowerLoss),
    PowerLossAtWrite(u64, PowerLoss),
    PowerLossAtSync(u64, PowerLoss),
    SyncFails,
    DiskFull(u64),
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn rows(ids: &[i64], vs: &[i64], extra: bool) -> RecordBatch {
    let mut fields = schema().fields().to_vec();
    let mut cols: Vec<lightning_db::arrow::array::ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(Int64Array::from(vs.to_vec())),
    ];
    if extra {
        fields.push(Arc::new(Field::new("extra", DataType::Int64, true)));
        cols.push(Arc::new(Int64Array::from(vec![None; ids.len()])));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn config(rng: &mut StdRng, vfs: Option<&FaultVfs>) -> LightningDbConfig {
    LightningDbConfig {
        page_size: 512,
        write_buffer_size: rng.random_range(4..32) * 1024,
        level0_compaction_trigger: 2,
        level0_stop_writes_trigger: 8,
        level_base_size: 32 * 1024,
        target_file_size: 16 * 1024,
        cache_size: 1 << 20,
        background_compaction: false,
        columnar_background: false,
        prefetch_enabled: false,
        columnar_segment_rows: 1000,
        columnar_batch_rows: 1000,
        durability: Durability::Sync,
        vfs: vfs.map(|v| Arc::new(v.clone()) as Arc<dyn lightning_db::vfs::Vfs>),
        ..Default::default()
    }
}

/// Two seeds in three run encrypted (AES-256-GCM or ChaCha20-Poly1305), so faults
/// also meet the encrypted files' torn blocks and rewritten tails.
fn encryption(seed: u64) -> Option<lightning_db::encryption::EncryptionConfig> {
    use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider};
    let cipher = match seed % 3 {
        1 => Cipher::Aes256Gcm,
        2 => Cipher::ChaCha20Poly1305,
        _ => return None,
    };
    Some(EncryptionConfig::new(
        cipher,
        KeyProvider::raw([seed as u8; 32]),
    ))
}

/// One seed in four runs on the B+Tree engine (3, 7, 11, ...: plaintext, AES-256-GCM
/// and ChaCha20-Poly1305 in turn), so power loss and faults also meet flushes that
/// publish a new tree, in plain and in sealed pages.
fn storage(seed: u64) -> lightning_db::StorageEngine {
    match seed % 4 {
        3 => lightning_db::StorageEngine::BTree,
        _ => lightning_db::StorageEngine::Lsm,
    }
}

/// One random operation: applies it to the database and returns the model after it
/// (what the database must hold if the operation took effect).
fn step(db: &Database, rng: &mut StdRng, m: &Model) -> (String, Model, lightning_db::Result<()>) {
    let mut next = m.clone();
    if rng.random_range(0..100) < 4 {
        next.extra = !m.extra;
        let q = match m.extra {
            false => "ALTER TABLE t ADD COLUMN extra BIGINT DEFAULT 7",
            true => "ALTER TABLE t DROP COLUMN extra",
        };
        return (q.into(), next, db.sql(q).map(|_| ()));
    }
    let key = |rng: &mut StdRng| format!("k{:04}", rng.random_range(0..400)).into_bytes();
    let val = |rng: &mut StdRng| {
        let n = rng.random_range(1..300);
        vec![b'a' + rng.random_range(0..26u8); n]
    };
    match rng.random_range(0..100) {
        0..25 => {
            let (k, v) = (key(rng), val(rng));
            next.kv.insert(k.clone(), v.clone());
            ("put".into(), next, db.put(&k, &v))
        }
        25..32 => {
            let k = key(rng);
            next.kv.remove(&k);
            ("delete".into(), next, db.delete(&k))
        }
        32..42 => {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.random_range(1..20))
                .map(|_| (key(rng), val(rng)))
                .collect();
            for (k, v) in &pairs {
                next.kv.insert(k.clone(), v.clone());
            }
            ("put_batch".into(), next, db.put_batch(&pairs))
        }
        42..50 => {
            let (a, b, c) = (key(rng), key(rng), val(rng));
            let r = db.transaction(|tx| {
                let v = tx.get(&a)?.unwrap_or_default();
                tx.put(&b, &[v.as_slice(), &c].concat())?;
                tx.delete(&a)
            });
            let v = m.kv.get(&a).cloned().unwrap_or_default();
            next.kv.insert(b, [v.as_slice(), &c].concat());
            next.kv.remove(&a);
            ("transaction".into(), next, r)
        }
        50..62 => {
            let n = rng.random_range(1..40);
            let ids: Vec<i64> = (0..n).map(|_| rng.random_range(0..2000)).collect();
            let vs: Vec<i64> = (0..n).map(|_| rng.random_range(-1000..1000)).collect();
            for (i, v) in ids.iter().zip(&vs) {
                next.t.insert(*i, *v);
            }
            (
                "insert".into(),
                next,
                db.insert("t", &rows(&ids, &vs, m.extra)),
            )
        }
        62..68 => {
            let ids: Vec<i64> = (0..rng.random_range(1..10))
                .map(|_| rng.random_range(0..2000))
                .collect();
            for i in &ids {
                next.t.remove(i);
            }
            let keys = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
                vec![Arc::new(Int64Array::from(ids))],
            )
            .unwrap();
            ("delete_rows".into(), next, db.delete_rows("t", &keys))
        }
        68..76 => {
            let d = rng.random_range(2..7);
            for (k, v) in next.t.iter_mut() {
                if k % d == 0 {
                    *v += 1;
                }
            }
            let q = format!("UPDATE t SET v = v + 1 WHERE id % {d} = 0");
            (q.clone(), next, db.sql(&q).map(|_| ()))
        }
        76..80 => {
            let lo = rng.random_range(0..2000);
            next.t.retain(|k, _| !(lo..lo + 50).contains(k));
            let q = format!("DELETE FROM t WHERE id >= {lo} AND id < {}", lo + 50);
            (q.clone(), next, db.sql(&q).map(|_| ()))
        }
        80..86 => {
            let (i, v) = (rng.random_range(0..2000), rng.random_range(0..100));
            next.t.insert(i, v);
            let q = format!("INSERT OR REPLACE INTO t (id, v) VALUES ({i}, {v})");
            (q.clone(), next, db.sql(&q).map(|_| ()))
        }
        86..91 => (
            "compact_columnar".into(),
            next,
            db.compact_columnar("t").map(|_| ()),
        ),
        91..95 => ("flush".into(), next, db.flush()),
        95..98 => ("compact".into(), next, db.compact()),
        _ => {
            let n = rng.random::<u32>();
            let target = db.path().with_file_name(format!("cp-{n}"));
            let r = db.checkpoint(&target);
            if r.is_ok() {
                let cfg = LightningDbConfig {
                    encryption: db.config().encryption.clone(),
                    storage_engine: db.storage_engine(),
                    ..config(rng, None)
                };
                let copy = Database::open(&target, cfg).unwrap();
                let got = read_model(&copy);
                assert_eq!(got, next, "checkpoint {} differs", target.display());
                drop(copy);
                let _ = std::fs::remove_dir_all(&target);
            }
            ("checkpoint".into(), next, r)
        }
    }
}

/// Written after a failed fsync to see that writes are refused.
const PROBE: &[u8] = b"zz-probe";

/// Panic with the differences only (models are too large to print).
fn assert_same(got: &Model, want: &Model, what: &str) {
    if got == want {
        return;
    }
    let mut d = Vec::new();
    for k in got.kv.keys().chain(want.kv.keys()) {
        let (g, w) = (got.kv.get(k), want.kv.get(k));
        if g != w {
            d.push(format!(
                "kv {}: got {:?} want {:?}",
                String::from_utf8_lossy(k),
                g.map(|v| v.len()),
                w.map(|v| v.len())
            ));
        }
    }
    for k in got.t.keys().chain(want.t.keys()) {
        let (g, w) = (got.t.get(k), want.t.get(k));
        if g != w {
            d.push(format!("t {k}: got {g:?} want {w:?}"));
        }
    }
    d.sort();
    d.dedup();
    d.truncate(20);
    panic!("{what}:\n{}", d.join("\n"));
}

fn read_model(db: &Database) -> Model {
    let mut m = Model {
        extra: db.table_schema("t").unwrap().index_of("extra").is_ok(),
        ..Model::default()
    };
    for r in db.scan(None, None).unwrap() {
        let (k, v) = r.unwrap();
        m.kv.insert(k, v);
    }
    for b in db.scan_table("t", 4096).unwrap() {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let vs = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            m.t.insert(ids.value(i), vs.value(i));
        }
    }
    m
}

/// SQL agrees with the row store, and the column store with a rebuild.
fn check_views(db: &Database, m: &Model, seed: u64) {
    let r = db.sql("SELECT count(*), sum(v) FROM t").unwrap();
    let n = r[0].column(0).as_primitive::<Int64Type>().value(0);
    let s = r[0].column(1).as_primitive::<Int64Type>();
    assert_eq!(n as usize, m.t.len(), "seed {seed}: SQL count");
    if !m.t.is_empty() {
        assert_eq!(
            s.value(0),
            m.t.values().sum::<i64>(),
            "seed {seed}: SQL sum"
        );
    }
    db.compact_columnar("t").unwrap();
    let (_, batches) = db.columnar_rows("t", None).unwrap();
    let mut col = BTreeMap::new();
    for b in &batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let vs = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(
                col.insert(ids.value(i), vs.value(i)).is_none(),
                "seed {seed}: duplicate row"
            );
        }
    }
    assert_eq!(col, m.t, "seed {seed}: column store differs from the rows");
}

/// What the seeds exercised (printed at the end).
#[derive(Default, Debug)]
struct Tally {
    no_fault: u64,
    power_loss_between: u64,
    power_loss_mid_op: u64,
    rule_never_fired: u64,
    fsync_failures: u64,
    disk_full: u64,
    disk_full_errors: u64,
    interrupted_op_kept: u64,
    interrupted_op_dropped: u64,
}

static TALLY: std::sync::Mutex<Tally> = std::sync::Mutex::new(Tally {
    no_fault: 0,
    power_loss_between: 0,
    power_loss_mid_op: 0,
    rule_never_fired: 0,
    fsync_failures: 0,
    disk_full: 0,
    disk_full_errors: 0,
    interrupted_op_kept: 0,
    interrupted_op_dropped: 0,
});

fn run_seed(seed: u64, base: &Path) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = base.join(format!("s{seed}"));
    let path = dir.join("db");
    std::fs::create_dir_all(&dir).unwrap();
    let vfs = FaultVfs::new().with_seed(seed);
    let cfg = LightningDbConfig {
        encryption: encryption(seed),
        storage_engine: storage(seed),
        ..config(&mut rng, Some(&vfs))
    };
    let db = Database::create(&path, cfg.clone()).unwrap();
    db.create_table("t", schema(), &["id"]).unwrap();
    let mode = if rng.random_bool(0.5) {
        PowerLoss::Clean
    } else {
        PowerLoss::Torn { seed }
    };
    let steps = rng.random_range(20..120);
    let fault_at = rng.random_range(0..steps);
    let fault = match rng.random_range(0..12) {
        0 => Fault::None,
        1..4 => Fault::PowerLossBetween(mode),
        4..7 => Fault::PowerLossAtWrite(rng.random_range(0..40), mode),
        7..9 => Fault::PowerLossAtSync(rng.random_range(0..10), mode),
        9 => Fault::SyncFails,
        _ => Fault::DiskFull(rng.random_range(1..6)),
    };
    let mut m = Model::default();
    // The operation a fault interrupted: the model without and with it.
    let mut pending: Option<(String, Model, Model)> = None;
    let mut crashed = false;
    let mut full_until: Option<u64> = None;
    for i in 0..steps {
        if i == fault_at {
            match fault {
                Fault::None => {}
                Fault::PowerLossBetween(mode) => {
                    vfs.power_loss(mode).unwrap();
                    crashed = true;
                    break;
                }
                Fault::PowerLossAtWrite(n, mode) => vfs.inject(
                    FaultRule::new(FaultOp::Write, FaultKind::PowerLoss(mode))
                        .after(n)
                        .times(1),
                ),
                Fault::PowerLossAtSync(n, mode) => vfs.inject(
                    FaultRule::new(FaultOp::Sync, FaultKind::PowerLoss(mode))
                        .after(n)
                        .times(1),
                ),
                Fault::SyncFails => vfs.inject(FaultRule::new(FaultOp::Sync, FaultKind::Eio)),
                Fault::DiskFull(n) => {
                    vfs.inject(FaultRule::new(FaultOp::Write, FaultKind::NoSpace));
                    vfs.inject(FaultRule::new(FaultOp::Create, FaultKind::NoSpace));
                    full_until = Some(i + n);
                }
            }
        }
        if full_until == Some(i) {
            // Space returns: the database works again, without reopening.
            vfs.clear_faults();
            full_until = None;
        }
        let (what, next, r) = step(&db, &mut rng, &m);
        match r {
            Ok(()) => m = next,
            Err(e) => match fault {
                Fault::DiskFull(_) => {
                    // Nothing of a failed operation is left, and the reason is clear.
                    let msg = e.to_string();
                    assert!(
                        full_until.is_some()
                            && (msg.contains("No space") || msg.contains("os error 28")),
                        "seed {seed}: {what} failed with {e} (disk full: {full_until:?})"
                    );
                    assert!(
                        !matches!(e, Error::Fatal(_)),
                        "seed {seed}: full disk was fatal: {e}"
                    );
                    TALLY.lock().unwrap().disk_full_errors += 1;
                }
                Fault::SyncFails => {
                    pending = Some((what, m.clone(), next));
                    crashed = true;
                    // Fail-stop: the next write is refused (its WAL record may have
                    // been written before its own fsync failed, so it may come back:
                    // the probe is left out of the comparison).
                    let r = db.put(PROBE, b"x");
                    assert!(
                        matches!(r, Err(Error::Fatal(_))),
                        "seed {seed}: writes go on after a failed fsync: {r:?}"
                    );
                    assert!(matches!(db.put(PROBE, b"y"), Err(Error::Fatal(_))));
                    break;
                }
                _ if vfs.is_dead() => {
                    pending = Some((what, m.clone(), next));
                    crashed = true;
                    break;
                }
                _ => panic!("seed {seed}: {what} failed without a fault: {e}"),
            },
        }
    }
    {
        let mut t = TALLY.lock().unwrap();
        match fault {
            Fault::None => t.no_fault += 1,
            Fault::PowerLossBetween(_) => t.power_loss_between += 1,
            Fault::PowerLossAtWrite(..) | Fault::PowerLossAtSync(..) if crashed => {
                t.power_loss_mid_op += 1
            }
            Fault::PowerLossAtWrite(..) | Fault::PowerLossAtSync(..) => t.rule_never_fired += 1,
            Fault::SyncFails => t.fsync_failures += 1,
            Fault::DiskFull(_) => t.disk_full += 1,
        }
    }
    if !crashed
        && matches!(
            fault,
            Fault::PowerLossAtWrite(..) | Fault::PowerLossAtSync(..)
        )
    {
        // The rule never fired: lose the power now.
        vfs.power_loss(mode).unwrap();
        crashed = true;
    }
    if !crashed {
        vfs.clear_faults();
        assert_same(&read_model(&db), &m, &format!("seed {seed}: live state"));
        check_views(&db, &m, seed);
        db.close().unwrap();
    }
    drop(db);
    vfs.revive();
    vfs.clear_faults();
    let db = Database::open(&path, cfg).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
    let mut got = read_model(&db);
    got.kv.remove(PROBE);
    let expected = match &pending {
        Some((_, _, after)) if got == *after => {
            TALLY.lock().unwrap().interrupted_op_kept += 1;
            after.clone()
        }
        Some((what, before, _)) => {
            TALLY.lock().unwrap().interrupted_op_dropped += 1;
            assert_same(
                &got,
                before,
                &format!(
                    "seed {seed}: after {fault:?} during {what}, the state is neither before nor after it"
                ),
            );
            before.clone()
        }
        None => m.clone(),
    };
    assert_same(&got, &expected, &format!("seed {seed}: after {fault:?}"));
    check_views(&db, &expected, seed);
    // And it keeps working.
    db.put(b"after", b"reopen").unwrap();
    db.insert("t", &rows(&[1_000_000], &[1], expected.extra))
        .unwrap();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn seeded_workloads_survive_power_loss_and_faults() {
    let base = tempfile::tempdir().unwrap();
    if let Ok(s) = std::env::var("LDB_SIM_SEED") {
        run_seed(s.parse().unwrap(), base.path());
        return;
    }
    let default = if cfg!(feature = "integration_tests") {
        400
    } else {
        40
    };
    let seeds: u64 = std::env::var("LDB_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let first: u64 = std::env::var("LDB_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in first..first + seeds {
        let r = std::panic::catch_unwind(|| run_seed(seed, base.path()));
        if let Err(e) = r {
            eprintln!("simulation seed {seed} failed; replay with LDB_SIM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
    eprintln!(
        "{seeds} simulation seeds passed (from {first}): {:?}",
        TALLY.lock().unwrap()
    );
}
