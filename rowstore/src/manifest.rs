//! The manifest: a checksummed log of version edits that switches the set of live tables
//! atomically. An edit is durable (fsynced) before anything acts on it; a torn last edit
//! never happened. `CURRENT` names the live manifest and is replaced atomically.

use crate::coding::{self, Decoder};
use crate::error::{Error, Result};
use crate::format::{CURRENT_TAG, MANIFEST_MAGIC as MAGIC, MANIFEST_VERSION};
use crate::log::{self, LogWriter};
use crate::sst::TableMeta;
use crate::vfs::{self, Vfs};
use std::collections::BTreeMap;
use std::path::Path;

pub const NUM_LEVELS: usize = 7;

const TAG_NEXT_FILE: u8 = 1;
const TAG_LAST_TS: u8 = 2;
const TAG_LOG_NUMBER: u8 = 3;
const TAG_ADD: u8 = 4;
const TAG_DELETE: u8 = 5;
const TAG_FOREIGN: u8 = 6;
/// A table added with a global commit timestamp (an ingested file): level, meta, ts.
const TAG_ADD_INGESTED: u8 = 7;
/// The storage structure the database was created with (`StorageKind` code).
const TAG_ENGINE: u8 = 8;

/// One atomic change to the set of live tables and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    pub next_file_id: Option<u64>,
    pub last_ts: Option<u64>,
    /// WAL segments with ids below this are fully flushed and may be deleted.
    pub log_number: Option<u64>,
    pub added: Vec<(usize, TableMeta)>,
    pub deleted: Vec<(usize, u64)>,
    /// Numbered files found in the directory that this database did not create: never
    /// deleted, and their numbers never used.
    pub foreign: Vec<u64>,
    /// The storage structure (written at creation; absent means the LSM).
    pub engine: Option<u8>,
}

impl VersionEdit {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        if let Some(v) = self.next_file_id {
            coding::put_u8(&mut b, TAG_NEXT_FILE);
            coding::put_u64(&mut b, v);
        }
        if let Some(v) = self.last_ts {
            coding::put_u8(&mut b, TAG_LAST_TS);
            coding::put_u64(&mut b, v);
        }
        if let Some(v) = self.log_number {
            coding::put_u8(&mut b, TAG_LOG_NUMBER);
            coding::put_u64(&mut b, v);
        }
        for (level, id) in &self.deleted {
            coding::put_u8(&mut b, TAG_DELETE);
            coding::put_u8(&mut b, *level as u8);
            coding::put_u64(&mut b, *id);
        }
        for (level, m) in &self.added {
            coding::put_u8(
                &mut b,
                match m.global_ts {
                    Some(_) => TAG_ADD_INGESTED,
                    None => TAG_ADD,
                },
            );
            coding::put_u8(&mut b, *level as u8);
            m.encode(&mut b);
            if let Some(ts) = m.global_ts {
                coding::put_u64(&mut b, ts);
            }
        }
        for id in &self.foreign {
            coding::put_u8(&mut b, TAG_FOREIGN);
            coding::put_u64(&mut b, *id);
        }
        if let Some(k) = self.engine {
            coding::put_u8(&mut b, TAG_ENGINE);
            coding::put_u8(&mut b, k);
        }
        b
    }

    pub fn decode(buf: &[u8]) -> std::result::Result<Self, &'static str> {
        let mut d = Decoder::new(buf);
        let mut e = VersionEdit::default();
        while !d.is_empty() {
            match d.u8().map_err(|e| e.0)? {
                TAG_NEXT_FILE => e.next_file_id = Some(d.u64().map_err(|e| e.0)?),
                TAG_LAST_TS => e.last_ts = Some(d.u64().map_err(|e| e.0)?),
                TAG_LOG_NUMBER => e.log_number = Some(d.u64().map_err(|e| e.0)?),
                TAG_DELETE => {
                    let level = d.u8().map_err(|e| e.0)? as usize;
                    let id = d.u64().map_err(|e| e.0)?;
                    if level >= NUM_LEVELS {
                        return Err("level out of range");
                    }
                    e.deleted.push((level, id));
                }
                tag @ (TAG_ADD | TAG_ADD_INGESTED) => {
                    let level = d.u8().map_err(|e| e.0)? as usize;
                    if level >= NUM_LEVELS {
                        return Err("level out of range");
                    }
                    let mut m = TableMeta::decode(&mut d).map_err(|e| e.0)?;
                    if tag == TAG_ADD_INGESTED {
                        m.global_ts = Some(d.u64().map_err(|e| e.0)?);
                    }
                    e.added.push((level, m));
                }
                TAG_FOREIGN => e.foreign.push(d.u64().map_err(|e| e.0)?),
                TAG_ENGINE => {
                    let k = d.u8().map_err(|e| e.0)?;
                    if crate::options::StorageKind::from_code(k).is_none() {
                        return Err("unknown storage engine");
                    }
                    e.engine = Some(k);
                }
                _ => return Err("unknown manifest tag"),
            }
        }
        Ok(e)
    }
}

