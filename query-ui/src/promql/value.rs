//! Query results and their JSON form, as Prometheus' HTTP API
//! (`/api/v1/query`, `/api/v1/query_range`) writes the `data` object.

use periscope_proto::{Labels, NativeHistogram, SampleValue};
use serde_json::{Map, Value, json};

/// The result of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryValue {
    /// Evaluation time (ms) and value.
    Scalar(i64, f64),
    /// Evaluation time (ms) and value.
    String(i64, String),
    /// Labels, evaluation time (ms) and value of each series.
    Vector(Vec<(Labels, i64, SampleValue)>),
    /// Labels and points (ms, value) of each series.
    Matrix(Vec<(Labels, Vec<(i64, SampleValue)>)>),
}

impl QueryValue {
    /// The `data` object of a Prometheus API response:
    /// `{"resultType": ..., "result": ...}`.
    pub fn to_prometheus_json(&self) -> Value {
        match self {
            QueryValue::Scalar(t, v) => {
                json!({"resultType": "scalar", "result": [ts_json(*t), float_string(*v)]})
            }
            QueryValue::String(t, s) => {
                json!({"resultType": "string", "result": [ts_json(*t), s]})
            }
            QueryValue::Vector(samples) => {
                let result: Vec<Value> = samples
                    .iter()
                    .map(|(labels, t, v)| {
                        let mut obj = Map::new();
                        obj.insert("metric".into(), labels_json(labels));
                        match v {
                            SampleValue::Float(f) => {
                                obj.insert("value".into(), json!([ts_json(*t), float_string(*f)]));
                            }
                            SampleValue::Histogram(h) => {
                                obj.insert(
                                    "histogram".into(),
                                    json!([ts_json(*t), histogram_json(h)]),
                                );
                            }
                        }
                        Value::Object(obj)
                    })
                    .collect();
                json!({"resultType": "vector", "result": result})
            }
            QueryValue::Matrix(series) => {
                let result: Vec<Value> = series
                    .iter()
                    .map(|(labels, points)| {
                        let mut obj = Map::new();
                        obj.insert("metric".into(), labels_json(labels));
                        let mut floats = Vec::new();
                        let mut hists = Vec::new();
                        for (t, v) in points {
                            match v {
                                SampleValue::Float(f) => {
                                    floats.push(json!([ts_json(*t), float_string(*f)]))
                                }
                                SampleValue::Histogram(h) => {
                                    hists.push(json!([ts_json(*t), histogram_json(h)]))
                                }
                            }
                        }
                        if !floats.is_empty() {
                            obj.insert("values".into(), Value::Array(floats));
                        }
                        if !hists.is_empty() {
                            obj.insert("histograms".into(), Value::Array(hists));
                        }
                        Value::Object(obj)
                    })
                    .collect();
                json!({"resultType": "matrix", "result": result})
            }
        }
    }
}

/// Timestamps are float seconds; whole seconds are written as integers, as
/// Prometheus does.
fn ts_json(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// Values are strings in Go's shortest `'f'` format, with `NaN`, `+Inf`, `-Inf`.
pub(crate) fn float_string(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn labels_json(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Boundary rules of Prometheus' histogram JSON: 0 open left, 1 open right,
/// 2 open both, 3 closed both.
fn histogram_json(h: &NativeHistogram) -> Value {
    let mut buckets = Vec::new();
    let mut neg = bucket_bounds(h.schema, &h.negative_spans, &h.negative_buckets);
    neg.reverse();
    for (lo, hi, c) in neg {
        if c != 0.0 {
            buckets.push(json!([
                1,
                float_string(-hi),
                float_string(-lo),
                float_string(c)
            ]));
        }
    }
    if h.zero_count != 0.0 {
        let z = h.zero_threshold;
        buckets.push(json!([
            3,
            float_string(-z),
            float_string(z),
            float_string(h.zero_count)
        ]));
    }
    for (lo, hi, c) in bucket_bounds(h.schema, &h.positive_spans, &h.positive_buckets) {
        if c != 0.0 {
            buckets.push(json!([
                0,
                float_string(lo),
                float_string(hi),
                float_string(c)
            ]));
        }
    }
    let mut obj = Map::new();
    obj.insert("count".into(), json!(float_string(h.count)));
    obj.insert("sum".into(), json!(float_string(h.sum)));
    if !buckets.is_empty() {
        obj.insert("buckets".into(), Value::Array(buckets));
    }
    Value::Object(obj)
}

/// The upper bound of bucket `index` at `schema`: `2^(index * 2^-schema)`.
pub(crate) fn bucket_upper(schema: i32, index: i32) -> f64 {
    if schema <= 0 {
        2f64.powi(index << (-schema))
    } else {
        2f64.powf(f64::from(index) / f64::from(1u32 << schema))
    }
}

/// `(index, count)` of the buckets of one sign, in index order, from
/// their spans (the first offset absolute, the others relative to the
/// previous span's end).
pub(crate) fn span_buckets<'a>(
    spans: &'a [(i32, u32)],
    counts: &'a [f64],
) -> impl Iterator<Item = (i32, f64)> + 'a {
    let mut index = 0i32;
    spans
        .iter()
        .enumerate()
        .flat_map(move |(i, (offset, len))| {
            index = if i == 0 { *offset } else { index + offset };
            let first = index;
            index += *len as i32;
            first..index
        })
        .zip(counts.iter().copied())
}

/// `(lower, upper, count)` of the buckets of one sign, in index order,
/// bounds taken as positive magnitudes.
pub(crate) fn bucket_bounds(
    schema: i32,
    spans: &[(i32, u32)],
    counts: &[f64],
) -> Vec<(f64, f64, f64)> {
    span_buckets(spans, counts)
        .map(|(index, c)| {
            (
                bucket_upper(schema, index - 1),
                bucket_upper(schema, index),
                c,
            )
        })
        .collect()
}
