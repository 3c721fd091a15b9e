//! What happens to an entry once it is durable in the WAL: logs go to the
//! indexer, spans to the trace assembler, metrics to the metric store (after
//! conversion to Prometheus series, in WAL order so delta temporality
//! accumulates correctly). The same path serves WAL replay.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use periscope_proto::otlp::ExportMetricsServiceRequest;
use periscope_proto::{
    DeltaToCumulative, ExportRequest, LogRecord, PromBatch, Signal, Span, flatten_logs,
    flatten_traces, otlp_to_prometheus, service_name,
};
use periscope_query::ServiceRegistry;
use periscope_store::{IndexBatch, MetricStore, TenantId};
use tokio::sync::OwnedSemaphorePermit;

use crate::traces::Assembler;

enum Payload {
    Logs(Vec<LogRecord>),
    Spans(Vec<Span>),
    Metrics(ExportMetricsServiceRequest),
    /// Prometheus remote write: already series, written as they are.
    Prom(PromBatch),
}

/// An accepted request as the stores need it, carried through the WAL writer.
pub struct WalItem {
    tenant: TenantId,
    payload: Payload,
    /// Holds the request's share of the in-flight budget until it is indexed.
    permit: Option<OwnedSemaphorePermit>,
    acked_at: Instant,
}

impl WalItem {
    /// Prepares a request for the stores (flattening logs here, on the
    /// receiver's blocking thread, keeps the single indexer thread lean).
    pub fn new(
        tenant: TenantId,
        req: ExportRequest,
        received_ns: i64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> WalItem {
        let payload = match req {
            ExportRequest::Logs(r) => Payload::Logs(flatten_logs(&r, received_ns)),
            ExportRequest::Traces(r) => Payload::Spans(flatten_traces(r)),
            ExportRequest::Metrics(r) => Payload::Metrics(r),
        };
        WalItem {
            tenant,
            payload,
            permit,
            acked_at: Instant::now(),
        }
    }

    /// A remote-write request, decoded.
    pub fn prom(
        tenant: TenantId,
        batch: PromBatch,
        permit: Option<OwnedSemaphorePermit>,
    ) -> WalItem {
        WalItem {
            tenant,
            payload: Payload::Prom(batch),
            permit,
            acked_at: Instant::now(),
        }
    }

    /// For replay: drops the spans `keep` rejects (already stored).
    pub fn retain_spans(&mut self, keep: impl Fn(&Span) -> bool) {
        if let Payload::Spans(spans) = &mut self.payload {
            spans.retain(keep);
        }
    }
}

/// The WAL's sink. Runs on the WAL writer thread; sending to the indexer
/// blocks when its queue is full, which backs pressure up to the receivers.
pub struct Dispatcher {
    pub indexer: SyncSender<IndexBatch>,
    pub services: Arc<ServiceRegistry>,
    pub assembler: Arc<Assembler>,
    pub metrics: Arc<MetricStore>,
    /// Delta sums and histograms become cumulative here, in WAL order.
    pub deltas: Mutex<DeltaToCumulative>,
}

impl Dispatcher {
    pub fn dispatch(&self, lsn: u64, _signal: Signal, item: WalItem) {
        let WalItem {
            tenant,
            payload,
            permit,
            acked_at,
        } = item;
        match payload {
            Payload::Logs(records) => {
                let batch = IndexBatch {
                    lsn,
                    tenant,
                    records,
                    hold: Box::new(permit),
                    acked_at,
                };
                if self.indexer.send(batch).is_err() {
                    tracing::error!(
                        lsn,
                        "log indexer stopped; entry stays in the wal for replay"
                    );
                }
            }
            Payload::Spans(spans) => {
                let mut names: Vec<String> = spans.iter().map(|s| s.service().to_owned()).collect();
                names.sort_unstable();
                names.dedup();
                self.services.add(&tenant, names);
                self.assembler.add(lsn, &tenant, spans);
                drop(permit);
            }
            Payload::Prom(batch) => {
                self.metrics.append_at(&tenant, batch, lsn);
                drop(permit);
            }
            Payload::Metrics(req) => {
                let mut names: Vec<String> = req
                    .resource_metrics
                    .iter()
                    .map(|rm| service_name(rm.resource.as_ref()).to_owned())
                    .collect();
                names.sort_unstable();
                names.dedup();
                self.services.add(&tenant, names);
                let batch = {
                    let mut deltas = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
                    otlp_to_prometheus(&req, &mut deltas)
                };
                drop(req);
                self.metrics.append_at(&tenant, batch, lsn);
                drop(permit);
            }
        }
    }
}
