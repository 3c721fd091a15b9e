//! Periscope's storage: the write-ahead log, the log index, the span store,
//! the metric store and the data directory layout. A library: no sockets,
//! no async runtime.
//!
//! Data flows `Wal` → (collector pipeline) → `LogStore`, `TraceStore` and
//! `MetricStore` writers. The two Parquet stores share one file-set
//! lifecycle (`fileset.rs`, hour partitions in `partition.rs`). Every store
//! records the WAL position it holds atomically with its data, so that
//! replaying the WAL after a crash applies each acknowledged record exactly once.
//!
//! ```
//! let tenant = periscope_store::TenantId::parse("team-a").unwrap();
//! assert_eq!(tenant.as_str(), "team-a");
//! assert!(periscope_store::TenantId::parse("../etc").is_err());
//! ```

mod budget;
mod error;
mod fileset;
mod layout;
mod layout_migration;
mod logs;
mod metrics;
mod partition;
mod sync;
mod tenant;
#[cfg(test)]
mod test_disk;
mod traces;
mod wal;

pub use budget::{Deadline, ReadBudget};
pub use error::StoreError;
pub use layout::{DATA_FORMAT_VERSION, DataDir};
pub use logs::{
    Cursor, HistogramRequest, IndexBatch, IndexStats, LogHit, LogIndexer, LogReread, LogSearch,
    LogStore, LogStoreOptions, MAX_LOG_QUERY_DEPTH, SearchPage, log_query_depth,
};
pub use metrics::{
    FloatScan, FloatVisitor, HeadSeries, MetricFlush, MetricStore, MetricStoreOptions,
    MetricStoreStats,
};
pub use partition::hour_partition;
pub use tenant::TenantId;
pub use traces::{
    EdgeRow, FileSet, FlushBatch, Fragment, LATENCY_BOUNDS_MS, LatencyHistogram, NODE_KINDS,
    OperationRow, SpanPredicate, TenantFlush, TraceQuery, TraceStore, TraceStoreOptions,
    TraceStoreStats, TraceSummary, WriteError, merge_edges, merge_operations, minute_of,
};
pub use wal::{
    AppendReply, BodyFormat, EncodedEntry, FSYNC_BUCKETS, Wal, WalEntry, WalOptions, WalRecord,
    WalStats,
};
