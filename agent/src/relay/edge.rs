//! The relay's network edge, so that no local client can take the agent's
//! memory or hold its listeners: an in-flight byte budget charged before a
//! body is buffered and for what decoding takes ([`Budget`]), a header read
//! timeout and a body read deadline on HTTP connections ([`serve_http`]),
//! a connection limit per listener, and a charging layer on gRPC requests
//! ([`ChargeLayer`]). It mirrors the collector's `receiver::listener` and
//! `receiver::body` (the agent does not depend on the collector).
//!
//! With TLS, handshakes run in each connection's own task, after the
//! connection took its slot and within the header read timeout, so a slow
//! or silent client never holds up the accept loop. Every request carries
//! a [`Peer`] (address and what TLS established) for the auth gate.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use periscope_auth::tls::MaybeTls;
use periscope_auth::{Acceptor, Peer, PeerTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tower::ServiceExt;

use crate::config::RelayLimits;
use crate::sync::MutexRecover;
use crate::telemetry::Stats;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The relay's budget is used up: the client should retry.
#[derive(Debug, thiserror::Error)]
#[error("agent relay has {0} bytes in flight (relay_max_inflight_bytes); retry later")]
pub struct Busy(pub usize);

/// Bytes of requests being read, decoded or queued at once.
pub struct Budget {
    sem: Arc<Semaphore>,
    limit: usize,
    stats: Arc<Stats>,
}

/// Budget held by one request.
#[derive(Debug)]
pub struct Charge(OwnedSemaphorePermit);

impl Budget {
    pub fn new(limit: usize, stats: Arc<Stats>) -> Budget {
        Budget {
            sem: Arc::new(Semaphore::new(limit)),
            limit,
            stats,
        }
    }

    /// An empty charge.
    pub fn start(&self) -> Charge {
        Charge(
            self.sem
                .clone()
                .try_acquire_many_owned(0)
                .expect("the budget semaphore is never closed"),
        )
    }

    /// Takes `bytes` more for `charge`, or refuses at once. One request
    /// never holds more than the whole budget, so it can always run alone.
    pub fn charge(&self, charge: &mut Charge, bytes: usize) -> Result<(), Busy> {
        let n = bytes.min(self.limit - charge.0.num_permits());
        if n > 0 {
            let Ok(more) = self.sem.clone().try_acquire_many_owned(n as u32) else {
                Stats::add(&self.stats.relay_refused_requests, 1);
                return Err(Busy(self.limit));
            };
            charge.0.merge(more);
        }
        self.gauge();
        Ok(())
    }

    /// Gives back what `charge` holds beyond `keep` bytes: charges are
    /// capped at the budget, so this is worked out from what is held.
    pub fn release_to(&self, charge: &mut Charge, keep: usize) {
        let held = charge.0.num_permits();
        self.release(charge, held.saturating_sub(keep));
    }

    /// Gives back up to `bytes` of `charge`.
    pub fn release(&self, charge: &mut Charge, bytes: usize) {
        drop(charge.0.split(bytes.min(charge.0.num_permits())));
        self.gauge();
    }

    /// Ends `charge` and refreshes the gauge.
    pub fn finish(&self, charge: Charge) {
        drop(charge);
        self.gauge();
    }

    fn gauge(&self) {
        let used = self.limit - self.sem.available_permits();
        self.stats
            .relay_inflight_bytes
            .store(used as u64, Ordering::Relaxed);
    }
}

/// Why an HTTP body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("request body larger than {0} bytes (relay_max_recv_msg_size)")]
    TooLarge(usize),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("request body not received within {}s (relay_body_read_timeout)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("failed to read request body: {0}")]
    Failed(String),
}

impl ReadError {
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            ReadError::TooLarge(_) => S::PAYLOAD_TOO_LARGE,
            ReadError::Busy(_) => S::TOO_MANY_REQUESTS,
            ReadError::Timeout(_) => S::REQUEST_TIMEOUT,
            ReadError::Failed(_) => S::BAD_REQUEST,
        }
    }
}

