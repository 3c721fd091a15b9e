//! Panics in request handlers are caught, not allowed to drop a connection.
//!
//! Every listener's service is wrapped in tower-http's `CatchPanic`: a
//! handler that panics (a bug we have not found yet) answers 500, or gRPC
//! `INTERNAL` on the OTLP/gRPC listener, is logged with the panic message,
//! and is counted in `periscope_panics_total{listener=...}`. The client
//! never sees the panic text: it may hold internals.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use tower_http::catch_panic::CatchPanicLayer;

use crate::telemetry::{Listener, Metrics};

/// What a panic's payload says (`panic!` with a literal or a formatted message).
fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload")
}

fn record(listener: Listener, metrics: &Metrics, payload: &(dyn Any + Send)) {
    metrics.panics[listener as usize].fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        listener = listener.as_str(),
        panic = message(payload),
        "request handler panicked; answered with an internal error"
    );
}

/// The layer for an HTTP listener: a panic answers 500 with a JSON error.
pub fn catch_panics_layer(
    listener: Listener,
    metrics: Arc<Metrics>,
) -> CatchPanicLayer<impl Fn(Box<dyn Any + Send>) -> Response<Body> + Clone> {
    CatchPanicLayer::custom(move |payload: Box<dyn Any + Send>| {
        record(listener, &metrics, payload.as_ref());
        let mut res = Response::new(Body::from(
            r#"{"error":"internal error: the request handler panicked (logged as a bug)"}"#,
        ));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    })
}

/// Wraps every route of an HTTP listener's router.
pub fn catch_panics(router: Router, listener: Listener, metrics: Arc<Metrics>) -> Router {
    router.layer(catch_panics_layer(listener, metrics))
}

/// The layer for a gRPC listener: a panic answers status `INTERNAL` in a
/// trailers-only response (HTTP 200, as gRPC wants).
pub fn catch_grpc_panics(
    listener: Listener,
    metrics: Arc<Metrics>,
) -> CatchPanicLayer<impl Fn(Box<dyn Any + Send>) -> Response<Body> + Clone> {
    CatchPanicLayer::custom(move |payload: Box<dyn Any + Send>| {
        record(listener, &metrics, payload.as_ref());
        let mut res = Response::new(Body::empty());
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(tonic::Code::Internal as i32),
        );
        h.insert(
            "grpc-message",
            HeaderValue::from_static("internal error: the request handler panicked"),
        );
        res
    })
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn panicking_router() -> Router {
        Router::new().route("/ok", get(|| async { "fine" })).route(
            "/boom",
            get(|| async {
                let v: Vec<u8> = Vec::new();
                // An out-of-bounds index, like the bugs this guards against.
                v[usize::from(v.is_empty())].to_string()
            }),
        )
    }

    #[tokio::test]
    async fn handler_panic_answers_500_and_is_counted_per_listener() {
        let metrics = Arc::new(Metrics::default());
        let app = catch_panics(panicking_router(), Listener::Http, metrics.clone());
        let cases = [
            ("/boom", StatusCode::INTERNAL_SERVER_ERROR, 1),
            ("/ok", StatusCode::OK, 1),
            ("/boom", StatusCode::INTERNAL_SERVER_ERROR, 2),
        ];
        for (path, status, panics) in cases {
            let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), status, "{path}");
            let n = metrics.panics[Listener::Http as usize].load(Ordering::Relaxed);
            assert_eq!(n, panics, "{path}");
        }
        assert_eq!(
            metrics.panics[Listener::OtlpHttp as usize].load(Ordering::Relaxed),
            0
        );
        let text = metrics.render_panics();
        assert!(
            text.contains("periscope_panics_total{listener=\"http\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn grpc_handler_panic_answers_internal() {
        let metrics = Arc::new(Metrics::default());
        let svc = tower::ServiceBuilder::new()
            .layer(catch_grpc_panics(Listener::OtlpGrpc, metrics.clone()))
            .service_fn(|_req: axum::http::Request<Body>| async move {
                if usize::MAX.checked_add(1).is_none() {
                    panic!("simulated bug");
                }
                Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
            });
        let req =
            axum::http::Request::post("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
                .body(Body::empty())
                .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "13");
        assert_eq!(
            metrics.panics[Listener::OtlpGrpc as usize].load(Ordering::Relaxed),
            1
        );
    }
}
