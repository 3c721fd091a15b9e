//! Record-level validation: bad records are dropped and counted so the rest of
//! the request is stored, answered with OTLP partial success.

use crate::ExportRequest;
use crate::otlp::common::v1::{AnyValue, KeyValue, any_value};
use crate::otlp::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, SummaryDataPoint, metric,
};

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

/// What makes a whole metric unusable: it has no name, or no data points
/// (counted as one rejected data point, so the client hears about it).
fn metric_problem(m: &Metric) -> Option<String> {
    if m.name.is_empty() {
        return Some("metric has no name".to_owned());
    }
    (data_point_count(m) == 0).then(|| format!("metric {:?} has no data points", m.name))
}

/// Depth of attributes and the timestamp, checked on every data point.
fn point_problem(attrs: &[KeyValue], time_ns: u64, limits: &Limits) -> Option<String> {
    attrs_too_deep(attrs, limits)
        .or_else(|| check_time("data point time_unix_nano", time_ns, limits))
}

/// A classic histogram needs one more bucket count than bounds (or neither,
/// for a point with only a count and sum), finite strictly increasing
/// bounds, and buckets that do not add up to more than its count.
fn histogram_problem(p: &HistogramDataPoint) -> Option<String> {
    let (counts, bounds) = (p.bucket_counts.len(), p.explicit_bounds.len());
    if !(counts == bounds + 1 || counts == 0 && bounds == 0) {
        return Some(format!(
            "histogram has {counts} bucket counts for {bounds} explicit bounds, expected {}",
            bounds + 1
        ));
    }
    if p.explicit_bounds.iter().any(|b| !b.is_finite())
        || p.explicit_bounds.windows(2).any(|w| w[0] >= w[1])
    {
        return Some("histogram explicit bounds are not finite and strictly increasing".to_owned());
    }
    let total = p
        .bucket_counts
        .iter()
        .try_fold(0u64, |acc, c| acc.checked_add(*c));
    match total {
        Some(total) if total <= p.count || counts == 0 => None,
        _ => Some(format!(
            "histogram buckets hold more than its count {}",
            p.count
        )),
    }
}

/// OTLP counts are unsigned, so "negative" shows up as buckets that hold
/// more than the count. Scales coarser than Prometheus' -4 cannot be stored.
fn exponential_problem(p: &ExponentialHistogramDataPoint) -> Option<String> {
    if p.scale < -4 {
        return Some(format!(
            "exponential histogram scale {} is coarser than -4",
            p.scale
        ));
    }
    let total = [p.positive.as_ref(), p.negative.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|b| &b.bucket_counts)
        .try_fold(p.zero_count, |acc, c| acc.checked_add(*c));
    match total {
        Some(total) if total <= p.count => None,
        _ => Some(format!(
            "exponential histogram buckets and zero_count hold more than its count {}",
            p.count
        )),
    }
}

/// Quantiles are in [0, 1]; the count, unsigned in OTLP, cannot be negative.
fn summary_problem(p: &SummaryDataPoint) -> Option<String> {
    p.quantile_values
        .iter()
        .find(|q| !(0.0..=1.0).contains(&q.quantile))
        .map(|q| format!("summary quantile {} is outside [0, 1]", q.quantile))
}

/// Removes the data points of one metric that have a problem.
fn retain_points<P>(
    points: &mut Vec<P>,
    name: &str,
    rej: &mut Rejections,
    problem: impl Fn(&P) -> Option<String>,
) {
    points.retain(|p| match problem(p) {
        Some(why) => {
            rej.add(1, || format!("metric {name:?}: {why}"));
            false
        }
        None => true,
    });
}

