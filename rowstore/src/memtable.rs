//! The memtable: an ordered map of versioned keys (our arena skiplist, `skiplist`).
//!
//! The commit leader inserts while readers read; readers filter by snapshot timestamp, so an
//! insert at a timestamp above a reader's snapshot is invisible to it. A memtable is
//! frozen (becomes immutable) before it is flushed; the `frozen` flag is set before any
//! write goes to its successor, which lets readers detect that they raced a switch.

use crate::key::{EntryRef, MAX_TS, Ts};
use crate::skiplist::{RawEntry, SkipList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::packed::PackedBytes;
use parking_lot::Mutex;

/// A stored value, or a tombstone. Shared between the skiplist and the change log (and
/// cheap to copy out of either). The values of one commit group live in one buffer, so a
/// write costs no allocation of its own (a bulk load spent a fifth of its time in malloc
/// and free); the buffer is freed with the last entry that points into it, at the
/// latest when the memtable is.
#[derive(Clone)]
pub struct MemValue(Option<(Arc<[u8]>, u32, u32)>);

impl MemValue {
    pub(crate) const TOMBSTONE: MemValue = MemValue(None);

    /// A value in a buffer of its own (`None`: a tombstone).
    #[cfg(test)]
    pub(crate) fn single(v: Option<&[u8]>) -> Self {
        MemValue(v.map(|v| (Arc::from(v), 0, v.len() as u32)))
    }

    /// `len` bytes at `at` of a shared buffer.
    #[cfg(test)]
    pub(crate) fn shared(buf: Arc<[u8]>, at: u32, len: u32) -> Self {
        MemValue(Some((buf, at, len)))
    }

    /// The value, `None` for a tombstone.
    #[inline]
    pub fn as_deref(&self) -> Option<&[u8]> {
        self.0
            .as_ref()
            .map(|(b, at, len)| &b[*at as usize..(*at + *len) as usize])
    }

    /// Each value of `values` as a `MemValue`, sharing one buffer for all of them.
    fn group<'a>(values: impl Iterator<Item = Option<&'a [u8]>> + Clone) -> Vec<MemValue> {
        let total: usize = values.clone().map(|v| v.map_or(0, <[u8]>::len)).sum();
        // One write (a single put) or offsets that would not fit (a group of several
        // huge batches): a buffer per value.
        if values.clone().nth(1).is_none() || total > u32::MAX as usize {
            return values
                .map(|v| MemValue(v.map(|v| (Arc::from(v), 0, v.len() as u32))))
                .collect();
        }
        let mut buf = Vec::with_capacity(total);
        let spans: Vec<Option<(u32, u32)>> = values
            .map(|v| {
                v.map(|v| {
                    let at = buf.len() as u32;
                    buf.extend_from_slice(v);
                    (at, v.len() as u32)
                })
            })
            .collect();
        let buf: Arc<[u8]> = Arc::from(buf);
        spans
            .into_iter()
            .map(|s| match s {
                Some((at, len)) => MemValue(Some((buf.clone(), at, len))),
                None => MemValue::TOMBSTONE,
            })
            .collect()
    }
}

pub struct MemTable {
    map: SkipList,
    approx_bytes: AtomicUsize,
    frozen: AtomicBool,
    max_ts: AtomicU64,
    /// Every write in commit order, one chunk per commit group: what lets a reader find
    /// the keys changed after a timestamp without walking the whole map.
    log: Mutex<Vec<Arc<ChangeChunk>>>,
    /// Id of the WAL segment holding this memtable's writes (0 when the WAL is off).
    wal_segment: u64,
}

/// Result of a point lookup in one source: the value found is an owned copy, or
/// whatever a lending read's function made of the borrowed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T = Vec<u8>> {
    /// No version of the key at or below the snapshot in this source.
    NotFound,
    /// The newest visible version is a tombstone.
    Deleted,
    Found(T),
}

impl MemTable {
    pub fn new(wal_segment: u64) -> Self {
        MemTable {
            map: SkipList::new(),
            approx_bytes: AtomicUsize::new(0),
            frozen: AtomicBool::new(false),
            max_ts: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            wal_segment,
        }
    }

    pub fn wal_segment(&self) -> u64 {
        self.wal_segment
    }

    pub fn insert(&self, key: &[u8], ts: Ts, value: Option<&[u8]>) {
        self.apply(std::iter::once((key, ts, value)));
    }

