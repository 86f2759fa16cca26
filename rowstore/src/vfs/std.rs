//! [`StdVfs`]: the operating system's file system.

use super::{Metadata, Vfs, VfsFile, VfsLock};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The operating system's file system: positioned reads and writes, `fdatasync`,
/// `fallocate`, `flock` and memory maps.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdVfs;

#[derive(Debug)]
struct StdFile {
    file: File,
}

#[derive(Debug)]
struct StdLock {
    _file: File,
}

impl VfsLock for StdLock {}

/// Lock `path` (created if missing), exclusive or shared, without waiting. A shared
/// holder (a read-only open) needs only read access to a file that exists.
fn try_lock(path: &Path, shared: bool) -> io::Result<Box<dyn VfsLock>> {
    let create = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    };
    let file = match shared {
        true => File::open(path).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => create(),
            _ => Err(e),
        })?,
        false => create()?,
    };
    let locked = match shared {
        true => file.try_lock_shared(),
        false => file.try_lock(),
    };
    match locked {
        Ok(()) => Ok(Box::new(StdLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

impl Vfs for StdVfs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(StdFile {
            file: File::open(path)?,
        }))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let m = std::fs::metadata(path)?;
        Ok(Metadata {
            len: m.len(),
            is_dir: m.is_dir(),
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        try_lock(path, false)
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        try_lock(path, true)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }
}

/// Offset and length alignment `zero_fill` needs for direct writes.
const DIRECT_ALIGN: u64 = 4096;

impl StdFile {
    /// A second handle on this file for direct (`O_DIRECT`), synchronous (`O_DSYNC`)
    /// writes; fails where the file system does not support them.
    fn direct_writer(&self) -> io::Result<File> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// 256 KiB of zeros aligned for direct I/O, allocated once.
struct AlignedZeros;

impl AlignedZeros {
    const LEN: usize = 256 << 10;

    fn get() -> &'static [u8] {
        static ZEROS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let addr = *ZEROS.get_or_init(|| {
            let layout = std::alloc::Layout::from_size_align(Self::LEN, DIRECT_ALIGN as usize)
                .expect("a valid layout");
            // SAFETY: the layout has a non-zero size. The allocation is never freed, so
            // the slice below lives for the rest of the process.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            p as usize
        });
        // SAFETY: `addr` points to `LEN` zeroed bytes that are never written or freed.
        unsafe { std::slice::from_raw_parts(addr as *const u8, Self::LEN) }
    }
}

impl VfsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn append(&self, buf: &[u8]) -> io::Result<()> {
        (&self.file).write_all(buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by
        // `self.file` and stays open for the duration of the call.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        let write_zeros = |f: &File| -> io::Result<()> {
            let zeros = AlignedZeros::get();
            let mut at = offset;
            while at < offset + len {
                let n = zeros.len().min((offset + len - at) as usize);
                f.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            Ok(())
        };
        // Direct, synchronous writes where the file system takes them: the zeros go
        // straight to disk and leave no dirty pages behind, so a concurrent fdatasync of
        // the log (the commit path) never ends up writing them. Elsewhere (tmpfs, or an
        // unaligned range) buffered writes and one fdatasync.
        let aligned = offset.is_multiple_of(DIRECT_ALIGN) && len.is_multiple_of(DIRECT_ALIGN);
        if aligned
            && let Ok(direct) = self.direct_writer()
            && write_zeros(&direct).is_ok()
        {
            return Ok(());
        }
        write_zeros(&self.file)?;
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        // SAFETY: callers map only immutable files (tables, segments): nothing in this
        // process writes to or truncates such a file after it is written and synced, and
        // files are only unlinked, which leaves an existing mapping valid.
        unsafe { memmap2::Mmap::map(&self.file) }.map(Some)
    }

    fn will_need(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is owned by
        // `self.file`, which outlives the call. The call is a hint and its result is
        // ignored.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
}
