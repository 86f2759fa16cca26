//! Optimistic MVCC transactions: reads at one snapshot, writes buffered locally, and
//! validation at commit (first committer wins; serializable also validates reads).

use crate::batch::{WriteBatch, charge, check_key, check_write};
use crate::engine::{CommitCheck, DbIter, Engine};
use crate::error::Result;
use crate::key::{KeyRange, Ts};
use crate::snapshot::TxnSnapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Isolation level of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Snapshot isolation: write-write conflicts are refused.
    #[default]
    Snapshot,
    /// Serializable: also refuses commits whose reads were changed concurrently.
    Serializable,
}

/// An open transaction. Not shared between threads; wrap it if you must.
pub struct Transaction {
    snap: TxnSnapshot,
    isolation: Isolation,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    write_bytes: usize,
    reads: BTreeSet<Vec<u8>>,
    ranges: Vec<KeyRange>,
}

impl Transaction {
    pub fn begin(engine: &Engine, isolation: Isolation) -> Result<Transaction> {
        Ok(Transaction {
            snap: engine.begin_txn()?,
            isolation,
            writes: BTreeMap::new(),
            write_bytes: 0,
            reads: BTreeSet::new(),
            ranges: Vec::new(),
        })
    }

    /// The snapshot timestamp all reads of this transaction use.
    pub fn start_ts(&self) -> Ts {
        self.snap.ts()
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Read `key` at the snapshot, seeing this transaction's own writes.
    pub fn get(&mut self, engine: &Engine, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        if self.isolation == Isolation::Serializable {
            self.reads.insert(key.to_vec());
        }
        engine.get_at(key, self.snap.snapshot())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        charge(&mut self.write_bytes, check_write(key, Some(value))?)?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        charge(&mut self.write_bytes, check_write(key, None)?)?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    /// Scan `[start, end)` at the snapshot, merged with this transaction's own writes.
    pub fn scan(
        &mut self,
        engine: &Engine,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<TxnIter> {
        if self.isolation == Isolation::Serializable {
            self.ranges
                .push((start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec)));
        }
        let lo = start.map_or(Bound::Unbounded, Bound::Included);
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut own: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            if start.zip(end).is_some_and(|(s, e)| s >= e) {
                Vec::new()
            } else {
                self.writes
                    .range::<[u8], _>((lo, hi))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
        if !reverse {
            own.reverse(); // popped from the back
        }
        let base = engine.iter_at(self.snap.snapshot(), start, end, reverse)?;
        Ok(TxnIter {
            base,
            base_next: None,
            own,
            reverse,
        })
    }

    /// Number of buffered writes.
    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// Validate and commit atomically; returns the commit timestamp. A read-only
    /// transaction commits without touching the log.
    pub fn commit(self, engine: &Engine) -> Result<Ts> {
        let _span = tracing::debug_span!("commit", writes = self.writes.len()).entered();
        if self.writes.is_empty()
            && (self.isolation == Isolation::Snapshot
                || self.reads.is_empty() && self.ranges.is_empty())
        {
            return Ok(self.start_ts());
        }
        let mut batch = WriteBatch::new();
        for (k, v) in &self.writes {
            match v {
                Some(v) => batch.put(k, v)?,
                None => batch.delete(k)?,
            }
        }
        let check = CommitCheck {
            start_ts: self.start_ts(),
            read_keys: self.reads.into_iter().collect(),
            read_ranges: self.ranges,
        };
        let r = engine.commit_checked(batch, check);
        drop(self.snap);
        r
    }
}

/// Snapshot scan merged with a transaction's own writes (which win).
pub struct TxnIter {
    base: DbIter,
    base_next: Option<(Vec<u8>, Vec<u8>)>,
    /// Own writes in the range, next one at the back.
    own: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    reverse: bool,
}

impl Iterator for TxnIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.base_next.is_none() {
                match self.base.next() {
                    Some(Ok(kv)) => self.base_next = Some(kv),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            let take_own = match (&self.base_next, self.own.last()) {
                (None, None) => return None,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((bk, _)), Some((ok, _))) => {
                    if bk == ok {
                        self.base_next = None; // shadowed by our own write
                        true
                    } else {
                        (ok < bk) != self.reverse
                    }
                }
            };
            if take_own {
                let (k, v) = self.own.pop().expect("checked");
                match v {
                    Some(v) => return Some(Ok((k, v))),
                    None => continue,
                }
            }
            return self.base_next.take().map(Ok);
        }
    }
}
