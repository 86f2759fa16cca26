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
