//! A file opened through [`FaultVfs`]: writes save the pages they change first,
//! `sync_data` makes them durable (or cuts the power mid-way).

use super::*;

#[derive(Debug)]
pub(super) struct FaultFile {
    pub(super) path: PathBuf,
    pub(super) inner: Box<dyn VfsFile>,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) vfs: FaultVfs,
    pub(super) append_pos: AtomicU64,
}

impl FaultFile {
    fn write(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let fault = st.fault(FaultOp::Write, &self.path);
        if fault.is_some_and(|k| k != FaultKind::TornWrite) {
            return Err(op_error(fault.expect("checked")));
        }
        let n = if fault.is_some() {
            buf.len() / 2
        } else {
            buf.len()
        };
        st.before_change(&self.path, &*self.inner, off, n as u64)?;
        self.inner.write_at(&buf[..n], off)?;
        match fault {
            Some(k) => Err(op_error(k)),
            None => Ok(()),
        }
    }
}

impl FaultFile {
    fn read_at_op(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(k) = self.state.lock().fault(FaultOp::Read, &self.path) {
            return Err(op_error(k));
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at_op(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(buf, offset)
    }

    fn append_op(&self, buf: &[u8]) -> io::Result<()> {
        let off = self.append_pos.load(Ordering::Relaxed);
        let r = self.write(buf, off);
        if r.is_ok() {
            self.append_pos
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        r
    }

    fn sync_data_op(&self) -> io::Result<()> {
        // The sync runs without the lock, so a power loss can strike while it is under
        // way (then none of it counts). Pages changed while it ran stay unsynced.
        let (pages, len) = {
            let mut st = self.state.lock();
            if let Some(k) = st.fault(FaultOp::Sync, &self.path) {
                return Err(op_error(k));
            }
            let pages: Vec<u64> = st
                .shadows
                .get(&self.path)
                .map(|sh| sh.pages.keys().copied().collect())
                .unwrap_or_default();
            (pages, self.inner.len()?)
        };
        self.inner.sync_data()?;
        let mut st = self.state.lock();
        if st.dead {
            return Err(op_error(FaultKind::Eio));
        }
        if let Some(sh) = st.shadows.get_mut(&self.path) {
            for p in pages {
                sh.pages.remove(&p);
            }
            sh.durable_len = len;
            if sh.pages.is_empty() {
                st.shadows.remove(&self.path);
            }
        }
        Ok(())
    }

    fn set_len_op(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(k) = st.fault(FaultOp::SetLen, &self.path) {
            return Err(op_error(k));
        }
        let cur = self.inner.len()?;
        if len < cur {
            st.before_change(&self.path, &*self.inner, len, cur - len)?;
        } else {
            st.before_change(&self.path, &*self.inner, cur, 0)?;
        }
        self.inner.set_len(len)
    }

    fn allocate_op(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(k) = st.fault(FaultOp::Allocate, &self.path) {
            return Err(op_error(k));
        }
        let cur = self.inner.len()?;
        st.before_change(&self.path, &*self.inner, cur, 0)?;
        self.inner.allocate(len)
    }

    fn len_op(&self) -> io::Result<u64> {
        if self.state.lock().dead {
            return Err(op_error(FaultKind::Eio));
        }
        self.inner.len()
    }

    fn map_op(&self) -> io::Result<Option<memmap2::Mmap>> {
        self.inner.map()
    }

    fn will_need_op(&self, offset: u64, len: u64) {
        self.inner.will_need(offset, len)
    }
}

impl VfsFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.vfs.after(self.read_at_op(buf, offset))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.vfs.after(self.write_at_op(buf, offset))
    }
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.vfs.after(self.append_op(buf))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.vfs.after(self.sync_data_op())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.vfs.after(self.set_len_op(len))
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.vfs.after(self.allocate_op(len))
    }
    fn len(&self) -> io::Result<u64> {
        self.len_op()
    }
    fn map(&self) -> io::Result<Option<memmap2::Mmap>> {
        self.map_op()
    }
    fn will_need(&self, offset: u64, len: u64) {
        self.will_need_op(offset, len)
    }
}
