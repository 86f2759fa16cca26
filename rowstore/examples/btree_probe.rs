//! A quick probe of the B+Tree structure on its own (no WAL, no memtable): load N keys
//! in flush-sized applies, then random gets and 100-entry scans on one thread.
//! Indicative only; the peer comparisons live in `scripts/baseline_oltp.sh`.
//!
//! usage: cargo run --release -p lightning-rowstore --example btree_probe -- [keys] [dir]

use lightning_rowstore::btree::BTree;
use lightning_rowstore::vfs::StdVfs;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("keys"));
    let dir = args.next().map_or_else(std::env::temp_dir, Into::into);
    let path = dir.join("btree_probe.tree");
    let t = BTree::create(&StdVfs, &path).expect("create");
    let key = |i: u64| format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes();
    let mut keys: Vec<u64> = (0..n).collect();
    // Flush-sized runs of random keys (a 64 MiB memtable holds ~450K of these).
    let run = 200_000usize;
    let started = Instant::now();
    let mut ts = 0;
    for chunk in keys.chunks_mut(run) {
        let mut b: Vec<_> = chunk
            .iter()
            .map(|&i| {
                ts += 1;
                (key(i), ts, Some(vec![b'v'; 100]))
            })
            .collect();
        b.sort_by(|a, b| a.0.cmp(&b.0));
        t.apply(b, ts, ts).expect("apply");
    }
    let load = started.elapsed();
    let v = t.current();
    let bytes = v.meta.end * 4096;
    println!(
        "load: {n} keys in {:.2} s = {:.0} keys/s; file {:.1} MiB ({:.1} bytes/key), height {}",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64(),
        bytes as f64 / 1048576.0,
        bytes as f64 / n as f64,
        v.meta.height
    );
    println!(
        "levels (nodes, entries), root first: {:?}",
        v.shape().expect("shape")
    );
    let mut x = 0x1234_5678u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let gets = 1_000_000u64.min(n * 2);
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..gets {
        if let lightning_rowstore::btree::Found::Value(_) = v.get(&key(rnd() % n), ts).expect("get")
        {
            found += 1;
        }
    }
    let el = started.elapsed();
    assert_eq!(found, gets);
    println!(
        "get: {:.0} gets/s ({:.2} us each)",
        gets as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / gets as f64
    );
    let scans = 100_000u64;
    let started = Instant::now();
    let mut entries = 0u64;
    for _ in 0..scans {
        let start = key(rnd() % n);
        let mut it = v.versions(Some(&start), None, false).expect("iter");
        for _ in 0..100 {
            if it.current().is_none() {
                break;
            }
            entries += 1;
            it.advance().expect("advance");
        }
    }
    let el = started.elapsed();
    println!(
        "scan: {:.0} 100-entry scans/s, {:.2} M entries/s",
        scans as f64 / el.as_secs_f64(),
        entries as f64 / el.as_secs_f64() / 1e6
    );
    drop(v);
    let started = Instant::now();
    let shrunk = t.compact(ts).expect("compact");
    let v = t.current();
    println!(
        "compact: {:.2} s, file {:.1} MiB ({} pages given back), {} free pages left",
        started.elapsed().as_secs_f64(),
        (v.meta.end * 4096) as f64 / 1048576.0,
        shrunk,
        t.free_pages()
    );
    drop(v);
    drop(t);
    let _ = std::fs::remove_file(&path);
}
