//! Which processors a group's sync completes fastest on.
//!
//! A storage device with one completion queue interrupts one processor. A thread
//! waiting in `fdatasync` on another processor is woken across processors when its
//! write and its flush complete, and on a VM whose processors are all busy (writers
//! yielding while they wait, see `wake::YieldGate`) that costs: measured on this
//! project's 2-vCPU test VM, a group's sync took ~105 µs from the processor taking the
//! device's interrupts and ~150 µs from the other. Commit times are kept per processor
//! (an exponentially weighted mean), and the writer that completes a group on a slow
//! processor offers it to one of the group's writers on a fast one (`Role::Offer` in
//! `commit`). On devices with a queue per processor every processor measures alike and
//! nothing is offered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The processor the calling thread runs on (`None` where unknown).
pub(super) fn current() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sched_getcpu takes no arguments and only returns a number.
        let c = unsafe { libc::sched_getcpu() };
        usize::try_from(c).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Processor numbers tracked (a thread on a higher-numbered one counts as fast).
const MAX_CPUS: usize = 256;
/// A processor is fast while its mean commit time is within this fraction above the
/// fastest processor's (1/5: 20%).
const SLACK_DIV: u64 = 5;
/// See [`SyncCpus::offer_max_writers`].
const OFFER_WRITERS_PER_CPU: usize = 8;

/// Mean group commit time per processor, in nanoseconds (0: none seen), and the group
/// on offer.
pub(super) struct SyncCpus {
    /// Indexed by processor number: every processor the system has, not only those this
    /// process may use (numbers need not start at 0 under a CPU set).
    mean: Box<[AtomicU64]>,
    /// See [`SyncCpus::offer_max_writers`].
    offer_max_writers: usize,
    offered: Offered,
}

/// The number of the group on offer plus one (0: none), on a cache line of its own:
/// waiting writers poll it, and the line must not bounce with the counters they write.
/// Written only under the commit queue's lock, so read under it, it is exact.
#[derive(Default)]
#[repr(align(128))]
struct Offered(AtomicU64);

impl Default for SyncCpus {
    fn default() -> Self {
        let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
        SyncCpus {
            mean: (0..configured_cpus().max(usable).min(MAX_CPUS))
                .map(|_| AtomicU64::new(0))
                .collect(),
            offer_max_writers: OFFER_WRITERS_PER_CPU * usable,
            offered: Offered::default(),
        }
    }
}

/// The number of processors the system has (0 where unknown).
fn configured_cpus() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads its integer argument.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        usize::try_from(n).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

impl SyncCpus {
    /// Offer group `group` (under the commit queue's lock).
    pub(super) fn offer(&self, group: u64) {
        self.offered.0.store(group + 1, Ordering::Release);
    }

    /// The offer was taken (under the commit queue's lock).
    pub(super) fn withdraw(&self) {
        self.offered.0.store(0, Ordering::Release);
    }

    /// Whether group `group` is on offer.
    pub(super) fn offered(&self, group: u64) -> bool {
        self.offered.0.load(Ordering::Acquire) == group + 1
    }

    /// A group committed from `cpu` took `took`.
    pub(super) fn record(&self, cpu: Option<usize>, took: Duration) {
        let Some(m) = cpu.and_then(|c| self.mean.get(c)) else {
            return;
        };
        let t = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = m.load(Ordering::Relaxed);
        m.store(
            if old == 0 { t } else { old - old / 8 + t / 8 },
            Ordering::Relaxed,
        );
    }

    /// Whether `cpu`'s commits are about as fast as the fastest processor's (true when
    /// it has none on record, or nothing is known).
    pub(super) fn is_fast(&self, cpu: Option<usize>) -> bool {
        let Some(mine) = cpu.and_then(|c| self.mean.get(c)) else {
            return true;
        };
        let mine = mine.load(Ordering::Relaxed);
        let best = self
            .mean
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .filter(|&m| m > 0)
            .min()
            .unwrap_or(0);
        mine == 0 || mine <= best + best / SLACK_DIV
    }

