//! The tree against a model (an ordered map of every version), across reopen, with
//! large keys and values, under simulated power loss at every write, and on damaged
//! pages.

use super::*;
use crate::key::cmp_internal;
use crate::vfs::StdVfs;
use crate::vfs::fault::{FaultKind, FaultOp, FaultRule, FaultVfs, PowerLoss};
use std::collections::BTreeMap;
use std::path::Path;

type Model = BTreeMap<(Vec<u8>, std::cmp::Reverse<Ts>), Option<Vec<u8>>>;

/// Every version in the model, in internal-key order, as the tree lists them.
fn entries(m: &Model) -> Vec<(Vec<u8>, Ts, Option<Vec<u8>>)> {
    m.iter()
        .map(|((k, ts), v)| (k.clone(), ts.0, v.clone()))
        .collect()
}

/// The newest version of `key` at or below `snap` in the model (a tombstone at the
/// bottom of the tree reads as no version at all, and may be dropped as one).
fn model_get(m: &Model, key: &[u8], snap: Ts) -> Option<Vec<u8>> {
    let from = (key.to_vec(), std::cmp::Reverse(snap));
    match m.range(from..).next() {
        Some(((k, _), v)) if k == key => v.clone(),
        _ => None,
    }
}

fn get(v: &Arc<TreeVersion>, key: &[u8], snap: Ts) -> Option<Vec<u8>> {
    match v.get(key, snap).unwrap() {
        Found::Value(v) => Some(v),
        Found::Absent | Found::Deleted => None,
    }
}

/// Visible (key, value) pairs at `snap` in `[start, end)` from versions in order.
fn visible(
    versions: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)>,
    snap: Ts,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut seen: Option<Vec<u8>> = None;
    let mut vs = versions;
    if reverse {
        vs.reverse();
    }
    for (k, ts, v) in vs {
        if ts > snap || seen.as_ref() == Some(&k) {
            continue;
        }
        seen = Some(k.clone());
        if let Some(v) = v {
            out.push((k, v));
        }
    }
    if reverse {
        out.reverse();
    }
    out
}

fn tree_versions(
    t: &BTree,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    reverse: bool,
) -> Vec<(Vec<u8>, Ts, Option<Vec<u8>>)> {
    version_entries(&t.current(), start, end, reverse)
}

fn version_entries(
    v: &Arc<TreeVersion>,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    reverse: bool,
) -> Vec<(Vec<u8>, Ts, Option<Vec<u8>>)> {
    let mut it = v.versions(start, end, reverse).unwrap();
    let mut out: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)> = Vec::new();
    while let Some((k, ts, v)) = it.current() {
        // The cursor says when a user key starts (what lets a scan skip older versions
        // without comparing keys).
        let fresh = out.last().is_none_or(|(p, _, _)| p.as_slice() != k);
        assert_eq!(it.fresh_key(), fresh, "fresh_key at {k:?}@{ts}");
        out.push((k.to_vec(), ts, v.map(<[u8]>::to_vec)));
        it.advance().unwrap();
    }
    if reverse {
        out.reverse();
    }
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:06}").into_bytes()
}

/// A batch of changes at timestamps after `ts`, sorted, one version per key.
fn batch(
    rng: &mut Rng,
    ts: &mut Ts,
    keys: u64,
    n: usize,
    big: bool,
) -> Vec<(Vec<u8>, Ts, Option<Vec<u8>>)> {
    let mut b = BTreeMap::new();
    for _ in 0..n {
        *ts += 1;
        let k = key(rng.below(keys));
        let v = match rng.below(10) {
            0 => None,
            1 if big => Some(vec![b'x'; 2000 + rng.below(9000) as usize]),
            _ => Some(format!("v{}", *ts).into_bytes()),
        };
        b.insert(k, (*ts, v));
    }
    let mut out: Vec<_> = b.into_iter().map(|(k, (t, v))| (k, t, v)).collect();
    out.sort_by(|a, b| cmp_internal(&a.0, a.1, &b.0, b.1));
    out
}

