//! The Prometheus-shaped metric model: OTLP metrics are converted into
//! samples of series identified by their labels (`__name__` included), as
//! the OpenTelemetry "Prometheus and OpenMetrics compatibility" spec
//! describes; remote write arrives in this shape already. The metric store
//! keeps it, and the PromQL engine reads it.

/// Labels of a series, sorted by name, `__name__` included. Values are never empty.
pub type Labels = Vec<(String, String)>;

/// The name label.
pub const NAME_LABEL: &str = "__name__";

/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether a value is the staleness marker (not any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A native (sparse, exponential) histogram, as Prometheus keeps it, with
/// absolute (not delta-encoded) bucket counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NativeHistogram {
    /// Resolution: bucket boundaries are powers of `2^(2^-schema)`.
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    /// `(offset, length)` runs of positive buckets; the first offset is the
    /// index of the first bucket, later ones the gap after the previous run.
    pub positive_spans: Vec<(i32, u32)>,
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<(i32, u32)>,
    pub negative_buckets: Vec<f64>,
}

/// A sample value: a float, or a native histogram.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleValue {
    Float(f64),
    /// Boxed: a histogram is large, and most samples are floats.
    Histogram(Box<NativeHistogram>),
}

/// One sample of one series. Timestamps are Unix milliseconds, as in Prometheus.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSample {
    pub labels: Labels,
    pub timestamp_ms: i64,
    pub value: SampleValue,
}

/// Metadata of a metric family, for `/api/v1/metadata` and the metric browser.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricMeta {
    /// The family name (without `_bucket`/`_sum`/`_count`/`_total` added for series).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary` or `unknown`.
    pub kind: String,
    pub unit: String,
    pub help: String,
}

/// A series' labels with a number the converter gave them, so that a store
/// finds the series by the number rather than by hashing and comparing its
/// labels for every sample. Equal labels may carry different numbers (after
/// the converter's cache was reset); a number never names two label sets.
#[derive(Debug, PartialEq)]
pub struct SeriesRef {
    pub id: u64,
    pub labels: Labels,
}

/// A float sample of a series known by reference.
#[derive(Clone, Debug, PartialEq)]
pub struct RefSample {
    pub series: std::sync::Arc<SeriesRef>,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// What one request turns into.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromBatch {
    pub samples: Vec<PromSample>,
    /// Samples of series the converter's cache knew or learned; stores treat
    /// them as `samples` with the series' labels.
    pub ref_samples: Vec<RefSample>,
    pub metadata: Vec<MetricMeta>,
}

impl PromBatch {
    /// Samples of both kinds.
    pub fn len(&self) -> usize {
        self.samples.len() + self.ref_samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every sample with its labels: `samples`, then `ref_samples`.
    pub fn into_samples(self) -> Vec<PromSample> {
        let mut out = self.samples;
        out.extend(self.ref_samples.into_iter().map(|r| PromSample {
            labels: r.series.labels.clone(),
            timestamp_ms: r.timestamp_ms,
            value: SampleValue::Float(r.value),
        }));
        out
    }
}

/// Sorts labels by name and drops empty values (Prometheus treats an empty
/// label as absent). A repeated name keeps its last value.
pub fn normalize_labels(mut labels: Labels) -> Labels {
    labels.retain(|(_, v)| !v.is_empty());
    labels.reverse();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

/// The value of a label.
pub fn label<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_normalise() {
        let l = normalize_labels(vec![
            ("b".into(), "1".into()),
            ("a".into(), "x".into()),
            ("b".into(), "2".into()),
            ("c".into(), String::new()),
        ]);
        assert_eq!(l, vec![("a".into(), "x".into()), ("b".into(), "2".into())]);
        assert_eq!(label(&l, "b"), Some("2"));
        assert_eq!(label(&l, "c"), None);
        assert!(is_stale_nan(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale_nan(f64::NAN));
    }
}
