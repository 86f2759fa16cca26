use super::block::{Block, BlockBuilder, Loc, PrefixIndex, Probe};
use super::bloom;
use crate::coding::{self, Decoder};
use crate::compression::{self, Compression};
use crate::error::{Error, IoContext, Result};
use crate::key::{EntryRef, InternalKey, MAX_TS, Ts, cmp_internal};
use crate::memtable::Lookup;
use crate::sst::cache::BlockCache;
#[cfg(test)]
use crate::sst::cache::SLOT_BYTES;
use crate::sst::prefetch::Prefetcher;
use crate::vfs::{self, MmapBudget, RandomAccessFile, Vfs, VfsFile};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering as AtomicOrdering};

mod builder;
mod iter;

pub use builder::TableBuilder;
pub use iter::TableIter;

use crate::format::{TABLE_MAGIC as MAGIC, TABLE_VERSION as FORMAT_VERSION};
const FOOTER_LEN: usize = 3 * 12 + 4 + 8 + 4;
const TRAILER_LEN: usize = 5;
/// Table bytes are appended to the file in pieces of about this size.
const WRITE_BUF: usize = 256 * 1024;
/// Upper bound on a decompressed block, so damaged headers cannot force huge allocations.
const MAX_BLOCK_LEN: usize = 1 << 30;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Handle {
    offset: u64,
    len: u32,
}

impl Handle {
    fn encode(&self, out: &mut Vec<u8>) {
        coding::put_u64(out, self.offset);
        coding::put_u32(out, self.len);
    }
    fn decode(d: &mut Decoder) -> std::result::Result<Handle, crate::coding::DecodeError> {
        Ok(Handle {
            offset: d.u64()?,
            len: d.u32()?,
        })
    }
}

/// What the manifest records about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    pub id: u64,
    pub file_size: u64,
    pub smallest: InternalKey,
    pub largest: InternalKey,
    pub num_entries: u64,
    pub num_deletes: u64,
    pub min_ts: Ts,
    pub max_ts: Ts,
    /// Set for an ingested table (a large write staged as a file and published by one
    /// manifest edit): every entry of it was committed at this timestamp, whatever the
    /// file stores (see [`Table::with_global_ts`]). Recorded only in the manifest.
    pub global_ts: Option<Ts>,
}

impl TableMeta {
    pub fn encode(&self, out: &mut Vec<u8>) {
        coding::put_u64(out, self.id);
        coding::put_u64(out, self.file_size);
        coding::put_bytes(out, &self.smallest.user_key);
        coding::put_u64(out, self.smallest.ts);
        coding::put_bytes(out, &self.largest.user_key);
        coding::put_u64(out, self.largest.ts);
        coding::put_u64(out, self.num_entries);
        coding::put_u64(out, self.num_deletes);
        coding::put_u64(out, self.min_ts);
        coding::put_u64(out, self.max_ts);
    }

    pub fn decode(d: &mut Decoder) -> std::result::Result<Self, crate::coding::DecodeError> {
        Ok(TableMeta {
            id: d.u64()?,
            file_size: d.u64()?,
            smallest: InternalKey::new(d.len_bytes()?, d.u64()?),
            largest: InternalKey::new(d.len_bytes()?, d.u64()?),
            num_entries: d.u64()?,
            num_deletes: d.u64()?,
            min_ts: d.u64()?,
            max_ts: d.u64()?,
            global_ts: None,
        })
    }

