//! The OTLP/gRPC client: zstd compression with a fallback to gzip when the
//! server does not accept it, `X-Scope-OrgID` and bearer-token metadata, and
//! the classification of outcomes into acknowledged, retryable (with the
//! server's `RetryInfo` hint) or permanently rejected.
//!
//! A token file (`bearer_token_file`) is read again at most every
//! [`TOKEN_FILE_RECHECK`] and after every `UNAUTHENTICATED` answer, so a
//! rotated Kubernetes Secret is picked up without a restart; while the file
//! cannot be read or is empty, the last good token stays in use.
//!
//! Requests arrive encoded. zstd requests are compressed here at level 1 and
//! framed by hand on the tonic channel (tonic always uses level 3, a third
//! slower for the same ratio on logs); gzip ones go through tonic's codec.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use periscope_proto::otlp::{
    ExportLogsServiceResponse, ExportMetricsServiceResponse, ExportTraceServiceResponse,
};
use periscope_proto::pre_encoded::{
    LOGS_EXPORT_PATH, METRICS_EXPORT_PATH, PreEncoded, TRACES_EXPORT_PATH,
};
use prost::bytes::Bytes;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status};

/// Outcome of one export attempt.
#[derive(Debug)]
pub enum Outcome {
    /// Acknowledged; `rejected` records were refused by partial success.
    Acked {
        /// Records the server refused.
        rejected: i64,
    },
    /// Try again later (after the hint, when the server gave one).
    Retry {
        /// The server's `RetryInfo` delay.
        hint: Option<Duration>,
        /// Why.
        reason: String,
    },
    /// The server refused the request for good.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Client options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http://` or `https://` endpoint.
    pub endpoint: String,
    /// Tenant header.
    pub tenant: Option<String>,
    /// Bearer token.
    pub bearer_token: Option<String>,
    /// File holding the bearer token; excludes `bearer_token`.
    pub bearer_token_file: Option<PathBuf>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// TLS of `https://` endpoints.
    pub tls: TlsOptions,
}

/// TLS settings of an `https://` endpoint beyond the public web roots, with
/// the PEM files already read (and checked by the configuration).
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) trusted besides the public web roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Name the server certificate is verified against, and sent as SNI,
    /// instead of the endpoint's host.
    pub server_name: Option<String>,
    /// Client certificate chain and private key (PEM) for mutual TLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    /// Whether any option is set.
    pub fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.server_name.is_some() || self.client_identity.is_some()
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("server_name", &self.server_name)
            .field("client_identity", &self.client_identity.is_some())
            .finish()
    }
}

/// How often a token file is read again while exports succeed.
pub const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(5);

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It holds no token.
    #[error("{} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Its content cannot be sent as a token.
    #[error("{}: a token is visible ASCII characters without spaces", path.display())]
    NotAscii {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a token file: its content without surrounding whitespace, as the
/// `authorization` value it makes.
pub fn read_token_file(path: &Path) -> Result<MetadataValue<Ascii>, TokenFileError> {
    let text = std::fs::read(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    let not_ascii = || TokenFileError::NotAscii {
        path: path.to_owned(),
    };
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(not_ascii());
    }
    let token = std::str::from_utf8(token).map_err(|_| not_ascii())?;
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| not_ascii())
}

/// A token file and what was last read from it.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    /// The last good token; `None` until one was read.
    value: Option<MetadataValue<Ascii>>,
    /// When the file was last read; `None`: read it before the next request.
    checked: Option<Instant>,
    /// The last read failed (logged once per failing streak).
    failing: bool,
}

impl TokenFile {
    /// Reads the file again if it is due.
    fn refresh(&mut self) {
        if self
            .checked
            .is_some_and(|t| t.elapsed() < TOKEN_FILE_RECHECK)
        {
            return;
        }
        self.checked = Some(Instant::now());
        match read_token_file(&self.path) {
            Ok(v) => {
                if self.value.as_ref().is_some_and(|old| *old != v) {
                    tracing::info!(path = %self.path.display(), "bearer token file changed; sending the new token");
                }
                self.value = Some(v);
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot use the bearer token file; keeping the last token read");
                }
                self.failing = true;
            }
        }
    }
}

/// OTLP/gRPC clients for the three signals on one channel.
pub struct Client {
    channel: Channel,
    opts: ClientOptions,
    encoding: CompressionEncoding,
    /// zstd context reused across requests.
    zstd: zstd::bulk::Compressor<'static>,
    /// The `authorization` value of a fixed `bearer_token`.
    token: Option<MetadataValue<Ascii>>,
    token_file: Option<TokenFile>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.opts.endpoint)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