    /// Insert a commit group's writes (timestamps ascending, all above any earlier
    /// group's) and append them to the change log as one chunk. Only the commit leader
    /// writes, so groups arrive in timestamp order.
    pub fn apply<'a>(&self, writes: impl Iterator<Item = (&'a [u8], Ts, Option<&'a [u8]>)>) {
        debug_assert!(!self.is_frozen(), "insert into a frozen memtable");
        let writes: Vec<_> = writes.collect();
        let values = MemValue::group(writes.iter().map(|w| w.2));
        let mut chunk = ChangeChunk::default();
        let mut n = 0;
        let mut w = self.map.writer();
        if writes.len() == 1 {
            let (key, ts, _) = writes[0];
            w.insert(key, ts, values[0].clone());
        } else {
            // In key order, each insert's search starts next to the last one's (see
            // `skiplist::WriteGuard::insert`). A batch that writes one key twice gives
            // two writes of one (key, ts): the stable sort keeps them in batch order
            // and only the last goes into the map, which then never holds a (key, ts)
            // twice (the change log keeps every write).
            let mut order: Vec<u32> = (0..writes.len() as u32).collect();
            order.sort_by(|&a, &b| {
                let (a, b) = (&writes[a as usize], &writes[b as usize]);
                a.0.cmp(b.0).then(b.1.cmp(&a.1))
            });
            for (j, &i) in order.iter().enumerate() {
                let (key, ts, _) = writes[i as usize];
                let repeated = order.get(j + 1).is_some_and(|&n| {
                    let (k, t, _) = writes[n as usize];
                    t == ts && k == key
                });
                if !repeated {
                    w.insert(key, ts, values[i as usize].clone());
                }
            }
        }
        drop(w);
        for ((key, ts, _), value) in writes.into_iter().zip(values) {
            n += key.len() + value.as_deref().map_or(0, <[u8]>::len) + 96;
            chunk.push(key, ts, value);
        }
        if chunk.is_empty() {
            return;
        }
        let max = chunk.max_ts;
        self.log.lock().push(Arc::new(chunk));
        self.approx_bytes.fetch_add(n, Ordering::Relaxed);
        self.max_ts.fetch_max(max, Ordering::Relaxed);
    }

    /// The change-log chunks that may hold a write with a timestamp in `(lo, hi]`, in
    /// commit order. The lock is held only to copy the chunk handles.
    pub fn changes_between(&self, lo: Ts, hi: Ts) -> Vec<Arc<ChangeChunk>> {
        if self.max_ts() <= lo {
            return Vec::new();
        }
        let log = self.log.lock();
        let first = log.partition_point(|c| c.max_ts <= lo);
        log[first..]
            .iter()
            .take_while(|c| c.min_ts <= hi)
            .cloned()
            .collect()
    }

    /// Newest version of `key` with timestamp <= `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: Ts) -> Lookup {
        self.get_with(key, snapshot, &mut <[u8]>::to_vec)
    }

    /// [`MemTable::get`], lending the value to `f` (called only when one is found)
    /// instead of copying it.
    #[inline]
    pub fn get_with<R>(
        &self,
        key: &[u8],
        snapshot: Ts,
        f: &mut impl FnMut(&[u8]) -> R,
    ) -> Lookup<R> {
        // An empty memtable (a read-mostly database after a flush or a reopen) is
        // answered without pinning an epoch or searching. Sound for every reader: a
        // write counts itself into the map's length before it links, on the commit
        // leader's thread, which publishes the commit's timestamp after (Release); a
        // reader that can see the commit loaded that timestamp (Acquire) first, so it
        // sees the count too. Nothing is ever removed from a memtable.
        if self.map.is_empty() {
            return Lookup::NotFound;
        }
        match self.map.seek(key, snapshot) {
            Some(e) if e.key() == key => match e.value().as_deref() {
                Some(v) => Lookup::Found(f(v)),
                None => Lookup::Deleted,
            },
            _ => Lookup::NotFound,
        }
    }

    /// Commit timestamp of the newest version of `key`, if any (conflict checks).
    pub fn latest_ts(&self, key: &[u8]) -> Option<Ts> {
        if self.map.is_empty() {
            return None; // as in `get_with`
        }
        match self.map.seek(key, MAX_TS) {
            Some(e) if e.key() == key => Some(e.ts()),
            _ => None,
        }
    }

    pub fn approximate_bytes(&self) -> usize {
        self.approx_bytes.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn max_ts(&self) -> Ts {
        self.max_ts.load(Ordering::Relaxed)
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Release);
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Visit every entry in internal-key order (used by flush).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Ts, Option<&[u8]>)) {
        let mut e = self.map.first();
        while let Some(x) = e {
            f(x.key(), x.ts(), x.value().as_deref());
            e = x.next();
        }
    }
}

