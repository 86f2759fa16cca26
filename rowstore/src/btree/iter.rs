//! [`TreeIter`]: the versions of a key range of one [`TreeVersion`], forward or
//! backward, in the shape of the row store's other sources (`current` / `advance`), so
//! the merging iterators can take it beside memtables.
//!
//! The tree has no sibling links (a copy-on-write tree cannot keep them without
//! rewriting every neighbour), so the iterator keeps the path from the root: moving
//! past the end of a leaf climbs to the first ancestor with a next child and descends
//! along its left edge (right edge going backward).

use super::node::{Extent, Kind, NodeView, Val, ViewParts};
use super::version::{HEAD_PREFETCH, LEAF_PREFETCH};
use super::{NodeBuf, TreeVersion};
use crate::error::Result;
use crate::iter::same_key;
use crate::key::{EntryRef, MAX_TS, Ts};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
enum Value {
    Delete,
    /// Bytes `[offset, offset + len)` of the current leaf.
    Inline(usize, usize),
    /// In `TreeIter::overflow`.
    Overflow,
}

struct Level {
    x: Extent,
    buf: NodeBuf,
    parts: ViewParts,
    idx: usize,
    len: usize,
}

/// Versions in a user-key range of one published tree.
pub struct TreeIter {
    v: Arc<TreeVersion>,
    path: Vec<Level>,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    reverse: bool,
    valid: bool,
    key: Vec<u8>,
    ts: Ts,
    value: Value,
    overflow: Vec<u8>,
    /// Every entry of the current leaf is inside the range's far bound (checked once
    /// per leaf, not per entry).
    leaf_inside: bool,
    /// A leaf was entered since the last version was decoded (a key never spans
    /// leaves: its first version there starts a new user key).
    new_leaf: bool,
    /// The version at the position is the first of its user key met (the previous
    /// one had another key).
    fresh: bool,
    /// The leaf position at which the next leaf starts loading.
    prefetch_at: usize,
}

impl TreeIter {
    /// Versions with user keys in `[start, end)`; forward from the first at or after
    /// `(start, seek_ts)`, or backward from the last before `end`.
    pub fn new(
        v: Arc<TreeVersion>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
        seek_ts: Ts,
    ) -> Result<TreeIter> {
        // The path holds one node per level: allocated once, at its full depth.
        let path = Vec::with_capacity(v.meta.height as usize);
        let mut it = TreeIter {
            v,
            path,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            reverse,
            valid: false,
            key: Vec::new(),
            ts: 0,
            value: Value::Delete,
            overflow: Vec::new(),
            leaf_inside: false,
            new_leaf: false,
            fresh: true,
            prefetch_at: usize::MAX,
        };
        let Some(root) = it.v.meta.root else {
            return Ok(it);
        };
        let target = if reverse { end } else { start };
        let ts = if reverse { MAX_TS } else { seek_ts };
        let mut x = root;
        loop {
            let buf = it.v.load(x)?;
            let n = it.v.view(x, it.v.bytes(&buf))?;
            let leaf = n.kind() == Kind::Leaf;
            let idx = match (target, leaf) {
                (None, _) if reverse => n.len().saturating_sub(usize::from(!leaf)),
                (None, _) => 0,
                // The child holding `k`'s versions (a key never spans leaves).
                (Some(k), false) => n.route(k).map_err(|e| it.v.corrupt(x, e.0))?,
                (Some(k), true) => n.lower_bound(k, ts).map_err(|e| it.v.corrupt(x, e.0))?,
            };
            let (len, parts) = (n.len(), n.parts());
            let child = if leaf {
                None
            } else {
                let c = n.child(idx).map_err(|e| it.v.corrupt(x, e.0))?;
                // A leaf is read from its target on: all of it starts loading at once.
                let to_leaf = it.path.len() + 2 == it.v.meta.height as usize;
                it.v.prefetch(
                    c,
                    if to_leaf {
                        LEAF_PREFETCH
                    } else {
                        HEAD_PREFETCH
                    },
                );
                Some(c)
            };
            it.enter(x, buf, parts, idx, len)?;
            match child {
                Some(c) => x = c,
                None => break,
            }
        }
        if reverse {
            // The entry before the first one at or after `end`.
            let leaf = it.path.last_mut().expect("a path ends in a leaf");
            if leaf.idx == 0 {
                it.step(false)?;
            } else {
                leaf.idx -= 1;
                it.valid = true;
            }
        } else {
            it.valid = true;
            if it.path.last().is_some_and(|l| l.idx >= l.len) {
                it.step(true)?;
            }
        }
        it.settle().map(|()| it)
    }

