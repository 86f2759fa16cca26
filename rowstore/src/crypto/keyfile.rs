//! The `ENCRYPTION` file: the database key wrapped by the master key, the passphrase
//! KDF's parameters, and the nonce epoch; and [`KeyState`], which owns them for an open
//! database.
//!
//! Layout (version 1, little-endian; FORMAT.md):
//!
//! ```text
//! 0   magic "LDBKEYS1"         8   version u32 = 1
//! 12  cipher id u8             13  provider kind u8 (1 key, 2 passphrase, 3 key store)
//! 14  reserved u16             16  argon2 m_cost u32, t_cost u32, p_cost u32
//! 28  salt [16]                44  epoch u64
//! 52  wrapped length u32 (N)   56  wrapped database key [N]
//! 56+N  MAC [32]: BLAKE3 keyed by a key derived from the database key, over 0..56+N
//! 88+N  CRC32C u32 of everything before
//! ```
//!
//! For a master key or passphrase the wrapped key is `nonce[12] || AEAD(master,
//! database key, aad = bytes 0..44)[32] || tag[16]`; for a key store it is whatever the
//! store returned. A damaged file fails its CRC (corruption); a wrong key fails the
//! unwrap ([`Error::WrongKey`]); a file whose epoch was edited fails the MAC.

use super::{Aead, Cipher, EncryptionConfig, KEY_LEN, KeyProvider, NONCE_LEN, Source, TAG_LEN};
use crate::error::{Error, Result};
use crate::vfs::{self, Vfs};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Name of the key file in a database directory.
pub const KEY_FILE: &str = "ENCRYPTION";

const MAGIC: &[u8; 8] = b"LDBKEYS1";
const VERSION: u32 = 1;
const KIND_KEY: u8 = 1;
const KIND_PASSPHRASE: u8 = 2;
const KIND_STORE: u8 = 3;
/// Argon2id parameters for new passphrases (OWASP's recommendation: 19 MiB, 2 passes,
/// 1 lane).
const ARGON_M: u32 = 19 * 1024;
const ARGON_T: u32 = 2;
const ARGON_P: u32 = 1;
const MAC_CONTEXT: &str = "lightning-db 2026-12 ENCRYPTION file MAC v1";

/// Whether `dir` holds an encrypted database (has a key file).
pub fn is_encrypted_dir(vfs: &dyn Vfs, dir: &Path) -> Result<bool> {
    vfs::exists(vfs, &dir.join(KEY_FILE))
}

