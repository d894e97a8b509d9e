//! The verified package cache: content-addressed files under `DIR/blobs/sha256/ab/<hex>`,
//! written to `DIR/tmp` while streaming, fsync'd and renamed into place only once their
//! digest matched, and indexed in `DIR/index` (see [`index`]). Knows nothing of Terraform or HTTP.

mod fill;
pub mod index;
mod lock;
mod read;

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::oci::{BlobStream, Digest, OciError};

pub use fill::{Fill, FillError};
use fill::{FillState, MemTail};
pub use index::{BlobMeta, BlobSource};
pub use index::{Index, IndexError};
pub use lock::{
    cache_holder, clear_server_address, record_server_address, CacheHolder, DirLock, LockError,
    SERVER_ADDRESS_FILE,
};
pub use read::file_range;

/// How much of a package may be held in memory when the disk cannot take it.
const MAX_MEMORY_TAIL_BYTES: u64 = 256 << 20;

/// Last-access times are written to the index at most this often per blob.
const ACCESS_TOUCH_INTERVAL_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cache directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub directory: PathBuf,
    pub max_size: u64,
    /// A package body that goes on longer than this is refused.
    pub max_package_size: u64,
}

impl StoreConfig {
    pub fn from_config(config: &crate::config::Config) -> StoreConfig {
        StoreConfig {
            directory: config.cache.directory.clone(),
            max_size: config.cache.max_size,
            max_package_size: config.limits.max_package_size,
        }
    }
}

/// Counters since the process started.
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub joins: AtomicU64,
    pub origin_fetches: AtomicU64,
    pub bytes_from_origin: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub evictions: AtomicU64,
}

/// What was repaired when the store was opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub temp_files_removed: usize,
    pub entries_without_file: usize,
    pub files_reindexed: usize,
    pub bad_files_removed: usize,
    pub index_rebuilt: bool,
}

/// A stored blob, opened for reading.
pub struct CachedBlob {
    pub file: Arc<File>,
    pub meta: BlobMeta,
}

/// Where a blob is, as far as the store knows, without fetching anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residence {
    Kept,
    /// Being fetched, or verified and being filed away.
    Filling,
    Absent,
}

pub enum Lookup {
    Hit(CachedBlob),
    /// Being fetched; `started` is true when this call started the fetch.
    Fill {
        fill: Arc<Fill>,
        started: bool,
    },
}

/// Directory fsyncs [`BlobStore::flush`] runs at once.
const DIR_SYNC_THREADS: usize = 8;

/// How a store's fills run: for a server answering clients, or for one batch job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillMode {
    /// The server: disk writes go to blocking threads (a disk stalled by writeback must not
    /// hold up other clients' requests on the same worker), and a package's `h1:` hash is
    /// derived as it is kept, which is off every client's path.
    Serving,
    /// `warm`: only other fills wait on this process, and a cold warm is CPU-bound on a
    /// small machine (it shares the CPUs with the origin). Disk writes are made on the fill's
    /// own task, saving a thread hand-off per write, and `h1:` hashes are left pending, for
    /// [`BlobStore::package_h1`] on first use (`lock`, `export`, a lock file's check) or the
    /// server's [`BlobStore::derive_pending_hashes`]: a second pass over every package, as
    /// costly as the digest check, for a hash Terraform does not need to install a package
    /// (it checks the `zh:` hash, the digest).
    Batch,
}

