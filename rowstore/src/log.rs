//! Checksummed record logs, shared by the WAL and the manifest.
//!
//! File layout (see FORMAT.md):
//!
//! ```text
//! header v1: magic [8] | version u32 | crc32c(magic, version) u32                    16 bytes
//! header v2: magic [8] | version u32 | salt u64 | crc32c(previous 20 bytes) u32      24 bytes
//! record v1: crc32c(len, marker, payload) u32 | len u32 | marker u8 (0xA7) | payload [len]
//! record v2: crc32c(salt, len, marker, synced, payload) u32 | len u32 | marker u8 (0xA7)
//!            | synced u64 | payload [len]
//! ```
//!
//! `synced` (v2) is how far the file was known to be durable (fsynced) when the record
//! was written. The random per-file salt keeps bytes inside a payload (user data) from
//! ever checking as a record.
//!
//! Recovery reads records up to the first invalid one, at offset `D`:
//! - nothing valid follows, or (v2) every valid record after `D` was written while the
//!   file was durable only up to `D` or less: the bytes at `D` were never made durable,
//!   so nothing from `D` on was acknowledged as durable. It is a torn tail, truncated at
//!   `D` (the valid records dropped with it are counted in the report). This covers a
//!   group commit whose write was torn by a power loss part-way through its sync;
//! - (v2) a valid record after `D` says the file was durable past `D`, or (v1) any valid
//!   record follows: bytes that had been made durable were damaged. Recovery stops with
//!   a `Corruption` error rather than silently dropping acknowledged records
//!   (`lightning-cli repair --truncate-wal` drops them on request, with a report).

use crate::error::{Error, Result};
use crate::format::LOG_VERSIONS;
use crate::vfs::{self, Vfs, VfsFile};
use std::path::{Path, PathBuf};

const HEADER_LEN_V1: usize = 16;
const HEADER_LEN_V2: usize = 24;
const RECORD_MARKER: u8 = 0xA7;
/// Largest record payload accepted (and written).
pub const MAX_RECORD_LEN: usize = u32::MAX as usize - 64;

fn header_len(version: u32) -> usize {
    if version >= 2 {
        HEADER_LEN_V2
    } else {
        HEADER_LEN_V1
    }
}

fn record_header_len(version: u32) -> usize {
    if version >= 2 { 17 } else { 9 }
}

fn header_bytes(magic: &[u8; 8], version: u32, salt: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN_V2);
    h.extend_from_slice(magic);
    h.extend_from_slice(&version.to_le_bytes());
    if version >= 2 {
        h.extend_from_slice(&salt.to_le_bytes());
    }
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn new_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// How records of one log file are framed: version and salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub version: u32,
    pub salt: u64,
}

impl Framing {
    fn crc(&self, body: &[u8]) -> u32 {
        if self.version >= 2 {
            crc32c::crc32c_append(crc32c::crc32c(&self.salt.to_le_bytes()), body)
        } else {
            crc32c::crc32c(body)
        }
    }

    /// Start a record in `buf`: reserves its header and returns where it begins.
    /// Append the payload, then call [`Framing::finish_record`].
    pub fn begin_record(&self, buf: &mut Vec<u8>) -> usize {
        let start = buf.len();
        buf.resize(start + record_header_len(self.version), 0);
        start
    }

