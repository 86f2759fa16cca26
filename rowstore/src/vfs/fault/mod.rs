//! [`FaultVfs`]: a [`Vfs`] for tests that injects faults and simulates power loss.
//!
//! It forwards every operation to an inner `Vfs` (normally [`super::StdVfs`] on a
//! temporary directory), so the database under test runs on real files, and keeps
//! enough to undo what was never made durable:
//!
//! - for every file written since its last `sync_data`: the size it had then and the
//!   pre-image of every 4 KiB page changed since (read before the first change);
//! - for every directory changed since its last `sync_dir`: the creations, removals
//!   (the removed file is parked outside the tree) and renames, in order.
//!
//! [`FaultVfs::power_loss`] then puts the files back as a machine that lost power would
//! find them: [`PowerLoss::Clean`] loses every unsynced page and every unsynced name
//! change; [`PowerLoss::Torn`] keeps a random (seeded) subset of the unsynced pages, so
//! a write the disk was part-way through leaves some of its pages new and others old
//! (names still revert). After a power loss every operation fails with `EIO` (the
//! process is dead) until [`FaultVfs::revive`].
//!
//! Faults: a [`FaultRule`] makes matching operations fail (`EIO`, `ENOSPC`, or a torn
//! write that stores part of the buffer before failing), after a number of matching
//! operations have passed, a number of times or forever, or at random (seeded).
//!
//! Not modelled: a rename of a file that is still open and written to keeps its pages
//! under the old name.

use super::{Vfs, VfsFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod file;
mod ops;
#[cfg(test)]
mod tests;

use file::FaultFile;

const PAGE: u64 = 4096;

/// Which operations a [`FaultRule`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Create,
    Open,
    Read,
    /// `write_at` and `append`.
    Write,
    /// `sync_data` of a file.
    Sync,
    SyncDir,
    Rename,
    Remove,
    SetLen,
    Allocate,
    List,
    CreateDir,
    /// Every operation above.
    Any,
}

/// What a matching operation does instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fails with `EIO` and changes nothing.
    Eio,
    /// Fails with `ENOSPC` and changes nothing.
    NoSpace,
    /// A write stores the first half of its buffer, then fails with `EIO`. Other
    /// operations fail with `EIO`.
    TornWrite,
    /// The power goes out as this operation starts: it fails with `EIO`, and so does
    /// everything after it, and the files are put back as [`FaultVfs::power_loss`]
    /// describes.
    PowerLoss(PowerLoss),
}

/// A fault to inject: the first `skip` matching operations pass, the next `times` fail.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub op: FaultOp,
    /// Only operations on paths containing this string match.
    pub path_contains: Option<String>,
    pub skip: u64,
    pub times: u64,
    pub kind: FaultKind,
    /// Fail only this fraction of the matching operations (seeded, see
    /// [`FaultVfs::with_seed`]); 1.0 fails all.
    pub probability: f64,
}

impl FaultRule {
    /// Every matching operation fails with `kind`, forever.
    pub fn new(op: FaultOp, kind: FaultKind) -> Self {
        FaultRule {
            op,
            path_contains: None,
            skip: 0,
            times: u64::MAX,
            kind,
            probability: 1.0,
        }
    }
    /// Only on paths containing `s`.
    pub fn on(mut self, s: impl Into<String>) -> Self {
        self.path_contains = Some(s.into());
        self
    }
    /// Let the first `n` matching operations pass.
    pub fn after(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }
    /// Fail `n` times, then pass again.
    pub fn times(mut self, n: u64) -> Self {
        self.times = n;
        self
    }
    /// Fail each matching operation with probability `p`.
    pub fn with_probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }
}

/// How a simulated power loss treats data that was written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// Every unsynced page reverts.
    Clean,
    /// Each unsynced page independently keeps its new content or reverts (seeded).
    Torn { seed: u64 },
}

#[derive(Debug)]
struct Shadow {
    /// Size at the last sync.
    durable_len: u64,
    /// Page number -> content at the last sync (shorter than a page at the end of the
    /// file, empty past it).
    pages: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug)]