/// The state a manifest describes, rebuilt by replaying edits.
#[derive(Debug, Clone, Default)]
pub struct ManifestState {
    pub next_file_id: u64,
    pub last_ts: u64,
    pub log_number: u64,
    /// Per level: table id -> meta.
    pub levels: Vec<BTreeMap<u64, TableMeta>>,
    /// Numbers of files this database did not create (see [`VersionEdit::foreign`]).
    pub foreign: std::collections::BTreeSet<u64>,
    /// The storage structure the database was created with.
    pub engine: crate::options::StorageKind,
}

impl ManifestState {
    pub fn new() -> Self {
        ManifestState {
            next_file_id: 1,
            last_ts: 0,
            log_number: 0,
            levels: vec![BTreeMap::new(); NUM_LEVELS],
            foreign: Default::default(),
            engine: Default::default(),
        }
    }

    pub fn apply(&mut self, e: &VersionEdit) {
        if let Some(v) = e.next_file_id {
            self.next_file_id = self.next_file_id.max(v);
        }
        if let Some(v) = e.last_ts {
            self.last_ts = self.last_ts.max(v);
        }
        if let Some(v) = e.log_number {
            self.log_number = self.log_number.max(v);
        }
        for (level, id) in &e.deleted {
            self.levels[*level].remove(id);
        }
        for (level, m) in &e.added {
            self.levels[*level].insert(m.id, m.clone());
        }
        self.foreign.extend(e.foreign.iter().copied());
        if let Some(k) = e.engine.and_then(crate::options::StorageKind::from_code) {
            self.engine = k;
        }
    }

    /// One edit that recreates this whole state (the first record of a new manifest).
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            next_file_id: Some(self.next_file_id),
            last_ts: Some(self.last_ts),
            log_number: Some(self.log_number),
            added: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(l, m)| m.values().map(move |t| (l, t.clone())))
                .collect(),
            deleted: Vec::new(),
            foreign: self.foreign.iter().copied().collect(),
            engine: (self.engine != crate::options::StorageKind::Lsm).then(|| self.engine.code()),
        }
    }
}

pub use crate::files::{current_path, manifest_path};

fn current_contents(id: u64) -> String {
    let body = format!("{CURRENT_TAG} MANIFEST-{id:06}");
    format!("{body} {:08x}\n", crc32c::crc32c(body.as_bytes()))
}

/// The storage structure the database in `dir` records, or `None` where there is no
/// database (no `CURRENT`).
pub fn recorded_storage(vfs: &dyn Vfs, dir: &Path) -> Result<Option<crate::options::StorageKind>> {
    if !vfs::exists(vfs, &current_path(dir))? {
        return Ok(None);
    }
    let id = read_current(vfs, dir)?;
    Ok(Some(replay(vfs, dir, id)?.engine))
}

/// Point `CURRENT` at manifest `id` (atomically, durably).
pub fn write_current(vfs: &dyn Vfs, dir: &Path, id: u64) -> Result<()> {
    vfs::write_file_atomic(vfs, &current_path(dir), current_contents(id).as_bytes())
}

