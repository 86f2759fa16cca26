//! Merging iterators: memtables and tables merged in internal-key order, then resolved to
//! the newest visible version of each user key at one snapshot.

use crate::error::Result;
use crate::key::{EntryRef, Ts, cmp_internal};
use crate::memtable::MemTableIter;
use crate::sst::prefetch::Prefetcher;
use crate::sst::{Table, TableIter};
use crate::version::{SuperVersion, Version};
use std::cmp::Ordering;
use std::sync::Arc;

/// A run of tables in one level >= 1 (disjoint, sorted), opened lazily one at a time.
pub struct LevelIter {
    tables: LevelTables,
    /// The run's tables that can hold `[start, end)`: positions `lo..hi` of `tables`.
    lo: usize,
    hi: usize,
    /// Tables opened so far, in the scan's direction.
    opened: usize,
    /// Skip tables with no version newer than this.
    newer_than: Option<Ts>,
    cur: Option<TableIter>,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    reverse: bool,
    prefetch: Option<(Arc<Prefetcher>, usize)>,
}

/// Where a level iterator's tables live: a level of a shared version (a scan: no copy of
/// the level's table list per scan, however many tables it holds), or a list of its own
/// (compaction input).
enum LevelTables {
    Level(Arc<Version>, usize),
    Owned(Vec<Arc<Table>>),
}

impl LevelTables {
    fn get(&self) -> &[Arc<Table>] {
        match self {
            LevelTables::Level(v, l) => &v.levels[*l],
            LevelTables::Owned(t) => t,
        }
    }
}

impl LevelIter {
    fn new(
        tables: LevelTables,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        reverse: bool,
        prefetch: Option<(Arc<Prefetcher>, usize)>,
        newer_than: Option<Ts>,
    ) -> Result<Self> {
        // The run is sorted and disjoint: the tables that can hold keys in
        // `[start, end)` are one contiguous stretch of it.
        let list = tables.get();
        let lo = start.map_or(0, |s| {
            list.partition_point(|t| t.meta().largest.user_key.as_slice() < s)
        });
        let hi = end.map_or(list.len(), |e| {
            list.partition_point(|t| t.meta().smallest.user_key.as_slice() < e)
        });
        let mut it = LevelIter {
            tables,
            lo,
            hi: hi.max(lo),
            opened: 0,
            newer_than,
            cur: None,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            reverse,
            prefetch,
        };
        it.open_next()?;
        Ok(it)
    }

    /// Whether the run has any table for the range (else the iterator is not worth
    /// adding to a merge).
    fn is_empty(&self) -> bool {
        self.cur.is_none()
    }

    #[inline]
    fn open_next(&mut self) -> Result<()> {
        loop {
            if self.is_valid() {
                return Ok(());
            }
            if self.lo + self.opened >= self.hi {
                self.cur = None;
                return Ok(());
            }
            let i = if self.reverse {
                self.hi - 1 - self.opened
            } else {
                self.lo + self.opened
            };
            self.opened += 1;
            let t = &self.tables.get()[i];
            if self.newer_than.is_some_and(|lo| t.meta().max_ts <= lo) {
                continue;
            }
            self.cur = Some(TableIter::new(
                t.clone(),
                self.start.as_deref(),
                self.end.as_deref(),
                self.reverse,
                self.prefetch.clone(),
            )?);
        }
    }

    /// Whether the run's cursor rests on an entry.
    #[inline]
    fn is_valid(&self) -> bool {
        self.cur.as_ref().is_some_and(TableIter::is_valid)
    }

