//! Naming rules of the OpenTelemetry "Prometheus and OpenMetrics
//! compatibility" spec: metric and label names restricted to Prometheus'
//! character set, UCUM units turned into name suffixes, and numbers written
//! the way Prometheus writes `le` and `quantile` label values.

use crate::otlp::common::v1::{AnyValue, any_value};

/// The kind of a metric family once converted, which decides its suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FamilyKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl FamilyKind {
    /// The metadata `kind`, as Prometheus spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FamilyKind::Counter => "counter",
            FamilyKind::Gauge => "gauge",
            FamilyKind::Histogram => "histogram",
            FamilyKind::Summary => "summary",
        }
    }
}

/// Makes a metric name match `[a-zA-Z_:][a-zA-Z0-9_:]*`: any other character
/// becomes `_`, runs of `_` collapse into one (as the spec asks), and a
/// leading digit gets a `_` in front.
pub(crate) fn sanitize_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Makes an attribute key a label name matching `[a-zA-Z_][a-zA-Z0-9_]*`.
/// A leading digit gets `key_` in front. Names starting with `__` are
/// reserved for Prometheus' own labels (`__name__`), so they get `key` in
/// front: an attribute can never replace the metric name.
pub(crate) fn sanitize_label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

/// The Prometheus word for a UCUM unit used on its own.
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        // Time.
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        // Bytes.
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        // SI.
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        // Others.
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The Prometheus word for a UCUM unit after `/`, in the singular.
fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// A unit with no known word keeps its letters and digits.
fn sanitize_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Removes `{...}` annotations, which UCUM defines as having no unit meaning.
fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The name suffix for a UCUM unit, without the leading `_`: `s` gives
/// `seconds`, `By/s` gives `bytes_per_second`, `{request}` gives nothing and
/// `1` gives `ratio` for gauges only (a dimensionless counter counts things).
pub(crate) fn unit_suffix(unit: &str, kind: FamilyKind) -> String {
    let unit = strip_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim()).filter(|p| !p.is_empty())),
        None => (unit.trim(), None),
    };
    let main = match main {
        "" => String::new(),
        "1" if per.is_none() && kind == FamilyKind::Gauge => "ratio".to_owned(),
        "1" => String::new(),
        m => unit_word(m).map_or_else(|| sanitize_unit(m), str::to_owned),
    };
    let per = per
        .map(|p| {
            per_unit_word(p)
                .or_else(|| unit_word(p))
                .map_or_else(|| sanitize_unit(p), str::to_owned)
        })
        .unwrap_or_default();
    match (main.is_empty(), per.is_empty()) {
        (_, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

/// The family name: sanitised, with the unit suffix added unless the name
/// already ends with it. Counters get `_total` on their series, not here
/// (an existing `_total` is moved after the unit).
pub(crate) fn family_name(name: &str, unit: &str, kind: FamilyKind) -> (String, String) {
    let mut family = sanitize_metric_name(name);
    if kind == FamilyKind::Counter
        && let Some(stripped) = family.strip_suffix("_total")
    {
        family.truncate(stripped.len());
    }
    let suffix = unit_suffix(unit, kind);
    if !suffix.is_empty() && family != suffix && !family.ends_with(&format!("_{suffix}")) {
        if !family.is_empty() && !family.ends_with('_') {
            family.push('_');
        }
        family.push_str(&suffix);
    }
    (family, suffix)
}

/// Writes a float the way Prometheus writes `le` and `quantile` values (Go's
/// shortest `%g`): `0.25`, `100000`, `1e+06`, `1e-05`, `+Inf`, `NaN`.
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // `{:e}` gives the shortest digits that round-trip, like Go.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    // Go switches to the exponent form below 1e-4 and from 1e6 on.
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = usize::try_from(exp).unwrap_or(0) + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// An attribute value as a label value: strings as they are, numbers and
/// booleans written out, bytes in hex, arrays and maps as JSON.
pub(crate) fn attribute_value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_float(*d),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(_) => v
            .map(crate::any_value_to_json)
            .unwrap_or_default()
            .to_string(),
    }
}