    /// Does the table's user-key range intersect `[start, end]` (inclusive user keys)?
    pub fn overlaps(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> bool {
        start.is_none_or(|s| self.largest.user_key.as_slice() >= s)
            && end.is_none_or(|e| self.smallest.user_key.as_slice() <= e)
    }
}

/// Path of table `id` in `dir`.
pub use crate::files::table_path;

/// Where a point read of one table goes on ([`Table::point_block`]): the block's index
/// (past the last: the table cannot hold the key) and the snapshot to read it at.
#[derive(Debug, Clone, Copy)]
pub struct PointBlock(usize, Ts);

/// At most this much of a block's seek lines is prefetched through its slot: the
/// offset table and prefixes of a block of up to ~80 entries.
const SEEK_PREFETCH: usize = 1024;

/// A table's handle on one cached block ([`Table::slots`]).
#[derive(Default)]
struct BlockSlot {
    block: arc_swap::ArcSwapWeak<Block>,
    /// Where the block was when it was slotted, and its seek lines
    /// ([`Block::seek_lines`]): prefetch addresses only, read with plain loads (an
    /// `ArcSwap` load is a fenced atomic that would wait for every miss before it) and
    /// never read through (the block may be gone).
    header_at: AtomicUsize,
    seek_at: AtomicUsize,
    seek_len: AtomicU32,
}

impl BlockSlot {
    fn set(&self, b: &Arc<Block>) {
        let (at, len) = b.seek_lines();
        self.header_at
            .store(Arc::as_ptr(b) as usize, AtomicOrdering::Relaxed);
        self.seek_at.store(at, AtomicOrdering::Relaxed);
        self.seek_len
            .store(len.min(SEEK_PREFETCH) as u32, AtomicOrdering::Relaxed);
        self.block.store(Arc::downgrade(b));
    }
}

/// An open, verified table.
pub struct Table {
    id: u64,
    vfs: Arc<dyn Vfs>,
    file: RandomAccessFile,
    index: Vec<(InternalKey, Handle)>,
    /// 8-byte prefixes of the index keys after their common prefix: the binary search
    /// over blocks compares these contiguous integers and touches keys only on ties.
    index_prefix: PrefixIndex,
    filter: Vec<u8>,
    meta: TableMeta,
    cache: Option<Arc<BlockCache>>,
    /// Per data block, a weak handle on the block as the cache holds it: a hit without
    /// hashing into the cache (the cache still owns the block and evicts it; then the
    /// handle no longer upgrades). Empty when the cache's slot budget was spent
    /// ([`BlockCache::reserve_slots`]).
    slots: Box<[BlockSlot]>,
    /// Set once a manifest edit removed this table; the file is deleted when the last
    /// reader lets go of it.
    obsolete: AtomicBool,
    /// [`TableMeta::global_ts`]: the commit timestamp of every entry, overriding the
    /// one stored with it.
    global_ts: Option<Ts>,
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Some(c) = &self.cache
            && !self.slots.is_empty()
        {
            c.release_slots(self.slots.len());
        }
        if self.obsolete.load(AtomicOrdering::Acquire) {
            let _ = self.vfs.remove(self.file.path());
        }
    }
}

fn read_trailed(file: &RandomAccessFile, h: Handle, what: &str) -> Result<(Compression, Vec<u8>)> {
    let mut buf = file.read_at(h.offset, h.len as usize + TRAILER_LEN)?;
    let n = h.len as usize;
    let codec_b = buf[n];
    let crc = u32::from_le_bytes(buf[n + 1..n + 5].try_into().expect("4 bytes"));
    let mut c = crc32c::crc32c(&buf[..n]);
    c = crc32c::crc32c_append(c, &[codec_b]);
    if c != crc {
        return Err(Error::corruption(
            file.path(),
            h.offset,
            format!("{what} checksum mismatch"),
        ));
    }
    let codec = Compression::from_u8(codec_b).ok_or_else(|| {
        Error::corruption(
            file.path(),
            h.offset,
            format!("{what}: unknown codec {codec_b}"),
        )
    })?;
    buf.truncate(n);
    Ok((codec, buf))
}

fn read_block_data(file: &RandomAccessFile, h: Handle, what: &str) -> Result<Vec<u8>> {
    let (codec, payload) = read_trailed(file, h, what)?;
    if codec == Compression::None {
        return Ok(payload);
    }
    compression::decompress(codec, &payload, MAX_BLOCK_LEN)
        .map_err(|e| Error::corruption(file.path(), h.offset, format!("{what}: {e}")))
}

impl Table {
    /// Open a table and verify its footer, index, filter and meta blocks.
    pub fn open(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        id: u64,
        mmap: Option<&Arc<MmapBudget>>,
        cache: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let path = table_path(dir, id);
        let file = RandomAccessFile::open(&**vfs, &path, mmap)?;
        Self::from_file(vfs, file, id, cache)
    }

