//! The main job on an embedded default: create a database in a local directory, exercise
//! the key-value and transaction API, reopen it, and print what happened.
//!
//! `cargo run --release --example basic_usage [-- <dir>]` (default `./mydb`, replaced).

use lightning_db::{Database, LightningDbConfig};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./mydb".to_string());
    if std::path::Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }

    let db = Database::create(&dir, LightningDbConfig::default())?;
    println!("created database at {dir}");

    db.put(b"hello", b"world")?;
    let value = db.get(b"hello")?;
    assert_eq!(value.as_deref(), Some(&b"world"[..]));
    println!(
        "put/get: hello -> {}",
        String::from_utf8_lossy(&value.unwrap())
    );
    db.delete(b"hello")?;
    assert!(db.get(b"hello")?.is_none());
    println!("delete: hello is gone");

    let batch = vec![
        (b"user:1".to_vec(), b"Alice".to_vec()),
        (b"user:2".to_vec(), b"Bob".to_vec()),
        (b"user:3".to_vec(), b"Charlie".to_vec()),
    ];
    db.put_batch(&batch)?;
    let keys = vec![b"user:1".to_vec(), b"user:2".to_vec(), b"user:9".to_vec()];
    let values = db.get_batch(&keys)?;
    println!(
        "put_batch of 3, get_batch: {:?}",
        values
            .iter()
            .map(|v| v.as_deref().map(String::from_utf8_lossy))
            .collect::<Vec<_>>()
    );

    print!("scan [user:, user:~):");
    for r in db.scan(Some(b"user:"), Some(b"user:~"))? {
        let (k, v) = r?;
        print!(
            " {}={}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    println!();
    let rev: Vec<_> = db
        .scan_reverse(None, None)?
        .take(2)
        .map(|r| r.map(|(k, _)| String::from_utf8_lossy(&k).into_owned()))
        .collect::<Result<_, _>>()?;
    println!("scan_reverse, first 2: {rev:?}");

    // A transfer between two accounts, in a transaction.
    db.put(b"acct:alice", b"100")?;
    db.put(b"acct:bob", b"50")?;
    db.transaction(|tx| {
        let a: u64 = String::from_utf8_lossy(&tx.get(b"acct:alice")?.unwrap_or_default())
            .parse()
            .unwrap_or(0);
        let b: u64 = String::from_utf8_lossy(&tx.get(b"acct:bob")?.unwrap_or_default())
            .parse()
            .unwrap_or(0);
        tx.put(b"acct:alice", (a - 30).to_string().as_bytes())?;
        tx.put(b"acct:bob", (b + 30).to_string().as_bytes())?;
        Ok(())
    })?;
    println!(
        "transaction: alice={} bob={}",
        String::from_utf8_lossy(&db.get(b"acct:alice")?.unwrap_or_default()),
        String::from_utf8_lossy(&db.get(b"acct:bob")?.unwrap_or_default())
    );

    // Bulk load, then durable single puts.
    let t = Instant::now();
    for chunk in 0..100u32 {
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
            .map(|i| {
                let n = chunk * 1000 + i;
                (format!("k{n:010}").into_bytes(), vec![b'v'; 100])
            })
            .collect();
        db.put_batch(&batch)?;
    }
    let el = t.elapsed();
    println!(
        "bulk load: 100000 keys in batches of 1000 in {:.2?} ({:.0} keys/s)",
        el,
        100_000.0 / el.as_secs_f64()
    );
    let t = Instant::now();
    for i in 0..200u32 {
        db.put(format!("durable:{i}").as_bytes(), b"x")?;
    }
    let el = t.elapsed();
    println!(
        "durable puts (fsync each): 200 in {:.2?} ({:.0}/s)",
        el,
        200.0 / el.as_secs_f64()
    );
    let n = db.scan_prefix(b"k")?.count();
    println!("scan_prefix(k): {n} keys");

    db.close()?;
    drop(db);
    let db = Database::open(&dir, LightningDbConfig::default())?;
    let n = db.scan_prefix(b"k")?.count();
    assert_eq!(n, 100_000);
    assert_eq!(db.get(b"user:3")?.as_deref(), Some(&b"Charlie"[..]));
    println!("reopened: {n} bulk keys and user:3 are still there");
    db.delete_batch(&keys)?;
    println!("delete_batch: user:1, user:2 removed; done");
    Ok(())
}
