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
        self.slot(group).wait(1 << (tag % 32), ready)
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

#[cfg(target_os = "linux")]
use futex::Slot;
#[cfg(not(target_os = "linux"))]
use portable::Slot;

#[cfg(target_os = "linux")]
mod futex {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// One futex word on a cache line of its own; each wake changes it, so a waiter
    /// that read it before the change does not go to sleep.
    #[derive(Default)]
    #[repr(align(64))]
    pub(super) struct Slot {
        word: AtomicU32,
    }

    impl Slot {
        pub(super) fn wait(&self, bits: u32, mut ready: impl FnMut() -> bool) {
            loop {
                let seen = self.word.load(Ordering::SeqCst);
                if ready() {
                    return;
                }
                // Returns at once if the word has changed since `seen`, on a wake-up
                // whose bits meet ours, or on a signal; `ready` decides in every case.
                // SAFETY: the word lives as long as `self`; no timeout, no second word.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        self.word.as_ptr(),
                        libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                        seen,
                        std::ptr::null::<libc::timespec>(),
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

    /// A mutex and condition variable: a wake-up wakes every waiter of the slot.
    #[derive(Default)]
    pub(super) struct Slot {
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl Slot {
        pub(super) fn wait(&self, _bits: u32, mut ready: impl FnMut() -> bool) {
            let mut g = self.lock.lock();
            while !ready() {
                self.cv.wait(&mut g);
            }
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
        run::<Slot>(|s, b, r| s.wait(b, r), |s, b| s.wake(b));
    }

    #[test]
    fn the_portable_slots_wake_every_waiter_too() {
        run::<portable::Slot>(|s, b, r| s.wait(b, r), |s, b| s.wake(b));
    }
}
