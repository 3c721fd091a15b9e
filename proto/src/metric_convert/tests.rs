//! Tests of the OTLP to Prometheus conversion, one per rule.

use super::names::{FamilyKind, family_name, format_float, sanitize_label_name};
use super::*;
use crate::otlp::common::v1::{AnyValue, KeyValue, any_value};
use crate::otlp::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    exponential_histogram_data_point::Buckets, summary_data_point::ValueAtQuantile,
};
use crate::{NativeHistogram, is_stale_nan, label};

const MS: u64 = 1_000_000;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} help"),
        data: Some(data),
        ..Default::default()
    }
}

fn num(t_ms: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t_ms * MS,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(
    monotonic: bool,
    temporality: AggregationTemporality,
    points: Vec<NumberDataPoint>,
) -> metric::Data {
    metric::Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: temporality as i32,
        is_monotonic: monotonic,
    })
}

fn gauge(points: Vec<NumberDataPoint>) -> metric::Data {
    metric::Data::Gauge(Gauge {
        data_points: points,
    })
}

/// Converts without the series cache, and checks that the cached
/// conversion gives the same samples, both when it learns the series and
/// when it knows them.
fn convert(req: &ExportMetricsServiceRequest) -> PromBatch {
    let plain = otlp_to_prometheus(req, &mut DeltaToCumulative::default());
    let mut cache = SeriesCache::default();
    for round in 0..2 {
        let cached = otlp_to_prometheus_cached(req, &mut DeltaToCumulative::default(), &mut cache);
        assert_eq!(cached.metadata, plain.metadata);
        assert_eq!(
            comparable(cached.into_samples()),
            comparable(plain.samples.clone()),
            "cached conversion, round {round}"
        );
    }
    plain
}

/// Samples sorted, values by their bits (NaN equals itself).
fn comparable(samples: Vec<PromSample>) -> Vec<(Labels, i64, String)> {
    let mut out: Vec<_> = samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                SampleValue::Float(f) => format!("{:x}", f.to_bits()),
                SampleValue::Histogram(h) => format!("{h:?}"),
            };
            (s.labels, s.timestamp_ms, v)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_series_cache_numbers_each_label_set_once() {
    let attrs = |a: &str, b: &str| vec![kv("k.a", a), kv("k.b", b)];
    let req = |t: u64| {
        request(
            vec![kv("service.name", "svc")],
            vec![metric(
                "g",
                "",
                gauge(vec![
                    num(t, 1.0, attrs("x", "y")),
                    num(t, 2.0, attrs("x", "z")),
                    // Same labels as the first, attributes in another order.
                    num(t + 1, 3.0, vec![kv("k.b", "y"), kv("k.a", "x")]),
                    // An array attribute: not cached, still converted.
                    num(
                        t,
                        4.0,
                        vec![KeyValue {
                            key: "list".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::ArrayValue(Default::default())),
                            }),
                            ..Default::default()
                        }],
                    ),
                ]),
            )],
        )
    };
    let mut cache = SeriesCache::default();
    let mut deltas = DeltaToCumulative::default();
    let first = otlp_to_prometheus_cached(&req(1_000), &mut deltas, &mut cache);
    let second = otlp_to_prometheus_cached(&req(2_000), &mut deltas, &mut cache);
    assert_eq!(first.ref_samples.len(), 4);
    assert_eq!(cache.len(), 3);
    let ids = |b: &PromBatch| {
        b.ref_samples
            .iter()
            .map(|r| r.series.id)
            .collect::<Vec<_>>()
    };
    let (a, b) = (ids(&first), ids(&second));
    // Known series keep their numbers; the uncached one gets a new one.
    assert_eq!(a[..3], b[..3]);
    assert_ne!(a[3], b[3]);
    assert_ne!(a[0], a[1]);
    // Different keys, equal labels: two numbers, one label set.
    assert_ne!(a[0], a[2]);
    assert_eq!(
        first.ref_samples[0].series.labels,
        first.ref_samples[2].series.labels
    );
    assert_eq!(label(&first.ref_samples[1].series.labels, "k_b"), Some("z"));
}

