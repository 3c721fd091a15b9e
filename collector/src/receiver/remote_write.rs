//! Prometheus remote write 1.0: `POST /api/v1/write` (snappy-compressed
//! protobuf), on the OTLP/HTTP port and the query port, acknowledged once
//! the request is in the WAL, like OTLP. The tenant comes from
//! `X-Scope-OrgID`, as Mimir reads it. Samples get OTLP's timestamp bounds:
//! those older than the metrics retention or more than a day ahead are
//! dropped, counted and reported with a 400 after the others are stored.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use periscope_store::TenantId;

use periscope_proto::Signal;

use super::body::{ReadError, read_charged};
use crate::pipeline::{Ingest, IngestError};
use crate::telemetry::{Metrics, Transport};

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

/// Why a content type is not remote write 1.0's, or `None` when it is:
/// `application/x-protobuf`, with no `proto` parameter or 1.0's. Remote
/// write 2.0 names `io.prometheus.write.v2.Request`, and its spec asks a
/// receiver that does not speak it for 415, so that the sender falls back.
/// Refusing `text/plain` also keeps browsers out: a cross-site form or
/// `fetch` POST may send `text/plain` without a preflight, never
/// `application/x-protobuf`.
fn unsupported_content_type(ct: Option<&str>) -> Option<String> {
    let ct = ct.unwrap_or("");
    let mut parts = ct.split(';').map(str::trim);
    let mime = parts.next().unwrap_or("");
    let v1 = mime.eq_ignore_ascii_case("application/x-protobuf")
        && parts.all(|p| match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("proto") => {
                v.trim().trim_matches('"') == "prometheus.WriteRequest"
            }
            _ => true,
        });
    (!v1).then(|| {
        format!(
            "unsupported content-type {ct:?}: remote write 1.0 takes application/x-protobuf (prometheus.WriteRequest)"
        )
    })
}

async fn write(State(st): State<RwState>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if let Some(msg) = unsupported_content_type(ct) {
        Metrics::add(
            &st.ingest.metrics.invalid_requests,
            Signal::Metrics,
            Transport::Http,
            1,
        );
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg);
    }
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
    // The body is snappy in remote write's own framing (its
    // `Content-Encoding: snappy` is not an HTTP content coding to undo here).
    let mut charge = st.ingest.start_charge();
    let body = match read_charged(&st.ingest, &mut charge, body, &headers, st.max_size, false).await
    {
        Ok(b) => b,
        Err(e) => {
            if matches!(e, ReadError::Busy(_)) {
                st.ingest
                    .count_refused(Signal::Metrics, Transport::Http, None);
            } else {
                Metrics::add(
                    &st.ingest.metrics.invalid_requests,
                    Signal::Metrics,
                    Transport::Http,
                    1,
                );
            }
            let mut r = text(e.status(), e.to_string());
            if matches!(e, ReadError::Busy(_)) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            return r;
        }
    };
    match st.ingest.export_remote_write(tenant, body, charge).await {
        // Prometheus answers samples it cannot take (out of bounds, out of
        // order) with 400 once the others are appended, and so does Mimir.
        // Remote-write clients retry 5xx (and 429 if configured) but drop a
        // request answered 4xx: retrying would store the valid samples again
        // and the dropped ones can never succeed.
        Ok(a) => match a.dropped_message() {
            Some(msg) => text(StatusCode::BAD_REQUEST, msg),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Err(e) => {
            let (_, status) = super::codes(&e);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = text(status, e.to_string());
            if matches!(
                e,
                IngestError::Busy(_) | IngestError::Unavailable(_) | IngestError::TenantBacklog(_)
            ) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_remote_write_1_content_types_are_accepted() {
        for (ct, ok) in [
            (Some("application/x-protobuf"), true),
            (Some("Application/X-Protobuf"), true),
            (
                Some("application/x-protobuf;proto=prometheus.WriteRequest"),
                true,
            ),
            (Some("application/x-protobuf; charset=utf-8"), true),
            (
                Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                false,
            ),
            (Some("text/plain"), false),
            (Some("application/json"), false),
            (Some(""), false),
            (None, false),
        ] {
            let got = unsupported_content_type(ct);
            assert_eq!(got.is_none(), ok, "{ct:?}: {got:?}");
            if let Some(msg) = got {
                assert!(msg.contains("application/x-protobuf"), "{msg}");
            }
        }
    }
}
