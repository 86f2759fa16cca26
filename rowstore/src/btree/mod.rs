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
mod build;
mod cache;
mod iter;
mod meta;
pub mod node;
mod pin;
#[cfg(test)]
mod tests;
mod version;

use build::Build;
pub use iter::TreeIter;
pub use meta::Meta;
pub use pin::TreePin;
pub(crate) use version::NodeBuf;
pub use version::{Found, TreeVersion};

use crate::error::{Error, IoContext, Result};
use crate::key::Ts;
use crate::vfs::{Vfs, VfsFile};
use alloc::{Alloc, Retired, release_unreachable};
use node::{Extent, Kind, PAGE};
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tree in one file.
pub struct BTree {
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    /// The file system to look for readers' pins in ([`pin`]), once the writer
    /// honours them ([`BTree::with_pins`]).
    pins: Option<Arc<dyn Vfs>>,
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
            .create_paged(path)
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
            match file.read_at(&mut b, slot * PAGE as u64) {
                Ok(()) => {}
                // Sealed by an encrypting `Vfs` and torn by a crash while it was
                // written: as invalid as a torn plaintext meta page.
                Err(e) if crate::crypto::AuthFailure::find(&e).is_some() => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("reading meta page {slot} of {}", path.display()),
                        e,
                    ));
                }
            }
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
            cache: None,
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
            pins: None,
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

    /// The published tree in `path`, which another process may be writing, for reading
    /// only. A meta page being written, or a file cut short just after, may be met
    /// mid-way: it is read once more before that counts as damage.
    pub fn read_live(vfs: &dyn Vfs, path: &Path) -> Result<Arc<TreeVersion>> {
        let open = || BTree::open(vfs, path, false, false).map(|t| t.current());
        open().or_else(|_| open())
    }

    /// Honour pins ([`TreePin`]) that processes reading the file make: while one is
    /// live, no retired page is reused. Pins left from before this writer opened are
    /// removed (their readers learn it and retry). A writer calls this once, at open.
    pub fn with_pins(mut self, vfs: Arc<dyn Vfs>) -> BTree {
        pin::clear(&*vfs, crate::vfs::parent_dir(&self.path));
        self.pins = Some(vfs);
        self
    }

    /// Release the retired extents no reader can reach, unless a reader in another
    /// process has pinned the tree.
    fn release(&self, retired: &mut Vec<Retired<TreeVersion>>, alloc: &mut Alloc) {
        if let Some(vfs) = &self.pins
            && pin::pinned(&**vfs, crate::vfs::parent_dir(&self.path))
        {
            return;
        }
        release_unreachable(retired, alloc);
    }

    /// Keep up to `bytes` of extents read without a memory map (the tree of an
    /// encrypted database, or one opened without mapping) decrypted and verified in
    /// memory. A mapped tree reads the map instead and keeps no cache.
    pub fn with_cache(mut self, bytes: u64) -> BTree {
        if let Some(v) = Arc::get_mut(self.current.get_mut())
            && v.map.is_none()
            && bytes > 0
        {
            v.cache = Some(Arc::new(cache::ExtentCache::new(bytes)));
        }
        self
    }

    /// Copy the tree in `src`, which another process may be writing, into a new file
    /// `dst`. `Ok(false)` if the tree moved on far enough while it was copied that
    /// pages of the copied version may have been reused (the copy is removed; try
    /// again).
    pub fn copy_live(src_vfs: &dyn Vfs, src: &Path, dst_vfs: &dyn Vfs, dst: &Path) -> Result<bool> {
        // A pin keeps the writer from reusing pages while the copy reads them; without
        // one (a read-only directory), pages of generation g are reused only by the
        // build of g + 2, which starts after g + 1 is published: the copy holds g intact
        // if g is still the newest.
        let pin = TreePin::take(src_vfs, crate::vfs::parent_dir(src));
        let v = Self::read_live(src_vfs, src)?;
        let r = v.copy_to(dst_vfs, dst);
        let now = Self::read_live(src_vfs, src)?.meta.generation;
        let intact = now == v.meta.generation || pin.as_ref().is_some_and(TreePin::held);
        if !intact || r.is_err() {
            let _ = dst_vfs.remove(dst);
            return if !intact { Ok(false) } else { r.map(|()| true) };
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
        self.release(retired, alloc);
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
    /// Returns the pages the file shrank by. Value extents in the way move too (their
    /// leaves are found by reading every leaf, only when one is there).
    pub fn compact(&self, horizon: Ts) -> Result<u64> {
        self.compact_with(horizon, None, || Ok(()))
    }

    /// [`BTree::compact`], calling `installed` after each version it publishes: a
    /// caller that keeps the current version (an engine's read view) lets go of the
    /// old one there, so the pages the relocation moved away from are free for the
    /// second step to cut off. `within`: compact only if at most that many pages lie
    /// past the end the file would shrink to, and do nothing otherwise (a quick
    /// compaction, or none).
    pub fn compact_with(
        &self,
        horizon: Ts,
        within: Option<u64>,
        installed: impl Fn() -> Result<()>,
    ) -> Result<u64> {
        let before = self.current().meta.end;
        let target = self.compaction_target();
        if let Some(limit) = within
            && target.is_none_or(|(end, t)| end - t > limit)
        {
            return Ok(0);
        }
        if let Some((_, target)) = target {
            self.apply_inner(Vec::new(), horizon, 0, Some(target))?;
            installed()?;
        }
        // Publishes the shorter file once the moved pages are free.
        self.apply_inner(Vec::new(), horizon, 0, None)?;
        installed()?;
        Ok(before.saturating_sub(self.current().meta.end))
    }

    /// The file's page count and the one a compaction would shorten it to, if enough
    /// pages are free to be worth moving nodes for (more than a sixteenth of the live
    /// tree).
    fn compaction_target(&self) -> Option<(u64, u64)> {
        let (free, end) = {
            let mut w = self.writer.lock();
            let Writer { alloc, retired } = &mut *w;
            self.release(retired, alloc);
            alloc.trim_tail();
            (alloc.free_pages(), alloc.end)
        };
        let live = end.saturating_sub(2 + free);
        let target = 2 + live + live / 32 + 4;
        (end > target + live / 16).then_some((end, target))
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
        self.release(retired, alloc);
        // Free pages at the end of the file go back to the file system.
        alloc.trim_tail();
        let old = self.current();
        let move_values = match relocate {
            Some(t) => values_at_or_above(&old, alloc, t)?,
            None => false,
        };
        let mut b = Build {
            v: &old,
            file: &*self.file,
            alloc,
            freed: Vec::new(),
            written: Vec::new(),
            horizon,
            entries: old.meta.entries as i64,
            relocate,
            move_values,
        };
        let changes = b.stage(changes)?;
        let (root, height) = b.rebuild(changes)?;
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
            cache: old.cache.clone(),
        };
        v.remap(Some((old, written)))?;
        *self.current.write() = Arc::new(v);
        Ok(())
    }
}

/// Whether a value extent may lie at or above page `target` (a compaction must then
/// move it, and find the leaf that refers to it): reads the header of each extent in
/// use there (through the map when there is one). Extents retired but not yet free may
/// count too; that only makes the compaction read every leaf.
fn values_at_or_above(v: &TreeVersion, alloc: &Alloc, target: u64) -> Result<bool> {
    for (start, end) in alloc.used_from(target) {
        let mut p = start;
        while p < end {
            match node::peek(&v.head(p)?) {
                Some((Kind::Value, _, own)) if own == p => return Ok(true),
                Some((_, len, own)) if own == p => p += u64::from(node::pages_for(len)),
                _ => p += 1,
            }
        }
    }
    Ok(false)
}
