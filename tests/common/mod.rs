//! Helpers shared by the integration tests.
#![allow(dead_code)]

use lightning_db::LightningDbConfig;

/// A configuration with tiny buffers and levels so that a few thousand writes exercise
/// memtable switches, flushes and multi-level compaction.
///
/// `LDB_TEST_ENGINE=btree` runs it on the B+Tree storage engine instead of the LSM
/// (`.ci/run` runs the SQL and table suites once on each).
pub fn small_config() -> LightningDbConfig {
    LightningDbConfig {
        storage_engine: test_engine(),
        page_size: 512,
        write_buffer_size: 16 * 1024,
        level0_compaction_trigger: 2,
        level0_stop_writes_trigger: 8,
        level_base_size: 32 * 1024,
        target_file_size: 16 * 1024,
        cache_size: 1 << 20,
        ..Default::default()
    }
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

pub fn value(i: u64, version: u64) -> Vec<u8> {
    format!("value-{i}-{version}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// The name the test harness knows the test function `f` of the module at `module`
/// (`module_path!()`) by, for a child process that runs only it (`--exact`): the
/// module path without the crate, then `f`.
pub fn test_name(module: &str, f: &str) -> String {
    match module.split_once("::") {
        Some((_, m)) => format!("{m}::{f}"),
        None => f.to_string(),
    }
}

/// The storage engine the suites run on: `LDB_TEST_ENGINE=btree` for the B+Tree, else
/// the LSM.
pub fn test_engine() -> lightning_db::StorageEngine {
    match std::env::var("LDB_TEST_ENGINE").as_deref() {
        Ok("btree") => lightning_db::StorageEngine::BTree,
        _ => lightning_db::StorageEngine::Lsm,
    }
}

/// The default configuration on the suites' storage engine ([`test_engine`]).
pub fn default_config() -> LightningDbConfig {
    LightningDbConfig {
        storage_engine: test_engine(),
        ..Default::default()
    }
}
