//! The io_uring experiment for the WAL (issue 20): durable appends of 150 B (one
//! commit), 8 KiB (a group of ~60) and 150 KiB (a batch of 1000) to a zero-filled file,
//! as pwrite + fdatasync (two system calls, the WAL's path) against one io_uring
//! submission of the write linked (IO_LINK) to an fsync(DATASYNC). Two rounds each.
//!
//! usage: cargo run --release -p lightning-bench --no-default-features --features uring-probe --example uring_probe -- [file] [appends]
use io_uring::{IoUring, opcode, types};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("uring_probe.dat");
    let n: usize = args.get(2).map_or(3000, |s| s.parse().unwrap());
    for size in [150usize, 8 << 10, 150 << 10] {
        for round in 0..2 {
            for mode in ["posix", "uring"] {
                let total = n * size + (1 << 20);
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                let z = vec![0u8; 1 << 20];
                let mut at = 0;
                while at < total {
                    f.write_all_at(&z, at as u64).unwrap();
                    at += z.len();
                }
                f.sync_all().unwrap();
                let buf = vec![7u8; size];
                let mut ring = IoUring::new(8).unwrap();
                let fd = types::Fd(f.as_raw_fd());
                let mut lat = Vec::with_capacity(n);
                let t0 = Instant::now();
                for i in 0..n {
                    let off = (i * size) as u64;
                    let t = Instant::now();
                    if mode == "posix" {
                        f.write_all_at(&buf, off).unwrap();
                        f.sync_data().unwrap();
                    } else {
                        let w = opcode::Write::new(fd, buf.as_ptr(), buf.len() as u32)
                            .offset(off)
                            .build()
                            .flags(io_uring::squeue::Flags::IO_LINK)
                            .user_data(1);
                        let s = opcode::Fsync::new(fd)
                            .flags(types::FsyncFlags::DATASYNC)
                            .build()
                            .user_data(2);
                        // SAFETY: `buf` and the file outlive the two operations, which
                        // complete (submit_and_wait) before either is touched again.
                        unsafe {
                            let mut sq = ring.submission();
                            sq.push(&w).unwrap();
                            sq.push(&s).unwrap();
                        }
                        ring.submit_and_wait(2).unwrap();
                        for c in ring.completion() {
                            assert!(
                                c.result() >= 0,
                                "op {} failed: {}",
                                c.user_data(),
                                c.result()
                            );
                        }
                    }
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                let el = t0.elapsed().as_secs_f64();
                lat.sort_unstable();
                println!(
                    "{size:>7} B {mode:<5} round {round}: {:>6.0} ops/s  p50 {:>5.0} us  p99 {:>5.0} us",
                    n as f64 / el,
                    lat[n / 2] as f64 / 1e3,
                    lat[n * 99 / 100] as f64 / 1e3
                );
            }
        }
    }
    let _ = std::fs::remove_file(path);
}
