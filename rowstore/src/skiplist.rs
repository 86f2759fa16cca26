//! The memtable's ordered map: a skiplist with one writer and any number of readers,
//! its nodes in an arena.
//!
//! Only the commit leader writes to a memtable (and recovery, before anyone reads), so
//! the list needs no compare-and-swap and no epoch-based reclamation: an insert builds
//! its node and links it bottom-up with release stores; readers follow acquire loads.
//! Nothing is ever removed, so a node lives as long as the list and a reader can hold a
//! pointer to it for as long as it holds the list. Nodes are carved out of large chunks
//! (one allocation per chunk, not per entry), the key stored inside the node after its
//! links, so a search step touches one node's memory and nothing else; dropping the list
//! frees the chunks instead of a million nodes. This is the shape of RocksDB's
//! `InlineSkipList` and LevelDB's skiplist.
//!
//! Entries are ordered by user key ascending, then timestamp descending (the internal
//! key order, `cmp_internal`). The caller inserts each (key, timestamp) once (the
//! memtable keeps the last of a batch's writes of one key).

use crate::key::Ts;
use crate::memtable::MemValue;
use parking_lot::Mutex;
use std::cmp::Ordering as CmpOrdering;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Tallest tower: with a quarter of the nodes reaching each next level, 4^12 = 16 M
/// entries before searches lengthen.
const MAX_HEIGHT: usize = 12;
/// Arena chunk size; a larger node gets a chunk of its own.
const CHUNK: usize = 1 << 20;

/// A node's fixed part. Its tower of `height` links follows it, then its key bytes.
/// Nodes are only ever reached through raw pointers to their whole allocation.
#[repr(C)]
struct Node {
    value: MemValue,
    ts: Ts,
    key_len: u32,
    height: u32,
}

const TOWER: usize = size_of::<Node>();
/// Where the fields a search reads begin (`ts`, after the value).
const PREFETCH_FROM: usize = std::mem::offset_of!(Node, ts);

impl Node {
    fn size(height: usize, key_len: usize) -> usize {
        TOWER + height * size_of::<AtomicPtr<Node>>() + key_len
    }

    /// # Safety
    /// `n` points to a live node and `level` is below its height.
    #[inline(always)]
    unsafe fn link<'a>(n: *const Node, level: usize) -> &'a AtomicPtr<Node> {
        unsafe { &*(n.cast::<u8>().add(TOWER) as *const AtomicPtr<Node>).add(level) }
    }

    /// # Safety
    /// `n` points to a live node.
    #[inline(always)]
    unsafe fn key<'a>(n: *const Node) -> &'a [u8] {
        unsafe {
            let h = (*n).height as usize;
            let at = n.cast::<u8>().add(TOWER + h * size_of::<AtomicPtr<Node>>());
            std::slice::from_raw_parts(at, (*n).key_len as usize)
        }
    }

    /// Start loading the node below `x`'s link at `level`: where the search goes next
    /// when the node `x` links to at `level` is not before the key. Its miss then
    /// overlaps with the comparison at this level instead of following it (the first
    /// touch of a node was 60% of an insert's time).
    ///
    /// # Safety
    /// `x` points to a live node and `0 < level <` its height.
    #[inline(always)]
    unsafe fn prefetch_down(x: *const Node, level: usize) {
        let down = unsafe { Node::link(x, level - 1) }.load(Ordering::Relaxed);
        // The fields a comparison reads and the first links (not the value before them).
        crate::cache_line::prefetch_ptr(down.cast::<u8>().wrapping_add(PREFETCH_FROM), 64);
    }

    /// One step of a search at `level` from `x`: `Ok` with the next node if it is
    /// before (key, ts) (the search moves on to it), else `Err` with the node that ends
    /// the level (null at the end), which bounds the levels below; `bound`, known not
    /// to be before the key, is not compared again.
    ///
    /// # Safety
    /// `x` points to a live node (or the head) and `level` is below its height.
    #[inline(always)]
    unsafe fn step(
        x: *const Node,
        level: usize,
        bound: *mut Node,
        key: &[u8],
        ts: Ts,
    ) -> Result<*mut Node, *mut Node> {
        let n = unsafe { Node::link(x, level) }.load(Ordering::Acquire);
        if level > 0 {
            unsafe { Node::prefetch_down(x, level) };
        }
        if !n.is_null() && n != bound && unsafe { Node::before(n, key, ts) } {
            Ok(n)
        } else {
            Err(n)
        }
    }

