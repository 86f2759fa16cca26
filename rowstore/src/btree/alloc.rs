//! Page allocation for the copy-on-write tree: free extents (coalesced), the end of the
//! file, and the extents a published version retired, held until no reader can reach
//! them.
//!
//! The rules that keep a crash from ever damaging the published tree:
//! - An extent freed while building generation `g` is still reachable from `g - 1`,
//!   the durable tree, so it is not reused while `g` is built: it goes to `retired`
//!   with a handle on `g - 1`.
//! - After `g` is durable, a retired extent becomes free once no reader holds `g - 1`
//!   or any older version (older readers may reach it too: it may have been unchanged
//!   since), so `retired` is released strictly oldest first.
//! - The free list written with `g` counts everything unreachable from `g` (retired
//!   extents included: after a restart there are no readers).

use super::node::Extent;
use std::collections::BTreeMap;
use std::sync::Weak;

/// Free space: coalesced free extents, and the page count the file's tree uses.
#[derive(Debug, Default)]
pub struct Alloc {
    free: BTreeMap<u64, u32>,
    /// Pages in use or free below this; above it the file is unused.
    pub end: u64,
}

impl Alloc {
    pub fn new(end: u64, free: &[Extent]) -> Self {
        let mut a = Alloc {
            free: BTreeMap::new(),
            end,
        };
        for x in free {
            a.release(*x);
        }
        a
    }

    /// `pages` contiguous pages: from a free extent if one is large enough (first
    /// fit, lowest address), else from the end of the file.
    pub fn alloc(&mut self, pages: u32) -> Extent {
        let hit = self
            .free
            .iter()
            .find(|(_, n)| **n >= pages)
            .map(|(p, n)| (*p, *n));
        if let Some((page, n)) = hit {
            self.free.remove(&page);
            if n > pages {
                self.free.insert(page + u64::from(pages), n - pages);
            }
            return Extent { page, pages };
        }
        // A free run at the very end grows into the file's unused tail.
        if let Some((&page, &n)) = self.free.last_key_value()
            && page + u64::from(n) == self.end
        {
            self.free.remove(&page);
            self.end = page + u64::from(pages);
            return Extent { page, pages };
        }
        let page = self.end;
        self.end += u64::from(pages);
        Extent { page, pages }
    }

    /// Return an extent, merging it with free neighbours.
    pub fn release(&mut self, x: Extent) {
        let (mut page, mut n) = (x.page, x.pages);
        if let Some((&p, &m)) = self.free.range(..page).next_back()
            && p + u64::from(m) == page
        {
            self.free.remove(&p);
            page = p;
            n += m;
        }
        let next = page + u64::from(n);
        if let Some(m) = self.free.remove(&next) {
            n += m;
        }
        self.free.insert(page, n);
    }

    /// Give the free run at the end of the file back: `end` drops to its start.
    pub fn trim_tail(&mut self) {
        if let Some((&page, &n)) = self.free.last_key_value()
            && page + u64::from(n) == self.end
        {
            self.free.remove(&page);
            self.end = page;
        }
    }

    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.free
            .iter()
            .map(|(&page, &pages)| Extent { page, pages })
    }

    /// The runs of pages in use (not free) from page `from` to the end: `[start, end)`.
    pub fn used_from(&self, from: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = from;
        for (&page, &n) in self.free.range(..self.end) {
            let end = page + u64::from(n);
            if end <= at {
                continue;
            }
            if page > at {
                out.push((at, page));
            }
            at = at.max(end);
        }
        if at < self.end {
            out.push((at, self.end));
        }
        out
    }

    pub fn free_pages(&self) -> u64 {
        self.free.values().map(|&n| u64::from(n)).sum()
    }
}

/// Extents retired when a version was replaced, with a handle on that version.
pub struct Retired<V> {
    pub replaced: Weak<V>,
    pub extents: Vec<Extent>,
}

/// Move to `alloc` every retired extent no reader can reach (oldest first; stops at the
/// first version still held).
pub fn release_unreachable<V>(retired: &mut Vec<Retired<V>>, alloc: &mut Alloc) {
    let done = retired
        .iter()
        .take_while(|r| r.replaced.strong_count() == 0)
        .count();
    for r in retired.drain(..done) {
        for x in r.extents {
            alloc.release(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn used_runs_are_the_complement_of_free_ones() {
        let a = Alloc::new(
            20,
            &[
                Extent { page: 2, pages: 3 },
                Extent { page: 8, pages: 2 },
                Extent { page: 18, pages: 2 },
            ],
        );
        assert_eq!(a.used_from(0), vec![(0, 2), (5, 8), (10, 18)]);
        assert_eq!(a.used_from(3), vec![(5, 8), (10, 18)]);
        assert_eq!(a.used_from(9), vec![(10, 18)]);
        assert_eq!(a.used_from(12), vec![(12, 18)]);
        assert_eq!(a.used_from(18), vec![]);
    }

    #[test]
    fn extents_coalesce_and_are_reused_first_fit() {
        let mut a = Alloc::new(0, &[]);
        let x = a.alloc(1);
        let y = a.alloc(2);
        let z = a.alloc(1);
        assert_eq!((x.page, y.page, z.page, a.end), (0, 1, 3, 4));
        a.release(x);
        a.release(y);
        assert_eq!(a.free_extents().collect::<Vec<_>>().len(), 1);
        assert_eq!(a.alloc(3).page, 0);
        a.release(z);
        // The free tail grows into the file's end.
        assert_eq!(a.alloc(2), Extent { page: 3, pages: 2 });
        assert_eq!(a.end, 5);
    }

    #[test]
    fn retired_extents_wait_for_every_older_reader() {
        let mut a = Alloc::new(10, &[]);
        let old = Arc::new(1u8);
        let older = Arc::new(0u8);
        let mut retired = vec![
            Retired {
                replaced: Arc::downgrade(&older),
                extents: vec![Extent { page: 1, pages: 1 }],
            },
            Retired {
                replaced: Arc::downgrade(&old),
                extents: vec![Extent { page: 2, pages: 1 }],
            },
        ];
        drop(old);
        release_unreachable(&mut retired, &mut a);
        assert_eq!(a.free_pages(), 0, "a reader of an older version holds both");
        drop(older);
        release_unreachable(&mut retired, &mut a);
        assert_eq!(a.free_pages(), 2);
        assert!(retired.is_empty());
    }
}
