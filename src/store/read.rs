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
    spawn_read(file, pos, len)
        .await
        .map_err(std::io::Error::other)?
}

fn spawn_read(
    file: Arc<File>,
    pos: u64,
    len: u64,
) -> tokio::task::JoinHandle<std::io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || {
        let mut f = &*file;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    })
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

/// The next read of a [`file_range`] stream.
enum NextRead {
    /// Already running on the blocking pool (read-ahead): the disk read of chunk N+1 overlaps
    /// the socket write of chunk N, so on two CPUs the two copies run side by side.
    Running(tokio::task::JoinHandle<std::io::Result<Bytes>>),
    /// Not started: with many streams, one chunk per stream bounds the memory they hold.
    Due,
}

fn chunk_size() -> u64 {
    if STREAMS.load(Ordering::Relaxed) <= LARGE_CHUNK_MAX_STREAMS {
        LARGE_CHUNK
    } else {
        CHUNK
    }
}

fn start_read(file: &Arc<File>, pos: u64, end: u64) -> NextRead {
    let len = (end - pos).min(chunk_size());
    NextRead::Running(spawn_read(file.clone(), pos, len))
}

/// The bytes `[start, end)` of a complete file, read one chunk ahead of the consumer while
/// few streams are open.
pub fn file_range(
    file: Arc<File>,
    start: u64,
    end: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let count = StreamCount::new();
    let state = (file, start, NextRead::Due, count);
    futures::stream::try_unfold(state, move |(file, pos, next, count)| async move {
        if pos >= end {
            return Ok(None);
        }
        let chunk = match next {
            NextRead::Running(handle) => handle.await.map_err(std::io::Error::other)??,
            NextRead::Due => read_chunk(file.clone(), pos, (end - pos).min(chunk_size())).await?,
        };
        if chunk.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stored file is shorter than its index entry",
            ));
        }
        let pos = pos + chunk.len() as u64;
        // One read per descriptor at a time (read_chunk seeks): the next starts only now.
        let next = if pos < end && STREAMS.load(Ordering::Relaxed) <= LARGE_CHUNK_MAX_STREAMS {
            start_read(&file, pos, end)
        } else {
            NextRead::Due
        };
        Ok(Some((chunk, (file, pos, next, count))))
    })
}
