//! The integration tests that use SQL, as one test binary: each module was a test
//! binary of its own, and each of those linked all of DataFusion (~280 MB in a debug
//! build), which filled CI's disk. Run one module with a filter:
//! `cargo test --test integration -- crash::`.
//!
//! (The key-value-only suites, `api`, `model`, `txn_model`, `transactions` and
//! `corruption`, stay separate binaries: they link no DataFusion.)

#[path = "../common/mod.rs"]
mod common;

mod alter;
mod answers;
mod btree_engine;
mod cli;
mod cli_shell;
mod crash;
mod decimals;
mod encryption;
mod export;
mod fuzz_corpora;
mod grouped_by_key;
mod joins;
mod ops;
mod prepared;
mod read_only;
mod reliability;
mod scan_sharing;
mod simulation;
mod sql;
mod tables;
mod tpch;
mod vfs;
