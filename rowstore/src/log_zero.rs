//! Zeroing ahead of a preallocated log, off the commit path.
//!
//! `fallocate` reserves a log's blocks but leaves them *unwritten* extents: the first
//! fdatasync after an append into such a block must also commit the extent's conversion
//! to written, a metadata write on top of the data. On ext4 here that made a group
//! commit's sync of 8 KiB take 170 µs instead of 110 µs, and a 150 KiB batch's 290 µs
//! instead of 135 µs. Writing real zeros over the reserved range, and syncing them, turns
//! the extents into written ones before the log reaches them; PostgreSQL zero-fills its
//! WAL segments for the same reason. Doing it inline would hand the cost to one unlucky
//! commit, so a helper thread per log does it a chunk at a time, ahead of the end.
//!
//! Safety: the helper only ever writes zeros past the log's end, which recovery reads as
//! the end of the log exactly as it reads fallocated space. The writer announces each
//! append's range before writing it ([`ZeroAhead::claim`]); the helper takes a chunk only
//! from whole pages past the announced end, and a writer whose append would overlap a
//! chunk being zeroed waits for that chunk first. So zeros never land on log records.

use crate::vfs::VfsFile;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// Zeroed per write and sync.
const CHUNK: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// How far past the end the helper keeps zeroed (between half of it and all of it):
/// ample for the fastest log here (~60 MB/s of batches is ~15 ms of appends per MiB),
/// without writing megabytes for a log that stays small.
const AHEAD: u64 = 2 << 20;

#[derive(Default)]
struct State {
    /// The end of everything the writer has written or is about to write.
    end: u64,
    /// The file's reserved size: the helper zeroes only below it.
    limit: u64,
    /// Everything below this is either log records or zeros made durable.
    zeroed: u64,
    /// The chunk being zeroed right now.
    busy: Option<(u64, u64)>,
    helper_idle: bool,
    stop: bool,
    /// Times the helper woke from waiting for work (a figure for tests).
    wakes: u64,
}

impl State {
    /// The chunk the helper should zero next, if any: whole pages past the end (the
    /// page holding the end belongs to the writer), below the reserved size, once the
    /// zeroed range ahead of the end has shrunk below half the lookahead; a whole chunk
    /// at a time (one sync per chunk).
    fn next_chunk(&self) -> Option<(u64, u64)> {
        let from = self.zeroed.max(self.end.div_ceil(PAGE) * PAGE);
        let to = (from + CHUNK).min(self.limit / PAGE * PAGE);
        (from < to && from < self.end + AHEAD / 2).then_some((from, to))
    }

    /// Whether the helper sleeps with work waiting: only then is it woken (not on every
    /// append, which would cost every commit a futex call and a wake-up of a thread
    /// that finds nothing to do).
    fn idle_with_work(&self) -> bool {
        self.helper_idle && self.next_chunk().is_some()
    }
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

/// The helper of one log; dropping it stops the helper (after its current chunk).
pub(crate) struct ZeroAhead {
    shared: Arc<Shared>,
}

impl ZeroAhead {
    /// Start zeroing `file` between `end` and the reserved size (see [`Self::reserved`]).
    /// `None` if no thread could be started. A file that cannot zero-fill (an encrypting
    /// or simulated one) refuses the helper's first chunk and the helper stops; either
    /// way the log works as before, on fallocated space.
    pub(crate) fn start(file: Arc<dyn VfsFile>, end: u64) -> Option<ZeroAhead> {
        let shared = Arc::new(Shared {
            st: Mutex::new(State {
                end,
                zeroed: end,
                ..State::default()
            }),
            cv: Condvar::new(),
        });
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("ldb-wal-zero".into())
            .spawn(move || helper(&sh, &*file))
            .ok()?;
        Some(ZeroAhead { shared })
    }

    /// The file is now reserved up to `limit` bytes.
    pub(crate) fn reserved(&self, limit: u64) {
        let mut st = self.shared.st.lock();
        st.limit = limit;
        if st.idle_with_work() {
            self.shared.cv.notify_all();
        }
    }

    /// The writer is about to write `[start, end)`: wait while a chunk being zeroed
    /// overlaps it, then announce the new end so no later chunk can.
    pub(crate) fn claim(&self, start: u64, end: u64) {
        let mut st = self.shared.st.lock();
        while st.busy.is_some_and(|(a, b)| a < end && start < b) {
            self.shared.cv.wait(&mut st);
        }
        st.end = st.end.max(end);
        if st.idle_with_work() {
            self.shared.cv.notify_all();
        }
    }

    /// Whether everything from the log's end up to `to` is zeroed on disk (or log
    /// records): zeros written there change nothing stored.
    pub(crate) fn zeroed_through(&self, to: u64) -> bool {
        self.shared.st.lock().zeroed >= to
    }

    /// Whether the helper waits for work, and how often it woke from waiting so far.
    #[cfg(test)]
    pub(crate) fn idle_and_wakes(&self) -> (bool, u64) {
        let st = self.shared.st.lock();
        (st.helper_idle, st.wakes)
    }

