//! Checksummed record logs, shared by the WAL and the manifest.
//!
//! File layout (see FORMAT.md):
//!
//! ```text
//! header:  magic [8] | format version u32 | crc32c(magic, version) u32
//! record:  crc32c(len, marker, payload) u32 | len u32 | marker u8 (0xA7) | payload [len]
//! ```
//!
//! Recovery reads records up to the first invalid one. If nothing valid follows it in
//! the file, it is a torn tail (a write that never completed, so never acknowledged) and
//! the file is truncated there. If a valid record follows, bytes in the middle of the log
//! were damaged and recovery stops with a `Corruption` error rather than silently
//! dropping acknowledged records.

use crate::error::{Error, IoContext, Result};
use crate::vfs;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const HEADER_LEN: usize = 16;
const RECORD_HEADER_LEN: usize = 9;
const RECORD_MARKER: u8 = 0xA7;
/// Largest record payload accepted (and written).
pub const MAX_RECORD_LEN: usize = u32::MAX as usize - 64;

fn header_bytes(magic: &[u8; 8], version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Append one framed record to `buf`.
pub fn frame_record(buf: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_RECORD_LEN);
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, &[RECORD_MARKER]);
    crc = crc32c::crc32c_append(crc, payload);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&len);
    buf.push(RECORD_MARKER);
    buf.extend_from_slice(payload);
}

/// An append-only log file.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    len: u64,
    /// File size reserved so far by `fallocate` (0 when not preallocating).
    allocated: u64,
    /// Reserve up to this size, in `PREALLOC_STEP` steps ahead of the end of the log.
    prealloc_limit: u64,
}

/// How far ahead of the end of the log preallocation reserves space: far enough that
/// almost every fdatasync finds its blocks allocated, small enough that a small database
/// does not carry a memtable's worth of zeros on disk.
const PREALLOC_STEP: u64 = 4 << 20;

impl LogWriter {
    /// Create a new log with its header; the header is fsynced and so is the directory.
    pub fn create(path: &Path, magic: &[u8; 8], version: u32) -> Result<Self> {
        let mut file = vfs::create_new(path)?;
        let h = header_bytes(magic, version);
        file.write_all(&h)
            .ctx(|| format!("writing header of {}", path.display()))?;
        file.sync_data()
            .ctx(|| format!("fsync of {}", path.display()))?;
        if let Some(dir) = path.parent() {
            vfs::sync_dir(dir)?;
        }
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            len: HEADER_LEN as u64,
            allocated: 0,
            prealloc_limit: 0,
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
    }

    /// Make sure the file is allocated past `end` (and a step beyond), within the limit.
    fn reserve(&mut self, end: u64) {
        use std::os::fd::AsRawFd;
        if end < self.allocated || self.allocated >= self.prealloc_limit {
            return;
        }
        let target = (end + PREALLOC_STEP).min(self.prealloc_limit.max(end));
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by
        // `self.file` and stays open for the duration of the call.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, target as libc::off_t) };
        if r == 0 {
            self.allocated = target;
        } else {
            tracing::debug!(path = %self.path.display(), "fallocate refused; WAL grows by appends");
            self.prealloc_limit = 0;
        }
    }

    /// Reopen an existing, already validated log for appending at `len`.
    pub fn open_append(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .ctx(|| format!("opening {} for append", path.display()))?;
        file.set_len(len)
            .ctx(|| format!("truncating {}", path.display()))?;
        let mut w = LogWriter {
            file,
            path: path.to_path_buf(),
            len,
            allocated: 0,
            prealloc_limit: 0,
        };
        use std::io::Seek;
        w.file
            .seek(std::io::SeekFrom::Start(len))
            .ctx(|| format!("seeking {}", path.display()))?;
        w.sync()?;
        Ok(w)
    }

    /// Write already-framed bytes (one or more records) with a single `write` call.
    pub fn write_framed(&mut self, framed: &[u8]) -> Result<()> {
        if self.prealloc_limit > 0 {
            self.reserve(self.len + framed.len() as u64);
        }
        self.file
            .write_all(framed)
            .ctx(|| format!("appending to {}", self.path.display()))?;
        self.len += framed.len() as u64;
        Ok(())
    }

    /// Frame and append one record (no sync).
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + RECORD_HEADER_LEN);
        frame_record(&mut buf, payload);
        self.write_framed(&buf)
    }

    /// fdatasync the log.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(|| format!("fsync of {}", self.path.display()))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_LEN as u64
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What was found at the end of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belonged to a valid record.
    Clean,
    /// An incomplete or damaged last write starting at `offset`, `bytes` long.
    Torn { offset: u64, bytes: u64 },
}

/// The valid contents of a log.
#[derive(Debug)]
pub struct LogContents {
    /// (file offset, payload) of every valid record, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Length of the valid prefix (where appending may continue).
    pub valid_len: u64,
    pub tail: Tail,
}

fn check_record_at(data: &[u8], pos: usize) -> Option<usize> {
    if data.len() < pos + RECORD_HEADER_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(data[pos..pos + 4].try_into().ok()?);
    let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().ok()?) as usize;
    if data[pos + 8] != RECORD_MARKER || len > data.len() - pos - RECORD_HEADER_LEN {
        return None;
    }
    let body = &data[pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len];
    let mut c = crc32c::crc32c(&data[pos + 4..pos + 9]);
    c = crc32c::crc32c_append(c, body);
    (c == crc).then_some(len)
}

