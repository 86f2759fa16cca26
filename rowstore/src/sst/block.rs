//! Data blocks: sorted versioned entries plus an offset array for binary search.
//!
//! ```text
//! entry:  varint klen | key | ts u64 | kind u8 | varint vlen | value
//! block:  entry* | offset u32 * n | n u32
//! ```

use crate::coding::{self, Decoder};
use crate::key::{Ts, ValueKind, cmp_internal};
use std::cmp::Ordering;

/// One decoded entry, borrowing the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub ts: Ts,
    pub kind: ValueKind,
    pub value: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The value, or `None` for a tombstone.
    pub fn value_opt(self) -> Option<&'a [u8]> {
        match self.kind {
            ValueKind::Put => Some(self.value),
            ValueKind::Delete => None,
        }
    }
}

#[derive(Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
}

impl BlockBuilder {
    pub fn add(&mut self, key: &[u8], ts: Ts, value: Option<&[u8]>) {
        self.offsets.push(self.buf.len() as u32);
        coding::put_bytes(&mut self.buf, key);
        coding::put_u64(&mut self.buf, ts);
        match value {
            Some(v) => {
                coding::put_u8(&mut self.buf, ValueKind::Put as u8);
                coding::put_bytes(&mut self.buf, v);
            }
            None => {
                coding::put_u8(&mut self.buf, ValueKind::Delete as u8);
                coding::put_varint(&mut self.buf, 0);
            }
        }
    }

    /// Bytes the finished block will take (before compression).
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + self.offsets.len() * 4 + 4
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Finish the block and reset the builder.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for &o in &self.offsets {
            coding::put_u32(&mut out, o);
        }
        coding::put_u32(&mut out, self.offsets.len() as u32);
        self.offsets.clear();
        out
    }
}

/// A decoded (decompressed, checksum-verified) data block.
/// An entry's position inside its block: (offset, length) of key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    key: (u32, u32),
    ts: Ts,
    put: bool,
    value: (u32, u32),
}

pub struct Block {
    /// The block as stored (entries, offset table, entry count), then its seek index,
    /// built when the block is loaded: 8-byte prefixes of the entries' keys (after the
    /// block's common prefix) and that common prefix. A seek binary-searches the
    /// prefixes and decodes entries only on ties, so a cached point read touches few
    /// cache lines, and the offset table, prefixes and common prefix are one run of
    /// lines after the entries ([`Block::seek_lines`]) that a reader can start loading
    /// at once.
    data: Vec<u8>,
    n: usize,
    offsets_start: usize,
    /// Where the prefixes start in `data` (a multiple of 8).
    prefixes_at: usize,
    /// Where the common prefix starts in `data` (it runs to the end).
    common_at: usize,
}

/// The first 8 bytes of a key as a big-endian integer (zero-padded). Prefix order
/// agrees with byte order of keys, except that equal prefixes need a full compare.
#[inline]
pub fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Where a probe key falls relative to a sorted run of keys that share a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Before every key of the run.
    Below,
    /// After every key of the run.
    Above,
    /// Shares the run's common prefix; these are the 8 bytes after it.
    At(u64),
}

/// 8-byte integer prefixes of sorted keys, taken after the prefix all keys share (the
/// table id of a table's rows, for example), so a binary search compares integers and
/// touches full keys only on ties.
#[derive(Debug, Clone, Default)]
pub struct PrefixIndex {
    common: Vec<u8>,
    pub prefixes: Vec<u64>,
    /// Every [`FENCE_STRIDE`]th prefix (empty for a short run): a search narrows to
    /// one stride in this small array, which stays in the CPU's cache, and then reads
    /// that stride's few lines of `prefixes` at once, instead of a binary search over
    /// all of them whose last steps are each a miss of their own.
    fences: Vec<u64>,
}

/// Prefixes per fence of a [`PrefixIndex`]: 64 (512 bytes, eight cache lines).
pub const FENCE_STRIDE: usize = 64;

