//! The trace assembler: spans out of the WAL are grouped by trace id in
//! memory until the trace is complete, then written to the span store.
//!
//! A trace is complete when no span of it arrived for `idle`, or when its
//! first span arrived `max_age` ago. Completed traces wait in a ready list
//! and are written together (one file set per tenant and hour) once the
//! oldest has waited `flush_interval`, once enough spans are ready, or when
//! memory runs over the budget — then the oldest pending traces are written
//! early too. Pending, ready and in-flight traces all answer trace-by-id.
//!
//! WAL positions: every (trace, WAL entry) pair is counted until the trace
//! is written; the durable position for the WAL is one below the oldest
//! entry still counted (or the last entry taken in when none is).
//!
//! Tenants fail alone: when the span store cannot write a tenant's traces
//! (its directory is unwritable, say), the other tenants' traces of the
//! same flush are written and stop counting; the failed tenant's stay
//! counted, so the WAL keeps every entry they came from, and are retried
//! with a backoff (1 s, doubling, at most a minute). So that a tenant that
//! keeps failing cannot fill the buffer and stall everybody's ingest, once
//! its unwritten traces hold a quarter of the buffer its span requests are
//! refused at ingest (503 / `UNAVAILABLE`, [`Assembler::refuses_spans`]):
//! its clients retry, nothing more of it is acknowledged, and every trace
//! it already has stays in memory until it is written. (Dropping them from
//! memory to replay them later was tried: a later fragment of the same
//! trace, once written, made replay skip the earlier one, and the WAL stayed
//! pinned until a restart.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use periscope_store::MetricStore;
use std::time::{Duration, Instant};

use periscope_proto::Span;
use periscope_query::LiveTraces;
use periscope_store::{FlushBatch, Fragment, TenantFlush, TenantId, TraceStore};

use super::graph::{GraphBuilder, RecentSpans};
use super::tempo_metrics::TempoMetrics;

use crate::sync::{MutexRecover, RwLockRecover};

/// Tuning of the assembler.
#[derive(Clone, Debug)]
pub struct AssemblerOptions {
    pub idle: Duration,
    pub max_age: Duration,
    pub flush_interval: Duration,
    pub max_spans_per_trace: usize,
    /// Memory for traces not yet written; above it the oldest are written early,
    /// above 1.25 times it new spans wait.
    pub buffer_bytes: usize,
    /// A flush starts once this many spans are ready.
    pub flush_spans: usize,
    /// The first wait before retrying a tenant whose write failed; doubles
    /// with each failure in a row, up to a minute. Default 1 s.
    pub retry_backoff: Duration,
}

impl Default for AssemblerOptions {
    fn default() -> Self {
        AssemblerOptions {
            idle: Duration::from_secs(5),
            max_age: Duration::from_secs(60),
            flush_interval: Duration::from_secs(10),
            max_spans_per_trace: 100_000,
            buffer_bytes: 256 << 20,
            flush_spans: 250_000,
            retry_backoff: Duration::from_secs(1),
        }
    }
}

/// Counters for self-metrics.
#[derive(Debug, Default)]
pub struct AssemblerStats {
    pub spans_received: AtomicU64,
    pub spans_dropped_over_cap: AtomicU64,
    pub traces_written: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub pending_traces: AtomicU64,
    pub buffered_bytes: AtomicU64,
    /// Failed writes of one tenant's traces (one per tenant and attempt).
    pub tenant_flush_failures: AtomicU64,
    /// Tenants whose last write failed.
    pub failing_tenants: AtomicU64,
    /// Span requests refused because their tenant's unwritten traces hold
    /// a quarter of the buffer.
    pub tenant_span_refusals: AtomicU64,
}

/// A tenant whose traces could not be written, waiting to retry.
#[derive(Debug)]
struct Failing {
    failures: u32,
    not_before: Instant,
}

/// The wait before retrying a tenant that failed `failures` times in a row.
fn retry_backoff(failures: u32, first: Duration) -> Duration {
    first
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(60))
}