/// Read and validate a whole log. `magic`/`version` must match the header.
pub fn read_log(path: &Path, magic: &[u8; 8], max_version: u32) -> Result<LogContents> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .ctx(|| format!("reading {}", path.display()))?;
    if data.len() < HEADER_LEN {
        // Created but the header never became durable: an empty, torn log.
        return Ok(LogContents {
            records: Vec::new(),
            valid_len: 0,
            tail: Tail::Torn {
                offset: 0,
                bytes: data.len() as u64,
            },
        });
    }
    let crc = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes"));
    if &data[..8] != magic || crc32c::crc32c(&data[..12]) != crc {
        if data.iter().all(|&b| b == 0) {
            return Ok(LogContents {
                records: Vec::new(),
                valid_len: 0,
                tail: Tail::Torn {
                    offset: 0,
                    bytes: data.len() as u64,
                },
            });
        }
        return Err(Error::corruption(
            path,
            0,
            "bad log header (magic or checksum)",
        ));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if version == 0 || version > max_version {
        return Err(Error::corruption(
            path,
            8,
            format!("unsupported log format version {version} (this build reads <= {max_version})"),
        ));
    }
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < data.len() {
        match check_record_at(&data, pos) {
            Some(len) => {
                let start = pos + RECORD_HEADER_LEN;
                records.push((pos as u64, data[start..start + len].to_vec()));
                pos = start + len;
            }
            None if data[pos..].iter().all(|&b| b == 0) => {
                // Preallocated space that was never written: the clean end of the log.
                return Ok(LogContents {
                    records,
                    valid_len: pos as u64,
                    tail: Tail::Clean,
                });
            }
            None => {
                // Is anything valid after this point? Then it is not a torn tail.
                // Candidates are positions whose marker byte (offset 8) matches.
                let later = data
                    .iter()
                    .enumerate()
                    .skip(pos + 1 + 8)
                    .filter(|&(_, &b)| b == RECORD_MARKER)
                    .map(|(i, _)| i - 8)
                    .find(|&p| check_record_at(&data, p).is_some());
                if let Some(later) = later {
                    return Err(Error::corruption(
                        path,
                        pos as u64,
                        format!("damaged record followed by a valid record at offset {later}"),
                    ));
                }
                return Ok(LogContents {
                    records,
                    valid_len: pos as u64,
                    tail: Tail::Torn {
                        offset: pos as u64,
                        bytes: (data.len() - pos) as u64,
                    },
                });
            }
        }
    }
    Ok(LogContents {
        records,
        valid_len: pos as u64,
        tail: Tail::Clean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"TESTLOG1";

    fn write_log(dir: &Path, n: usize) -> PathBuf {
        let p = dir.join("t.log");
        let mut w = LogWriter::create(&p, MAGIC, 1).unwrap();
        for i in 0..n {
            w.append(format!("record-{i}-{}", "x".repeat(i)).as_bytes())
                .unwrap();
        }
        w.sync().unwrap();
        p
    }

    #[test]
    fn roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), 10);
        assert_eq!(c.tail, Tail::Clean);
        assert_eq!(c.records[3].1, b"record-3-xxx");
    }

    #[test]
    fn torn_tail_is_truncated_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), 9);
        assert!(matches!(c.tail, Tail::Torn { .. }));
        // Appending continues at the valid prefix.
        let mut w = LogWriter::open_append(&p, c.valid_len).unwrap();
        w.append(b"after").unwrap();
        w.sync().unwrap();
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), 10);
        assert_eq!(c.records[9].1, b"after");
        assert_eq!(c.tail, Tail::Clean);
    }

    #[test]
    fn flipped_byte_in_the_body_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 10);
        let mut data = std::fs::read(&p).unwrap();
        data[HEADER_LEN + 12] ^= 0x40;
        std::fs::write(&p, &data).unwrap();
        let e = read_log(&p, MAGIC, 1).unwrap_err();
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
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), 9);
    }

    #[test]
    fn preallocated_tail_is_the_clean_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pre.log");
        let mut w = LogWriter::create(&p, MAGIC, 1).unwrap();
        w.preallocate(1 << 16);
        w.append(b"one").unwrap();
        w.append(b"two").unwrap();
        w.sync().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 16);
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.tail, Tail::Clean);
        // A torn record followed by zeros is still a torn tail.
        let mut data = std::fs::read(&p).unwrap();
        data[c.valid_len as usize - 1] ^= 1;
        std::fs::write(&p, &data).unwrap();
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), 1);
        assert!(matches!(c.tail, Tail::Torn { .. }));
    }

    #[test]
    fn preallocation_runs_a_step_ahead_of_the_end_up_to_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("steps.log");
        let mut w = LogWriter::create(&p, MAGIC, 1).unwrap();
        let limit = 3 * PREALLOC_STEP;
        w.preallocate(limit);
        let size = || std::fs::metadata(&p).unwrap().len();
        // A small log reserves one step, not the whole limit.
        assert_eq!(size(), HEADER_LEN as u64 + PREALLOC_STEP);
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
        let c = read_log(&p, MAGIC, 1).unwrap();
        assert_eq!(c.records.len(), n);
        assert_eq!(c.tail, Tail::Clean);
    }

    #[test]
    fn bad_header_and_future_version() {
        let d = tempfile::tempdir().unwrap();
        let p = write_log(d.path(), 2);
        assert!(read_log(&p, b"OTHERLOG", 1).unwrap_err().is_corruption());
        let p2 = d.path().join("v9.log");
        LogWriter::create(&p2, MAGIC, 9).unwrap();
        assert!(read_log(&p2, MAGIC, 1).unwrap_err().is_corruption());
    }
}
