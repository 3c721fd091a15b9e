//! One load-generating client: its own HTTP/2 connection, one request in
//! flight at a time, paced to its share of `--rate`, retrying on backpressure.
//!
//! The loop is the same for every signal: [`Generator`] and [`Exporter`] are
//! where logs and traces differ.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use periscope_benches::{MetricEncoder, TraceRef, TraceWorkload, Workload, unix_nanos};
use periscope_proto::otlp::{
    ExportLogsServiceResponse, ExportMetricsServiceResponse, ExportTraceServiceResponse,
};
use periscope_proto::pre_encoded::{
    LOGS_EXPORT_PATH, METRICS_EXPORT_PATH, PreEncoded, TRACES_EXPORT_PATH,
};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::stats::Stats;
use crate::{Plan, Signal};

/// First pause after a `RESOURCE_EXHAUSTED` or `UNAVAILABLE` answer; doubles
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A request still refused after this long is counted as failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// The gRPC deadline of one attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// State shared by all clients of a run.
pub struct Shared {
    pub stats: Stats,
    /// The next `loadgen.seq` to hand out.
    pub next_seq: AtomicU64,
    /// Records still to claim, when the run is bounded by `--records`
    /// (spans, for traces: a claim is then rounded to whole traces).
    pub remaining: Option<AtomicU64>,
    /// Cancelled when no new batch should start (duration over, or Ctrl-C).
    pub stop: CancellationToken,
    /// Cancelled on Ctrl-C: requests waiting to retry are abandoned.
    pub abort: CancellationToken,
}

impl Shared {
    /// Claims the size of the next batch, `None` when the run is over.
    fn claim(&self, batch: u64) -> Option<u64> {
        if self.stop.is_cancelled() {
            return None;
        }
        match &self.remaining {
            None => Some(batch),
            Some(left) => {
                let prev = left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                        Some(l - l.min(batch))
                    })
                    .ok()?;
                (prev > 0).then(|| prev.min(batch))
            }
        }
    }
}

/// Makes the requests of the run's signal.
enum Generator {
    Logs(Workload),
    Traces(TraceWorkload),
    /// Metric samples, as OTLP or (`true`) as a remote-write body.
    Metrics(MetricEncoder, bool),
}

/// A generated request and what the run needs to know of it.
struct Batch {
    request: Request,
    /// Log records or spans.
    records: u64,
    /// The traces it holds, for `--verify` (none for logs).
    traces: Vec<TraceRef>,
}

enum Request {
    /// An OTLP export request, encoded once and resent as is by retries.
    Otlp(bytes::Bytes),
    /// A snappy-compressed remote-write `WriteRequest`.
    RemoteWrite(bytes::Bytes),
}

/// The client of the run's signal.
enum Exporter {
    /// OTLP/gRPC export of pre-encoded requests.
    Grpc {
        channel: Channel,
        compression: Option<CompressionEncoding>,
        signal: Signal,
    },
    RemoteWrite(reqwest::Client, reqwest::Url),
}

impl Generator {
    fn generate(&mut self, first_seq: u64, records: u64, now_ns: u64) -> Batch {
        match self {
            Generator::Logs(w) => Batch {
                request: Request::Otlp(encode(&w.request(first_seq, records as usize, now_ns))),
                records,
                traces: Vec::new(),
            },
            Generator::Traces(w) => {
                let (request, traces) = w.request(records as usize, now_ns);
                Batch {
                    request: Request::Otlp(encode(&request)),
                    records: traces.iter().map(|t| u64::from(t.spans)).sum(),
                    traces,
                }
            }
            Generator::Metrics(w, remote_write) => Batch {
                request: if *remote_write {
                    // Already snappy-compressed.
                    let body = periscope_proto::encode_remote_write(
                        &w.workload().prom_samples(first_seq, records),
                    );
                    Request::RemoteWrite(body.into())
                } else {
                    Request::Otlp(w.encode(first_seq, records).into())
                },
                records,
                traces: Vec::new(),
            },
        }
    }
}

fn encode(message: &impl Message) -> bytes::Bytes {
    message.encode_to_vec().into()
}

impl Request {
    fn encoded_len(&self) -> usize {
        match self {
            Request::Otlp(b) | Request::RemoteWrite(b) => b.len(),
        }
    }
}

