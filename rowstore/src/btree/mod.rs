//! A copy-on-write B+Tree of versioned entries in one file: the on-disk structure of
//! the B+Tree row engine (the LSM's levels of tables are the other).
//!
//! - **Entries** are versioned like everywhere in the row store: (user key, commit ts)
//!   with a value or a tombstone, in internal-key order ([`crate::key`]). Values longer
//!   than [`node::INLINE_MAX`] live in value extents of their own (overflow pages).
//! - **Pages.** Every node is an extent of 4 KiB pages with a checksummed, versioned
//!   header ([`node`]); leaves and internal nodes store each key's shared prefix once.
//! - **Shadow paging.** [`BTree::apply`] merges a sorted run of new versions (a flushed
//!   memtable) into the tree: every node on a changed path is written to free pages,
//!   never over a page the published tree uses; then the file is synced, and a new meta
//!   page (two slots, alternating, each checksummed, the higher valid generation wins at
//!   open) publishes the new root, and the file is synced again. A crash at any point
//!   leaves the last published tree.
//! - **Old versions** are dropped as nodes are rewritten, by the rule the LSM's
//!   compaction follows: of a key's versions at or below the GC horizon (the oldest
//!   snapshot anyone may read at), only the newest stays, and goes too if it is a
//!   tombstone that nothing older sits under.
//! - **Free pages.** Extents a new version no longer reaches are retired, and reused
//!   once the new version is durable and no reader holds an older one ([`alloc`]). The
//!   free list is written with every version.
//! - **Reads** go through a shared memory map of the file when the `Vfs` can map
//!   (each extent's checksum verified on first touch), else through positioned reads.
//!   A reader holds an `Arc` of the [`TreeVersion`] it started on; the pages it can reach
//!   are never written while it does (the retire rule above), which is what makes
//!   reading the map while the writer writes other pages sound.

pub mod alloc;
mod iter;
pub mod node;
#[cfg(test)]
mod tests;

pub use iter::TreeIter;

use crate::error::{Error, IoContext, Result};
use crate::key::{Ts, cmp_internal};
use crate::vfs::{Vfs, VfsFile};
use alloc::{Alloc, Retired, release_unreachable};
use node::{Entry, Extent, Kind, NodeView, OwnedVal, PAGE, Packer, Val};
use parking_lot::{Mutex, RwLock};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

const META_MAGIC: &[u8; 8] = b"LDBTREE\0";
const META_FORMAT: u32 = 1;
const META_LEN: usize = 8 + 4 + 8 * 8 + 4 * 3 + 4;

/// What a meta page records: the published tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub generation: u64,
    pub root: Option<Extent>,
    pub height: u32,
    /// Pages the tree's file uses (free ones included).
    pub end: u64,
    pub free_list: Option<Extent>,
    /// Versions stored.
    pub entries: u64,
    /// An opaque mark the caller published with the tree (the engine: the newest
    /// commit timestamp the tree holds, so WAL replay starts after it).
    pub applied: u64,
}

