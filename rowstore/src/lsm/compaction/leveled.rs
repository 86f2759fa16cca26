//! Leveled compaction's choice, as a pure function of the tree's shape.

use super::{Choice, Picture, Strategy};
use crate::manifest::NUM_LEVELS;
use crate::sst::Table;
use std::sync::Arc;

/// Level 0 is compacted into level 1 once it holds `l0_trigger` tables; level `n >= 1`
/// into level `n + 1` once it holds more than its target size (`base_bytes` for level
/// 1, times `multiplier` per level below). The level with the highest score goes first;
/// within a level, tables take turns in key order (round robin).
#[derive(Debug, Clone)]
pub(crate) struct Leveled {
    pub l0_trigger: usize,
    pub base_bytes: u64,
    pub multiplier: u64,
}

impl Leveled {
    fn target(&self, level: usize) -> u64 {
        let mut t = self.base_bytes;
        for _ in 1..level {
            t = t.saturating_mul(self.multiplier);
        }
        t
    }

    /// How far over its threshold `level` is (1.0 = due), if neither it nor the level
    /// below is busy.
    fn score(&self, p: &Picture, level: usize) -> Option<f64> {
        if p.busy[level] || p.busy[level + 1] {
            return None;
        }
        Some(if level == 0 {
            p.version.levels[0].len() as f64 / self.l0_trigger as f64
        } else {
            p.version.level_bytes(level) as f64 / self.target(level) as f64
        })
    }
}

impl Strategy for Leveled {
    fn due(&self, p: &Picture) -> bool {
        (0..NUM_LEVELS - 1).any(|l| self.score(p, l).is_some_and(|s| s >= 1.0))
    }

    fn choose(&self, p: &Picture) -> Option<Choice> {
        let v = p.version;
        let mut best: Option<(f64, usize)> = None;
        for level in 0..NUM_LEVELS - 1 {
            if let Some(score) = self.score(p, level)
                && score >= 1.0
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, level));
            }
        }
        let (_, level) = best?;
        let (upper, pointer): (Vec<Arc<Table>>, Option<Vec<u8>>) = if level == 0 {
            (v.levels[0].clone(), None)
        } else {
            // Round-robin through the level so every key range gets its turn.
            let files = &v.levels[level];
            let ptr = p.pointers[level].as_ref();
            let f = files
                .iter()
                .find(|t| ptr.is_none_or(|p| t.meta().smallest.user_key > *p))
                .or_else(|| files.first())?
                .clone();
            let next = Some(f.meta().largest.user_key.clone());
            (vec![f], next)
        };
        let lo = upper
            .iter()
            .map(|t| t.meta().smallest.user_key.clone())
            .min()?;
        let hi = upper
            .iter()
            .map(|t| t.meta().largest.user_key.clone())
            .max()?;
        let lower = v.overlapping(level + 1, &lo, &hi);
        let (lo2, hi2) = lower.iter().fold((lo, hi), |(a, b), t| {
            (
                a.min(t.meta().smallest.user_key.clone()),
                b.max(t.meta().largest.user_key.clone()),
            )
        });
        let bottommost = (level + 2..NUM_LEVELS).all(|l| v.overlapping(l, &lo2, &hi2).is_empty());
        Some(Choice {
            level,
            upper,
            lower,
            bottommost,
            pointer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;
    use crate::sst::TableBuilder;
    use crate::version::Version;

    fn table(dir: &std::path::Path, id: u64, keys: std::ops::Range<u32>) -> Arc<Table> {
        let vfs = crate::vfs::std_vfs();
        let mut b = TableBuilder::create(&vfs, dir, id, 4096, Compression::None, 10).unwrap();
        for k in keys {
            b.add(format!("{k:06}").as_bytes(), 1, Some(b"v")).unwrap();
        }
        b.finish().unwrap();
        Arc::new(Table::open(&vfs, dir, id, None, None).unwrap())
    }

    #[test]
    fn choose_is_a_function_of_the_picture() {
        let d = tempfile::tempdir().unwrap();
        let mut v = Version::default();
        v.levels[0].push(table(d.path(), 1, 0..100));
        v.levels[0].push(table(d.path(), 2, 50..150));
        v.levels[1].push(table(d.path(), 3, 120..300));
        v.levels[1].push(table(d.path(), 4, 400..500));
        v.sort();
        let s = Leveled {
            l0_trigger: 2,
            base_bytes: 1 << 30,
            multiplier: 10,
        };
        let free = [false; NUM_LEVELS];
        let pointers = vec![None; NUM_LEVELS];
        let p = Picture {
            version: &v,
            busy: &free,
            pointers: &pointers,
        };
        assert!(s.due(&p));
        let c = s.choose(&p).unwrap();
        assert_eq!(c.level, 0);
        assert_eq!(c.upper.len(), 2);
        // Only the level-1 table the level-0 tables overlap is pulled in.
        assert_eq!(c.lower.iter().map(|t| t.id()).collect::<Vec<_>>(), vec![3]);
        assert!(c.bottommost);
        // Level 1 busy (a running compaction): nothing to do.
        let mut busy = free;
        busy[1] = true;
        let p = Picture {
            version: &v,
            busy: &busy,
            pointers: &pointers,
        };
        assert!(!s.due(&p) && s.choose(&p).is_none());
        // Below the trigger: nothing either.
        let s3 = Leveled { l0_trigger: 3, ..s };
        let p = Picture {
            version: &v,
            busy: &free,
            pointers: &pointers,
        };
        assert!(s3.choose(&p).is_none());
    }
}
