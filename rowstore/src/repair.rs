//! Offline repair of a database directory that does not open (`lightning-cli repair`).
//!
//! - A missing or damaged `CURRENT` is rebuilt from the newest manifest that replays and
//!   whose tables all exist.
//! - With [`RepairOptions::truncate_wal`], WAL damage that recovery refuses (a damaged
//!   record followed by records written after it was durable) is cut off: the segment is
//!   truncated at the first damaged record and every later segment is dropped. Nothing
//!   is destroyed: the dropped bytes are kept next to the segment as
//!   `NNNNNN.log.dropped-<offset>`, and the report says what they held.
//!
//! Repair takes the directory lock, so it refuses a database that is open.

use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::files::{self, DbFile};
use crate::format::WAL_MAGIC;
use crate::log::{self, Scan, Tail};
use crate::manifest::{self, ManifestState};
use crate::vfs::{self, Vfs};
use std::path::{Path, PathBuf};

/// What to repair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Drop everything from the first damaged WAL record on.
    pub truncate_wal: bool,
}

/// A stretch of WAL dropped by a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedWal {
    pub file: PathBuf,
    /// Where the dropped bytes began (0 with `whole_file`).
    pub offset: u64,
    pub bytes: u64,
    /// Whole, valid commits among the dropped bytes, their operations, and their
    /// commit timestamps (first, last).
    pub commits: u64,
    pub operations: u64,
    pub timestamps: Option<(u64, u64)>,
    /// Where the dropped bytes were saved.
    pub saved_as: PathBuf,
}

/// What a repair found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The manifest `CURRENT` now names, if it had to be rebuilt.
    pub current_rebuilt: Option<u64>,
    /// WAL damage found (file, offset, why), repaired or not.
    pub wal_damage: Vec<(PathBuf, u64, String)>,
    pub wal_dropped: Vec<DroppedWal>,
    /// One line per finding or action, for people.
    pub notes: Vec<String>,
}

impl RepairReport {
    /// Whether damage remains that needs `truncate_wal`.
    pub fn needs_truncate(&self) -> bool {
        !self.wal_damage.is_empty() && self.wal_dropped.is_empty()
    }
}

/// Repair the database in `dir` (see the module docs).
pub fn repair_dir(vfs: &dyn Vfs, dir: &Path, opts: RepairOptions) -> Result<RepairReport> {
    let _lock = match vfs.lock(&dir.join(files::LOCK)) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(Error::Locked(dir.to_path_buf()));
        }
        Err(e) => return Err(Error::io(format!("locking {}", dir.display()), e)),
    };
    let mut report = RepairReport::default();
    let state = repair_current(vfs, dir, &mut report)?;
    repair_wal(vfs, dir, &state, opts, &mut report)?;
    Ok(report)
}

fn tables_missing(vfs: &dyn Vfs, dir: &Path, st: &ManifestState) -> Result<Vec<u64>> {
    let mut missing = Vec::new();
    for id in st.levels.iter().flat_map(|l| l.keys()) {
        if !vfs::exists(vfs, &files::table_path(dir, *id))? {
            missing.push(*id);
        }
    }
    Ok(missing)
}

