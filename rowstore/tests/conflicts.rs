//! Conflict checks of long-running transactions stay exact while many other commits go
//! by (the engine trims its record of recent commits as they pile up).

use lightning_rowstore::{
    Engine, EngineOptions, Error, Isolation, OpenMode, Transaction, WriteBatch,
};

fn put(e: &Engine, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(k, v).unwrap();
    e.write(b).unwrap();
}

#[test]
fn an_old_transaction_still_conflicts_after_many_commits() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(
        dir.path().join("db"),
        EngineOptions::default(),
        OpenMode::Create,
    )
    .unwrap();
    put(&e, b"hot", b"0");
    // An old transaction that read "hot", and a young one begun once "hot" changed.
    let mut old = Transaction::begin(&e, Isolation::Serializable).unwrap();
    assert_eq!(old.get(&e, b"hot").unwrap(), Some(b"0".to_vec()));
    // Many commits while another transaction is open (so they are all recorded), with
    // short transactions among them that come and go.
    for i in 0..30_000u32 {
        put(&e, format!("k{i:08}").as_bytes(), b"v");
        if i % 1000 == 0 {
            let mut t = Transaction::begin(&e, Isolation::Snapshot).unwrap();
            t.put(format!("t{i:08}").as_bytes(), b"v").unwrap();
            t.commit(&e).unwrap();
        }
        if i == 20_000 {
            put(&e, b"hot", b"1");
        }
    }
    let mut young = Transaction::begin(&e, Isolation::Snapshot).unwrap();
    young.put(b"hot", b"young").unwrap();
    // More commits after the young one began, none touching "hot".
    for i in 0..10_000u32 {
        put(&e, format!("m{i:08}").as_bytes(), b"v");
    }
    old.put(b"other", b"x").unwrap();
    let err = old.commit(&e).unwrap_err();
    assert!(matches!(err, Error::TransactionConflict(_)), "{err}");
    young.commit(&e).unwrap();
    assert_eq!(e.get(b"hot").unwrap(), Some(b"young".to_vec()));
}
