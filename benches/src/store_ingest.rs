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

/// Decodes one encoded request and flattens it into the store's records,
/// received at `now_ns`.
pub fn decode_and_flatten(
    bytes: &[u8],
    now_ns: i64,
) -> anyhow::Result<Vec<periscope_proto::LogRecord>> {
    let req = ExportLogsServiceRequest::decode(bytes).context("decode request")?;
    Ok(flatten_logs(req, now_ns))
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
        let batch = IndexBatch {
            lsn,
            tenant: TenantId::default_tenant(),
            records: decode_and_flatten(bytes, now)?,
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

#[cfg(test)]
mod tests {
    use periscope_store::{HistogramRequest, LogSearch};

    use super::*;

    #[test]
    fn every_generated_record_is_indexed_and_bad_bytes_are_an_error() {
        let encoded = encoded_log_requests(3, 40);
        let dir = tempfile::tempdir().unwrap();
        index_log_requests(&encoded, dir.path()).unwrap();

        let data = DataDir::open(dir.path()).unwrap();
        let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
        let now = unix_nanos() as i64;
        let hour = 3_600_000_000_000;
        let request = HistogramRequest {
            search: LogSearch {
                start_ns: now - hour,
                end_ns: now + hour,
                ..Default::default()
            },
            step_ns: 2 * hour + 1,
        };
        let buckets = store
            .histogram(&TenantId::default_tenant(), &request)
            .unwrap();
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 120);

        let other = tempfile::tempdir().unwrap();
        let err = index_log_requests(&[vec![0xff, 0xff]], other.path()).unwrap_err();
        assert!(format!("{err:#}").contains("decode request"), "{err:#}");
    }
}
