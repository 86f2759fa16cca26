//! Waking a commit group's writers with one call.
//!
//! A commit group's followers sleep until the leader has synced their batches. Woken one
//! by one (a condition variable each), a group of 64 costs the leader 63 system calls,
//! and on a VM each wake-up of a thread on the other core is an inter-processor
//! interrupt: `perf` on 64 writers without fsync had 42% of all CPU in `futex` wake and
//! wait. Here a group's followers sleep on one word, one of a few slots chosen by the
//! group's number, and the leader wakes them all with one `FUTEX_WAKE_BITSET`; the
//! kernel batches the wake-ups it sends to each core. The one targeted wake-up, handing
//! leadership on to a queued writer, passes that writer's tag bit, so only the writers
//! sharing its tag (1 in 32) wake for it in vain.
//!
//! Every wait re-checks its condition under the request's own lock, so a wake-up meant
//! for another group sharing the slot is only a wasted wake-up, never a lost or a wrong
//! one. Other systems use a mutex and condition variable per slot.

use std::time::{Duration, Instant};

/// Slots: groups `g` and `g + SLOTS` share one. A group's followers are woken before
/// the group `SLOTS` later can form (that needs `SLOTS - 1` further syncs), so sharing
/// is rare.
const SLOTS: usize = 4;

pub(super) struct GroupWake {
    slots: [Slot; SLOTS],
}

