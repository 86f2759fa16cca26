//! The file-system seam: every byte the row store and the column store read or write
//! goes through a [`Vfs`].
//!
//! - [`StdVfs`] is the operating system's file system (`pread`/`pwrite`, `fdatasync`,
//!   `flock`, memory maps).
//! - [`EncryptedVfs`] wraps another `Vfs` and seals every file's bytes (encryption at
//!   rest, see [`crate::crypto`]).
//! - [`FaultVfs`] wraps another `Vfs` for tests: it injects I/O errors, full disks and
//!   torn writes on chosen operations, and simulates **power loss**: every byte, file
//!   creation, removal and rename that no completed sync covered is undone.
//!
//! A `Vfs` is passed in through the engine options (and from there to the column store),
//! never looked up globally, so a test can give each database its own.
//!
//! Durability rules every caller keeps: data is durable once its file was synced
//! (`sync_data`); a created, removed or renamed name is durable once its directory was
//! synced (`sync_dir`). The helpers below ([`write_file_atomic`], [`create_new_synced`])
//! follow them.
//!
//! Reads of immutable files go through [`RandomAccessFile`]: a memory map when the `Vfs`
//! can map ([`VfsFile::map`]; an encrypting variant cannot) and the budget allows, else
//! positioned reads.

use crate::error::{Error, Result};
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod encrypted;
mod encrypted_header;
mod encrypted_log;
pub mod fault;
#[path = "std.rs"]
mod std_vfs;

pub use encrypted::EncryptedVfs;
pub use fault::{FaultKind, FaultOp, FaultRule, FaultVfs, PowerLoss};
pub use std_vfs::StdVfs;

/// What [`Vfs::metadata`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub len: u64,
    pub is_dir: bool,
}

/// A file system. Implementations must be safe to share between threads.
pub trait Vfs: Send + Sync + Debug + 'static {
    /// Create a new file for reading and writing; fails with `AlreadyExists` if the
    /// name is taken.
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Create a new file written in whole 4 KiB pages at page-aligned offsets (the
    /// B+Tree's): like [`Vfs::create`]. A `Vfs` that transforms bytes keeps each page
    /// apart, so writing one page never rewrites a byte of another (an encrypting
    /// `Vfs` seals each page in a block of its own).
    fn create_paged(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.create(path)
    }
    /// Create a new log file (WAL, manifest): like [`Vfs::create`], for a file only
    /// ever appended to. An encrypting `Vfs` gives it an append-only layout.
    fn create_log(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.create(path)
    }
    /// Open an existing file read-only.
    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Open an existing log (WAL or manifest) read-only. Its end may be torn by a
    /// crash; the log's framing finds where whole records end. An encrypting `Vfs`
    /// ends such a file before a last block that fails authentication, where
    /// [`Vfs::open`] reports it.
    fn open_log(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open(path)
    }
    /// Open an existing file for reading and writing.
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;
    /// Rename `from` to `to`, replacing `to` if it exists (atomically, as POSIX
    /// `rename`). Durable once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Remove a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Create a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (no `.` or `..`), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Make the entries created, removed or renamed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take an exclusive advisory lock on `path` (created if missing) without waiting:
    /// `WouldBlock` if another process or handle holds it. Released when the guard
    /// drops.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>>;
    /// Take a shared advisory lock on `path` without waiting: any number of shared
    /// holders at once, `WouldBlock` while an exclusive one ([`Vfs::lock`]) is held, and
    /// no exclusive lock granted while a shared one is. A `Vfs` without shared locks
    /// returns `Unsupported` (callers then take the exclusive lock).
    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        let _ = path;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Make `to` a second name of the file `from` (a hard link). A `Vfs` that cannot
    /// (another file system, an encrypting layer) returns `Unsupported` and callers copy.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _ = (from, to);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Two `Vfs` handles are equal when they are the same object (so configurations that
/// hold one can still be compared).
impl PartialEq for dyn Vfs {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(self as *const dyn Vfs, other as *const dyn Vfs)
    }
}

