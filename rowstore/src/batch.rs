//! Write batches: the unit of atomicity. One batch = one commit timestamp = one WAL record.

use crate::coding::{self, Decoder};
use crate::error::{Error, Result};
use crate::key::{Ts, ValueKind};
use crate::{MAX_BATCH_BYTES, MAX_KEY_LEN, MAX_VALUE_LEN};

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl BatchOp {
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put(k, _) | BatchOp::Delete(k) => k,
        }
    }
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            BatchOp::Put(_, v) => Some(v),
            BatchOp::Delete(_) => None,
        }
    }
}

/// An ordered set of writes applied atomically. Later writes to the same key win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// The size limits of one write (shared by batches and transactions): checks the key
/// and value and returns the bytes the write counts against [`MAX_BATCH_BYTES`].
pub(crate) fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<usize> {
    check_key(key)?;
    match value {
        Some(v) if v.len() > MAX_VALUE_LEN => Err(Error::ValueTooLarge {
            len: v.len(),
            max: MAX_VALUE_LEN,
        }),
        Some(v) => Ok(key.len() + v.len() + 12),
        None => Ok(key.len() + 6),
    }
}

/// Add `n` bytes to a batch's running total, refusing totals over the limit.
pub(crate) fn charge(total: &mut usize, n: usize) -> Result<()> {
    let t = *total + n;
    if t > MAX_BATCH_BYTES {
        return Err(Error::BatchTooLarge {
            len: t,
            max: MAX_BATCH_BYTES,
        });
    }
    *total = t;
    Ok(())
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a put; refuses keys and values over the limits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        charge(&mut self.bytes, check_write(key, Some(value))?)?;
        self.ops.push(BatchOp::Put(key.to_vec(), value.to_vec()));
        Ok(())
    }

    /// [`WriteBatch::put`] of a key and value the caller already owns: moved in, not
    /// copied.
    pub fn put_owned(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        charge(&mut self.bytes, check_write(&key, Some(&value))?)?;
        self.ops.push(BatchOp::Put(key, value));
        Ok(())
    }

    /// Add a delete; refuses keys over the limit.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        charge(&mut self.bytes, check_write(key, None)?)?;
        self.ops.push(BatchOp::Delete(key.to_vec()));
        Ok(())
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate payload bytes (keys + values + framing).
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    /// Encode as a WAL record payload committed at `ts`.
    pub(crate) fn encode(&self, ts: Ts, out: &mut Vec<u8>) {
        coding::put_u8(out, RECORD_BATCH);
        coding::put_u64(out, ts);
        coding::put_u32(out, self.ops.len() as u32);
        for op in &self.ops {
            match op {
                BatchOp::Put(k, v) => {
                    coding::put_u8(out, ValueKind::Put as u8);
                    coding::put_bytes(out, k);
                    coding::put_bytes(out, v);
                }
                BatchOp::Delete(k) => {
                    coding::put_u8(out, ValueKind::Delete as u8);
                    coding::put_bytes(out, k);
                }
            }
        }
    }

    /// Decode a WAL record payload into (commit ts, batch).
    pub fn decode(payload: &[u8]) -> std::result::Result<(Ts, WriteBatch), &'static str> {
        let mut d = Decoder::new(payload);
        let tag = d.u8().map_err(|e| e.0)?;
        if tag != RECORD_BATCH {
            return Err("unknown WAL record type");
        }
        let ts = d.u64().map_err(|e| e.0)?;
        let n = d.u32().map_err(|e| e.0)? as usize;
        let mut b = WriteBatch::new();
        b.ops.reserve(n.min(payload.len()));
        for _ in 0..n {
            let kind = ValueKind::from_u8(d.u8().map_err(|e| e.0)?).ok_or("bad value kind")?;
            let k = d.len_bytes().map_err(|e| e.0)?;
            match kind {
                ValueKind::Put => {
                    let v = d.len_bytes().map_err(|e| e.0)?;
                    b.put(k, v).map_err(|_| "entry over size limits")?;
                }
                ValueKind::Delete => b.delete(k).map_err(|_| "entry over size limits")?,
            }
        }
        if !d.is_empty() {
            return Err("trailing bytes in WAL record");
        }
        Ok((ts, b))
    }
}

const RECORD_BATCH: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").unwrap();
        b.delete(b"b").unwrap();
        b.put(b"", b"").unwrap();
        let mut out = Vec::new();
        b.encode(42, &mut out);
        let (ts, d) = WriteBatch::decode(&out).unwrap();
        assert_eq!(ts, 42);
        assert_eq!(d, b);
        assert!(WriteBatch::decode(&out[..out.len() - 1]).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let mut b = WriteBatch::new();
        assert!(matches!(
            b.put(&vec![0; MAX_KEY_LEN + 1], b""),
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            b.delete(&vec![0; MAX_KEY_LEN + 1]),
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(b.is_empty());
    }
}