    /// Finish the record begun at `start`: fill in its length, `synced` and checksum.
    pub fn finish_record(&self, buf: &mut [u8], start: usize, synced: u64) {
        let hl = record_header_len(self.version);
        let len = buf.len() - start - hl;
        debug_assert!(len <= MAX_RECORD_LEN);
        buf[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
        buf[start + 8] = RECORD_MARKER;
        if self.version >= 2 {
            buf[start + 9..start + 17].copy_from_slice(&synced.to_le_bytes());
        }
        let crc = self.crc(&buf[start + 4..]);
        buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Frame one record into `buf`.
    pub fn frame(&self, buf: &mut Vec<u8>, payload: &[u8], synced: u64) {
        let start = self.begin_record(buf);
        buf.extend_from_slice(payload);
        self.finish_record(buf, start, synced);
    }

    /// If a valid record starts at `pos`: (payload range, synced, end).
    fn check_at(&self, data: &[u8], pos: usize) -> Option<(std::ops::Range<usize>, u64, usize)> {
        let hl = record_header_len(self.version);
        if data.len() < pos.checked_add(hl)? {
            return None;
        }
        let crc = u32::from_le_bytes(data[pos..pos + 4].try_into().ok()?);
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().ok()?) as usize;
        if data[pos + 8] != RECORD_MARKER || len > data.len() - pos - hl {
            return None;
        }
        let synced = if self.version >= 2 {
            let s = u64::from_le_bytes(data[pos + 9..pos + 17].try_into().ok()?);
            // A record never claims durability beyond where it starts.
            if s > pos as u64 {
                return None;
            }
            s
        } else {
            0
        };
        let end = pos + hl + len;
        (self.crc(&data[pos + 4..end]) == crc).then_some((pos + hl..end, synced, end))
    }
}

/// An append-only log file.
pub struct LogWriter {
    file: std::sync::Arc<dyn VfsFile>,
    /// Zeroes the reserved space ahead of the end (see `log_zero`), when preallocating.
    pub(crate) zero: Option<crate::log_zero::ZeroAhead>,
    path: PathBuf,
    framing: Framing,
    len: u64,
    /// Bytes known durable (synced).
    synced: u64,
    /// File size reserved so far by `allocate` (0 when not preallocating).
    allocated: u64,
    /// Reserve up to this size, in `PREALLOC_STEP` steps ahead of the end of the log.
    prealloc_limit: u64,
    /// Writes padded so far (a figure for tests).
    pub(crate) padded: u64,
}

/// The page size `write_framed` pads to.
const LOG_PAGE: u64 = 4096;

/// How far ahead of the end of the log preallocation reserves space: far enough that
/// almost every fdatasync finds its blocks allocated, small enough that a small database
/// does not carry a memtable's worth of zeros on disk.
const PREALLOC_STEP: u64 = 4 << 20;

impl LogWriter {
    /// Create a new log with its header; the header is fsynced and so is the directory.
    pub fn create(vfs: &dyn Vfs, path: &Path, magic: &[u8; 8], version: u32) -> Result<Self> {
        let file = vfs::create_log(vfs, path)?;
        let framing = Framing {
            version,
            salt: if version >= 2 { new_salt() } else { 0 },
        };
        let h = header_bytes(magic, version, framing.salt);
        file.write_at(&h, 0)
            .map_err(|e| Error::io(format!("writing header of {}", path.display()), e))?;
        file.sync_data()
            .map_err(|e| Error::io(format!("fsync of {}", path.display()), e))?;
        vfs::sync_dir(vfs, vfs::parent_dir(path))?;
        Ok(LogWriter {
            file: file.into(),
            zero: None,
            path: path.to_path_buf(),
            framing,
            len: h.len() as u64,
            synced: h.len() as u64,
            allocated: 0,
            prealloc_limit: 0,
            padded: 0,
        })
    }

    /// Reserve disk for the log ahead of its end (fallocate, growing the file size), in
    /// steps of `PREALLOC_STEP` up to `bytes` in all. Appends then overwrite
    /// already-allocated blocks, so an fdatasync has no file size or extent metadata to
    /// commit: on ext4 this nearly halves its latency. The zeroed tail reads back as the
    /// end of the log. A file system that cannot preallocate is left to grow by appends.
    pub fn preallocate(&mut self, bytes: u64) {
        self.prealloc_limit = bytes;
        self.reserve(self.len);
        if self.allocated > 0 && self.zero.is_none() {
            self.zero = crate::log_zero::ZeroAhead::start(self.file.clone(), self.len);
            if let Some(z) = &self.zero {
                z.reserved(self.allocated);
            }
        }
    }

