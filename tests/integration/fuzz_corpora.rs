//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`) through the same
//! target bodies cargo-fuzz runs (`fuzz/targets.rs`), on the stable toolchain: each
//! must return without a panic. New fuzzing happens outside CI (fuzz/README.md).

#[path = "../../fuzz/targets.rs"]
mod targets;

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, f) in targets::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("no corpus for fuzz target {name} in {}", dir.display());
        };
        let mut n = 0;
        for e in entries {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "fuzz target {name} panicked on {}", p.display());
            n += 1;
        }
        assert!(n > 0, "empty corpus for {name}");
        total += n;
    }
    eprintln!("{total} fuzz inputs replayed");
}

/// Seed inputs cut from a database written by today's code (WAL and manifest segments,
/// tables, a segment, records, edits, blocks, filters, rows, SQL) are all handled by
/// the fuzz bodies, so a format change cannot leave the targets fuzzing stale bytes.
/// With `LDB_WRITE_FUZZ_SEEDS=1` the seeds are also written into `fuzz/corpus/` (run by
/// hand when a format changes; fuzzing then grows them).
#[test]
fn seeds_from_a_real_database_are_handled_by_every_target() {
    use lightning_db::arrow::array::*;
    use std::sync::Arc;
    let out = tempfile::tempdir().unwrap();
    let write_repo = std::env::var_os("LDB_WRITE_FUZZ_SEEDS").is_some();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |target: &str, name: &str, data: &[u8]| {
        for root in [Some(out.path()), write_repo.then_some(repo.as_path())]
            .into_iter()
            .flatten()
        {
            let d = root.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), data).unwrap();
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = lightning_db::LightningDbConfig {
        page_size: 512,
        write_buffer_size: 16 * 1024,
        columnar_background: false,
        ..Default::default()
    };
    let db = lightning_db::Database::create(&path, cfg).unwrap();
    for i in 0..300u32 {
        db.put(
            format!("key{i:05}").as_bytes(),
            format!("value-{i}").as_bytes(),
        )
        .unwrap();
    }
    db.delete(b"key00007").unwrap();
    db.flush().unwrap();
    for i in 0..20u32 {
        db.put(format!("wal{i:03}").as_bytes(), b"in the wal")
            .unwrap();
    }
    let schema = Arc::new(lightning_db::arrow::datatypes::Schema::new(vec![
        lightning_db::arrow::datatypes::Field::new(
            "id",
            lightning_db::arrow::datatypes::DataType::Int64,
            false,
        ),
        lightning_db::arrow::datatypes::Field::new(
            "s",
            lightning_db::arrow::datatypes::DataType::Utf8,
            true,
        ),
    ]));
    db.create_table("t", schema.clone(), &["id"]).unwrap();
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..2000)),
            Arc::new(StringArray::from_iter(
                (0..2000).map(|i| (i % 3 != 0).then(|| format!("s{}", i % 17))),
            )),
        ],
    )
    .unwrap();
    db.insert("t", &b).unwrap();
    db.compact_columnar("t").unwrap();
    for f in std::fs::read_dir(&path).unwrap() {
        let p = f.unwrap().path();
        if p.is_dir() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&p).unwrap();
        if name.ends_with(".log") || name.starts_with("MANIFEST-") {
            // Without the preallocated zeros after the last record.
            let magic = if name.ends_with(".log") {
                lightning_rowstore::format::WAL_MAGIC
            } else {
                lightning_rowstore::format::MANIFEST_MAGIC
            };
            let mut data = data.clone();
            if let Ok(lightning_rowstore::log::Scan::Ok(c)) =
                lightning_rowstore::log::scan_log(&p, &data, magic)
            {
                data.truncate(c.valid_len as usize);
            }
            put("wal", &name, &data);
        }
        if name.ends_with(".sst") {
            put("table", &name, &data);
        }
    }
    for s in db.columnar_segment_paths("t").unwrap() {
        put("segment", "seg", &std::fs::read(s).unwrap());
    }
    // Records, edits, blocks and rows cut out of those files.
    for (i, (k, v)) in db
        .engine()
        .iter(Some(&[0x01, 0, 0, 0, 1]), Some(&[0x01, 0, 0, 0, 2]), false)
        .unwrap()
        .take(20)
        .map(|r| r.unwrap())
        .enumerate()
    {
        let key = &k[5..];
        let mut data = vec![key.len() as u8];
        data.extend_from_slice(key);
        data.extend_from_slice(&v);
        put("row_codec", &format!("row{i}"), &data);
    }
    let e = lightning_rowstore::manifest::VersionEdit {
        next_file_id: Some(9),
        log_number: Some(3),
        deleted: vec![(0, 4)],
        foreign: vec![77],
        ..Default::default()
    };
    put("manifest_edit", "edit", &e.encode());
    let mut bb = lightning_rowstore::sst::block::BlockBuilder::default();
    for i in 0..40u64 {
        bb.add(
            format!("k{i:03}").as_bytes(),
            100 - i,
            (i % 5 != 0).then_some(&b"value"[..]),
        );
    }
    put("block", "block", &bb.finish());
    let hashes: Vec<u64> = (0..100)
        .map(|i: u32| lightning_rowstore::sst::bloom::key_hash(&i.to_le_bytes()))
        .collect();
    put(
        "bloom",
        "filter",
        &lightning_rowstore::sst::bloom::build(&hashes, 10),
    );
    // A WAL record payload: read it back out of a WAL segment.
    if let Some(wal) = std::fs::read_dir(out.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let data = std::fs::read(&wal).unwrap();
        if let Ok(lightning_rowstore::log::Scan::Ok(c)) =
            lightning_rowstore::log::scan_log(&wal, &data, lightning_rowstore::format::WAL_MAGIC)
        {
            for (i, (_, r)) in c.records.iter().take(5).enumerate() {
                put("write_batch", &format!("rec{i}"), r);
            }
        }
    }
    for (i, q) in [
        "SELECT * FROM t WHERE id > 1 ORDER BY id DESC LIMIT 2",
        "SELECT s, count(*), sum(x) FROM t GROUP BY s",
        "INSERT INTO t VALUES (10, 'z', 1e10)",
        "UPDATE t SET x = x * 2 WHERE s LIKE 'a%'",
        "DELETE FROM t WHERE id = 2",
        "SELECT CAST(s AS BIGINT) + 1 FROM t",
        "WITH r AS (SELECT id FROM t) SELECT * FROM r JOIN t USING (id)",
        "EXPLAIN SELECT * FROM kv WHERE key > X'00'",
        "CREATE TABLE u (a INT, PRIMARY KEY (a)) AS SELECT 1",
    ]
    .iter()
    .enumerate()
    {
        put("sql", &format!("q{i}"), q.as_bytes());
    }
    for (name, f) in targets::TARGETS {
        let seeds: Vec<_> = std::fs::read_dir(out.path().join(name))
            .unwrap_or_else(|_| panic!("no seeds for fuzz target {name}"))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!seeds.is_empty(), "no seeds for fuzz target {name}");
        for p in seeds {
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(
                r.is_ok(),
                "fuzz target {name} panicked on seed {}",
                p.display()
            );
        }
    }
}