fn repair_current(vfs: &dyn Vfs, dir: &Path, report: &mut RepairReport) -> Result<ManifestState> {
    let current = manifest::read_current(vfs, dir)
        .and_then(|id| manifest::replay(vfs, dir, id).map(|s| (id, s)));
    let why = match current {
        Ok((id, st)) => {
            let missing = tables_missing(vfs, dir, &st)?;
            if missing.is_empty() {
                report
                    .notes
                    .push(format!("CURRENT names MANIFEST-{id:06}: ok"));
                return Ok(st);
            }
            format!("MANIFEST-{id:06} names missing tables {missing:?}")
        }
        Err(e) => format!("{e}"),
    };
    report.notes.push(format!("CURRENT is not usable: {why}"));
    let mut manifests: Vec<u64> = vfs::list(vfs, dir)?
        .iter()
        .filter_map(|n| match files::classify(n) {
            DbFile::Manifest(id) => Some(id),
            _ => None,
        })
        .collect();
    manifests.sort_unstable_by(|a, b| b.cmp(a));
    for id in manifests {
        match manifest::replay(vfs, dir, id) {
            Ok(st) => {
                let missing = tables_missing(vfs, dir, &st)?;
                if !missing.is_empty() {
                    report.notes.push(format!(
                        "MANIFEST-{id:06} replays but names missing tables {missing:?}; trying an older one"
                    ));
                    continue;
                }
                manifest::write_current(vfs, dir, id)?;
                report.current_rebuilt = Some(id);
                report.notes.push(format!(
                    "rebuilt CURRENT: it names MANIFEST-{id:06} ({} tables, last commit {})",
                    st.levels.iter().map(|l| l.len()).sum::<usize>(),
                    st.last_ts
                ));
                return Ok(st);
            }
            Err(e) => report
                .notes
                .push(format!("MANIFEST-{id:06} is not usable: {e}")),
        }
    }
    // No usable manifest. If nothing holds data either (a create that died before its
    // first manifest was complete), a fresh, empty manifest loses nothing.
    let names = vfs::list(vfs, dir)?;
    let mut max_id = 0;
    let mut data = Vec::new();
    for n in &names {
        match files::classify(n) {
            DbFile::Table(id) => {
                max_id = max_id.max(id);
                data.push(n.clone());
            }
            DbFile::Manifest(id) => max_id = max_id.max(id),
            DbFile::Wal(id) => {
                max_id = max_id.max(id);
                let bytes = vfs::read_log_file(vfs, &dir.join(n))?;
                let has_records = match log::scan_log(&dir.join(n), &bytes, WAL_MAGIC) {
                    Ok(Scan::Ok(c)) => !c.records.is_empty() || !c.dropped.is_empty(),
                    _ => true,
                };
                if has_records {
                    data.push(n.clone());
                }
            }
            _ => {}
        }
    }
    if data.is_empty() {
        let id = max_id + 1;
        let mut st = ManifestState::new();
        st.next_file_id = id + 1;
        st.log_number = id + 1;
        manifest::Manifest::create(vfs, dir, id, &st)?;
        report.current_rebuilt = Some(id);
        report.notes.push(format!(
            "no valid manifest and no data (an interrupted create): wrote an empty MANIFEST-{id:06} and CURRENT"
        ));
        return Ok(st);
    }
    Err(Error::corruption(
        manifest::current_path(dir),
        0,
        format!(
            "no valid manifest to rebuild CURRENT from, and the directory holds data ({}); {}",
            data.join(", "),
            report.notes.join("; ")
        ),
    ))
}

/// Commits, operations and timestamp range of WAL record payloads.
fn describe(records: &[(u64, Vec<u8>)]) -> (u64, u64, Option<(u64, u64)>) {
    let mut ops = 0;
    let mut range: Option<(u64, u64)> = None;
    for (_, p) in records {
        if let Ok((ts, b)) = WriteBatch::decode(p) {
            ops += b.ops().len() as u64;
            range = Some(range.map_or((ts, ts), |(a, z)| (a.min(ts), z.max(ts))));
        }
    }
    (records.len() as u64, ops, range)
}

