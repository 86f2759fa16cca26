//! The row-engine contract, checked by mirroring: the same random operations on the
//! LSM engine and on the in-memory engine (the oracle), with every read compared —
//! point reads and scans at the newest state and at held snapshots, `for_each_change`
//! between two snapshots, transactional commits with conflicts — across flushes,
//! full compactions and reopens of the LSM engine.

use lightning_rowstore::{
    CommitCheck, Engine, EngineOptions, OpenMode, Snapshot, StorageKind, TxnSnapshot, WriteBatch,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Get(u8),
    Scan(Option<u8>, Option<u8>, bool),
    /// Hold a snapshot (both engines), up to a few at a time.
    Hold,
    /// Read at the oldest held snapshot, then drop it.
    ReadHeld(Option<u8>, Option<u8>),
    /// Changes between the oldest held snapshot and now (or the newest held one), in
    /// the whole key space or a key range.
    Changes(bool, u8, u8),
    /// Begin a transaction (both engines), up to a few at a time.
    TxnBegin,
    /// The oldest open transaction writes a key (and read another and a range) and
    /// commits: both engines must agree on whether it conflicts.
    TxnCommit(u8),
    /// A large write staged in runs and published in one commit (a later run wins);
    /// with the flag, refused if a key of it changed after the oldest held snapshot.
    Ingest(Vec<Vec<(u8, Option<Vec<u8>>)>>, bool),
    Flush,
    Compact,
    Reopen,
}

fn k(i: u8) -> Vec<u8> {
    format!("k{:03}", i).into_bytes()
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..64;
    let val = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        30 => proptest::collection::vec((key.clone(), proptest::option::of(val)), 1..8).prop_map(Op::Batch),
        15 => key.clone().prop_map(Op::Get),
        8 => (proptest::option::of(key.clone()), proptest::option::of(key.clone()), any::<bool>())
            .prop_map(|(a, b, r)| Op::Scan(a, b, r)),
        5 => Just(Op::Hold),
        5 => (proptest::option::of(key.clone()), proptest::option::of(key.clone()))
            .prop_map(|(a, b)| Op::ReadHeld(a, b)),
        4 => (any::<bool>(), 0u8..64, 0u8..64).prop_map(|(h, a, b)| Op::Changes(h, a.min(b), a.max(b))),
        4 => Just(Op::TxnBegin),
        6 => key.clone().prop_map(Op::TxnCommit),
        4 => (proptest::collection::vec(
                proptest::collection::vec((key, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))), 0..12),
                0..4,
            ), any::<bool>())
            .prop_map(|(runs, c)| Op::Ingest(runs, c)),
        3 => Just(Op::Flush),
        2 => Just(Op::Compact),
        2 => Just(Op::Reopen),
    ]
}

/// Small limits so that flushes and compactions happen often: inline (deterministic),
/// or on the background threads with memtables a quarter of the write buffer (the LSM
/// flushes each frozen memtable, merging those that queue up; the B+Tree engine gathers
/// a write buffer's worth, or flushes fewer when waited for or idle).
fn opts(storage: StorageKind, background: bool) -> EngineOptions {
    EngineOptions {
        storage,
        block_size: 512,
        write_buffer_size: if background { 16384 } else { 4096 },
        memtable_size: 4096,
        level0_compaction_trigger: 2,
        level0_stop_writes_trigger: 8,
        level_base_bytes: 8192,
        target_file_size: 4096,
        background_compaction: background,
        compaction_workers: 1,
        prefetch: None,
        ..Default::default()
    }
}

fn collect(
    it: impl Iterator<Item = lightning_rowstore::Result<(Vec<u8>, Vec<u8>)>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.map(|r| r.unwrap()).collect()
}

