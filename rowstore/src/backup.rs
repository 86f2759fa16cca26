//! Copies of a database: in-process checkpoints ([`crate::Engine::checkpoint`]) and
//! file-level backups of a directory another process may have open and be writing
//! ([`backup_dir`]).
//!
//! What a copy holds: the tables of one manifest version, the WAL segments after it, and
//! a fresh manifest naming them. Every write acknowledged before the copy began is in
//! it, and it opens like a database after a crash.
//!
//! The one delicate file is the live WAL segment, which the commit leader appends to
//! while it is copied. It is preallocated (zeros ahead of the records), so a plain read
//! racing an append can return zeros where a record is being written followed by
//! records written after them, which recovery rightly refuses as damage. So:
//! - in process, the copy ends at the WAL writer's own end, taken under the WAL lock
//!   (always a whole record, and at or past every write acknowledged so far);
//! - from another process, [`read_live_log`] validates what it read, re-reads while it
//!   finds such damage (an append in flight completes in microseconds), and ends the
//!   copy at the last whole record. A write acknowledged before the read began lies
//!   before any byte the writer was still changing, so it is always in the copy.

use crate::error::{Error, Result};
use crate::files::{self, DbFile};
use crate::format::WAL_MAGIC;
use crate::log::{self, LogContents, Scan};
use crate::manifest::{self, Manifest, ManifestState};
use crate::vfs::{self, Vfs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a live log is re-read before damage that does not go away counts as real.
const LIVE_READ_ATTEMPTS: usize = 200;

/// Read a log that a writer may be appending to. Returns its bytes cut at the end of
/// its last whole record, with the records, or `None` if the file does not exist
/// (removed after a flush). Damage in bytes that had been durable, seen again on every
/// re-read, is a `Corruption` error.
pub fn read_live_log(
    vfs: &dyn Vfs,
    path: &Path,
    magic: &[u8; 8],
) -> Result<Option<(Vec<u8>, LogContents)>> {
    match vfs.open_log(path) {
        Ok(f) => read_live_file(&*f, path, magic).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
    }
}

/// [`read_live_log`] through a handle opened earlier (the file may since have been
/// removed; the handle keeps its bytes).
pub fn read_live_file(
    f: &dyn vfs::VfsFile,
    path: &Path,
    magic: &[u8; 8],
) -> Result<(Vec<u8>, LogContents)> {
    let mut last = None;
    for attempt in 0..LIVE_READ_ATTEMPTS {
        let mut data = vfs::read_all(f, path)?;
        match log::scan_log(path, &data, magic)? {
            Scan::Ok(c) => {
                data.truncate(c.valid_len as usize);
                return Ok((data, c));
            }
            Scan::Damaged { damage, .. } => {
                last = Some(damage);
                std::thread::sleep(Duration::from_micros(200 * (attempt as u64 + 1).min(10)));
            }
        }
    }
    let d = last.expect("at least one attempt");
    Err(log::damage_error(path, &d))
}

/// Identifies one version of a database's manifest: a flush or compaction that changed
/// the live files changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestMark {
    pub(crate) id: u64,
    pub(crate) len: u64,
}

pub(crate) fn manifest_mark(vfs: &dyn Vfs, dir: &Path) -> Result<ManifestMark> {
    let id = manifest::read_current(vfs, dir)?;
    let len = vfs
        .metadata(&manifest::manifest_path(dir, id))
        .map_err(|e| Error::io("stat of the manifest", e))?
        .len;
    Ok(ManifestMark { id, len })
}

/// WAL segments numbered `from` and up, in order.
pub(crate) fn wal_segments(vfs: &dyn Vfs, dir: &Path, from: u64) -> Result<Vec<(u64, PathBuf)>> {
    let mut v: Vec<(u64, PathBuf)> = vfs::list(vfs, dir)?
        .into_iter()
        .filter_map(|n| match files::classify(&n) {
            DbFile::Wal(id) if id >= from => Some((id, dir.join(n))),
            _ => None,
        })
        .collect();
    v.sort();
    Ok(v)
}

pub(crate) fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Hard-link `src` to `dst` where both are on one file system, else copy it and verify
/// the copy by checksum (a copy on other media does not share the original's media
/// errors).
pub(crate) fn link_or_copy(
    src_vfs: &dyn Vfs,
    src: &Path,
    dst_vfs: &dyn Vfs,
    dst: &Path,
    same_vfs: bool,
) -> Result<()> {
    if same_vfs && src_vfs.hard_link(src, dst).is_ok() {
        return Ok(());
    }
    vfs::copy_file_verified(src_vfs, src, dst_vfs, dst, None).map(|_| ())
}

/// The files of one consistent state, ready to copy.
pub(crate) struct CopyPlan {
    pub(crate) state: ManifestState,
    /// Tables to copy.
    pub(crate) tables: Vec<(u64, TableSource)>,
    /// WAL segments: id and the bytes to copy.
    pub(crate) wals: Vec<(u64, WalSource)>,
    /// The B+Tree engine's tree: a version pinned in this process, or the live file
    /// of another (copied with [`crate::btree::BTree::copy_live`]).
    pub(crate) tree: Option<TreeSource>,
}

