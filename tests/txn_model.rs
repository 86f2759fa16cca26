//! Property test: random interleavings of several transactions (snapshot and
//! serializable), plain writes, flushes and compactions, checked step by step against a
//! simple model of snapshot isolation with first-committer-wins and read-set validation.

mod common;

use lightning_db::{ConsistencyLevel, Database, LightningDbConfig, TxId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Begin(bool),
    Get(usize, u8),
    Put(usize, u8, u8),
    Delete(usize, u8),
    Scan(usize, u8, u8),
    Commit(usize),
    Abort(usize),
    PlainPut(u8, u8),
    Flush,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..10;
    let t = 0usize..4;
    prop_oneof![
        4 => any::<bool>().prop_map(Op::Begin),
        8 => (t.clone(), k.clone()).prop_map(|(t, k)| Op::Get(t, k)),
        8 => (t.clone(), k.clone(), any::<u8>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        2 => (t.clone(), k.clone()).prop_map(|(t, k)| Op::Delete(t, k)),
        2 => (t.clone(), k.clone(), k.clone()).prop_map(|(t, a, b)| Op::Scan(t, a.min(b), a.max(b))),
        4 => t.clone().prop_map(Op::Commit),
        1 => t.prop_map(Op::Abort),
        3 => (k, any::<u8>()).prop_map(|(k, v)| Op::PlainPut(k, v)),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
    ]
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + k]
}

struct MTxn {
    id: TxId,
    start: u64,
    serializable: bool,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    reads: BTreeSet<Vec<u8>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Committed versions of one key: (commit sequence, value or tombstone).
type History = Vec<(u64, Option<Vec<u8>>)>;

#[derive(Default)]
struct Model {
    seq: u64,
    versions: BTreeMap<Vec<u8>, History>,
}

impl Model {
    fn read(&self, k: &[u8], at: u64) -> Option<Vec<u8>> {
        self.versions
            .get(k)
            .and_then(|v| v.iter().rev().find(|(s, _)| *s <= at))
            .and_then(|(_, v)| v.clone())
    }
    fn changed_after(&self, k: &[u8], at: u64) -> bool {
        self.versions
            .get(k)
            .is_some_and(|v| v.iter().any(|(s, _)| *s > at))
    }
    fn commit(&mut self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        self.seq += 1;
        for (k, v) in writes {
            self.versions
                .entry(k.clone())
                .or_default()
                .push((self.seq, v.clone()));
        }
    }
}

fn run(ops: Vec<Op>, optimized: bool, btree: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            use_optimized_transactions: optimized,
            storage_engine: if btree {
                lightning_db::StorageEngine::BTree
            } else {
                lightning_db::StorageEngine::Lsm
            },
            write_buffer_size: 4096,
            level0_compaction_trigger: 2,
            level_base_size: 8192,
            target_file_size: 4096,
            durability: lightning_db::Durability::Buffered,
            ..Default::default()
        },
    )
    .unwrap();
    let mut m = Model::default();
    let mut open: Vec<MTxn> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Begin(ser) => {
                let level = if ser {
                    ConsistencyLevel::Serializable
                } else {
                    ConsistencyLevel::Snapshot
                };
                let id = db.begin_transaction_with(level).unwrap();
                open.push(MTxn {
                    id,
                    start: m.seq,
                    serializable: ser,
                    writes: BTreeMap::new(),
                    reads: BTreeSet::new(),
                    ranges: Vec::new(),
                });
            }
            Op::PlainPut(k, v) => {
                db.put(&key(k), &[v]).unwrap();
                m.commit(&BTreeMap::from([(key(k), Some(vec![v]))]));
            }
            Op::Flush => db.flush().unwrap(),
            Op::Compact => db.compact().unwrap(),
            Op::Get(t, k) | Op::Put(t, k, _) | Op::Delete(t, k) | Op::Scan(t, k, _)
                if t >= open.len() =>
            {
                let _ = k;
            }
            Op::Commit(t) | Op::Abort(t) if t >= open.len() => {}
            Op::Get(t, k) => {
                let tx = &mut open[t];
                let want = match tx.writes.get(&key(k)) {
                    Some(v) => v.clone(),
                    None => {
                        tx.reads.insert(key(k));
                        m.read(&key(k), tx.start)
                    }
                };
                assert_eq!(db.get_tx(tx.id, &key(k)).unwrap(), want, "step {step}");
            }
            Op::Put(t, k, v) => {
                db.put_tx(open[t].id, &key(k), &[v]).unwrap();
                open[t].writes.insert(key(k), Some(vec![v]));
            }
            Op::Delete(t, k) => {
                db.delete_tx(open[t].id, &key(k)).unwrap();
                open[t].writes.insert(key(k), None);
            }
            Op::Scan(t, a, b) => {
                let tx = &mut open[t];
                let (s, e) = (key(a), key(b));
                tx.ranges.push((s.clone(), e.clone()));
                let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
                for kk in m.versions.keys().filter(|kk| **kk >= s && **kk < e) {
                    if let Some(v) = m.read(kk, tx.start) {
                        want.insert(kk.clone(), v);
                    }
                }
                for (kk, v) in tx.writes.range(s.clone()..e.clone()) {
                    match v {
                        Some(v) => want.insert(kk.clone(), v.clone()),
                        None => want.remove(kk),
                    };
                }
                let got: Vec<_> = db
                    .scan_tx(tx.id, Some(&s), Some(&e))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "step {step}");
            }
            Op::Abort(t) => {
                let tx = open.remove(t);
                db.abort_transaction(tx.id).unwrap();
            }
            Op::Commit(t) => {
                let tx = open.remove(t);
                let validates = !tx.writes.is_empty()
                    || (tx.serializable && !(tx.reads.is_empty() && tx.ranges.is_empty()));
                let conflict = validates
                    && (tx.writes.keys().any(|k| m.changed_after(k, tx.start))
                        || (tx.serializable
                            && (tx.reads.iter().any(|k| m.changed_after(k, tx.start))
                                || tx.ranges.iter().any(|(s, e)| {
                                    m.versions
                                        .keys()
                                        .filter(|k| *k >= s && *k < e)
                                        .any(|k| m.changed_after(k, tx.start))
                                }))));
                let r = db.commit_transaction(tx.id);
                if conflict {
                    assert!(
                        r.unwrap_err().is_conflict(),
                        "step {step}: expected a conflict"
                    );
                } else {
                    r.unwrap_or_else(|e| panic!("step {step}: unexpected {e}"));
                    if !tx.writes.is_empty() {
                        m.commit(&tx.writes);
                    }
                }
            }
        }
    }
    // Whatever is still open sees its snapshot; the latest state matches the model.
    for (k, _) in m.versions.clone() {
        assert_eq!(db.get(&k).unwrap(), m.read(&k, m.seq));
    }
}

fn cases() -> u32 {
    if cfg!(feature = "integration_tests") {
        256
    } else {
        48
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn transactions_match_the_snapshot_isolation_model(
        ops in proptest::collection::vec(op(), 1..120),
        optimized in any::<bool>(),
        btree in any::<bool>(),
    ) {
        run(ops, optimized, btree);
    }
}