/// The cipher recorded in `dir`'s key file, if it has one.
pub fn read_key_file_cipher(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Cipher>> {
    let path = dir.join(KEY_FILE);
    match vfs::read_file_if_exists(vfs, &path)? {
        None => Ok(None),
        Some(b) => Ok(Some(Fields::decode(&path, &b)?.cipher)),
    }
}

/// The decoded key file.
#[derive(Clone)]
struct Fields {
    cipher: Cipher,
    kind: u8,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: [u8; 16],
    epoch: u64,
    wrapped: Vec<u8>,
    mac: [u8; 32],
}

impl Fields {
    fn prefix(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.push(self.cipher.id());
        b.push(self.kind);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.m_cost.to_le_bytes());
        b.extend_from_slice(&self.t_cost.to_le_bytes());
        b.extend_from_slice(&self.p_cost.to_le_bytes());
        b.extend_from_slice(&self.salt);
        b
    }

    /// Bytes the MAC covers.
    fn authenticated(&self) -> Vec<u8> {
        let mut b = self.prefix();
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(&(self.wrapped.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.wrapped);
        b
    }

    fn mac_of(&self, db_key: &[u8; KEY_LEN]) -> [u8; 32] {
        let k = Zeroizing::new(blake3::derive_key(MAC_CONTEXT, db_key));
        *blake3::keyed_hash(&k, &self.authenticated()).as_bytes()
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = self.authenticated();
        b.extend_from_slice(&self.mac);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(path: &Path, b: &[u8]) -> Result<Fields> {
        let bad = |why: &str| Error::corruption(path, 0, format!("key file: {why}"));
        if b.len() < 56 + 32 + 4 {
            return Err(bad("too short"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
            return Err(bad("checksum mismatch"));
        }
        if &b[..8] != MAGIC {
            return Err(bad("not a Lightning DB key file"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(&format!("unsupported version {version}")));
        }
        let cipher = Cipher::from_id(b[12]).ok_or_else(|| bad("unknown cipher"))?;
        let n = u32_at(52) as usize;
        if body.len() != 56 + n + 32 {
            return Err(bad("bad length"));
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&b[28..44]);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&body[56 + n..]);
        Ok(Fields {
            cipher,
            kind: b[13],
            m_cost: u32_at(16),
            t_cost: u32_at(20),
            p_cost: u32_at(24),
            salt,
            epoch: u64::from_le_bytes(b[44..52].try_into().unwrap_or_default()),
            wrapped: body[56..56 + n].to_vec(),
            mac,
        })
    }
}

/// `key` wrapped for `provider` in the key file's record format (the same bytes an
/// `ENCRYPTION` file holds, with epoch 0): for keys kept outside a database directory,
/// such as the key of an encrypted Parquet export, stored in the file's key metadata.
pub fn wrap_key_record(
    provider: &KeyProvider,
    cipher: Cipher,
    key: &[u8; KEY_LEN],
) -> Result<Vec<u8>> {
    Ok(wrap(provider, cipher, key, 0)?.encode())
}

/// The key in a record made by [`wrap_key_record`], if `provider` unlocks it
/// ([`Error::WrongKey`] if not; [`Error::Corruption`] naming `what` if the record is
/// damaged).
pub fn unwrap_key_record(
    what: &Path,
    provider: &KeyProvider,
    record: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let f = Fields::decode(what, record)?;
    unwrap(what, provider, &f)
}

/// The master key of a provider, for the key file's KDF parameters.
fn master_key(provider: &KeyProvider, f: &Fields) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    match &provider.0 {
        Source::Passphrase(p) => {
            let params = argon2::Params::new(f.m_cost, f.t_cost, f.p_cost, Some(KEY_LEN))
                .map_err(|e| Error::InvalidConfig(format!("argon2 parameters: {e}")))?;
            let a =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut k = Zeroizing::new([0u8; KEY_LEN]);
            a.hash_password_into(p.as_bytes(), &f.salt, &mut k[..])
                .map_err(|e| Error::InvalidConfig(format!("argon2: {e}")))?;
            Ok(k)
        }
        Source::Custom(_) => Err(Error::InvalidConfig("a key store has no master key".into())),
        _ => provider.direct_key().map_err(Error::WrongKey),
    }
}

fn kind_of(provider: &KeyProvider) -> u8 {
    match &provider.0 {
        Source::Passphrase(_) => KIND_PASSPHRASE,
        Source::Custom(_) => KIND_STORE,
        _ => KIND_KEY,
    }
}

/// Wrap `db_key` for `provider` into new key-file fields.
fn wrap(
    provider: &KeyProvider,
    cipher: Cipher,
    db_key: &[u8; KEY_LEN],
    epoch: u64,
) -> Result<Fields> {
    let io = |e: std::io::Error| Error::io("drawing random bytes for the key file", e);
    let mut f = Fields {
        cipher,
        kind: kind_of(provider),
        m_cost: 0,
        t_cost: 0,
        p_cost: 0,
        salt: [0; 16],
        epoch,
        wrapped: Vec::new(),
        mac: [0; 32],
    };
    match &provider.0 {
        Source::Custom(store) => {
            f.wrapped = store
                .wrap(db_key)
                .map_err(|e| Error::WrongKey(format!("the key store refused to wrap: {e}")))?;
        }
        _ => {
            if f.kind == KIND_PASSPHRASE {
                (f.m_cost, f.t_cost, f.p_cost) = (ARGON_M, ARGON_T, ARGON_P);
                super::random(&mut f.salt).map_err(io)?;
            }
            let master = master_key(provider, &f)?;
            let mut nonce = [0u8; NONCE_LEN];
            super::random(&mut nonce).map_err(io)?;
            let mut ct = db_key.to_vec();
            let tag = Aead::new(cipher, &master).seal(&nonce, &f.prefix(), &mut ct);
            f.wrapped = [&nonce[..], &ct, &tag].concat();
        }
    }
    f.mac = f.mac_of(db_key);
    Ok(f)
}

/// Unwrap the database key of `f` with `provider`: [`Error::WrongKey`] if it is not
/// the key (or passphrase, or store) the database was made with.
fn unwrap(path: &Path, provider: &KeyProvider, f: &Fields) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let wrong = || {
        Error::WrongKey(format!(
            "the {} given does not unlock the database ({})",
            provider.kind(),
            path.display()
        ))
    };
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    match (&provider.0, f.kind) {
        (Source::Custom(store), KIND_STORE) => {
            let k = Zeroizing::new(store.unwrap(&f.wrapped).map_err(|e| {
                Error::WrongKey(format!(
                    "the key store could not unwrap the database key of {}: {e}",
                    path.display()
                ))
            })?);
            if k.len() != KEY_LEN {
                return Err(wrong());
            }
            key.copy_from_slice(&k);
        }
        _ if kind_of(provider) != f.kind => {
            return Err(Error::WrongKey(format!(
                "{} is encrypted with a {}, but a {} was given",
                path.display(),
                match f.kind {
                    KIND_STORE => "key store",
                    KIND_PASSPHRASE => "passphrase",
                    _ => "key",
                },
                provider.kind()
            )));
        }
        _ => {
            if f.wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
                return Err(Error::corruption(path, 52, "key file: bad wrapped key"));
            }
            let master = master_key(provider, f)?;
            let nonce: [u8; NONCE_LEN] = f.wrapped[..NONCE_LEN].try_into().unwrap_or_default();
            let tag: [u8; TAG_LEN] = f.wrapped[NONCE_LEN + KEY_LEN..]
                .try_into()
                .unwrap_or_default();
            key.copy_from_slice(&f.wrapped[NONCE_LEN..NONCE_LEN + KEY_LEN]);
            if !Aead::new(f.cipher, &master).open(&nonce, &f.prefix(), &mut key[..], &tag) {
                return Err(wrong());
            }
        }
    }
    use subtle::ConstantTimeEq;
    if !bool::from(f.mac_of(&key).ct_eq(&f.mac)) {
        return Err(Error::corruption(
            path,
            0,
            "key file: authentication code mismatch (the file was altered)",
        ));
    }
    Ok(key)
}

struct Resolved {
    /// Seals and opens the data keys in file headers.
    db_aead: Arc<Aead>,
    db_key: Zeroizing<[u8; KEY_LEN]>,
    fields: Fields,
    /// Whether the key file is on disk.
    persisted: bool,
    /// Whether this handle claimed an epoch (wrote epoch + 1) and may write.
    claimed: bool,
}

impl Resolved {
    fn new(db_key: Zeroizing<[u8; KEY_LEN]>, fields: Fields, persisted: bool) -> Resolved {
        Resolved {
            db_aead: Arc::new(Aead::new(fields.cipher, &db_key)),
            db_key,
            fields,
            persisted,
            claimed: false,
        }
    }
}

struct Inner {
    provider: KeyProvider,
    resolved: Option<Resolved>,
}

/// The keys of one open encrypted database: loaded lazily (when the first file is
/// opened, i.e. under the directory lock), and the source of every nonce.
pub struct KeyState {
    vfs: Arc<dyn Vfs>,
    root: PathBuf,
    cipher: Cipher,
    inner: Mutex<Inner>,
    /// Write counter of this handle: with the claimed epoch, it makes every nonce.
    seq: AtomicU64,
    /// The claimed epoch (valid once claimed).
    epoch: AtomicU64,
    /// A read-only handle never writes the key file (and writes files only into new
    /// directories: backups, whose files have new data keys).
    read_only: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("root", &self.root)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl KeyState {
    /// Keys for the database in `root` (reached through `vfs`, the unencrypted file
    /// system). Nothing is read until first needed.
    pub fn new(vfs: Arc<dyn Vfs>, root: &Path, config: &EncryptionConfig) -> KeyState {
        KeyState {
            vfs,
            root: root.to_path_buf(),
            cipher: config.cipher,
            inner: Mutex::new(Inner {
                provider: config.key.clone(),
                resolved: None,
            }),
            seq: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            read_only: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Mark the handle read-only: it never rewrites the key file.
    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.store(read_only, Ordering::Release);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn key_path(&self) -> PathBuf {
        self.root.join(KEY_FILE)
    }

    /// Load the key file (checking the key) or, for a new database, make a database
    /// key; a key file another handle wrote since (a racing create) replaces a key made
    /// here but not yet written.
    fn resolve<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut Resolved> {
        let stale = inner.resolved.as_ref().is_some_and(|r| !r.persisted);
        if inner.resolved.is_none() || stale {
            let path = self.key_path();
            match vfs::read_file_if_exists(&*self.vfs, &path)? {
                Some(bytes) => {
                    let fields = Fields::decode(&path, &bytes)?;
                    let db_key = unwrap(&path, &inner.provider, &fields)?;
                    inner.resolved = Some(Resolved::new(db_key, fields, true));
                }
                None if !stale => {
                    if vfs::exists(&*self.vfs, &crate::files::current_path(&self.root))? {
                        return Err(Error::WrongKey(format!(
                            "the database at {} is not encrypted, but an encryption key \
                             was configured",
                            self.root.display()
                        )));
                    }
                    let db_key =
                        super::random_key().map_err(|e| Error::io("making a database key", e))?;
                    let fields = wrap(&inner.provider, self.cipher, &db_key, 0)?;
                    inner.resolved = Some(Resolved::new(db_key, fields, false));
                }
                None => {}
            }
        }
        inner
            .resolved
            .as_mut()
            .ok_or_else(|| Error::Fatal("key state unresolved".into()))
    }

    /// Check the key now (the open path calls this so a wrong key fails before
    /// anything is touched): loads the key file, or prepares a new database key.
    pub fn check(&self) -> Result<()> {
        self.resolve(&mut self.inner.lock()).map(|_| ())
    }

    /// The AEAD of the database key, for opening file headers (reads only).
    pub(crate) fn header_key(&self) -> Result<Arc<Aead>> {
        Ok(self.resolve(&mut self.inner.lock())?.db_aead.clone())
    }

    /// The AEAD of the database key for a handle that will write: writes the key file
    /// (a new database) and claims a new epoch first, once per handle, so that no nonce
    /// this handle makes was made by an earlier one — also one that crashed.
    pub(crate) fn writer_key(&self) -> Result<Arc<Aead>> {
        let mut inner = self.inner.lock();
        let r = self.resolve(&mut inner)?;
        if !r.claimed && self.read_only.load(Ordering::Acquire) {
            self.epoch.store(r.fields.epoch, Ordering::Release);
            r.claimed = true;
        }
        if !r.claimed {
            let epoch = r.fields.epoch + 1;
            if epoch > u64::from(u32::MAX) {
                return Err(Error::Fatal(
                    "the nonce epoch is exhausted (4 billion opens): rekey into a copy".into(),
                ));
            }
            let mut f = r.fields.clone();
            f.epoch = epoch;
            f.mac = f.mac_of(&r.db_key);
            vfs::write_file_atomic(&*self.vfs, &self.key_path(), &f.encode())?;
            r.fields = f;
            r.persisted = true;
            r.claimed = true;
            self.epoch.store(epoch, Ordering::Release);
        }
        Ok(r.db_aead.clone())
    }

    /// A nonce never used before with any key of this database: the claimed epoch (a
    /// 32-bit number written durably before this handle's first write, one more than
    /// any earlier handle's) followed by a 64-bit counter of this handle.
    pub(crate) fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&(self.epoch.load(Ordering::Acquire) as u32).to_le_bytes());
        n[4..].copy_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        n
    }

    /// The cipher of the database (from its key file once loaded).
    pub fn cipher(&self) -> Cipher {
        self.inner
            .lock()
            .resolved
            .as_ref()
            .map_or(self.cipher, |r| r.fields.cipher)
    }

    /// Wrap the database key with a new master key and replace the key file
    /// atomically. The files keep their data keys (wrapped by the database key), so
    /// nothing else is rewritten; from the rename on only `provider` opens the database.
    pub fn rotate(&self, provider: KeyProvider) -> Result<()> {
        if self.read_only.load(Ordering::Acquire) {
            return Err(Error::ReadOnly);
        }
        let mut inner = self.inner.lock();
        let r = self.resolve(&mut inner)?;
        let f = wrap(&provider, r.fields.cipher, &r.db_key, r.fields.epoch)?;
        vfs::write_file_atomic(&*self.vfs, &self.key_path(), &f.encode())?;
        r.fields = f;
        r.persisted = true;
        inner.provider = provider;
        Ok(())
    }

    /// Write this database's key file into `dir` (a backup or checkpoint being made),
    /// with the epoch this handle claimed, so the copy opens with the same key and
    /// never repeats a nonce of the files written into it.
    pub fn write_key_file_into(&self, vfs: &dyn Vfs, dir: &Path) -> Result<()> {
        let bytes = {
            let mut inner = self.inner.lock();
            self.resolve(&mut inner)?.fields.encode()
        };
        let path = dir.join(KEY_FILE);
        vfs::remove_file_if_exists(vfs, &vfs::tmp_path(&path))?;
        vfs::create_new_synced(vfs, &path, &bytes)?;
        vfs::sync_dir(vfs, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::StdVfs;

    fn state(dir: &Path, p: KeyProvider) -> KeyState {
        KeyState::new(
            Arc::new(StdVfs),
            dir,
            &EncryptionConfig::new(Cipher::Aes256Gcm, p),
        )
    }

    #[test]
    fn key_file_round_trips_and_rejects_wrong_keys() {
        let d = tempfile::tempdir().unwrap();
        let s = state(d.path(), KeyProvider::raw([1; 32]));
        s.writer_key().unwrap();
        assert!(d.path().join(KEY_FILE).exists());
        drop(s);
        state(d.path(), KeyProvider::raw([1; 32])).check().unwrap();
        let e = state(d.path(), KeyProvider::raw([2; 32]))
            .check()
            .unwrap_err();
        assert!(matches!(e, Error::WrongKey(_)), "{e}");
        let e = state(d.path(), KeyProvider::passphrase("x"))
            .check()
            .unwrap_err();
        assert!(matches!(e, Error::WrongKey(_)), "{e}");
    }

    #[test]
    fn rotation_replaces_the_master_key() {
        let d = tempfile::tempdir().unwrap();
        let s = state(d.path(), KeyProvider::passphrase("old"));
        s.writer_key().unwrap();
        s.rotate(KeyProvider::passphrase("new")).unwrap();
        drop(s);
        state(d.path(), KeyProvider::passphrase("new"))
            .check()
            .unwrap();
        assert!(matches!(
            state(d.path(), KeyProvider::passphrase("old")).check(),
            Err(Error::WrongKey(_))
        ));
    }

    #[test]
    fn every_handle_claims_a_new_epoch() {
        let d = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let s = state(d.path(), KeyProvider::raw([1; 32]));
            s.writer_key().unwrap();
            assert!(seen.insert(s.next_nonce()));
        }
    }

    #[test]
    fn a_damaged_key_file_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        state(d.path(), KeyProvider::raw([1; 32]))
            .writer_key()
            .unwrap();
        let p = d.path().join(KEY_FILE);
        let mut b = std::fs::read(&p).unwrap();
        b[45] ^= 1; // the epoch
        std::fs::write(&p, &b).unwrap();
        let e = state(d.path(), KeyProvider::raw([1; 32]))
            .check()
            .unwrap_err();
        assert!(e.is_corruption(), "{e}");
    }
}
