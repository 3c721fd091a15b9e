//! The store's ingest path without network or WAL, for the benchmarks that
//! measure what indexing alone costs (`ingest_ceiling`, `log_index_size`).

use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::Context as _;
use periscope_proto::flatten_logs;
use periscope_proto::otlp::ExportLogsServiceRequest;
use periscope_store::{DataDir, IndexBatch, LogIndexer, LogStore, LogStoreOptions, TenantId};
use prost::Message;

use crate::{Workload, unix_nanos};

/// Bound of the queue into the indexer thread (batches, not records).
const INDEX_QUEUE: usize = 64;

/// `count` load generator requests of `records` log records each, encoded as
/// OTLP protobuf (the same seed every time).
pub fn encoded_log_requests(count: u64, records: u64) -> Vec<Vec<u8>> {
    let mut w = Workload::new(0x5eed, "lgbench");
    let now = unix_nanos();
    (0..count)
        .map(|i| {
            w.request(i * records, records as usize, now)
                .encode_to_vec()
        })
        .collect()
}

/// Decodes, flattens and indexes `encoded` requests through the store's
/// `LogIndexer` (which commits every second, as in the collector) into a new
/// store under `dir`; returns once the indexer has committed everything.
/// Merges tantivy started may still be running.
pub fn index_log_requests(encoded: &[Vec<u8>], dir: &Path) -> anyhow::Result<()> {
    let data = DataDir::open(dir).context("open data dir")?;
    let store = LogStore::open(&data, LogStoreOptions::default()).context("open log store")?;
    let (tx, rx) = sync_channel(INDEX_QUEUE);
    let indexer = LogIndexer::spawn(store, rx, |_lsn| {}).context("spawn indexer")?;
    let now = unix_nanos() as i64;
    for (lsn, bytes) in (1..).zip(encoded) {
        let req = ExportLogsServiceRequest::decode(bytes.as_slice()).context("decode request")?;
        let batch = IndexBatch {
            lsn,
            tenant: TenantId::default_tenant(),
            records: flatten_logs(req, now),
            hold: Box::new(()),
            acked_at: Instant::now(),
        };
        tx.send(batch)
            .map_err(|_| anyhow::anyhow!("indexer thread stopped"))?;
    }
    drop(tx);
    indexer
        .join()
        .map_err(|_| anyhow::anyhow!("indexer thread panicked"))
}