/// One commit group's writes in commit order: keys packed in one buffer.
#[derive(Default)]
pub struct ChangeChunk {
    min_ts: Ts,
    max_ts: Ts,
    keys: PackedBytes,
    ts: Vec<Ts>,
    values: Vec<MemValue>,
}

impl ChangeChunk {
    fn push(&mut self, key: &[u8], ts: Ts, value: MemValue) {
        if self.ts.is_empty() {
            self.min_ts = ts;
        }
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.keys.push(key);
        self.ts.push(ts);
        self.values.push(value);
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// The `i`th write: key, commit timestamp, value (`None`: a delete).
    pub fn get(&self, i: usize) -> (&[u8], Ts, Option<&[u8]>) {
        (self.keys.get(i), self.ts[i], self.values[i].as_deref())
    }
}

/// A cursor over a memtable range that holds the memtable: entries are lent straight
/// from the skiplist's nodes, which live as long as the memtable, and concurrent inserts
/// never invalidate it.
pub struct MemTableIter {
    mem: Arc<MemTable>,
    at: Option<RawEntry>,
    /// The far end of the range: forward, user keys below it; reverse, at or above it.
    limit: Option<Vec<u8>>,
    reverse: bool,
}

impl MemTableIter {
    /// Iterate user keys in `[start, end)` in internal-key order (or its reverse).
    pub fn new(
        mem: Arc<MemTable>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
    ) -> Self {
        let map = &mem.map;
        let first = match (reverse, start, end) {
            (false, Some(s), _) => map.seek(s, MAX_TS),
            (false, None, _) => map.first(),
            (true, _, Some(e)) => map.seek_before(e, MAX_TS),
            (true, _, None) => map.last(),
        }
        .map(|e| e.raw());
        let limit = if reverse { start } else { end };
        let mut it = MemTableIter {
            mem,
            at: None,
            limit: limit.map(<[u8]>::to_vec),
            reverse,
        };
        it.at = it.settle(first);
        it
    }

    /// `e` if inside the range, else `None`.
    fn settle(&self, e: Option<RawEntry>) -> Option<RawEntry> {
        // SAFETY: every entry held came from this memtable's map, kept alive by `mem`.
        let key = unsafe { self.mem.map.entry(e?) }.key();
        let outside = self
            .limit
            .as_deref()
            .is_some_and(|l| if self.reverse { key < l } else { key >= l });
        if outside { None } else { e }
    }

    #[inline]
    pub fn current(&self) -> Option<EntryRef<'_>> {
        // SAFETY: as in `settle`.
        let e = unsafe { self.mem.map.entry(self.at?) };
        Some((e.key(), e.ts(), e.value().as_deref()))
    }

