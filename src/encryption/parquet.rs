//! Parquet exports encrypted with Parquet modular encryption (AES-GCM): the footer and
//! every column sealed under a random key made for the file, which is wrapped for a
//! [`KeyProvider`] in the footer's key metadata, in the same record format as a
//! database's `ENCRYPTION` file (FORMAT.md). A reader needs the provider, never the
//! file key: [`parquet_decryption`] unwraps it from the metadata.

use super::{Cipher, KeyProvider};
use crate::error::{Error, Result};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use datafusion::parquet::encryption::encrypt::FileEncryptionProperties;
use datafusion::parquet::errors::ParquetError;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::Arc;

/// Encryption properties for one new Parquet file: a fresh random key, wrapped for
/// `provider` into the footer key metadata. (The parquet crate keeps its copy of the
/// file key in ordinary memory while it writes.)
pub(crate) fn file_encryption(provider: &KeyProvider) -> Result<Arc<FileEncryptionProperties>> {
    let key = lightning_rowstore::crypto::random_key().map_err(|e| Error::Io {
        context: "drawing a key for an encrypted Parquet file".into(),
        source: e,
    })?;
    let record = lightning_rowstore::crypto::wrap_key_record(provider, Cipher::Aes256Gcm, &key)?;
    FileEncryptionProperties::builder(key.to_vec())
        .with_footer_key_metadata(record)
        .build()
        .map_err(|e| Error::Arrow(format!("Parquet encryption: {e}")))
}

/// Unwraps a file's key from its key metadata with a provider; remembers why it could
/// not (the parquet crate only passes a message through).
struct Retriever {
    provider: KeyProvider,
    failure: Arc<Mutex<Option<Error>>>,
}

impl KeyRetriever for Retriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> datafusion::parquet::errors::Result<Vec<u8>> {
        match lightning_rowstore::crypto::unwrap_key_record(
            Path::new("the Parquet file's key metadata"),
            &self.provider,
            key_metadata,
        ) {
            Ok(k) => Ok(k.to_vec()),
            Err(e) => {
                let msg = e.to_string();
                *self.failure.lock() = Some(e.into());
                Err(ParquetError::General(msg))
            }
        }
    }
}

/// Decryption properties that open Parquet files written by
/// [`crate::Database::export_parquet_encrypted`] with `provider`, for the parquet
/// crate's readers (`ArrowReaderOptions::with_file_decryption_properties`).
pub fn parquet_decryption(provider: KeyProvider) -> Result<Arc<FileDecryptionProperties>> {
    decryption(provider, Arc::default())
}

fn decryption(
    provider: KeyProvider,
    failure: Arc<Mutex<Option<Error>>>,
) -> Result<Arc<FileDecryptionProperties>> {
    FileDecryptionProperties::with_key_retriever(Arc::new(Retriever { provider, failure }))
        .build()
        .map_err(|e| Error::Arrow(format!("Parquet decryption: {e}")))
}

/// Every row of an encrypted Parquet export, read with `provider`:
/// [`Error::WrongKey`] if it does not unlock the file, [`Error::Corruption`] if the
/// file was altered.
pub fn read_encrypted_parquet(
    path: impl AsRef<Path>,
    provider: KeyProvider,
) -> Result<Vec<RecordBatch>> {
    let path = path.as_ref();
    let failure = Arc::new(Mutex::new(None));
    let props = decryption(provider, failure.clone())?;
    let f = std::fs::File::open(path).map_err(|e| Error::Io {
        context: format!("opening {}", path.display()),
        source: e,
    })?;
    let read = || -> std::result::Result<Vec<RecordBatch>, ParquetError> {
        let opts = ArrowReaderOptions::new().with_file_decryption_properties(props);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(f, opts)?.build()?;
        reader
            .map(|b| b.map_err(|e| ParquetError::General(e.to_string())))
            .collect()
    };
    read().map_err(|e| match failure.lock().take() {
        Some(why) => why,
        None => Error::Corruption {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!("encrypted Parquet file: {e}"),
        },
    })
}
