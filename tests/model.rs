//! Model-based property test: random sequences of puts, deletes, batches, gets, scans,
//! reverse scans, flushes, compactions and reopens, checked step by step against a
//! `BTreeMap`.

mod common;

use lightning_db::{Database, LightningDbConfig};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Get(u8),
    Scan(Option<u8>, Option<u8>),
    ScanReverse(Option<u8>, Option<u8>),
    ScanPrefix(u8),
    Flush,
    Compact,
    Reopen,
}

fn k(i: u8) -> Vec<u8> {
    // Two-level key space so prefixes are meaningful: "a3/17".
    format!("{}{}/{}", (b'a' + i / 32) as char, (i / 8) % 4, i % 8).into_bytes()
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..16),
        1 => proptest::collection::vec(any::<u8>(), 100..700),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u8..96;
    prop_oneof![
        30 => (key.clone(), value_strategy()).prop_map(|(k, v)| Op::Put(k, v)),
        10 => key.clone().prop_map(Op::Delete),
        8 => proptest::collection::vec((key.clone(), proptest::option::of(value_strategy())), 1..12)
            .prop_map(Op::Batch),
        20 => key.clone().prop_map(Op::Get),
        5 => (proptest::option::of(key.clone()), proptest::option::of(key.clone()))
            .prop_map(|(a, b)| Op::Scan(a, b)),
        5 => (proptest::option::of(key.clone()), proptest::option::of(key.clone()))
            .prop_map(|(a, b)| Op::ScanReverse(a, b)),
        3 => key.prop_map(Op::ScanPrefix),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        2 => Just(Op::Reopen),
    ]
}

/// `encryption`: 0 plaintext, 1 AES-256-GCM, 2 ChaCha20-Poly1305, 3 plaintext on the
/// B+Tree storage engine, 4 AES-256-GCM on the B+Tree.
fn config(background: bool, codec: u8, encryption: u8) -> LightningDbConfig {
    use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider};
    let cipher = match encryption {
        1 | 4 => Some(Cipher::Aes256Gcm),
        2 => Some(Cipher::ChaCha20Poly1305),
        _ => None,
    };
    LightningDbConfig {
        encryption: cipher.map(|c| EncryptionConfig::new(c, KeyProvider::raw([encryption; 32]))),
        storage_engine: match encryption {
            3 | 4 => lightning_db::StorageEngine::BTree,
            _ => lightning_db::StorageEngine::Lsm,
        },
        page_size: 512,
        write_buffer_size: 4096,
        level0_compaction_trigger: 2,
        level0_stop_writes_trigger: 6,
        level_base_size: 8192,
        target_file_size: 4096,
        cache_size: 64 * 1024,
        background_compaction: background,
        compression_type: codec,
        ..Default::default()
    }
}

fn ordered(range: (Option<u8>, Option<u8>)) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (a, b) = (range.0.map(k), range.1.map(k));
    match (&a, &b) {
        (Some(x), Some(y)) if x > y => (b, a),
        _ => (a, b),
    }
}

fn model_range(
    m: &BTreeMap<Vec<u8>, Vec<u8>>,
    s: &Option<Vec<u8>>,
    e: &Option<Vec<u8>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter()
        .filter(|(key, _)| {
            s.as_ref().is_none_or(|s| key.as_slice() >= s.as_slice())
                && e.as_ref().is_none_or(|e| key.as_slice() < e.as_slice())
        })
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect()
}

fn run(ops: Vec<Op>, background: bool, codec: u8, encryption: u8) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = config(background, codec, encryption);
    let mut db = Database::create(&path, cfg.clone()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(key, v) => {
                db.put(&k(key), &v).unwrap();
                model.insert(k(key), v);
            }
            Op::Delete(key) => {
                db.delete(&k(key)).unwrap();
                model.remove(&k(key));
            }
            Op::Batch(entries) => {
                let mut b = lightning_db::KvBatch::new();
                for (key, v) in &entries {
                    match v {
                        Some(v) => b.put(&k(*key), v).unwrap(),
                        None => b.delete(&k(*key)).unwrap(),
                    }
                }
                db.write_batch(&b).unwrap();
                for (key, v) in entries {
                    match v {
                        Some(v) => model.insert(k(key), v),
                        None => model.remove(&k(key)),
                    };
                }
            }
            Op::Get(key) => {
                assert_eq!(
                    db.get(&k(key)).unwrap(),
                    model.get(&k(key)).cloned(),
                    "step {step}"
                );
                // The lending read sees the same value where it lies.
                assert_eq!(
                    db.get_with(&k(key), <[u8]>::to_vec).unwrap(),
                    model.get(&k(key)).cloned(),
                    "step {step}: get_with"
                );
            }
            Op::Scan(a, b) => {
                let (s, e) = ordered((a, b));
                let got: Vec<_> = db
                    .scan(s.as_deref(), e.as_deref())
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                assert_eq!(got, model_range(&model, &s, &e), "step {step}");
                // The lending scan sees the same entries.
                let mut lent = Vec::new();
                let mut it = db.scan_ref(s.as_deref(), e.as_deref()).unwrap();
                while let Some((k, v)) = it.next().unwrap() {
                    lent.push((k.to_vec(), v.to_vec()));
                }
                assert_eq!(lent, got, "step {step}");
            }
            Op::ScanReverse(a, b) => {
                let (s, e) = ordered((a, b));
                let got: Vec<_> = db
                    .scan_reverse(s.as_deref(), e.as_deref())
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                let mut want = model_range(&model, &s, &e);
                want.reverse();
                assert_eq!(got, want, "step {step}");
                let mut lent = Vec::new();
                let mut it = db.scan_reverse_ref(s.as_deref(), e.as_deref()).unwrap();
                while let Some((k, v)) = it.next().unwrap() {
                    lent.push((k.to_vec(), v.to_vec()));
                }
                assert_eq!(lent, want, "step {step}");
            }
            Op::ScanPrefix(key) => {
                let p = k(key)[..2].to_vec();
                let got: Vec<_> = db.scan_prefix(&p).unwrap().map(|r| r.unwrap()).collect();
                let want: Vec<_> = model
                    .iter()
                    .filter(|(kk, _)| kk.starts_with(&p))
                    .map(|(a, b)| (a.clone(), b.clone()))
                    .collect();
                assert_eq!(got, want, "step {step}");
            }
            Op::Flush => db.flush().unwrap(),
            Op::Compact => db.compact().unwrap(),
            Op::Reopen => {
                drop(db);
                db = Database::open(&path, cfg.clone()).unwrap();
            }
        }
    }
    // Final full comparison after one more reopen.
    drop(db);
    let db = Database::open(&path, cfg).unwrap();
    let got: Vec<_> = db.scan(None, None).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    db.engine().verify_tables().unwrap();
}

fn cases() -> u32 {
    if cfg!(feature = "integration_tests") {
        256
    } else {
        40
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_btreemap(
        ops in proptest::collection::vec(op_strategy(), 1..250),
        background in any::<bool>(),
        codec in 1u8..=3,
        encryption in 0u8..=4,
    ) {
        run(ops, background, codec, encryption);
    }
}