/// `(name, value)` of float samples, name with extra labels like `le`.
fn floats(batch: &PromBatch) -> Vec<(String, f64)> {
    batch
        .samples
        .iter()
        .map(|s| {
            let mut name = label(&s.labels, NAME_LABEL).unwrap_or_default().to_owned();
            for extra in ["le", "quantile"] {
                if let Some(v) = label(&s.labels, extra) {
                    name = format!("{name}{{{extra}={v}}}");
                }
            }
            match &s.value {
                SampleValue::Float(v) => (name, *v),
                SampleValue::Histogram(h) => (name, h.count),
            }
        })
        .collect()
}

#[test]
fn family_names_follow_the_spec() {
    use FamilyKind::*;
    let rows = [
        // (name, unit, kind, family, unit suffix)
        (
            "http.server.duration",
            "s",
            Histogram,
            "http_server_duration_seconds",
            "seconds",
        ),
        (
            "http.server.duration",
            "ms",
            Histogram,
            "http_server_duration_milliseconds",
            "milliseconds",
        ),
        (
            "system.memory.usage",
            "By",
            Gauge,
            "system_memory_usage_bytes",
            "bytes",
        ),
        (
            "system.memory.utilization",
            "1",
            Gauge,
            "system_memory_utilization_ratio",
            "ratio",
        ),
        (
            "system.processes.created",
            "1",
            Counter,
            "system_processes_created",
            "",
        ),
        ("http.requests", "{request}", Counter, "http_requests", ""),
        (
            "net.io",
            "By/s",
            Gauge,
            "net_io_bytes_per_second",
            "bytes_per_second",
        ),
        ("rate", "{packet}/s", Gauge, "rate_per_second", "per_second"),
        (
            "queue.wait",
            "us",
            Histogram,
            "queue_wait_microseconds",
            "microseconds",
        ),
        ("temp", "Cel", Gauge, "temp_celsius", "celsius"),
        ("dropped", "packets", Counter, "dropped_packets", "packets"),
        ("odd", "kg.m", Gauge, "odd_kg_m", "kg_m"),
        // Already carrying the unit: no second suffix.
        (
            "latency_seconds",
            "s",
            Histogram,
            "latency_seconds",
            "seconds",
        ),
        // `_total` moves after the unit (the series adds it back).
        (
            "cpu.time_total",
            "s",
            Counter,
            "cpu_time_seconds",
            "seconds",
        ),
        // Invalid characters, runs of `_`, leading digit.
        (
            "(lambda).function--executions",
            "",
            Gauge,
            "_lambda_function_executions",
            "",
        ),
        ("2xx.count", "", Gauge, "_2xx_count", ""),
        ("ns:sub.metric", "", Gauge, "ns:sub_metric", ""),
        ("héllo wörld", "", Gauge, "h_llo_w_rld", ""),
    ];
    for (name, unit, kind, family, suffix) in rows {
        assert_eq!(
            family_name(name, unit, kind),
            (family.to_owned(), suffix.to_owned()),
            "{name} [{unit}]"
        );
    }
}

#[test]
fn label_names_are_sanitised() {
    let rows = [
        ("http.method", "http_method"),
        ("k8s.pod.name", "k8s_pod_name"),
        ("0day", "key_0day"),
        ("__name__", "key__name__"),
        ("_private", "_private"),
        ("a-b/c", "a_b_c"),
    ];
    for (key, want) in rows {
        assert_eq!(sanitize_label_name(key), want, "{key}");
    }
}

