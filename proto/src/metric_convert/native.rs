//! OTLP exponential histograms as Prometheus native histograms.
//!
//! Both use base `2^(2^-scale)` buckets, and Prometheus' schema is OTLP's
//! scale, but they index buckets differently: OTLP bucket `i` holds
//! `(base^i, base^(i+1)]`, Prometheus bucket `i` holds `(base^(i-1), base^i]`,
//! so a Prometheus index is the OTLP index plus one. Prometheus accepts
//! schemas -4 to 8: finer histograms are merged down to 8, coarser ones
//! cannot be represented and are dropped.

use std::collections::BTreeMap;

use crate::NativeHistogram;
use crate::otlp::metrics::v1::ExponentialHistogramDataPoint;
use crate::otlp::metrics::v1::exponential_histogram_data_point::Buckets;

/// The finest schema Prometheus accepts.
pub(crate) const MAX_SCHEMA: i32 = 8;
/// The coarsest schema Prometheus accepts.
pub(crate) const MIN_SCHEMA: i32 = -4;

/// An exponential histogram with sparse buckets keyed by OTLP index, the
/// form in which points are merged and accumulated.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExpBuckets {
    pub(crate) scale: i32,
    pub(crate) zero_threshold: f64,
    pub(crate) zero_count: u64,
    pub(crate) count: u64,
    /// `None` when a point had no sum (OTLP makes it optional).
    pub(crate) sum: Option<f64>,
    pub(crate) positive: BTreeMap<i32, u64>,
    pub(crate) negative: BTreeMap<i32, u64>,
}

fn sparse(b: Option<&Buckets>) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::new();
    if let Some(b) = b {
        for (i, c) in b.bucket_counts.iter().enumerate() {
            let Ok(i) = i32::try_from(i) else { break };
            if *c > 0 {
                *out.entry(b.offset.saturating_add(i)).or_insert(0) += c;
            }
        }
    }
    out
}

/// Merges buckets `by` scales down: OTLP index `i` lands in `i >> by`.
fn downscale(buckets: &BTreeMap<i32, u64>, by: u32) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::new();
    for (i, c) in buckets {
        *out.entry(i.checked_shr(by).unwrap_or(if *i < 0 { -1 } else { 0 }))
            .or_insert(0) += c;
    }
    out
}

impl ExpBuckets {
    pub(crate) fn from_point(p: &ExponentialHistogramDataPoint) -> Self {
        ExpBuckets {
            scale: p.scale,
            zero_threshold: p.zero_threshold,
            zero_count: p.zero_count,
            count: p.count,
            sum: p.sum,
            positive: sparse(p.positive.as_ref()),
            negative: sparse(p.negative.as_ref()),
        }
    }

    /// Lowers the resolution to `scale` (no-op when already as coarse).
    pub(crate) fn downscale_to(&mut self, scale: i32) {
        if scale < self.scale {
            let by = (self.scale - scale).unsigned_abs();
            self.positive = downscale(&self.positive, by);
            self.negative = downscale(&self.negative, by);
            self.scale = scale;
        }
    }

    /// Adds another histogram, at the coarser of the two resolutions.
    pub(crate) fn add(&mut self, mut other: ExpBuckets) {
        let scale = self.scale.min(other.scale);
        self.downscale_to(scale);
        other.downscale_to(scale);
        self.zero_count += other.zero_count;
        self.count += other.count;
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        for (i, c) in other.positive {
            *self.positive.entry(i).or_insert(0) += c;
        }
        for (i, c) in other.negative {
            *self.negative.entry(i).or_insert(0) += c;
        }
    }

    /// The native histogram, or `None` when the scale is too coarse for
    /// Prometheus. A missing sum becomes 0, as Prometheus needs one.
    pub(crate) fn to_native(&self) -> Option<NativeHistogram> {
        let mut h = self.clone();
        h.downscale_to(MAX_SCHEMA);
        if h.scale < MIN_SCHEMA {
            return None;
        }
        let (positive_spans, positive_buckets) = spans(&h.positive);
        let (negative_spans, negative_buckets) = spans(&h.negative);
        Some(NativeHistogram {
            schema: h.scale,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count as f64,
            count: h.count as f64,
            sum: h.sum.unwrap_or(0.0),
            positive_spans,
            positive_buckets,
            negative_spans,
            negative_buckets,
        })
    }
}

/// Runs of consecutive buckets, with Prometheus indices (OTLP index + 1).
fn spans(buckets: &BTreeMap<i32, u64>) -> (Vec<(i32, u32)>, Vec<f64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut counts = Vec::with_capacity(buckets.len());
    let mut next: Option<i32> = None;
    for (i, c) in buckets {
        let index = i.saturating_add(1);
        match next {
            Some(n) if n == index => {
                if let Some(last) = spans.last_mut() {
                    last.1 += 1;
                }
            }
            Some(n) => spans.push((index - n, 1)),
            None => spans.push((index, 1)),
        }
        next = Some(index.saturating_add(1));
        counts.push(*c as f64);
    }
    (spans, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_merges_pairs_with_floor_division() {
        let b: BTreeMap<i32, u64> = [(-3, 1), (-2, 2), (-1, 4), (0, 8), (1, 16), (2, 32)].into();
        let d = downscale(&b, 1);
        assert_eq!(d, [(-2, 1), (-1, 6), (0, 24), (1, 32)].into());
        assert_eq!(downscale(&b, 40), [(-1, 7), (0, 56)].into());
    }

    #[test]
    fn spans_shift_index_and_split_on_gaps() {
        let b: BTreeMap<i32, u64> = [(-1, 1), (0, 2), (3, 5)].into();
        let (s, c) = spans(&b);
        assert_eq!(s, vec![(0, 2), (2, 1)]);
        assert_eq!(c, vec![1.0, 2.0, 5.0]);
    }
}
