//! Offline integrity checks and file-level backups of a row store directory. Neither
//! needs the database lock: they only read files, and a backup only hard-links or copies
//! them, so both work while another process has the database open.

use crate::error::{Error, IoContext, Result};
use crate::log::{self, Tail};
use crate::manifest::{self, ManifestState};
use crate::sst::{Table, table_path};
use crate::vfs;
use std::path::{Path, PathBuf};

/// What a check looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub manifest_edits_checked: u64,
    pub tables_checked: u64,
    pub blocks_checked: u64,
    pub blocks_total: u64,
    pub wal_records_checked: u64,
    pub wal_torn_tails: u64,
}

const WAL_MAGIC: &[u8; 8] = b"LTNGWAL\x01";

fn wal_segments(dir: &Path, from: u64) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let e = e.ctx(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u64>().ok())
            && n >= from
        {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Verify the manifest, every live table's footer/index/filter, `percent`% of their data
/// blocks (100 = all), and every WAL record. `progress` is told about each file.
pub fn check_dir(dir: &Path, percent: u8, mut progress: impl FnMut(&str)) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let id = manifest::read_current(dir)?;
    let st: ManifestState = manifest::replay(dir, id)?;
    r.manifest_edits_checked = 1;
    progress(&format!("manifest MANIFEST-{id:06}: ok"));
    let percent = u64::from(percent.min(100));
    for (level, tables) in st.levels.iter().enumerate() {
        for m in tables.values() {
            let t = Table::open(dir, m.id, None, None)?;
            r.tables_checked += 1;
            let n = t.num_blocks() as u64;
            r.blocks_total += n;
            // Deterministic spread: block i is checked when (i * percent) crosses an
            // integer boundary, i.e. percent% of blocks, evenly spaced.
            let mut checked = 0;
            for i in 0..n {
                if percent == 100 || ((i + 1) * percent) / 100 > (i * percent) / 100 {
                    t.verify_block(i as usize)?;
                    checked += 1;
                }
            }
            r.blocks_checked += checked;
            progress(&format!(
                "table {} (level {level}): {checked}/{n} blocks ok",
                table_path(dir, m.id).display()
            ));
        }
    }
    for (_, p) in wal_segments(dir, st.log_number)? {
        let c = log::read_log(&p, WAL_MAGIC, 1)?;
        r.wal_records_checked += c.records.len() as u64;
        if let Tail::Torn { .. } = c.tail {
            r.wal_torn_tails += 1;
        }
        progress(&format!(
            "wal {}: {} records ok",
            p.display(),
            c.records.len()
        ));
    }
    Ok(r)
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dst).ctx(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

/// Copy the live files of the database in `dir` into `target` (which must not exist)
/// so that opening `target` gives a consistent state: the tables of one manifest
/// version (hard-linked, they are immutable) plus the WAL segments after it (copied,
/// the newest possibly cut mid-record, which recovery treats as a torn tail). Works
/// while the database is open and being written: if a flush or compaction removes a
/// file while it is being collected, it starts over.
pub fn backup_dir(dir: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        return Err(Error::DatabaseExists(target.to_path_buf()));
    }
    for attempt in 0..100 {
        let tmp = target.with_extension(format!("partial{attempt}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        match try_backup(dir, &tmp) {
            Ok(()) => {
                std::fs::rename(&tmp, target).ctx(|| format!("renaming {}", tmp.display()))?;
                if let Some(parent) = target.parent() {
                    vfs::sync_dir(parent)?;
                }
                return Ok(());
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&tmp);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
    }
    Err(Error::InvalidArgument(
        "the database changed too fast to back up (100 attempts)".into(),
    ))
}

fn try_backup(dir: &Path, tmp: &Path) -> Result<()> {
    let id = manifest::read_current(dir)?;
    let mpath = manifest::manifest_path(dir, id);
    // Copy the manifest bytes first: the version it describes decides which files we need.
    let bytes = std::fs::read(&mpath).ctx(|| format!("reading {}", mpath.display()))?;
    std::fs::write(manifest::manifest_path(tmp, id), &bytes)
        .ctx(|| "writing the manifest copy".into())?;
    let st = manifest::replay(tmp, id)?;
    for tables in &st.levels {
        for m in tables.values() {
            link_or_copy(&table_path(dir, m.id), &table_path(tmp, m.id))?;
        }
    }
    for (n, p) in wal_segments(dir, st.log_number)? {
        let mut data = std::fs::read(&p).ctx(|| format!("reading {}", p.display()))?;
        // Segments are preallocated: leave out the unwritten space after the last
        // complete record (a record may itself end in zero bytes, so ask the reader).
        if let Ok(c) = log::read_log(&p, WAL_MAGIC, 1)
            && c.tail == Tail::Clean
        {
            data.truncate((c.valid_len as usize).max(log::HEADER_LEN).min(data.len()));
        }
        std::fs::write(tmp.join(format!("{n:06}.log")), data)
            .ctx(|| "writing a WAL copy".into())?;
    }
    // A flush appends its manifest edit before it deletes the WAL segments it
    // covered. So if the manifest is unchanged now, every segment our copy of it needs
    // was still there when we copied the WAL; if it changed, start over.
    let unchanged = manifest::read_current(dir)? == id
        && std::fs::metadata(&mpath).map(|m| m.len()).ok() == Some(bytes.len() as u64);
    if !unchanged {
        return Err(Error::io(
            "backing up",
            std::io::Error::new(std::io::ErrorKind::NotFound, "manifest replaced"),
        ));
    }
    std::fs::copy(manifest::current_path(dir), manifest::current_path(tmp))
        .ctx(|| "copying CURRENT".into())?;
    for e in std::fs::read_dir(tmp).ctx(|| "listing the backup".into())? {
        let e = e.ctx(|| "listing the backup".into())?;
        std::fs::File::open(e.path())
            .and_then(|f| f.sync_all())
            .ctx(|| format!("fsync of {}", e.path().display()))?;
    }
    vfs::sync_dir(tmp)
}
