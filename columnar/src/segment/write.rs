//! Writing a segment: zone maps, encodings, buffer compression, the footer metadata.

use super::*;

/// Write `batch` (sorted by primary key, table schema) as segment `id` in `dir`.
pub fn write_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    batch: &RecordBatch,
    compression: SegmentCompression,
) -> Result<SegmentInfo> {
    write_segment_batched(vfs, dir, id, batch, compression, BATCH_ROWS)
}

/// [`write_segment`] with `batch_rows` rows per record batch in the file.
pub fn write_segment_batched(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    batch: &RecordBatch,
    compression: SegmentCompression,
    batch_rows: usize,
) -> Result<SegmentInfo> {
    let n = batch.num_rows();
    let batch_rows = batch_rows.max(1);
    let chunks: Vec<RecordBatch> = (0..n.div_ceil(batch_rows).max(1))
        .map(|i| {
            let off = (i * batch_rows).min(n);
            batch.slice(off, batch_rows.min(n - off))
        })
        .collect();
    write_segment_chunks(vfs, dir, id, &chunks, compression)
}

/// Write `chunks` (together sorted by primary key, all of the table schema) as segment
/// `id` in `dir`, one record batch in the file per chunk.
pub fn write_segment_chunks(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    chunks: &[RecordBatch],
    compression: SegmentCompression,
) -> Result<SegmentInfo> {
    let Some(first) = chunks.first() else {
        return Err(Error::Schema("a segment needs at least one batch".into()));
    };
    let schema = first.schema();
    if let Some(c) = chunks.iter().find(|c| c.schema() != schema) {
        return Err(Error::Schema(format!(
            "segment batches disagree on their schema: {} vs {}",
            c.schema(),
            schema
        )));
    }
    let rows: Vec<usize> = chunks.iter().map(|c| c.num_rows()).collect();
    let n: usize = rows.iter().sum();
    let mut fields = Vec::new();
    // Encoded columns, one entry per batch.
    let mut cols: Vec<Vec<ArrayRef>> = vec![Vec::new(); chunks.len()];
    let mut encodings = Vec::new();
    let mut zones = Vec::new();
    let mut batch_zones: Vec<Vec<ZoneMap>> = vec![Vec::new(); chunks.len()];
    for (j, f) in schema.fields().iter().enumerate() {
        let mut seg_zone = ZoneMap {
            column: f.name().clone(),
            min: serde_json::Value::Null,
            max: serde_json::Value::Null,
            null_count: 0,
        };
        for (i, c) in chunks.iter().enumerate() {
            let z = zone_map(f.name(), c.column(j))?;
            merge_zone(f.data_type(), &mut seg_zone, &z);
            batch_zones[i].push(z);
        }
        // The encoding is chosen once per column, over all batches: a dictionary is
        // shared by every batch (the IPC file format allows one dictionary per column);
        // run-end arrays are encoded per batch.
        let parts = chunks.iter().map(|c| c.column(j).clone()).collect();
        let enc = encode_column(f, parts, &seg_zone)?;
        zones.push(seg_zone);
        for (i, p) in enc.parts.into_iter().enumerate() {
            cols[i].push(p);
        }
        encodings.push(enc.encoding);
        fields.push(enc.field);
    }
    let enc_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut opts = IpcWriteOptions::default().try_with_compression(match compression {
        SegmentCompression::None => None,
        SegmentCompression::Zstd => Some(CompressionType::ZSTD),
        SegmentCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
    })?;
    if compression == SegmentCompression::Zstd {
        opts = opts.try_with_compression_level(Some(ZSTD_LEVEL))?;
    }
    let mut w = FileWriter::try_new_with_options(Vec::new(), &enc_schema, opts)?;
    for (cols, &len) in cols.into_iter().zip(&rows) {
        let b = RecordBatch::try_new_with_options(
            enc_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(len)),
        )?;
        w.write(&b)?;
    }
    w.flush()?;
    let body_len = w.get_ref().len();
    let body_crc = crc32c::crc32c(&w.get_ref()[..body_len]);
    w.write_metadata(META_VERSION, SEGMENT_FORMAT_VERSION.to_string());
    w.write_metadata(META_ROWS, n.to_string());
    w.write_metadata(
        META_BATCH_ROWS,
        serde_json::to_string(&rows).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.write_metadata(
        META_BATCH_ZONES,
        serde_json::to_string(&batch_zones).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.write_metadata(META_BODY_LEN, body_len.to_string());
    w.write_metadata(META_BODY_CRC, body_crc.to_string());
    w.write_metadata(
        META_ZONES,
        serde_json::to_string(&zones).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.write_metadata(
        META_ENCODINGS,
        serde_json::to_string(&encodings).map_err(|e| Error::Schema(e.to_string()))?,
    );
    w.finish()?;
    let bytes = w.into_inner()?;
    let path = segment_path(dir, id);
    lightning_rowstore::vfs::create_new_synced(vfs, &path, &bytes)?;
    Ok(SegmentInfo {
        id,
        rows: n as u64,
        file_len: bytes.len() as u64,
        file_crc32c: crc32c::crc32c(&bytes),
        zone_maps: zones,
        schema_version: 0,
    })
}
