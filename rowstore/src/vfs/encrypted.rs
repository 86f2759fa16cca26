//! [`EncryptedVfs`]: a [`Vfs`] that seals every byte of every file it writes, over
//! another `Vfs`.
//!
//! A file is a 4 KiB header followed by 4 KiB blocks (FORMAT.md, "Encrypted files"):
//!
//! ```text
//! header  magic "LDBENCF1", version u16, cipher u8, layout u8, file id [16],
//!         nonce [12], data key sealed by the database key [32], tag [16],
//!         CRC32C of the above; zeros to 4096
//! block   nonce [12] | ciphertext of up to 4068 bytes | tag [16]
//! ```
//!
//! Each file has its own random data key. A block's associated data is the file id and
//! the block's index, so a block moved to another position or file fails to
//! authenticate. The last block may be shorter; appending rewrites it (with a new
//! nonce). A nonce is the writing handle's epoch and a per-handle counter
//! ([`KeyState::next_nonce`]): the epoch is claimed durably before a handle writes, so
//! no two writes under one data key share a nonce, also across crashes.
//!
//! Logs (created with [`Vfs::create_log`]) use an append-only chunk layout instead
//! (`encrypted_log.rs`), so no byte that was synced is ever rewritten.
//!
//! Reads check every block they touch; one that fails is an `InvalidData` error
//! carrying an [`AuthFailure`] (the row store reports it as corruption naming the file
//! and offset). The plaintext cannot be memory-mapped (`map` is `None`), so reads
//! decrypt into the block cache; an immutable file's sealed bytes may be mapped for its
//! own reads ([`VfsFile::map_stored`]), which then copy blocks from memory.

use super::encrypted_header::{Geometry, Header, Layout, header_bytes, read_header};
use super::{Metadata, Vfs, VfsFile, VfsLock};
use crate::crypto::{Aead, AuthFailure, KEY_FILE, KeyState, NONCE_LEN, TAG_LEN};
use parking_lot::Mutex;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of header before the first block.
pub const HEADER_LEN: u64 = 4096;
/// Bytes of a block on disk.
pub const BLOCK_PHYS: u64 = 4096;
/// Bytes of a block's nonce and tag.
const OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Bytes of plaintext a block holds.
pub const BLOCK_DATA: u64 = BLOCK_PHYS - OVERHEAD;
/// Bytes of a block's nonce and tag (also a log chunk's).
pub(super) const SEAL_OVERHEAD: u64 = OVERHEAD;

/// Size of the per-thread buffer blocks are sealed into and read through.
const SCRATCH_BYTES: usize = 256 << 10;