    /// [`Table::open`] over a file already open.
    pub fn from_file(
        vfs: &Arc<dyn Vfs>,
        file: RandomAccessFile,
        id: u64,
        cache: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let path = file.path().to_path_buf();
        let len = file.len();
        if len < FOOTER_LEN as u64 {
            return Err(Error::corruption(
                &path,
                0,
                "file shorter than a table footer",
            ));
        }
        let foot_off = len - FOOTER_LEN as u64;
        let footer = file.read_at(foot_off, FOOTER_LEN)?;
        let crc = u32::from_le_bytes(footer[FOOTER_LEN - 4..].try_into().expect("4 bytes"));
        if crc32c::crc32c(&footer[..FOOTER_LEN - 4]) != crc {
            return Err(Error::corruption(
                &path,
                foot_off,
                "table footer checksum mismatch",
            ));
        }
        let bad = |off: u64, why: &str| Error::corruption(&path, off, why.to_string());
        let mut d = Decoder::new(&footer);
        let index_h = Handle::decode(&mut d).map_err(|e| bad(foot_off, e.0))?;
        let filter_h = Handle::decode(&mut d).map_err(|e| bad(foot_off, e.0))?;
        let meta_h = Handle::decode(&mut d).map_err(|e| bad(foot_off, e.0))?;
        let version = d.u32().map_err(|e| bad(foot_off, e.0))?;
        let magic = d.u64().map_err(|e| bad(foot_off, e.0))?;
        if magic != MAGIC {
            return Err(bad(foot_off, "not a Lightning DB table (bad magic)"));
        }
        if version == 0 || version > FORMAT_VERSION {
            return Err(bad(
                foot_off,
                &format!("unsupported table format version {version}"),
            ));
        }
        let filter = read_block_data(&file, filter_h, "filter block")?;
        let meta_raw = read_block_data(&file, meta_h, "meta block")?;
        let mut md = Decoder::new(&meta_raw);
        let mut rd = || -> std::result::Result<TableMeta, crate::coding::DecodeError> {
            Ok(TableMeta {
                id,
                file_size: len,
                smallest: InternalKey::new(md.len_bytes()?, md.u64()?),
                largest: InternalKey::new(md.len_bytes()?, md.u64()?),
                num_entries: md.u64()?,
                num_deletes: md.u64()?,
                min_ts: md.u64()?,
                max_ts: md.u64()?,
                global_ts: None,
            })
        };
        let meta = rd().map_err(|e| bad(meta_h.offset, e.0))?;
        let idx_raw = read_block_data(&file, index_h, "index block")?;
        let mut d = Decoder::new(&idx_raw);
        let n = d.u32().map_err(|e| bad(index_h.offset, e.0))? as usize;
        let mut index = Vec::with_capacity(n.min(idx_raw.len() / 8));
        for _ in 0..n {
            let k = d.len_bytes().map_err(|e| bad(index_h.offset, e.0))?;
            let ts = d.u64().map_err(|e| bad(index_h.offset, e.0))?;
            let h = Handle::decode(&mut d).map_err(|e| bad(index_h.offset, e.0))?;
            if h.offset + h.len as u64 + TRAILER_LEN as u64 > foot_off {
                return Err(bad(index_h.offset, "index points past the data"));
            }
            index.push((InternalKey::new(k, ts), h));
        }
        let index_prefix = PrefixIndex::build(index.iter().map(|(k, _)| k.user_key.as_slice()));
        let slots = match &cache {
            Some(c) if c.reserve_slots(index.len()) => {
                (0..index.len()).map(|_| BlockSlot::default()).collect()
            }
            _ => Box::default(),
        };
        Ok(Table {
            id,
            vfs: vfs.clone(),
            file,
            index,
            index_prefix,
            filter,
            meta,
            slots,
            cache,
            obsolete: AtomicBool::new(false),
            global_ts: None,
        })
    }

