//! Prometheus remote write 1.0: a snappy-compressed (block format)
//! `prometheus.WriteRequest` protobuf, decoded into the metric model.
//!
//! The message types are written by hand from Prometheus' `prompb`
//! definitions, keeping only what remote write 1.0 sends. Decompression is
//! capped: the snappy header announces the decompressed length, and a body
//! announcing more than [`MAX_REMOTE_WRITE_DECOMPRESSED`] is refused before
//! anything is allocated.

use prost::Message;

use crate::{
    DecodeError, Labels, MetricMeta, NativeHistogram, PromBatch, PromSample, SampleValue,
    normalize_labels,
};

/// The largest decompressed remote write body accepted: 64 MiB.
pub const MAX_REMOTE_WRITE_DECOMPRESSED: usize = 64 << 20;

/// `prometheus.WriteRequest` and the messages it carries; field numbers are
/// Prometheus' and must not change.
mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub(crate) timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub(crate) metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub(crate) labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) samples: Vec<Sample>,
        /// Decoded so that a request carrying them is well formed; not stored.
        #[prost(message, repeated, tag = "3")]
        pub(crate) exemplars: Vec<Exemplar>,
        #[prost(message, repeated, tag = "4")]
        pub(crate) histograms: Vec<Histogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Label {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(string, tag = "2")]
        pub(crate) value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Sample {
        #[prost(double, tag = "1")]
        pub(crate) value: f64,
        /// Unix ms.
        #[prost(int64, tag = "2")]
        pub(crate) timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        pub(crate) labels: Vec<Label>,
        #[prost(double, tag = "2")]
        pub(crate) value: f64,
        #[prost(int64, tag = "3")]
        pub(crate) timestamp: i64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub(crate) enum MetricType {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        GaugeHistogram = 4,
        Summary = 5,
        Info = 6,
        StateSet = 7,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct MetricMetadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub(crate) r#type: i32,
        #[prost(string, tag = "2")]
        pub(crate) metric_family_name: String,
        #[prost(string, tag = "4")]
        pub(crate) help: String,
        #[prost(string, tag = "5")]
        pub(crate) unit: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub(crate) offset: i32,
        #[prost(uint32, tag = "2")]
        pub(crate) length: u32,
    }

    /// A native histogram: integer histograms send delta-encoded counts
    /// (`*_deltas`), float histograms absolute ones (`*_counts`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Histogram {
        #[prost(oneof = "Count", tags = "1, 2")]
        pub(crate) count: Option<Count>,
        #[prost(double, tag = "3")]
        pub(crate) sum: f64,
        #[prost(sint32, tag = "4")]
        pub(crate) schema: i32,
        #[prost(double, tag = "5")]
        pub(crate) zero_threshold: f64,
        #[prost(oneof = "ZeroCount", tags = "6, 7")]
        pub(crate) zero_count: Option<ZeroCount>,
        #[prost(message, repeated, tag = "8")]
        pub(crate) negative_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "9")]
        pub(crate) negative_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "10")]
        pub(crate) negative_counts: Vec<f64>,
        #[prost(message, repeated, tag = "11")]
        pub(crate) positive_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "12")]
        pub(crate) positive_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "13")]
        pub(crate) positive_counts: Vec<f64>,
        /// `UNKNOWN = 0; YES = 1; NO = 2; GAUGE = 3`.
        #[prost(int32, tag = "14")]
        pub(crate) reset_hint: i32,
        /// Unix ms.
        #[prost(int64, tag = "15")]
        pub(crate) timestamp: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub(crate) enum Count {
        #[prost(uint64, tag = "1")]
        Int(u64),
        #[prost(double, tag = "2")]
        Float(f64),
    }

    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub(crate) enum ZeroCount {
        #[prost(uint64, tag = "6")]
        Int(u64),
        #[prost(double, tag = "7")]
        Float(f64),
    }
}

fn invalid(message: String) -> DecodeError {
    DecodeError::RemoteWrite(message)
}

/// The decompressed length a remote write body announces in its snappy
/// header, checked against [`MAX_REMOTE_WRITE_DECOMPRESSED`]; read without
/// decompressing, so callers can charge memory before they decode.
pub fn remote_write_decompressed_len(body: &[u8]) -> Result<usize, DecodeError> {
    let len = snap::raw::decompress_len(body)?;
    if len > MAX_REMOTE_WRITE_DECOMPRESSED {
        return Err(DecodeError::TooLarge {
            len,
            limit: MAX_REMOTE_WRITE_DECOMPRESSED,
        });
    }
    Ok(len)
}

