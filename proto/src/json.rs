//! OTLP/JSON decoding: the proto3 JSON mapping as amended by OTLP.
//!
//! OTLP/JSON (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>)
//! is the proto3 JSON mapping (<https://protobuf.dev/programming-guides/json/>)
//! except that trace and span ids are hex rather than base64 and keys are
//! lowerCamelCase. Like any proto3 parser we also accept the proto field names
//! (snake_case), 64-bit integers as strings or numbers, enums as numbers or
//! names, and doubles as numbers or `"NaN"`/`"Infinity"`/`"-Infinity"`. Unknown
//! fields are ignored, which the spec requires for forward compatibility, and
//! `null` stands for a field's default. Each message is mapped by hand, not
//! derived, so that every such leniency is explicit and every error carries the
//! JSON path of the offending value.
//!
//! The body is parsed into a [`serde_json::Value`] first. serde_json recurses
//! once per nesting level, so the nesting is measured on the raw text first and
//! bodies nested deeper than 512 levels are refused outright. Shallower bodies
//! are parsed without serde_json's own limit of 128 levels, which a record whose
//! attributes nest about as deep as record validation allows (32 values, 4 JSON
//! levels each) would already exceed: such records must reach validation, which
//! rejects them one by one instead of failing the whole request. The conversion
//! recurses too and is bounded by the same check.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::DecodeError;
use crate::otlp::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use crate::otlp::logs::v1::{LogRecord, LogRecordFlags, ResourceLogs, ScopeLogs, SeverityNumber};
use crate::otlp::metrics::v1::{
    AggregationTemporality, DataPointFlags, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status, span, status};
use crate::otlp::{
    ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
};

/// Deepest nesting of JSON objects and arrays accepted, with room for attribute
/// values nested well past what record validation allows.
const MAX_DEPTH: usize = 512;