thread_local! {
    /// Reused for every read and sequential write of this thread: large reads and
    /// writes go through it in pieces, so they touch no fresh pages.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bytes of plaintext a block of a paged file holds: one page of the B+Tree.
pub const PAGE_DATA: u64 = 4096;

/// The encrypting file system. The key file itself, the lock file and directories
/// pass through to the inner `Vfs`.
#[derive(Debug)]
pub struct EncryptedVfs {
    inner: Arc<dyn Vfs>,
    keys: Arc<KeyState>,
}

impl EncryptedVfs {
    pub fn new(inner: Arc<dyn Vfs>, keys: Arc<KeyState>) -> EncryptedVfs {
        EncryptedVfs { inner, keys }
    }

    pub fn keys(&self) -> &Arc<KeyState> {
        &self.keys
    }

    pub fn inner(&self) -> &Arc<dyn Vfs> {
        &self.inner
    }

    fn key_err(e: crate::Error) -> io::Error {
        match e {
            crate::Error::Io { source, .. } => source,
            e => io::Error::other(e.to_string()),
        }
    }

    fn open_file(&self, path: &Path, mode: OpenAs) -> io::Result<Box<dyn VfsFile>> {
        let inner = match mode {
            OpenAs::Write => self.inner.open_rw(path)?,
            _ => self.inner.open(path)?,
        };
        let phys = inner.len()?;
        if phys == 0 {
            // Created, but the header never reached the disk (a crash right after
            // creation): an empty file, which gets a header when first written.
            return Ok(Box::new(EncFile::new_empty(inner, path, &self.keys, mode)?));
        }
        let head = if mode == OpenAs::Write {
            self.keys.writer_key()
        } else {
            self.keys.header_key()
        }
        .map_err(Self::key_err)?;
        let header = read_header(&*inner, path, &head, phys)?;
        if header.layout == Layout::Chunks {
            let f = super::encrypted_log::LogFile::open(
                inner,
                path,
                &self.keys,
                header,
                mode == OpenAs::Write,
            )?;
            return Ok(Box::new(f));
        }
        let f = EncFile::open(inner, path, &self.keys, header, phys, mode)?;
        Ok(Box::new(f))
    }

    /// A new file in the block or page layout.
    fn create_as(&self, path: &Path, layout: Layout) -> io::Result<Box<dyn VfsFile>> {
        let head = self.keys.writer_key().map_err(Self::key_err)?;
        let inner = self.inner.create(path)?;
        Ok(Box::new(EncFile::create(
            inner, path, &self.keys, &head, layout,
        )?))
    }

    fn is_key_file(path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == KEY_FILE || n == "ENCRYPTION.tmp")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OpenAs {
    /// Reads; a block that fails authentication is an error.
    Read,
    /// Reads of a log: a last block that fails authentication is a torn write (the
    /// file ends before it), as a torn record is to the log's own framing.
    Log,
    /// Reads and writes: a torn last block is cut off.
    Write,
}

impl Vfs for EncryptedVfs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.create_as(path, Layout::Blocks)
    }

    /// One sealed block per 4 KiB page: writing a page reseals no other page's
    /// bytes, so a torn write cannot damage a page the B+Tree has published.
    fn create_paged(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.create_as(path, Layout::Pages)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open_file(path, OpenAs::Read)
    }

    fn open_log(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open_file(path, OpenAs::Log)
    }

    /// Logs are written in append-only chunks, one per write, never rewriting a byte
    /// that was synced (`encrypted_log.rs`).
    fn create_log(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let head = self.keys.writer_key().map_err(Self::key_err)?;
        let inner = self.inner.create(path)?;
        let f = super::encrypted_log::LogFile::create(inner, path, &self.keys, &head)?;
        Ok(Box::new(f))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.open_file(path, OpenAs::Write)
    }

    /// A database directory renamed into place (a backup or checkpoint made in a
    /// temporary directory) gets the key file first, so the copy is never without it.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let inner = &*self.inner;
        if inner.metadata(from).is_ok_and(|m| m.is_dir)
            && inner.exists(&crate::files::current_path(from))?
            && !inner.exists(&from.join(KEY_FILE))?
        {
            self.keys
                .write_key_file_into(inner, from)
                .map_err(Self::key_err)?;
        }
        inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    /// The key file is not listed: to the engine it is not a database file.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = self.inner.list(dir)?;
        names.retain(|n| !Self::is_key_file(Path::new(n)));
        Ok(names)
    }

    /// Sizes are the bytes on disk (headers and tags included; an open file's
    /// `len()` is what a reader sees). They grow with every write, which is all
    /// callers use them for (disk usage, noticing that a manifest changed).
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.inner.metadata(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        self.inner.lock(path)
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        self.inner.lock_shared(path)
    }

    /// A link shares the file's bytes, header and data key, all sealed under the
    /// same database key: it reads the same through this `Vfs`.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.hard_link(from, to)
    }
}

/// The plaintext of the last, partial block, kept by a writer so appends do not read
/// it back.
struct Tail {
    block: u64,
    data: Vec<u8>,
    /// Not yet on disk: sequential appends seal a block once, when it is full, and a
    /// partial last block at `sync_data` (or a read, a truncation, or drop).
    pending: bool,
}

