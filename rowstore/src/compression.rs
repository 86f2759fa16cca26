//! Per-block compression. The codec is recorded per block, so a file may mix codecs and
//! a block that does not shrink is stored raw.

/// Block codecs. The numbers are on disk and match `compression_type` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
    Lz4 = 2,
    Snappy = 3,
}

impl Compression {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Compression::None,
            1 => Compression::Zstd,
            2 => Compression::Lz4,
            3 => Compression::Snappy,
            _ => return None,
        })
    }
}

const ZSTD_LEVEL: i32 = 3;

/// Compress `raw` with `codec`. Returns the codec actually used and the bytes: a block
/// that would not shrink by at least 1/8 is stored uncompressed.
pub fn compress(codec: Compression, raw: &[u8]) -> (Compression, Vec<u8>) {
    let out = match codec {
        Compression::None => None,
        Compression::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL).ok(),
        Compression::Lz4 => Some(lz4_flex::block::compress_prepend_size(raw)),
        Compression::Snappy => snap::raw::Encoder::new().compress_vec(raw).ok(),
    };
    match out {
        Some(c) if c.len() < raw.len() - raw.len() / 8 => (codec, c),
        _ => (Compression::None, raw.to_vec()),
    }
}

/// Decompress a block; `max_len` bounds the output so damaged headers cannot make us
/// allocate without limit.
pub fn decompress(codec: Compression, data: &[u8], max_len: usize) -> Result<Vec<u8>, String> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => zstd::bulk::decompress(data, max_len).map_err(|e| e.to_string()),
        Compression::Lz4 => {
            if data.len() >= 4 {
                let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if n > max_len {
                    return Err(format!("lz4 block claims {n} bytes"));
                }
            }
            lz4_flex::block::decompress_size_prepended(data).map_err(|e| e.to_string())
        }
        Compression::Snappy => {
            let n = snap::raw::decompress_len(data).map_err(|e| e.to_string())?;
            if n > max_len {
                return Err(format!("snappy block claims {n} bytes"));
            }
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_roundtrips() {
        let raw: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for c in [Compression::Zstd, Compression::Lz4, Compression::Snappy] {
            let (used, bytes) = compress(c, &raw);
            assert_eq!(used, c);
            assert!(bytes.len() < raw.len());
            assert_eq!(decompress(used, &bytes, 1 << 20).unwrap(), raw);
        }
    }

    #[test]
    fn incompressible_is_stored_raw_and_garbage_is_an_error() {
        let raw: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let (used, _) = compress(Compression::Lz4, &raw);
        assert_eq!(used, Compression::None);
        for c in [Compression::Zstd, Compression::Lz4, Compression::Snappy] {
            assert!(decompress(c, &[0xff; 40], 1 << 20).is_err());
        }
    }
}
