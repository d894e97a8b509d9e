//! Accepting connections: the connection limit, the TLS handshake deadline, HTTP/1.1 and
//! HTTP/2 header limits, and the idle timeout that closes connections on which nothing moves.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use super::sendfile::{self, FileSender, SendfileTcp};
use super::{serve_one, AppState, Live};
use crate::config::Limits;

/// Requests of one connection being answered, and when the last one finished: while a
/// request is in progress the client is waiting for us, and idleness counts from its end.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the last request finished.
    last_done_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_done_ms.fetch_max(ms, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    fn last_done(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed))
    }
}

/// Which endpoints a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The mirror endpoints, and the operational ones unless an admin listener has them.
    Main { with_admin: bool },
    /// `/metrics`, `/healthz` and `/readyz` only.
    Admin,
}

impl Role {
    pub fn serves_mirrors(self) -> bool {
        matches!(self, Role::Main { .. })
    }

    pub fn serves_admin(self) -> bool {
        matches!(self, Role::Admin | Role::Main { with_admin: true })
    }
}

/// One listening socket and what it serves.
pub struct Listener {
    pub tcp: TcpListener,
    pub role: Role,
    /// Admin listeners speak plain HTTP, for local scrapers and probes.
    pub tls: bool,
}

/// Accepts connections on `listener` until `shutdown` completes; each connection is served
/// with the state current when it was accepted.
pub async fn accept_loop(
    listener: Listener,
    live: Arc<std::sync::RwLock<Live>>,
    limits: &Limits,
    graceful: &GracefulShutdown,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(http_builder(limits, listener.tls));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (handshake_timeout, idle) = (limits.header_read_timeout, limits.idle_timeout);
    tokio::pin!(shutdown);
    loop {
        // Beyond the limit, connections wait in the kernel's backlog instead of costing
        // us memory and descriptors.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        // The TLS certificate is the one current at accept time; the rest of the state is
        // looked up per request, so a reload applies at once, on open connections too.
        let acceptor = if listener.tls {
            live.read()
                .unwrap_or_else(|p| p.into_inner())
                .acceptor
                .clone()
        } else {
            None
        };
        let live = live.clone();
        let role = listener.role;
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // Plain HTTP/1 answers send cached files with sendfile(2); see `sendfile`.
        let file_sender = FileSender::new();
        let plain_sender = (sendfile::SUPPORTED && !listener.tls && acceptor.is_none())
            .then(|| file_sender.clone());
        tokio::spawn(async move {
            let _permit = permit;
            // The handshake and the first request head must both arrive within
            // header_read_timeout of the accept: hyper's own header timeout only starts once
            // it has chosen HTTP/1, and HTTP/2 has none.
            let deadline = Instant::now() + handshake_timeout;
            let got_request = Arc::new(AtomicBool::new(false));
            let seen = got_request.clone();
            // Requests being answered: while there are any, a silent client is waiting for
            // us (perhaps for a slow origin), not idling.
            let in_flight = Arc::new(Activity::new());
            let busy = in_flight.clone();
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                seen.store(true, Ordering::Relaxed);
                if let Some(sender) = &plain_sender {
                    req.extensions_mut().insert(sender.clone());
                }
                let state: Arc<AppState> =
                    live.read().unwrap_or_else(|p| p.into_inner()).state.clone();
                let busy = busy.clone();
                // Counted from the start, so a request still waiting for its answer counts.
                busy.begin();
                async move {
                    let resp = serve_one(state, peer, role, req).await;
                    let resp = resp.map(|b| b.hold(busy.clone()));
                    busy.end();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let first_request_late = async {
                tokio::time::sleep_until(deadline).await;
                if got_request.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            let tcp = IdleTimeout::new(SendfileTcp::new(tcp, file_sender), idle, in_flight.clone());
            let serve = async {
                match acceptor {
                    Some(acceptor) => {
                        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let conn = builder.serve_connection(TokioIo::new(tls), service);
                                watcher.watch(conn.into_owned()).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(tcp), service);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            let result = tokio::select! {
                r = serve => r,
                _ = first_request_late => {
                    tracing::debug!(%peer, "no request within header_read_timeout; closing");
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// hyper's HTTP/1 header count limit when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn http_builder(limits: &Limits, tls: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A request head larger than the buffer, or with more headers, gets a 431.
        .max_buf_size(limits.max_request_header_bytes.max(8192))
        .keep_alive(true);
    if !tls {
        // Body buffers are queued, never copied: a sendfile placeholder must reach the
        // socket as the very buffer the body gave (see `sendfile`).
        builder.http1().writev(true);
    }
    // hyper's own limit is 100 headers, parsed into a stack array; naming any count, even
    // 100, makes it allocate that array on the heap for every request.
    if limits.max_request_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_request_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

/// Fails reads and writes once no byte has moved either way for `limit`: a client that
/// stops reading a download, or holds a connection open saying nothing, gives it up.
pub struct IdleTimeout<T> {
    inner: T,
    limit: Duration,
    /// When a byte last moved. Progress only notes the time; the timer is re-armed lazily
    /// when it fires, so the hot path never touches the timer wheel.
    last_progress: Instant,
    /// Since when a write has been waiting for the client to read.
    write_blocked_since: Option<Instant>,
    deadline: Pin<Box<Sleep>>,
    /// Requests of this connection being answered: reads wait for them without limit.
    in_flight: Arc<Activity>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, limit: Duration, in_flight: Arc<Activity>) -> IdleTimeout<T> {
        IdleTimeout {
            inner,
            limit,
            last_progress: Instant::now(),
            write_blocked_since: None,
            deadline: Box::pin(tokio::time::sleep(limit)),
            in_flight,
        }
    }

    fn progressed(&mut self, wrote: bool) {
        self.last_progress = Instant::now();
        if wrote {
            self.write_blocked_since = None;
        }
    }

    /// After `Pending` from the socket: an error if the connection has been idle too long,
    /// else `Pending` with a wake-up registered. Idle means: a write blocked for `limit` (the
    /// client stopped reading), or no byte either way for `limit` while no request of the
    /// connection is being answered (a read waiting on us is the client waiting, not idling).
    fn check(&mut self, cx: &mut Context<'_>, reading: bool) -> Poll<io::Error> {
        let now = Instant::now();
        if !reading && self.write_blocked_since.is_none() {
            self.write_blocked_since = Some(now);
        }
        loop {
            let busy = self.in_flight.busy();
            // Idle since the last byte, or since the last answer was ready, whichever is later.
            let idle_since = self.last_progress.max(self.in_flight.last_done());
            let read_due = (!busy).then(|| idle_since + self.limit);
            let write_due = self.write_blocked_since.map(|t| t + self.limit);
            let due = match (read_due, write_due) {
                (Some(r), Some(w)) => r.min(w),
                (Some(d), None) | (None, Some(d)) => d,
                // Nothing can time out now; the next poll of the socket looks again.
                (None, None) => return Poll::Pending,
            };
            if Instant::now() >= due {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
            // Moving the timer touches the timer wheel: only ever bring it earlier here; a
            // timer that fires early is re-armed lazily below.
            if self.deadline.deadline() > due {
                self.deadline.as_mut().reset(due);
            }
            match self.deadline.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let now = Instant::now();
                    if now < due {
                        self.deadline.as_mut().reset(due);
                    }
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed(false);
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx, true).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed(true);
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx, false).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progressed(true);
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx, false).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                // Nothing left waiting for the client.
                this.write_blocked_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx, false).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Binds `addr` for `role`.
pub async fn bind(addr: SocketAddr, role: Role, tls: bool) -> Result<Listener, super::ServerError> {
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| super::ServerError::Bind { addr, source })?;
    Ok(Listener { tcp, role, tls })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_connections_time_out_and_busy_ones_do_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let busy = Arc::new(Activity::new());
        let mut idle = IdleTimeout::new(a, Duration::from_millis(500), busy.clone());
        let mut buf = [0u8; 8];
        // Bytes keep arriving every 200 ms: never idle for 500 ms.
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                b.write_all(b"x").await.unwrap();
            }
            b
        });
        for _ in 0..3 {
            assert_eq!(idle.read(&mut buf).await.unwrap(), 1);
        }
        let _b = writer.await.unwrap();
        let started = std::time::Instant::now();
        let err = idle.read(&mut buf).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // While a request is being answered, a silent client is waiting, not idle.
        let (a, _b) = tokio::io::duplex(64);
        let mut waiting = IdleTimeout::new(a, Duration::from_millis(200), busy.clone());
        busy.begin();
        let r = tokio::time::timeout(Duration::from_millis(800), waiting.read(&mut buf)).await;
        assert!(r.is_err(), "the read must still be waiting");
        busy.end();
        let err = waiting.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
