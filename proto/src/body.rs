//! Compressed request bodies at the HTTP edge: the `Content-Encoding`s OTLP
//! clients send (`gzip`, `zstd`, `identity`) and their decompression, capped
//! at a size so that a small body cannot expand into unbounded memory.

use std::io::Read;

/// The `Content-Encoding` of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    /// Not compressed.
    Identity,
    /// gzip (RFC 1952); several members are read one after another.
    Gzip,
    /// A zstd frame.
    Zstd,
}

/// Why a request body could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The header names an encoding that is not supported (HTTP 415).
    #[error("unsupported content-encoding {0:?}: use gzip or zstd")]
    Unsupported(String),
    /// The body decompresses to more than the limit (HTTP 413).
    #[error("decompressed body larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The compressed data is malformed (HTTP 400).
    #[error("invalid {encoding} body: {source}")]
    Malformed {
        /// `gzip` or `zstd`.
        encoding: &'static str,
        /// What the decoder reported.
        source: std::io::Error,
    },
}

impl BodyError {
    /// The HTTP status that answers this error: 415, 413 or 400.
    pub fn http_status(&self) -> u16 {
        match self {
            BodyError::Unsupported(_) => 415,
            BodyError::TooLarge { .. } => 413,
            BodyError::Malformed { .. } => 400,
        }
    }
}

/// Largest zstd window accepted (log2): 16 MiB. A frame may ask for up to
/// 2 GiB of window, which the decoder would allocate before producing a byte.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

impl ContentEncoding {
    /// Parses a `Content-Encoding` header value; `None`, empty and
    /// `identity` mean no compression. Case and surrounding spaces are ignored.
    pub fn from_header(value: Option<&str>) -> Result<Self, BodyError> {
        let v = value.unwrap_or("").trim();
        if v.is_empty() || v.eq_ignore_ascii_case("identity") {
            Ok(ContentEncoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Ok(ContentEncoding::Gzip)
        } else if v.eq_ignore_ascii_case("zstd") {
            Ok(ContentEncoding::Zstd)
        } else {
            Err(BodyError::Unsupported(v.to_owned()))
        }
    }

    /// The encoding's name as in the header.
    pub fn name(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Zstd => "zstd",
        }
    }
}

