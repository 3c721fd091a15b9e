//! OTLP metrics converted to Prometheus samples, following the OpenTelemetry
//! "Prometheus and OpenMetrics compatibility" spec.
//!
//! - Names: invalid characters become `_`, the UCUM unit becomes a suffix
//!   (`_seconds`, `_bytes_per_second`, `_ratio` for dimensionless gauges)
//!   unless the name ends with it, and monotonic sums (counters) get `_total`.
//!   Non-monotonic sums are gauges. See `names.rs`.
//! - Histograms become `_bucket{le}` (cumulative, `+Inf` last), `_sum` when
//!   the point has one, and `_count`; exponential histograms become one
//!   native histogram sample each (see `native.rs`); summaries become
//!   `{quantile}`, `_sum` and `_count`.
//! - Labels: the data point's attributes (names sanitised; attributes whose
//!   names collide are joined with `;` in the order of their original keys),
//!   `otel_scope_name`/`otel_scope_version`, and `job`
//!   (`service.namespace/service.name`) and `instance`
//!   (`service.instance.id`) from the resource, which win over attributes of
//!   the same name. The other resource attributes go into one `target_info`
//!   series per resource.
//! - Delta sums and histograms are made cumulative by [`DeltaToCumulative`].
//! - A point flagged "no recorded value" becomes Prometheus' staleness marker.

mod cache;
mod delta;
mod names;
mod native;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

pub use cache::SeriesCache;
use delta::HistogramTotal;
pub use delta::{DeltaStats, DeltaToCumulative};
use names::{FamilyKind, attribute_value, family_name, format_float, sanitize_label_name};
use native::ExpBuckets;

use crate::otlp::ExportMetricsServiceRequest;
use crate::otlp::common::v1::{InstrumentationScope, KeyValue, any_value};
use crate::otlp::metrics::v1::{
    AggregationTemporality, DataPointFlags, Metric, NumberDataPoint, metric, number_data_point,
};
use crate::otlp::resource::v1::Resource;
use crate::{
    Labels, MetricMeta, NAME_LABEL, PromBatch, PromSample, RefSample, STALE_NAN_BITS, SampleValue,
    normalize_labels,
};

/// Resource attributes that become `job` and `instance` instead of
/// `target_info` labels.
const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// Unix ns to Unix ms, as Prometheus timestamps are.
pub(crate) fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

fn stale() -> SampleValue {
    SampleValue::Float(f64::from_bits(STALE_NAN_BITS))
}

fn no_recorded_value(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 != 0
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Attributes as label pairs: names sanitised, colliding names' values
/// joined with `;` in the order of their original keys, empty values left
/// out. Sorted by label name.
fn attribute_labels<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Labels {
    let mut pairs: Vec<(String, &str, String)> = attrs
        .into_iter()
        .map(|kv| {
            (
                sanitize_label_name(&kv.key),
                kv.key.as_str(),
                attribute_value(kv.value.as_ref()),
            )
        })
        .filter(|(name, _, value)| !name.is_empty() && !value.is_empty())
        .collect();
    pairs.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut out: Labels = Vec::with_capacity(pairs.len());
    for (name, _, value) in pairs {
        match out.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(';');
                joined.push_str(&value);
            }
            _ => out.push((name, value)),
        }
    }
    out
}

