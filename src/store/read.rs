//! Reading stored files in large reads on the blocking pool, so the async threads never wait
//! on the disk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::fill::CHUNK;

/// Up to `len` bytes at `pos` (fewer only at end of file). Each descriptor is read by one
/// stream at a time, so seeking it is safe; reading through `read_to_end` fills spare
/// capacity directly, without zeroing a buffer first.
pub async fn read_chunk(file: Arc<File>, pos: u64, len: u64) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut f = &*file;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Reads of a stored file while few are being streamed: fewer, larger reads (and hand-offs
/// to the blocking pool) per byte. With more streams, [`CHUNK`] bounds the memory they hold.
const LARGE_CHUNK: u64 = 1024 * 1024;
const LARGE_CHUNK_MAX_STREAMS: usize = 8;

/// Streams of stored files in progress, for choosing the read size.
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts one stream in [`STREAMS`] while it lives.
struct StreamCount;

impl StreamCount {
    fn new() -> StreamCount {
        STREAMS.fetch_add(1, Ordering::Relaxed);
        StreamCount
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bytes `[start, end)` of a complete file.
pub fn file_range(
    file: Arc<File>,
    start: u64,
    end: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let count = StreamCount::new();
    futures::stream::try_unfold((file, start, count), move |(file, pos, count)| async move {
        if pos >= end {
            return Ok(None);
        }
        let size = if STREAMS.load(Ordering::Relaxed) <= LARGE_CHUNK_MAX_STREAMS {
            LARGE_CHUNK
        } else {
            CHUNK
        };
        let chunk = read_chunk(file.clone(), pos, (end - pos).min(size)).await?;
        if chunk.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stored file is shorter than its index entry",
            ));
        }
        let next = pos + chunk.len() as u64;
        Ok(Some((chunk, (file, next, count))))
    })
}
