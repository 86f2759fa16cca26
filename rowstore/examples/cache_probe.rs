//! Profile aid: the block cache alone. 30K blocks of ~4 KiB (what 1M 116-byte entries
//! make), then random `get`s from one thread: the cost of one lookup, without a table.
//!
//! usage: cargo run --release -p lightning-rowstore --example cache_probe

use lightning_rowstore::sst::block::{Block, BlockBuilder};
use lightning_rowstore::sst::cache::BlockCache;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let blocks = 30_000u32;
    for sharded in [true, false] {
        let cache = BlockCache::new(256 << 20, sharded);
        for i in 0..blocks {
            cache.insert(7, i, Arc::new(block(i)));
        }
        let mut x = 0x9E37_79B9u64;
        let n = 5_000_000u64;
        let t = Instant::now();
        let mut found = 0u64;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if let Some(b) = cache.get(7, (x % blocks as u64) as u32) {
                found += b.len() as u64;
            }
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "sharded={sharded}: {:.0} ns per get ({found} entries seen)",
            el * 1e9 / n as f64
        );
    }
}

fn block(i: u32) -> Block {
    let mut b = BlockBuilder::default();
    for j in 0..30u32 {
        let k = format!("key{:08}{:04}", i, j);
        b.add(k.as_bytes(), 1, Some(&[7u8; 100]));
    }
    Block::parse(b.finish()).expect("a block")
}
