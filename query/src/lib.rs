//! # lightning-query
//!
//! The query layer of Lightning DB (see DESIGN.md, "Query"): a DataFusion
//! `TableProvider` per table that merges column segments with the not-yet-compacted rows
//! at one snapshot, SQL DDL/DML, and Parquet export.
//!
//! This crate is intentionally empty until the SQL issue lands: no placeholder API is
//! exported, and it does not depend on DataFusion yet, so the default build stays fast.
