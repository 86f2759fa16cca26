//! Encryption at rest.
//!
//! ```no_run
//! use lightning_db::encryption::{Cipher, EncryptionConfig, KeyProvider};
//! use lightning_db::{Database, LightningDbConfig};
//! # fn main() -> lightning_db::Result<()> {
//! let key = [7u8; 32]; // from your secret store
//! let config = LightningDbConfig {
//!     encryption: Some(EncryptionConfig::new(Cipher::Aes256Gcm, KeyProvider::raw(key))),
//!     ..Default::default()
//! };
//! let db = Database::create("/tmp/secret-db", config)?;
//! db.put(b"k", b"v")?;
//! db.rotate_key(KeyProvider::passphrase("a long passphrase"))?; // no downtime
//! # Ok(()) }
//! ```
//!
//! Every file of the database is a header plus 4 KiB blocks, each sealed with
//! AES-256-GCM or ChaCha20-Poly1305 under the file's own random data key; data keys
//! are wrapped by a random database key, which the master key (from the
//! [`KeyProvider`]) wraps in the `ENCRYPTION` file. [`crate::Database::rotate_key`]
//! rewraps only the database key, so it takes milliseconds whatever the size, and the
//! old key stops opening the database at once. Backups and checkpoints stay encrypted
//! under the same keys. FORMAT.md documents the bytes and why no nonce repeats.
//!
//! Key material is held in zeroized memory, never printed by `Debug`, never put in
//! errors, logs or metrics.

pub use lightning_rowstore::crypto::{
    Cipher, EncryptionConfig, KeyProvider, KeyStore, KeyStoreError,
};

#[cfg(feature = "sql")]
mod parquet;
#[cfg(feature = "sql")]
pub(crate) use parquet::file_encryption;
#[cfg(feature = "sql")]
pub use parquet::{parquet_decryption, read_encrypted_parquet};

use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// The file system through which the files of the encrypted database in `dir` are
/// read, for tools that read a database, open or not ([`crate::check_files_with`],
/// [`crate::backup_files_with`]: the backup is written encrypted under the same keys).
/// The key is checked first ([`Error::WrongKey`]); nothing in `dir` is written.
pub fn vfs_for(dir: &Path, config: &EncryptionConfig) -> Result<Arc<dyn crate::vfs::Vfs>> {
    vfs_with(dir, config, true)
}

/// [`vfs_for`] for a tool that rewrites files of a closed database
/// ([`crate::repair_with`]): it claims a new nonce epoch in the key file before its
/// first write, as an opened database does.
pub fn vfs_for_writing(dir: &Path, config: &EncryptionConfig) -> Result<Arc<dyn crate::vfs::Vfs>> {
    vfs_with(dir, config, false)
}

fn vfs_with(
    dir: &Path,
    config: &EncryptionConfig,
    read_only: bool,
) -> Result<Arc<dyn crate::vfs::Vfs>> {
    let inner = crate::vfs::std_vfs();
    if !lightning_rowstore::crypto::is_encrypted_dir(&*inner, dir)? {
        return Err(Error::WrongKey(format!(
            "the database at {} is not encrypted, but a key was given",
            dir.display()
        )));
    }
    let keys = Arc::new(lightning_rowstore::crypto::KeyState::new(
        inner.clone(),
        dir,
        config,
    ));
    keys.set_read_only(read_only);
    keys.check()?;
    Ok(Arc::new(lightning_rowstore::vfs::EncryptedVfs::new(
        inner, keys,
    )))
}

/// [`Error::WrongKey`] if `dir` holds an encrypted database (for the tools that read
/// files without a key).
pub(crate) fn refuse_encrypted(dir: &Path) -> Result<()> {
    if lightning_rowstore::crypto::is_encrypted_dir(&lightning_rowstore::vfs::StdVfs, dir)? {
        return Err(Error::WrongKey(format!(
            "the database at {} is encrypted; give its key (lightning_db::encryption::vfs_for)",
            dir.display()
        )));
    }
    Ok(())
}
