//! The meta pages: which tree is published (two slots, written alternately; the valid
//! one with the higher generation wins at open).

use super::node::{Extent, PAGE};

const META_MAGIC: &[u8; 8] = b"LDBTREE\0";
const META_FORMAT: u32 = 1;
const META_LEN: usize = 8 + 4 + 8 * 8 + 4 * 3 + 4;

/// What a meta page records: the published tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub generation: u64,
    pub root: Option<Extent>,
    pub height: u32,
    /// Pages the tree's file uses (free ones included).
    pub end: u64,
    pub free_list: Option<Extent>,
    /// Versions stored.
    pub entries: u64,
    /// An opaque mark the caller published with the tree (the engine: the newest
    /// commit timestamp the tree holds, so WAL replay starts after it).
    pub applied: u64,
}

impl Meta {
    pub(super) fn encode(&self) -> [u8; PAGE] {
        let mut b = [0u8; PAGE];
        let mut v = Vec::with_capacity(META_LEN);
        v.extend_from_slice(META_MAGIC);
        v.extend_from_slice(&META_FORMAT.to_le_bytes());
        let root = self.root.unwrap_or(Extent { page: 0, pages: 0 });
        let fl = self.free_list.unwrap_or(Extent { page: 0, pages: 0 });
        for x in [
            self.generation,
            root.page,
            self.end,
            fl.page,
            self.entries,
            self.applied,
            0,
            0,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [root.pages, self.height, fl.pages] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        b[..v.len()].copy_from_slice(&v);
        b
    }

    /// Decode a meta page; `None` if it is not a valid one (torn, never written).
    pub(super) fn decode(b: &[u8]) -> std::result::Result<Option<Meta>, String> {
        if b.len() < META_LEN || &b[..8] != META_MAGIC {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(b[META_LEN - 4..META_LEN].try_into().unwrap());
        if crc32c::crc32c(&b[..META_LEN - 4]) != crc {
            return Ok(None);
        }
        let format = u32::from_le_bytes(b[8..12].try_into().unwrap());
        if format != META_FORMAT {
            return Err(format!("unknown B+Tree format version {format}"));
        }
        let u = |i: usize| u64::from_le_bytes(b[12 + 8 * i..20 + 8 * i].try_into().unwrap());
        let w = |i: usize| u32::from_le_bytes(b[76 + 4 * i..80 + 4 * i].try_into().unwrap());
        let ext = |page: u64, pages: u32| (pages > 0).then_some(Extent { page, pages });
        Ok(Some(Meta {
            generation: u(0),
            root: ext(u(1), w(0)),
            height: w(1),
            end: u(2),
            free_list: ext(u(3), w(2)),
            entries: u(4),
            applied: u(5),
        }))
    }
}
