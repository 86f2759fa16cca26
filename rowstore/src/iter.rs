//! Merging iterators: memtables and tables merged in internal-key order, then resolved to
//! the newest visible version of each user key at one snapshot.

use crate::error::Result;
use crate::key::{EntryRef, Ts, cmp_internal};
use crate::memtable::MemTableIter;
use crate::sst::prefetch::Prefetcher;
use crate::sst::{Table, TableIter};
use crate::version::SuperVersion;
use std::cmp::Ordering;
use std::sync::Arc;

/// A run of tables in one level >= 1 (disjoint, sorted), opened lazily one at a time.
pub struct LevelIter {
    tables: Vec<Arc<Table>>,
    next: usize,
    cur: Option<TableIter>,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    reverse: bool,
    prefetch: Option<(Arc<Prefetcher>, usize)>,
}

impl LevelIter {
    fn new(
        mut tables: Vec<Arc<Table>>,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
        prefetch: Option<(Arc<Prefetcher>, usize)>,
    ) -> Result<Self> {
        tables.retain(|t| {
            let m = t.meta();
            start.is_none_or(|s| m.largest.user_key.as_slice() >= s)
                && end.is_none_or(|e| m.smallest.user_key.as_slice() < e)
        });
        if reverse {
            tables.reverse();
        }
        let mut it = LevelIter {
            tables,
            next: 0,
            cur: None,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            reverse,
            prefetch,
        };
        it.open_next()?;
        Ok(it)
    }

    fn open_next(&mut self) -> Result<()> {
        loop {
            if let Some(c) = &self.cur
                && c.current().is_some()
            {
                return Ok(());
            }
            if self.next >= self.tables.len() {
                self.cur = None;
                return Ok(());
            }
            let t = self.tables[self.next].clone();
            self.next += 1;
            self.cur = Some(TableIter::new(
                t,
                self.start.as_deref(),
                self.end.as_deref(),
                self.reverse,
                self.prefetch.clone(),
            )?);
        }
    }

    fn current(&self) -> Option<EntryRef<'_>> {
        self.cur.as_ref().and_then(TableIter::current)
    }

    fn advance(&mut self) -> Result<()> {
        if let Some(c) = &mut self.cur {
            c.advance()?;
        }
        self.open_next()
    }
}

pub enum Source {
    Mem(MemTableIter),
    Table(TableIter),
    Level(LevelIter),
    Tree(crate::btree::TreeIter),
}

impl Source {
    #[inline]
    fn current(&self) -> Option<EntryRef<'_>> {
        match self {
            Source::Mem(m) => m.current(),
            Source::Table(t) => t.current(),
            Source::Level(l) => l.current(),
            Source::Tree(t) => t.current(),
        }
    }

    fn advance(&mut self) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.advance();
                Ok(())
            }
            Source::Table(t) => t.advance(),
            Source::Level(l) => l.advance(),
            Source::Tree(t) => t.advance(),
        }
    }
}

/// Merge of sources in internal-key order (or its reverse). Sources are ordered newest
/// first; no two sources of one super-version hold the same (key, ts).
pub struct MergeIter {
    sources: Vec<Source>,
    reverse: bool,
    cur: Option<usize>,
}

impl MergeIter {
    pub fn new(sources: Vec<Source>, reverse: bool) -> Self {
        let mut m = MergeIter {
            sources,
            reverse,
            cur: None,
        };
        m.pick();
        m
    }

    /// Build the merge over every source of `sv` restricted to `[start, end)`.
    pub fn over(
        sv: &SuperVersion,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
        prefetch: Option<(Arc<Prefetcher>, usize)>,
    ) -> Result<Self> {
        let mut sources = Vec::new();
        sources.push(Source::Mem(MemTableIter::new(
            sv.mem.clone(),
            start,
            end,
            reverse,
        )));
        for m in &sv.imms {
            sources.push(Source::Mem(MemTableIter::new(
                m.clone(),
                start,
                end,
                reverse,
            )));
        }
        Self::add_tables(&mut sources, sv, start, end, reverse, prefetch, None)?;
        Ok(MergeIter::new(sources, reverse))
    }

    /// A forward merge over the table files of `sv` only (no memtable), restricted to
    /// `[start, end)` and to tables holding a version newer than `newer_than`.
    pub fn over_tables_newer_than(
        sv: &SuperVersion,
        start: &[u8],
        end: &[u8],
        newer_than: Ts,
    ) -> Result<Self> {
        let mut sources = Vec::new();
        Self::add_tables(
            &mut sources,
            sv,
            Some(start),
            Some(end),
            false,
            None,
            Some(newer_than),
        )?;
        Ok(MergeIter::new(sources, false))
    }

