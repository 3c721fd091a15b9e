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
        self.request_with(first_seq, samples, |seq| self.time_and_value(seq))
    }

    /// The time (Unix ns) and value of sample `seq`.
    fn time_and_value(&self, seq: u64) -> (u64, f64) {
        let (round, index) = (seq / self.series, seq % self.series);
        (
            self.timestamp_ms(round) as u64 * 1_000_000,
            self.value(index, round),
        )
    }

    /// [`Self::request`] with the time and value of each sample from `point`.
    fn request_with(
        &self,
        first_seq: u64,
        samples: u64,
        point: impl Fn(u64) -> (u64, f64),
    ) -> ExportMetricsServiceRequest {
        let mut groups: Vec<PointGroup> = Vec::new();
        for seq in first_seq..first_seq + samples {
            let index = seq % self.series;
            let k = self.key(index);
            let (t_ns, value) = point(seq);
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
                value: Some(number_data_point::Value::AsDouble(value)),
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

/// Encodes a workload's OTLP requests without building them: a request's
/// protobuf depends on its samples' times and values only through
/// fixed-width fields (`fixed64` time, `double` value), so the bytes of a
/// request of the same shape (where its first sample falls in a round, and
/// how many samples) serve as a template in which 16 bytes per sample are
/// rewritten. The result is byte for byte what encoding
/// [`MetricWorkload::request`] gives (a test checks it).
#[derive(Clone, Debug)]
pub struct MetricEncoder {
    workload: MetricWorkload,
    /// The templates of the shapes seen last, newest first.
    templates: Vec<Template>,
}

/// Shapes kept: with `series` a multiple of the batch size, requests come in
/// `series / batch` shapes.
const TEMPLATES: usize = 8;

#[derive(Clone, Debug)]
struct Template {
    /// `first_seq % series` and the sample count it was made for.
    shape: (u64, u64),
    bytes: Vec<u8>,
    /// Per sample, the offsets of its time and value (little-endian, 8 bytes).
    slots: Vec<(usize, usize)>,
}

/// Marks in the template's time and value fields: the high 24 bits, with the
/// sample's position in the request below them.
const TIME_MARK: u64 = 0x005e_ed71 << 40;
const VALUE_MARK: u64 = 0x005e_ed7a << 40;
const MARK_MASK: u64 = 0xff_ffff << 40;
/// Protobuf tags of `NumberDataPoint.time_unix_nano` (field 3, fixed64) and
/// `as_double` (field 4, fixed64).
const TIME_TAG: u8 = 3 << 3 | 1;
const VALUE_TAG: u8 = 4 << 3 | 1;

impl MetricEncoder {
    pub fn new(workload: MetricWorkload) -> Self {
        MetricEncoder {
            workload,
            templates: Vec::new(),
        }
    }

    pub fn workload(&self) -> &MetricWorkload {
        &self.workload
    }

    /// The encoded request for samples `first_seq..first_seq + samples`.
    pub fn encode(&mut self, first_seq: u64, samples: u64) -> Vec<u8> {
        use prost::Message;
        let shape = (first_seq % self.workload.series, samples);
        match self.templates.iter().position(|t| t.shape == shape) {
            Some(i) => {
                let t = self.templates.remove(i);
                self.templates.insert(0, t);
            }
            None => match self.make_template(first_seq, samples) {
                Some(t) => {
                    self.templates.truncate(TEMPLATES - 1);
                    self.templates.insert(0, t);
                }
                // No template (more samples than the marks can number).
                None => return self.workload.request(first_seq, samples).encode_to_vec(),
            },
        }
        let t = &self.templates[0];
        let mut out = t.bytes.clone();
        for (i, &(time_at, value_at)) in t.slots.iter().enumerate() {
            let (time, value) = self.workload.time_and_value(first_seq + i as u64);
            out[time_at..time_at + 8].copy_from_slice(&time.to_le_bytes());
            out[value_at..value_at + 8].copy_from_slice(&value.to_bits().to_le_bytes());
        }
        out
    }

    fn make_template(&self, first_seq: u64, samples: u64) -> Option<Template> {
        use prost::Message;
        // A zero time would not be encoded at all (proto3 default).
        if samples >= 1 << 40 || self.workload.start_ms <= 0 {
            return None;
        }
        let req = self.workload.request_with(first_seq, samples, |seq| {
            let i = seq - first_seq;
            (TIME_MARK | i, f64::from_bits(VALUE_MARK | i))
        });
        let bytes = req.encode_to_vec();
        let mut slots = vec![(usize::MAX, usize::MAX); samples as usize];
        let mut found = 0u64;
        for at in 0..bytes.len().saturating_sub(8) {
            let tag = bytes[at];
            if tag != TIME_TAG && tag != VALUE_TAG {
                continue;
            }
            let v = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().expect("8 bytes"));
            let (mark, i) = (v & MARK_MASK, (v & !MARK_MASK) as usize);
            let slot = match (tag, mark) {
                (TIME_TAG, TIME_MARK) => slots.get_mut(i).map(|s| &mut s.0),
                (VALUE_TAG, VALUE_MARK) => slots.get_mut(i).map(|s| &mut s.1),
                _ => None,
            };
            if let Some(slot) = slot
                && *slot == usize::MAX
            {
                *slot = at + 1;
                found += 1;
            }
        }
        (found == 2 * samples).then_some(Template {
            shape: (first_seq % self.workload.series, samples),
            bytes,
            slots,
        })
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
    fn the_template_encoder_gives_the_bytes_of_the_built_request() {
        use prost::Message;
        let w = MetricWorkload::new("lgtest", 1_000, 1_700_000_000_000, 15_000);
        let mut e = MetricEncoder::new(w.clone());
        for (first, n) in [
            (0, 1_000),
            (1_000, 1_000),
            (123_000, 1_000),
            (10, 300),
            (5_010, 300),
        ] {
            assert_eq!(
                e.encode(first, n),
                w.request(first, n).encode_to_vec(),
                "{first}+{n}"
            );
            assert_eq!(e.templates[0].shape, (first % 1_000, n));
        }
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
