//! Encrypted logs (WAL, manifest): append-only chunks, so no byte that was synced is
//! ever rewritten.
//!
//! After the 4 KiB header (layout byte = 1), each write is one or more chunks:
//!
//! ```text
//! len u32 | offset u64 (logical, of the chunk's first byte) | CRC32C u32 of the 12 bytes
//! | nonce [12] | ciphertext [len] | tag [16]        associated data: file id | offset | len
//! ```
//!
//! Resealing the last block in place (the block layout) would put acknowledged commits
//! at the mercy of a torn overwrite; a chunk is only ever appended, as a plaintext log
//! record is. Reading keeps the log's own rules in charge: a chunk cut short at the end
//! ends the file (a torn append); a chunk that fails to authenticate, or bytes whose
//! chunk header is damaged (the reader finds the next valid header, as the log framing
//! finds the next record), read as `0xFF` bytes, which no log record accepts, so the
//! log framing tells a torn tail (nothing durable after it) from damage to durable
//! records (an error), exactly as without encryption.

use super::VfsFile;
use super::encrypted::{HEADER_LEN, SEAL_OVERHEAD};
use super::encrypted_header::{Header, Layout, header_bytes};
use crate::crypto::{Aead, AuthFailure, KeyState, NONCE_LEN, TAG_LEN};
use parking_lot::Mutex;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of a chunk's length, offset and CRC.
const CHUNK_HEAD: u64 = 16;
/// Bytes a chunk adds to its plaintext.
const CHUNK_OVERHEAD: u64 = CHUNK_HEAD + SEAL_OVERHEAD;
/// Largest chunk: a bigger write becomes several.
const MAX_CHUNK: usize = 1 << 20;
/// What a damaged stretch of a log reads as.
const DAMAGED: u8 = 0xFF;

#[derive(Clone, Copy, Debug)]
struct Chunk {
    /// Logical offset of the first byte.
    logical: u64,
    /// Physical offset of the chunk header (of the damaged stretch if `!ok`).
    phys: u64,
    len: u64,
    /// False: the bytes did not authenticate (or were not a chunk) and read as
    /// [`DAMAGED`].
    ok: bool,
}

struct State {
    chunks: Vec<Chunk>,
    /// Physical end of the last parsed chunk.
    phys_end: u64,
    /// Logical length.
    len: u64,
}

pub(super) struct LogFile {
    inner: Box<dyn VfsFile>,
    path: PathBuf,
    keys: Arc<KeyState>,
    aead: Arc<Aead>,
    file_id: [u8; 16],
    writer: bool,
    st: Mutex<State>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn aad(file_id: &[u8; 16], logical: u64, len: u64) -> [u8; 28] {
    let mut a = [0u8; 28];
    a[..16].copy_from_slice(file_id);
    a[16..24].copy_from_slice(&logical.to_le_bytes());
    a[24..].copy_from_slice(&(len as u32).to_le_bytes());
    a
}

impl LogFile {
    pub(super) fn create(
        inner: Box<dyn VfsFile>,
        path: &Path,
        keys: &Arc<KeyState>,
        head: &Aead,
    ) -> io::Result<LogFile> {
        let data_key = crate::crypto::random_key()?;
        let mut file_id = [0u8; 16];
        crate::crypto::random(&mut file_id)?;
        let h = header_bytes(keys, head, &file_id, &data_key, Layout::Chunks);
        inner.write_at(&h, 0)?;
        Ok(LogFile {
            inner,
            path: path.to_path_buf(),
            keys: keys.clone(),
            aead: Arc::new(Aead::new(keys.cipher(), &data_key)),
            file_id,
            writer: true,
            st: Mutex::new(State {
                chunks: Vec::new(),
                phys_end: HEADER_LEN,
                len: 0,
            }),
        })
    }

