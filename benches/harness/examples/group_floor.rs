//! What blocking durable puts can reach on this machine with no database at all: the
//! leanest group commit there is, as a floor (a ceiling, rather) to hold the engine's
//! figures against.
//!
//! T writer threads each loop: make a 16-byte key and a 100-byte value (as the peer
//! harness does), append them to one shared buffer under a mutex, and wait until a
//! dedicated log thread has written that buffer to a file and `fdatasync`ed it. The log
//! thread takes everything appended so far as one group, writes it with one `pwrite`,
//! syncs, publishes the durable sequence number and wakes every waiter with one
//! `FUTEX_WAKE`. No memtable, no index, no checksums, no records: what is left is the
//! hand-off between threads and the sync, which every engine with blocking puts pays.
//!
//! usage: cargo run --release -p lightning-bench --no-default-features --example group_floor -- <dir> [threads] [seconds] [sync|nosync] [sleep|yield] [gather]
//!
//! `sleep`: a waiter sleeps on the futex until its group is published. `yield`: it
//! `sched_yield`s while the group is under way (up to 1 ms) before it sleeps.
//! `gather`: the log thread waits (yielding, up to 1 ms) until every writer has queued
//! before it takes a group, as the engine's leader does; otherwise it takes whatever is
//! queued the moment it is free.
//!
//! Knobs for the experiments behind `lsm/sync_cpu.rs` (environment variables):
//! `FLOOR_PIN=<cpu>` pins the log thread to one processor (on the test VM a sync from
//! the processor taking the disk's interrupts took ~105 µs, from the other ~155 µs);
//! `FLOOR_MIGRATE=<cpu>` moves it to that processor for each sync and back to
//! `FLOOR_PIN` after; `FLOOR_REC=<bytes>` sets the record size (116 by default);
//! `FLOOR_PAD=1` pads a write that enters a new page to that page's end, as the WAL
//! does; `FLOOR_DIRECT_ZERO=1` prepares the file as the WAL's is (`fallocate`, then
//! zeros written with `O_DIRECT | O_DSYNC`) instead of buffered zeros and `fsync`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Sequence number of the last put appended.
    seq: u64,
    /// The log thread sleeps waiting for work.
    idle: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Everything up to this sequence number is durable.
    durable: AtomicU64,
    /// Bumped at each publication: the waiters' futex word.
    published: AtomicU32,
    /// Bumped when work arrives for an idle log thread: its futex word.
    work: AtomicU32,
    stop: AtomicBool,
    file: File,
    sync: bool,
    /// Before taking a group, wait (yielding, up to 1 ms) until this many puts are
    /// queued: every writer in one group, as the engine's leader gathers.
    gather: usize,
    knobs: Knobs,
}

/// The experiments' environment variables (see the module's documentation).
#[derive(Clone, Copy)]
struct Knobs {
    pin: Option<usize>,
    migrate: Option<usize>,
    rec_len: usize,
    pad: bool,
    direct_zero: bool,
}

impl Knobs {
    fn from_env() -> Knobs {
        let num = |k: &str| std::env::var(k).ok().map(|v| v.parse::<usize>().expect(k));
        Knobs {
            pin: num("FLOOR_PIN"),
            migrate: num("FLOOR_MIGRATE"),
            rec_len: num("FLOOR_REC").unwrap_or(116).max(16),
            pad: std::env::var("FLOOR_PAD").is_ok(),
            direct_zero: std::env::var("FLOOR_DIRECT_ZERO").is_ok(),
        }
    }
}

/// Reserves 256 MiB for `file` (at `path`) and zeroes it with direct, synchronous
/// writes, as the WAL's space is prepared (`vfs::std`'s `zero_fill`).
fn direct_zero(file: &File, path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 256 << 20) };
    let d = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .expect("direct");
    let layout = std::alloc::Layout::from_size_align(1 << 20, 4096).expect("layout");
    // SAFETY: the layout's size is not zero; the allocation is zeroed, aligned for direct
    // I/O, and only read below, then freed with the same layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout);
        assert!(!p.is_null(), "allocation failed");
        let z = std::slice::from_raw_parts(p, 1 << 20);
        for i in 0..256u64 {
            d.write_all_at(z, i << 20).expect("direct zero");
        }
        std::alloc::dealloc(p, layout);
    }
}

