//! The snapshot registry: every snapshot a reader, a transaction or a layer above holds
//! is registered at its timestamp, and flush and compaction keep every version a
//! registered snapshot can see (the oldest registered one is the GC horizon).

use super::*;

/// A registered snapshot: flush and compaction keep every version it can see.
pub struct Snapshot {
    pub(super) inner: Arc<Inner>,
    pub(super) ts: Ts,
}

impl Snapshot {
    pub fn ts(&self) -> Ts {
        self.ts
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut m = self.inner.snapshots.lock();
        if let Some(c) = m.get_mut(&self.ts) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.ts);
            }
        }
    }
}

/// The snapshot of an open transaction; dropping it ends the transaction's hold.
pub struct TxnSnapshot {
    pub(super) snap: Snapshot,
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
        self.snap.inner.active_txns.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    /// The oldest timestamp whose versions must be kept: the oldest registered
    /// snapshot, or the newest commit when none is registered.
    pub(super) fn gc_horizon(&self) -> Ts {
        let m = self.snapshots.lock();
        let v = self.visible_ts.load(Ordering::Acquire);
        m.keys().next().map_or(v, |&s| s.min(v))
    }
}

/// How a snapshot's timestamp is chosen when it is registered.
pub(super) enum At {
    /// The newest visible commit, read while holding the registry (so no collection
    /// can pass it in between). `SeqCst`: transactions pair this read with the commit
    /// path's (see `commit_group`).
    Now,
    /// An earlier timestamp, if every version it needs is still kept: at or above the
    /// GC horizon and at or below the newest commit.
    Checked(Ts),
    /// Any timestamp, before background work starts (the pin taken while opening).
    Unchecked(Ts),
}

/// Register a snapshot; the one place that adds to the registry.
pub(super) fn register(inner: &Arc<Inner>, at: At) -> Result<Snapshot> {
    let mut m = inner.snapshots.lock();
    let ts = match at {
        At::Now => inner.visible_ts.load(Ordering::SeqCst),
        At::Checked(ts) => {
            let v = inner.visible_ts.load(Ordering::Acquire);
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
        inner: inner.clone(),
        ts,
    })
}
