//! Writing a table: entries in internal-key order become checksummed, compressed data
//! blocks, then the filter, meta and index blocks and the footer.

use super::*;

/// Writes one table. Entries must arrive in internal-key order.
pub struct TableBuilder {
    out: Box<dyn VfsFile>,
    /// Bytes waiting to be appended (written in large pieces).
    buf: Vec<u8>,
    vfs: Arc<dyn Vfs>,
    path: PathBuf,
    id: u64,
    offset: u64,
    block: BlockBuilder,
    block_size: usize,
    codec: Compression,
    bloom_bits: usize,
    index: Vec<(InternalKey, Handle)>,
    hashes: Vec<u64>,
    last: Option<InternalKey>,
    smallest: Option<InternalKey>,
    num_entries: u64,
    num_deletes: u64,
    min_ts: Ts,
    max_ts: Ts,
}

impl TableBuilder {
    pub fn create(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        id: u64,
        block_size: usize,
        codec: Compression,
        bloom_bits: usize,
    ) -> Result<Self> {
        let path = table_path(dir, id);
        let f = vfs::create_new(&**vfs, &path)?;
        Ok(TableBuilder {
            out: f,
            buf: Vec::with_capacity(WRITE_BUF),
            vfs: vfs.clone(),
            path,
            id,
            offset: 0,
            block: BlockBuilder::default(),
            block_size,
            codec,
            bloom_bits,
            index: Vec::new(),
            hashes: Vec::new(),
            last: None,
            smallest: None,
            num_entries: 0,
            num_deletes: 0,
            min_ts: Ts::MAX,
            max_ts: 0,
        })
    }

    pub fn add(&mut self, key: &[u8], ts: Ts, value: Option<&[u8]>) -> Result<()> {
        let new_user_key = match &self.last {
            Some(l) => {
                debug_assert_eq!(
                    cmp_internal(&l.user_key, l.ts, key, ts),
                    Ordering::Less,
                    "table entries out of order"
                );
                l.user_key.as_slice() != key
            }
            None => true,
        };
        if new_user_key {
            self.hashes.push(bloom::key_hash(key));
        }
        if self.smallest.is_none() {
            self.smallest = Some(InternalKey::new(key, ts));
        }
        self.block.add(key, ts, value);
        match &mut self.last {
            Some(l) => {
                l.user_key.clear();
                l.user_key.extend_from_slice(key);
                l.ts = ts;
            }
            None => self.last = Some(InternalKey::new(key, ts)),
        }
        self.num_entries += 1;
        if value.is_none() {
            self.num_deletes += 1;
        }
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        if self.block.estimated_size() >= self.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self, raw: &[u8], codec: Compression) -> Result<Handle> {
        let (used, payload) = compression::compress(codec, raw);
        let mut crc = crc32c::crc32c(&payload);
        crc = crc32c::crc32c_append(crc, &[used as u8]);
        let h = Handle {
            offset: self.offset,
            len: payload.len() as u32,
        };
        self.buf.extend_from_slice(&payload);
        self.buf.push(used as u8);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.offset += (payload.len() + TRAILER_LEN) as u64;
        if self.buf.len() >= WRITE_BUF {
            self.write_out()?;
        }
        Ok(h)
    }

    fn write_out(&mut self) -> Result<()> {
        self.out
            .append(&self.buf)
            .ctx(|| format!("writing {}", self.path.display()))?;
        self.buf.clear();
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let raw = self.block.finish();
        let h = self.write_block(&raw, self.codec)?;
        let last = self.last.clone().expect("non-empty block has a last key");
        self.index.push((last, h));
        Ok(())
    }

    /// Bytes written so far plus the open block.
    pub fn estimated_size(&self) -> u64 {
        self.offset + self.block.estimated_size() as u64
    }

    pub fn num_entries(&self) -> u64 {
        self.num_entries
    }

    /// Finish the file (footer, fsync) and describe it. The caller syncs the directory.
    pub fn finish(mut self) -> Result<TableMeta> {
        self.flush_block()?;
        let filter = bloom::build(&self.hashes, self.bloom_bits);
        let filter_h = self.write_block(&filter, Compression::None)?;
        let smallest = self
            .smallest
            .clone()
            .unwrap_or(InternalKey::new(Vec::new(), 0));
        let largest = self.last.clone().unwrap_or(InternalKey::new(Vec::new(), 0));
        let mut meta_buf = Vec::new();
        coding::put_bytes(&mut meta_buf, &smallest.user_key);
        coding::put_u64(&mut meta_buf, smallest.ts);
        coding::put_bytes(&mut meta_buf, &largest.user_key);
        coding::put_u64(&mut meta_buf, largest.ts);
        coding::put_u64(&mut meta_buf, self.num_entries);
        coding::put_u64(&mut meta_buf, self.num_deletes);
        coding::put_u64(&mut meta_buf, self.min_ts);
        coding::put_u64(&mut meta_buf, self.max_ts);
        let meta_h = self.write_block(&meta_buf, Compression::None)?;
        let mut idx = Vec::new();
        coding::put_u32(&mut idx, self.index.len() as u32);
        for (k, h) in &self.index {
            coding::put_bytes(&mut idx, &k.user_key);
            coding::put_u64(&mut idx, k.ts);
            h.encode(&mut idx);
        }
        let index_h = self.write_block(&idx, self.codec)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        index_h.encode(&mut footer);
        filter_h.encode(&mut footer);
        meta_h.encode(&mut footer);
        coding::put_u32(&mut footer, FORMAT_VERSION);
        coding::put_u64(&mut footer, MAGIC);
        let crc = crc32c::crc32c(&footer);
        coding::put_u32(&mut footer, crc);
        debug_assert_eq!(footer.len(), FOOTER_LEN);
        self.buf.extend_from_slice(&footer);
        self.offset += FOOTER_LEN as u64;
        self.write_out()?;
        self.out
            .sync_data()
            .ctx(|| format!("fsync of {}", self.path.display()))?;
        Ok(TableMeta {
            id: self.id,
            file_size: self.offset,
            smallest,
            largest,
            num_entries: self.num_entries,
            num_deletes: self.num_deletes,
            min_ts: if self.num_entries == 0 {
                0
            } else {
                self.min_ts
            },
            max_ts: self.max_ts,
            global_ts: None,
        })
    }

    /// Give up on this table and delete its file.
    pub fn abandon(self) {
        let (vfs, path) = (self.vfs.clone(), self.path.clone());
        drop(self);
        let _ = vfs.remove(&path);
    }
}