    /// This table as an ingested one: every entry reads as committed at `ts` (its
    /// meta says so too). An ingested file holds each key once; the timestamp it was
    /// written with is ignored, so a file written before its commit timestamp was
    /// known is published without being rewritten.
    pub fn with_global_ts(mut self, ts: Ts) -> Table {
        self.global_ts = Some(ts);
        self.meta.global_ts = Some(ts);
        self.meta.min_ts = ts;
        self.meta.max_ts = ts;
        self.meta.smallest.ts = ts;
        self.meta.largest.ts = ts;
        self
    }

    /// [`TableMeta::global_ts`].
    pub fn global_ts(&self) -> Option<Ts> {
        self.global_ts
    }

    /// Delete the file once no version or iterator references this table any more.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, AtomicOrdering::Release);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn num_blocks(&self) -> usize {
        self.index.len()
    }

    /// The user key of block `i`'s last entry (from the index, nothing read).
    pub fn block_last_key(&self, i: usize) -> Option<&[u8]> {
        self.index.get(i).map(|(k, _)| k.user_key.as_slice())
    }

    /// Memory held by the index and filter (pinned while the table is open).
    pub fn pinned_bytes(&self) -> usize {
        self.filter.len()
            + self
                .index
                .iter()
                .map(|(k, _)| k.user_key.len() + 40)
                .sum::<usize>()
    }

    /// Start loading the part of the bloom filter [`Table::may_contain_hash`] reads.
    #[inline]
    pub fn prefetch_filter(&self, h: u64) {
        bloom::prefetch(&self.filter, h);
    }

    /// May this table hold `key` (bloom filter over user keys)?
    #[inline]
    pub fn may_contain_hash(&self, h: u64) -> bool {
        bloom::may_contain(&self.filter, h)
    }

    /// Read, verify and decompress block `i`, through the cache.
    pub fn block(&self, i: usize) -> Result<Arc<Block>> {
        self.block_hit(i).map(|(b, _)| b)
    }

    /// Start loading the header of block `i` as its slot names it (its reference
    /// counts, which reading it updates, and where its bytes are): the slot holds
    /// the cached block without keeping it, so this is a hint only, and a block
    /// evicted since is never read.
    #[inline]
    pub fn prefetch_slotted(&self, i: usize) {
        if self.cache.is_some()
            && let Some(slot) = self.slots.get(i)
            && let p = slot.header_at.load(AtomicOrdering::Relaxed) as *const u8
            && !p.is_null()
        {
            // `Arc`'s two counts sit just before the value.
            crate::cache_line::prefetch_for_write(p.wrapping_sub(16), 16);
            crate::cache_line::prefetch_ptr(p, std::mem::size_of::<Block>());
            // And what the seek reads, without waiting for the header to say where.
            let at = slot.seek_at.load(AtomicOrdering::Relaxed) as *const u8;
            let len = slot.seek_len.load(AtomicOrdering::Relaxed) as usize;
            crate::cache_line::prefetch_ptr(at, len);
        }
    }

    /// Block `i` if a read can reach it without the cache's lookup (its slot still
    /// holds it): never reads the file.
    pub fn slotted_block(&self, i: usize) -> Option<Arc<Block>> {
        self.cache.as_ref()?;
        self.slots.get(i)?.block.load().upgrade()
    }

    /// Count a block found without asking the cache (a cursor's read-ahead).
    pub(super) fn count_hit(&self) {
        if let Some(c) = &self.cache {
            c.count_hit();
        }
    }

    /// [`Table::block`], and whether the cache had it.
    pub fn block_hit(&self, i: usize) -> Result<(Arc<Block>, bool)> {
        let slot = self.slots.get(i);
        if let Some(c) = &self.cache {
            if let Some(b) = slot.and_then(|s| s.block.load().upgrade()) {
                c.count_hit();
                return Ok((b, true));
            }
            if let Some(b) = c.get(self.id, i as u32) {
                if let Some(s) = slot {
                    s.set(&b);
                }
                return Ok((b, true));
            }
        }
        let b = self.load_block(i)?;
        if let Some(c) = &self.cache {
            c.insert(self.id, i as u32, b.clone());
            if let Some(s) = slot {
                s.set(&b);
            }
        }
        Ok((b, false))
    }

    fn load_block(&self, i: usize) -> Result<Arc<Block>> {
        let h = self.index[i].1;
        let data = read_block_data(&self.file, h, "data block")?;
        Block::parse(data)
            .map(Arc::new)
            .map_err(|e| Error::corruption(self.path(), h.offset, format!("data block: {e}")))
    }

    /// Whether block `i` is in the block cache (without a cache, read-ahead has nowhere
    /// to put blocks: reported as cached).
    pub fn block_cached(&self, i: usize) -> bool {
        self.cache
            .as_ref()
            .is_none_or(|c| c.contains(self.id, i as u32))
    }

    /// Load block `i` into the cache if it is not there (used by prefetch workers).
    pub fn prefetch_block(&self, i: usize) {
        if let Some(c) = &self.cache
            && i < self.index.len()
            && !c.contains(self.id, i as u32)
            && let Ok(b) = self.load_block(i)
        {
            c.insert(self.id, i as u32, b);
        }
    }

    /// Hint the OS to read blocks `[from, to)` ahead.
    pub fn advise_will_need(&self, from: usize, to: usize) {
        if from >= to || to > self.index.len() {
            return;
        }
        let start = self.index[from].1.offset;
        let last = self.index[to - 1].1;
        self.file.will_need(
            start,
            last.offset + last.len as u64 + TRAILER_LEN as u64 - start,
        );
    }

    /// Index of the first block whose last key >= (key, ts); `num_blocks()` if none.
    fn find_block(&self, key: &[u8], ts: Ts) -> usize {
        let p = match self.index_prefix.probe(key) {
            Probe::Below => return 0,
            Probe::Above => return self.index.len(),
            Probe::At(p) => p,
        };
        let (mut lo, mut hi) = self.index_prefix.narrow(p);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let o = match self.index_prefix.prefixes[mid].cmp(&p) {
                Ordering::Equal => {
                    let k = &self.index[mid].0;
                    cmp_internal(&k.user_key, k.ts, key, ts)
                }
                o => o,
            };
            if o == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn corrupt(&self, block: usize, why: &str) -> Error {
        let off = self.index.get(block).map_or(0, |(_, h)| h.offset);
        Error::corruption(self.path(), off, why.to_string())
    }

    /// Newest version of `key` at or below `snapshot` in this table.
    pub fn get(&self, key: &[u8], snapshot: Ts) -> Result<Lookup> {
        self.get_with(key, snapshot, &mut <[u8]>::to_vec)
    }

    /// [`Table::get`], lending the value to `f` (called only when one is found) from
    /// its block instead of copying it.
    pub fn get_with<R>(
        &self,
        key: &[u8],
        snapshot: Ts,
        f: &mut impl FnMut(&[u8]) -> R,
    ) -> Result<Lookup<R>> {
        // The block is read right away: no header to start loading first.
        let at = self.locate_block(key, snapshot);
        self.get_at_with(at, key, f)
    }

    /// A point read's first half: the block that can hold `key`'s newest version at
    /// `snapshot`, found from the index, with that block's cache slot and the block's
    /// header already on their way into the CPU's cache. A caller with other work
    /// before it reads the block (the filter's answer, other levels) overlaps those
    /// misses with it; [`Table::get_at_with`] finishes the read.
    #[inline]
    pub fn point_block(&self, key: &[u8], snapshot: Ts) -> PointBlock {
        let at = self.locate_block(key, snapshot);
        self.prefetch_slotted(at.0);
        at
    }

    /// The block that can hold `key`'s newest version at `snapshot`, from the index.
    #[inline]
    fn locate_block(&self, key: &[u8], snapshot: Ts) -> PointBlock {
        let snapshot = match self.global_ts {
            // Every entry is at `g`: invisible below it, and the file's own (older)
            // stored timestamps must not hide it at or above it.
            Some(g) if g > snapshot => return PointBlock(usize::MAX, 0),
            Some(_) => MAX_TS,
            None => snapshot,
        };
        PointBlock(self.find_block(key, snapshot), snapshot)
    }

    /// Finish a point read [`Table::point_block`] started for the same `key`.
    #[inline]
    pub fn get_at_with<R>(
        &self,
        at: PointBlock,
        key: &[u8],
        f: &mut impl FnMut(&[u8]) -> R,
    ) -> Result<Lookup<R>> {
        let PointBlock(bi, snapshot) = at;
        if bi >= self.index.len() {
            return Ok(Lookup::NotFound);
        }
        let b = self.block(bi)?;
        b.prefetch_seek();
        let i = b.seek(key, snapshot).map_err(|e| self.corrupt(bi, e))?;
        if i >= b.len() {
            return Ok(Lookup::NotFound);
        }
        // The key and the value after it, in one round of misses.
        b.prefetch_entry(i, 160);
        let e = b.entry(i).map_err(|e| self.corrupt(bi, e))?;
        if e.key != key {
            return Ok(Lookup::NotFound);
        }
        Ok(match e.value_opt() {
            Some(v) => Lookup::Found(f(v)),
            None => Lookup::Deleted,
        })
    }

    /// Commit timestamp of the newest version of `key` in this table.
    pub fn latest_ts(&self, key: &[u8]) -> Result<Option<Ts>> {
        let bi = self.find_block(key, MAX_TS);
        if bi >= self.index.len() {
            return Ok(None);
        }
        let b = self.block(bi)?;
        let i = b.seek(key, MAX_TS).map_err(|e| self.corrupt(bi, e))?;
        if i >= b.len() {
            return Ok(None);
        }
        let e = b.entry(i).map_err(|e| self.corrupt(bi, e))?;
        Ok((e.key == key).then_some(self.global_ts.unwrap_or(e.ts)))
    }

    /// Verify one data block's checksum and structure, bypassing the cache. Returns
    /// the number of entries in it.
    pub fn verify_block(&self, i: usize) -> Result<u64> {
        let b = self.load_block(i)?;
        for j in 0..b.len() {
            b.entry(j).map_err(|e| self.corrupt(i, e))?;
        }
        Ok(b.len() as u64)
    }

    /// Verify every block's checksum and structure (for `check` tools and tests).
    pub fn verify(&self) -> Result<u64> {
        let mut n = 0;
        for i in 0..self.index.len() {
            let b = self.load_block(i)?;
            for j in 0..b.len() {
                b.entry(j).map_err(|e| self.corrupt(i, e))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(dir: &Path, id: u64, n: u32, codec: Compression) -> Arc<Table> {
        let mut b = TableBuilder::create(&crate::vfs::std_vfs(), dir, id, 256, codec, 10).unwrap();
        for i in 0..n {
            let k = format!("key{i:05}");
            b.add(k.as_bytes(), 10, Some(format!("v{i}").as_bytes()))
                .unwrap();
            if i % 3 == 0 {
                b.add(k.as_bytes(), 5, None).unwrap();
            }
        }
        let meta = b.finish().unwrap();
        assert_eq!(meta.num_entries, (n + n.div_ceil(3)) as u64);
        let cache = Arc::new(BlockCache::new(1 << 20, true));
        Arc::new(Table::open(&crate::vfs::std_vfs(), dir, id, None, Some(cache)).unwrap())
    }

    /// Reads through a table's block slots give the cache's blocks, still right after
    /// the cache evicts them; slots come out of the cache's budget and go back to it.
    #[test]
    fn block_slots_follow_the_cache_and_its_budget() {
        let d = tempfile::tempdir().unwrap();
        let vfs = crate::vfs::std_vfs();
        // 16 KiB blocks: a cache too small for them, whose budget still covers slots.
        let mut b =
            TableBuilder::create(&vfs, d.path(), 1, 16 << 10, Compression::None, 10).unwrap();
        for i in 0..3000u32 {
            b.add(format!("key{i:05}").as_bytes(), 10, Some(&[i as u8; 200]))
                .unwrap();
        }
        b.finish().unwrap();
        const CAP: u64 = 128 << 10;
        let cache = Arc::new(BlockCache::new(CAP, true));
        let t = Table::open(&vfs, d.path(), 1, None, Some(cache.clone())).unwrap();
        let n = t.num_blocks();
        assert!(n > 30 && (n as u64) * SLOT_BYTES <= CAP / 16, "{n}");
        assert!(!t.slots.is_empty());
        let plain = Table::open(&vfs, d.path(), 1, None, None).unwrap();
        for round in 0..3 {
            for i in (0..n).chain((0..n).rev()).chain([0, 0, 1, 1]) {
                let (a, b) = (t.block(i).unwrap(), plain.block(i).unwrap());
                assert_eq!(a.len(), b.len(), "round {round} block {i}");
                for j in [0, a.len() - 1] {
                    assert_eq!(a.entry(j).unwrap(), b.entry(j).unwrap());
                }
            }
        }
        assert!(cache.hits() > 0);
        // The budget: another table's slots would not fit now; dropping gives it back.
        let all = (CAP / 16 / SLOT_BYTES) as usize;
        assert!(!cache.reserve_slots(all));
        drop(t);
        assert!(cache.reserve_slots(all));
    }

    #[test]
    fn point_lookups_at_snapshots() {
        let d = tempfile::tempdir().unwrap();
        for (id, codec) in [
            (1, Compression::None),
            (2, Compression::Zstd),
            (3, Compression::Lz4),
            (4, Compression::Snappy),
        ] {
            let t = build(d.path(), id, 500, codec);
            assert!(t.num_blocks() > 10);
            assert_eq!(
                t.get(b"key00042", 20).unwrap(),
                Lookup::Found(b"v42".to_vec())
            );
            assert_eq!(t.get(b"key00042", 9).unwrap(), Lookup::Deleted);
            assert_eq!(t.get(b"key00042", 4).unwrap(), Lookup::NotFound);
            assert_eq!(t.get(b"key00041", 9).unwrap(), Lookup::NotFound);
            assert_eq!(t.get(b"nokey", 20).unwrap(), Lookup::NotFound);
            assert_eq!(t.get(b"zzz", 20).unwrap(), Lookup::NotFound);
            assert_eq!(t.verify().unwrap(), 500 + 167);
        }
    }

    /// A table of hundreds of blocks: the index search narrows through its fences
    /// ([`PrefixIndex::narrow`]); every key, version and gap must still be found.
    #[test]
    fn point_lookups_through_the_index_fences() {
        let d = tempfile::tempdir().unwrap();
        let t = build(d.path(), 1, 5000, Compression::None);
        assert!(t.num_blocks() > 4 * super::super::block::FENCE_STRIDE);
        for i in 0..5000 {
            let k = format!("key{i:05}");
            let v = format!("v{i}");
            assert_eq!(
                t.get(k.as_bytes(), 20).unwrap(),
                Lookup::Found(v.into_bytes())
            );
            let older = if i % 3 == 0 {
                Lookup::Deleted
            } else {
                Lookup::NotFound
            };
            assert_eq!(t.get(k.as_bytes(), 9).unwrap(), older, "{k}");
            assert_eq!(t.get(k.as_bytes(), 4).unwrap(), Lookup::NotFound);
            let gap = format!("{k}!");
            assert_eq!(t.get(gap.as_bytes(), 20).unwrap(), Lookup::NotFound);
        }
    }

    #[test]
    fn iterates_ranges_both_ways() {
        let d = tempfile::tempdir().unwrap();
        let t = build(d.path(), 1, 300, Compression::Lz4);
        let run = |s: Option<&[u8]>, e: Option<&[u8]>, rev| {
            let mut it = TableIter::new(t.clone(), s, e, rev, None).unwrap();
            let mut v = Vec::new();
            while let Some((k, ts, _)) = it.current() {
                v.push((String::from_utf8(k.to_vec()).unwrap(), ts));
                it.advance().unwrap();
            }
            v
        };
        let all = run(None, None, false);
        assert_eq!(all.len(), 400);
        let mut rev = run(None, None, true);
        rev.reverse();
        assert_eq!(all, rev);
        let r = run(Some(b"key00010"), Some(b"key00020"), false);
        assert_eq!(r.first().unwrap().0, "key00010");
        assert_eq!(r.iter().filter(|(_, ts)| *ts == 10).count(), 10);
        let rr = run(Some(b"key00010"), Some(b"key00020"), true);
        assert_eq!(rr.first().unwrap().0, "key00019");
        assert_eq!(rr.last().unwrap().0, "key00010");
        assert_eq!(rr.len(), r.len());
        assert!(run(Some(b"zz"), None, false).is_empty());
        assert!(run(None, Some(b"a"), true).is_empty());
    }

    #[test]
    fn long_scans_read_ahead_and_short_ones_do_not() {
        let d = tempfile::tempdir().unwrap();
        let t = build(d.path(), 9, 2000, Compression::Lz4);
        let n = t.num_blocks();
        assert!(n > 40);
        let p = crate::sst::prefetch::Prefetcher::start(1);
        let cached = |from: usize, to: usize| (from..to).filter(|&b| t.block_cached(b)).count();
        // A scan that stays in its first two blocks asks for nothing.
        let mut it = TableIter::new(t.clone(), None, None, false, Some((p.clone(), 8))).unwrap();
        while it.block_idx < 1 {
            it.advance().unwrap();
        }
        assert_eq!(cached(0, n), 2);
        // Moving on shows a long scan (and a cold one): one block is loaded ahead of it,
        // then a window doubling per block up to 8.
        while it.block_idx < 2 {
            it.advance().unwrap();
        }
        let wait_for = |from: usize, to: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while cached(from, to) < to - from && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(cached(from, to), to - from);
        };
        wait_for(3, 4);
        assert_eq!(cached(4, n), 0);
        while it.block_idx < 5 {
            it.advance().unwrap();
        }
        wait_for(0, 14);
        assert_eq!(cached(14, n), 0);
        // Entries are the same with and without read-ahead.
        let all = |pf| {
            let mut it = TableIter::new(t.clone(), None, None, false, pf).unwrap();
            let mut out = Vec::new();
            while let Some((k, ts, v)) = it.current() {
                out.push((k.to_vec(), ts, v.map(<[u8]>::to_vec)));
                it.advance().unwrap();
            }
            out
        };
        assert_eq!(all(None), all(Some((p.clone(), 4))));
        // Backwards the same: once past two blocks, the 8 below are loaded ahead.
        let t = build(d.path(), 10, 2000, Compression::Lz4);
        let cached = |from: usize, to: usize| (from..to).filter(|&b| t.block_cached(b)).count();
        let mut it = TableIter::new(t.clone(), None, None, true, Some((p.clone(), 8))).unwrap();
        while it.block_idx > n - 6 {
            it.advance().unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cached(n - 14, n) < 14 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(cached(n - 14, n), 14);
        assert_eq!(cached(0, n - 14), 0);
        // A scan over blocks the cache holds asks for nothing ahead.
        let t = build(d.path(), 11, 2000, Compression::Lz4);
        let cached = |from: usize, to: usize| (from..to).filter(|&b| t.block_cached(b)).count();
        for b in 0..6 {
            t.block(b).unwrap();
        }
        let mut it = TableIter::new(t.clone(), None, None, false, Some((p.clone(), 8))).unwrap();
        while it.block_idx < 5 {
            it.advance().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(cached(6, n), 0);
        p.shutdown();
    }

    #[test]
    fn flipped_byte_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        build(d.path(), 7, 500, Compression::Lz4);
        let p = table_path(d.path(), 7);
        let mut data = std::fs::read(&p).unwrap();
        data[100] ^= 0x10;
        std::fs::write(&p, &data).unwrap();
        let t = Table::open(&crate::vfs::std_vfs(), d.path(), 7, None, None).unwrap();
        let mut saw = false;
        for i in 0..500 {
            match t.get(format!("key{i:05}").as_bytes(), 20) {
                Err(e) => {
                    assert!(e.is_corruption());
                    saw = true;
                }
                Ok(l) => assert_eq!(l, Lookup::Found(format!("v{i}").into_bytes())),
            }
        }
        assert!(saw);
        assert!(t.verify().unwrap_err().is_corruption());
        // Footer damage is caught at open.
        let n = data.len();
        data[n - 10] ^= 1;
        std::fs::write(&p, &data).unwrap();
        assert!(
            Table::open(&crate::vfs::std_vfs(), d.path(), 7, None, None)
                .err()
                .unwrap()
                .is_corruption()
        );
    }
}
