//! A PromQL engine over an abstract [`SeriesSource`].
//!
//! Queries are parsed with the `promql-parser` crate; evaluation follows
//! Prometheus' engine: a range query is the expression evaluated at each
//! step `start, start + step, ... <= end`, instant vectors look back up to
//! [`EngineOptions::lookback_ms`] for the latest sample (a staleness marker
//! ends a series), range vectors select `(t - range, t]`.
//!
//! The flow: `plan` walks the syntax tree once to learn which time range
//! each selector needs over the whole query and loads it from the source
//! (counting samples against [`EngineOptions::max_samples`]); `eval` then
//! evaluates the tree at each step over those loaded samples, with
//! `binary`, `aggregate` and `functions` holding the operators.

mod aggregate;
mod binary;
mod depth;
mod eval;
mod functions;
mod histogram;
mod range;
mod source;
mod value;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use depth::{check_query_text, expr_depth};
pub use eval::{MAX_POINTS_PER_SERIES, instant_query, range_query, set_results_cache_bytes};
pub use source::{FloatVisitor, MatchOp, Matcher, MemorySource, Series, SeriesSource};
pub use value::QueryValue;

/// Limits and defaults of query evaluation.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant vector selector looks for a sample. Default 5 minutes.
    pub lookback_ms: i64,
    /// Most samples a query may load from the source or produce. Default 50,000,000.
    pub max_samples: usize,
    /// Longest a query may run. Default 2 minutes.
    pub timeout: Duration,
    /// Range queries in the subset `range.rs` handles are evaluated a series
    /// at a time (same results, far fewer allocations). Default on; off
    /// only to compare the two evaluators.
    pub series_at_a_time: bool,
    /// Range queries are evaluated in chunks of steps spanning about this
    /// long, each loading only the samples it reads. Default 2 hours.
    pub range_chunk_ms: i64,
    /// Most threads evaluating a range query's chunks at once (never more
    /// than the machine's cores). Default 4.
    pub range_threads: usize,
    /// Longest query text, in bytes (`--query-max-length`). Default 65,536.
    pub max_length: usize,
    /// Deepest nesting of the query, on the text and in the syntax tree
    /// (`--query-max-depth`). Default 128.
    pub max_depth: usize,
    /// Most series one selector may match (`--query-max-series`). Default 500,000.
    pub max_series: usize,
    /// The caller's deadline and cancel flag, checked with the timeout
    /// and handed to the store's reads. Default: none.
    pub deadline: periscope_store::Deadline,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_ms: 300_000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            series_at_a_time: true,
            range_chunk_ms: 2 * 3600 * 1000,
            range_threads: 4,
            max_length: 64 << 10,
            max_depth: 128,
            max_series: 500_000,
            deadline: periscope_store::Deadline::none(),
        }
    }
}

/// A failed query, with the error type Prometheus' HTTP API reports.
pub type QueryError = crate::error::Error;

impl crate::error::Error {
    pub(crate) fn bad_data(message: impl Into<String>) -> Self {
        QueryError::new(crate::error::ErrorKind::BadData, message)
    }

    pub(crate) fn execution(message: impl Into<String>) -> Self {
        QueryError::new(crate::error::ErrorKind::Execution, message)
    }

    pub(crate) fn timeout() -> Self {
        QueryError::new(
            crate::error::ErrorKind::Timeout,
            "query timed out in query execution (--query-timeout)",
        )
    }

    /// A query stopped because its client went away.
    pub(crate) fn canceled() -> Self {
        QueryError::new(
            crate::error::ErrorKind::Canceled,
            "query was canceled in query execution",
        )
    }

    /// The samples limit, as Prometheus words it, with our flag.
    pub(crate) fn too_many_samples(limit: usize) -> Self {
        QueryError::execution(format!(
            "query processing would load too many samples into memory in query execution (limit {limit}, --query-max-samples)"
        ))
    }

    /// The series-per-selector limit.
    pub(crate) fn too_many_series(limit: usize) -> Self {
        QueryError::execution(format!(
            "a selector matches more than {limit} series, the limit (--query-max-series)"
        ))
    }

    /// A store error, with the error type Prometheus gives it.
    pub(crate) fn from_store(e: periscope_store::StoreError, opts: &EngineOptions) -> Self {
        use periscope_store::StoreError;
        match e {
            StoreError::DeadlineExceeded => QueryError::timeout(),
            StoreError::Cancelled => QueryError::canceled(),
            StoreError::LimitExceeded { what: "series", .. } => {
                QueryError::too_many_series(opts.max_series)
            }
            StoreError::LimitExceeded { .. } => QueryError::too_many_samples(opts.max_samples),
            e => QueryError::execution(format!("failed to select series: {e}")),
        }
    }
}
