//! The shop's metrics, as its OpenTelemetry SDKs would report them:
//! cumulative HTTP server request counters and duration histograms per
//! service, method, route and status (from the simulated server spans, so
//! metrics and traces agree), active requests (an up-down counter), memory
//! in use (a gauge) and orders by outcome (a counter).
//!
//! Series are bounded by the fixed set of routes and statuses.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use rand::Rng;
use rand::rngs::SmallRng;

use super::shop::{Shop, Svc};
use super::trace::{SimTrace, kv_i64, kv_str};

/// The histogram bounds the HTTP semantic conventions advise, in seconds.
const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

type RedKey = (Svc, &'static str, &'static str, u16);

#[derive(Clone, Debug, Default)]
struct Series {
    count: u64,
    sum_s: f64,
    buckets: [u64; DURATION_BOUNDS.len() + 1],
    min_s: f64,
    max_s: f64,
}

/// Accumulates what the simulated services measured.
#[derive(Debug)]
pub struct Recorder {
    /// When the counters started (Unix ns): the `start_time_unix_nano` of
    /// every cumulative point.
    start_ns: u64,
    red: BTreeMap<RedKey, Series>,
    /// Time spent serving requests since the last export, per service (ns):
    /// by Little's law, divided by the interval, the mean number in flight.
    busy_ns: [u64; Svc::ALL.len()],
    orders: BTreeMap<&'static str, u64>,
    /// A slow drift of memory in use, per service, as a fraction of its base.
    memory_drift: [f64; Svc::ALL.len()],
}

impl Recorder {
    /// A recorder whose counters start at `start_ns` (Unix ns).
    pub fn new(start_ns: u64) -> Recorder {
        Recorder {
            start_ns,
            red: BTreeMap::new(),
            busy_ns: [0; Svc::ALL.len()],
            orders: BTreeMap::new(),
            memory_drift: [0.0; Svc::ALL.len()],
        }
    }

    /// Counts the server spans of a simulated request.
    pub fn observe(&mut self, t: &SimTrace) {
        for s in &t.spans {
            let Some(red) = s.red else { continue };
            let dur_ns = s
                .span
                .end_time_unix_nano
                .saturating_sub(s.span.start_time_unix_nano);
            let secs = dur_ns as f64 / 1e9;
            let e = self
                .red
                .entry((s.svc, red.method, red.route, red.status))
                .or_default();
            if e.count == 0 || secs < e.min_s {
                e.min_s = secs;
            }
            if secs > e.max_s {
                e.max_s = secs;
            }
            e.count += 1;
            e.sum_s += secs;
            let bucket = DURATION_BOUNDS
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(DURATION_BOUNDS.len());
            e.buckets[bucket] += 1;
            self.busy_ns[s.svc as usize] += dur_ns;
        }
        if let Some(outcome) = t.order_outcome {
            *self.orders.entry(outcome).or_default() += 1;
        }
    }

    /// Every metric as of `now_ns`; `interval_ns` is the time since the
    /// previous export.
    pub fn export(
        &mut self,
        shop: &Shop,
        rng: &mut SmallRng,
        now_ns: u64,
        interval_ns: u64,
    ) -> ExportMetricsServiceRequest {
        let mut per_svc: Vec<Vec<Metric>> = vec![Vec::new(); Svc::ALL.len()];
        for svc in Svc::ALL {
            let i = svc as usize;
            let series: Vec<(&RedKey, &Series)> =
                self.red.iter().filter(|(k, _)| k.0 == svc).collect();
            let attrs = |k: &RedKey| {
                vec![
                    kv_str("http.request.method", k.1),
                    kv_str("http.route", k.2),
                    kv_i64("http.response.status_code", k.3.into()),
                ]
            };
            if !series.is_empty() {
                per_svc[i].push(Metric {
                    name: "http.server.requests".into(),
                    description: "HTTP requests served.".into(),
                    unit: "{request}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: series
                            .iter()
                            .map(|(k, s)| self.number(now_ns, attrs(k), s.count))
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                });
                per_svc[i].push(Metric {
                    name: "http.server.request.duration".into(),
                    description: "Duration of HTTP server requests.".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: series
                            .iter()
                            .map(|(k, s)| HistogramDataPoint {
                                attributes: attrs(k),
                                start_time_unix_nano: self.start_ns,
                                time_unix_nano: now_ns,
                                count: s.count,
                                sum: Some(s.sum_s),
                                bucket_counts: s.buckets.to_vec(),
                                explicit_bounds: DURATION_BOUNDS.to_vec(),
                                min: Some(s.min_s),
                                max: Some(s.max_s),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                });
            }
            let in_flight = if interval_ns == 0 {
                0
            } else {
                (self.busy_ns[i] as f64 / interval_ns as f64).round() as u64
            };
            self.busy_ns[i] = 0;
            per_svc[i].push(Metric {
                name: "http.server.active_requests".into(),
                description: "HTTP requests being served.".into(),
                unit: "{request}".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![self.number(now_ns, vec![], in_flight)],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: false,
                })),
                ..Default::default()
            });
            // Memory wanders within ±15 % of the base; the cart service
            // also grows until its (simulated) collector reclaims it.
            let drift = &mut self.memory_drift[i];
            *drift = (*drift + rng.random_range(-0.02..0.02)).clamp(-0.15, 0.15);
            let mut bytes = svc.base_memory() * (1.0 + *drift);
            if svc == Svc::Cart {
                let minute = (now_ns / 1_000_000_000) % 300;
                bytes *= 1.0 + minute as f64 / 300.0;
            }
            per_svc[i].push(Metric {
                name: "process.memory.usage".into(),
                description: "Physical memory in use.".into(),
                unit: "By".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        time_unix_nano: now_ns,
                        value: Some(number_data_point::Value::AsInt(bytes as i64)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            });
        }
        if !self.orders.is_empty() {
            per_svc[Svc::Checkout as usize].push(Metric {
                name: "shop.orders".into(),
                description: "Orders by outcome.".into(),
                unit: "{order}".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: self
                        .orders
                        .iter()
                        .map(|(o, n)| self.number(now_ns, vec![kv_str("outcome", o)], *n))
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            });
        }
        ExportMetricsServiceRequest {
            resource_metrics: Svc::ALL
                .iter()
                .zip(per_svc)
                .map(|(svc, metrics)| ResourceMetrics {
                    resource: Some(shop.pod(*svc).resource.clone()),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(scope()),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn number(&self, now_ns: u64, attributes: Vec<KeyValue>, v: u64) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            start_time_unix_nano: self.start_ns,
            time_unix_nano: now_ns,
            value: Some(number_data_point::Value::AsInt(
                i64::try_from(v).unwrap_or(i64::MAX),
            )),
            ..Default::default()
        }
    }
}

/// The instrumentation scope the simulated SDKs report.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "periscope.demo".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}
