//! Where queries run: admission (at most `max_concurrent` queries, and
//! `max_concurrent_per_tenant` for one tenant; beyond them a request is
//! refused at once with 429), a deadline per query that the store's loops
//! check, and a pool of `threads` worker threads of their own, so that a
//! flood of heavy queries never takes the tokio blocking threads that
//! ingest decodes on.
//!
//! A query holds its permit until its work has ended, not until its answer
//! was sent: a client that gives up (or times out) frees its slot only when
//! the work has stopped at its next deadline check.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use periscope_store::{Deadline, TenantId};

use crate::QueryLimits;
use crate::sync::MutexRecover;

/// Stack of a query thread: parsers and the PromQL evaluator recurse once
/// per level of a (depth-limited) query.
const QUERY_STACK_BYTES: usize = 32 << 20;

/// How long past its deadline a query's answer is awaited before the client
/// is told it timed out (the work stops at its next check meanwhile).
const ANSWER_GRACE: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

/// Why a query did not run or did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Too many queries at once; the message names the limit.
    #[error("{0}")]
    Busy(String),
    /// The query ran past its deadline.
    #[error("query timed out after {0:?} (--query-timeout)")]
    Timeout(Duration),
    /// The query's thread panicked; the pool survives.
    #[error("query failed: {0}")]
    Failed(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct QueryStats {
    /// Queries admitted.
    pub started: AtomicU64,
    /// Queries refused for the concurrency limits.
    pub rejected_busy: AtomicU64,
    /// Queries that ran past their deadline.
    pub timeouts: AtomicU64,
    /// Queries refused for a limit on their text, samples or series.
    pub rejected_limits: AtomicU64,
    /// Queries whose thread panicked.
    pub panics: AtomicU64,
    /// Queries running now.
    pub running: AtomicU64,
}

/// The query limits, the worker pool and admission, shared by every handler.
pub struct QueryRuntime {
    /// The limits.
    pub limits: QueryLimits,
    /// Counters for `/metrics`.
    pub stats: QueryStats,
    jobs: SyncSender<Job>,
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    total: usize,
    per_tenant: HashMap<TenantId, usize>,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A running query's slot, released when dropped (when its work ends).
pub(crate) struct Permit {
    rt: Arc<QueryRuntime>,
    tenant: TenantId,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut r = self.rt.running.lock_or_recover();
        r.total = r.total.saturating_sub(1);
        if let Some(n) = r.per_tenant.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.per_tenant.remove(&self.tenant);
            }
        }
        self.rt.stats.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Cancels a query's work when its handler is dropped before the answer
/// came (the client went away), unless disarmed.
struct CancelOnDrop(Option<Deadline>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.cancel();
        }
    }
}

