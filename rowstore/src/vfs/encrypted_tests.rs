//! Tests of the encrypted block layout.

use super::*;
use crate::crypto::{Cipher, EncryptionConfig, KeyProvider};
use crate::vfs::StdVfs;

fn vfs(dir: &Path, cipher: Cipher) -> EncryptedVfs {
    let inner: Arc<dyn Vfs> = Arc::new(StdVfs);
    let keys = Arc::new(KeyState::new(
        inner.clone(),
        dir,
        &EncryptionConfig::new(cipher, KeyProvider::raw([9; 32])),
    ));
    EncryptedVfs::new(inner, keys)
}

/// An AES-GCM encrypted file `name` in `dir` holding `data`, written and closed.
fn written(dir: &Path, name: &str, data: &[u8]) -> (EncryptedVfs, PathBuf) {
    let v = vfs(dir, Cipher::Aes256Gcm);
    let p = dir.join(name);
    let f = v.create(&p).unwrap();
    f.append(data).unwrap();
    drop(f);
    (v, p)
}

#[test]
fn appends_writes_and_truncation_read_back() {
    for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        let d = tempfile::tempdir().unwrap();
        let v = vfs(d.path(), cipher);
        let p = d.path().join("f");
        let f = v.create(&p).unwrap();
        let mut model = Vec::new();
        for i in 0..300u32 {
            let chunk = vec![(i % 251) as u8; (i as usize * 37) % 700 + 1];
            f.append(&chunk).unwrap();
            model.extend_from_slice(&chunk);
        }
        // A write larger than the scratch buffer, from a partial block on.
        let big: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        f.append(&big).unwrap();
        model.extend_from_slice(&big);
        let mut back = vec![0u8; big.len()];
        f.read_at(&mut back, (model.len() - big.len()) as u64)
            .unwrap();
        assert_eq!(back, big);
        f.write_at(b"overwritten", 5000).unwrap();
        model[5000..5011].copy_from_slice(b"overwritten");
        f.set_len(9000 + 600_000).unwrap();
        model.truncate(9000 + 600_000);
        f.write_at(b"past", 612_000).unwrap();
        model.resize(612_000, 0);
        model.extend_from_slice(b"past");
        f.sync_data().unwrap();
        drop(f);
        let g = v.open(&p).unwrap();
        assert_eq!(g.len().unwrap(), model.len() as u64);
        let mut all = vec![0u8; model.len()];
        g.read_at(&mut all, 0).unwrap();
        assert_eq!(all, model);
        let mut mid = vec![0u8; 5000];
        g.read_at(&mut mid, 4000).unwrap();
        assert_eq!(mid, &model[4000..9000]);
        // Sequential reads (the last block read is reused), forwards and back.
        for step in [4096usize, 1000, 7] {
            let mut got = Vec::new();
            let mut at = 0;
            while at < model.len() {
                let mut b = vec![0u8; step.min(model.len() - at)];
                g.read_at(&mut b, at as u64).unwrap();
                got.extend_from_slice(&b);
                at += b.len();
            }
            assert_eq!(got, model, "step {step}");
        }
        for at in (0..model.len() - 100).rev().step_by(997) {
            let mut b = vec![0u8; 100];
            g.read_at(&mut b, at as u64).unwrap();
            assert_eq!(b, &model[at..at + 100]);
        }
        let raw = std::fs::read(&p).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"overwritten"));
    }
}

#[test]
fn a_flipped_byte_fails_authentication_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let (v, p) = written(d.path(), "f", &[1u8; 10_000]);
    let raw = std::fs::read(&p).unwrap();
    for at in [0usize, 50, 4096, 4100, 8000, raw.len() - 1] {
        let mut b = raw.clone();
        b[at] ^= 0x20;
        std::fs::write(&p, &b).unwrap();
        let r = v.open(&p).and_then(|g| {
            let mut buf = vec![0u8; 10_000];
            g.read_at(&mut buf, 0)
        });
        let e = r.unwrap_err();
        let a = AuthFailure::find(&e).unwrap_or_else(|| panic!("byte {at}: {e}"));
        assert_eq!(a.path, p);
    }
}

#[test]
fn a_torn_last_block_ends_a_log() {
    let d = tempfile::tempdir().unwrap();
    let (v, p) = written(d.path(), "log", &[3u8; 5000]);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&p, &b).unwrap();
    assert_eq!(v.open_log(&p).unwrap().len().unwrap(), BLOCK_DATA);
    let w = v.open_rw(&p).unwrap();
    assert_eq!(w.len().unwrap(), BLOCK_DATA);
    w.append(b"more").unwrap();
    drop(w);
    let g = v.open(&p).unwrap();
    let mut buf = vec![0u8; BLOCK_DATA as usize + 4];
    g.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[BLOCK_DATA as usize..], b"more");
}

#[test]
fn lengths_map_both_ways() {
    for len in [
        0,
        1,
        100,
        BLOCK_DATA - 1,
        BLOCK_DATA,
        BLOCK_DATA + 1,
        10 * BLOCK_DATA + 7,
    ] {
        let g = Geometry::of(Layout::Blocks);
        assert_eq!(g.logical_len(g.physical_len(len)), len, "{len}");
    }
}