impl Meta {
    fn encode(&self) -> [u8; PAGE] {
        let mut b = [0u8; PAGE];
        let mut v = Vec::with_capacity(META_LEN);
        v.extend_from_slice(META_MAGIC);
        v.extend_from_slice(&META_FORMAT.to_le_bytes());
        let root = self.root.unwrap_or(Extent { page: 0, pages: 0 });
        let fl = self.free_list.unwrap_or(Extent { page: 0, pages: 0 });
        for x in [
            self.generation,
            root.page,
            self.end,
            fl.page,
            self.entries,
            self.applied,
            0,
            0,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [root.pages, self.height, fl.pages] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        b[..v.len()].copy_from_slice(&v);
        b
    }

    /// Decode a meta page; `None` if it is not a valid one (torn, never written).
    fn decode(b: &[u8]) -> std::result::Result<Option<Meta>, String> {
        if b.len() < META_LEN || &b[..8] != META_MAGIC {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(b[META_LEN - 4..META_LEN].try_into().unwrap());
        if crc32c::crc32c(&b[..META_LEN - 4]) != crc {
            return Ok(None);
        }
        let format = u32::from_le_bytes(b[8..12].try_into().unwrap());
        if format != META_FORMAT {
            return Err(format!("unknown B+Tree format version {format}"));
        }
        let u = |i: usize| u64::from_le_bytes(b[12 + 8 * i..20 + 8 * i].try_into().unwrap());
        let w = |i: usize| u32::from_le_bytes(b[76 + 4 * i..80 + 4 * i].try_into().unwrap());
        let ext = |page: u64, pages: u32| (pages > 0).then_some(Extent { page, pages });
        Ok(Some(Meta {
            generation: u(0),
            root: ext(u(1), w(0)),
            height: w(1),
            end: u(2),
            free_list: ext(u(3), w(2)),
            entries: u(4),
            applied: u(5),
        }))
    }
}

/// Bytes of one extent, borrowed from the map or read into a buffer.
#[derive(Debug, Clone)]
pub(crate) enum NodeBuf {
    Map { offset: usize, len: usize },
    Owned(Arc<[u8]>),
}

/// One published tree: what a reader holds.
pub struct TreeVersion {
    pub meta: Meta,
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    map: Option<Arc<memmap2::Mmap>>,
    /// One bit per page of the map: the extent starting there passed its checksum.
    verified: Box<[AtomicU64]>,
    use_map: bool,
}

impl std::fmt::Debug for TreeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeVersion")
            .field("meta", &self.meta)
            .finish()
    }
}

/// What a point read of one key found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The tree holds no version of the key at or below the snapshot.
    Absent,
    /// The newest such version is a tombstone.
    Deleted,
    Value(Vec<u8>),
}

impl TreeVersion {
    fn corrupt(&self, x: Extent, why: impl Into<String>) -> Error {
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
        let mut buf = vec![0u8; len];
        self.file
            .read_at(&mut buf, x.offset())
            .ctx(|| format!("reading {} at page {}", self.path.display(), x.page))?;
        node::verify(&buf, x.page).map_err(|e| self.corrupt(x, e.0))?;
        Ok(NodeBuf::Owned(buf.into()))
    }

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

    /// The leaf that holds `key`'s versions if the tree has any.
    fn leaf_for(&self, key: &[u8]) -> Result<Option<(Extent, NodeBuf)>> {
        let Some(mut x) = self.meta.root else {
            return Ok(None);
        };
        for _ in 1..self.meta.height {
            let b = self.load(x)?;
            let n = self.view(x, self.bytes(&b))?;
            if n.kind() != Kind::Internal {
                return Err(self.corrupt(x, "expected an internal node"));
            }
            // The child holding the key's versions: the last whose separator is at or
            // before it (a key never spans leaves).
            let i = n.route(key).map_err(|e| self.corrupt(x, e.0))?;
            x = n.child(i).map_err(|e| self.corrupt(x, e.0))?;
        }
        let b = self.load(x)?;
        if self.view(x, self.bytes(&b))?.kind() != Kind::Leaf {
            return Err(self.corrupt(x, "expected a leaf"));
        }
        Ok(Some((x, b)))
    }

    /// In leaf `n`, the first version of `key` at or below `snap`, if any.
    fn find(&self, x: Extent, n: &NodeView<'_>, key: &[u8], snap: Ts) -> Result<Option<usize>> {
        let i = n.lower_bound(key, snap).map_err(|e| self.corrupt(x, e.0))?;
        if i == n.len() {
            return Ok(None);
        }
        let (suffix, _) = n.key(i).map_err(|e| self.corrupt(x, e.0))?;
        let p = n.prefix();
        let hit =
            key.len() == p.len() + suffix.len() && key.starts_with(p) && &key[p.len()..] == suffix;
        Ok(hit.then_some(i))
    }

