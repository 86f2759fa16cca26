//! Data generators for Lightning DB.
//!
//! * [`tpch`]: TPC-H at any scale factor, generated in Rust by `tpchgen-arrow` and written
//!   straight into a Lightning database as tables (primary keys as in the TPC-H spec), with
//!   a progress callback; plus the 22 queries (`datasets/tpch/queries/q1.sql` ..).
//! * [`sample`]: the small TPC-H sample checked in under `datasets/sample/tpch-sf0.001/`
//!   (Parquet written by our own export), for examples, tests and notebooks.
//!
//! From the command line: `cargo run --release -p lightning-datasets -- --sf 1 ./tpch.ldb`
//! (see `datasets/README.md`).

pub mod tpch {
    use lightning_db::arrow::array::RecordBatch;
    use lightning_db::arrow::error::ArrowError;
    use lightning_db::{Database, Error, Result};
    use std::sync::mpsc;
    use tpchgen::generators::*;
    use tpchgen_arrow::*;

    /// The eight tables, in load order, with their primary keys.
    pub const TABLES: [(&str, &[&str]); 8] = [
        ("region", &["r_regionkey"]),
        ("nation", &["n_nationkey"]),
        ("part", &["p_partkey"]),
        ("supplier", &["s_suppkey"]),
        ("partsupp", &["ps_partkey", "ps_suppkey"]),
        ("customer", &["c_custkey"]),
        ("orders", &["o_orderkey"]),
        ("lineitem", &["l_orderkey", "l_linenumber"]),
    ];

    const QUERIES: [&str; 22] = [
        include_str!("../tpch/queries/q1.sql"),
        include_str!("../tpch/queries/q2.sql"),
        include_str!("../tpch/queries/q3.sql"),
        include_str!("../tpch/queries/q4.sql"),
        include_str!("../tpch/queries/q5.sql"),
        include_str!("../tpch/queries/q6.sql"),
        include_str!("../tpch/queries/q7.sql"),
        include_str!("../tpch/queries/q8.sql"),
        include_str!("../tpch/queries/q9.sql"),
        include_str!("../tpch/queries/q10.sql"),
        include_str!("../tpch/queries/q11.sql"),
        include_str!("../tpch/queries/q12.sql"),
        include_str!("../tpch/queries/q13.sql"),
        include_str!("../tpch/queries/q14.sql"),
        include_str!("../tpch/queries/q15.sql"),
        include_str!("../tpch/queries/q16.sql"),
        include_str!("../tpch/queries/q17.sql"),
        include_str!("../tpch/queries/q18.sql"),
        include_str!("../tpch/queries/q19.sql"),
        include_str!("../tpch/queries/q20.sql"),
        include_str!("../tpch/queries/q21.sql"),
        include_str!("../tpch/queries/q22.sql"),
    ];

