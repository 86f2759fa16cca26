//! Rows decoded from the row store into batch-sized chunks, cut into segments.

use super::*;

/// Rows decoded from the row store, in key order, into batch-sized chunks that are cut
/// into segments of at most `segment_rows`. Chunks become the segment's record batches
/// as they are: no decoded column is ever concatenated or regrown.
pub(super) struct SegmentRows<'a> {
    pub(super) store: &'a ColumnStore,
    pub(super) files: &'a mut RoundFiles,
    pub(super) tdir: &'a Path,
    pub(super) def: &'a TableDef,
    pub(super) dec: RowDecoder,
    pub(super) chunks: Vec<RecordBatch>,
    pub(super) chunk_rows: usize,
    /// Segments written so far.
    pub(super) written: Vec<LoadedSegment>,
}

impl<'a> SegmentRows<'a> {
    pub(super) fn new(
        store: &'a ColumnStore,
        files: &'a mut RoundFiles,
        tdir: &'a Path,
        def: &'a TableDef,
    ) -> Self {
        let cap = store
            .opts
            .batch_rows
            .clamp(1, store.opts.segment_rows.max(1));
        SegmentRows {
            store,
            files,
            tdir,
            def,
            dec: RowDecoder::for_table(def, cap),
            chunks: Vec::new(),
            chunk_rows: 0,
            written: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.dec.push(key, value)?;
        let (batch, segment) = (self.store.opts.batch_rows, self.store.opts.segment_rows);
        if self.dec.len() >= batch || self.chunk_rows + self.dec.len() >= segment {
            let b = self.dec.finish()?;
            self.chunk_rows += b.num_rows();
            self.chunks.push(b);
            if self.chunk_rows >= segment {
                self.write()?;
            }
        }
        Ok(())
    }

    /// Write the pending rows as a segment.
    pub(super) fn write(&mut self) -> Result<()> {
        if !self.dec.is_empty() {
            self.chunks.push(self.dec.finish()?);
        }
        if self.chunks.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.chunks);
        self.chunk_rows = 0;
        let s = self
            .store
            .write_chunks(self.files, self.tdir, self.def, &chunks)?;
        self.written.push(s);
        Ok(())
    }

    /// After feeding every row (`fed`: how that went), write what is pending and return
    /// every segment written. (On failure the round's [`RoundFiles`] removes them.)
    pub(super) fn finish(mut self, fed: Result<()>) -> Result<Vec<LoadedSegment>> {
        fed.and_then(|()| self.write())?;
        Ok(self.written)
    }
}