pub struct BlobStore {
    root: PathBuf,
    max_size: u64,
    max_package_size: u64,
    index: Index,
    inflight: Mutex<HashMap<String, Arc<Fill>>>,
    total: AtomicU64,
    /// Bumped whenever a blob is kept or removed, so derived answers (like `h1:` lists) can
    /// be cached until the store changes.
    generation: AtomicU64,
    /// Bounds the fsync + rename sequences running at once.
    durability: tokio::sync::Semaphore,
    /// Set by [`BlobStore::set_fill_mode`]: whether fills run as [`FillMode::Batch`].
    batch: AtomicBool,
    evicting: Mutex<()>,
    /// Directories packages were renamed into since the last [`BlobStore::flush`], which
    /// makes those renames durable with one fsync per directory.
    renamed_into: Mutex<std::collections::HashSet<PathBuf>>,
    /// One `h1:` derivation per package at a time (see [`BlobStore::package_h1`]).
    deriving: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub counters: Counters,
    repair: RepairReport,
    _lock: DirLock,
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl BlobStore {
    /// Opens (creating if needed) the cache directory, taking ownership of it, and repairs
    /// whatever a crash left behind.
    pub fn open(config: &StoreConfig) -> Result<Arc<BlobStore>, StoreError> {
        let root = config.directory.clone();
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let lock = DirLock::acquire(&root)?;
        let mut repair = RepairReport::default();
        for dir in [root.join("tmp"), root.join("blobs").join("sha256")] {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        repair.temp_files_removed = clear_dir(&root.join("tmp"))?;
        let index_dir = root.join("index");
        let index = match Index::open(&index_dir) {
            Ok(i) => i,
            Err(e) => {
                // The index can always be rebuilt from the content-addressed files.
                let aside = root.join(format!("index.broken-{}", now_secs()));
                tracing::warn!(error = %e, moved_to = %aside.display(), "cache index unreadable; rebuilding it from the stored files");
                std::fs::rename(&index_dir, &aside).map_err(io_err(&index_dir))?;
                repair.index_rebuilt = true;
                Index::open(&index_dir)?
            }
        };
        let store = BlobStore {
            root,
            max_size: config.max_size,
            max_package_size: config.max_package_size,
            index,
            inflight: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            durability: tokio::sync::Semaphore::new(2),
            batch: AtomicBool::new(false),
            evicting: Mutex::new(()),
            renamed_into: Mutex::new(std::collections::HashSet::new()),
            deriving: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            repair: RepairReport::default(),
            _lock: lock,
        };
        let mut store = store;
        store.reconcile(&mut repair)?;
        store.repair = repair;
        if store.repair != RepairReport::default() {
            tracing::info!(report = ?store.repair, "cache repaired at start");
        }
        let store = Arc::new(store);
        store.evict_if_needed();
        Ok(store)
    }

    /// The index, shared with the metadata cache (which keeps its own tree in it).
    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn repair_report(&self) -> &RepairReport {
        &self.repair
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops a blob's index entry and accounts for its bytes (the file is the caller's).
    fn forget(&self, hex: &str, size: u64) -> Result<(), StoreError> {
        self.index.remove_blob(hex)?;
        let _ = self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(size))
            });
        self.bump_generation();
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join("sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// Index entries must have their file (of the right size); files must have an entry
    /// (re-verified before being indexed again).
    fn reconcile(&mut self, repair: &mut RepairReport) -> Result<(), StoreError> {
        let mut total = 0;
        let mut indexed = std::collections::HashSet::new();
        let entries: Vec<_> = self.index.blobs().collect();
        for (hex, meta) in entries {
            let ok = match &meta {
                Ok(m) if Digest::from_sha256_hex(&hex).is_some() => {
                    std::fs::metadata(self.blob_path(&hex))
                        .map(|f| f.len() == m.size)
                        .unwrap_or(false)
                }
                _ => false,
            };
            if ok {
                total += meta.as_ref().map(|m| m.size).unwrap_or(0);
                indexed.insert(hex);
            } else {
                repair.entries_without_file += 1;
                self.index.remove_blob(&hex)?;
            }
        }
        let base = self.root.join("blobs").join("sha256");
        for prefix in std::fs::read_dir(&base).map_err(io_err(&base))? {
            let prefix = prefix.map_err(io_err(&base))?.path();
            let Ok(files) = std::fs::read_dir(&prefix) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let name = f.file_name().to_string_lossy().into_owned();
                if indexed.contains(&name) {
                    continue;
                }
                match Digest::from_sha256_hex(&name).filter(|_| {
                    prefix
                        .file_name()
                        .is_some_and(|p| name.starts_with(&*p.to_string_lossy()))
                }) {
                    Some(_) if hash_file(&path).ok().as_deref() == Some(name.as_str()) => {
                        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                        let now = now_millis();
                        let meta = BlobMeta {
                            size,
                            media_type: "application/octet-stream".into(),
                            stored_at: now,
                            last_access: now,
                            h1: h1_of_file(&path),
                            sources: Vec::new(),
                            h1_pending: false,
                        };
                        self.index.put_blob(&name, &meta)?;
                        total += size;
                        repair.files_reindexed += 1;
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        repair.bad_files_removed += 1;
                    }
                }
            }
        }
        self.total.store(total, Ordering::Relaxed);
        self.index.flush()?;
        Ok(())
    }

    pub fn meta(&self, digest: &Digest) -> Option<BlobMeta> {
        self.index.get_blob(digest.hex()).ok().flatten()
    }

