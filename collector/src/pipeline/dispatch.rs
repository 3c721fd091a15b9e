//! What happens to an entry once it is durable in the WAL: logs go to the
//! indexer, spans to the trace assembler, metrics to the metric-ingest
//! thread (which converts them to Prometheus series in WAL order, so delta
//! temporality accumulates correctly, and appends them to the metric store).
//! The same path serves WAL replay, and [`reread_logs`] serves the log
//! indexer when it rebuilds a partition whose writer failed (a full disk).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use periscope_proto::otlp::ExportMetricsServiceRequest;
use periscope_proto::{
    DeltaToCumulative, ExportRequest, LogRecord, PromBatch, SeriesCache, Signal, Span,
    flatten_logs, flatten_traces, otlp_to_prometheus_cached, service_name,
};
use periscope_query::ServiceRegistry;
use periscope_store::{IndexBatch, LogReread, MetricStore, StoreError, TenantId, Wal};
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
            ExportRequest::Logs(r) => Payload::Logs(flatten_logs(r, received_ns)),
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
    /// The metric-ingest thread's queue.
    pub metrics: SyncSender<MetricWork>,
}

/// A metric entry for the metric-ingest thread.
pub struct MetricWork {
    lsn: u64,
    tenant: TenantId,
    /// `None` for a barrier: `done` is told once everything before it is in.
    payload: Option<Payload>,
    /// Held until the samples are in the head.
    permit: Option<OwnedSemaphorePermit>,
    done: Option<std::sync::mpsc::Sender<()>>,
}

/// Starts the thread that converts metric entries (in WAL order: delta sums
/// and histograms become cumulative here) and appends them to the store.
/// It ends when every sender of `rx` is gone and the queue is empty. Off the
/// WAL writer thread, conversion overlaps the next entries' fsync.
pub fn spawn_metric_ingest(
    store: Arc<MetricStore>,
    rx: Receiver<MetricWork>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metric-ingest".into())
        .spawn(move || {
            let mut deltas = DeltaToCumulative::default();
            let mut series = SeriesCache::default();
            for work in rx {
                let batch = match work.payload {
                    Some(Payload::Prom(batch)) => batch,
                    Some(Payload::Metrics(req)) => {
                        otlp_to_prometheus_cached(&req, &mut deltas, &mut series)
                    }
                    Some(Payload::Logs(_) | Payload::Spans(_)) | None => {
                        if let Some(done) = work.done {
                            let _ = done.send(());
                        }
                        continue;
                    }
                };
                store.append_at(&work.tenant, batch, work.lsn);
                drop(work.permit);
            }
        })
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
            Payload::Prom(batch) => self.send_metrics(MetricWork {
                lsn,
                tenant,
                payload: Some(Payload::Prom(batch)),
                permit,
                done: None,
            }),
            Payload::Metrics(req) => {
                let mut names: Vec<String> = req
                    .resource_metrics
                    .iter()
                    .map(|rm| service_name(rm.resource.as_ref()).to_owned())
                    .collect();
                names.sort_unstable();
                names.dedup();
                self.services.add(&tenant, names);
                self.send_metrics(MetricWork {
                    lsn,
                    tenant,
                    payload: Some(Payload::Metrics(req)),
                    permit,
                    done: None,
                });
            }
        }
    }

    /// Waits until every metric entry dispatched so far is in the store
    /// (replay is over only then: queries after `/readyz` see it all).
    pub fn wait_metrics(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send_metrics(MetricWork {
            lsn: 0,
            tenant: TenantId::default_tenant(),
            payload: None,
            permit: None,
            done: Some(tx),
        });
        let _ = rx.recv();
    }

    fn send_metrics(&self, work: MetricWork) {
        let lsn = work.lsn;
        if self.metrics.send(work).is_err() {
            tracing::error!(
                lsn,
                "metric ingest stopped; entry stays in the wal for replay"
            );
        }
    }
}

/// The log indexer's hook to read entries back from the WAL: log entries
/// are decoded and flattened as in replay (same record order, so the same
/// sequence numbers).
pub fn reread_logs(wal: Arc<Wal<WalItem>>) -> LogReread {
    Box::new(move |after, upto, sink| {
        wal.read_range(Signal::Logs, after, upto, |rec| {
            let req =
                ExportRequest::decode_protobuf(Signal::Logs, &rec.entry.body).map_err(|e| {
                    StoreError::WalClosed(format!("wal entry {} does not decode: {e}", rec.lsn))
                })?;
            if let ExportRequest::Logs(r) = req {
                sink(IndexBatch {
                    lsn: rec.lsn,
                    tenant: rec.entry.tenant,
                    records: flatten_logs(r, periscope_proto::unix_now_ns()),
                    hold: Box::new(()),
                    acked_at: Instant::now(),
                });
            }
            Ok(())
        })
    })
}
