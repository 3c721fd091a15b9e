//! Delta temporality turned into cumulative, at ingest.
//!
//! Prometheus stores counters and histograms as running totals, and PromQL's
//! `rate`, `increase` and `histogram_quantile` expect them. Converting delta
//! sums and histograms here, once, keeps every query function unchanged; the
//! price is state: one running total per series, held in memory.
//!
//! Each series is keyed by its labels and, for histograms, its bucket layout
//! (the explicit bounds; for exponential histograms the zero threshold, as
//! scales are merged down to the coarser one). A layout change starts a new
//! total at zero, which PromQL reads as a counter reset, as it does after a
//! restart of the collector, when every total starts again at zero.
//!
//! A point whose start time is after the previous point's time means an
//! interval is missing (a lost export): the total keeps accumulating, short
//! of what the lost interval held, and the gap is counted. A point whose
//! time is not after the previous one is a retry or arrives out of order:
//! adding it would count it twice, so it is dropped and counted.
//!
//! Memory is bounded twice: series idle for longer than `max_idle_ms` are
//! dropped by [`DeltaToCumulative::evict_idle`] (idleness is measured in
//! data-point time), and at most `max_series` totals are kept; points of new
//! series beyond that are dropped and counted.

use std::collections::HashMap;

use super::native::ExpBuckets;
use crate::Labels;

/// What a series is keyed by besides its labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Layout {
    Sum,
    /// Explicit bounds, as bits (bounds are never NaN once validated).
    Explicit(Vec<u64>),
    /// The zero threshold, as bits.
    Exponential(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    labels: Labels,
    layout: Layout,
}

/// A cumulative classic histogram: per-bucket (not yet cumulative) counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct HistogramTotal {
    pub(crate) bucket_counts: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) sum: Option<f64>,
}

#[derive(Clone, Debug)]
enum Total {
    Sum(f64),
    Histogram(HistogramTotal),
    Exponential(ExpBuckets),
}

#[derive(Clone, Debug)]
struct Entry {
    /// Time of the last point added, Unix ns.
    last_time_ns: u64,
    /// The same in ms, for idleness.
    last_seen_ms: i64,
    total: Total,
}

/// Counters of what the converter did, for self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Points that started after the previous point of their series ended.
    pub gaps: u64,
    /// Points not later than the previous point of their series, dropped.
    pub out_of_order: u64,
    /// Points of new series dropped because `max_series` totals were held.
    pub overflow: u64,
    /// Series dropped for being idle.
    pub evicted: u64,
}

/// Running totals that turn delta sums and histograms into cumulative ones;
/// see the module docs for the rules. One per collector, fed every request.
#[derive(Debug)]
pub struct DeltaToCumulative {
    series: HashMap<SeriesKey, Entry>,
    max_idle_ms: i64,
    max_series: usize,
    /// Latest data-point time seen, ms; used to evict before refusing a series.
    newest_ms: i64,
    stats: DeltaStats,
}

impl Default for DeltaToCumulative {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_IDLE_MS, Self::DEFAULT_MAX_SERIES)
    }
}

impl DeltaToCumulative {
    /// Default idle time after which a series' total is dropped: 1 h.
    pub const DEFAULT_MAX_IDLE_MS: i64 = 3_600_000;
    /// Default bound on the totals held: 1,000,000 series.
    pub const DEFAULT_MAX_SERIES: usize = 1_000_000;

    /// A converter that drops series idle for `max_idle_ms` and holds at most
    /// `max_series` totals.
    pub fn new(max_idle_ms: i64, max_series: usize) -> Self {
        DeltaToCumulative {
            series: HashMap::new(),
            max_idle_ms,
            max_series,
            newest_ms: i64::MIN,
            stats: DeltaStats::default(),
        }
    }