    /// Move the leaf position to the next (or previous) leaf's first (or last) entry.
    fn step(&mut self, forward: bool) -> Result<()> {
        self.path.pop();
        loop {
            let Some(top) = self.path.last_mut() else {
                self.valid = false;
                return Ok(());
            };
            if forward && top.idx + 1 < top.len {
                top.idx += 1;
                break;
            }
            if !forward && top.idx > 0 {
                top.idx -= 1;
                break;
            }
            self.path.pop();
        }
        loop {
            let top = self.path.last().expect("checked above");
            let n = NodeView::from_parts(self.v.bytes(&top.buf), top.parts);
            if n.kind() == Kind::Leaf {
                self.valid = true;
                return Ok(());
            }
            let x = n.child(top.idx).map_err(|e| self.v.corrupt(top.x, e.0))?;
            let buf = self.v.load(x)?;
            let c = self.v.view(x, self.v.bytes(&buf))?;
            let (len, parts) = (c.len(), c.parts());
            let idx = if forward { 0 } else { len - 1 };
            self.enter(x, buf, parts, idx, len)?;
        }
    }

    /// Push a node onto the path (a tree deeper than its meta page says is damaged).
    fn enter(
        &mut self,
        x: Extent,
        buf: NodeBuf,
        parts: ViewParts,
        idx: usize,
        len: usize,
    ) -> Result<()> {
        self.path.push(Level {
            x,
            buf,
            parts,
            idx,
            len,
        });
        if self.path.len() > self.v.meta.height as usize {
            return Err(self.v.corrupt(x, "tree deeper than its recorded height"));
        }
        if parts.kind() == Kind::Leaf {
            // The next leaf starts loading once the scan is halfway through this one:
            // a scan that ends here never asks for it, and its misses do not queue
            // behind this leaf's own.
            self.prefetch_at = if self.reverse {
                idx / 2
            } else {
                (idx + len) / 2
            };
            if self.prefetch_at == idx {
                self.prefetch_next_leaf();
            }
            let leaf = self.path.last().expect("just pushed");
            let n = NodeView::from_parts(self.v.bytes(&leaf.buf), leaf.parts);
            let bound = if self.reverse {
                self.start.as_deref()
            } else {
                self.end.as_deref()
            };
            self.leaf_inside = leaf_inside_bound(&n, self.reverse, bound);
            self.key.clear();
            self.key.extend_from_slice(n.prefix());
            self.new_leaf = true;
        }
        Ok(())
    }

    /// Start loading the leaf after the current one (before it, going backward),
    /// so the scan finds it in cache: it is a sibling under the same parent, or (at
    /// the parent's edge) left to the step that climbs.
    fn prefetch_next_leaf(&self) {
        let [.., parent, _] = self.path.as_slice() else {
            return;
        };
        let next = if self.reverse {
            parent.idx.checked_sub(1)
        } else {
            Some(parent.idx + 1).filter(|&i| i < parent.len)
        };
        if let Some(i) = next {
            let n = NodeView::from_parts(self.v.bytes(&parent.buf), parent.parts);
            if let Ok(x) = n.child(i) {
                self.v.prefetch_far(x, LEAF_PREFETCH);
            }
        }
    }