fn check(t: &BTree, m: &Model, horizon: Ts, latest: Ts, keys: u64, rng: &mut Rng) {
    let v = t.current();
    for i in 0..keys {
        for snap in [horizon, latest, horizon + rng.below(latest - horizon + 1)] {
            assert_eq!(
                get(&v, &key(i), snap),
                model_get(m, &key(i), snap),
                "key {i} at {snap}"
            );
        }
    }
    let all = entries(m);
    for _ in 0..4 {
        let (a, b) = (rng.below(keys + 2), rng.below(keys + 2));
        let (s, e) = (key(a.min(b)), key(a.max(b)));
        let snap = horizon + rng.below(latest - horizon + 1);
        for reverse in [false, true] {
            let want: Vec<_> = all
                .iter()
                .filter(|(k, _, _)| k >= &s && k < &e)
                .cloned()
                .collect();
            let got = visible(tree_versions(t, Some(&s), Some(&e), reverse), snap, false);
            let want = visible(want, snap, false);
            let at = got.iter().zip(&want).position(|(g, w)| g != w);
            assert!(
                at.is_none() && got.len() == want.len(),
                "range {a}..{b} at {snap} reverse {reverse}: {} vs {} entries, first difference at {at:?}: {:?}",
                got.len(),
                want.len(),
                at.map(|i| (
                    String::from_utf8_lossy(&got[i].0).to_string(),
                    String::from_utf8_lossy(&want[i].0).to_string()
                ))
            );
        }
    }
    let got = tree_versions(t, None, None, false);
    assert_eq!(
        visible(got, latest, false),
        visible(all.clone(), latest, false)
    );
    let got = tree_versions(t, None, None, true);
    assert_eq!(visible(got, latest, false), visible(all, latest, false));
}

/// `cache`: bytes of extent cache for positioned reads (0: none).
fn run_model(map: bool, cache: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let mut t = BTree::create(&StdVfs, &path).unwrap();
    if !map {
        t = BTree::open(&StdVfs, &path, false, true)
            .unwrap()
            .with_cache(cache);
    }
    let mut rng = Rng(seed);
    let mut m = Model::new();
    let (mut ts, mut horizon) = (0, 0);
    let keys = 3000;
    for round in 0..40 {
        let n = [1, 10, 300, 2000][rng.below(4) as usize];
        let b = batch(&mut rng, &mut ts, keys, n, round % 3 == 0);
        for (k, t, v) in &b {
            m.insert((k.clone(), std::cmp::Reverse(*t)), v.clone());
        }
        // The horizon moves forward, sometimes to the newest commit.
        horizon = if rng.below(3) == 0 {
            ts
        } else {
            horizon.max(ts.saturating_sub(rng.below(3000)))
        };
        t.apply(b, horizon, ts).unwrap();
        // What a snapshot at or above the horizon reads never changes; prune the model
        // the same way only for comparing versions at or above it.
        check(&t, &m, horizon, ts, keys, &mut rng);
        if round % 10 == 9 {
            drop(t);
            t = BTree::open(&StdVfs, &path, map, true)
                .unwrap()
                .with_cache(cache);
            assert_eq!(t.current().meta.applied, ts);
            check(&t, &m, horizon, ts, keys, &mut rng);
        }
    }
}

#[test]
fn reads_match_the_model_through_the_map() {
    run_model(true, 0, 0x1234_5678);
}

#[test]
fn reads_match_the_model_through_positioned_reads() {
    run_model(false, 0, 0x8765_4321);
}

/// Positioned reads through the extent cache while applies free and reuse pages: a
/// cache that holds the whole tree, and one small enough to evict all the time.
#[test]
fn reads_match_the_model_through_the_extent_cache() {
    run_model(false, 64 << 20, 0x5151_7171);
    run_model(false, 48 << 10, 0x2323_4545);
}

