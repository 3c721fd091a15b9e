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
use periscope_proto::{Encoding, RpcStatus, Signal};
use periscope_store::TenantId;
use prost::Message;

use super::body::ReadError;
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
        // 429 and 503 are retryable in OTLP/HTTP; the client should wait.
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
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
    let mut charge = st.ingest.start_charge();
    let body =
        match super::body::read_charged(&st.ingest, &mut charge, body, &headers, st.max_size, true)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                if matches!(e, ReadError::Busy(_)) {
                    st.ingest.count_refused(signal, Transport::Http, None);
                } else {
                    Metrics::add(
                        &st.ingest.metrics.invalid_requests,
                        signal,
                        Transport::Http,
                        1,
                    );
                }
                return error(encoding, e.status(), e.code(), e.to_string());
            }
        };
    match st
        .ingest
        .export(signal, Transport::Http, tenant, encoding, body, charge)
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
