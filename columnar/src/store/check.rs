//! Checking the column store's files against `STATE`, also while it is compacting.

use super::*;

/// Verify `percent`% of the column-store segment files (and their delete bitmaps)
/// against the checksums in `STATE`. Returns (segments checked, segments total).
///
/// Works while the database is open and compacting: a file that disappears because a
/// newer `STATE` replaced it is not damage; the check then verifies the newer state.
pub fn check_files(
    vfs: &dyn Vfs,
    db_dir: &Path,
    percent: u8,
    mut progress: impl FnMut(&str),
) -> Result<(u64, u64)> {
    let dir = db_dir.join("columnar");
    for _ in 0..100 {
        let Some(st) = ColumnarState::load(vfs, &dir)? else {
            return Ok((0, 0));
        };
        match check_state(vfs, &dir, &st, percent, &mut progress) {
            Err(e) if is_not_found(&e) && ColumnarState::load(vfs, &dir)?.as_ref() != Some(&st) => {
                progress("the column store changed while it was checked; checking the new state");
            }
            r => return r,
        }
    }
    Err(Error::Schema(
        "the column store changed too fast to check (100 states)".into(),
    ))
}

pub(super) fn is_not_found(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        Error::Storage(lightning_rowstore::Error::Io { source, .. }) => {
            source.kind() == std::io::ErrorKind::NotFound
        }
        _ => false,
    }
}

pub(super) fn check_state(
    vfs: &dyn Vfs,
    dir: &Path,
    st: &ColumnarState,
    percent: u8,
    progress: &mut impl FnMut(&str),
) -> Result<(u64, u64)> {
    let percent = u64::from(percent.min(100));
    // Pin: open every file to check first (fast), so a round that replaces them while
    // they are verified does not matter; then verify through the handles.
    let mut pinned = Vec::new();
    let mut total = 0u64;
    let open = |p: &Path| {
        vfs.open(p)
            .map_err(|e| Error::io(format!("opening {}", p.display()), e))
    };
    for (id, t) in &st.tables {
        let tdir = table_dir(dir, *id);
        for s in &t.segments {
            let i = total;
            total += 1;
            if !(percent == 100 || ((i + 1) * percent) / 100 > (i * percent) / 100) {
                continue;
            }
            let p = segment_path(&tdir, s.info.id);
            let seg = open(&p)?;
            let del = match &s.deletes {
                Some(d) => Some((d, open(&del_path(&tdir, s.info.id, d.generation))?)),
                None => None,
            };
            pinned.push((p, s, seg, del, tdir.clone()));
        }
    }
    let mut checked = 0;
    for (p, s, seg, del, tdir) in pinned {
        let data = vfs::read_all(&*seg, &p)?;
        if data.len() as u64 != s.info.file_len || crc32c::crc32c(&data) != s.info.file_crc32c {
            return Err(Error::corruption(&p, 0, "segment checksum mismatch"));
        }
        if let Some((d, f)) = del {
            let dp = del_path(&tdir, s.info.id, d.generation);
            parse_deletes(&dp, &vfs::read_all(&*f, &dp)?, d)?;
        }
        checked += 1;
        progress(&format!("segment {}: ok", p.display()));
    }
    Ok((checked, total))
}
