//! Decoding request bodies of any signal and encoding into typed OTLP requests.

use prost::Message;

use crate::DecodeError;
use crate::otlp::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
};

/// The three OTLP signals. The discriminant is stored in WAL records: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Signal {
    /// Log records.
    Logs = 1,
    /// Spans.
    Traces = 2,
    /// Metric data points.
    Metrics = 3,
}

impl Signal {
    /// All signals, in discriminant order.
    pub const ALL: [Signal; 3] = [Signal::Logs, Signal::Traces, Signal::Metrics];

    /// The lowercase name used in metrics labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }

    /// The inverse of `self as u8`.
    pub fn from_u8(v: u8) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| *s as u8 == v)
    }
}

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf (`application/x-protobuf`, gRPC).
    Protobuf,
    /// OTLP/JSON (`application/json`).
    Json,
}

/// A decoded export request of one of the three signals.
#[derive(Clone, Debug, PartialEq)]
pub enum ExportRequest {
    /// `ExportLogsServiceRequest`.
    Logs(ExportLogsServiceRequest),
    /// `ExportTraceServiceRequest`.
    Traces(ExportTraceServiceRequest),
    /// `ExportMetricsServiceRequest`.
    Metrics(ExportMetricsServiceRequest),
}

impl ExportRequest {
    /// Which signal this request carries.
    pub fn signal(&self) -> Signal {
        match self {
            ExportRequest::Logs(_) => Signal::Logs,
            ExportRequest::Traces(_) => Signal::Traces,
            ExportRequest::Metrics(_) => Signal::Metrics,
        }
    }

    /// Log records, spans or data points in the request.
    pub fn record_count(&self) -> usize {
        match self {
            ExportRequest::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum(),
            ExportRequest::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum(),
            ExportRequest::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(crate::validate::data_point_count)
                .sum(),
        }
    }

    /// The protobuf encoding of the request.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            ExportRequest::Logs(r) => r.encode_to_vec(),
            ExportRequest::Traces(r) => r.encode_to_vec(),
            ExportRequest::Metrics(r) => r.encode_to_vec(),
        }
    }

    /// Decodes a protobuf body of the given signal (as stored in the WAL).
    pub fn decode_protobuf(
        signal: Signal,
        body: &[u8],
    ) -> Result<ExportRequest, prost::DecodeError> {
        Ok(match signal {
            Signal::Logs => ExportRequest::Logs(ExportLogsServiceRequest::decode(body)?),
            Signal::Traces => ExportRequest::Traces(ExportTraceServiceRequest::decode(body)?),
            Signal::Metrics => ExportRequest::Metrics(ExportMetricsServiceRequest::decode(body)?),
        })
    }
}

/// Decodes a request body. Invalid UTF-8 inside protobuf string fields is
/// replaced by U+FFFD rather than failing the request (the decoded request then
/// differs from the body, so callers re-encode it before storing).
pub fn decode_request(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
) -> Result<ExportRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => match ExportRequest::decode_protobuf(signal, body) {
            Ok(req) => Ok(req),
            Err(err) if err.to_string().contains("UTF-8") => {
                let clean = crate::sanitize_utf8(signal, body)?;
                Ok(ExportRequest::decode_protobuf(signal, &clean)?)
            }
            Err(err) => Err(DecodeError::Protobuf(err)),
        },
        Encoding::Json => match signal {
            Signal::Logs => crate::decode_logs_json(body).map(ExportRequest::Logs),
            Signal::Traces => crate::decode_traces_json(body).map(ExportRequest::Traces),
            Signal::Metrics => crate::decode_metrics_json(body).map(ExportRequest::Metrics),
        },
    }
}