    /// Whether `n`'s internal key is before (key, ts).
    ///
    /// # Safety
    /// `n` points to a live node.
    #[inline(always)]
    unsafe fn before(n: *const Node, key: &[u8], ts: Ts) -> bool {
        match unsafe { cmp_bytes(Node::key(n), key) } {
            CmpOrdering::Equal => unsafe { (*n).ts > ts },
            o => o == CmpOrdering::Less,
        }
    }
}

/// Byte-wise order of two keys, eight bytes at a time: a search compares at every step,
/// and for short keys a call to `memcmp` costs more than the comparison (a tenth of a
/// bulk load's CPU).
#[inline(always)]
fn cmp_bytes(a: &[u8], b: &[u8]) -> CmpOrdering {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_be_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    a[i..].cmp(&b[i..])
}

/// Chunks of memory handed out front to back; freed all at once on drop.
struct Arena {
    /// Each chunk's start, length and bytes handed out (the last one's: `len - left`).
    chunks: Vec<(*mut u8, usize, usize)>,
    at: *mut u8,
    left: usize,
}

impl Arena {
    fn new() -> Self {
        Arena {
            chunks: Vec::new(),
            at: ptr::null_mut(),
            left: 0,
        }
    }

    /// `size` bytes aligned for a node, valid until the arena is dropped.
    fn alloc(&mut self, size: usize) -> *mut u8 {
        let size = size.next_multiple_of(align_of::<Node>());
        if size > self.left {
            let len = size.max(CHUNK);
            let layout = Self::layout(len);
            // SAFETY: `len` is non-zero.
            let p = unsafe { std::alloc::alloc(layout) };
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            if let Some(last) = self.chunks.last_mut() {
                last.2 = last.1 - self.left;
            }
            self.chunks.push((p, len, 0));
            (self.at, self.left) = (p, len);
        }
        let p = self.at;
        // SAFETY: `size <= left`: still inside the chunk.
        self.at = unsafe { self.at.add(size) };
        self.left -= size;
        p
    }

    /// Each chunk's start and the bytes handed out of it, in allocation order.
    fn used(&self) -> impl Iterator<Item = (*mut u8, usize)> + '_ {
        let n = self.chunks.len();
        self.chunks
            .iter()
            .enumerate()
            .map(move |(i, &(p, len, used))| (p, if i + 1 == n { len - self.left } else { used }))
    }

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len, align_of::<Node>()).expect("chunk layout")
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for &(p, len, _) in &self.chunks {
            // SAFETY: allocated in `alloc` with this layout, freed once.
            unsafe { std::alloc::dealloc(p, Self::layout(len)) };
        }
    }
}

/// What only the writer touches: the arena's free space, the height generator and the
/// splice.
struct Writer {
    arena: Arena,
    rng: u64,
    /// The last insert's neighbours at every level: `prev[l]` is the node it was linked
    /// after at level `l` (the new node itself below its height), `next[l]` the node
    /// after that. Only this writer links nodes, so the pairs stay adjacent.
    prev: [*const Node; MAX_HEIGHT],
    next: [*mut Node; MAX_HEIGHT],
}

/// The writer, holding the list's write lock.
pub(crate) struct WriteGuard<'a> {
    list: &'a SkipList,
    w: parking_lot::MutexGuard<'a, Writer>,
}

