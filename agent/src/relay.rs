//! The local OTLP relay: applications on the node send OTLP (gRPC and HTTP,
//! protobuf or JSON) to the agent, which adds the node's attributes to every
//! resource and forwards the requests through the same queue and spool as
//! file logs. HTTP bodies may be gzip- or zstd-compressed. A full queue
//! answers `RESOURCE_EXHAUSTED` / HTTP 429 so the client retries. Also
//! serves the agent's own `/metrics` and `/healthz`.
//!
//! Requests are charged to an in-flight budget before their bodies are
//! buffered and for what decoding takes, and the listeners have header and
//! body read timeouts and connection limits ([`edge`]): one 16 MiB JSON
//! request once took the agent to 494 MiB.
//!
//! With `relay_auth_file`, every request passes `periscope-auth`'s gate
//! (a token or client certificate with the `write` scope) and is forwarded
//! for the tenant the gate admitted it for; without one, the client's
//! `X-Scope-OrgID` is not trusted and everything goes with the agent's own
//! tenant. With `relay_tls_*`, both listeners speak TLS only. The auth and
//! TLS files are read again every 2 s and on SIGHUP.

mod edge;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use periscope_auth::{
    Acceptor, Admitted, Alpn, Gate, GrpcGateLayer, HttpGate, Scope, http_middleware,
};
use periscope_proto::otlp::common::v1::KeyValue;
use periscope_proto::otlp::resource::v1::Resource;
use periscope_proto::otlp::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, ExportMetricsServiceRequest,
    ExportMetricsServiceResponse, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use periscope_proto::{
    BodyError, ContentEncoding, Encoding, ExportRequest, Signal, decode_cost, decode_request,
    decompress_body,
};
use prost::Message;

use self::edge::{Budget, ChargeLayer, limit_incoming};
use crate::batch::{Batch, Payload};
use crate::config::{Config, RelaySecurity, valid_tenant};
use crate::parse::enrich::kv_str;
use crate::telemetry::{RelayAuth, Stats};

/// The largest header block of a gRPC request (h2's default is 16 MiB).
const GRPC_MAX_HEADER_LIST_SIZE: u32 = 64 << 10;
/// HTTP/2 keepalive pings on relay gRPC connections find vanished peers.
const GRPC_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Addresses the relay listens on.
#[derive(Debug, Default)]
pub struct RelayAddrs {
    /// gRPC.
    pub grpc: Option<SocketAddr>,
    /// HTTP.
    pub http: Option<SocketAddr>,
}

#[derive(Clone)]
struct Relay {
    /// Memory of requests being read, decoded and forwarded.
    budget: Arc<Budget>,
    /// Largest request, compressed or decompressed.
    max: usize,
    tx: SyncSender<Batch>,
    /// Set at shutdown: new requests are refused (the exporter is draining).
    stopping: Arc<AtomicBool>,
    node: Arc<Vec<KeyValue>>,
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum Refused {
    Full,
    Closed,
    /// A tenant the collector would refuse (a token for any tenant may
    /// name one in `X-Scope-OrgID`).
    InvalidTenant(String),
}

fn add_node(resource: &mut Option<Resource>, node: &[KeyValue]) {
    let r = resource.get_or_insert_with(Resource::default);
    for kv in node {
        if !r.attributes.iter().any(|a| a.key == kv.key) {
            r.attributes.push(kv.clone());
        }
    }
}

impl Relay {
    /// Queues `payload` for export, for `tenant` (the one the auth gate
    /// admitted the request for; `None`: the agent's own).
    fn forward(&self, mut payload: Payload, tenant: Option<String>) -> Result<(), Refused> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Refused::Closed);
        }
        if let Some(t) = tenant.as_deref().filter(|t| !valid_tenant(t)) {
            return Err(Refused::InvalidTenant(t.to_owned()));
        }
        match &mut payload {
            Payload::Logs(r) => r
                .resource_logs
                .iter_mut()
                .for_each(|x| add_node(&mut x.resource, &self.node)),
            Payload::Metrics(r) => r
                .resource_metrics
                .iter_mut()
                .for_each(|x| add_node(&mut x.resource, &self.node)),
            Payload::Traces(r) => r
                .resource_spans
                .iter_mut()
                .for_each(|x| add_node(&mut x.resource, &self.node)),
        }
        let bytes = match &payload {
            Payload::Logs(r) => r.encoded_len(),
            Payload::Metrics(r) => r.encoded_len(),
            Payload::Traces(r) => r.encoded_len(),
        };
        match self.tx.try_send(Batch {
            payload,
            marks: Vec::new(),
            tenant,
            bytes,
        }) {
            Ok(()) => {
                Stats::add(&self.stats.relay_requests, 1);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Closed),
        }
    }
}

