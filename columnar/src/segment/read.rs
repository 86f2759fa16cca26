//! Reading a segment: mapped (or read) and verified once, batches decoded lazily and
//! cast back to the table's types.

use super::*;
use crate::table::{Source, TableDef};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An open, verified, memory-mapped segment.
pub struct Segment {
    path: PathBuf,
    info: SegmentInfo,
    buffer: Buffer,
    table_schema: SchemaRef,
    file_schema: SchemaRef,
    /// Per table column: the file column holding it, or its fill (a column added to the
    /// table after the segment was written).
    sources: Vec<Source>,
    version: arrow::ipc::MetadataVersion,
    dict_blocks: Vec<arrow::ipc::Block>,
    batch_blocks: Vec<arrow::ipc::Block>,
    /// First row of each batch, plus the row count at the end.
    batch_starts: Vec<usize>,
    /// Per batch, per table column.
    batch_zones: Vec<Vec<ZoneMap>>,
    /// The whole segment's, per table column.
    zones: Vec<ZoneMap>,
    /// Per batch, per file column, as the file has them.
    file_batch_zones: Vec<Vec<ZoneMap>>,
    /// Decoded columns kept in memory, per batch and stored column (see [`DecodeCache`]).
    decoded: Vec<Vec<OnceLock<ArrayRef>>>,
    cache: Option<Arc<DecodeCache>>,
    /// Bytes this segment holds in `cache`, given back when it is dropped.
    cached_bytes: AtomicUsize,
}

/// A memory budget for decoded segment columns, shared by every segment of a column
/// store.
///
/// Decoding a batch (decompressing its buffers, validating them) is most of what a small
/// query over a compressed segment costs, and segments never change: a scan keeps each
/// column it decodes, in the form stored (dictionaries stay dictionaries), while the
/// budget allows, and later scans reuse it. Nothing is evicted: the decoded columns of a
/// segment go when the segment does (a compaction round replaced it), which frees the
/// budget for the segments that replaced it. Columns that do not fit are decoded per
/// scan, as without a cache.
#[derive(Debug)]
pub struct DecodeCache {
    limit: usize,
    used: AtomicUsize,
}