pub(crate) enum TreeSource {
    Pinned(std::sync::Arc<crate::btree::TreeVersion>),
    Live,
}

pub(crate) enum TableSource {
    /// By name (the caller keeps the file from being removed until copied).
    Path,
    /// Already hard-linked into the copy.
    Linked,
    /// An open handle (the file may have been removed since).
    File(Box<dyn vfs::VfsFile>),
}

pub(crate) enum WalSource {
    /// Bytes already read (whole records).
    Bytes(Vec<u8>),
    /// An open file and how much of it to copy (whole records).
    File(Box<dyn vfs::VfsFile>, u64),
}

/// Write `plan` into the new directory `tmp` (on `dst_vfs`): link or copy tables, write
/// WAL copies, then a fresh manifest and CURRENT. Everything is synced.
pub(crate) fn write_copy(
    src_vfs: &dyn Vfs,
    src_dir: &Path,
    dst_vfs: &dyn Vfs,
    tmp: &Path,
    plan: CopyPlan,
    same_vfs: bool,
) -> Result<()> {
    let mut max_id = 0;
    match plan.tree {
        Some(TreeSource::Pinned(v)) => v.copy_to(dst_vfs, &files::tree_path(tmp))?,
        Some(TreeSource::Live) => {
            let (src, dst) = (files::tree_path(src_dir), files::tree_path(tmp));
            if !crate::btree::BTree::copy_live(src_vfs, &src, dst_vfs, &dst)? {
                return Err(Error::io(
                    "copying the tree",
                    std::io::Error::new(std::io::ErrorKind::NotFound, "the tree moved on"),
                ));
            }
        }
        None => {}
    }
    for (id, source) in plan.tables {
        max_id = max_id.max(id);
        let (src, dst) = (files::table_path(src_dir, id), files::table_path(tmp, id));
        match source {
            TableSource::Linked => {}
            TableSource::Path => link_or_copy(src_vfs, &src, dst_vfs, &dst, same_vfs)?,
            TableSource::File(f) => {
                vfs::copy_open_file_verified(&*f, &src, dst_vfs, &dst, None)?;
            }
        }
    }
    for (id, src) in plan.wals {
        max_id = max_id.max(id);
        let dst = files::wal_path(tmp, id);
        let data = match src {
            WalSource::Bytes(b) => b,
            WalSource::File(f, len) => {
                let mut b = vec![0u8; len as usize];
                f.read_at(&mut b, 0)
                    .map_err(|e| Error::io(format!("reading WAL segment {id}"), e))?;
                b
            }
        };
        // The copy must read back as whole records and nothing else.
        match log::scan_log(&dst, &data, WAL_MAGIC)? {
            Scan::Ok(c) if c.valid_len == data.len() as u64 || data.is_empty() => {}
            _ => {
                return Err(Error::corruption(
                    &dst,
                    0,
                    "the WAL copy does not end at a whole record",
                ));
            }
        }
        let f = vfs::create_log(dst_vfs, &dst)?;
        f.append(&data)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io(format!("writing {}", dst.display()), e))?;
    }
    let mut state = plan.state;
    let manifest_id = state.next_file_id.max(max_id + 1);
    state.next_file_id = manifest_id + 1;
    vfs::sync_dir(dst_vfs, tmp)?;
    Manifest::create(dst_vfs, tmp, manifest_id, &state)?;
    Ok(())
}