fn status(r: Refused) -> tonic::Status {
    match r {
        Refused::Full => tonic::Status::resource_exhausted("agent queue full; retry later"),
        Refused::Closed => tonic::Status::unavailable("agent shutting down"),
        Refused::InvalidTenant(t) => tonic::Status::invalid_argument(invalid_tenant(&t)),
    }
}

fn invalid_tenant(t: &str) -> String {
    format!("invalid tenant {t:?}: 1 to 150 ASCII letters, digits, '_', '.' or '-'")
}

/// The tenant the auth gate admitted a gRPC request for.
fn admitted<T>(req: &tonic::Request<T>) -> Option<String> {
    req.extensions()
        .get::<Admitted>()
        .and_then(|a| a.tenant.clone())
}

#[tonic::async_trait]
impl LogsService for Relay {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let tenant = admitted(&req);
        self.forward(Payload::Logs(req.into_inner()), tenant)
            .map_err(status)?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Relay {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let tenant = admitted(&req);
        self.forward(Payload::Metrics(req.into_inner()), tenant)
            .map_err(status)?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Relay {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = admitted(&req);
        self.forward(Payload::Traces(req.into_inner()), tenant)
            .map_err(status)?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn refused(status: StatusCode, msg: String) -> Response {
    let mut r = (status, msg).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    r
}

async fn http_export(
    State((relay, signal)): State<(Relay, Signal)>,
    admitted: Option<Extension<Admitted>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // Only OTLP's content types: a cross-site browser POST (`text/plain`,
    // no preflight) is refused.
    let (enc, json) = match mime.as_str() {
        "application/json" => (Encoding::Json, true),
        "application/x-protobuf" | "application/protobuf" => (Encoding::Protobuf, false),
        _ => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content-type {ct:?}: use application/x-protobuf or application/json"),
            )
                .into_response();
        }
    };
    let budget = &relay.budget;
    let mut charge = budget.start();
    let body = match edge::read_charged(budget, &mut charge, body, &headers, relay.max).await {
        Ok(b) => b,
        Err(e) => return refused(e.status(), e.to_string()),
    };
    let body = match decompress(&relay, &mut charge, &headers, body).await {
        Ok(b) => b,
        Err((status, msg)) => return refused(status, msg),
    };
    // Decoding takes several times the body: charged before it runs.
    if let Err(e) = budget.charge(&mut charge, decode_cost(signal, enc, &body)) {
        return refused(StatusCode::TOO_MANY_REQUESTS, e.to_string());
    }
    let payload = match decode_request(signal, enc, &body) {
        Ok(ExportRequest::Logs(r)) => Payload::Logs(r),
        Ok(ExportRequest::Metrics(r)) => Payload::Metrics(r),
        Ok(ExportRequest::Traces(r)) => Payload::Traces(r),
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    drop(body);
    // Once forwarded, the request is the queue's (bounded by
    // memory_queue_bytes): the charge ends here.
    let forwarded = relay.forward(payload, admitted.and_then(|Extension(a)| a.tenant));
    budget.finish(charge);
    match forwarded {
        Ok(()) => {
            let ct = if json {
                "application/json"
            } else {
                "application/x-protobuf"
            };
            let body: Vec<u8> = if json { b"{}".to_vec() } else { Vec::new() };
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
        }
        Err(Refused::Full) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "agent queue full",
        )
            .into_response(),
        Err(Refused::Closed) => {
            (StatusCode::SERVICE_UNAVAILABLE, "agent shutting down").into_response()
        }
        Err(Refused::InvalidTenant(t)) => {
            (StatusCode::BAD_REQUEST, invalid_tenant(&t)).into_response()
        }
    }
}

/// The body as sent (`identity`) or decompressed (`gzip`, `zstd`) on a
/// blocking thread, never past the relay's size limit: too large → 413,
/// malformed → 400, another encoding → 415. The output's cap is charged
/// before decompressing and what was not used given back after.
async fn decompress(
    relay: &Relay,
    charge: &mut edge::Charge,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Bytes, (StatusCode, String)> {
    let err = |e: BodyError| {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, e.to_string())
    };
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(err)?;
    if encoding == ContentEncoding::Identity {
        return Ok(body);
    }
    let max = relay.max;
    relay
        .budget
        .charge(charge, max)
        .map_err(|e| (StatusCode::TOO_MANY_REQUESTS, e.to_string()))?;
    let out = tokio::task::spawn_blocking(move || decompress_body(encoding, &body, max))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(err)?;
    // Now only the decompressed body is held (the compressed one is gone).
    relay.budget.release_to(charge, out.len());
    Ok(Bytes::from(out))
}

/// Every relay path takes OTLP: the `write` scope.
fn relay_scope(_: &axum::http::Method, _: &str) -> Option<Scope> {
    Some(Scope::Write)
}

/// Starts the relay listeners that are configured, and the watching of
/// their auth and TLS files until `stop`.
pub async fn start(
    cfg: &Config,
    tx: SyncSender<Batch>,
    stats: Arc<Stats>,
    stopping: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<RelayAddrs> {
    use anyhow::Context;
    let limits = cfg.relay;
    let security = &cfg.relay_security;
    let gate = Gate::new(security.auth.clone());
    let _ = stats.relay_auth.set(RelayAuth {
        gate: gate.clone(),
        tls: security.tls.clone(),
    });
    watch_files(security, stop);
    // Client certificates are required when the files name a client CA.
    let acceptor = |alpn| {
        security
            .tls
            .clone()
            .map(|tls| Acceptor::new(tls, alpn, true, limits.header_read_timeout))
    };
    let relay = Relay {
        budget: Arc::new(Budget::new(limits.max_inflight_bytes, stats.clone())),
        max: limits.max_recv_msg_size,
        tx,
        stopping,
        node: Arc::new(vec![
            kv_str("k8s.node.name", cfg.node_name.clone()),
            kv_str("host.name", cfg.node_name.clone()),
        ]),
        stats: stats.clone(),
    };
    let max = limits.max_recv_msg_size;
    let mut addrs = RelayAddrs::default();
    if let Some(a) = cfg.otlp_grpc_addr {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("cannot listen on {a}"))?;
        addrs.grpc = Some(l.local_addr()?);
        let incoming = limit_incoming(
            l,
            limits.max_connections,
            limits.header_read_timeout,
            acceptor(Alpn::H2),
            stats.clone(),
        );
        let router = tonic::transport::Server::builder()
            .layer(catch_grpc_panics(relay.stats.clone()))
            // Before the budget: a refused request is not charged.
            .layer(GrpcGateLayer::new(gate.clone(), "relay_otlp_grpc"))
            .max_concurrent_streams(limits.grpc_max_concurrent_streams)
            .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
            .http2_max_header_list_size(GRPC_MAX_HEADER_LIST_SIZE)
            // A request slower than this (its message included) is CANCELLED.
            .timeout(limits.body_read_timeout)
            .layer(ChargeLayer(relay.budget.clone()))
            .add_service(
                LogsServiceServer::new(relay.clone())
                    .max_decoding_message_size(max)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .add_service(
                MetricsServiceServer::new(relay.clone())
                    .max_decoding_message_size(max)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .add_service(
                TraceServiceServer::new(relay.clone())
                    .max_decoding_message_size(max)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            );
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "OTLP/gRPC relay stopped");
            }
        });
    }
    if let Some(a) = cfg.otlp_http_addr {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("cannot listen on {a}"))?;
        addrs.http = Some(l.local_addr()?);
        let app = Router::new()
            .route(
                "/v1/logs",
                post(http_export).with_state((relay.clone(), Signal::Logs)),
            )
            .route(
                "/v1/metrics",
                post(http_export).with_state((relay.clone(), Signal::Metrics)),
            )
            .route(
                "/v1/traces",
                post(http_export).with_state((relay.clone(), Signal::Traces)),
            );
        let app = app.layer(axum::middleware::from_fn_with_state(
            HttpGate {
                gate: gate.clone(),
                listener: "relay_otlp_http",
                scope_for: relay_scope,
            },
            http_middleware,
        ));
        let app = catch_panics(app, relay.stats.clone());
        tokio::spawn(edge::serve_http(
            l,
            app,
            limits,
            acceptor(Alpn::Http1),
            stats.clone(),
        ));
    }
    Ok(addrs)
}

