//! Periscope's own metrics, rendered in the Prometheus text format at
//! `GET /metrics`. Names and labels are listed in docs/instrumentation.md.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use periscope_proto::Signal;
use periscope_store::{IndexStats, WalStats};

/// Which receiver a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc = 0,
    Http = 1,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

type PerSignal = [[AtomicU64; 2]; 3];

/// One of the collector's listeners, as the `listener` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    OtlpGrpc = 0,
    OtlpHttp = 1,
    /// The query API, UI, remote write and `/metrics`.
    Http = 2,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::OtlpGrpc, Listener::OtlpHttp, Listener::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::OtlpGrpc => "otlp_grpc",
            Listener::OtlpHttp => "otlp_http",
            Listener::Http => "http",
        }
    }
}

/// Counters per signal and transport.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records in requests that decoded.
    pub received: PerSignal,
    /// Records made durable and acknowledged.
    pub accepted: PerSignal,
    /// Records dropped by validation (partial success).
    pub rejected: PerSignal,
    /// Requests turned away by backpressure (429 / RESOURCE_EXHAUSTED).
    pub refused_requests: PerSignal,
    /// Records in those requests (protobuf only; JSON bodies are not parsed to count them).
    pub refused_records: PerSignal,
    /// Requests that failed to decode or were too large.
    pub invalid_requests: PerSignal,
    /// Bytes of the in-flight budget in use.
    pub inflight_bytes: AtomicU64,
    /// Failed writes of one tenant's metrics (one per tenant and attempt).
    pub metric_flush_failures: AtomicU64,
    /// Tenants whose metrics are waiting to be retried after a failed write.
    pub metric_failing_tenants: AtomicU64,
    /// Request handlers that panicked, per [`Listener`] (answered 500 / INTERNAL).
    pub panics: [AtomicU64; 3],
    /// Connections, timeouts and remote-write bounds.
    pub edge: EdgeMetrics,
}

