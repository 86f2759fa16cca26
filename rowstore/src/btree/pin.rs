//! Pins: how a process that reads the tree's file while another process writes it (a
//! file backup, a check) keeps the pages it reads from being reused under it.
//!
//! The writer reuses a page only after no reader *in its own process* can reach it
//! ([`super::alloc`]); a reader elsewhere holds nothing the writer can see. So the
//! reader first makes a pin: a file `TREE-pin-<random>` beside the tree, under an
//! exclusive lock for as long as it reads. Every build that starts while a live pin
//! exists releases no retired page, so whatever published tree the reader opens after
//! making its pin stays intact (a build that began before the pin only reuses pages no
//! published tree reaches). A pin whose lock can be taken belongs to a process that
//! died: the writer removes it. A writer that opens removes every pin, since its free
//! list counts the pages of older trees as free; the reader then finds its pin gone
//! ([`TreePin::held`]) and must not trust what it read.

use crate::vfs::{Vfs, VfsLock};
use std::path::{Path, PathBuf};

const PREFIX: &str = "TREE-pin-";

/// A live pin on the tree in one directory; removed when dropped.
pub struct TreePin<'a> {
    vfs: &'a dyn Vfs,
    path: PathBuf,
    lock: Option<Box<dyn VfsLock>>,
}

impl<'a> TreePin<'a> {
    /// Pin the tree in `dir`; `None` if no pin can be made there (a read-only
    /// directory): the caller then relies on the tree's generation not moving.
    pub fn take(vfs: &'a dyn Vfs, dir: &Path) -> Option<TreePin<'a>> {
        let mut id = [0u8; 8];
        crate::crypto::random(&mut id).ok()?;
        let path = dir.join(format!("{PREFIX}{:016x}", u64::from_le_bytes(id)));
        let lock = vfs.lock(&path).ok()?;
        Some(TreePin {
            vfs,
            path,
            lock: Some(lock),
        })
    }

    /// Whether the pin held all along: no writer opened since it was made (nor took
    /// it for a dead process's). What was read under a pin that held is intact.
    pub fn held(&self) -> bool {
        self.vfs.exists(&self.path).unwrap_or(false)
    }
}

impl Drop for TreePin<'_> {
    fn drop(&mut self) {
        let _ = self.vfs.remove(&self.path);
        self.lock.take();
    }
}

fn pins(vfs: &dyn Vfs, dir: &Path) -> Vec<PathBuf> {
    vfs.list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(PREFIX))
        .map(|n| dir.join(n))
        .collect()
}

/// Whether a live pin exists in `dir`; pins of processes that died are removed.
pub(crate) fn pinned(vfs: &dyn Vfs, dir: &Path) -> bool {
    let mut live = false;
    for p in pins(vfs, dir) {
        match vfs.lock(&p) {
            // Nobody holds it: its process died (or just let go).
            Ok(lock) => {
                let _ = vfs.remove(&p);
                drop(lock);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => live = true,
            Err(e) => {
                tracing::warn!(pin = %p.display(), error = %e, "cannot tell whether a tree pin is live; ignoring it");
            }
        }
    }
    live
}

/// Remove every pin in `dir` (a writer opening: see the module notes).
pub(crate) fn clear(vfs: &dyn Vfs, dir: &Path) {
    for p in pins(vfs, dir) {
        let _ = vfs.remove(&p);
    }
}
