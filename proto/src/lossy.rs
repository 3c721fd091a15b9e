//! Replacing invalid UTF-8 in the `string` fields of OTLP protobuf bodies.
//!
//! prost refuses a whole request when one `string` field holds invalid UTF-8,
//! yet SDKs in languages whose strings are plain bytes (C++, Go) and log
//! shippers tailing arbitrary files do send such bodies, and dropping a batch
//! for one bad byte loses far more than a replacement character does.
//! [`sanitize_utf8`] rewrites the protobuf wire format guided by a static schema
//! of the OTLP messages: `string` fields are repaired with
//! [`String::from_utf8_lossy`] and re-length-prefixed, nested messages are
//! walked (their length prefixes patched when their size changed), and every
//! other byte (varints, fixed-width values, `bytes`, packed repeated fields,
//! unknown fields) is copied as is. A body without invalid UTF-8 therefore comes
//! back byte-identical. `decode_request` calls this only after prost failed on
//! UTF-8, then decodes the result with prost, which still checks everything else.
//!
//! Wire format: <https://protobuf.dev/programming-guides/encoding/>. Field
//! numbers come from the `opentelemetry-proto` generated code.

use crate::{DecodeError, Signal};

/// Deepest message nesting walked, the same limit prost applies when decoding,
/// so this pass refuses nothing prost would accept.
const MAX_DEPTH: usize = 100;

/// Rewrites an OTLP protobuf body so every string field is valid UTF-8.
///
/// Invalid sequences become U+FFFD. Malformed wire data is reported as
/// [`DecodeError::Protobuf`], nesting deeper than 100 messages as
/// [`DecodeError::TooDeep`].
pub fn sanitize_utf8(signal: Signal, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let root = match signal {
        Signal::Logs => &EXPORT_LOGS,
        Signal::Traces => &EXPORT_TRACES,
        Signal::Metrics => &EXPORT_METRICS,
    };
    // Each replaced byte may grow to the three bytes of U+FFFD.
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    rewrite(body, root, 0, &mut out)?;
    Ok(out)
}

/// What to do with a length-delimited field. Fields a [`Schema`] does not list
/// are copied verbatim.
#[derive(Clone, Copy)]
enum Field {
    /// A `string`: repaired when it is not UTF-8.
    Str,
    /// An embedded message: walked with its own schema.
    Msg(&'static Schema),
}

/// The fields of one message type that may contain strings, by field number.
struct Schema {
    fields: &'static [(u32, Field)],
}

impl Schema {
    fn field(&self, tag: u32) -> Option<Field> {
        self.fields.iter().find(|(t, _)| *t == tag).map(|(_, f)| *f)
    }
}

use Field::{Msg, Str};

// opentelemetry.proto.collector.*.v1
static EXPORT_LOGS: Schema = Schema {
    fields: &[(1, Msg(&RESOURCE_LOGS))],
};
static EXPORT_TRACES: Schema = Schema {
    fields: &[(1, Msg(&RESOURCE_SPANS))],
};
static EXPORT_METRICS: Schema = Schema {
    fields: &[(1, Msg(&RESOURCE_METRICS))],
};

// opentelemetry.proto.common.v1 and resource.v1
static ANY_VALUE: Schema = Schema {
    // string_value, array_value, kvlist_value
    fields: &[(1, Str), (5, Msg(&ARRAY_VALUE)), (6, Msg(&KEY_VALUE_LIST))],
};
static ARRAY_VALUE: Schema = Schema {
    fields: &[(1, Msg(&ANY_VALUE))],
};
static KEY_VALUE_LIST: Schema = Schema {
    fields: &[(1, Msg(&KEY_VALUE))],
};
static KEY_VALUE: Schema = Schema {
    fields: &[(1, Str), (2, Msg(&ANY_VALUE))],
};
static SCOPE: Schema = Schema {
    fields: &[(1, Str), (2, Str), (3, Msg(&KEY_VALUE))],
};
static ENTITY_REF: Schema = Schema {
    // schema_url, type, id_keys, description_keys
    fields: &[(1, Str), (2, Str), (3, Str), (4, Str)],
};
static RESOURCE: Schema = Schema {
    fields: &[(1, Msg(&KEY_VALUE)), (3, Msg(&ENTITY_REF))],
};

// opentelemetry.proto.logs.v1
static RESOURCE_LOGS: Schema = Schema {
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_LOGS)), (3, Str)],
};
static SCOPE_LOGS: Schema = Schema {
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&LOG_RECORD)), (3, Str)],
};
static LOG_RECORD: Schema = Schema {
    // severity_text, body, attributes, event_name
    fields: &[
        (3, Str),
        (5, Msg(&ANY_VALUE)),
        (6, Msg(&KEY_VALUE)),
        (12, Str),
    ],
};

