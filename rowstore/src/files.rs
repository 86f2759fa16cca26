//! The names of the files in a database directory, in one place.
//!
//! ```text
//! CURRENT            names the live manifest
//! CURRENT.tmp        CURRENT being replaced (write, fsync, rename)
//! MANIFEST-NNNNNN    manifests (logs of version edits)
//! NNNNNN.log         WAL segments
//! NNNNNN.sst         sorted tables
//! LOCK               held with flock while the database is open
//! columnar/          the column store (its own crate names what is inside)
//! ```

use std::path::{Path, PathBuf};

pub const CURRENT: &str = "CURRENT";
pub const CURRENT_TMP: &str = "CURRENT.tmp";
pub const LOCK: &str = "LOCK";
pub const COLUMNAR_DIR: &str = "columnar";
/// The B+Tree engine's tree file.
pub const TREE: &str = "TREE";

/// What a name in the database directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFile {
    Table(u64),
    Wal(u64),
    Manifest(u64),
    Current,
    CurrentTmp,
    Lock,
    Columnar,
    Tree,
    /// Anything else: never touched by the engine.
    Other,
}

fn number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Classify a file name in the database directory. Only names exactly as the engine
/// writes them count (digits only, at least six of them).
pub fn classify(name: &str) -> DbFile {
    let numbered = |n: &str| number(n).filter(|_| n.len() >= 6);
    if let Some(n) = name.strip_suffix(".sst").and_then(numbered) {
        DbFile::Table(n)
    } else if let Some(n) = name.strip_suffix(".log").and_then(numbered) {
        DbFile::Wal(n)
    } else if let Some(n) = name.strip_prefix("MANIFEST-").and_then(numbered) {
        DbFile::Manifest(n)
    } else {
        match name {
            CURRENT => DbFile::Current,
            CURRENT_TMP => DbFile::CurrentTmp,
            LOCK => DbFile::Lock,
            COLUMNAR_DIR => DbFile::Columnar,
            TREE => DbFile::Tree,
            _ => DbFile::Other,
        }
    }
}

impl DbFile {
    /// Whether this name is part of a database (not the lock, not a foreign file).
    pub fn is_database_file(self) -> bool {
        !matches!(self, DbFile::Lock | DbFile::Other)
    }
}

pub fn wal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:06}.log"))
}

pub fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:06}.sst"))
}

pub fn manifest_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("MANIFEST-{id:06}"))
}

pub fn tree_path(dir: &Path) -> PathBuf {
    dir.join(TREE)
}

pub fn current_path(dir: &Path) -> PathBuf {
    dir.join(CURRENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_other() {
        let d = Path::new("d");
        for (p, f) in [
            (wal_path(d, 7), DbFile::Wal(7)),
            (table_path(d, 1234567), DbFile::Table(1234567)),
            (manifest_path(d, 3), DbFile::Manifest(3)),
        ] {
            assert_eq!(classify(p.file_name().unwrap().to_str().unwrap()), f);
        }
        for other in [
            "notes.txt",
            "12.sst",
            "+00001.log",
            "backup.tmp",
            "MANIFEST-x",
        ] {
            assert_eq!(classify(other), DbFile::Other, "{other}");
        }
        assert_eq!(classify("CURRENT.tmp"), DbFile::CurrentTmp);
        assert!(!classify("LOCK").is_database_file());
    }
}