fn decode_write_request(body: &[u8]) -> Result<prompb::WriteRequest, DecodeError> {
    remote_write_decompressed_len(body)?;
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(prompb::WriteRequest::decode(raw.as_slice())?)
}

/// Decodes a remote write 1.0 body (snappy block format, then protobuf).
pub fn decode_remote_write(body: &[u8]) -> Result<PromBatch, DecodeError> {
    to_batch(decode_write_request(body)?)
}

/// Samples a bounded decode dropped because of their timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Samples (floats and histograms) older than the lower bound.
    pub too_old: usize,
    /// Samples newer than the upper bound.
    pub too_new: usize,
}

impl OutOfBounds {
    /// All dropped samples.
    pub fn total(&self) -> usize {
        self.too_old + self.too_new
    }
}

/// A remote write body decoded with timestamp bounds.
#[derive(Debug)]
pub struct BoundedRemoteWrite {
    /// The samples within the bounds.
    pub batch: PromBatch,
    /// What was dropped.
    pub dropped: OutOfBounds,
    /// The body re-encoded without the dropped samples, when any was
    /// dropped (`None`: the original body holds exactly `batch`). The WAL
    /// keeps this one so that replay does not bring the dropped samples back.
    pub body: Option<Vec<u8>>,
}

/// Decodes a remote write body, keeping the samples timestamped within
/// `min_ms..=max_ms` (Unix ms) and counting the others, as OTLP validation
/// rejects records older than the retention or too far in the future.
pub fn decode_remote_write_bounded(
    body: &[u8],
    min_ms: i64,
    max_ms: i64,
) -> Result<BoundedRemoteWrite, DecodeError> {
    let mut req = decode_write_request(body)?;
    let mut dropped = OutOfBounds::default();
    let mut keep = |ts: i64| {
        if ts < min_ms {
            dropped.too_old += 1;
            false
        } else if ts > max_ms {
            dropped.too_new += 1;
            false
        } else {
            true
        }
    };
    for ts in &mut req.timeseries {
        ts.samples.retain(|s| keep(s.timestamp));
        ts.histograms.retain(|h| keep(h.timestamp));
    }
    let body = (dropped.total() > 0).then(|| {
        let raw = req.encode_to_vec();
        // The re-encoded body is smaller than the one that was decompressed
        // (under the 64 MiB cap), far below snappy's 4 GiB block limit.
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("remote write body under snappy's size limit")
    });
    Ok(BoundedRemoteWrite {
        batch: to_batch(req)?,
        dropped,
        body,
    })
}

fn to_batch(req: prompb::WriteRequest) -> Result<PromBatch, DecodeError> {
    let mut batch = PromBatch::default();
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        let labels = normalize_labels(ts.labels.into_iter().map(|l| (l.name, l.value)).collect());
        if labels.is_empty() {
            return Err(invalid(format!("time series {i} has no labels")));
        }
        for s in ts.samples {
            batch.samples.push(PromSample {
                labels: labels.clone(),
                timestamp_ms: s.timestamp,
                value: SampleValue::Float(s.value),
            });
        }
        for h in ts.histograms {
            let timestamp_ms = h.timestamp;
            let native =
                native_histogram(h).map_err(|e| invalid(format!("time series {i}: {e}")))?;
            batch.samples.push(PromSample {
                labels: labels.clone(),
                timestamp_ms,
                value: SampleValue::Histogram(Box::new(native)),
            });
        }
    }
    batch.metadata = req
        .metadata
        .into_iter()
        .map(|m| MetricMeta {
            kind: metric_kind(m.r#type).to_owned(),
            name: m.metric_family_name,
            unit: m.unit,
            help: m.help,
        })
        .collect();
    Ok(batch)
}

fn metric_kind(t: i32) -> &'static str {
    use prompb::MetricType as T;
    match T::try_from(t).unwrap_or(T::Unknown) {
        T::Counter => "counter",
        T::Gauge => "gauge",
        T::Histogram => "histogram",
        T::GaugeHistogram => "gaugehistogram",
        T::Summary => "summary",
        // Info and state sets have no kind of their own in the model.
        T::Unknown | T::Info | T::StateSet => "unknown",
    }
}

/// Spans and absolute bucket counts of one side of a native histogram.
type Side = (Vec<(i32, u32)>, Vec<f64>);

