//! The version set: the manifest and the current version of the table tree, changed
//! only by `install` (log the edit durably, apply it, publish a new super-version), and
//! the file-number counter with its reservation in the manifest.

use super::*;

pub(super) struct State {
    /// The live manifest, appended to by every edit (`None` when read-only).
    pub(super) manifest: Option<Manifest>,
    pub(super) mstate: ManifestState,
    pub(super) version: Arc<Version>,
    pub(super) busy_levels: [bool; NUM_LEVELS],
    pub(super) compact_pointer: Vec<Option<Vec<u8>>>,
}

impl Inner {
    /// Install a new version: log `edit` (completed with the added and deleted tables
    /// and the file-id counter) durably in the manifest, apply it to the current
    /// version, and publish a super-version with it (without `flushed`, the immutable
    /// memtables whose tables these are). A failure to log is fatal.
    pub(super) fn install(
        &self,
        edit: VersionEdit,
        deleted: &[(usize, u64)],
        added: &[(usize, Arc<Table>)],
        flushed: &[Arc<MemTable>],
    ) -> Result<()> {
        let mut st = self.state.lock();
        self.install_locked(&mut st, edit, deleted, added, flushed)
    }

    /// [`Inner::install`] for a caller holding the state lock.
    pub(super) fn install_locked(
        &self,
        st: &mut State,
        mut edit: VersionEdit,
        deleted: &[(usize, u64)],
        added: &[(usize, Arc<Table>)],
        flushed: &[Arc<MemTable>],
    ) -> Result<()> {
        edit.next_file_id = Some(self.next_file_id.load(Ordering::Relaxed));
        edit.last_ts = edit.last_ts.map(|t| t.max(st.mstate.last_ts));
        edit.added = added.iter().map(|(l, t)| (*l, t.meta().clone())).collect();
        edit.deleted = deleted.to_vec();
        if let Err(e) = self.log_edit(st, &edit) {
            return Err(self.fail(e));
        }
        let mut v = st.version.apply(deleted, added);
        if let Some(t) = &self.tree {
            v.tree = Some(t.current());
        }
        st.version = Arc::new(v);
        debug_assert!(st.version.check_invariants(), "level invariant broken");
        let cur = self.sv.load_full();
        let imms = cur
            .imms
            .iter()
            .filter(|m| !flushed.iter().any(|f| Arc::ptr_eq(m, f)))
            .cloned()
            .collect();
        self.sv.store(Arc::new(SuperVersion {
            mem: cur.mem.clone(),
            imms,
            version: st.version.clone(),
        }));
        Ok(())
    }

    /// Append an edit to the manifest (durably) and to the in-memory manifest state,
    /// rotating the manifest when it grows large.
    pub(super) fn log_edit(&self, st: &mut State, edit: &VersionEdit) -> Result<()> {
        let m = st.manifest.as_mut().ok_or(Error::ReadOnly)?;
        m.log_edit(edit)?;
        let (size, old) = (m.size(), m.id());
        st.mstate.apply(edit);
        if size > MANIFEST_ROTATE_BYTES {
            let id = self.alloc_id_locked(st)?;
            st.manifest = Some(Manifest::create(&*self.vfs, &self.dir, id, &st.mstate)?);
            vfs::remove_file_if_exists(&*self.vfs, &manifest::manifest_path(&self.dir, old))?;
        }
        Ok(())
    }

    /// A new file id. Ids come from one counter and are reserved in the manifest
    /// ahead of use ([`open::ID_CHUNK`] at a time), so every file the engine creates
    /// has an id below the reservation the manifest records.
    pub(super) fn alloc_id(&self) -> Result<u64> {
        let id = self.next_id();
        if id < self.id_limit.load(Ordering::Acquire) {
            return Ok(id);
        }
        let mut st = self.state.lock();
        self.reserve_ids(&mut st, id)?;
        Ok(id)
    }

    /// [`Inner::alloc_id`] for a caller that holds the state lock.
    pub(super) fn alloc_id_locked(&self, st: &mut State) -> Result<u64> {
        let id = self.next_id();
        self.reserve_ids(st, id)?;
        Ok(id)
    }

    /// The next number from the counter that no foreign file holds.
    pub(super) fn next_id(&self) -> u64 {
        loop {
            let id = self.next_file_id.fetch_add(1, Ordering::Relaxed);
            if !self.foreign_ids.contains(&id) {
                return id;
            }
        }
    }

    pub(super) fn reserve_ids(&self, st: &mut State, id: u64) -> Result<()> {
        if id < self.id_limit.load(Ordering::Acquire) {
            return Ok(());
        }
        let limit = id + 1 + open::ID_CHUNK;
        let edit = VersionEdit {
            next_file_id: Some(limit),
            ..Default::default()
        };
        st.manifest
            .as_mut()
            .ok_or(Error::ReadOnly)?
            .log_edit(&edit)?;
        st.mstate.apply(&edit);
        self.id_limit.store(limit, Ordering::Release);
        Ok(())
    }
}