fn run(ops: Vec<Op>, storage: StorageKind, background: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let opts = || opts(storage, background);
    let mut lsm = Engine::open(&path, opts(), OpenMode::Create).unwrap();
    let mem = Engine::memory(opts());
    // Held snapshots: (lsm, memory), oldest first. Commit timestamps differ between
    // engines only by offset, so snapshots are paired by position, not timestamp.
    let mut held: Vec<(Snapshot, Snapshot)> = Vec::new();
    let mut txns: Vec<(TxnSnapshot, TxnSnapshot)> = Vec::new();
    for op in ops {
        match op {
            Op::Batch(kvs) => {
                let mut b1 = WriteBatch::new();
                let mut b2 = WriteBatch::new();
                for (key, v) in &kvs {
                    match v {
                        Some(v) => {
                            b1.put(&k(*key), v).unwrap();
                            b2.put(&k(*key), v).unwrap();
                        }
                        None => {
                            b1.delete(&k(*key)).unwrap();
                            b2.delete(&k(*key)).unwrap();
                        }
                    }
                }
                lsm.write(b1).unwrap();
                mem.write(b2).unwrap();
            }
            Op::Get(key) => assert_eq!(lsm.get(&k(key)).unwrap(), mem.get(&k(key)).unwrap()),
            Op::Scan(a, b, rev) => {
                let (a, b) = (a.map(k), b.map(k));
                assert_eq!(
                    collect(lsm.iter(a.as_deref(), b.as_deref(), rev).unwrap()),
                    collect(mem.iter(a.as_deref(), b.as_deref(), rev).unwrap())
                );
            }
            Op::Hold => {
                if held.len() < 3 {
                    held.push((lsm.snapshot(), mem.snapshot()));
                }
            }
            Op::ReadHeld(a, b) => {
                if held.is_empty() {
                    continue;
                }
                let (s1, s2) = held.remove(0);
                let (a, b) = (a.map(k), b.map(k));
                for rev in [false, true] {
                    assert_eq!(
                        collect(lsm.iter_at(&s1, a.as_deref(), b.as_deref(), rev).unwrap()),
                        collect(mem.iter_at(&s2, a.as_deref(), b.as_deref(), rev).unwrap())
                    );
                }
                for key in 0..64 {
                    assert_eq!(
                        lsm.get_at(&k(key), &s1).unwrap(),
                        mem.get_at(&k(key), &s2).unwrap()
                    );
                }
            }
            Op::Changes(held_hi, a, b) => {
                let Some((lo1, lo2)) = held.first() else {
                    continue;
                };
                let now = (lsm.snapshot(), mem.snapshot());
                let (hi1, hi2) = match held.last() {
                    Some((h1, h2)) if held_hi && held.len() > 1 => (h1, h2),
                    _ => (&now.0, &now.1),
                };
                let (start, end) = if a < b {
                    (k(a), k(b))
                } else {
                    (b"".to_vec(), b"z".to_vec())
                };
                let mut c1 = Vec::new();
                let mut c2 = Vec::new();
                lsm.for_each_change::<lightning_rowstore::Error>(
                    hi1,
                    lo1.ts(),
                    &start,
                    &end,
                    |k, v| {
                        c1.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                        Ok(())
                    },
                )
                .unwrap();
                mem.for_each_change::<lightning_rowstore::Error>(
                    hi2,
                    lo2.ts(),
                    &start,
                    &end,
                    |k, v| {
                        c2.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(c1, c2);
            }
            Op::TxnBegin => {
                if txns.len() < 3 {
                    txns.push((lsm.begin_txn().unwrap(), mem.begin_txn().unwrap()));
                }
            }
            Op::TxnCommit(key) => {
                if txns.is_empty() {
                    continue;
                }
                let (t1, t2) = txns.remove(0);
                let batch = || {
                    let mut b = WriteBatch::new();
                    b.put(&k(key), b"txn").unwrap();
                    b
                };
                let check = |s| CommitCheck {
                    start_ts: s,
                    read_keys: vec![k(key.wrapping_add(1) % 64)],
                    read_ranges: vec![(Some(k(0)), Some(k(8)))],
                };
                let r1 = lsm.commit_checked(batch(), check(t1.ts()));
                let r2 = mem.commit_checked(batch(), check(t2.ts()));
                assert_eq!(r1.is_ok(), r2.is_ok(), "{r1:?} vs {r2:?}");
            }
            Op::Ingest(runs, conflict) => {
                let runs: Vec<std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>> = runs
                    .into_iter()
                    .map(|r| r.into_iter().map(|(key, v)| (k(key), v)).collect())
                    .collect();
                let mut i1 = lsm.ingest().unwrap();
                let mut i2 = mem.ingest().unwrap();
                for r in &runs {
                    i1.add_run(r.iter().map(|(k, v)| (&k[..], v.as_deref())))
                        .unwrap();
                    i2.add_run(r.iter().map(|(k, v)| (&k[..], v.as_deref())))
                        .unwrap();
                }
                // Any shared key will do; both must find one or neither.
                let (d1, d2) = (i1.duplicate_key().unwrap(), i2.duplicate_key().unwrap());
                assert_eq!(d1.is_some(), d2.is_some(), "{d1:?} vs {d2:?}");
                if let Some(k) = &d1 {
                    let held = |r: &std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>| {
                        r.contains_key(k)
                    };
                    assert!(
                        runs.iter().filter(|r| held(r)).count() >= 2,
                        "{k:?} is not shared"
                    );
                }
                let (c1, c2) = match held.first() {
                    Some((s1, s2)) if conflict => (Some(s1.ts()), Some(s2.ts())),
                    _ => (None, None),
                };
                let r1 = i1.commit(c1);
                let r2 = i2.commit(c2);
                assert_eq!(r1.is_ok(), r2.is_ok(), "{r1:?} vs {r2:?}");
                if let Err(e) = r1 {
                    assert!(e.to_string().contains("changed by a transaction"), "{e}");
                }
            }
            Op::Flush => lsm.flush().unwrap(),
            Op::Compact => {
                lsm.compact_all().unwrap();
                mem.compact_all().unwrap();
            }
            Op::Reopen => {
                if !held.is_empty() || !txns.is_empty() {
                    continue; // snapshots do not outlive the engine
                }
                lsm.close().unwrap();
                drop(lsm);
                lsm = Engine::open(&path, opts(), OpenMode::Open).unwrap();
                // Timestamps go on from the recovered maximum on both sides.
                assert!(lsm.visible_ts() >= mem.visible_ts());
            }
        }
    }
    for key in 0..64 {
        assert_eq!(lsm.get(&k(key)).unwrap(), mem.get(&k(key)).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(debug_assertions) { 48 } else { 256 },
        ..ProptestConfig::default()
    })]
    #[test]
    fn the_lsm_engine_keeps_the_contract_of_the_memory_engine(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, StorageKind::Lsm, false);
    }

    #[test]
    fn the_btree_engine_keeps_the_contract_of_the_memory_engine(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, StorageKind::BTree, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(debug_assertions) { 24 } else { 128 },
        ..ProptestConfig::default()
    })]
    #[test]
    fn the_lsm_engine_keeps_the_contract_with_background_work_and_small_memtables(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, StorageKind::Lsm, true);
    }

    #[test]
    fn the_btree_engine_keeps_the_contract_with_background_work_and_small_memtables(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, StorageKind::BTree, true);
    }
}