/// Logs at most one line per minute for a recurring failure.
#[derive(Debug, Default)]
struct LogLimiter(Option<Instant>);

impl LogLimiter {
    fn allow(&mut self, now: Instant) -> bool {
        let ok = self
            .0
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60));
        if ok {
            self.0 = Some(now);
        }
        ok
    }
}

type Key = (TenantId, [u8; 16]);

struct Pending {
    spans: Vec<Span>,
    first: Instant,
    last: Instant,
    bytes: usize,
    /// WAL entries that contributed spans, each counted once in `lsn_refs`.
    lsns: Vec<u64>,
    truncated: bool,
}

struct Done {
    key: Key,
    spans: Arc<Vec<Span>>,
    bytes: usize,
    lsns: Vec<u64>,
    truncated: bool,
}

#[derive(Default)]
struct State {
    pending: foldhash::HashMap<Key, Pending>,
    ready: Vec<Done>,
    ready_spans: usize,
    ready_since: Option<Instant>,
    flushing: Arc<Vec<Done>>,
    lsn_refs: BTreeMap<u64, usize>,
    last_lsn: u64,
    bytes: usize,
    closing: bool,
    /// Tenants whose last write failed; their ready traces wait for `not_before`.
    failing: HashMap<TenantId, Failing>,
    log_limit: LogLimiter,
}

impl State {
    fn watermark(&self) -> u64 {
        match self.lsn_refs.keys().next() {
            Some(oldest) => oldest - 1,
            None => self.last_lsn,
        }
    }

    /// A trace of WAL entry `lsn` is written: one reference fewer.
    fn release_lsn(&mut self, lsn: u64) {
        if let Some(n) = self.lsn_refs.get_mut(&lsn) {
            *n -= 1;
            if *n == 0 {
                self.lsn_refs.remove(&lsn);
            }
        }
    }

    fn complete(&mut self, key: Key) {
        if let Some(p) = self.pending.remove(&key) {
            self.ready_spans += p.spans.len();
            self.ready_since.get_or_insert(Instant::now());
            self.ready.push(Done {
                key,
                spans: Arc::new(p.spans),
                bytes: p.bytes,
                lsns: p.lsns,
                truncated: p.truncated,
            });
        }
    }
}

/// Groups spans into traces; see the module docs.
pub struct Assembler {
    state: Mutex<State>,
    /// Signalled when memory is freed (for blocked `add`s).
    freed: Condvar,
    opts: AssemblerOptions,
    pub stats: AssemblerStats,
    /// Where service-graph and span metrics go, under Tempo's names.
    metrics: std::sync::OnceLock<Arc<MetricStore>>,
    tempo: Mutex<TempoMetrics>,
    /// Failing tenants whose unwritten traces hold a quarter of the buffer:
    /// their span requests are refused. Read on every span request, so
    /// behind its own lock (and a flag for the common case of none).
    refused: std::sync::RwLock<HashSet<TenantId>>,
    any_refused: AtomicBool,
}

impl Assembler {
    /// `last_lsn`: WAL position up to which every span is already stored.
    pub fn new(opts: AssemblerOptions, last_lsn: u64) -> Arc<Assembler> {
        Arc::new(Assembler {
            state: Mutex::new(State {
                last_lsn,
                ..Default::default()
            }),
            freed: Condvar::new(),
            opts,
            stats: AssemblerStats::default(),
            metrics: std::sync::OnceLock::new(),
            tempo: Mutex::new(TempoMetrics::default()),
            refused: std::sync::RwLock::default(),
            any_refused: AtomicBool::new(false),
        })
    }