    pub fn advance(&mut self) {
        let Some(at) = self.at else {
            return;
        };
        let map = &self.mem.map;
        // SAFETY: as in `settle`.
        let e = unsafe { map.entry(at) };
        let next = if self.reverse {
            map.seek_before(e.key(), e.ts())
        } else {
            e.next()
        };
        let next = next.map(|e| e.raw());
        self.at = self.settle(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads() {
        let m = MemTable::new(0);
        // Empty: answered without a search, and not after the first write.
        assert_eq!(m.get(b"k", 9), Lookup::NotFound);
        assert_eq!(m.latest_ts(b"k"), None);
        m.insert(b"k", 1, Some(b"v1"));
        m.insert(b"k", 3, None);
        m.insert(b"k", 5, Some(b"v5"));
        assert_eq!(m.get(b"k", 0), Lookup::NotFound);
        assert_eq!(m.get(b"k", 2), Lookup::Found(b"v1".to_vec()));
        assert_eq!(m.get(b"k", 4), Lookup::Deleted);
        assert_eq!(m.get(b"k", 9), Lookup::Found(b"v5".to_vec()));
        assert_eq!(m.get(b"j", 9), Lookup::NotFound);
        assert_eq!(m.latest_ts(b"k"), Some(5));
    }

    /// Of two writes of one key at one timestamp in a group (a batch that writes a key
    /// twice) the later wins, in small and large groups (whose values share a buffer),
    /// and the change log keeps every write.
    #[test]
    fn large_groups_keep_the_last_write_of_a_key() {
        for n in [8, 31, 128] {
            let m = MemTable::new(0);
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("k{:03}", (i * 7) % n).into_bytes())
                .collect();
            type Write<'a> = (&'a [u8], Ts, Option<&'a [u8]>);
            let mut writes: Vec<Write> = keys
                .iter()
                .map(|k| (k.as_slice(), 5, Some(b"first".as_slice())))
                .collect();
            writes.push((keys[3].as_slice(), 5, Some(b"second".as_slice())));
            writes.push((keys[4].as_slice(), 5, None));
            m.apply(writes.clone().into_iter());
            assert_eq!(m.get(&keys[3], 5), Lookup::Found(b"second".to_vec()), "{n}");
            assert_eq!(m.get(&keys[4], 5), Lookup::Deleted, "{n}");
            assert_eq!(m.get(&keys[5], 5), Lookup::Found(b"first".to_vec()), "{n}");
            let chunk = &m.changes_between(0, 5)[0];
            assert_eq!(chunk.len(), writes.len());
            // Flush and iterators see each (key, ts) once, with its last write, in
            // both directions.
            let m = Arc::new(m);
            let mut flushed = Vec::new();
            m.for_each(|k, _, v| flushed.push((k.to_vec(), v.map(<[u8]>::to_vec))));
            let mut it = MemTableIter::new(m.clone(), None, None, false);
            let mut fwd = Vec::new();
            while let Some((k, _, v)) = it.current() {
                fwd.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                it.advance();
            }
            let mut it = MemTableIter::new(m.clone(), None, None, true);
            let mut rev = Vec::new();
            while let Some((k, _, v)) = it.current() {
                rev.push((k.to_vec(), v.map(<[u8]>::to_vec)));
                it.advance();
            }
            rev.reverse();
            let mut want: Vec<_> = keys
                .iter()
                .map(|k| (k.clone(), Some(b"first".to_vec())))
                .collect();
            want.sort();
            want.dedup();
            for (k, v) in want.iter_mut() {
                if *k == keys[3] {
                    *v = Some(b"second".to_vec());
                } else if *k == keys[4] {
                    *v = None;
                }
            }
            assert_eq!(flushed, want, "{n}");
            assert_eq!(fwd, want, "{n}");
            assert_eq!(rev, want, "{n}");
        }
    }

    #[test]
    fn inline_and_long_keys_order_by_bytes() {
        let m = Arc::new(MemTable::new(0));
        let long = |c: u8, n: usize| vec![c; n];
        let keys = [
            long(b'a', 29),
            long(b'a', 30),
            long(b'a', 31),
            long(b'a', 200),
            b"b".to_vec(),
            long(b'b', 64),
            Vec::new(),
        ];
        for (i, k) in keys.iter().enumerate() {
            m.insert(k, i as Ts + 1, Some(k));
            m.insert(k, i as Ts + 100, None);
        }
        let mut sorted = keys.to_vec();
        sorted.sort();
        let mut it = MemTableIter::new(m.clone(), None, None, false);
        let mut got = Vec::new();
        while let Some((k, ts, v)) = it.current() {
            got.push((k.to_vec(), ts, v.map(<[u8]>::to_vec)));
            it.advance();
        }
        let want: Vec<_> = sorted
            .iter()
            .flat_map(|k| {
                let i = keys.iter().position(|x| x == k).unwrap() as Ts;
                [
                    (k.clone(), i + 100, None),
                    (k.clone(), i + 1, Some(k.clone())),
                ]
            })
            .collect();
        assert_eq!(got, want);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k, i as Ts + 1), Lookup::Found(k.clone()));
            assert_eq!(m.get(k, 99), Lookup::Found(k.clone()));
            assert_eq!(m.get(k, 200), Lookup::Deleted);
            assert_eq!(m.latest_ts(k), Some(i as Ts + 100));
        }
        assert_eq!(m.get(&long(b'a', 32), 200), Lookup::NotFound);
        let mut flushed = Vec::new();
        m.for_each(|k, ts, _| flushed.push((k.to_vec(), ts)));
        assert_eq!(flushed.len(), 14);
        assert!(flushed.windows(2).all(|w| w[0] < w[1] || w[0].0 == w[1].0));
    }

    #[test]
    fn iterates_both_directions_across_refills() {
        let m = Arc::new(MemTable::new(0));
        for i in 0..300u32 {
            m.insert(format!("{i:04}").as_bytes(), 1, Some(b"x"));
        }
        let collect = |rev, s: Option<&[u8]>, e: Option<&[u8]>| {
            let mut it = MemTableIter::new(m.clone(), s, e, rev);
            let mut out = Vec::new();
            while let Some((k, _, _)) = it.current() {
                out.push(String::from_utf8(k.to_vec()).unwrap());
                it.advance();
            }
            out
        };
        let f = collect(false, Some(b"0010"), Some(b"0200"));
        assert_eq!(f.len(), 190);
        assert_eq!(f[0], "0010");
        let r = collect(true, Some(b"0010"), Some(b"0200"));
        assert_eq!(r.len(), 190);
        assert_eq!(r[0], "0199");
        assert_eq!(collect(false, None, None).len(), 300);
    }
}
