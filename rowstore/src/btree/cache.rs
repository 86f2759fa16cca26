//! Extents of a tree read without a memory map (an encrypting `Vfs` cannot map its
//! plaintext, or mapping is off), kept decrypted and verified so a point read does
//! not make one `pread`, decryption and checksum per level.
//!
//! Keyed by an extent's first page. An entry stays right as long as its pages are
//! not rewritten, and pages are rewritten only once no version that reaches them is
//! held ([`super::alloc`]): the writer drops the entries of every page it is about to
//! write ([`ExtentCache::forget`]), and no reader can put them back, since no version
//! a reader holds reaches them.

use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};
use std::sync::Arc;

#[derive(Clone)]
struct Bytes;

impl Weighter<u64, Arc<[u8]>> for Bytes {
    fn weight(&self, _page: &u64, v: &Arc<[u8]>) -> u64 {
        v.len() as u64 + 64
    }
}

/// Decrypted, verified extents by first page, bounded in bytes.
pub(crate) struct ExtentCache {
    cache: Cache<u64, Arc<[u8]>, Bytes>,
}

impl ExtentCache {
    pub(crate) fn new(capacity_bytes: u64) -> ExtentCache {
        let shards =
            (std::thread::available_parallelism().map_or(4, |n| n.get()) * 4).next_power_of_two();
        let opts = OptionsBuilder::new()
            .estimated_items_capacity((capacity_bytes / 4096).max(16) as usize)
            .weight_capacity(capacity_bytes)
            .shards(shards)
            .build()
            .expect("cache options are valid");
        ExtentCache {
            cache: Cache::with_options(opts, Bytes, Default::default(), Default::default()),
        }
    }

    /// The extent starting at `page`, if cached with `len` bytes.
    #[inline]
    pub(crate) fn get(&self, page: u64, len: usize) -> Option<Arc<[u8]>> {
        self.cache.get(&page).filter(|b| b.len() == len)
    }

    pub(crate) fn insert(&self, page: u64, bytes: Arc<[u8]>) {
        self.cache.insert(page, bytes);
    }

    /// Drop every entry starting in `pages` (about to be rewritten).
    pub(crate) fn forget(&self, pages: std::ops::Range<u64>) {
        for p in pages {
            self.cache.remove(&p);
        }
    }
}
