//! # lightning-columnar
//!
//! The column store of Lightning DB (see ARCHITECTURE.md, "A write"): committed rows of
//! the row store, continuously compacted into immutable Arrow column segments with zone
//! maps and roaring delete bitmaps. It owns the `columnar/` folder of a database
//! directory: one sub-folder per table with `seg-*.arrow` segments and `*.del` delete
//! bitmaps, and `STATE`, which publishes the segment set and watermark of every table
//! in one atomic step.
//!
//! It reads the row store (never writes it) and must never return a row that the row
//! store's committed state at the published watermark does not hold.

pub mod codec;
pub mod error;
pub mod layout;
pub mod segment;
pub mod state;
pub mod store;
pub mod table;

pub use error::{Error, Result};
pub use segment::SegmentCompression;
pub use store::{ColumnStore, ColumnarOptions, RoundStats, be_u64s, gallop};
pub use table::TableDef;