    #[inline]
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
    #[inline(always)]
    fn current(&self) -> Option<EntryRef<'_>> {
        match self {
            Source::Mem(m) => m.current(),
            Source::Table(t) => t.current(),
            Source::Level(l) => l.current(),
            Source::Tree(t) => t.current(),
        }
    }

    /// Whether the source has an entry (cheaper than [`Source::current`] for some).
    #[inline]
    fn is_valid(&self) -> bool {
        match self {
            Source::Tree(t) => t.is_valid(),
            Source::Table(t) => t.is_valid(),
            Source::Level(l) => l.is_valid(),
            s => s.current().is_some(),
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
    pub fn new(mut sources: Vec<Source>, reverse: bool) -> Self {
        // An exhausted source stays so (an empty memtable, most often): leave it out of
        // every later pick.
        sources.retain(Source::is_valid);
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
        // An empty memtable (the active one of a database at rest) is left out
        // unseeked: a version committed at or below the reader's snapshot is in it
        // before the snapshot could be taken.
        for m in std::iter::once(&sv.mem)
            .chain(&sv.imms)
            .filter(|m| !m.is_empty())
        {
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
        for level in 1..v.levels.len() {
            if v.levels[level].is_empty() {
                continue;
            }
            let it = LevelIter::new(
                LevelTables::Level(v.clone(), level),
                start,
                end,
                reverse,
                prefetch.clone(),
                newer_than,
            )?;
            if !it.is_empty() {
                sources.push(Source::Level(it));
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
                sources.push(Source::Level(LevelIter::new(
                    LevelTables::Owned(run),
                    None,
                    None,
                    false,
                    None,
                    None,
                )?));
            }
        }
        Ok(MergeIter::new(sources, false))
    }

    fn pick(&mut self) {
        if let [only] = self.sources.as_slice() {
            self.cur = only.is_valid().then_some(0);
            return;
        }
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

    #[inline(always)]
    pub fn current(&self) -> Option<EntryRef<'_>> {
        self.cur.and_then(|i| self.sources[i].current())
    }

    /// Whether the merge is of one tree alone (the B+Tree engine with empty
    /// memtables), whose cursor says when a user key starts. Fixed for the merge's
    /// life: sources are only ever dropped when they start exhausted.
    pub fn tree_only(&self) -> bool {
        matches!(self.sources.as_slice(), [Source::Tree(_)])
    }

    /// A [`MergeIter::tree_only`] merge's tree, to be read directly (no merge step or
    /// source dispatch per version); `None` for any other merge.
    #[inline]
    fn only_tree_mut(&mut self) -> Option<&mut crate::btree::TreeIter> {
        match self.sources.as_mut_slice() {
            [Source::Tree(t)] => Some(t),
            _ => None,
        }
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
///
/// Two ways to read it: [`VisibleIter::next_ref`] lends each entry (borrowed from the
/// block, memtable node or tree page it lives in, valid until the next call), with no
/// copy per entry; the `Iterator` impl copies each entry into owned vectors on top.
pub struct VisibleIter {
    merge: MergeIter,
    snapshot: Ts,
    reverse: bool,
    /// The user key last handed out (forward: its older versions are skipped). Reused.
    last_key: Vec<u8>,
    has_last: bool,
    /// The merge says when a user key starts ([`MergeIter::tree_only`]): going
    /// forward, older versions are skipped on that, without a key compare, and
    /// `last_key` is not kept.
    tree_only: bool,
    /// Forward over a tree-only merge: the current user key's newest visible version
    /// was met.
    key_done: bool,
    /// Forward: the merge still sits on the entry handed out last.
    lent: bool,
    /// Reverse: the entry handed out last (versions arrive oldest first, so the newest
    /// visible one is known only once the next key shows). Reused buffers.
    rev_value: Vec<u8>,
    failed: bool,
}

impl VisibleIter {
    pub fn new(merge: MergeIter, snapshot: Ts, reverse: bool) -> Self {
        VisibleIter {
            tree_only: merge.tree_only(),
            merge,
            snapshot,
            reverse,
            last_key: Vec::new(),
            has_last: false,
            key_done: false,
            lent: false,
            rev_value: Vec::new(),
            failed: false,
        }
    }

    /// The next visible entry, borrowed until the next call; `Ok(None)` at the end.
    /// After an error the iterator is finished.
    pub fn next_ref(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        if self.failed {
            return Ok(None);
        }
        let r = if self.reverse {
            self.step_reverse()
        } else {
            self.step_forward()
        };
        match r {
            Ok(true) => Ok(Some(self.lent_entry())),
            Ok(false) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn lent_entry(&self) -> (&[u8], &[u8]) {
        if self.reverse {
            return (&self.last_key, &self.rev_value);
        }
        // A one-source merge's cursor was moved directly (see `step_forward`); the
        // merge still points at it.
        match self.merge.current() {
            Some((k, _, Some(v))) => (k, v),
            _ => unreachable!("step_forward stops only on a live value"),
        }
    }

    /// Position the merge on the newest visible version of the next user key that has
    /// a value; false at the end.
    fn step_forward(&mut self) -> Result<bool> {
        if self.tree_only {
            return self.step_forward_tree();
        }
        let lent = std::mem::take(&mut self.lent);
        let mut seen = Seen {
            key: &mut self.last_key,
            has: &mut self.has_last,
            snapshot: self.snapshot,
        };
        // A merge of one source (a compacted level, one table, one memtable) is read
        // directly: no merge step or source dispatch per version.
        let found = if self.merge.sources.len() == 1 {
            match &mut self.merge.sources[0] {
                Source::Level(l) => seen.next_visible(l, lent)?,
                Source::Table(t) => seen.next_visible(t, lent)?,
                Source::Mem(m) => seen.next_visible(m, lent)?,
                Source::Tree(_) => seen.next_visible(&mut self.merge, lent)?,
            }
        } else {
            seen.next_visible(&mut self.merge, lent)?
        };
        self.lent = found;
        Ok(found)
    }

    /// [`VisibleIter::step_forward`] over a tree-only merge, reading the tree's cursor
    /// directly: it says when a user key starts, so no key is compared or copied.
    #[inline]
    fn step_forward_tree(&mut self) -> Result<bool> {
        let lent = std::mem::take(&mut self.lent);
        let snapshot = self.snapshot;
        let t = self
            .merge
            .only_tree_mut()
            .expect("a tree-only merge has its tree");
        if lent {
            t.advance()?;
        }
        loop {
            let (ts, live) = match t.current() {
                None => return Ok(false),
                Some((_, ts, v)) => (ts, v.is_some()),
            };
            if t.fresh_key() {
                self.key_done = false;
            }
            if ts <= snapshot && !self.key_done {
                // Newest visible version of a new user key.
                self.key_done = true;
                if live {
                    self.lent = true;
                    return Ok(true);
                }
            }
            t.advance()?;
        }
    }

    /// Read the versions of the next user key (oldest first) and keep the newest one
    /// visible in `last_key` / `rev_value`; false at the end.
    fn step_reverse(&mut self) -> Result<bool> {
        loop {
            match self.merge.current() {
                None => return Ok(false),
                Some((k, _, _)) => {
                    self.last_key.clear();
                    self.last_key.extend_from_slice(k);
                }
            }
            let mut visible: Option<bool> = None;
            while let Some((k, ts, v)) = self.merge.current() {
                if k != self.last_key.as_slice() {
                    break;
                }
                if ts <= self.snapshot {
                    visible = Some(v.is_some());
                    if let Some(v) = v {
                        self.rev_value.clear();
                        self.rev_value.extend_from_slice(v);
                    }
                }
                self.merge.advance()?;
            }
            if visible == Some(true) {
                return Ok(true);
            }
        }
    }
}

/// A sorted stream of versions, as [`VisibleIter`] reads it.
trait Cursor {
    fn current(&self) -> Option<EntryRef<'_>>;
    fn advance(&mut self) -> Result<()>;
}

/// `Cursor` for a source whose own `current` and `advance` have its signatures.
macro_rules! cursor_of {
    ($($t:ty),*) => {$(
        impl Cursor for $t {
            #[inline]
            fn current(&self) -> Option<EntryRef<'_>> {
                <$t>::current(self)
            }
            #[inline]
            fn advance(&mut self) -> Result<()> {
                <$t>::advance(self)
            }
        }
    )*};
}

cursor_of!(MergeIter, LevelIter, TableIter);

impl Cursor for MemTableIter {
    #[inline]
    fn current(&self) -> Option<EntryRef<'_>> {
        MemTableIter::current(self)
    }
    #[inline]
    fn advance(&mut self) -> Result<()> {
        MemTableIter::advance(self);
        Ok(())
    }
}

/// Forward resolution state: the user key handed out last (its older versions are
/// skipped) and the snapshot.
struct Seen<'a> {
    key: &'a mut Vec<u8>,
    has: &'a mut bool,
    snapshot: Ts,
}

impl Seen<'_> {
    /// Move `c` to the newest visible version of the next user key that has a value
    /// (first past the entry handed out last, if `lent`); false at the end.
    #[inline]
    fn next_visible<C: Cursor>(&mut self, c: &mut C, lent: bool) -> Result<bool> {
        if lent {
            c.advance()?;
        }
        loop {
            let live = match c.current() {
                None => return Ok(false),
                Some((k, ts, v)) => {
                    if ts > self.snapshot || (*self.has && same_key(self.key, k)) {
                        false
                    } else {
                        // Newest visible version of a new user key.
                        self.key.clear();
                        self.key.extend_from_slice(k);
                        *self.has = true;
                        v.is_some()
                    }
                }
            };
            if live {
                return Ok(true);
            }
            c.advance()?;
        }
    }
}

/// `a == b` for neighbouring keys of a sorted stream: they mostly differ in their last
/// byte, which is compared before calling out to a whole-slice compare.
#[inline]
pub(crate) fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.last() == b.last() && a == b
}

impl Iterator for VisibleIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_ref() {
            Ok(Some((k, v))) => Some(Ok((k.to_vec(), v.to_vec()))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
