//! The file-system seam: the only module that creates, syncs, renames and reads files.
//!
//! Durability rules kept here: a new or renamed file is only durable once its directory
//! has been fsynced, so every create/rename helper syncs the parent directory.
//! Reads of immutable table files go through [`RandomAccessFile`], which is either a
//! memory map (when the configured mmap budget allows) or positioned reads (`pread`).

use crate::error::{Error, IoContext, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// fsync a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx(|| format!("opening directory {} to sync", dir.display()))?;
    f.sync_all()
        .ctx(|| format!("fsync of directory {}", dir.display()))
}

/// Create a new file that must not exist yet, for writing.
pub fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))
}

/// Write `data` to `path` atomically: write a temp file, fsync it, rename it over
/// `path`, fsync the directory.
pub fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsync of {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", tmp.display()))?;
    sync_dir(dir)
}

/// Remove a file, ignoring "not found".
pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

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
    File(File),
}

/// A read-only immutable file: memory-mapped if the budget allows, else read with pread.
pub struct RandomAccessFile {
    path: PathBuf,
    len: u64,
    backing: Backing,
}

impl RandomAccessFile {
    pub fn open(path: &Path, budget: Option<&Arc<MmapBudget>>) -> Result<Self> {
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(|| format!("stat of {}", path.display()))?
            .len();
        let backing = match budget {
            Some(b) if len > 0 && b.try_reserve(len) => {
                // SAFETY: table files are immutable once written and fsynced: nothing in
                // this process writes to or truncates a file after it is opened for
                // reading, and files are only deleted (unlinked) once no reader holds
                // them, which leaves an existing mapping valid.
                match unsafe { memmap2::Mmap::map(&file) } {
                    Ok(map) => Backing::Mmap {
                        map,
                        budget: b.clone(),
                    },
                    Err(_) => {
                        b.release(len);
                        Backing::File(file)
                    }
                }
            }
            _ => Backing::File(file),
        };
        Ok(RandomAccessFile {
            path: path.to_path_buf(),
            len,
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
            Backing::File(f) => {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset)
                    .ctx(|| format!("reading {} at {offset}", self.path.display()))?;
                Ok(buf)
            }
        }
    }

    /// Hint the kernel that a byte range will be read soon.
    pub fn will_need(&self, offset: u64, len: u64) {
        if let Backing::File(f) = &self.backing {
            use std::os::fd::AsRawFd;
            // SAFETY: posix_fadvise only reads its integer arguments; the fd is owned by
            // `f`, which outlives the call. The call is a hint and its result is ignored.
            unsafe {
                libc::posix_fadvise(
                    f.as_raw_fd(),
                    offset as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }
}

impl Drop for RandomAccessFile {
    fn drop(&mut self) {
        if let Backing::Mmap { budget, .. } = &self.backing {
            budget.release(self.len);
        }
    }
}
