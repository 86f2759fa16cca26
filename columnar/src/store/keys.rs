//! A segment's key index: every row's encoded key in row (= key) order, and a
//! split-block Bloom filter over them (the layout of Parquet's), so a changed key is
//! searched for only in the segments that may hold it. Memory only; rebuilt from the
//! key columns when a segment is opened and first searched.

use lightning_rowstore::packed::PackedBytes;

/// Filter bits per key: about 1% false positives.
const BITS_PER_KEY: usize = 10;

/// The salts of Parquet's split-block Bloom filter: one bit per 32-bit word of a block.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

pub(crate) struct KeyIndex {
    keys: Keys,
    blocks: Vec<[u32; 8]>,
}

/// The keys, in order.
enum Keys {
    Packed(PackedBytes),
    /// Every key is 8 bytes (a single integer key column, encoded big-endian so byte
    /// order is integer order): held as integers, so a search compares machine words
    /// instead of calling `memcmp` through an offset table.
    Fixed8(Vec<u64>, Samples),
}

/// Every [`SAMPLE`]th key of a [`Keys::Fixed8`] index. A search over a million keys
/// (8 MB) touches some twenty scattered cache lines; over the samples (128 KB, which
/// stay in a core's cache) it touches a few, then one block of `SAMPLE` keys.
struct Samples(Vec<u64>);

/// Keys per sample.
const SAMPLE: usize = 64;

impl Samples {
    fn of(keys: &[u64]) -> Samples {
        Samples(keys.iter().step_by(SAMPLE).copied().collect())
    }

    /// The first position at or after `from` whose key is not below `k`.
    fn seek(&self, keys: &[u64], from: usize, k: u64) -> usize {
        let n = keys.len();
        if from >= n {
            return n;
        }
        // The first sample not below `k`: the answer is at most its position, and
        // above the sample before it (which is below `k`).
        let s = super::gallop(from / SAMPLE, self.0.len(), |i| self.0[i] < k);
        if s == from / SAMPLE {
            return from;
        }
        let lo = from.max((s - 1) * SAMPLE + 1);
        let hi = n.min(s * SAMPLE);
        lo + keys[lo..hi].partition_point(|&x| x < k)
    }
}

fn hash(key: &[u8]) -> u64 {
    // Fixed seeds: the filter is rebuilt, never stored, but one process must agree
    // with itself.
    ahash::RandomState::with_seeds(0x5151, 0x7a7a, 0x1f1f, 0x2c2c).hash_one(key)
}

impl KeyIndex {
    pub fn new(keys: PackedBytes) -> KeyIndex {
        let n = keys.len();
        let mut blocks = vec![[0u32; 8]; (n * BITS_PER_KEY).div_ceil(256).max(1)];
        for i in 0..n {
            let h = hash(keys.get(i));
            let b = Self::block(h, blocks.len());
            for (w, s) in blocks[b].iter_mut().zip(SALT) {
                *w |= Self::bit(h, s);
            }
        }
        let keys = match super::be_u64s((0..n).map(|i| keys.get(i))) {
            Some(v) if n > 0 => {
                let samples = Samples::of(&v);
                Keys::Fixed8(v, samples)
            }
            _ => Keys::Packed(keys),
        };
        KeyIndex { keys, blocks }
    }

    pub fn len(&self) -> usize {
        match &self.keys {
            Keys::Packed(p) => p.len(),
            Keys::Fixed8(v, _) => v.len(),
        }
    }

    /// The first position at or after `from` whose key is not below `key` (galloping
    /// from `from`, so ascending probes cost the log of the distance moved), and
    /// whether the key there is `key`.
    pub fn seek(&self, from: usize, key: &[u8]) -> (usize, bool) {
        let n = self.len();
        match &self.keys {
            Keys::Fixed8(v, samples) => match <[u8; 8]>::try_from(key) {
                Ok(b) => {
                    let k = u64::from_be_bytes(b);
                    let a = samples.seek(v, from, k);
                    (a, a < n && v[a] == k)
                }
                // Another length never equals a stored key; order as bytes.
                Err(_) => (
                    super::gallop(from, n, |i| v[i].to_be_bytes().as_slice() < key),
                    false,
                ),
            },
            Keys::Packed(p) => {
                let a = super::gallop(from, n, |i| p.get(i) < key);
                (a, a < n && p.get(a) == key)
            }
        }
    }

