//! Cached packages over plain HTTP/1.1 go from the page cache to the socket with
//! `sendfile(2)`, as nginx does, instead of being read into memory and written back out.
//!
//! hyper has no file bodies, so the body and the socket agree on placeholders: the body
//! queues a [`Region`] of the file and yields a frame of that length that points into
//! [`PLACEHOLDER`]; when hyper writes a buffer from inside [`PLACEHOLDER`],
//! [`SendfileTcp`] sends the region's bytes from the file instead. Placeholders are only
//! made for requests that arrived on a [`SendfileTcp`] speaking HTTP/1 (the
//! [`FileSender`] request extension), whose hyper connection queues body buffers instead
//! of copying them (`writev(true)`), so a placeholder byte can never reach a client: a
//! buffer that does not line up with the queued region ends the connection instead.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::body::Body;

/// The largest frame: hyper holds one at a time (its write buffer limit is far smaller),
/// so this only bounds how often the body is polled.
const FRAME: usize = 8 * 1024 * 1024;

/// The most one `sendfile` call sends. A file not in the page cache is read from disk
/// inside the call, on the async thread: this bounds that wait, like nginx's
/// `sendfile_max_chunk`.
const CALL_MAX: usize = 2 * 1024 * 1024;

/// Never read or written: only its addresses mean anything. Zero-initialised, so it lives
/// in `.bss` and costs no memory unless touched.
static PLACEHOLDER: [u8; FRAME] = [0; FRAME];

/// A part of a file to send in place of one placeholder frame.
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// The regions a connection's response bodies have queued, in the order hyper will write
/// their placeholders. Shared by the connection's socket and its requests.
#[derive(Clone, Default)]
pub struct FileSender {
    regions: Arc<Mutex<VecDeque<Region>>>,
}

impl FileSender {
    pub fn new() -> FileSender {
        FileSender::default()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Region>> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where `buf` starts inside [`PLACEHOLDER`], if it lies inside it.
fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let base = PLACEHOLDER.as_ptr() as usize;
    let start = buf.as_ptr() as usize;
    (!buf.is_empty() && start >= base && start + buf.len() <= base + FRAME).then(|| start - base)
}

/// The bytes `[start, end)` of `file` as a body of placeholder frames, for a request that
/// carried `sender`.
pub fn file_body(sender: FileSender, file: Arc<File>, start: u64, end: u64) -> Body {
    use http_body_util::BodyExt;
    let frames = futures::stream::unfold((sender, file, start), move |(sender, file, pos)| {
        let len = usize::try_from(end.saturating_sub(pos)).unwrap_or(usize::MAX);
        let len = len.min(FRAME);
        let next = (len > 0).then(|| {
            // Start reading the frame from disk now, in the background, so the sendfile
            // calls that follow find it in the page cache instead of waiting on the disk.
            let _ = rustix::fs::fadvise(
                &*file,
                pos,
                std::num::NonZeroU64::new(len as u64),
                rustix::fs::Advice::WillNeed,
            );
            sender.queue().push_back(Region {
                file: file.clone(),
                offset: pos,
                len,
            });
            let frame = Frame::data(Bytes::from_static(&PLACEHOLDER[..len]));
            (Ok(frame), (sender, file, pos + len as u64))
        });
        std::future::ready(next)
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// A plain TCP connection that writes placeholder buffers with `sendfile`.
pub struct SendfileTcp {
    tcp: TcpStream,
    sender: FileSender,
}

impl SendfileTcp {
    pub fn new(tcp: TcpStream, sender: FileSender) -> SendfileTcp {
        SendfileTcp { tcp, sender }
    }

    /// Sends (part of) the bytes standing in for `buf`, which starts `at` bytes into
    /// the placeholder of the first queued region.
    fn poll_send_region(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
    ) -> Poll<io::Result<usize>> {
        let (file, offset, count) = {
            let queue = self.sender.queue();
            let Some(region) = queue.front() else {
                return Poll::Ready(Err(mismatch()));
            };
            // hyper consumes a frame from its front: what is left of it must end exactly
            // where the region does.
            if at + buf.len() != region.len {
                return Poll::Ready(Err(mismatch()));
            }
            (
                region.file.clone(),
                region.offset + at as u64,
                buf.len().min(CALL_MAX),
            )
        };
        loop {
            std::task::ready!(self.tcp.poll_write_ready(cx))?;
            let mut pos = offset;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &*file, Some(&mut pos), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored file is shorter than its index entry",
                    )))
                }
                Ok(n) => {
                    if n == buf.len() {
                        self.sender.queue().pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
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
        let content = pattern(FRAME + 3 * 1024 * 1024);
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&content).unwrap();
        let file = Arc::new(tmp);
        let (ours, mut peer) = connected().await;
        let sender = FileSender::new();
        let mut conn = SendfileTcp::new(ours, sender.clone());
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
        assert!(sender.queue().is_empty());
    }

    #[tokio::test]
    async fn a_placeholder_without_its_region_ends_the_connection_instead_of_sending_zeros() {
        let (ours, mut peer) = connected().await;
        let sender = FileSender::new();
        let mut conn = SendfileTcp::new(ours, sender.clone());
        let err = conn.write_all(&PLACEHOLDER[..10]).await.unwrap_err();
        assert!(err.to_string().contains("placeholder"), "{err}");
        // A placeholder that does not end where its region does.
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&pattern(100)).unwrap();
        let mut body = file_body(sender.clone(), Arc::new(tmp), 0, 100);
        let _frame = body.frame().await;
        assert!(conn.write_all(&PLACEHOLDER[..50]).await.is_err());
        drop(conn);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "sent {} bytes", got.len());
    }
}
