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
}
