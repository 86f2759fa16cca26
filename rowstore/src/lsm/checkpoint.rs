//! In-process checkpoints: a consistent copy of the database taken while writers run.

use super::*;
use crate::backup::{self, CopyPlan, TableSource, TreeSource, WalSource};

impl LsmEngine {
    /// Write a consistent copy of the database into `target` (which must not exist),
    /// on `dst_vfs` (`None`: this database's own `Vfs`), while writers keep running.
    ///
    /// The copy holds every write acknowledged before the call: the live files are
    /// captured under the commit pipeline's WAL lock (the tables of the current version
    /// and every WAL segment after it, the live segment up to the end of its last whole
    /// record), then copied without holding any lock. Tables are hard-linked when the
    /// copy is on the same `Vfs` and file system, else copied and verified by checksum.
    /// Open the copy like any database.
    pub fn checkpoint(&self, target: &Path, dst_vfs: Option<&dyn Vfs>) -> Result<()> {
        self.inner.check_open()?;
        if !self.inner.opts.wal_enabled {
            // Without a WAL, acknowledged writes live only in the memtable.
            self.flush()?;
        }
        let inner = &self.inner;
        let src = &*inner.vfs;
        let dst = dst_vfs.unwrap_or(src);
        let same = std::ptr::addr_eq(src as *const dyn Vfs, dst as *const dyn Vfs);
        // Capture: WAL lock first (no commit writes, no segment switch), then the
        // version state (no flush or compaction installs an edit).
        let (state, version, wals) = {
            let wal = inner.wal.lock();
            let st = inner.state.lock();
            let state = st.mstate.clone();
            let version = st.version.clone();
            let live = wal.as_ref().map(|w| (w.path().to_path_buf(), w.len()));
            let mut wals = Vec::new();
            for (id, p) in backup::wal_segments(src, &inner.dir, state.log_number)? {
                // An open handle keeps the bytes even if a flush removes the file.
                let f = src
                    .open_log(&p)
                    .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
                let len = live.as_ref().filter(|(lp, _)| *lp == p).map(|(_, l)| *l);
                wals.push((id, p, f, len));
            }
            (state, version, wals)
        };
        let mut sources = Vec::new();
        for (id, p, f, len) in wals {
            let src = match len {
                Some(len) => WalSource::File(f, len),
                None => {
                    // A segment waiting for flush: complete and synced, followed by
                    // preallocated zeros.
                    let data = vfs::read_all(&*f, &p)?;
                    let c = log::read_log_bytes(&p, &data, WAL_MAGIC)?;
                    let mut data = data;
                    data.truncate(c.valid_len as usize);
                    WalSource::Bytes(data)
                }
            };
            sources.push((id, src));
        }
        let tables: Vec<(u64, TableSource)> = version
            .levels
            .iter()
            .flat_map(|l| l.iter().map(|t| (t.id(), TableSource::Path)))
            .collect();
        let tree = version.tree.clone().map(TreeSource::Pinned);
        let mut plan = Some(CopyPlan {
            state,
            tables,
            wals: sources,
            tree,
        });
        let r = backup::into_new_dir(dst, target, |tmp| {
            let plan = plan
                .take()
                .ok_or_else(|| Error::InvalidArgument("checkpoint plan already used".into()))?;
            backup::write_copy(src, &inner.dir, dst, tmp, plan, same)
        });
        // The version (and so every table file in it) stays pinned until here.
        drop(version);
        r
    }
}
