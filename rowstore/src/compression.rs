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

/// Decompress a block; `max_len` bounds the output. No allocation is sized by a
/// length read from the block unless the compressed bytes could really produce it:
/// LZ4 and Snappy cannot expand more than ~255x and ~22x, and a zstd frame header
/// is trusted only up to [`ZSTD_TRUSTED_LEN`]; past that the frame is decoded as a
/// stream that grows with the bytes it actually produces.
pub fn decompress(codec: Compression, data: &[u8], max_len: usize) -> Result<Vec<u8>, String> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => zstd_decompress(data, max_len),
        Compression::Lz4 => {
            let Some(head) = data.first_chunk::<4>() else {
                return Err("lz4 block shorter than its length prefix".into());
            };
            let n = u32::from_le_bytes(*head) as usize;
            let possible = (data.len() - 4).saturating_mul(LZ4_MAX_RATIO) + 64;
            if n > max_len.min(possible) {
                return Err(format!("lz4 block claims {n} bytes from {}", data.len()));
            }
            lz4_flex::block::decompress_size_prepended(data).map_err(|e| e.to_string())
        }
        Compression::Snappy => {
            let n = snap::raw::decompress_len(data).map_err(|e| e.to_string())?;
            let possible = data.len().saturating_mul(SNAPPY_MAX_RATIO) + 64;
            if n > max_len.min(possible) {
                return Err(format!("snappy block claims {n} bytes from {}", data.len()));
            }
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|e| e.to_string())
        }
    }
}

/// A sequence of LZ4 costs at least one byte per 255 bytes of match length.
const LZ4_MAX_RATIO: usize = 256;
/// A Snappy copy element of at most 64 bytes costs at least 3 bytes.
const SNAPPY_MAX_RATIO: usize = 22;
/// zstd frames whose header states at most this many bytes are decoded in one call
/// into a buffer of exactly that size (every block we write is far smaller).
const ZSTD_TRUSTED_LEN: usize = 4 << 20;

fn zstd_decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    match zstd::zstd_safe::get_frame_content_size(data) {
        Err(_) => Err("zstd: bad frame header".into()),
        Ok(Some(n)) if n > max_len as u64 => Err(format!("zstd frame claims {n} bytes")),
        Ok(Some(n)) if n as usize <= ZSTD_TRUSTED_LEN => {
            let out = zstd::bulk::decompress(data, n as usize).map_err(|e| e.to_string())?;
            if out.len() as u64 != n {
                return Err(format!("zstd frame claims {n} bytes, holds {}", out.len()));
            }
            Ok(out)
        }
        Ok(_) => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| e.to_string())?
                .take(max_len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            if out.len() > max_len {
                return Err(format!("zstd frame exceeds {max_len} bytes"));
            }
            Ok(out)
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

    #[test]
    fn extreme_ratios_roundtrip_and_impossible_lengths_are_refused() {
        // Zeros compress as far as each codec can: the ratio bounds must admit them,
        // and 8 MiB takes zstd's streaming path (past the trusted header length).
        let zeros = vec![0u8; 8 << 20];
        for c in [Compression::Zstd, Compression::Lz4, Compression::Snappy] {
            let (used, bytes) = compress(c, &zeros);
            assert_eq!(used, c);
            assert_eq!(decompress(c, &bytes, 16 << 20).unwrap(), zeros, "{c:?}");
            assert!(
                decompress(c, &bytes, 1 << 20).is_err(),
                "{c:?} over max_len"
            );
        }
        // A length prefix the bytes cannot produce is refused before allocating.
        let mut lie = (1u32 << 30).to_le_bytes().to_vec();
        lie.extend_from_slice(&[0x10, 0x61, 0, 0, 0, 0]);
        assert!(
            decompress(Compression::Lz4, &lie, 1 << 31)
                .unwrap_err()
                .contains("claims")
        );
    }
}
