//! Write batches: the unit of atomicity. One batch = one commit timestamp = one WAL record.

use crate::coding::{self, Decoder};
use crate::error::{Error, Result};
use crate::key::{Ts, ValueKind};
use crate::{MAX_BATCH_BYTES, MAX_KEY_LEN, MAX_VALUE_LEN};

/// One write in a batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
}

impl<'a> BatchOp<'a> {
    pub fn key(&self) -> &'a [u8] {
        match *self {
            BatchOp::Put(k, _) | BatchOp::Delete(k) => k,
        }
    }
    pub fn value(&self) -> Option<&'a [u8]> {
        match *self {
            BatchOp::Put(_, v) => Some(v),
            BatchOp::Delete(_) => None,
        }
    }
}

/// Where one write's bytes lie in [`WriteBatch::data`]: the key at `at`, then the
/// value (puts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    at: usize,
    key_len: u32,
    /// [`DELETE`] for a delete.
    value_len: u32,
}

const DELETE: u32 = u32::MAX;

/// An ordered set of writes applied atomically. Later writes to the same key win.
///
/// Keys and values are packed into one buffer, so a write costs no allocation of its
/// own (a bulk load spent a seventh of its writer's time allocating and freeing two
/// vectors per write).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    data: Vec<u8>,
    spans: Vec<Span>,
    bytes: usize,
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    check_write_len(key.len(), None).map(drop)
}

/// The size limits of one write (shared by batches and transactions): checks the key
/// and value and returns the bytes the write counts against [`MAX_BATCH_BYTES`].
pub(crate) fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<usize> {
    check_write_len(key.len(), value.map(<[u8]>::len))
}

fn check_write_len(key: usize, value: Option<usize>) -> Result<usize> {
    if key > MAX_KEY_LEN {
        return Err(Error::KeyTooLarge {
            len: key,
            max: MAX_KEY_LEN,
        });
    }
    match value {
        Some(v) if v > MAX_VALUE_LEN => Err(Error::ValueTooLarge {
            len: v,
            max: MAX_VALUE_LEN,
        }),
        Some(v) => Ok(key + v + 12),
        None => Ok(key + 6),
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

    /// An empty batch with room for `writes` writes of `bytes` key and value bytes in
    /// all.
    pub fn with_capacity(writes: usize, bytes: usize) -> Self {
        WriteBatch {
            data: Vec::with_capacity(bytes.min(MAX_BATCH_BYTES)),
            spans: Vec::with_capacity(writes.min(MAX_BATCH_BYTES / 6)),
            bytes: 0,
        }
    }

    /// Add a put; refuses keys and values over the limits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_prefixed(&[], key, value)
    }

    /// Add a put of the key `prefix ++ key`, without joining them first (a namespace
    /// prefix, say); refuses keys and values over the limits.
    pub fn put_prefixed(&mut self, prefix: &[u8], key: &[u8], value: &[u8]) -> Result<()> {
        let key_len = prefix.len() + key.len();
        charge(
            &mut self.bytes,
            check_write_len(key_len, Some(value.len()))?,
        )?;
        self.spans.push(Span {
            at: self.data.len(),
            key_len: key_len as u32,
            value_len: value.len() as u32,
        });
        self.data.extend_from_slice(prefix);
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        Ok(())
    }

    /// [`WriteBatch::put`] of a key and value the caller owns.
    pub fn put_owned(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.put(&key, &value)
    }

    /// Add a delete; refuses keys over the limit.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.delete_prefixed(&[], key)
    }

    /// Add a delete of the key `prefix ++ key`; refuses keys over the limit.
    pub fn delete_prefixed(&mut self, prefix: &[u8], key: &[u8]) -> Result<()> {
        let key_len = prefix.len() + key.len();
        charge(&mut self.bytes, check_write_len(key_len, None)?)?;
        self.spans.push(Span {
            at: self.data.len(),
            key_len: key_len as u32,
            value_len: DELETE,
        });
        self.data.extend_from_slice(prefix);
        self.data.extend_from_slice(key);
        Ok(())
    }

    /// The writes, in the order they were added.
    pub fn ops(&self) -> impl ExactSizeIterator<Item = BatchOp<'_>> + Clone + '_ {
        self.spans.iter().map(|s| {
            let key_end = s.at + s.key_len as usize;
            let key = &self.data[s.at..key_end];
            if s.value_len == DELETE {
                BatchOp::Delete(key)
            } else {
                BatchOp::Put(key, &self.data[key_end..key_end + s.value_len as usize])
            }
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Approximate payload bytes (keys + values + framing).
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    /// Encode as a WAL record payload committed at `ts`.
    pub(crate) fn encode(&self, ts: Ts, out: &mut Vec<u8>) {
        coding::put_u8(out, RECORD_BATCH);
        coding::put_u64(out, ts);
        coding::put_u32(out, self.spans.len() as u32);
        out.reserve(self.data.len() + 11 * self.spans.len());
        for op in self.ops() {
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
        let mut b = WriteBatch::with_capacity(n.min(payload.len()), payload.len());
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
    fn writes_are_packed_in_order_and_a_prefix_is_part_of_the_key() {
        let mut b = WriteBatch::with_capacity(4, 64);
        b.put_prefixed(b"ns:", b"a", b"1").unwrap();
        b.delete_prefixed(b"ns:", b"b").unwrap();
        b.put(b"ns:a", b"2").unwrap();
        b.put_owned(b"c".to_vec(), Vec::new()).unwrap();
        let ops: Vec<_> = b.ops().collect();
        assert_eq!(
            ops,
            [
                BatchOp::Put(b"ns:a", b"1"),
                BatchOp::Delete(b"ns:b"),
                BatchOp::Put(b"ns:a", b"2"),
                BatchOp::Put(b"c", b""),
            ]
        );
        assert_eq!(b.ops().len(), 4);
        assert_eq!((ops[1].key(), ops[1].value()), (&b"ns:b"[..], None));
        let mut out = Vec::new();
        b.encode(7, &mut out);
        assert_eq!(WriteBatch::decode(&out).unwrap(), (7, b.clone()));
        // The limit counts the prefix: a key that fits alone does not with it.
        let key = vec![0; MAX_KEY_LEN];
        assert!(matches!(
            b.put_prefixed(b"x", &key, b""),
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            b.delete_prefixed(b"x", &key),
            Err(Error::KeyTooLarge { .. })
        ));
        assert_eq!(b.len(), 4, "a refused write adds nothing");
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
