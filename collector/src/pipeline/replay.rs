//! WAL replay at start: every entry the stores have not made durable goes
//! through the dispatcher again, as it did when it was acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use periscope_proto::{ExportRequest, Signal};
use periscope_store::{BodyFormat, MetricStore, StoreError, TenantId, Wal};

use super::{Dispatcher, WalItem, now_ns};

/// Why replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An entry passed its checksum but does not decode: written by a
    /// build that encoded it differently, or a bug. Replay stops rather
    /// than skip acknowledged data.
    #[error("wal entry {lsn} does not decode: {reason}")]
    Corrupt { lsn: u64, reason: String },
    /// Reading the WAL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What replay needs to know of the stores' durable state.
pub struct Replay {
    /// Entries of traces up to here are in the span store.
    pub traces_durable: u64,
    /// Per trace, the last entry whose spans the span store already holds
    /// (traces are written out of WAL order).
    pub written_traces: HashMap<(TenantId, [u8; 16]), u64>,
    /// Per tenant, how far its samples are durable.
    pub metrics: Arc<MetricStore>,
}

impl Replay {
    /// Dispatches every entry of `wal` that a store still lacks; returns
    /// the number of entries read. Returns once the metric ingest has
    /// taken everything dispatched.
    pub fn run(self, wal: &Wal<WalItem>, d: &Dispatcher) -> Result<u64, ReplayError> {
        let n = wal.replay(|rec| -> Result<(), ReplayError> {
            let corrupt = |e: &dyn std::fmt::Display| ReplayError::Corrupt {
                lsn: rec.lsn,
                reason: e.to_string(),
            };
            if rec.entry.signal == Signal::Traces && rec.lsn <= self.traces_durable {
                return Ok(());
            }
            if rec.entry.signal == Signal::Metrics
                && rec.lsn <= self.metrics.durable_lsn(&rec.entry.tenant)
            {
                return Ok(());
            }
            if rec.entry.format == BodyFormat::PromRemoteWrite {
                let batch = periscope_proto::decode_remote_write(&rec.entry.body)
                    .map_err(|e| corrupt(&e))?;
                d.dispatch(
                    rec.lsn,
                    rec.entry.signal,
                    WalItem::prom(rec.entry.tenant, batch, None),
                );
                return Ok(());
            }
            let req = ExportRequest::decode_protobuf(rec.entry.signal, &rec.entry.body)
                .map_err(|e| corrupt(&e))?;
            let signal = rec.entry.signal;
            let tenant = rec.entry.tenant.clone();
            let mut item = WalItem::new(rec.entry.tenant, req, now_ns(), None);
            item.retain_spans(|s| {
                self.written_traces
                    .get(&(tenant.clone(), s.trace_id))
                    .is_none_or(|written_up_to| *written_up_to < rec.lsn)
            });
            d.dispatch(rec.lsn, signal, item);
            Ok(())
        })?;
        d.wait_metrics();
        Ok(n)
    }
}
