//! One load-generating client: its own HTTP/2 connection, one request in
//! flight at a time, paced to its share of `--rate`, retrying on backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use periscope_benches::{Workload, unix_nanos};
use periscope_proto::otlp::ExportLogsServiceRequest;
use periscope_proto::otlp::client::LogsServiceClient;
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use crate::Plan;
use crate::stats::Stats;

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
    /// Records still to send, when the run is bounded by `--records`.
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

/// Runs client `index` until the run is over.
pub async fn run(index: usize, plan: Arc<Plan>, shared: Arc<Shared>) {
    let mut client = LogsServiceClient::new(plan.endpoint.connect_lazy());
    if let Some(c) = plan.compression {
        client = client.send_compressed(c);
    }
    let seed = plan.seed.wrapping_add(index as u64);
    let mut workload = Workload::new(seed, plan.run_id.clone());
    let mut jitter = SmallRng::seed_from_u64(!seed);
    // Clients start evenly staggered over one batch interval.
    let mut next_at = tokio::time::Instant::now();
    if let Some(rate) = plan.rate_per_client {
        next_at +=
            Duration::from_secs_f64(plan.batch as f64 / rate * index as f64 / plan.clients as f64);
    }
    while let Some(n) = shared.claim(plan.batch) {
        if let Some(rate) = plan.rate_per_client {
            // Never burst to catch up: a slow server lowers the achieved rate.
            next_at = next_at.max(tokio::time::Instant::now());
            tokio::select! {
                () = tokio::time::sleep_until(next_at) => {}
                () = shared.stop.cancelled() => break,
            }
            next_at += Duration::from_secs_f64(n as f64 / rate);
        }
        let first_seq = shared.next_seq.fetch_add(n, Ordering::Relaxed);
        // Generating 500 records takes about a millisecond: off the runtime
        // threads, so it does not delay other clients' responses (and their
        // measured latency).
        let generated = tokio::task::spawn_blocking(move || {
            let req = workload.request(first_seq, n as usize, unix_nanos());
            (workload, req)
        })
        .await;
        let req;
        (workload, req) = match generated {
            Ok(v) => v,
            Err(e) => {
                shared
                    .stats
                    .failed(n, format!("generator task failed: {e}"));
                return;
            }
        };
        send(&mut client, &req, n, &plan, &shared, &mut jitter).await;
    }
}

/// Sends one request until it is acknowledged, refused for good, or given up.
async fn send(
    client: &mut LogsServiceClient<Channel>,
    req: &ExportLogsServiceRequest,
    records: u64,
    plan: &Plan,
    shared: &Shared,
    jitter: &mut SmallRng,
) {
    let bytes = req.encoded_len() as u64;
    let give_up_at = Instant::now() + GIVE_UP_AFTER;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut request = tonic::Request::new(req.clone());
        request.set_timeout(REQUEST_TIMEOUT);
        if let Some(tenant) = &plan.tenant {
            request
                .metadata_mut()
                .insert("x-scope-orgid", tenant.clone());
        }
        shared.stats.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        let t0 = Instant::now();
        let status = match client.export(request).await {
            Ok(resp) => {
                let rejected = resp
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_log_records.max(0) as u64);
                shared
                    .stats
                    .acked(records, rejected.min(records), bytes, t0.elapsed());
                return;
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
            return;
        }
        shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.abort.cancelled() => {
                shared.stats.failed(records, format!("interrupted while retrying after {:?}: {}", status.code(), status.message()));
                return;
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