impl DecodeCache {
    /// A budget of `limit` bytes (0: keep nothing).
    pub fn new(limit: usize) -> Arc<DecodeCache> {
        Arc::new(DecodeCache {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes of decoded columns held.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .is_ok()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            c.used
                .fetch_sub(*self.cached_bytes.get_mut(), Ordering::Relaxed);
        }
    }
}

/// Bytes an array's buffers span (a slice counts its length, not its allocation's).
fn array_bytes(d: &ArrayData) -> usize {
    d.buffers().iter().map(|b| b.len()).sum::<usize>()
        + d.nulls().map_or(0, |n| n.buffer().len())
        + d.child_data().iter().map(array_bytes).sum::<usize>()
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

impl Segment {
    /// Map and verify a segment whose columns are `table_schema`'s.
    pub fn open(
        vfs: &dyn Vfs,
        dir: &Path,
        info: &SegmentInfo,
        table_schema: SchemaRef,
    ) -> Result<Segment> {
        let n = table_schema.fields().len();
        Self::open_with(
            vfs,
            dir,
            info,
            table_schema,
            n,
            (0..n).map(Source::Column).collect(),
        )
    }

    /// Map and verify a segment of table `def`, of whatever schema version it was
    /// written in: it reads as `def`'s columns.
    pub fn open_for(
        vfs: &dyn Vfs,
        dir: &Path,
        info: &SegmentInfo,
        def: &TableDef,
    ) -> Result<Segment> {
        let width = def
            .version_columns(info.schema_version)
            .ok_or_else(|| def.newer(info.schema_version))?
            .len();
        let sources = def.sources(info.schema_version)?;
        Self::open_with(vfs, dir, info, def.schema.clone(), width, sources)
    }

    /// This segment read as `def`'s columns (after `ALTER TABLE` changed them): the
    /// file stays mapped, the decoded columns kept are not carried over.
    pub fn remap(&self, def: &TableDef) -> Result<Segment> {
        let sources = def.sources(self.info.schema_version)?;
        let (batch_zones, zones) = map_zones(
            &self.file_batch_zones,
            &self.batch_starts,
            &self.info,
            &def.schema,
            &sources,
        )?;
        Ok(Segment {
            path: self.path.clone(),
            info: self.info.clone(),
            buffer: self.buffer.clone(),
            table_schema: def.schema.clone(),
            file_schema: self.file_schema.clone(),
            sources,
            version: self.version,
            dict_blocks: self.dict_blocks.clone(),
            batch_blocks: self.batch_blocks.clone(),
            batch_starts: self.batch_starts.clone(),
            batch_zones,
            zones,
            file_batch_zones: self.file_batch_zones.clone(),
            decoded: self
                .decoded
                .iter()
                .map(|b| b.iter().map(|_| OnceLock::new()).collect())
                .collect(),
            cache: self.cache.clone(),
            cached_bytes: AtomicUsize::new(0),
        })
    }

    fn open_with(
        vfs: &dyn Vfs,
        dir: &Path,
        info: &SegmentInfo,
        table_schema: SchemaRef,
        width: usize,
        sources: Vec<Source>,
    ) -> Result<Segment> {
        let path = segment_path(dir, info.id);
        let file = vfs
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .len()
            .map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
        if len != info.file_len || len < 10 {
            return Err(Error::corruption(
                &path,
                0,
                format!("segment is {len} bytes, expected {}", info.file_len),
            ));
        }
        // Segment files are immutable once published: nothing writes to or truncates
        // them while mapped, and they are only unlinked, which leaves a mapping valid.
        // A `Vfs` that cannot map (an encrypting one) gives the bytes read into memory.
        let map = file
            .map()
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        let buffer = match map {
            Some(map) => {
                let ptr = NonNull::new(map.as_ptr() as *mut u8).expect("mmap pointer is not null");
                let n = map.len();
                // SAFETY: `ptr` points to `n` readable bytes owned by `map`, which the
                // buffer keeps alive (as its owner) for as long as any slice of it exists.
                unsafe { Buffer::from_custom_allocation(ptr, n, Arc::new(map)) }
            }
            None => {
                // An aligned allocation, as Arrow's decoders expect of IPC bodies.
                let mut b = arrow::buffer::MutableBuffer::from_len_zeroed(len as usize);
                file.read_at(b.as_slice_mut(), 0)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                b.into()
            }
        };
        if buffer.len() as u64 != len {
            return Err(Error::corruption(
                &path,
                0,
                "segment changed size while opened",
            ));
        }
        let crc = crc32c::crc32c(&buffer);
        if crc != info.file_crc32c {
            return Err(Error::corruption(&path, 0, "segment checksum mismatch"));
        }
        let n = buffer.len();
        let bad = |why: String| Error::corruption(&path, 0, why);
        let trailer: [u8; 10] = buffer[n - 10..].try_into().expect("10 bytes");
        let footer_len = read_footer_length(trailer).map_err(|e| bad(e.to_string()))?;
        if footer_len + 10 > n {
            return Err(bad("footer length exceeds file".into()));
        }
        let footer = root_as_footer(&buffer[n - 10 - footer_len..n - 10])
            .map_err(|e| bad(format!("bad footer: {e}")))?;
        let fb_schema = footer
            .schema()
            .ok_or_else(|| bad("footer has no schema".into()))?;
        // Arrow's flatbuffer conversion unwraps optional fields; a damaged
        // footer must be a corruption error, not a panic.
        let file_schema = Arc::new(contain(&path, || {
            arrow::ipc::convert::fb_to_schema(fb_schema)
        })?);
        let meta: std::collections::HashMap<String, String> = footer
            .custom_metadata()
            .map(|kv| {
                kv.iter()
                    .filter_map(|e| Some((e.key()?.to_string(), e.value()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let version: u32 = meta
            .get(META_VERSION)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("missing format version".into()))?;
        if version == 0 || version > SEGMENT_FORMAT_VERSION {
            return Err(bad(format!("unsupported segment format version {version}")));
        }
        let body_len: usize = meta
            .get(META_BODY_LEN)
            .and_then(|v| v.parse().ok())
            .filter(|&l| l <= n)
            .ok_or_else(|| bad("bad body length".into()))?;
        let body_crc: u32 = meta
            .get(META_BODY_CRC)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("missing body checksum".into()))?;
        if crc32c::crc32c(&buffer[..body_len]) != body_crc {
            return Err(bad("segment body checksum mismatch".into()));
        }
        let batch_blocks: Vec<arrow::ipc::Block> = footer
            .recordBatches()
            .ok_or_else(|| bad("no record batches".into()))?
            .iter()
            .copied()
            .collect();
        let (batch_rows, batch_zones): (Vec<usize>, Vec<Vec<ZoneMap>>) = if version == 1 {
            (vec![info.rows as usize], vec![info.zone_maps.clone()])
        } else {
            let rows = meta
                .get(META_BATCH_ROWS)
                .and_then(|v| serde_json::from_str(v).ok())
                .ok_or_else(|| bad("missing batch row counts".into()))?;
            let zones = meta
                .get(META_BATCH_ZONES)
                .and_then(|v| serde_json::from_str(v).ok())
                .ok_or_else(|| bad("missing batch zone maps".into()))?;
            (rows, zones)
        };
        if batch_blocks.is_empty()
            || batch_rows.len() != batch_blocks.len()
            || batch_zones.len() != batch_blocks.len()
            || batch_rows.iter().sum::<usize>() as u64 != info.rows
        {
            return Err(bad(format!(
                "{} record batches do not match the recorded batch rows ({}) and row count ({})",
                batch_blocks.len(),
                batch_rows.len(),
                info.rows
            )));
        }
        let mut batch_starts = vec![0];
        for r in &batch_rows {
            batch_starts.push(batch_starts.last().unwrap() + r);
        }
        let dict_blocks = footer
            .dictionaries()
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        if file_schema.fields().len() != width
            || sources.len() != table_schema.fields().len()
            || sources
                .iter()
                .any(|s| matches!(s, Source::Column(c) if *c >= width))
        {
            return Err(bad("segment columns do not match the table".into()));
        }
        let (mapped_batch_zones, zones) =
            map_zones(&batch_zones, &batch_starts, info, &table_schema, &sources)?;
        let decoded = (0..batch_blocks.len())
            .map(|_| {
                (0..file_schema.fields().len())
                    .map(|_| OnceLock::new())
                    .collect()
            })
            .collect();
        Ok(Segment {
            decoded,
            cache: None,
            cached_bytes: AtomicUsize::new(0),
            version: footer.version(),
            path,
            info: info.clone(),
            buffer,
            table_schema,
            file_schema,
            sources,
            dict_blocks,
            batch_blocks,
            batch_starts,
            batch_zones: mapped_batch_zones,
            zones,
            file_batch_zones: batch_zones,
        })
    }

    /// Keep decoded columns in memory within `cache`'s budget.
    pub fn with_cache(mut self, cache: Arc<DecodeCache>) -> Segment {
        self.cache = Some(cache);
        self
    }

    /// Column `col` of batch `i` as stored, if it is kept decoded.
    fn cached(&self, i: usize, col: usize) -> Option<ArrayRef> {
        self.decoded[i][col].get().cloned()
    }

    /// Keep column `col` of batch `i`, decoded, if the budget allows.
    fn admit(&self, i: usize, col: usize, a: &ArrayRef) {
        let Some(cache) = &self.cache else { return };
        let slot = &self.decoded[i][col];
        if slot.get().is_some() {
            return;
        }
        let n = array_bytes(&a.to_data());
        if !cache.take(n) {
            return;
        }
        if slot.set(a.clone()).is_ok() {
            self.cached_bytes.fetch_add(n, Ordering::Relaxed);
        } else {
            cache.used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// How table column `column` is stored in the file (a dictionary, run-end encoded,
    /// narrowed or plain; a column added after the segment was written reads as plain),
    /// or `None` past the last column.
    pub fn stored_type(&self, column: usize) -> Option<&DataType> {
        match self.sources.get(column)? {
            Source::Column(c) => self.file_schema.fields().get(*c).map(|f| f.data_type()),
            Source::Fill(_) => Some(self.table_schema.field(column).data_type()),
        }
    }

    /// The table's schema version the segment was written in.
    pub fn schema_version(&self) -> u32 {
        self.info.schema_version
    }

    /// The zone maps of the whole segment, per table column.
    pub fn zone_maps(&self) -> &[ZoneMap] {
        &self.zones
    }

    /// The file columns holding the projected table columns (those it has).
    fn file_projection(&self, proj: &[usize]) -> Vec<usize> {
        proj.iter()
            .filter_map(|&t| match self.sources.get(t) {
                Some(Source::Column(c)) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// The projected table columns of batch `i`, from the decoded file columns
    /// (`stored`, in projection order) and the fills of the columns it lacks.
    fn expand(&self, proj: &[usize], stored: Vec<ArrayRef>, i: usize) -> Result<Vec<ArrayRef>> {
        if stored.len() == proj.len() {
            return Ok(stored);
        }
        let rows = self.batch_range(i).len();
        let mut stored = stored.into_iter();
        proj.iter()
            .map(|&t| match &self.sources[t] {
                Source::Column(_) => Ok(stored.next().expect("one per file column")),
                Source::Fill(Some(f)) => f.repeat(rows),
                Source::Fill(None) => {
                    Ok(new_null_array(self.table_schema.field(t).data_type(), rows))
                }
            })
            .collect()
    }

    fn file_col(&self, t: usize) -> Option<usize> {
        match self.sources.get(t)? {
            Source::Column(c) => Some(*c),
            Source::Fill(_) => None,
        }
    }

    pub fn info(&self) -> &SegmentInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_rows(&self) -> usize {
        self.info.rows as usize
    }

    fn block_buf(&self, b: &arrow::ipc::Block) -> Result<Buffer> {
        let start = b.offset() as usize;
        let len = b.metaDataLength() as usize + b.bodyLength() as usize;
        if start.checked_add(len).is_none_or(|e| e > self.buffer.len()) {
            return Err(Error::corruption(
                &self.path,
                start as u64,
                "block outside the file",
            ));
        }
        Ok(self.buffer.slice_with_length(start, len))
    }

    /// Record batches in the file.
    pub fn num_batches(&self) -> usize {
        self.batch_blocks.len()
    }

    /// Rows `[start, end)` of batch `i` within the segment.
    pub fn batch_range(&self, i: usize) -> std::ops::Range<usize> {
        self.batch_starts[i]..self.batch_starts[i + 1]
    }

    /// Zone maps of batch `i` (the segment's own for a format-1 file).
    pub fn batch_zone_maps(&self, i: usize) -> &[ZoneMap] {
        &self.batch_zones[i]
    }

    fn projection(&self, projection: Option<&[usize]>) -> Result<Vec<usize>> {
        let proj = projection
            .map(<[usize]>::to_vec)
            .unwrap_or_else(|| (0..self.table_schema.fields().len()).collect());
        if let Some(&t) = proj.iter().find(|&&t| t >= self.sources.len()) {
            return Err(Error::Schema(format!(
                "column {t} of a table with {} columns",
                self.sources.len()
            )));
        }
        Ok(proj)
    }

    fn wrap(&self, e: arrow::error::ArrowError) -> Error {
        Error::corruption(&self.path, 0, e.to_string())
    }

    /// A decoder of the projected columns with the file's dictionaries loaded.
    fn decoder(&self, proj: &[usize]) -> Result<FileDecoder> {
        let mut dec = FileDecoder::new(self.file_schema.clone(), self.version)
            .with_projection(self.file_projection(proj));
        for b in &self.dict_blocks {
            let buf = self.block_buf(b)?;
            contain(&self.path, || dec.read_dictionary(b, &buf))?.map_err(|e| self.wrap(e))?;
        }
        Ok(dec)
    }

    /// Decode batch `i` with `dec` into the table's own types (`out_schema`).
    fn decode(
        &self,
        dec: &FileDecoder,
        proj: &[usize],
        i: usize,
        out_schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let cols = self.decode_stored(dec, proj, i)?;
        let rows = self.batch_range(i).len();
        let cols = cols
            .iter()
            .zip(out_schema.fields())
            .map(|(c, f)| to_type(c, f.data_type()).map_err(|e| self.wrap(e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            out_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// Decode batch `i` with `dec` as stored (dictionaries and run ends kept).
    /// Decode the projected table columns of batch `i` as stored (columns the segment
    /// lacks are their fills).
    fn decode_stored(&self, dec: &FileDecoder, proj: &[usize], i: usize) -> Result<Vec<ArrayRef>> {
        if proj.iter().all(|&t| self.file_col(t).is_none()) {
            return self.expand(proj, Vec::new(), i);
        }
        let batch = self.decode_file(dec, i)?;
        self.expand(proj, batch.columns().to_vec(), i)
    }

    fn decode_file(&self, dec: &FileDecoder, i: usize) -> Result<RecordBatch> {
        let block = &self.batch_blocks[i];
        let buf = self.block_buf(block)?;
        let batch = contain(&self.path, || dec.read_record_batch(block, &buf))?
            .map_err(|e| self.wrap(e))?
            .ok_or_else(|| Error::corruption(&self.path, 0, "empty record batch block"))?;
        let rows = self.batch_range(i).len();
        if batch.num_rows() != rows {
            return Err(Error::corruption(
                &self.path,
                block.offset() as u64,
                format!("batch {i} has {} rows, expected {rows}", batch.num_rows()),
            ));
        }
        Ok(batch)
    }

    /// A reader that decodes the projected columns (indexes into the table schema;
    /// `None` = all) one batch at a time.
    pub fn reader(self: &Arc<Self>, projection: Option<&[usize]>) -> Result<SegmentReader> {
        let proj = self.projection(projection)?;
        let out_schema = Arc::new(self.table_schema.project(&proj)?);
        self.reader_as(projection, out_schema)
    }

    /// [`Segment::reader`] that decodes into `schema` instead of the table's types: one
    /// field per projected column, of a type the stored column casts to (e.g. `Utf8View`
    /// for a string column, which a dictionary becomes without copying its strings).
    pub fn reader_as(
        self: &Arc<Self>,
        projection: Option<&[usize]>,
        schema: SchemaRef,
    ) -> Result<SegmentReader> {
        let proj = self.projection(projection)?;
        if schema.fields().len() != proj.len() {
            return Err(Error::Schema(format!(
                "{} output fields for {} projected columns",
                schema.fields().len(),
                proj.len()
            )));
        }
        Ok(SegmentReader {
            dec: self.decoder(&proj)?,
            proj,
            out_schema: schema,
            seg: self.clone(),
        })
    }

    /// The projected columns (indexes into the table schema; `None` = all) of batch `i`
    /// (rows [`Segment::batch_range`]`(i)`), decoded to the table's own types.
    pub fn read_one(&self, projection: Option<&[usize]>, i: usize) -> Result<RecordBatch> {
        if i >= self.num_batches() {
            return Err(Error::Schema(format!(
                "batch {i} of a segment of {}",
                self.num_batches()
            )));
        }
        let proj = self.projection(projection)?;
        let dec = self.decoder(&proj)?;
        let out_schema = Arc::new(self.table_schema.project(&proj)?);
        self.decode(&dec, &proj, i, &out_schema)
    }

    /// Read the projected columns (indexes into the table schema; `None` = all) of every
    /// row, decoded to the table's own types.
    pub fn read(&self, projection: Option<&[usize]>) -> Result<RecordBatch> {
        let proj = self.projection(projection)?;
        let dec = self.decoder(&proj)?;
        let out_schema = Arc::new(self.table_schema.project(&proj)?);
        let batches = (0..self.num_batches())
            .map(|i| self.decode(&dec, &proj, i, &out_schema))
            .collect::<Result<Vec<_>>>()?;
        if batches.len() == 1 {
            return Ok(batches.into_iter().next().expect("one batch"));
        }
        Ok(arrow::compute::concat_batches(&out_schema, &batches)?)
    }
}

/// Cast a stored column to the type a reader asked for. A dictionary is unpacked by
/// casting its (few) values and gathering them by key: for a string dictionary read as
/// `Utf8View` that copies one 16-byte view per row instead of rebuilding each view from
/// the string bytes.
pub fn to_type(
    c: &ArrayRef,
    t: &DataType,
) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    if c.data_type() == t {
        return Ok(c.clone());
    }
    if let Some(d) = c.as_any_dictionary_opt()
        && !matches!(t, DataType::Dictionary(_, _))
    {
        let values = arrow::compute::cast(d.values(), t)?;
        return arrow::compute::take(values.as_ref(), d.keys(), None);
    }
    arrow::compute::cast(c, t)
}

/// Decodes one segment's batches on demand (see [`Segment::reader`]).
pub struct SegmentReader {
    seg: Arc<Segment>,
    dec: FileDecoder,
    /// The table columns it reads.
    proj: Vec<usize>,
    out_schema: SchemaRef,
}

impl SegmentReader {
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// Decode batch `i` (rows [`Segment::batch_range`]`(i)`).
    pub fn read_batch(&self, i: usize) -> Result<RecordBatch> {
        self.check(i)?;
        self.seg.decode(&self.dec, &self.proj, i, &self.out_schema)
    }

    /// The projected columns of batch `i` as stored: a dictionary-encoded column stays
    /// a dictionary (so a predicate can be evaluated once per distinct value), a
    /// run-end encoded one stays run-end encoded. [`to_type`] turns each into the
    /// reader's type.
    ///
    /// Served from, and added to, the segment's decoded columns when it has a cache.
    pub fn read_stored(&self, i: usize) -> Result<Vec<ArrayRef>> {
        self.check(i)?;
        let seg = &self.seg;
        if seg.cache.is_some()
            && let Some(cols) = self
                .proj
                .iter()
                .filter_map(|&t| seg.file_col(t))
                .map(|c| seg.cached(i, c))
                .collect::<Option<Vec<_>>>()
        {
            return seg.expand(&self.proj, cols, i);
        }
        let cols = seg.decode_stored(&self.dec, &self.proj, i)?;
        for (a, &t) in cols.iter().zip(&self.proj) {
            if let Some(c) = seg.file_col(t) {
                seg.admit(i, c, a);
            }
        }
        Ok(cols)
    }

    fn check(&self, i: usize) -> Result<()> {
        if i >= self.seg.num_batches() {
            return Err(Error::Schema(format!(
                "batch {i} of a segment with {} batches",
                self.seg.num_batches()
            )));
        }
        Ok(())
    }
}

/// Run Arrow IPC decoding of on-disk bytes, turning a panic inside the
/// decoder (Arrow trusts parts of the flatbuffer it should not) into a
/// corruption error. The checksums make this unreachable for files we wrote;
/// it guards against damage that happens to keep a valid checksum and against
/// files written by something else.
fn contain<T>(path: &std::path::Path, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "decoder panicked".into());
        Error::corruption(path, 0, format!("undecodable Arrow IPC data: {why}"))
    })
}

/// Zone maps per batch and for the whole segment, per table column, from the file's
/// (per file column): a column added after the segment was written has its fill's
/// bounds (NULL: every row null).
#[allow(clippy::type_complexity)]
fn map_zones(
    file_batch_zones: &[Vec<ZoneMap>],
    batch_starts: &[usize],
    info: &SegmentInfo,
    table_schema: &SchemaRef,
    sources: &[Source],
) -> Result<(Vec<Vec<ZoneMap>>, Vec<ZoneMap>)> {
    let identity = sources
        .iter()
        .enumerate()
        .all(|(t, s)| matches!(s, Source::Column(c) if *c == t))
        && file_batch_zones.iter().all(|z| z.len() == sources.len());
    if identity {
        return Ok((file_batch_zones.to_vec(), info.zone_maps.clone()));
    }
    let map = |zones: &[ZoneMap], rows: u64| -> Result<Vec<ZoneMap>> {
        sources
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let name = table_schema.field(t).name();
                Ok(match s {
                    Source::Column(c) => {
                        let mut z = zones.get(*c).cloned().ok_or_else(|| {
                            Error::Schema(format!("segment {} lacks zone map {c}", info.id))
                        })?;
                        z.column = name.clone();
                        z
                    }
                    Source::Fill(Some(f)) => zone_map(name, &f.value)?,
                    Source::Fill(None) => ZoneMap {
                        column: name.clone(),
                        min: serde_json::Value::Null,
                        max: serde_json::Value::Null,
                        null_count: rows,
                    },
                })
            })
            .collect()
    };
    let batches = file_batch_zones
        .iter()
        .zip(batch_starts.windows(2))
        .map(|(z, w)| map(z, (w[1] - w[0]) as u64))
        .collect::<Result<Vec<_>>>()?;
    Ok((batches, map(&info.zone_maps, info.rows)?))
}
