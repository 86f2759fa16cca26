//! The block cache: decompressed, verified data blocks, bounded by `cache_size` bytes.
//!
//! Built on quick_cache (CLOCK-PRO style eviction, sharded). `use_lock_free_cache`
//! chooses many shards (readers on different shards never contend) or a single shard
//! (one global eviction order, more contention).

use crate::counter::StripedCounter;
use crate::sst::block::Block;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};
use std::sync::Arc;

#[derive(Clone)]
struct BlockWeighter;

impl Weighter<(u64, u32), Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &(u64, u32), val: &Arc<Block>) -> u64 {
        val.memory_size() as u64
    }
}

/// Options of a cache of about 4 KiB entries bounded at `capacity_bytes`: many shards
/// (readers on different shards never contend) or one (a single eviction order).
pub(crate) fn cache_options(capacity_bytes: u64, sharded: bool) -> quick_cache::Options {
    let shards = if sharded {
        (std::thread::available_parallelism().map_or(4, |n| n.get()) * 4).next_power_of_two()
    } else {
        1
    };
    OptionsBuilder::new()
        .estimated_items_capacity((capacity_bytes / 4096).max(16) as usize)
        .weight_capacity(capacity_bytes)
        .shards(shards)
        .build()
        .expect("cache options are valid")
}

/// Cache of data blocks keyed by (table id, block index).
pub struct BlockCache {
    cache: Cache<(u64, u32), Arc<Block>, BlockWeighter>,
    hits: StripedCounter,
    misses: StripedCounter,
    /// Bytes left for tables' block slots ([`BlockCache::reserve_slots`]): a sixteenth
    /// of the capacity, so the slots never cost more than that beside the cache.
    slot_budget: std::sync::atomic::AtomicI64,
}

/// What one block slot may cost: the slot, and the block's bookkeeping a weak handle
/// keeps allocated after the cache evicted the block.
pub const SLOT_BYTES: u64 = 32 + 96;

impl BlockCache {
    /// `capacity_bytes` of decompressed blocks; `sharded` selects concurrent shards.
    pub fn new(capacity_bytes: u64, sharded: bool) -> Self {
        BlockCache {
            cache: Cache::with_options(
                cache_options(capacity_bytes, sharded),
                BlockWeighter,
                Default::default(),
                Default::default(),
            ),
            hits: StripedCounter::default(),
            misses: StripedCounter::default(),
            slot_budget: std::sync::atomic::AtomicI64::new((capacity_bytes / 16) as i64),
        }
    }

    /// Reserve block slots for a table of `blocks` data blocks; false (nothing
    /// reserved) if the budget is spent: that table reads through the cache alone.
    pub fn reserve_slots(&self, blocks: usize) -> bool {
        use std::sync::atomic::Ordering;
        let want = (blocks as u64 * SLOT_BYTES) as i64;
        self.slot_budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left >= want).then_some(left - want)
            })
            .is_ok()
    }

    /// Give back what [`BlockCache::reserve_slots`] reserved for `blocks`.
    pub fn release_slots(&self, blocks: usize) {
        self.slot_budget.fetch_add(
            (blocks as u64 * SLOT_BYTES) as i64,
            std::sync::atomic::Ordering::AcqRel,
        );
    }

    pub fn get(&self, table: u64, block: u32) -> Option<Arc<Block>> {
        let r = self.cache.get(&(table, block));
        if r.is_some() {
            self.hits.add(1);
        } else {
            self.misses.add(1);
        }
        r
    }

    /// Count a hit served without a lookup (a table's own handle on a cached block).
    #[inline]
    pub fn count_hit(&self) {
        self.hits.add(1);
    }

    pub fn contains(&self, table: u64, block: u32) -> bool {
        self.cache.peek(&(table, block)).is_some()
    }

    pub fn insert(&self, table: u64, block: u32, b: Arc<Block>) {
        self.cache.insert((table, block), b);
    }

    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// Bytes of blocks held.
    pub fn used_bytes(&self) -> u64 {
        self.cache.weight()
    }
}
