//! Batches: log records grouped per file (one `ResourceLogs` per file, with
//! the file's resource attributes) into an OTLP request, cut by size or age,
//! carrying the checkpoint marks that become safe once the batch is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use periscope_proto::otlp::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use periscope_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use periscope_proto::otlp::resource::v1::Resource;
use periscope_proto::otlp::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
};

use crate::checkpoint::{FileId, Mark};
use crate::parse::Record;
use crate::tail::Sink;

fn unix_ns() -> u64 {
    u64::try_from(periscope_proto::unix_now_ns()).unwrap_or(0)
}

/// Scope name of records read from files.
pub const SCOPE: &str = "periscope-agent";

/// An OTLP request of one signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Logs.
    Logs(ExportLogsServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Spans.
    Traces(ExportTraceServiceRequest),
}

impl Payload {
    /// The one-byte tag used in the spool.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Logs(_) => 1,
            Payload::Metrics(_) => 2,
            Payload::Traces(_) => 3,
        }
    }

    /// Protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        match self {
            Payload::Logs(r) => r.encode_to_vec(),
            Payload::Metrics(r) => r.encode_to_vec(),
            Payload::Traces(r) => r.encode_to_vec(),
        }
    }

    /// Decodes a spooled payload.
    pub fn decode(kind: u8, bytes: &[u8]) -> Result<Payload, String> {
        use prost::Message;
        let r = match kind {
            1 => ExportLogsServiceRequest::decode(bytes).map(Payload::Logs),
            2 => ExportMetricsServiceRequest::decode(bytes).map(Payload::Metrics),
            3 => ExportTraceServiceRequest::decode(bytes).map(Payload::Traces),
            k => return Err(format!("unknown payload kind {k}")),
        };
        r.map_err(|e| e.to_string())
    }

    /// Records (log records, data points or spans) in the request.
    pub fn records(&self) -> usize {
        match self {
            Payload::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
            Payload::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .map(|s| s.metrics.len())
                .sum(),
            Payload::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
        }
    }
}

/// A request plus the checkpoint marks it makes safe.
#[derive(Debug)]
pub struct Batch {
    /// The request.
    pub payload: Payload,
    /// Checkpoint marks, applied once this and every earlier batch is safe.
    pub marks: Vec<Mark>,
    /// The tenant the relay admitted the request for; `None`: the agent's
    /// own (`--tenant`).
    pub tenant: Option<String>,
    /// Approximate size in bytes (for queue bounds).
    pub bytes: usize,
}

/// Accumulates records read by the tailer.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    by_file: BTreeMap<FileId, (Arc<Vec<KeyValue>>, Vec<LogRecord>)>,
    records: usize,
    bytes: usize,
    started: Option<Instant>,
}

impl Sink for BatchBuilder {
    fn record(&mut self, id: FileId, resource: &Arc<Vec<KeyValue>>, rec: Record) {
        let observed = unix_ns();
        self.bytes += rec.body.len() + 48 + rec.attributes.len() * 24;
        self.records += 1;
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        let lr = LogRecord {
            time_unix_nano: rec.time_ns,
            observed_time_unix_nano: observed,
            severity_number: rec.severity.0,
            severity_text: rec.severity.1.to_owned(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(rec.body)),
            }),
            attributes: rec.attributes,
            ..Default::default()
        };
        self.by_file
            .entry(id)
            .or_insert_with(|| (Arc::clone(resource), Vec::new()))
            .1
            .push(lr);
    }
}

impl BatchBuilder {
    /// Records held.
    pub fn len(&self) -> usize {
        self.records
    }

    /// No records held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the first record held arrived.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Cuts the batch with the given marks.
    pub fn take(&mut self, marks: Vec<Mark>) -> Batch {
        let by_file = std::mem::take(&mut self.by_file);
        let bytes = self.bytes + marks.len() * 64;
        self.records = 0;
        self.bytes = 0;
        self.started = None;
        let resource_logs = by_file
            .into_values()
            .map(|(resource, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: resource.as_ref().clone(),
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Batch {
            payload: Payload::Logs(ExportLogsServiceRequest { resource_logs }),
            marks,
            tenant: None,
            bytes,
        }
    }
}
