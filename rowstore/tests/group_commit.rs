//! Group commit under concurrent durable writers: a leader gathers a group, and the
//! writer whose request completes it takes the group and writes it (the leader, asleep,
//! finds its request in that group). Whoever writes a group, every commit must be
//! acknowledged once, with its own timestamp, durably, and transactional commits must
//! still be validated against every commit before them.

use lightning_rowstore::{
    Engine, EngineOptions, Error, Isolation, OpenMode, Transaction, WriteBatch,
};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const WRITERS: u64 = 8;
const PUTS: u64 = 250;

fn open(dir: &std::path::Path, mode: OpenMode) -> Engine {
    Engine::open(dir.join("db"), EngineOptions::default(), mode).unwrap()
}

/// Increment the shared counter in a transaction, retrying on conflict.
fn increment(e: &Engine) -> u64 {
    loop {
        let mut t = Transaction::begin(e, Isolation::Serializable).unwrap();
        let n = t
            .get(e, b"counter")
            .unwrap()
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
        t.put(b"counter", &(n + 1).to_be_bytes()).unwrap();
        match t.commit(e) {
            Ok(_) => return n + 1,
            Err(Error::TransactionConflict(_)) => continue,
            Err(err) => panic!("{err}"),
        }
    }
}

#[test]
fn groups_taken_by_the_writer_completing_them_commit_every_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(dir.path(), OpenMode::Create));
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let mut handoffs = 0;
    // Rounds until the hand-off happened (the first, on a disk whose fsync takes any
    // time at all: each leader waits up to one sync for its group).
    let mut rounds = 0;
    while handoffs == 0 {
        assert!(
            rounds < 20,
            "no group was ever taken by the writer completing it"
        );
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let (e, stamps) = (&e, &stamps);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut counted = Vec::new();
                    for i in 0..PUTS {
                        let mut b = WriteBatch::new();
                        b.put(
                            format!("r{rounds:02}w{w}k{i:05}").as_bytes(),
                            &i.to_be_bytes(),
                        )
                        .unwrap();
                        mine.push(e.write(b).unwrap());
                        if i % 10 == 0 {
                            counted.push(increment(e));
                        }
                    }
                    // A writer's own commits are acknowledged in order.
                    assert!(mine.windows(2).all(|p| p[0] < p[1]), "{mine:?}");
                    stamps.lock().unwrap().push((mine, counted));
                });
            }
        });
        handoffs = e.stats().gather_handoffs.load(Ordering::Relaxed);
        rounds += 1;
    }
    let stamps = Arc::try_unwrap(stamps).unwrap().into_inner().unwrap();
    // Every put has a timestamp no other put has, and every increment saw a count no
    // other increment saw: no commit was lost, doubled or validated against a stale view.
    let puts: Vec<u64> = stamps.iter().flat_map(|(m, _)| m.iter().copied()).collect();
    let distinct: BTreeSet<u64> = puts.iter().copied().collect();
    assert_eq!(distinct.len(), puts.len());
    let counts: Vec<u64> = stamps.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let distinct: BTreeSet<u64> = counts.iter().copied().collect();
    assert_eq!(distinct.len(), counts.len());
    assert_eq!(distinct.last().copied(), Some(counts.len() as u64));
    drop(e);
    // All of it is in the log: reopened, every put and the final count read back.
    let e = open(dir.path(), OpenMode::Open);
    for r in 0..rounds {
        for w in 0..WRITERS {
            for i in 0..PUTS {
                let k = format!("r{r:02}w{w}k{i:05}");
                assert_eq!(
                    e.get(k.as_bytes()).unwrap(),
                    Some(i.to_be_bytes().to_vec()),
                    "{k}"
                );
            }
        }
    }
    assert_eq!(
        e.get(b"counter").unwrap(),
        Some((counts.len() as u64).to_be_bytes().to_vec())
    );
}
