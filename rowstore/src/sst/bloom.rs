//! A bloom filter over the user keys of one table (not versions), so a point lookup can
//! skip a table that cannot hold the key.

use xxhash_rust::xxh3::xxh3_64;

/// Hash of a user key used by the filter.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Build a filter for `hashes` with `bits_per_key` bits per key.
/// Layout: bit array, then one byte with the number of probes.
pub fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let k = ((bits_per_key as f64 * 0.69) as usize).clamp(1, 30) as u8;
    let nbits = (hashes.len() * bits_per_key).max(64);
    let nbytes = nbits.div_ceil(8);
    let nbits = (nbytes * 8) as u64;
    let mut out = vec![0u8; nbytes + 1];
    for &h in hashes {
        let mut h1 = h;
        let delta = h.rotate_left(33) | 1;
        for _ in 0..k {
            let bit = h1 % nbits;
            out[(bit / 8) as usize] |= 1 << (bit % 8);
            h1 = h1.wrapping_add(delta);
        }
    }
    out[nbytes] = k;
    out
}

/// May the filter contain the key with hash `h`? A damaged filter answers "maybe".
#[inline]
pub fn may_contain(filter: &[u8], h: u64) -> bool {
    if filter.len() < 2 {
        return true;
    }
    let nbytes = filter.len() - 1;
    let k = filter[nbytes];
    if k == 0 || k > 30 {
        return true;
    }
    let nbits = (nbytes * 8) as u64;
    let mut h1 = h;
    let delta = h.rotate_left(33) | 1;
    for _ in 0..k {
        let bit = h1 % nbits;
        if filter[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
            return false;
        }
        h1 = h1.wrapping_add(delta);
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
        assert!(fp < 300, "false positive rate too high: {fp}/10000");
    }
}
