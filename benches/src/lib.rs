//! Benchmark support shared by the load generator (`periscope-loadgen`) and the
//! criterion benchmarks: the synthetic log workload, so both measure the same
//! records.
//!
//! ```
//! use periscope_benches::Workload;
//! let mut w = Workload::new(7, "lgdoc");
//! let req = w.request(0, 500, 1_700_000_000_000_000_000);
//! let records: usize = req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
//! assert_eq!(records, 500);
//! ```

mod workload;

pub use workload::{SERVICES, Workload, unix_nanos};
