//! The traffic generator's loop: simulates requests at a steady rate and
//! sends their spans and logs every second, and the metrics every ten
//! seconds, as OTLP/gRPC to the collector's own receiver: the same path
//! any application's SDK takes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use periscope_proto::otlp::client::{LogsServiceClient, MetricsServiceClient, TraceServiceClient};
use rand::Rng;
use rand::rngs::SmallRng;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::metrics::{Recorder, scope};
use super::pods::{PodLogs, cri_line};
use super::scenario::simulate;
use super::shop::{Shop, Svc};
use super::trace::SimTrace;

/// How often requests are simulated.
const TICK: Duration = Duration::from_millis(100);
/// How often spans and logs are sent (an SDK's batch processor would wait
/// up to 5 s; a second keeps the demo lively).
const SEND_EVERY: Duration = Duration::from_secs(1);
/// How often metrics are sent, and how soon the first time.
const METRICS_EVERY: Duration = Duration::from_secs(10);
const FIRST_METRICS_AFTER: Duration = Duration::from_secs(2);
/// After a stall (a slow send), at most this much traffic is made up.
const MAX_CATCH_UP: Duration = Duration::from_secs(2);
/// The gRPC deadline of one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Refused exports are reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The simulated shop and what it has measured so far.
pub struct Generator {
    rng: SmallRng,
    shop: Shop,
    recorder: Recorder,
    rate: f64,
}

/// Unix time now, in ns.
fn now_ns() -> u64 {
    u64::try_from(periscope_proto::unix_now_ns()).unwrap_or(0)
}

impl Generator {
    /// A generator of `rate` requests per second; `rng` also drew `shop`.
    pub fn new(rng: SmallRng, shop: Shop, rate: f64) -> Generator {
        Generator {
            rng,
            shop,
            recorder: Recorder::new(now_ns()),
            rate,
        }
    }

    /// Simulates one request ending at `end_ns` and counts it in the metrics.
    pub fn request(&mut self, end_ns: u64) -> SimTrace {
        let t = simulate(&mut self.rng, end_ns);
        self.recorder.observe(&t);
        t
    }

