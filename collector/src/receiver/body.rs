//! Reading a request body at the HTTP edge, charged to the in-flight budget
//! before it is buffered: a `Content-Length` over the size limit is refused
//! before a byte of the body is read; a declared length is charged before
//! reading, and a chunked body as its bytes arrive. Decompression charges
//! its cap before it runs and gives back what it did not use.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use periscope_proto::{BodyError, ContentEncoding, decompress_body};

use super::listener::BodyTimeout;
use crate::pipeline::{Charge, Ingest, IngestError};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Larger than the size limit, announced or received (413).
    #[error("request body larger than {limit} bytes (--max-recv-msg-size)")]
    TooLarge { limit: usize },
    /// The in-flight budget has no room for it (429).
    #[error(transparent)]
    Busy(IngestError),
    /// The body did not arrive in time (408).
    #[error("{0}")]
    Timeout(String),
    /// The connection failed mid-body, or the length header is not a number (400).
    #[error("failed to read request body: {0}")]
    Failed(String),
    /// Unsupported or malformed compression, or too large once decompressed.
    #[error(transparent)]
    Body(#[from] BodyError),
}

impl ReadError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            ReadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ReadError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ReadError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ReadError::Failed(_) => StatusCode::BAD_REQUEST,
            ReadError::Body(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// The gRPC code of the `google.rpc.Status` an OTLP/HTTP client gets.
    pub fn code(&self) -> tonic::Code {
        match self.status() {
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                tonic::Code::ResourceExhausted
            }
            StatusCode::REQUEST_TIMEOUT => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::InvalidArgument,
        }
    }
}

/// The declared `Content-Length`, refused at once when over `max`.
pub fn declared_len(headers: &HeaderMap, max: usize) -> Result<Option<usize>, ReadError> {
    let Some(v) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let len: u64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ReadError::Failed(format!("invalid content-length {v:?}")))?;
    if len > max as u64 {
        return Err(ReadError::TooLarge { limit: max });
    }
    Ok(Some(len as usize))
}

/// Reads `body` (at most `max` bytes) into memory, charging `charge` for
/// every byte before it is buffered, then decompresses it per the
/// request's `Content-Encoding` when `decompress` (again at most `max`).
pub async fn read_charged(
    ingest: &Ingest,
    charge: &mut Charge,
    body: Body,
    headers: &HeaderMap,
    max: usize,
    decompress: bool,
) -> Result<Bytes, ReadError> {
    let encoding = if decompress {
        ContentEncoding::from_header(
            headers
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        )?
    } else {
        ContentEncoding::Identity
    };
    let declared = declared_len(headers, max)?;
    let mut charged = declared.unwrap_or(0);
    ingest.charge(charge, charged).map_err(ReadError::Busy)?;
    let mut buf = BytesMut::with_capacity(charged);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if BodyTimeout::caused(&e) {
                ReadError::Timeout(e.to_string())
            } else {
                ReadError::Failed(e.to_string())
            }
        })?;
        let total = buf.len() + chunk.len();
        if total > max {
            return Err(ReadError::TooLarge { limit: max });
        }
        if total > charged {
            ingest
                .charge(charge, total - charged)
                .map_err(ReadError::Busy)?;
            charged = total;
        }
        buf.extend_from_slice(&chunk);
    }
    let raw = buf.freeze();
    if encoding == ContentEncoding::Identity {
        return Ok(raw);
    }
    // Decompression may produce up to `max` bytes: charge that before it
    // runs, give back what it did not use and the compressed copy after.
    ingest.charge(charge, max).map_err(ReadError::Busy)?;
    let raw_len = raw.len();
    let out = tokio::task::spawn_blocking(move || decompress_body(encoding, &raw, max))
        .await
        .map_err(|e| ReadError::Failed(e.to_string()))??;
    ingest.release(charge, (max - out.len()) + raw_len);
    Ok(Bytes::from(out))
}