/// Read `CURRENT`: the id of the live manifest.
pub fn read_current(vfs: &dyn Vfs, dir: &Path) -> Result<u64> {
    let p = current_path(dir);
    let s = vfs::read_file(vfs, &p)?;
    let bad = || Error::corruption(&p, 0, "CURRENT is damaged");
    let s = std::str::from_utf8(&s).map_err(|_| bad())?;
    let parts: Vec<&str> = s.trim_end().split(' ').collect();
    if parts.len() != 3 || parts[0] != CURRENT_TAG {
        return Err(bad());
    }
    let body = format!("{} {}", parts[0], parts[1]);
    let crc = u32::from_str_radix(parts[2], 16).map_err(|_| bad())?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return Err(bad());
    }
    parts[1]
        .strip_prefix("MANIFEST-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

/// Replay a manifest into its state.
pub fn replay(vfs: &dyn Vfs, dir: &Path, id: u64) -> Result<ManifestState> {
    let p = manifest_path(dir, id);
    let contents = log::read_log(vfs, &p, MAGIC)?;
    if contents.records.is_empty() {
        return Err(Error::corruption(&p, 0, "manifest holds no edits"));
    }
    let mut st = ManifestState::new();
    for (off, rec) in &contents.records {
        let e = VersionEdit::decode(rec)
            .map_err(|why| Error::corruption(&p, *off, format!("bad manifest edit: {why}")))?;
        st.apply(&e);
    }
    Ok(st)
}

/// The live manifest being appended to.
pub struct Manifest {
    id: u64,
    log: LogWriter,
}

impl Manifest {
    /// Write a new manifest holding `state`, then point CURRENT at it.
    pub fn create(vfs: &dyn Vfs, dir: &Path, id: u64, state: &ManifestState) -> Result<Manifest> {
        let p = manifest_path(dir, id);
        let mut log = LogWriter::create(vfs, &p, MAGIC, MANIFEST_VERSION)?;
        log.append(&state.snapshot_edit().encode())?;
        log.sync()?;
        write_current(vfs, dir, id)?;
        Ok(Manifest { id, log })
    }

    /// Append an edit durably.
    pub fn log_edit(&mut self, e: &VersionEdit) -> Result<()> {
        self.log.append(&e.encode())?;
        self.log.sync()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn size(&self) -> u64 {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::InternalKey;
    use crate::vfs::StdVfs;

    fn meta(id: u64) -> TableMeta {
        TableMeta {
            id,
            file_size: 100,
            smallest: InternalKey::new(b"a".to_vec(), 1),
            largest: InternalKey::new(b"z".to_vec(), 1),
            num_entries: 3,
            num_deletes: 0,
            min_ts: 1,
            max_ts: 2,
            global_ts: None,
        }
    }

    #[test]
    fn edits_roundtrip_and_replay() {
        let d = tempfile::tempdir().unwrap();
        let mut st = ManifestState::new();
        st.apply(&VersionEdit {
            next_file_id: Some(10),
            added: vec![(0, meta(3))],
            ..Default::default()
        });
        let mut m = Manifest::create(&StdVfs, d.path(), 5, &st).unwrap();
        let e = VersionEdit {
            last_ts: Some(99),
            log_number: Some(7),
            added: vec![(1, meta(4))],
            deleted: vec![(0, 3)],
            ..Default::default()
        };
        assert_eq!(VersionEdit::decode(&e.encode()).unwrap(), e);
        m.log_edit(&e).unwrap();
        assert_eq!(read_current(&StdVfs, d.path()).unwrap(), 5);
        let r = replay(&StdVfs, d.path(), 5).unwrap();
        assert_eq!(r.next_file_id, 10);
        assert_eq!(r.last_ts, 99);
        assert_eq!(r.log_number, 7);
        assert!(r.levels[0].is_empty());
        assert_eq!(r.levels[1][&4], meta(4));
    }

    #[test]
    fn damaged_current_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        Manifest::create(&StdVfs, d.path(), 1, &ManifestState::new()).unwrap();
        let p = current_path(d.path());
        let mut s = std::fs::read(&p).unwrap();
        s[20] ^= 1;
        std::fs::write(&p, s).unwrap();
        assert!(read_current(&StdVfs, d.path()).unwrap_err().is_corruption());
    }
}