/// Absolute bucket counts from either encoding, checked against the spans.
fn buckets(
    side: &str,
    spans: &[prompb::BucketSpan],
    deltas: &[i64],
    counts: &[f64],
) -> Result<Side, String> {
    let buckets: Vec<f64> = if deltas.is_empty() {
        counts.to_vec()
    } else {
        let mut running = 0i64;
        let mut out = Vec::with_capacity(deltas.len());
        for d in deltas {
            running = running
                .checked_add(*d)
                .filter(|r| *r >= 0)
                .ok_or_else(|| format!("{side} bucket counts go negative or overflow"))?;
            out.push(running as f64);
        }
        out
    };
    let spanned: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    if spanned != buckets.len() as u64 {
        return Err(format!(
            "{side} spans cover {spanned} buckets but {} are given",
            buckets.len()
        ));
    }
    Ok((
        spans.iter().map(|s| (s.offset, s.length)).collect(),
        buckets,
    ))
}

fn native_histogram(h: prompb::Histogram) -> Result<NativeHistogram, String> {
    let (positive_spans, positive_buckets) = buckets(
        "positive",
        &h.positive_spans,
        &h.positive_deltas,
        &h.positive_counts,
    )?;
    let (negative_spans, negative_buckets) = buckets(
        "negative",
        &h.negative_spans,
        &h.negative_deltas,
        &h.negative_counts,
    )?;
    Ok(NativeHistogram {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: match h.zero_count {
            Some(prompb::ZeroCount::Int(c)) => c as f64,
            Some(prompb::ZeroCount::Float(c)) => c,
            None => 0.0,
        },
        count: match h.count {
            Some(prompb::Count::Int(c)) => c as f64,
            Some(prompb::Count::Float(c)) => c,
            None => 0.0,
        },
        sum: h.sum,
        positive_spans,
        positive_buckets,
        negative_spans,
        negative_buckets,
    })
}

/// Whether every count is a whole number an integer histogram can carry.
fn integral(h: &NativeHistogram) -> bool {
    let whole = |v: f64| v >= 0.0 && v.fract() == 0.0 && v < 9.0e15;
    [h.count, h.zero_count]
        .iter()
        .chain(&h.positive_buckets)
        .chain(&h.negative_buckets)
        .all(|v| whole(*v))
}

fn delta_encode(counts: &[f64]) -> Vec<i64> {
    let mut prev = 0i64;
    counts
        .iter()
        .map(|c| {
            let c = *c as i64;
            let d = c - prev;
            prev = c;
            d
        })
        .collect()
}

fn encode_histogram(h: &NativeHistogram, timestamp: i64) -> prompb::Histogram {
    let spans = |s: &[(i32, u32)]| {
        s.iter()
            .map(|(offset, length)| prompb::BucketSpan {
                offset: *offset,
                length: *length,
            })
            .collect()
    };
    let mut out = prompb::Histogram {
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        negative_spans: spans(&h.negative_spans),
        positive_spans: spans(&h.positive_spans),
        timestamp,
        ..Default::default()
    };
    if integral(h) {
        out.count = Some(prompb::Count::Int(h.count as u64));
        out.zero_count = Some(prompb::ZeroCount::Int(h.zero_count as u64));
        out.negative_deltas = delta_encode(&h.negative_buckets);
        out.positive_deltas = delta_encode(&h.positive_buckets);
    } else {
        out.count = Some(prompb::Count::Float(h.count));
        out.zero_count = Some(prompb::ZeroCount::Float(h.zero_count));
        out.negative_counts = h.negative_buckets.clone();
        out.positive_counts = h.positive_buckets.clone();
    }
    out
}

/// Encodes samples as a remote write 1.0 body, one time series per label
/// set in order of first appearance; integral native histograms use the
/// integer (delta) encoding, others the float one. For tests and the load
/// generator.
pub fn encode_remote_write(samples: &[PromSample]) -> Vec<u8> {
    let mut series: Vec<prompb::TimeSeries> = Vec::new();
    let mut index: std::collections::HashMap<&Labels, usize> = std::collections::HashMap::new();
    for s in samples {
        let i = *index.entry(&s.labels).or_insert_with(|| {
            series.push(prompb::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| prompb::Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                ..Default::default()
            });
            series.len() - 1
        });
        match &s.value {
            SampleValue::Float(value) => series[i].samples.push(prompb::Sample {
                value: *value,
                timestamp: s.timestamp_ms,
            }),
            SampleValue::Histogram(h) => series[i]
                .histograms
                .push(encode_histogram(h, s.timestamp_ms)),
        }
    }
    let raw = prompb::WriteRequest {
        timeseries: series,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    // Compressing a buffer in memory cannot fail short of its size
    // exceeding snappy's 4 GiB block limit.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("remote write body under snappy's size limit")
}

#[cfg(test)]
mod tests;