impl WriteGuard<'_> {
    /// Insert (key, ts) → value; (key, ts) is not in the list yet.
    ///
    /// The search starts from the previous insert's neighbours, at the lowest level
    /// where they still bracket the key (RocksDB's "splice"): for keys in ascending
    /// order, a few steps near the bottom instead of a walk from the top.
    pub(crate) fn insert(&mut self, key: &[u8], ts: Ts, value: MemValue) {
        assert!(key.len() <= u32::MAX as usize, "key of {} bytes", key.len());
        let list = self.list;
        let head = list.head.as_ptr() as *const Node;
        let top = list.height.load(Ordering::Relaxed);
        let w = &mut *self.w;
        // SAFETY (for every dereference below): the splice holds the head and linked
        // nodes only, each at a level below its height, and non-null links point to
        // live nodes.
        let mut from = 0;
        while from < top {
            let (p, n) = (w.prev[from], w.next[from]);
            if (ptr::eq(p, head) || unsafe { Node::before(p, key, ts) })
                && (n.is_null() || !unsafe { Node::before(n, key, ts) })
            {
                break;
            }
            from += 1;
        }
        // Levels from `from` up bracket the key (at and above `top`: the head and
        // null); find the neighbours below, each level's search bounded by the one
        // above (a node found not before the key is compared once).
        let (mut x, mut bound) = if from < top {
            (w.prev[from], w.next[from])
        } else {
            (head, ptr::null_mut())
        };
        for level in (0..from).rev() {
            loop {
                match unsafe { Node::step(x, level, bound, key, ts) } {
                    Ok(n) => x = n,
                    Err(n) => {
                        (w.prev[level], w.next[level]) = (x, n);
                        bound = n;
                        break;
                    }
                }
            }
        }
        let height = random_height(&mut w.rng);
        if height > top {
            // Readers that see the taller height find the head's null links there.
            list.height.store(height, Ordering::Relaxed);
        }
        let n = w.arena.alloc(Node::size(height, key.len())).cast::<Node>();
        // SAFETY: fresh arena memory of the node's size; `prev[l]` and `next[l]` are
        // the node's neighbours at every level below its height (the head and null
        // above the old height), so linking keeps every level sorted.
        unsafe {
            SkipList::init(n, value, ts, key, height);
            // Counted before it is linked (see `MemTable::get_with`).
            list.len.fetch_add(1, Ordering::Relaxed);
            for l in 0..height {
                Node::link(n, l).store(w.next[l], Ordering::Relaxed);
                Node::link(w.prev[l], l).store(n, Ordering::Release);
                w.prev[l] = n;
            }
        }
    }
}

pub(crate) struct SkipList {
    head: NonNull<Node>,
    height: AtomicUsize,
    len: AtomicUsize,
    /// Held for an insert: one writer at a time, whoever calls.
    writer: Mutex<Writer>,
}

// SAFETY: nodes are written only before they are published (release stores, read with
// acquire loads) and never freed before the list; their links are atomics; the arena
// is behind the writer lock. `MemValue` is `Send + Sync`.
unsafe impl Send for SkipList {}
unsafe impl Sync for SkipList {}

impl Default for SkipList {
    fn default() -> Self {
        Self::new()
    }
}

impl SkipList {
    pub(crate) fn new() -> Self {
        let mut arena = Arena::new();
        let head = arena.alloc(Node::size(MAX_HEIGHT, 0)).cast::<Node>();
        // SAFETY: fresh memory of the node's size and alignment.
        unsafe { Self::init(head, MemValue::TOMBSTONE, 0, &[], MAX_HEIGHT) };
        SkipList {
            head: NonNull::new(head).expect("arena memory"),
            height: AtomicUsize::new(1),
            len: AtomicUsize::new(0),
            writer: Mutex::new(Writer {
                arena,
                rng: 0x9E37_79B9_7F4A_7C15,
                prev: [head as *const Node; MAX_HEIGHT],
                next: [ptr::null_mut(); MAX_HEIGHT],
            }),
        }
    }

    /// # Safety
    /// `n` is unused memory of `Node::size(height, key.len())` bytes, aligned.
    unsafe fn init(n: *mut Node, value: MemValue, ts: Ts, key: &[u8], height: usize) {
        unsafe {
            n.write(Node {
                value,
                ts,
                key_len: key.len() as u32,
                height: height as u32,
            });
            for l in 0..height {
                (n.cast::<u8>().add(TOWER) as *mut AtomicPtr<Node>)
                    .add(l)
                    .write(AtomicPtr::new(ptr::null_mut()));
            }
            let at = n
                .cast::<u8>()
                .add(TOWER + height * size_of::<AtomicPtr<Node>>());
            ptr::copy_nonoverlapping(key.as_ptr(), at, key.len());
        }
    }

