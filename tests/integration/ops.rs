//! Operations: metrics, the Prometheus endpoint (scraped over loopback and parsed with a
//! Prometheus text parser), bearer-token auth, and health checks provoked into each
//! unhealthy state.

use crate::common;

use lightning_db::monitoring::PrometheusExporter;
use lightning_db::{Database, LightningDbConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("unexpected type for {name}"),
    }
}

#[test]
fn metrics_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::small_config()).unwrap();
    for i in 0..500 {
        db.put(&common::key(i), &common::value(i, 0)).unwrap();
    }
    for i in 0..300 {
        db.get(&common::key(i)).unwrap();
    }
    db.delete(&common::key(1)).unwrap();
    let t = db.begin_transaction().unwrap();
    db.put_tx(t, b"x", b"y").unwrap();
    assert_eq!(db.get_metrics().active_transactions, 1);
    db.commit_transaction(t).unwrap();
    db.flush().unwrap();
    let m = db.get_metrics();
    assert_eq!(m.reads, 300);
    assert_eq!(m.writes, 501);
    assert_eq!(m.deletes, 1);
    assert_eq!(m.get_latency.count, 300);
    assert!(m.get_latency.p50_us > 0.0 && m.get_latency.p50_us <= m.get_latency.p999_us);
    assert_eq!(m.commit_latency.count, 1);
    assert!(m.put_latency.count >= 501);
    assert!(m.fsyncs > 0 && m.fsync_avg_us > 0.0);
    assert!(m.flushes > 0 && m.sst_bytes_written > 0 && m.wal_bytes_written > 0);
    assert!(m.disk.sst_bytes > 0 && m.disk.total_bytes >= m.disk.sst_bytes);
    assert!(m.operations_per_second > 0.0);
    assert_eq!(m.active_transactions, 0);
    assert_eq!(m.checksum_failures, 0);
}

/// Table-API and SQL writes reach the engine without the key-value path: their
/// latencies were missing from `put_latency` and `commit_latency` (the commit counter
/// saw them).
#[test]
fn latency_histograms_count_table_and_sql_writes() {
    use lightning_db::arrow::array::{Int64Array, RecordBatch};
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::small_config()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]));
    db.create_table("t", schema.clone(), &["id"]).unwrap();
    let before = db.get_metrics();
    for i in 0..20 {
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![i])),
                Arc::new(Int64Array::from(vec![i * 10])),
            ],
        )
        .unwrap();
        db.insert("t", &b).unwrap();
    }
    for i in 100..110 {
        db.sql(&format!("INSERT INTO t VALUES ({i}, 1)")).unwrap();
    }
    let m = db.get_metrics();
    // Table writes are single writes; SQL DML commits a transaction.
    assert_eq!(m.put_latency.count - before.put_latency.count, 20);
    assert_eq!(m.commit_latency.count - before.commit_latency.count, 10);
    assert!(m.commits - before.commits >= 30);
    assert!(m.put_latency.p50_us > 0.0 && m.commit_latency.p50_us > 0.0);
}

#[test]
fn prometheus_endpoint_serves_parseable_metrics_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::small_config()).unwrap();
    for i in 0..100 {
        db.put(&common::key(i), b"v").unwrap();
        db.get(&common::key(i)).unwrap();
    }
    let exporter = PrometheusExporter::new(&db);
    let addr = exporter.serve("127.0.0.1:0").unwrap();
    let (status, body) = http_get(addr, "/metrics", None);
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(value(&scrape, "lightning_db_reads_total"), 100.0);
    assert_eq!(value(&scrape, "lightning_db_writes_total"), 100.0);
    assert_eq!(value(&scrape, "lightning_db_up"), 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "lightning_db_get_latency_seconds")
    );
    assert_eq!(http_get(addr, "/other", None).0, 404);
    exporter.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "server still accepting after stop"
    );
}

#[test]
fn bearer_token_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::small_config()).unwrap();
    let exporter = PrometheusExporter::new(&db).with_bearer_token("s3cret");
    let addr = exporter.serve("127.0.0.1:0").unwrap();
    assert_eq!(http_get(addr, "/metrics", None).0, 401);
    assert_eq!(http_get(addr, "/metrics", Some("Bearer wrong!")).0, 401);
    assert_eq!(http_get(addr, "/metrics", Some("Basic s3cret")).0, 401);
    assert_eq!(http_get(addr, "/metrics", Some("Bearer s3cret")).0, 200);
}

#[test]
fn healthy_by_default_and_unhealthy_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db"), common::small_config()).unwrap();
    let h = db.health_check().unwrap();
    assert!(h.is_healthy, "{:?}", h.issues);
    db.close().unwrap();
    assert!(!db.health_check().unwrap().is_healthy);
}

#[test]
fn low_disk_space_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            health_min_free_disk_bytes: u64::MAX,
            ..common::small_config()
        },
    )
    .unwrap();
    let h = db.health_check().unwrap();
    assert!(!h.is_healthy);
    assert!(
        h.issues.iter().any(|i| i.contains("low disk space")),
        "{:?}",
        h.issues
    );
}

#[test]
fn compaction_backlog_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        LightningDbConfig {
            level0_compaction_trigger: 19,
            level0_stop_writes_trigger: 20,
            ..common::small_config()
        },
    )
    .unwrap();
    for i in 0..18 {
        db.put(&common::key(i), b"v").unwrap();
        db.flush().unwrap();
    }
    let h = db.health_check().unwrap();
    assert!(
        h.issues.iter().any(|i| i.contains("compaction backlog")),
        "{:?}",
        h.issues
    );
}

