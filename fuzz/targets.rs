//! The fuzz targets' bodies, shared by the libFuzzer binaries (`fuzz/fuzz_targets/`)
//! and the corpus replay test (`tests/integration/fuzz_corpora.rs`), which runs every committed
//! input on the stable toolchain in CI. Each takes arbitrary bytes and must return
//! (an error is fine) without panicking or allocating by a length read from the input.

#![allow(dead_code)]

use lightning_db::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use lightning_rowstore::vfs::StdVfs;
use std::path::Path;
use std::sync::Arc;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name (the replay test walks this).
pub const TARGETS: &[(&str, Target)] = &[
    ("wal", wal),
    ("manifest_edit", manifest_edit),
    ("write_batch", write_batch),
    ("block", block),
    ("bloom", bloom),
    ("table", table),
    ("segment", segment),
    ("row_codec", row_codec),
    ("sql", sql),
];

/// A WAL (or manifest) file: header, records, torn tails, damage.
pub fn wal(data: &[u8]) {
    for magic in [
        lightning_rowstore::format::WAL_MAGIC,
        lightning_rowstore::format::MANIFEST_MAGIC,
    ] {
        if let Ok(lightning_rowstore::log::Scan::Ok(c)) =
            lightning_rowstore::log::scan_log(Path::new("fuzz.log"), data, magic)
        {
            for (_, r) in &c.records {
                let _ = lightning_rowstore::WriteBatch::decode(r);
                let _ = lightning_rowstore::manifest::VersionEdit::decode(r);
            }
        }
    }
}

/// One manifest edit.
pub fn manifest_edit(data: &[u8]) {
    if let Ok(e) = lightning_rowstore::manifest::VersionEdit::decode(data) {
        let mut st = lightning_rowstore::manifest::ManifestState::new();
        st.apply(&e);
        let _ = lightning_rowstore::manifest::VersionEdit::decode(&e.encode());
    }
}

/// One WAL record payload (a committed batch).
pub fn write_batch(data: &[u8]) {
    let _ = lightning_rowstore::WriteBatch::decode(data);
}

/// One table data block, searched and walked.
pub fn block(data: &[u8]) {
    use lightning_rowstore::sst::block::Block;
    if let Ok(b) = Block::parse(data.to_vec()) {
        for i in 0..b.len().min(1 << 16) {
            if b.entry(i).is_err() {
                break;
            }
        }
        let _ = b.seek(b"m", u64::MAX);
        let _ = b.seek(b"", 0);
    }
}

/// A bloom filter probed with a few keys.
pub fn bloom(data: &[u8]) {
    use lightning_rowstore::sst::bloom;
    for k in [&b"a"[..], b"key", data] {
        let _ = bloom::may_contain(data, bloom::key_hash(k));
    }
}

fn scratch(name: &str, data: &[u8]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let d = tempfile::tempdir().ok()?;
    let p = d.path().join(name);
    std::fs::write(&p, data).ok()?;
    Some((d, p))
}

/// A whole table file: footer, index, filter, meta, then every block by iteration.
pub fn table(data: &[u8]) {
    use lightning_rowstore::sst::Table;
    let Some((d, _)) = scratch("000007.sst", data) else {
        return;
    };
    let vfs: Arc<dyn lightning_rowstore::vfs::Vfs> = Arc::new(StdVfs);
    if let Ok(t) = Table::open(&vfs, d.path(), 7, None, None) {
        let _ = t.verify();
        let _ = t.get(b"k", u64::MAX);
    }
}

fn segment_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", DataType::Decimal128(12, 2), true),
        Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("b", DataType::Boolean, true),
    ]))
}

