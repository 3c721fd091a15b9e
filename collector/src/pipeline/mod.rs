//! The ingest pipeline shared by the receivers: admission against the
//! in-flight budget, decoding and validation on blocking threads, the WAL
//! append (acknowledge after fsync), and dispatch of durable entries to the stores.

mod dispatch;
mod replay;
mod workers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
pub use dispatch::{Dispatcher, WalItem, reread_logs, spawn_metric_ingest};
use periscope_proto::{
    DecodeError, Encoding, ExportRequest, Limits, OutOfBounds, Signal, count_records, decode_cost,
    decode_remote_write_bounded, decode_request, remote_write_decode_cost,
    remote_write_decompressed_len, validate,
};
use periscope_store::{BodyFormat, StoreError, TenantId, Wal, WalEntry};
pub use replay::Replay;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
pub use workers::{Worker, metric_compactor, metric_flusher};

use crate::telemetry::{Metrics, Transport};

/// How an accepted request went: records dropped by validation, and why.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected: usize,
    pub error_message: String,
}

/// How a remote-write request went: samples stored, and those dropped for
/// their timestamp.
#[derive(Debug)]
pub struct RemoteWriteAccepted {
    pub samples: usize,
    pub dropped: OutOfBounds,
    /// The metrics retention the lower bound came from.
    pub retention: Duration,
}

impl RemoteWriteAccepted {
    /// Why samples were dropped, naming the limits and their flags; `None`
    /// when none was.
    pub fn dropped_message(&self) -> Option<String> {
        let d = self.dropped;
        (d.total() > 0).then(|| {
            format!(
                "stored {} samples; dropped {} out of bounds: {} older than the metrics retention of {}s (--metrics-retention), {} more than {}s in the future",
                self.samples,
                d.total(),
                d.too_old,
                self.retention.as_secs(),
                d.too_new,
                MAX_FUTURE.as_secs(),
            )
        })
    }
}

/// In-flight budget held by one request, from its first body byte until the
/// stores have taken its records (the permit travels with the WAL item).
#[derive(Debug)]
pub struct Charge(OwnedSemaphorePermit);

impl Charge {
    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.0.num_permits()
    }
}

/// Why a request was not accepted. One mapping to gRPC and HTTP lives in the receivers.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The in-flight budget is exhausted: retry later.
    #[error(
        "too much data in flight: the budget of {0} bytes (--max-inflight-bytes) is in use; retry later"
    )]
    Busy(usize),
    /// The body could not be decoded.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// The WAL cannot accept writes (I/O failure or shutdown).
    #[error(transparent)]
    Unavailable(#[from] StoreError),
    /// The tenant's traces cannot be written now and their backlog holds
    /// its share of the trace buffer: its span requests wait (503).
    #[error(
        "the traces of tenant {0} cannot be written now and hold a quarter of the trace buffer (--trace-buffer-bytes); retry later"
    )]
    TenantBacklog(TenantId),
}

/// Whether a tenant's span requests are refused for now (its traces cannot
/// be written and already hold their share of the trace buffer).
pub type SpanGate = Arc<dyn Fn(&TenantId) -> bool + Send + Sync>;

/// The maximum `AnyValue` nesting accepted in a record.
pub const MAX_DEPTH: usize = 32;
/// Records may be at most this far in the future.
const MAX_FUTURE: Duration = Duration::from_secs(86_400);

/// Everything the receivers need to ingest a request.
pub struct Ingest {
    wal: Arc<Wal<WalItem>>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    retention: Retention,
    pub metrics: Arc<Metrics>,
    span_gate: std::sync::OnceLock<SpanGate>,
}

/// How long each signal is kept: older records are rejected at ingest.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub logs: Duration,
    pub traces: Duration,
    pub metrics: Duration,
}

impl Retention {
    fn of(&self, signal: Signal) -> Duration {
        match signal {
            Signal::Logs => self.logs,
            Signal::Traces => self.traces,
            Signal::Metrics => self.metrics,
        }
    }
}

pub use periscope_proto::unix_now_ns as now_ns;

impl Ingest {
    pub fn new(
        wal: Arc<Wal<WalItem>>,
        budget_bytes: usize,
        retention: Retention,
        metrics: Arc<Metrics>,
    ) -> Ingest {
        Ingest {
            wal,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            retention,
            metrics,
            span_gate: std::sync::OnceLock::new(),
        }
    }

    /// Refuses span requests of the tenants `gate` names (set once, by the
    /// wiring, to the trace assembler's judgement).
    pub fn refuse_spans_when(&self, gate: SpanGate) {
        let _ = self.span_gate.set(gate);
    }

