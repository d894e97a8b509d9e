//! Cached packages over plain HTTP/1.1 go from the page cache to the socket with
//! `sendfile(2)`, as nginx does, instead of being read into memory and written back out.
//!
//! hyper has no file bodies, so the body and the socket agree on placeholders: the body
//! queues a [`Region`] of the file and yields a frame of that length that points into
//! [`placeholder`], at an address of its own; when hyper writes a buffer from inside
//! [`placeholder`], [`SendfileTcp`] sends the region's bytes from the file instead.
//! Placeholders are only made for requests that arrived on a [`SendfileTcp`] speaking
//! HTTP/1 (the [`FileSender`] request extension), whose hyper connection queues body
//! buffers instead of copying them (`writev(true)`; hyper's `pipeline_flush` would copy
//! them and must stay off), so a placeholder byte can never reach a client: a buffer that
//! does not line up with the queued region, or a response that starts while regions are
//! still queued, ends the connection instead.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::body::{Body, BoxError};

/// Whether this platform sends files this way; elsewhere plain HTTP bodies are streamed
/// like HTTPS ones.
pub const SUPPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// The largest frame: hyper holds one at a time (its write buffer limit is far smaller),
/// so this only bounds how often the body is polled.
const FRAME: usize = 8 * 1024 * 1024;

/// Each region's placeholder starts at its own slot, so consecutive regions never share an
/// address: a placeholder paired with the wrong region is caught, whatever the lengths.
const SLOT: usize = 4096;
const SLOTS: usize = 256;

/// The most one `sendfile` call sends, like nginx's `sendfile_max_chunk`.
const CALL_MAX: usize = 2 * 1024 * 1024;

/// A file not in the page cache is read inside `sendfile`, on an async thread, and a fast
/// client never makes the socket wait: after this many bytes in one go the task yields,
/// so other connections get their turn.
const YIELD_AFTER: usize = 2 * CALL_MAX;

/// Never read or written: only its addresses mean anything. A zeroed allocation, whose
/// pages the kernel only provides when touched, so it costs no memory.
fn placeholder() -> &'static [u8] {
    static PLACEHOLDER: OnceLock<&'static [u8]> = OnceLock::new();
    PLACEHOLDER.get_or_init(|| Vec::leak(vec![0u8; FRAME + SLOTS * SLOT]))
}

/// A part of a file to send in place of one placeholder frame, which starts `start` bytes
/// into [`placeholder`].
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
    start: usize,
}

#[derive(Default)]
struct Queue {
    regions: VecDeque<Region>,
    next_slot: usize,
}

/// The regions a connection's response bodies have queued, in the order hyper will write
/// their placeholders. Shared by the connection's socket and its requests.
#[derive(Clone, Default)]
pub struct FileSender {
    queue: Arc<Mutex<Queue>>,
}

impl FileSender {
    pub fn new() -> FileSender {
        FileSender::default()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `[offset, offset + len)` of `file`; returns its placeholder.
    fn push(&self, file: &Arc<File>, offset: u64, len: usize) -> Bytes {
        let mut q = self.queue();
        let start = q.next_slot * SLOT;
        q.next_slot = (q.next_slot + 1) % SLOTS;
        q.regions.push_back(Region {
            file: file.clone(),
            offset,
            len,
            start,
        });
        Bytes::from_static(&placeholder()[start..start + len])
    }
}

/// Where `buf` starts inside [`placeholder`], if it lies inside it.
fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let whole = placeholder();
    let base = whole.as_ptr() as usize;
    let start = buf.as_ptr() as usize;
    (!buf.is_empty() && start >= base && start + buf.len() <= base + whole.len())
        .then(|| start - base)
}

