//! Record-level validation: bad records are dropped and counted so the rest of
//! the request is stored, answered with OTLP partial success.

use crate::ExportRequest;
use crate::otlp::common::v1::{AnyValue, KeyValue, any_value};
use crate::otlp::metrics::v1::{Metric, metric};

/// Bounds a record must respect to be stored.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Deepest allowed nesting of an `AnyValue` (a scalar is depth 1).
    pub max_depth: usize,
    /// Records timestamped before this (Unix ns) are rejected, e.g. older than retention.
    pub min_timestamp_ns: i64,
    /// Records timestamped after this (Unix ns) are rejected, e.g. far in the future.
    pub max_timestamp_ns: i64,
}

/// The outcome of validating a request.
#[derive(Debug)]
pub struct Validated {
    /// The request with rejected records removed.
    pub request: ExportRequest,
    /// How many records (log records, spans or data points) were removed.
    pub rejected: usize,
    /// Why, for the partial-success `error_message`; empty when nothing was rejected.
    pub error_message: String,
}

/// Collects reasons for rejections, keeping the message short.
#[derive(Default)]
struct Rejections {
    count: usize,
    first: Vec<String>,
}

impl Rejections {
    fn add(&mut self, n: usize, what: impl FnOnce() -> String) {
        self.count += n;
        if self.first.len() < 3 {
            self.first.push(what());
        }
    }

    fn message(&self, noun: &str) -> String {
        if self.count == 0 {
            return String::new();
        }
        let more = if self.count > self.first.len() {
            "; ..."
        } else {
            ""
        };
        format!(
            "{} {noun} rejected: {}{more}",
            self.count,
            self.first.join("; ")
        )
    }
}

/// The depth of an `AnyValue`, counting a scalar as 1.
fn depth(v: &AnyValue) -> usize {
    // Walks with an explicit stack: input depth is attacker-controlled.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match &v.value {
            Some(any_value::Value::ArrayValue(a)) => {
                stack.extend(a.values.iter().map(|c| (c, d + 1)))
            }
            Some(any_value::Value::KvlistValue(kv)) => stack.extend(
                kv.values
                    .iter()
                    .filter_map(|c| c.value.as_ref())
                    .map(|c| (c, d + 1)),
            ),
            _ => {}
        }
    }
    max
}

fn attrs_too_deep(attrs: &[KeyValue], limits: &Limits) -> Option<String> {
    attrs.iter().find_map(|kv| {
        let d = kv.value.as_ref().map(depth).unwrap_or(0);
        (d > limits.max_depth).then(|| {
            format!(
                "attribute {:?} nests {d} levels, more than {}",
                kv.key, limits.max_depth
            )
        })
    })
}

fn check_id(name: &str, id: &[u8], len: usize, required: bool) -> Option<String> {
    if id.is_empty() && !required {
        return None;
    }
    (id.len() != len).then(|| format!("{name} has {} bytes, expected {len}", id.len()))
}

/// The OTLP spec calls an all-zero trace or span id invalid.
fn all_zero(name: &str, id: &[u8]) -> Option<String> {
    id.iter()
        .all(|b| *b == 0)
        .then(|| format!("{name} is all zeros"))
}

fn check_time(name: &str, ns: u64, limits: &Limits) -> Option<String> {
    if ns == 0 {
        return None;
    }
    let t = i64::try_from(ns).unwrap_or(i64::MAX);
    if t < limits.min_timestamp_ns {
        Some(format!("{name} {ns} is older than the retention period"))
    } else if t > limits.max_timestamp_ns {
        Some(format!("{name} {ns} is too far in the future"))
    } else {
        None
    }
}

