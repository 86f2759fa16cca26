//! Integrity checks of a row store directory. They need no lock and only read files, so
//! they work while another process (or this one) has the database open and writes.
//!
//! A check verifies one version: the manifest `CURRENT` names, the tables it lists and
//! the WAL segments after it. A flush or compaction that replaces files while they are
//! read is not damage: the check notices that the manifest moved on and verifies the
//! newer version instead. The live WAL segment is read with [`read_live_log`], so an
//! append in flight is never mistaken for damage. What is reported is damage that stays.

use crate::backup::{is_not_found, manifest_mark, pin_wal_segments, read_live_file};
use crate::error::{Error, Result};
use crate::format::WAL_MAGIC;
use crate::log::Tail;
use crate::manifest::{self, ManifestState};
use crate::sst::{Table, table_path};
use crate::vfs::Vfs;
use std::path::Path;
use std::sync::Arc;

/// What a check looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub manifest_edits_checked: u64,
    pub tables_checked: u64,
    pub blocks_checked: u64,
    pub blocks_total: u64,
    pub wal_records_checked: u64,
    pub wal_torn_tails: u64,
    /// The B+Tree engine: extents of the tree read and checked.
    pub tree_extents_checked: u64,
}

/// How many versions a check follows before it gives up on a database that changes
/// faster than it can be read.
const ATTEMPTS: usize = 100;

/// Verify the manifest, every live table's footer/index/filter, `percent`% of their data
/// blocks (100 = all), and every WAL record. `progress` is told about each file.
pub fn check_dir(
    vfs: &Arc<dyn Vfs>,
    dir: &Path,
    percent: u8,
    mut progress: impl FnMut(&str),
) -> Result<CheckReport> {
    if !crate::vfs::exists(&**vfs, &manifest::current_path(dir))? {
        return Err(Error::DatabaseNotFound(dir.to_path_buf()));
    }
    for _ in 0..ATTEMPTS {
        match check_once(vfs, dir, percent, &mut progress) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {
                progress("the database changed while it was checked; checking the new version");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::InvalidArgument(format!(
        "the database changed too fast to check ({ATTEMPTS} versions)"
    )))
}

/// Check one version: WAL segments are opened first, then the manifest is read and its
/// tables opened (a table compacted away meanwhile means a newer manifest: read it and
/// open again; see `backup::try_backup` for why this holds every write). Verification
/// then goes through the open handles, which keep the bytes even if the files are
/// removed meanwhile. `None` if the version kept changing while its tables were opened.
fn check_once(
    vfs: &Arc<dyn Vfs>,
    dir: &Path,
    percent: u8,
    progress: &mut impl FnMut(&str),
) -> Result<Option<CheckReport>> {
    let segments = pin_wal_segments(&**vfs, dir)?;
    let mut version = None;
    'version: for _ in 0..ATTEMPTS {
        let mark = match manifest_mark(&**vfs, dir) {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let st: ManifestState = match manifest::replay(&**vfs, dir, mark.id) {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let mut tables = Vec::new();
        for (level, ts) in st.levels.iter().enumerate() {
            for m in ts.values() {
                let p = table_path(dir, m.id);
                match vfs.open(&p) {
                    Ok(f) => tables.push((level, m.id, p, f)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if manifest_mark(&**vfs, dir).is_ok_and(|m| m != mark) {
                            continue 'version;
                        }
                        return Err(Error::corruption(
                            p,
                            0,
                            "a table the live manifest names is missing",
                        ));
                    }
                    Err(e) => return Err(Error::io(format!("opening {}", p.display()), e)),
                }
            }
        }
        version = Some((mark.id, st, tables));
        break;
    }
    let Some((id, st, tables)) = version else {
        return Ok(None);
    };
    let mut r = CheckReport {
        manifest_edits_checked: 1,
        ..Default::default()
    };
    progress(&format!("manifest MANIFEST-{id:06}: ok"));
    let percent = u64::from(percent.min(100));
    for (level, tid, p, f) in tables {
        let file = crate::vfs::RandomAccessFile::from_file(f, &p, None)?;
        let t = Table::from_file(vfs, file, tid, None)?;
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
            p.display()
        ));
    }
    if st.engine == crate::options::StorageKind::BTree {
        // The tree file is written in place (never over a page the published tree
        // reaches, but over pages an older one did): a failure while the tree moved on
        // is a page reused under this check, not damage; check the newer tree.
        let p = crate::files::tree_path(dir);
        // Pinned, the writer reuses no page while the check reads: a failure is damage.
        let pin = crate::btree::TreePin::take(&**vfs, dir);
        let open = || crate::btree::BTree::read_live(&**vfs, &p);
        let tree = open()?;
        if let Err(e) = tree.verify_all().map(|n| r.tree_extents_checked = n) {
            if pin.as_ref().is_some_and(|p| p.held()) {
                return Err(e);
            }
            // Any failure (a read past an end cut off since is an I/O error) while the
            // tree moved on: check the newer one.
            return match open() {
                Ok(now) if now.meta.generation != tree.meta.generation => Ok(None),
                _ => Err(e),
            };
        }
        drop(pin);
        progress(&format!(
            "tree {} (generation {}): {} extents, {} versions ok",
            p.display(),
            tree.meta.generation,
            r.tree_extents_checked,
            tree.meta.entries
        ));
    }
    for (wid, p, f) in segments {
        if wid < st.log_number {
            continue;
        }
        let (_, c) = read_live_file(&*f, &p, WAL_MAGIC)?;
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
    Ok(Some(r))
}
