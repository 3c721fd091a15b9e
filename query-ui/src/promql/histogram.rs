//! Arithmetic on native histograms, as Prometheus' engine does it: adding
//! and subtracting at the coarser of two schemas (a bucket of schema `s`
//! is the union of `2^(t - s)` buckets of a finer schema `t`), widening the
//! zero bucket to the larger threshold, scaling, and detecting counter
//! resets between two samples of a series.
//!
//! Histograms are worked on in a sparse form (bucket index → count) and
//! written back with empty buckets dropped and runs of adjacent buckets
//! merged into one span. The estimates behind `histogram_fraction` and
//! `histogram_stddev` / `histogram_stdvar` live here too.

use std::collections::BTreeMap;

use periscope_proto::NativeHistogram;

use super::value::{bucket_upper, span_buckets};

/// A native histogram with its buckets keyed by index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sparse {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive: BTreeMap<i32, f64>,
    pub negative: BTreeMap<i32, f64>,
}

fn expand(spans: &[(i32, u32)], counts: &[f64]) -> BTreeMap<i32, f64> {
    span_buckets(spans, counts).collect()
}

fn compact(buckets: &BTreeMap<i32, f64>) -> (Vec<(i32, u32)>, Vec<f64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut counts = Vec::new();
    let mut next: Option<i32> = None;
    for (&i, &c) in buckets {
        if c == 0.0 {
            continue;
        }
        match (next, spans.last_mut()) {
            (Some(n), Some(last)) if n == i => last.1 += 1,
            (Some(n), _) => spans.push((i - n, 1)),
            (None, _) => spans.push((i, 1)),
        }
        counts.push(c);
        next = Some(i + 1);
    }
    (spans, counts)
}

/// The index at schema `to` of the bucket holding bucket `index` of the
/// finer schema `from`.
fn coarser_index(index: i32, from: i32, to: i32) -> i32 {
    ((index - 1) >> (from - to)) + 1
}

impl Sparse {
    pub fn from_native(h: &NativeHistogram) -> Self {
        Sparse {
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count,
            count: h.count,
            sum: h.sum,
            positive: expand(&h.positive_spans, &h.positive_buckets),
            negative: expand(&h.negative_spans, &h.negative_buckets),
        }
    }

    /// The histogram with empty buckets left out.
    pub fn to_native(&self) -> NativeHistogram {
        let (positive_spans, positive_buckets) = compact(&self.positive);
        let (negative_spans, negative_buckets) = compact(&self.negative);
        NativeHistogram {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            count: self.count,
            sum: self.sum,
            positive_spans,
            positive_buckets,
            negative_spans,
            negative_buckets,
        }
    }

    /// Merges buckets into the coarser `schema` (no-op when not coarser).
    pub fn reduce(&mut self, schema: i32) {
        if schema >= self.schema {
            return;
        }
        let from = self.schema;
        for buckets in [&mut self.positive, &mut self.negative] {
            let mut merged = BTreeMap::new();
            for (i, c) in std::mem::take(buckets) {
                *merged.entry(coarser_index(i, from, schema)).or_insert(0.0) += c;
            }
            *buckets = merged;
        }
        self.schema = schema;
    }

    /// Widens the zero bucket to at least `threshold`, taking in every
    /// bucket whose upper bound is within it; a populated bucket the new
    /// threshold falls inside is taken in whole, its upper bound becoming
    /// the threshold.
    pub fn widen_zero(&mut self, threshold: f64) {
        if threshold <= self.zero_threshold {
            return;
        }
        let schema = self.schema;
        let mut threshold = threshold;
        loop {
            let mut moved = 0.0;
            let mut widened = threshold;
            for buckets in [&mut self.positive, &mut self.negative] {
                buckets.retain(|&i, c| {
                    let upper = bucket_upper(schema, i);
                    let lower = bucket_upper(schema, i - 1);
                    if upper <= threshold {
                        moved += *c;
                        false
                    } else if lower < threshold && *c != 0.0 {
                        widened = widened.max(upper);
                        moved += *c;
                        false
                    } else {
                        true
                    }
                });
            }
            self.zero_count += moved;
            if widened == threshold {
                break;
            }
            threshold = widened;
        }
        self.zero_threshold = threshold;
    }