enum DirOp {
    Created(PathBuf),
    Removed {
        path: PathBuf,
        parked: PathBuf,
    },
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

impl DirOp {
    /// Directories whose sync makes this change durable.
    fn dirs(&self) -> Vec<PathBuf> {
        let p = |x: &Path| super::parent_dir(x).to_path_buf();
        match self {
            DirOp::Created(x) => vec![p(x)],
            DirOp::Removed { path, .. } => vec![p(path)],
            DirOp::Renamed { from, to, .. } => vec![p(from), p(to)],
        }
    }
}

#[derive(Debug)]
struct State {
    dead: bool,
    rules: Vec<(FaultRule, u64)>,
    rng: u64,
    shadows: HashMap<PathBuf, Shadow>,
    /// Unsynced name changes in order, each with the directories still to sync.
    dir_ops: Vec<(DirOp, Vec<PathBuf>)>,
    park_seq: u64,
    created: Vec<PathBuf>,
    faults_injected: u64,
    /// A `FaultKind::PowerLoss` rule fired: carried out once the lock is released.
    crash: Option<PowerLoss>,
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn op_error(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        _ => io::Error::from_raw_os_error(libc::EIO),
    }
}

impl State {
    /// Whether `op` on `path` must fail, and how.
    fn fault(&mut self, op: FaultOp, path: &Path) -> Option<FaultKind> {
        if self.dead {
            return Some(FaultKind::Eio);
        }
        let s = path.to_string_lossy();
        for i in 0..self.rules.len() {
            let (r, seen) = &self.rules[i];
            if !(r.op == op || r.op == FaultOp::Any)
                || r.path_contains.as_deref().is_some_and(|c| !s.contains(c))
            {
                continue;
            }
            let n = *seen;
            self.rules[i].1 += 1;
            let r = &self.rules[i].0;
            if n < r.skip || n - r.skip >= r.times {
                continue;
            }
            let (p, kind) = (r.probability, r.kind);
            if p < 1.0 {
                let x = splitmix(&mut self.rng) as f64 / u64::MAX as f64;
                if x >= p {
                    continue;
                }
            }
            self.faults_injected += 1;
            if let FaultKind::PowerLoss(mode) = kind {
                self.crash = Some(mode);
                self.dead = true;
            }
            return Some(kind);
        }
        None
    }

    /// Record the pre-image of the pages of `[off, off+len)` before a change.
    fn before_change(
        &mut self,
        path: &Path,
        file: &dyn VfsFile,
        off: u64,
        len: u64,
    ) -> io::Result<()> {
        let cur = file.len()?;
        let sh = self.shadows.entry(path.to_path_buf()).or_insert(Shadow {
            durable_len: cur,
            pages: BTreeMap::new(),
        });
        if len == 0 {
            return Ok(());
        }
        for p in off / PAGE..=(off + len - 1) / PAGE {
            if sh.pages.contains_key(&p) {
                continue;
            }
            let start = p * PAGE;
            let img = if start >= cur {
                Vec::new()
            } else {
                let mut b = vec![0u8; (cur - start).min(PAGE) as usize];
                file.read_at(&mut b, start)?;
                b
            };
            sh.pages.insert(p, img);
        }
        Ok(())
    }

    fn log_dir_op(&mut self, op: DirOp) {
        let dirs = op.dirs();
        self.dir_ops.push((op, dirs));
    }

    fn park_path(&mut self, park_root: &Path) -> PathBuf {
        self.park_seq += 1;
        park_root.join(format!("parked-{}", self.park_seq))
    }
}

/// A [`Vfs`] that injects faults and simulates power loss (see the module docs).
#[derive(Debug, Clone)]
pub struct FaultVfs {
    inner: Arc<dyn Vfs>,
    state: Arc<Mutex<State>>,
    /// Where removed files wait until their removal is durable.
    park: Arc<tempfile_dir::ParkDir>,
}

/// A private directory for parked files, removed on drop.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct ParkDir(PathBuf);