    /// The newest version of `key` at or below `snap`.
    pub fn get(&self, key: &[u8], snap: Ts) -> Result<Found> {
        let Some((x, b)) = self.leaf_for(key)? else {
            return Ok(Found::Absent);
        };
        let n = self.view(x, self.bytes(&b))?;
        let Some(i) = self.find(x, &n, key, snap)? else {
            return Ok(Found::Absent);
        };
        match n.value(i).map_err(|e| self.corrupt(x, e.0))? {
            Val::Delete => Ok(Found::Deleted),
            Val::Inline(v) => Ok(Found::Value(v.to_vec())),
            Val::Overflow(v, len) => Ok(Found::Value(self.overflow(v, len)?)),
        }
    }

    /// The commit timestamp of `key`'s newest version in the tree.
    pub fn latest_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        let Some((x, b)) = self.leaf_for(key)? else {
            return Ok(None);
        };
        let n = self.view(x, self.bytes(&b))?;
        match self.find(x, &n, key, crate::key::MAX_TS)? {
            Some(i) => Ok(Some(n.key(i).map_err(|e| self.corrupt(x, e.0))?.1)),
            None => Ok(None),
        }
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
    /// version's meta in both slots, synced; the copy is opened and verified.
    pub fn copy_to(&self, dst_vfs: &dyn Vfs, dst: &Path) -> Result<()> {
        let out = crate::vfs::create_new(dst_vfs, dst)?;
        let ctx = || format!("copying {} to {}", self.path.display(), dst.display());
        let total = self.meta.end * PAGE as u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 2 * PAGE as u64;
        while at < total {
            let n = (total - at).min(buf.len() as u64) as usize;
            self.file.read_at(&mut buf[..n], at).ctx(ctx)?;
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

/// The tree in one file.
pub struct BTree {
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    current: RwLock<Arc<TreeVersion>>,
    writer: Mutex<Writer>,
}

struct Writer {
    alloc: Alloc,
    retired: Vec<Retired<TreeVersion>>,
}

impl BTree {
    /// Create an empty tree in a new file at `path` (replacing any file there), durably:
    /// the file holds a valid meta page and its name is synced when this returns.
    pub fn create(vfs: &dyn Vfs, path: &Path) -> Result<BTree> {
        let file = vfs
            .create(path)
            .ctx(|| format!("creating {}", path.display()))?;
        let meta = Meta {
            end: 2,
            ..Meta::default()
        };
        let ctx = || format!("initializing {}", path.display());
        file.write_at(&meta.encode(), 0).ctx(ctx)?;
        file.write_at(&[0u8; PAGE], PAGE as u64).ctx(ctx)?;
        file.sync_data().ctx(ctx)?;
        crate::vfs::sync_dir(vfs, crate::vfs::parent_dir(path))?;
        drop(file);
        Self::open(vfs, path, true, true)
    }

    /// Open the tree in the file at `path`: the valid meta page with the highest
    /// generation says what is published. `map`: read through a memory map where the
    /// `Vfs` can map (else positioned reads). Not `writable`: the file is opened for
    /// reading only, and [`BTree::apply`] fails.
    pub fn open(vfs: &dyn Vfs, path: &Path, map: bool, writable: bool) -> Result<BTree> {
        let file: Arc<dyn VfsFile> = if writable {
            vfs.open_rw(path)
        } else {
            vfs.open(path)
        }
        .ctx(|| format!("opening {}", path.display()))?
        .into();
        let len = file.len().ctx(|| format!("stat of {}", path.display()))?;
        let mut best: Option<Meta> = None;
        for slot in 0..2u64 {
            if len < (slot + 1) * PAGE as u64 {
                continue;
            }
            let mut b = vec![0u8; PAGE];
            file.read_at(&mut b, slot * PAGE as u64)
                .ctx(|| format!("reading meta page {slot} of {}", path.display()))?;
            let m = Meta::decode(&b).map_err(|e| Error::corruption(path, slot * 4096, e))?;
            if let Some(m) = m
                && best.is_none_or(|b| m.generation > b.generation)
            {
                best = Some(m);
            }
        }
        let Some(meta) = best else {
            return Err(Error::corruption(
                path,
                0,
                "neither meta page of the B+Tree is valid",
            ));
        };
        if meta.end < 2 || meta.end * PAGE as u64 > len {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "the tree uses {} pages but the file has {len} bytes",
                    meta.end
                ),
            ));
        }
        let mut v = TreeVersion {
            meta,
            path: path.to_path_buf(),
            file: file.clone(),
            map: None,
            verified: Box::new([]),
            use_map: map,
        };
        v.remap(None)?;
        let free = match meta.free_list {
            Some(x) => {
                let b = v.load(x)?;
                let bytes = v.bytes(&b);
                node::decode_free_list(bytes).map_err(|e| v.corrupt(x, e.0))?
            }
            None => Vec::new(),
        };
        let alloc = Alloc::new(meta.end, &free);
        Ok(BTree {
            path: path.to_path_buf(),
            file,
            current: RwLock::new(Arc::new(v)),
            writer: Mutex::new(Writer {
                alloc,
                retired: Vec::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copy the tree in `src`, which another process may be writing, into a new file
    /// `dst`. `Ok(false)` if the tree moved on far enough while it was copied that
    /// pages of the copied version may have been reused (the copy is removed; try
    /// again).
    pub fn copy_live(src_vfs: &dyn Vfs, src: &Path, dst_vfs: &dyn Vfs, dst: &Path) -> Result<bool> {
        let open = || BTree::open(src_vfs, src, false, false).map(|t| t.current());
        // A meta page being written, or a file cut short just after, may be met
        // mid-way: open once more before calling it damage.
        let v = match open() {
            Ok(v) => v,
            Err(_) => open()?,
        };
        let r = v.copy_to(dst_vfs, dst);
        // Pages of generation g are reused only by the build of g + 2, which starts
        // after g + 1 is published: the copy holds g intact if g is still the newest.
        let now = open()?.meta.generation;
        if now != v.meta.generation || r.is_err() {
            let _ = dst_vfs.remove(dst);
            return if now != v.meta.generation {
                Ok(false)
            } else {
                r.map(|()| true)
            };
        }
        r.map(|()| true)
    }

    /// The published tree, for reading.
    pub fn current(&self) -> Arc<TreeVersion> {
        self.current.read().clone()
    }

    /// Pages free for reuse (after every reader of older versions let go).
    pub fn free_pages(&self) -> u64 {
        let mut w = self.writer.lock();
        let Writer { alloc, retired } = &mut *w;
        release_unreachable(retired, alloc);
        alloc.free_pages()
    }

    /// Merge `changes` (sorted in internal-key order, each version newer than every
    /// version of its key already in the tree) into the tree, drop what no snapshot at
    /// or above `horizon` needs, and publish the result durably with `applied`.
    pub fn apply(
        &self,
        changes: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)>,
        horizon: Ts,
        applied: u64,
    ) -> Result<()> {
        self.apply_inner(changes, horizon, applied, None)
    }

    /// Give free pages back to the file system: every node at or above the page count
    /// the tree needs (plus a little slack) is rewritten into free pages below it (with
    /// the nodes on its path), then the free tail is cut off once no reader holds the
    /// old tree. Old versions are dropped at `horizon` where nodes are rewritten.
    /// Returns the pages the file shrank by. (Value extents stay where they are.)
    pub fn compact(&self, horizon: Ts) -> Result<u64> {
        let before = self.current().meta.end;
        let (free, end) = {
            let mut w = self.writer.lock();
            let Writer { alloc, retired } = &mut *w;
            release_unreachable(retired, alloc);
            alloc.trim_tail();
            (alloc.free_pages(), alloc.end)
        };
        let live = end.saturating_sub(2 + free);
        let target = 2 + live + live / 32 + 4;
        if end > target + live / 16 {
            self.apply_inner(Vec::new(), horizon, 0, Some(target))?;
        }
        // Publishes the shorter file once the moved pages are free.
        self.apply_inner(Vec::new(), horizon, 0, None)?;
        Ok(before.saturating_sub(self.current().meta.end))
    }

    fn apply_inner(
        &self,
        changes: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)>,
        horizon: Ts,
        applied: u64,
        relocate: Option<u64>,
    ) -> Result<()> {
        let mut w = self.writer.lock();
        let Writer { alloc, retired } = &mut *w;
        release_unreachable(retired, alloc);
        // Free pages at the end of the file go back to the file system.
        alloc.trim_tail();
        let old = self.current();
        let mut b = Build {
            v: &old,
            file: &*self.file,
            alloc,
            freed: Vec::new(),
            written: Vec::new(),
            horizon,
            entries: old.meta.entries as i64,
            relocate,
        };
        let changes = b.stage(changes)?;
        let (root, height) = b.rebuild(&changes)?;
        // The free list: what no reader of the new version can reach after a restart.
        if let Some(fl) = old.meta.free_list {
            b.freed.push(fl);
        }
        let free_list = |b: &Build<'_>| -> Vec<Extent> {
            let mut free: Vec<Extent> = b.alloc.free_extents().collect();
            free.extend(retired.iter().flat_map(|r| r.extents.iter().copied()));
            free.extend(b.freed.iter().copied());
            free
        };
        // The list's own extent is taken first (lowest free pages); taking it leaves at
        // most as many free runs as before, so the list still fits.
        let pages = node::pages_for(node::encode_free_list(&free_list(&b)).len() + 12);
        let x = b.alloc.alloc(pages);
        let mut body = node::encode_free_list(&free_list(&b));
        node::seal(&mut body, Kind::FreeList, x.page);
        body.resize(x.bytes(), 0);
        b.write(x, &body)?;
        let meta = Meta {
            generation: old.meta.generation + 1,
            root,
            height,
            end: b.alloc.end,
            free_list: Some(x),
            entries: b.entries.max(0) as u64,
            applied: applied.max(old.meta.applied),
        };
        let (freed, written) = (std::mem::take(&mut b.freed), std::mem::take(&mut b.written));
        self.publish(&old, meta, &written)?;
        retired.push(Retired {
            replaced: Arc::downgrade(&old),
            extents: freed,
        });
        if meta.end < old.meta.end {
            // No version any reader holds reaches past the new end (those pages were
            // free); a failure here only leaves the file longer than it needs to be.
            if let Err(e) = self.file.set_len(meta.end * PAGE as u64) {
                tracing::warn!(error = %e, file = %self.path.display(), "could not shorten the tree file");
            }
        }
        Ok(())
    }

    /// Sync the new pages, write and sync the meta page, and install the new version.
    fn publish(&self, old: &Arc<TreeVersion>, meta: Meta, written: &[Extent]) -> Result<()> {
        let ctx = || format!("publishing {}", self.path.display());
        self.file.sync_data().ctx(ctx)?;
        let slot = meta.generation % 2;
        self.file
            .write_at(&meta.encode(), slot * PAGE as u64)
            .ctx(ctx)?;
        self.file.sync_data().ctx(ctx)?;
        let mut v = TreeVersion {
            meta,
            path: self.path.clone(),
            file: self.file.clone(),
            map: old.map.clone(),
            verified: Box::new([]),
            use_map: old.use_map,
        };
        v.remap(Some((old, written)))?;
        *self.current.write() = Arc::new(v);
        Ok(())
    }
}

impl TreeVersion {
    /// Map the file (again, if it grew past the old map) and carry over the checksum
    /// bits of pages not rewritten since.
    fn remap(&mut self, from: Option<(&TreeVersion, &[Extent])>) -> Result<()> {
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

/// One `apply`: the nodes it rewrites and the extents it frees.
struct Build<'a> {
    v: &'a Arc<TreeVersion>,
    file: &'a dyn VfsFile,
    alloc: &'a mut Alloc,
    freed: Vec<Extent>,
    written: Vec<Extent>,
    horizon: Ts,
    entries: i64,
    /// Compaction: move every node at or above this page (and the path to it).
    relocate: Option<u64>,
}

impl Build<'_> {
    fn write(&mut self, x: Extent, bytes: &[u8]) -> Result<()> {
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
    fn stage(&mut self, changes: Vec<(Vec<u8>, Ts, Option<Vec<u8>>)>) -> Result<Vec<Entry>> {
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
    fn rebuild(&mut self, changes: &[Entry]) -> Result<(Option<Extent>, u32)> {
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
    fn merge(&mut self, kids: &[Entry], height: u32, changes: &[Entry]) -> Result<Vec<Entry>> {
        if height == 1 {
            return self.merge_leaves(kids, changes);
        }
        let mut out = Vec::with_capacity(kids.len() + 1);
        // The children of a run of rewritten nodes are packed together, so rewrites
        // leave full nodes rather than a full one and a sliver each.
        let mut run: Vec<Entry> = Vec::new();
        for (kid, part) in split(kids, changes) {
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
            let merged = self.merge(&grand, height - 1, part)?;
            // Compaction: a subtree where nothing moved stays where it is.
            let stays = part.is_empty() && merged == grand && !self.moves(x);
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
    fn merge_leaves(&mut self, kids: &[Entry], changes: &[Entry]) -> Result<Vec<Entry>> {
        if kids.is_empty() {
            let merged = self.collect(changes.to_vec());
            return self.pack(merged, Kind::Leaf, None);
        }
        let parts = split(kids, changes);
        let mut out = Vec::with_capacity(kids.len() + 1);
        let mut i = 0;
        while i < kids.len() {
            if parts[i].1.is_empty() && !self.kid_moves(&kids[i]) {
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
                new.extend(parts[i].1.iter().cloned());
                i += 1;
                // Touched neighbours are packed together (no half-empty leaves
                // left between them), up to a bound on what is held in memory.
                if i == kids.len()
                    || (parts[i].1.is_empty() && !self.kid_moves(&kids[i]))
                    || old.len() > 64 * 1024
                {
                    break;
                }
            }
            let merged = self.collect(merge_sorted(old, new));
            // The run's old separator still divides it from the leaf before (it only
            // took keys at or above it), and is shorter than a whole key.
            let first_sep = merged.first().map(|e| old_sep.min(e.key.clone()));
            out.extend(self.pack(merged, Kind::Leaf, first_sep)?);
        }
        Ok(out)
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

impl TreeVersion {
    /// Load an extent, possibly one written by the current build (not yet verified in
    /// the map, nor mapped at all).
    fn load_unmapped(&self, x: Extent) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; x.bytes()];
        self.file
            .read_at(&mut buf, x.offset())
            .ctx(|| format!("reading {} at page {}", self.path.display(), x.page))?;
        node::verify(&buf, x.page).map_err(|e| self.corrupt(x, e.0))?;
        Ok(buf)
    }
}

/// Sorted `changes` split among `kids` (child entries, sorted by first key): each kid
/// gets the changes whose user keys run from its first key's up to the next kid's (the
/// first kid also those before it). A key's versions all live in one leaf, so every
/// version of a key goes where the others are.
fn split<'a, 'b>(kids: &'a [Entry], changes: &'b [Entry]) -> Vec<(&'a Entry, &'b [Entry])> {
    let mut out = Vec::with_capacity(kids.len());
    let mut rest = changes;
    for (i, kid) in kids.iter().enumerate() {
        let take = match kids.get(i + 1) {
            None => rest.len(),
            Some(next) => rest.partition_point(|c| c.key < next.key),
        };
        out.push((kid, &rest[..take]));
        rest = &rest[take..];
    }
    out
}

/// Merge two sorted runs of entries (`new` wins over an equal key in `old`).
fn merge_sorted(old: Vec<Entry>, new: Vec<Entry>) -> Vec<Entry> {
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
            Ordering::Less => out.push(a.next().unwrap()),
            Ordering::Greater => out.push(b.next().unwrap()),
            Ordering::Equal => {
                a.next();
                out.push(b.next().unwrap());
            }
        }
    }
}