    /// An empty charge, to which a request adds as its body arrives.
    pub fn start_charge(&self) -> Charge {
        // Zero permits are always available.
        Charge(
            self.budget
                .clone()
                .try_acquire_many_owned(0)
                .expect("the budget semaphore is never closed"),
        )
    }

    /// Takes `bytes` more of the in-flight budget for the request holding
    /// `charge`, or refuses at once. A request never holds more than the
    /// whole budget, so that any request up to the size limit can run,
    /// alone if it must.
    pub fn charge(&self, charge: &mut Charge, bytes: usize) -> Result<(), IngestError> {
        let room = self.budget_bytes - charge.0.num_permits();
        // Permits are taken in u32 amounts; no request costs 4 GiB at once.
        let n = bytes.min(room).min(u32::MAX as usize);
        if n > 0 {
            let more = self
                .budget
                .clone()
                .try_acquire_many_owned(n as u32)
                .map_err(|_| IngestError::Busy(self.budget_bytes))?;
            charge.0.merge(more);
        }
        self.refresh_gauges();
        Ok(())
    }

    /// Gives back what `charge` holds beyond `keep` bytes (what the
    /// request still holds in memory). Charges are capped at the budget, so
    /// what to give back is worked out from what is held, not from what
    /// was asked for.
    pub fn release_to(&self, charge: &mut Charge, keep: usize) {
        let held = charge.0.num_permits();
        self.release(charge, held.saturating_sub(keep));
    }

    /// Gives back up to `bytes` of a request's charge (memory it freed).
    pub fn release(&self, charge: &mut Charge, bytes: usize) {
        let n = bytes.min(charge.0.num_permits());
        drop(charge.0.split(n));
        self.refresh_gauges();
    }

    /// Counts a request refused by the budget, and the records of its
    /// protobuf body when it was read (JSON bodies are not counted:
    /// counting them would mean parsing them).
    pub fn count_refused(&self, signal: Signal, transport: Transport, protobuf: Option<&[u8]>) {
        Metrics::add(&self.metrics.refused_requests, signal, transport, 1);
        if let Some(body) = protobuf {
            let n = count_records(signal, body) as u64;
            Metrics::add(&self.metrics.refused_records, signal, transport, n);
        }
    }

