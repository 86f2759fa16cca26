//! Reading a table in key order, either direction, with read-ahead for long scans.

use super::*;

/// A cursor over a user-key range of one table, forward or reverse.
pub struct TableIter {
    pub(super) table: Arc<Table>,
    pub(super) block_idx: usize,
    pub(super) block: Option<Arc<Block>>,
    pub(super) pos: usize,
    pub(super) start: Option<Vec<u8>>,
    pub(super) end: Option<Vec<u8>>,
    pub(super) reverse: bool,
    pub(super) prefetch: Option<(Arc<Prefetcher>, usize)>,
    /// Read-ahead frontier: blocks from here on in the scan's direction have not been
    /// asked for yet (forward: the lowest such index; reverse: one past the highest).
    pub(super) prefetched_to: usize,
    /// Blocks this cursor has moved into: read-ahead starts once a scan proves long.
    pub(super) loads: usize,
    /// Whether a block this cursor moved into was not in the cache.
    pub(super) cold: bool,
    /// The entry at `pos`, located when the cursor got there.
    pub(super) cur: Option<Loc>,
    /// The block (by index) last checked against the range's far bound, and whether
    /// all its entries are inside it (entries there then skip the per-entry check).
    pub(super) inside: Option<(usize, bool)>,
    /// The whole table is inside the range's far bound (checked once, from its
    /// metadata): no block or entry is checked against it.
    pub(super) table_inside: bool,
    /// Going forward: the position in the current block at which to start loading the
    /// next block (half way through what the cursor will read of this one), `usize::MAX`
    /// once asked for or when there is none.
    pub(super) ahead: usize,
    /// The next block, once its lines were asked for (its own load then takes it
    /// from here: no second cache probe, and no second prefetch).
    pub(super) next_block: Option<Arc<Block>>,
}

/// Blocks a cursor moves through before it asks for read-ahead: short scans (most point
/// ranges span one to three blocks) never pay for waking a prefetch worker.
const PREFETCH_AFTER_LOADS: usize = 2;

impl TableIter {
    /// Position at the first entry of `[start, end)` in the given direction.
    pub fn new(
        table: Arc<Table>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
        prefetch: Option<(Arc<Prefetcher>, usize)>,
    ) -> Result<Self> {
        let table_inside = if reverse {
            start.is_none_or(|s| table.meta().smallest.user_key.as_slice() >= s)
        } else {
            end.is_none_or(|e| table.meta().largest.user_key.as_slice() < e)
        };
        let mut it = TableIter {
            table,
            block_idx: 0,
            block: None,
            pos: 0,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            reverse,
            prefetch,
            prefetched_to: if reverse { usize::MAX } else { 0 },
            loads: 0,
            cold: false,
            cur: None,
            inside: None,
            table_inside,
            ahead: usize::MAX,
            next_block: None,
        };
        if reverse {
            // Last entry < (end, MAX_TS): seek to first >= it, then step back.
            let (bi, pos) = match &it.end {
                Some(e) => {
                    let bi = it.table.find_block(e, MAX_TS);
                    if bi >= it.table.num_blocks() {
                        (it.table.num_blocks(), 0)
                    } else {
                        let b = it.table.block(bi)?;
                        let p = b.seek(e, MAX_TS).map_err(|m| it.table.corrupt(bi, m))?;
                        (bi, p)
                    }
                }
                None => (it.table.num_blocks(), 0),
            };
            it.block_idx = bi;
            it.pos = pos;
            if bi < it.table.num_blocks() {
                it.block = Some(it.table.block(bi)?);
            }
            it.step_back()?;
        } else {
            let bi = match &it.start {
                Some(s) => it.table.find_block(s, MAX_TS),
                None => 0,
            };
            it.block_idx = bi;
            if bi < it.table.num_blocks() {
                let b = it.table.block(bi)?;
                it.pos = match &it.start {
                    Some(s) => b.seek(s, MAX_TS).map_err(|m| it.table.corrupt(bi, m))?,
                    None => 0,
                };
                it.prefetch(&b, bi, it.pos);
                it.block = Some(b);
                it.normalize_forward()?;
            }
        }
        it.check_bounds()?;
        Ok(it)
    }

    fn load(&mut self, bi: usize) -> Result<()> {
        let next = self.next_block.take();
        let (b, hit) = match next {
            // Asked for half a block ago (only a forward cursor asks ahead).
            Some(b) if bi == self.block_idx + 1 => {
                self.table.count_hit();
                self.table.prefetch_slotted(bi + 1);
                self.ahead = (b.len() / 2).max(1);
                (b, true)
            }
            _ => {
                let (b, hit) = self.table.block_hit(bi)?;
                self.prefetch(&b, bi, 0);
                (b, hit)
            }
        };
        self.block = Some(b);
        self.block_idx = bi;
        self.loads += 1;
        self.cold |= !hit;
        // Read-ahead only for a scan that has met a block the cache did not hold: where
        // every block so far was cached, asking about the next ones costs a cache probe
        // each and saves nothing.
        if let Some((p, dist)) = &self.prefetch
            && self.cold
            && self.loads >= PREFETCH_AFTER_LOADS
        {
            let n = self.table.num_blocks();
            // The window grows from one block to `dist`, doubling per load, so a short
            // scan asks the cache about a few blocks, not a whole window it will never
            // reach. Each block is considered once: only the blocks the window gained
            // since the last load, and of those only the uncached ones (a request wakes a
            // worker).
            let dist = (*dist).min(1 << (self.loads - PREFETCH_AFTER_LOADS).min(16));
            let (from, to) = if self.reverse {
                (bi.saturating_sub(dist), bi.min(self.prefetched_to))
            } else {
                ((bi + 1).max(self.prefetched_to), (bi + 1 + dist).min(n))
            };
            let wanted = (from..to).filter(|&j| !self.table.block_cached(j));
            if self.reverse {
                wanted.rev().for_each(|j| p.request(&self.table, j));
                self.prefetched_to = self.prefetched_to.min(from);
            } else {
                wanted.for_each(|j| p.request(&self.table, j));
                self.prefetched_to = self.prefetched_to.max(to);
            }
        }
        Ok(())
    }