    /// Entries inserted so far.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of arena memory held.
    #[cfg(test)]
    pub(crate) fn arena_bytes(&self) -> usize {
        self.writer.lock().arena.chunks.iter().map(|c| c.1).sum()
    }

    /// Insert (key, ts) → value; (key, ts) is not in the list yet.
    #[cfg(test)]
    pub(crate) fn insert(&self, key: &[u8], ts: Ts, value: MemValue) {
        self.writer().insert(key, ts, value)
    }

    /// The writer's handle, for inserting many entries under one lock. Inserts in
    /// ascending order cost a short search each (see [`WriteGuard::insert`]).
    pub(crate) fn writer(&self) -> WriteGuard<'_> {
        WriteGuard {
            list: self,
            w: self.writer.lock(),
        }
    }
    /// The first entry at or after (key, ts).
    pub(crate) fn seek(&self, key: &[u8], ts: Ts) -> Option<Entry<'_>> {
        let (_, n) = self.search(key, ts);
        Entry::at(n)
    }

    /// The last entry before (key, ts).
    pub(crate) fn seek_before(&self, key: &[u8], ts: Ts) -> Option<Entry<'_>> {
        let (p, _) = self.search(key, ts);
        if ptr::eq(p, self.head.as_ptr()) {
            None
        } else {
            Entry::at(p as *mut Node)
        }
    }

    /// The first entry.
    pub(crate) fn first(&self) -> Option<Entry<'_>> {
        // SAFETY: the head's tower is full height.
        Entry::at(unsafe { Node::link(self.head.as_ptr(), 0) }.load(Ordering::Acquire))
    }

    /// The last entry.
    pub(crate) fn last(&self) -> Option<Entry<'_>> {
        let mut x = self.head.as_ptr() as *const Node;
        for level in (0..self.height.load(Ordering::Relaxed)).rev() {
            loop {
                // SAFETY: as in `insert`.
                let n = unsafe { Node::link(x, level) }.load(Ordering::Acquire);
                if n.is_null() {
                    break;
                }
                x = n;
            }
        }
        if ptr::eq(x, self.head.as_ptr()) {
            None
        } else {
            Entry::at(x as *mut Node)
        }
    }

    /// The last node before (key, ts) (or the head) and the first at or after it.
    #[inline]
    fn search(&self, key: &[u8], ts: Ts) -> (*const Node, *mut Node) {
        let mut x = self.head.as_ptr() as *const Node;
        let mut level = self.height.load(Ordering::Relaxed) - 1;
        // A node compared at one level and found not before the probe bounds every
        // lower level's search too: compare it once.
        let mut bound: *mut Node = ptr::null_mut();
        loop {
            // SAFETY: as in `insert`.
            match unsafe { Node::step(x, level, bound, key, ts) } {
                Ok(n) => x = n,
                Err(n) if level == 0 => return (x, n),
                Err(n) => {
                    bound = n;
                    level -= 1;
                }
            }
        }
    }
}

fn random_height(rng: &mut u64) -> usize {
    // xorshift64: each further level with probability 1/4.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut r = *rng;
    let mut h = 1;
    while h < MAX_HEIGHT && r & 3 == 0 {
        h += 1;
        r >>= 2;
    }
    h
}

impl Drop for SkipList {
    fn drop(&mut self) {
        // Values hold shared buffers: drop each once (the keys need nothing); the
        // arena then frees the memory. Nodes are visited in the order they were
        // allocated, front to back through each chunk (the list's order would be a
        // cache miss per node: 5% of a bulk load's CPU went to that walk).
        let w = self.writer.get_mut();
        for (start, used) in w.arena.used() {
            let mut at = 0;
            while at < used {
                // SAFETY: `&mut self`: no reader or writer is left. Every allocation
                // is a node, initialized right after it was made, and nodes follow
                // each other at their rounded sizes; each is dropped here once.
                unsafe {
                    let n = start.add(at).cast::<Node>();
                    let size = Node::size((*n).height as usize, (*n).key_len as usize);
                    ptr::drop_in_place(ptr::addr_of_mut!((*n).value));
                    at += size.next_multiple_of(align_of::<Node>());
                }
            }
        }
    }
}

