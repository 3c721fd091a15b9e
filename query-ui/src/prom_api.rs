//! The Prometheus HTTP API under `/prometheus/api/v1/` (query, query_range,
//! labels, label values, series, metadata, buildinfo), in Prometheus' JSON
//! shapes and error types, so Grafana's Prometheus data source and other
//! Prometheus tools work against `http://HOST:8080/prometheus`; plus
//! `/api/v1/metrics/names` for the UI's metric browser.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use periscope_proto::{Labels, NAME_LABEL, label};
use periscope_store::{Deadline, MetricStore, ReadBudget, StoreError, TenantId};
use serde_json::{Value, json};

use crate::api::{QueryState, tenant};
use crate::promql::{
    EngineOptions, FloatVisitor, MAX_POINTS_PER_SERIES, MatchOp, Matcher, QueryError, Series,
    SeriesSource, check_query_text, instant_query, range_query,
};

/// The routes.
pub(crate) fn router() -> Router<QueryState> {
    Router::new()
        .route("/prometheus/api/v1/query", get(query).post(query_post))
        .route(
            "/prometheus/api/v1/query_range",
            get(query_range).post(query_range_post),
        )
        .route("/prometheus/api/v1/labels", get(labels).post(labels_post))
        .route("/prometheus/api/v1/label/{name}/values", get(label_values))
        .route("/prometheus/api/v1/series", get(series).post(series_post))
        .route("/prometheus/api/v1/metadata", get(metadata))
        .route("/prometheus/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/metrics/names", get(metric_names))
}

/// A Prometheus API error: `{"status":"error","errorType","error"}`.
type PromError = crate::error::Error<crate::error::Prom>;

/// A store error of the label and series APIs.
fn store_error(e: StoreError, limits: &crate::QueryLimits) -> PromError {
    QueryError::from_store(e, &limits.engine_options(Deadline::none())).wire()
}

fn ok(data: Value) -> Json<Value> {
    Json(json!({"status": "success", "data": data}))
}

/// Parameters from the query string and, for POST, the form body; repeated
/// keys (`match[]`) kept in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, body: Option<&str>) -> Result<Params, PromError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for part in [query, body].into_iter().flatten() {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(part)
                .map_err(|e| PromError::bad(format!("invalid parameters: {e}")))?;
            out.extend(pairs);
        }
        Ok(Params(out))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Prometheus times: Unix seconds (fractions allowed) or RFC 3339. Unix
/// seconds are rounded to the millisecond, as Prometheus does: `…009.507`
/// is not exactly representable, and truncating its nanoseconds gave `.506`,
/// missing a sample stamped `.507`.
fn parse_time_ms(name: &str, s: &str) -> Result<i64, PromError> {
    let bad = |e: String| PromError::bad(format!("invalid parameter \"{name}\": {e}"));
    let ns = crate::parse_time(s).map_err(bad)?;
    if s.trim().parse::<f64>().is_ok() {
        return Ok((ns + 500_000).div_euclid(1_000_000));
    }
    Ok(ns.div_euclid(1_000_000))
}

/// Prometheus durations: float seconds or `1h30m`, `15s`, `500ms`.
/// At least 1 ms: a smaller step rounded to 0 and divided by zero.
fn parse_duration_ms(name: &str, s: &str) -> Result<i64, PromError> {
    let too_large = || {
        PromError::bad(format!(
            "invalid parameter \"{name}\": duration {s:?} is too large"
        ))
    };
    if let Ok(secs) = s.parse::<f64>() {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(PromError::bad(format!(
                "invalid parameter \"{name}\": {s} is not a positive duration"
            )));
        }
        if secs >= 1e12 {
            return Err(too_large());
        }
        let ms = (secs * 1000.0).round() as i64;
        if ms < 1 {
            return Err(PromError::bad(format!(
                "invalid parameter \"{name}\": {s} is below the minimum of 1ms"
            )));
        }
        return Ok(ms);
    }
    let mut total = 0i64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let n: i64 = num.parse().map_err(|_| {
            PromError::bad(format!(
                "invalid parameter \"{name}\": cannot parse {s:?} as a duration"
            ))
        })?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let mult = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => {
                return Err(PromError::bad(format!(
                    "invalid parameter \"{name}\": unknown unit {unit:?} in {s:?}"
                )));
            }
        };
        // Checked: `9999999999y` once saturated to i64::MAX and wrapped later.
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_large)?;
        rest = next;
    }
    if total <= 0 {
        return Err(PromError::bad(format!(
            "invalid parameter \"{name}\": {s} is not a positive duration"
        )));
    }
    Ok(total)
}

