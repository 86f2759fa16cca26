//! Profile aid: a bulk load through the facade the way `ldb-peers` does it (N random
//! 16-byte keys, 100-byte values, batches of 1000), durable or not; prints keys/s, the
//! time spent syncing and flushing, and the CPU time of the whole process.
//!
//! usage: cargo run --release -p lightning-bench --no-default-features --example load_probe -- <dir> [keys] [nosync]

use lightning_db::{Database, Durability, LightningDbConfig, StorageEngine};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("a directory"));
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("keys"));
    let nosync = args.next().as_deref() == Some("nosync");
    let _ = std::fs::remove_dir_all(&dir);
    // Knobs, each defaulting to the config's: PROBE_WBS (write buffer, MiB),
    // PROBE_MEMTABLE (memtable size, MiB), PROBE_CWORKERS (compaction threads),
    // PROBE_ENGINE=btree (the B+Tree engine instead of the LSM).
    let knob = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let d = LightningDbConfig::default();
    let cfg = LightningDbConfig {
        durability: if nosync {
            Durability::Buffered
        } else {
            Durability::Sync
        },
        write_buffer_size: knob("PROBE_WBS").map_or(d.write_buffer_size, |m| m << 20),
        memtable_size: knob("PROBE_MEMTABLE").map_or(d.memtable_size, |m| m << 20),
        parallel_compaction_workers: knob("PROBE_CWORKERS")
            .unwrap_or(d.parallel_compaction_workers),
        storage_engine: if std::env::var("PROBE_ENGINE").as_deref() == Ok("btree") {
            StorageEngine::BTree
        } else {
            StorageEngine::Lsm
        },
        ..d
    };
    let db = Database::create(&dir, cfg).expect("create");
    let key = |i: u64| format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes();
    let mut x = 0x1234_5678u64;
    let t = Instant::now();
    let mut batch_time = std::time::Duration::ZERO;
    for c in 0..n / 1000 {
        let pairs: Vec<_> = (c * 1000..(c + 1) * 1000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (key(i), x.to_le_bytes().repeat(13)[..100].to_vec())
            })
            .collect();
        let t = Instant::now();
        db.put_batch(&pairs).expect("put");
        batch_time += t.elapsed();
    }
    let el = t.elapsed().as_secs_f64();
    let m = db.get_metrics();
    println!(
        "{n} keys{}: {:.0}K keys/s (in put_batch {:.2} s of {el:.2} s); {} syncs avg {:.0} µs; \
         {} flushes {:.2} s; {} compactions {:.2} s; stalls {:.2} s; cpu {:.2} s; tables per level {:?}",
        if nosync { " (no sync)" } else { "" },
        n as f64 / el / 1000.0,
        batch_time.as_secs_f64(),
        m.fsyncs,
        m.fsync_avg_us,
        m.flushes,
        m.flush_seconds,
        m.compactions,
        m.compaction_seconds,
        m.write_stall_seconds,
        m.process_cpu_seconds,
        m.tables_per_level,
    );
}