// opentelemetry.proto.trace.v1
static RESOURCE_SPANS: Schema = Schema {
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_SPANS)), (3, Str)],
};
static SCOPE_SPANS: Schema = Schema {
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&SPAN)), (3, Str)],
};
static SPAN: Schema = Schema {
    // trace_state, name, attributes, events, links, status
    fields: &[
        (3, Str),
        (5, Str),
        (9, Msg(&KEY_VALUE)),
        (11, Msg(&SPAN_EVENT)),
        (13, Msg(&SPAN_LINK)),
        (15, Msg(&SPAN_STATUS)),
    ],
};
static SPAN_EVENT: Schema = Schema {
    fields: &[(2, Str), (3, Msg(&KEY_VALUE))],
};
static SPAN_LINK: Schema = Schema {
    fields: &[(3, Str), (4, Msg(&KEY_VALUE))],
};
static SPAN_STATUS: Schema = Schema {
    fields: &[(2, Str)],
};

// opentelemetry.proto.metrics.v1
static RESOURCE_METRICS: Schema = Schema {
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_METRICS)), (3, Str)],
};
static SCOPE_METRICS: Schema = Schema {
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&METRIC)), (3, Str)],
};
static METRIC: Schema = Schema {
    // name, description, unit, metadata, then the `data` oneof
    fields: &[
        (1, Str),
        (2, Str),
        (3, Str),
        (12, Msg(&KEY_VALUE)),
        (5, Msg(&GAUGE)),
        (7, Msg(&GAUGE)),
        (9, Msg(&HISTOGRAM)),
        (10, Msg(&EXPONENTIAL_HISTOGRAM)),
        (11, Msg(&SUMMARY)),
    ],
};
// Gauge and Sum both hold NumberDataPoints at field 1; Sum's other fields are scalars.
static GAUGE: Schema = Schema {
    fields: &[(1, Msg(&NUMBER_POINT))],
};
static HISTOGRAM: Schema = Schema {
    fields: &[(1, Msg(&HISTOGRAM_POINT))],
};
static EXPONENTIAL_HISTOGRAM: Schema = Schema {
    fields: &[(1, Msg(&EXPONENTIAL_HISTOGRAM_POINT))],
};
static SUMMARY: Schema = Schema {
    fields: &[(1, Msg(&SUMMARY_POINT))],
};
static NUMBER_POINT: Schema = Schema {
    fields: &[(7, Msg(&KEY_VALUE)), (5, Msg(&EXEMPLAR))],
};
static HISTOGRAM_POINT: Schema = Schema {
    fields: &[(9, Msg(&KEY_VALUE)), (8, Msg(&EXEMPLAR))],
};
// The positive/negative buckets (fields 8 and 9) hold no strings.
static EXPONENTIAL_HISTOGRAM_POINT: Schema = Schema {
    fields: &[(1, Msg(&KEY_VALUE)), (11, Msg(&EXEMPLAR))],
};
// Quantile values (field 6) hold no strings.
static SUMMARY_POINT: Schema = Schema {
    fields: &[(7, Msg(&KEY_VALUE))],
};
static EXEMPLAR: Schema = Schema {
    fields: &[(7, Msg(&KEY_VALUE))],
};

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

