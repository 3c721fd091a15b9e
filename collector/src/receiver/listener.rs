//! How the collector serves its listeners, so that no client can hold them:
//!
//! - every HTTP connection has a header read timeout (hyper's, which needs
//!   a timer: `axum::serve` sets none, so hyper's nominal 30 s never fired
//!   and half-sent headers held a connection for as long as the client
//!   liked). The same timeout closes idle keep-alive connections;
//! - every request body has a read deadline, counted from the moment its
//!   headers arrived: a body that is not complete by then fails with
//!   [`BodyTimeout`], which the ingest routes answer with 408;
//! - each listener (the gRPC one too, through [`limit_incoming`]) holds at
//!   most `max_connections` connections. Past it, new connections are
//!   closed at once (HTTP ones after a `503` with `Retry-After`), and
//!   counted, rather than left waiting in the kernel's backlog where a
//!   client cannot tell a full server from a slow one.
//!
//! - with TLS, the handshake runs in the connection's own task (never in
//!   the accept loop) within the header read timeout, and the client's
//!   address and certificate status go into every request's extensions as a
//!   [`Peer`], where the auth gate reads them.
//!
//! Shutdown stops accepting, asks every open connection to finish its
//! request and close, and waits for them a few seconds at most.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use futures::Stream;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use periscope_auth::tls::MaybeTls;
use periscope_auth::{Acceptor, Peer, PeerTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::telemetry::{EdgeMetrics, Listener, Metrics};

/// Limits of one HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Time allowed for a request's headers, and for an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Time allowed for a request's body, from the end of its headers.
    pub body_read_timeout: Duration,
    /// Connections held at once.
    pub max_connections: usize,
}

/// A request body that did not arrive within the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {}s (--http-body-read-timeout)", .0.as_secs_f64())]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Whether `e` or one of its sources is a [`BodyTimeout`].
    pub fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if err.is::<BodyTimeout>() {
                return true;
            }
            cur = err.source();
        }
        false
    }
}