    impl ParkDir {
        pub fn new() -> std::io::Result<Self> {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "ldb-faultvfs-{}-{n}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ));
            std::fs::create_dir_all(&p)?;
            Ok(ParkDir(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ParkDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl FaultVfs {
    /// A `FaultVfs` over the operating system's file system.
    pub fn new() -> Self {
        Self::over(Arc::new(super::StdVfs))
    }

    /// A `FaultVfs` over `inner`.
    pub fn over(inner: Arc<dyn Vfs>) -> Self {
        FaultVfs {
            inner,
            state: Arc::new(Mutex::new(State {
                dead: false,
                rules: Vec::new(),
                rng: 0x5EED,
                shadows: HashMap::new(),
                dir_ops: Vec::new(),
                park_seq: 0,
                created: Vec::new(),
                faults_injected: 0,
                crash: None,
            })),
            park: Arc::new(tempfile_dir::ParkDir::new().expect("creating a temporary directory")),
        }
    }

    /// Seed the generator behind probabilistic rules.
    pub fn with_seed(self, seed: u64) -> Self {
        self.state.lock().rng = seed;
        self
    }

    /// Add a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.state.lock().rules.push((rule, 0));
    }

    /// Remove every fault rule (the fault is "gone").
    pub fn clear_faults(&self) {
        self.state.lock().rules.clear();
    }

    /// How many operations failed because of a rule.
    pub fn faults_injected(&self) -> u64 {
        self.state.lock().faults_injected
    }

    /// Every file and directory created through this `Vfs`, in order (a rename adds the
    /// new names of what it moved).
    pub fn created(&self) -> Vec<PathBuf> {
        self.state.lock().created.clone()
    }

    /// Bytes written but not yet synced, over all files (pages, approximately).
    pub fn unsynced_pages(&self) -> usize {
        self.state
            .lock()
            .shadows
            .values()
            .map(|s| s.pages.len())
            .sum()
    }

    /// Whether a power loss happened and nothing works any more.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Simulate a power loss now: from here on every operation fails with `EIO`, and
    /// the files on disk are put back to what survives (see [`PowerLoss`]). Drop the
    /// database that used this `Vfs`, then [`FaultVfs::revive`] (or use a new `Vfs`)
    /// and open it again.
    pub fn power_loss(&self, mode: PowerLoss) -> io::Result<()> {
        let mut st = self.state.lock();
        st.dead = true;
        st.crash = None;
        let mut rng = match mode {
            PowerLoss::Clean => 0,
            PowerLoss::Torn { seed } => seed ^ 0xA5A5_5A5A,
        };
        let shadows: Vec<(PathBuf, Shadow)> = st.shadows.drain().collect();
        for (path, sh) in shadows {
            let f = match self.inner.open_rw(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let cur = f.len()?;
            let keep: BTreeMap<u64, bool> = sh
                .pages
                .keys()
                .map(|&p| {
                    let k = match mode {
                        PowerLoss::Clean => false,
                        PowerLoss::Torn { .. } => splitmix(&mut rng) & 1 == 1,
                    };
                    (p, k)
                })
                .collect();
            // The size survives if any kept page reaches past the durable size.
            let final_len = if keep
                .iter()
                .any(|(&p, &k)| k && (p + 1) * PAGE > sh.durable_len && p * PAGE < cur)
            {
                cur
            } else {
                sh.durable_len
            };
            for (p, img) in &sh.pages {
                if keep[p] {
                    continue;
                }
                let start = p * PAGE;
                if !img.is_empty() {
                    f.write_at(img, start)?;
                }
                // What was past the durable end reads as zeros if the size survives.
                let zero_from = start + img.len() as u64;
                let zero_to = ((p + 1) * PAGE).min(final_len);
                if zero_to > zero_from && zero_from >= sh.durable_len {
                    f.write_at(&vec![0u8; (zero_to - zero_from) as usize], zero_from)?;
                }
            }
            f.set_len(final_len)?;
            f.sync_data()?;
        }
        let ops: Vec<(DirOp, Vec<PathBuf>)> = st.dir_ops.drain(..).collect();
        for (op, _) in ops.into_iter().rev() {
            match op {
                DirOp::Created(p) => match self.inner.metadata(&p) {
                    Ok(m) if m.is_dir => self.inner.remove_dir_all(&p)?,
                    Ok(_) => self.inner.remove(&p)?,
                    Err(_) => {}
                },
                DirOp::Removed { path, parked } => {
                    if self.inner.exists(&parked)? {
                        move_path(&*self.inner, &parked, &path)?;
                    }
                }
                DirOp::Renamed { from, to, replaced } => {
                    if self.inner.exists(&to)? {
                        self.inner.rename(&to, &from)?;
                    }
                    if let Some(r) = replaced
                        && self.inner.exists(&r)?
                    {
                        move_path(&*self.inner, &r, &to)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Make the `Vfs` usable again after [`FaultVfs::power_loss`] (fault rules are
    /// kept).
    pub fn revive(&self) {
        self.state.lock().dead = false;
    }

    /// Carry out a power loss a rule asked for while an operation held the lock.
    fn after<T>(&self, r: io::Result<T>) -> io::Result<T> {
        let crash = self.state.lock().crash.take();
        if let Some(mode) = crash
            && let Err(e) = self.power_loss(mode)
        {
            tracing::error!(error = %e, "simulated power loss failed");
        }
        r
    }

    fn check(&self, st: &mut State, op: FaultOp, path: &Path) -> io::Result<()> {
        match st.fault(op, path) {
            Some(k) => Err(op_error(k)),
            None => Ok(()),
        }
    }

    /// Re-key shadows under `from` (a file or a directory) to `to`.
    fn move_shadows(st: &mut State, from: &Path, to: &Path) {
        let keys: Vec<PathBuf> = st
            .shadows
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for k in keys {
            let sh = st.shadows.remove(&k).expect("listed above");
            let rest = k.strip_prefix(from).expect("filtered above");
            let nk = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            st.shadows.insert(nk, sh);
        }
    }

    /// Park `path` outside the tree (a removal that can still be undone).
    fn park(&self, st: &mut State, path: &Path) -> io::Result<PathBuf> {
        let parked = st.park_path(self.park.path());
        move_path(&*self.inner, path, &parked)?;
        Self::move_shadows(st, path, &parked);
        Ok(parked)
    }

    fn wrap(&self, path: &Path, f: Box<dyn VfsFile>, pos: u64) -> Box<dyn VfsFile> {
        Box::new(FaultFile {
            path: path.to_path_buf(),
            inner: f,
            state: self.state.clone(),
            vfs: self.clone(),
            append_pos: AtomicU64::new(pos),
        })
    }
}

impl Default for FaultVfs {
    fn default() -> Self {
        Self::new()
    }
}

/// Rename, falling back to copy + remove across file systems.
fn move_path(vfs: &dyn Vfs, from: &Path, to: &Path) -> io::Result<()> {
    match vfs.rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            if vfs.metadata(from)?.is_dir {
                copy_tree(from, to)?;
                std::fs::remove_dir_all(from)
            } else {
                std::fs::copy(from, to)?;
                std::fs::remove_file(from)
            }
        }
        Err(e) => Err(e),
    }
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), t)?;
        }
    }
    Ok(())
}
