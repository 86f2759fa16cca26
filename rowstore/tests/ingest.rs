//! Ingestion (`Engine::ingest`): a large write staged as table files and published by
//! one commit. The contract against the memory engine is in `engines.rs`; these check
//! what only the files show: nothing staged survives an abandoned or crashed ingestion,
//! an import into a free key range lands in a deep level (no rewrite by compaction),
//! and the published data survives reopening.

use lightning_rowstore::{Engine, EngineOptions, OpenMode, WriteBatch};
use std::path::Path;

fn opts() -> EngineOptions {
    EngineOptions {
        write_buffer_size: 64 << 10,
        background_compaction: false,
        ..Default::default()
    }
}

fn key(t: u8, i: u32) -> Vec<u8> {
    let mut k = vec![t];
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn tables(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sst")
        })
        .count()
}

fn stage(e: &Engine, t: u8, runs: u32, per_run: u32) -> lightning_rowstore::Ingest<'_> {
    let mut ing = e.ingest().unwrap();
    for r in 0..runs {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (r * per_run..(r + 1) * per_run)
            .map(|i| (key(t, i), format!("v{i}").into_bytes()))
            .collect();
        ing.add_run(rows.iter().map(|(k, v)| (&k[..], Some(&v[..]))))
            .unwrap();
    }
    ing
}

#[test]
fn an_ingestion_is_invisible_until_its_commit_and_durable_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // Background flushes and compactions on: the commit waits for the flush thread.
    let bg = EngineOptions {
        background_compaction: true,
        ..opts()
    };
    let e = Engine::open(&path, bg.clone(), OpenMode::Create).unwrap();
    let mut b = WriteBatch::new();
    b.put(&key(1, 5), b"old").unwrap();
    e.write(b).unwrap();
    let before = e.snapshot();
    let ing = stage(&e, 2, 4, 5_000);
    assert_eq!(ing.runs(), 4);
    assert_eq!(
        e.get(&key(2, 0)).unwrap(),
        None,
        "staged rows are not visible"
    );
    let ts = ing.commit(Some(before.ts())).unwrap();
    assert!(ts > before.ts());
    assert_eq!(e.get(&key(2, 19_999)).unwrap(), Some(b"v19999".to_vec()));
    assert_eq!(
        e.get_at(&key(2, 0), &before).unwrap(),
        None,
        "older snapshots keep their view"
    );
    assert_eq!(
        e.iter(Some(&[2]), Some(&[3]), false).unwrap().count(),
        20_000
    );
    // A range no table held goes below level 0: compaction never rewrites it.
    let sizes = e.sizes();
    assert_eq!(sizes.tables_per_level[6], 4, "{sizes:?}");
    drop(before);
    e.close().unwrap();
    drop(e);
    let e = Engine::open(&path, bg, OpenMode::Open).unwrap();
    assert_eq!(e.get(&key(2, 12_345)).unwrap(), Some(b"v12345".to_vec()));
    assert_eq!(e.get(&key(1, 5)).unwrap(), Some(b"old".to_vec()));
    assert!(e.visible_ts() >= ts);
    e.compact_all().unwrap();
    assert_eq!(
        e.iter(Some(&[2]), Some(&[3]), false).unwrap().count(),
        20_000
    );
}

#[test]
fn an_abandoned_or_crashed_ingestion_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let e = Engine::open(&path, opts(), OpenMode::Create).unwrap();
    let base = tables(&path);
    drop(stage(&e, 2, 3, 1_000));
    assert_eq!(
        tables(&path),
        base,
        "dropping an ingestion removes its files"
    );
    // A crash: the staged files stay behind, named by no manifest.
    std::mem::forget(stage(&e, 2, 3, 1_000));
    assert_eq!(tables(&path), base + 3);
    e.close().unwrap();
    drop(e);
    let e = Engine::open(&path, opts(), OpenMode::Open).unwrap();
    assert_eq!(e.get(&key(2, 1)).unwrap(), None);
    assert_eq!(e.iter(None, None, false).unwrap().count(), 0);
    assert_eq!(tables(&path), base, "recovery deletes unpublished files");
}

#[test]
fn a_key_written_after_the_ingestion_began_refuses_it_and_newer_writes_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let e = Engine::open(&path, opts(), OpenMode::Create).unwrap();
    let start = e.snapshot();
    let ing = stage(&e, 2, 2, 100);
    let mut b = WriteBatch::new();
    b.put(&key(2, 150), b"concurrent").unwrap();
    e.write(b).unwrap();
    let err = ing.commit(Some(start.ts())).unwrap_err();
    assert!(
        matches!(err, lightning_rowstore::Error::TransactionConflict(_)),
        "{err}"
    );
    assert_eq!(e.get(&key(2, 1)).unwrap(), None);
    assert_eq!(e.get(&key(2, 150)).unwrap(), Some(b"concurrent".to_vec()));
    // Without the check it wins over the older write, and a later write wins over it.
    stage(&e, 2, 2, 100).commit(None).unwrap();
    assert_eq!(e.get(&key(2, 150)).unwrap(), Some(b"v150".to_vec()));
    let mut b = WriteBatch::new();
    b.put(&key(2, 7), b"newer").unwrap();
    e.write(b).unwrap();
    e.flush().unwrap();
    e.compact_all().unwrap();
    assert_eq!(e.get(&key(2, 7)).unwrap(), Some(b"newer".to_vec()));
    assert_eq!(e.get(&key(2, 8)).unwrap(), Some(b"v8".to_vec()));
}