/// `job` and `instance` of a resource, and its `target_info` labels.
fn resource_labels(resource: Option<&Resource>) -> (Labels, Labels) {
    let attrs = resource.map(|r| &r.attributes[..]).unwrap_or_default();
    let mut identity = Vec::new();
    if let Some(name) = string_attr(attrs, SERVICE_NAME) {
        let job = match string_attr(attrs, SERVICE_NAMESPACE) {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        identity.push(("job".to_owned(), job));
    }
    if let Some(id) = string_attr(attrs, SERVICE_INSTANCE_ID) {
        identity.push(("instance".to_owned(), id.to_owned()));
    }
    let info = attribute_labels(attrs.iter().filter(|kv| {
        !matches!(
            kv.key.as_str(),
            SERVICE_NAME | SERVICE_NAMESPACE | SERVICE_INSTANCE_ID
        )
    }));
    (identity, info)
}

fn scope_labels(scope: Option<&InstrumentationScope>) -> Labels {
    match scope {
        Some(s) if !s.name.is_empty() => vec![
            ("otel_scope_name".to_owned(), s.name.clone()),
            ("otel_scope_version".to_owned(), s.version.clone()),
        ],
        _ => Vec::new(),
    }
}

/// Converts one request; delta points go through `deltas`, which keeps
/// their running totals across requests.
pub fn otlp_to_prometheus(
    req: &ExportMetricsServiceRequest,
    deltas: &mut DeltaToCumulative,
) -> PromBatch {
    convert(req, deltas, None)
}

/// [`otlp_to_prometheus`] with a series cache: points of gauges and
/// cumulative sums go into `ref_samples`, their series looked up in `cache`
/// by their raw attributes. The same samples, with the same labels.
pub fn otlp_to_prometheus_cached(
    req: &ExportMetricsServiceRequest,
    deltas: &mut DeltaToCumulative,
    cache: &mut SeriesCache,
) -> PromBatch {
    convert(req, deltas, Some(cache))
}

fn convert(
    req: &ExportMetricsServiceRequest,
    deltas: &mut DeltaToCumulative,
    cache: Option<&mut SeriesCache>,
) -> PromBatch {
    let mut conv = Converter {
        batch: PromBatch::default(),
        families: HashSet::new(),
        deltas,
        cache,
        key: Vec::new(),
    };
    for rm in &req.resource_metrics {
        let (identity, info) = resource_labels(rm.resource.as_ref());
        let mut latest_ms: Option<i64> = None;
        for sm in &rm.scope_metrics {
            // Later entries win in `normalize_labels`: scope, then job/instance.
            let mut base = scope_labels(sm.scope.as_ref());
            base.extend(identity.iter().cloned());
            for m in &sm.metrics {
                if let Some(t) = conv.metric(m, &base) {
                    latest_ms = Some(latest_ms.map_or(t, |l| l.max(t)));
                }
            }
        }
        if let Some(t) = latest_ms
            && !info.is_empty()
        {
            let mut labels = info;
            labels.extend(identity);
            labels.push((NAME_LABEL.to_owned(), "target_info".to_owned()));
            conv.batch.samples.push(PromSample {
                labels: normalize_labels(labels),
                timestamp_ms: t,
                value: SampleValue::Float(1.0),
            });
            conv.meta("target_info", FamilyKind::Gauge, "", "Target metadata");
        }
    }
    conv.batch
}

struct Converter<'a> {
    batch: PromBatch,
    families: HashSet<String>,
    deltas: &'a mut DeltaToCumulative,
    cache: Option<&'a mut SeriesCache>,
    /// The series key being built (reused).
    key: Vec<u8>,
}

/// The labels of one data point, built once and extended per series.
struct Point<'a> {
    attrs: Labels,
    base: &'a Labels,
    timestamp_ms: i64,
}

impl Point<'_> {
    fn labels(&self, name: &str, extra: Option<(&str, String)>) -> Labels {
        let mut l = Vec::with_capacity(self.attrs.len() + self.base.len() + 2);
        l.extend(self.attrs.iter().cloned());
        l.extend(self.base.iter().cloned());
        if let Some((k, v)) = extra {
            l.push((k.to_owned(), v));
        }
        l.push((NAME_LABEL.to_owned(), name.to_owned()));
        normalize_labels(l)
    }
}

fn point<'b>(attrs: &[KeyValue], time_ns: u64, base: &'b Labels) -> Point<'b> {
    Point {
        attrs: attribute_labels(attrs),
        base,
        timestamp_ms: ns_to_ms(time_ns),
    }
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    match p.value? {
        number_data_point::Value::AsDouble(d) => Some(d),
        number_data_point::Value::AsInt(i) => Some(i as f64),
    }
}