impl Metrics {
    pub fn add(counter: &PerSignal, signal: Signal, transport: Transport, n: u64) {
        counter[signal as usize - 1][transport as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn family(out: &mut String, name: &str, help: &str, c: &PerSignal) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in Signal::ALL {
            for t in [Transport::Grpc, Transport::Http] {
                let v = c[s as usize - 1][t as usize].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}{{signal=\"{}\",transport=\"{}\"}} {v}",
                    s.as_str(),
                    t.as_str()
                );
            }
        }
    }

    /// The exposition text of every self-metric.
    pub fn render(&self, wal: &WalStats, index: &IndexStats, inflight_limit: usize) -> String {
        let mut o = String::with_capacity(4096);
        Self::family(
            &mut o,
            "periscope_received_records_total",
            "Records received in decodable requests.",
            &self.received,
        );
        Self::family(
            &mut o,
            "periscope_accepted_records_total",
            "Records written to the WAL and acknowledged.",
            &self.accepted,
        );
        Self::family(
            &mut o,
            "periscope_rejected_records_total",
            "Records rejected by validation (OTLP partial success).",
            &self.rejected,
        );
        Self::family(
            &mut o,
            "periscope_refused_requests_total",
            "Requests refused by backpressure (HTTP 429, gRPC RESOURCE_EXHAUSTED).",
            &self.refused_requests,
        );
        Self::family(
            &mut o,
            "periscope_refused_records_total",
            "Records in protobuf requests refused by backpressure.",
            &self.refused_records,
        );
        Self::family(
            &mut o,
            "periscope_invalid_requests_total",
            "Requests that could not be decoded or were too large.",
            &self.invalid_requests,
        );
        let g = |o: &mut String, name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        g(
            &mut o,
            "periscope_inflight_bytes",
            "Bytes of the in-flight budget in use.",
            "gauge",
            ld(&self.inflight_bytes),
        );
        g(
            &mut o,
            "periscope_inflight_limit_bytes",
            "The in-flight budget.",
            "gauge",
            inflight_limit as f64,
        );
        g(
            &mut o,
            "periscope_wal_written_bytes_total",
            "Bytes appended to the WAL.",
            "counter",
            ld(&wal.bytes_written),
        );
        g(
            &mut o,
            "periscope_wal_entries_total",
            "Entries appended to the WAL.",
            "counter",
            ld(&wal.entries),
        );
        g(
            &mut o,
            "periscope_wal_disk_bytes",
            "Bytes of WAL segments on disk.",
            "gauge",
            ld(&wal.disk_bytes),
        );
        g(
            &mut o,
            "periscope_wal_segments",
            "WAL segments on disk.",
            "gauge",
            ld(&wal.segments),
        );
        g(
            &mut o,
            "periscope_wal_queue_depth",
            "Entries waiting for the WAL writer.",
            "gauge",
            ld(&wal.queue_depth),
        );
        let name = "periscope_wal_fsync_duration_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Duration of WAL fsyncs (one per group commit).\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (b, c) in periscope_store::FSYNC_BUCKETS
            .iter()
            .zip(&wal.fsync_buckets)
        {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let n = wal.fsyncs.load(Ordering::Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            wal.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(o, "{name}_count {n}");
        g(
            &mut o,
            "periscope_logs_indexed_records_total",
            "Log records handed to the index.",
            "counter",
            ld(&index.indexed_records),
        );
        g(
            &mut o,
            "periscope_logs_replay_skipped_records_total",
            "Replayed log records already in the index.",
            "counter",
            ld(&index.replay_skipped_records),
        );
        g(
            &mut o,
            "periscope_logs_commits_total",
            "Log index commit rounds.",
            "counter",
            ld(&index.commits),
        );
        g(
            &mut o,
            "periscope_logs_commit_errors_total",
            "Failed log index commits.",
            "counter",
            ld(&index.commit_errors),
        );
        g(
            &mut o,
            "periscope_logs_index_lag_seconds",
            "Acknowledgement-to-searchable delay at the last commit.",
            "gauge",
            ld(&index.last_lag_nanos) / 1e9,
        );
        g(
            &mut o,
            "periscope_logs_open_writers",
            "Open log partition writers.",
            "gauge",
            ld(&index.open_writers),
        );
        for (name, help, kind, v) in [
            (
                "periscope_logs_partition_commits_total",
                "Log index commits, one per partition with new records per round.",
                "counter",
                &index.partition_commits,
            ),
            (
                "periscope_logs_staged_records",
                "Log records waiting in memory for a writer of their partition.",
                "gauge",
                &index.staged_records,
            ),
            (
                "periscope_logs_rebuilt_partitions_total",
                "Log partitions rebuilt from the WAL after their writer failed.",
                "counter",
                &index.rebuilt_partitions,
            ),
            (
                "periscope_wal_disk_full",
                "1 while WAL writes fail for lack of disk space (ingest answers 503).",
                "gauge",
                &wal.disk_full,
            ),
            (
                "periscope_wal_disk_full_refusals_total",
                "WAL entries refused because the disk was full.",
                "counter",
                &wal.disk_full_refusals,
            ),
        ] {
            g(&mut o, name, help, kind, ld(v));
        }
        o.push_str(&self.render_panics());
        self.edge.render(&mut o);
        o
    }

    /// The panic counter's exposition text.
    pub fn render_panics(&self) -> String {
        let name = "periscope_panics_total";
        let mut o = format!(
            "# HELP {name} Request handlers that panicked (answered 500 or gRPC INTERNAL).\n# TYPE {name} counter\n"
        );
        for l in Listener::ALL {
            let v = self.panics[l as usize].load(Ordering::Relaxed);
            let _ = writeln!(o, "{name}{{listener=\"{}\"}} {v}", l.as_str());
        }
        o
    }
}

impl Metrics {
    /// Counts what a metric flush left unwritten.
    pub fn note_metric_flush(&self, report: &periscope_store::MetricFlush) {
        self.metric_flush_failures
            .fetch_add(report.failed.len() as u64, Ordering::Relaxed);
        self.metric_failing_tenants.store(
            (report.failed.len() + report.deferred) as u64,
            Ordering::Relaxed,
        );
    }

    /// Appends the per-tenant flush failure metrics of traces and metrics
    /// (labelled by signal only: a tenant label would be unbounded).
    pub fn render_flush_failures(&self, o: &mut String, a: &crate::traces::AssemblerStats) {
        let ld = |v: &AtomicU64| v.load(Ordering::Relaxed);
        for (name, help, kind, traces, metrics) in [
            (
                "periscope_flush_failures_total",
                "Failed writes of one tenant's data to its store (retried with backoff; other tenants are not held up).",
                "counter",
                ld(&a.tenant_flush_failures),
                ld(&self.metric_flush_failures),
            ),
            (
                "periscope_flush_failing_tenants",
                "Tenants whose last write failed, waiting to be retried.",
                "gauge",
                ld(&a.failing_tenants),
                ld(&self.metric_failing_tenants),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(o, "{name}{{signal=\"traces\"}} {traces}");
            let _ = writeln!(o, "{name}{{signal=\"metrics\"}} {metrics}");
        }
        let name = "periscope_trace_tenant_refusals_total";
        let _ = writeln!(
            o,
            "# HELP {name} Span requests refused (503) because their tenant's traces cannot be written and hold a quarter of --trace-buffer-bytes.\n# TYPE {name} counter\n{name} {}",
            ld(&a.tenant_span_refusals)
        );
    }
}

/// Appends the trace assembler's and span store's metrics.
pub fn render_traces(
    o: &mut String,
    a: &crate::traces::AssemblerStats,
    s: &periscope_store::TraceStoreStats,
) {
    let ld = |v: &AtomicU64| v.load(Ordering::Relaxed);
    for (name, help, kind, v) in [
        (
            "periscope_trace_spans_received_total",
            "Spans taken in by the trace assembler.",
            "counter",
            ld(&a.spans_received),
        ),
        (
            "periscope_trace_spans_dropped_total",
            "Spans dropped past --max-spans-per-trace.",
            "counter",
            ld(&a.spans_dropped_over_cap),
        ),
        (
            "periscope_traces_written_total",
            "Trace fragments written to the span store.",
            "counter",
            ld(&a.traces_written),
        ),
        (
            "periscope_trace_flushes_total",
            "Writes of completed traces to the span store.",
            "counter",
            ld(&a.flushes),
        ),
        (
            "periscope_trace_flush_failures_total",
            "Failed writes to the span store (retried).",
            "counter",
            ld(&a.flush_failures),
        ),
        (
            "periscope_trace_pending",
            "Traces waiting for more spans.",
            "gauge",
            ld(&a.pending_traces),
        ),
        (
            "periscope_trace_buffered_bytes",
            "Memory held by traces not yet written.",
            "gauge",
            ld(&a.buffered_bytes),
        ),
        (
            "periscope_span_files_written_total",
            "Span file sets written.",
            "counter",
            ld(&s.files_written),
        ),
        (
            "periscope_span_store_written_bytes_total",
            "Bytes of Parquet written by the span store.",
            "counter",
            ld(&s.bytes_written),
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}

/// Counters of the network edge: connections per listener, timeouts, and
/// remote-write samples dropped for their timestamp.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    /// Connections open now.
    pub open_connections: [AtomicU64; 3],
    /// Connections closed at once because the listener was at its limit.
    pub refused_connections: [AtomicU64; 3],
    /// Connections closed because the request headers did not arrive in time.
    pub header_timeouts: [AtomicU64; 3],
    /// Requests answered 408 because the body did not arrive in time.
    pub body_timeouts: [AtomicU64; 3],
    /// Connections closed because their TLS handshake failed or timed out
    /// (plain text to a TLS port, an untrusted client certificate, …).
    pub tls_handshake_failures: [AtomicU64; 3],
    /// Remote-write samples dropped: older than the metrics retention, and
    /// more than a day in the future.
    pub rejected_samples: [AtomicU64; 2],
}

impl EdgeMetrics {
    pub fn add(counter: &[AtomicU64; 3], listener: Listener, n: u64) {
        counter[listener as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Appends the edge families to `out`.
    pub fn render(&self, out: &mut String) {
        let families: [(&str, &str, &str, &[AtomicU64; 3]); 5] = [
            (
                "periscope_open_connections",
                "gauge",
                "Connections open on each listener.",
                &self.open_connections,
            ),
            (
                "periscope_refused_connections_total",
                "counter",
                "Connections closed at once because the listener was at --max-connections.",
                &self.refused_connections,
            ),
            (
                "periscope_header_timeouts_total",
                "counter",
                "Connections closed because request headers took longer than --http-header-read-timeout.",
                &self.header_timeouts,
            ),
            (
                "periscope_body_timeouts_total",
                "counter",
                "Requests answered 408 because the body took longer than --http-body-read-timeout.",
                &self.body_timeouts,
            ),
            (
                "periscope_tls_handshake_failures_total",
                "counter",
                "Connections closed because their TLS handshake failed or took longer than --http-header-read-timeout.",
                &self.tls_handshake_failures,
            ),
        ];
        for (name, kind, help, c) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for l in Listener::ALL {
                let v = c[l as usize].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{listener=\"{}\"}} {v}", l.as_str());
            }
        }
        let name = "periscope_rejected_samples_total";
        let _ = writeln!(
            out,
            "# HELP {name} Remote-write samples dropped for their timestamp (answered 400).\n# TYPE {name} counter"
        );
        for (i, reason) in ["too_old", "too_new"].iter().enumerate() {
            let v = self.rejected_samples[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {v}");
        }
    }
}
