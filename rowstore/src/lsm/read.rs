//! The read path: a consistent view (super-version + snapshot timestamp), point
//! lookups through memtables and levels, and user-visible iterators.

use super::*;
use crate::btree::Found;

/// An iterator over one consistent state of the LSM engine.
pub struct LsmIter {
    pub(super) inner: VisibleIter,
    // Pins the tables and memtables being read.
    pub(super) _sv: Arc<SuperVersion>,
}

impl Iterator for LsmIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

impl LsmIter {
    /// The next entry, borrowed until the next call ([`VisibleIter::next_ref`]).
    #[inline]
    pub fn next_ref(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        self.inner.next_ref()
    }
}

impl Inner {
    /// A super-version and a snapshot timestamp such that every commit <= the snapshot
    /// is reachable from the super-version and no version visible at the snapshot has
    /// been garbage collected from it.
    pub(super) fn read_view(&self) -> (Arc<SuperVersion>, Ts) {
        loop {
            let sv = self.sv.load_full();
            let s = self.visible_ts.load(Ordering::Acquire);
            if !sv.mem.is_frozen() {
                return (sv, s);
            }
            std::hint::spin_loop();
        }
    }

    pub(super) fn get_in(&self, sv: &SuperVersion, key: &[u8], s: Ts) -> Result<Option<Vec<u8>>> {
        self.get_in_with(sv, key, s, &mut <[u8]>::to_vec)
    }

    /// [`Inner::get_in`], lending the value to `f` (called at most once) from where it
    /// lies (the memtable, a table's block, a tree page) instead of copying it.
    #[inline]
    pub(super) fn get_in_with<R>(
        &self,
        sv: &SuperVersion,
        key: &[u8],
        s: Ts,
        f: &mut impl FnMut(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let resolve = |l: Lookup<R>| match l {
            Lookup::Found(v) => Some(Some(v)),
            Lookup::Deleted => Some(None),
            Lookup::NotFound => None,
        };
        // The filter line of each level's candidate table loads while the memtables
        // are searched (each a miss to memory of its own otherwise). The B+Tree engine
        // has no tables: no hash, no search of empty levels.
        let tables = sv.version.levels.iter().any(|l| !l.is_empty());
        // The B+Tree engine's tree is routed to its leaf first, so that the leaf's miss
        // to memory overlaps the memtable searches (an error waits until the tree is
        // needed: a key the memtables hold does not depend on it).
        let tree = sv.version.tree.as_ref().map(|t| (t, t.locate(key)));
        let h = if tables { bloom::key_hash(key) } else { 0 };
        let candidates: [Option<&Arc<Table>>; NUM_LEVELS] = std::array::from_fn(|level| {
            let t = (tables && level > 0)
                .then(|| sv.version.find_in_level(level, key))
                .flatten();
            if let Some(t) = t {
                t.prefetch_filter(h);
            }
            t
        });
        // The deepest level holds most keys (nine tenths of a leveled tree's data): its
        // table's index is searched now too, and the cache slot and header of the block
        // it names start loading (reading a block updates its reference count: a miss
        // that holds up everything after it unless already under way). Shallower
        // levels are searched only if their filters pass.
        let deepest = candidates.iter().rposition(Option::is_some);
        let early = deepest
            .and_then(|l| candidates[l])
            .map(|t| t.point_block(key, s));
        if let Some(r) = resolve(sv.mem.get_with(key, s, f)) {
            return Ok(r);
        }
        for m in &sv.imms {
            if let Some(r) = resolve(m.get_with(key, s, f)) {
                return Ok(r);
            }
        }
        for t in &sv.version.levels[0] {
            if t.meta().overlaps(Some(key), Some(key))
                && t.may_contain_hash(h)
                && let Some(r) = resolve(t.get_with(key, s, f)?)
            {
                return Ok(r);
            }
        }
        for (level, t) in candidates.iter().enumerate() {
            let Some(t) = t else { continue };
            if t.may_contain_hash(h)
                && let Some(r) = resolve(match early {
                    Some(at) if Some(level) == deepest => t.get_at_with(at, key, f)?,
                    _ => t.get_with(key, s, f)?,
                })
            {
                return Ok(r);
            }
        }
        match tree {
            Some((t, leaf)) => match t.get_located_with(leaf?, key, s, f)? {
                Found::Value(v) => Ok(Some(v)),
                Found::Deleted | Found::Absent => Ok(None),
            },
            None => Ok(None),
        }
    }

    pub(super) fn latest_ts_in(&self, sv: &SuperVersion, key: &[u8]) -> Result<Option<Ts>> {
        if let Some(t) = sv.mem.latest_ts(key) {
            return Ok(Some(t));
        }
        for m in &sv.imms {
            if let Some(t) = m.latest_ts(key) {
                return Ok(Some(t));
            }
        }
        let h = bloom::key_hash(key);
        for t in &sv.version.levels[0] {
            if t.meta().overlaps(Some(key), Some(key))
                && t.may_contain_hash(h)
                && let Some(ts) = t.latest_ts(key)?
            {
                return Ok(Some(ts));
            }
        }
        for level in 1..NUM_LEVELS {
            if let Some(t) = sv.version.find_in_level(level, key)
                && t.may_contain_hash(h)
                && let Some(ts) = t.latest_ts(key)?
            {
                return Ok(Some(ts));
            }
        }
        match &sv.version.tree {
            Some(t) => t.latest_ts(key),
            None => Ok(None),
        }
    }
}