/// A borrowed entry of a [`SkipList`].
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    node: NonNull<Node>,
    _list: PhantomData<&'a SkipList>,
}

impl<'a> Entry<'a> {
    fn at(n: *mut Node) -> Option<Self> {
        NonNull::new(n).map(|node| Entry {
            node,
            _list: PhantomData,
        })
    }

    pub(crate) fn key(&self) -> &'a [u8] {
        // SAFETY: a linked node lives as long as the list.
        unsafe { Node::key(self.node.as_ptr()) }
    }

    pub(crate) fn ts(&self) -> Ts {
        // SAFETY: as above; the field is never written after publication.
        unsafe { (*self.node.as_ptr()).ts }
    }

    pub(crate) fn value(&self) -> &'a MemValue {
        // SAFETY: as above.
        unsafe { &(*self.node.as_ptr()).value }
    }

    /// The next entry.
    pub(crate) fn next(&self) -> Option<Entry<'a>> {
        // SAFETY: as above.
        Entry::at(unsafe { Node::link(self.node.as_ptr(), 0) }.load(Ordering::Acquire))
    }

    /// This entry detached from the list's lifetime, for a holder that keeps the list
    /// alive by other means (see [`SkipList::entry`]).
    pub(crate) fn raw(&self) -> RawEntry {
        RawEntry(self.node)
    }
}

/// An [`Entry`] without a lifetime.
#[derive(Clone, Copy)]
pub(crate) struct RawEntry(NonNull<Node>);

// SAFETY: only a pointer; dereferenced through `SkipList::entry` alone.
unsafe impl Send for RawEntry {}
unsafe impl Sync for RawEntry {}