impl Exporter {
    fn new(plan: &Plan) -> Exporter {
        if let Some(url) = &plan.remote_write_url {
            return Exporter::RemoteWrite(reqwest::Client::new(), url.clone());
        }
        Exporter::Grpc {
            channel: plan.endpoint.connect_lazy(),
            compression: plan.compression,
            signal: plan.signal,
        }
    }

    /// One attempt: the number of records the collector rejected through
    /// partial success.
    async fn export(
        &mut self,
        request: &Request,
        tenant: Option<&AsciiMetadataValue>,
        authorization: Option<&AsciiMetadataValue>,
    ) -> Result<u64, Status> {
        match (self, request) {
            (
                Exporter::Grpc {
                    channel,
                    compression,
                    signal,
                },
                Request::Otlp(body),
            ) => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if let Some(c) = compression {
                    grpc = grpc.send_compressed(*c);
                }
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
                let request = grpc_request(body.clone(), tenant, authorization);
                match signal {
                    Signal::Logs => unary(&mut grpc, request, LOGS_EXPORT_PATH).await.map(
                        |r: ExportLogsServiceResponse| {
                            r.partial_success
                                .map_or(0, |p| p.rejected_log_records.max(0) as u64)
                        },
                    ),
                    Signal::Traces => unary(&mut grpc, request, TRACES_EXPORT_PATH).await.map(
                        |r: ExportTraceServiceResponse| {
                            r.partial_success
                                .map_or(0, |p| p.rejected_spans.max(0) as u64)
                        },
                    ),
                    Signal::Metrics => unary(&mut grpc, request, METRICS_EXPORT_PATH).await.map(
                        |r: ExportMetricsServiceResponse| {
                            r.partial_success
                                .map_or(0, |p| p.rejected_data_points.max(0) as u64)
                        },
                    ),
                }
            }
            (Exporter::RemoteWrite(http, url), Request::RemoteWrite(body)) => {
                remote_write(http, url, body.clone(), tenant, authorization).await
            }
            _ => unreachable!("a client generates requests of its own transport"),
        }
    }
}

