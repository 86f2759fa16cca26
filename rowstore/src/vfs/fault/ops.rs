//! The `Vfs` operations of [`FaultVfs`]: each checks the rules, records what a
//! power loss must undo, then forwards to the inner `Vfs`.

use super::*;
use crate::vfs::{Metadata, VfsLock};

impl FaultVfs {
    fn create_op(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::Create, path)?;
        let f = self.inner.create(path)?;
        st.shadows.insert(
            path.to_path_buf(),
            Shadow {
                durable_len: 0,
                pages: BTreeMap::new(),
            },
        );
        st.log_dir_op(DirOp::Created(path.to_path_buf()));
        st.created.push(path.to_path_buf());
        drop(st);
        Ok(self.wrap(path, f, 0))
    }

    fn open_op(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.check(&mut self.state.lock(), FaultOp::Open, path)?;
        let f = self.inner.open(path)?;
        Ok(self.wrap(path, f, 0))
    }

    fn open_rw_op(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.check(&mut self.state.lock(), FaultOp::Open, path)?;
        let f = self.inner.open_rw(path)?;
        Ok(self.wrap(path, f, 0))
    }

    fn rename_op(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::Rename, from)?;
        if !self.inner.exists(from)? {
            return Err(io::ErrorKind::NotFound.into());
        }
        let replaced = if self.inner.exists(to)? {
            Some(self.park(&mut st, to)?)
        } else {
            None
        };
        if let Err(e) = self.inner.rename(from, to) {
            if let Some(r) = &replaced {
                let _ = move_path(&*self.inner, r, to);
            }
            return Err(e);
        }
        Self::move_shadows(&mut st, from, to);
        // What was created under the old name now exists under the new one.
        let moved: Vec<PathBuf> = st
            .created
            .iter()
            .filter_map(|c| c.strip_prefix(from).ok().map(|rest| to.join(rest)))
            .collect();
        st.created.extend(moved.into_iter().map(|p| {
            if p.as_os_str().to_string_lossy().ends_with('/') {
                PathBuf::from(p.to_string_lossy().trim_end_matches('/'))
            } else {
                p
            }
        }));
        st.log_dir_op(DirOp::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            replaced,
        });
        Ok(())
    }

    /// Remove a file (`dir` false) or a whole directory (`dir` true): the entry is
    /// parked, so a power loss before the directory's sync brings it back.
    fn remove_op(&self, path: &Path, dir: bool) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::Remove, path)?;
        match (self.inner.metadata(path)?.is_dir, dir) {
            (true, false) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            (false, true) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            _ => {}
        }
        let parked = self.park(&mut st, path)?;
        st.log_dir_op(DirOp::Removed {
            path: path.to_path_buf(),
            parked,
        });
        Ok(())
    }

    fn create_dir_all_op(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::CreateDir, path)?;
        let mut missing = Vec::new();
        let mut p = Some(path);
        while let Some(x) = p {
            if x.as_os_str().is_empty() || self.inner.exists(x)? {
                break;
            }
            missing.push(x.to_path_buf());
            p = x.parent();
        }
        self.inner.create_dir_all(path)?;
        for m in missing.into_iter().rev() {
            st.created.push(m.clone());
            st.log_dir_op(DirOp::Created(m));
        }
        Ok(())
    }

    fn list_op(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check(&mut self.state.lock(), FaultOp::List, dir)?;
        self.inner.list(dir)
    }

    fn metadata_op(&self, path: &Path) -> io::Result<Metadata> {
        if self.state.lock().dead {
            return Err(op_error(FaultKind::Eio));
        }
        self.inner.metadata(path)
    }

    fn sync_dir_op(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::SyncDir, dir)?;
        self.inner.sync_dir(dir)?;
        for (_, dirs) in st.dir_ops.iter_mut() {
            dirs.retain(|d| d != dir);
        }
        // Changes whose every directory is synced are durable; parked files of
        // durable removals are gone for good.
        let mut keep = Vec::new();
        for (op, dirs) in std::mem::take(&mut st.dir_ops) {
            if dirs.is_empty() {
                let gone = match &op {
                    DirOp::Removed { parked, .. } => Some(parked.clone()),
                    DirOp::Renamed {
                        replaced: Some(r), ..
                    } => Some(r.clone()),
                    _ => None,
                };
                if let Some(g) = gone {
                    st.shadows.retain(|k, _| !k.starts_with(&g));
                    let _ = match self.inner.metadata(&g) {
                        Ok(m) if m.is_dir => self.inner.remove_dir_all(&g),
                        _ => self.inner.remove(&g),
                    };
                }
            } else {
                keep.push((op, dirs));
            }
        }
        st.dir_ops = keep;
        Ok(())
    }

    fn lock_op(&self, path: &Path, shared: bool) -> io::Result<Box<dyn VfsLock>> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::Create, path)?;
        let existed = self.inner.exists(path)?;
        let l = match shared {
            true => self.inner.lock_shared(path)?,
            false => self.inner.lock(path)?,
        };
        if !existed {
            st.created.push(path.to_path_buf());
            st.log_dir_op(DirOp::Created(path.to_path_buf()));
        }
        Ok(l)
    }

    fn hard_link_op(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&mut st, FaultOp::Create, to)?;
        self.inner.hard_link(from, to)?;
        st.created.push(to.to_path_buf());
        st.log_dir_op(DirOp::Created(to.to_path_buf()));
        Ok(())
    }
}

impl Vfs for FaultVfs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.after(self.create_op(path))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.after(self.open_op(path))
    }
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.after(self.open_rw_op(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.after(self.rename_op(from, to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.after(self.remove_op(path, false))
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.after(self.remove_op(path, true))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.after(self.create_dir_all_op(path))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.after(self.list_op(dir))
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.metadata_op(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.after(self.sync_dir_op(dir))
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        self.after(self.lock_op(path, false))
    }
    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn VfsLock>> {
        self.after(self.lock_op(path, true))
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.after(self.hard_link_op(from, to))
    }
}
