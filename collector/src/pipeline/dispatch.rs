//! What happens to an entry once it is durable in the WAL: logs go to the
//! indexer, spans to the trace assembler, metrics (kept in the WAL until
//! their store exists) feed the service registry. The same path serves WAL
//! replay.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use periscope_proto::{
    ExportRequest, LogRecord, Signal, Span, flatten_logs, flatten_traces, service_name,
};
use periscope_query::ServiceRegistry;
use periscope_store::{IndexBatch, TenantId};
use tokio::sync::OwnedSemaphorePermit;

use crate::traces::Assembler;

enum Payload {
    Logs(Vec<LogRecord>),
    Spans(Vec<Span>),
    Services(Vec<String>),
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
            ExportRequest::Metrics(r) => Payload::Services(
                r.resource_metrics
                    .iter()
                    .map(|rm| service_name(rm.resource.as_ref()).to_owned())
                    .collect(),
            ),
        };
        WalItem {
            tenant,
            payload,
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
            Payload::Services(names) => {
                self.services.add(&tenant, names);
                drop(permit);
            }
        }
    }
}
