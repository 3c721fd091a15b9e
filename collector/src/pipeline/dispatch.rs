//! What happens to an entry once it is durable in the WAL: logs go to the
//! indexer, spans and metrics (kept in the WAL until their stores exist)
//! feed the service registry. The same path serves WAL replay.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use periscope_proto::{ExportRequest, LogRecord, Signal, flatten_logs, service_name};
use periscope_query::ServiceRegistry;
use periscope_store::{IndexBatch, TenantId};
use tokio::sync::OwnedSemaphorePermit;

enum Payload {
    Logs(Vec<LogRecord>),
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
        let payload = match &req {
            ExportRequest::Logs(r) => Payload::Logs(flatten_logs(r, received_ns)),
            ExportRequest::Traces(r) => Payload::Services(
                r.resource_spans
                    .iter()
                    .map(|rs| service_name(rs.resource.as_ref()).to_owned())
                    .collect(),
            ),
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
}

/// The WAL's sink. Runs on the WAL writer thread; sending to the indexer
/// blocks when its queue is full, which backs pressure up to the receivers.
pub struct Dispatcher {
    pub indexer: SyncSender<IndexBatch>,
    pub services: Arc<ServiceRegistry>,
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
            Payload::Services(names) => {
                self.services.add(&tenant, names);
                drop(permit);
            }
        }
    }
}