/// Reads `body` (at most `max` bytes), charging every byte before it is
/// buffered: a declared length over `max` is refused before reading, and
/// every chunk is charged before it is kept.
pub async fn read_charged(
    budget: &Budget,
    charge: &mut Charge,
    body: Body,
    headers: &HeaderMap,
    max: usize,
) -> Result<Bytes, ReadError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => {
            let n: u64 = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ReadError::Failed(format!("invalid content-length {v:?}")))?;
            if n > max as u64 {
                return Err(ReadError::TooLarge(max));
            }
            n as usize
        }
    };
    // Charged as bytes arrive, not as announced: a client that announces a
    // large body and stalls must not hold the budget (see the collector's
    // receiver::body).
    let mut charged = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(declared);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match timed_out(&e) {
            Some(d) => ReadError::Timeout(d),
            None => ReadError::Failed(e.to_string()),
        })?;
        let total = buf.len() + chunk.len();
        if total > max {
            return Err(ReadError::TooLarge(max));
        }
        if total > charged {
            budget.charge(charge, total - charged)?;
            charged = total;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// A body that did not arrive by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
struct BodyTimeout(Duration);

fn timed_out(e: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTimeout>() {
            return Some(t.0);
        }
        cur = err.source();
    }
    None
}

struct TimedBody {
    inner: Incoming,
    /// When the headers arrived; the timer is made on the first wait, so
    /// that requests without a body, or whose body is already buffered,
    /// never touch the timer wheel.
    start: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    stats: Arc<Stats>,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let (start, timeout) = (this.start, this.timeout);
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(start + timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            Stats::add(&this.stats.relay_body_timeouts, 1);
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

/// Accepts the next connection; failures (e.g. out of file descriptors)
/// are retried after a pause.
async fn accept(listener: &TcpListener) -> (TcpStream, Option<std::net::SocketAddr>) {
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, Some(addr));
            }
            Err(e) => {
                tracing::debug!(error = %e, "relay accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs the TLS handshake of a relay connection; a failure is counted and
/// logged (at debug: any client can cause it) and closes the connection.
async fn handshake(
    acceptor: &Acceptor,
    tcp: TcpStream,
    addr: Option<std::net::SocketAddr>,
    stats: &Stats,
) -> Option<(TlsStream<TcpStream>, PeerTls)> {
    match acceptor.accept(tcp).await {
        Ok(done) => Some(done),
        Err(e) => {
            Stats::add(&stats.relay_tls_handshake_failures, 1);
            tracing::debug!(error = %e, addr = ?addr, "relay TLS handshake failed");
            None
        }
    }
}

/// Serves `app` with a header read timeout, a body deadline and a
/// connection limit; connections past the limit are closed at once. With
/// `tls`, connections speak TLS (the handshake runs in the connection's
/// task).
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: RelayLimits,
    tls: Option<Acceptor>,
    stats: Arc<Stats>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (tcp, addr) = accept(&listener).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            Stats::add(&stats.relay_refused_connections, 1);
            continue;
        };
        let (app, stats, tls) = (app.clone(), stats.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => {
                    let peer = Peer {
                        addr,
                        tls: PeerTls::default(),
                    };
                    serve_http_connection(tcp, peer, app, limits, stats).await;
                }
                Some(acceptor) => {
                    if let Some((io, tls)) = handshake(&acceptor, tcp, addr, &stats).await {
                        let peer = Peer { addr, tls };
                        serve_http_connection(io, peer, app, limits, stats).await;
                    }
                }
            }
            drop(slot);
        });
    }
}

/// Serves one HTTP/1 connection; every request carries `peer`.
async fn serve_http_connection<IO>(
    io: IO,
    peer: Peer,
    app: Router,
    limits: RelayLimits,
    stats: Arc<Stats>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = stats.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let timeout = limits.body_read_timeout;
        let mut req = req.map(|inner| TimedBody {
            inner,
            start: tokio::time::Instant::now(),
            deadline: None,
            timeout,
            stats: s.clone(),
        });
        req.extensions_mut().insert(peer);
        app.clone().oneshot(req)
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .await;
    if let Err(e) = r
        && e.is_timeout()
    {
        Stats::add(&stats.relay_header_timeouts, 1);
    }
}

/// A gRPC connection holding a slot of its listener.
pub struct LimitedStream {
    io: MaybeTls,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
    /// Until the HTTP/2 preface arrives: h2 has no handshake timeout.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    read: usize,
    stats: Arc<Stats>,
}

