//! A real cluster on loopback: a scheduler and two executors as separate processes
//! (`lightning-ballista`), the 22 TPC-H queries on a small published database, every
//! answer compared with `db.sql`, and the scan tasks seen running on both executors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lightning-ballista");

/// Children killed when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` distinct free loopback ports: every listener is held until all are taken, so
/// the kernel cannot hand the same port out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Wait until something listens on `port` (at most 30 s).
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("lightning-ballista runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn spawn(args: &[String], log: &Path) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("lightning-ballista starts")
}

#[test]
fn tpch_on_a_two_executor_cluster_matches_db_sql() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let publ = dir.path().join("published");
    let (ok, out) = run(&["tpch", "--sf", "0.01", src.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "publish",
        src.to_str().unwrap(),
        publ.to_str().unwrap(),
        "--batch-rows",
        "4096",
    ]);
    assert!(ok, "{out}");

    let ports = free_ports(5);
    let sched = ports[0];
    let mut procs = Procs(Vec::new());
    procs.0.push(spawn(
        &["scheduler".into(), "--port".into(), sched.to_string()],
        &dir.path().join("scheduler.log"),
    ));
    wait_listening(sched);
    let logs: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("e{i}.log")))
        .collect();
    for (i, log) in logs.iter().enumerate() {
        let work = dir.path().join(format!("work{i}"));
        std::fs::create_dir_all(&work).unwrap();
        procs.0.push(spawn(
            &[
                "executor".into(),
                "--port".into(),
                ports[1 + 2 * i].to_string(),
                "--grpc-port".into(),
                ports[2 + 2 * i].to_string(),
                "--scheduler-port".into(),
                sched.to_string(),
                "--work-dir".into(),
                work.to_string_lossy().into(),
                "--name".into(),
                format!("e{}", i + 1),
            ],
            log,
        ));
    }
    // Every executor listens, then registers on its first heartbeat.
    for port in [ports[1], ports[3]] {
        wait_listening(port);
    }
    std::thread::sleep(Duration::from_secs(3));
    let url = format!("df://127.0.0.1:{sched}");
    let start = Instant::now();
    let (ok, out) = run(&[
        "run",
        "--scheduler",
        &url,
        "--db",
        publ.to_str().unwrap(),
        "--tpch",
        "--compare",
        "--partitions",
        "4",
    ]);
    let sched_log = std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap_or_default();
    assert!(ok, "{out}\nscheduler log:\n{sched_log}");
    assert!(out.contains("all 22 answers match db.sql"), "{out}");
    eprintln!("22 queries in {:?}", start.elapsed());

    // Scan tasks ran on both executors, and one table's partitions were split
    // between them.
    let tables = |log: &Path| -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("scan task:"))
            .filter_map(|l| l.split(" table=").nth(1))
            .filter_map(|t| t.split(' ').next())
            .map(String::from)
            .collect()
    };
    let (a, b) = (tables(&logs[0]), tables(&logs[1]));
    assert!(!a.is_empty() && !b.is_empty(), "e1 ran {a:?}, e2 ran {b:?}");
    assert!(
        a.iter().any(|t| b.contains(t)),
        "no table was scanned on both executors: e1 {a:?}, e2 {b:?}"
    );
}
