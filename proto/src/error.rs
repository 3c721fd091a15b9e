//! Errors of decoding requests at the network edge.

/// Why a request body could not be decoded. Each variant names the problem so
/// the receivers can answer `INVALID_ARGUMENT` / HTTP 400 with a useful message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The protobuf payload is malformed.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The JSON payload is not valid JSON.
    #[error("malformed json: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is well formed but does not follow the OTLP/JSON mapping.
    #[error("invalid otlp/json at {path}: {message}")]
    JsonShape {
        /// Where in the document, like `resourceLogs[0].scopeLogs[1].logRecords[3].traceId`.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The document nests deeper than the decoder allows.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// The snappy-compressed body is malformed.
    #[error("malformed snappy: {0}")]
    Snappy(#[from] snap::Error),
    /// The body would decompress to more than the decoder allows.
    #[error("decompressed body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The decompressed length the body announces.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A remote write request that decodes but breaks the protocol's rules.
    #[error("invalid remote write: {0}")]
    RemoteWrite(String),
}
