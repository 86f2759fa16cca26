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
    pub keys: PackedBytes,
    blocks: Vec<[u32; 8]>,
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
        KeyIndex { keys, blocks }
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