/// Removes a metric's bad data points, counting each; NaN and infinite
/// values are values, not problems. Returns whether any point is left.
fn retain_metric(m: &mut Metric, limits: &Limits, rej: &mut Rejections) -> bool {
    if let Some(why) = metric_problem(m) {
        rej.add(data_point_count(m).max(1), || why);
        return false;
    }
    let name = m.name.clone();
    match &mut m.data {
        Some(metric::Data::Gauge(g)) => retain_points(&mut g.data_points, &name, rej, |p| {
            point_problem(&p.attributes, p.time_unix_nano, limits)
        }),
        Some(metric::Data::Sum(s)) => retain_points(&mut s.data_points, &name, rej, |p| {
            point_problem(&p.attributes, p.time_unix_nano, limits)
        }),
        Some(metric::Data::Histogram(h)) => retain_points(&mut h.data_points, &name, rej, |p| {
            point_problem(&p.attributes, p.time_unix_nano, limits).or_else(|| histogram_problem(p))
        }),
        Some(metric::Data::ExponentialHistogram(h)) => {
            retain_points(&mut h.data_points, &name, rej, |p| {
                point_problem(&p.attributes, p.time_unix_nano, limits)
                    .or_else(|| exponential_problem(p))
            })
        }
        Some(metric::Data::Summary(s)) => retain_points(&mut s.data_points, &name, rej, |p| {
            point_problem(&p.attributes, p.time_unix_nano, limits).or_else(|| summary_problem(p))
        }),
        None => {}
    }
    data_point_count(m) > 0
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
                    sm.metrics
                        .retain_mut(|m| retain_metric(m, limits, &mut rej));
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

    mod metrics {
        use super::*;
        use crate::otlp::ExportMetricsServiceRequest;
        use crate::otlp::metrics::v1::{
            ExponentialHistogram, Gauge, Histogram, NumberDataPoint, ResourceMetrics, ScopeMetrics,
            Summary, exponential_histogram_data_point::Buckets, number_data_point,
            summary_data_point::ValueAtQuantile,
        };

        fn hist(bounds: Vec<f64>, counts: Vec<u64>, count: u64) -> HistogramDataPoint {
            HistogramDataPoint {
                time_unix_nano: 5_000,
                explicit_bounds: bounds,
                bucket_counts: counts,
                count,
                ..Default::default()
            }
        }

        fn exp(
            scale: i32,
            zero_count: u64,
            counts: Vec<u64>,
            count: u64,
        ) -> ExponentialHistogramDataPoint {
            ExponentialHistogramDataPoint {
                time_unix_nano: 5_000,
                scale,
                zero_count,
                count,
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: counts,
                }),
                ..Default::default()
            }
        }

        fn summary(quantiles: &[f64]) -> SummaryDataPoint {
            SummaryDataPoint {
                time_unix_nano: 5_000,
                count: 3,
                quantile_values: quantiles
                    .iter()
                    .map(|q| ValueAtQuantile {
                        quantile: *q,
                        value: 1.0,
                    })
                    .collect(),
                ..Default::default()
            }
        }

        fn gauge(values: &[(f64, u64)]) -> metric::Data {
            metric::Data::Gauge(Gauge {
                data_points: values
                    .iter()
                    .map(|(v, t)| NumberDataPoint {
                        time_unix_nano: *t,
                        value: Some(number_data_point::Value::AsDouble(*v)),
                        ..Default::default()
                    })
                    .collect(),
            })
        }

        fn run(data: Option<metric::Data>) -> (usize, usize, String) {
            let req = ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![Metric {
                            name: "m".into(),
                            data,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let v = validate(ExportRequest::Metrics(req), &LIMITS);
            (v.request.record_count(), v.rejected, v.error_message)
        }

        #[test]
        fn rejects_malformed_points_and_keeps_the_rest() {
            let histogram = |points| {
                Some(metric::Data::Histogram(Histogram {
                    data_points: points,
                    ..Default::default()
                }))
            };
            let exponential = |points| {
                Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: points,
                    ..Default::default()
                }))
            };
            let summaries = |points| {
                Some(metric::Data::Summary(Summary {
                    data_points: points,
                }))
            };
            // (case, metric data, kept, rejected, message start)
            let rows: Vec<(&str, Option<metric::Data>, usize, usize, &str)> = vec![
                (
                    "non-finite values are values",
                    Some(gauge(&[
                        (f64::NAN, 5_000),
                        (f64::INFINITY, 5_000),
                        (f64::NEG_INFINITY, 5_000),
                    ])),
                    3,
                    0,
                    "",
                ),
                (
                    "timestamps are checked per point",
                    Some(gauge(&[(1.0, 5_000), (1.0, 10)])),
                    1,
                    1,
                    "1 data points rejected: metric \"m\": data point time_unix_nano 10 is older",
                ),
                (
                    "no data",
                    None,
                    0,
                    1,
                    "1 data points rejected: metric \"m\" has no data points",
                ),
                (
                    "no points",
                    Some(gauge(&[])),
                    0,
                    1,
                    "1 data points rejected: metric \"m\" has no data points",
                ),
                (
                    "good histograms",
                    histogram(vec![
                        hist(vec![1.0, 2.0], vec![1, 2, 3], 6),
                        hist(vec![], vec![], 4),
                    ]),
                    2,
                    0,
                    "",
                ),
                (
                    "bucket count mismatch",
                    histogram(vec![
                        hist(vec![1.0, 2.0], vec![1, 2], 3),
                        hist(vec![1.0], vec![1, 1], 2),
                    ]),
                    1,
                    1,
                    "1 data points rejected: metric \"m\": histogram has 2 bucket counts for 2 explicit bounds, expected 3",
                ),
                (
                    "bounds not increasing",
                    histogram(vec![
                        hist(vec![2.0, 1.0], vec![0, 0, 0], 0),
                        hist(vec![1.0, 1.0], vec![0, 0, 0], 0),
                    ]),
                    0,
                    2,
                    "2 data points rejected: metric \"m\": histogram explicit bounds are not finite",
                ),
                (
                    "bounds not finite",
                    histogram(vec![
                        hist(vec![1.0, f64::NAN], vec![0, 0, 0], 0),
                        hist(vec![f64::INFINITY], vec![0, 0], 0),
                    ]),
                    0,
                    2,
                    "2 data points rejected",
                ),
                (
                    "buckets over the count",
                    histogram(vec![hist(vec![1.0], vec![2, 2], 3)]),
                    0,
                    1,
                    "1 data points rejected: metric \"m\": histogram buckets hold more than its count 3",
                ),
                (
                    "good exponential",
                    exponential(vec![exp(20, 1, vec![1, 2], 4), exp(-4, 0, vec![], 0)]),
                    2,
                    0,
                    "",
                ),
                (
                    "exponential over the count",
                    exponential(vec![exp(0, 2, vec![1, 2], 4), exp(0, 5, vec![], 4)]),
                    0,
                    2,
                    "2 data points rejected: metric \"m\": exponential histogram buckets and zero_count hold more than its count 4",
                ),
                (
                    "exponential too coarse",
                    exponential(vec![exp(-5, 0, vec![1], 1)]),
                    0,
                    1,
                    "1 data points rejected: metric \"m\": exponential histogram scale -5 is coarser than -4",
                ),
                (
                    "good summary",
                    summaries(vec![summary(&[0.0, 0.5, 1.0]), summary(&[])]),
                    2,
                    0,
                    "",
                ),
                (
                    "quantile outside [0, 1]",
                    summaries(vec![
                        summary(&[0.5, 1.5]),
                        summary(&[-0.1]),
                        summary(&[f64::NAN]),
                    ]),
                    0,
                    3,
                    "3 data points rejected: metric \"m\": summary quantile 1.5 is outside [0, 1]",
                ),
            ];
            for (case, data, kept, rejected, message) in rows {
                let (k, r, m) = run(data);
                assert_eq!((k, r), (kept, rejected), "{case}: {m}");
                assert!(
                    m.starts_with(message) && (message.is_empty() == m.is_empty()),
                    "{case}: {m}"
                );
            }
        }

        #[test]
        fn rejects_a_metric_without_a_name() {
            let req = ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![Metric {
                            data: Some(gauge(&[(1.0, 5_000), (2.0, 5_000)])),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let v = validate(ExportRequest::Metrics(req), &LIMITS);
            assert_eq!(v.rejected, 2);
            assert_eq!(
                v.error_message,
                "2 data points rejected: metric has no name; ..."
            );
        }
    }

    #[test]
    fn depth_counts_scalar_as_one() {
        assert_eq!(depth(&nested(1)), 1);
        assert_eq!(depth(&nested(100)), 100);
    }
}