#[test]
fn runs_must_be_sorted_and_duplicates_across_runs_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("db"), opts(), OpenMode::Create).unwrap();
    let mut ing = e.ingest().unwrap();
    let (a, b) = (key(2, 2), key(2, 1));
    assert!(
        ing.add_run([(&a[..], Some(&b"x"[..])), (&b[..], Some(&b"y"[..]))])
            .is_err()
    );
    let mut ing = e.ingest().unwrap();
    let (k1, k2, k3) = (key(2, 1), key(2, 5), key(2, 9));
    ing.add_run([(&k1[..], Some(&b"x"[..])), (&k2[..], Some(&b"y"[..]))])
        .unwrap();
    ing.add_run([(&k3[..], Some(&b"z"[..]))]).unwrap();
    assert_eq!(ing.duplicate_key().unwrap(), None);
    ing.add_run([(&k2[..], Some(&b"w"[..]))]).unwrap();
    assert_eq!(ing.duplicate_key().unwrap(), Some(k2.clone()));
    ing.commit(None).unwrap();
    assert_eq!(
        e.get(&k2).unwrap(),
        Some(b"w".to_vec()),
        "the later run wins"
    );
}

#[test]
fn duplicates_are_found_between_interleaved_runs_reading_only_where_they_touch() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path().join("db"), opts(), OpenMode::Create).unwrap();
    // Each run takes the next slice of two sorted streams (as a parallel scan's two
    // partitions interleave), so every run's key range overlaps every other's.
    let stage = |dup: Option<u32>| {
        let mut ing = e.ingest().unwrap();
        for r in 0..8u32 {
            let mut keys: Vec<Vec<u8>> = (r * 1000..(r + 1) * 1000)
                .chain(1_000_000 + r * 1000..1_000_000 + (r + 1) * 1000)
                .map(|i| key(2, i))
                .collect();
            if r == 6
                && let Some(d) = dup
            {
                keys.push(key(2, d)); // also in an earlier run
                keys.sort();
            }
            ing.add_run(keys.iter().map(|k| (&k[..], Some(&b"v"[..]))))
                .unwrap();
        }
        ing
    };
    assert_eq!(stage(None).duplicate_key().unwrap(), None);
    for d in [0, 2_345, 1_004_999, 1_000_000 + 7_999] {
        assert_eq!(
            stage(Some(d)).duplicate_key().unwrap(),
            Some(key(2, d)),
            "{d}"
        );
    }
}

/// A run's file is written on a helper thread while the caller prepares the next run;
/// when that write fails (here: the disk is full), the error reaches the caller (at the
/// next run or at the commit), nothing is published, no staged file stays behind, and
/// the engine takes writes again once there is space.
#[test]
fn a_run_that_cannot_be_written_fails_the_ingestion_and_leaves_nothing() {
    use lightning_rowstore::vfs::{FaultKind, FaultOp, FaultRule, FaultVfs};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let vfs = Arc::new(FaultVfs::new());
    let o = EngineOptions {
        vfs: vfs.clone(),
        ..opts()
    };
    let e = Engine::open(&path, o, OpenMode::Create).unwrap();
    let base = tables(&path);
    vfs.inject(FaultRule::new(FaultOp::Write, FaultKind::NoSpace).on(".sst"));
    let mut ing = e.ingest().unwrap();
    let mut failed = false;
    for r in 0..3u32 {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (r * 5_000..(r + 1) * 5_000)
            .map(|i| (key(3, i), vec![b'x'; 100]))
            .collect();
        if ing
            .add_run(rows.iter().map(|(k, v)| (&k[..], Some(&v[..]))))
            .is_err()
        {
            failed = true;
            break;
        }
    }
    if !failed {
        assert!(
            ing.commit(None).is_err(),
            "the failed run's error is reported"
        );
    } else {
        drop(ing);
    }
    assert_eq!(e.get(&key(3, 1)).unwrap(), None);
    assert_eq!(tables(&path), base, "no staged file stays behind");
    vfs.clear_faults();
    let mut b = WriteBatch::new();
    b.put(&key(3, 1), b"after").unwrap();
    e.write(b).unwrap();
    assert_eq!(e.get(&key(3, 1)).unwrap().as_deref(), Some(&b"after"[..]));
}
