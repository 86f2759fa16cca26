//! The snapshot registry every engine keeps: which snapshot timestamps are held (by
//! readers, transactions, and layers above such as the column store's watermark pins)
//! and how many transactions are open. An engine keeps every version a registered
//! snapshot can see; the oldest registered timestamp is its garbage-collection horizon.

use crate::error::{Error, Result};
use crate::key::Ts;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Registered snapshot timestamps (counted) and open transactions.
#[derive(Debug, Default)]
pub struct SnapshotRegistry {
    counts: Mutex<BTreeMap<Ts, usize>>,
    active_txns: AtomicUsize,
}

/// How a snapshot's timestamp is chosen when it is registered.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// The newest visible commit, read while holding the registry (so no collection
    /// can pass it in between). Read `SeqCst`: a transaction's begin pairs with the
    /// commit path's read of [`SnapshotRegistry::active_txns_seqcst`].
    Now,
    /// An earlier timestamp, if every version it needs is still kept: at or above the
    /// horizon and at or below the newest commit.
    Checked(Ts),
    /// Any timestamp, before background work starts (a pin taken while opening).
    Unchecked(Ts),
}

impl SnapshotRegistry {
    /// Register a snapshot. `visible` is the engine's newest visible commit.
    pub fn register(self: &Arc<Self>, at: At, visible: &AtomicU64) -> Result<Snapshot> {
        let mut m = self.counts.lock();
        let ts = match at {
            At::Now => visible.load(Ordering::SeqCst),
            At::Checked(ts) => {
                let v = visible.load(Ordering::Acquire);
                let horizon = m.keys().next().map_or(v, |&s| s.min(v));
                if ts < horizon || ts > v {
                    return Err(Error::InvalidArgument(format!(
                        "cannot take a snapshot at {ts}: versions are kept only from {horizon} to {v}"
                    )));
                }
                ts
            }
            At::Unchecked(ts) => ts,
        };
        *m.entry(ts).or_insert(0) += 1;
        Ok(Snapshot {
            registry: self.clone(),
            ts,
        })
    }

    /// Register a snapshot of the newest visible commit.
    pub fn register_now(self: &Arc<Self>, visible: &AtomicU64) -> Snapshot {
        let mut m = self.counts.lock();
        let ts = visible.load(Ordering::SeqCst);
        *m.entry(ts).or_insert(0) += 1;
        Snapshot {
            registry: self.clone(),
            ts,
        }
    }

    /// Begin a transaction: counted as open (before its snapshot is taken: see
    /// [`At::Now`]) until the returned guard drops.
    pub fn begin_txn(self: &Arc<Self>, visible: &AtomicU64) -> Result<TxnSnapshot> {
        self.active_txns.fetch_add(1, Ordering::SeqCst);
        Ok(TxnSnapshot {
            snap: self.register_now(visible),
        })
    }

    /// The oldest timestamp whose versions must be kept: the oldest registered
    /// snapshot, or `visible` (the newest commit) when none is registered.
    pub fn horizon(&self, visible: Ts) -> Ts {
        let m = self.counts.lock();
        m.keys().next().map_or(visible, |&s| s.min(visible))
    }

    /// Open transactions (a relaxed read, for figures).
    pub fn active_txns(&self) -> usize {
        self.active_txns.load(Ordering::Relaxed)
    }

    /// Open transactions, read `SeqCst` by a commit after it published its timestamp:
    /// either it sees a transaction that began, or that transaction's snapshot sees
    /// the commit.
    pub fn active_txns_seqcst(&self) -> usize {
        self.active_txns.load(Ordering::SeqCst)
    }

    fn release(&self, ts: Ts) {
        let mut m = self.counts.lock();
        if let Some(c) = m.get_mut(&ts) {
            *c -= 1;
            if *c == 0 {
                m.remove(&ts);
            }
        }
    }
}

/// A registered snapshot: the engine keeps every version it can see until it drops.
#[derive(Debug)]
pub struct Snapshot {
    registry: Arc<SnapshotRegistry>,
    ts: Ts,
}

impl Snapshot {
    pub fn ts(&self) -> Ts {
        self.ts
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.registry.release(self.ts);
    }
}

/// The snapshot of an open transaction; dropping it ends the transaction's hold.
#[derive(Debug)]
pub struct TxnSnapshot {
    snap: Snapshot,
}

impl TxnSnapshot {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }
    pub fn ts(&self) -> Ts {
        self.snap.ts
    }
}

impl Drop for TxnSnapshot {
    fn drop(&mut self) {
        self.snap
            .registry
            .active_txns
            .fetch_sub(1, Ordering::SeqCst);
    }
}
