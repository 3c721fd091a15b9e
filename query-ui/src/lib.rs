//! The query API over the store, served by `periscope serve` on `--http-addr`.
//!
//! `api` holds the HTTP handlers (axum); searches run on blocking threads.

mod api;
mod jaeger;
mod prom_api;
pub mod promql;
mod services;
mod timeparse;
mod traces;

pub use api::{QueryState, router};
pub use services::ServiceRegistry;
pub use timeparse::{format_rfc3339_ns, parse_time};
pub use traces::{LiveTraces, NoLiveTraces};
