//! [`TreeVersion`]: one published tree, what a reader holds: extent loads (checked
//! once each through the map, or on every positioned read), point reads, iterators,
//! and the whole-tree checks and copies.

use super::node::{self, Extent, Kind, NodeView, PAGE, Val};
use super::{BTree, Meta, TreeIter};
use crate::error::{Error, IoContext, Result};
use crate::key::{Ts, cmp_internal};
use crate::vfs::{Vfs, VfsFile};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Bytes of an internal child's head to prefetch while routing: the header, prefix
/// and the start of its entry table (5 cache lines).
pub(super) const HEAD_PREFETCH: usize = 320;
/// Bytes of a leaf to prefetch once routing has found it: all of a one-page leaf. Its
/// header, entry table and the entry a read wants then arrive in one round of misses
/// instead of two dependent ones (the entry's place is known only from the table):
/// ~5% more gets a second than the head alone. A scan reads on through the leaf.
pub(super) const LEAF_PREFETCH: usize = super::node::PAGE;
/// Bytes of a leaf entry to prefetch once found: its key, timestamp and a small value.
const ENTRY_PREFETCH: usize = 160;

/// Bytes of one extent, borrowed from the map or read into a buffer.
#[derive(Debug, Clone)]
pub(crate) enum NodeBuf {
    Map { offset: usize, len: usize },
    Owned(Arc<[u8]>),
}

/// One published tree: what a reader holds.
pub struct TreeVersion {
    pub meta: Meta,
    pub(super) path: PathBuf,
    pub(super) file: Arc<dyn VfsFile>,
    pub(super) map: Option<Arc<memmap2::Mmap>>,
    /// One bit per page of the map: the extent starting there passed its checksum.
    pub(super) verified: Box<[AtomicU64]>,
    pub(super) use_map: bool,
    /// Extents read without the map, decrypted and verified (shared by every version
    /// of the tree; `None` when mapped or not configured).
    pub(super) cache: Option<Arc<super::cache::ExtentCache>>,
}

impl std::fmt::Debug for TreeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeVersion")
            .field("meta", &self.meta)
            .finish()
    }
}

/// What a point read of one key found in the tree: the value as an owned copy, or
/// whatever a lending read's function made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T = Vec<u8>> {
    /// The tree holds no version of the key at or below the snapshot.
    Absent,
    /// The newest such version is a tombstone.
    Deleted,
    Value(T),
}

impl TreeVersion {
    pub(super) fn corrupt(&self, x: Extent, why: impl Into<String>) -> Error {
        Error::corruption(&self.path, x.offset(), why.into())
    }

    /// The bytes of extent `x`, checked (header, checksum, own page number).
    #[inline]
    pub(crate) fn load(&self, x: Extent) -> Result<NodeBuf> {
        let (offset, len) = (x.offset() as usize, x.bytes());
        if let Some(map) = &self.map
            && offset + len <= map.len()
        {
            let bytes = &map[offset..offset + len];
            let word = &self.verified[x.page as usize / 64];
            let bit = 1u64 << (x.page % 64);
            if word.load(AtomicOrdering::Relaxed) & bit == 0 {
                node::verify(bytes, x.page).map_err(|e| self.corrupt(x, e.0))?;
                word.fetch_or(bit, AtomicOrdering::Relaxed);
            }
            return Ok(NodeBuf::Map { offset, len });
        }
        if let Some(c) = &self.cache
            && let Some(b) = c.get(x.page, len)
        {
            return Ok(NodeBuf::Owned(b));
        }
        let mut buf = vec![0u8; len];
        self.file
            .read_at(&mut buf, x.offset())
            .ctx(|| format!("reading {} at page {}", self.path.display(), x.page))?;
        node::verify(&buf, x.page).map_err(|e| self.corrupt(x, e.0))?;
        let buf: Arc<[u8]> = buf.into();
        if let Some(c) = &self.cache {
            c.insert(x.page, buf.clone());
        }
        Ok(NodeBuf::Owned(buf))
    }

    #[inline]
    pub(crate) fn bytes<'a>(&'a self, b: &'a NodeBuf) -> &'a [u8] {
        match b {
            NodeBuf::Map { offset, len } => match &self.map {
                Some(m) => &m[*offset..*offset + *len],
                None => &[],
            },
            NodeBuf::Owned(v) => v,
        }
    }

