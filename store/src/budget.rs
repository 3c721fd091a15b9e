//! What one query may spend in the store: a [`Deadline`] its read loops
//! check (so that a timed-out or abandoned query stops working, not only
//! stops being answered), and a [`ReadBudget`] that counts series and
//! samples as they are read and stops the read at the limit, before the
//! memory is taken rather than after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::StoreError;

/// When a query must stop, and a flag its caller sets to stop it earlier
/// (the client went away). The default never expires.
#[derive(Clone, Debug, Default)]
pub struct Deadline {
    at: Option<Instant>,
    cancel: Arc<AtomicBool>,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline {
            // A timeout too long to represent is no timeout.
            at: Instant::now().checked_add(timeout),
            cancel: Arc::default(),
        }
    }

    /// A deadline that never expires (only [`Deadline::cancel`] stops it).
    pub fn none() -> Deadline {
        Deadline::default()
    }

    /// Stops the work at its next check, from any thread.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// When it expires, if ever.
    pub fn instant(&self) -> Option<Instant> {
        self.at
    }

    /// Whether the work should stop now.
    pub fn expired(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.at.is_some_and(|at| Instant::now() > at)
    }

    /// `Err(StoreError::Cancelled)` once expired or cancelled.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(StoreError::Cancelled);
        }
        if self.at.is_some_and(|at| Instant::now() > at) {
            return Err(StoreError::DeadlineExceeded);
        }
        Ok(())
    }
}

/// The series and samples one query may read, counted as they are read
/// (from every thread of the read), with the query's deadline.
#[derive(Debug)]
pub struct ReadBudget {
    /// Checked between files and series.
    pub deadline: Deadline,
    max_samples: usize,
    max_series: usize,
    samples: AtomicUsize,
    series: AtomicUsize,
}

impl ReadBudget {
    /// A budget of `max_samples` samples and `max_series` series.
    pub fn new(deadline: Deadline, max_samples: usize, max_series: usize) -> ReadBudget {
        ReadBudget {
            deadline,
            max_samples,
            max_series,
            samples: AtomicUsize::new(0),
            series: AtomicUsize::new(0),
        }
    }

    /// No limit and no deadline.
    pub fn unlimited() -> ReadBudget {
        ReadBudget::new(Deadline::none(), usize::MAX, usize::MAX)
    }

    /// Counts `n` more samples read; an error past the limit.
    pub fn charge_samples(&self, n: usize) -> Result<(), StoreError> {
        let total = self
            .samples
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if total > self.max_samples {
            return Err(StoreError::LimitExceeded {
                what: "samples",
                limit: self.max_samples,
            });
        }
        Ok(())
    }

    /// Counts `n` more series read; an error past the limit.
    pub fn charge_series(&self, n: usize) -> Result<(), StoreError> {
        let total = self
            .series
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        if total > self.max_series {
            return Err(StoreError::LimitExceeded {
                what: "series",
                limit: self.max_series,
            });
        }
        Ok(())
    }

    /// Samples counted so far.
    pub fn samples(&self) -> usize {
        self.samples.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_expire_and_cancel() {
        assert!(Deadline::none().check().is_ok());
        assert!(Deadline::after(Duration::from_secs(3600)).check().is_ok());
        assert!(Deadline::after(Duration::MAX).check().is_ok());
        let d = Deadline::after(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(d.check(), Err(StoreError::DeadlineExceeded)));
        let d = Deadline::none();
        d.clone().cancel();
        assert!(matches!(d.check(), Err(StoreError::Cancelled)));
    }

    #[test]
    fn budgets_stop_at_the_limit() {
        let b = ReadBudget::new(Deadline::none(), 10, 2);
        for (samples, ok) in [(4, true), (6, true), (1, false)] {
            assert_eq!(b.charge_samples(samples).is_ok(), ok, "{samples}");
        }
        assert!(b.charge_series(2).is_ok());
        assert!(matches!(
            b.charge_series(1),
            Err(StoreError::LimitExceeded {
                what: "series",
                limit: 2
            })
        ));
        assert!(ReadBudget::unlimited().charge_samples(usize::MAX).is_ok());
    }

    /// A store with `series` series `m{i="..."}` of `per_series` samples.
    fn metrics(series: usize, per_series: i64) -> std::sync::Arc<crate::MetricStore> {
        use periscope_proto::{PromBatch, PromSample, SampleValue, normalize_labels};
        let store = crate::MetricStore::new(Default::default());
        let samples = (0..series)
            .flat_map(|i| {
                (0..per_series).map(move |t| PromSample {
                    labels: normalize_labels(vec![
                        ("__name__".into(), "m".into()),
                        ("i".into(), i.to_string()),
                    ]),
                    timestamp_ms: t,
                    value: SampleValue::Float(1.0),
                })
            })
            .collect();
        store.append(
            &crate::TenantId::default_tenant(),
            PromBatch {
                samples,
                ..Default::default()
            },
        );
        store
    }

    #[test]
    fn metric_reads_stop_at_their_budget() {
        let store = metrics(10, 100);
        let t = crate::TenantId::default_tenant();
        let select = |b: &ReadBudget| {
            store
                .select_within(&t, Some("m"), &|_| true, 0, 1000, b)
                .map(|s| s.len())
        };
        // (max samples, max series, deadline expired, outcome)
        for (samples, series, expired, want) in [
            (usize::MAX, usize::MAX, false, Ok(10)),
            (1000, 10, false, Ok(10)),
            (999, 10, false, Err("samples")),
            (1000, 9, false, Err("series")),
            (usize::MAX, usize::MAX, true, Err("deadline")),
        ] {
            let d = Deadline::none();
            if expired {
                d.cancel();
            }
            let got = select(&ReadBudget::new(d, samples, series)).map_err(|e| match e {
                StoreError::LimitExceeded { what, .. } => what,
                StoreError::Cancelled => "deadline",
                _ => "other",
            });
            assert_eq!(got, want, "{samples} {series} {expired}");
        }
        let labels = store.series_labels_within(
            &t,
            None,
            &|_| true,
            0,
            1000,
            &ReadBudget::new(Deadline::none(), usize::MAX, 5),
        );
        assert!(matches!(labels, Err(StoreError::LimitExceeded { .. })));
    }
}