impl Converter<'_> {
    fn meta(&mut self, family: &str, kind: FamilyKind, unit: &str, help: &str) {
        if self.families.insert(family.to_owned()) {
            self.batch.metadata.push(MetricMeta {
                name: family.to_owned(),
                kind: kind.as_str().to_owned(),
                unit: unit.to_owned(),
                help: help.to_owned(),
            });
        }
    }

    fn push(&mut self, labels: Labels, timestamp_ms: i64, value: SampleValue) {
        self.batch.samples.push(PromSample {
            labels,
            timestamp_ms,
            value,
        });
    }

    fn point<'b>(&self, attrs: &[KeyValue], time_ns: u64, base: &'b Labels) -> Point<'b> {
        point(attrs, time_ns, base)
    }

    /// Converts one metric; returns the latest timestamp of its samples.
    fn metric(&mut self, m: &Metric, base: &Labels) -> Option<i64> {
        let data = m.data.as_ref()?;
        let kind = match data {
            metric::Data::Gauge(_) => FamilyKind::Gauge,
            metric::Data::Sum(s) if s.is_monotonic => FamilyKind::Counter,
            metric::Data::Sum(_) => FamilyKind::Gauge,
            metric::Data::Histogram(_) | metric::Data::ExponentialHistogram(_) => {
                FamilyKind::Histogram
            }
            metric::Data::Summary(_) => FamilyKind::Summary,
        };
        let (family, unit) = family_name(&m.name, &m.unit, kind);
        if family.is_empty() {
            return None;
        }
        let before = self.batch.samples.len();
        let before_refs = self.batch.ref_samples.len();
        match data {
            metric::Data::Gauge(g) => self.numbers(&g.data_points, &family, false, base),
            metric::Data::Sum(s) => {
                let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
                let name = if s.is_monotonic {
                    format!("{family}_total")
                } else {
                    family.clone()
                };
                self.numbers(&s.data_points, &name, delta, base);
            }
            metric::Data::Histogram(h) => {
                let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
                self.histograms(&h.data_points, &family, delta, base);
            }
            metric::Data::ExponentialHistogram(h) => {
                let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
                self.exponentials(&h.data_points, &family, delta, base);
            }
            metric::Data::Summary(s) => self.summaries(&s.data_points, &family, base),
        }
        if self.batch.samples.len() == before && self.batch.ref_samples.len() == before_refs {
            return None;
        }
        self.meta(&family, kind, &unit, &m.description);
        self.batch.samples[before..]
            .iter()
            .map(|s| s.timestamp_ms)
            .chain(
                self.batch.ref_samples[before_refs..]
                    .iter()
                    .map(|s| s.timestamp_ms),
            )
            .max()
    }

    fn numbers(&mut self, points: &[NumberDataPoint], name: &str, delta: bool, base: &Labels) {
        if !delta && self.cache.is_some() {
            return self.cached_numbers(points, name, base);
        }
        for p in points {
            let pt = self.point(&p.attributes, p.time_unix_nano, base);
            let labels = pt.labels(name, None);
            if no_recorded_value(p.flags) {
                self.push(labels, pt.timestamp_ms, stale());
                continue;
            }
            let Some(mut v) = number(p) else { continue };
            if delta {
                match self
                    .deltas
                    .sum(&labels, p.start_time_unix_nano, p.time_unix_nano, v)
                {
                    Some(total) => v = total,
                    None => continue,
                }
            }
            self.push(labels, pt.timestamp_ms, SampleValue::Float(v));
        }
    }

    /// Gauge and cumulative points through the series cache.
    fn cached_numbers(&mut self, points: &[NumberDataPoint], name: &str, base: &Labels) {
        let Some(cache) = self.cache.as_deref_mut() else {
            return;
        };
        let key = &mut self.key;
        key.clear();
        cache::key_labels(key, base);
        cache::key_name(key, name);
        let prefix = key.len();
        for p in points {
            let value = if no_recorded_value(p.flags) {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                match number(p) {
                    Some(v) => v,
                    None => continue,
                }
            };
            let labels = || point(&p.attributes, p.time_unix_nano, base).labels(name, None);
            key.truncate(prefix);
            let series = if cache::key_attributes(key, &p.attributes) {
                cache.get_or_insert(key, labels)
            } else {
                cache.uncached(labels)
            };
            self.batch.ref_samples.push(RefSample {
                series,
                timestamp_ms: ns_to_ms(p.time_unix_nano),
                value,
            });
        }
    }

    fn histograms(
        &mut self,
        points: &[crate::otlp::metrics::v1::HistogramDataPoint],
        family: &str,
        delta: bool,
        base: &Labels,
    ) {
        let bucket_name = format!("{family}_bucket");
        let sum_name = format!("{family}_sum");
        let count_name = format!("{family}_count");
        for p in points {
            let pt = self.point(&p.attributes, p.time_unix_nano, base);
            let t = pt.timestamp_ms;
            let les = p
                .explicit_bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .map(format_float);
            if no_recorded_value(p.flags) {
                for le in les {
                    self.push(pt.labels(&bucket_name, Some(("le", le))), t, stale());
                }
                self.push(pt.labels(&sum_name, None), t, stale());
                self.push(pt.labels(&count_name, None), t, stale());
                continue;
            }
            let mut h = HistogramTotal {
                bucket_counts: p.bucket_counts.clone(),
                count: p.count,
                sum: p.sum,
            };
            if delta {
                let key = pt.labels(family, None);
                let bounds = &p.explicit_bounds;
                match self.deltas.histogram(
                    &key,
                    bounds,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    h,
                ) {
                    Some(total) => h = total,
                    None => continue,
                }
            }
            // OTLP counts per bucket; Prometheus counts everything up to `le`.
            // A point without buckets still has the `+Inf` one: its count.
            let mut cumulative = 0u64;
            for (i, le) in les.enumerate() {
                cumulative = if i < p.explicit_bounds.len() {
                    cumulative + h.bucket_counts.get(i).copied().unwrap_or(0)
                } else {
                    h.count
                };
                let labels = pt.labels(&bucket_name, Some(("le", le)));
                self.push(labels, t, SampleValue::Float(cumulative as f64));
            }
            if let Some(sum) = h.sum {
                self.push(pt.labels(&sum_name, None), t, SampleValue::Float(sum));
            }
            let count = SampleValue::Float(h.count as f64);
            self.push(pt.labels(&count_name, None), t, count);
        }
    }

    fn exponentials(
        &mut self,
        points: &[crate::otlp::metrics::v1::ExponentialHistogramDataPoint],
        family: &str,
        delta: bool,
        base: &Labels,
    ) {
        for p in points {
            let pt = self.point(&p.attributes, p.time_unix_nano, base);
            let labels = pt.labels(family, None);
            if no_recorded_value(p.flags) {
                self.push(labels, pt.timestamp_ms, stale());
                continue;
            }
            let mut h = ExpBuckets::from_point(p);
            if delta {
                match self
                    .deltas
                    .exponential(&labels, p.start_time_unix_nano, p.time_unix_nano, h)
                {
                    Some(total) => h = total,
                    None => continue,
                }
            }
            if let Some(native) = h.to_native() {
                self.push(
                    labels,
                    pt.timestamp_ms,
                    SampleValue::Histogram(Box::new(native)),
                );
            }
        }
    }

    fn summaries(
        &mut self,
        points: &[crate::otlp::metrics::v1::SummaryDataPoint],
        family: &str,
        base: &Labels,
    ) {
        let sum_name = format!("{family}_sum");
        let count_name = format!("{family}_count");
        for p in points {
            let pt = self.point(&p.attributes, p.time_unix_nano, base);
            let t = pt.timestamp_ms;
            let stale_point = no_recorded_value(p.flags);
            let value = |v: f64| {
                if stale_point {
                    stale()
                } else {
                    SampleValue::Float(v)
                }
            };
            for q in &p.quantile_values {
                let labels = pt.labels(family, Some(("quantile", format_float(q.quantile))));
                self.push(labels, t, value(q.value));
            }
            self.push(pt.labels(&sum_name, None), t, value(p.sum));
            self.push(pt.labels(&count_name, None), t, value(p.count as f64));
        }
    }
}
