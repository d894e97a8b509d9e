//! The cache index: the only module that knows sled is underneath, so it could be swapped.
//! Blob metadata lives in one tree keyed by digest hex; blob bytes are never stored here.
//! Large metadata values (big manifests) go to files beside the index, with only a marker in
//! sled: sled keeps what it writes in memory, and a hostile origin must not grow us that way.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Metadata values longer than this live in a file of their own.
const SPILL_BYTES: usize = 64 * 1024;
/// What sled holds for a value that lives in a file (JSON values never start with NUL).
const SPILLED: &[u8] = b"\0spilled";

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cache index: {0}")]
    Db(#[from] sled::Error),
    #[error("cache index file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// The `h1:` hash has not been derived yet (`warm` leaves it to the first use, or to the
    /// server's background pass), so a missing `h1` does not yet mean "not a zip".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h1_pending: bool,
}

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    /// Cached origin metadata (tag lists, tag → digest, manifests), opaque bytes to us.
    metadata: sled::Tree,
    /// Where large metadata values are kept, one file per key.
    spill_dir: PathBuf,
}

impl Index {
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            // sled's default page cache is 1 GiB; what we keep hot lives in our own maps.
            .cache_capacity(16 << 20)
            .open()?;
        let blobs = db.open_tree("blobs")?;
        let metadata = db.open_tree("metadata")?;
        let spill_dir = dir.with_extension("values");
        std::fs::create_dir_all(&spill_dir).map_err(|source| IndexError::Io {
            path: spill_dir.clone(),
            source,
        })?;
        // Writes a crash interrupted.
        if let Ok(entries) = std::fs::read_dir(&spill_dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Index {
            db,
            blobs,
            metadata,
            spill_dir,
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

    /// Changes an entry in place, atomically with respect to other updates of it (a touch
    /// of its access time must not undo a hash derived meanwhile). `None` if there is no
    /// readable entry.
    pub fn update_blob(
        &self,
        hex: &str,
        change: impl Fn(&mut BlobMeta),
    ) -> Result<Option<BlobMeta>, IndexError> {
        let updated = self.blobs.update_and_fetch(hex.as_bytes(), |old| {
            let old = old?;
            match serde_json::from_slice::<BlobMeta>(old) {
                Ok(mut meta) => {
                    change(&mut meta);
                    Some(serde_json::to_vec(&meta).expect("metadata always serialises"))
                }
                // Left for `get_blob` to report.
                Err(_) => Some(old.to_vec()),
            }
        })?;
        Ok(updated.and_then(|v| serde_json::from_slice(&v).ok()))
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
        match self.metadata.get(key.as_bytes())? {
            // A value whose file is gone (a crash between the two writes) is simply missing.
            Some(v) if v == SPILLED => Ok(std::fs::read(self.spill_path(key)).ok()),
            Some(v) => Ok(Some(v.to_vec())),
            None => Ok(None),
        }
    }

    /// Metadata is a cache: a value lost in a crash is fetched again, so no fsync here.
    pub fn put_metadata(&self, key: &str, value: &[u8]) -> Result<(), IndexError> {
        let path = self.spill_path(key);
        if value.len() > SPILL_BYTES {
            let temp = path.with_extension(format!("{:016x}.tmp", rand::random::<u64>()));
            let io = |source| IndexError::Io {
                path: path.clone(),
                source,
            };
            std::fs::write(&temp, value).map_err(io)?;
            std::fs::rename(&temp, &path).map_err(io)?;
            self.metadata.insert(key.as_bytes(), SPILLED)?;
        } else if self.metadata.insert(key.as_bytes(), value)?.as_deref() == Some(SPILLED) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    pub fn remove_metadata(&self, key: &str) -> Result<(), IndexError> {
        if self.metadata.remove(key.as_bytes())?.as_deref() == Some(SPILLED) {
            let _ = std::fs::remove_file(self.spill_path(key));
        }
        Ok(())
    }

    /// Removes a small metadata entry only if it still holds `expected`; whether it did.
    pub fn remove_metadata_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, IndexError> {
        let swapped =
            self.metadata
                .compare_and_swap(key.as_bytes(), Some(expected), None::<&[u8]>)?;
        Ok(swapped.is_ok())
    }

    fn spill_path(&self, key: &str) -> PathBuf {
        self.spill_dir
            .join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// Metadata entries held in the index itself (values too big are in files and skipped:
    /// housekeeping looks only for small ones), as (key, value).
    pub fn small_metadata(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.metadata.iter().filter_map(|r| {
            let (k, v) = r.ok()?;
            if v == SPILLED {
                return None;
            }
            Some((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_removal_leaves_a_changed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index")).unwrap();
        index.put_metadata("k", b"old").unwrap();
        index.put_metadata("k", b"refreshed").unwrap();
        assert!(!index.remove_metadata_if_unchanged("k", b"old").unwrap());
        assert_eq!(index.small_metadata().count(), 1);
        assert!(index
            .remove_metadata_if_unchanged("k", b"refreshed")
            .unwrap());
        assert_eq!(index.small_metadata().count(), 0);
    }

    #[test]
    fn large_values_live_in_files_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index")).unwrap();
        let big = vec![b'x'; SPILL_BYTES + 1];
        index.put_metadata("k", &big).unwrap();
        assert_eq!(index.get_metadata("k").unwrap(), Some(big.clone()));
        assert_eq!(std::fs::read_dir(&index.spill_dir).unwrap().count(), 1);
        // Smaller again: back in sled, and the file is gone.
        index.put_metadata("k", b"small").unwrap();
        assert_eq!(index.get_metadata("k").unwrap(), Some(b"small".to_vec()));
        assert_eq!(std::fs::read_dir(&index.spill_dir).unwrap().count(), 0);
        index.put_metadata("k", &big).unwrap();
        index.remove_metadata("k").unwrap();
        assert_eq!(index.get_metadata("k").unwrap(), None);
        assert_eq!(std::fs::read_dir(&index.spill_dir).unwrap().count(), 0);
        // Housekeeping sees small values only.
        index.put_metadata("big", &big).unwrap();
        index.put_metadata("small", b"v").unwrap();
        let small: Vec<_> = index.small_metadata().collect();
        assert_eq!(small, vec![("small".to_owned(), b"v".to_vec())]);
        index.remove_metadata("big").unwrap();
        index.remove_metadata("small").unwrap();
        // A marker whose file was lost reads as missing.
        index.put_metadata("k", &big).unwrap();
        std::fs::remove_file(index.spill_path("k")).unwrap();
        assert_eq!(index.get_metadata("k").unwrap(), None);
    }
}
