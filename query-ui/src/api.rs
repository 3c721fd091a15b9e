//! HTTP handlers of the query API (`/api/v1/...`). Every request reads one
//! tenant, from `X-Scope-OrgID` (default `default`), and runs on the query
//! pool within the limits of [`crate::QueryLimits`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use periscope_proto::SeverityLevel;
use periscope_store::{
    Cursor, Deadline, HistogramRequest, LogHit, LogSearch, LogStore, MetricStore, StoreError,
    TenantId, TraceStore,
};
use serde_json::{Value, json};

use crate::pool::QueryRuntime;
use crate::traces::{self, Live};
use crate::{ServiceRegistry, format_rfc3339_ns, parse_time};

/// What the handlers read.
#[derive(Clone)]
pub struct QueryState {
    /// The log store.
    pub logs: Arc<LogStore>,
    /// Services seen in signals without an index.
    pub services: Arc<ServiceRegistry>,
    /// The span store.
    pub traces: Arc<TraceStore>,
    /// Spans not yet in the span store.
    pub live: Live,
    /// The metric store.
    pub metrics: Arc<MetricStore>,
    /// The query limits, the query threads and admission.
    pub runtime: Arc<QueryRuntime>,
}

impl QueryState {
    /// Runs store work for `tenant` on the query pool, with a deadline the
    /// work checks (`timeout` may only lower `--query-timeout`).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        timeout: Option<std::time::Duration>,
        f: impl FnOnce(&Deadline) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let r = self.runtime.run(tenant, timeout, f).await?;
        r.map_err(|e| {
            if matches!(e, StoreError::LimitExceeded { .. }) {
                self.runtime.count_limit();
            }
            if matches!(e, StoreError::DeadlineExceeded) {
                self.runtime.count_timeout();
            }
            ApiError::from(e)
        })
    }
}

/// The query API routes.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .route("/api/v1/services", get(services))
        .route(
            "/api/v1/services/{service}/operations",
            get(traces::operations),
        )
        .route("/api/v1/traces", get(traces::search_traces))
        .route("/api/v1/traces/{trace_id}", get(traces::trace_by_id))
        .route("/api/v1/service-map", get(traces::service_map_handler))
        .merge(crate::jaeger::router())
        .merge(crate::prom_api::router())
        .with_state(state)
}

/// An error of the native API: `{"error": message}`.
pub(crate) type ApiError = crate::error::Error<crate::error::Native>;

/// The tenant of a request: `X-Scope-OrgID`, else `default`.
pub(crate) fn tenant(headers: &HeaderMap) -> Result<TenantId, ApiError> {
    match headers.get("x-scope-orgid") {
        None => Ok(TenantId::default_tenant()),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad("X-Scope-OrgID is not valid text"))?;
            TenantId::parse(s).map_err(ApiError::from)
        }
    }
}

const HOUR_NS: i64 = 3_600_000_000_000;

fn log_search(
    p: &HashMap<String, String>,
    limits: &crate::QueryLimits,
) -> Result<LogSearch, ApiError> {
    let now = periscope_proto::unix_now_ns();
    let time = |k: &str| {
        p.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(v).map_err(|e| ApiError::bad(format!("{k}: {e}"))))
            .transpose()
    };
    let end_ns = time("end")?.unwrap_or(now);
    let start_ns = time("start")?.unwrap_or(end_ns.saturating_sub(HOUR_NS));
    if start_ns > end_ns {
        return Err(ApiError::bad("start is after end"));
    }
    let query = p.get("q").cloned().unwrap_or_default();
    limits.check_log_query(&query)?;
    let limit = match p.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::bad("limit must be 1 to 1000"))?,
        None => 100,
    };
    let min_severity = p
        .get("severity")
        .filter(|s| !s.is_empty())
        .map(|s| {
            SeverityLevel::parse(s)
                .map(|l| l.min_number())
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "unknown severity {s:?}: use TRACE, DEBUG, INFO, WARN, ERROR or FATAL"
                    ))
                })
        })
        .transpose()?;
    let trace_id = p.get("trace_id").filter(|s| !s.is_empty()).cloned();
    if trace_id
        .as_ref()
        .is_some_and(|t| t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::bad("trace_id must be 32 hex digits"));
    }
    Ok(LogSearch {
        query,
        start_ns,
        end_ns,
        service: p.get("service").filter(|s| !s.is_empty()).cloned(),
        min_severity,
        trace_id,
        limit,
        cursor: p
            .get("cursor")
            .filter(|s| !s.is_empty())
            .map(|c| Cursor::parse(c))
            .transpose()?,
        deadline: Deadline::none(),
    })
}