    /// TPC-H query `n` (1..=22), as written in `datasets/tpch/queries/q<n>.sql`.
    pub fn query(n: usize) -> Option<&'static str> {
        n.checked_sub(1).and_then(|i| QUERIES.get(i)).copied()
    }

    /// Rows the generator produces for `table` at scale factor `sf` (lineitem is an
    /// estimate: 1 to 7 lines per order, 4 on average).
    pub fn row_estimate(table: &str, sf: f64) -> u64 {
        let n = match table {
            "region" => 5,
            "nation" => 25,
            "part" => PartGenerator::calculate_row_count(sf, 1, 1),
            "supplier" => SupplierGenerator::calculate_row_count(sf, 1, 1),
            "partsupp" => PartSuppGenerator::calculate_row_count(sf, 1, 1),
            "customer" => CustomerGenerator::calculate_row_count(sf, 1, 1),
            "orders" => OrderGenerator::calculate_row_count(sf, 1, 1),
            "lineitem" => OrderGenerator::calculate_row_count(sf, 1, 1) * 4,
            _ => 0,
        };
        n.max(0) as u64
    }

    /// Generates TPC-H at scale factor `sf` straight into `<dir>/<table>.parquet`
    /// (Snappy, row groups of 1M rows, strings as plain UTF-8), without a database.
    /// Returns the rows per table, in load order.
    pub fn write_parquet(dir: &std::path::Path, sf: f64) -> Result<Vec<(String, u64)>> {
        use parquet::arrow::ArrowWriter;
        use parquet::basic::Compression;
        use parquet::file::properties::WriterProperties;
        let io = |what: &str, p: &std::path::Path| {
            let context = format!("{what} {}", p.display());
            move |source| Error::Io { context, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let mut out = Vec::new();
        for (name, _) in TABLES {
            let path = dir.join(format!("{name}.parquet"));
            let tmp = dir.join(format!("{name}.parquet.tmp"));
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(1 << 20))
                .build();
            let mut writer: Option<ArrowWriter<std::fs::File>> = None;
            let mut rows = 0u64;
            for b in generator(name, sf, 65_536) {
                let b = lightning_db::to_table_types(&b?)?;
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(
                        ArrowWriter::try_new(
                            std::fs::File::create(&tmp).map_err(io("creating", &tmp))?,
                            b.schema(),
                            Some(props.clone()),
                        )
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?,
                    ),
                };
                w.write(&b)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                rows += b.num_rows() as u64;
            }
            if let Some(w) = writer {
                w.close()
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                std::fs::rename(&tmp, &path).map_err(io("renaming to", &path))?;
            }
            out.push((name.to_string(), rows));
        }
        Ok(out)
    }

    /// What a load did.
    #[derive(Debug, Clone, Default)]
    pub struct LoadStats {
        /// Rows written, per table, in load order.
        pub rows: Vec<(String, u64)>,
        /// Time spent generating + inserting (the generator runs on its own thread).
        pub load_secs: f64,
        /// Time spent in the final forced column-store compaction of every table.
        pub compact_secs: f64,
    }

    type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

    fn generator(table: &str, sf: f64, batch_rows: usize) -> Batches {
        match table {
            "region" => Box::new(
                RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(batch_rows),
            ),
            "nation" => Box::new(
                NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(batch_rows),
            ),
            "part" => {
                Box::new(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(batch_rows))
            }
            "supplier" => Box::new(
                SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(batch_rows),
            ),
            "partsupp" => Box::new(
                PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(batch_rows),
            ),
            "customer" => Box::new(
                CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(batch_rows),
            ),
            "orders" => {
                Box::new(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(batch_rows))
            }
            _ => Box::new(
                LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(batch_rows),
            ),
        }
    }

    /// Generates TPC-H at scale factor `sf` and writes it into `db`: creates the eight
    /// tables (an existing table of the same name is an error), inserts the rows in
    /// batches of `batch_rows` (each batch one transaction), then forces one column-store
    /// compaction per table so analytics start from segments. `progress(table, rows)` is
    /// called after every batch with the rows written to that table so far.
    pub fn load(
        db: &Database,
        sf: f64,
        batch_rows: usize,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<LoadStats> {
        if !(sf > 0.0 && sf.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "scale factor must be a positive number, got {sf}"
            )));
        }
        let batch_rows = batch_rows.clamp(1, 1 << 20);
        let mut stats = LoadStats::default();
        let t = std::time::Instant::now();
        for (name, pk) in TABLES {
            // Generation runs one batch ahead on its own thread, so the two cores split
            // generating and inserting.
            let (tx, rx) = mpsc::sync_channel::<std::result::Result<RecordBatch, ArrowError>>(2);
            let producer = std::thread::spawn(move || {
                for b in generator(name, sf, batch_rows) {
                    if tx.send(b).is_err() {
                        break;
                    }
                }
            });
            let mut rows = 0u64;
            let mut created = false;
            let result = (|| {
                for b in rx.iter() {
                    let b = lightning_db::to_table_types(&b?)?;
                    if !created {
                        db.create_table(name, b.schema(), pk)?;
                        created = true;
                    }
                    db.insert(name, &b)?;
                    rows += b.num_rows() as u64;
                    progress(name, rows);
                }
                Ok::<_, Error>(())
            })();
            drop(rx);
            producer
                .join()
                .map_err(|_| Error::Fatal(format!("the {name} generator thread panicked")))?;
            result?;
            stats.rows.push((name.to_string(), rows));
        }
        stats.load_secs = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for (name, _) in TABLES {
            db.compact_columnar(name)?;
        }
        stats.compact_secs = t.elapsed().as_secs_f64();
        Ok(stats)
    }
}

pub mod sample {
    use lightning_db::{Database, Error, Result};
    use std::path::PathBuf;

    /// Scale factor of the checked-in sample.
    pub const SCALE_FACTOR: f64 = 0.001;

    /// `datasets/sample/tpch-sf0.001/`: one `<table>.parquet` per TPC-H table, written
    /// by `Database::export_parquet` from a database that `tpch::load` filled at SF 0.001.
    /// Regenerate with `cargo run -p lightning-datasets -- --sf 0.001 --export-parquet
    /// datasets/sample/tpch-sf0.001 <scratch db>`.
    pub fn tpch_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample/tpch-sf0.001")
    }

    /// Loads the checked-in sample into `db`: one table per Parquet file, created with
    /// the TPC-H primary keys. Returns the rows per table.
    pub fn load_tpch(db: &Database) -> Result<Vec<(String, u64)>> {
        use lightning_db::arrow::record_batch::RecordBatchReader;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut out = Vec::new();
        for (name, pk) in crate::tpch::TABLES {
            let path = tpch_dir().join(format!("{name}.parquet"));
            let file = std::fs::File::open(&path).map_err(|e| Error::Io {
                context: format!("opening {}", path.display()),
                source: e,
            })?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(|e| Error::Arrow(format!("{}: {e}", path.display())))?;
            db.create_table(name, table_schema(reader.schema()), pk)?;
            let mut rows = 0u64;
            for b in reader {
                let b = lightning_db::to_table_types(&b?)?;
                db.insert(name, &b)?;
                rows += b.num_rows() as u64;
            }
            out.push((name.to_string(), rows));
        }
        Ok(out)
    }

    fn table_schema(
        s: lightning_db::arrow::datatypes::SchemaRef,
    ) -> lightning_db::arrow::datatypes::SchemaRef {
        let empty = lightning_db::arrow::array::RecordBatch::new_empty(s.clone());
        lightning_db::to_table_types(&empty)
            .map(|b| b.schema())
            .unwrap_or(s)
    }
}