/// Once writes stop, a level 0 below the compaction trigger is still merged down (reads
/// pay for each overlapping level-0 table), and nothing is lost by it.
#[test]
fn an_idle_level_0_is_merged_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let e = Engine::open(
        &path,
        EngineOptions {
            level0_compaction_trigger: 4,
            level0_stop_writes_trigger: 8,
            background_compaction: true,
            ..Default::default()
        },
        OpenMode::Create,
    )
    .unwrap();
    for round in 0..3u32 {
        let mut b = WriteBatch::new();
        for i in 0..100u32 {
            b.put(&(i * 3 + round).to_be_bytes(), &round.to_be_bytes())
                .unwrap();
        }
        e.write(b).unwrap();
        e.flush().unwrap();
    }
    assert_eq!(e.sizes().tables_per_level[0], 3, "below the trigger of 4");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while e.sizes().tables_per_level[0] > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "level 0 never merged: {:?}",
            e.sizes()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(e.sizes().tables_per_level[1..].iter().sum::<usize>() >= 1);
    let all = collect(e.iter(None, None, false).unwrap());
    assert_eq!(all.len(), 300);
}

/// Memtables an eighth of the write buffer, with background work: the B+Tree engine
/// merges them into its tree a write buffer's worth at a time (not once per memtable),
/// a flush still empties them all, and every version a held snapshot needs survives
/// the merged flushes and a reopen, on both engines.
#[test]
fn small_memtables_are_flushed_together_and_lose_no_version() {
    for storage in [StorageKind::Lsm, StorageKind::BTree] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let opts = || EngineOptions {
            storage,
            write_buffer_size: 64 << 10,
            memtable_size: 8 << 10,
            background_compaction: true,
            ..Default::default()
        };
        let e = Engine::open(&path, opts(), OpenMode::Create).unwrap();
        let put = |e: &Engine, round: u8| {
            let mut b = WriteBatch::new();
            for i in 0..40u32 {
                b.put(&i.to_be_bytes(), &[round; 100]).unwrap();
            }
            e.write(b).unwrap();
        };
        put(&e, 0);
        let snap = e.snapshot();
        // 40 rounds of 40 writes, ~200 bytes each in a memtable: ~40 memtables.
        for round in 1..40 {
            put(&e, round);
        }
        e.flush().unwrap();
        assert_eq!(e.sizes().immutable_memtables, 0, "{storage:?}");
        let flushes = e.stats().flushes.load(std::sync::atomic::Ordering::Relaxed);
        if storage == StorageKind::BTree {
            // ~5 write buffers' worth, plus the final flush (and slack for an idle
            // flush on a slow machine): far fewer than one per memtable.
            assert!(flushes <= 10, "{flushes} tree merges for ~40 memtables");
        }
        for i in 0..40u32 {
            let k = i.to_be_bytes();
            assert_eq!(
                e.get_at(&k, &snap).unwrap(),
                Some(vec![0; 100]),
                "{storage:?}"
            );
            assert_eq!(e.get(&k).unwrap(), Some(vec![39; 100]), "{storage:?}");
        }
        drop(snap);
        e.close().unwrap();
        drop(e);
        let e = Engine::open(&path, opts(), OpenMode::Open).unwrap();
        let all = collect(e.iter(None, None, false).unwrap());
        assert_eq!(all.len(), 40, "{storage:?}");
        assert!(all.iter().all(|(_, v)| v == &vec![39; 100]), "{storage:?}");
    }
}