    /// Whether span requests of `tenant` are refused for now: its traces
    /// cannot be written and already hold a quarter of the buffer.
    pub fn refuses_spans(&self, tenant: &TenantId) -> bool {
        if !self.any_refused.load(Ordering::Relaxed) {
            return false;
        }
        let refused = self.refused.read_or_recover().contains(tenant);
        if refused {
            self.stats
                .tenant_span_refusals
                .fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Also write the service graph and span metrics of written traces to
    /// the metric store (under Grafana Tempo's metric names).
    pub fn send_metrics_to(&self, metrics: Arc<MetricStore>) {
        let _ = self.metrics.set(metrics);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }

    /// Takes in the spans of WAL entry `lsn` (possibly none). Waits while
    /// buffered traces use more than 1.25 times the memory budget.
    pub fn add(&self, lsn: u64, tenant: &TenantId, spans: Vec<Span>) {
        let mut st = self.lock();
        let limit = self.opts.buffer_bytes + self.opts.buffer_bytes / 4;
        while st.bytes > limit && !st.closing {
            st = self
                .freed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let now = Instant::now();
        self.stats
            .spans_received
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        for s in spans {
            let key = (tenant.clone(), s.trace_id);
            let bytes = s.heap_bytes();
            let st = &mut *st;
            let p = st.pending.entry(key).or_insert_with(|| Pending {
                spans: Vec::new(),
                first: now,
                last: now,
                bytes: 0,
                lsns: Vec::new(),
                truncated: false,
            });
            p.last = now;
            if p.lsns.last() != Some(&lsn) {
                p.lsns.push(lsn);
                *st.lsn_refs.entry(lsn).or_default() += 1;
            }
            if p.spans.len() >= self.opts.max_spans_per_trace {
                p.truncated = true;
                self.stats
                    .spans_dropped_over_cap
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            p.bytes += bytes;
            st.bytes += bytes;
            p.spans.push(s);
        }
        st.last_lsn = st.last_lsn.max(lsn);
    }

    /// Moves complete traces to the ready list; when over the memory budget,
    /// the oldest pending traces too. Returns whether a flush is due.
    fn sweep(&self, st: &mut State, now: Instant, all: bool) -> bool {
        let (idle, max_age) = (self.opts.idle, self.opts.max_age);
        let done: Vec<Key> = st
            .pending
            .iter()
            .filter(|(_, p)| all || now - p.last >= idle || now - p.first >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            st.complete(k);
        }
        if st.bytes > self.opts.buffer_bytes && !st.pending.is_empty() {
            let mut by_age: Vec<(Instant, Key, usize)> = st
                .pending
                .iter()
                .map(|(k, p)| (p.first, k.clone(), p.bytes))
                .collect();
            by_age.sort_by_key(|(t, ..)| *t);
            let in_flight: usize = st.ready.iter().map(|d| d.bytes).sum::<usize>()
                + st.flushing.iter().map(|d| d.bytes).sum::<usize>();
            // Write early until what stays pending fits half the budget.
            let mut pending_bytes = st.bytes.saturating_sub(in_flight);
            for (_, k, b) in by_age {
                if pending_bytes <= self.opts.buffer_bytes / 2 {
                    break;
                }
                pending_bytes -= b;
                st.complete(k);
            }
        }
        self.stats
            .pending_traces
            .store(st.pending.len() as u64, Ordering::Relaxed);
        self.stats
            .buffered_bytes
            .store(st.bytes as u64, Ordering::Relaxed);
        !st.ready.is_empty()
            && (all
                || st.ready_spans >= self.opts.flush_spans
                || st.bytes > self.opts.buffer_bytes
                || st
                    .ready_since
                    .is_some_and(|t| now - t >= self.opts.flush_interval))
    }

    /// One round of the flusher: sweeps, and writes the ready traces when
    /// due (`all`: everything pending, for shutdown). Returns the WAL
    /// position now durable.
    pub fn flush_round(&self, store: &TraceStore, recent: &mut RecentSpans, all: bool) -> u64 {
        let (batch_done, max_lsn, durable_before) = {
            let mut st = self.lock();
            let now = Instant::now();
            if !self.sweep(&mut st, now, all) {
                return st.watermark();
            }
            // Tenants waiting out a retry backoff keep their traces in the
            // ready list (at shutdown every tenant gets one more try).
            let (mut batch, waiting): (Vec<Done>, Vec<Done>) = std::mem::take(&mut st.ready)
                .into_iter()
                .partition(|d| all || st.failing.get(&d.key.0).is_none_or(|f| f.not_before <= now));
            st.ready_spans = waiting.iter().map(|d| d.spans.len()).sum();
            st.ready_since = (!waiting.is_empty()).then_some(now);
            // A trace in the batch takes its newer pending spans along: the
            // set's `max_lsn` claims every span of its traces up to the cut.
            let late: Vec<Key> = batch
                .iter()
                .filter(|d| st.pending.contains_key(&d.key))
                .map(|d| d.key.clone())
                .collect();
            for k in late {
                st.complete(k);
            }
            batch.append(&mut st.ready);
            st.ready = waiting;
            if batch.is_empty() {
                return st.watermark();
            }
            let flushing = Arc::new(batch);
            st.flushing = flushing.clone();
            (flushing, st.last_lsn, st.watermark())
        };
        let mut graph = GraphBuilder::default();
        let mut tenants: HashMap<TenantId, TenantFlush> = HashMap::new();
        for d in batch_done.iter() {
            graph.add_fragment(&d.key.0, &d.spans, recent);
            tenants
                .entry(d.key.0.clone())
                .or_default()
                .fragments
                .push(Fragment {
                    spans: d.spans.clone(),
                    truncated: d.truncated,
                });
        }
        let rows = graph.finish();
        for (tenant, (edges, ops)) in &rows {
            let t = tenants.entry(tenant.clone()).or_default();
            t.edges = edges.clone();
            t.operations = ops.clone();
        }
        let all: HashSet<TenantId> = tenants.keys().cloned().collect();
        let batch = FlushBatch {
            tenants,
            max_lsn,
            durable_lsn: durable_before,
        };
        // A panic while writing (a bug, or a file system surprise) must not
        // take the flusher down with it: ingest would stop behind it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.write(batch)));
        let failed: Vec<(TenantId, String)> = match outcome {
            Ok(Ok(())) => Vec::new(),
            Ok(Err(e)) => e
                .failed
                .into_iter()
                .map(|(t, e)| (t, e.to_string()))
                .collect(),
            Err(_) => all
                .iter()
                .map(|t| (t.clone(), "writing traces panicked".to_owned()))
                .collect(),
        };
        let failed_set: HashSet<&TenantId> = failed.iter().map(|(t, _)| t).collect();
        let committed: HashSet<TenantId> = all
            .iter()
            .filter(|t| !failed_set.contains(t))
            .cloned()
            .collect();
        if failed.is_empty() {
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.flush_failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = self.metrics.get() {
            let now_ms = periscope_proto::unix_now_ns().div_euclid(1_000_000);
            let mut tempo = self.tempo.lock_or_recover();
            for (tenant, (edges, ops)) in rows.iter().filter(|(t, _)| committed.contains(*t)) {
                metrics.append(tenant, tempo.record(tenant, edges, ops, now_ms));
            }
        }
        let mut st = self.lock();
        self.note_outcome(&mut st, &committed, &failed);
        let mut retry = Vec::new();
        for d in batch_done.iter() {
            if !committed.contains(&d.key.0) {
                // Kept (visible, counted) and written again after the backoff.
                retry.push(Done {
                    key: d.key.clone(),
                    spans: d.spans.clone(),
                    bytes: d.bytes,
                    lsns: d.lsns.clone(),
                    truncated: d.truncated,
                });
                continue;
            }
            self.stats.traces_written.fetch_add(1, Ordering::Relaxed);
            st.bytes -= d.bytes;
            for lsn in &d.lsns {
                st.release_lsn(*lsn);
            }
        }
        if !retry.is_empty() {
            st.ready_spans += retry.iter().map(|d| d.spans.len()).sum::<usize>();
            st.ready_since.get_or_insert(Instant::now());
            st.ready.extend(retry);
        }
        // Freeing a batch of spans takes a while: not under the lock, and
        // not on the flusher's own time.
        let written = std::mem::take(&mut st.flushing);
        self.update_refused(&st);
        let _ = std::thread::Builder::new()
            .name("trace-free".into())
            .spawn(move || drop((written, batch_done)));
        self.freed.notify_all();
        st.watermark()
    }

    /// Records which tenants' writes failed (backoff, counters, a log line
    /// at most once a minute) and which are healthy again.
    fn note_outcome(
        &self,
        st: &mut State,
        committed: &HashSet<TenantId>,
        failed: &[(TenantId, String)],
    ) {
        let now = Instant::now();
        for t in committed {
            if let Some(f) = st.failing.remove(t) {
                tracing::info!(tenant = %t, failures = f.failures, "traces of a tenant are written again");
            }
        }
        for (t, _) in failed {
            let f = st.failing.entry(t.clone()).or_insert(Failing {
                failures: 0,
                not_before: now,
            });
            f.failures += 1;
            f.not_before = now + retry_backoff(f.failures, self.opts.retry_backoff);
        }
        self.stats
            .tenant_flush_failures
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        self.stats
            .failing_tenants
            .store(st.failing.len() as u64, Ordering::Relaxed);
        if let Some((tenant, error)) = failed.first()
            && st.log_limit.allow(now)
        {
            tracing::error!(%tenant, %error, failed_tenants = failed.len(), failing_tenants = st.failing.len(),
                "failed to write a tenant's traces; other tenants are written, this one is retried");
        }
    }

    /// Decides which failing tenants' span requests are refused: those
    /// whose unwritten traces hold more than a quarter of the buffer.
    fn update_refused(&self, st: &State) {
        let cap = self.opts.buffer_bytes / 4;
        let mut held: HashMap<&TenantId, usize> = HashMap::new();
        if !st.failing.is_empty() {
            for d in st
                .ready
                .iter()
                .filter(|d| st.failing.contains_key(&d.key.0))
            {
                *held.entry(&d.key.0).or_default() += d.bytes;
            }
        }
        let now: HashSet<TenantId> = held
            .into_iter()
            .filter(|(_, bytes)| *bytes > cap)
            .map(|(t, _)| t.clone())
            .collect();
        let mut refused = self.refused.write_or_recover();
        if *refused != now {
            if let Some(t) = now.difference(&refused).next() {
                tracing::warn!(tenant = %t, "span requests of a tenant whose traces cannot be written are refused until they are");
            }
            self.any_refused.store(!now.is_empty(), Ordering::Relaxed);
            *refused = now;
        }
    }

    /// Lets blocked `add`s through (shutdown: the flusher stops draining).
    pub fn close(&self) {
        self.lock().closing = true;
        self.freed.notify_all();
    }

    /// Runs the flusher until `stop`, then writes everything pending.
    /// `release` hands the durable WAL position on (it may decline, e.g.
    /// while the WAL is being replayed; it is offered again).
    pub fn run_flusher(
        self: Arc<Self>,
        store: Arc<TraceStore>,
        stop: Arc<AtomicBool>,
        release: impl Fn(u64) -> bool,
    ) {
        let mut recent = RecentSpans::new(1_000_000);
        let mut released = 0;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let durable = self.flush_round(&store, &mut recent, stopping);
            if durable > released && release(durable) {
                released = durable;
            }
            if stopping {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl LiveTraces for Assembler {
    fn spans(&self, tenant: &TenantId, trace_id: &[u8; 16]) -> Vec<Span> {
        let st = self.lock();
        let key = (tenant.clone(), *trace_id);
        let mut out: Vec<Span> = st
            .pending
            .get(&key)
            .map(|p| p.spans.clone())
            .unwrap_or_default();
        for d in st.ready.iter().chain(st.flushing.iter()) {
            if d.key == key {
                out.extend(d.spans.iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use periscope_proto::{SpanKind, SpanResource, StatusCode};
    use periscope_store::{DataDir, TraceStoreOptions};

    use super::*;

    fn span(trace: u8, id: u8, parent: Option<u8>) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 0,
            name: "op".into(),
            kind: SpanKind::Server,
            start_ns: periscope_proto::unix_now_ns(),
            end_ns: periscope_proto::unix_now_ns() + 1000,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            resource: Arc::new(SpanResource {
                service: "svc".into(),
                attributes: vec![],
            }),
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    #[test]
    fn watermark_follows_written_traces_and_cap_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(
            &DataDir::open(dir.path()).unwrap(),
            TraceStoreOptions::default(),
        )
        .unwrap();
        let a = Assembler::new(
            AssemblerOptions {
                idle: Duration::from_millis(0),
                max_spans_per_trace: 2,
                flush_interval: Duration::from_secs(3600),
                ..Default::default()
            },
            0,
        );
        let t = TenantId::default_tenant();
        a.add(1, &t, vec![span(1, 1, None), span(2, 1, None)]);
        a.add(2, &t, vec![span(1, 2, Some(1)), span(1, 3, Some(1))]);
        assert_eq!(a.spans(&t, &[1; 16]).len(), 2, "capped at 2");
        assert_eq!(a.stats.spans_dropped_over_cap.load(Ordering::Relaxed), 1);
        let mut recent = RecentSpans::new(100);
        // Nothing due yet (flush interval long): watermark stays below entry 1.
        assert_eq!(a.flush_round(&store, &mut recent, false), 0);
        assert_eq!(a.spans(&t, &[1; 16]).len(), 2, "ready traces stay visible");
        assert_eq!(a.flush_round(&store, &mut recent, true), 2);
        assert_eq!(store.trace(&t, &[1; 16]).unwrap().len(), 2);
        assert!(a.spans(&t, &[1; 16]).is_empty());
        let sets = store.file_sets(&t);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].max_lsn, 2);
    }

    #[test]
    fn a_written_trace_takes_its_newer_pending_spans_along() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(
            &DataDir::open(dir.path()).unwrap(),
            TraceStoreOptions::default(),
        )
        .unwrap();
        let a = Assembler::new(
            AssemblerOptions {
                idle: Duration::from_secs(3600),
                max_age: Duration::from_secs(3600),
                flush_spans: 1,
                ..Default::default()
            },
            0,
        );
        let t = TenantId::default_tenant();
        a.add(1, &t, vec![span(1, 1, None)]);
        // Complete (as idle would), then a late span starts a new fragment.
        a.lock().complete((t.clone(), [1; 16]));
        a.add(2, &t, vec![span(1, 2, Some(1))]);
        let mut recent = RecentSpans::new(100);
        assert_eq!(a.flush_round(&store, &mut recent, false), 2);
        let sets = store.file_sets(&t);
        assert_eq!((sets.len(), sets[0].max_lsn, sets[0].span_count), (1, 2, 2));
        assert!(a.spans(&t, &[1; 16]).is_empty());
    }
    /// A store where tenant `bad`'s `traces` directory is a regular file
    /// (as root, permissions do not stop writes; this does).
    fn store_with_obstacle() -> (tempfile::TempDir, Arc<TraceStore>, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let obstacle = dir.path().join("tenants/bad/traces");
        let store = TraceStore::open(
            &DataDir::open(dir.path()).unwrap(),
            TraceStoreOptions::default(),
        )
        .unwrap();
        std::fs::create_dir_all(obstacle.parent().unwrap()).unwrap();
        std::fs::write(&obstacle, b"not a directory").unwrap();
        (dir, store, obstacle)
    }

    fn eager(buffer_bytes: usize) -> AssemblerOptions {
        AssemblerOptions {
            idle: Duration::ZERO,
            flush_spans: 1,
            retry_backoff: Duration::ZERO,
            buffer_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn a_tenant_that_cannot_be_written_does_not_stop_the_others() {
        let (_dir, store, obstacle) = store_with_obstacle();
        let a = Assembler::new(eager(256 << 20), 0);
        let (good, bad) = (
            TenantId::parse("good").unwrap(),
            TenantId::parse("bad").unwrap(),
        );
        let mut recent = RecentSpans::new(100);
        a.add(1, &good, vec![span(1, 1, None)]);
        a.add(2, &bad, vec![span(2, 1, None)]);
        a.add(3, &good, vec![span(3, 1, None)]);
        // The good tenant is written; the WAL position stays below entry 2.
        assert_eq!(a.flush_round(&store, &mut recent, false), 1);
        assert_eq!(store.trace(&good, &[3; 16]).unwrap().len(), 1);
        assert!(store.trace(&bad, &[2; 16]).unwrap().is_empty());
        assert_eq!(a.spans(&bad, &[2; 16]).len(), 1, "kept, still answered");
        assert_eq!(a.stats.tenant_flush_failures.load(Ordering::Relaxed), 1);
        assert_eq!(a.stats.failing_tenants.load(Ordering::Relaxed), 1);
        // The good tenant keeps flushing while the bad one keeps failing.
        a.add(4, &good, vec![span(4, 1, None)]);
        assert_eq!(a.flush_round(&store, &mut recent, true), 1);
        assert_eq!(store.trace(&good, &[4; 16]).unwrap().len(), 1);
        assert_eq!(a.stats.tenant_flush_failures.load(Ordering::Relaxed), 2);
        // The obstacle gone, the retry writes it and the WAL position moves on.
        std::fs::remove_file(&obstacle).unwrap();
        assert_eq!(a.flush_round(&store, &mut recent, true), 4);
        assert_eq!(store.trace(&bad, &[2; 16]).unwrap().len(), 1);
        assert_eq!(a.stats.failing_tenants.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failing_tenant_is_refused_spans_once_it_holds_a_quarter_and_loses_nothing() {
        let (_dir, store, obstacle) = store_with_obstacle();
        let one = span(1, 1, None).heap_bytes();
        // A quarter of the buffer holds about two traces of the failing tenant.
        let a = Assembler::new(eager(one * 10), 0);
        let (good, bad) = (
            TenantId::parse("good").unwrap(),
            TenantId::parse("bad").unwrap(),
        );
        let mut recent = RecentSpans::new(100);
        let mut taken = Vec::new();
        for i in 0..20u8 {
            // What ingest does: a refused request is not acknowledged.
            if !a.refuses_spans(&bad) {
                a.add(u64::from(i) + 1, &bad, vec![span(i + 1, 1, None)]);
                taken.push(i + 1);
            }
            assert!(!a.refuses_spans(&good));
            a.add(u64::from(i) + 100, &good, vec![span(i + 101, 1, None)]);
            assert_eq!(a.flush_round(&store, &mut recent, false), 0);
            // The bad tenant never holds much more than a quarter.
            assert!(
                a.lock().bytes <= one * 10 / 4 + 2 * one,
                "{}",
                a.lock().bytes
            );
        }
        assert!(a.refuses_spans(&bad));
        assert!(taken.len() < 20, "the failing tenant was never refused");
        assert!(a.stats.tenant_span_refusals.load(Ordering::Relaxed) > 0);
        for i in 0..20u8 {
            assert_eq!(store.trace(&good, &[i + 101; 16]).unwrap().len(), 1);
        }
        // Every trace of the failing tenant it acknowledged is still held:
        // once it can be written, all of them are, and it is let in again.
        std::fs::remove_file(&obstacle).unwrap();
        a.flush_round(&store, &mut recent, true);
        for i in &taken {
            assert_eq!(store.trace(&bad, &[*i; 16]).unwrap().len(), 1, "trace {i}");
        }
        assert!(!a.refuses_spans(&bad));
    }
}