    fn block(h: u64, n: usize) -> usize {
        (((h >> 32) * n as u64) >> 32) as usize
    }

    fn bit(h: u64, salt: u32) -> u32 {
        1 << ((h as u32).wrapping_mul(salt) >> 27)
    }

    /// False if no row has `key`; true if one may.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let h = hash(key);
        let b = &self.blocks[Self::block(h, self.blocks.len())];
        b.iter().zip(SALT).all(|(w, s)| w & Self::bit(h, s) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gallop_finds_the_first_position_not_before_from_anywhere() {
        use crate::store::gallop;
        let v: Vec<u32> = (0..1000).map(|i| i * 3).collect();
        for from in [0, 1, 5, 333, 999, 1000] {
            for x in [0, 1, 3, 4, 998, 2997, 2998, 5000] {
                let want = from.max(v.partition_point(|&y| y < x));
                assert_eq!(
                    gallop(from, v.len(), |i| v[i] < x),
                    want,
                    "from {from} x {x}"
                );
            }
        }
        assert_eq!(gallop(0, 0, |_| true), 0);
    }

    #[test]
    fn seek_agrees_for_integer_and_packed_keys() {
        let mut fixed = PackedBytes::default();
        let mut mixed = PackedBytes::default();
        for i in 0..1000u64 {
            fixed.push(&(i * 3).to_be_bytes());
            mixed.push(&(i * 3).to_be_bytes());
        }
        mixed.push(&[0xff; 9]);
        let (f, m) = (KeyIndex::new(fixed), KeyIndex::new(mixed));
        assert!(matches!(f.keys, Keys::Fixed8(..)) && matches!(m.keys, Keys::Packed(_)));
        for from in [0usize, 10, 63, 64, 65, 127, 128, 500, 999, 1000] {
            for x in [
                0u64, 1, 3, 30, 189, 190, 192, 193, 195, 384, 1500, 2997, 2998, 9999,
            ] {
                let want = (
                    from.max((x.div_ceil(3)) as usize).min(1000),
                    x % 3 == 0 && x < 3000 && (x / 3) as usize >= from,
                );
                let k = x.to_be_bytes();
                assert_eq!(f.seek(from, &k), want, "fixed from {from} x {x}");
                assert_eq!(m.seek(from, &k), want, "packed from {from} x {x}");
            }
            // A probe of another length orders as bytes and never matches.
            assert!(!f.seek(from, &[0u8; 3]).1);
            assert_eq!(f.seek(0, &[0xff; 9]), (1000, false));
        }
    }

    #[test]
    fn ascending_searches_through_the_samples_find_what_a_binary_search_finds() {
        let mut packed = PackedBytes::default();
        let v: Vec<u64> = (0..10_007u64).map(|i| i * 7 + (i % 5)).collect();
        for x in &v {
            packed.push(&x.to_be_bytes());
        }
        let idx = KeyIndex::new(packed);
        assert!(matches!(idx.keys, Keys::Fixed8(..)));
        // Probes ascending by steps small and large, each search starting where the
        // last one ended (as the lookup of sorted changed keys does).
        let (mut from, mut x, mut step) = (0usize, 0u64, 1u64);
        while x < 80_000 {
            let want = from.max(v.partition_point(|&y| y < x));
            let got = idx.seek(from, &x.to_be_bytes());
            assert_eq!(
                got,
                (want, want < v.len() && v[want] == x),
                "from {from} x {x}"
            );
            from = got.0;
            step = (step * 5 + 3) % 1999;
            x += step;
        }
    }

    #[test]
    fn holds_every_key_and_rules_out_most_others() {
        let mut keys = PackedBytes::default();
        for i in 0..50_000u64 {
            keys.push(&(i * 2).to_be_bytes());
        }
        let idx = KeyIndex::new(keys);
        assert!((0..50_000u64).all(|i| idx.may_contain(&(i * 2).to_be_bytes())));
        let false_hits = (0..50_000u64)
            .filter(|i| idx.may_contain(&(i * 2 + 1).to_be_bytes()))
            .count();
        assert!(false_hits < 1500, "{false_hits} of 50000 absent keys pass");
        assert!(!KeyIndex::new(PackedBytes::default()).may_contain(b"x"));
    }
}