type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
pub fn decode_logs_json(body: &[u8]) -> Result<ExportLogsServiceRequest, DecodeError> {
    let doc = parse(body)?;
    let mut out = ExportLogsServiceRequest::default();
    let root = Path::Root;
    for (key, value) in fields(&doc, &root)? {
        if let "resourceLogs" | "resource_logs" = key {
            out.resource_logs = repeated(value, &root.field(key), resource_logs)?;
        }
    }
    Ok(out)
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_traces_json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let doc = parse(body)?;
    let mut out = ExportTraceServiceRequest::default();
    let root = Path::Root;
    for (key, value) in fields(&doc, &root)? {
        if let "resourceSpans" | "resource_spans" = key {
            out.resource_spans = repeated(value, &root.field(key), resource_spans)?;
        }
    }
    Ok(out)
}

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest`.
pub fn decode_metrics_json(body: &[u8]) -> Result<ExportMetricsServiceRequest, DecodeError> {
    let doc = parse(body)?;
    let mut out = ExportMetricsServiceRequest::default();
    let root = Path::Root;
    for (key, value) in fields(&doc, &root)? {
        if let "resourceMetrics" | "resource_metrics" = key {
            out.resource_metrics = repeated(value, &root.field(key), resource_metrics)?;
        }
    }
    Ok(out)
}

/// Parses a body into a JSON object. Invalid UTF-8 becomes U+FFFD rather than
/// an error, as for protobuf bodies (see `sanitize_utf8`).
fn parse(body: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(body);
    check_depth(&text)?;
    let mut de = serde_json::Deserializer::from_str(&text);
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de)?;
    de.end()?;
    if !value.is_object() {
        return Err(Path::Root.mismatch("an object", &value));
    }
    Ok(value)
}

/// Refuses text whose objects and arrays nest deeper than `MAX_DEPTH`.
///
/// The scan follows JSON's string and escape rules, so up to the first syntax
/// error (where serde_json stops) it sees the nesting serde_json will see.
fn check_depth(text: &str) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DecodeError::TooDeep(MAX_DEPTH));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Where a value sits in the document. Built on the stack as the conversion
/// descends and rendered only when an error is reported.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    fn error(&self, message: impl Into<String>) -> DecodeError {
        DecodeError::JsonShape {
            path: self.to_string(),
            message: message.into(),
        }
    }

    fn mismatch(&self, expected: &str, found: &Value) -> DecodeError {
        let found = match found {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        self.error(format!("expected {expected}, found {found}"))
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// A scalar as JSON, shortened: error messages go back to the client and
/// should not echo a megabyte-long string.
fn excerpt(value: &Value) -> String {
    const MAX: usize = 64;
    let mut text = value.to_string();
    if text.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The members of an object that are not `null` (`null` means the default, so
/// a `null` message is an empty one). Callers match on both the lowerCamelCase
/// and the proto name of each field and skip the rest: unknown fields are
/// ignored for forward compatibility.
fn fields<'v>(
    value: &'v Value,
    path: &Path<'_>,
) -> Result<impl Iterator<Item = (&'v str, &'v Value)>> {
    let map = match value {
        Value::Object(map) => Some(map),
        Value::Null => None,
        other => return Err(path.mismatch("an object", other)),
    };
    Ok(map
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.as_str(), v)))
}

fn repeated<T>(
    value: &Value,
    path: &Path<'_>,
    item: impl Fn(&Value, &Path<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let Value::Array(items) = value else {
        return Err(path.mismatch("an array", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| item(v, &path.index(i)))
        .collect()
}

fn string(value: &Value, path: &Path<'_>) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(path.mismatch("a string", other)),
    }
}

fn boolean(value: &Value, path: &Path<'_>) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(path.mismatch("a boolean", other)),
    }
}

/// Any protobuf integer type. proto3 JSON allows a number or a decimal string
/// (64-bit values are usually strings, as JavaScript numbers lose precision),
/// in either case with an exponent as long as the value is integral.
fn integer<T: TryFrom<i128>>(value: &Value, path: &Path<'_>) -> Result<T> {
    let wide = match value {
        Value::Number(n) => n
            .as_u64()
            .map(i128::from)
            .or_else(|| n.as_i64().map(i128::from))
            .or_else(|| n.as_f64().and_then(integral)),
        Value::String(s) => s
            .parse::<i128>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(integral)),
        other => return Err(path.mismatch("an integer", other)),
    };
    let wide = wide.ok_or_else(|| path.error(format!("invalid integer {}", excerpt(value))))?;
    T::try_from(wide).map_err(|_| path.error(format!("integer {wide} out of range")))
}

fn integral(f: f64) -> Option<i128> {
    // Beyond 2^100 no protobuf integer fits anyway; the bound keeps the cast exact.
    (f.fract() == 0.0 && f.abs() < 2f64.powi(100)).then_some(f as i128)
}

fn double(value: &Value, path: &Path<'_>) -> Result<f64> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            // Rust would also read "inf" and "nan"; only the spellings above are JSON's.
            s => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        },
        other => return Err(path.mismatch("a number", other)),
    };
    parsed.ok_or_else(|| path.error(format!("invalid double {}", excerpt(value))))
}

/// An enum given as its number or its value name, like `"SPAN_KIND_SERVER"`.
/// Flag fields are plain integers in the proto but go through here too, so a
/// flag name such as `"DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK"` is understood.
fn enumeration<T: TryFrom<i128>>(
    value: &Value,
    path: &Path<'_>,
    by_name: fn(&str) -> Option<i32>,
) -> Result<T> {
    if let Value::String(name) = value {
        if let Some(number) = by_name(name) {
            return integer(&Value::from(number), path);
        }
        if name.parse::<i128>().is_err() {
            return Err(path.error(format!("unknown enum value {}", excerpt(value))));
        }
    }
    integer(value, path)
}

/// A trace or span id: hex in OTLP/JSON, not proto3's base64. Lengths are
/// checked by record validation, which can reject just the one record.
fn hex_id(value: &Value, path: &Path<'_>) -> Result<Vec<u8>> {
    let Value::String(s) = value else {
        return Err(path.mismatch("a hex string", value));
    };
    hex::decode(s).map_err(|err| {
        path.error(match err {
            hex::FromHexError::InvalidHexCharacter { c, index } => {
                format!("invalid hex: unexpected character {c:?} at offset {index}")
            }
            hex::FromHexError::OddLength => "invalid hex: odd number of digits".to_owned(),
            hex::FromHexError::InvalidStringLength => "invalid hex: wrong length".to_owned(),
        })
    })
}

/// A `bytes` value: standard or URL-safe base64, with or without padding, as
/// proto3 JSON parsers accept.
fn base64(value: &Value, path: &Path<'_>) -> Result<Vec<u8>> {
    let Value::String(s) = value else {
        return Err(path.mismatch("a base64 string", value));
    };
    decode_base64(s).ok_or_else(|| path.error("invalid base64"))
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let digits = s.trim_end_matches('=');
    let padding = s.len() - digits.len();
    // One leftover digit cannot encode a byte; padding, if any, completes a quantum.
    if digits.len() % 4 == 1 || padding > 2 || (padding > 0 && !s.len().is_multiple_of(4)) {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in digits.bytes() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

// --- opentelemetry.proto.common.v1 and resource.v1 ---

fn any_value(value: &Value, path: &Path<'_>) -> Result<AnyValue> {
    use any_value::Value as V;
    let mut out = AnyValue::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        out.value = Some(match key {
            "stringValue" | "string_value" => V::StringValue(string(value, &at)?),
            "boolValue" | "bool_value" => V::BoolValue(boolean(value, &at)?),
            "intValue" | "int_value" => V::IntValue(integer(value, &at)?),
            "doubleValue" | "double_value" => V::DoubleValue(double(value, &at)?),
            "arrayValue" | "array_value" => V::ArrayValue(array_value(value, &at)?),
            "kvlistValue" | "kvlist_value" => V::KvlistValue(kvlist_value(value, &at)?),
            "bytesValue" | "bytes_value" => V::BytesValue(base64(value, &at)?),
            "stringValueStrindex" | "string_value_strindex" => {
                V::StringValueStrindex(integer(value, &at)?)
            }
            _ => continue,
        });
    }
    Ok(out)
}

fn array_value(value: &Value, path: &Path<'_>) -> Result<ArrayValue> {
    let mut out = ArrayValue::default();
    for (key, value) in fields(value, path)? {
        if key == "values" {
            out.values = repeated(value, &path.field(key), any_value)?;
        }
    }
    Ok(out)
}

fn kvlist_value(value: &Value, path: &Path<'_>) -> Result<KeyValueList> {
    let mut out = KeyValueList::default();
    for (key, value) in fields(value, path)? {
        if key == "values" {
            out.values = repeated(value, &path.field(key), key_value)?;
        }
    }
    Ok(out)
}

fn key_value(value: &Value, path: &Path<'_>) -> Result<KeyValue> {
    let mut out = KeyValue::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "key" => out.key = string(value, &at)?,
            "value" => out.value = Some(any_value(value, &at)?),
            "keyStrindex" | "key_strindex" => out.key_strindex = integer(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn attributes(value: &Value, path: &Path<'_>) -> Result<Vec<KeyValue>> {
    repeated(value, path, key_value)
}

fn scope(value: &Value, path: &Path<'_>) -> Result<InstrumentationScope> {
    let mut out = InstrumentationScope::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "name" => out.name = string(value, &at)?,
            "version" => out.version = string(value, &at)?,
            "attributes" => out.attributes = attributes(value, &at)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = integer(value, &at)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn resource(value: &Value, path: &Path<'_>) -> Result<Resource> {
    let mut out = Resource::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "attributes" => out.attributes = attributes(value, &at)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = integer(value, &at)?;
            }
            "entityRefs" | "entity_refs" => out.entity_refs = repeated(value, &at, entity_ref)?,
            _ => {}
        }
    }
    Ok(out)
}

fn entity_ref(value: &Value, path: &Path<'_>) -> Result<EntityRef> {
    let mut out = EntityRef::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            "type" => out.r#type = string(value, &at)?,
            "idKeys" | "id_keys" => out.id_keys = repeated(value, &at, string)?,
            "descriptionKeys" | "description_keys" => {
                out.description_keys = repeated(value, &at, string)?
            }
            _ => {}
        }
    }
    Ok(out)
}

// --- opentelemetry.proto.logs.v1 ---

fn resource_logs(value: &Value, path: &Path<'_>) -> Result<ResourceLogs> {
    let mut out = ResourceLogs::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "resource" => out.resource = Some(resource(value, &at)?),
            "scopeLogs" | "scope_logs" => out.scope_logs = repeated(value, &at, scope_logs)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_logs(value: &Value, path: &Path<'_>) -> Result<ScopeLogs> {
    let mut out = ScopeLogs::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "scope" => out.scope = Some(scope(value, &at)?),
            "logRecords" | "log_records" => out.log_records = repeated(value, &at, log_record)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn log_record(value: &Value, path: &Path<'_>) -> Result<LogRecord> {
    let mut out = LogRecord::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "observedTimeUnixNano" | "observed_time_unix_nano" => {
                out.observed_time_unix_nano = integer(value, &at)?;
            }
            "severityNumber" | "severity_number" => {
                out.severity_number = enumeration(value, &at, |name| {
                    SeverityNumber::from_str_name(name).map(|v| v as i32)
                })?;
            }
            "severityText" | "severity_text" => out.severity_text = string(value, &at)?,
            "body" => out.body = Some(any_value(value, &at)?),
            "attributes" => out.attributes = attributes(value, &at)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = integer(value, &at)?;
            }
            "flags" => {
                out.flags = enumeration(value, &at, |name| {
                    LogRecordFlags::from_str_name(name).map(|v| v as i32)
                })?;
            }
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &at)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &at)?,
            "eventName" | "event_name" => out.event_name = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

// --- opentelemetry.proto.trace.v1 ---

fn resource_spans(value: &Value, path: &Path<'_>) -> Result<ResourceSpans> {
    let mut out = ResourceSpans::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "resource" => out.resource = Some(resource(value, &at)?),
            "scopeSpans" | "scope_spans" => out.scope_spans = repeated(value, &at, scope_spans)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_spans(value: &Value, path: &Path<'_>) -> Result<ScopeSpans> {
    let mut out = ScopeSpans::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "scope" => out.scope = Some(scope(value, &at)?),
            "spans" => out.spans = repeated(value, &at, span)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn span_flags(name: &str) -> Option<i32> {
    SpanFlags::from_str_name(name).map(|v| v as i32)
}

fn span(value: &Value, path: &Path<'_>) -> Result<Span> {
    let mut out = Span::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &at)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &at)?,
            "traceState" | "trace_state" => out.trace_state = string(value, &at)?,
            "parentSpanId" | "parent_span_id" => out.parent_span_id = hex_id(value, &at)?,
            "flags" => out.flags = enumeration(value, &at, span_flags)?,
            "name" => out.name = string(value, &at)?,
            "kind" => {
                out.kind = enumeration(value, &at, |name| {
                    span::SpanKind::from_str_name(name).map(|v| v as i32)
                })?;
            }
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = integer(value, &at)?
            }
            "endTimeUnixNano" | "end_time_unix_nano" => {
                out.end_time_unix_nano = integer(value, &at)?
            }
            "attributes" => out.attributes = attributes(value, &at)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = integer(value, &at)?;
            }
            "events" => out.events = repeated(value, &at, span_event)?,
            "droppedEventsCount" | "dropped_events_count" => {
                out.dropped_events_count = integer(value, &at)?
            }
            "links" => out.links = repeated(value, &at, span_link)?,
            "droppedLinksCount" | "dropped_links_count" => {
                out.dropped_links_count = integer(value, &at)?
            }
            "status" => out.status = Some(span_status(value, &at)?),
            _ => {}
        }
    }
    Ok(out)
}

fn span_event(value: &Value, path: &Path<'_>) -> Result<span::Event> {
    let mut out = span::Event::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "name" => out.name = string(value, &at)?,
            "attributes" => out.attributes = attributes(value, &at)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = integer(value, &at)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn span_link(value: &Value, path: &Path<'_>) -> Result<span::Link> {
    let mut out = span::Link::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &at)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &at)?,
            "traceState" | "trace_state" => out.trace_state = string(value, &at)?,
            "attributes" => out.attributes = attributes(value, &at)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = integer(value, &at)?;
            }
            "flags" => out.flags = enumeration(value, &at, span_flags)?,
            _ => {}
        }
    }
    Ok(out)
}

fn span_status(value: &Value, path: &Path<'_>) -> Result<Status> {
    let mut out = Status::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "message" => out.message = string(value, &at)?,
            "code" => {
                out.code = enumeration(value, &at, |name| {
                    status::StatusCode::from_str_name(name).map(|v| v as i32)
                })?;
            }
            _ => {}
        }
    }
    Ok(out)
}

// --- opentelemetry.proto.metrics.v1 ---

fn resource_metrics(value: &Value, path: &Path<'_>) -> Result<ResourceMetrics> {
    let mut out = ResourceMetrics::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "resource" => out.resource = Some(resource(value, &at)?),
            "scopeMetrics" | "scope_metrics" => {
                out.scope_metrics = repeated(value, &at, scope_metrics)?
            }
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_metrics(value: &Value, path: &Path<'_>) -> Result<ScopeMetrics> {
    let mut out = ScopeMetrics::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "scope" => out.scope = Some(scope(value, &at)?),
            "metrics" => out.metrics = repeated(value, &at, metric)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn metric(value: &Value, path: &Path<'_>) -> Result<Metric> {
    use metric::Data;
    let mut out = Metric::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "name" => out.name = string(value, &at)?,
            "description" => out.description = string(value, &at)?,
            "unit" => out.unit = string(value, &at)?,
            "metadata" => out.metadata = attributes(value, &at)?,
            "gauge" => out.data = Some(Data::Gauge(gauge(value, &at)?)),
            "sum" => out.data = Some(Data::Sum(sum(value, &at)?)),
            "histogram" => out.data = Some(Data::Histogram(histogram(value, &at)?)),
            "exponentialHistogram" | "exponential_histogram" => {
                out.data = Some(Data::ExponentialHistogram(exponential_histogram(
                    value, &at,
                )?));
            }
            "summary" => out.data = Some(Data::Summary(summary(value, &at)?)),
            _ => {}
        }
    }
    Ok(out)
}

fn temporality(value: &Value, path: &Path<'_>) -> Result<i32> {
    enumeration(value, path, |name| {
        AggregationTemporality::from_str_name(name).map(|v| v as i32)
    })
}

fn data_point_flags(value: &Value, path: &Path<'_>) -> Result<u32> {
    enumeration(value, path, |name| {
        DataPointFlags::from_str_name(name).map(|v| v as i32)
    })
}

fn gauge(value: &Value, path: &Path<'_>) -> Result<Gauge> {
    let mut out = Gauge::default();
    for (key, value) in fields(value, path)? {
        if let "dataPoints" | "data_points" = key {
            out.data_points = repeated(value, &path.field(key), number_point)?;
        }
    }
    Ok(out)
}

fn sum(value: &Value, path: &Path<'_>) -> Result<Sum> {
    let mut out = Sum::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "dataPoints" | "data_points" => out.data_points = repeated(value, &at, number_point)?,
            "aggregationTemporality" | "aggregation_temporality" => {
                out.aggregation_temporality = temporality(value, &at)?;
            }
            "isMonotonic" | "is_monotonic" => out.is_monotonic = boolean(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn histogram(value: &Value, path: &Path<'_>) -> Result<Histogram> {
    let mut out = Histogram::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "dataPoints" | "data_points" => {
                out.data_points = repeated(value, &at, histogram_point)?
            }
            "aggregationTemporality" | "aggregation_temporality" => {
                out.aggregation_temporality = temporality(value, &at)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn exponential_histogram(value: &Value, path: &Path<'_>) -> Result<ExponentialHistogram> {
    let mut out = ExponentialHistogram::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "dataPoints" | "data_points" => {
                out.data_points = repeated(value, &at, exponential_histogram_point)?;
            }
            "aggregationTemporality" | "aggregation_temporality" => {
                out.aggregation_temporality = temporality(value, &at)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn summary(value: &Value, path: &Path<'_>) -> Result<Summary> {
    let mut out = Summary::default();
    for (key, value) in fields(value, path)? {
        if let "dataPoints" | "data_points" = key {
            out.data_points = repeated(value, &path.field(key), summary_point)?;
        }
    }
    Ok(out)
}

fn number_point(value: &Value, path: &Path<'_>) -> Result<NumberDataPoint> {
    use number_data_point::Value as V;
    let mut out = NumberDataPoint::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "attributes" => out.attributes = attributes(value, &at)?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = integer(value, &at)?
            }
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "asDouble" | "as_double" => out.value = Some(V::AsDouble(double(value, &at)?)),
            "asInt" | "as_int" => out.value = Some(V::AsInt(integer(value, &at)?)),
            "exemplars" => out.exemplars = repeated(value, &at, exemplar)?,
            "flags" => out.flags = data_point_flags(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn histogram_point(value: &Value, path: &Path<'_>) -> Result<HistogramDataPoint> {
    let mut out = HistogramDataPoint::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "attributes" => out.attributes = attributes(value, &at)?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = integer(value, &at)?
            }
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "count" => out.count = integer(value, &at)?,
            "sum" => out.sum = Some(double(value, &at)?),
            "bucketCounts" | "bucket_counts" => out.bucket_counts = repeated(value, &at, integer)?,
            "explicitBounds" | "explicit_bounds" => {
                out.explicit_bounds = repeated(value, &at, double)?
            }
            "exemplars" => out.exemplars = repeated(value, &at, exemplar)?,
            "flags" => out.flags = data_point_flags(value, &at)?,
            "min" => out.min = Some(double(value, &at)?),
            "max" => out.max = Some(double(value, &at)?),
            _ => {}
        }
    }
    Ok(out)
}

fn exponential_histogram_point(
    value: &Value,
    path: &Path<'_>,
) -> Result<ExponentialHistogramDataPoint> {
    let mut out = ExponentialHistogramDataPoint::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "attributes" => out.attributes = attributes(value, &at)?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = integer(value, &at)?
            }
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "count" => out.count = integer(value, &at)?,
            "sum" => out.sum = Some(double(value, &at)?),
            "scale" => out.scale = integer(value, &at)?,
            "zeroCount" | "zero_count" => out.zero_count = integer(value, &at)?,
            "positive" => out.positive = Some(buckets(value, &at)?),
            "negative" => out.negative = Some(buckets(value, &at)?),
            "flags" => out.flags = data_point_flags(value, &at)?,
            "exemplars" => out.exemplars = repeated(value, &at, exemplar)?,
            "min" => out.min = Some(double(value, &at)?),
            "max" => out.max = Some(double(value, &at)?),
            "zeroThreshold" | "zero_threshold" => out.zero_threshold = double(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn buckets(value: &Value, path: &Path<'_>) -> Result<Buckets> {
    let mut out = Buckets::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "offset" => out.offset = integer(value, &at)?,
            "bucketCounts" | "bucket_counts" => out.bucket_counts = repeated(value, &at, integer)?,
            _ => {}
        }
    }
    Ok(out)
}

fn summary_point(value: &Value, path: &Path<'_>) -> Result<SummaryDataPoint> {
    let mut out = SummaryDataPoint::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "attributes" => out.attributes = attributes(value, &at)?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = integer(value, &at)?
            }
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "count" => out.count = integer(value, &at)?,
            "sum" => out.sum = double(value, &at)?,
            "quantileValues" | "quantile_values" => {
                out.quantile_values = repeated(value, &at, quantile)?
            }
            "flags" => out.flags = data_point_flags(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn quantile(value: &Value, path: &Path<'_>) -> Result<ValueAtQuantile> {
    let mut out = ValueAtQuantile::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "quantile" => out.quantile = double(value, &at)?,
            "value" => out.value = double(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

fn exemplar(value: &Value, path: &Path<'_>) -> Result<Exemplar> {
    use exemplar::Value as V;
    let mut out = Exemplar::default();
    for (key, value) in fields(value, path)? {
        let at = path.field(key);
        match key {
            "filteredAttributes" | "filtered_attributes" => {
                out.filtered_attributes = attributes(value, &at)?
            }
            "timeUnixNano" | "time_unix_nano" => out.time_unix_nano = integer(value, &at)?,
            "asDouble" | "as_double" => out.value = Some(V::AsDouble(double(value, &at)?)),
            "asInt" | "as_int" => out.value = Some(V::AsInt(integer(value, &at)?)),
            "spanId" | "span_id" => out.span_id = hex_id(value, &at)?,
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &at)?,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