/// Reads the relay's auth and TLS files again every 2 s (until `stop`) and
/// at each SIGHUP; a version that does not load leaves the last good one
/// in use (logged, and `periscope_config_reload_ok` 0).
fn watch_files(security: &RelaySecurity, stop: tokio_util::sync::CancellationToken) {
    if let Some(a) = &security.auth {
        a.spawn_poll(stop.clone());
    }
    if let Some(t) = &security.tls {
        t.spawn_poll(stop.clone());
    }
    let (auth, tls) = (security.auth.clone(), security.tls.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot install a SIGHUP handler; relay files are still polled");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            if auth.is_none() && tls.is_none() {
                tracing::info!("SIGHUP: no relay auth or TLS files to read again");
                continue;
            }
            tracing::info!("SIGHUP: reading the relay's auth and TLS files again");
            let (auth, tls) = (auth.clone(), tls.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(a) = auth {
                    a.check(true);
                }
                if let Some(t) = tls {
                    t.check(true);
                }
            })
            .await;
        }
    });
}

/// What a panic's payload says.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload")
}

/// A relay handler that panics answers 500 (never a dropped connection),
/// is logged and counted; the client does not see the panic text.
fn catch_panics(router: Router, stats: Arc<Stats>) -> Router {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        move |payload: Box<dyn std::any::Any + Send>| {
            Stats::add(&stats.relay_panics[1], 1);
            tracing::error!(
                listener = "relay_http",
                panic = panic_message(payload.as_ref()),
                "relay handler panicked"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the relay handler panicked\n",
            )
                .into_response()
        },
    ))
}