#[test]
fn checksum_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let cfg = LightningDbConfig {
        compression_enabled: false,
        ..common::small_config()
    };
    {
        let db = Database::create(&p, cfg.clone()).unwrap();
        for i in 0..2000 {
            db.put(&common::key(i), &common::value(i, 0)).unwrap();
        }
        db.compact().unwrap();
    }
    let sst = std::fs::read_dir(&p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sst"))
        .unwrap();
    let mut data = std::fs::read(&sst).unwrap();
    data[200] ^= 0x10;
    std::fs::write(&sst, data).unwrap();
    let db = Database::open(&p, cfg).unwrap();
    // The damaged block is met when the scan opens (if it is the first one read) or
    // while it runs: either way a typed error.
    let errors = match db.scan(None, None) {
        Ok(it) => it.filter(|r| r.is_err()).count(),
        Err(e) => {
            assert!(matches!(e, lightning_db::Error::Corruption { .. }), "{e}");
            1
        }
    };
    assert!(errors > 0);
    let h = db.health_check().unwrap();
    assert!(
        h.issues.iter().any(|i| i.contains("checksum failure")),
        "{:?}",
        h.issues
    );
    assert!(db.get_metrics().checksum_failures > 0);
}

#[test]
fn fatal_write_error_and_dead_threads_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = Database::create(&p, common::small_config()).unwrap();
    db.put(b"before", b"1").unwrap();
    // The directory disappears under the running database: the next WAL segment
    // cannot be created, which is fatal (fail-stop).
    std::fs::remove_dir_all(&p).unwrap();
    let mut failed = false;
    for i in 0..5000 {
        if db.put(&common::key(i), &common::value(i, 0)).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "writes kept succeeding without a directory");
    assert!(matches!(
        db.put(b"k", b"v"),
        Err(lightning_db::Error::Fatal(_))
    ));
    std::thread::sleep(std::time::Duration::from_millis(400));
    let h = db.health_check().unwrap();
    assert!(!h.is_healthy);
    assert!(
        h.issues.iter().any(|i| i.contains("fatal")),
        "{:?}",
        h.issues
    );
    assert!(
        h.issues.iter().any(|i| i.contains("background threads")),
        "{:?}",
        h.issues
    );
    // Reads of what is in memory still work.
    assert_eq!(db.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
}

/// The README's operations section, as written there.
#[test]
fn readme_operations_example() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("mydb"), LightningDbConfig::default())?;
    let metrics = db.get_metrics();
    println!("Operations/sec: {}", metrics.operations_per_second);
    println!("Cache hit rate: {:.2}%", metrics.cache_hit_rate * 100.0);
    println!("Active transactions: {}", metrics.active_transactions);

    use lightning_db::monitoring::PrometheusExporter;
    let exporter = PrometheusExporter::new(&db).with_bearer_token("s3cret"); // token optional
    exporter.serve("127.0.0.1:0")?; // the README uses port 9090

    let health = db.health_check()?;
    if !health.is_healthy {
        eprintln!("Database unhealthy: {:?}", health.issues);
    }

    let backup = dir.path().join("mydb-backup"); // the README writes "./mydb-backup"
    db.checkpoint(&backup)?;
    let report = lightning_db::check_files(db.path(), 100, |_| {})?;
    assert_eq!(report.tables_checked, 0);
    assert!(Database::open(&backup, LightningDbConfig::default()).is_ok());
    Ok(())
}

/// The SQL runtime has `sql_threads` workers, every analytics thread runs at
/// `analytics_nice` (so commits preempt scans), and the metrics show the split.
#[test]
fn analytics_threads_run_at_the_configured_priority_and_metrics_show_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LightningDbConfig {
        sql_threads: 3,
        analytics_nice: 7,
        ..common::small_config()
    };
    let db = Database::create(dir.path().join("db"), cfg.clone()).unwrap();
    db.sql("CREATE TABLE t (id BIGINT NOT NULL, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    db.sql("INSERT INTO t VALUES (1, 2), (2, 3)").unwrap();
    db.sql("SELECT sum(v) FROM t").unwrap();
    let m = db.get_metrics();
    assert_eq!((m.sql_threads, m.analytics_nice), (3, 7));
    assert!(m.process_cpu_seconds >= m.sql_cpu_seconds + m.columnar_cpu_seconds - 0.05);
    assert!(m.sql_planned_statements >= 2);
    #[cfg(target_os = "linux")]
    {
        // Other tests' databases in this process run their analytics threads at the
        // default nice 10; this one's (nice 7, used by no other test) are counted.
        let mut analytics = 0;
        for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let comm = comm.trim();
            if comm != "ldb-sql" && comm != "ldb-columnar" {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue; // the thread ended meanwhile
            };
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            let nice: i32 = fields[19 - 3].parse().unwrap();
            assert!(nice >= 7, "{comm} runs at nice {nice}");
            if nice == 7 {
                analytics += 1;
            }
        }
        assert!(analytics >= 4, "{analytics} analytics threads");
    }
    drop(db);
    for bad in [
        LightningDbConfig {
            analytics_nice: 20,
            ..cfg.clone()
        },
        LightningDbConfig {
            sql_threads: 5000,
            ..cfg.clone()
        },
    ] {
        assert!(matches!(
            Database::create(dir.path().join("other"), bad),
            Err(lightning_db::Error::InvalidConfig(_))
        ));
    }
}
