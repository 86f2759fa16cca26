//! Sorted string tables (SSTs): immutable files of versioned entries in internal-key order.
//!
//! ```text
//! data block*  (each: payload | codec u8 | crc32c(payload, codec) u32)
//! filter block (bloom over user keys, same trailer)
//! meta block   (smallest/largest internal key, counts, timestamp range; same trailer)
//! index block  (per data block: last internal key, offset, size; same trailer)
//! footer       (handles of index/filter/meta, format version, magic, crc32c) 52 bytes
//! ```

pub mod block;
pub mod bloom;
pub mod cache;
pub mod prefetch;
mod table;

pub use table::{Table, TableBuilder, TableIter, TableMeta, table_path};