    pub(super) fn open(
        inner: Box<dyn VfsFile>,
        path: &Path,
        keys: &Arc<KeyState>,
        header: Header,
        writer: bool,
    ) -> io::Result<LogFile> {
        let f = LogFile {
            inner,
            path: path.to_path_buf(),
            keys: keys.clone(),
            aead: header.aead,
            file_id: header.file_id,
            writer,
            st: Mutex::new(State {
                chunks: Vec::new(),
                phys_end: HEADER_LEN,
                len: 0,
            }),
        };
        {
            let mut st = f.st.lock();
            f.parse(&mut st)?;
            if writer {
                // A torn append after the last whole chunk goes.
                if f.inner.len()? != st.phys_end {
                    f.inner.set_len(st.phys_end)?;
                }
            }
        }
        Ok(f)
    }

    /// Open one chunk in place: `raw` = header | nonce | ciphertext | tag.
    fn open_chunk(&self, logical: u64, raw: &mut [u8]) -> bool {
        let len = raw.len() as u64 - CHUNK_OVERHEAD;
        let h = CHUNK_HEAD as usize;
        let nonce: [u8; NONCE_LEN] = raw[h..h + NONCE_LEN].try_into().unwrap_or_default();
        let n = raw.len() - TAG_LEN;
        let tag: [u8; TAG_LEN] = raw[n..].try_into().unwrap_or_default();
        self.aead.open(
            &nonce,
            &aad(&self.file_id, logical, len),
            &mut raw[h + NONCE_LEN..n],
            &tag,
        )
    }

    /// A chunk header at `p` of `buf` (physical offset `base`) that is whole and
    /// names logical offset `at`: its length.
    fn header_at(buf: &[u8], p: usize, at: Option<u64>) -> Option<(u64, u64)> {
        let h = buf.get(p..p + CHUNK_HEAD as usize)?;
        let len = u32::from_le_bytes(h[..4].try_into().ok()?) as u64;
        let logical = u64::from_le_bytes(h[4..12].try_into().ok()?);
        let crc = u32::from_le_bytes(h[12..16].try_into().ok()?);
        if crc32c::crc32c(&h[..12]) != crc || at.is_some_and(|a| a != logical) {
            return None;
        }
        Some((len, logical))
    }

    /// Parse the chunks written since the last parse (all of them for a new handle).
    fn parse(&self, st: &mut State) -> io::Result<()> {
        let phys = self.inner.len()?;
        if phys <= st.phys_end {
            return Ok(());
        }
        let mut buf = vec![0u8; (phys - st.phys_end) as usize];
        self.inner.read_at(&mut buf, st.phys_end)?;
        let base = st.phys_end;
        let mut p = 0usize;
        while p < buf.len() {
            if buf[p..].iter().all(|&b| b == 0) {
                break; // preallocated space never written: the clean end
            }
            let whole = |len: u64, p: usize| p as u64 + CHUNK_OVERHEAD + len <= buf.len() as u64;
            match Self::header_at(&buf, p, Some(st.len)) {
                Some((len, _)) if !whole(len, p) => break, // a torn append: the end
                Some((len, logical)) => {
                    let end = p + (CHUNK_OVERHEAD + len) as usize;
                    let ok = self.open_chunk(logical, &mut buf[p..end]);
                    st.chunks.push(Chunk {
                        logical,
                        phys: base + p as u64,
                        len,
                        ok,
                    });
                    st.len += len;
                    p = end;
                    st.phys_end = base + p as u64;
                }
                None => {
                    // Damaged (or torn) bytes: the next whole chunk that authenticates
                    // and continues the log after them, if any.
                    let mut q = p + 1;
                    let mut found = None;
                    while q + CHUNK_OVERHEAD as usize <= buf.len() {
                        if let Some((len, logical)) = Self::header_at(&buf, q, None)
                            && logical > st.len
                            && whole(len, q)
                        {
                            let end = q + (CHUNK_OVERHEAD + len) as usize;
                            let mut copy = buf[q..end].to_vec();
                            if self.open_chunk(logical, &mut copy) {
                                found = Some((q, logical));
                                break;
                            }
                        }
                        q += 1;
                    }
                    let Some((q, logical)) = found else {
                        break; // nothing valid after: a torn tail
                    };
                    st.chunks.push(Chunk {
                        logical: st.len,
                        phys: base + p as u64,
                        len: logical - st.len,
                        ok: false,
                    });
                    st.len = logical;
                    p = q;
                    st.phys_end = base + p as u64;
                }
            }
        }
        Ok(())
    }