    /// Make sure the file is allocated past `end` (and a step beyond), within the limit.
    fn reserve(&mut self, end: u64) {
        // Half a step early, so the space past the end is reserved (and zeroed, see
        // `log_zero`) before the log reaches it.
        if end + PREALLOC_STEP / 2 < self.allocated || self.allocated >= self.prealloc_limit {
            return;
        }
        let target = (end + PREALLOC_STEP).min(self.prealloc_limit.max(end));
        match self.file.allocate(target) {
            Ok(()) => {
                self.allocated = target;
                if let Some(z) = &self.zero {
                    z.reserved(target);
                }
            }
            Err(_) => {
                tracing::debug!(path = %self.path.display(), "fallocate refused; log grows by appends");
                self.prealloc_limit = 0;
            }
        }
    }

    /// Reopen an existing, already validated log (`contents` from [`read_log`]) for
    /// appending after its valid records. The file is cut there and synced.
    pub fn open_append(vfs: &dyn Vfs, path: &Path, contents: &LogContents) -> Result<Self> {
        let file = vfs
            .open_rw(path)
            .map_err(|e| Error::io(format!("opening {} for append", path.display()), e))?;
        let len = contents.valid_len;
        file.set_len(len)
            .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        file.sync_data()
            .map_err(|e| Error::io(format!("fsync of {}", path.display()), e))?;
        Ok(LogWriter {
            file: file.into(),
            zero: None,
            path: path.to_path_buf(),
            framing: contents.framing,
            len,
            synced: len,
            allocated: 0,
            prealloc_limit: 0,
            padded: 0,
        })
    }

    /// The framing to build records for this log with ([`LogWriter::write_framed`]).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Write already-framed bytes (one or more whole records) with a single write.
    ///
    /// A write that reaches into a page it has not written before carries zeros to the
    /// end of that page, where the space past the end is zeroed on disk already (see
    /// `log_zero`): the page is then whole in the page cache, so neither this write nor
    /// the next ones into the page make the kernel read it from disk first. Writing part
    /// of a page that is not cached costs a synchronous read (~50 µs here) on the
    /// commit path, once per page the log enters. The zeros change no stored byte; they
    /// are appended to `framed` for the write and cut off again after it, so `framed`
    /// comes back as it was.
    pub fn write_framed(&mut self, framed: &mut Vec<u8>) -> Result<()> {
        let len = framed.len();
        let end = self.len + len as u64;
        if self.prealloc_limit > 0 {
            self.reserve(end);
        }
        let page_end = end.next_multiple_of(LOG_PAGE);
        let enters_page = len as u64 > self.len.next_multiple_of(LOG_PAGE) - self.len;
        let pad = enters_page
            && page_end > end
            && page_end <= self.allocated
            && self
                .zero
                .as_ref()
                .is_some_and(|z| z.zeroed_through(page_end));
        if let Some(z) = &self.zero {
            z.claim(self.len, if pad { page_end } else { end });
        }
        if pad {
            self.padded += 1;
            framed.resize((page_end - self.len) as usize, 0);
        }
        let written = self.file.write_at(framed, self.len);
        framed.truncate(len);
        written.map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))?;
        self.len = end;
        Ok(())
    }

    /// Frame and append one record (no sync).
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + 17);
        self.framing.frame(&mut buf, payload, self.synced);
        self.write_framed(&mut buf)
    }

    /// Cut the log back to `len` (the end of its last whole record) and make that
    /// durable: what a failed write left past it is gone.
    pub fn truncate_to(&mut self, len: u64) -> Result<()> {
        if let Some(z) = &self.zero {
            z.truncated(len);
        }
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(format!("truncating {}", self.path.display()), e))?;
        self.len = len;
        self.synced = self.synced.min(len);
        self.allocated = 0;
        Ok(())
    }

    /// fdatasync the log.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fsync of {}", self.path.display()), e))?;
        self.synced = self.len;
        Ok(())
    }

    /// Bytes of whole records written (the end of the log).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes known durable.
    pub fn synced_len(&self) -> u64 {
        self.synced
    }

    pub fn is_empty(&self) -> bool {
        self.len <= header_len(self.framing.version) as u64
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What was found at the end of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belonged to a valid record (or to never-written, zeroed space).
    Clean,
    /// An incomplete or damaged write starting at `offset`, `bytes` long (to the end of
    /// the file), never made durable. `dropped_records` valid records after it go with
    /// it (writes that were not durable either).
    Torn {
        offset: u64,
        bytes: u64,
        dropped_records: u64,
    },
}