/// The metric store seen by the engine, for one tenant and one query: each
/// selector reads within the series limit and what is left of the samples
/// limit, and stops at the query's deadline.
struct StoreSource {
    store: Arc<MetricStore>,
    tenant: TenantId,
    opts: EngineOptions,
    /// Samples read so far by this query's selectors.
    loaded: std::sync::atomic::AtomicUsize,
}

impl StoreSource {
    fn new(st: &QueryState, tenant: TenantId, opts: EngineOptions) -> StoreSource {
        StoreSource {
            store: st.metrics.clone(),
            tenant,
            opts,
            loaded: Default::default(),
        }
    }
}

fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

impl SeriesSource for StoreSource {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, QueryError> {
        use std::sync::atomic::Ordering::Relaxed;
        let name = matchers
            .iter()
            .find(|m| m.name == NAME_LABEL && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str());
        let left = self
            .opts
            .max_samples
            .saturating_sub(self.loaded.load(Relaxed));
        let budget = ReadBudget::new(self.opts.deadline.clone(), left, self.opts.max_series);
        let found = self
            .store
            .select_within(
                &self.tenant,
                name,
                &|l| all_match(matchers, l),
                start_ms,
                end_ms,
                &budget,
            )
            .map_err(|e| QueryError::from_store(e, &self.opts))?;
        self.loaded.fetch_add(budget.samples(), Relaxed);
        Ok(found
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect())
    }

    fn scan_floats(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        parts: usize,
        visit: &FloatVisitor<'_>,
    ) -> Result<bool, String> {
        let name = matchers
            .iter()
            .find(|m| m.name == NAME_LABEL && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str());
        let scan = self.store.scan_floats(
            &self.tenant,
            name,
            &|l| all_match(matchers, l),
            start_ms,
            end_ms,
            parts,
            visit,
        )?;
        Ok(scan == periscope_store::FloatScan::Done)
    }

    fn cache_id(&self) -> Option<String> {
        Some(format!(
            "{:p}/{}",
            Arc::as_ptr(&self.store),
            self.tenant.as_str()
        ))
    }

    fn generation(&self, start_ms: i64, end_ms: i64) -> u64 {
        self.store.generation(&self.tenant, start_ms, end_ms)
    }
}

/// A client's `timeout`, which may only lower `--query-timeout`.
fn client_timeout(p: &Params) -> Result<Option<std::time::Duration>, PromError> {
    p.get("timeout")
        .map(|t| {
            parse_duration_ms("timeout", t)
                .map(|ms| std::time::Duration::from_millis(ms.unsigned_abs()))
        })
        .transpose()
}

/// Runs `f` on the query pool, admitted for `tenant`, with the engine
/// options of the limits and the request's deadline.
async fn run<T: Send + 'static>(
    st: &QueryState,
    tenant: &TenantId,
    p: &Params,
    f: impl FnOnce(EngineOptions) -> Result<T, PromError> + Send + 'static,
) -> Result<T, PromError> {
    let timeout = client_timeout(p)?;
    let rt = st.runtime.clone();
    let limits = rt.limits.clone();
    let r = rt
        .run(tenant, timeout, move |d| {
            let mut opts = limits.engine_options(d.clone());
            if let Some(t) = timeout {
                opts.timeout = opts.timeout.min(t);
            }
            f(opts)
        })
        .await?;
    if let Err(e) = &r {
        if e.kind == crate::error::ErrorKind::Timeout {
            st.runtime.count_timeout();
        } else if e.message.contains("(--query-max-") {
            st.runtime.count_limit();
        }
    }
    r
}