    fn add_tables(
        sources: &mut Vec<Source>,
        sv: &SuperVersion,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
        prefetch: Option<(Arc<Prefetcher>, usize)>,
        newer_than: Option<Ts>,
    ) -> Result<()> {
        let keep = |t: &Arc<Table>| newer_than.is_none_or(|lo| t.meta().max_ts > lo);
        let v = &sv.version;
        for t in v.levels[0].iter().filter(|t| keep(t)) {
            let m = t.meta();
            if start.is_some_and(|s| m.largest.user_key.as_slice() < s)
                || end.is_some_and(|e| m.smallest.user_key.as_slice() >= e)
            {
                continue;
            }
            sources.push(Source::Table(TableIter::new(
                t.clone(),
                start,
                end,
                reverse,
                prefetch.clone(),
            )?));
        }
        for level in &v.levels[1..] {
            let level: Vec<Arc<Table>> = level.iter().filter(|t| keep(t)).cloned().collect();
            if !level.is_empty() {
                sources.push(Source::Level(LevelIter::new(
                    level,
                    start,
                    end,
                    reverse,
                    prefetch.clone(),
                )?));
            }
        }
        // The B+Tree engine's tree: the oldest source. It holds versions up to its
        // mark, so none newer than `newer_than` when the mark is not above it.
        if let Some(t) = &v.tree
            && newer_than.is_none_or(|lo| t.meta.applied > lo)
        {
            sources.push(Source::Tree(t.versions(start, end, reverse)?));
        }
        Ok(())
    }

    /// Iterate whole tables (compaction input), forward.
    pub fn over_tables(l0: &[Arc<Table>], sorted_runs: Vec<Vec<Arc<Table>>>) -> Result<Self> {
        let mut sources = Vec::new();
        for t in l0 {
            sources.push(Source::Table(TableIter::new(
                t.clone(),
                None,
                None,
                false,
                None,
            )?));
        }
        for run in sorted_runs {
            if !run.is_empty() {
                sources.push(Source::Level(LevelIter::new(run, None, None, false, None)?));
            }
        }
        Ok(MergeIter::new(sources, false))
    }

    fn pick(&mut self) {
        let mut best: Option<(usize, &[u8], Ts)> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if let Some((k, ts, _)) = s.current() {
                let better = match best {
                    None => true,
                    Some((_, bk, bts)) => {
                        let o = cmp_internal(k, ts, bk, bts);
                        if self.reverse {
                            o == Ordering::Greater
                        } else {
                            o == Ordering::Less
                        }
                    }
                };
                if better {
                    best = Some((i, k, ts));
                }
            }
        }
        self.cur = best.map(|b| b.0);
    }

    #[inline]
    pub fn current(&self) -> Option<EntryRef<'_>> {
        self.cur.and_then(|i| self.sources[i].current())
    }

    pub fn advance(&mut self) -> Result<()> {
        if let Some(i) = self.cur {
            self.sources[i].advance()?;
        }
        self.pick();
        Ok(())
    }
}

/// Resolves a merged stream to user-visible (key, value) pairs at `snapshot`.
pub struct VisibleIter {
    merge: MergeIter,
    snapshot: Ts,
    reverse: bool,
    last_key: Option<Vec<u8>>,
    failed: bool,
}

impl VisibleIter {
    pub fn new(merge: MergeIter, snapshot: Ts, reverse: bool) -> Self {
        VisibleIter {
            merge,
            snapshot,
            reverse,
            last_key: None,
            failed: false,
        }
    }

    fn next_forward(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let Some((k, ts, v)) = self.merge.current() else {
                return Ok(None);
            };
            if ts > self.snapshot || self.last_key.as_deref() == Some(k) {
                self.merge.advance()?;
                continue;
            }
            // Newest visible version of a new user key.
            match &mut self.last_key {
                Some(l) => {
                    l.clear();
                    l.extend_from_slice(k);
                }
                None => self.last_key = Some(k.to_vec()),
            }
            let out = v.map(|v| (k.to_vec(), v.to_vec()));
            self.merge.advance()?;
            if out.is_some() {
                return Ok(out);
            }
        }
    }

    fn next_reverse(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let Some((k, _, _)) = self.merge.current() else {
                return Ok(None);
            };
            let key = k.to_vec();
            // Versions of `key` arrive oldest first; keep the newest <= snapshot.
            let mut visible: Option<Option<Vec<u8>>> = None;
            while let Some((k, ts, v)) = self.merge.current() {
                if k != key.as_slice() {
                    break;
                }
                if ts <= self.snapshot {
                    visible = Some(v.map(<[u8]>::to_vec));
                }
                self.merge.advance()?;
            }
            if let Some(Some(v)) = visible {
                return Ok(Some((key, v)));
            }
        }
    }
}

impl Iterator for VisibleIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = if self.reverse {
            self.next_reverse()
        } else {
            self.next_forward()
        };
        match r {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