/// One OTLP export call of a pre-encoded request, its response decoded as `R`.
async fn unary<R>(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: tonic::Request<bytes::Bytes>,
    path: &'static str,
) -> Result<R, Status>
where
    R: Message + Default + Send + 'static,
{
    grpc.unary(
        request,
        PathAndQuery::from_static(path),
        PreEncoded::<R>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// POSTs one remote-write body. Like Prometheus' sender: 5xx and 429 are
/// retried (mapped to `UNAVAILABLE` / `RESOURCE_EXHAUSTED`), other errors
/// are final. Remote write has no partial success: nothing is rejected.
async fn remote_write(
    http: &reqwest::Client,
    url: &reqwest::Url,
    body: bytes::Bytes,
    tenant: Option<&AsciiMetadataValue>,
    authorization: Option<&AsciiMetadataValue>,
) -> Result<u64, Status> {
    let mut req = http
        .post(url.clone())
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .timeout(REQUEST_TIMEOUT)
        .body(body);
    if let Some(t) = tenant.and_then(|t| t.to_str().ok()) {
        req = req.header("X-Scope-OrgID", t);
    }
    if let Some(a) = authorization.and_then(|a| a.to_str().ok()) {
        req = req.header("Authorization", a);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Status::unavailable(format!("remote write failed: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(0);
    }
    let text = resp.text().await.unwrap_or_default();
    let msg = format!("{status}: {}", text.chars().take(300).collect::<String>());
    Err(match status.as_u16() {
        429 => Status::resource_exhausted(msg),
        500.. => Status::unavailable(msg),
        _ => Status::invalid_argument(msg),
    })
}

fn grpc_request(
    body: bytes::Bytes,
    tenant: Option<&AsciiMetadataValue>,
    authorization: Option<&AsciiMetadataValue>,
) -> tonic::Request<bytes::Bytes> {
    let mut request = tonic::Request::new(body);
    request.set_timeout(REQUEST_TIMEOUT);
    if let Some(tenant) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", tenant.clone());
    }
    if let Some(a) = authorization {
        request.metadata_mut().insert("authorization", a.clone());
    }
    request
}

/// Runs client `index` until the run is over. Returns the traces of the
/// requests acknowledged in full when the run verifies traces.
pub async fn run(index: usize, plan: Arc<Plan>, shared: Arc<Shared>) -> Vec<TraceRef> {
    let mut exporter = Exporter::new(&plan);
    let seed = plan.seed.wrapping_add(index as u64);
    let mut generator = match plan.signal {
        Signal::Logs => Generator::Logs(Workload::new(seed, plan.run_id.clone())),
        Signal::Traces => Generator::Traces(TraceWorkload::new(seed, plan.run_id.clone())),
        Signal::Metrics => Generator::Metrics(
            MetricEncoder::new(plan.metrics.clone().expect("metric plans carry a workload")),
            plan.remote_write_url.is_some(),
        ),
    };
    let keep_traces = plan.verify.is_some();
    let mut acked_traces = Vec::new();
    let mut jitter = SmallRng::seed_from_u64(!seed);
    // Clients start evenly staggered over one batch interval.
    let mut next_at = tokio::time::Instant::now();
    if let Some(rate) = plan.rate_per_client {
        next_at +=
            Duration::from_secs_f64(plan.batch as f64 / rate * index as f64 / plan.clients as f64);
    }
    while let Some(n) = shared.claim(plan.batch) {
        if plan.rate_per_client.is_some() {
            // Never burst to catch up: a slow server lowers the achieved rate.
            next_at = next_at.max(tokio::time::Instant::now());
            tokio::select! {
                () = tokio::time::sleep_until(next_at) => {}
                () = shared.stop.cancelled() => break,
            }
        }
        let first_seq = shared.next_seq.fetch_add(n, Ordering::Relaxed);
        // Generating 500 records takes about a millisecond: off the runtime
        // threads, so it does not delay other clients' responses (and their
        // measured latency).
        let generated = tokio::task::spawn_blocking(move || {
            let batch = generator.generate(first_seq, n, unix_nanos());
            (generator, batch)
        })
        .await;
        let batch;
        (generator, batch) = match generated {
            Ok(v) => v,
            Err(e) => {
                shared
                    .stats
                    .failed(n, format!("generator task failed: {e}"));
                break;
            }
        };
        if let Some(rate) = plan.rate_per_client {
            // Traces round the batch to whole traces: pace by what was made.
            next_at += Duration::from_secs_f64(batch.records as f64 / rate);
        }
        let acked_in_full = send(&mut exporter, &batch, &plan, &shared, &mut jitter).await;
        if acked_in_full && keep_traces {
            acked_traces.extend_from_slice(&batch.traces);
        }
    }
    acked_traces
}

/// Sends one request until it is acknowledged, refused for good, or given up.
/// True when it was acknowledged with no record rejected.
async fn send(
    exporter: &mut Exporter,
    batch: &Batch,
    plan: &Plan,
    shared: &Shared,
    jitter: &mut SmallRng,
) -> bool {
    let (records, bytes) = (batch.records, batch.request.encoded_len() as u64);
    let give_up_at = Instant::now() + GIVE_UP_AFTER;
    let mut backoff = FIRST_BACKOFF;
    loop {
        shared.stats.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        let t0 = Instant::now();
        let status = match exporter
            .export(
                &batch.request,
                plan.tenant.as_ref(),
                plan.authorization.as_ref(),
            )
            .await
        {
            Ok(rejected) => {
                shared
                    .stats
                    .acked(records, rejected.min(records), bytes, t0.elapsed());
                if rejected == 0 {
                    shared
                        .stats
                        .acked_traces
                        .fetch_add(batch.traces.len() as u64, Ordering::Relaxed);
                }
                return rejected == 0;
            }
            Err(status) => status,
        };
        let retryable = matches!(status.code(), Code::ResourceExhausted | Code::Unavailable);
        let pause = backoff.mul_f64(jitter.random_range(0.5..1.0));
        if !retryable || Instant::now() + pause > give_up_at {
            shared.stats.failed(
                records,
                format!("export failed: {:?}: {}", status.code(), status.message()),
            );
            return false;
        }
        shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.abort.cancelled() => {
                shared.stats.failed(records, format!("interrupted while retrying after {:?}: {}", status.code(), status.message()));
                return false;
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(remaining: Option<u64>) -> Shared {
        Shared {
            stats: Stats::new(),
            next_seq: AtomicU64::new(0),
            remaining: remaining.map(AtomicU64::new),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    #[test]
    fn claims_split_a_record_budget_into_batches() {
        let s = shared(Some(1200));
        assert_eq!(
            [s.claim(500), s.claim(500), s.claim(500), s.claim(500)],
            [Some(500), Some(500), Some(200), None]
        );
        let s = shared(None);
        assert_eq!(s.claim(500), Some(500));
        s.stop.cancel();
        assert_eq!(s.claim(500), None);
    }
}