impl QueryRuntime {
    /// Starts the worker threads. The job queue holds at most
    /// `max_concurrent` jobs: admission already bounds what is queued.
    pub fn new(limits: QueryLimits) -> std::io::Result<Arc<QueryRuntime>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(limits.max_concurrent.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..limits.threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("periscope-query-{i}"))
                .stack_size(QUERY_STACK_BYTES)
                .spawn(move || worker(&rx))?;
        }
        Ok(Arc::new(QueryRuntime {
            limits,
            stats: QueryStats::default(),
            jobs: tx,
            running: Mutex::default(),
        }))
    }

    fn admit(self: &Arc<Self>, tenant: &TenantId) -> Result<Permit, Refusal> {
        let mut r = self.running.lock_or_recover();
        let l = &self.limits;
        let refused = if r.total >= l.max_concurrent {
            Some(format!(
                "too many concurrent queries: {} running, the limit is {} (--query-max-concurrent); retry later",
                r.total, l.max_concurrent
            ))
        } else {
            let mine = r.per_tenant.get(tenant).copied().unwrap_or(0);
            (mine >= l.max_concurrent_per_tenant).then(|| {
                format!(
                    "too many concurrent queries for tenant {}: {mine} running, the limit is {} (--query-max-concurrent-per-tenant); retry later",
                    tenant.as_str(),
                    l.max_concurrent_per_tenant
                )
            })
        };
        if let Some(msg) = refused {
            self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Busy(msg));
        }
        r.total += 1;
        *r.per_tenant.entry(tenant.clone()).or_default() += 1;
        self.stats.running.fetch_add(1, Ordering::Relaxed);
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            rt: self.clone(),
            tenant: tenant.clone(),
        })
    }

    /// Runs `f` on a query thread with a deadline `timeout` from now (at
    /// most `--query-timeout`), once admitted for `tenant`. The answer is
    /// awaited until shortly past the deadline; the work itself stops at
    /// its next deadline check, and on the caller's drop.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        tenant: &TenantId,
        timeout: Option<Duration>,
        f: impl FnOnce(&Deadline) -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let timeout = timeout.map_or(self.limits.timeout, |t| t.min(self.limits.timeout));
        let permit = self.admit(tenant)?;
        let deadline = Deadline::after(timeout);
        let mut guard = CancelOnDrop(Some(deadline.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job_deadline = deadline.clone();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(&job_deadline)));
            // The slot is free once the work has ended.
            drop(permit);
            let _ = tx.send(r);
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Busy(format!(
                    "the query queue is full (--query-max-concurrent {}); retry later",
                    self.limits.max_concurrent
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Refusal::Failed("query threads are gone".into()));
            }
        }
        let answer = tokio::time::timeout(timeout + ANSWER_GRACE, rx).await;
        guard.0 = None;
        match answer {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(panic))) => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panicked".into());
                tracing::error!(panic = %msg, "query panicked");
                Err(Refusal::Failed(format!("query panicked: {msg}")))
            }
            Ok(Err(_)) => Err(Refusal::Failed("query thread ended".into())),
            Err(_) => {
                deadline.cancel();
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Timeout(timeout))
            }
        }
    }

    /// Takes a query slot for `tenant` until the returned value is dropped.
    #[cfg(test)]
    pub(crate) fn hold_for_test(self: &Arc<Self>, tenant: &TenantId) -> Permit {
        self.admit(tenant).expect("a free slot")
    }

    /// Counts a query refused for a limit on what it reads.
    pub(crate) fn count_limit(&self) {
        self.stats.rejected_limits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a query stopped at its deadline by the store.
    pub(crate) fn count_timeout(&self) {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the query self-metrics in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            (
                "periscope_query_started_total",
                "counter",
                "Queries admitted to run.",
                get(&s.started),
            ),
            (
                "periscope_query_rejected_busy_total",
                "counter",
                "Queries refused with 429 for the concurrency limits.",
                get(&s.rejected_busy),
            ),
            (
                "periscope_query_timeouts_total",
                "counter",
                "Queries stopped at their deadline.",
                get(&s.timeouts),
            ),
            (
                "periscope_query_rejected_limits_total",
                "counter",
                "Queries refused for a limit on their text, samples or series.",
                get(&s.rejected_limits),
            ),
            (
                "periscope_query_panics_total",
                "counter",
                "Queries whose thread panicked (answered 500).",
                get(&s.panics),
            ),
            (
                "periscope_query_running",
                "gauge",
                "Queries running now.",
                get(&s.running),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

/// A worker: runs jobs until the runtime is dropped.
fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take one job.
        let job = match rx.lock_or_recover().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(total: usize, per_tenant: usize) -> Arc<QueryRuntime> {
        QueryRuntime::new(QueryLimits {
            max_concurrent: total,
            max_concurrent_per_tenant: per_tenant,
            threads: 2,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn admission_counts_per_tenant_and_in_all() {
        let rt = runtime(3, 2);
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let p1 = rt.admit(&a).unwrap();
        let _p2 = rt.admit(&a).unwrap();
        let err = rt.admit(&a).err().unwrap();
        assert!(
            matches!(&err, Refusal::Busy(m) if m.contains("--query-max-concurrent-per-tenant")),
            "{err}"
        );
        let _p3 = rt.admit(&b).unwrap();
        let err = rt.admit(&b).err().unwrap();
        assert!(
            matches!(&err, Refusal::Busy(m) if m.contains("(--query-max-concurrent)")),
            "{err}"
        );
        drop(p1);
        assert!(rt.admit(&b).is_ok());
        assert_eq!(rt.stats.rejected_busy.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_panicking_query_is_an_error_and_the_pool_survives() {
        let rt = runtime(4, 4);
        let t = TenantId::default_tenant();
        let r: Result<(), _> = rt.run(&t, None, |_| panic!("boom")).await;
        assert!(
            matches!(&r, Err(Refusal::Failed(m)) if m.contains("boom")),
            "{r:?}"
        );
        assert_eq!(rt.run(&t, None, |_| 7).await, Ok(7));
        assert_eq!(rt.stats.running.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn work_sees_its_deadline_expire() {
        let rt = runtime(4, 4);
        let t = TenantId::default_tenant();
        let r = rt
            .run(&t, Some(Duration::from_millis(1)), |d| {
                // Stand-in for a store loop: stops at the deadline.
                while d.check().is_ok() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                d.check()
            })
            .await
            .unwrap();
        assert!(matches!(
            r,
            Err(periscope_store::StoreError::DeadlineExceeded)
        ));
    }
}
