//! Byte strings packed end to end in one buffer: one allocation for many keys, read
//! back by position. Used for the keys of a memtable's change log and for the encoded
//! keys of a column segment.

#[derive(Debug, Default, Clone)]
pub struct PackedBytes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl PackedBytes {
    pub fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th byte string.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_by_position() {
        let mut p = PackedBytes::default();
        for s in [&b"a"[..], b"", b"bcd", b"\0\xff"] {
            p.push(s);
        }
        assert_eq!(p.len(), 4);
        assert_eq!(
            (0..4).map(|i| p.get(i)).collect::<Vec<_>>(),
            vec![&b"a"[..], b"", b"bcd", b"\0\xff"]
        );
    }
}