struct EncFile {
    inner: Box<dyn VfsFile>,
    path: PathBuf,
    keys: Arc<KeyState>,
    /// Sealed by the data key; `None` for a headerless empty file until its first write.
    aead: std::sync::OnceLock<Arc<Aead>>,
    file_id: [u8; 16],
    /// How plaintext maps onto sealed blocks (from the header's layout).
    geo: Geometry,
    len: AtomicU64,
    /// Whether `len` is the length (a writer, or a log that ends before a torn block);
    /// else the file may be growing under another handle and its length is read from
    /// the file, as a plaintext reader would see it.
    fixed_len: std::sync::atomic::AtomicBool,
    tail: Mutex<Option<Tail>>,
    /// Read handles: the plaintext of the last block read.
    last_read: Mutex<Option<(u64, Vec<u8>)>>,
    /// An immutable file's stored (sealed) bytes, mapped ([`VfsFile::map_stored`]):
    /// reads copy blocks from memory instead of making a `pread` each.
    stored: std::sync::OnceLock<memmap2::Mmap>,
}

impl std::fmt::Debug for EncFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl EncFile {
    /// An empty file without a data key yet.
    fn blank(
        inner: Box<dyn VfsFile>,
        path: &Path,
        keys: &Arc<KeyState>,
        layout: Layout,
    ) -> EncFile {
        EncFile {
            inner,
            path: path.to_path_buf(),
            keys: keys.clone(),
            aead: std::sync::OnceLock::new(),
            file_id: [0; 16],
            geo: Geometry::of(layout),
            len: AtomicU64::new(0),
            fixed_len: std::sync::atomic::AtomicBool::new(true),
            tail: Mutex::new(None),
            last_read: Mutex::new(None),
            stored: std::sync::OnceLock::new(),
        }
    }

    fn create(
        inner: Box<dyn VfsFile>,
        path: &Path,
        keys: &Arc<KeyState>,
        head: &Aead,
        layout: Layout,
    ) -> io::Result<EncFile> {
        let f = EncFile::blank(inner, path, keys, layout);
        f.write_header(head)
    }

    fn new_empty(
        inner: Box<dyn VfsFile>,
        path: &Path,
        keys: &Arc<KeyState>,
        mode: OpenAs,
    ) -> io::Result<EncFile> {
        let f = EncFile::blank(inner, path, keys, Layout::Blocks);
        if mode == OpenAs::Write {
            let head = keys
                .writer_key()
                .map_err(|e| io::Error::other(e.to_string()))?;
            return f.write_header(&head);
        }
        Ok(f)
    }

    /// Give the file a new data key and id, and write its header.
    fn write_header(mut self, head: &Aead) -> io::Result<EncFile> {
        let data_key = crate::crypto::random_key()?;
        crate::crypto::random(&mut self.file_id)?;
        let h = header_bytes(&self.keys, head, &self.file_id, &data_key, self.geo.layout);
        self.inner.write_at(&h, 0)?;
        let _ = self
            .aead
            .set(Arc::new(Aead::new(self.keys.cipher(), &data_key)));
        Ok(self)
    }

    fn open(
        inner: Box<dyn VfsFile>,
        path: &Path,
        keys: &Arc<KeyState>,
        header: Header,
        phys: u64,
        mode: OpenAs,
    ) -> io::Result<EncFile> {
        let Header {
            aead,
            file_id,
            layout,
        } = header;
        let geo = Geometry::of(layout);
        let f = EncFile {
            inner,
            path: path.to_path_buf(),
            keys: keys.clone(),
            aead: std::sync::OnceLock::from(aead),
            file_id,
            geo,
            len: AtomicU64::new(geo.logical_len(phys)),
            fixed_len: std::sync::atomic::AtomicBool::new(mode == OpenAs::Write),
            tail: Mutex::new(None),
            last_read: Mutex::new(None),
            stored: std::sync::OnceLock::new(),
        };
        if mode != OpenAs::Read {
            f.check_tail(phys, mode)?;
        }
        Ok(f)
    }