impl Default for GroupWake {
    fn default() -> Self {
        GroupWake {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl GroupWake {
    /// Block until `ready` returns true. `group` is the commit group the caller's
    /// request belongs to and `tag` its tag (any number; its value modulo 32 counts).
    pub(super) fn wait(&self, group: u64, tag: u32, ready: impl FnMut() -> bool) {
        self.slot(group).wait(1 << (tag % 32), None, ready);
    }

    /// [`Self::wait`] until `deadline` at the latest: whether `ready` returned true.
    pub(super) fn wait_until(
        &self,
        group: u64,
        tag: u32,
        deadline: Instant,
        ready: impl FnMut() -> bool,
    ) -> bool {
        self.slot(group)
            .wait(1 << (tag % 32), Some(deadline), ready)
    }

    /// Wake every writer of `group` (call after making all their `ready`s true).
    pub(super) fn wake_group(&self, group: u64) {
        self.slot(group).wake(u32::MAX)
    }

    /// Wake the writer of `group` with `tag` (and any sharing its tag bit).
    pub(super) fn wake_one(&self, group: u64, tag: u32) {
        self.slot(group).wake(1 << (tag % 32))
    }

    fn slot(&self, group: u64) -> &Slot {
        &self.slots[(group % SLOTS as u64) as usize]
    }
}

/// Lets a writer wait for its commit group by yielding the processor for a while
/// before it sleeps on its slot, as RocksDB's write thread does with its adaptive
/// yield.
///
/// Waking a sleeping writer costs its leader a system call and, on a VM, an
/// inter-processor interrupt, and the writer a context switch back in: with 64 durable
/// writers, `perf` put ~40% of all CPU in those wake-ups, all after the group's sync,
/// on the path to the next group. A writer that yields instead stays runnable: while
/// its group syncs the processors would idle anyway, and once the group is done the
/// yielding writers go on without a wake-up.
///
/// A yield runs the other yielding writers (a microsecond or two each) before the
/// caller again; one that takes much longer ran a thread with work to do (a query,
/// say), and then yielding takes the processor from it. One such slow yield stops all
/// writers yielding (`credit` turns negative); while it is, one wait in `PROBE` tries
/// again, and a few that succeed resume it. A wait that outlasts its budget (a slow
/// sync, not a busy processor) sleeps that once and changes nothing. And while
/// `holds` counts threads of this process at work that yields could delay (the SQL
/// runtime's, the column compactor: they run at a lower priority than writers, which
/// yields do not make way for reliably), nobody yields.
#[derive(Default)]
pub(super) struct YieldGate {
    /// Threads at work that yielding writers would take processor time from.
    pub(super) holds: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Negative: yielding does not pay at the moment.
    credit: std::sync::atomic::AtomicI32,
    /// Waits turned away while `credit` is negative (every `PROBE`th is let through).
    probes: std::sync::atomic::AtomicU32,
    /// Writers yielding right now.
    yielding: std::sync::atomic::AtomicU32,
}

/// A yield that takes this long (plus `YIELD_PER_WAITER` per yielding writer) ran
/// another thread: the processor is wanted.
const SLOW_YIELD: Duration = Duration::from_micros(200);
const YIELD_PER_WAITER: Duration = Duration::from_micros(2);
/// The range of the credit: a slow yield sets it to minus this, a wait that saw its
/// group done while yielding adds a quarter of it.
const CREDIT: i32 = 1024;
/// While yielding does not pay, one wait in this many tries it.
const PROBE: u32 = 256;

impl YieldGate {
    /// Whether writers may yield right now: no thread of ours at work that yields would
    /// delay, and yielding paid lately.
    pub(super) fn open(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.holds.load(Relaxed) == 0 && self.credit.load(Relaxed) >= 0
    }

    /// Let writers yield again (tests: a slow yield on a loaded machine closes the gate).
    #[cfg(test)]
    pub(super) fn reopen(&self) {
        self.credit
            .store(CREDIT, std::sync::atomic::Ordering::Relaxed);
    }

    /// Yield until `ready` returns true, for at most `budget`: whether it did (the
    /// caller sleeps otherwise). Returns false at once while yielding does not pay.
    pub(super) fn wait(&self, budget: Duration, ready: impl FnMut() -> bool) -> bool {
        self.wait_with(budget, ready, std::thread::yield_now)
    }

    fn wait_with(
        &self,
        budget: Duration,
        mut ready: impl FnMut() -> bool,
        yield_now: impl Fn(),
    ) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // Closed: never while held; otherwise one wait in `PROBE` tries again.
        if !self.open()
            && (self.holds.load(Relaxed) > 0
                || !self.probes.fetch_add(1, Relaxed).is_multiple_of(PROBE))
        {
            return false;
        }
        let start = Instant::now();
        let others = self.yielding.fetch_add(1, Relaxed);
        let slow = SLOW_YIELD + YIELD_PER_WAITER * (others + 1);
        let paid = loop {
            if ready() {
                break Some(true);
            }
            let t = Instant::now();
            if t.duration_since(start) >= budget {
                break None;
            }
            yield_now();
            if t.elapsed() >= slow {
                break Some(false);
            }
        };
        self.yielding.fetch_sub(1, Relaxed);
        match paid {
            Some(true) => {
                let c = self.credit.load(Relaxed);
                self.credit.store((c + CREDIT / 4).min(CREDIT), Relaxed);
            }
            Some(false) => self.credit.store(-CREDIT, Relaxed),
            None => {}
        }
        paid == Some(true)
    }
}

#[cfg(target_os = "linux")]
use futex::Slot;
#[cfg(not(target_os = "linux"))]
use portable::Slot;

#[cfg(target_os = "linux")]
mod futex {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// One futex word on a cache line of its own; each wake changes it, so a waiter
    /// that read it before the change does not go to sleep.
    #[derive(Default)]
    #[repr(align(64))]
    pub(super) struct Slot {
        word: AtomicU32,
    }

    impl Slot {
        /// Whether `ready` returned true (false: `deadline` passed first).
        pub(super) fn wait(
            &self,
            bits: u32,
            deadline: Option<Instant>,
            mut ready: impl FnMut() -> bool,
        ) -> bool {
            // `FUTEX_WAIT_BITSET` takes an absolute CLOCK_MONOTONIC time, the clock
            // behind `Instant` on Linux.
            let abs = deadline.map(|d| {
                let mut now = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `now` is a valid timespec to write to.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
                let left = d.saturating_duration_since(Instant::now());
                let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
                libc::timespec {
                    tv_sec: now.tv_sec
                        + left.as_secs() as libc::time_t
                        + (nanos / 1_000_000_000) as libc::time_t,
                    tv_nsec: (nanos % 1_000_000_000) as _,
                }
            });
            loop {
                let seen = self.word.load(Ordering::SeqCst);
                if ready() {
                    return true;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
                // Returns at once if the word has changed since `seen`, on a wake-up
                // whose bits meet ours, on a signal or at the deadline; `ready` (and
                // the clock) decide in every case.
                // SAFETY: the word lives as long as `self`; the timeout, if any, is a
                // valid timespec living across the call; no second word.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        self.word.as_ptr(),
                        libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                        seen,
                        abs.as_ref()
                            .map_or(std::ptr::null(), |t| t as *const libc::timespec),
                        std::ptr::null::<u32>(),
                        bits,
                    );
                }
            }
        }

        pub(super) fn wake(&self, bits: u32) {
            self.word.fetch_add(1, Ordering::SeqCst);
            // SAFETY: as above; a wake of a word no one waits on is harmless.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                    std::ptr::null::<libc::timespec>(),
                    std::ptr::null::<u32>(),
                    bits,
                );
            }
        }
    }
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
mod portable {
    use parking_lot::{Condvar, Mutex};
    use std::time::Instant;

