//! The collector's background threads, each with an owner: a [`Worker`]
//! is started with a name, told to stop, and joined (or left to finish on
//! its own) by whoever holds it, so that shutdown can say in one place what
//! stops in which order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use periscope_proto::Signal;
use periscope_store::{MetricStore, Wal};

use super::{WalItem, now_ns};
use crate::telemetry::Metrics;

/// A named background thread and its stop flag.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Worker {
    /// Starts `run` on a thread named `name`; it gets the stop flag.
    pub fn spawn(
        name: &str,
        run: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(s))?;
        Ok(Worker { stop, handle })
    }

    /// Tells it to stop (it finishes what it is doing first).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops it and waits for it.
    pub fn join(self) {
        self.stop();
        let _ = self.handle.join();
    }
}

/// How often the metric workers look at their clocks.
const TICK: Duration = Duration::from_millis(200);

/// The metric flusher: writes the head to Parquet every `every` or million
/// samples (and everything at stop), then releases the WAL up to what is
/// durable. Flushes only once `replay_done`: replayed samples must all be
/// in the head before its WAL entries can be released.
pub fn metric_flusher(
    m: Arc<MetricStore>,
    wal: Arc<Wal<WalItem>>,
    every: Duration,
    replay_done: Arc<AtomicBool>,
    counters: Arc<Metrics>,
) -> std::io::Result<Worker> {
    Worker::spawn("metric-flusher", move |stop| {
        // Tenants flush independently: one that fails stays in memory and
        // is retried after a backoff; the WAL is released only up to the
        // oldest entry such a tenant still needs.
        let mut last_log: Option<Instant> = None;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if (stopping || m.flush_due(1_000_000, every)) && replay_done.load(Ordering::SeqCst) {
                let report = m.flush_tenants();
                wal.release(Signal::Metrics, report.durable_lsn);
                counters.note_metric_flush(&report);
                if let Some((tenant, e)) = report.failed.first()
                    && last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    last_log = Some(Instant::now());
                    tracing::error!(%tenant, error = %e, failed_tenants = report.failed.len(),
                        "failed to write a tenant's metrics; other tenants are written, this one is retried");
                }
            }
            if stopping {
                break;
            }
            std::thread::sleep(TICK);
        }
    })
}

/// The metric compactor: merges a partition's small files every 10 s, off
/// the flush path (flushes wait only while it swaps a manifest).
pub fn metric_compactor(m: Arc<MetricStore>) -> std::io::Result<Worker> {
    Worker::spawn("metric-compactor", move |stop| {
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            if last.elapsed() >= Duration::from_secs(10) {
                if let Err(e) = m.compact(now_ns().div_euclid(1_000_000)) {
                    tracing::warn!(error = %e, "metric compaction failed; will retry");
                }
                last = Instant::now();
            }
            std::thread::sleep(TICK);
        }
    })
}