    /// The stored blob, opened, or `None`. A missing file drops its stale index entry.
    pub fn cached(&self, digest: &Digest) -> Option<CachedBlob> {
        let mut meta = self.meta(digest)?;
        match File::open(self.blob_path(digest.hex())) {
            Ok(f) => {
                let now = now_millis();
                if now.saturating_sub(meta.last_access) >= ACCESS_TOUCH_INTERVAL_MS {
                    meta.last_access = now;
                    let _ = self
                        .index
                        .update_blob(digest.hex(), |m| m.last_access = m.last_access.max(now));
                }
                Some(CachedBlob {
                    file: Arc::new(f),
                    meta,
                })
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "indexed blob file missing; dropping the entry");
                let _ = self.forget(digest.hex(), meta.size);
                None
            }
        }
    }

    /// Records that `digest` was (also) seen at `source`.
    pub fn add_source(&self, digest: &Digest, source: &BlobSource) {
        if self
            .meta(digest)
            .is_some_and(|m| !m.sources.contains(source))
        {
            let _ = self.index.update_blob(digest.hex(), |m| {
                if !m.sources.contains(source) {
                    m.sources.push(source.clone());
                }
            });
        }
    }

    /// The cached blob, or the fill that is bringing it in: joined if one is running, started
    /// (by calling `fetch`) if not.
    /// Where a blob is, without fetching it. The fills are asked first: a fill is indexed
    /// before it leaves them, so a blob being filed away is never missed by both.
    pub fn residence(&self, digest: &Digest) -> Residence {
        let filling = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest.hex());
        if self.meta(digest).is_some() {
            Residence::Kept
        } else if filling {
            Residence::Filling
        } else {
            Residence::Absent
        }
    }

    pub fn get_or_fill(
        self: &Arc<Self>,
        digest: &Digest,
        source: BlobSource,
        media_type: &str,
        fetch: impl FnOnce() -> BoxFuture<'static, Result<BlobStream, OciError>>,
    ) -> Lookup {
        if let Some(hit) = self.cached(digest) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(hit);
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fill) = inflight.get(digest.hex()) {
            // A fill already verified is being filed away: to the client that is a hit.
            let counter = if fill.is_verified() {
                &self.counters.hits
            } else {
                &self.counters.joins
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Lookup::Fill {
                fill: fill.clone(),
                started: false,
            };
        }
        // A fill may have finished between the first look and taking the lock.
        if let Some(hit) = self.cached(digest) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(hit);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(FillState::Connecting);
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            source: source.clone(),
            temp_path: self.root.join("tmp").join(format!(
                "{}.{}",
                digest.hex(),
                rand::random::<u64>()
            )),
            final_path: self.blob_path(digest.hex()),
            state: rx,
            mem: Mutex::new(MemTail::default()),
        });
        inflight.insert(digest.hex().to_owned(), fill.clone());
        drop(inflight);
        let store = self.clone();
        let leader = fill.clone();
        let media_type = media_type.to_owned();
        let fetch = fetch();
        tokio::spawn(async move {
            store
                .counters
                .origin_fetches
                .fetch_add(1, Ordering::Relaxed);
            if let Err(e) = store
                .run_fill(&leader, &tx, source, media_type, fetch)
                .await
            {
                if matches!(&e, FillError::Origin(o) if matches!(**o, OciError::DigestMismatch { .. }))
                {
                    store
                        .counters
                        .digest_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(digest = %leader.digest, error = %e, "package fetch failed; nothing was cached");
                tx.send_replace(FillState::Failed(e));
            }
            store
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(leader.digest.hex());
        });
        Lookup::Fill {
            fill,
            started: true,
        }
    }

    async fn run_fill(
        self: &Arc<Self>,
        fill: &Arc<Fill>,
        tx: &watch::Sender<FillState>,
        source: BlobSource,
        media_type: String,
        fetch: BoxFuture<'static, Result<BlobStream, OciError>>,
    ) -> Result<(), FillError> {
        let origin = |e: OciError| FillError::Origin(Arc::new(e));
        let blob = fetch.await.map_err(origin)?;
        let total = blob.content_length;
        if total.is_some_and(|t| t > self.max_package_size) {
            return Err(origin(OciError::TooLarge {
                what: format!("package {}", fill.digest),
                limit: self.max_package_size,
            }));
        }
        // The origin has answered: the clients' response headers can leave now, while the
        // temp file is being created (readers only open it once bytes are on disk).
        tx.send_replace(FillState::Running {
            total,
            written: 0,
            on_disk: 0,
        });
        let temp = fill.temp_path.clone();
        let mut file = match tokio::task::spawn_blocking(move || File::create(temp)).await {
            Ok(Ok(f)) => Some(Arc::new(f)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot create a temp file in the cache; serving without caching");
                None
            }
            Err(_) => None,
        };
        let mut hasher = Sha256::new();
        let (mut written, mut on_disk) = (0u64, 0u64);
        // Whatever has already arrived is taken in one go: one disk write per batch instead of
        // one per network read, without ever waiting for more bytes than are there.
        let mut stream = blob.stream.ready_chunks(64).map(|batch| {
            if batch.len() == 1 {
                return batch.into_iter().next().unwrap_or(Ok(bytes::Bytes::new()));
            }
            let mut buf = bytes::BytesMut::new();
            for item in batch {
                buf.extend_from_slice(&item?);
            }
            Ok(buf.freeze())
        });
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(origin)?;
            if chunk.is_empty() {
                continue;
            }
            hasher.update(&chunk);
            let len = chunk.len() as u64;
            if total.is_some_and(|t| written + len > t) {
                return Err(origin(OciError::Protocol(format!(
                    "blob {} is longer than its Content-Length",
                    fill.digest
                ))));
            }
            if written + len > self.max_package_size {
                // An endless body from a hostile origin must not fill the disk.
                return Err(origin(OciError::TooLarge {
                    what: format!("package {}", fill.digest),
                    limit: self.max_package_size,
                }));
            }
            let to_disk = match &file {
                Some(f) => {
                    let written = match self.fill_mode() {
                        FillMode::Batch => (&**f).write_all(&chunk),
                        FillMode::Serving => {
                            let (f, c) = (f.clone(), chunk.clone());
                            tokio::task::spawn_blocking(move || (&*f).write_all(&c))
                                .await
                                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                        }
                    };
                    match written {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(digest = %fill.digest, error = %e, "writing to the cache failed (disk full?); serving this download without caching it");
                            false
                        }
                    }
                }
                None => false,
            };
            if to_disk {
                on_disk += len;
            } else {
                file = None;
                let mut mem = fill.mem.lock().unwrap_or_else(|p| p.into_inner());
                if mem.chunks.is_empty() {
                    mem.start = on_disk;
                }
                if written + len - mem.start > MAX_MEMORY_TAIL_BYTES {
                    // Disk full and the package still coming: better to fail this download
                    // than to exhaust memory.
                    return Err(FillError::Local(Arc::new(std::io::Error::other(
                        "the cache disk is full and the package is too large to pass through memory",
                    ))));
                }
                mem.chunks.push(chunk);
            }
            written += len;
            tx.send_replace(FillState::Running {
                total,
                written,
                on_disk,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != fill.digest.hex() {
            return Err(origin(OciError::DigestMismatch {
                expected: fill.digest.clone(),
                actual: format!("sha256:{actual}"),
            }));
        }
        if let Some(t) = total.filter(|t| *t != written) {
            return Err(origin(OciError::Protocol(format!(
                "blob {} ended after {written} of {t} bytes",
                fill.digest
            ))));
        }
        self.counters
            .bytes_from_origin
            .fetch_add(written, Ordering::Relaxed);
        // Verified: clients may have every byte now, while the file is made durable.
        tx.send_replace(FillState::Done {
            size: written,
            on_disk,
            settled: false,
        });
        let mut kept = false;
        match file {
            Some(f) if written <= self.max_size => {
                match self.keep(fill, f, written, &media_type, source).await {
                    Ok(()) => kept = true,
                    Err(e) => {
                        tracing::warn!(digest = %fill.digest, error = %e, "could not keep the verified package in the cache")
                    }
                }
            }
            Some(_) => {
                tracing::info!(digest = %fill.digest, size = written, max_size = self.max_size, "package larger than the cache; served without keeping it")
            }
            None => {}
        }
        tx.send_replace(FillState::Done {
            size: written,
            on_disk,
            settled: true,
        });
        if kept {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.evict_if_needed());
        }
        Ok(())
    }

    /// fsync, rename into place, then index: a crash at any point leaves either no file or a
    /// complete verified one. The directory is fsync'd later, once for many packages, by
    /// [`BlobStore::flush`]: a rename lost to a power failure before that only loses the
    /// package, whose index entry the next start drops (it checks every indexed file's
    /// presence and size).
    async fn keep(
        &self,
        fill: &Fill,
        file: Arc<File>,
        size: u64,
        media_type: &str,
        source: BlobSource,
    ) -> Result<(), StoreError> {
        let hex = fill.digest.hex().to_owned();
        let dest = fill.final_path.clone();
        let temp = fill.temp_path.clone();
        let dest2 = dest.clone();
        // Concurrent fsyncs slow each other down badly on journaling filesystems; a couple at
        // a time keep every file durable at a fraction of the total cost.
        let permit = self.durability.acquire().await.ok();
        let blocking_err = |e: tokio::task::JoinError| StoreError::Io {
            path: dest.clone(),
            source: std::io::Error::other(e),
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            file.sync_all()?;
            let dir = dest2.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&temp, &dest2)
        })
        .await
        .map_err(blocking_err)?
        .map_err(io_err(&dest))?;
        drop(permit);
        if let Some(dir) = dest.parent() {
            self.renamed_into
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dir.to_owned());
        }
        let (h1, h1_pending) = if self.fill_mode() == FillMode::Serving {
            let dest3 = dest.clone();
            let h1 = tokio::task::spawn_blocking(move || h1_of_file(&dest3))
                .await
                .map_err(blocking_err)?;
            (h1, false)
        } else {
            (None, true)
        };
        let now = now_millis();
        let meta = BlobMeta {
            size,
            media_type: media_type.to_owned(),
            stored_at: now,
            last_access: now,
            h1,
            sources: vec![source],
            h1_pending,
        };
        self.index.put_blob(&hex, &meta)?;
        self.total.fetch_add(size, Ordering::Relaxed);
        self.bump_generation();
        Ok(())
    }

    pub fn set_fill_mode(&self, mode: FillMode) {
        self.batch.store(mode == FillMode::Batch, Ordering::Relaxed);
    }

    pub fn fill_mode(&self) -> FillMode {
        match self.batch.load(Ordering::Relaxed) {
            true => FillMode::Batch,
            false => FillMode::Serving,
        }
    }

    /// The `h1:` hash of a kept package (`None`: not kept, or not a zip), derived from the
    /// stored file and recorded if it was pending. Blocking: reads the whole package.
    /// Concurrent callers for one package wait for a single derivation. A package that
    /// cannot be read now (an I/O error) stays pending.
    pub fn package_h1(&self, digest: &Digest) -> Option<String> {
        let (h1, recorded) = self.derive_pending_h1(digest);
        if recorded {
            // Answers built from the store (a version's hashes) are rebuilt with it.
            self.bump_generation();
        }
        h1
    }

    /// [`BlobStore::package_h1`] on a blocking thread.
    pub async fn package_h1_async(self: &Arc<Self>, digest: &Digest) -> Option<String> {
        let (store, digest) = (self.clone(), digest.clone());
        tokio::task::spawn_blocking(move || store.package_h1(&digest))
            .await
            .ok()
            .flatten()
    }

    /// The recorded `h1:` of a package whose hash is settled (`Some(None)`: not a zip, or
    /// not kept); `None` while it is pending.
    fn settled_h1(&self, digest: &Digest) -> Option<Option<String>> {
        match self.meta(digest) {
            Some(m) if m.h1_pending => None,
            other => Some(other.and_then(|m| m.h1)),
        }
    }

    /// [`BlobStore::package_h1`] without telling derived answers: (the hash, whether this
    /// call recorded it).
    fn derive_pending_h1(&self, digest: &Digest) -> (Option<String>, bool) {
        if let Some(h1) = self.settled_h1(digest) {
            return (h1, false);
        }
        let gate = self
            .deriving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.hex().to_owned())
            .or_default()
            .clone();
        let one_at_a_time = gate.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.derive_and_record_h1(digest);
        // Waiters holding the gate find the hash recorded; later callers find it too.
        self.deriving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest.hex());
        drop(one_at_a_time);
        result
    }

    fn derive_and_record_h1(&self, digest: &Digest) -> (Option<String>, bool) {
        // Checked again under the gate: a caller that waited finds it recorded.
        if let Some(h1) = self.settled_h1(digest) {
            return (h1, false);
        }
        let path = self.blob_path(digest.hex());
        let unreadable = |e: std::io::Error| {
            tracing::warn!(%digest, error = %e, "cannot read a stored package to derive its h1 hash; it stays pending");
            (None, false)
        };
        // The bytes were verified when they were stored, but the hash is derived later (and
        // a cache may have been copied, or damaged, since): it is only derived from bytes
        // that still match their digest, or a client could be handed a damaged package with
        // a hash it matches.
        match hash_file(&path) {
            Ok(actual) if actual == digest.hex() => {}
            Ok(actual) => {
                tracing::warn!(%digest, actual = %format!("sha256:{actual}"), "a stored package no longer matches its digest (damaged or altered since it was stored); removing it from the cache");
                self.counters
                    .digest_mismatches
                    .fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.remove(digest) {
                    tracing::warn!(%digest, error = %e, "cannot remove a damaged package");
                }
                return (None, false);
            }
            Err(e) => return unreadable(e),
        }
        let h1 = match derive_h1(&path) {
            Ok(h1) => h1,
            Err(e) => return unreadable(e),
        };
        let recorded = self.index.update_blob(digest.hex(), |m| {
            if m.h1_pending {
                m.h1 = h1.clone();
                m.h1_pending = false;
            }
        });
        match recorded {
            Ok(Some(_)) => (h1, true),
            Ok(None) => (h1, false),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "cannot record a package's h1 hash");
                (h1, false)
            }
        }
    }

    /// Derives every pending `h1:` hash (packages `warm` kept), one package at a time on a
    /// blocking thread, so the server's answers list them soon after it starts. Answers
    /// already built are not thrown away for each one: an answer derives the hashes of the
    /// cached packages it lists before it is built; the store generation is bumped once at
    /// the end, for an answer whose derivation failed meanwhile.
    pub async fn derive_pending_hashes(self: Arc<Self>) {
        let pending: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|(_, m)| m.h1_pending)
            .map(|(hex, _)| hex)
            .collect();
        if pending.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let count = pending.len();
        let mut recorded_any = false;
        for hex in pending {
            let Some(digest) = Digest::from_sha256_hex(&hex) else {
                continue;
            };
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.derive_pending_h1(&digest)).await {
                Ok((_, recorded)) => recorded_any |= recorded,
                Err(_) => break,
            }
        }
        if recorded_any {
            self.bump_generation();
        }
        tracing::info!(
            packages = count,
            seconds = started.elapsed().as_secs_f64(),
            "derived the h1 hashes warm left pending"
        );
    }

    /// Evicts least-recently-used blobs until the total is within `max_size`. Readers keep
    /// their open descriptors, so a blob being served is never cut short.
    pub fn evict_if_needed(&self) {
        if self.total_bytes() <= self.max_size {
            return;
        }
        let _ = self.evict_to(self.max_size, None);
    }

    /// Removes blobs (least recently used first) until at most `max_size` bytes remain, and
    /// every blob not used since `unused_since` (Unix milliseconds). Returns (count, bytes).
    pub fn evict_to(
        &self,
        max_size: u64,
        unused_since: Option<u64>,
    ) -> Result<(usize, u64), StoreError> {
        // One eviction at a time, or two could count the same blob out twice.
        let _one = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<(String, BlobMeta)> = self
            .index
            .blobs()
            .filter_map(|(k, m)| m.ok().map(|m| (k, m)))
            .collect();
        entries.sort_by_key(|(_, m)| m.last_access);
        let (mut count, mut bytes) = (0, 0);
        for (hex, meta) in entries {
            let too_old = unused_since.is_some_and(|t| meta.last_access < t);
            if self.total_bytes() <= max_size && !too_old {
                continue;
            }
            let path = self.blob_path(&hex);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict blob");
                    continue;
                }
            }
            self.forget(&hex, meta.size)?;
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            count += 1;
            bytes += meta.size;
            tracing::debug!(digest = %hex, size = meta.size, "evicted");
        }
        Ok((count, bytes))
    }

    /// Every indexed blob with its metadata.
    pub fn entries(&self) -> Vec<(String, BlobMeta)> {
        self.index
            .blobs()
            .filter_map(|(k, m)| m.ok().map(|m| (k, m)))
            .collect()
    }

    /// Re-hashes every stored file; removes (and returns) those that do not match.
    pub fn verify_all(
        &self,
        mut progress: impl FnMut(&str, bool),
    ) -> Result<Vec<String>, StoreError> {
        let mut bad = Vec::new();
        for (hex, meta) in self.entries() {
            let path = self.blob_path(&hex);
            let ok = hash_file(&path).ok().as_deref() == Some(hex.as_str())
                && std::fs::metadata(&path)
                    .map(|m| m.len() == meta.size)
                    .unwrap_or(false);
            progress(&hex, ok);
            if !ok {
                let _ = std::fs::remove_file(&path);
                self.forget(&hex, meta.size)?;
                bad.push(hex);
            }
        }
        self.index.flush()?;
        Ok(bad)
    }

    /// Removes a kept blob: the file first, so a crash in between leaves an index entry
    /// whose file is gone, which the next start drops. Readers keep their open descriptors.
    pub fn remove(&self, digest: &Digest) -> Result<bool, StoreError> {
        let Some(meta) = self.meta(digest) else {
            return Ok(false);
        };
        let path = self.blob_path(digest.hex());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        self.forget(digest.hex(), meta.size)?;
        Ok(true)
    }

    /// Makes what is stored so far durable: the renames into place, then the index. `warm`
    /// and `export` call it before they report success, and the server when it stops.
    pub fn flush(&self) -> Result<(), StoreError> {
        let dirs: Vec<PathBuf> = self
            .renamed_into
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        // One fsync per directory, waiting on the disk each time: a few at once, so that a
        // warm of many packages (one directory per two-hex prefix) does not end on a queue
        // of them. A chunk whose thread cannot be started is synced here.
        let sync_all = |chunk: &[PathBuf]| -> Vec<(PathBuf, std::io::Error)> {
            chunk
                .iter()
                .filter_map(|dir| {
                    let r = File::open(dir).and_then(|d| d.sync_all());
                    r.err().map(|e| (dir.clone(), e))
                })
                .collect()
        };
        let per_thread = dirs.len().div_ceil(DIR_SYNC_THREADS).max(1);
        let failed: Vec<(PathBuf, std::io::Error)> = std::thread::scope(|scope| {
            let mut failed = Vec::new();
            let mut workers = Vec::new();
            for chunk in dirs.chunks(per_thread) {
                match std::thread::Builder::new().spawn_scoped(scope, move || sync_all(chunk)) {
                    Ok(w) => workers.push(w),
                    Err(_) => failed.extend(sync_all(chunk)),
                }
            }
            for w in workers {
                failed.extend(w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            failed
        });
        let mut failed = failed.into_iter();
        if let Some((dir, e)) = failed.next() {
            // Still to be made durable: the next flush tries them again.
            let mut pending = self.renamed_into.lock().unwrap_or_else(|p| p.into_inner());
            pending.insert(dir.clone());
            pending.extend(failed.map(|(d, _)| d));
            return Err(io_err(&dir)(e));
        }
        self.index.flush()?;
        Ok(())
    }
}

fn clear_dir(dir: &Path) -> Result<usize, StoreError> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let _ = std::fs::remove_file(entry.path());
        n += 1;
    }
    Ok(n)
}

