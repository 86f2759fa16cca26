//! Extents of a tree read without a memory map (an encrypting `Vfs` cannot map its
//! plaintext, or mapping is off), kept decrypted and verified so a point read does
//! not make one `pread`, decryption and checksum per level.
//!
//! Keyed by an extent's first page. An entry stays right as long as its pages are
//! not rewritten, and pages are rewritten only once no version that reaches them is
//! held ([`super::alloc`]): the writer drops the entry of each extent it is about to
//! write ([`ExtentCache::forget`]), and no reader can put it back, since no version a
//! reader holds reaches it.

use quick_cache::Weighter;
use quick_cache::sync::Cache;
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
        let opts = crate::sst::cache::cache_options(capacity_bytes, true);
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

    /// Drop the entry starting at `page` (an extent is about to be written there).
    /// Entries starting at the extent's other pages may stay: a read asks for an extent
    /// some version reaches, and one starting there would be written, and forgotten,
    /// first.
    pub(crate) fn forget(&self, page: u64) {
        self.cache.remove(&page);
    }
}