    /// Up to how many writers in flight a group is offered: with more, the group's
    /// writers on a fast processor take turns with too many others to notice the offer
    /// in time (64 writers on 2 processors measured slower with offers).
    pub(super) fn offer_max_writers(&self) -> usize {
        self.offer_max_writers
    }

    /// [`Self::is_fast`] for the calling thread's processor.
    pub(super) fn here_is_fast(&self) -> bool {
        self.is_fast(current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, EngineOptions, OpenMode, WriteBatch};
    use std::collections::BTreeSet;

    #[test]
    fn a_processor_whose_commits_take_longer_is_slow() {
        let s = SyncCpus {
            mean: (0..2).map(|_| AtomicU64::new(0)).collect(),
            offer_max_writers: 16,
            offered: Offered::default(),
        };
        assert!(s.is_fast(Some(0)) && s.is_fast(Some(1)));
        for _ in 0..50 {
            s.record(Some(0), Duration::from_micros(150));
            s.record(Some(1), Duration::from_micros(105));
        }
        assert!(!s.is_fast(Some(0)));
        assert!(s.is_fast(Some(1)));
        // Unknown processors never hold a commit back.
        assert!(s.is_fast(None) && s.is_fast(Some(7)));
        // Within 20% of the fastest counts as fast; the means follow new times.
        for _ in 0..50 {
            s.record(Some(0), Duration::from_micros(120));
        }
        assert!(s.is_fast(Some(0)));
    }

    /// Pins the calling thread to processor `cpu`.
    #[cfg(target_os = "linux")]
    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only
        // read and write the set passed, which lives across the calls.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                0
            );
        }
    }

    /// Eight writers, half pinned to processor 0 (made slow) and half to processor 1:
    /// groups completed on processor 0 are offered and taken by a writer on processor 1,
    /// and every write commits exactly once and reads back. Rounds until an offer was
    /// taken: on a loaded machine (tests in parallel) yields run slow and the yield gate
    /// closes, and then no group is offered; each round opens it again.
    #[cfg(target_os = "linux")]
    #[test]
    fn groups_completed_on_a_slow_processor_are_taken_on_a_fast_one() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return;
        }
        const WRITERS: usize = 8;
        const PUTS: usize = 100;
        const ROUNDS: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(
            dir.path().join("db"),
            EngineOptions::default(),
            OpenMode::Create,
        )
        .unwrap();
        let Engine::Lsm(lsm) = &e else {
            unreachable!("an LSM engine")
        };
        let mut stamps: Vec<u64> = Vec::new();
        let mut rounds = 0;
        while e.stats().offers_taken.load(Ordering::Relaxed) == 0 {
            assert!(
                rounds < ROUNDS,
                "in {ROUNDS} rounds no group offered on processor 0 was taken on processor 1"
            );
            // Processor 0's commits have been slow: far too slow for its real ones to
            // bring its mean near processor 1's during a round.
            lsm.inner.sync_cpus.mean[0].store(u64::MAX / 4, Ordering::Relaxed);
            lsm.inner.yield_gate.reopen();
            let round: Vec<Vec<u64>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let e = &e;
                        s.spawn(move || {
                            pin(w % 2);
                            (0..PUTS)
                                .map(|i| {
                                    let mut b = WriteBatch::new();
                                    let k = format!("r{rounds:02}w{w}k{i:04}");
                                    b.put(k.as_bytes(), &i.to_be_bytes()).unwrap();
                                    e.write(b).unwrap()
                                })
                                .collect()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            stamps.extend(round.into_iter().flatten());
            rounds += 1;
        }
        let all: BTreeSet<u64> = stamps.iter().copied().collect();
        assert_eq!(all.len(), stamps.len(), "a commit timestamp given twice");
        drop(e);
        let e = Engine::open(
            dir.path().join("db"),
            EngineOptions::default(),
            OpenMode::Open,
        )
        .unwrap();
        for r in 0..rounds {
            for w in 0..WRITERS {
                for i in 0..PUTS {
                    let k = format!("r{r:02}w{w}k{i:04}");
                    assert_eq!(
                        e.get(k.as_bytes()).unwrap(),
                        Some(i.to_be_bytes().to_vec()),
                        "{k}"
                    );
                }
            }
        }
    }
}
