//! OTLP types, Periscope's flat internal model and the codecs at the network edge.
//!
//! The collector receives OTLP (protobuf or OTLP/JSON), validates it record by
//! record ([`validate`]), and stores the protobuf in its
//! write-ahead log. Stores turn requests into the flat model ([`LogRecord`]).
//!
//! Metrics take the Prometheus shape ([`PromSample`]): OTLP through
//! [`otlp_to_prometheus`], with [`DeltaToCumulative`] keeping running totals
//! for delta points, and Prometheus remote write through
//! [`decode_remote_write`].
//!
//! ```
//! use periscope_proto::{decode_request, Signal, Encoding};
//! let body = br#"{"resourceLogs":[]}"#;
//! let req = decode_request(Signal::Logs, Encoding::Json, body).unwrap();
//! assert_eq!(req.record_count(), 0);
//! ```

mod body;
mod count;
mod decode;
mod error;
mod json;
mod lossy;
mod metric;
mod metric_convert;
mod model;
pub mod pre_encoded;
mod remote_write;
mod span;
mod status;
mod validate;

pub use body::{
    BodyError, ContentEncoding, decode_cost, decompress_body, remote_write_decode_cost,
};
pub use count::count_records;
pub use decode::{Encoding, ExportRequest, Signal, decode_request};
pub use error::DecodeError;
pub use json::{decode_logs_json, decode_metrics_json, decode_traces_json};
pub use lossy::sanitize_utf8;
pub use metric::{
    Labels, MetricMeta, NAME_LABEL, NativeHistogram, PromBatch, PromSample, RefSample,
    STALE_NAN_BITS, SampleValue, SeriesRef, is_stale_nan, label, normalize_labels,
};
pub use metric_convert::{
    DeltaStats, DeltaToCumulative, SeriesCache, otlp_to_prometheus, otlp_to_prometheus_cached,
};
pub use model::{
    LogRecord, SeverityLevel, UNKNOWN_SERVICE, any_value_into_json, any_value_to_json,
    attributes_into_json, attributes_to_json, flatten_logs, service_name, unix_now_ns,
};
pub use remote_write::{
    BoundedRemoteWrite, MAX_REMOTE_WRITE_DECOMPRESSED, OutOfBounds, decode_remote_write,
    decode_remote_write_bounded, encode_remote_write, remote_write_decompressed_len,
};
pub use span::{
    Attr, AttrValue, MAX_SPAN_ATTRIBUTES, Span, SpanEvent, SpanKind, SpanLink, SpanResource,
    StatusCode, attrs_to_json, find_attr, find_str, flatten_traces, id_hex, parse_trace_id,
};
pub use status::RpcStatus;
pub use validate::{Limits, Validated, validate};

/// Generated OTLP protobuf types, re-exported from `opentelemetry-proto`.
pub mod otlp {
    pub use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    pub use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    pub use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    pub use opentelemetry_proto::tonic::{common, logs, metrics, resource, trace};
    /// gRPC clients, used by the load generator, the agent and tests.
    pub mod client {
        pub use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
        pub use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
        pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    }
}
