//! # lightning-columnar
//!
//! The column store of Lightning DB (see DESIGN.md, "Column store"): immutable Arrow
//! column segments compacted from committed rows of the row store, with zone maps and
//! roaring delete bitmaps. It will own the `columnar/` folder of a database directory.
//!
//! This crate is intentionally empty until the tables/column-store issue lands: the
//! workspace layout is fixed now so the facade's `sql` feature and the layering are in
//! place, but no placeholder API is exported.
