//! The flat span model: one [`Span`] per OTLP span with its resource and
//! scope folded in, as the trace assembler and the span store want it.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::{any_value_to_json, service_name};
use crate::otlp::ExportTraceServiceRequest;
use crate::otlp::common::v1::{AnyValue, KeyValue, any_value};
use crate::otlp::trace::v1::{Span as OtlpSpan, span, status};

/// Attributes kept per span (and per event and link); the excess is counted
/// in the `dropped_*_attributes_count`, as the OpenTelemetry SDKs do.
pub const MAX_SPAN_ATTRIBUTES: usize = 128;
/// Events and links kept per span; the excess is counted as dropped.
pub const MAX_SPAN_EVENTS: usize = 128;

/// A typed attribute value. Arrays, maps and bytes are kept as JSON text
/// (bytes as lowercase hex), like log attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Json(String),
}

impl AttrValue {
    /// Converts an OTLP value (an absent value becomes JSON `null`).
    pub fn from_any(v: Option<&AnyValue>) -> AttrValue {
        match v.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
            Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
            Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
            Some(_) => {
                AttrValue::Json(any_value_to_json(v.unwrap_or(&AnyValue::default())).to_string())
            }
            None => AttrValue::Json("null".into()),
        }
    }

    /// The value as JSON (JSON text is parsed back; non-finite doubles become strings).
    pub fn to_json(&self) -> Value {
        match self {
            AttrValue::Str(s) => Value::String(s.clone()),
            AttrValue::Int(i) => Value::from(*i),
            AttrValue::Double(d) => serde_json::Number::from_f64(*d)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(d.to_string())),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Json(j) => {
                serde_json::from_str(j).unwrap_or_else(|_| Value::String(j.clone()))
            }
        }
    }

    /// The value as text, as tag searches compare it (`200`, `true`, `GET`).
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            AttrValue::Str(s) => s.as_str().into(),
            AttrValue::Int(i) => i.to_string().into(),
            AttrValue::Double(d) => d.to_string().into(),
            AttrValue::Bool(b) => b.to_string().into(),
            AttrValue::Json(j) => j.as_str().into(),
        }
    }

    /// Rough heap size, for memory budgets.
    pub fn heap_bytes(&self) -> usize {
        match self {
            AttrValue::Str(s) | AttrValue::Json(s) => s.len(),
            _ => 0,
        }
    }
}

/// One attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub key: String,
    pub value: AttrValue,
}

impl Attr {
    pub fn new(key: impl Into<String>, value: AttrValue) -> Attr {
        Attr {
            key: key.into(),
            value,
        }
    }
}

/// Finds an attribute by key.
pub fn find_attr<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|a| a.key == key).map(|a| &a.value)
}

/// Finds a string attribute by key (empty strings count as absent).
pub fn find_str<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a str> {
    match find_attr(attrs, key)? {
        AttrValue::Str(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Attributes as a JSON object (a repeated key keeps its last value).
pub fn attrs_to_json(attrs: &[Attr]) -> Map<String, Value> {
    attrs
        .iter()
        .map(|a| (a.key.clone(), a.value.to_json()))
        .collect()
}

/// OTLP span kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    /// From the OTLP enum number; unknown numbers become `Unspecified`.
    pub fn from_i32(n: i32) -> SpanKind {
        match n {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// Lower-case name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    /// Parses [`SpanKind::as_str`] (case-insensitive); `None` when unknown.
    pub fn parse(s: &str) -> Option<SpanKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "unspecified" => SpanKind::Unspecified,
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }
}

/// OTLP span status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    pub fn from_i32(n: i32) -> StatusCode {
        match n {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<StatusCode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "unset" => StatusCode::Unset,
            "ok" => StatusCode::Ok,
            "error" => StatusCode::Error,
            _ => return None,
        })
    }
}

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Vec<Attr>,
    pub dropped_attributes_count: u32,
}

/// A link to another span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_state: String,
    pub attributes: Vec<Attr>,
    pub dropped_attributes_count: u32,
}

/// The resource part of a span, shared by every span of one resource.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SpanResource {
    /// `service.name`, or `unknown_service`.
    pub service: String,
    pub attributes: Vec<Attr>,
}