    /// A mutex and condition variable: a wake-up wakes every waiter of the slot.
    #[derive(Default)]
    pub(super) struct Slot {
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl Slot {
        /// Whether `ready` returned true (false: `deadline` passed first).
        pub(super) fn wait(
            &self,
            _bits: u32,
            deadline: Option<Instant>,
            mut ready: impl FnMut() -> bool,
        ) -> bool {
            let mut g = self.lock.lock();
            while !ready() {
                match deadline {
                    None => self.cv.wait(&mut g),
                    Some(d) => {
                        if self.cv.wait_until(&mut g, d).timed_out() {
                            return ready();
                        }
                    }
                }
            }
            true
        }

        pub(super) fn wake(&self, _bits: u32) {
            // Taking the lock orders this wake after any waiter's check of `ready`.
            drop(self.lock.lock());
            self.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn yielding_stops_after_a_slow_yield_and_resumes_after_probes_succeed() {
        let g = YieldGate::default();
        let long = Duration::from_secs(5);
        // Ready at once, or after a few quick yields: the wait pays.
        assert!(g.wait_with(long, || true, || {}));
        let mut n = 0;
        assert!(g.wait_with(
            long,
            || {
                n += 1;
                n > 3
            },
            || {}
        ));
        // A wait that runs out of budget (a slow sync) sleeps; nothing is learned.
        assert!(!g.wait(Duration::from_micros(50), || false));
        assert!(g.wait_with(long, || true, || {}));
        // A slow yield (another thread ran): this wait sleeps, and so do the next
        // ones, except one in `PROBE`. (Budgets of a few slow yields, so that a gate
        // that missed them fails in seconds rather than hanging.)
        let slow = || std::thread::sleep(SLOW_YIELD * 2);
        let short = SLOW_YIELD * 10;
        assert!(!g.wait_with(short, || false, slow));
        assert!(
            g.credit.load(Ordering::Relaxed) < 0,
            "a slow yield was not noticed"
        );
        let tried = (0..4 * PROBE)
            .filter(|_| {
                let mut asked = false;
                g.wait_with(
                    short,
                    || {
                        asked = true;
                        false
                    },
                    slow,
                );
                asked
            })
            .count();
        assert_eq!(tried, 4);
        // Probes that succeed bring yielding back: after four, every wait yields.
        let mut resumed = 0;
        for _ in 0..4 * PROBE {
            if g.wait_with(long, || true, || {}) {
                resumed += 1;
            }
        }
        assert!(g.credit.load(Ordering::Relaxed) >= 0);
        let mut asked = false;
        assert!(g.wait_with(
            long,
            || {
                asked = true;
                true
            },
            || {}
        ));
        assert!(asked && resumed >= 4);
        assert_eq!(g.yielding.load(Ordering::Relaxed), 0);
        // Held (a query at work): nobody yields, whatever the credit.
        g.holds.fetch_add(1, Ordering::Relaxed);
        let mut asked = false;
        assert!(!g.wait_with(
            long,
            || {
                asked = true;
                true
            },
            || {}
        ));
        assert!(!asked);
        g.holds.fetch_sub(1, Ordering::Relaxed);
        assert!(g.wait_with(long, || true, || {}));
    }

    /// Writers of many groups wait on shared slots; a "leader" marks each group done
    /// and wakes it, and sometimes wakes single writers by tag first (as a leadership
    /// hand-off would, without making them ready). Every writer must return, and only
    /// once its group is done. A lost wake-up hangs the test.
    fn run<S: Default + Sync>(wait: fn(&S, u32, &mut dyn FnMut() -> bool), wake: fn(&S, u32)) {
        const GROUPS: u64 = 400;
        const PER: u64 = 6;
        let slots: [S; SLOTS] = std::array::from_fn(|_| S::default());
        let done = AtomicU64::new(0);
        std::thread::scope(|s| {
            for w in 0..PER {
                let (slots, done) = (&slots, &done);
                s.spawn(move || {
                    for g in 0..GROUPS {
                        let slot = &slots[(g % SLOTS as u64) as usize];
                        wait(slot, 1 << (w % 32), &mut || done.load(Ordering::SeqCst) > g);
                        assert!(done.load(Ordering::SeqCst) > g);
                    }
                });
            }
            for g in 0..GROUPS {
                let slot = &slots[(g % SLOTS as u64) as usize];
                if g % 3 == 0 {
                    wake(slot, 1 << (g % PER));
                }
                if g % 7 == 0 {
                    std::thread::yield_now();
                }
                done.store(g + 1, Ordering::SeqCst);
                wake(slot, u32::MAX);
            }
        });
    }

    #[test]
    fn every_waiter_wakes_once_its_group_is_done() {
        run::<Slot>(
            |s, b, r| {
                s.wait(b, None, r);
            },
            |s, b| s.wake(b),
        );
    }

    #[test]
    fn the_portable_slots_wake_every_waiter_too() {
        run::<portable::Slot>(
            |s, b, r| {
                s.wait(b, None, r);
            },
            |s, b| s.wake(b),
        );
    }

    /// A wait with a deadline ends at the deadline if never ready (false), and as soon
    /// as it is ready and woken before it (true).
    fn deadline<S: Default + Sync>(
        wait: fn(&S, u32, Instant, &mut dyn FnMut() -> bool) -> bool,
        wake: fn(&S, u32),
    ) {
        use std::sync::atomic::AtomicBool;
        use std::time::Duration;
        let slot = S::default();
        let t0 = Instant::now();
        assert!(!wait(&slot, 1, t0 + Duration::from_millis(20), &mut || {
            false
        }));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        let ready = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(5));
                ready.store(true, Ordering::SeqCst);
                wake(&slot, u32::MAX);
            });
            let t0 = Instant::now();
            assert!(wait(&slot, 1, t0 + Duration::from_secs(60), &mut || {
                ready.load(Ordering::SeqCst)
            }));
            assert!(t0.elapsed() < Duration::from_secs(30));
        });
    }

    #[test]
    fn a_wait_with_a_deadline_ends_at_it_or_once_ready() {
        deadline::<Slot>(|s, b, d, r| s.wait(b, Some(d), r), |s, b| s.wake(b));
        deadline::<portable::Slot>(|s, b, d, r| s.wait(b, Some(d), r), |s, b| s.wake(b));
    }
}