/// The valid contents of a log.
#[derive(Debug)]
pub struct LogContents {
    pub framing: Framing,
    /// (file offset, payload) of every valid record, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Length of the valid prefix (where appending may continue).
    pub valid_len: u64,
    pub tail: Tail,
    /// Valid records after a torn tail, dropped with it (never durable).
    pub dropped: Vec<(u64, Vec<u8>)>,
}

/// Damage found in the middle of a log (bytes that had been durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the first damaged record starts.
    pub offset: u64,
    /// Valid records found after the damage, and the payloads' offsets.
    pub records_after: Vec<(u64, Vec<u8>)>,
    pub file_len: u64,
    /// How far a later record says the file was durable.
    pub durable_to: u64,
}

/// Either the valid contents or mid-log damage.
#[derive(Debug)]
pub enum Scan {
    Ok(LogContents),
    Damaged {
        contents: LogContents,
        damage: Damage,
    },
}

/// Read and validate a whole log. `magic` must match the header.
pub fn read_log(vfs: &dyn Vfs, path: &Path, magic: &[u8; 8]) -> Result<LogContents> {
    let data = vfs::read_log_file(vfs, path)?;
    read_log_bytes(path, &data, magic)
}

/// [`read_log`] over bytes already read.
pub fn read_log_bytes(path: &Path, data: &[u8], magic: &[u8; 8]) -> Result<LogContents> {
    match scan_log(path, data, magic)? {
        Scan::Ok(c) => Ok(c),
        Scan::Damaged { damage, .. } => Err(damage_error(path, &damage)),
    }
}

/// The error recovery reports for mid-log damage.
pub fn damage_error(path: &Path, d: &Damage) -> Error {
    Error::corruption(
        path,
        d.offset,
        format!(
            "damaged record followed by {} valid record(s); the log was durable up to \
             offset {} (run `lightning-cli repair --truncate-wal` to drop everything from \
             the damage on)",
            d.records_after.len(),
            d.durable_to
        ),
    )
}

