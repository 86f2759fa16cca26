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

/// Cache of data blocks keyed by (table id, block index).
pub struct BlockCache {
    cache: Cache<(u64, u32), Arc<Block>, BlockWeighter>,
    hits: StripedCounter,
    misses: StripedCounter,
}

impl BlockCache {
    /// `capacity_bytes` of decompressed blocks; `sharded` selects concurrent shards.
    pub fn new(capacity_bytes: u64, sharded: bool) -> Self {
        let est_items = (capacity_bytes / 4096).max(16) as usize;
        let shards = if sharded {
            (std::thread::available_parallelism().map_or(4, |n| n.get()) * 4).next_power_of_two()
        } else {
            1
        };
        let opts = OptionsBuilder::new()
            .estimated_items_capacity(est_items)
            .weight_capacity(capacity_bytes)
            .shards(shards)
            .build()
            .expect("cache options are valid");
        BlockCache {
            cache: Cache::with_options(opts, BlockWeighter, Default::default(), Default::default()),
            hits: StripedCounter::default(),
            misses: StripedCounter::default(),
        }
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
