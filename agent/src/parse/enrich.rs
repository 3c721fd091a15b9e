//! Record enrichment: JSON bodies into attributes and severity from common
//! level fields or level words.

use periscope_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};

/// OTLP severity numbers (logs data model) with their text.
pub fn severity_of_word(w: &str) -> Option<(i32, &'static str)> {
    let s = match w.to_ascii_lowercase().as_str() {
        "trace" => (1, "TRACE"),
        "debug" | "dbg" => (5, "DEBUG"),
        "info" | "information" | "notice" => (9, "INFO"),
        "warn" | "warning" => (13, "WARN"),
        "error" | "err" => (17, "ERROR"),
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => (21, "FATAL"),
        _ => return None,
    };
    Some(s)
}

/// Severity from a level word in the first bytes of a body: only upper-case
/// words (`ERROR`, `[WARN]`, `level=info` style `INFO`), so prose like
/// "no error" does not count.
pub fn severity_from_text(body: &str) -> Option<(i32, &'static str)> {
    let head = match body.char_indices().nth(200) {
        Some((i, _)) => &body[..i],
        None => body,
    };
    for tok in head.split(|c: char| !c.is_ascii_alphabetic()) {
        if tok.len() >= 4
            && tok.len() <= 11
            && tok.bytes().all(|b| b.is_ascii_uppercase())
            && let Some(s) = severity_of_word(tok)
        {
            return Some(s);
        }
    }
    // `level=info` in logfmt.
    for key in ["level=", "lvl=", "severity="] {
        if let Some(i) = head.find(key) {
            let v: String = head[i + key.len()..]
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if let Some(s) = severity_of_word(&v) {
                return Some(s);
            }
        }
    }
    None
}

const LEVEL_KEYS: [&str; 5] = ["level", "severity", "lvl", "log.level", "loglevel"];
const MESSAGE_KEYS: [&str; 3] = ["message", "msg", "log"];

/// Result of parsing a JSON body.
#[derive(Debug, Default)]
pub struct JsonBody {
    /// The message field, if any, which becomes the body.
    pub message: Option<String>,
    /// The other top-level fields.
    pub attributes: Vec<KeyValue>,
    /// Severity from a level field.
    pub severity: Option<(i32, &'static str)>,
}

/// Parses a body that is a JSON object into attributes; `None` if it is not one.
pub fn parse_json_body(body: &str) -> Option<JsonBody> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let serde_json::Value::Object(map) = v else {
        return None;
    };
    let mut out = JsonBody::default();
    for (k, v) in map {
        if out.message.is_none()
            && MESSAGE_KEYS.contains(&k.as_str())
            && let serde_json::Value::String(s) = &v
        {
            out.message = Some(s.clone());
            continue;
        }
        if out.severity.is_none()
            && LEVEL_KEYS.contains(&k.as_str())
            && let serde_json::Value::String(s) = &v
        {
            out.severity = severity_of_word(s);
        }
        out.attributes.push(KeyValue {
            key: k,
            value: Some(json_to_any(v, 0)),
            ..Default::default()
        });
    }
    Some(out)
}

fn json_to_any(v: serde_json::Value, depth: usize) -> AnyValue {
    use periscope_proto::otlp::common::v1::{ArrayValue, KeyValueList};
    let value = match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(b) => Some(Value::BoolValue(b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::IntValue(i)),
            None => Some(Value::DoubleValue(n.as_f64().unwrap_or(0.0))),
        },
        serde_json::Value::String(s) => Some(Value::StringValue(s)),
        // Deep nesting is kept as text rather than recursed into.
        v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) if depth >= 8 => {
            Some(Value::StringValue(v.to_string()))
        }
        serde_json::Value::Array(a) => Some(Value::ArrayValue(ArrayValue {
            values: a.into_iter().map(|v| json_to_any(v, depth + 1)).collect(),
        })),
        serde_json::Value::Object(m) => Some(Value::KvlistValue(KeyValueList {
            values: m
                .into_iter()
                .map(|(k, v)| KeyValue {
                    key: k,
                    value: Some(json_to_any(v, depth + 1)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

/// An attribute with a value.
fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub fn kv_str(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

/// A boolean attribute.
pub fn kv_bool(key: &str, v: bool) -> KeyValue {
    kv(key, Value::BoolValue(v))
}

/// An integer attribute.
pub fn kv_int(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}