/// A large group whose sync fails: the commit fails, the engine stops taking writes,
/// and no read sees the group's writes, on both storage engines. (A build that applied
/// large groups to the memtable during the sync, and published them early, fails it.)
#[test]
fn a_large_group_whose_sync_fails_is_never_visible() {
    use lightning_rowstore::vfs::{FaultKind, FaultOp, FaultRule, FaultVfs};
    use std::sync::Arc;
    for storage in [StorageKind::Lsm, StorageKind::BTree] {
        let dir = tempfile::tempdir().unwrap();
        let vfs = Arc::new(FaultVfs::new());
        let o = EngineOptions {
            vfs: vfs.clone(),
            storage,
            ..Default::default()
        };
        let e = Engine::open(dir.path().join("db"), o, OpenMode::Create).unwrap();
        let mut b = WriteBatch::new();
        b.put(b"before", b"v").unwrap();
        e.write(b).unwrap();
        vfs.inject(FaultRule::new(FaultOp::Sync, FaultKind::Eio).on(".log"));
        let mut b = WriteBatch::new();
        for i in 0..1000u32 {
            b.put(&i.to_be_bytes(), b"x").unwrap();
        }
        assert!(e.write(b).is_err(), "{storage:?}");
        for i in [0u32, 500, 999] {
            assert!(
                !matches!(e.get(&i.to_be_bytes()), Ok(Some(_))),
                "{storage:?}: key {i} visible after a failed sync"
            );
        }
        if let Ok(it) = e.iter(None, None, false) {
            let seen: Vec<Vec<u8>> = it.filter_map(|r| r.ok()).map(|(k, _)| k).collect();
            assert!(seen.len() <= 1, "{storage:?}: {} keys", seen.len());
        }
        let mut b = WriteBatch::new();
        b.put(b"after", b"v").unwrap();
        assert!(
            e.write(b).is_err(),
            "{storage:?}: a failed sync stops writes"
        );
    }
}