    /// Decodes, validates, makes durable and acknowledges one request.
    pub async fn export(
        &self,
        signal: Signal,
        transport: Transport,
        tenant: TenantId,
        encoding: Encoding,
        body: Bytes,
        mut charge: Charge,
    ) -> Result<Accepted, IngestError> {
        // Refused before anything is decoded or made durable, so the client
        // retries and nothing is acknowledged that could not be written.
        if signal == Signal::Traces && self.span_gate.get().is_some_and(|refuses| refuses(&tenant))
        {
            return Err(IngestError::TenantBacklog(tenant));
        }
        // The body is charged already (as it arrived); decoding takes more.
        if self
            .charge(&mut charge, decode_cost(signal, encoding, &body))
            .is_err()
        {
            let protobuf = (encoding == Encoding::Protobuf).then_some(&body[..]);
            self.count_refused(signal, transport, protobuf);
            return Err(IngestError::Busy(self.budget_bytes));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let now = now_ns();
        let limits = Limits {
            max_depth: MAX_DEPTH,
            min_timestamp_ns: now - self.retention.of(signal).as_nanos() as i64,
            max_timestamp_ns: now + MAX_FUTURE.as_nanos() as i64,
        };
        let wal = self.wal.clone();
        let metrics = self.metrics.clone();
        // Decoding, validation and compression are CPU work: off the async runtime.
        let outcome =
            tokio::task::spawn_blocking(move || -> Result<(usize, Accepted), IngestError> {
                // Only a protobuf body that fails to decode can have been rewritten (invalid UTF-8).
                let (req, rewritten) = match encoding {
                    Encoding::Protobuf => match ExportRequest::decode_protobuf(signal, &body) {
                        Ok(req) => (Ok(req), false),
                        Err(_) => (decode_request(signal, encoding, &body), true),
                    },
                    Encoding::Json => (decode_request(signal, encoding, &body), true),
                };
                let req = req.inspect_err(|_| {
                    Metrics::add(&metrics.invalid_requests, signal, transport, 1)
                })?;
                let received = req.record_count();
                Metrics::add(&metrics.received, signal, transport, received as u64);
                let v = validate(req, &limits);
                // Store the client's bytes when they are exactly what was accepted.
                let stored = if v.rejected == 0 && !rewritten {
                    body.to_vec()
                } else {
                    v.request.encode_to_vec()
                };
                let entry = WalEntry {
                    signal,
                    format: Default::default(),
                    tenant: tenant.clone(),
                    body: stored,
                };
                let accepted = received - v.rejected;
                let item = WalItem::new(tenant, v.request, now, Some(charge.0));
                wal.append(
                    entry.encode(),
                    item,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                )?;
                Ok((
                    accepted,
                    Accepted {
                        rejected: v.rejected,
                        error_message: v.error_message,
                    },
                ))
            })
            .await
            .map_err(|e| {
                IngestError::Unavailable(StoreError::WalClosed(format!("ingest task failed: {e}")))
            })?;
        let (accepted, result) = outcome?;
        match rx.await {
            Ok(Ok(_lsn)) => {
                Metrics::add(&self.metrics.accepted, signal, transport, accepted as u64);
                Metrics::add(
                    &self.metrics.rejected,
                    signal,
                    transport,
                    result.rejected as u64,
                );
                Ok(result)
            }
            Ok(Err(e)) => Err(IngestError::Unavailable(e)),
            Err(_) => Err(IngestError::Unavailable(StoreError::WalClosed(
                "writer stopped".into(),
            ))),
        }
    }

    /// Makes a Prometheus remote-write request (snappy-compressed protobuf)
    /// durable and acknowledges it. Samples outside OTLP's bounds (older
    /// than the metrics retention, more than a day ahead) are dropped and
    /// counted, the others stored.
    pub async fn export_remote_write(
        &self,
        tenant: TenantId,
        body: Bytes,
        mut charge: Charge,
    ) -> Result<RemoteWriteAccepted, IngestError> {
        let (signal, transport) = (Signal::Metrics, Transport::Http);
        let decoded_len = remote_write_decompressed_len(&body)
            .inspect_err(|_| Metrics::add(&self.metrics.invalid_requests, signal, transport, 1))?;
        // The snappy header announces the decompressed size: charge it and
        // what decoding it takes before anything is decompressed.
        let cost = decoded_len.saturating_add(remote_write_decode_cost(decoded_len));
        if self.charge(&mut charge, cost).is_err() {
            self.count_refused(signal, transport, None);
            return Err(IngestError::Busy(self.budget_bytes));
        }
        let now_ms = now_ns().div_euclid(1_000_000);
        let min_ms = now_ms.saturating_sub(self.retention.metrics.as_millis() as i64);
        let max_ms = now_ms.saturating_add(MAX_FUTURE.as_millis() as i64);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let wal = self.wal.clone();
        let metrics = self.metrics.clone();
        let (samples, dropped) =
            tokio::task::spawn_blocking(move || -> Result<(usize, OutOfBounds), IngestError> {
                let decoded =
                    decode_remote_write_bounded(&body, min_ms, max_ms).inspect_err(|_| {
                        Metrics::add(&metrics.invalid_requests, signal, transport, 1)
                    })?;
                let n = decoded.batch.samples.len();
                let dropped = decoded.dropped;
                Metrics::add(
                    &metrics.received,
                    signal,
                    transport,
                    (n + dropped.total()) as u64,
                );
                // The WAL keeps the body as received, or re-encoded without
                // the dropped samples; replay decodes it again.
                let entry = WalEntry {
                    signal,
                    format: BodyFormat::PromRemoteWrite,
                    tenant: tenant.clone(),
                    body: decoded.body.unwrap_or_else(|| body.to_vec()),
                };
                wal.append(
                    entry.encode(),
                    WalItem::prom(tenant, decoded.batch, Some(charge.0)),
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                )?;
                Ok((n, dropped))
            })
            .await
            .map_err(|e| {
                IngestError::Unavailable(StoreError::WalClosed(format!("ingest task failed: {e}")))
            })??;
        match rx.await {
            Ok(Ok(_)) => {
                Metrics::add(&self.metrics.accepted, signal, transport, samples as u64);
                Metrics::add(
                    &self.metrics.rejected,
                    signal,
                    transport,
                    dropped.total() as u64,
                );
                let edge = &self.metrics.edge.rejected_samples;
                edge[0].fetch_add(dropped.too_old as u64, Ordering::Relaxed);
                edge[1].fetch_add(dropped.too_new as u64, Ordering::Relaxed);
                Ok(RemoteWriteAccepted {
                    samples,
                    dropped,
                    retention: self.retention.metrics,
                })
            }
            Ok(Err(e)) => Err(IngestError::Unavailable(e)),
            Err(_) => Err(IngestError::Unavailable(StoreError::WalClosed(
                "writer stopped".into(),
            ))),
        }
    }

    /// Refreshes the in-flight gauge (permits are released on other threads).
    pub fn refresh_gauges(&self) {
        self.metrics.inflight_bytes.store(
            (self.budget_bytes - self.budget.available_permits()) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }
}