    /// View loaded bytes as a node.
    #[inline]
    pub(crate) fn view<'a>(&self, x: Extent, bytes: &'a [u8]) -> Result<NodeView<'a>> {
        let (kind, used) = node::verify_trusted(bytes).map_err(|e| self.corrupt(x, e.0))?;
        NodeView::new(kind, used).map_err(|e| self.corrupt(x, e.0))
    }

    /// A value stored in a value extent.
    pub(crate) fn overflow(&self, x: Extent, len: u32) -> Result<Vec<u8>> {
        let b = self.load(x)?;
        let bytes = self.bytes(&b);
        let (kind, used) = node::verify_trusted(bytes).map_err(|e| self.corrupt(x, e.0))?;
        let v = used.get(node::HEADER..);
        match v {
            Some(v) if kind == Kind::Value && v.len() == len as usize => Ok(v.to_vec()),
            _ => Err(self.corrupt(x, "value extent does not match its reference")),
        }
    }

    /// The header bytes of the extent that would start at `page`, unchecked: from the
    /// map when it covers the page, else read.
    pub(super) fn head(&self, page: u64) -> Result<[u8; node::HEADER]> {
        let mut head = [0u8; node::HEADER];
        let at = page * PAGE as u64;
        match &self.map {
            Some(m) if at as usize + node::HEADER <= m.len() => {
                head.copy_from_slice(&m[at as usize..at as usize + node::HEADER]);
            }
            _ => self
                .file
                .read_at(&mut head, at)
                .ctx(|| format!("reading {} at page {page}", self.path.display()))?,
        }
        Ok(head)
    }

    /// Start loading the first `len` bytes of extent `x` (its header and the start of
    /// its entry table, or more) while the caller works on something else: a mapped
    /// extent only.
    #[inline]
    pub(super) fn prefetch(&self, x: Extent, len: usize) {
        self.prefetch_with(x, len, crate::cache_line::prefetch);
    }

    /// [`TreeVersion::prefetch`] into the second-level cache only: for a leaf a scan
    /// reads after the current one (its lines then do not hold up the first-level
    /// cache's miss slots the current leaf's lines need).
    #[inline]
    pub(super) fn prefetch_far(&self, x: Extent, len: usize) {
        self.prefetch_with(x, len, crate::cache_line::prefetch_far);
    }

    #[inline(always)]
    fn prefetch_with(&self, x: Extent, len: usize, load: impl Fn(&[u8])) {
        if let Some(map) = &self.map {
            let at = (x.offset() as usize).min(map.len());
            load(&map[at..(at + len.min(x.bytes())).min(map.len())]);
        }
    }

    /// The leaf that holds `key`'s versions, if the tree has any, with its head already
    /// on its way into the CPU's cache: a caller with other work to do before it reads
    /// the leaf (the memtables to search) overlaps that miss with it.
    #[inline]
    pub fn locate(&self, key: &[u8]) -> Result<Option<Extent>> {
        let Some(mut x) = self.meta.root else {
            return Ok(None);
        };
        for level in 1..self.meta.height {
            let b = self.load(x)?;
            let n = self.view(x, self.bytes(&b))?;
            if n.kind() != Kind::Internal {
                return Err(self.corrupt(x, "expected an internal node"));
            }
            // The child holding the key's versions: the last whose separator is at or
            // before it (a key never spans leaves).
            let i = n.route(key).map_err(|e| self.corrupt(x, e.0))?;
            x = n.child(i).map_err(|e| self.corrupt(x, e.0))?;
            let leaf = level + 1 == self.meta.height;
            self.prefetch(x, if leaf { LEAF_PREFETCH } else { HEAD_PREFETCH });
        }
        Ok(Some(x))
    }

    /// `f` of leaf `x` (viewed once).
    #[inline]
    fn with_leaf<R>(&self, x: Extent, f: impl FnOnce(&NodeView<'_>) -> Result<R>) -> Result<R> {
        let b = self.load(x)?;
        let n = self.view(x, self.bytes(&b))?;
        if n.kind() != Kind::Leaf {
            return Err(self.corrupt(x, "expected a leaf"));
        }
        f(&n)
    }

    /// In leaf `n`, the first version of `key` at or below `snap`, if any.
    fn find(&self, x: Extent, n: &NodeView<'_>, key: &[u8], snap: Ts) -> Result<Option<usize>> {
        let i = n.lower_bound(key, snap).map_err(|e| self.corrupt(x, e.0))?;
        if i == n.len() {
            return Ok(None);
        }
        // The key and the value after it, in one round of misses rather than two.
        n.prefetch_entry(i, ENTRY_PREFETCH);
        let (suffix, _) = n.key(i).map_err(|e| self.corrupt(x, e.0))?;
        let p = n.prefix();
        let hit =
            key.len() == p.len() + suffix.len() && key.starts_with(p) && &key[p.len()..] == suffix;
        Ok(hit.then_some(i))
    }

    /// The newest version of `key` at or below `snap`.
    pub fn get(&self, key: &[u8], snap: Ts) -> Result<Found> {
        self.get_located(self.locate(key)?, key, snap)
    }

    /// [`TreeVersion::get`] in the leaf [`TreeVersion::locate`] found for `key`.
    pub fn get_located(&self, leaf: Option<Extent>, key: &[u8], snap: Ts) -> Result<Found> {
        self.get_located_with(leaf, key, snap, &mut <[u8]>::to_vec)
    }

    /// [`TreeVersion::get_located`], lending the value to `f` (called only when one is
    /// found) from its page instead of copying it. A value in a value extent of its own
    /// is read into a buffer first.
    #[inline]
    pub fn get_located_with<R>(
        &self,
        leaf: Option<Extent>,
        key: &[u8],
        snap: Ts,
        f: &mut impl FnMut(&[u8]) -> R,
    ) -> Result<Found<R>> {
        let Some(x) = leaf else {
            return Ok(Found::Absent);
        };
        self.with_leaf(x, |n| {
            let Some(i) = self.find(x, n, key, snap)? else {
                return Ok(Found::Absent);
            };
            match n.value(i).map_err(|e| self.corrupt(x, e.0))? {
                Val::Delete => Ok(Found::Deleted),
                Val::Inline(v) => Ok(Found::Value(f(v))),
                Val::Overflow(v, len) => Ok(Found::Value(f(&self.overflow(v, len)?))),
            }
        })
    }

    /// The commit timestamp of `key`'s newest version in the tree.
    pub fn latest_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        let Some(x) = self.locate(key)? else {
            return Ok(None);
        };
        self.with_leaf(x, |n| match self.find(x, n, key, crate::key::MAX_TS)? {
            Some(i) => Ok(Some(n.key(i).map_err(|e| self.corrupt(x, e.0))?.1)),
            None => Ok(None),
        })
    }

    /// Nodes and entries per level, root first: walks every internal node (and reads
    /// every leaf's header), checking each extent's checksum.
    pub fn shape(&self) -> Result<Vec<(u64, u64)>> {
        let mut levels = vec![(0u64, 0u64); self.meta.height as usize];
        let Some(root) = self.meta.root else {
            return Ok(Vec::new());
        };
        let mut stack = vec![(root, 0usize)];
        while let Some((x, depth)) = stack.pop() {
            let b = self.load(x)?;
            let n = self.view(x, self.bytes(&b))?;
            let Some(l) = levels.get_mut(depth) else {
                return Err(self.corrupt(x, "tree deeper than its recorded height"));
            };
            l.0 += 1;
            l.1 += n.len() as u64;
            if n.kind() == Kind::Internal {
                for i in 0..n.len() {
                    stack.push((n.child(i).map_err(|e| self.corrupt(x, e.0))?, depth + 1));
                }
            }
        }
        Ok(levels)
    }

    /// Copy this version of the tree into a new file `dst` on `dst_vfs`: the file's
    /// pages (those this version reaches cannot change while it is held), then this
    /// version's meta in both slots, synced; the copy is opened and verified. The
    /// writer may have cut the file below this version's end since (pages no held
    /// version reaches, free in this one too): those are copied as zeros.
    pub fn copy_to(&self, dst_vfs: &dyn Vfs, dst: &Path) -> Result<()> {
        let out = dst_vfs
            .create_paged(dst)
            .ctx(|| format!("creating {}", dst.display()))?;
        let ctx = || format!("copying {} to {}", self.path.display(), dst.display());
        let total = self.meta.end * PAGE as u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 2 * PAGE as u64;
        while at < total {
            let n = (total - at).min(buf.len() as u64) as usize;
            if let Err(e) = self.file.read_at(&mut buf[..n], at) {
                // Cut off under the copy: what is left, then zeros.
                let len = self.file.len().ctx(ctx)?;
                if e.kind() != std::io::ErrorKind::UnexpectedEof || len >= at + n as u64 {
                    return Err(e).ctx(ctx);
                }
                let have = len.saturating_sub(at) as usize;
                self.file.read_at(&mut buf[..have], at).ctx(ctx)?;
                buf[have..n].fill(0);
            }
            out.write_at(&buf[..n], at).ctx(ctx)?;
            at += n as u64;
        }
        let meta = self.meta.encode();
        out.write_at(&meta, 0).ctx(ctx)?;
        out.write_at(&meta, PAGE as u64).ctx(ctx)?;
        out.sync_data().ctx(ctx)?;
        drop(out);
        BTree::open(dst_vfs, dst, false, false)?
            .current()
            .verify_all()
            .map(|_| ())
    }

    /// Read and check every extent the tree reaches: nodes, value extents and the free
    /// list (each checksum, each node's structure, key order across every leaf).
    /// Returns the number of extents checked.
    pub fn verify_all(self: &Arc<Self>) -> Result<u64> {
        let mut n = 0u64;
        if let Some(x) = self.meta.free_list {
            let b = self.load(x)?;
            node::decode_free_list(self.bytes(&b)).map_err(|e| self.corrupt(x, e.0))?;
            n += 1;
        }
        let Some(root) = self.meta.root else {
            return Ok(n);
        };
        let mut stack = vec![(root, 1u32)];
        while let Some((x, depth)) = stack.pop() {
            let b = self.load(x)?;
            let v = self.view(x, self.bytes(&b))?;
            n += 1;
            let leaf = depth == self.meta.height;
            if leaf != (v.kind() == Kind::Leaf) {
                return Err(self.corrupt(x, "node kind does not match its depth"));
            }
            for i in 0..v.len() {
                if leaf {
                    if let Val::Overflow(vx, len) = v.value(i).map_err(|e| self.corrupt(x, e.0))? {
                        self.overflow(vx, len)?;
                        n += 1;
                    }
                } else {
                    stack.push((v.child(i).map_err(|e| self.corrupt(x, e.0))?, depth + 1));
                }
            }
        }
        // Every version, in order, across every leaf.
        let mut it = self.versions(None, None, false)?;
        let mut last: Option<(Vec<u8>, Ts)> = None;
        let mut count = 0u64;
        while let Some((k, ts, _)) = it.current() {
            if let Some((lk, lts)) = &last
                && cmp_internal(lk, *lts, k, ts) != Ordering::Less
            {
                return Err(Error::corruption(
                    &self.path,
                    0,
                    "tree entries out of order",
                ));
            }
            last = Some((k.to_vec(), ts));
            count += 1;
            it.advance()?;
        }
        if count != self.meta.entries {
            return Err(Error::corruption(
                &self.path,
                0,
                format!(
                    "the tree holds {count} versions, its meta page says {}",
                    self.meta.entries
                ),
            ));
        }
        Ok(n)
    }

    /// Every version in `[start, end)` (by user key), in internal-key order or reversed.
    pub fn versions(
        self: &Arc<Self>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Result<TreeIter> {
        TreeIter::new(self.clone(), start, end, reverse, crate::key::MAX_TS)
    }
}