#[test]
fn floats_are_formatted_like_prometheus() {
    let rows = [
        (0.0, "0"),
        (1.0, "1"),
        (0.005, "0.005"),
        (0.25, "0.25"),
        (2.5, "2.5"),
        (10.0, "10"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (-0.5, "-0.5"),
        (-2e6, "-2e+06"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for (v, want) in rows {
        assert_eq!(format_float(v), want, "{v}");
    }
}

#[test]
fn counters_get_total_and_gauges_do_not() {
    let req = request(
        vec![],
        vec![
            metric(
                "requests",
                "{request}",
                sum(
                    true,
                    AggregationTemporality::Cumulative,
                    vec![num(1, 5.0, vec![])],
                ),
            ),
            metric(
                "queue.size",
                "{item}",
                sum(
                    false,
                    AggregationTemporality::Cumulative,
                    vec![num(1, 3.0, vec![])],
                ),
            ),
            metric("cpu.utilization", "1", gauge(vec![num(1, 0.5, vec![])])),
        ],
    );
    let batch = convert(&req);
    assert_eq!(
        floats(&batch),
        vec![
            ("requests_total".into(), 5.0),
            ("queue_size".into(), 3.0),
            ("cpu_utilization_ratio".into(), 0.5),
        ]
    );
    let kinds: Vec<_> = batch
        .metadata
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.kind.as_str(),
                m.unit.as_str(),
                m.help.as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("requests", "counter", "", "requests help"),
            ("queue_size", "gauge", "", "queue.size help"),
            (
                "cpu_utilization_ratio",
                "gauge",
                "ratio",
                "cpu.utilization help"
            ),
        ]
    );
}

#[test]
fn non_finite_values_are_kept_and_timestamps_become_ms() {
    let req = request(
        vec![],
        vec![metric(
            "g",
            "",
            gauge(vec![
                NumberDataPoint {
                    time_unix_nano: 1_700_000_000_123_456_789,
                    value: Some(number_data_point::Value::AsInt(7)),
                    ..Default::default()
                },
                num(2, f64::NAN, vec![]),
                num(3, f64::INFINITY, vec![]),
                num(4, f64::NEG_INFINITY, vec![]),
            ]),
        )],
    );
    let batch = convert(&req);
    assert_eq!(batch.samples[0].timestamp_ms, 1_700_000_000_123);
    assert_eq!(batch.samples[0].value, SampleValue::Float(7.0));
    let SampleValue::Float(nan) = batch.samples[1].value else {
        panic!()
    };
    assert!(nan.is_nan() && !is_stale_nan(nan));
    assert_eq!(batch.samples[2].value, SampleValue::Float(f64::INFINITY));
    assert_eq!(
        batch.samples[3].value,
        SampleValue::Float(f64::NEG_INFINITY)
    );
}

#[test]
fn no_recorded_value_becomes_a_stale_marker() {
    let mut point = num(1, 5.0, vec![]);
    point.flags = DataPointFlags::NoRecordedValueMask as u32;
    let hist = HistogramDataPoint {
        time_unix_nano: MS,
        explicit_bounds: vec![1.0],
        flags: DataPointFlags::NoRecordedValueMask as u32,
        ..Default::default()
    };
    let req = request(
        vec![],
        vec![
            metric(
                "c",
                "",
                sum(true, AggregationTemporality::Delta, vec![point]),
            ),
            metric(
                "h",
                "",
                metric::Data::Histogram(Histogram {
                    data_points: vec![hist],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
        ],
    );
    let mut deltas = DeltaToCumulative::default();
    let batch = otlp_to_prometheus(&req, &mut deltas);
    let names: Vec<String> = floats(&batch).into_iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "c_total",
            "h_bucket{le=1}",
            "h_bucket{le=+Inf}",
            "h_sum",
            "h_count"
        ]
    );
    for s in &batch.samples {
        assert!(
            matches!(s.value, SampleValue::Float(v) if is_stale_nan(v)),
            "{s:?}"
        );
    }
    // A stale marker adds nothing to a delta total.
    assert!(deltas.is_empty());
}

#[test]
fn histogram_buckets_are_cumulative_with_inf_last() {
    let point = HistogramDataPoint {
        time_unix_nano: 10 * MS,
        count: 10,
        sum: Some(12.5),
        bucket_counts: vec![1, 2, 3, 4],
        explicit_bounds: vec![0.005, 1.0, 1e6],
        attributes: vec![kv("path", "/")],
        ..Default::default()
    };
    let no_sum = HistogramDataPoint {
        time_unix_nano: 10 * MS,
        count: 3,
        sum: None,
        ..Default::default()
    };
    let req = request(
        vec![],
        vec![metric(
            "rpc.duration",
            "s",
            metric::Data::Histogram(Histogram {
                data_points: vec![point, no_sum],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    );
    let batch = convert(&req);
    assert_eq!(
        floats(&batch),
        vec![
            ("rpc_duration_seconds_bucket{le=0.005}".into(), 1.0),
            ("rpc_duration_seconds_bucket{le=1}".into(), 3.0),
            ("rpc_duration_seconds_bucket{le=1e+06}".into(), 6.0),
            ("rpc_duration_seconds_bucket{le=+Inf}".into(), 10.0),
            ("rpc_duration_seconds_sum".into(), 12.5),
            ("rpc_duration_seconds_count".into(), 10.0),
            // No buckets, no sum: `+Inf` and `_count` only.
            ("rpc_duration_seconds_bucket{le=+Inf}".into(), 3.0),
            ("rpc_duration_seconds_count".into(), 3.0),
        ]
    );
    assert_eq!(label(&batch.samples[0].labels, "path"), Some("/"));
    assert_eq!(batch.metadata[0].name, "rpc_duration_seconds");
    assert_eq!(batch.metadata[0].kind, "histogram");
    assert_eq!(batch.metadata[0].unit, "seconds");
}

fn exp_point(
    scale: i32,
    offset: i32,
    counts: Vec<u64>,
    zero_count: u64,
) -> ExponentialHistogramDataPoint {
    let count = counts.iter().sum::<u64>() + zero_count;
    ExponentialHistogramDataPoint {
        time_unix_nano: 5 * MS,
        scale,
        count,
        sum: Some(42.0),
        zero_count,
        zero_threshold: 1e-9,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        negative: Some(Buckets {
            offset: -1,
            bucket_counts: vec![0, 2],
        }),
        ..Default::default()
    }
}

fn exp_request(
    temporality: AggregationTemporality,
    points: Vec<ExponentialHistogramDataPoint>,
) -> ExportMetricsServiceRequest {
    request(
        vec![],
        vec![metric(
            "latency",
            "ms",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: temporality as i32,
            }),
        )],
    )
}

fn natives(batch: &PromBatch) -> Vec<NativeHistogram> {
    batch
        .samples
        .iter()
        .filter_map(|s| match &s.value {
            SampleValue::Histogram(h) => Some((**h).clone()),
            SampleValue::Float(_) => None,
        })
        .collect()
}

#[test]
fn exponential_histogram_becomes_one_native_sample() {
    let req = exp_request(
        AggregationTemporality::Cumulative,
        vec![exp_point(3, -2, vec![1, 0, 3, 4], 5)],
    );
    let batch = convert(&req);
    assert_eq!(batch.samples.len(), 1);
    assert_eq!(
        label(&batch.samples[0].labels, NAME_LABEL),
        Some("latency_milliseconds")
    );
    let h = &natives(&batch)[0];
    assert_eq!(
        *h,
        NativeHistogram {
            schema: 3,
            zero_threshold: 1e-9,
            zero_count: 5.0,
            count: 13.0,
            sum: 42.0,
            // OTLP index -2 is Prometheus index -1; the empty bucket splits the run.
            positive_spans: vec![(-1, 1), (1, 2)],
            positive_buckets: vec![1.0, 3.0, 4.0],
            negative_spans: vec![(1, 1)],
            negative_buckets: vec![2.0],
        }
    );
    assert_eq!(batch.metadata[0].kind, "histogram");
}

#[test]
fn exponential_scale_above_eight_is_merged_down() {
    // Scale 10 to 8 merges groups of four OTLP buckets: indices 0..=3 into 0,
    // 4..=7 into 1.
    let req = exp_request(
        AggregationTemporality::Cumulative,
        vec![exp_point(10, 0, vec![1, 1, 1, 1, 2, 2], 0)],
    );
    let h = &natives(&convert(&req))[0];
    assert_eq!(h.schema, 8);
    assert_eq!(h.positive_spans, vec![(1, 2)]);
    assert_eq!(h.positive_buckets, vec![4.0, 4.0]);
    assert_eq!(h.negative_spans, vec![(1, 1)]);
    assert_eq!(h.count, 8.0);
    // Too coarse for Prometheus: dropped.
    let req = exp_request(
        AggregationTemporality::Cumulative,
        vec![exp_point(-5, 0, vec![1], 0)],
    );
    assert!(convert(&req).samples.is_empty());
}

#[test]
fn summary_becomes_quantiles_sum_and_count() {
    let req = request(
        vec![],
        vec![metric(
            "gc.pause",
            "s",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: MS,
                    count: 9,
                    sum: 1.5,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 0.1,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.7,
                        },
                        ValueAtQuantile {
                            quantile: 1.0,
                            value: 0.9,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        )],
    );
    let batch = convert(&req);
    assert_eq!(
        floats(&batch),
        vec![
            ("gc_pause_seconds{quantile=0.5}".into(), 0.1),
            ("gc_pause_seconds{quantile=0.99}".into(), 0.7),
            ("gc_pause_seconds{quantile=1}".into(), 0.9),
            ("gc_pause_seconds_sum".into(), 1.5),
            ("gc_pause_seconds_count".into(), 9.0),
        ]
    );
    assert_eq!(batch.metadata[0].kind, "summary");
}

#[test]
fn resource_gives_job_instance_and_target_info() {
    let mut req = request(
        vec![
            kv("service.name", "checkout"),
            kv("service.namespace", "shop"),
            kv("service.instance.id", "pod-1"),
            kv("host.name", "node-a"),
            kv("k8s.pod.uid", "abc"),
        ],
        vec![metric(
            "up",
            "",
            gauge(vec![num(7, 1.0, vec![]), num(9, 1.0, vec![])]),
        )],
    );
    req.resource_metrics[0].scope_metrics[0].scope = Some(InstrumentationScope {
        name: "io.periscope.test".into(),
        version: "1.2".into(),
        ..Default::default()
    });
    let batch = convert(&req);
    let up = &batch.samples[0].labels;
    assert_eq!(
        *up,
        normalize_labels(vec![
            ("__name__".into(), "up".into()),
            ("instance".into(), "pod-1".into()),
            ("job".into(), "shop/checkout".into()),
            ("otel_scope_name".into(), "io.periscope.test".into()),
            ("otel_scope_version".into(), "1.2".into()),
        ])
    );
    let info = batch.samples.last().unwrap();
    assert_eq!(
        info.labels,
        normalize_labels(vec![
            ("__name__".into(), "target_info".into()),
            ("host_name".into(), "node-a".into()),
            ("instance".into(), "pod-1".into()),
            ("job".into(), "shop/checkout".into()),
            ("k8s_pod_uid".into(), "abc".into()),
        ])
    );
    assert_eq!(info.value, SampleValue::Float(1.0));
    assert_eq!(info.timestamp_ms, 9, "latest point of the resource");
    assert!(
        batch
            .metadata
            .iter()
            .any(|m| m.name == "target_info" && m.kind == "gauge")
    );

    // Without a namespace `job` is the service name; without other
    // attributes there is no `target_info`.
    let req = request(
        vec![kv("service.name", "checkout")],
        vec![metric("up", "", gauge(vec![num(7, 1.0, vec![])]))],
    );
    let batch = convert(&req);
    assert_eq!(batch.samples.len(), 1);
    assert_eq!(label(&batch.samples[0].labels, "job"), Some("checkout"));
    assert_eq!(label(&batch.samples[0].labels, "instance"), None);
}

#[test]
fn colliding_attribute_names_are_joined_in_key_order() {
    let attrs = vec![
        kv("http.method", "GET"),
        kv("http_method", "get"),
        kv("http-method", "Get"),
        kv("__name__", "evil"),
        kv("job", "attribute-job"),
        kv("count", ""),
        KeyValue {
            key: "retries".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(3)),
            }),
            ..Default::default()
        },
    ];
    let req = request(
        vec![kv("service.name", "svc")],
        vec![metric("m", "", gauge(vec![num(1, 1.0, attrs)]))],
    );
    let batch = convert(&req);
    assert_eq!(
        batch.samples[0].labels,
        vec![
            ("__name__".into(), "m".into()),
            // Sorted by original key: `http-method` < `http.method` < `http_method`.
            ("http_method".into(), "Get;GET;get".into()),
            ("job".into(), "svc".into()),
            ("key__name__".into(), "evil".into()),
            ("retries".into(), "3".into()),
        ]
    );
}

fn delta_point(start_ms: u64, t_ms: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        start_time_unix_nano: start_ms * MS,
        ..num(t_ms, v, vec![kv("k", "v")])
    }
}

