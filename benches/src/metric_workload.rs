//! The synthetic metric workload: a fixed set of series, half cumulative
//! counters (`http_server_requests_total{service,route,code,instance}`) and
//! half gauges (`process_memory_bytes{service,pool,instance}`), scraped in
//! rounds: the shape of the shared side-by-side dataset, with values that
//! behave like real ones.
//!
//! Sample number `seq` is round `seq / series` of series `seq % series`, so a
//! run's samples are numbered like log records and any client can make any
//! of them. Values are a function of (series, round) alone: counters grow by
//! a per-series rate with a little noise and never decrease, gauges drift
//! slowly around a per-series base, as real process metrics do. Timestamps
//! advance by `interval_ms` per round from the run's start.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use periscope_proto::{Labels, PromSample, SampleValue};

use crate::workload::{kv_str, mix, run_salt};

/// `service.instance.id` of an instance (the `instance` label), as in the
/// shared dataset.
fn instance_id(instance: u32) -> String {
    format!("i{instance}")
}

/// Services the series are spread over (the `job` and `service` labels), as
/// in the shared side-by-side dataset.
pub const METRIC_SERVICES: [&str; 10] = [
    "svc0", "svc1", "svc2", "svc3", "svc4", "svc5", "svc6", "svc7", "svc8", "svc9",
];
const ROUTES: usize = 20;
const CODES: [&str; 5] = ["200", "201", "404", "500", "503"];

/// Generates OTLP metric requests. Deterministic: the same run id, start and
/// sequence numbers give the same requests.
#[derive(Clone, Debug)]
pub struct MetricWorkload {
    run_id: String,
    salt: u64,
    series: u64,
    start_ms: i64,
    interval_ms: i64,
}

/// The counter and gauge points of one (service, instance) in a request.
type PointGroup = ((usize, u32), Vec<NumberDataPoint>, Vec<NumberDataPoint>);

/// What one series is, from its number.
struct SeriesKey {
    counter: bool,
    service: usize,
    route: usize,
    code: usize,
    instance: u32,
}

impl MetricWorkload {
    /// `series` series (at least 2, rounded down to even), with round 0 at
    /// `start_ms` and one round every `interval_ms`.
    pub fn new(run_id: impl Into<String>, series: u64, start_ms: i64, interval_ms: i64) -> Self {
        let run_id = run_id.into();
        MetricWorkload {
            salt: run_salt(&run_id),
            run_id,
            series: (series / 2 * 2).max(2),
            start_ms,
            interval_ms: interval_ms.max(1),
        }
    }

    /// The run id every series carries as `loadgen_run`.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The number of series.
    pub fn series(&self) -> u64 {
        self.series
    }

    fn key(&self, index: u64) -> SeriesKey {
        let half = self.series / 2;
        let counter = index < half;
        let n = index % half;
        let per_service = half.div_ceil(METRIC_SERVICES.len() as u64);
        let within = n % per_service;
        SeriesKey {
            counter,
            service: (n / per_service) as usize,
            route: (within % ROUTES as u64) as usize,
            code: (within / ROUTES as u64 % CODES.len() as u64) as usize,
            instance: (within / (ROUTES * CODES.len()) as u64) as u32,
        }
    }

