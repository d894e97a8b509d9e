//! Reading stored files in large positioned reads on the blocking pool, so the async threads
//! never wait on the disk and many readers can share one descriptor.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::fill::CHUNK;

/// Up to `len` bytes at `pos` (fewer only at end of file).
pub async fn read_chunk(file: Arc<File>, pos: u64, len: u64) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = BytesMut::zeroed(len as usize);
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], pos + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf.freeze())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The bytes `[start, end)` of a complete file.
pub fn file_range(
    file: Arc<File>,
    start: u64,
    end: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::try_unfold((file, start), move |(file, pos)| async move {
        if pos >= end {
            return Ok(None);
        }
        let chunk = read_chunk(file.clone(), pos, (end - pos).min(CHUNK)).await?;
        if chunk.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stored file is shorter than its index entry",
            ));
        }
        let next = pos + chunk.len() as u64;
        Ok(Some((chunk, (file, next))))
    })
}
