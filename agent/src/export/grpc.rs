//! The OTLP/gRPC client: zstd compression with a fallback to gzip when the
//! server does not accept it, `X-Scope-OrgID` and bearer-token metadata, and
//! the classification of outcomes into acknowledged, retryable (with the
//! server's `RetryInfo` hint) or permanently rejected.

use std::time::Duration;

use periscope_proto::otlp::client::{LogsServiceClient, MetricsServiceClient, TraceServiceClient};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::batch::Payload;

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
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// OTLP/gRPC clients for the three signals on one channel.
#[derive(Debug)]
pub struct Client {
    channel: Channel,
    opts: ClientOptions,
    encoding: CompressionEncoding,
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
#[error("invalid endpoint {endpoint}: {source}")]
pub struct ClientError {
    endpoint: String,
    source: tonic::transport::Error,
}

impl Client {
    /// A lazily connecting client; must be called inside a tokio runtime.
    pub fn new(opts: ClientOptions) -> Result<Self, ClientError> {
        let err = |source| ClientError {
            endpoint: opts.endpoint.clone(),
            source,
        };
        let mut ep = Endpoint::from_shared(opts.endpoint.clone())
            .map_err(err)?
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if opts.endpoint.starts_with("https://") {
            ep = ep
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(err)?;
        }
        Ok(Client {
            channel: ep.connect_lazy(),
            opts,
            encoding: CompressionEncoding::Zstd,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(self.opts.timeout);
        if let Some(t) = &self.opts.tenant
            && let Ok(v) = MetadataValue::try_from(t.as_str())
        {
            req.metadata_mut().insert("x-scope-orgid", v);
        }
        if let Some(t) = &self.opts.bearer_token
            && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// Sends one request.
    pub async fn send(&mut self, payload: &Payload) -> Outcome {
        loop {
            let enc = self.encoding;
            let res = match payload.clone() {
                Payload::Logs(r) => LogsServiceClient::new(self.channel.clone())
                    .send_compressed(enc)
                    .export(self.request(r))
                    .await
                    .map(|resp| {
                        resp.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_log_records)
                    }),
                Payload::Metrics(r) => MetricsServiceClient::new(self.channel.clone())
                    .send_compressed(enc)
                    .export(self.request(r))
                    .await
                    .map(|resp| {
                        resp.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_data_points)
                    }),
                Payload::Traces(r) => TraceServiceClient::new(self.channel.clone())
                    .send_compressed(enc)
                    .export(self.request(r))
                    .await
                    .map(|resp| {
                        resp.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_spans)
                    }),
            };
            match res {
                Ok(rejected) => return Outcome::Acked { rejected },
                Err(s) if enc == CompressionEncoding::Zstd && compression_refused(&s) => {
                    tracing::warn!(error = %s.message(), "collector does not accept zstd; falling back to gzip");
                    self.encoding = CompressionEncoding::Gzip;
                }
                Err(s) => return classify(&s),
            }
        }
    }
}

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
    use prost::Message;

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
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let req = c.request(());
        assert_eq!(req.metadata().get("x-scope-orgid").unwrap(), "acme");
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert!(
            Client::new(ClientOptions {
                endpoint: "not a uri".into(),
                tenant: None,
                bearer_token: None,
                timeout: Duration::from_secs(1),
            })
            .is_err()
        );
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
