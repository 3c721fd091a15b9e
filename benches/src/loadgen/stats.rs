//! Counters shared by the client tasks, a bounded latency histogram, and the
//! progress line printed every few seconds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use periscope_benches::sync::MutexRecover;

/// What the clients did, updated as requests complete.
pub struct Stats {
    pub started: Instant,
    /// Records (log records or spans) the collector acknowledged: sent
    /// minus partially rejected.
    pub acked_records: AtomicU64,
    /// Traces of requests acknowledged with no span rejected.
    pub acked_traces: AtomicU64,
    /// Records the collector rejected through OTLP partial success.
    pub rejected_records: AtomicU64,
    /// Records of requests that failed for good or were abandoned at shutdown.
    pub failed_records: AtomicU64,
    /// Encoded protobuf bytes of acknowledged requests.
    pub acked_bytes: AtomicU64,
    /// Encoded protobuf bytes of every attempt, retries included.
    pub sent_bytes: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub errors: AtomicU64,
    /// Nanoseconds since `started` of the last acknowledgement.
    last_ack_nanos: AtomicU64,
    last_error: Mutex<Option<String>>,
    latency: Mutex<Latencies>,
}

struct Latencies {
    total: Histogram,
    /// Since the last progress line.
    interval: Histogram,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            acked_records: AtomicU64::new(0),
            acked_traces: AtomicU64::new(0),
            rejected_records: AtomicU64::new(0),
            failed_records: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_ack_nanos: AtomicU64::new(0),
            last_error: Mutex::new(None),
            latency: Mutex::new(Latencies {
                total: Histogram::new(),
                interval: Histogram::new(),
            }),
        }
    }

    /// Records an acknowledged request.
    pub fn acked(&self, records: u64, rejected: u64, bytes: u64, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.acked_records
            .fetch_add(records - rejected, Ordering::Relaxed);
        self.rejected_records.fetch_add(rejected, Ordering::Relaxed);
        self.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.last_ack_nanos
            .fetch_max(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let micros = latency.as_micros() as u64;
        let mut l = self.latency.lock_or_recover();
        l.total.record(micros);
        l.interval.record(micros);
    }

    /// Records a request given up on.
    pub fn failed(&self, records: u64, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.failed_records.fetch_add(records, Ordering::Relaxed);
        *self.last_error.lock_or_recover() = Some(error);
    }

    /// When the last acknowledgement arrived, if any did.
    pub fn last_ack(&self) -> Option<Instant> {
        match self.last_ack_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.started + Duration::from_nanos(n)),
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock_or_recover().clone()
    }

    /// p50, p99 and max request latency of the whole run, in milliseconds.
    pub fn latency_ms(&self) -> [f64; 3] {
        let l = self.latency.lock_or_recover();
        [l.total.quantile(0.5), l.total.quantile(0.99), l.total.max()].map(|us| us as f64 / 1000.0)
    }

    fn take_interval_latency_ms(&self) -> [f64; 2] {
        let mut l = self.latency.lock_or_recover();
        let q = [l.interval.quantile(0.5), l.interval.quantile(0.99)].map(|us| us as f64 / 1000.0);
        l.interval = Histogram::new();
        q
    }
}

/// Prints a progress line to stderr every `every` until `stop` is cancelled;
/// `unit` names the records ("records", "spans").
pub async fn report_progress(stats: &Stats, every: Duration, unit: &str, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let (mut records, mut bytes, mut at) = (0u64, 0u64, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let (r, b) = (
            stats.acked_records.load(Ordering::Relaxed),
            stats.acked_bytes.load(Ordering::Relaxed),
        );
        let secs = at.elapsed().as_secs_f64();
        let [p50, p99] = stats.take_interval_latency_ms();
        eprintln!(
            "[{:6.1}s] {:>9.0} {unit}/s  {:6.2} MB/s  p50 {p50:.1} ms  p99 {p99:.1} ms  retries {}  errors {}",
            stats.started.elapsed().as_secs_f64(),
            (r - records) as f64 / secs,
            (b - bytes) as f64 / secs / 1e6,
            stats.retries.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
        );
        (records, bytes, at) = (r, b, Instant::now());
    }
}

/// Sub-buckets per power of two: values are kept to within 1/32 (3 %).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;

/// A log-linear histogram of microseconds with a fixed number of buckets, so
/// a long run does not grow memory with the number of requests.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
        (exp - SUB_BITS + 1) as usize * SUB + sub
    }

    /// The upper end of a bucket's range, so quantiles never understate.
    fn upper(index: usize) -> u64 {
        if index < SUB {
            return index as u64;
        }
        let exp = (index / SUB) as u32 + SUB_BITS - 1;
        let sub = (index % SUB) as u64;
        let end = u128::from(SUB as u64 + sub + 1) << (exp - SUB_BITS);
        u64::try_from(end - 1).unwrap_or(u64::MAX)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_within_3_percent() {
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            100,
            1_000,
            12_345,
            999_999,
            1 << 40,
            u64::MAX,
        ] {
            let i = Histogram::index(v);
            let upper = Histogram::upper(i);
            assert!(upper >= v, "{v} above bucket {i} upper {upper}");
            assert!(
                upper - v <= v / 32 + 1,
                "{v} bucket {i} upper {upper} too coarse"
            );
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v * 10);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5000.0 - 1.0).abs() < 0.04, "p50 {p50}");
        assert!((p99 / 9900.0 - 1.0).abs() < 0.04, "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
