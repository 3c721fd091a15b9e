//! The error of every query API, and its wire shapes.
//!
//! One type, [`Error`], says what went wrong ([`ErrorKind`], which decides
//! the HTTP status) and why (the message). The APIs differ only in how
//! they write it: the native API as `{"error"}`, the Prometheus API as
//! `{"status":"error","errorType","error"}`, the Jaeger API as its
//! `errors` list. The shape is the type parameter ([`Native`], [`Prom`],
//! [`Jaeger`]), so a handler's return type picks it and every constructor
//! and conversion is written once.

use std::marker::PhantomData;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use periscope_store::StoreError;
use serde_json::{Value, json};

use crate::pool::Refusal;

/// What went wrong, with the names Prometheus' HTTP API gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or refused by a limit on its text: 400.
    BadData,
    /// The query cannot be answered within its limits: 422.
    Execution,
    /// The query ran past its deadline: 503.
    Timeout,
    /// The query was stopped (its client went away): 503.
    Canceled,
    /// Too many queries at once: 429 with `Retry-After`.
    Busy,
    /// Nothing has this id: 404.
    NotFound,
    /// A bug or a failed read: 500.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadData => StatusCode::BAD_REQUEST,
            ErrorKind::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout | ErrorKind::Canceled => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Prometheus API's `errorType`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Busy => "unavailable",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an API writes an error's body.
pub trait Wire {
    /// The JSON body of an error of `kind` with `message`.
    fn body(kind: ErrorKind, message: &str) -> Value;
}

/// The native API: `{"error": message}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Native;

/// The Prometheus API: `{"status": "error", "errorType", "error"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prom;

/// The Jaeger query API: an empty answer with one entry in `errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jaeger;

impl Wire for Native {
    fn body(_: ErrorKind, message: &str) -> Value {
        json!({"error": message})
    }
}

impl Wire for Prom {
    fn body(kind: ErrorKind, message: &str) -> Value {
        json!({"status": "error", "errorType": kind.as_str(), "error": message})
    }
}

impl Wire for Jaeger {
    fn body(kind: ErrorKind, message: &str) -> Value {
        json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": kind.status().as_u16(), "msg": message}],
        })
    }
}

/// An error of a query API, written in the shape of `W`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error<W = Native> {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Why, for the client.
    pub message: String,
    wire: PhantomData<W>,
}

impl<W> Error<W> {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            wire: PhantomData,
        }
    }

    /// A malformed request: 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::BadData, message)
    }

    /// The same error, in the shape of another API.
    pub fn wire<V>(self) -> Error<V> {
        Error::new(self.kind, self.message)
    }
}

impl<W: Wire> IntoResponse for Error<W> {
    fn into_response(self) -> Response {
        let mut r = (self.kind.status(), Json(W::body(self.kind, &self.message))).into_response();
        if self.kind == ErrorKind::Busy {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<Error<Native>> for Error<Prom> {
    fn from(e: Error<Native>) -> Self {
        e.wire()
    }
}

impl From<Error<Native>> for Error<Jaeger> {
    fn from(e: Error<Native>) -> Self {
        e.wire()
    }
}

impl<W> From<Refusal> for Error<W> {
    fn from(r: Refusal) -> Self {
        let kind = match r {
            Refusal::Busy(_) => ErrorKind::Busy,
            Refusal::Timeout(_) => ErrorKind::Timeout,
            Refusal::Failed(_) => ErrorKind::Internal,
        };
        Error::new(kind, r.to_string())
    }
}

/// A store error of the native and Jaeger APIs. (PromQL reports store
/// errors in Prometheus' terms: `QueryError::from_store`.)
impl<W> From<StoreError> for Error<W> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeadlineExceeded => Error::new(
                ErrorKind::Timeout,
                format!("{e}: the query ran longer than its timeout (--query-timeout)"),
            ),
            StoreError::Cancelled => Error::new(ErrorKind::Canceled, e.to_string()),
            StoreError::LimitExceeded { what, .. } => {
                Error::new(ErrorKind::Execution, format!("{e} (--query-max-{what})"))
            }
            StoreError::Query(_)
            | StoreError::InvalidArgument(_)
            | StoreError::InvalidTenant(_) => Error::new(ErrorKind::BadData, e.to_string()),
            e => {
                tracing::error!(error = %e, "query failed");
                Error::new(ErrorKind::Internal, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (StatusCode, Option<HeaderValue>, Value) {
        let status = r.status();
        let retry = r.headers().get(header::RETRY_AFTER).cloned();
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, retry, serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn one_error_three_shapes() {
        let e: Error = Error::new(ErrorKind::Busy, "too many");
        let (s, retry, b) = body(e.clone().into_response()).await;
        assert_eq!(
            (s, b),
            (StatusCode::TOO_MANY_REQUESTS, json!({"error": "too many"}))
        );
        assert!(retry.is_some());
        let (s, _, b) = body(e.clone().wire::<Prom>().into_response()).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            b,
            json!({"status": "error", "errorType": "unavailable", "error": "too many"})
        );
        let (s, _, b) =
            body(Error::<Jaeger>::new(ErrorKind::NotFound, "trace not found").into_response())
                .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            b["errors"],
            json!([{"code": 404, "msg": "trace not found"}])
        );
        assert_eq!(b["data"], Value::Null);
    }

    #[test]
    fn every_kind_has_its_status_and_name() {
        for (k, status, name) in [
            (ErrorKind::BadData, 400, "bad_data"),
            (ErrorKind::Execution, 422, "execution"),
            (ErrorKind::Timeout, 503, "timeout"),
            (ErrorKind::Canceled, 503, "canceled"),
            (ErrorKind::Busy, 429, "unavailable"),
            (ErrorKind::NotFound, 404, "not_found"),
            (ErrorKind::Internal, 500, "internal"),
        ] {
            assert_eq!((k.status().as_u16(), k.as_str()), (status, name));
        }
    }
}