    /// For logs and writers: a last block that does not authenticate was torn by a
    /// crash; the file ends before it (a writer cuts it off, and any fragment after
    /// the last whole block). A paged file keeps its whole pages, torn or not: each
    /// is sealed on its own and written whole, and one torn by a crash is a page its
    /// owner had not published (and rewrites whole before using); only a fragment
    /// after the last whole page is cut.
    fn check_tail(&self, phys: u64, mode: OpenAs) -> io::Result<()> {
        let len = self.len.load(Ordering::Acquire);
        let mut keep = len;
        if self.geo.layout == Layout::Pages {
            keep = len - len % self.geo.data;
        } else if len > 0 {
            let last = (len - 1) / self.geo.data;
            match self.read_block(last, len) {
                Ok(data) => {
                    if !len.is_multiple_of(self.geo.data) {
                        *self.tail.lock() = Some(Tail {
                            block: last,
                            data,
                            pending: false,
                        });
                    }
                }
                Err(e) if AuthFailure::find(&e).is_some() => {
                    tracing::warn!(path = %self.path.display(), block = last,
                        "last encrypted block does not authenticate: a torn write; the file ends before it");
                    keep = last * self.geo.data;
                    self.fixed_len.store(true, Ordering::Release);
                }
                Err(e) => return Err(e),
            }
        }
        self.len.store(keep, Ordering::Release);
        if mode == OpenAs::Write && self.geo.physical_len(keep) != phys {
            self.inner.set_len(self.geo.physical_len(keep))?;
        }
        Ok(())
    }

    /// The current logical length; `need`: a length that makes asking the file
    /// unnecessary (reads of an immutable file then make no `fstat` each).
    fn current_len(&self, need: u64) -> u64 {
        if !self.fixed_len.load(Ordering::Acquire)
            && self.len.load(Ordering::Acquire) < need.max(1)
            && let Ok(phys) = self.inner.len()
        {
            self.len
                .store(self.geo.logical_len(phys), Ordering::Release);
        }
        self.len.load(Ordering::Acquire)
    }

