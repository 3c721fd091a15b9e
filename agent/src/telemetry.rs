//! Self-metrics: counters shared by the pipeline stages, rendered in the
//! Prometheus text format on `/metrics`. Names are constant and labels
//! bounded (the per-file lag carries the path of an open file, bounded by the
//! open-file budget). The relay's auth gate and watched files add the
//! `periscope_auth_*` and `periscope_config_*` series of `periscope-auth`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use periscope_auth::{Gate, Tls};

use crate::sync::MutexRecover;

/// The relay's auth gate and TLS files, rendered with the agent's metrics.
#[derive(Debug)]
pub struct RelayAuth {
    /// The gate of both relay listeners.
    pub gate: Arc<Gate>,
    /// The listeners' watched certificate files, when they speak TLS.
    pub tls: Option<Arc<Tls>>,
}

/// Counters and gauges of the agent.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines read from files.
    pub lines_read: AtomicU64,
    /// Bytes read from files.
    pub bytes_read: AtomicU64,
    /// Lines cut at `max_line_bytes`.
    pub lines_truncated: AtomicU64,
    /// Log records handed to the exporter.
    pub records_queued: AtomicU64,
    /// Records sent (attempts that reached the wire).
    pub records_sent: AtomicU64,
    /// Records acknowledged by the collector.
    pub records_acked: AtomicU64,
    /// Records dropped after a permanent rejection.
    pub records_rejected: AtomicU64,
    /// Export attempts retried.
    pub export_retries: AtomicU64,
    /// Batches written to the disk spool.
    pub spool_batches_written: AtomicU64,
    /// Corrupt spool records skipped.
    pub spool_corrupt_records: AtomicU64,
    /// Bytes in the disk spool.
    pub spool_bytes: AtomicU64,
    /// Bytes in the memory queue.
    pub memory_queue_bytes: AtomicU64,
    /// Files open.
    pub open_files: AtomicU64,
    /// Files tracked (open or idle-closed).
    pub tracked_files: AtomicU64,
    /// Times reading paused because the spool was full.
    pub backpressure_waits: AtomicU64,
    /// Relayed OTLP requests accepted.
    pub relay_requests: AtomicU64,
    /// Relay requests refused by the relay's in-flight budget.
    pub relay_refused_requests: AtomicU64,
    /// Bytes of the relay's in-flight budget in use.
    pub relay_inflight_bytes: AtomicU64,
    /// Relay connections closed at once: the listener was at its limit.
    pub relay_refused_connections: AtomicU64,
    /// Relay connections closed because request headers were too slow.
    pub relay_header_timeouts: AtomicU64,
    /// Relay requests whose body was too slow (408).
    pub relay_body_timeouts: AtomicU64,
    /// Relay TLS handshakes that failed or timed out.
    pub relay_tls_handshake_failures: AtomicU64,
    /// Host metric collections.
    pub host_metric_scrapes: AtomicU64,
    /// Pods in the API-server cache (deleted ones within their grace period included).
    pub k8s_pods_cached: AtomicU64,
    /// Failed pod lists and watches.
    pub k8s_watch_errors: AtomicU64,
    /// Pod watch events received.
    pub k8s_watch_events: AtomicU64,
    /// Successful pod lists (the first and every relist).
    pub k8s_relists: AtomicU64,
    /// Unread bytes per open file.
    pub read_lag: Mutex<Vec<(String, u64)>>,
    /// Relay handlers that panicked (answered 500 / INTERNAL): gRPC, HTTP.
    pub relay_panics: [AtomicU64; 2],
    /// Set once the relay starts.
    pub relay_auth: OnceLock<RelayAuth>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Stats {
    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut m = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        m(
            "periscope_agent_lines_read_total",
            "counter",
            "Lines read from files.",
            &self.lines_read,
        );
        m(
            "periscope_agent_bytes_read_total",
            "counter",
            "Bytes read from files.",
            &self.bytes_read,
        );
        m(
            "periscope_agent_lines_truncated_total",
            "counter",
            "Lines cut at max_line_bytes.",
            &self.lines_truncated,
        );
        m(
            "periscope_agent_records_queued_total",
            "counter",
            "Log records handed to the exporter.",
            &self.records_queued,
        );
        m(
            "periscope_agent_records_sent_total",
            "counter",
            "Records sent to the collector (each attempt).",
            &self.records_sent,
        );
        m(
            "periscope_agent_records_acknowledged_total",
            "counter",
            "Records acknowledged by the collector.",
            &self.records_acked,
        );
        m(
            "periscope_agent_records_rejected_total",
            "counter",
            "Records dropped after a permanent rejection.",
            &self.records_rejected,
        );
        m(
            "periscope_agent_export_retries_total",
            "counter",
            "Export attempts retried.",
            &self.export_retries,
        );
        m(
            "periscope_agent_spool_batches_written_total",
            "counter",
            "Batches written to the disk spool.",
            &self.spool_batches_written,
        );
        m(
            "periscope_agent_spool_corrupt_records_total",
            "counter",
            "Corrupt spool records skipped.",
            &self.spool_corrupt_records,
        );
        m(
            "periscope_agent_spool_bytes",
            "gauge",
            "Bytes in the disk spool.",
            &self.spool_bytes,
        );
        m(
            "periscope_agent_memory_queue_bytes",
            "gauge",
            "Bytes in the in-memory queue.",
            &self.memory_queue_bytes,
        );
        m(
            "periscope_agent_open_files",
            "gauge",
            "Files held open.",
            &self.open_files,
        );
        m(
            "periscope_agent_tracked_files",
            "gauge",
            "Files tracked (open or idle-closed).",
            &self.tracked_files,
        );
        m(
            "periscope_agent_backpressure_waits_total",
            "counter",
            "Times reading paused because the spool was full.",
            &self.backpressure_waits,
        );
        m(
            "periscope_agent_relay_requests_total",
            "counter",
            "OTLP requests accepted by the local relay.",
            &self.relay_requests,
        );
        m(
            "periscope_agent_relay_refused_requests_total",
            "counter",
            "Relay requests refused because the relay's in-flight budget was used up (429 / RESOURCE_EXHAUSTED).",
            &self.relay_refused_requests,
        );
        m(
            "periscope_agent_relay_inflight_bytes",
            "gauge",
            "Bytes of the relay's in-flight budget in use.",
            &self.relay_inflight_bytes,
        );
        m(
            "periscope_agent_relay_refused_connections_total",
            "counter",
            "Relay connections closed at once because the listener was at relay_max_connections.",
            &self.relay_refused_connections,
        );
        m(
            "periscope_agent_relay_header_timeouts_total",
            "counter",
            "Relay connections closed because request headers took longer than relay_header_read_timeout.",
            &self.relay_header_timeouts,
        );
        m(
            "periscope_agent_relay_body_timeouts_total",
            "counter",
            "Relay requests answered 408 because the body took longer than relay_body_read_timeout.",
            &self.relay_body_timeouts,
        );
        m(
            "periscope_agent_relay_tls_handshake_failures_total",
            "counter",
            "Relay TLS handshakes that failed or took longer than relay_header_read_timeout.",
            &self.relay_tls_handshake_failures,
        );
        m(
            "periscope_agent_host_metric_scrapes_total",
            "counter",
            "Host metric collections.",
            &self.host_metric_scrapes,
        );
        m(
            "periscope_agent_k8s_pods_cached",
            "gauge",
            "Pods in the API-server cache, deleted ones within their grace period included.",
            &self.k8s_pods_cached,
        );
        m(
            "periscope_agent_k8s_watch_errors_total",
            "counter",
            "Failed pod lists and watches against the API server.",
            &self.k8s_watch_errors,
        );
        m(
            "periscope_agent_k8s_watch_events_total",
            "counter",
            "Pod watch events received from the API server.",
            &self.k8s_watch_events,
        );
        m(
            "periscope_agent_k8s_lists_total",
            "counter",
            "Successful pod lists (the first and every relist).",
            &self.k8s_relists,
        );
        out.push_str("# HELP periscope_agent_read_lag_bytes Unread bytes per open file.\n# TYPE periscope_agent_read_lag_bytes gauge\n");
        let lags = self.read_lag.lock_or_recover();
        for (path, lag) in lags.iter() {
            let _ = writeln!(
                out,
                "periscope_agent_read_lag_bytes{{path=\"{}\"}} {lag}",
                esc(path)
            );
        }
        out.push_str("# HELP periscope_panics_total Request handlers that panicked (answered 500 or gRPC INTERNAL).\n# TYPE periscope_panics_total counter\n");
        for (listener, v) in ["relay_grpc", "relay_http"].iter().zip(&self.relay_panics) {
            let _ = writeln!(
                out,
                "periscope_panics_total{{listener=\"{listener}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        if let Some(a) = self.relay_auth.get() {
            a.gate.render(&mut out, a.tls.as_deref());
        }
        out
    }
}