/// Restricts the calling thread to processor `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only
    // read and write the set given, which lives across the calls.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn futex_wait(word: &AtomicU32, seen: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the futex word outlives the call; the kernel only reads it and `tsp`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            tsp,
        );
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE reads nothing but the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// The log thread: one group per round, everything appended since the last.
fn log_thread(sh: &Shared) -> (u64, u64, Duration) {
    let (mut groups, mut off, mut syncing) = (0u64, 0u64, Duration::ZERO);
    let mut spare = Vec::new();
    let mut upto_last = 0u64;
    loop {
        if sh.gather > 1 {
            let t = Instant::now();
            while sh.pending.lock().expect("lock").seq - upto_last < sh.gather as u64
                && t.elapsed() < Duration::from_millis(1)
                && !sh.stop.load(Ordering::Relaxed)
            {
                std::thread::yield_now();
            }
        }
        let (buf, upto) = {
            let mut p = sh.pending.lock().expect("lock");
            if p.buf.is_empty() {
                if sh.stop.load(Ordering::Relaxed) {
                    return (groups, off, syncing);
                }
                p.idle = true;
                let seen = sh.work.load(Ordering::Acquire);
                drop(p);
                futex_wait(&sh.work, seen, Some(Duration::from_millis(10)));
                continue;
            }
            let buf = std::mem::replace(&mut p.buf, std::mem::take(&mut spare));
            (buf, p.seq)
        };
        if sh.knobs.pad && (off + buf.len() as u64) / 4096 > off / 4096 {
            let end = off + buf.len() as u64;
            let padded = end.div_ceil(4096) * 4096;
            let mut b = buf.clone();
            b.resize((padded - off) as usize, 0);
            sh.file.write_all_at(&b, off).expect("write");
        } else {
            sh.file.write_all_at(&buf, off).expect("write");
        }
        off += buf.len() as u64;
        if sh.sync {
            let t = Instant::now();
            if let Some(c) = sh.knobs.migrate {
                pin_to(c);
            }
            sh.file.sync_data().expect("fdatasync");
            if sh.knobs.migrate.is_some() {
                pin_to(sh.knobs.pin.unwrap_or(0));
            }
            syncing += t.elapsed();
        }
        upto_last = upto;
        sh.durable.store(upto, Ordering::Release);
        sh.published.fetch_add(1, Ordering::Release);
        futex_wake_all(&sh.published);
        groups += 1;
        spare = buf;
        spare.clear();
    }
}

fn put(sh: &Shared, rec: &[u8], yield_first: bool) {
    let my = {
        let mut p = sh.pending.lock().expect("lock");
        p.buf.extend_from_slice(rec);
        p.seq += 1;
        if std::mem::take(&mut p.idle) {
            sh.work.fetch_add(1, Ordering::Release);
            futex_wake_all(&sh.work);
        }
        p.seq
    };
    let started = Instant::now();
    while sh.durable.load(Ordering::Acquire) < my {
        let seen = sh.published.load(Ordering::Acquire);
        if sh.durable.load(Ordering::Acquire) >= my {
            break;
        }
        if yield_first && started.elapsed() < Duration::from_millis(1) {
            std::thread::yield_now();
        } else {
            futex_wait(&sh.published, seen, None);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("a directory"));
    let threads: usize = args.next().map_or(64, |s| s.parse().expect("threads"));
    let secs: f64 = args.next().map_or(3.0, |s| s.parse().expect("seconds"));
    let sync = args.next().as_deref() != Some("nosync");
    let yield_first = args.next().as_deref() == Some("yield");
    let gather = if args.next().as_deref() == Some("gather") {
        threads
    } else {
        0
    };
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("floor.log");
    let file = File::create(&path).expect("create");
    let knobs = Knobs::from_env();
    // Written and synced once, so the timed syncs find their blocks allocated and
    // written (no extent or size metadata to commit), as the engine's zeroed log does.
    if knobs.direct_zero {
        direct_zero(&file, &path);
    } else {
        file.write_all_at(&vec![0u8; 256 << 20], 0).expect("zero");
        file.sync_all().expect("sync");
    }
    let sh = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        durable: AtomicU64::new(0),
        published: AtomicU32::new(0),
        work: AtomicU32::new(0),
        stop: AtomicBool::new(false),
        file,
        sync,
        gather,
        knobs,
    });
    let log = {
        let sh = sh.clone();
        std::thread::spawn(move || {
            if let Some(cpu) = sh.knobs.pin {
                pin_to(cpu);
            }
            log_thread(&sh)
        })
    };
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(secs);
    let rec_len = knobs.rec_len;
    let puts: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                let sh = &sh;
                s.spawn(move || {
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ th as u64;
                    let mut n = 0u64;
                    let mut rec = Vec::with_capacity(rec_len);
                    while Instant::now() < deadline {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        rec.clear();
                        rec.extend_from_slice(format!("key{:013}", x % 1_000_000).as_bytes());
                        rec.extend((0..rec_len - 16).map(|i| (x >> (i % 56)) as u8));
                        let t = Instant::now();
                        put(sh, &rec, yield_first);
                        std::hint::black_box(t.elapsed());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("writer")).sum()
    });
    let el = t.elapsed().as_secs_f64();
    sh.stop.store(true, Ordering::Relaxed);
    let (groups, bytes, syncing) = log.join().expect("log thread");
    println!(
        "{threads} writers, {}, {}{}: {:.1}K puts/s, {:.1} puts/group, {:.0} µs/group (sync {:.0} µs), {:.1} MB written",
        if sync { "fdatasync" } else { "no sync" },
        if yield_first {
            "yield then sleep"
        } else {
            "sleep"
        },
        if gather > 0 { ", gathering" } else { "" },
        puts as f64 / el / 1000.0,
        puts as f64 / groups.max(1) as f64,
        el * 1e6 / groups.max(1) as f64,
        syncing.as_secs_f64() * 1e6 / groups.max(1) as f64,
        bytes as f64 / 1e6
    );
    let _ = std::fs::remove_file(&path);
}