    /// The spans of `traces`, one resource per service.
    pub fn traces_request(&self, traces: &[SimTrace]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: Svc::ALL
                .iter()
                .filter_map(|svc| {
                    let spans: Vec<_> = traces
                        .iter()
                        .flat_map(|t| &t.spans)
                        .filter(|s| s.svc == *svc)
                        .map(|s| s.span.clone())
                        .collect();
                    (!spans.is_empty()).then(|| ResourceSpans {
                        resource: Some(self.shop.pod(*svc).resource.clone()),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(scope()),
                            spans,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    /// The logs of `traces`, one resource per service.
    pub fn logs_request(&self, traces: &[SimTrace]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: Svc::ALL
                .iter()
                .filter_map(|svc| {
                    let log_records: Vec<_> = traces
                        .iter()
                        .flat_map(|t| &t.logs)
                        .filter(|l| l.svc == *svc)
                        .map(|l| l.record.clone())
                        .collect();
                    (!log_records.is_empty()).then(|| ResourceLogs {
                        resource: Some(self.shop.pod(*svc).resource.clone()),
                        scope_logs: vec![ScopeLogs {
                            scope: Some(scope()),
                            log_records,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    /// The shop's metrics as of now; `interval` since the previous call.
    pub fn metrics_request(
        &mut self,
        interval: Duration,
    ) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        let interval_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        self.recorder
            .export(&self.shop, &mut self.rng, now_ns(), interval_ns)
    }

    /// Runs until `stop`, sending to the OTLP/gRPC receiver at `target`;
    /// with `pods`, also writes the services' log lines there.
    pub async fn run(
        mut self,
        target: SocketAddr,
        mut pods: Option<PodLogs>,
        stop: CancellationToken,
    ) {
        let channel = match Endpoint::from_shared(format!("http://{target}")) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(5))
                .timeout(EXPORT_TIMEOUT)
                .connect_lazy(),
            Err(e) => {
                tracing::error!(error = %e, %target, "demo traffic cannot start: bad receiver address");
                return;
            }
        };
        let mut out = Clients::new(channel);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let start = Instant::now();
        let (mut last, mut last_send, mut last_metrics) = (start, start, start);
        let mut next_metrics = start + FIRST_METRICS_AFTER;
        let mut carry = 0.0f64;
        let mut pending: Vec<SimTrace> = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let elapsed = now.duration_since(last).min(MAX_CATCH_UP);
            last = now;
            let wall = now_ns();
            let spread = u64::try_from(elapsed.as_nanos()).unwrap_or(1).max(1);
            carry += self.rate * elapsed.as_secs_f64();
            while carry >= 1.0 {
                carry -= 1.0;
                let end = wall - self.rng.random_range(0..spread);
                let t = self.request(end);
                pending.push(t);
            }
            if now.duration_since(last_send) >= SEND_EVERY && !pending.is_empty() {
                last_send = now;
                let traces = self.traces_request(&pending);
                let logs = self.logs_request(&pending);
                let lines: Vec<_> = match pods {
                    Some(_) => {
                        // A container writes its lines in time order.
                        let mut logs: Vec<_> = pending.iter().flat_map(|t| &t.logs).collect();
                        logs.sort_by_key(|l| l.record.time_unix_nano);
                        logs.into_iter().map(cri_line).collect()
                    }
                    None => Vec::new(),
                };
                pending.clear();
                if let Some(mut p) = pods.take() {
                    let written = tokio::task::spawn_blocking(move || {
                        let r = p.append(&lines);
                        (p, r)
                    })
                    .await;
                    match written {
                        Ok((p, Ok(()))) => pods = Some(p),
                        Ok((p, Err(e))) => {
                            tracing::warn!(error = %e, "failed to write demo pod logs");
                            pods = Some(p);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "demo pod log writer failed; no more pod logs")
                        }
                    }
                }
                let sent = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = out.send_traces_and_logs(traces, logs) => r,
                };
                out.report(sent);
            }
            if now >= next_metrics {
                next_metrics = now + METRICS_EVERY;
                let req = self.metrics_request(now.duration_since(last_metrics));
                last_metrics = now;
                let sent = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = out.metrics.export(req) => r.map(|_| ()),
                };
                out.report(sent);
            }
        }
        tracing::info!("demo traffic stopped");
    }
}

/// The three OTLP clients over one connection, and the throttle of
/// warnings about refused exports.
struct Clients {
    traces: TraceServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
    metrics: MetricsServiceClient<Channel>,
    last_warn: Option<Instant>,
    failed_since_warn: u64,
}

impl Clients {
    fn new(channel: Channel) -> Clients {
        Clients {
            traces: TraceServiceClient::new(channel.clone()),
            logs: LogsServiceClient::new(channel.clone()),
            metrics: MetricsServiceClient::new(channel),
            last_warn: None,
            failed_since_warn: 0,
        }
    }

    async fn send_traces_and_logs(
        &mut self,
        traces: ExportTraceServiceRequest,
        logs: ExportLogsServiceRequest,
    ) -> Result<(), tonic::Status> {
        let t = self.traces.export(traces).await;
        let l = self.logs.export(logs).await;
        let rejected = t
            .as_ref()
            .ok()
            .and_then(|r| r.get_ref().partial_success.as_ref())
            .map_or(0, |p| p.rejected_spans)
            + l.as_ref()
                .ok()
                .and_then(|r| r.get_ref().partial_success.as_ref())
                .map_or(0, |p| p.rejected_log_records);
        t?;
        l?;
        if rejected > 0 {
            return Err(tonic::Status::invalid_argument(format!(
                "the collector rejected {rejected} demo records"
            )));
        }
        Ok(())
    }

    /// Lets a failed export pass with a warning now and then: the demo's
    /// traffic is not worth retrying, and the next batch comes in a second.
    fn report(&mut self, r: Result<(), tonic::Status>) {
        let Err(status) = r else { return };
        self.failed_since_warn += 1;
        let due = self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            tracing::warn!(
                code = ?status.code(),
                error = status.message(),
                failed_exports = self.failed_since_warn,
                "demo traffic could not be sent"
            );
            self.last_warn = Some(Instant::now());
            self.failed_since_warn = 0;
        }
    }
}
