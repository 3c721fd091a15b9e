//! The query API over the store, served by `periscope serve` on `--http-addr`.
//!
//! `api` holds the HTTP handlers (axum); queries run on the threads of
//! `pool` (not tokio's blocking pool, which ingest uses), admitted and
//! bounded by the limits of `limits`.
//! `assets` serves the web UI (`web/`) for every path no API route takes;
//! with an auth file, `signin` signs the UI in to a cookie session
//! (`session`) that the gate accepts in place of a token.

mod api;
mod assets;
mod error;
mod jaeger;
mod limits;
#[cfg(test)]
mod limits_tests;
mod pool;
mod prom_api;
pub mod promql;
mod service_map;
mod services;
mod session;
mod signin;
mod sync;
mod timeparse;
mod traces;

pub use api::QueryState;
pub use assets::serve_ui;
pub use limits::QueryLimits;
pub use pool::{QueryRuntime, QueryStats};
pub use services::ServiceRegistry;
pub use session::{Session, SessionError, Sessions};
pub use signin::{SignIn, csrf_guard, session_router};
pub use timeparse::{format_rfc3339_ns, parse_time};
pub use traces::{LiveTraces, NoLiveTraces};

/// The query API routes, with the web UI answering every other path
/// (client-side routes get the app's `index.html`; API prefixes stay 404).
pub fn router(state: QueryState) -> axum::Router {
    api::router(state).fallback(assets::serve_ui)
}