fn hit_json(h: LogHit) -> Value {
    json!({
        "timestamp": format_rfc3339_ns(h.timestamp_ns),
        "observed_timestamp": format_rfc3339_ns(h.observed_timestamp_ns),
        "severity_text": h.severity_text,
        "severity_number": h.severity_number,
        "body": h.body,
        "service": h.service,
        "trace_id": h.trace_id,
        "span_id": h.span_id,
        "attributes": h.attributes,
        "resource": h.resource,
        "scope": h.scope,
    })
}

async fn search(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    let mut s = log_search(&p, &st.runtime.limits)?;
    let logs = st.logs.clone();
    let page = st
        .run(&tenant.clone(), None, move |d| {
            s.deadline = d.clone();
            logs.search(&tenant, &s)
        })
        .await?;
    Ok(Json(json!({
        "hits": page.hits.into_iter().map(hit_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.map(|c| c.encode()),
    })))
}

/// Parses `30s`, `5m`, `1h`, `1d` or plain seconds into nanoseconds.
fn parse_step(s: &str) -> Result<i64, ApiError> {
    let err = || {
        ApiError::bad(format!(
            "invalid step {s:?}: use e.g. 30s, 5m, 1h or seconds"
        ))
    };
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1e9),
        Some((i, 'm')) if !s.ends_with("ms") => (&s[..i], 60e9),
        Some((i, 'h')) => (&s[..i], 3600e9),
        Some((i, 'd')) => (&s[..i], 86400e9),
        Some(_) => (s, 1e9),
        None => return Err(err()),
    };
    let v: f64 = num.parse().map_err(|_| err())?;
    let ns = v * mult;
    if !(1e6..1e18).contains(&ns) {
        return Err(err());
    }
    Ok(ns as i64)
}

async fn histogram(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    let mut search = log_search(&p, &st.runtime.limits)?;
    // In i128: `end - start` overflows i64 for extreme ranges.
    let span = i128::from(search.end_ns) - i128::from(search.start_ns);
    let step_ns = match p.get("step").filter(|s| !s.is_empty()) {
        Some(s) => parse_step(s)?,
        // About 100 buckets, at least one second wide.
        None => i64::try_from(span / 100)
            .map_err(|_| ApiError::bad("start and end are too far apart"))?
            .max(1_000_000_000),
    };
    let logs = st.logs.clone();
    let buckets = st
        .run(&tenant.clone(), None, move |d| {
            search.deadline = d.clone();
            logs.histogram(&tenant, &HistogramRequest { search, step_ns })
        })
        .await?;
    Ok(Json(json!({
        "step_seconds": step_ns as f64 / 1e9,
        "buckets": buckets.into_iter().map(|(start, count)| json!({"start": format_rfc3339_ns(start), "count": count})).collect::<Vec<_>>(),
    })))
}

async fn services(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    let now = periscope_proto::unix_now_ns();
    let start = p
        .get("start")
        .map(|s| parse_time(s).map_err(ApiError::bad))
        .transpose()?
        .unwrap_or(i64::MIN / 2);
    let end = p
        .get("end")
        .map(|s| parse_time(s).map_err(ApiError::bad))
        .transpose()?
        .unwrap_or(now.saturating_add(86_400_000_000_000));
    let mut names = st.services.get(&tenant);
    names.extend(st.traces.services(&tenant));
    let logs = st.logs.clone();
    names.extend(
        st.run(&tenant.clone(), None, move |d| {
            logs.services_within(&tenant, start, end, d)
        })
        .await?,
    );
    Ok(Json(json!({ "services": names })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(parse_step("60s").ok(), Some(60_000_000_000));
        assert_eq!(parse_step("5m").ok(), Some(300_000_000_000));
        assert_eq!(parse_step("2").ok(), Some(2_000_000_000));
        assert!(parse_step("fast").is_err());
        assert!(parse_step("0s").is_err());
    }

    #[test]
    fn search_params() {
        let p: HashMap<String, String> = [("limit", "5000")]
            .into_iter()
            .map(|(a, b)| (a.into(), b.into()))
            .collect();
        let limits = crate::QueryLimits::default();
        assert!(log_search(&p, &limits).is_err());
        let p: HashMap<String, String> = [("severity", "warn"), ("start", "10"), ("end", "20")]
            .into_iter()
            .map(|(a, b)| (a.into(), b.into()))
            .collect();
        let s = log_search(&p, &limits).unwrap();
        assert_eq!(
            (s.min_severity, s.start_ns, s.end_ns, s.limit),
            (Some(13), 10_000_000_000, 20_000_000_000, 100)
        );
    }
}