impl TreeVersion {
    /// Map the file (again, if it grew past the old map) and carry over the checksum
    /// bits of pages not rewritten since.
    pub(super) fn remap(&mut self, from: Option<(&TreeVersion, &[Extent])>) -> Result<()> {
        let need = self.meta.end as usize * PAGE;
        let covered = self.map.as_ref().is_some_and(|m| m.len() >= need);
        if !covered && self.use_map {
            self.map = match self.file.map() {
                Ok(Some(m)) if m.len() >= need => Some(Arc::new(m)),
                _ => None,
            };
        }
        let pages = self.map.as_ref().map_or(0, |m| m.len() / PAGE);
        let verified: Box<[AtomicU64]> =
            (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        if let Some((old, written)) = from {
            for (a, b) in verified.iter().zip(old.verified.iter()) {
                a.store(b.load(AtomicOrdering::Relaxed), AtomicOrdering::Relaxed);
            }
            for x in written {
                if let Some(w) = verified.get(x.page as usize / 64) {
                    w.fetch_and(!(1u64 << (x.page % 64)), AtomicOrdering::Relaxed);
                }
            }
        }
        self.verified = verified;
        Ok(())
    }
}

impl TreeVersion {
    /// Load an extent, possibly one written by the current build (not yet verified in
    /// the map, nor mapped at all).
    pub(super) fn load_unmapped(&self, x: Extent) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; x.bytes()];
        self.file
            .read_at(&mut buf, x.offset())
            .ctx(|| format!("reading {} at page {}", self.path.display(), x.page))?;
        node::verify(&buf, x.page).map_err(|e| self.corrupt(x, e.0))?;
        Ok(buf)
    }
}