impl PrefixIndex {
    pub fn build<'a>(keys: impl Iterator<Item = &'a [u8]> + Clone) -> PrefixIndex {
        let common = common_prefix(keys.clone()).to_vec();
        let prefixes: Vec<u64> = keys.map(|k| key_prefix(&k[common.len()..])).collect();
        let fences = if prefixes.len() > FENCE_STRIDE {
            prefixes.iter().copied().step_by(FENCE_STRIDE).collect()
        } else {
            Vec::new()
        };
        PrefixIndex {
            common,
            prefixes,
            fences,
        }
    }

    /// The range `[lo, hi)` of positions that can hold the first key at or after a
    /// probe whose prefix is `p` ([`Probe::At`]), from the fences; the prefixes in it
    /// start loading. Everything before `lo` is below the probe, everything from `hi`
    /// on above it.
    #[inline]
    pub fn narrow(&self, p: u64) -> (usize, usize) {
        let n = self.prefixes.len();
        if self.fences.is_empty() {
            return (0, n);
        }
        // Fences below p: their strides' first keys are below the probe.
        let below = self.fences.partition_point(|&f| f < p);
        // Fences equal to p (a run of equal prefixes): their keys need full compares.
        let upto = below + self.fences[below..].partition_point(|&f| f == p);
        let lo = (below * FENCE_STRIDE).saturating_sub(FENCE_STRIDE - 1);
        let hi = (upto * FENCE_STRIDE).min(n);
        crate::cache_line::prefetch(&self.prefixes[lo..hi]);
        (lo, hi)
    }

    #[inline]
    pub fn probe(&self, key: &[u8]) -> Probe {
        probe_after(&self.common, key)
    }

    pub fn memory_size(&self) -> usize {
        self.common.len() + (self.prefixes.len() + self.fences.len()) * 8
    }
}

/// The longest prefix every key shares (empty for no keys).
fn common_prefix<'a>(keys: impl Iterator<Item = &'a [u8]>) -> &'a [u8] {
    keys.reduce(|c, k| {
        let n = c.iter().zip(k).take_while(|(a, b)| a == b).count();
        &c[..n]
    })
    .unwrap_or(&[])
}

/// Where `key` falls relative to sorted keys that all start with `common`.
#[inline]
fn probe_after(common: &[u8], key: &[u8]) -> Probe {
    if let Some(rest) = key.strip_prefix(common) {
        return Probe::At(key_prefix(rest));
    }
    let m = key.len().min(common.len());
    match key[..m].cmp(&common[..m]) {
        Ordering::Greater => Probe::Above,
        // Smaller, or a proper prefix of the common prefix: before every key.
        _ => Probe::Below,
    }
}