/// Run `f` on a new temporary directory next to `target`, then rename it to `target`.
/// `target` must not exist; nothing that existed before is ever removed (a temporary
/// directory is only removed if this call created it).
pub(crate) fn into_new_dir(
    dst_vfs: &dyn Vfs,
    target: &Path,
    mut f: impl FnMut(&Path) -> Result<()>,
) -> Result<()> {
    if vfs::exists(dst_vfs, target)? {
        return Err(Error::DatabaseExists(target.to_path_buf()));
    }
    let parent = vfs::parent_dir(target).to_path_buf();
    vfs::create_dir_synced(dst_vfs, &parent)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let mut n = 0u32;
    let tmp = loop {
        let t = parent.join(format!(".{name}.partial-{}-{n}", std::process::id()));
        if !vfs::exists(dst_vfs, &t)? {
            break t;
        }
        n += 1;
    };
    dst_vfs
        .create_dir_all(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let r = f(&tmp).and_then(|()| {
        if vfs::exists(dst_vfs, target)? {
            return Err(Error::DatabaseExists(target.to_path_buf()));
        }
        dst_vfs
            .rename(&tmp, target)
            .map_err(|e| Error::io(format!("renaming {} into place", tmp.display()), e))?;
        vfs::sync_dir(dst_vfs, &parent)
    });
    if r.is_err() {
        let _ = dst_vfs.remove_dir_all(&tmp);
    }
    r
}

/// Write a consistent copy of the database in `dir` into `target` (which must not
/// exist), while another process may have it open and be writing to it. Tables are
/// hard-linked when `target` is on the same file system (and `dst_vfs` is `src_vfs`),
/// else copied and verified; the WAL after them is copied up to its last whole record.
/// If a flush or compaction changes the live files while they are collected, it starts
/// over.
pub fn backup_dir(src_vfs: &dyn Vfs, dir: &Path, dst_vfs: &dyn Vfs, target: &Path) -> Result<()> {
    let same = std::ptr::addr_eq(src_vfs as *const dyn Vfs, dst_vfs as *const dyn Vfs);
    if !vfs::exists(src_vfs, &files::current_path(dir))? {
        return Err(Error::DatabaseNotFound(dir.to_path_buf()));
    }
    for _ in 0..100 {
        let mut retry = false;
        let r = into_new_dir(dst_vfs, target, |tmp| {
            match try_backup(src_vfs, dir, dst_vfs, tmp, same) {
                Attempt::Done(r) => r,
                Attempt::Retry => {
                    retry = true;
                    Err(Error::InvalidArgument("retrying".into()))
                }
            }
        });
        if !retry {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Error::InvalidArgument(
        "the database changed too fast to back up (100 attempts)".into(),
    ))
}

/// One try at collecting a consistent version.
enum Attempt {
    Done(Result<()>),
    /// The live files changed under us (a flush or compaction): start over.
    Retry,
}

/// A WAL segment held open: id, path, handle.
pub(crate) type PinnedSegment = (u64, PathBuf, Box<dyn vfs::VfsFile>);

/// Open every WAL segment in `dir` (an open handle keeps the bytes even if a flush
/// removes the file), in id order.
pub(crate) fn pin_wal_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<PinnedSegment>> {
    let mut out = Vec::new();
    for (id, p) in wal_segments(vfs, dir, 0)? {
        match vfs.open_log(&p) {
            Ok(f) => out.push((id, p, f)),
            // Flushed and removed since it was listed: the manifest read after this
            // covers it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("opening {}", p.display()), e)),
        }
    }
    Ok(out)
}

/// Collect a consistent version without any lock, while the database may be written:
///
/// 1. open every WAL segment first;
/// 2. then read the manifest and open (or hard-link) every table it names; if one
///    was compacted away meanwhile, read the newer manifest and try again;
/// 3. keep the segments numbered at or after that manifest's `log_number`.
///
/// Why that holds every write acknowledged before step 1: such a write is in a table of
/// the manifest read in step 2, or in a segment numbered at or after its `log_number`.
/// A segment is removed only after a manifest edit that moved `log_number` past it, so a
/// segment at or after the `log_number` of a manifest read after step 1 still existed in
/// step 1, and is open. Segments created after step 1 hold only later writes.
fn try_backup(src_vfs: &dyn Vfs, dir: &Path, dst_vfs: &dyn Vfs, tmp: &Path, same: bool) -> Attempt {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let r = (|| -> Result<Option<CopyPlan>> {
        let segments = pin_wal_segments(src_vfs, dir)?;
        let (state, tables) = 'version: loop {
            let mark = manifest_mark(src_vfs, dir)?;
            let state = manifest::replay(src_vfs, dir, mark.id)?;
            let mut tables = Vec::new();
            for id in state.levels.iter().flat_map(|l| l.keys().copied()) {
                let (src, dst) = (files::table_path(dir, id), files::table_path(tmp, id));
                if same && src_vfs.hard_link(&src, &dst).is_ok() {
                    tables.push((id, TableSource::Linked));
                    continue;
                }
                match src_vfs.open(&src) {
                    Ok(f) => tables.push((id, TableSource::File(f))),
                    Err(e) if gone(&e) => {
                        // Compacted away: undo the links, take the newer version.
                        for (id, t) in tables {
                            if let TableSource::Linked = t {
                                let _ = dst_vfs.remove(&files::table_path(tmp, id));
                            }
                        }
                        continue 'version;
                    }
                    Err(e) => return Err(Error::io(format!("opening {}", src.display()), e)),
                }
            }
            break (state, tables);
        };
        let mut wals = Vec::new();
        for (id, p, f) in segments {
            if id >= state.log_number {
                let (data, _) = read_live_file(&*f, &p, WAL_MAGIC)?;
                wals.push((id, WalSource::Bytes(data)));
            }
        }
        let tree = (state.engine == crate::options::StorageKind::BTree).then_some(TreeSource::Live);
        Ok(Some(CopyPlan {
            state,
            tables,
            wals,
            tree,
        }))
    })();
    match r {
        Ok(Some(plan)) => match write_copy(src_vfs, dir, dst_vfs, tmp, plan, same) {
            Err(e) if is_not_found(&e) => Attempt::Retry,
            r => Attempt::Done(r),
        },
        Ok(None) => Attempt::Retry,
        Err(e) if is_not_found(&e) => Attempt::Retry,
        Err(e) => Attempt::Done(Err(e)),
    }
}