    /// The data key (a headerless empty file has none: nothing to read).
    fn aead(&self) -> io::Result<&Aead> {
        self.aead
            .get()
            .map(|a| &**a)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    /// Seal `plain` as block `b` onto the end of `out` (nonce | ciphertext | tag).
    fn seal_block(&self, aead: &Aead, out: &mut Vec<u8>, plain: &[u8], b: u64) {
        let nonce = self.keys.next_nonce();
        let at = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = aead.seal(&nonce, &self.aad(b), &mut out[at + NONCE_LEN..]);
        out.extend_from_slice(&tag);
    }

    fn aad(&self, block: u64) -> [u8; 24] {
        let mut a = [0u8; 24];
        a[..16].copy_from_slice(&self.file_id);
        a[16..].copy_from_slice(&block.to_le_bytes());
        a
    }

    /// Bytes of plaintext in `block` of a file of `len` bytes.
    fn block_len(&self, block: u64, len: u64) -> u64 {
        (len - block * self.geo.data).min(self.geo.data)
    }

    /// Open one sealed block in place (`raw` = nonce | ciphertext | tag); returns the
    /// plaintext range of `raw`.
    fn open_block(&self, aead: &Aead, block: u64, raw: &mut [u8]) -> io::Result<()> {
        let n = raw.len() - TAG_LEN;
        let nonce: [u8; NONCE_LEN] = raw[..NONCE_LEN].try_into().unwrap_or_default();
        let tag: [u8; TAG_LEN] = raw[n..].try_into().unwrap_or_default();
        if aead.open(&nonce, &self.aad(block), &mut raw[NONCE_LEN..n], &tag) {
            Ok(())
        } else {
            Err(AuthFailure::io(
                &self.path,
                block * self.geo.data,
                format!(
                    "encrypted block {block} failed authentication (damaged, torn, \
                     moved, or written under another key)"
                ),
            ))
        }
    }

    /// The plaintext of one block of a file of `len` bytes.
    fn read_block(&self, block: u64, len: u64) -> io::Result<Vec<u8>> {
        let aead = self.aead()?;
        let n = self.block_len(block, len);
        let mut raw = vec![0u8; (n + OVERHEAD) as usize];
        self.inner
            .read_at(&mut raw, HEADER_LEN + block * self.geo.phys)?;
        self.open_block(aead, block, &mut raw)?;
        raw.truncate(NONCE_LEN + n as usize);
        raw.drain(..NONCE_LEN);
        Ok(raw)
    }

    /// Copy the part of block `b` (plaintext `plain`, starting at logical `bstart`)
    /// that `[offset, offset + buf.len())` covers into `buf`.
    fn copy_part(buf: &mut [u8], offset: u64, bstart: u64, plain: &[u8]) {
        let end = offset + buf.len() as u64;
        let from = offset.max(bstart);
        let to = end.min(bstart + plain.len() as u64);
        buf[(from - offset) as usize..(to - offset) as usize]
            .copy_from_slice(&plain[(from - bstart) as usize..(to - bstart) as usize]);
    }

    fn read_range(&self, buf: &mut [u8], offset: u64, len: u64) -> io::Result<()> {
        let aead = self.aead()?;
        let end = offset + buf.len() as u64;
        let (mut first, mut last) = (offset / self.geo.data, (end - 1) / self.geo.data);
        // A block shared with the previous read (sequential reads of 4 KiB table blocks
        // straddle two encrypted blocks each) is decrypted once, not twice.
        let cache = !self.fixed_len.load(Ordering::Relaxed);
        if cache
            && let Some(cache) = self.last_read.try_lock()
            && let Some((cb, plain)) = cache.as_ref()
            && (*cb == first || *cb == last)
        {
            let n = self.block_len(*cb, len) as usize;
            if plain.len() == n {
                if *cb == first {
                    Self::copy_part(buf, offset, first * self.geo.data, plain);
                    if first == last {
                        return Ok(());
                    }
                    first += 1;
                } else if *cb == last && last > first {
                    Self::copy_part(buf, offset, last * self.geo.data, plain);
                    last -= 1;
                }
            }
        }
        // Read and open the blocks in pieces through one reused buffer.
        let piece_blocks: u64 = (SCRATCH_BYTES as u64) / self.geo.phys;
        SCRATCH.with_borrow_mut(|raw| -> io::Result<()> {
            let mut lo = first;
            while lo <= last {
                let hi = last.min(lo + piece_blocks - 1);
                let phys_start = HEADER_LEN + lo * self.geo.phys;
                let phys_end = HEADER_LEN + hi * self.geo.phys + self.block_len(hi, len) + OVERHEAD;
                raw.resize((phys_end - phys_start) as usize, 0);
                self.read_stored(raw, phys_start)?;
                for b in lo..=hi {
                    let n = self.block_len(b, len);
                    let at = ((b - lo) * self.geo.phys) as usize;
                    let sealed = &mut raw[at..at + (n + OVERHEAD) as usize];
                    self.open_block(aead, b, sealed)?;
                    let plain = &sealed[NONCE_LEN..NONCE_LEN + n as usize];
                    Self::copy_part(buf, offset, b * self.geo.data, plain);
                    if b == last
                        && cache
                        && let Some(mut c) = self.last_read.try_lock()
                    {
                        match c.as_mut() {
                            Some((cb, v)) => {
                                *cb = b;
                                v.clear();
                                v.extend_from_slice(plain);
                            }
                            None => *c = Some((b, plain.to_vec())),
                        }
                    }
                }
                lo = hi + 1;
            }
            Ok(())
        })
    }

    /// Stored bytes at `phys`, from the map if the file has one.
    fn read_stored(&self, raw: &mut [u8], phys: u64) -> io::Result<()> {
        let Some(map) = self.stored.get() else {
            return self.inner.read_at(raw, phys);
        };
        let at = phys as usize;
        match map.get(at..at + raw.len()) {
            Some(src) => {
                raw.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of {}", self.path.display()),
            )),
        }
    }

