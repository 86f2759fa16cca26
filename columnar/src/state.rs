//! The published state of the column store: per table, its watermark and segments with
//! their delete bitmaps. Replaced atomically as a whole (`STATE`, written to a temp file,
//! fsynced, renamed, directory fsynced): that rename is the publish step.

use crate::error::{Error, Result};
use crate::segment::SegmentInfo;
use lightning_rowstore::vfs::Vfs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATE_FORMAT_VERSION: u32 = 1;
const MAGIC: &str = "LTNGCOL1";

/// A delete bitmap file of a segment (roaring, copy-on-write: a new generation per change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteFile {
    pub generation: u64,
    pub deleted_rows: u64,
    pub file_len: u64,
    pub file_crc32c: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentState {
    pub info: SegmentInfo,
    pub deletes: Option<DeleteFile>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableState {
    /// Every committed change with timestamp <= watermark is in the segments.
    pub watermark: u64,
    pub segments: Vec<SegmentState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnarState {
    pub format_version: u32,
    pub next_file_id: u64,
    pub tables: BTreeMap<u32, TableState>,
}

impl Default for ColumnarState {
    fn default() -> Self {
        ColumnarState {
            format_version: STATE_FORMAT_VERSION,
            next_file_id: 1,
            tables: BTreeMap::new(),
        }
    }
}

impl ColumnarState {
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<ColumnarState>> {
        let p = dir.join("STATE");
        let Some(data) = lightning_rowstore::vfs::read_file_if_exists(vfs, &p)? else {
            return Ok(None);
        };
        let bad = |why: &str| Error::corruption(&p, 0, why.to_string());
        let text = std::str::from_utf8(&data).map_err(|_| bad("STATE is not text"))?;
        let mut lines = text.splitn(3, '\n');
        let (Some(magic), Some(crc), Some(body)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("STATE is truncated"));
        };
        if magic != MAGIC {
            return Err(bad("STATE has a bad magic"));
        }
        let crc = u32::from_str_radix(crc, 16).map_err(|_| bad("STATE has a bad checksum line"))?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return Err(bad("STATE checksum mismatch"));
        }
        let st: ColumnarState = serde_json::from_str(body).map_err(|e| bad(&e.to_string()))?;
        if st.format_version == 0 || st.format_version > STATE_FORMAT_VERSION {
            return Err(bad("unsupported STATE format version"));
        }
        Ok(Some(st))
    }

    /// Publish atomically.
    pub fn store(&self, vfs: &dyn Vfs, dir: &Path) -> Result<()> {
        let body = serde_json::to_string(self).map_err(|e| Error::Schema(e.to_string()))?;
        let text = format!("{MAGIC}\n{:08x}\n{body}", crc32c::crc32c(body.as_bytes()));
        lightning_rowstore::vfs::write_file_atomic(vfs, &dir.join("STATE"), text.as_bytes())?;
        Ok(())
    }

    /// The lowest watermark of any table (what the row store must keep versions from).
    pub fn min_watermark(&self) -> Option<u64> {
        self.tables.values().map(|t| t.watermark).min()
    }
}
