//! # lightning-query
//!
//! The query layer of Lightning DB (see ARCHITECTURE.md, "A query"): one DataFusion
//! [`TableProvider`](datafusion::catalog::TableProvider) per table. A scan at snapshot
//! `S` reads the table's published column segments (watermark `W`, minus their delete
//! bitmaps) plus the row-store changes in `(W, S]`, masking segment rows whose key
//! changed, so SQL sees every committed write at once and never a torn state. Filters
//! prune segments by their zone maps; `INSERT`, `UPDATE` and `DELETE` run as row-store
//! transactions.
//!
//! This layer owns no files; it reads the column store and the row store and writes
//! only through row-store transactions.

mod coded;
mod decimal;
mod dml;
mod fresh;
mod join_wait;
mod kernels;
mod ordered_agg;
mod partition;
mod provider;
mod runtime_filter;
mod scan;
mod select;
mod semijoin;
mod task;
mod zones;

pub use coded::{DictionaryAggregateExec, DictionaryAggregation};
pub use decimal::{DecimalArithmetic, FastDecimalArithmetics};
pub use dml::{ConstraintViolation, InsertOptions, RowWriter, SPILL_BYTES, write_rows};
pub use join_wait::WaitForJoinFilters;
pub use ordered_agg::OrderedPartialAggregation;
pub use provider::{LightningTableProvider, cast_batch, default_sql, sql_schema};
pub use scan::LightningScan;
pub use semijoin::PushSemiJoinDown;
pub use task::{ScanTask, TaskUnit};
