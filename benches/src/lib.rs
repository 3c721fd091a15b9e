//! Benchmark support shared by the load generator (`periscope-loadgen`) and the
//! criterion benchmarks: the synthetic log workload, so both measure the same
//! records, and the synthetic trace workload.
//!
//! ```
//! use periscope_benches::Workload;
//! let mut w = Workload::new(7, "lgdoc");
//! let req = w.request(0, 500, 1_700_000_000_000_000_000);
//! let records: usize = req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
//! assert_eq!(records, 500);
//! ```
//!
//! Trace requests hold whole traces, so their span count is rounded:
//!
//! ```
//! use periscope_benches::TraceWorkload;
//! let mut w = TraceWorkload::new(7, "lgdoc");
//! let (req, traces) = w.request(500, 1_700_000_000_000_000_000);
//! let spans: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
//! assert_eq!(spans, traces.iter().map(|t| t.spans as usize).sum::<usize>());
//! assert!((480..550).contains(&spans));
//! ```

mod metric_workload;
mod store_ingest;
pub mod sync;
mod trace_workload;
mod workload;

pub use metric_workload::{METRIC_SERVICES, MetricEncoder, MetricWorkload};
pub use store_ingest::{decode_and_flatten, encoded_log_requests, index_log_requests};
pub use trace_workload::{
    TRACE_SERVICE_COUNT, TRACE_SERVICES, TRACE_SPANS, TraceRef, TraceWorkload,
};
pub use workload::{SERVICES, Workload, unix_nanos};
