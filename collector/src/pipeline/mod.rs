//! The ingest pipeline shared by the receivers: admission against the
//! in-flight budget, decoding and validation on blocking threads, the WAL
//! append (acknowledge after fsync), and dispatch of durable entries to the stores.

mod dispatch;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
pub use dispatch::{Dispatcher, WalItem, reread_logs, spawn_metric_ingest};
use periscope_proto::{
    DecodeError, Encoding, ExportRequest, Limits, Signal, count_records, decode_remote_write,
    decode_request, validate,
};
use periscope_store::{BodyFormat, StoreError, TenantId, Wal, WalEntry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::{Metrics, Transport};

/// How an accepted request went: records dropped by validation, and why.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected: usize,
    pub error_message: String,
}

/// Why a request was not accepted. One mapping to gRPC and HTTP lives in the receivers.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The in-flight budget is exhausted: retry later.
    #[error("too much data in flight ({0} bytes budget); retry later")]
    Busy(usize),
    /// The body could not be decoded.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// The WAL cannot accept writes (I/O failure or shutdown).
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

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
        }
    }

    /// Takes budget for a request of `wire_len` bytes, or refuses at once.
    /// Decoded requests take a few times their wire size in memory.
    fn admit(&self, wire_len: usize) -> Option<OwnedSemaphorePermit> {
        let cost = (wire_len.saturating_mul(4)).clamp(1, self.budget_bytes) as u32;
        let permit = self.budget.clone().try_acquire_many_owned(cost).ok()?;
        self.metrics.inflight_bytes.store(
            (self.budget_bytes - self.budget.available_permits()) as u64,
            Ordering::Relaxed,
        );
        Some(permit)
    }

    /// Decodes, validates, makes durable and acknowledges one request.
    pub async fn export(
        &self,
        signal: Signal,
        transport: Transport,
        tenant: TenantId,
        encoding: Encoding,
        body: Bytes,
    ) -> Result<Accepted, IngestError> {
        let Some(permit) = self.admit(body.len()) else {
            Metrics::add(&self.metrics.refused_requests, signal, transport, 1);
            // JSON bodies are not counted: counting them would mean parsing them.
            if encoding == Encoding::Protobuf {
                Metrics::add(
                    &self.metrics.refused_records,
                    signal,
                    transport,
                    count_records(signal, &body) as u64,
                );
            }
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
                let item = WalItem::new(tenant, v.request, now, Some(permit));
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
    /// durable and acknowledges it; returns the number of samples.
    pub async fn export_remote_write(
        &self,
        tenant: TenantId,
        body: Bytes,
    ) -> Result<usize, IngestError> {
        let (signal, transport) = (Signal::Metrics, Transport::Http);
        // Snappy expands a few times; decoded samples take more again.
        let Some(permit) = self.admit(body.len().saturating_mul(2)) else {
            Metrics::add(&self.metrics.refused_requests, signal, transport, 1);
            return Err(IngestError::Busy(self.budget_bytes));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let wal = self.wal.clone();
        let metrics = self.metrics.clone();
        let samples = tokio::task::spawn_blocking(move || -> Result<usize, IngestError> {
            let batch = decode_remote_write(&body)
                .inspect_err(|_| Metrics::add(&metrics.invalid_requests, signal, transport, 1))?;
            let n = batch.samples.len();
            Metrics::add(&metrics.received, signal, transport, n as u64);
            // The WAL keeps the body as received; replay decodes it again.
            let entry = WalEntry {
                signal,
                format: BodyFormat::PromRemoteWrite,
                tenant: tenant.clone(),
                body: body.to_vec(),
            };
            wal.append(
                entry.encode(),
                WalItem::prom(tenant, batch, Some(permit)),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )?;
            Ok(n)
        })
        .await
        .map_err(|e| {
            IngestError::Unavailable(StoreError::WalClosed(format!("ingest task failed: {e}")))
        })??;
        match rx.await {
            Ok(Ok(_)) => {
                Metrics::add(&self.metrics.accepted, signal, transport, samples as u64);
                Ok(samples)
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