/// An open file. All methods take `&self`: positioned reads and writes need no cursor.
#[allow(clippy::len_without_is_empty)]
pub trait VfsFile: Send + Sync + Debug {
    /// Read exactly `buf.len()` bytes at `offset` (`UnexpectedEof` if the file is
    /// shorter).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at the end of what this handle has appended so far (a
    /// sequential writer of a new file).
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Make the file's data (and the size needed to read it) durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Set the file's size (truncating or extending with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserve disk space for the first `len` bytes, extending the size with zeros
    /// (`fallocate`). `Unsupported` where the file system cannot; callers go on without.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Write zeros over `[offset, offset + len)` of the *stored* bytes and make them
    /// durable (the log's zeroing ahead of its end, `log_zero`). `Unsupported` by
    /// default: an encrypting file cannot, since stored zeros would not authenticate.
    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Current size in bytes.
    fn len(&self) -> io::Result<u64>;
    /// A read-only memory map of the whole file, or `None` if this `Vfs` cannot map
    /// (readers then use `read_at`). The caller promises the file is immutable while
    /// mapped.
    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        Ok(None)
    }
    /// For a file whose bytes change on the way in (an encrypted file), which cannot
    /// hand out a map of its contents: map the *stored* bytes for this handle's own
    /// `read_at` calls, which then make no system call. `Ok(true)` if it did. The same
    /// promise as [`VfsFile::map`]: the file is immutable while mapped.
    fn map_stored(&self) -> io::Result<bool> {
        Ok(false)
    }
    /// Hint that a byte range will be read soon.
    fn will_need(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// A held directory lock; dropping it releases the lock.
pub trait VfsLock: Send + Sync + Debug {}

/// The operating system's file system, shared.
pub fn std_vfs() -> Arc<dyn Vfs> {
    Arc::new(StdVfs)
}

// ------------------------------------------------------------------ helpers

fn ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::io(what.into(), e)
}

/// fsync a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    vfs.sync_dir(dir)
        .map_err(ctx(format!("fsync of directory {}", dir.display())))
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create a new file that must not exist yet.
pub fn create_new(vfs: &dyn Vfs, path: &Path) -> Result<Box<dyn VfsFile>> {
    vfs.create(path)
        .map_err(ctx(format!("creating {}", path.display())))
}

/// Create a new log file that must not exist yet ([`Vfs::create_log`]).
pub fn create_log(vfs: &dyn Vfs, path: &Path) -> Result<Box<dyn VfsFile>> {
    vfs.create_log(path)
        .map_err(ctx(format!("creating {}", path.display())))
}

/// Create `path` holding `data`, fsynced (file only; the caller syncs the directory,
/// usually once for several files).
pub fn create_new_synced(vfs: &dyn Vfs, path: &Path, data: &[u8]) -> Result<()> {
    let f = create_new(vfs, path)?;
    f.append(data)
        .map_err(ctx(format!("writing {}", path.display())))?;
    f.sync_data()
        .map_err(ctx(format!("fsync of {}", path.display())))
}

/// Write `data` to `path` atomically: write `<path>.tmp`, fsync it, rename it over
/// `path`, fsync the directory.
pub fn write_file_atomic(vfs: &dyn Vfs, path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    remove_file_if_exists(vfs, &tmp)?;
    create_new_synced(vfs, &tmp, data)?;
    vfs.rename(&tmp, path)
        .map_err(ctx(format!("renaming {} into place", tmp.display())))?;
    sync_dir(vfs, parent_dir(path))
}

/// The temporary name [`write_file_atomic`] writes `path` under first.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Read a whole file.
pub fn read_file(vfs: &dyn Vfs, path: &Path) -> Result<Vec<u8>> {
    let f = vfs
        .open(path)
        .map_err(ctx(format!("opening {}", path.display())))?;
    read_all(&*f, path)
}

/// Read the whole of an open file.
pub fn read_all(f: &dyn VfsFile, path: &Path) -> Result<Vec<u8>> {
    let len = f
        .len()
        .map_err(ctx(format!("stat of {}", path.display())))?;
    let len = usize::try_from(len)
        .map_err(|_| Error::corruption(path, 0, "file too large to read into memory"))?;
    let mut buf = vec![0u8; len];
    f.read_at(&mut buf, 0)
        .map_err(ctx(format!("reading {}", path.display())))?;
    Ok(buf)
}

/// Read a whole log file ([`Vfs::open_log`]: an encrypted log ends before a torn last
/// block).
pub fn read_log_file(vfs: &dyn Vfs, path: &Path) -> Result<Vec<u8>> {
    let f = vfs
        .open_log(path)
        .map_err(ctx(format!("opening {}", path.display())))?;
    read_all(&*f, path)
}

/// Read a whole file, or `None` if it does not exist.
pub fn read_file_if_exists(vfs: &dyn Vfs, path: &Path) -> Result<Option<Vec<u8>>> {
    match vfs.open(path) {
        Ok(f) => read_all(&*f, path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
    }
}

/// Remove a file, ignoring "not found".
pub fn remove_file_if_exists(vfs: &dyn Vfs, path: &Path) -> Result<()> {
    match vfs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Names in a directory.
pub fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<String>> {
    vfs.list(dir)
        .map_err(ctx(format!("listing {}", dir.display())))
}

/// Whether a path exists.
pub fn exists(vfs: &dyn Vfs, path: &Path) -> Result<bool> {
    vfs.exists(path)
        .map_err(ctx(format!("stat of {}", path.display())))
}

/// Create a directory (and its parents) and make its entry durable.
pub fn create_dir_synced(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    if exists(vfs, dir)? {
        return Ok(());
    }
    vfs.create_dir_all(dir)
        .map_err(ctx(format!("creating {}", dir.display())))?;
    sync_dir(vfs, parent_dir(dir))
}

/// Copy `src` (on `from`) to `dst` (on `to`, created new), fsynced, verifying the
/// copy by reading it back and comparing CRC32Cs. Returns the bytes copied.
pub fn copy_file_verified(
    from: &dyn Vfs,
    src: &Path,
    to: &dyn Vfs,
    dst: &Path,
    limit: Option<u64>,
) -> Result<u64> {
    let f = from
        .open(src)
        .map_err(ctx(format!("opening {}", src.display())))?;
    copy_open_file_verified(&*f, src, to, dst, limit)
}

/// [`copy_file_verified`] from a file already open (it may since have been removed).
pub fn copy_open_file_verified(
    f: &dyn VfsFile,
    src: &Path,
    to: &dyn Vfs,
    dst: &Path,
    limit: Option<u64>,
) -> Result<u64> {
    let len = f.len().map_err(ctx(format!("stat of {}", src.display())))?;
    let len = limit.map_or(len, |l| l.min(len));
    let out = create_new(to, dst)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let mut crc = 0u32;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        f.read_at(&mut buf[..n], off)
            .map_err(ctx(format!("reading {}", src.display())))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        out.append(&buf[..n])
            .map_err(ctx(format!("writing {}", dst.display())))?;
        off += n as u64;
    }
    out.sync_data()
        .map_err(ctx(format!("fsync of {}", dst.display())))?;
    drop(out);
    let back = to
        .open(dst)
        .map_err(ctx(format!("opening {}", dst.display())))?;
    let mut off = 0u64;
    let mut crc2 = 0u32;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        back.read_at(&mut buf[..n], off)
            .map_err(ctx(format!("reading back {}", dst.display())))?;
        crc2 = crc32c::crc32c_append(crc2, &buf[..n]);
        off += n as u64;
    }
    if crc != crc2 {
        return Err(Error::corruption(
            dst,
            0,
            format!("copy of {} does not read back as written", src.display()),
        ));
    }
    Ok(len)
}

// ------------------------------------------------------------------ reading

/// Budget of bytes that may be memory-mapped at once (the `mmap_size` setting).
#[derive(Debug)]
pub struct MmapBudget {
    limit: u64,
    used: AtomicU64,
}

impl MmapBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MmapBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }
    fn try_reserve(&self, n: u64) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if cur + n > self.limit {
                return false;
            }
            match self
                .used
                .compare_exchange(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }
    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
    /// Bytes currently mapped.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