/// Appends the sanitized encoding of the message `msg` to `out`.
///
/// Keys and length prefixes are copied from the input; a length is re-encoded
/// only when its content changed size, so untouched parts stay byte-identical
/// even where the sender used non-minimal varints.
fn rewrite(
    mut msg: &[u8],
    schema: &Schema,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    while !msg.is_empty() {
        let field = msg;
        let (tag, wire_type) = key(&mut msg)?;
        if wire_type != LEN {
            skip(wire_type, tag, &mut msg, depth)?;
            out.extend_from_slice(&field[..field.len() - msg.len()]);
            continue;
        }
        let key_len = field.len() - msg.len();
        let len = length(&mut msg)?;
        let header_len = field.len() - msg.len();
        let content = take(&mut msg, len)?;
        match schema.field(tag) {
            Some(Str) if std::str::from_utf8(content).is_err() => {
                let fixed = String::from_utf8_lossy(content);
                out.extend_from_slice(&field[..key_len]);
                put_varint(fixed.len() as u64, out);
                out.extend_from_slice(fixed.as_bytes());
            }
            Some(Msg(nested)) => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep(MAX_DEPTH));
                }
                let len_at = out.len() + key_len;
                out.extend_from_slice(&field[..header_len]);
                let content_at = out.len();
                rewrite(content, nested, depth + 1, out)?;
                let new_len = out.len() - content_at;
                if new_len != len {
                    // Moves only the content just written, and only if the
                    // prefix changed width.
                    let mut prefix = Vec::with_capacity(10);
                    put_varint(new_len as u64, &mut prefix);
                    out.splice(len_at..content_at, prefix);
                }
            }
            Some(Str) | None => out.extend_from_slice(&field[..header_len + len]),
        }
    }
    Ok(())
}

/// Skips one value that holds no strings we know of (including whole groups,
/// which OTLP never uses but the wire format allows as unknown fields).
fn skip(wire_type: u64, tag: u32, buf: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    match wire_type {
        VARINT => {
            varint(buf)?;
        }
        FIXED64 => {
            take(buf, 8)?;
        }
        FIXED32 => {
            take(buf, 4)?;
        }
        LEN => {
            let len = length(buf)?;
            take(buf, len)?;
        }
        START_GROUP => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError::TooDeep(MAX_DEPTH));
            }
            loop {
                let (inner_tag, inner_type) = key(buf)?;
                if inner_type == END_GROUP {
                    if inner_tag != tag {
                        return Err(malformed("unexpected end group tag"));
                    }
                    break;
                }
                skip(inner_type, inner_tag, buf, depth + 1)?;
            }
        }
        _ => return Err(malformed("unexpected end group tag")),
    }
    Ok(())
}

/// Reads a field key, checked as prost checks it: returns the field number and
/// a wire type known to be valid.
fn key(buf: &mut &[u8]) -> Result<(u32, u64), DecodeError> {
    let key = varint(buf)?;
    let tag = u32::try_from(key >> 3)
        .ok()
        .filter(|_| key <= u64::from(u32::MAX))
        .ok_or_else(|| malformed("invalid key value"))?;
    let wire_type = key & 7;
    if wire_type > FIXED32 {
        return Err(malformed("invalid wire type value"));
    }
    if tag == 0 {
        return Err(malformed("invalid tag value: 0"));
    }
    Ok((tag, wire_type))
}

fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0;
    for (i, &byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // The tenth byte may only carry the 64th bit.
            if i == 9 && byte > 1 {
                break;
            }
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(malformed("invalid varint"))
}