/// The client connection preface (24 bytes) and a SETTINGS frame header (9).
const HANDSHAKE_BYTES: usize = 24 + 9;

/// Connections accepted (and through their TLS handshake) that tonic has
/// not taken yet. Tonic takes them as fast as it spawns their tasks; if it
/// stalls, handshake tasks wait to hand over, each holding its slot, so
/// `relay_max_connections` still bounds them.
const ACCEPTED_QUEUE: usize = 32;

/// Accepts gRPC connections on `listener`: at most `max` at once (the
/// others are closed at once), with TLS when `tls` is given, the handshake
/// run in a task of its own after the connection took its slot. A
/// connection whose HTTP/2 preface has not arrived within
/// `handshake_timeout` (after the TLS handshake) is closed. The stream
/// ends, and the listener closes, when the receiving server is gone.
pub fn limit_incoming(
    listener: TcpListener,
    max: usize,
    handshake_timeout: Duration,
    tls: Option<Acceptor>,
    stats: Arc<Stats>,
) -> impl Stream<Item = std::io::Result<LimitedStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(max));
        loop {
            let (tcp, addr) = tokio::select! {
                _ = tx.closed() => return,
                a = accept(&listener) => a,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                Stats::add(&stats.relay_refused_connections, 1);
                continue;
            };
            let conn_stats = stats.clone();
            let limited = move |io, peer_tls| LimitedStream {
                io,
                peer: Peer {
                    addr,
                    tls: peer_tls,
                },
                _slot: slot,
                handshake: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
                read: 0,
                stats: conn_stats,
            };
            match &tls {
                None => {
                    let conn = limited(MaybeTls::Plain(tcp), PeerTls::default());
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, tx, stats) = (acceptor.clone(), tx.clone(), stats.clone());
                    tokio::spawn(async move {
                        if let Some((io, tls)) = handshake(&acceptor, tcp, addr, &stats).await {
                            let _ = tx.send(Ok(limited(MaybeTls::Tls(Box::new(io)), tls))).await;
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl tonic::transport::server::Connected for LimitedStream {
    /// Tonic puts it in every request's extensions, where the auth gate
    /// finds it.
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
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
                Stats::add(&this.stats.relay_header_timeouts, 1);
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
}

/// Memory a relayed protobuf request takes per byte of its message, the
/// message included, for the smallest records (one-character bodies):
/// 22.3x measured with tests/e2e/measure_ingest_memory.py (peak RSS of a
/// fresh agent per 10.5 MB request). Records cannot be counted before the
/// message is whole, so gRPC is charged per byte at this worst case.
const RELAY_PROTOBUF_FACTOR: usize = 23;

/// Charges every gRPC request's message bytes, as they arrive and before
/// tonic decodes them, times what decoding protobuf takes at worst (records
/// cannot be counted before the message is whole); the charge is
/// held until the handler has answered (the request is then in the queue,
/// which has its own bound). Over budget, the request fails with
/// `RESOURCE_EXHAUSTED`.
#[derive(Clone)]
pub struct ChargeLayer(pub Arc<Budget>);

impl<S> tower::Layer<S> for ChargeLayer {
    type Service = ChargeService<S>;
    fn layer(&self, inner: S) -> ChargeService<S> {
        ChargeService {
            inner,
            budget: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ChargeService<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S> tower::Service<axum::http::Request<tonic::body::Body>> for ChargeService<S>
where
    S: tower::Service<axum::http::Request<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let charge = Arc::new(Mutex::new(Some(self.budget.start())));
        let (budget, held) = (self.budget.clone(), charge.clone());
        let req = req.map(|inner| {
            tonic::body::Body::new(ChargingBody {
                inner,
                budget: budget.clone(),
                charge,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let Some(c) = held.lock_or_recover().take() {
                budget.finish(c);
            }
            r
        })
    }
}

struct ChargingBody {
    inner: tonic::body::Body,
    budget: Arc<Budget>,
    charge: Arc<Mutex<Option<Charge>>>,
}

impl hyper::body::Body for ChargingBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let cost = data.len().saturating_mul(RELAY_PROTOBUF_FACTOR);
            let mut held = this.charge.lock_or_recover();
            if let Some(c) = held.as_mut()
                && let Err(e) = this.budget.charge(c, cost)
            {
                return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(e.to_string()))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
