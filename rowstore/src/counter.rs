//! Striped counters and latency histograms for hot paths: each thread adds to its own
//! cache line, so counting from many threads does not bounce one line between cores.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const STRIPES: usize = 16;

#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A monotonic counter, cheap to bump from many threads at once.
#[derive(Default)]
pub struct StripedCounter {
    cells: [Padded; STRIPES],
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static IDX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    IDX.with(|i| *i)
}

impl StripedCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.cells[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

const HIST_STRIPES: usize = 8;
const SUB: usize = 4; // sub-buckets per power of two
const BUCKETS: usize = 64 * SUB;

#[repr(align(64))]
struct Stripe([AtomicU64; BUCKETS]);

/// A latency histogram cheap enough for hot paths: log-linear buckets (4 per power of
/// two, so values are within 25%), striped by thread so concurrent recording does not
/// contend on one cache line.
pub struct LatencyHistogram {
    stripes: Box<[Stripe]>,
}

fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize; // >= 2
    let sub = ((ns >> (log - 2)) & 3) as usize;
    (log - 1) * SUB + sub
}

/// Upper bound (ns) of bucket `b`.
fn bucket_upper(b: usize) -> u64 {
    if b < SUB {
        return b as u64; // buckets below SUB hold exactly one value
    }
    let log = b / SUB + 1;
    let sub = (b % SUB) as u64;
    ((4 + sub + 1) << (log - 2)).saturating_sub(1)
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            stripes: (0..HIST_STRIPES)
                .map(|_| Stripe(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary().fmt(f)
    }
}

impl LatencyHistogram {
    #[inline]
    pub fn record(&self, d: Duration) {
        let b = bucket(d.as_nanos().min(u64::MAX as u128) as u64).min(BUCKETS - 1);
        self.stripes[stripe() % HIST_STRIPES].0[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Count and p50/p99/p999 in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let mut counts = [0u64; BUCKETS];
        for s in self.stripes.iter() {
            for (c, a) in counts.iter_mut().zip(s.0.iter()) {
                *c += a.load(Ordering::Relaxed);
            }
        }
        let total: u64 = counts.iter().sum();
        let q = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let target = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut acc = 0;
            for (b, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= target {
                    return bucket_upper(b) as f64 / 1000.0;
                }
            }
            bucket_upper(BUCKETS - 1) as f64 / 1000.0
        };
        LatencySummary {
            count: total,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
        }
    }
}

/// Latency percentiles of one operation kind, in microseconds (bucket upper bounds,
/// within 25%).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_threads() {
        let c = std::sync::Arc::new(StripedCounter::default());
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(), 8000);
    }

    #[test]
    fn histogram_percentiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() / 500.0 < 0.26, "{s:?}");
        assert!((s.p99_us - 990.0).abs() / 990.0 < 0.26, "{s:?}");
        for ns in [0u64, 1, 3, 4, 7, 8, 1000, 1 << 40] {
            let b = bucket(ns);
            assert!(bucket_upper(b) >= ns, "{ns} -> {b} -> {}", bucket_upper(b));
            if b > 0 {
                assert!(bucket_upper(b - 1) < ns.max(1), "{ns}");
            }
        }
    }
}