fn length(buf: &mut &[u8]) -> Result<usize, DecodeError> {
    usize::try_from(varint(buf)?).map_err(|_| malformed("buffer underflow"))
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], DecodeError> {
    let (head, tail) = buf
        .split_at_checked(len)
        .ok_or_else(|| malformed("buffer underflow"))?;
    *buf = tail;
    Ok(head)
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[expect(
    deprecated,
    reason = "prost 0.14 has no other public way to build a prost::DecodeError"
)]
fn malformed(description: &'static str) -> DecodeError {
    DecodeError::Protobuf(prost::DecodeError::new(description))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::otlp::common::v1::{
        AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
    };
    use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use crate::otlp::metrics::v1::{
        Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
        SummaryDataPoint, exemplar, exponential_histogram_data_point, metric, number_data_point,
        summary_data_point,
    };
    use crate::otlp::resource::v1::Resource;
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    use crate::otlp::{
        ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
    };

    /// Written into strings where a test then puts invalid UTF-8.
    const HOLE: &str = "~~";
    /// Two bytes that are each invalid UTF-8, so each becomes one U+FFFD.
    const GARBAGE: [u8; 2] = [0xff, 0xc0];
    const REPAIRED: &str = "\u{fffd}\u{fffd}";

    fn string(s: String) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        })
    }

    fn kv(key: String, value: String) -> KeyValue {
        KeyValue {
            key,
            value: string(value),
            ..Default::default()
        }
    }

    /// Encodes `msg` and overwrites the hole inside each of the `marked`
    /// strings with invalid UTF-8 of the same length.
    fn corrupt(msg: &impl Message, marked: &[&str]) -> Vec<u8> {
        let mut body = msg.encode_to_vec();
        for marker in marked {
            let marker = marker.replace("{}", HOLE);
            let at = body
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
                .unwrap_or_else(|| panic!("{marker:?} not in body"));
            let hole = at + marker.find(HOLE).unwrap();
            body[hole..hole + HOLE.len()].copy_from_slice(&GARBAGE);
        }
        body
    }

    /// Checks the three promises: prost refuses `body`, the sanitized body
    /// decodes to `expected`, and a valid body comes back byte-identical.
    fn check<M: Message + Default + PartialEq + std::fmt::Debug>(
        signal: Signal,
        body: &[u8],
        expected: &M,
    ) {
        let err = M::decode(body).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let clean = sanitize_utf8(signal, body).unwrap();
        assert_eq!(&M::decode(clean.as_slice()).unwrap(), expected);
        let valid = expected.encode_to_vec();
        assert_eq!(sanitize_utf8(signal, &valid).unwrap(), valid);
    }

    /// A logs request whose strings contain `hole` where tests corrupt them.
    fn logs(hole: &str) -> ExportLogsServiceRequest {
        // Long enough that repairing it moves its length past a varint boundary.
        let long = format!("{}long-{hole}", "x".repeat(120));
        let record = LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_number: 9,
            severity_text: format!("sev-{hole}"),
            body: string(format!("body-{hole}-end")),
            attributes: vec![
                kv(format!("key-{hole}"), "plain".into()),
                kv("long".into(), long),
                KeyValue {
                    key: "nested".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![KeyValue {
                                key: "list".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                                        values: vec![string(format!("deep-{hole}")).unwrap()],
                                    })),
                                }),
                                ..Default::default()
                            }],
                        })),
                    }),
                    ..Default::default()
                },
                KeyValue {
                    key: "raw".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::BytesValue(vec![0xff, 0xfe, 0x80])),
                    }),
                    ..Default::default()
                },
            ],
            flags: 1,
            trace_id: vec![0xff; 16],
            span_id: vec![0xc0; 8],
            event_name: format!("event-{hole}"),
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name".into(), format!("svc-{hole}"))],
                    dropped_attributes_count: 3,
                    entity_refs: vec![EntityRef {
                        r#type: format!("type-{hole}"),
                        id_keys: vec!["a".into(), format!("id-{hole}")],
                        ..Default::default()
                    }],
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: format!("scope-{hole}"),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    log_records: vec![
                        record.clone(),
                        LogRecord {
                            severity_number: 17,
                            ..record
                        },
                    ],
                    schema_url: format!("schema-{hole}"),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
        }
    }

    #[test]
    fn repairs_log_strings() {
        // Each marker corrupts its first occurrence; the second record keeps valid strings.
        let marked = [
            "sev-{}",
            "body-{}-end",
            "key-{}",
            "long-{}",
            "deep-{}",
            "event-{}",
            "svc-{}",
            "type-{}",
            "id-{}",
            "scope-{}",
            "schema-{}",
        ];
        let body = corrupt(&logs(HOLE), &marked);
        let mut expected = logs(REPAIRED);
        // The second record was not corrupted.
        let valid = logs(HOLE).resource_logs[0].scope_logs[0].log_records[1].clone();
        expected.resource_logs[0].scope_logs[0].log_records[1] = valid;
        check(Signal::Logs, &body, &expected);
    }

    fn traces(hole: &str) -> ExportTraceServiceRequest {
        let span = Span {
            trace_id: (0..16).collect(),
            span_id: (0..8).collect(),
            trace_state: format!("ts={hole}"),
            parent_span_id: vec![0xee; 8],
            flags: 0x301,
            name: format!("GET /{hole}"),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            attributes: vec![kv(format!("http.{hole}"), "200".into())],
            dropped_attributes_count: 1,
            events: vec![span::Event {
                time_unix_nano: 15,
                name: format!("event-{hole}"),
                attributes: vec![kv("e".into(), format!("ev-{hole}"))],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![span::Link {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                trace_state: format!("link={hole}"),
                attributes: vec![kv("l".into(), format!("lv-{hole}"))],
                dropped_attributes_count: 4,
                flags: 1,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: format!("boom-{hole}"),
                code: 2,
            }),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name".into(), "api".into())],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "http".into(),
                        attributes: vec![kv("s".into(), format!("sv-{hole}"))],
                        ..Default::default()
                    }),
                    spans: vec![span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn repairs_span_strings() {
        let marked = [
            "ts={}", "GET /{}", "http.{}", "event-{}", "ev-{}", "link={}", "lv-{}", "boom-{}",
            "sv-{}",
        ];
        check(
            Signal::Traces,
            &corrupt(&traces(HOLE), &marked),
            &traces(REPAIRED),
        );
    }

    #[test]
    fn repairs_only_the_span_name() {
        let mut request = traces("ok");
        request.resource_spans[0].scope_spans[0].spans[0].name = format!("GET /{HOLE}");
        let mut expected = request.clone();
        expected.resource_spans[0].scope_spans[0].spans[0].name = format!("GET /{REPAIRED}");
        check(Signal::Traces, &corrupt(&request, &["GET /{}"]), &expected);
    }

    fn metrics(hole: &str) -> ExportMetricsServiceRequest {
        let attrs = |name: &str| vec![kv(name.into(), format!("{name}-{hole}"))];
        let exemplars = vec![Exemplar {
            filtered_attributes: attrs("ex"),
            time_unix_nano: 7,
            span_id: vec![0xff; 8],
            trace_id: vec![0xff; 16],
            value: Some(exemplar::Value::AsInt(-3)),
        }];
        let number = NumberDataPoint {
            attributes: attrs("num"),
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            exemplars: exemplars.clone(),
            flags: 1,
            value: Some(number_data_point::Value::AsDouble(1.5)),
        };
        let data = vec![
            metric::Data::Gauge(crate::otlp::metrics::v1::Gauge {
                data_points: vec![number.clone()],
            }),
            metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: attrs("sum"),
                    ..number
                }],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs("hist"),
                    count: 6,
                    sum: Some(12.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![1.0, 5.0],
                    exemplars: exemplars.clone(),
                    min: Some(0.5),
                    max: Some(9.0),
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: attrs("exp"),
                    count: 4,
                    scale: -2,
                    zero_count: 1,
                    positive: Some(exponential_histogram_data_point::Buckets {
                        offset: -1,
                        bucket_counts: vec![1, 2],
                    }),
                    exemplars,
                    zero_threshold: 0.001,
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: attrs("summ"),
                    count: 3,
                    sum: 4.5,
                    quantile_values: vec![summary_data_point::ValueAtQuantile {
                        quantile: 0.5,
                        value: 1.0,
                    }],
                    ..Default::default()
                }],
            }),
        ];
        let metrics = data
            .into_iter()
            .enumerate()
            .map(|(i, data)| Metric {
                name: format!("metric{i}-{hole}"),
                description: format!("desc{i}-{hole}"),
                unit: format!("unit{i}-{hole}"),
                metadata: attrs(&format!("meta{i}")),
                data: Some(data),
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource::default()),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn repairs_metric_strings() {
        let mut marked: Vec<String> = ["num", "sum", "hist", "exp", "summ"]
            .iter()
            .map(|name| format!("{name}-{{}}"))
            .collect();
        for i in 0..5 {
            for field in ["metric", "desc", "unit", "meta"] {
                marked.push(format!("{field}{i}-{{}}"));
            }
        }
        let marked: Vec<&str> = marked.iter().map(String::as_str).collect();
        let mut body = corrupt(&metrics(HOLE), &marked);
        // Exemplars repeat the same string; corrupt every copy.
        while let Some(at) = body.windows(5).position(|w| w == b"ex-~~") {
            body[at + 3..at + 5].copy_from_slice(&GARBAGE);
        }
        check(Signal::Metrics, &body, &metrics(REPAIRED));
    }

    #[test]
    fn repairs_only_the_metric_name() {
        let mut request = metrics("ok");
        request.resource_metrics[0].scope_metrics[0].metrics[2].name = format!("latency-{HOLE}");
        let mut expected = request.clone();
        expected.resource_metrics[0].scope_metrics[0].metrics[2].name =
            format!("latency-{REPAIRED}");
        check(
            Signal::Metrics,
            &corrupt(&request, &["latency-{}"]),
            &expected,
        );
    }

    #[test]
    fn valid_bodies_round_trip_byte_identical() {
        let bodies = [
            (Signal::Logs, logs("fine").encode_to_vec()),
            (Signal::Traces, traces("fine").encode_to_vec()),
            (Signal::Metrics, metrics("fine").encode_to_vec()),
            (Signal::Logs, Vec::new()),
            // A non-minimal length prefix (3 as 0x83 0x00) around an unchanged message.
            (Signal::Logs, vec![0x0a, 0x83, 0x00, 0x1a, 0x01, b'a']),
        ];
        for (signal, body) in bodies {
            assert_eq!(sanitize_utf8(signal, &body).unwrap(), body, "{signal:?}");
        }
    }

    #[test]
    fn copies_unknown_and_non_string_fields_verbatim() {
        // ResourceLogs { 99: bytes "\xff", group 106 { 1: varint 5 }, schema_url: "\xff" }
        let resource_logs = [
            0x9a, 0x06, 0x01, 0xff, // field 99, length-delimited
            0xd3, 0x06, 0x08, 0x05, 0xd4, 0x06, // field 106 group holding field 1 = 5
            0x1a, 0x01, 0xff, // schema_url
        ];
        let mut body = vec![0x0a, resource_logs.len() as u8];
        body.extend_from_slice(&resource_logs);
        let clean = sanitize_utf8(Signal::Logs, &body).unwrap();
        let mut expected = vec![0x0a, resource_logs.len() as u8 + 2];
        expected.extend_from_slice(&resource_logs[..10]);
        expected.extend_from_slice(&[0x1a, 0x03, 0xef, 0xbf, 0xbd]);
        assert_eq!(clean, expected);
        let decoded = ExportLogsServiceRequest::decode(clean.as_slice()).unwrap();
        assert_eq!(decoded.resource_logs[0].schema_url, "\u{fffd}");
    }

    #[test]
    fn refuses_malformed_wire_data() {
        let cases: [(&str, &[u8]); 7] = [
            ("truncated length", &[0x0a, 0x05, 0x1a]),
            ("truncated varint", &[0x08, 0x80]),
            (
                "overlong varint",
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
            ),
            ("wire type 7", &[0x0f]),
            ("field number 0", &[0x02, 0x00]),
            ("stray end group", &[0x0c]),
            ("unterminated group", &[0x0b, 0x08, 0x01]),
        ];
        for (name, body) in cases {
            let err = sanitize_utf8(Signal::Logs, body).unwrap_err();
            assert!(matches!(err, DecodeError::Protobuf(_)), "{name}: {err}");
            assert!(
                ExportLogsServiceRequest::decode(body).is_err(),
                "{name}: prost accepts what we refuse"
            );
        }
    }

    /// A logs request whose first body nests `levels` arrays of arrays.
    fn nested_body(levels: usize) -> ExportLogsServiceRequest {
        let mut value = string("leaf".into()).unwrap();
        for _ in 0..levels {
            value = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let record = LogRecord {
            body: Some(value),
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn depth_limit_matches_prost() {
        // Each array level is two messages (AnyValue, ArrayValue) below the
        // log record, which sits three levels below the request.
        let mut outcomes = Vec::new();
        for levels in 45..52 {
            let body = nested_body(levels).encode_to_vec();
            let ours = sanitize_utf8(Signal::Logs, &body);
            let prost = ExportLogsServiceRequest::decode(body.as_slice());
            match ours {
                Ok(clean) => {
                    assert!(prost.is_ok(), "{levels} levels: prost refuses");
                    assert_eq!(clean, body);
                }
                Err(DecodeError::TooDeep(100)) => {
                    assert!(prost.is_err(), "{levels} levels: prost accepts")
                }
                Err(err) => panic!("{levels} levels: {err}"),
            }
            outcomes.push(prost.is_ok());
        }
        assert!(
            outcomes.contains(&true) && outcomes.contains(&false),
            "{outcomes:?}"
        );
    }
}