#[error("invalid endpoint {endpoint}: {source}")]
pub struct ClientError {
    endpoint: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl Client {
    /// A lazily connecting client; must be called inside a tokio runtime.
    pub fn new(opts: ClientOptions) -> Result<Self, ClientError> {
        let err = |source: tonic::transport::Error| ClientError {
            endpoint: opts.endpoint.clone(),
            source: Box::new(source),
        };
        let mut ep = Endpoint::from_shared(opts.endpoint.clone())
            .map_err(err)?
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if opts.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &opts.tls.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some(name) = &opts.tls.server_name {
                tls = tls.domain_name(name.clone());
            }
            if let Some((cert, key)) = &opts.tls.client_identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            ep = ep.tls_config(tls).map_err(err)?;
        }
        let zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| ClientError {
            endpoint: opts.endpoint.clone(),
            source: Box::new(e),
        })?;
        let token = opts
            .bearer_token
            .as_ref()
            .and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok());
        let token_file = opts.bearer_token_file.clone().map(|path| TokenFile {
            path,
            value: None,
            checked: None,
            failing: false,
        });
        Ok(Client {
            channel: ep.connect_lazy(),
            opts,
            encoding: CompressionEncoding::Zstd,
            zstd,
            token,
            token_file,
        })
    }

    /// A request with the metadata: `tenant`, else the configured tenant,
    /// and the token.
    fn request<T>(&self, msg: T, tenant: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.opts.timeout);
        if let Some(t) = tenant.or(self.opts.tenant.as_deref())
            && let Ok(v) = MetadataValue::try_from(t)
        {
            req.metadata_mut().insert("x-scope-orgid", v);
        }
        let token = match &self.token_file {
            Some(f) => f.value.as_ref(),
            None => self.token.as_ref(),
        };
        if let Some(v) = token {
            req.metadata_mut().insert("authorization", v.clone());
        }
        req
    }

    /// Sends a request already encoded as protobuf; `kind` is
    /// [`crate::Payload::kind`], `tenant` overrides the configured tenant
    /// (requests the relay admitted for a tenant). Nothing of the request is
    /// copied per attempt.
    pub async fn send_encoded(&mut self, kind: u8, tenant: Option<&str>, body: Bytes) -> Outcome {
        if let Some(f) = self.token_file.as_mut() {
            f.refresh();
        }
        loop {
            let enc = self.encoding;
            let res = match kind {
                1 => self
                    .call::<ExportLogsServiceResponse>(LOGS_EXPORT_PATH, enc, tenant, &body)
                    .await
                    .map(|r| r.partial_success.map_or(0, |p| p.rejected_log_records)),
                2 => self
                    .call::<ExportMetricsServiceResponse>(METRICS_EXPORT_PATH, enc, tenant, &body)
                    .await
                    .map(|r| r.partial_success.map_or(0, |p| p.rejected_data_points)),
                3 => self
                    .call::<ExportTraceServiceResponse>(TRACES_EXPORT_PATH, enc, tenant, &body)
                    .await
                    .map(|r| r.partial_success.map_or(0, |p| p.rejected_spans)),
                k => {
                    return Outcome::Rejected {
                        reason: format!("unknown payload kind {k}"),
                    };
                }
            };
            match res {
                Ok(rejected) => return Outcome::Acked { rejected },
                Err(s) if enc == CompressionEncoding::Zstd && compression_refused(&s) => {
                    tracing::warn!(error = %s.message(), "collector does not accept zstd; falling back to gzip");
                    self.encoding = CompressionEncoding::Gzip;
                }
                Err(s) => {
                    if s.code() == Code::Unauthenticated
                        && let Some(f) = self.token_file.as_mut()
                    {
                        // The token may have been rotated: the retry reads
                        // the file again.
                        f.checked = None;
                    }
                    return classify(&s);
                }
            }
        }
    }

    /// One unary call of `path`: zstd bodies are compressed here (at
    /// [`ZSTD_LEVEL`], which tonic does not let us choose), gzip ones by tonic.
    async fn call<R>(
        &mut self,
        path: &'static str,
        enc: CompressionEncoding,
        tenant: Option<&str>,
        body: &Bytes,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + Sync + 'static,
    {
        if enc == CompressionEncoding::Zstd {
            let frame = self.zstd_frame(body)?;
            self.unary_framed(path, tenant, frame).await
        } else {
            self.unary(path, enc, tenant, body.clone()).await
        }
    }

    /// A gRPC message frame (compressed flag, big-endian length) of the
    /// zstd-compressed body.
    fn zstd_frame(&mut self, body: &[u8]) -> Result<Bytes, Status> {
        let compressed = self
            .zstd
            .compress(body)
            .map_err(|e| Status::internal(format!("zstd compression failed: {e}")))?;
        let len = u32::try_from(compressed.len())
            .map_err(|_| Status::internal("request too large for one gRPC message"))?;
        let mut frame = Vec::with_capacity(5 + compressed.len());
        frame.push(1);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&compressed);
        Ok(frame.into())
    }

    /// A unary call whose message frame is already built, on the channel
    /// directly (HTTP/2 request, gRPC status from the headers or trailers).
    async fn unary_framed<R>(
        &self,
        path: &'static str,
        tenant: Option<&str>,
        frame: Bytes,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default,
    {
        use tonic::codegen::Service;
        use tonic::codegen::http::{self, HeaderValue, header};
        let mut req = http::Request::new(tonic::body::Body::new(Full::new(frame)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static(path);
        let mut headers = self.request((), tenant).into_parts().0.into_headers();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("grpc-encoding", HeaderValue::from_static("zstd"));
        req.headers_mut().extend(headers);
        let mut ch = self.channel.clone();
        std::future::poll_fn(|cx| ch.poll_ready(cx))
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let resp = ch
            .call(req)
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        let (parts, body) = resp.into_parts();
        // Trailers-only responses carry the status in the headers.
        if let Some(st) = Status::from_header_map(&parts.headers) {
            return if st.code() == Code::Ok {
                Ok(R::default())
            } else {
                Err(st)
            };
        }
        if parts.status != http::StatusCode::OK {
            return Err(Status::unavailable(format!(
                "HTTP status {} without a gRPC status",
                parts.status
            )));
        }
        let collected = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(Status::from_error)?;
        match collected.trailers().and_then(Status::from_header_map) {
            Some(st) if st.code() == Code::Ok => {}
            Some(st) => return Err(st),
            None => return Err(Status::internal("response without a gRPC status")),
        }
        let data = collected.to_bytes();
        match data.as_ref() {
            [] => Ok(R::default()),
            [0, l0, l1, l2, l3, msg @ ..]
                if msg.len() == u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize =>
            {
                R::decode(msg).map_err(|e| Status::internal(format!("invalid response: {e}")))
            }
            _ => Err(Status::internal("malformed gRPC response frame")),
        }
    }

    /// One unary call of `path` with an encoded request body.
    async fn unary<R>(
        &self,
        path: &'static str,
        enc: CompressionEncoding,
        tenant: Option<&str>,
        body: Bytes,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone()).send_compressed(enc);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let path = PathAndQuery::from_static(path);
        grpc.unary(self.request(body, tenant), path, PreEncoded::<R>::default())
            .await
            .map(Response::into_inner)
    }
}

/// zstd level of requests: level 1 compresses OTLP logs about as well as
/// the default level 3 (within 2 %), at about 1.5 times the speed.
pub const ZSTD_LEVEL: i32 = 1;

/// Largest response read (an export response is a few bytes).
const MAX_RESPONSE: usize = 1 << 20;

fn compression_refused(s: &Status) -> bool {
    s.code() == Code::Unimplemented && {
        let m = s.message().to_ascii_lowercase();
        m.contains("compress") || m.contains("encoding")
    }
}

/// Maps a gRPC status to an outcome. Only a request the collector refuses
/// as malformed (`INVALID_ARGUMENT`) is dropped: retrying it would block the
/// pipeline forever. Everything else is retried — the OTLP exporter rules'
/// retryable codes (RESOURCE_EXHAUSTED with or without a `RetryInfo` hint,
/// since the collector uses it for backpressure), failures of the
/// connection itself (which tonic reports as `INTERNAL` or `UNKNOWN`, e.g.
/// "h2 protocol error" when the collector goes away mid-request), and server
/// errors such as `INTERNAL` or `UNAUTHENTICATED`, which an operator fixes
/// while the agent waits, reading paused at the spool's bound, rather than
/// losing the records.
pub fn classify(s: &Status) -> Outcome {
    let reason = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        Code::InvalidArgument => Outcome::Rejected { reason },
        _ => Outcome::Retry {
            hint: retry_hint(s.details()),
            reason,
        },
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The `google.rpc.RetryInfo` delay in a status's details, if any.
pub fn retry_hint(details: &[u8]) -> Option<Duration> {
    use prost::Message;
    if details.is_empty() {
        return None;
    }
    let st = RpcStatus::decode(details).ok()?;
    st.details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .and_then(|r| r.retry_delay)
        .map(|d| {
            Duration::from_secs(d.seconds.max(0) as u64)
                + Duration::from_nanos(d.nanos.max(0) as u64)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use periscope_proto::otlp::{ExportLogsPartialSuccess, ExportLogsServiceRequest};
    use prost::Message;
    use std::sync::{Arc, Mutex};

    #[test]
    fn tenant_and_bearer_metadata() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let c = Client::new(ClientOptions {
            endpoint: "http://127.0.0.1:1".into(),
            tenant: Some("acme".into()),
            bearer_token: Some("s3cret".into()),
            bearer_token_file: None,
            timeout: Duration::from_secs(1),
            tls: TlsOptions::default(),
        })
        .unwrap();
        let req = c.request((), None);
        assert_eq!(req.metadata().get("x-scope-orgid").unwrap(), "acme");
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        // A relayed request's admitted tenant goes instead of the agent's.
        let req = c.request((), Some("shop"));
        assert_eq!(req.metadata().get("x-scope-orgid").unwrap(), "shop");
        assert!(
            Client::new(ClientOptions {
                endpoint: "not a uri".into(),
                tenant: None,
                bearer_token: None,
                bearer_token_file: None,
                timeout: Duration::from_secs(1),
                tls: TlsOptions::default(),
            })
            .is_err()
        );
    }

    #[test]
    fn token_file_is_read_again_when_due_and_keeps_the_last_good_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  first\n").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut c = Client::new(ClientOptions {
            endpoint: "http://127.0.0.1:1".into(),
            tenant: None,
            bearer_token: None,
            bearer_token_file: Some(path.clone()),
            timeout: Duration::from_secs(1),
            tls: TlsOptions::default(),
        })
        .unwrap();
        let sent = |c: &Client| {
            c.request((), None)
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(sent(&c), None, "not read before the first request");
        fn file(c: &mut Client) -> &mut TokenFile {
            c.token_file.as_mut().unwrap()
        }
        file(&mut c).refresh();
        assert_eq!(sent(&c).as_deref(), Some("Bearer first"));

        // Rotated: seen once the recheck interval has passed.
        std::fs::write(&path, "second").unwrap();
        file(&mut c).refresh();
        assert_eq!(sent(&c).as_deref(), Some("Bearer first"), "not due yet");
        file(&mut c).checked = Some(Instant::now() - TOKEN_FILE_RECHECK);
        file(&mut c).refresh();
        assert_eq!(sent(&c).as_deref(), Some("Bearer second"));

        // Empty, unreadable or unsendable: the last good token stays.
        for bad in [&b"  \n"[..], b"new\nline", b"caf\xc3\xa9"] {
            std::fs::write(&path, bad).unwrap();
            file(&mut c).checked = None;
            file(&mut c).refresh();
            assert_eq!(sent(&c).as_deref(), Some("Bearer second"), "{bad:?}");
            assert!(read_token_file(&path).is_err(), "{bad:?}");
        }
        std::fs::remove_file(&path).unwrap();
        file(&mut c).checked = None;
        file(&mut c).refresh();
        assert_eq!(sent(&c).as_deref(), Some("Bearer second"));
        assert!(file(&mut c).failing);
    }

    /// What the test collector answers.
    #[derive(Clone, Copy)]
    enum Answer {
        Ok,
        Partial(i64),
        Status(Code),
    }

    /// Requests the test collector received, with their tenant header.
    type Received = Vec<(ExportLogsServiceRequest, Option<String>)>;

    #[derive(Clone)]
    struct TestCollector {
        answer: Answer,
        got: Arc<Mutex<Received>>,
    }

    #[tonic::async_trait]
    impl LogsService for TestCollector {
        async fn export(
            &self,
            req: Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
            let tenant = req
                .metadata()
                .get("x-scope-orgid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            self.got.lock().unwrap().push((req.into_inner(), tenant));
            match self.answer {
                Answer::Ok => Ok(tonic::Response::new(ExportLogsServiceResponse::default())),
                Answer::Partial(n) => Ok(tonic::Response::new(ExportLogsServiceResponse {
                    partial_success: Some(ExportLogsPartialSuccess {
                        rejected_log_records: n,
                        error_message: "some were bad".into(),
                    }),
                })),
                Answer::Status(c) => Err(Status::new(c, "refused")),
            }
        }
    }

    fn logs_request() -> ExportLogsServiceRequest {
        use periscope_proto::otlp::common::v1::{AnyValue, any_value::Value};
        use periscope_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let records = (0..500)
            .map(|i| LogRecord {
                time_unix_nano: i,
                body: Some(AnyValue {
                    value: Some(Value::StringValue(format!("line {i} {}", "x".repeat(100)))),
                }),
                ..Default::default()
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Sends one encoded request to a collector answering `answer` that
    /// accepts `accept`; returns the outcome, what arrived, and the
    /// client's encoding afterwards.
    fn exchange(
        answer: Answer,
        accept: &[CompressionEncoding],
    ) -> (
        Outcome,
        Vec<(ExportLogsServiceRequest, Option<String>)>,
        CompressionEncoding,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let collector = TestCollector {
            answer,
            got: Arc::clone(&got),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut svc = LogsServiceServer::new(collector);
        for e in accept {
            svc = svc.accept_compressed(*e);
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        let mut client = {
            let _g = rt.enter();
            Client::new(ClientOptions {
                endpoint: format!("http://{addr}"),
                tenant: Some("acme".into()),
                bearer_token: None,
                bearer_token_file: None,
                timeout: Duration::from_secs(10),
                tls: TlsOptions::default(),
            })
            .unwrap()
        };
        let body = Bytes::from(logs_request().encode_to_vec());
        let outcome = rt.block_on(client.send_encoded(1, None, body));
        let _ = stop_tx.send(());
        rt.block_on(server).unwrap().unwrap();
        let got = std::mem::take(&mut *got.lock().unwrap());
        (outcome, got, client.encoding)
    }

    #[test]
    fn zstd_request_arrives_whole_with_metadata() {
        let (outcome, got, enc) = exchange(Answer::Ok, &[CompressionEncoding::Zstd]);
        assert!(
            matches!(outcome, Outcome::Acked { rejected: 0 }),
            "{outcome:?}"
        );
        assert_eq!(enc, CompressionEncoding::Zstd);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, logs_request());
        assert_eq!(got[0].1.as_deref(), Some("acme"));
    }

    #[test]
    fn collector_without_zstd_gets_gzip() {
        let (outcome, got, enc) = exchange(Answer::Ok, &[CompressionEncoding::Gzip]);
        assert!(
            matches!(outcome, Outcome::Acked { rejected: 0 }),
            "{outcome:?}"
        );
        assert_eq!(enc, CompressionEncoding::Gzip);
        assert_eq!(
            got.len(),
            1,
            "the zstd attempt is refused before the service"
        );
        assert_eq!(got[0].0, logs_request());
    }

    #[test]
    fn partial_success_and_refusals_through_the_framed_path() {
        let zstd = [CompressionEncoding::Zstd];
        let (outcome, _, _) = exchange(Answer::Partial(7), &zstd);
        assert!(
            matches!(outcome, Outcome::Acked { rejected: 7 }),
            "{outcome:?}"
        );
        let (outcome, _, _) = exchange(Answer::Status(Code::ResourceExhausted), &zstd);
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
        let (outcome, _, _) = exchange(Answer::Status(Code::InvalidArgument), &zstd);
        assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");
    }

    #[test]
    fn unreachable_collector_is_retried() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port just released: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut client = {
            let _g = rt.enter();
            Client::new(ClientOptions {
                endpoint: format!("http://{addr}"),
                tenant: None,
                bearer_token: None,
                bearer_token_file: None,
                timeout: Duration::from_secs(5),
                tls: TlsOptions::default(),
            })
            .unwrap()
        };
        let outcome = rt.block_on(client.send_encoded(1, None, Bytes::from_static(b"")));
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    }

    #[test]
    fn retry_hint_from_details() {
        let ri = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let st = RpcStatus {
            code: 8,
            message: "busy".into(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: ri.encode_to_vec(),
            }],
        };
        let s = Status::with_details(Code::ResourceExhausted, "busy", st.encode_to_vec().into());
        match classify(&s) {
            Outcome::Retry { hint, .. } => assert_eq!(hint, Some(Duration::from_millis(2500))),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            classify(&Status::unavailable("down")),
            Outcome::Retry { hint: None, .. }
        ));
        assert!(matches!(
            classify(&Status::deadline_exceeded("slow")),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("bad")),
            Outcome::Rejected { .. }
        ));
        // The collector going away mid-request: retried, never dropped.
        assert!(matches!(
            classify(&Status::internal("h2 protocol error: http2 error")),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(&Status::unauthenticated("bad token")),
            Outcome::Retry { .. }
        ));
        assert_eq!(retry_hint(b"\xff\xff"), None);
    }
}