    /// Brings both histograms to the coarser schema and the wider zero bucket.
    fn reconcile(&mut self, other: &mut Sparse) {
        let schema = self.schema.min(other.schema);
        self.reduce(schema);
        other.reduce(schema);
        while self.zero_threshold != other.zero_threshold {
            if self.zero_threshold > other.zero_threshold {
                other.widen_zero(self.zero_threshold);
            } else {
                self.widen_zero(other.zero_threshold);
            }
        }
    }

    /// Adds `factor × other` (`factor` 1 to add, -1 to subtract).
    pub fn add_scaled(&mut self, other: &Sparse, factor: f64) {
        let mut other = other.clone();
        self.reconcile(&mut other);
        self.zero_count += factor * other.zero_count;
        self.count += factor * other.count;
        self.sum += factor * other.sum;
        for (mine, theirs) in [
            (&mut self.positive, &other.positive),
            (&mut self.negative, &other.negative),
        ] {
            for (i, c) in theirs {
                *mine.entry(*i).or_insert(0.0) += factor * c;
            }
        }
    }

    /// Multiplies every count and the sum by `factor`.
    pub fn scale(&mut self, factor: f64) {
        self.map(|c| c * factor);
    }

    /// Divides every count and the sum by `divisor`.
    pub fn divide(&mut self, divisor: f64) {
        self.map(|c| c / divisor);
    }

    fn map(&mut self, f: impl Fn(f64) -> f64) {
        self.zero_count = f(self.zero_count);
        self.count = f(self.count);
        self.sum = f(self.sum);
        for c in self.positive.values_mut().chain(self.negative.values_mut()) {
            *c = f(*c);
        }
    }

    /// Whether going from `prev` to `self` is a counter reset: the count,
    /// the zero bucket or any bucket went down, a bucket disappeared, the
    /// schema got finer or the zero bucket narrower.
    pub fn is_reset_from(&self, prev: &Sparse) -> bool {
        if self.count < prev.count
            || self.schema > prev.schema
            || self.zero_threshold < prev.zero_threshold
        {
            return true;
        }
        let mut prev = prev.clone();
        prev.reduce(self.schema);
        prev.widen_zero(self.zero_threshold);
        if prev.zero_threshold != self.zero_threshold || self.zero_count < prev.zero_count {
            return true;
        }
        [
            (&prev.positive, &self.positive),
            (&prev.negative, &self.negative),
        ]
        .iter()
        .any(|(p, c)| {
            p.iter()
                .any(|(i, pc)| *pc > c.get(i).copied().unwrap_or(0.0))
        })
    }

    /// Equal after empty buckets are left out (Prometheus' `==` between
    /// histograms).
    pub fn same_as(&self, other: &Sparse) -> bool {
        self.to_native() == other.to_native()
    }

    /// `(lower, upper, count)` of every populated bucket, ascending, the
    /// zero bucket as `[-threshold, threshold]`.
    pub fn buckets(&self) -> Vec<(f64, f64, f64)> {
        let mut out: Vec<(f64, f64, f64)> = self
            .negative
            .iter()
            .rev()
            .filter(|(_, c)| **c != 0.0)
            .map(|(&i, &c)| {
                (
                    -bucket_upper(self.schema, i),
                    -bucket_upper(self.schema, i - 1),
                    c,
                )
            })
            .collect();
        if self.zero_count != 0.0 {
            out.push((-self.zero_threshold, self.zero_threshold, self.zero_count));
        }
        out.extend(
            self.positive
                .iter()
                .filter(|(_, c)| **c != 0.0)
                .map(|(&i, &c)| {
                    (
                        bucket_upper(self.schema, i - 1),
                        bucket_upper(self.schema, i),
                        c,
                    )
                }),
        );
        out
    }