#[test]
fn rewriting_the_same_keys_reuses_pages_instead_of_growing_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let mut ts = 0;
    let mut sizes = Vec::new();
    for round in 0..30 {
        let b: Vec<_> = (0..5000u64)
            .map(|i| {
                ts += 1;
                (key(i), ts, Some(vec![round as u8; 100]))
            })
            .collect();
        t.apply(b, ts, ts).unwrap();
        sizes.push(t.current().meta.end);
    }
    // Old versions go at the horizon and their pages come back: the tree stays at
    // about two copies of itself (the live one and the one being replaced).
    assert!(sizes[29] <= sizes[4] * 3 / 2, "pages used grew: {sizes:?}");
    let v = t.current();
    assert_eq!(tree_versions(&t, None, None, false).len(), 5000);
    assert_eq!(v.meta.entries, 5000);
    assert_eq!(v.get(&key(17), ts).unwrap(), Found::Value(vec![29; 100]));
}

#[test]
fn deleting_everything_leaves_an_empty_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let puts: Vec<_> = (0..4000u64)
        .map(|i| (key(i), 1, Some(vec![1; 50])))
        .collect();
    t.apply(puts, 1, 1).unwrap();
    assert!(t.current().meta.height >= 2);
    let dels: Vec<_> = (0..4000u64).map(|i| (key(i), 2, None)).collect();
    t.apply(dels, 2, 2).unwrap();
    let v = t.current();
    assert_eq!((v.meta.root, v.meta.entries), (None, 0));
    assert_eq!(v.get(&key(5), 2).unwrap(), Found::Absent);
}

#[test]
fn large_keys_and_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let big_key = |i: u8| vec![i; crate::MAX_KEY_LEN];
    let mut b: Vec<_> = (0..5u8)
        .map(|i| (big_key(i), 1, Some(vec![i; 200_000])))
        .collect();
    b.push((b"small".to_vec(), 1, Some(b"v".to_vec())));
    t.apply(b, 1, 1).unwrap();
    drop(t);
    let t = BTree::open(&StdVfs, &path, true, true).unwrap();
    let v = t.current();
    for i in 0..5u8 {
        assert_eq!(
            v.get(&big_key(i), 1).unwrap(),
            Found::Value(vec![i; 200_000])
        );
    }
    assert_eq!(tree_versions(&t, None, None, true).len(), 6);
}

#[test]
fn a_damaged_page_is_a_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let puts: Vec<_> = (0..2000u64)
        .map(|i| (key(i), 1, Some(vec![7; 60])))
        .collect();
    t.apply(puts, 1, 1).unwrap();
    drop(t);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte inside every data page (the meta pages are left alone).
    for p in (2..bytes.len() / PAGE).step_by(1) {
        bytes[p * PAGE + 100] ^= 0x40;
    }
    std::fs::write(&path, &bytes).unwrap();
    for map in [true, false] {
        match BTree::open(&StdVfs, &path, map, true) {
            Err(e) => assert!(e.is_corruption(), "{e}"),
            Ok(t) => {
                let e = t.current().get(&key(3), 1).unwrap_err();
                assert!(e.is_corruption(), "{e}");
                assert!(t.current().versions(None, None, false).is_err());
            }
        }
    }
}