/// A request body with a deadline.
struct TimedBody {
    inner: Incoming,
    /// When the headers arrived; the timer is made on the first wait, so
    /// that requests without a body, or whose body is already buffered,
    /// never touch the timer wheel.
    start: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    expired: Option<(Arc<Metrics>, Listener)>,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let (start, timeout) = (this.start, this.timeout);
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(start + timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            if let Some((metrics, listener)) = this.expired.take() {
                EdgeMetrics::add(&metrics.edge.body_timeouts, listener, 1);
            }
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One of a listener's connection slots; counts the open connection.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    listener: Listener,
}

impl Slot {
    fn take(slots: &Arc<Semaphore>, metrics: &Arc<Metrics>, listener: Listener) -> Option<Slot> {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            EdgeMetrics::add(&metrics.edge.refused_connections, listener, 1);
            return None;
        };
        EdgeMetrics::add(&metrics.edge.open_connections, listener, 1);
        Some(Slot {
            _permit: permit,
            metrics: metrics.clone(),
            listener,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.edge.open_connections[self.listener as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection past the limit reads before it is closed.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 59\r\n\r\ntoo many connections on this listener (--max-connections)\r\n";

/// Serves `app` on `listener` until `shutdown`, with `limits`.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    which: Listener,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tls: Option<Acceptor>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::debug!(error = %e, listener = which.as_str(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Responses are small and written in pieces, which Nagle's
        // algorithm would hold back.
        let _ = tcp.set_nodelay(true);
        let Some(slot) = Slot::take(&slots, &metrics, which) else {
            // One non-blocking write into a fresh socket's empty buffer
            // (plain text: a TLS client sees its handshake fail).
            if tls.is_none() {
                let _ = tcp.try_write(FULL);
            }
            continue;
        };
        tokio::spawn(connection(
            tcp,
            addr,
            tls.clone(),
            slot,
            app.clone(),
            which,
            limits,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    // Every connection holds a slot until it ends. Requests in flight
    // finish in milliseconds; a client still sending headers or a body is
    // not waited for past the grace, so that shutdown keeps its deadline.
    let all = slots.acquire_many(limits.max_connections as u32);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, all).await;
}

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs the TLS handshake if the listener has TLS; counts a failure.
async fn handshake(
    tcp: TcpStream,
    tls: Option<&Acceptor>,
    metrics: &Metrics,
    which: Listener,
) -> Option<(MaybeTls, PeerTls)> {
    let Some(acceptor) = tls else {
        return Some((MaybeTls::Plain(tcp), PeerTls::default()));
    };
    match acceptor.accept(tcp).await {
        Ok((s, peer)) => Some((MaybeTls::Tls(Box::new(s)), peer)),
        Err(e) => {
            EdgeMetrics::add(&metrics.edge.tls_handshake_failures, which, 1);
            tracing::debug!(error = %e, listener = which.as_str(), "TLS handshake failed");
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    tls: Option<Acceptor>,
    slot: Slot,
    app: Router,
    which: Listener,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let Some((io, peer_tls)) = handshake(tcp, tls.as_ref(), &metrics, which).await else {
        return;
    };
    let peer = Peer {
        addr: Some(addr),
        tls: peer_tls,
    };
    let m = metrics.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let timeout = limits.body_read_timeout;
        let mut req = req.map(|inner| TimedBody {
            inner,
            start: tokio::time::Instant::now(),
            deadline: None,
            timeout,
            expired: Some((m.clone(), which)),
        });
        req.extensions_mut().insert(peer);
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            EdgeMetrics::add(&metrics.edge.header_timeouts, which, 1);
        }
        tracing::debug!(error = %e, listener = which.as_str(), "connection ended with an error");
    }
    drop(slot);
}

/// A gRPC connection holding one of its listener's slots.
pub struct LimitedStream {
    io: MaybeTls,
    slot: Slot,
    peer: Peer,
    /// Until the client's HTTP/2 preface and first frame header arrive: a
    /// connection that sends nothing would otherwise hold its slot forever
    /// (h2 has no handshake timeout; keepalive pings start after it).
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    read: usize,
}

/// The client connection preface (24 bytes) and a SETTINGS frame header (9).
const HANDSHAKE_BYTES: usize = 24 + 9;

/// Connections whose TLS handshake is done, waiting for the gRPC server.
const READY_QUEUE: usize = 64;

/// Accepts gRPC connections on `listener` until `shutdown`: at most `max`
/// at once (the others are closed at once; clients see `UNAVAILABLE` and
/// retry) and counted. With TLS, each handshake runs in its own task. A
/// connection whose HTTP/2 preface has not arrived within
/// `handshake_timeout` of its handshake is closed.
pub fn limit_incoming(
    listener: TcpListener,
    max: usize,
    handshake_timeout: Duration,
    which: Listener,
    metrics: Arc<Metrics>,
    tls: Option<Acceptor>,
    shutdown: CancellationToken,
) -> impl Stream<Item = std::io::Result<LimitedStream>> {
    let slots = Arc::new(Semaphore::new(max));
    let (tx, rx) = mpsc::channel::<LimitedStream>(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                r = listener.accept() => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, listener = which.as_str(), "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Without TCP_NODELAY a response's frames wait for the
            // client's delayed ACK (about 40 ms per request).
            let _ = tcp.set_nodelay(true);
            let Some(slot) = Slot::take(&slots, &metrics, which) else {
                continue;
            };
            let (tx, tls, metrics) = (tx.clone(), tls.clone(), metrics.clone());
            tokio::spawn(async move {
                let Some((io, peer_tls)) = handshake(tcp, tls.as_ref(), &metrics, which).await
                else {
                    return;
                };
                let _ = tx
                    .send(LimitedStream {
                        io,
                        slot,
                        peer: Peer {
                            addr: Some(addr),
                            tls: peer_tls,
                        },
                        handshake: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
                        read: 0,
                    })
                    .await;
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}

impl tonic::transport::server::Connected for LimitedStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = this.handshake.as_mut() {
            if let Poll::Ready(Ok(())) = r {
                this.read += buf.filled().len() - before;
                if this.read >= HANDSHAKE_BYTES {
                    this.handshake = None;
                }
            } else if r.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                let s = &this.slot;
                EdgeMetrics::add(&s.metrics.edge.header_timeouts, s.listener, 1);
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the header read timeout",
                )));
            }
        }
        r
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, Arc<Metrics>, CancellationToken) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route(
            "/echo",
            axum::routing::post(|body: axum::body::Body| async move {
                match axum::body::to_bytes(body, 1 << 20).await {
                    Ok(b) => (axum::http::StatusCode::OK, format!("{} bytes", b.len())),
                    Err(e) if BodyTimeout::caused(&e) => {
                        (axum::http::StatusCode::REQUEST_TIMEOUT, e.to_string())
                    }
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        );
        let metrics = Arc::new(Metrics::default());
        let token = CancellationToken::new();
        tokio::spawn(serve_http(
            l,
            app,
            Listener::OtlpHttp,
            limits,
            metrics.clone(),
            token.clone(),
            None,
        ));
        (addr, metrics, token)
    }

    async fn read_all(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    const LIMITS: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 2,
    };

    #[tokio::test]
    async fn the_connection_past_the_limit_gets_503_and_is_closed() {
        let (addr, metrics, token) = start(LIMITS).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // A complete request proves the connection was admitted.
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
                .await
                .unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"HTTP/1.1 200");
            held.push(s);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let got = read_all(&mut third).await;
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        assert!(got.contains("--max-connections"), "{got}");
        assert_eq!(
            metrics.edge.refused_connections[Listener::OtlpHttp as usize].load(Ordering::Relaxed),
            1
        );
        // FULL's content-length matches its body.
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{got}"
        );
        drop(held);
        token.cancel();
    }

    #[tokio::test]
    async fn half_sent_headers_are_cut_and_a_stalled_body_gets_408() {
        let (addr, metrics, token) = start(LIMITS).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-a: ")
            .await
            .unwrap();
        // The server closes it (hyper answers 408 or nothing).
        let _ = read_all(&mut slow).await;
        assert_eq!(
            metrics.edge.header_timeouts[Listener::OtlpHttp as usize].load(Ordering::Relaxed),
            1
        );
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let got = read_all(&mut stalled).await;
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("--http-body-read-timeout"), "{got}");
        assert_eq!(
            metrics.edge.body_timeouts[Listener::OtlpHttp as usize].load(Ordering::Relaxed),
            1
        );
        token.cancel();
    }
}