async fn do_query(st: QueryState, headers: HeaderMap, p: Params) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    let q = p
        .get("query")
        .ok_or_else(|| PromError::bad("parameter \"query\" is required"))?
        .to_owned();
    let time_ms = match p.get("time") {
        Some(t) => parse_time_ms("time", t)?,
        None => periscope_proto::unix_now_ns().div_euclid(1_000_000),
    };
    // Refused here, before queueing; the engine checks again.
    check_query_text(&q, &st.runtime.limits.engine_options(Deadline::none()))?;
    let state = st.clone();
    let v = run(&st, &tenant.clone(), &p, move |opts| {
        let src = StoreSource::new(&state, tenant, opts.clone());
        instant_query(&src, &q, time_ms, &opts).map_err(PromError::from)
    })
    .await?;
    Ok(ok(v.to_prometheus_json()))
}

async fn do_query_range(
    st: QueryState,
    headers: HeaderMap,
    p: Params,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    let q = p
        .get("query")
        .ok_or_else(|| PromError::bad("parameter \"query\" is required"))?
        .to_owned();
    let start = parse_time_ms(
        "start",
        p.get("start")
            .ok_or_else(|| PromError::bad("parameter \"start\" is required"))?,
    )?;
    let end = parse_time_ms(
        "end",
        p.get("end")
            .ok_or_else(|| PromError::bad("parameter \"end\" is required"))?,
    )?;
    let step = parse_duration_ms(
        "step",
        p.get("step")
            .ok_or_else(|| PromError::bad("parameter \"step\" is required"))?,
    )?;
    if end < start {
        return Err(PromError::bad(
            "end timestamp must not be before start time",
        ));
    }
    // Checked: the span of two extreme times overflows.
    if end
        .checked_sub(start)
        .is_none_or(|span| span / step >= MAX_POINTS_PER_SERIES)
    {
        return Err(PromError::bad(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    check_query_text(&q, &st.runtime.limits.engine_options(Deadline::none()))?;
    let state = st.clone();
    let v = run(&st, &tenant.clone(), &p, move |opts| {
        let src = StoreSource::new(&state, tenant, opts.clone());
        range_query(&src, &q, start, end, step, &opts).map_err(PromError::from)
    })
    .await?;
    Ok(ok(v.to_prometheus_json()))
}

async fn query(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, PromError> {
    do_query(st, headers, Params::parse(q.as_deref(), None)?).await
}

async fn query_post(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: String,
) -> Result<Json<Value>, PromError> {
    do_query(st, headers, Params::parse(q.as_deref(), Some(&body))?).await
}

async fn query_range(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, PromError> {
    do_query_range(st, headers, Params::parse(q.as_deref(), None)?).await
}

async fn query_range_post(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: String,
) -> Result<Json<Value>, PromError> {
    do_query_range(st, headers, Params::parse(q.as_deref(), Some(&body))?).await
}

/// `match[]` selectors as label predicates (any selector may match).
type SeriesFilter = Box<dyn Fn(&Labels) -> bool + Send + Sync>;

fn selectors(p: &Params, limits: &crate::QueryLimits) -> Result<SeriesFilter, PromError> {
    let mut sets: Vec<Vec<promql_parser::label::Matcher>> = Vec::new();
    let opts = limits.engine_options(Deadline::none());
    for sel in p.all("match[]") {
        check_query_text(sel, &opts)?;
        let expr = promql_parser::parser::parse(sel)
            .map_err(|e| PromError::bad(format!("invalid parameter \"match[]\": {e}")))?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(PromError::bad(format!(
                "invalid parameter \"match[]\": {sel:?} is not a series selector"
            )));
        };
        let mut base = vs.matchers.matchers.clone();
        if let Some(n) = &vs.name {
            base.push(promql_parser::label::Matcher::new(
                promql_parser::label::MatchOp::Equal,
                NAME_LABEL,
                n,
            ));
        }
        if vs.matchers.or_matchers.is_empty() {
            sets.push(base);
        } else {
            for alt in &vs.matchers.or_matchers {
                let mut m = base.clone();
                m.extend(alt.iter().cloned());
                sets.push(m);
            }
        }
    }
    if sets.is_empty() {
        return Ok(Box::new(|_| true));
    }
    Ok(Box::new(move |labels: &Labels| {
        sets.iter().any(|set| {
            set.iter()
                .all(|m| m.is_match(label(labels, &m.name).unwrap_or("")))
        })
    }))
}

/// The label sets of the series `filter` accepts, read on the query pool
/// within the series limit and the deadline.
async fn series_labels(
    st: &QueryState,
    tenant: &TenantId,
    p: &Params,
    filter: SeriesFilter,
    start: i64,
    end: i64,
) -> Result<Vec<Labels>, PromError> {
    let (store, t) = (st.metrics.clone(), tenant.clone());
    let limits = st.runtime.limits.clone();
    run(st, tenant, p, move |opts| {
        let budget = ReadBudget::new(opts.deadline.clone(), usize::MAX, opts.max_series);
        store
            .series_labels_within(&t, None, &*filter, start, end, &budget)
            .map_err(|e| store_error(e, &limits))
    })
    .await
}

fn range_params(p: &Params) -> Result<(i64, i64), PromError> {
    let start = p
        .get("start")
        .map(|s| parse_time_ms("start", s))
        .transpose()?
        .unwrap_or(i64::MIN / 4);
    let end = p
        .get("end")
        .map(|s| parse_time_ms("end", s))
        .transpose()?
        .unwrap_or(i64::MAX / 4);
    Ok((start, end))
}

async fn do_labels(
    st: QueryState,
    headers: HeaderMap,
    p: Params,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    let filter = selectors(&p, &st.runtime.limits)?;
    let (start, end) = range_params(&p)?;
    let labels = series_labels(&st, &tenant, &p, filter, start, end).await?;
    let names: std::collections::BTreeSet<String> =
        labels.into_iter().flatten().map(|(n, _)| n).collect();
    Ok(ok(json!(names)))
}

async fn labels(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, PromError> {
    do_labels(st, headers, Params::parse(q.as_deref(), None)?).await
}

async fn labels_post(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: String,
) -> Result<Json<Value>, PromError> {
    do_labels(st, headers, Params::parse(q.as_deref(), Some(&body))?).await
}

async fn label_values(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    let p = Params::parse(q.as_deref(), None)?;
    let filter = selectors(&p, &st.runtime.limits)?;
    let (start, end) = range_params(&p)?;
    let labels = series_labels(&st, &tenant, &p, filter, start, end).await?;
    let values: std::collections::BTreeSet<String> = labels
        .iter()
        .filter_map(|l| label(l, &name).map(str::to_owned))
        .collect();
    Ok(ok(json!(values)))
}

async fn do_series(
    st: QueryState,
    headers: HeaderMap,
    p: Params,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    if p.all("match[]").is_empty() {
        return Err(PromError::bad("no match[] parameter provided"));
    }
    let filter = selectors(&p, &st.runtime.limits)?;
    let (start, end) = range_params(&p)?;
    let series = series_labels(&st, &tenant, &p, filter, start, end).await?;
    let out: Vec<Value> = series
        .into_iter()
        .map(|labels| {
            Value::Object(
                labels
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        })
        .collect();
    Ok(ok(Value::Array(out)))
}

async fn series(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, PromError> {
    do_series(st, headers, Params::parse(q.as_deref(), None)?).await
}

async fn series_post(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: String,
) -> Result<Json<Value>, PromError> {
    do_series(st, headers, Params::parse(q.as_deref(), Some(&body))?).await
}

async fn metadata(
    State(st): State<QueryState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    let p = Params::parse(q.as_deref(), None)?;
    let only = p.get("metric").map(str::to_owned);
    let mut out: HashMap<String, Value> = HashMap::new();
    for m in st.metrics.metadata(&tenant) {
        if only.as_ref().is_some_and(|o| *o != m.name) {
            continue;
        }
        out.insert(
            m.name.clone(),
            json!([{"type": m.kind, "help": m.help, "unit": m.unit}]),
        );
    }
    Ok(ok(json!(out)))
}

async fn buildinfo() -> Json<Value> {
    ok(json!({
        "version": "2.42.0",
        "revision": concat!("periscope-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// Metric names with type, unit and description, for the UI.
async fn metric_names(
    State(st): State<QueryState>,
    headers: HeaderMap,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant(&headers)?;
    let meta: HashMap<String, periscope_proto::MetricMeta> = st
        .metrics
        .metadata(&tenant)
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    let labels = series_labels(
        &st,
        &tenant,
        &Params(Vec::new()),
        Box::new(|_| true),
        i64::MIN / 4,
        i64::MAX / 4,
    )
    .await?;
    let names: std::collections::BTreeSet<String> = labels
        .iter()
        .filter_map(|l| label(l, NAME_LABEL).map(str::to_owned))
        .collect();
    let out: Vec<Value> = names
        .into_iter()
        .map(|n| {
            let family = family_of(&n);
            let m = meta.get(&n).or_else(|| meta.get(family));
            json!({
                "name": n,
                "type": m.map(|m| m.kind.as_str()).unwrap_or("unknown"),
                "unit": m.map(|m| m.unit.as_str()).unwrap_or(""),
                "description": m.map(|m| m.help.as_str()).unwrap_or(""),
            })
        })
        .collect();
    Ok(Json(json!({"metrics": out})))
}

/// The family of a series name (`x_bucket` → `x`, `x_total` → `x`).
fn family_of(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count", "_total"] {
        if let Some(f) = name.strip_suffix(suffix) {
            return f;
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_round_to_the_millisecond() {
        // 1765156009.507 is 1765156009.50699996… as a float.
        for ms in [1_765_156_009_507_i64, 1_765_156_009_999, 1_700_000_000_001] {
            let s = format!("{}", ms as f64 / 1000.0);
            assert_eq!(parse_time_ms("time", &s).ok(), Some(ms), "{s}");
        }
        assert_eq!(
            parse_time_ms("time", "2023-11-14T22:13:20.0019Z").ok(),
            Some(1_700_000_000_001)
        );
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration_ms("step", "15").ok(), Some(15_000));
        assert_eq!(parse_duration_ms("step", "1h30m").ok(), Some(5_400_000));
        assert_eq!(parse_duration_ms("step", "500ms").ok(), Some(500));
        assert!(parse_duration_ms("step", "0").is_err());
        assert!(parse_duration_ms("step", "5x").is_err());
        assert_eq!(
            parse_time_ms("time", "1700000000.5").ok(),
            Some(1_700_000_000_500)
        );
        assert_eq!(family_of("http_requests_total"), "http_requests");
    }

    #[test]
    fn selector_filters() {
        let p = Params(vec![("match[]".into(), r#"up{job=~"a|b"}"#.into())]);
        let limits = crate::QueryLimits::default();
        let f = selectors(&p, &limits).unwrap();
        let l = periscope_proto::normalize_labels(vec![
            (NAME_LABEL.into(), "up".into()),
            ("job".into(), "a".into()),
        ]);
        assert!(f(&l));
        let l2 = periscope_proto::normalize_labels(vec![
            (NAME_LABEL.into(), "up".into()),
            ("job".into(), "c".into()),
        ]);
        assert!(!f(&l2));
        assert!(
            selectors(
                &Params(vec![("match[]".into(), "rate(x[5m])".into())]),
                &limits
            )
            .is_err()
        );
    }
}