/// Validate log bytes (see the module docs for the rules).
pub fn scan_log(path: &Path, data: &[u8], magic: &[u8; 8]) -> Result<Scan> {
    let torn_empty = |data: &[u8]| {
        Ok(Scan::Ok(LogContents {
            framing: Framing {
                version: *LOG_VERSIONS.end(),
                salt: 0,
            },
            records: Vec::new(),
            valid_len: 0,
            tail: Tail::Torn {
                offset: 0,
                bytes: data.len() as u64,
                dropped_records: 0,
            },
            dropped: Vec::new(),
        }))
    };
    if data.len() < 12 {
        // Created but the header never became durable: an empty, torn log.
        return torn_empty(data);
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let hl = header_len(version);
    let header_ok = &data[..8] == magic
        && data.len() >= hl
        && crc32c::crc32c(&data[..hl - 4])
            == u32::from_le_bytes(data[hl - 4..hl].try_into().expect("4 bytes"));
    if !header_ok {
        if data.iter().all(|&b| b == 0) {
            return torn_empty(data);
        }
        return Err(Error::corruption(
            path,
            0,
            "bad log header (magic or checksum)",
        ));
    }
    if !LOG_VERSIONS.contains(&version) {
        return Err(Error::corruption(
            path,
            8,
            format!(
                "unsupported log format version {version} (this build reads {}..={})",
                LOG_VERSIONS.start(),
                LOG_VERSIONS.end()
            ),
        ));
    }
    let framing = Framing {
        version,
        salt: if version >= 2 {
            u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"))
        } else {
            0
        },
    };
    let mut records = Vec::new();
    let mut pos = hl;
    while pos < data.len() {
        if let Some((body, _, end)) = framing.check_at(data, pos) {
            records.push((pos as u64, data[body].to_vec()));
            pos = end;
            continue;
        }
        if data[pos..].iter().all(|&b| b == 0) {
            // Preallocated space that was never written: the clean end of the log.
            break;
        }
        // Valid records after this point, following each chain of whole records.
        let mut after = Vec::new();
        let mut durable_to = 0u64;
        let mut p = pos + 1;
        while p + 9 <= data.len() {
            if data[p + 8] == RECORD_MARKER
                && let Some((body, synced, end)) = framing.check_at(data, p)
            {
                after.push((p as u64, data[body].to_vec()));
                durable_to = durable_to.max(synced);
                p = end;
            } else {
                p += 1;
            }
        }
        let mut contents = LogContents {
            framing,
            records,
            valid_len: pos as u64,
            tail: Tail::Torn {
                offset: pos as u64,
                bytes: (data.len() - pos) as u64,
                dropped_records: after.len() as u64,
            },
            dropped: Vec::new(),
        };
        let durable_damage = if version >= 2 {
            durable_to > pos as u64
        } else {
            !after.is_empty()
        };
        if durable_damage {
            return Ok(Scan::Damaged {
                contents,
                damage: Damage {
                    offset: pos as u64,
                    records_after: after,
                    file_len: data.len() as u64,
                    durable_to: if version >= 2 {
                        durable_to
                    } else {
                        data.len() as u64
                    },
                },
            });
        }
        contents.dropped = after;
        return Ok(Scan::Ok(contents));
    }
    Ok(Scan::Ok(LogContents {
        framing,
        records,
        valid_len: pos.min(data.len()) as u64,
        tail: Tail::Clean,
        dropped: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdVfs;

    const MAGIC: &[u8; 8] = b"TESTLOG1";

    fn write_log(dir: &Path, n: usize) -> PathBuf {
        let p = dir.join("t.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        for i in 0..n {
            w.append(format!("record-{i}-{}", "x".repeat(i)).as_bytes())
                .unwrap();
            w.sync().unwrap();
        }
        p
    }

    fn read(p: &Path) -> Result<LogContents> {
        read_log(&StdVfs, p, MAGIC)
    }

    #[test]
    fn roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 10);
        assert_eq!(c.tail, Tail::Clean);
        assert_eq!(c.records[3].1, b"record-3-xxx");
    }

    #[test]
    fn torn_tail_is_truncated_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 9);
        assert!(matches!(c.tail, Tail::Torn { .. }));
        // Appending continues at the valid prefix.
        let mut w = LogWriter::open_append(&StdVfs, &p, &c).unwrap();
        w.append(b"after").unwrap();
        w.sync().unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 10);
        assert_eq!(c.records[9].1, b"after");
        assert_eq!(c.tail, Tail::Clean);
    }

    #[test]
    fn flipped_byte_in_a_durable_record_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let mut data = std::fs::read(&p).unwrap();
        data[HEADER_LEN_V2 + 20] ^= 0x40;
        std::fs::write(&p, &data).unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.is_corruption(), "{e}");
    }

    #[test]
    fn flipped_byte_in_the_last_record_is_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let mut data = std::fs::read(&p).unwrap();
        let n = data.len();
        data[n - 2] ^= 0x01;
        std::fs::write(&p, &data).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 9);
    }

    /// A group of records written with one write and lost part-way through its sync:
    /// a damaged record followed by valid ones that were never durable either.
    #[test]
    fn torn_unsynced_group_with_valid_records_after_the_damage_is_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        w.append(b"durable").unwrap();
        w.sync().unwrap();
        let durable_end = w.len();
        let f = w.framing();
        let mut group = Vec::new();
        for i in 0..5 {
            f.frame(
                &mut group,
                format!("unsynced-{i}").as_bytes(),
                w.synced_len(),
            );
        }
        w.write_framed(&mut group).unwrap();
        // The first record of the group never reached the disk.
        let mut data = std::fs::read(&p).unwrap();
        for b in &mut data[durable_end as usize..durable_end as usize + 10] {
            *b = 0;
        }
        std::fs::write(&p, &data).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 1);
        assert_eq!(
            c.tail,
            Tail::Torn {
                offset: durable_end,
                bytes: data.len() as u64 - durable_end,
                dropped_records: 4
            }
        );
        // Had a later record been written after a sync past the damage, the damage
        // would be to durable bytes.
        let mut w = LogWriter::open_append(&StdVfs, &p, &c).unwrap();
        w.append(b"a").unwrap();
        w.sync().unwrap();
        w.append(b"b").unwrap();
        w.sync().unwrap();
        let mut data = std::fs::read(&p).unwrap();
        data[durable_end as usize + 3] ^= 1;
        std::fs::write(&p, &data).unwrap();
        assert!(read(&p).unwrap_err().is_corruption());
    }

    #[test]
    fn payload_bytes_never_check_as_a_record() {
        // A payload holding a whole framed record (as user data could) is not taken
        // for one when the record before it is damaged: the salt differs per file.
        let d = tempfile::tempdir().unwrap();
        let other = LogWriter::create(&StdVfs, &d.path().join("o.log"), MAGIC, 2).unwrap();
        let mut forged = Vec::new();
        other.framing().frame(&mut forged, b"forged", 0);
        let p = d.path().join("f.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        w.append(b"first").unwrap();
        w.sync().unwrap();
        let at = w.len();
        let mut payload = vec![1u8; 64];
        payload.extend_from_slice(&forged);
        w.append(&payload).unwrap();
        w.sync().unwrap();
        let mut data = std::fs::read(&p).unwrap();
        data[at as usize + 20] ^= 1; // damage the record holding the forged bytes
        std::fs::write(&p, &data).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 1);
        assert!(matches!(
            c.tail,
            Tail::Torn {
                dropped_records: 0,
                ..
            }
        ));
    }

    #[test]
    fn preallocated_tail_is_the_clean_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pre.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        w.preallocate(1 << 16);
        w.append(b"one").unwrap();
        w.append(b"two").unwrap();
        w.sync().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 16);
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.tail, Tail::Clean);
        // A torn record followed by zeros is still a torn tail.
        let mut data = std::fs::read(&p).unwrap();
        data[c.valid_len as usize - 1] ^= 1;
        std::fs::write(&p, &data).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), 1);
        assert!(matches!(c.tail, Tail::Torn { .. }));
    }

    #[test]
    fn preallocation_runs_a_step_ahead_of_the_end_up_to_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("steps.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        let limit = 3 * PREALLOC_STEP;
        w.preallocate(limit);
        let size = || std::fs::metadata(&p).unwrap().len();
        // A small log reserves one step, not the whole limit.
        assert_eq!(size(), HEADER_LEN_V2 as u64 + PREALLOC_STEP);
        let record = vec![7u8; 64 << 10];
        let mut n = 0;
        while w.len() < 4 * PREALLOC_STEP {
            w.append(&record).unwrap();
            n += 1;
            assert!(size() >= w.len());
        }
        w.sync().unwrap();
        // Past the limit the log grows by appends only.
        assert_eq!(size(), w.len());
        let c = read(&p).unwrap();
        assert_eq!(c.records.len(), n);
        assert_eq!(c.tail, Tail::Clean);
    }

    #[test]
    fn version_1_logs_are_still_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v1.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 1).unwrap();
        w.append(b"old").unwrap();
        w.sync().unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), HEADER_LEN_V1 + 9 + 3);
        let c = read(&p).unwrap();
        assert_eq!(c.records[0].1, b"old");
    }

    #[test]
    fn bad_header_and_future_version() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 2);
        assert!(
            read_log(&StdVfs, &p, b"OTHERLOG")
                .unwrap_err()
                .is_corruption()
        );
        let p2 = d.path().join("v9.log");
        LogWriter::create(&StdVfs, &p2, MAGIC, 9).unwrap();
        assert!(read(&p2).unwrap_err().is_corruption());
    }
}
