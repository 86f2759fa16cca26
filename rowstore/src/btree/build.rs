//! One [`super::BTree::apply`]: merging sorted changes into the nodes they touch,
//! collecting old versions at the horizon, packing nodes, and (compaction) moving nodes
//! down into lower pages. Everything is written to newly allocated pages.

use super::TreeVersion;
use super::alloc::Alloc;
use super::node::{self, Entry, Extent, Kind, OwnedVal, PAGE, Packer};
use crate::error::{IoContext, Result};
use crate::key::{Ts, cmp_internal};
use crate::vfs::VfsFile;
use std::cmp::Ordering;
use std::sync::Arc;

/// One `apply`: the nodes it rewrites and the extents it frees.
pub(super) struct Build<'a> {
    pub(super) v: &'a Arc<TreeVersion>,
    pub(super) file: &'a dyn VfsFile,
    pub(super) alloc: &'a mut Alloc,
    pub(super) freed: Vec<Extent>,
    pub(super) written: Vec<Extent>,
    pub(super) horizon: Ts,
    pub(super) entries: i64,
    /// Compaction: move every node at or above this page (and the path to it).
    pub(super) relocate: Option<u64>,
    /// Compaction with value extents at or above `relocate`: every leaf is read to find
    /// the ones that refer to such a value, and those values move with their leaf.
    pub(super) move_values: bool,
}

