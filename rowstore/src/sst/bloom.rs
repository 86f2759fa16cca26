//! A blocked bloom filter over the user keys of one table (not versions), so a point
//! lookup can skip a table that cannot hold the key. Every probe of one key falls in the
//! same 64-byte block, so a lookup costs one cache miss instead of one per probe.
//!
//! Layout: `block[64] * n | probes u8 | layout u8 (1 = blocked, 512-bit blocks)`.

use xxhash_rust::xxh3::xxh3_64;

const BLOCK_BYTES: usize = 64;
const BLOCK_BITS: u32 = 512;
const LAYOUT_BLOCKED: u8 = 1;

/// Hash of a user key used by the filter.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

#[inline]
fn block_of(h: u64, nblocks: usize) -> usize {
    (((h >> 32) * nblocks as u64) >> 32) as usize
}

#[inline]
fn probes(h: u64) -> (u32, u32) {
    let h1 = h as u32;
    (h1, h1.rotate_right(17) | 1)
}

/// Build a filter for `hashes` with about `bits_per_key` bits per key.
pub fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    // Blocking costs some accuracy; one extra probe-free bit per key makes up for it.
    let k = ((bits_per_key as f64 * 0.69) as usize).clamp(1, 16) as u8;
    let nbits = (hashes.len() * (bits_per_key + 1)).max(BLOCK_BITS as usize);
    let nblocks = nbits.div_ceil(BLOCK_BITS as usize);
    let mut out = vec![0u8; nblocks * BLOCK_BYTES + 2];
    for &h in hashes {
        let base = block_of(h, nblocks) * BLOCK_BYTES;
        let (mut b, delta) = probes(h);
        for _ in 0..k {
            let bit = b % BLOCK_BITS;
            out[base + (bit / 8) as usize] |= 1 << (bit % 8);
            b = b.wrapping_add(delta);
        }
    }
    let n = out.len();
    out[n - 2] = k;
    out[n - 1] = LAYOUT_BLOCKED;
    out
}

/// Start loading the one 64-byte block a probe of `h` reads.
#[inline]
pub fn prefetch(filter: &[u8], h: u64) {
    let n = filter.len();
    if n >= BLOCK_BYTES + 2 {
        let nblocks = (n - 2) / BLOCK_BYTES;
        let at = block_of(h, nblocks) * BLOCK_BYTES;
        crate::cache_line::prefetch(&filter[at..at + 1]);
    }
}

/// May the filter contain the key with hash `h`? A damaged filter answers "maybe".
#[inline]
pub fn may_contain(filter: &[u8], h: u64) -> bool {
    let n = filter.len();
    if n < BLOCK_BYTES + 2
        || filter[n - 1] != LAYOUT_BLOCKED
        || !(n - 2).is_multiple_of(BLOCK_BYTES)
    {
        return true;
    }
    let k = filter[n - 2];
    if k == 0 || k > 16 {
        return true;
    }
    let nblocks = (n - 2) / BLOCK_BYTES;
    let block = &filter[block_of(h, nblocks) * BLOCK_BYTES..][..BLOCK_BYTES];
    let (mut b, delta) = probes(h);
    for _ in 0..k {
        let bit = b % BLOCK_BITS;
        if block[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
            return false;
        }
        b = b.wrapping_add(delta);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let f = build(&hashes, 10);
        assert!(hashes.iter().all(|&h| may_contain(&f, h)));
        let fp = (0..10_000u32)
            .filter(|i| may_contain(&f, key_hash(format!("other{i}").as_bytes())))
            .count();
        assert!(fp < 250, "false positive rate too high: {fp}/10000");
    }

    #[test]
    fn tiny_and_damaged_filters_answer_maybe() {
        let f = build(&[key_hash(b"a")], 10);
        assert!(may_contain(&f, key_hash(b"a")));
        assert!(may_contain(&[], 1));
        assert!(may_contain(&[0u8; 10], 1));
    }
}