    /// Write `data` at `offset` (at most the current length: callers fill gaps),
    /// resealing every block it touches.
    fn write_locked(&self, tail: &mut Option<Tail>, data: &[u8], offset: u64) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let aead = self.aead()?;
        let len = self.len.load(Ordering::Acquire);
        let end = offset + data.len() as u64;
        let new_len = len.max(end);
        let (first, last) = (offset / self.geo.data, (end - 1) / self.geo.data);
        let mut out = Vec::with_capacity(((last - first + 1) * self.geo.phys) as usize);
        let tail_block = (new_len - 1) / self.geo.data;
        let mut new_tail = None;
        for b in first..=last {
            let bstart = b * self.geo.data;
            let old_n = if bstart < len {
                self.block_len(b, len)
            } else {
                0
            };
            let new_n = self.block_len(b, new_len);
            let from = offset.max(bstart);
            let to = end.min(bstart + self.geo.data);
            // The block's old bytes, where the write does not cover them.
            let mut plain = if old_n > 0 && (from > bstart || to < bstart + old_n) {
                match tail.as_ref() {
                    Some(t) if t.block == b => t.data.clone(),
                    _ => self.read_block(b, len)?,
                }
            } else {
                Vec::new()
            };
            plain.resize(new_n as usize, 0);
            plain[(from - bstart) as usize..(to - bstart) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            self.seal_block(aead, &mut out, &plain, b);
            if b == tail_block {
                new_tail = Some(plain);
            }
            // Blocks before the last are full: no padding needed.
        }
        self.inner
            .write_at(&out, HEADER_LEN + first * self.geo.phys)?;
        if new_len.is_multiple_of(self.geo.data) {
            *tail = None;
        } else if let Some(data) = new_tail {
            *tail = Some(Tail {
                block: tail_block,
                data,
                pending: false,
            });
        }
        self.len.store(new_len, Ordering::Release);
        Ok(())
    }

    /// Append `data` at the end, sealing only blocks it fills; the partial rest stays
    /// in `tail`, pending.
    fn append_buffered(&self, tail: &mut Option<Tail>, data: &[u8]) -> io::Result<()> {
        let len = self.len.load(Ordering::Acquire);
        let tb = len / self.geo.data;
        let partial = (len % self.geo.data) as usize;
        let cached = tail
            .as_ref()
            .is_some_and(|t| t.block == tb && t.data.len() == partial);
        if partial > 0 && !cached {
            self.flush_tail(tail)?;
            return self.write_locked(tail, data, len);
        }
        let aead = self.aead()?;
        let mut head = match tail.take() {
            Some(t) if t.block == tb => t.data,
            _ => Vec::new(),
        };
        let mut rest = data;
        let mut block = tb;
        if !head.is_empty() {
            let need = self.geo.data as usize - head.len();
            if rest.len() < need {
                head.extend_from_slice(rest);
                *tail = Some(Tail {
                    block,
                    data: head,
                    pending: true,
                });
                self.len.store(len + data.len() as u64, Ordering::Release);
                return Ok(());
            }
            head.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
        }
        // Seal whole blocks straight from `data`, written in pieces through one
        // reused buffer (no copy of the whole write, no fresh pages per call).
        SCRATCH.with_borrow_mut(|out| -> io::Result<()> {
            out.clear();
            let mut at_phys = HEADER_LEN + tb * self.geo.phys;
            if !head.is_empty() {
                self.seal_block(aead, out, &head, block);
                block += 1;
            }
            while rest.len() >= self.geo.data as usize {
                let (piece, more) = rest.split_at(self.geo.data as usize);
                self.seal_block(aead, out, piece, block);
                block += 1;
                rest = more;
                if out.len() >= SCRATCH_BYTES {
                    self.inner.write_at(out, at_phys)?;
                    at_phys += out.len() as u64;
                    out.clear();
                }
            }
            if !out.is_empty() {
                self.inner.write_at(out, at_phys)?;
                out.clear();
            }
            Ok(())
        })?;
        *tail = (!rest.is_empty()).then(|| Tail {
            block,
            data: rest.to_vec(),
            pending: true,
        });
        self.len.store(len + data.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Write a pending last block.
    fn flush_tail(&self, tail: &mut Option<Tail>) -> io::Result<()> {
        let Some(t) = tail.as_mut().filter(|t| t.pending) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(t.data.len() + OVERHEAD as usize);
        self.seal_block(self.aead()?, &mut out, &t.data, t.block);
        self.inner
            .write_at(&out, HEADER_LEN + t.block * self.geo.phys)?;
        t.pending = false;
        Ok(())
    }

    fn ensure_header(&self) -> io::Result<()> {
        if self.aead.get().is_some() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{}: encrypted file has no header",
            self.path.display()
        )))
    }
}