impl Build<'_> {
    pub(super) fn write(&mut self, x: Extent, bytes: &[u8]) -> Result<()> {
        if let Some(c) = &self.v.cache {
            c.forget(x.page);
        }
        self.file
            .write_at(bytes, x.offset())
            .ctx(|| format!("writing {} at page {}", self.v.path.display(), x.page))?;
        self.written.push(x);
        Ok(())
    }

    /// Seal `body` as a `kind` extent in newly allocated pages.
    fn put(&mut self, mut body: Vec<u8>, kind: Kind) -> Result<Extent> {
        let x = self.alloc.alloc(node::pages_for(body.len()));
        node::seal(&mut body, kind, x.page);
        self.write(x, &body)?;
        Ok(x)
    }

    /// Changes as entries, large values moved to value extents first.
    pub(super) fn stage(
        &mut self,
        changes: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)>,
    ) -> Result<Vec<Entry>> {
        changes
            .into_iter()
            .map(|(key, ts, v)| {
                let val = match v {
                    None => OwnedVal::Delete,
                    Some(v) if key.len() + v.len() > node::INLINE_MAX => {
                        let len = v.len() as u32;
                        OwnedVal::Overflow(self.put(node::encode_value(&v), Kind::Value)?, len)
                    }
                    Some(v) => OwnedVal::Inline(v),
                };
                self.entries += 1;
                Ok(Entry { key, ts, val })
            })
            .collect()
    }

    /// The new root and height after merging `changes` in.
    pub(super) fn rebuild(&mut self, changes: Vec<Entry>) -> Result<(Option<Extent>, u32)> {
        let v = self.v;
        let (mut level, mut height) = match v.meta.root {
            None => (self.merge_leaves(&[], changes)?, 1),
            Some(root) if changes.is_empty() && self.relocate.is_none() => {
                return Ok((Some(root), v.meta.height));
            }
            Some(root) => {
                let top = Entry {
                    key: Vec::new(),
                    ts: crate::key::MAX_TS,
                    val: OwnedVal::Child(root),
                };
                (self.merge(&[top], v.meta.height, changes)?, v.meta.height)
            }
        };
        while level.len() > 1 {
            level = self.pack(level, Kind::Internal, None)?;
            height += 1;
        }
        let Some(top) = level.pop() else {
            return Ok((None, 0));
        };
        let OwnedVal::Child(mut root) = top.val else {
            unreachable!("levels hold child pointers")
        };
        // A root with one child is replaced by the child.
        while height > 1 {
            let b = v.load_unmapped(root)?;
            let n = v.view(root, &b)?;
            if n.len() != 1 {
                break;
            }
            self.freed.push(root);
            root = n.child(0).map_err(|e| v.corrupt(root, e.0))?;
            height -= 1;
        }
        Ok((Some(root), height))
    }

    /// Rewrite the children `kids` (entries of an internal node at `height`, or the
    /// root) with `changes` merged in; returns the replacement child entries.
    fn merge(&mut self, kids: &[Entry], height: u32, changes: Vec<Entry>) -> Result<Vec<Entry>> {
        if height == 1 {
            return self.merge_leaves(kids, changes);
        }
        let mut out = Vec::with_capacity(kids.len() + 1);
        // The children of a run of rewritten nodes are packed together, so rewrites
        // leave full nodes rather than a full one and a sliver each.
        let mut run: Vec<Entry> = Vec::new();
        for (kid, part) in kids.iter().zip(split(kids, changes)) {
            let OwnedVal::Child(x) = kid.val else {
                unreachable!("internal entries hold children")
            };
            if part.is_empty() && self.relocate.is_none() {
                if !run.is_empty() {
                    out.extend(self.pack(std::mem::take(&mut run), Kind::Internal, None)?);
                }
                out.push(kid.clone());
                continue;
            }
            let grand = self.children(x)?;
            let unchanged = part.is_empty();
            let merged = self.merge(&grand, height - 1, part)?;
            // Compaction: a subtree where nothing moved stays where it is.
            let stays = unchanged && merged == grand && !self.moves(x);
            if stays {
                if !run.is_empty() {
                    out.extend(self.pack(std::mem::take(&mut run), Kind::Internal, None)?);
                }
                out.push(kid.clone());
                continue;
            }
            self.freed.push(x);
            run.extend(merged);
        }
        if !run.is_empty() {
            out.extend(self.pack(run, Kind::Internal, None)?);
        }
        Ok(out)
    }

    /// Whether compaction moves the extent `x` (it lies at or above the target).
    fn moves(&self, x: Extent) -> bool {
        self.relocate
            .is_some_and(|t| x.page + u64::from(x.pages) > t)
    }

    fn kid_moves(&self, kid: &Entry) -> bool {
        matches!(kid.val, OwnedVal::Child(x) if self.moves(x))
    }

    /// Rewrite leaves `kids` with `changes`: each run of touched leaves is read,
    /// merged, collected and packed again.
    fn merge_leaves(&mut self, kids: &[Entry], changes: Vec<Entry>) -> Result<Vec<Entry>> {
        if kids.is_empty() {
            let merged = self.collect(changes);
            return self.pack(merged, Kind::Leaf, None);
        }
        let mut parts = split(kids, changes);
        let mut out = Vec::with_capacity(kids.len() + 1);
        let mut i = 0;
        while i < kids.len() {
            if parts[i].is_empty() && !self.leaf_moves(&kids[i])? {
                out.push(kids[i].clone());
                i += 1;
                continue;
            }
            let mut old = Vec::new();
            let mut new: Vec<Entry> = Vec::new();
            let old_sep = kids[i].key.clone();
            loop {
                let OwnedVal::Child(x) = kids[i].val else {
                    unreachable!("leaf pointers")
                };
                self.read_leaf(x, &mut old)?;
                self.freed.push(x);
                new.append(&mut parts[i]);
                i += 1;
                // Touched neighbours are packed together (no half-empty leaves
                // left between them), up to a bound on what is held in memory.
                if i == kids.len()
                    || (parts[i].is_empty() && !self.leaf_moves(&kids[i])?)
                    || old.len() > 64 * 1024
                {
                    break;
                }
            }
            let merged = self.merge_sorted(old, new);
            let mut merged = self.collect(merged);
            self.move_values_down(&mut merged)?;
            // The run's old separator still divides it from the leaf before (it only
            // took keys at or above it), and is shorter than a whole key.
            let first_sep = merged.first().map(|e| old_sep.min(e.key.clone()));
            out.extend(self.pack(merged, Kind::Leaf, first_sep)?);
        }
        Ok(out)
    }

    /// Whether compaction rewrites the leaf `kid`: it lies at or above the target, or
    /// (value extents to move) one of its values does.
    fn leaf_moves(&self, kid: &Entry) -> Result<bool> {
        if self.kid_moves(kid) {
            return Ok(true);
        }
        let OwnedVal::Child(x) = kid.val else {
            return Ok(false);
        };
        if !self.move_values {
            return Ok(false);
        }
        let v = self.v;
        let b = v.load(x)?;
        let n = v.view(x, v.bytes(&b))?;
        for i in 0..n.len() {
            if let node::Val::Overflow(vx, _) = n.value(i).map_err(|e| v.corrupt(x, e.0))?
                && self.moves(vx)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Compaction: copy each value extent at or above the target into lower pages.
    fn move_values_down(&mut self, entries: &mut [Entry]) -> Result<()> {
        if !self.move_values {
            return Ok(());
        }
        for e in entries {
            if let OwnedVal::Overflow(x, len) = e.val
                && self.moves(x)
            {
                let value = self.v.overflow(x, len)?;
                let nx = self.put(node::encode_value(&value), Kind::Value)?;
                self.freed.push(x);
                e.val = OwnedVal::Overflow(nx, len);
            }
        }
        Ok(())
    }

    fn read_leaf(&mut self, x: Extent, out: &mut Vec<Entry>) -> Result<()> {
        let v = self.v;
        let b = v.load(x)?;
        let n = v.view(x, v.bytes(&b))?;
        if n.kind() != Kind::Leaf {
            return Err(v.corrupt(x, "expected a leaf"));
        }
        for i in 0..n.len() {
            let e = || -> std::result::Result<Entry, node::NodeError> {
                Ok(Entry {
                    key: n.user_key(i)?,
                    ts: n.key(i)?.1,
                    val: OwnedVal::from_val(n.value(i)?),
                })
            };
            out.push(e().map_err(|e| v.corrupt(x, e.0))?);
        }
        Ok(())
    }

    fn children(&mut self, x: Extent) -> Result<Vec<Entry>> {
        let v = self.v;
        let b = v.load(x)?;
        let n = v.view(x, v.bytes(&b))?;
        if n.kind() != Kind::Internal {
            return Err(v.corrupt(x, "expected an internal node"));
        }
        (0..n.len())
            .map(|i| {
                let e = || -> std::result::Result<Entry, node::NodeError> {
                    Ok(Entry {
                        key: n.user_key(i)?,
                        ts: n.key(i)?.1,
                        val: OwnedVal::Child(n.child(i)?),
                    })
                };
                e().map_err(|e| v.corrupt(x, e.0))
            })
            .collect()
    }

    /// Drop the versions no snapshot at or above the horizon reads (see the module
    /// docs). `entries` hold every version of their keys (a key never spans leaves).
    fn collect(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
        let mut covered = false; // a newer version of this key at or below the horizon
        let mut last: Option<Vec<u8>> = None;
        for e in entries {
            if last.as_deref() != Some(e.key.as_slice()) {
                covered = false;
                last = Some(e.key.clone());
            }
            if e.ts > self.horizon {
                out.push(e);
            } else if covered || matches!(e.val, OwnedVal::Delete) {
                // Older than what the horizon reads, or a tombstone with nothing
                // under it once the older versions go.
                covered = true;
                self.drop_entry(e);
            } else {
                covered = true;
                out.push(e);
            }
        }
        out
    }

    fn drop_entry(&mut self, e: Entry) {
        if let OwnedVal::Overflow(x, _) = e.val {
            self.freed.push(x);
        }
        self.entries -= 1;
    }

    /// Pack entries into nodes of about a page (a leaf holds all of a key's versions);
    /// returns the new nodes as child entries.
    fn pack(
        &mut self,
        entries: Vec<Entry>,
        kind: Kind,
        first_sep: Option<Vec<u8>>,
    ) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut p = Packer::default();
        // The parent's key for the node being filled: `first_sep` for the first; for a
        // leaf after another leaf of this run, the shortest separator between them;
        // otherwise the first key (a leaf's first user key, an internal node's first
        // separator).
        let mut sep: Option<Vec<u8>> = first_sep;
        let mut prev_last: Option<Vec<u8>> = None;
        for e in entries {
            // A leaf keeps all of a key's versions (however many the horizon keeps);
            // an internal node takes at least two children, so each level up is at
            // most half as wide.
            let full = match kind {
                Kind::Leaf => p.would_overflow(&e, PAGE) && p.last_key() != Some(&e.key),
                _ => p.len() >= 2 && p.would_overflow(&e, PAGE),
            };
            if full {
                prev_last = p.last_key().cloned();
                out.push(self.emit(&mut p, sep.take(), kind)?);
            }
            if sep.is_none() {
                sep = Some(match (&prev_last, kind) {
                    (Some(last), Kind::Leaf) => node::separator(last, &e.key),
                    _ => e.key.clone(),
                });
            }
            p.push(e);
        }
        if !p.is_empty() {
            out.push(self.emit(&mut p, sep.take(), kind)?);
        }
        Ok(out)
    }

    fn emit(&mut self, p: &mut Packer, sep: Option<Vec<u8>>, kind: Kind) -> Result<Entry> {
        let x = self.put(p.take(), kind)?;
        Ok(Entry {
            key: sep.unwrap_or_default(),
            ts: 0,
            val: OwnedVal::Child(x),
        })
    }
}