/// Lowercase hex sha256 of a file.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The `h1:` hash of a stored package, or `None` if it is not a readable zip.
fn h1_of_file(path: &Path) -> Option<String> {
    derive_h1(path).ok().flatten()
}

/// The `h1:` hash of a stored package: `None` if it is not a zip, an error if it could not
/// be read (which says nothing about the package).
fn derive_h1(path: &Path) -> std::io::Result<Option<String>> {
    use crate::provider::hash::HashError;
    match crate::provider::hash::h1_from_reader(File::open(path)?) {
        Ok(h1) => Ok(Some(h1)),
        // A file in the zip that does not inflate or fails its CRC: a broken zip.
        Err(HashError::Io(e)) | Err(HashError::Zip(zip::result::ZipError::Io(e)))
            if e.kind() != ErrorKind::InvalidData && e.kind() != ErrorKind::InvalidInput =>
        {
            Err(e)
        }
        Err(_) => Ok(None),
    }
}

/// A point-in-time summary, also written by a running server to `DIR/stats.json` so that
/// `cache stats` can report while the server owns the directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub written_at: u64,
    pub pid: u32,
    pub entries: usize,
    pub bytes: u64,
    pub max_size: u64,
    pub oldest_stored_at: Option<u64>,
    pub hits: u64,
    pub misses: u64,
    pub joins: u64,
    pub origin_fetches: u64,
    pub bytes_from_origin: u64,
    pub digest_mismatches: u64,
    pub evictions: u64,
}