/// Decompresses `body` to at most `max` bytes; a body that would expand past
/// `max` stops there (reading `max + 1` bytes at most) with
/// [`BodyError::TooLarge`]. `Identity` bodies are copied, so callers usually
/// keep those as they are. CPU-bound: async callers run it on a blocking thread.
pub fn decompress_body(
    encoding: ContentEncoding,
    body: &[u8],
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    let name = encoding.name();
    let malformed = |source: std::io::Error| BodyError::Malformed {
        encoding: name,
        source,
    };
    let decoder: Box<dyn Read + '_> = match encoding {
        ContentEncoding::Identity => {
            if body.len() > max {
                return Err(BodyError::TooLarge { limit: max });
            }
            return Ok(body.to_vec());
        }
        ContentEncoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        ContentEncoding::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(malformed)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(malformed)?;
            Box::new(d)
        }
    };
    // At most one byte past the cap is read: enough to tell "too large".
    let cap = max.saturating_add(1);
    let mut reader = decoder.take(cap as u64);
    // The buffer starts at a typical compression ratio and grows at most
    // once, straight to the cap: no chain of doubled copies.
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(8).max(64 << 10).min(cap));
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(malformed(e)),
        };
        if out.capacity() - out.len() < n {
            out.reserve_exact(cap - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.len() > max {
        return Err(BodyError::TooLarge { limit: max });
    }
    Ok(out)
}

// What decoding a request really takes, measured on the collector: one
// request at a time on a fresh process, peak RSS (VmHWM) before and after,
// the growth divided by the body's (decompressed) size; see
// tests/e2e/measure_ingest_memory.py, run as
//
//   PERISCOPE_BIN=target/debug/periscope python3 tests/e2e/measure_ingest_memory.py
//   MEASURE_SCALE=0.25 PERISCOPE_BIN=... python3 tests/e2e/measure_ingest_memory.py
//
// The records are the worst case per byte: a one-character body and one
// attribute. Results (16 MB / 4 MB requests; gzip and zstd alike, since
// the decompressed body is what is decoded):
//
//   OTLP/JSON logs, 121 B per record:      +480 / +132 MiB, 30.8x / 33.9x the body
//   OTLP protobuf logs, 26 B per record:   +450 / +122 MiB, 44.9x / 48.9x,
//                                           about 1,160-1,260 B per record
//   remote write, 60 samples per series:   +322 / +112 MiB, 15x / 21x the
//                                           decompressed body (13x by slope)
//
// The agent relay (decode, add node attributes, queue; no WAL, no
// flattening) measured 31.1x for the same JSON and 22.3x for the same
// protobuf: it is charged with the same functions, conservatively.
//
// Growth scales with the request (the slope between the two sizes gives
// the same factors), so it is the request's, not a fixed arena's. Protobuf
// costs per record rather than per byte: bigger records cost the same
// ~1.1 KB plus copies of their bytes (the body kept for the WAL, the WAL
// entry, the decoded strings, the flattened records), hence a per-record
// and a per-byte term. JSON is charged per byte: counting its records would
// mean parsing it.

/// Memory decoding takes per byte of an OTLP/JSON body, on top of the body.
pub const JSON_DECODE_FACTOR: usize = 30;
/// Memory decoding takes per byte of an OTLP protobuf body, on top of the
/// body, besides [`PROTOBUF_RECORD_COST`].
pub const PROTOBUF_DECODE_FACTOR: usize = 4;
/// Memory one decoded protobuf record (log record, span, data point) takes
/// besides its bytes.
pub const PROTOBUF_RECORD_COST: usize = 1_100;
/// Memory decoding takes per byte of a decompressed remote-write body, on
/// top of the body: every sample carries a copy of its series' labels.
pub const REMOTE_WRITE_DECODE_FACTOR: usize = 16;

/// The memory, beyond the (decompressed) body itself, that decoding `body`
/// takes until its records are stored; charged to an in-flight budget
/// before decoding. Protobuf records are counted with a scan that allocates
/// nothing.
pub fn decode_cost(signal: crate::Signal, encoding: crate::Encoding, body: &[u8]) -> usize {
    match encoding {
        crate::Encoding::Json => body.len().saturating_mul(JSON_DECODE_FACTOR),
        crate::Encoding::Protobuf => body
            .len()
            .saturating_mul(PROTOBUF_DECODE_FACTOR)
            .saturating_add(
                crate::count_records(signal, body).saturating_mul(PROTOBUF_RECORD_COST),
            ),
    }
}

/// [`decode_cost`] of a remote-write body that decompresses to `len` bytes.
pub fn remote_write_decode_cost(len: usize) -> usize {
    len.saturating_mul(REMOTE_WRITE_DECODE_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn header_values() {
        for (v, want) in [
            (None, ContentEncoding::Identity),
            (Some(""), ContentEncoding::Identity),
            (Some("identity"), ContentEncoding::Identity),
            (Some(" GZIP "), ContentEncoding::Gzip),
            (Some("x-gzip"), ContentEncoding::Gzip),
            (Some("zstd"), ContentEncoding::Zstd),
        ] {
            assert_eq!(ContentEncoding::from_header(v).unwrap(), want, "{v:?}");
        }
        let e = ContentEncoding::from_header(Some("br")).unwrap_err();
        assert_eq!(e.http_status(), 415);
        assert!(e.to_string().contains("\"br\""), "{e}");
    }

    #[test]
    fn round_trips() {
        let data = b"hello otlp ".repeat(1000);
        let g = decompress_body(ContentEncoding::Gzip, &gzip(&data), data.len()).unwrap();
        assert_eq!(g, data);
        // Two gzip members, as `cat a.gz b.gz` makes.
        let mut two = gzip(b"ab");
        two.extend(gzip(b"cd"));
        assert_eq!(
            decompress_body(ContentEncoding::Gzip, &two, 10).unwrap(),
            b"abcd"
        );
        let z = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(
            decompress_body(ContentEncoding::Zstd, &z, data.len()).unwrap(),
            data
        );
        assert_eq!(
            decompress_body(ContentEncoding::Identity, b"abc", 3).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn cap_is_exact() {
        let data = vec![0u8; 100_000];
        for (enc, body) in [
            (ContentEncoding::Gzip, gzip(&data)),
            (
                ContentEncoding::Zstd,
                zstd::bulk::compress(&data, 3).unwrap(),
            ),
            (ContentEncoding::Identity, data.clone()),
        ] {
            assert_eq!(decompress_body(enc, &body, 100_000).unwrap().len(), 100_000);
            let e = decompress_body(enc, &body, 99_999).unwrap_err();
            assert!(matches!(e, BodyError::TooLarge { limit: 99_999 }), "{e}");
            assert_eq!(e.http_status(), 413);
        }
    }

    #[test]
    fn bomb_stops_at_the_cap() {
        // 256 MiB of zeros compress to a few hundred KiB; decoding stops at 1 MiB.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        let err = decompress_body(ContentEncoding::Gzip, &bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn malformed_bodies() {
        for enc in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
            let e = decompress_body(enc, b"definitely not compressed", 1 << 20).unwrap_err();
            assert_eq!(e.http_status(), 400, "{enc:?}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid {} body: ", enc.name())),
                "{e}"
            );
        }
        // Truncated: the stream ends mid-frame.
        let g = gzip(&b"x".repeat(10_000));
        let e = decompress_body(ContentEncoding::Gzip, &g[..g.len() / 2], 1 << 20).unwrap_err();
        assert_eq!(e.http_status(), 400, "{e}");
        let z = zstd::bulk::compress(&b"y".repeat(10_000), 3).unwrap();
        let e = decompress_body(ContentEncoding::Zstd, &z[..z.len() - 4], 1 << 20).unwrap_err();
        assert_eq!(e.http_status(), 400, "{e}");
    }

    #[test]
    fn decode_cost_follows_the_measured_factors() {
        use crate::otlp::common::v1::{AnyValue, any_value::Value};
        use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use prost::Message;
        let rec = LogRecord {
            body: Some(AnyValue {
                value: Some(Value::StringValue("r".into())),
            }),
            ..Default::default()
        };
        let body = crate::otlp::ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![rec; 1000],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let pb = decode_cost(crate::Signal::Logs, crate::Encoding::Protobuf, &body);
        assert_eq!(
            pb,
            body.len() * PROTOBUF_DECODE_FACTOR + 1000 * PROTOBUF_RECORD_COST
        );
        // Tiny records cost far more than their bytes, as measured.
        assert!(pb > body.len() * 40, "{pb} for {} bytes", body.len());
        let json = decode_cost(crate::Signal::Logs, crate::Encoding::Json, &[b' '; 100]);
        assert_eq!(json, 100 * JSON_DECODE_FACTOR);
        assert_eq!(
            remote_write_decode_cost(usize::MAX),
            usize::MAX,
            "saturates"
        );
    }
}