#[test]
fn delta_sums_accumulate_across_requests_with_gaps_and_retries() {
    let mut deltas = DeltaToCumulative::default();
    let mut totals = Vec::new();
    for points in [
        vec![delta_point(0, 10, 1.0), delta_point(10, 20, 2.0)],
        // Gap: 20..30 was lost; the total keeps going.
        vec![delta_point(30, 40, 4.0)],
        // A retry of an interval already counted is dropped.
        vec![delta_point(30, 40, 4.0)],
        vec![delta_point(40, 50, 0.5)],
    ] {
        let req = request(
            vec![],
            vec![metric(
                "bytes.sent",
                "By",
                sum(true, AggregationTemporality::Delta, points),
            )],
        );
        totals.extend(otlp_to_prometheus(&req, &mut deltas).samples);
    }
    let values: Vec<(i64, f64)> = totals
        .iter()
        .map(|s| match s.value {
            SampleValue::Float(v) => (s.timestamp_ms, v),
            SampleValue::Histogram(_) => panic!(),
        })
        .collect();
    assert_eq!(values, vec![(10, 1.0), (20, 3.0), (40, 7.0), (50, 7.5)]);
    assert_eq!(
        label(&totals[0].labels, NAME_LABEL),
        Some("bytes_sent_bytes_total")
    );
    let stats = deltas.stats();
    assert_eq!((stats.gaps, stats.out_of_order), (1, 1));
    assert_eq!(deltas.len(), 1);

    // Non-monotonic delta sums accumulate too, as gauges.
    let req = request(
        vec![],
        vec![metric(
            "queue",
            "",
            sum(
                false,
                AggregationTemporality::Delta,
                vec![delta_point(0, 1, 5.0), delta_point(1, 2, -3.0)],
            ),
        )],
    );
    assert_eq!(
        floats(&otlp_to_prometheus(&req, &mut deltas)),
        vec![("queue".into(), 5.0), ("queue".into(), 2.0)]
    );
}