    /// Decode the entry at the leaf position; end iteration outside the range.
    fn settle(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        let TreeIter {
            v,
            path,
            key,
            ts,
            value,
            overflow,
            new_leaf,
            fresh,
            ..
        } = self;
        let leaf = path.last().expect("a valid iterator has a leaf");
        let bytes = v.bytes(&leaf.buf);
        let n = NodeView::from_parts(bytes, leaf.parts);
        if n.kind() != Kind::Leaf {
            return Err(v.corrupt(leaf.x, "expected a leaf"));
        }
        let (suffix, t, val) = n.leaf_entry(leaf.idx).map_err(|e| v.corrupt(leaf.x, e.0))?;
        // The key buffer starts with the leaf's prefix (put there on entering it) and
        // holds the previous version's key in the same leaf: another version of that
        // key leaves it as it is.
        let p = n.prefix().len();
        *fresh = std::mem::take(new_leaf) || !key.get(p..).is_some_and(|k| same_key(k, suffix));
        if *fresh {
            key.truncate(p);
            key.extend_from_slice(suffix);
        }
        *ts = t;
        let out_of_range = if self.leaf_inside {
            false
        } else if self.reverse {
            self.start.as_deref().is_some_and(|s| key.as_slice() < s)
        } else {
            self.end.as_deref().is_some_and(|e| key.as_slice() >= e)
        };
        if out_of_range {
            self.valid = false;
            return Ok(());
        }
        *value = match val {
            Val::Delete => Value::Delete,
            Val::Inline(s) => Value::Inline(s.as_ptr() as usize - bytes.as_ptr() as usize, s.len()),
            Val::Overflow(x, len) => {
                *overflow = v.overflow(x, len)?;
                Value::Overflow
            }
        };
        Ok(())
    }

    /// Whether the version at the position is the first of its user key the iterator
    /// met (in either direction): the one before it had another key, or there was none.
    #[inline]
    pub fn fresh_key(&self) -> bool {
        self.fresh
    }

    /// Whether the iterator is on a version.
    #[inline]
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The version at the position: user key, commit timestamp, value (`None`: a
    /// tombstone).
    #[inline]
    pub fn current(&self) -> Option<EntryRef<'_>> {
        if !self.valid {
            return None;
        }
        let value = match self.value {
            Value::Delete => None,
            Value::Inline(at, len) => {
                let leaf = self.path.last()?;
                Some(&self.v.bytes(&leaf.buf)[at..at + len])
            }
            Value::Overflow => Some(self.overflow.as_slice()),
        };
        Some((self.key.as_slice(), self.ts, value))
    }

    /// Move to the next version (the previous one when reversed).
    #[inline]
    pub fn advance(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        let forward = !self.reverse;
        let leaf = self.path.last_mut().expect("a valid iterator has a leaf");
        if forward && leaf.idx + 1 < leaf.len {
            leaf.idx += 1;
        } else if !forward && leaf.idx > 0 {
            leaf.idx -= 1;
        } else {
            self.step(forward)?;
            return self.settle();
        }
        if leaf.idx == self.prefetch_at {
            self.prefetch_next_leaf();
        }
        self.settle()
    }
}

/// Whether every entry of leaf `n` is inside the range's far `bound`: its last entry is
/// below the end (its first at or above the start, going backward).
fn leaf_inside_bound(n: &NodeView<'_>, reverse: bool, bound: Option<&[u8]>) -> bool {
    let Some(bound) = bound else {
        return true;
    };
    let i = if reverse {
        0
    } else {
        n.len().saturating_sub(1)
    };
    let Ok((suffix, _)) = n.key(i) else {
        return false;
    };
    let o = cmp_joined(n.prefix(), suffix, bound);
    if reverse {
        o != std::cmp::Ordering::Less
    } else {
        o == std::cmp::Ordering::Less
    }
}

/// `prefix ++ suffix` compared with `other`, without joining them.
fn cmp_joined(prefix: &[u8], suffix: &[u8], other: &[u8]) -> std::cmp::Ordering {
    let p = prefix.len().min(other.len());
    match prefix.cmp(&other[..p]) {
        std::cmp::Ordering::Equal if prefix.len() <= other.len() => suffix.cmp(&other[p..]),
        std::cmp::Ordering::Equal => std::cmp::Ordering::Greater,
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::cmp_joined;

    #[test]
    fn joined_comparison_matches_comparing_the_concatenation() {
        let parts: [&[u8]; 6] = [b"", b"a", b"ab", b"abc", b"b", b"ab\xff"];
        for p in parts {
            for s in parts {
                for o in parts {
                    let joined = [p, s].concat();
                    assert_eq!(
                        cmp_joined(p, s, o),
                        joined.as_slice().cmp(o),
                        "{p:?}+{s:?} vs {o:?}"
                    );
                }
            }
        }
    }
}
