//! The flat internal model that stores index, and conversions from OTLP.
//!
//! OTLP nests records under resources and scopes; stores want one flat row per
//! record with the resource and scope folded in ([`LogRecord`]).

use serde_json::{Map, Value};

use crate::otlp::common::v1::{AnyValue, KeyValue, any_value};
use crate::otlp::resource::v1::Resource;
use crate::otlp::{ExportLogsServiceRequest, logs::v1::LogRecord as OtlpLogRecord};

/// The current time in Unix nanoseconds (0 if the clock is before 1970).
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `service.name` when a resource names none, as the OpenTelemetry SDKs default.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// One log record, flattened. Timestamps are Unix nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRecord {
    /// When the event happened (`time_unix_nano`, else `observed_time_unix_nano`, else receipt).
    pub timestamp_ns: i64,
    /// When a collector first saw the record (else receipt).
    pub observed_timestamp_ns: i64,
    /// OTLP severity number, 0 (unspecified) to 24.
    pub severity_number: i32,
    /// Severity text as sent, or derived from the number when empty.
    pub severity_text: String,
    /// The body: a string as is, any other value as JSON text.
    pub body: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Lowercase hex, empty when absent.
    pub trace_id: String,
    /// Lowercase hex, empty when absent.
    pub span_id: String,
    /// Record attributes as a JSON object (keys as sent, dots included).
    pub attributes: Map<String, Value>,
    /// Resource attributes as a JSON object.
    pub resource: Map<String, Value>,
    /// Instrumentation scope name.
    pub scope: String,
}

/// Severity levels as ranges of OTLP severity numbers (TRACE = 1..=4, …, FATAL = 21..=24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeverityLevel {
    /// 1..=4
    Trace = 1,
    /// 5..=8
    Debug = 5,
    /// 9..=12
    Info = 9,
    /// 13..=16
    Warn = 13,
    /// 17..=20
    Error = 17,
    /// 21..=24
    Fatal = 21,
}

impl SeverityLevel {
    /// Parses a level name as used in query parameters (case-insensitive;
    /// `WARNING`, `ERR` and `CRITICAL` accepted as aliases).
    pub fn parse(s: &str) -> Option<SeverityLevel> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TRACE" => SeverityLevel::Trace,
            "DEBUG" => SeverityLevel::Debug,
            "INFO" => SeverityLevel::Info,
            "WARN" | "WARNING" => SeverityLevel::Warn,
            "ERROR" | "ERR" => SeverityLevel::Error,
            "FATAL" | "CRITICAL" => SeverityLevel::Fatal,
            _ => return None,
        })
    }

    /// The lowest severity number of the level.
    pub fn min_number(self) -> i32 {
        self as i32
    }

    /// The level of a severity number; `None` for 0 (unspecified) and out-of-range values.
    pub fn of_number(n: i32) -> Option<SeverityLevel> {
        Some(match n {
            1..=4 => SeverityLevel::Trace,
            5..=8 => SeverityLevel::Debug,
            9..=12 => SeverityLevel::Info,
            13..=16 => SeverityLevel::Warn,
            17..=20 => SeverityLevel::Error,
            21..=24 => SeverityLevel::Fatal,
            _ => return None,
        })
    }

    /// The canonical upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SeverityLevel::Trace => "TRACE",
            SeverityLevel::Debug => "DEBUG",
            SeverityLevel::Info => "INFO",
            SeverityLevel::Warn => "WARN",
            SeverityLevel::Error => "ERROR",
            SeverityLevel::Fatal => "FATAL",
        }
    }
}

/// The `service.name` attribute of a resource, or `unknown_service`.
pub fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or(UNKNOWN_SERVICE)
}

/// Converts an `AnyValue` into JSON: bytes become lowercase hex, non-finite
/// doubles their names as strings (JSON has no NaN).
pub fn any_value_to_json(v: &AnyValue) -> Value {
    any_value_into_json(v.clone())
}

/// [`any_value_to_json`] taking the value, so strings move instead of being copied.
pub fn any_value_into_json(v: AnyValue) -> Value {
    match v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::from(i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.into_iter().map(any_value_into_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes_into_json(kv.values)),
        // A string-table index only means something inside OTLP profiles.
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(i),
    }
}

/// Converts a list of key/values into a JSON object (a repeated key keeps its last value).
pub fn attributes_to_json(attrs: &[KeyValue]) -> Map<String, Value> {
    attributes_into_json(attrs.to_vec())
}