impl SkipList {
    /// The entry `raw` names again.
    ///
    /// # Safety
    /// `raw` came from an entry of this list.
    pub(crate) unsafe fn entry(&self, raw: RawEntry) -> Entry<'_> {
        Entry {
            node: raw.0,
            _list: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::cmp_internal;
    use crate::memtable::MemValue;

    #[test]
    fn keys_compare_bytewise() {
        let keys: [&[u8]; 9] = [
            b"",
            b"a",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefgi",
            b"abcdefghabcdefgh",
            b"abcdefghabcdefgha",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(cmp_bytes(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    fn val(s: &[u8]) -> MemValue {
        MemValue::single(Some(s))
    }

    fn all(l: &SkipList) -> Vec<(Vec<u8>, Ts, Vec<u8>)> {
        let mut out = Vec::new();
        let mut e = l.first();
        while let Some(x) = e {
            out.push((
                x.key().to_vec(),
                x.ts(),
                x.value().as_deref().unwrap_or_default().to_vec(),
            ));
            e = x.next();
        }
        out
    }

    /// Random inserts against a sorted model: order, seeks both ways, duplicates.
    #[test]
    fn matches_a_sorted_model() {
        let l = SkipList::new();
        assert!(l.first().is_none() && l.last().is_none());
        assert!(l.seek(b"a", 5).is_none() && l.seek_before(b"a", 5).is_none());
        let mut model = std::collections::BTreeMap::new();
        let mut x = 7u64;
        for i in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{:04}", x % 1500).into_bytes();
            let ts = x % 4;
            let v = format!("v{i}").into_bytes();
            // Model key: (key, reversed ts) so that it sorts like the list. Each
            // (key, ts) goes in once, as the memtable inserts it.
            if let std::collections::btree_map::Entry::Vacant(e) =
                model.entry((key.clone(), u64::MAX - ts))
            {
                l.insert(&key, ts, val(&v));
                e.insert(v);
            }
        }
        assert_eq!(l.len(), model.len());
        let want: Vec<_> = model
            .iter()
            .map(|((k, t), v)| (k.clone(), u64::MAX - t, v.clone()))
            .collect();
        assert_eq!(all(&l), want);
        for probe in 0..1600u64 {
            let key = format!("k{probe:04}").into_bytes();
            for ts in [0, 2, 9] {
                let at = (key.clone(), u64::MAX - ts);
                let after = model.range(at.clone()..).next().map(|(k, _)| k.clone());
                let got = l
                    .seek(&key, ts)
                    .map(|e| (e.key().to_vec(), u64::MAX - e.ts()));
                assert_eq!(got, after, "seek {probe} {ts}");
                let before = model.range(..at).next_back().map(|(k, _)| k.clone());
                let got = l
                    .seek_before(&key, ts)
                    .map(|e| (e.key().to_vec(), u64::MAX - e.ts()));
                assert_eq!(got, before, "seek_before {probe} {ts}");
            }
        }
        let last = l.last().unwrap();
        let (k, t) = model.keys().next_back().unwrap();
        assert_eq!((last.key(), last.ts()), (k.as_slice(), u64::MAX - t));
    }

    /// Runs of ascending keys (the splice's case), descending keys, repeated keys (each (key, ts) inserted once) and jumps
    /// through one writer, against a sorted model.
    #[test]
    fn spliced_inserts_in_any_order_stay_sorted() {
        let l = SkipList::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 3u64;
        let mut w = l.writer();
        for run in 0..300u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = x % 100_000;
            for i in 0..(x % 40) {
                let k = match run % 3 {
                    0 => start + i * 7,
                    1 => start.saturating_sub(i * 3),
                    _ => start + i / 4,
                };
                let key = format!("{k:06}").into_bytes();
                let ts = run % 5;
                let v = format!("{run}.{i}").into_bytes();
                if let std::collections::btree_map::Entry::Vacant(e) =
                    model.entry((key.clone(), u64::MAX - ts))
                {
                    w.insert(&key, ts, val(&v));
                    e.insert(v);
                }
            }
        }
        drop(w);
        let want: Vec<_> = model
            .iter()
            .map(|((k, t), v)| (k.clone(), u64::MAX - t, v.clone()))
            .collect();
        assert_eq!(all(&l), want);
        // Every level is sorted too (a search from the top finds every key).
        for (k, t) in model.keys() {
            let e = l.seek(k, u64::MAX - t).unwrap();
            assert_eq!((e.key(), e.ts()), (k.as_slice(), u64::MAX - t));
        }
    }

    /// Values are shared buffers: dropping the list drops each exactly once.
    #[test]
    fn drop_releases_every_value_once() {
        let buf: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"shared"[..]);
        {
            let l = SkipList::new();
            for i in 0..3000u32 {
                l.insert(&i.to_be_bytes(), 1, MemValue::shared(buf.clone(), 0, 6));
            }
            // Long keys that need chunks of their own.
            l.insert(&vec![7u8; 3 << 20], 1, MemValue::shared(buf.clone(), 0, 6));
            assert_eq!(std::sync::Arc::strong_count(&buf), 3002);
            assert!(l.arena_bytes() > 3 << 20);
        }
        assert_eq!(std::sync::Arc::strong_count(&buf), 1);
    }

    /// Readers walking and seeking while one writer inserts see a sorted list that only
    /// grows, and every entry whole.
    #[test]
    fn readers_run_beside_the_writer() {
        let l = SkipList::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        let mut prev: Option<(Vec<u8>, Ts)> = None;
                        let mut e = l.first();
                        let mut n = 0;
                        while let Some(x) = e {
                            let k = x.key().to_vec();
                            assert_eq!(x.value().as_deref(), Some(&k[..]));
                            if let Some((pk, pt)) = &prev {
                                assert_ne!(cmp_internal(pk, *pt, &k, x.ts()), CmpOrdering::Greater);
                            }
                            prev = Some((k, x.ts()));
                            n += 1;
                            e = x.next();
                        }
                        assert!(n <= l.len());
                        let _ = l.seek(b"0500", 3);
                    }
                });
            }
            let mut x = 11u64;
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = format!("{:04}", x % 10_000).into_bytes();
                if seen.insert((k.clone(), x >> 40)) {
                    l.insert(&k, x >> 40, val(&k));
                }
            }
            done.store(true, Ordering::Release);
        });
    }
}