impl BlobStore {
    pub fn snapshot(&self) -> StatsSnapshot {
        let entries = self.entries();
        let c = &self.counters;
        StatsSnapshot {
            written_at: now_secs(),
            pid: std::process::id(),
            entries: entries.len(),
            bytes: self.total_bytes(),
            max_size: self.max_size,
            oldest_stored_at: entries.iter().map(|(_, m)| m.stored_at / 1000).min(),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            joins: c.joins.load(Ordering::Relaxed),
            origin_fetches: c.origin_fetches.load(Ordering::Relaxed),
            bytes_from_origin: c.bytes_from_origin.load(Ordering::Relaxed),
            digest_mismatches: c.digest_mismatches.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
        }
    }

    /// Writes [`StatsSnapshot`] to `DIR/stats.json` (temp file + rename).
    pub fn write_stats_file(&self) -> std::io::Result<()> {
        let snap = self.snapshot();
        let tmp = self.root.join("tmp").join("stats.json.new");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&snap).expect("serialisable"),
        )?;
        std::fs::rename(&tmp, self.root.join("stats.json"))
    }
}

/// The stats a running server last wrote into `dir`.
pub fn read_stats_file(dir: &Path) -> Option<StatsSnapshot> {
    let data = std::fs::read(dir.join("stats.json")).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize;

    fn source() -> BlobSource {
        BlobSource {
            mirror: "m".into(),
            repository: "r".into(),
            anonymous: true,
        }
    }

    /// A blob arriving in `parts` chunks, slowly enough that readers overlap the fill.
    fn origin(
        data: Vec<u8>,
        parts: usize,
        calls: Arc<AtomicUsize>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<BlobStream, OciError>> {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let len = data.len() as u64;
                let chunk = data.len().div_ceil(parts);
                let chunks: Vec<Bytes> = data.chunks(chunk).map(Bytes::copy_from_slice).collect();
                let stream = futures::stream::iter(chunks).then(|c| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    Ok::<_, OciError>(c)
                });
                Ok(BlobStream {
                    content_length: Some(len),
                    stream: Box::pin(stream),
                })
            })
        }
    }

    async fn read_all(fill: Arc<Fill>) -> Result<Vec<u8>, FillError> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(fill.stream(0, None));
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn open(dir: &Path, max: u64) -> Arc<BlobStore> {
        BlobStore::open(&StoreConfig {
            directory: dir.to_owned(),
            max_size: max,
            max_package_size: crate::config::Limits::default().max_package_size,
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cold_requests_share_one_fetch_and_the_blob_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of_bytes(&data);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        let mut any_fill: Option<Arc<Fill>> = None;
        for _ in 0..20 {
            let lookup = store.get_or_fill(
                &digest,
                source(),
                "application/zip",
                origin(data.clone(), 50, calls.clone()),
            );
            let Lookup::Fill { fill, .. } = lookup else {
                panic!("cold blob reported as cached")
            };
            any_fill.get_or_insert_with(|| fill.clone());
            readers.push(tokio::spawn(read_all(fill)));
        }
        for r in readers {
            assert_eq!(r.await.unwrap().unwrap(), data);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Clients get the last byte once it is verified; the blob is filed away just after.
        any_fill.expect("a fill").finished().await.unwrap();
        // Now it is a hit, with the bytes on disk and no temp files left.
        let Lookup::Hit(hit) = store.get_or_fill(
            &digest,
            source(),
            "application/zip",
            origin(data.clone(), 1, calls.clone()),
        ) else {
            panic!("expected a hit")
        };
        assert_eq!(hit.meta.size, data.len() as u64);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    /// Fills `data` into `store` and waits until it is kept.
    async fn keep_one(store: &Arc<BlobStore>, data: &[u8]) -> Digest {
        let digest = Digest::of_bytes(data);
        let Lookup::Fill { fill, .. } = store.get_or_fill(
            &digest,
            source(),
            "application/zip",
            origin(data.to_vec(), 3, Arc::new(AtomicUsize::new(0))),
        ) else {
            panic!("a cold blob reported as cached")
        };
        fill.finished().await.unwrap();
        digest
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_h1_hashes_are_derived_on_first_use_or_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let zip_a = crate::provider::hash::tests::zip_of(&[("terraform-provider-a", b"a")]);
        let zip_b = crate::provider::hash::tests::zip_of(&[("terraform-provider-b", b"bb")]);
        let not_a_zip = b"not a zip".to_vec();

        // The server's way: derived as the package is kept.
        let kept_now = keep_one(&store, &zip_a).await;
        let meta = store.meta(&kept_now).unwrap();
        assert_eq!(meta.h1, crate::provider::hash::h1_from_zip(&zip_a).ok());
        assert!(!meta.h1_pending);

        // warm's way: left pending, then derived (and recorded) on first use.
        store.set_fill_mode(FillMode::Batch);
        let deferred = keep_one(&store, &zip_b).await;
        let meta = store.meta(&deferred).unwrap();
        assert_eq!((meta.h1, meta.h1_pending), (None, true));
        let generation = store.generation();
        let expected = crate::provider::hash::h1_from_zip(&zip_b).ok();
        assert_eq!(store.package_h1(&deferred), expected);
        assert!(
            store.generation() > generation,
            "answers built on the store must be rebuilt"
        );
        let meta = store.meta(&deferred).unwrap();
        assert_eq!((meta.h1, meta.h1_pending), (expected, false));

        // The background pass settles every pending entry; a non-zip settles to no hash.
        let other = keep_one(&store, &not_a_zip).await;
        assert!(store.meta(&other).unwrap().h1_pending);
        store.clone().derive_pending_hashes().await;
        let meta = store.meta(&other).unwrap();
        assert_eq!((meta.h1, meta.h1_pending), (None, false));

        // A zip whose file fails to inflate or its CRC, stored as it came: no h1, settled.
        let mut broken = crate::provider::hash::tests::zip_of(&[("d", &[b'd'; 64])]);
        let data_start = 30 + 1; // the local header and the one-byte name
        broken[data_start + 1] ^= 0x55;
        let broken = keep_one(&store, &broken).await;
        assert_eq!(store.package_h1(&broken), None);
        assert!(!store.meta(&broken).unwrap().h1_pending);

        // A package damaged on disk since it was stored gets no hash: it is removed.
        let damaged = keep_one(
            &store,
            &crate::provider::hash::tests::zip_of(&[("c", b"ccc")]),
        )
        .await;
        let path = store.blob_path(damaged.hex());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(store.package_h1(&damaged), None);
        assert!(store.meta(&damaged).is_none() && !path.exists());

        // What is recorded survives a restart (once the eviction checks the fills spawned
        // have let go of the store, and with it the cache lock).
        for _ in 0..500 {
            if Arc::strong_count(&store) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(store);
        let store = open(dir.path(), 1 << 30);
        let meta = store.meta(&deferred).unwrap();
        assert!(!meta.h1_pending && meta.h1.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_bytes_are_never_delivered_whole_nor_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let good: Vec<u8> = vec![7; 1_000_000];
        let mut bad = good.clone();
        bad[999_999] = 8;
        let digest = Digest::of_bytes(&good);
        let calls = Arc::new(AtomicUsize::new(0));
        let Lookup::Fill { fill, .. } = store.get_or_fill(
            &digest,
            source(),
            "application/zip",
            origin(bad, 20, calls.clone()),
        ) else {
            panic!()
        };
        let mut got = 0;
        let mut s = Box::pin(fill.clone().stream(0, None));
        let mut failed = false;
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => got += b.len(),
                Err(FillError::Origin(e)) => {
                    assert!(matches!(*e, OciError::DigestMismatch { .. }));
                    failed = true;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(
            failed && got < good.len(),
            "got {got} bytes, failed={failed}"
        );
        drop(s);
        drop(fill);
        // The failed fill lets go of its temp file when its task ends.
        for _ in 0..100 {
            if std::fs::read_dir(dir.path().join("tmp")).unwrap().count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(store.meta(&digest).is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // The next request tries the origin again.
        let Lookup::Fill { fill, started } = store.get_or_fill(
            &digest,
            source(),
            "application/zip",
            origin(good.clone(), 3, calls.clone()),
        ) else {
            panic!()
        };
        assert!(started);
        assert_eq!(read_all(fill).await.unwrap(), good);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eviction_keeps_the_total_under_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 2500);
        let calls = Arc::new(AtomicUsize::new(0));
        let mut digests = Vec::new();
        for i in 0..5u8 {
            let data = vec![i; 1000];
            let d = Digest::of_bytes(&data);
            let Lookup::Fill { fill, .. } = store.get_or_fill(
                &d,
                source(),
                "application/zip",
                origin(data, 2, calls.clone()),
            ) else {
                panic!()
            };
            read_all(fill.clone()).await.unwrap();
            fill.finished().await.unwrap();
            digests.push(d);
            // Distinct access times, so the LRU order is the order of the loop.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Eviction also runs in the background after each fill; run it here to not race it.
        store.evict_if_needed();
        assert!(store.total_bytes() <= 2500, "{}", store.total_bytes());
        assert!(
            store.meta(&digests[4]).is_some(),
            "the newest blob must stay"
        );
        assert!(store.meta(&digests[0]).is_none(), "the oldest blob must go");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_larger_than_the_cache_stream_through_unkept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 100);
        let data = vec![1u8; 5000];
        let d = Digest::of_bytes(&data);
        let calls = Arc::new(AtomicUsize::new(0));
        let Lookup::Fill { fill, .. } = store.get_or_fill(
            &d,
            source(),
            "application/zip",
            origin(data.clone(), 5, calls.clone()),
        ) else {
            panic!()
        };
        assert_eq!(read_all(fill).await.unwrap(), data);
        assert!(store.meta(&d).is_none());
    }

    #[test]
    fn restart_repairs_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"good blob".to_vec();
        let good_hex = hex::encode(Sha256::digest(&good));
        {
            let store = open(dir.path(), 1 << 20);
            // An indexed entry whose file vanished.
            store
                .index
                .put_blob(
                    &"ab".repeat(32),
                    &BlobMeta {
                        size: 3,
                        media_type: "x".into(),
                        stored_at: 0,
                        last_access: 0,
                        h1: None,
                        sources: vec![],
                        h1_pending: false,
                    },
                )
                .unwrap();
            store.flush().unwrap();
        }
        // A temp file, a good unindexed file, and a corrupt unindexed file.
        std::fs::write(dir.path().join("tmp").join("partial"), b"half").unwrap();
        let p = dir.path().join("blobs/sha256").join(&good_hex[..2]);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(&good_hex), &good).unwrap();
        let bad_hex = "cd".repeat(32);
        let q = dir.path().join("blobs/sha256/cd");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join(&bad_hex), b"not what the name says").unwrap();

        let store = open(dir.path(), 1 << 20);
        let r = store.repair_report().clone();
        assert_eq!(r.temp_files_removed, 1);
        assert_eq!(r.entries_without_file, 1);
        assert_eq!(r.files_reindexed, 1);
        assert_eq!(r.bad_files_removed, 1);
        assert_eq!(store.total_bytes(), good.len() as u64);
        assert!(store
            .meta(&Digest::from_sha256_hex(&good_hex).unwrap())
            .is_some());
        assert!(!q.join(&bad_hex).exists());
    }

    #[test]
    fn an_unreadable_index_is_rebuilt_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"payload".to_vec();
        let hex = hex::encode(Sha256::digest(&data));
        drop(open(dir.path(), 1 << 20));
        let p = dir.path().join("blobs/sha256").join(&hex[..2]);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(&hex), &data).unwrap();
        // Wreck the index.
        let index = dir.path().join("index");
        std::fs::remove_dir_all(&index).unwrap();
        std::fs::write(&index, b"garbage, not a directory").unwrap();
        let store = open(dir.path(), 1 << 20);
        assert!(store.repair_report().index_rebuilt);
        assert!(store
            .meta(&Digest::from_sha256_hex(&hex).unwrap())
            .is_some());
    }
}