/// For every `crash_at` in turn until `op` completes: a tree prepared by `prepare`, power
/// lost (torn) at the `crash_at`-th operation on its file during `op`, then `check` on
/// the tree reopened after. `cipher`: the tree's file is encrypted (paged layout) over
/// the failing disk, and reopened with a fresh key state, as a restarted process would.
fn crash_at_every_step(
    path: &Path,
    cipher: Option<crate::crypto::Cipher>,
    prepare: impl Fn(&BTree),
    op: impl Fn(&BTree) -> Result<()>,
    mut check: impl FnMut(&BTree, u64),
) {
    let dir = path.parent().unwrap();
    for crash_at in 0.. {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(dir.join(crate::crypto::KEY_FILE));
        let fault = FaultVfs::new().with_seed(crash_at);
        let vfs = || -> Arc<dyn Vfs> {
            let inner: Arc<dyn Vfs> = Arc::new(fault.clone());
            match cipher {
                None => inner,
                Some(c) => {
                    let config = crate::crypto::EncryptionConfig::new(
                        c,
                        crate::crypto::KeyProvider::raw([7; 32]),
                    );
                    let keys = Arc::new(crate::crypto::KeyState::new(inner.clone(), dir, &config));
                    Arc::new(crate::vfs::EncryptedVfs::new(inner, keys))
                }
            }
        };
        let t = BTree::create(&*vfs(), path).unwrap();
        prepare(&t);
        fault.inject(
            FaultRule::new(
                FaultOp::Any,
                FaultKind::PowerLoss(PowerLoss::Torn { seed: crash_at }),
            )
            .on("tree")
            .after(crash_at),
        );
        let done = op(&t).is_ok();
        drop(t);
        if !fault.is_dead() {
            fault
                .power_loss(PowerLoss::Torn { seed: crash_at })
                .unwrap();
        }
        fault.revive();
        fault.clear_faults();
        check(&BTree::open(&*vfs(), path, true, true).unwrap(), crash_at);
        if done {
            return;
        }
    }
}

/// Power goes out at every write and sync of an apply in turn; the tree reopened after
/// holds exactly the last published state, before or after the apply.
#[test]
fn a_power_loss_at_any_write_leaves_the_last_published_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let mut rng = Rng(99);
    let mut ts = 0;
    let first = batch(&mut rng, &mut ts, 500, 800, true);
    let second = batch(&mut rng, &mut ts, 500, 800, true);
    let mid = first
        .last()
        .map(|b| b.1)
        .unwrap_or(0)
        .max(first.iter().map(|b| b.1).max().unwrap());
    let mut before = Model::new();
    for (k, t, v) in &first {
        before.insert((k.clone(), std::cmp::Reverse(*t)), v.clone());
    }
    let mut after = before.clone();
    for (k, t, v) in &second {
        after.insert((k.clone(), std::cmp::Reverse(*t)), v.clone());
    }
    for cipher in [None, Some(crate::crypto::Cipher::Aes256Gcm)] {
        let mut outcomes = [0usize; 2];
        let check = |t: &BTree, crash_at: u64| {
            let v = t.current();
            let want = if v.meta.applied == ts {
                &after
            } else {
                &before
            };
            assert!(v.meta.applied == ts || v.meta.applied == mid);
            outcomes[usize::from(v.meta.applied == ts)] += 1;
            for i in 0..500 {
                assert_eq!(
                    get(&v, &key(i), ts),
                    model_get(want, &key(i), ts),
                    "crash at {crash_at}"
                );
            }
            let all = entries(want);
            assert_eq!(
                visible(tree_versions(t, None, None, false), ts, false),
                visible(all, ts, false)
            );
        };
        crash_at_every_step(
            &path,
            cipher,
            |t| t.apply(first.clone(), 0, mid).unwrap(),
            |t| t.apply(second.clone(), 0, ts),
            check,
        );
        assert!(
            outcomes[0] > 0 && outcomes[1] > 0,
            "{cipher:?}: {outcomes:?}"
        );
    }
}

/// A reader keeps the tree it started on, intact, while later versions free and reuse
/// pages; the pages it holds come back only once it lets go.
#[test]
fn a_held_version_reads_the_same_while_later_ones_reuse_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let mut ts = 0;
    let mut round = |t: &BTree, r: u8| {
        let b: Vec<_> = (0..3000u64)
            .map(|i| {
                ts += 1;
                (key(i), ts, Some(vec![r; 80]))
            })
            .collect();
        t.apply(b, ts, ts).unwrap();
    };
    round(&t, 1);
    let held = t.current();
    let before: Vec<_> = {
        let mut it = held.versions(None, None, false).unwrap();
        let mut out = Vec::new();
        while let Some((k, ts, v)) = it.current() {
            out.push((k.to_vec(), ts, v.map(<[u8]>::to_vec)));
            it.advance().unwrap();
        }
        out
    };
    for r in 2..8 {
        round(&t, r);
    }
    assert_eq!(t.free_pages(), 0, "the held version's pages are not free");
    let mut it = held.versions(None, None, false).unwrap();
    for want in &before {
        let (k, ts, v) = it.current().unwrap();
        assert_eq!((k, ts, v), (want.0.as_slice(), want.1, want.2.as_deref()));
        it.advance().unwrap();
    }
    drop(it);
    drop(held);
    round(&t, 8);
    assert!(t.free_pages() > 0, "released pages are free again");
}