/// One span, flattened. Times are Unix nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status_code: StatusCode,
    pub status_message: String,
    pub attributes: Vec<Attr>,
    pub dropped_attributes_count: u32,
    pub events: Vec<SpanEvent>,
    pub dropped_events_count: u32,
    pub links: Vec<SpanLink>,
    pub dropped_links_count: u32,
    pub resource: Arc<SpanResource>,
    pub scope_name: String,
    pub scope_version: String,
}

impl Span {
    /// `service.name` of the span's resource.
    pub fn service(&self) -> &str {
        &self.resource.service
    }

    /// `end - start`, never negative.
    pub fn duration_ns(&self) -> i64 {
        (self.end_ns - self.start_ns).max(0)
    }

    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::Error
    }

    /// Rough heap size (without the shared resource), for memory budgets.
    pub fn heap_bytes(&self) -> usize {
        fn attrs(a: &[Attr]) -> usize {
            a.iter()
                .map(|a| a.key.len() + a.value.heap_bytes() + std::mem::size_of::<Attr>())
                .sum()
        }
        std::mem::size_of::<Span>()
            + self.name.len()
            + self.status_message.len()
            + self.trace_state.len()
            + self.scope_name.len()
            + self.scope_version.len()
            + attrs(&self.attributes)
            + self
                .events
                .iter()
                .map(|e| std::mem::size_of::<SpanEvent>() + e.name.len() + attrs(&e.attributes))
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| {
                    std::mem::size_of::<SpanLink>() + l.trace_state.len() + attrs(&l.attributes)
                })
                .sum::<usize>()
    }
}

/// Lowercase hex of an id.
pub fn id_hex(id: &[u8]) -> String {
    hex::encode(id)
}

/// Parses a trace id in hex (32 digits; shorter ids, as some Jaeger clients
/// send 64-bit ones, are left-padded with zeros). `None` when malformed.
pub fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>32}");
    let mut out = [0u8; 16];
    hex::decode_to_slice(padded, &mut out).ok()?;
    Some(out)
}

impl AttrValue {
    /// Converts an OTLP value, taking its strings.
    fn from_any_owned(v: Option<AnyValue>) -> AttrValue {
        match v.and_then(|v| v.value) {
            Some(any_value::Value::StringValue(s)) => AttrValue::Str(s),
            Some(any_value::Value::IntValue(i)) => AttrValue::Int(i),
            Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(d),
            Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(b),
            Some(other) => {
                AttrValue::Json(any_value_to_json(&AnyValue { value: Some(other) }).to_string())
            }
            None => AttrValue::Json("null".into()),
        }
    }
}

fn convert_attrs(kvs: Vec<KeyValue>) -> (Vec<Attr>, u32) {
    let total = kvs.len();
    let attrs: Vec<Attr> = kvs
        .into_iter()
        .take(MAX_SPAN_ATTRIBUTES)
        .map(|kv| Attr::new(kv.key, AttrValue::from_any_owned(kv.value)))
        .collect();
    let dropped = (total - attrs.len()) as u32;
    (attrs, dropped)
}

fn to_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

fn fixed<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

fn flatten_span(s: OtlpSpan, resource: &Arc<SpanResource>, scope: (&str, &str)) -> Option<Span> {
    let trace_id = fixed(&s.trace_id)?;
    let span_id = fixed(&s.span_id)?;
    let (attributes, dropped) = convert_attrs(s.attributes);
    let (n_events, n_links) = (s.events.len(), s.links.len());
    let events: Vec<SpanEvent> = s
        .events
        .into_iter()
        .take(MAX_SPAN_EVENTS)
        .map(|e| {
            let (attributes, dropped) = convert_attrs(e.attributes);
            SpanEvent {
                time_ns: to_i64(e.time_unix_nano),
                name: e.name,
                attributes,
                dropped_attributes_count: e.dropped_attributes_count.saturating_add(dropped),
            }
        })
        .collect();
    let links: Vec<SpanLink> = s
        .links
        .into_iter()
        .take(MAX_SPAN_EVENTS)
        .filter_map(|l| {
            let (attributes, dropped) = convert_attrs(l.attributes);
            Some(SpanLink {
                trace_id: fixed(&l.trace_id)?,
                span_id: fixed(&l.span_id)?,
                trace_state: l.trace_state,
                attributes,
                dropped_attributes_count: l.dropped_attributes_count.saturating_add(dropped),
            })
        })
        .collect();
    let status = s.status.unwrap_or_default();
    Some(Span {
        trace_id,
        span_id,
        parent_span_id: fixed(&s.parent_span_id).filter(|p: &[u8; 8]| p.iter().any(|b| *b != 0)),
        trace_state: s.trace_state,
        flags: s.flags,
        name: s.name,
        kind: SpanKind::from_i32(s.kind),
        start_ns: to_i64(s.start_time_unix_nano),
        end_ns: to_i64(s.end_time_unix_nano.max(s.start_time_unix_nano)),
        status_code: StatusCode::from_i32(status.code),
        status_message: status.message,
        dropped_attributes_count: s.dropped_attributes_count.saturating_add(dropped),
        attributes,
        dropped_events_count: s
            .dropped_events_count
            .saturating_add(n_events.saturating_sub(MAX_SPAN_EVENTS) as u32),
        events,
        dropped_links_count: s
            .dropped_links_count
            .saturating_add(n_links.saturating_sub(MAX_SPAN_EVENTS) as u32),
        links,
        resource: resource.clone(),
        scope_name: scope.0.to_owned(),
        scope_version: scope.1.to_owned(),
    })
}