/// Sorted `changes` split among `kids` (child entries, sorted by first key): each kid
/// gets the changes whose user keys run from its first key's up to the next kid's (the
/// first kid also those before it). A key's versions all live in one leaf, so every
/// version of a key goes where the others are. The entries move; none is copied.
fn split(kids: &[Entry], changes: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut sizes = Vec::with_capacity(kids.len());
    let mut rest = changes.as_slice();
    for i in 0..kids.len() {
        let take = match kids.get(i + 1) {
            None => rest.len(),
            Some(next) => rest.partition_point(|c| c.key < next.key),
        };
        sizes.push(take);
        rest = &rest[take..];
    }
    let mut it = changes.into_iter();
    sizes
        .into_iter()
        .map(|n| it.by_ref().take(n).collect())
        .collect()
}

impl Build<'_> {
    /// Merge two sorted runs of entries (`new` wins over an equal version in `old`,
    /// which goes as collected).
    fn merge_sorted(&mut self, old: Vec<Entry>, new: Vec<Entry>) -> Vec<Entry> {
        let mut out = Vec::with_capacity(old.len() + new.len());
        let mut a = old.into_iter().peekable();
        let mut b = new.into_iter().peekable();
        loop {
            let o = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => cmp_internal(&x.key, x.ts, &y.key, y.ts),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => return out,
            };
            match o {
                Ordering::Less => out.extend(a.next()),
                Ordering::Greater => out.extend(b.next()),
                Ordering::Equal => {
                    if let Some(e) = a.next() {
                        self.drop_entry(e);
                    }
                    out.extend(b.next());
                }
            }
        }
    }
}