#[test]
fn delta_histograms_accumulate_per_bucket_layout() {
    let point = |start_ms: u64, t_ms: u64, counts: Vec<u64>, bounds: Vec<f64>| HistogramDataPoint {
        start_time_unix_nano: start_ms * MS,
        time_unix_nano: t_ms * MS,
        count: counts.iter().sum(),
        sum: Some(1.0),
        bucket_counts: counts,
        explicit_bounds: bounds,
        ..Default::default()
    };
    let mut deltas = DeltaToCumulative::default();
    let mut run = |p: HistogramDataPoint| {
        let req = request(
            vec![],
            vec![metric(
                "h",
                "",
                metric::Data::Histogram(Histogram {
                    data_points: vec![p],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            )],
        );
        floats(&otlp_to_prometheus(&req, &mut deltas))
    };
    run(point(0, 10, vec![1, 0, 2], vec![1.0, 2.0]));
    assert_eq!(
        run(point(15, 20, vec![0, 3, 1], vec![1.0, 2.0])),
        vec![
            ("h_bucket{le=1}".into(), 1.0),
            ("h_bucket{le=2}".into(), 4.0),
            ("h_bucket{le=+Inf}".into(), 7.0),
            ("h_sum".into(), 2.0),
            ("h_count".into(), 7.0),
        ]
    );
    // New bounds: a new total, which PromQL reads as a reset.
    assert_eq!(
        run(point(20, 30, vec![1, 1], vec![5.0])),
        vec![
            ("h_bucket{le=5}".into(), 1.0),
            ("h_bucket{le=+Inf}".into(), 2.0),
            ("h_sum".into(), 1.0),
            ("h_count".into(), 2.0),
        ]
    );
    assert_eq!(deltas.stats().gaps, 1);
    assert_eq!(deltas.len(), 2);
}

#[test]
fn delta_exponential_histograms_merge_at_the_coarser_scale() {
    let mut deltas = DeltaToCumulative::default();
    let mut first = exp_point(2, 0, vec![1, 1, 1, 1], 1);
    first.start_time_unix_nano = 0;
    first.time_unix_nano = 10 * MS;
    let mut second = exp_point(1, 0, vec![2], 0);
    second.start_time_unix_nano = 10 * MS;
    second.time_unix_nano = 20 * MS;
    let batch = otlp_to_prometheus(
        &exp_request(AggregationTemporality::Delta, vec![first, second]),
        &mut deltas,
    );
    let h = natives(&batch);
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].schema, 1);
    // Scale 2 indices 0..=3 become scale 1 indices 0 and 1, plus 2 in index 0.
    assert_eq!(h[1].positive_spans, vec![(1, 2)]);
    assert_eq!(h[1].positive_buckets, vec![4.0, 2.0]);
    assert_eq!(h[1].negative_buckets, vec![4.0]);
    assert_eq!((h[1].count, h[1].zero_count, h[1].sum), (7.0, 1.0, 84.0));
}