/// Flattens every span of a (validated) request, in request order, taking
/// its strings. Spans whose ids have the wrong length — which validation
/// already rejected — are skipped; attributes, events and links past the
/// limits are dropped and counted.
pub fn flatten_traces(req: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = service_name(rs.resource.as_ref()).to_owned();
        let (attributes, _) = rs
            .resource
            .map(|r| convert_attrs(r.attributes))
            .unwrap_or_default();
        let resource = Arc::new(SpanResource {
            service,
            attributes,
        });
        for ss in rs.scope_spans {
            let scope = ss.scope.unwrap_or_default();
            out.extend(
                ss.spans
                    .into_iter()
                    .filter_map(|s| flatten_span(s, &resource, (&scope.name, &scope.version))),
            );
        }
    }
    out
}

// Keep the generated enums referenced so a change of their numbering in the
// protobuf definitions fails to compile here rather than misreading data.
const _: () = {
    assert!(span::SpanKind::Consumer as i32 == SpanKind::Consumer as i32);
    assert!(status::StatusCode::Error as i32 == StatusCode::Error as i32);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::common::v1::InstrumentationScope;
    use crate::otlp::resource::v1::Resource;
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn flattens_and_clamps() {
        let many: Vec<KeyValue> = (0..10_000)
            .map(|i| kv(&format!("k{i}"), any_value::Value::IntValue(i)))
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("cart".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    spans: vec![OtlpSpan {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        parent_span_id: vec![0; 8],
                        name: "GET /".into(),
                        kind: 9,
                        start_time_unix_nano: 10,
                        end_time_unix_nano: 30,
                        attributes: many,
                        status: Some(Status {
                            code: 2,
                            message: "boom".into(),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let spans = flatten_traces(req);
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.service(), "cart");
        assert_eq!(s.parent_span_id, None, "an all-zero parent is a root");
        assert_eq!(s.kind, SpanKind::Unspecified);
        assert_eq!(s.attributes.len(), MAX_SPAN_ATTRIBUTES);
        assert_eq!(
            s.dropped_attributes_count,
            10_000 - MAX_SPAN_ATTRIBUTES as u32
        );
        assert_eq!(s.duration_ns(), 20);
        assert!(s.is_error());
        assert_eq!(
            (s.scope_name.as_str(), s.scope_version.as_str()),
            ("lib", "1.2")
        );
    }

    #[test]
    fn trace_ids_parse() {
        assert_eq!(parse_trace_id(&"ab".repeat(16)), Some([0xab; 16]));
        let short = parse_trace_id("1f").unwrap();
        assert_eq!(short[15], 0x1f);
        assert_eq!(short[..15], [0; 15]);
        assert_eq!(parse_trace_id("xyz"), None);
        assert_eq!(parse_trace_id(&"a".repeat(33)), None);
        assert_eq!(parse_trace_id(""), None);
    }

    #[test]
    fn values_render() {
        assert_eq!(AttrValue::Int(200).to_text(), "200");
        assert_eq!(
            AttrValue::Json("[1,2]".into()).to_json(),
            serde_json::json!([1, 2])
        );
        assert_eq!(
            AttrValue::Double(f64::NAN).to_json(),
            Value::String("NaN".into())
        );
    }
}
