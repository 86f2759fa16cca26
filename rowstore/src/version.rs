//! Versions: immutable snapshots of the live table set, and super-versions that add the
//! memtables. Readers clone an `Arc<SuperVersion>` and keep reading it while flushes and
//! compactions install new ones; a table file is deleted only after the last version
//! that references it is dropped.

use crate::manifest::NUM_LEVELS;
use crate::memtable::MemTable;
use crate::sst::Table;
use std::sync::Arc;

/// The live tables. Level 0 is newest first and its tables may overlap; every other level
/// is sorted by key and its tables hold disjoint user-key ranges.
#[derive(Clone)]
pub struct Version {
    pub levels: Vec<Vec<Arc<Table>>>,
    /// The B+Tree engine's published tree: the oldest source, below every table and
    /// memtable (`None` on the LSM).
    pub tree: Option<Arc<crate::btree::TreeVersion>>,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            levels: vec![Vec::new(); NUM_LEVELS],
            tree: None,
        }
    }
}

impl Version {
    /// A new version with `deleted` tables removed and `added` tables inserted.
    pub fn apply(&self, deleted: &[(usize, u64)], added: &[(usize, Arc<Table>)]) -> Version {
        let mut v = self.clone();
        for (level, id) in deleted {
            v.levels[*level].retain(|t| t.id() != *id);
        }
        for (level, t) in added {
            v.levels[*level].push(t.clone());
        }
        v.sort();
        v
    }

    pub fn sort(&mut self) {
        self.levels[0].sort_by_key(|t| std::cmp::Reverse(t.id()));
        for l in &mut self.levels[1..] {
            l.sort_by(|a, b| a.meta().smallest.user_key.cmp(&b.meta().smallest.user_key));
        }
    }

    /// The table of `level` (>= 1) whose range may hold `key`.
    pub fn find_in_level(&self, level: usize, key: &[u8]) -> Option<&Arc<Table>> {
        let files = &self.levels[level];
        let i = files.partition_point(|t| t.meta().largest.user_key.as_slice() < key);
        files
            .get(i)
            .filter(|t| t.meta().smallest.user_key.as_slice() <= key)
    }

    /// Tables of `level` whose user-key range intersects `[start, end]` (inclusive).
    pub fn overlapping(&self, level: usize, start: &[u8], end: &[u8]) -> Vec<Arc<Table>> {
        self.levels[level]
            .iter()
            .filter(|t| t.meta().overlaps(Some(start), Some(end)))
            .cloned()
            .collect()
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|t| t.meta().file_size).sum()
    }

    pub fn num_tables(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        (0..NUM_LEVELS).map(|l| self.level_bytes(l)).sum()
    }

    /// Debug check of the level invariants.
    pub fn check_invariants(&self) -> bool {
        self.levels[1..].iter().all(|l| {
            l.windows(2)
                .all(|w| w[0].meta().largest.user_key < w[1].meta().smallest.user_key)
        })
    }
}

/// Everything a read needs: the active memtable, the immutable ones waiting for flush
/// (newest first), and the table version.
pub struct SuperVersion {
    pub mem: Arc<MemTable>,
    pub imms: Vec<Arc<MemTable>>,
    pub version: Arc<Version>,
}
