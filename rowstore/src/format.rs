//! Every magic number and format version of the row store's files, in one place
//! (FORMAT.md describes the layouts).

/// WAL segments (`NNNNNN.log`).
pub const WAL_MAGIC: &[u8; 8] = b"LTNGWAL\x01";
/// The WAL format written: version 2 carries a per-file salt in every record checksum
/// and, in every record, how far the file was known to be durable when it was written.
pub const WAL_VERSION: u32 = 2;

/// Manifests (`MANIFEST-NNNNNN`), record logs in the same framing as the WAL.
pub const MANIFEST_MAGIC: &[u8; 8] = b"LTNGMAN\x01";
pub const MANIFEST_VERSION: u32 = 2;

/// Record-log versions this build reads.
pub const LOG_VERSIONS: std::ops::RangeInclusive<u32> = 1..=2;

/// `CURRENT`: one line naming the live manifest.
pub const CURRENT_TAG: &str = "LTNGCUR1";

/// Sorted tables (`NNNNNN.sst`): the footer's magic (the big-endian bytes of
/// "LTNGSST1", stored little-endian) and version.
pub const TABLE_MAGIC: u64 = 0x4C_54_4E_47_53_53_54_31;
pub const TABLE_VERSION: u32 = 1;