impl Drop for EncFile {
    /// A pending last block reaches the file (as a plaintext write would have);
    /// durability still needs `sync_data`, which reports errors.
    fn drop(&mut self) {
        let mut tail = self.tail.get_mut().take();
        if let Err(e) = self.flush_tail(&mut tail) {
            tracing::warn!(path = %self.path.display(), error = %e, "writing the last encrypted block on close failed");
        }
    }
}

impl VfsFile for EncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        // Only a writer handle (`fixed_len`) can hold a pending last block.
        if self.fixed_len.load(Ordering::Relaxed) {
            let mut tail = self.tail.lock();
            if tail.as_ref().is_some_and(|t| t.pending) {
                self.flush_tail(&mut tail)?;
            }
        }
        // A writer in this process may be resealing the last block while it is read
        // (a backup copying the live WAL): a failure there is retried with the new
        // length before it is believed.
        let mut tries = 0;
        loop {
            let len = self.current_len(if tries == 0 {
                offset + buf.len() as u64
            } else {
                u64::MAX
            });
            if offset + buf.len() as u64 > len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read past the end of {}", self.path.display()),
                ));
            }
            match self.read_range(buf, offset, len) {
                Err(e) if tries < 3 && AuthFailure::find(&e).is_some() => {
                    tries += 1;
                    std::thread::yield_now();
                }
                r => return r,
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.ensure_header()?;
        let mut tail = self.tail.lock();
        let len = self.len.load(Ordering::Acquire);
        if offset == len {
            return self.append_buffered(&mut tail, buf);
        }
        self.flush_tail(&mut tail)?;
        if offset > len {
            let zeros = vec![0u8; (offset - len) as usize];
            self.write_locked(&mut tail, &zeros, len)?;
        }
        self.write_locked(&mut tail, buf, offset)
    }

    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.ensure_header()?;
        let mut tail = self.tail.lock();
        self.append_buffered(&mut tail, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.flush_tail(&mut self.tail.lock())?;
        self.inner.sync_data()
    }

    fn set_len(&self, new: u64) -> io::Result<()> {
        self.ensure_header()?;
        let mut tail = self.tail.lock();
        self.flush_tail(&mut tail)?;
        let len = self.len.load(Ordering::Acquire);
        if new >= len {
            let zeros = vec![0u8; (new - len) as usize];
            return self.write_locked(&mut tail, &zeros, len);
        }
        let keep = new % self.geo.data;
        let block = new / self.geo.data;
        let mut last = None;
        if keep > 0 {
            let mut plain = match tail.as_ref() {
                Some(t) if t.block == block => t.data.clone(),
                _ => self.read_block(block, len)?,
            };
            plain.truncate(keep as usize);
            last = Some(plain);
        }
        *tail = None;
        self.inner.set_len(HEADER_LEN + block * self.geo.phys)?;
        self.len.store(block * self.geo.data, Ordering::Release);
        if let Some(plain) = last {
            self.write_locked(&mut tail, &plain, block * self.geo.data)?;
        }
        Ok(())
    }

    fn allocate(&self, _len: u64) -> io::Result<()> {
        // Preallocated zeros would not authenticate; logs grow by appends.
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.current_len(u64::MAX))
    }

    fn map_stored(&self) -> io::Result<bool> {
        if self.stored.get().is_some() {
            return Ok(true);
        }
        // Only a read handle maps; a writer's blocks change under it.
        if self.fixed_len.load(Ordering::Acquire) || self.aead.get().is_none() {
            return Ok(false);
        }
        // A read handle's length is the file's when it opened; the caller promises the
        // file no longer changes, so the map holds exactly those bytes.
        let Some(map) = self.inner.map()? else {
            return Ok(false);
        };
        let _ = self.stored.set(map);
        Ok(true)
    }

    fn will_need(&self, offset: u64, len: u64) {
        let first = offset / self.geo.data;
        let last = (offset + len).div_ceil(self.geo.data);
        self.inner.will_need(
            HEADER_LEN + first * self.geo.phys,
            (last - first) * self.geo.phys,
        );
    }
}

#[cfg(test)]
#[path = "encrypted_tests.rs"]
mod tests;
