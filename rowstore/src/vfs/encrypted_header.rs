//! The header every encrypted file starts with (4 KiB): magic, version, cipher,
//! layout, file id and the file's data key sealed by the database key (FORMAT.md).

use super::encrypted::{BLOCK_DATA, HEADER_LEN, PAGE_DATA, SEAL_OVERHEAD as OVERHEAD};
use crate::crypto::{Aead, AuthFailure, KEY_LEN, KeyState, NONCE_LEN, TAG_LEN};
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::VfsFile;

const MAGIC: &[u8; 8] = b"LDBENCF1";
const VERSION: u16 = 1;

/// How a file's bytes after the header are laid out (header byte 11).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Layout {
    /// Fixed 4 KiB blocks: random access (tables, segments, everything not a log).
    Blocks = 0,
    /// Append-only chunks, one per write: logs (`encrypted_log.rs`).
    Chunks = 1,
    /// One block per 4 KiB page of plaintext (4,124 bytes on disk each): files written
    /// in whole pages at page-aligned offsets (the B+Tree), where writing one page
    /// must not reseal a neighbour's bytes.
    Pages = 2,
}

/// How a file's plaintext maps onto sealed blocks, by its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) layout: Layout,
    /// Plaintext bytes per block.
    pub(super) data: u64,
    /// Bytes of a block on disk (`data` plus nonce and tag).
    pub(super) phys: u64,
}

impl Geometry {
    /// [`Layout::Blocks`] (and a log's, whose chunks are framed apart): 4 KiB on disk
    /// per block, so blocks stay aligned to the device's pages. [`Layout::Pages`]: 4 KiB
    /// of plaintext per block, so a page written at a page-aligned offset is exactly
    /// one block and never reseals a neighbour's.
    pub(super) fn of(layout: Layout) -> Geometry {
        let data = match layout {
            Layout::Pages => PAGE_DATA,
            Layout::Blocks | Layout::Chunks => BLOCK_DATA,
        };
        Geometry {
            layout,
            data,
            phys: data + OVERHEAD,
        }
    }

    /// The logical length of a file of `phys` bytes on disk (a trailing fragment too
    /// short to be a block counts as nothing).
    pub(super) fn logical_len(self, phys: u64) -> u64 {
        if phys <= HEADER_LEN {
            return 0;
        }
        let body = phys - HEADER_LEN;
        let rem = body % self.phys;
        (body / self.phys) * self.data + rem.saturating_sub(OVERHEAD)
    }

    /// Bytes on disk of a file holding `len` bytes.
    pub(super) fn physical_len(self, len: u64) -> u64 {
        let rem = len % self.data;
        HEADER_LEN + (len / self.data) * self.phys + if rem > 0 { rem + OVERHEAD } else { 0 }
    }
}

pub(super) fn header_bytes(
    keys: &KeyState,
    head: &Aead,
    file_id: &[u8; 16],
    data_key: &[u8; KEY_LEN],
    layout: Layout,
) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10] = keys.cipher().id();
    h[11] = layout as u8;
    h[12..28].copy_from_slice(file_id);
    let nonce = keys.next_nonce();
    h[28..40].copy_from_slice(&nonce);
    let mut sealed = *data_key;
    let aad = h[..28].to_vec();
    let tag = head.seal(&nonce, &aad, &mut sealed);
    h[40..72].copy_from_slice(&sealed);
    h[72..88].copy_from_slice(&tag);
    let crc = crc32c::crc32c(&h[..88]);
    h[88..92].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A file header, read and opened.
pub(super) struct Header {
    pub(super) layout: Layout,
    pub(super) file_id: [u8; 16],
    /// Keyed with the file's data key.
    pub(super) aead: Arc<Aead>,
}

/// Read and check the header of the file `inner` (of `phys` bytes), unwrapping its
/// data key with the database key `head`.
pub(super) fn read_header(
    inner: &dyn VfsFile,
    path: &Path,
    head: &Aead,
    phys: u64,
) -> io::Result<Header> {
    let bad = |why: &str| AuthFailure::io(path, 0, why.to_string());
    if phys < HEADER_LEN {
        return Err(bad("encrypted file header is torn or missing"));
    }
    let mut h = vec![0u8; HEADER_LEN as usize];
    inner.read_at(&mut h, 0)?;
    if &h[..8] != MAGIC {
        return Err(bad(
            "not an encrypted file (written without encryption, or damaged)",
        ));
    }
    if crc32c::crc32c(&h[..88]) != u32::from_le_bytes([h[88], h[89], h[90], h[91]]) {
        return Err(bad("encrypted file header checksum mismatch"));
    }
    if h[92..].iter().any(|&b| b != 0) {
        return Err(bad("encrypted file header padding was altered"));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != VERSION {
        return Err(bad(&format!(
            "unsupported encrypted file version {version}"
        )));
    }
    let cipher = crate::crypto::Cipher::from_id(h[10]).ok_or_else(|| bad("unknown cipher"))?;
    let layout = match h[11] {
        0 => Layout::Blocks,
        1 => Layout::Chunks,
        2 => Layout::Pages,
        _ => return Err(bad("unknown encrypted file layout")),
    };
    let mut file_id = [0u8; 16];
    file_id.copy_from_slice(&h[12..28]);
    let nonce: [u8; NONCE_LEN] = h[28..40].try_into().unwrap_or_default();
    let tag: [u8; TAG_LEN] = h[72..88].try_into().unwrap_or_default();
    let mut data_key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    data_key.copy_from_slice(&h[40..72]);
    if !head.open(&nonce, &h[..28], &mut data_key[..], &tag) {
        return Err(bad(
            "the file's data key does not unwrap with the database key",
        ));
    }
    Ok(Header {
        layout,
        file_id,
        aead: Arc::new(Aead::new(cipher, &data_key)),
    })
}
