//! Record enrichment: JSON bodies into attributes and severity from common
//! level fields or level words.

use periscope_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};

/// OTLP severity numbers (logs data model) with their text.
pub fn severity_of_word(w: &str) -> Option<(i32, &'static str)> {
    // The longest word is 11 bytes: lower-case on the stack.
    let mut buf = [0u8; 11];
    let lower = buf.get_mut(..w.len())?;
    lower.copy_from_slice(w.as_bytes());
    lower.make_ascii_lowercase();
    let s = match &*lower {
        b"trace" => (1, "TRACE"),
        b"debug" | b"dbg" => (5, "DEBUG"),
        b"info" | b"information" | b"notice" => (9, "INFO"),
        b"warn" | b"warning" => (13, "WARN"),
        b"error" | b"err" => (17, "ERROR"),
        b"fatal" | b"critical" | b"crit" | b"panic" | b"emerg" | b"alert" => (21, "FATAL"),
        _ => return None,
    };
    Some(s)
}

/// Severity from a level word in the first bytes of a body: only upper-case
/// words (`ERROR`, `[WARN]`, `level=info` style `INFO`), so prose like
/// "no error" does not count.
///
/// The first 200 characters are looked at: first for an upper-case level
/// word of 4 to 11 letters (words are runs of ASCII letters), then for the
/// first `level=`, `lvl=` and `severity=`, in that order, whose value (quotes
/// skipped) is a level word. This runs once per line: it jumps from one
/// upper-case letter to the next and from one `=` to the next, eight bytes
/// at a time, and allocates nothing.
pub fn severity_from_text(body: &str) -> Option<(i32, &'static str)> {
    let head = head_chars(body, 200).as_bytes();
    let mut from = 0;
    while let Some(u) = find(head, from, upper_mask) {
        // The word holding that letter (it starts at or after `from`).
        let start = u - head[from..u]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let end = u + head[u..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let word = &head[start..end];
        if (4..=11).contains(&word.len())
            && word.iter().all(u8::is_ascii_uppercase)
            && let Some(s) = std::str::from_utf8(word).ok().and_then(severity_of_word)
        {
            return Some(s);
        }
        from = end;
    }
    // `level=info` in logfmt: the first occurrence of each key.
    const KEYS: [&[u8]; 3] = [b"level=", b"lvl=", b"severity="];
    let mut first: [Option<usize>; 3] = [None; 3];
    let mut from = 0;
    while let Some(eq) = find(head, from, eq_mask) {
        for (k, key) in KEYS.iter().enumerate() {
            if first[k].is_none() && head[..=eq].ends_with(key) {
                first[k] = Some(eq + 1);
            }
        }
        from = eq + 1;
    }
    for value_at in first.into_iter().flatten() {
        let rest = &head[value_at..];
        let rest = &rest[rest.iter().take_while(|b| **b == b'"').count()..];
        let n = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        if let Some(s) = std::str::from_utf8(&rest[..n])
            .ok()
            .and_then(severity_of_word)
        {
            return Some(s);
        }
    }
    None
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// Bit 7 of each byte of `w` that is an ASCII upper-case letter. No carry
/// crosses a byte, so every flagged byte is a real match.
fn upper_mask(w: u64) -> u64 {
    let low7 = w & (0x7f * ONES);
    let at_least_a = low7 + 0x3f * ONES; // bit 7 set iff the byte >= b'A'
    let above_z = low7 + 0x25 * ONES; // bit 7 set iff the byte > b'Z'
    at_least_a & !above_z & !w & (0x80 * ONES)
}

/// Bit 7 of each byte of `w` that is `=`.
fn eq_mask(w: u64) -> u64 {
    let x = w ^ (u64::from(b'=') * ONES);
    // Bit 7 clear exactly for the zero bytes of x.
    !(((x & (0x7f * ONES)) + 0x7f * ONES) | x) & (0x80 * ONES)
}

/// The first index at or after `from` whose byte `mask` flags, eight bytes
/// at a time.
fn find(h: &[u8], from: usize, mask: fn(u64) -> u64) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = h.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let m = mask(u64::from_le_bytes(w));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let mut w = [0u8; 8];
    let tail = h.get(i..).unwrap_or_default();
    w[..tail.len()].copy_from_slice(tail);
    // Padding zeros are neither letters nor `=`.
    let m = mask(u64::from_le_bytes(w));
    (m != 0).then(|| i + (m.trailing_zeros() / 8) as usize)
}

/// The first `n` characters of `s`.
fn head_chars(s: &str, n: usize) -> &str {
    let b = s.as_bytes();
    if b.len() <= n {
        return s;
    }
    if b[..n].is_ascii() {
        return &s[..n];
    }
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
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