    /// The value of series `index` at `round`.
    pub fn value(&self, index: u64, round: u64) -> f64 {
        let h = mix(self.salt ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if index < self.series / 2 {
            // Increments of rate - noise .. rate: never negative.
            let rate = 3 + h % 500;
            let noise = mix(h ^ round) % 3;
            (round * rate + rate - noise) as f64
        } else {
            let base = 1e7 + (h % 1_000_000_000) as f64;
            let drift = (round as f64 / 40.0 + (h % 97) as f64).sin() * base * 0.05;
            ((base + drift) / 4096.0).round() * 4096.0
        }
    }

    /// The timestamp of `round`, in milliseconds.
    pub fn timestamp_ms(&self, round: u64) -> i64 {
        self.start_ms + round as i64 * self.interval_ms
    }

    /// The point labels of a series (besides the metric name, `job` and
    /// `instance`, which come from the resource).
    fn labels(&self, k: &SeriesKey) -> Vec<(&'static str, String)> {
        let mut l = vec![("service", METRIC_SERVICES[k.service].to_owned())];
        if k.counter {
            l.push(("route", format!("/api/r{}", k.route)));
            l.push(("code", CODES[k.code].to_owned()));
        } else {
            l.push(("pool", format!("p{}_{}", k.route, k.code)));
        }
        l.push(("loadgen_run", self.run_id.clone()));
        l
    }

    /// Samples `first_seq..first_seq + samples` as Prometheus samples, with
    /// the labels the OTLP form is stored under, for remote write.
    pub fn prom_samples(&self, first_seq: u64, samples: u64) -> Vec<PromSample> {
        (first_seq..first_seq + samples)
            .map(|seq| {
                let (round, index) = (seq / self.series, seq % self.series);
                let k = self.key(index);
                let name = if k.counter {
                    "http_server_requests_total"
                } else {
                    "process_memory_bytes"
                };
                let service = METRIC_SERVICES[k.service];
                let mut labels: Labels = vec![
                    ("__name__".to_owned(), name.to_owned()),
                    ("instance".to_owned(), instance_id(k.instance)),
                    ("job".to_owned(), service.to_owned()),
                ];
                labels.extend(self.labels(&k).into_iter().map(|(n, v)| (n.to_owned(), v)));
                labels.sort();
                PromSample {
                    labels,
                    timestamp_ms: self.timestamp_ms(round),
                    value: SampleValue::Float(self.value(index, round)),
                }
            })
            .collect()
    }

    /// One request holding samples `first_seq..first_seq + samples`, one
    /// `ResourceMetrics` per service and instance in it.
    pub fn request(&self, first_seq: u64, samples: u64) -> ExportMetricsServiceRequest {
        let mut groups: Vec<PointGroup> = Vec::new();
        for seq in first_seq..first_seq + samples {
            let (round, index) = (seq / self.series, seq % self.series);
            let k = self.key(index);
            let t_ns = self.timestamp_ms(round) as u64 * 1_000_000;
            let point = NumberDataPoint {
                attributes: self
                    .labels(&k)
                    .into_iter()
                    .map(|(name, value)| kv_str(name, value))
                    .collect(),
                start_time_unix_nano: if k.counter {
                    self.start_ms as u64 * 1_000_000
                } else {
                    0
                },
                time_unix_nano: t_ns,
                value: Some(number_data_point::Value::AsDouble(self.value(index, round))),
                ..Default::default()
            };
            let g = match groups
                .iter()
                .position(|(key, ..)| *key == (k.service, k.instance))
            {
                Some(i) => i,
                None => {
                    groups.push(((k.service, k.instance), Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            if k.counter {
                groups[g].1.push(point);
            } else {
                groups[g].2.push(point);
            }
        }
        let resource_metrics = groups
            .into_iter()
            .map(|((service, instance), counters, gauges)| {
                let mut metrics = Vec::new();
                if !counters.is_empty() {
                    metrics.push(Metric {
                        name: "http.server.requests".into(),
                        unit: "{request}".into(),
                        description: "Requests served (synthetic).".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: counters,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    });
                }
                if !gauges.is_empty() {
                    metrics.push(Metric {
                        name: "process.memory".into(),
                        unit: "By".into(),
                        description: "Pool memory in use (synthetic).".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: gauges,
                        })),
                        ..Default::default()
                    });
                }
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            kv_str("service.name", METRIC_SERVICES[service]),
                            kv_str("service.instance.id", instance_id(instance)),
                            kv_str("host.name", format!("node-{}", instance % 5)),
                            kv_str("deployment.environment", "production"),
                        ],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "periscope.loadgen".into(),
                            ..Default::default()
                        }),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(req: &ExportMetricsServiceRequest) -> usize {
        req.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Gauge(g)) => g.data_points.len(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn requests_hold_the_claimed_samples_and_counters_never_decrease() {
        let w = MetricWorkload::new("lgtest", 10_000, 1_700_000_000_000, 15_000);
        assert_eq!(points(&w.request(9_990, 500)), 500);
        for index in [0, 7, 4_999] {
            let mut last = 0.0;
            for round in 0..1_000 {
                let v = w.value(index, round);
                assert!(v >= last, "series {index} decreased at round {round}");
                last = v;
            }
        }
        // Series identities are distinct: 10,000 label sets.
        let mut seen = std::collections::HashSet::new();
        for i in 0..w.series() {
            let k = w.key(i);
            assert!(seen.insert((k.counter, k.service, k.route, k.code, k.instance)));
        }
    }
}
