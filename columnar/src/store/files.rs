//! The column store's files: where they go, delete bitmaps, and the files of a round
//! (removed unless the round publishes them).

use super::*;

/// Every file a compaction round creates. Unless the round publishes them
/// ([`RoundFiles::publish`]), they are removed when it ends, whatever made it fail, so
/// a failed round leaves nothing behind that a later round could trip over. (A crash
/// leaves them as orphans, which opening removes.)
pub(super) struct RoundFiles {
    pub(super) vfs: Arc<dyn Vfs>,
    pub(super) created: Vec<PathBuf>,
}

impl RoundFiles {
    pub(super) fn new(vfs: Arc<dyn Vfs>) -> Self {
        RoundFiles {
            vfs,
            created: Vec::new(),
        }
    }

    /// A new file at `path`: any file already there is an orphan of a crashed round
    /// (names come from one counter), so it is replaced.
    pub(super) fn create(&mut self, path: PathBuf, data: &[u8]) -> Result<()> {
        vfs::remove_file_if_exists(&*self.vfs, &path)?;
        self.created.push(path.clone());
        vfs::create_new_synced(&*self.vfs, &path, data)?;
        Ok(())
    }

    /// Register a file written by someone else for this round.
    pub(super) fn add(&mut self, path: PathBuf) {
        self.created.push(path);
    }

    /// The round published: its files stay.
    pub(super) fn publish(mut self) {
        self.created.clear();
    }
}

impl Drop for RoundFiles {
    fn drop(&mut self) {
        for p in &self.created {
            if let Err(e) = vfs::remove_file_if_exists(&*self.vfs, p) {
                tracing::warn!(file = %p.display(), error = %e, "could not remove a file of a failed round");
            }
        }
    }
}

pub(super) fn table_dir(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("t{id}"))
}

pub(super) fn del_path(dir: &Path, seg: u64, generation: u64) -> PathBuf {
    dir.join(format!("seg-{seg:06}.del-{generation}"))
}

pub(super) const DEL_MAGIC: &[u8; 8] = b"LTNGDEL1";

pub(super) fn write_deletes(
    files: &mut RoundFiles,
    dir: &Path,
    seg: u64,
    generation: u64,
    bm: &RoaringBitmap,
) -> Result<DeleteFile> {
    let mut data = DEL_MAGIC.to_vec();
    bm.serialize_into(&mut data)
        .map_err(|e| Error::io("encoding a delete bitmap", e))?;
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    files.create(del_path(dir, seg, generation), &data)?;
    Ok(DeleteFile {
        generation,
        deleted_rows: bm.len(),
        file_len: data.len() as u64,
        file_crc32c: crc32c::crc32c(&data),
    })
}

pub(super) fn read_deletes(
    vfs: &dyn Vfs,
    dir: &Path,
    seg: u64,
    d: &DeleteFile,
) -> Result<RoaringBitmap> {
    let p = del_path(dir, seg, d.generation);
    parse_deletes(&p, &vfs::read_file(vfs, &p)?, d)
}

pub(super) fn parse_deletes(p: &Path, data: &[u8], d: &DeleteFile) -> Result<RoaringBitmap> {
    let p = p.to_path_buf();
    let bad = |why: &str| Error::corruption(&p, 0, why.to_string());
    if data.len() as u64 != d.file_len || crc32c::crc32c(data) != d.file_crc32c {
        return Err(bad("delete bitmap checksum mismatch"));
    }
    if data.len() < 12 || &data[..8] != DEL_MAGIC {
        return Err(bad("not a delete bitmap"));
    }
    let body = &data[8..data.len() - 4];
    let crc = u32::from_le_bytes(data[data.len() - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&data[..data.len() - 4]) != crc {
        return Err(bad("delete bitmap checksum mismatch"));
    }
    RoaringBitmap::deserialize_from(body).map_err(|e| bad(&e.to_string()))
}