/// Number of data points in a metric.
pub(crate) fn data_point_count(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// The attribute lists and timestamps of a metric's data points.
fn metric_problem(m: &Metric, limits: &Limits) -> Option<String> {
    let points: Vec<(&[KeyValue], u64)> = match &m.data {
        Some(metric::Data::Gauge(g)) => g
            .data_points
            .iter()
            .map(|p| (&p.attributes[..], p.time_unix_nano))
            .collect(),
        Some(metric::Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| (&p.attributes[..], p.time_unix_nano))
            .collect(),
        Some(metric::Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| (&p.attributes[..], p.time_unix_nano))
            .collect(),
        Some(metric::Data::ExponentialHistogram(h)) => h
            .data_points
            .iter()
            .map(|p| (&p.attributes[..], p.time_unix_nano))
            .collect(),
        Some(metric::Data::Summary(s)) => s
            .data_points
            .iter()
            .map(|p| (&p.attributes[..], p.time_unix_nano))
            .collect(),
        None => Vec::new(),
    };
    points.into_iter().find_map(|(attrs, t)| {
        attrs_too_deep(attrs, limits).or_else(|| check_time("data point time_unix_nano", t, limits))
    })
}

/// Removes the records that break [`Limits`] or carry malformed ids.
pub fn validate(request: ExportRequest, limits: &Limits) -> Validated {
    let mut rej = Rejections::default();
    let (request, noun) = match request {
        ExportRequest::Logs(mut req) => {
            for rl in &mut req.resource_logs {
                for sl in &mut rl.scope_logs {
                    sl.log_records.retain(|r| {
                        let problem = check_id("trace_id", &r.trace_id, 16, false)
                            .or_else(|| check_id("span_id", &r.span_id, 8, false))
                            .or_else(|| check_time("time_unix_nano", r.time_unix_nano, limits))
                            .or_else(|| {
                                let d = r.body.as_ref().map(depth).unwrap_or(0);
                                (d > limits.max_depth).then(|| {
                                    format!("body nests {d} levels, more than {}", limits.max_depth)
                                })
                            })
                            .or_else(|| attrs_too_deep(&r.attributes, limits));
                        match problem {
                            Some(p) => {
                                rej.add(1, || p);
                                false
                            }
                            None => true,
                        }
                    });
                }
            }
            (ExportRequest::Logs(req), "log records")
        }
        ExportRequest::Traces(mut req) => {
            for rs in &mut req.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(|s| {
                        let problem = check_id("trace_id", &s.trace_id, 16, true)
                            .or_else(|| check_id("span_id", &s.span_id, 8, true))
                            .or_else(|| {
                                all_zero("trace_id", &s.trace_id)
                                    .or_else(|| all_zero("span_id", &s.span_id))
                            })
                            .or_else(|| {
                                (s.start_time_unix_nano == 0)
                                    .then(|| "start_time_unix_nano is missing".to_owned())
                            })
                            .or_else(|| {
                                (s.end_time_unix_nano < s.start_time_unix_nano).then(|| {
                                    format!(
                                        "end_time_unix_nano {} is before start_time_unix_nano {}",
                                        s.end_time_unix_nano, s.start_time_unix_nano
                                    )
                                })
                            })
                            .or_else(|| check_id("parent_span_id", &s.parent_span_id, 8, false))
                            .or_else(|| {
                                check_time("start_time_unix_nano", s.start_time_unix_nano, limits)
                            })
                            .or_else(|| attrs_too_deep(&s.attributes, limits))
                            .or_else(|| {
                                s.events
                                    .iter()
                                    .find_map(|e| attrs_too_deep(&e.attributes, limits))
                            })
                            .or_else(|| {
                                s.links.iter().find_map(|l| {
                                    check_id("link trace_id", &l.trace_id, 16, true)
                                        .or_else(|| check_id("link span_id", &l.span_id, 8, true))
                                        .or_else(|| attrs_too_deep(&l.attributes, limits))
                                })
                            });
                        match problem {
                            Some(p) => {
                                rej.add(1, || format!("span {:?}: {p}", s.name));
                                false
                            }
                            None => true,
                        }
                    });
                }
            }
            (ExportRequest::Traces(req), "spans")
        }
        ExportRequest::Metrics(mut req) => {
            for rm in &mut req.resource_metrics {
                for sm in &mut rm.scope_metrics {
                    sm.metrics.retain(|m| match metric_problem(m, limits) {
                        Some(p) => {
                            rej.add(data_point_count(m), || format!("metric {:?}: {p}", m.name));
                            false
                        }
                        None => true,
                    });
                }
            }
            (ExportRequest::Metrics(req), "data points")
        }
    };
    Validated {
        request,
        rejected: rej.count,
        error_message: rej.message(noun),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::ExportLogsServiceRequest;
    use crate::otlp::common::v1::KeyValueList;
    use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    const LIMITS: Limits = Limits {
        max_depth: 32,
        min_timestamp_ns: 1_000,
        max_timestamp_ns: 1_000_000,
    };

    fn nested(levels: usize) -> AnyValue {
        let mut v = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 1..levels {
            v = AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(v),
                        ..Default::default()
                    }],
                })),
            };
        }
        v
    }

    #[test]
    fn rejects_bad_log_records_and_keeps_the_rest() {
        let ok = LogRecord {
            time_unix_nano: 5_000,
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let rows: Vec<(LogRecord, bool)> = vec![
            (ok.clone(), true),
            (LogRecord::default(), true),
            (
                LogRecord {
                    trace_id: vec![1; 17],
                    ..ok.clone()
                },
                false,
            ),
            (
                LogRecord {
                    span_id: vec![1; 7],
                    ..ok.clone()
                },
                false,
            ),
            (
                LogRecord {
                    time_unix_nano: 10,
                    ..ok.clone()
                },
                false,
            ),
            (
                LogRecord {
                    time_unix_nano: 10_000_000,
                    ..ok.clone()
                },
                false,
            ),
            (
                LogRecord {
                    body: Some(nested(32)),
                    ..ok.clone()
                },
                true,
            ),
            (
                LogRecord {
                    body: Some(nested(33)),
                    ..ok.clone()
                },
                false,
            ),
            (
                LogRecord {
                    attributes: vec![KeyValue {
                        key: "deep".into(),
                        value: Some(nested(100)),
                        ..Default::default()
                    }],
                    ..ok.clone()
                },
                false,
            ),
        ];
        let expected_kept = rows.iter().filter(|r| r.1).count();
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: rows.into_iter().map(|r| r.0).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let v = validate(ExportRequest::Logs(req), &LIMITS);
        assert_eq!(v.request.record_count(), expected_kept);
        assert_eq!(v.rejected, 6);
        assert!(
            v.error_message
                .starts_with("6 log records rejected: trace_id has 17 bytes, expected 16"),
            "{}",
            v.error_message
        );
    }

    #[test]
    fn depth_counts_scalar_as_one() {
        assert_eq!(depth(&nested(1)), 1);
        assert_eq!(depth(&nested(100)), 100);
    }
}