impl Block {
    /// Validate the block's structure. Entries are decoded lazily, still bounds-checked.
    pub fn parse(data: Vec<u8>) -> Result<Block, &'static str> {
        if data.len() < 4 {
            return Err("block too short");
        }
        let n = u32::from_le_bytes(data[data.len() - 4..].try_into().expect("4 bytes")) as usize;
        let offsets_start = data
            .len()
            .checked_sub(4 + n.checked_mul(4).ok_or("entry count overflow")?)
            .ok_or("entry count exceeds block")?;
        let mut b = Block {
            data,
            n,
            offsets_start,
            prefixes_at: 0,
            common_at: 0,
        };
        // Every entry is decoded once: checked, and where its key lies kept for the
        // seek index.
        let mut prev = None;
        let mut keys: Vec<(usize, usize)> = Vec::with_capacity(n);
        let base = b.data.as_ptr() as usize;
        for i in 0..n {
            let o = b.offset(i);
            if o >= offsets_start || prev.is_some_and(|p| o <= p) {
                return Err("bad entry offset");
            }
            prev = Some(o);
            let k = b.entry(i)?.key;
            let at = k.as_ptr() as usize - base;
            keys.push((at, at + k.len()));
        }
        let common = common_prefix(keys.iter().map(|&(s, e)| &b.data[s..e])).len();
        // The seek index after the stored bytes, in one allocation with them, written
        // straight from the keys where they lie.
        let prefixes_at = b.data.len().next_multiple_of(8);
        b.data
            .reserve_exact(prefixes_at - b.data.len() + n * 8 + common);
        b.data.resize(prefixes_at, 0);
        for &(s, e) in &keys {
            let p = key_prefix(&b.data[s + common..e]);
            b.data.extend_from_slice(&p.to_ne_bytes());
        }
        b.common_at = b.data.len();
        if let Some(&(s, _)) = keys.first() {
            b.data.extend_from_within(s..s + common);
        }
        b.prefixes_at = prefixes_at;
        Ok(b)
    }

    /// Key prefix `i` (< len()) of the seek index.
    #[inline]
    fn prefix(&self, i: usize) -> u64 {
        let p = self.prefixes_at + i * 8;
        u64::from_ne_bytes(self.data[p..p + 8].try_into().expect("8 bytes"))
    }

    /// The lines a seek reads besides the entry it finds (the offset table, the key
    /// prefixes, the common prefix), as an address and a length: a hint for a reader
    /// that can name the block before it holds it ([`crate::sst::Table::prefetch_slotted`]).
    #[inline]
    pub fn seek_lines(&self) -> (usize, usize) {
        (
            self.data.as_ptr() as usize + self.offsets_start,
            self.data.len() - self.offsets_start,
        )
    }

    #[inline]
    fn offset(&self, i: usize) -> usize {
        let p = self.offsets_start + i * 4;
        u32::from_le_bytes([
            self.data[p],
            self.data[p + 1],
            self.data[p + 2],
            self.data[p + 3],
        ]) as usize
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes held in memory (for the cache's weigher).
    pub fn memory_size(&self) -> usize {
        self.data.capacity() + 96
    }

    /// Decode entry `i` (< len()).
    #[inline]
    pub fn entry(&self, i: usize) -> Result<Entry<'_>, &'static str> {
        debug_assert!(i < self.n);
        let mut d = Decoder::new(&self.data[self.offset(i)..self.offsets_start]);
        let key = d.len_bytes().map_err(|e| e.0)?;
        let ts = d.u64().map_err(|e| e.0)?;
        let kind = ValueKind::from_u8(d.u8().map_err(|e| e.0)?).ok_or("bad value kind")?;
        let value = d.len_bytes().map_err(|e| e.0)?;
        Ok(Entry {
            key,
            ts,
            kind,
            value,
        })
    }

    /// Index of the first entry >= (key, ts) in internal order; `len()` if none.
    /// Where entry `i`'s parts lie in the block, so a cursor can hand out the entry it
    /// rests on without decoding it again ([`Block::at`]).
    pub fn locate(&self, i: usize) -> Result<Loc, &'static str> {
        let e = self.entry(i)?;
        let base = self.data.as_ptr() as usize;
        let span = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        Ok(Loc {
            key: span(e.key),
            ts: e.ts,
            put: e.kind == ValueKind::Put,
            value: span(e.value),
        })
    }

    /// The entry at `l` (from [`Block::locate`] on this block): key, ts, value (`None`
    /// for a tombstone).
    #[inline]
    pub fn at(&self, l: &Loc) -> (&[u8], Ts, Option<&[u8]>) {
        let part = |(o, n): (u32, u32)| &self.data[o as usize..(o + n) as usize];
        (part(l.key), l.ts, l.put.then(|| part(l.value)))
    }

    /// Start loading what a seek and the entry it finds read first: the key prefixes
    /// and the offset table (a cached block's lines are often not in the CPU's cache).
    #[inline]
    pub fn prefetch_seek(&self) {
        crate::cache_line::prefetch(&self.data[self.offsets_start..]);
    }

    /// Start loading the entries from `i` on (a cursor about to read them in order).
    #[inline]
    pub fn prefetch_from(&self, i: usize) {
        if i < self.n {
            let o = self.offset(i).min(self.offsets_start);
            crate::cache_line::prefetch(&self.data[o..self.offsets_start]);
        }
    }

    /// [`Block::prefetch_from`] entry 0, into the second-level cache (a cursor will
    /// read the block after the rest of the current one).
    #[inline]
    pub fn prefetch_far(&self) {
        crate::cache_line::prefetch_far(&self.data[..self.offsets_start.min(self.data.len())]);
    }

    /// Start loading up to `span` bytes of entry `i` (its key, and the value after it).
    #[inline]
    pub fn prefetch_entry(&self, i: usize, span: usize) {
        if i < self.n {
            let o = self.offset(i).min(self.offsets_start);
            crate::cache_line::prefetch(&self.data[o..(o + span).min(self.offsets_start)]);
        }
    }

    pub fn seek(&self, key: &[u8], ts: Ts) -> Result<usize, &'static str> {
        let p = match probe_after(&self.data[self.common_at..], key) {
            Probe::Below => return Ok(0),
            Probe::Above => return Ok(self.n),
            Probe::At(p) => p,
        };
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let o = match self.prefix(mid).cmp(&p) {
                Ordering::Equal => {
                    let e = self.entry(mid)?;
                    cmp_internal(e.key, e.ts, key, ts)
                }
                o => o,
            };
            if o == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_parse_seek() {
        let mut b = BlockBuilder::default();
        b.add(b"a", 5, Some(b"a5"));
        b.add(b"a", 2, None);
        b.add(b"c", 1, Some(b"c1"));
        let blk = Block::parse(b.finish()).unwrap();
        assert_eq!(blk.len(), 3);
        assert_eq!(blk.seek(b"a", 9).unwrap(), 0);
        assert_eq!(blk.seek(b"a", 4).unwrap(), 1);
        assert_eq!(blk.entry(1).unwrap().value_opt(), None);
        assert_eq!(blk.seek(b"b", 9).unwrap(), 2);
        assert_eq!(blk.seek(b"d", 9).unwrap(), 3);
        assert!(b.is_empty());
    }

    #[test]
    fn seeks_skip_a_shared_key_prefix() {
        // Every key shares a 5-byte prefix (like a table id); seeks must still order
        // correctly against keys inside, before and after the shared range.
        let mut b = BlockBuilder::default();
        let keys: Vec<Vec<u8>> = (0..40u8)
            .map(|i| [&[1, 0, 0, 0, 7][..], &[i, i]].concat())
            .collect();
        for k in &keys {
            b.add(k, 3, Some(b"v"));
            b.add(k, 1, None);
        }
        let blk = Block::parse(b.finish()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(blk.seek(k, 9).unwrap(), 2 * i);
            assert_eq!(blk.seek(k, 2).unwrap(), 2 * i + 1);
        }
        assert_eq!(blk.seek(&[1, 0, 0, 0], 9).unwrap(), 0);
        assert_eq!(blk.seek(&[0, 9], 9).unwrap(), 0);
        assert_eq!(blk.seek(&[1, 0, 0, 0, 8], 9).unwrap(), blk.len());
        assert_eq!(blk.seek(&[1, 0, 0, 0, 7, 5], 9).unwrap(), 10); // [..7, 5] < [..7, 5, 5]
    }

    #[test]
    fn fences_narrow_to_the_stride_that_holds_the_answer() {
        // Keys with long runs of one 8-byte prefix (equal prefixes across fences) and
        // distinct ones; every probe's answer must lie in the narrowed range.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for i in 0..400u32 {
            let group = if (100..250).contains(&i) { 100 } else { i };
            keys.push(
                [
                    &[7, 7][..],
                    &group.to_be_bytes(),
                    &[0, 0, 0, 0],
                    &i.to_be_bytes(),
                ]
                .concat(),
            );
        }
        keys.sort();
        let idx = PrefixIndex::build(keys.iter().map(Vec::as_slice));
        assert!(!idx.fences.is_empty());
        let mut probes = keys.clone();
        probes.extend(keys.iter().map(|k| [k.as_slice(), &[0]].concat()));
        probes.push(vec![7, 7]);
        probes.push(vec![7, 7, 255]);
        for probe in probes {
            let Probe::At(p) = idx.probe(&probe) else {
                continue;
            };
            let want = keys.partition_point(|k| k.as_slice() < probe.as_slice());
            let (lo, hi) = idx.narrow(p);
            assert!(
                lo <= want && want <= hi,
                "{probe:?}: {want} not in {lo}..{hi}"
            );
            assert!(hi - lo < keys.len(), "narrowed nothing for {probe:?}");
        }
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let mut b = BlockBuilder::default();
        for i in 0..20u8 {
            b.add(&[i], 1, Some(&[i; 10]));
        }
        let good = b.finish();
        for cut in 0..good.len() {
            let _ = Block::parse(good[..cut].to_vec()).map(|blk| {
                for i in 0..blk.len() {
                    let _ = blk.entry(i);
                }
            });
        }
        for pos in 0..good.len() {
            let mut bad = good.clone();
            bad[pos] ^= 0xff;
            if let Ok(blk) = Block::parse(bad) {
                for i in 0..blk.len() {
                    let _ = blk.entry(i);
                }
                let _ = blk.seek(b"x", 0);
            }
        }
    }
}
