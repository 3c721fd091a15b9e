//! The OTLP receivers: gRPC (`grpc`) and HTTP (`http`). Both hand raw bodies
//! to the shared [`crate::pipeline::Ingest`] and map its outcome to the wire
//! in one place ([`codes`]).

mod body;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod remote_write;

use periscope_proto::Signal;

use crate::pipeline::IngestError;

/// The gRPC code and HTTP status of each way a request can fail, so both
/// receivers agree (google.rpc.Code numbers).
pub fn codes(e: &IngestError) -> (tonic::Code, u16) {
    match e {
        IngestError::Busy(_) => (tonic::Code::ResourceExhausted, 429),
        IngestError::Invalid(_) => (tonic::Code::InvalidArgument, 400),
        IngestError::Unavailable(_) | IngestError::TenantBacklog(_) => {
            (tonic::Code::Unavailable, 503)
        }
    }
}

/// The OTLP response body of a successful export: partial success when
/// records were rejected.
pub fn response_protobuf(signal: Signal, rejected: usize, error_message: &str) -> Vec<u8> {
    use periscope_proto::otlp::*;
    use prost::Message;
    let rejected = rejected as i64;
    let msg = error_message.to_owned();
    let some = rejected > 0;
    match signal {
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: some.then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: msg,
            }),
        }
        .encode_to_vec(),
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: some.then_some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: msg,
            }),
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: some.then_some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: msg,
            }),
        }
        .encode_to_vec(),
    }
}

/// The OTLP/JSON response body (int64 as a string, lowerCamelCase).
pub fn response_json(signal: Signal, rejected: usize, error_message: &str) -> Vec<u8> {
    if rejected == 0 {
        return b"{}".to_vec();
    }
    let key = match signal {
        Signal::Logs => "rejectedLogRecords",
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
    };
    serde_json::to_vec(&serde_json::json!({"partialSuccess": {key: rejected.to_string(), "errorMessage": error_message}}))
        .unwrap_or_default()
}
