//! The limits every query endpoint enforces ([`QueryLimits`], set from the
//! collector's `--query-*` flags), and the checks on query text that run
//! before any parser: length and nesting depth of log queries and trace tag
//! expressions (PromQL's are in `promql::depth`).

use std::time::Duration;

use crate::api::ApiError;

/// What one query may take; refusals name the flag that sets each limit.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    /// Longest query text in bytes: a log query, a PromQL expression, trace
    /// tags (`--query-max-length`). Default 65,536.
    pub max_length: usize,
    /// Deepest nesting of a query (`--query-max-depth`). Default 128.
    pub max_depth: usize,
    /// Most samples a PromQL query reads or holds (`--query-max-samples`).
    /// Default 50,000,000.
    pub max_samples: usize,
    /// Most series one PromQL selector, or a series/labels request, may
    /// match (`--query-max-series`). Default 500,000.
    pub max_series: usize,
    /// Longest any query runs before it is stopped (`--query-timeout`);
    /// a client's `timeout` may only lower it. Default 2 minutes.
    pub timeout: Duration,
    /// Queries admitted at once, running on the query threads or waiting
    /// for one, all tenants (`--query-max-concurrent`). Default eight times
    /// the cores, at least 32: a dashboard sends its panels' queries at
    /// once, and a waiting query costs only its place in the queue.
    pub max_concurrent: usize,
    /// Queries running at once for one tenant
    /// (`--query-max-concurrent-per-tenant`). Default half of
    /// `max_concurrent`, at least 1.
    pub max_concurrent_per_tenant: usize,
    /// Threads running queries, apart from ingest's (`--query-threads`).
    /// Default the number of cores.
    pub threads: usize,
    /// Most spans one Jaeger trace search renders in a response; traces
    /// past it are left out and a warning says so. Default 100,000.
    pub max_spans_per_response: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_concurrent = (8 * cores).max(32);
        QueryLimits {
            max_length: 64 << 10,
            max_depth: 128,
            max_samples: 50_000_000,
            max_series: 500_000,
            timeout: Duration::from_secs(120),
            max_concurrent,
            max_concurrent_per_tenant: (max_concurrent / 2).max(1),
            threads: cores,
            max_spans_per_response: 100_000,
        }
    }
}

impl QueryLimits {
    /// The deepest `max_depth` may be set to: tantivy's parser recurses per
    /// level (see `periscope_store::MAX_LOG_QUERY_DEPTH`).
    pub const MAX_DEPTH: usize = 512;

    /// Checks the limits are usable; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("query_max_length", self.max_length),
            ("query_max_depth", self.max_depth),
            ("query_max_samples", self.max_samples),
            ("query_max_series", self.max_series),
            ("query_max_concurrent", self.max_concurrent),
            (
                "query_max_concurrent_per_tenant",
                self.max_concurrent_per_tenant,
            ),
            ("query_threads", self.threads),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("invalid value 0 for {name}: must be positive"));
            }
        }
        if self.max_depth > Self::MAX_DEPTH {
            return Err(format!(
                "invalid value {} for query_max_depth: at most {}",
                self.max_depth,
                Self::MAX_DEPTH
            ));
        }
        if self.timeout.is_zero() {
            return Err("invalid value 0 for query_timeout: must be positive".into());
        }
        Ok(())
    }

    /// The engine options these limits give, with a client's `timeout`
    /// (only lower) and the request's deadline.
    pub(crate) fn engine_options(
        &self,
        deadline: periscope_store::Deadline,
    ) -> crate::promql::EngineOptions {
        crate::promql::EngineOptions {
            max_samples: self.max_samples,
            max_series: self.max_series,
            max_length: self.max_length,
            max_depth: self.max_depth,
            timeout: self.timeout,
            deadline,
            ..Default::default()
        }
    }

    /// Refuses a log query that is too long or nests too deep, counted on
    /// the text tantivy's parser will read, before it runs.
    pub(crate) fn check_log_query(&self, q: &str) -> Result<(), ApiError> {
        self.check_length("log query", q)?;
        let depth = periscope_store::log_query_depth(q)?;
        if depth > self.max_depth {
            return Err(ApiError::bad(format!(
                "query nesting depth {depth} exceeds the limit {} (--query-max-depth)",
                self.max_depth
            )));
        }
        Ok(())
    }

    /// Refuses trace tags that are too long, or whose regular expressions
    /// nest too deep.
    pub(crate) fn check_tags(&self, tags: &str) -> Result<(), ApiError> {
        self.check_length("tags", tags)?;
        let depth = bracket_depth(tags);
        if depth > self.max_depth {
            return Err(ApiError::bad(format!(
                "tags nesting depth {depth} exceeds the limit {} (--query-max-depth)",
                self.max_depth
            )));
        }
        Ok(())
    }

    pub(crate) fn check_length(&self, what: &str, text: &str) -> Result<(), ApiError> {
        if text.len() > self.max_length {
            return Err(ApiError::bad(format!(
                "{what} length {} bytes exceeds the limit {} (--query-max-length)",
                text.len(),
                self.max_length
            )));
        }
        Ok(())
    }
}

/// The deepest nesting of brackets of any kind, quotes aside.
fn bracket_depth(s: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_query_depth_counts_brackets_and_nots() {
        let l = QueryLimits {
            max_depth: 3,
            max_length: 64,
            ..Default::default()
        };
        for (q, ok) in [
            ("a AND b", true),
            ("((a))", true),
            ("(((a)))", true),
            ("((((a))))", false),
            ("\"((((\" x", true),
            ("body:/((((a))))/", true),
            ("NOT NOT NOT a", true),
            ("NOT NOT NOT NOT a", false),
            ("x".repeat(65).as_str(), false),
        ] {
            assert_eq!(l.check_log_query(q).is_ok(), ok, "{q}");
        }
        let err = l.check_log_query("((((a))))").unwrap_err();
        assert!(err.message.contains("--query-max-depth"), "{}", err.message);
    }

    #[test]
    fn limits_validate() {
        assert!(QueryLimits::default().validate().is_ok());
        for bad in [
            QueryLimits {
                max_depth: 0,
                ..Default::default()
            },
            QueryLimits {
                max_depth: 10_000,
                ..Default::default()
            },
            QueryLimits {
                timeout: Duration::ZERO,
                ..Default::default()
            },
            QueryLimits {
                threads: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