    /// A cursor moving into block `b` at entry `from` reads it through (or to the
    /// range's end): start loading the rest of it. Going forward, the block after it
    /// is asked for half way through (`ahead`): a short scan that ends in this block
    /// does not load one it never reads, and a long one still has the next block's
    /// lines on their way well before it gets there. The next block's header (which
    /// that asks for) starts loading now.
    fn prefetch(&mut self, b: &Block, bi: usize, from: usize) {
        if self.reverse {
            b.prefetch_from(0);
            return;
        }
        b.prefetch_from(from);
        self.table.prefetch_slotted(bi + 1);
        self.next_block = None;
        self.ahead = from + (b.len().saturating_sub(from) / 2).max(1);
    }

    /// Going forward at `ahead`: start loading the next block if it is at hand (in its
    /// table slot).
    #[inline]
    fn prefetch_next(&mut self) {
        self.ahead = usize::MAX;
        if let Some(next) = self.table.slotted_block(self.block_idx + 1) {
            next.prefetch_far();
            self.next_block = Some(next);
        }
    }

    /// Skip past exhausted blocks going forward.
    fn normalize_forward(&mut self) -> Result<()> {
        while let Some(b) = &self.block {
            if self.pos < b.len() {
                return Ok(());
            }
            let next = self.block_idx + 1;
            if next >= self.table.num_blocks() {
                self.block = None;
                return Ok(());
            }
            self.load(next)?;
            self.pos = 0;
        }
        Ok(())
    }

    /// Move to the previous entry (pos-1), crossing block boundaries.
    fn step_back(&mut self) -> Result<()> {
        loop {
            if self.pos > 0 && self.block.is_some() {
                self.pos -= 1;
                return Ok(());
            }
            if self.block_idx == 0 {
                self.block = None;
                return Ok(());
            }
            let prev = self.block_idx - 1;
            self.load(prev)?;
            self.pos = self.block.as_ref().map_or(0, |b| b.len());
        }
    }

    /// Locate the entry the cursor moved to (every move ends here), or stop when it
    /// left `[start, end)`.
    fn check_bounds(&mut self) -> Result<()> {
        self.cur = None;
        let Some(b) = &self.block else {
            return Ok(());
        };
        if self.pos >= b.len() {
            return Ok(());
        }
        let loc = b
            .locate(self.pos)
            .map_err(|m| self.table.corrupt(self.block_idx, m))?;
        let outside = |key: &[u8]| {
            if self.reverse {
                self.start.as_deref().is_some_and(|s| key < s)
            } else {
                self.end.as_deref().is_some_and(|x| key >= x)
            }
        };
        let bi = self.block_idx;
        let all_inside = self.table_inside
            || match self.inside {
                Some((i, inside)) if i == bi => inside,
                _ => {
                    // Once per block, from the index's last keys: going forward, every entry
                    // is at or below the block's last key; going backward, above the block
                    // before's last key.
                    let inside = if self.reverse {
                        self.start.as_deref().is_none_or(|s| {
                            bi.checked_sub(1)
                                .and_then(|p| self.table.block_last_key(p))
                                .is_some_and(|k| k >= s)
                        })
                    } else {
                        self.table.block_last_key(bi).is_some_and(|k| !outside(k))
                    };
                    self.inside = Some((bi, inside));
                    inside
                }
            };
        let out = !all_inside && outside(b.at(&loc).0);
        if out {
            self.block = None;
        } else {
            self.cur = Some(loc);
        }
        Ok(())
    }

    /// Whether the cursor rests on an entry (cheaper than [`TableIter::current`]).
    #[inline]
    pub fn is_valid(&self) -> bool {
        self.cur.is_some() && self.block.is_some()
    }

    /// Current entry: (user key, ts, value or None for a tombstone).
    #[inline]
    pub fn current(&self) -> Option<EntryRef<'_>> {
        let (k, ts, v) = self.block.as_ref()?.at(self.cur.as_ref()?);
        Some((k, self.table.global_ts().unwrap_or(ts), v))
    }

    #[inline]
    pub fn advance(&mut self) -> Result<()> {
        if self.block.is_none() {
            return Ok(());
        }
        if self.reverse {
            self.step_back()?;
        } else {
            self.pos += 1;
            if self.pos == self.ahead {
                self.prefetch_next();
            }
            self.normalize_forward()?;
        }
        self.check_bounds()
    }
}