#[test]
fn mapped_stored_bytes_read_back_and_still_authenticate() {
    let d = tempfile::tempdir().unwrap();
    let v = vfs(d.path(), Cipher::Aes256Gcm);
    let p = d.path().join("t");
    let model: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let f = v.create(&p).unwrap();
    f.append(&model).unwrap();
    f.sync_data().unwrap();
    // A writer's blocks may still change: it never maps.
    assert!(!f.map_stored().unwrap());
    drop(f);
    let g = v.open(&p).unwrap();
    assert!(g.map_stored().unwrap());
    assert_eq!(g.len().unwrap(), model.len() as u64);
    for (off, n) in [
        (0usize, 50_000usize),
        (4000, 5000),
        (49_990, 10),
        (8136, 4068),
    ] {
        let mut b = vec![0u8; n];
        g.read_at(&mut b, off as u64).unwrap();
        assert_eq!(b, &model[off..off + n], "{off}+{n}");
    }
    let mut past = vec![0u8; 11];
    assert!(g.read_at(&mut past, 49_990).is_err());
    drop(g);
    // A damaged stored byte is found through the map too.
    let mut raw = std::fs::read(&p).unwrap();
    raw[HEADER_LEN as usize + BLOCK_PHYS as usize + 100] ^= 1;
    std::fs::write(&p, &raw).unwrap();
    let g = v.open(&p).unwrap();
    assert!(g.map_stored().unwrap());
    let mut b = vec![0u8; 100];
    g.read_at(&mut b, 0).unwrap();
    let e = g.read_at(&mut b, BLOCK_DATA + 10).unwrap_err();
    assert!(AuthFailure::find(&e).is_some(), "{e}");
}

/// A paged file seals each 4 KiB page in a block of its own: writing a page, in any
/// order, leaves every other page's stored bytes as they were, and a page torn by a
/// crash spoils only itself (a writer reopening the file keeps its whole pages).
#[test]
fn paged_files_seal_each_page_apart() {
    const P: usize = PAGE_DATA as usize;
    let phys = (PAGE_DATA + SEAL_OVERHEAD) as usize;
    let d = tempfile::tempdir().unwrap();
    let v = vfs(d.path(), Cipher::ChaCha20Poly1305);
    let p = d.path().join("TREE");
    let f = v.create_paged(&p).unwrap();
    let page = |i: usize, round: u8| vec![(i as u8).wrapping_mul(31) ^ round; P];
    // Out of order, the gap before page 5 filled.
    for i in [0usize, 1, 5, 2, 3, 4, 6] {
        f.write_at(&page(i, 0), (i * P) as u64).unwrap();
    }
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), 7 * P as u64);
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        HEADER_LEN + 7 * phys as u64
    );
    // Rewriting pages 2 and 3 (one write of two pages) touches their blocks only.
    let before = std::fs::read(&p).unwrap();
    let mut two = page(2, 1);
    two.extend_from_slice(&page(3, 1));
    f.write_at(&two, 2 * P as u64).unwrap();
    f.sync_data().unwrap();
    let after = std::fs::read(&p).unwrap();
    let h = HEADER_LEN as usize;
    assert_eq!(before[..h + 2 * phys], after[..h + 2 * phys]);
    assert_eq!(before[h + 4 * phys..], after[h + 4 * phys..]);
    assert_ne!(
        before[h + 2 * phys..h + 4 * phys],
        after[h + 2 * phys..h + 4 * phys]
    );
    drop(f);
    // A torn rewrite of page 4: half its block is new bytes.
    let mut raw = after.clone();
    for b in &mut raw[h + 4 * phys + 100..h + 4 * phys + 2000] {
        *b ^= 0x5a;
    }
    std::fs::write(&p, &raw).unwrap();
    for w in [v.open(&p).unwrap(), v.open_rw(&p).unwrap()] {
        assert_eq!(w.len().unwrap(), 7 * P as u64, "whole pages are kept");
        for (i, want) in [(1, page(1, 0)), (3, page(3, 1)), (5, page(5, 0))] {
            let mut b = vec![0u8; P];
            w.read_at(&mut b, (i * P) as u64).unwrap();
            assert_eq!(b, want, "page {i}");
        }
        let mut b = vec![0u8; P];
        let e = w.read_at(&mut b, 4 * P as u64).unwrap_err();
        assert!(AuthFailure::find(&e).is_some(), "{e}");
    }
    // The writer rewrites the torn page whole; a torn append is cut off.
    let w = v.open_rw(&p).unwrap();
    w.write_at(&page(4, 2), 4 * P as u64).unwrap();
    w.write_at(&page(7, 0), 7 * P as u64).unwrap();
    w.sync_data().unwrap();
    drop(w);
    let raw = std::fs::read(&p).unwrap();
    std::fs::write(&p, &raw[..raw.len() - 1000]).unwrap();
    let w = v.open_rw(&p).unwrap();
    assert_eq!(w.len().unwrap(), 7 * P as u64);
    let mut b = vec![0u8; P];
    w.read_at(&mut b, 4 * P as u64).unwrap();
    assert_eq!(b, page(4, 2));
}