/// A column segment: the checksum recorded for it matches (so the parser, not the
/// checksum, meets the bytes), then every batch is decoded.
pub fn segment(data: &[u8]) {
    use lightning_columnar::segment::{Segment, SegmentInfo};
    let Some((d, _)) = scratch("seg-000001.arrow", data) else {
        return;
    };
    let info = SegmentInfo {
        id: 1,
        rows: u16::from_le_bytes([data.first().copied().unwrap_or(0), 0]) as u64,
        file_len: data.len() as u64,
        file_crc32c: crc32c::crc32c(data),
        zone_maps: Vec::new(),
        schema_version: 0,
    };
    if let Ok(s) = Segment::open(&StdVfs, d.path(), &info, segment_schema()) {
        let s = Arc::new(s);
        let _ = s.read(None);
        for i in 0..s.num_batches().min(64) {
            if let Ok(r) = s.reader(None) {
                let _ = r.read_batch(i);
            }
        }
    }
}

/// A table row: the key and value codecs behind every table.
pub fn row_codec(data: &[u8]) {
    use lightning_columnar::codec::RowDecoder;
    let split = data
        .first()
        .map_or(0, |&b| b as usize)
        .min(data.len().saturating_sub(1));
    let (key, value) = data
        .get(1..)
        .unwrap_or(&[])
        .split_at(split.min(data.len().saturating_sub(1)));
    for (schema, keys) in [
        (segment_schema(), vec![0usize]),
        (segment_schema(), vec![1, 0]),
    ] {
        let mut dec = RowDecoder::new(schema, &keys, false, 1);
        if dec.push(key, value).is_ok() {
            let _ = dec.finish();
        }
    }
    // A table altered in place: rows of either schema version (format 1 and 2).
    let mut dec = RowDecoder::for_table(altered_table(), 1);
    if dec.push(key, value).is_ok() {
        let _ = dec.finish();
    }
}

/// `t(id BIGINT PRIMARY KEY, a INT, b VARCHAR)` after `DROP COLUMN a, ADD COLUMN c
/// DOUBLE DEFAULT 1.5`, then `ADD COLUMN d VARCHAR`.
fn altered_table() -> &'static lightning_columnar::TableDef {
    use lightning_columnar::TableDef;
    use lightning_db::arrow::array::{ArrayRef, Float64Array};
    static DEF: std::sync::OnceLock<TableDef> = std::sync::OnceLock::new();
    DEF.get_or_init(|| {
        let t = TableDef::new(
            9,
            "t",
            &Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("a", DataType::Int32, true),
                Field::new("b", DataType::Utf8, true),
            ]),
            &["id"],
        )
        .expect("valid");
        let fill: ArrayRef = Arc::new(Float64Array::from(vec![1.5]));
        let t = t
            .altered(
                vec![
                    (t.schema.field(0).clone(), Ok(0)),
                    (t.schema.field(2).clone(), Ok(2)),
                    (Field::new("c", DataType::Float64, true), Err(Some(fill))),
                ],
                &["id"],
                Default::default(),
            )
            .expect("valid");
        let mut cols: Vec<_> = (0..3).map(|i| (t.schema.field(i).clone(), Ok(i))).collect();
        cols.push((Field::new("d", DataType::Utf8, true), Err(None)));
        t.altered(cols, &["id"], Default::default()).expect("valid")
    })
}

/// SQL text into `db.sql` on one database kept for the whole run.
pub fn sql(data: &[u8]) {
    use std::sync::OnceLock;
    static DB: OnceLock<(tempfile::TempDir, lightning_db::Database)> = OnceLock::new();
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let (_, db) = DB.get_or_init(|| {
        let d = tempfile::tempdir().expect("a temporary directory");
        let cfg = lightning_db::LightningDbConfig {
            sql_file_access: lightning_db::SqlFileAccess::None,
            ..Default::default()
        };
        let db = lightning_db::Database::create(d.path().join("db"), cfg).expect("a database");
        db.sql("CREATE TABLE t (id BIGINT, s VARCHAR, x DOUBLE, PRIMARY KEY (id))")
            .expect("a table");
        db.sql("INSERT INTO t VALUES (1, 'a', 1.5), (2, NULL, -2.0), (3, 'ccc', 0.0)")
            .expect("rows");
        (d, db)
    });
    let _ = db.sql(q);
}