    /// Whether any positive (or negative) bucket is populated.
    pub fn has_positive(&self) -> bool {
        self.positive.values().any(|c| *c != 0.0)
    }

    pub fn has_negative(&self) -> bool {
        self.negative.values().any(|c| *c != 0.0)
    }
}

/// `h` as a sparse histogram.
pub(crate) fn sparse(h: &NativeHistogram) -> Sparse {
    Sparse::from_native(h)
}

/// The estimated variance of a native histogram's observations: each
/// bucket's observations taken to lie at its geometric mean (the zero
/// bucket's at 0), around the mean `sum / count`.
pub(crate) fn histogram_variance(h: &NativeHistogram) -> f64 {
    let mean = h.sum / h.count;
    let mut variance = 0.0;
    for (lo, hi, c) in sparse(h).buckets() {
        let at = if lo <= 0.0 && hi >= 0.0 {
            0.0
        } else if hi < 0.0 {
            -(lo * hi).sqrt()
        } else {
            (lo * hi).sqrt()
        };
        variance += c * (at - mean).powi(2);
    }
    variance / h.count
}

/// The estimated fraction of a native histogram's observations between
/// `lower` and `upper`, interpolating within a bucket as
/// `histogram_quantile` does (linearly in the zero bucket, exponentially in
/// the others).
pub(crate) fn histogram_fraction(lower: f64, upper: f64, h: &NativeHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let hs = sparse(h);
    // The rank (observations below) of `v`, interpolated within the bucket
    // `[lo, hi]` that holds `rank` observations below it.
    let within = |v: f64, (lo, hi, c): (f64, f64, f64), zero: bool, rank: f64| {
        if zero {
            rank + c * (v - lo) / (hi - lo)
        } else {
            let (log_lo, log_hi, log_v) = (lo.abs().log2(), hi.abs().log2(), v.abs().log2());
            let fraction = if v > 0.0 {
                (log_v - log_lo) / (log_hi - log_lo)
            } else {
                1.0 - (log_v - log_hi) / (log_lo - log_hi)
            };
            rank + c * fraction
        }
    };
    let (mut lower_rank, mut upper_rank) = (None, None);
    let mut rank = 0.0;
    for (mut lo, mut hi, c) in hs.buckets() {
        let zero = lo <= 0.0 && hi >= 0.0;
        if zero {
            // With observations on one side only, the zero bucket ends at 0.
            if !hs.has_negative() && hs.has_positive() {
                lo = 0.0;
            }
            if !hs.has_positive() && hs.has_negative() {
                hi = 0.0;
            }
        }
        for (bound, slot) in [(lower, &mut lower_rank), (upper, &mut upper_rank)] {
            if slot.is_none() {
                if lo >= bound {
                    *slot = Some(rank);
                } else if lo < bound && hi > bound {
                    *slot = Some(within(bound, (lo, hi, c), zero, rank));
                }
            }
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank += c;
    }
    let lower_rank = lower_rank.unwrap_or(h.count).min(h.count);
    let upper_rank = upper_rank.unwrap_or(h.count).min(h.count);
    (upper_rank - lower_rank) / h.count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(schema: i32, zt: f64, zc: f64, pos: &[(i32, f64)]) -> Sparse {
        let positive: BTreeMap<i32, f64> = pos.iter().copied().collect();
        let count = zc + positive.values().sum::<f64>();
        Sparse {
            schema,
            zero_threshold: zt,
            zero_count: zc,
            count,
            sum: 0.0,
            positive,
            negative: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_through_spans() {
        let h = hist(
            1,
            0.0,
            0.0,
            &[(-2, 1.0), (-1, 2.0), (3, 4.0), (4, 0.0), (5, 1.0)],
        );
        let n = h.to_native();
        // Bucket 4 is empty: runs [-2,-1], [3] after a gap of 3 (0, 1, 2),
        // then [5] after a gap of 1.
        assert_eq!(n.positive_spans, vec![(-2, 2), (3, 1), (1, 1)]);
        assert_eq!(n.positive_buckets, vec![1.0, 2.0, 4.0, 1.0]);
        let mut back = Sparse::from_native(&n);
        back.positive.insert(4, 0.0);
        assert_eq!(back, h);
    }

    #[test]
    fn reduces_schema() {
        // Schema 1 buckets 1..=4 cover (1,√2],(√2,2],(2,2√2],(2√2,4]; at
        // schema 0 they are (1,2] (index 1) and (2,4] (index 2). Index 0 at
        // schema 1 is (1/√2, 1] → index 0 at schema 0; -1 → 0 as well.
        let mut h = hist(
            1,
            0.0,
            0.0,
            &[(-1, 5.0), (0, 1.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)],
        );
        h.reduce(0);
        let want: BTreeMap<i32, f64> = [(0, 6.0), (1, 3.0), (2, 7.0)].into_iter().collect();
        assert_eq!(h.positive, want);
        assert_eq!(coarser_index(-3, 2, 0), 0);
        // Schema 2 index -4 is (2^-1.25, 0.5]: bucket -1 (0.25, 0.5] at schema 0.
        assert_eq!(coarser_index(-4, 2, 0), -1);
        assert_eq!(coarser_index(-8, 2, 0), -2);
        assert_eq!(coarser_index(-9, 2, 0), -2);
    }

    #[test]
    fn widens_zero_bucket() {
        // Schema 0: bucket 0 is (0.5,1], bucket 1 (1,2]. Threshold 0.5 takes
        // in bucket -1 (0.25,0.5]; 0.75 falls inside bucket 0 → whole of it,
        // threshold 1.
        let mut h = hist(0, 0.1, 1.0, &[(-1, 2.0), (0, 3.0), (1, 4.0)]);
        h.widen_zero(0.5);
        assert_eq!((h.zero_threshold, h.zero_count), (0.5, 3.0));
        h.widen_zero(0.75);
        assert_eq!((h.zero_threshold, h.zero_count), (1.0, 6.0));
        assert_eq!(h.positive.len(), 1);
    }

    #[test]
    fn adds_across_schemas_and_thresholds() {
        let mut a = hist(0, 0.5, 1.0, &[(1, 2.0)]);
        let b = hist(1, 0.1, 1.0, &[(-1, 1.0), (1, 1.0), (2, 1.0)]);
        a.add_scaled(&b, 1.0);
        // b at schema 0: (-1 → 0): 1 in (0.5,1], (1,2 → 1): 2 in (1,2];
        // a's zero bucket is 0.5 wide, bucket (0.5,1] stays.
        assert_eq!(a.schema, 0);
        assert_eq!(a.zero_count, 2.0);
        assert_eq!(a.count, 3.0 + 4.0);
        let want: BTreeMap<i32, f64> = [(0, 1.0), (1, 4.0)].into_iter().collect();
        assert_eq!(a.positive, want);
    }

    #[test]
    fn detects_resets() {
        let prev = hist(0, 0.0, 1.0, &[(1, 2.0), (2, 2.0)]);
        assert!(!hist(0, 0.0, 1.0, &[(1, 2.0), (2, 3.0)]).is_reset_from(&prev));
        // Count up but a bucket down.
        assert!(hist(0, 0.0, 1.0, &[(1, 1.0), (2, 5.0)]).is_reset_from(&prev));
        // A bucket gone.
        assert!(hist(0, 0.0, 1.0, &[(2, 9.0)]).is_reset_from(&prev));
        // Zero bucket down.
        assert!(hist(0, 0.0, 0.0, &[(1, 3.0), (2, 3.0)]).is_reset_from(&prev));
        // Finer schema.
        assert!(hist(1, 0.0, 1.0, &[(2, 2.0), (4, 2.0)]).is_reset_from(&prev));
        // Coarser schema with every merged bucket grown: no reset.
        let fine = hist(1, 0.0, 1.0, &[(1, 1.0), (2, 1.0), (3, 1.0)]);
        assert!(!hist(0, 0.0, 1.0, &[(1, 2.0), (2, 1.0)]).is_reset_from(&fine));
    }
}