fn repair_wal(
    vfs: &dyn Vfs,
    dir: &Path,
    state: &ManifestState,
    opts: RepairOptions,
    report: &mut RepairReport,
) -> Result<()> {
    let segments = crate::backup::wal_segments(vfs, dir, state.log_number)?;
    let n = segments.len();
    // The first segment with damage recovery refuses, and where.
    let mut cut: Option<(usize, u64)> = None;
    for (i, (_, p)) in segments.iter().enumerate() {
        let data = vfs::read_log_file(vfs, p)?;
        let (offset, why) = match log::scan_log(p, &data, WAL_MAGIC)? {
            Scan::Damaged { damage, .. } => (
                damage.offset,
                format!(
                    "damaged record followed by {} valid record(s) written after the log was durable past it",
                    damage.records_after.len()
                ),
            ),
            Scan::Ok(c) => match c.tail {
                Tail::Torn { offset, .. } if i + 1 < n => (
                    offset,
                    "damaged record in a WAL segment that is not the newest".into(),
                ),
                _ => continue,
            },
        };
        report.wal_damage.push((p.clone(), offset, why.clone()));
        report
            .notes
            .push(format!("{} at offset {offset}: {why}", p.display()));
        cut = Some((i, offset));
        break;
    }
    let Some((first, offset)) = cut else {
        report.notes.push(format!(
            "WAL: {n} segment(s), no damage recovery would refuse"
        ));
        return Ok(());
    };
    if !opts.truncate_wal {
        report.notes.push(
            "WAL damage left in place; repair with --truncate-wal to drop everything from the damaged record on"
                .into(),
        );
        return Ok(());
    }
    for (i, (_, p)) in segments.iter().enumerate().skip(first) {
        let from = if i == first { offset } else { 0 };
        let data = vfs::read_log_file(vfs, p)?;
        let dropped = &data[(from as usize).min(data.len())..];
        // What the dropped bytes held: the valid records among them.
        let records: Vec<(u64, Vec<u8>)> = match log::scan_log(p, &data, WAL_MAGIC)? {
            Scan::Damaged { damage, .. } if i == first => damage.records_after,
            Scan::Ok(c) if i == first => c.dropped,
            Scan::Ok(c) => {
                let mut r = c.records;
                r.extend(c.dropped);
                r
            }
            Scan::Damaged { contents, damage } => {
                let mut r = contents.records;
                r.extend(damage.records_after);
                r
            }
        };
        let (commits, operations, timestamps) = describe(&records);
        let mut saved = p.as_os_str().to_owned();
        saved.push(format!(".dropped-{from}"));
        let saved = PathBuf::from(saved);
        vfs::create_new_synced(vfs, &saved, dropped)?;
        if from == 0 {
            vfs::remove_file_if_exists(vfs, p)?;
        } else {
            let f = vfs
                .open_rw(p)
                .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
            f.set_len(from)
                .and_then(|()| f.sync_data())
                .map_err(|e| Error::io(format!("truncating {}", p.display()), e))?;
        }
        report.notes.push(format!(
            "dropped {} bytes of {} from offset {from}: {commits} commit(s), {operations} operation(s){}; saved as {}",
            dropped.len(),
            p.display(),
            timestamps.map_or(String::new(), |(a, z)| format!(", commit timestamps {a}..={z}")),
            saved.display()
        ));
        report.wal_dropped.push(DroppedWal {
            file: p.clone(),
            offset: from,
            bytes: dropped.len() as u64,
            commits,
            operations,
            timestamps,
            saved_as: saved,
        });
    }
    vfs::sync_dir(vfs, dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdVfs;

    #[test]
    fn an_interrupted_create_without_data_is_repaired_to_an_empty_database() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("LOCK"), b"").unwrap();
        std::fs::write(d.path().join("MANIFEST-000001"), b"").unwrap();
        let r = repair_dir(&StdVfs, d.path(), RepairOptions::default()).unwrap();
        assert!(r.current_rebuilt.is_some(), "{r:?}");
        crate::Engine::open(d.path(), Default::default(), crate::OpenMode::Open).unwrap();
    }

    #[test]
    fn no_manifest_but_data_is_an_error_that_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("000003.sst"), b"data").unwrap();
        std::fs::write(d.path().join("MANIFEST-000001"), b"garbage").unwrap();
        let e = repair_dir(&StdVfs, d.path(), RepairOptions::default()).unwrap_err();
        assert!(e.to_string().contains("000003.sst"), "{e}");
        assert!(!d.path().join("CURRENT").exists());
    }
}