/// The bytes `[start, end)` of `file` as a body of placeholder frames, for a request that
/// carried `sender`.
pub fn file_body(sender: FileSender, file: Arc<File>, start: u64, end: u64) -> Body {
    use http_body_util::BodyExt;
    let state = (sender, file, start, true);
    let frames = futures::stream::unfold(state, move |(sender, file, pos, first)| {
        let len = usize::try_from(end.saturating_sub(pos)).unwrap_or(usize::MAX);
        let len = len.min(FRAME);
        let next = (len > 0).then(|| {
            // hyper writes a response head only once the previous body is all sent, so a
            // region still queued now means the bookkeeping is off: end the connection.
            if first && !sender.queue().regions.is_empty() {
                let e: BoxError = "a response started before the previous one was sent".into();
                return (Err(e), (sender, file, end, false));
            }
            // Start reading this frame and the next from disk in the background, so the
            // sendfile calls find them in the page cache instead of waiting on the disk.
            advise_will_need(&file, pos, (end - pos).min(2 * FRAME as u64));
            let frame = Frame::data(sender.push(&file, pos, len));
            (Ok(frame), (sender, file, pos + len as u64, false))
        });
        std::future::ready(next)
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn advise_will_need(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::WillNeed,
    );
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn advise_will_need(_: &File, _: u64, _: u64) {}

/// One `sendfile` call; `Unsupported` where the file's filesystem cannot (some FUSE ones).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_file(out: &TcpStream, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    use rustix::io::Errno;
    let mut pos = offset;
    rustix::fs::sendfile(out, file, Some(&mut pos), count).map_err(|e| {
        if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP {
            io::Error::new(io::ErrorKind::Unsupported, "sendfile cannot send this file")
        } else {
            io::Error::from(e)
        }
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_file(_: &TcpStream, _: &File, _: u64, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The same through a buffer, for files `sendfile` cannot send.
fn copy_through_buffer(
    out: &TcpStream,
    file: &File,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; count.min(256 * 1024)];
    let n = file.read_at(&mut buf, offset)?;
    if n == 0 {
        return Ok(0);
    }
    rustix::io::write(out, &buf[..n]).map_err(io::Error::from)
}

/// A plain TCP connection that writes placeholder buffers with `sendfile`.
pub struct SendfileTcp {
    tcp: TcpStream,
    sender: FileSender,
    /// Bytes sent since the socket last made us wait (see [`YIELD_AFTER`]).
    sent_in_a_row: usize,
    /// `sendfile` failed as unsupported: copy through a buffer instead.
    copying: bool,
}

impl SendfileTcp {
    pub fn new(tcp: TcpStream, sender: FileSender) -> SendfileTcp {
        SendfileTcp {
            tcp,
            sender,
            sent_in_a_row: 0,
            copying: false,
        }
    }

    /// Sends (part of) the bytes standing in for `buf`, which starts `at` bytes into
    /// [`placeholder`].
    fn poll_send_region(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
    ) -> Poll<io::Result<usize>> {
        if self.sent_in_a_row >= YIELD_AFTER {
            self.sent_in_a_row = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let (file, offset, count) = {
            let queue = self.sender.queue();
            let Some(region) = queue.regions.front() else {
                return Poll::Ready(Err(mismatch()));
            };
            // hyper consumes a frame from its front: what is left of it must lie in this
            // region's placeholder and end exactly where it does.
            if at < region.start || at + buf.len() != region.start + region.len {
                return Poll::Ready(Err(mismatch()));
            }
            let done = at - region.start;
            (
                region.file.clone(),
                region.offset + done as u64,
                buf.len().min(CALL_MAX),
            )
        };
        loop {
            match self.tcp.poll_write_ready(cx) {
                Poll::Pending => {
                    self.sent_in_a_row = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let copying = self.copying;
            let tcp = &self.tcp;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                if copying {
                    copy_through_buffer(tcp, &file, offset, count)
                } else {
                    send_file(tcp, &file, offset, count)
                }
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored file is shorter than its index entry",
                    )))
                }
                Ok(n) => {
                    self.sent_in_a_row += n;
                    if n == buf.len() {
                        self.sender.queue().regions.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::Unsupported && !self.copying => {
                    tracing::warn!(error = %e, "sendfile unsupported for the cache directory's filesystem; copying through memory instead");
                    self.copying = true;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn mismatch() -> io::Error {
    io::Error::other("a file body's placeholder does not match its queued region")
}

impl AsyncRead for SendfileTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match placeholder_offset(buf) {
            Some(at) => this.poll_send_region(cx, buf, at),
            None => Pin::new(&mut this.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if let Some(at) = placeholder_offset(first) {
            return this.poll_send_region(cx, first, at);
        }
        // Ordinary bytes (headers, other bodies) up to the first placeholder.
        let plain = bufs
            .iter()
            .position(|b| placeholder_offset(b).is_some())
            .unwrap_or(bufs.len());
        Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[tokio::test]
    async fn placeholder_frames_carry_the_file_bytes_and_ordinary_bytes_pass_through() {
        send_through(false).await;
    }

    /// The same where sendfile is unsupported (some FUSE filesystems): copied through memory.
    #[tokio::test]
    async fn without_sendfile_the_bytes_are_copied_through_memory() {
        send_through(true).await;
    }

    async fn send_through(copying: bool) {
        let content = pattern(FRAME + 3 * 1024 * 1024);
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&content).unwrap();
        let file = Arc::new(tmp);
        let (ours, mut peer) = connected().await;
        let sender = FileSender::new();
        let mut conn = SendfileTcp::new(ours, sender.clone());
        conn.copying = copying;
        let (start, end) = (100u64, content.len() as u64 - 5);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        conn.write_all(b"head:").await.unwrap();
        let mut body = file_body(sender.clone(), file, start, end);
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(placeholder_offset(&data).is_some());
            // write_all writes what is left after a partial write: an advanced placeholder.
            conn.write_all(&data).await.unwrap();
            frames += 1;
        }
        conn.write_all(b":tail").await.unwrap();
        conn.shutdown().await.unwrap();
        drop(conn);
        let got = reader.await.unwrap();
        assert_eq!(frames, 2);
        let mut expected = b"head:".to_vec();
        expected.extend_from_slice(&content[start as usize..end as usize]);
        expected.extend_from_slice(b":tail");
        assert!(
            got == expected,
            "{} bytes, expected {}",
            got.len(),
            expected.len()
        );
        assert!(sender.queue().regions.is_empty());
    }

    #[tokio::test]
    async fn a_placeholder_without_its_region_ends_the_connection_instead_of_sending_zeros() {
        let (ours, mut peer) = connected().await;
        let sender = FileSender::new();
        let mut conn = SendfileTcp::new(ours, sender.clone());
        let err = conn.write_all(&placeholder()[..10]).await.unwrap_err();
        assert!(err.to_string().contains("placeholder"), "{err}");
        // A placeholder that does not end where its region does.
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&pattern(100)).unwrap();
        let mut body = file_body(sender.clone(), Arc::new(tmp), 0, 100);
        let _frame = body.frame().await;
        assert!(conn.write_all(&placeholder()[..50]).await.is_err());
        drop(conn);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "sent {} bytes", got.len());
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;
    use tokio::io::AsyncWriteExt;

    fn file_of(len: usize) -> Arc<File> {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&vec![1u8; len]).unwrap();
        Arc::new(tmp)
    }

    #[tokio::test]
    async fn a_stale_region_never_pairs_with_a_later_placeholder_of_the_same_length() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, _peer) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let sender = FileSender::new();
        let mut conn = SendfileTcp::new(ours.unwrap(), sender.clone());
        // A frame queued and then lost (never written), then another of the same length.
        let lost = file_body(sender.clone(), file_of(100), 0, 100)
            .frame()
            .await
            .unwrap()
            .unwrap();
        let second = sender.push(&file_of(100), 0, 100);
        assert_ne!(lost.data_ref().unwrap().as_ptr(), second.as_ptr());
        assert!(conn.write_all(&second).await.is_err());
        // And a new response while a region is still queued ends with an error.
        let mut third = file_body(sender.clone(), file_of(10), 0, 10);
        assert!(third.frame().await.unwrap().is_err());
    }

    #[test]
    fn consecutive_regions_get_distinct_placeholder_addresses() {
        let sender = FileSender::new();
        let file = file_of(1);
        let a = sender.push(&file, 0, FRAME);
        let b = sender.push(&file, 0, FRAME);
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert_eq!(placeholder_offset(&b), Some(SLOT));
    }
}