/// After random rewrites the file holds the old tree's pages too; compaction rewrites
/// the tree into the lowest pages and gives the rest back, and reads stay the same.
#[test]
fn compaction_gives_free_pages_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let mut rng = Rng(5);
    let (mut ts, mut m) = (0, Model::new());
    for _ in 0..6 {
        let b = batch(&mut rng, &mut ts, 20_000, 15_000, false);
        for (k, t, v) in &b {
            m.insert((k.clone(), std::cmp::Reverse(*t)), v.clone());
        }
        t.apply(b, ts, ts).unwrap();
    }
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    let shrunk = t.compact(ts).unwrap();
    assert!(shrunk > 0 && size() < before, "{before} -> {}", size());
    assert_eq!(size(), t.current().meta.end * PAGE as u64);
    let free = t.free_pages();
    assert!(
        free * 10 < t.current().meta.end,
        "{free} free of {}",
        t.current().meta.end
    );
    check(&t, &m, ts, ts, 20_000, &mut rng);
    drop(t);
    let t = BTree::open(&StdVfs, &path, true, true).unwrap();
    check(&t, &m, ts, ts, 20_000, &mut rng);
    t.current().verify_all().unwrap();
}

/// A large value written after the small ones sits near the end of the file; once
/// most keys are deleted, compaction moves it down with the nodes instead of keeping
/// the file long.
#[test]
fn compaction_moves_value_extents_out_of_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let t = BTree::create(&StdVfs, &path).unwrap();
    let (mut ts, mut m) = (0, Model::new());
    let mut put = |t: &BTree, changes: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)>, ts: Ts| {
        for (k, at, v) in &changes {
            m.insert((k.clone(), std::cmp::Reverse(*at)), v.clone());
        }
        t.apply(changes, ts, ts).unwrap();
    };
    let small: Vec<_> = (0..20_000)
        .map(|i| {
            ts += 1;
            (key(i), ts, Some(format!("value {i:>40}").into_bytes()))
        })
        .collect();
    put(&t, small, ts);
    ts += 1;
    let big = vec![b'b'; 50_000];
    put(&t, vec![(key(5), ts, Some(big.clone()))], ts);
    let deletes: Vec<_> = (0..20_000)
        .filter(|&i| i != 5 && i % 10 != 0)
        .map(|i| {
            ts += 1;
            (key(i), ts, None)
        })
        .collect();
    put(&t, deletes, ts);
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    t.compact(ts).unwrap();
    assert!(size() * 3 < before, "{before} -> {}", size());
    assert_eq!(get(&t.current(), &key(5), ts), Some(big));
    let mut rng = Rng(9);
    // The model keeps every version; the tree only those the horizon reads.
    check(&t, &m, ts, ts, 20_000, &mut rng);
    drop(t);
    let t = BTree::open(&StdVfs, &path, true, true).unwrap();
    check(&t, &m, ts, ts, 20_000, &mut rng);
    t.current().verify_all().unwrap();
}

