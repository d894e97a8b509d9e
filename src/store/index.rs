//! The cache index: the only module that knows sled is underneath, so it could be swapped.
//! Blob metadata lives in one tree keyed by digest hex; blob bytes are never stored here.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cache index: {0}")]
    Db(#[from] sled::Error),
    #[error("cache index entry {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// Where a blob was seen, so a cached copy is only handed out on the terms it was fetched on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSource {
    pub mirror: String,
    pub repository: String,
    /// Fetched without any credential: anyone may have it from this mirror and repository.
    pub anonymous: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub size: u64,
    pub media_type: String,
    /// Milliseconds since the Unix epoch (fine enough to order accesses for eviction).
    pub stored_at: u64,
    pub last_access: u64,
    /// Terraform's `h1:` hash of the package, when it is a zip.
    pub h1: Option<String>,
    #[serde(default)]
    pub sources: Vec<BlobSource>,
}

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    /// Cached origin metadata (tag lists, tag → digest, manifests), opaque bytes to us.
    metadata: sled::Tree,
}

impl Index {
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .open()?;
        let blobs = db.open_tree("blobs")?;
        let metadata = db.open_tree("metadata")?;
        Ok(Index {
            db,
            blobs,
            metadata,
        })
    }

    pub fn get_blob(&self, hex: &str) -> Result<Option<BlobMeta>, IndexError> {
        match self.blobs.get(hex.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|source| IndexError::Corrupt {
                    key: hex.to_owned(),
                    source,
                }),
        }
    }

    pub fn put_blob(&self, hex: &str, meta: &BlobMeta) -> Result<(), IndexError> {
        let v = serde_json::to_vec(meta).expect("metadata always serialises");
        self.blobs.insert(hex.as_bytes(), v)?;
        Ok(())
    }

    pub fn remove_blob(&self, hex: &str) -> Result<(), IndexError> {
        self.blobs.remove(hex.as_bytes())?;
        Ok(())
    }

    /// Every blob entry; unreadable entries come back as `Err` so callers can drop them.
    pub fn blobs(&self) -> impl Iterator<Item = (String, Result<BlobMeta, IndexError>)> + '_ {
        self.blobs.iter().filter_map(|r| {
            let (k, v) = r.ok()?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let meta = serde_json::from_slice(&v).map_err(|source| IndexError::Corrupt {
                key: key.clone(),
                source,
            });
            Some((key, meta))
        })
    }

    pub fn get_metadata(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.metadata.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    pub fn put_metadata(&self, key: &str, value: &[u8]) -> Result<(), IndexError> {
        self.metadata.insert(key.as_bytes(), value)?;
        Ok(())
    }

    /// Number of metadata entries, for stats.
    pub fn metadata_len(&self) -> usize {
        self.metadata.len()
    }

    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }
}
