//! OTLP/HTTP: `POST /v1/logs`, `/v1/traces`, `/v1/metrics` with protobuf or
//! JSON bodies, optionally gzip- or zstd-compressed. Errors are
//! `google.rpc.Status` in the request's encoding.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use periscope_proto::{BodyError, ContentEncoding, Encoding, RpcStatus, Signal, decompress_body};
use periscope_store::TenantId;
use prost::Message;

use crate::pipeline::{Ingest, IngestError};
use crate::telemetry::{Metrics, Transport};

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    max_size: usize,
}

/// The OTLP/HTTP routes; CORS is added only when origins are configured.
pub fn router(ingest: Arc<Ingest>, max_size: usize, cors_origins: &[String]) -> Router {
    let st = HttpState { ingest, max_size };
    let r = Router::new()
        .route("/v1/logs", post(|s, h, b| export(Signal::Logs, s, h, b)))
        .route(
            "/v1/traces",
            post(|s, h, b| export(Signal::Traces, s, h, b)),
        )
        .route(
            "/v1/metrics",
            post(|s, h, b| export(Signal::Metrics, s, h, b)),
        )
        .with_state(st);
    if cors_origins.is_empty() {
        return r;
    }
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = if cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    r.layer(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::HeaderName::from_static("x-scope-orgid"),
            ]),
    )
}

fn error(encoding: Encoding, status: StatusCode, code: tonic::Code, message: String) -> Response {
    let st = RpcStatus {
        code: code as i32,
        message,
    };
    let (ct, body) = match encoding {
        Encoding::Json => ("application/json", st.to_json()),
        Encoding::Protobuf => ("application/x-protobuf", st.encode_to_vec()),
    };
    let mut res = (status, [(header::CONTENT_TYPE, ct)], body).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// Reads the body up to `max` bytes, then decompresses it up to `max` bytes.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let raw = axum::body::to_bytes(body, max).await.map_err(|e| {
        // Over the limit, or the connection failed mid-body.
        let too_large =
            std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"));
        if too_large || e.to_string().contains("length limit") {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {max} bytes"),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("failed to read request body: {e}"),
            )
        }
    })?;
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(body_error)?;
    if encoding == ContentEncoding::Identity {
        return Ok(raw);
    }
    // Decompress on a blocking thread, never past the cap (a zip bomb stops
    // at max + 1 bytes).
    tokio::task::spawn_blocking(move || decompress_body(encoding, &raw, max))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map(Bytes::from)
        .map_err(body_error)
}

fn body_error(e: BodyError) -> (StatusCode, String) {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, e.to_string())
}

async fn export(
    signal: Signal,
    State(st): State<HttpState>,
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
    let encoding = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        _ => {
            Metrics::add(
                &st.ingest.metrics.invalid_requests,
                signal,
                Transport::Http,
                1,
            );
            return error(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                format!(
                    "unsupported content-type {ct:?}: use application/x-protobuf or application/json"
                ),
            );
        }
    };
    let tenant = match headers.get("x-scope-orgid") {
        None => TenantId::default_tenant(),
        Some(v) => match v.to_str().ok().map(TenantId::parse) {
            Some(Ok(t)) => t,
            _ => {
                return error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    format!("invalid tenant id in X-Scope-OrgID: {v:?}"),
                );
            }
        },
    };
    let body = match read_body(body, &headers, st.max_size).await {
        Ok(b) => b,
        Err((status, msg)) => {
            Metrics::add(
                &st.ingest.metrics.invalid_requests,
                signal,
                Transport::Http,
                1,
            );
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                tonic::Code::ResourceExhausted
            } else {
                tonic::Code::InvalidArgument
            };
            return error(encoding, status, code, msg);
        }
    };
    match st
        .ingest
        .export(signal, Transport::Http, tenant, encoding, body)
        .await
    {
        Ok(a) => {
            let (ct, body) = match encoding {
                Encoding::Json => (
                    "application/json",
                    super::response_json(signal, a.rejected, &a.error_message),
                ),
                Encoding::Protobuf => (
                    "application/x-protobuf",
                    super::response_protobuf(signal, a.rejected, &a.error_message),
                ),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
        }
        Err(e) => {
            let (code, status) = super::codes(&e);
            if let IngestError::Unavailable(err) = &e {
                tracing::warn!(error = %err, "export failed");
            }
            error(
                encoding,
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                e.to_string(),
            )
        }
    }
}