/// Power goes out at every write, sync and truncation of a compaction in turn: the
/// tree reopened after holds the same visible state, whichever generation survived.
/// The compaction has real work: most keys were deleted, and large values written
/// late sit high in the file, so nodes and value extents both move.
#[test]
fn a_power_loss_during_compaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree");
    let mut rng = Rng(77);
    let mut ts = 0;
    let mut batches: Vec<_> = (0..4)
        .map(|i| batch(&mut rng, &mut ts, 3000, 2500, i == 3))
        .collect();
    let deletes: Vec<_> = (0..3000)
        .filter(|i| i % 4 != 0)
        .map(|i| {
            ts += 1;
            (key(i), ts, None)
        })
        .collect();
    batches.push(deletes);
    let mut m = Model::new();
    for b in &batches {
        for (k, t, v) in b {
            m.insert((k.clone(), std::cmp::Reverse(*t)), v.clone());
        }
    }
    let want = visible(entries(&m), ts, false);
    assert!(want.iter().any(|(_, v)| v.len() > node::INLINE_MAX));
    for cipher in [None, Some(crate::crypto::Cipher::ChaCha20Poly1305)] {
        crash_at_every_step(
            &path,
            cipher,
            |t| {
                for b in &batches {
                    let last = b.last().map_or(0, |e| e.1);
                    t.apply(b.clone(), last, last).unwrap();
                }
            },
            |t| {
                let shrunk = t.compact(ts)?;
                assert!(shrunk > 0, "the compaction had work to do");
                Ok(())
            },
            |t, crash_at| {
                assert_eq!(
                    visible(tree_versions(t, None, None, false), ts, false),
                    want,
                    "crash at {crash_at}"
                );
                t.current().verify_all().unwrap();
            },
        );
    }
}

/// A reader in another process pins the tree: while the pin lives the writer reuses
/// no page, so the version the reader opened (through its own handle, as a backup
/// would) reads the same however many versions follow; pins of dead readers, and any
/// pin when a writer opens, are removed, and the reader can tell.
#[test]
fn a_pin_keeps_every_page_of_the_tree_a_reader_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("TREE");
    let vfs: Arc<dyn Vfs> = Arc::new(StdVfs);
    let t = BTree::create(&*vfs, &path).unwrap().with_pins(vfs.clone());
    let mut ts = 0;
    let round = |t: &BTree, ts: &mut u64, r: u8| {
        let b: Vec<_> = (0..3000u64)
            .map(|i| {
                *ts += 1;
                (key(i), *ts, Some(vec![r; 60]))
            })
            .collect();
        t.apply(b, *ts, *ts).unwrap();
    };
    round(&t, &mut ts, 0);
    round(&t, &mut ts, 1);
    let pin = TreePin::take(&*vfs, dir.path()).unwrap();
    let seen = BTree::read_live(&*vfs, &path).unwrap();
    let before = version_entries(&seen, None, None, false);
    let end = t.current().meta.end;
    for r in 2..8 {
        round(&t, &mut ts, r);
    }
    // Nothing was reused: the file grew by every rewrite, and what the reader opened
    // is intact.
    assert!(
        t.current().meta.end > end * 2,
        "{end} -> {}",
        t.current().meta.end
    );
    seen.verify_all().unwrap();
    let after = version_entries(&seen, None, None, false);
    assert_eq!(before, after);
    assert!(pin.held());
    drop(pin);
    // Unpinned, pages are reused again: the file stops growing.
    round(&t, &mut ts, 8);
    let end = t.current().meta.end;
    for r in 9..14 {
        round(&t, &mut ts, r);
    }
    assert!(
        t.current().meta.end <= end,
        "{end} -> {}",
        t.current().meta.end
    );
    // A pin nobody holds (its process died) is removed at the next build.
    let stale = dir.path().join("TREE-pin-00000000000000aa");
    std::fs::write(&stale, b"").unwrap();
    round(&t, &mut ts, 14);
    assert!(!stale.exists());
    // A writer that opens removes live pins too, and their readers can tell.
    let pin = TreePin::take(&*vfs, dir.path()).unwrap();
    drop(t);
    let _t = BTree::open(&*vfs, &path, true, true)
        .unwrap()
        .with_pins(vfs.clone());
    assert!(!pin.held());
}