    /// Drops the totals of series whose last point is older than
    /// `now_ms - max_idle_ms`; returns how many were dropped.
    pub fn evict_idle(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.max_idle_ms);
        let before = self.series.len();
        self.series.retain(|_, e| e.last_seen_ms >= cutoff);
        let evicted = before - self.series.len();
        self.stats.evicted += evicted as u64;
        evicted
    }

    /// Number of series with a running total.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series has a running total.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// What was counted so far.
    pub fn stats(&self) -> DeltaStats {
        self.stats
    }

    /// Adds a delta point to the total of its series and returns the new
    /// total, or `None` when the point is dropped.
    fn accumulate(
        &mut self,
        key: SeriesKey,
        start_ns: u64,
        time_ns: u64,
        delta: Total,
        add: impl FnOnce(&mut Total, Total),
    ) -> Option<&Total> {
        let seen_ms = super::ns_to_ms(time_ns);
        self.newest_ms = self.newest_ms.max(seen_ms);
        if !self.series.contains_key(&key) && self.series.len() >= self.max_series {
            self.evict_idle(self.newest_ms);
            if self.series.len() >= self.max_series {
                self.stats.overflow += 1;
                return None;
            }
        }
        match self.series.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => Some(
                &v.insert(Entry {
                    last_time_ns: time_ns,
                    last_seen_ms: seen_ms,
                    total: delta,
                })
                .total,
            ),
            std::collections::hash_map::Entry::Occupied(o) => {
                let e = o.into_mut();
                if time_ns <= e.last_time_ns {
                    self.stats.out_of_order += 1;
                    return None;
                }
                if start_ns > e.last_time_ns {
                    self.stats.gaps += 1;
                }
                e.last_time_ns = time_ns;
                e.last_seen_ms = seen_ms;
                add(&mut e.total, delta);
                Some(&e.total)
            }
        }
    }

    /// The cumulative value of a delta sum point.
    pub(crate) fn sum(
        &mut self,
        labels: &Labels,
        start_ns: u64,
        time_ns: u64,
        value: f64,
    ) -> Option<f64> {
        let key = SeriesKey {
            labels: labels.clone(),
            layout: Layout::Sum,
        };
        let total = self.accumulate(key, start_ns, time_ns, Total::Sum(value), |t, d| {
            if let (Total::Sum(t), Total::Sum(d)) = (t, d) {
                *t += d;
            }
        })?;
        match total {
            Total::Sum(v) => Some(*v),
            _ => None,
        }
    }

    /// The cumulative value of a delta classic histogram point.
    pub(crate) fn histogram(
        &mut self,
        labels: &Labels,
        bounds: &[f64],
        start_ns: u64,
        time_ns: u64,
        delta: HistogramTotal,
    ) -> Option<HistogramTotal> {
        let key = SeriesKey {
            labels: labels.clone(),
            layout: Layout::Explicit(bounds.iter().map(|b| b.to_bits()).collect()),
        };
        let total = self.accumulate(key, start_ns, time_ns, Total::Histogram(delta), |t, d| {
            if let (Total::Histogram(t), Total::Histogram(d)) = (t, d) {
                for (a, b) in t.bucket_counts.iter_mut().zip(&d.bucket_counts) {
                    *a += b;
                }
                t.count += d.count;
                t.sum = t.sum.zip(d.sum).map(|(a, b)| a + b);
            }
        })?;
        match total {
            Total::Histogram(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// The cumulative value of a delta exponential histogram point.
    pub(crate) fn exponential(
        &mut self,
        labels: &Labels,
        start_ns: u64,
        time_ns: u64,
        delta: ExpBuckets,
    ) -> Option<ExpBuckets> {
        let key = SeriesKey {
            labels: labels.clone(),
            layout: Layout::Exponential(delta.zero_threshold.to_bits()),
        };
        let total =
            self.accumulate(key, start_ns, time_ns, Total::Exponential(delta), |t, d| {
                if let (Total::Exponential(t), Total::Exponential(d)) = (t, d) {
                    t.add(d);
                }
            })?;
        match total {
            Total::Exponential(h) => Some(h.clone()),
            _ => None,
        }
    }
}