enum Backing {
    Mmap {
        map: memmap2::Mmap,
        budget: Arc<MmapBudget>,
    },
    /// Positioned reads; `budget` is held when the file mapped its stored bytes
    /// itself ([`VfsFile::map_stored`]).
    File { budget: Option<Arc<MmapBudget>> },
}

/// A read-only immutable file: memory-mapped if the `Vfs` can map and the budget
/// allows, else read with positioned reads.
pub struct RandomAccessFile {
    path: PathBuf,
    len: u64,
    file: Box<dyn VfsFile>,
    backing: Backing,
}

impl RandomAccessFile {
    pub fn open(vfs: &dyn Vfs, path: &Path, budget: Option<&Arc<MmapBudget>>) -> Result<Self> {
        let file = vfs
            .open(path)
            .map_err(ctx(format!("opening {}", path.display())))?;
        Self::from_file(file, path, budget)
    }

    /// [`RandomAccessFile::open`] over a file already open (which may since have been
    /// removed: an open handle keeps its bytes).
    pub fn from_file(
        file: Box<dyn VfsFile>,
        path: &Path,
        budget: Option<&Arc<MmapBudget>>,
    ) -> Result<Self> {
        let len = file
            .len()
            .map_err(ctx(format!("stat of {}", path.display())))?;
        let backing = match budget {
            Some(b) if len > 0 && b.try_reserve(len) => match file.map() {
                Ok(Some(map)) => Backing::Mmap {
                    map,
                    budget: b.clone(),
                },
                _ if matches!(file.map_stored(), Ok(true)) => Backing::File {
                    budget: Some(b.clone()),
                },
                _ => {
                    b.release(len);
                    Backing::File { budget: None }
                }
            },
            _ => Backing::File { budget: None },
        };
        Ok(RandomAccessFile {
            path: path.to_path_buf(),
            len,
            file,
            backing,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_mmapped(&self) -> bool {
        matches!(self.backing, Backing::Mmap { .. })
    }

    /// Read exactly `len` bytes at `offset`; a range past the end is corruption (the
    /// offsets come from the file's own index).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(Error::corruption(
                &self.path,
                offset,
                format!("read of {len} bytes past end of file ({} bytes)", self.len),
            ));
        }
        match &self.backing {
            Backing::Mmap { map, .. } => {
                let o = offset as usize;
                Ok(map[o..o + len].to_vec())
            }
            Backing::File { .. } => {
                let mut buf = vec![0u8; len];
                // The message is built only on failure: this is every block read's path.
                self.file.read_at(&mut buf, offset).map_err(|e| {
                    Error::io(format!("reading {} at {offset}", self.path.display()), e)
                })?;
                Ok(buf)
            }
        }
    }

    /// Hint that a byte range will be read soon.
    pub fn will_need(&self, offset: u64, len: u64) {
        if let Backing::File { .. } = &self.backing {
            self.file.will_need(offset, len);
        }
    }
}

impl Drop for RandomAccessFile {
    fn drop(&mut self) {
        if let Backing::Mmap { budget, .. }
        | Backing::File {
            budget: Some(budget),
        } = &self.backing
        {
            budget.release(self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let vfs = StdVfs;
        let p = d.path().join("F");
        write_file_atomic(&vfs, &p, b"one").unwrap();
        write_file_atomic(&vfs, &p, b"two").unwrap();
        assert_eq!(read_file(&vfs, &p).unwrap(), b"two");
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn verified_copy_copies_a_prefix() {
        let d = tempfile::tempdir().unwrap();
        let vfs = StdVfs;
        let src = d.path().join("src");
        std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
        let dst = d.path().join("dst");
        let n = copy_file_verified(&vfs, &src, &vfs, &dst, Some(1 << 21)).unwrap();
        assert_eq!(n, 1 << 21);
        assert_eq!(std::fs::read(&dst).unwrap().len(), 1 << 21);
    }
}