    /// Copy logical `[offset, offset + buf.len())` out of the parsed chunks.
    fn read_parsed(&self, st: &State, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let first = st.chunks.partition_point(|c| c.logical + c.len <= offset);
        let mut i = first;
        while i < st.chunks.len() && st.chunks[i].logical < end {
            // One read for a run of chunks.
            let c = st.chunks[i];
            let next = st.chunks.get(i + 1).map_or(st.phys_end, |n| n.phys);
            let from = offset.max(c.logical);
            let to = end.min(c.logical + c.len);
            let out = &mut buf[(from - offset) as usize..(to - offset) as usize];
            if !c.ok {
                out.fill(DAMAGED);
            } else {
                let mut raw = vec![0u8; (next - c.phys) as usize];
                self.inner.read_at(&mut raw, c.phys)?;
                if !self.open_chunk(c.logical, &mut raw) {
                    return Err(AuthFailure::io(
                        &self.path,
                        c.logical,
                        "encrypted log chunk changed since it was read",
                    ));
                }
                let at = (CHUNK_HEAD as usize) + NONCE_LEN;
                let plain = &raw[at..at + c.len as usize];
                out.copy_from_slice(&plain[(from - c.logical) as usize..(to - c.logical) as usize]);
            }
            i += 1;
        }
        Ok(())
    }

    fn append_locked(&self, st: &mut State, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(data.len() + CHUNK_OVERHEAD as usize);
        let mut added = Vec::new();
        let (mut logical, mut phys) = (st.len, st.phys_end);
        for piece in data.chunks(MAX_CHUNK) {
            let len = piece.len() as u64;
            let at = out.len();
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&logical.to_le_bytes());
            let crc = crc32c::crc32c(&out[at..at + 12]);
            out.extend_from_slice(&crc.to_le_bytes());
            let nonce = self.keys.next_nonce();
            out.extend_from_slice(&nonce);
            let ct = out.len();
            out.extend_from_slice(piece);
            let tag = self
                .aead
                .seal(&nonce, &aad(&self.file_id, logical, len), &mut out[ct..]);
            out.extend_from_slice(&tag);
            added.push(Chunk {
                logical,
                phys,
                len,
                ok: true,
            });
            logical += len;
            phys += CHUNK_OVERHEAD + len;
        }
        self.inner.write_at(&out, st.phys_end)?;
        st.chunks.extend(added);
        st.len = logical;
        st.phys_end = phys;
        Ok(())
    }
}

impl VfsFile for LogFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut st = self.st.lock();
        if !self.writer && offset + buf.len() as u64 > st.len {
            self.parse(&mut st)?;
        }
        if offset + buf.len() as u64 > st.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of {}", self.path.display()),
            ));
        }
        self.read_parsed(&st, buf, offset)
    }

    /// Logs are append-only: a write must start at the end (or before it, over bytes
    /// that are the same, which never happens).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.st.lock();
        if offset != st.len {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: an encrypted log is written at its end ({}), not at {offset}",
                    self.path.display(),
                    st.len
                ),
            ));
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.append_locked(&mut st, buf)
    }

    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.st.lock();
        if buf.is_empty() {
            return Ok(());
        }
        self.append_locked(&mut st, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    /// Cut the log at `new` (a whole record's end): chunks after it go; a chunk it
    /// falls inside is resealed with its first part (a new chunk in its place).
    fn set_len(&self, new: u64) -> io::Result<()> {
        let mut st = self.st.lock();
        if new == st.len {
            // Also drops preallocated space after the end.
            if self.inner.len()? != st.phys_end {
                self.inner.set_len(st.phys_end)?;
            }
            return Ok(());
        }
        if new > st.len {
            let zeros = vec![0u8; (new - st.len) as usize];
            return self.append_locked(&mut st, &zeros);
        }
        let i = st.chunks.partition_point(|c| c.logical + c.len <= new);
        let mut keep = Vec::new();
        if let Some(c) = st.chunks.get(i).copied()
            && new > c.logical
        {
            keep = vec![0u8; (new - c.logical) as usize];
            self.read_parsed(&st, &mut keep, c.logical)?;
        }
        let cut = st.chunks.get(i).map_or(st.phys_end, |c| c.phys);
        st.chunks.truncate(i);
        st.len = st.chunks.last().map_or(0, |c| c.logical + c.len);
        st.phys_end = cut;
        self.inner.set_len(cut)?;
        if !keep.is_empty() {
            self.append_locked(&mut st, &keep)?;
        }
        Ok(())
    }

    /// Reserve disk ahead of the end (the WAL preallocates so an fdatasync has no
    /// file size to commit): room for `len` bytes of plaintext in chunks of at least
    /// 44 bytes each. The zeros read back as the end of the log.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let st = self.st.lock();
        let want = HEADER_LEN + len.saturating_mul(2);
        if want > st.phys_end {
            self.inner.allocate(want)?;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.st.lock();
        if !self.writer {
            self.parse(&mut st)?;
        }
        Ok(st.len)
    }
}