    /// The log was cut back to `len` and its reservation dropped (a failed write);
    /// whatever the helper zeroes from now on lies past `len`.
    pub(crate) fn truncated(&self, len: u64) {
        let mut st = self.shared.st.lock();
        while st.busy.is_some() {
            self.shared.cv.wait(&mut st);
        }
        st.end = len;
        st.zeroed = st.zeroed.min(len);
        st.limit = 0;
    }
}

impl Drop for ZeroAhead {
    /// Stops the helper without waiting for it: a log is dropped on the commit path (a
    /// memtable switch), which must not wait for a chunk of zeros to reach the disk. A
    /// chunk under way still lands past the end of the old log, where zeros are what
    /// recovery expects; the helper's handle keeps the file open until then.
    fn drop(&mut self) {
        self.shared.st.lock().stop = true;
        self.shared.cv.notify_all();
    }
}

fn helper(sh: &Shared, file: &dyn VfsFile) {
    let mut st = sh.st.lock();
    loop {
        if st.stop {
            return;
        }
        let Some((from, to)) = st.next_chunk() else {
            st.helper_idle = true;
            sh.cv.wait(&mut st);
            st.helper_idle = false;
            st.wakes += 1;
            continue;
        };
        st.busy = Some((from, to));
        drop(st);
        let r = file.zero_fill(from, to - from);
        st = sh.st.lock();
        st.busy = None;
        sh.cv.notify_all();
        match r {
            Ok(()) => st.zeroed = to,
            Err(e) => {
                // Nothing depends on it: the log goes on over fallocated space.
                tracing::debug!(error = %e, "zeroing ahead of the log stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::log::{LogWriter, Tail, read_log};
    use crate::vfs::StdVfs;

    const MAGIC: &[u8; 8] = b"ZEROTEST";

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Records of every size, some crossing the helper's chunks, appended while it
    /// zeroes ahead (the writes padded with zeros to the end of each page they enter):
    /// every record reads back intact and the rest of the file is zeros.
    #[test]
    fn zeroing_ahead_never_touches_records() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("z.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        w.preallocate(64 << 20);
        assert!(w.zero.is_some(), "the std file zero-fills");
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut written = Vec::new();
        while w.len() < 12 << 20 {
            let n = match xorshift(&mut x) % 10 {
                0 => (xorshift(&mut x) % (600 << 10)) as usize,
                1..=3 => (xorshift(&mut x) % 20_000) as usize,
                _ => (xorshift(&mut x) % 300) as usize,
            };
            let b = (written.len() % 251) as u8 | 1;
            let rec = vec![b; n];
            // Framed and written as the commit path does: a padded write hands its
            // buffer back as it was.
            let mut framed = Vec::new();
            w.framing().frame(&mut framed, &rec, w.synced_len());
            let before = framed.clone();
            w.write_framed(&mut framed).unwrap();
            assert_eq!(framed, before);
            written.push(rec);
            if xorshift(&mut x).is_multiple_of(4) {
                w.sync().unwrap();
                // Give the helper time to run into the end now and then.
                if xorshift(&mut x).is_multiple_of(8) {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        }
        w.sync().unwrap();
        let end = w.len();
        // Most writes entering a new page carried zeros to its end (see
        // `LogWriter::write_framed`); the records and the zeros past the end must read
        // back unchanged all the same.
        assert!(w.padded > written.len() as u64 / 10, "{} padded", w.padded);
        drop(w);
        let c = read_log(&StdVfs, &p, MAGIC).unwrap();
        assert_eq!(c.tail, Tail::Clean);
        assert_eq!(c.valid_len, end);
        assert_eq!(c.records.len(), written.len());
        for (i, (r, want)) in c.records.iter().zip(&written).enumerate() {
            assert!(r.1 == *want, "record {i} damaged");
        }
        let data = std::fs::read(&p).unwrap();
        assert!(data[end as usize..].iter().all(|&b| b == 0));
    }

    /// A cut-back log (a failed write) keeps working with the helper, and what follows
    /// the cut reads back.
    #[test]
    fn truncation_while_zeroing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        w.preallocate(64 << 20);
        for i in 0..200u32 {
            w.append(&vec![i as u8 | 1; 5000]).unwrap();
        }
        w.sync().unwrap();
        let keep = w.len();
        w.append(&[9u8; 70_000]).unwrap();
        w.truncate_to(keep).unwrap();
        w.preallocate(64 << 20);
        for _ in 0..300 {
            w.append(&[3u8; 9000]).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let c = read_log(&StdVfs, &p, MAGIC).unwrap();
        assert_eq!(c.tail, Tail::Clean);
        assert_eq!(c.records.len(), 500);
        assert!(
            c.records[..200]
                .iter()
                .enumerate()
                .all(|(i, r)| r.1 == vec![i as u8 | 1; 5000])
        );
        assert!(c.records[200..].iter().all(|r| r.1 == [3u8; 9000]));
    }

    /// Appends that leave the helper nothing to do do not wake it: a wake-up per commit
    /// costs every commit a futex call and a context switch.
    #[test]
    fn appends_wake_the_helper_only_when_it_has_work() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.log");
        let mut w = LogWriter::create(&StdVfs, &p, MAGIC, 2).unwrap();
        w.preallocate(64 << 20);
        let idle = |w: &LogWriter| {
            for _ in 0..2000 {
                let (idle, wakes) = w.zero.as_ref().unwrap().idle_and_wakes();
                if idle {
                    return wakes;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            panic!("the helper never went idle");
        };
        let before = idle(&w);
        // 4,000 appends of ~100 bytes: ~0.4 MiB, less than the lookahead's half.
        for _ in 0..4000 {
            w.append(&[7u8; 100]).unwrap();
        }
        w.sync().unwrap();
        let after = idle(&w);
        assert!(after - before <= 2, "woken {} times", after - before);
        // Far enough to need more zeros: woken, and the records stay intact.
        for _ in 0..40 {
            w.append(&vec![9u8; 100_000]).unwrap();
        }
        w.sync().unwrap();
        assert!(idle(&w) > after, "the helper was not woken for new work");
        drop(w);
        let c = read_log(&StdVfs, &p, MAGIC).unwrap();
        assert_eq!(c.tail, Tail::Clean);
        let n = c.records.len();
        assert_eq!(n, 4040);
    }
}
