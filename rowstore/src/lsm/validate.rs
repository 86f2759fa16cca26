//! Conflict validation of transactional commits: first committer wins on the write set
//! (snapshot isolation), and also on the read set (serializable).

use super::*;

impl Inner {
    /// Refuse a transactional commit whose write set (and, when serializable, read set)
    /// was changed by a commit newer than its snapshot.
    pub(super) fn validate(
        &self,
        sv: &SuperVersion,
        c: &CommitCheck,
        batch: &WriteBatch,
        group_written: &std::collections::BTreeSet<&[u8]>,
    ) -> Result<()> {
        let conflict = |what: &str, key: &[u8]| {
            Error::TransactionConflict(format!(
                "{what} key {} was changed by a transaction that committed after this one began",
                crate::key::display_key(key)
            ))
        };
        let newer = |key: &[u8]| -> Result<bool> {
            if group_written.contains(key) {
                return Ok(true);
            }
            let latest = if self.opts_fast_validation() && !self.in_recent_ingest(key, c.start_ts) {
                self.recent_commits.lock().get(key).copied()
            } else {
                self.latest_ts_in(sv, key)?
            };
            Ok(latest.is_some_and(|t| t > c.start_ts))
        };
        for op in batch.ops() {
            if newer(op.key())? {
                return Err(conflict("written", op.key()));
            }
        }
        for k in &c.read_keys {
            if newer(k)? {
                return Err(conflict("read", k));
            }
        }
        for (start, end) in &c.read_ranges {
            let in_range = |k: &[u8]| {
                start.as_deref().is_none_or(|s| k >= s) && end.as_deref().is_none_or(|e| k < e)
            };
            if let Some(k) = group_written.iter().find(|k| in_range(k)) {
                return Err(conflict("scanned", k));
            }
            let ingested = self.recent_ingests.lock().iter().any(|(lo, hi, t)| {
                *t > c.start_ts
                    && start.as_deref().is_none_or(|s| hi.as_slice() >= s)
                    && end.as_deref().is_none_or(|e| lo.as_slice() < e)
            });
            if self.opts_fast_validation() && !ingested {
                let recent = self.recent_commits.lock();
                let lo = start
                    .clone()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included);
                let hi = end
                    .clone()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                if let Some((k, _)) = recent.range((lo, hi)).find(|(_, t)| **t > c.start_ts) {
                    return Err(conflict("scanned", k));
                }
            } else {
                let mut m = MergeIter::over(sv, start.as_deref(), end.as_deref(), false, None)?;
                while let Some((k, ts, _)) = m.current() {
                    if ts > c.start_ts {
                        return Err(conflict("scanned", k));
                    }
                    m.advance()?;
                }
            }
        }
        Ok(())
    }

    /// Whether `key` lies in a range ingested after `ts` (which the recent-commit
    /// index does not list key by key).
    fn in_recent_ingest(&self, key: &[u8], ts: Ts) -> bool {
        self.recent_ingests
            .lock()
            .iter()
            .any(|(lo, hi, t)| *t > ts && lo.as_slice() <= key && key <= hi.as_slice())
    }

    pub(super) fn opts_fast_validation(&self) -> bool {
        self.fast_validation.load(Ordering::Relaxed)
    }
}