#[test]
fn delta_totals_are_bounded() {
    let mut deltas = DeltaToCumulative::new(1_000, 2);
    let series = |name: &str, t_ms: u64| {
        request(
            vec![],
            vec![metric(
                name,
                "",
                sum(
                    true,
                    AggregationTemporality::Delta,
                    vec![delta_point(t_ms - 1, t_ms, 1.0)],
                ),
            )],
        )
    };
    otlp_to_prometheus(&series("a", 100), &mut deltas);
    otlp_to_prometheus(&series("b", 500), &mut deltas);
    // Full, and nothing idle for 1 s yet: the new series is refused.
    assert!(
        otlp_to_prometheus(&series("c", 600), &mut deltas)
            .samples
            .is_empty()
    );
    assert_eq!(deltas.stats().overflow, 1);
    // At 1.2 s `a` has been idle for over 1 s and makes room.
    assert_eq!(
        otlp_to_prometheus(&series("c", 1_200), &mut deltas)
            .samples
            .len(),
        1
    );
    assert_eq!(deltas.len(), 2);
    assert_eq!(deltas.evict_idle(10_000), 2);
    assert!(deltas.is_empty());
    assert_eq!(deltas.stats().evicted, 3);
}

#[test]
fn delta_converter_is_send() {
    fn send<T: Send + 'static>() {}
    send::<DeltaToCumulative>();
}

