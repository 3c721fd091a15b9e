//! Reading a request body at the HTTP edge, charged to the in-flight budget
//! before it is buffered: a `Content-Length` over the size limit is refused
//! before a byte of the body is read, and every chunk is charged before it
//! is kept, so a client holds as much budget as it has sent, never more
//! than the memory it takes. Decompression charges its cap before it runs
//! and gives back what it did not use.

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
    // Reserved, not touched: pages become resident (and are charged) as
    // bytes arrive. Charging the declared length up front instead would let
    // clients that announce large bodies and stall hold the whole budget
    // until the body read timeout, starving everyone else for free.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    let mut charged = 0;
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
    let out = tokio::task::spawn_blocking(move || decompress_body(encoding, &raw, max))
        .await
        .map_err(|e| ReadError::Failed(e.to_string()))??;
    // Now only the decompressed body is held (the compressed one is gone).
    ingest.release_to(charge, out.len());
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::HeaderValue;
    use periscope_store::{Wal, WalOptions};

    use super::*;
    use crate::pipeline::Retention;
    use crate::telemetry::Metrics;

    fn ingest(dir: &std::path::Path, budget: usize) -> Ingest {
        let wal = Arc::new(Wal::open(dir, WalOptions::default(), 1).unwrap());
        let day = Duration::from_secs(86_400);
        let retention = Retention {
            logs: day,
            traces: day,
            metrics: day,
        };
        Ingest::new(wal, budget, retention, Arc::new(Metrics::default()))
    }

    fn headers(content_length: Option<&str>, encoding: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = content_length {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(n).unwrap());
        }
        if let Some(e) = encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        h
    }

    fn chunked(parts: &[&'static [u8]]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    /// Bodies were read in full before the budget was consulted: eight
    /// half-sent 15 MiB bodies held 150 MiB while the budget read 0.
    #[tokio::test]
    async fn bodies_are_charged_before_they_are_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let ing = ingest(dir.path(), 100);
        // (what, other requests' charge, declared length, chunks, max, outcome, charged after)
        type Row = (
            &'static str,
            usize,
            Option<&'static str>,
            Vec<&'static [u8]>,
            usize,
            Result<usize, StatusCode>,
            usize,
        );
        let rows: Vec<Row> = vec![
            (
                "declared and fits",
                0,
                Some("10"),
                vec![b"0123456789"],
                50,
                Ok(10),
                10,
            ),
            (
                "chunked, charged as it arrives",
                0,
                None,
                vec![b"abc", b"defg"],
                50,
                Ok(7),
                7,
            ),
            (
                "declared over the limit, unread",
                0,
                Some("51"),
                vec![],
                50,
                Err(StatusCode::PAYLOAD_TOO_LARGE),
                0,
            ),
            (
                "chunked past the limit",
                0,
                None,
                vec![b"0123456789"; 6],
                50,
                Err(StatusCode::PAYLOAD_TOO_LARGE),
                50,
            ),
            (
                "declared, refused as it arrives",
                95,
                Some("10"),
                vec![b"0123456789"],
                50,
                Err(StatusCode::TOO_MANY_REQUESTS),
                0,
            ),
            (
                "chunked over what is left",
                95,
                None,
                vec![b"abc", b"defg"],
                50,
                Err(StatusCode::TOO_MANY_REQUESTS),
                3,
            ),
            (
                "length not a number",
                0,
                Some("ten"),
                vec![],
                50,
                Err(StatusCode::BAD_REQUEST),
                0,
            ),
        ];
        for (what, held, declared, parts, max, want, charged) in rows {
            let mut others = ing.start_charge();
            ing.charge(&mut others, held).unwrap();
            let mut charge = ing.start_charge();
            let got = read_charged(
                &ing,
                &mut charge,
                chunked(&parts),
                &headers(declared, None),
                max,
                true,
            )
            .await
            .map(|b| b.len())
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    assert!(e.to_string().contains("--max-recv-msg-size"), "{what}: {e}");
                }
                e.status()
            });
            assert_eq!(got, want, "{what}");
            assert_eq!(charge.bytes(), charged, "{what}");
            drop(others);
            drop(charge);
            ing.refresh_gauges();
            assert_eq!(
                ing.metrics
                    .inflight_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
                0
            );
        }
    }

    #[tokio::test]
    async fn decompression_keeps_only_what_it_produced_charged() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let ing = ingest(dir.path(), 1 << 20);
        let data = vec![7u8; 5000];
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let gz: &'static [u8] = Box::leak(e.finish().unwrap().into_boxed_slice());
        let mut charge = ing.start_charge();
        let out = read_charged(
            &ing,
            &mut charge,
            chunked(&[gz]),
            &headers(None, Some("gzip")),
            1 << 16,
            true,
        )
        .await
        .unwrap();
        assert_eq!(out.len(), 5000);
        assert_eq!(
            charge.bytes(),
            5000,
            "the decompressed body, not the cap nor the wire copy"
        );
        // One request alone may take the whole budget, never more.
        ing.charge(&mut charge, 10 << 20).unwrap();
        assert_eq!(charge.bytes(), 1 << 20);
    }
}