/// [`attributes_to_json`] taking the list, so keys and strings move instead of being copied.
pub fn attributes_into_json(attrs: Vec<KeyValue>) -> Map<String, Value> {
    attrs
        .into_iter()
        .map(|kv| {
            let v = kv.value.map(any_value_into_json).unwrap_or(Value::Null);
            (kv.key, v)
        })
        .collect()
}

fn body_text(body: Option<AnyValue>) -> String {
    match body {
        None | Some(AnyValue { value: None }) => String::new(),
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        }) => s,
        Some(other) => any_value_into_json(other).to_string(),
    }
}

fn nonzero(ns: u64) -> Option<i64> {
    (ns != 0).then(|| i64::try_from(ns).unwrap_or(i64::MAX))
}

fn flatten_one(
    r: OtlpLogRecord,
    service: &str,
    resource: &Map<String, Value>,
    scope: &str,
    received_ns: i64,
) -> LogRecord {
    let observed = nonzero(r.observed_time_unix_nano).unwrap_or(received_ns);
    let severity_text = if r.severity_text.is_empty() {
        SeverityLevel::of_number(r.severity_number)
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default()
    } else {
        r.severity_text
    };
    LogRecord {
        timestamp_ns: nonzero(r.time_unix_nano).unwrap_or(observed),
        observed_timestamp_ns: observed,
        severity_number: r.severity_number,
        severity_text,
        body: body_text(r.body),
        service: service.to_owned(),
        trace_id: hex::encode(&r.trace_id),
        span_id: hex::encode(&r.span_id),
        attributes: attributes_into_json(r.attributes),
        resource: resource.clone(),
        scope: scope.to_owned(),
    }
}

/// Flattens every log record of a request, in request order. `received_ns`
/// stands in for missing timestamps, as the OTLP spec asks. Takes the
/// request so that its strings move into the records.
pub fn flatten_logs(req: ExportLogsServiceRequest, received_ns: i64) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let service = service_name(rl.resource.as_ref()).to_owned();
        let resource = rl
            .resource
            .map(|r| attributes_into_json(r.attributes))
            .unwrap_or_default();
        for sl in rl.scope_logs {
            let scope = sl.scope.map(|s| s.name).unwrap_or_default();
            out.extend(
                sl.log_records
                    .into_iter()
                    .map(|r| flatten_one(r, &service, &resource, &scope, received_ns)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::logs::v1::{ResourceLogs, ScopeLogs};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn flattens_resource_scope_and_record() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("cart".into()),
                    )],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(crate::otlp::common::v1::InstrumentationScope {
                        name: "app".into(),
                        ..Default::default()
                    }),
                    log_records: vec![OtlpLogRecord {
                        time_unix_nano: 0,
                        observed_time_unix_nano: 7,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("boom".into())),
                        }),
                        attributes: vec![kv("http.status_code", any_value::Value::IntValue(500))],
                        trace_id: vec![0xab; 16],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let recs = flatten_logs(req, 99);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!((r.timestamp_ns, r.observed_timestamp_ns), (7, 7));
        assert_eq!(r.severity_text, "ERROR");
        assert_eq!(r.service, "cart");
        assert_eq!(r.scope, "app");
        assert_eq!(r.body, "boom");
        assert_eq!(r.trace_id, "ab".repeat(16));
        assert_eq!(r.attributes["http.status_code"], Value::from(500));
    }

    #[test]
    fn non_string_body_becomes_json_and_missing_service_is_unknown() {
        let body = AnyValue {
            value: Some(any_value::Value::KvlistValue(
                crate::otlp::common::v1::KeyValueList {
                    values: vec![kv("a", any_value::Value::DoubleValue(f64::NAN))],
                },
            )),
        };
        assert_eq!(body_text(Some(body)), r#"{"a":"NaN"}"#);
        assert_eq!(service_name(None), UNKNOWN_SERVICE);
    }

    #[test]
    fn severity_levels() {
        for (name, n) in [("trace", 1), ("Warning", 13), ("FATAL", 21), ("err", 17)] {
            assert_eq!(
                SeverityLevel::parse(name).map(|l| l.min_number()),
                Some(n),
                "{name}"
            );
        }
        assert_eq!(SeverityLevel::parse("loud"), None);
        assert_eq!(SeverityLevel::of_number(12), Some(SeverityLevel::Info));
        assert_eq!(SeverityLevel::of_number(0), None);
    }
}
