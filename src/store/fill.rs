//! Single-flight streaming fills: the first request for a cold digest starts one origin fetch
//! that writes a temp file; every request for that digest (the first included) reads the temp
//! file as it grows, so each gets bytes as they arrive and the origin is asked once.

use std::fs::File;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

use crate::oci::{Digest, OciError};

use super::read::read_chunk;

/// How much one read hands to the HTTP layer at a time.
pub const CHUNK: u64 = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Origin(Arc<OciError>),
    #[error("cannot read the package being downloaded: {0}")]
    Local(Arc<std::io::Error>),
    #[error("the download of this package stopped unexpectedly")]
    Abandoned,
}

#[derive(Debug, Clone)]
pub(super) enum FillState {
    /// Waiting for the origin's response headers.
    Connecting,
    /// `written` bytes received, of which the first `on_disk` are in the temp file and the
    /// rest in memory (only after a disk error).
    Running {
        total: Option<u64>,
        written: u64,
        on_disk: u64,
    },
    /// All bytes received and verified. `settled` once the blob is kept (renamed to the
    /// fill's `final_path` and indexed) or known not to be.
    Done {
        size: u64,
        on_disk: u64,
        settled: bool,
    },
    Failed(FillError),
}

/// Bytes that could not be written to disk (disk full): kept in memory so the clients
/// already streaming are still served.
#[derive(Default)]
pub(super) struct MemTail {
    pub start: u64,
    pub chunks: Vec<Bytes>,
}

impl MemTail {
    fn read(&self, pos: u64, max: u64) -> Option<Bytes> {
        let mut offset = self.start;
        for c in &self.chunks {
            let end = offset + c.len() as u64;
            if pos >= offset && pos < end {
                let from = (pos - offset) as usize;
                let to = ((pos - offset) + max).min(c.len() as u64) as usize;
                return Some(c.slice(from..to));
            }
            offset = end;
        }
        None
    }
}

pub struct Fill {
    pub digest: Digest,
    /// Where the fetch was made from, and whether anonymously.
    pub source: super::BlobSource,
    pub(super) temp_path: PathBuf,
    /// Where the blob lives once verified and kept.
    pub(super) final_path: PathBuf,
    pub(super) state: watch::Receiver<FillState>,
    pub(super) mem: Mutex<MemTail>,
}

impl Drop for Fill {
    fn drop(&mut self) {
        // Readers hold open descriptors; the name can go once nobody can still open it.
        if let Err(e) = std::fs::remove_file(&self.temp_path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(path = %self.temp_path.display(), error = %e, "cannot remove temp file");
            }
        }
    }
}

impl Fill {
    /// Waits for the origin's answer: the total size if it said, or the error.
    pub async fn started(&self) -> Result<Option<u64>, FillError> {
        let mut rx = self.state.clone();
        loop {
            let st = rx.borrow_and_update().clone();
            match st {
                FillState::Connecting => {}
                FillState::Running { total, .. } => return Ok(total),
                FillState::Done { size, .. } => return Ok(Some(size)),
                FillState::Failed(e) => return Err(e),
            }
            if rx.changed().await.is_err() {
                return Err(FillError::Abandoned);
            }
        }
    }

    /// Bytes received so far, and the total when the origin said.
    pub fn progress(&self) -> (u64, Option<u64>) {
        match &*self.state.borrow() {
            FillState::Running { written, total, .. } => (*written, *total),
            FillState::Done { size, .. } => (*size, Some(*size)),
            FillState::Connecting | FillState::Failed(_) => (0, None),
        }
    }

    /// Whether every byte is in and verified.
    pub fn is_verified(&self) -> bool {
        matches!(*self.state.borrow(), FillState::Done { .. })
    }

    /// Waits until every byte is in and verified; returns the size.
    pub async fn verified(&self) -> Result<u64, FillError> {
        self.wait_done(false).await
    }

    /// Waits until the blob is verified and kept in the store (or known not to be).
    pub async fn finished(&self) -> Result<u64, FillError> {
        self.wait_done(true).await
    }

    async fn wait_done(&self, settled_too: bool) -> Result<u64, FillError> {
        let mut rx = self.state.clone();
        loop {
            let st = rx.borrow_and_update().clone();
            match st {
                FillState::Done { size, settled, .. } if settled || !settled_too => {
                    return Ok(size)
                }
                FillState::Failed(e) => return Err(e),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(FillError::Abandoned);
            }
        }
    }

    /// The bytes `[start, end)` (to the end when `end` is `None`) as they arrive. The last
    /// byte of the blob is only released once the whole blob has matched its digest.
    pub fn stream(
        self: Arc<Self>,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, FillError>> + Send {
        let reader = Reader {
            rx: self.state.clone(),
            fill: self,
            file: None,
            pos: start,
            end,
            finished: false,
        };
        futures::stream::unfold(reader, |mut r| async move {
            if r.finished {
                return None;
            }
            match r.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), r)),
                Ok(None) => None,
                Err(e) => {
                    r.finished = true;
                    Some((Err(e), r))
                }
            }
        })
    }
}

struct Reader {
    fill: Arc<Fill>,
    rx: watch::Receiver<FillState>,
    file: Option<Arc<File>>,
    pos: u64,
    end: Option<u64>,
    finished: bool,
}

impl Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            let st = self.rx.borrow_and_update().clone();
            let (limit, done, on_disk) = match st {
                FillState::Connecting => (0, false, 0),
                FillState::Running {
                    written, on_disk, ..
                } => (written.saturating_sub(1), false, on_disk),
                FillState::Done { size, on_disk, .. } => (size, true, on_disk),
                FillState::Failed(e) => return Err(e),
            };
            let limit = self.end.map_or(limit, |e| e.min(limit));
            if self.pos < limit {
                let want = (limit - self.pos).min(CHUNK);
                let bytes = if self.pos < on_disk {
                    let file = self.open().await?;
                    read_chunk(file, self.pos, want.min(on_disk - self.pos))
                        .await
                        .map_err(|e| FillError::Local(Arc::new(e)))?
                } else {
                    let mem = self.fill.mem.lock().unwrap_or_else(|p| p.into_inner());
                    mem.read(self.pos, want).ok_or(FillError::Abandoned)?
                };
                if bytes.is_empty() {
                    return Err(FillError::Abandoned);
                }
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            if done {
                return Ok(None);
            }
            if self.rx.changed().await.is_err() {
                return Err(FillError::Abandoned);
            }
        }
    }

    async fn open(&mut self) -> Result<Arc<File>, FillError> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let temp = self.fill.temp_path.clone();
        let kept = self.fill.final_path.clone();
        let file = tokio::task::spawn_blocking(move || match File::open(&temp) {
            // Already verified and renamed into place: read the kept file instead.
            Err(e) if e.kind() == ErrorKind::NotFound => File::open(kept),
            other => other,
        })
        .await
        .map_err(|_| FillError::Abandoned)?
        .map_err(|e| FillError::Local(Arc::new(e)))?;
        let file = Arc::new(file);
        self.file = Some(file.clone());
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_tail_reads_across_chunks() {
        let t = MemTail {
            start: 10,
            chunks: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
        };
        assert_eq!(t.read(10, 100).unwrap(), "abc");
        assert_eq!(t.read(11, 1).unwrap(), "b");
        assert_eq!(t.read(13, 100).unwrap(), "defg");
        assert_eq!(t.read(15, 100).unwrap(), "fg");
        assert!(t.read(17, 1).is_none());
        assert!(t.read(9, 1).is_none());
    }
}