#[test]
fn metadata_is_one_per_family() {
    let req = request(
        vec![],
        vec![
            metric("m", "", gauge(vec![num(1, 1.0, vec![])])),
            metric("m", "", gauge(vec![num(2, 1.0, vec![])])),
        ],
    );
    let batch = convert(&req);
    assert_eq!(batch.samples.len(), 2);
    assert_eq!(batch.metadata.len(), 1);
}

/// Random sequences of delta exports (in order, with gaps, retries and
/// late points) against a model that sums every point later than the last
/// one accepted for its series.
#[test]
fn delta_totals_match_a_model() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..20 {
        let mut deltas = DeltaToCumulative::default();
        // Per series: (last accepted time ms, total), once it has a point.
        let mut model: [Option<(u64, f64)>; 3] = [None; 3];
        let mut clock = [0u64; 3];
        for _ in 0..200 {
            let s = next(3) as usize;
            let (start, end) = match next(10) {
                // A retry or late point: ends no later than the last accepted.
                0 => {
                    let end = clock[s].saturating_sub(next(3));
                    (end.saturating_sub(1), end)
                }
                // A gap before the interval.
                1 => (clock[s] + 1 + next(5), clock[s] + 7 + next(5)),
                _ => (clock[s], clock[s] + 1 + next(5)),
            };
            clock[s] = clock[s].max(end);
            let v = next(100) as f64;
            let point = NumberDataPoint {
                start_time_unix_nano: start * MS,
                ..num(end, v, vec![kv("series", &s.to_string())])
            };
            let req = request(
                vec![],
                vec![metric(
                    "c",
                    "",
                    sum(true, AggregationTemporality::Delta, vec![point]),
                )],
            );
            let got = otlp_to_prometheus(&req, &mut deltas).samples;
            let accepted = model[s].is_none_or(|(last, _)| end > last);
            if accepted {
                let total = model[s].map_or(0.0, |m| m.1) + v;
                model[s] = Some((end, total));
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].value, SampleValue::Float(total));
                assert_eq!(got[0].timestamp_ms, end as i64);
            } else {
                assert!(got.is_empty(), "series {s} point ending at {end} accepted");
            }
        }
    }
}

#[test]
fn a_full_series_cache_starts_over_and_converts_the_same() {
    let req = request(
        vec![kv("service.name", "svc")],
        vec![metric(
            "g",
            "",
            gauge(
                (0..50)
                    .map(|i| num(1_000, i as f64, vec![kv("n", &i.to_string())]))
                    .collect(),
            ),
        )],
    );
    let plain = otlp_to_prometheus(&req, &mut DeltaToCumulative::default());
    // Room for about a dozen keys: the cache starts over several times a request.
    let mut cache = SeriesCache::with_max_key_bytes(300);
    let mut deltas = DeltaToCumulative::default();
    for _ in 0..2 {
        let cached = otlp_to_prometheus_cached(&req, &mut deltas, &mut cache);
        assert_eq!(
            comparable(cached.into_samples()),
            comparable(plain.samples.clone())
        );
    }
    assert!(cache.resets >= 5, "{}", cache.resets);
    assert!(cache.len() < 20, "{}", cache.len());
}
