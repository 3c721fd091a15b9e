//! Prometheus remote write 1.0: `POST /api/v1/write` (snappy-compressed
//! protobuf), on the OTLP/HTTP port and the query port, acknowledged once
//! the request is in the WAL, like OTLP. The tenant comes from
//! `X-Scope-OrgID`, as Mimir reads it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use periscope_store::TenantId;

use crate::pipeline::{Ingest, IngestError};

#[derive(Clone)]
struct RwState {
    ingest: Arc<Ingest>,
    max_size: usize,
}

/// The remote-write route.
pub fn router(ingest: Arc<Ingest>, max_size: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .with_state(RwState { ingest, max_size })
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

async fn write(State(st): State<RwState>, headers: HeaderMap, body: Body) -> Response {
    let tenant = match headers.get("x-scope-orgid") {
        None => TenantId::default_tenant(),
        Some(v) => match v.to_str().ok().map(TenantId::parse) {
            Some(Ok(t)) => t,
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("invalid tenant id in X-Scope-OrgID: {v:?}"),
                );
            }
        },
    };
    let body = match axum::body::to_bytes(body, st.max_size).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = e.to_string().contains("length limit")
                || std::error::Error::source(&e)
                    .is_some_and(|s| s.to_string().contains("length limit"));
            return if too_large {
                text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {} bytes", st.max_size),
                )
            } else {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("failed to read request body: {e}"),
                )
            };
        }
    };
    match st.ingest.export_remote_write(tenant, body).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let (_, status) = super::codes(&e);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = text(status, e.to_string());
            if matches!(e, IngestError::Busy(_) | IngestError::Unavailable(_)) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            r
        }
    }
}