/// [`catch_panics`] for the gRPC relay: status `INTERNAL`, trailers only.
fn catch_grpc_panics(
    stats: Arc<Stats>,
) -> tower_http::catch_panic::CatchPanicLayer<
    impl Fn(Box<dyn std::any::Any + Send>) -> Response + Clone,
> {
    tower_http::catch_panic::CatchPanicLayer::custom(
        move |payload: Box<dyn std::any::Any + Send>| {
            Stats::add(&stats.relay_panics[0], 1);
            tracing::error!(
                listener = "relay_grpc",
                panic = panic_message(payload.as_ref()),
                "relay handler panicked"
            );
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/grpc"),
                    (header::HeaderName::from_static("grpc-status"), "13"),
                    (
                        header::HeaderName::from_static("grpc-message"),
                        "internal error: the relay handler panicked",
                    ),
                ],
            )
                .into_response()
        },
    )
}

/// Serves `/metrics` and `/healthz` of the agent itself.
pub async fn serve_http_self(
    l: tokio::net::TcpListener,
    stats: Arc<Stats>,
    healthy: Arc<AtomicBool>,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(
                |State((s, _)): State<(Arc<Stats>, Arc<AtomicBool>)>| async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        s.render(),
                    )
                },
            ),
        )
        .route(
            "/healthz",
            get(
                |State((_, h)): State<(Arc<Stats>, Arc<AtomicBool>)>| async move {
                    if h.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
                    }
                },
            ),
        )
        .with_state((stats, healthy));
    if let Err(e) = axum::serve(l, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc::Receiver;

    use axum::http::HeaderValue;
    use periscope_proto::otlp::common::v1::{AnyValue, any_value::Value};
    use periscope_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    #[tokio::test]
    async fn relay_handler_panic_answers_500_or_internal_and_is_counted() {
        use tower::ServiceExt;
        let stats = Arc::new(Stats::default());
        let boom = || async {
            let v: Vec<u8> = Vec::new();
            v[usize::from(v.is_empty())].to_string()
        };
        let app = catch_panics(
            Router::new().route("/v1/logs", axum::routing::post(boom)),
            stats.clone(),
        );
        let req = axum::http::Request::post("/v1/logs")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let grpc = tower::ServiceBuilder::new()
            .layer(catch_grpc_panics(stats.clone()))
            .service_fn(|_: axum::http::Request<axum::body::Body>| async {
                if usize::MAX.checked_add(1).is_none() {
                    panic!("simulated bug");
                }
                Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
            });
        let req =
            axum::http::Request::post("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
                .body(axum::body::Body::empty())
                .unwrap();
        let res = grpc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "13");
        let text = stats.render();
        assert!(
            text.contains("periscope_panics_total{listener=\"relay_grpc\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("periscope_panics_total{listener=\"relay_http\"} 1"),
            "{text}"
        );
    }

    fn relay() -> (Relay, Receiver<Batch>) {
        relay_with(64 << 20, 4 << 20)
    }

    fn relay_with(budget: usize, max: usize) -> (Relay, Receiver<Batch>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let stats = Arc::new(Stats::default());
        let relay = Relay {
            budget: Arc::new(Budget::new(budget, stats.clone())),
            max,
            tx,
            stopping: Arc::new(AtomicBool::new(false)),
            node: Arc::new(vec![kv_str("k8s.node.name", "n1")]),
            stats,
        };
        (relay, rx)
    }

    fn logs(body: &str) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(body.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Posts `body` with `Content-Encoding: encoding` to the logs route;
    /// returns the status and the response text.
    fn post(relay: &Relay, encoding: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
        post_as(relay, "application/x-protobuf", encoding, None, body)
    }

    fn post_as(
        relay: &Relay,
        content_type: &str,
        encoding: Option<&str>,
        content_length: Option<u64>,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        if let Some(n) = content_length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        if let Some(e) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        rt.block_on(async {
            let res = http_export(
                State((relay.clone(), Signal::Logs)),
                None,
                headers,
                Body::from(body),
            )
            .await;
            let status = res.status();
            let text = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&text).into_owned())
        })
    }

    /// A request the auth gate admitted for `tenant`.
    fn admitted_for(tenant: &str) -> Option<Extension<Admitted>> {
        Some(Extension(Admitted {
            grant: periscope_auth::Grant {
                name: "apps".into(),
                tenants: periscope_auth::Tenants::Any,
                scopes: vec![Scope::Write],
            },
            tenant: Some(tenant.to_owned()),
        }))
    }

    #[test]
    fn admitted_tenant_is_forwarded_and_an_invalid_one_refused() {
        let (relay, rx) = relay();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let send = |admitted| {
            let res = rt.block_on(http_export(
                State((relay.clone(), Signal::Logs)),
                admitted,
                headers.clone(),
                Body::from(logs("x")),
            ));
            res.status()
        };
        // Without an auth file nothing is admitted: the agent's own tenant.
        assert_eq!(send(None), StatusCode::OK);
        assert_eq!(rx.try_recv().unwrap().tenant, None);
        assert_eq!(send(admitted_for("shop")), StatusCode::OK);
        assert_eq!(rx.try_recv().unwrap().tenant.as_deref(), Some("shop"));
        // A token for any tenant may name one the collector would refuse.
        for bad in ["../etc", &"x".repeat(151)] {
            assert_eq!(send(admitted_for(bad)), StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(rx.try_recv().is_err(), "nothing forwarded");
        let e = relay
            .forward(Payload::Logs(Default::default()), Some("a b".into()))
            .unwrap_err();
        assert_eq!(status(e).code(), tonic::Code::InvalidArgument);
    }

    fn received_body(rx: &Receiver<Batch>) -> String {
        let batch = rx.try_recv().expect("a forwarded request");
        let Payload::Logs(req) = batch.payload else {
            panic!("not logs");
        };
        let rl = &req.resource_logs[0];
        assert!(
            rl.resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .any(|kv| kv.key == "k8s.node.name"),
            "node attribute added"
        );
        match &rl.scope_logs[0].log_records[0].body {
            Some(AnyValue {
                value: Some(Value::StringValue(s)),
            }) => s.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gzip_zstd_and_identity_bodies_are_forwarded() {
        let (relay, rx) = relay();
        for (enc, body) in [
            (None, logs("plain")),
            (Some("identity"), logs("identity")),
            (Some("gzip"), gzip(&logs("gzip"))),
            (
                Some("zstd"),
                zstd::bulk::compress(&logs("zstd"), 3).unwrap(),
            ),
        ] {
            let (status, text) = post(&relay, enc, body);
            assert_eq!(status, StatusCode::OK, "{enc:?}: {text}");
            let want = enc.unwrap_or("plain");
            assert_eq!(received_body(&rx), want);
        }
        assert_eq!(relay.stats.relay_requests.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn bad_compressed_bodies_are_refused_with_a_message() {
        let (relay, rx) = relay();
        let (status, text) = post(&relay, Some("gzip"), b"not gzip at all".to_vec());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.starts_with("invalid gzip body: "), "{text}");
        let (status, text) = post(&relay, Some("zstd"), b"not zstd at all".to_vec());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.starts_with("invalid zstd body: "), "{text}");
        let (status, text) = post(&relay, Some("br"), logs("x"));
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(text.contains("\"br\""), "{text}");
        // Compresses to a few KiB, expands past the relay's body limit.
        let bomb = zstd::bulk::compress(&vec![0u8; relay.max + 1], 3).unwrap();
        assert!(bomb.len() < 64 << 10);
        let (status, text) = post(&relay, Some("zstd"), bomb);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        assert!(text.contains(&relay.max.to_string()), "{text}");
        assert!(rx.try_recv().is_err(), "nothing forwarded");
    }

    /// One 16 MiB JSON request once took the agent to 494 MiB: the relay
    /// had no budget. Each row is refused before the body is decoded.
    #[test]
    fn relay_refuses_what_its_limits_do_not_allow() {
        let json =
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;
        /// (what, budget left by other requests, max size, content type,
        /// declared length, body, status, text)
        type Row = (
            &'static str,
            usize,
            usize,
            &'static str,
            Option<u64>,
            Vec<u8>,
            StatusCode,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (
                "fits",
                1 << 19,
                1 << 20,
                "application/json",
                None,
                json.to_vec(),
                StatusCode::OK,
                "",
            ),
            (
                "decoding would pass the budget",
                100,
                1 << 20,
                "application/json",
                None,
                json.to_vec(),
                StatusCode::TOO_MANY_REQUESTS,
                "relay_max_inflight_bytes",
            ),
            (
                "declared length over the size limit",
                1 << 19,
                1000,
                "application/json",
                Some(1 << 30),
                Vec::new(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "relay_max_recv_msg_size",
            ),
            (
                "body over the size limit",
                1 << 19,
                10,
                "application/json",
                None,
                json.to_vec(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than 10 bytes",
            ),
            (
                "text/plain, as a cross-site form sends",
                1 << 19,
                1 << 20,
                "text/plain",
                None,
                json.to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported content-type",
            ),
        ];
        let total = 1 << 20;
        for (what, left, max, ct, len, body, status, text) in rows {
            let (relay, _rx) = relay_with(total, max);
            let mut others = relay.budget.start();
            relay.budget.charge(&mut others, total - left).unwrap();
            let (got, msg) = post_as(&relay, ct, None, len, body);
            assert_eq!(got, status, "{what}: {msg}");
            assert!(msg.contains(text), "{what}: {msg}");
            // Nothing stays charged once the request is answered.
            relay.budget.finish(others);
            assert_eq!(
                relay.stats.relay_inflight_bytes.load(Ordering::Relaxed),
                0,
                "{what}"
            );
        }
    }

    #[test]
    fn budget_is_held_until_released_and_never_past_its_limit() {
        let stats = Arc::new(Stats::default());
        let b = Budget::new(100, stats.clone());
        let mut one = b.start();
        b.charge(&mut one, 60).unwrap();
        let mut two = b.start();
        let e = b.charge(&mut two, 60).unwrap_err();
        assert!(e.to_string().contains("relay_max_inflight_bytes"), "{e}");
        // One request alone may take the whole budget, not more.
        b.release(&mut one, 60);
        b.charge(&mut two, 1000).unwrap();
        assert_eq!(stats.relay_inflight_bytes.load(Ordering::Relaxed), 100);
        b.finish(two);
        assert_eq!(stats.relay_inflight_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(stats.relay_refused_requests.load(Ordering::Relaxed), 1);
    }
}