#[cfg(test)]
mod tests {
    use crate::crypto::{Cipher, EncryptionConfig, KeyProvider, KeyState};
    use crate::vfs::{EncryptedVfs, StdVfs, Vfs};
    use std::path::Path;
    use std::sync::Arc;

    fn vfs(dir: &Path) -> EncryptedVfs {
        let inner: Arc<dyn Vfs> = Arc::new(StdVfs);
        let keys = Arc::new(KeyState::new(
            inner.clone(),
            dir,
            &EncryptionConfig::new(Cipher::Aes256Gcm, KeyProvider::raw([9; 32])),
        ));
        EncryptedVfs::new(inner, keys)
    }

    fn read(v: &EncryptedVfs, p: &Path) -> Vec<u8> {
        let f = v.open_log(p).unwrap();
        let mut b = vec![0u8; f.len().unwrap() as usize];
        f.read_at(&mut b, 0).unwrap();
        b
    }

    #[test]
    fn appends_read_back_and_truncation_reseals() {
        let d = tempfile::tempdir().unwrap();
        let v = vfs(d.path());
        let p = d.path().join("000001.log");
        let f = v.create_log(&p).unwrap();
        let mut model = Vec::new();
        for i in 0..200u32 {
            let rec = vec![i as u8; (i as usize * 13) % 300 + 1];
            f.append(&rec).unwrap();
            model.extend_from_slice(&rec);
        }
        // A reader sees appends made after it opened.
        let r = v.open_log(&p).unwrap();
        f.allocate(100_000).unwrap();
        f.append(b"late").unwrap();
        model.extend_from_slice(b"late");
        assert_eq!(r.len().unwrap(), model.len() as u64);
        drop(f);
        assert_eq!(read(&v, &p), model);
        let w = v.open_rw(&p).unwrap();
        w.set_len(1000).unwrap();
        w.append(b"after").unwrap();
        drop(w);
        model.truncate(1000);
        model.extend_from_slice(b"after");
        assert_eq!(read(&v, &p), model);
        assert!(!std::fs::read(&p).unwrap().windows(5).any(|w| w == b"after"));
    }

    #[test]
    fn a_torn_append_ends_the_log_and_damage_reads_as_ff() {
        let d = tempfile::tempdir().unwrap();
        let v = vfs(d.path());
        let p = d.path().join("000001.log");
        let f = v.create_log(&p).unwrap();
        for i in 0..3u8 {
            f.append(&[i + 1; 100]).unwrap();
        }
        drop(f);
        let raw = std::fs::read(&p).unwrap();
        // Torn: the last chunk cut short.
        std::fs::write(&p, &raw[..raw.len() - 10]).unwrap();
        assert_eq!(read(&v, &p), [[1u8; 100], [2; 100]].concat());
        // Damage inside the middle chunk: it reads as 0xFF, the rest is intact.
        let mut b = raw.clone();
        b[4096 + 144 + 60] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert_eq!(read(&v, &p), [[1u8; 100], [0xFF; 100], [3; 100]].concat());
        // Damage to a chunk header: found again after it.
        let mut b = raw.clone();
        b[4096 + 144 + 2] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert_eq!(read(&v, &p), [[1u8; 100], [0xFF; 100], [3; 100]].concat());
    }
}
