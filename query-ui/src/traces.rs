//! The trace API: trace by id, trace search, operations and the service map
//! (`/api/v1/traces…`, `/api/v1/services/{service}/operations`,
//! `/api/v1/service-map`). The Jaeger-compatible API (`jaeger.rs`) reuses
//! the parsing and matching here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use periscope_proto::{Attr, Span, attrs_to_json, id_hex, parse_trace_id};
use periscope_store::{StoreError, TenantId, TraceQuery, TraceStore, TraceSummary};
use regex::Regex;
use serde_json::{Value, json};

use crate::api::{ApiError, QueryState, tenant};
use crate::service_map::service_map_within;
use crate::{format_rfc3339_ns, parse_time};

/// Spans not yet written to the span store (the collector's assembler).
pub trait LiveTraces: Send + Sync {
    /// Every buffered span of a trace.
    fn spans(&self, tenant: &TenantId, trace_id: &[u8; 16]) -> Vec<Span>;
}

/// A stand-in when nothing buffers spans.
#[derive(Debug, Default)]
pub struct NoLiveTraces;

impl LiveTraces for NoLiveTraces {
    fn spans(&self, _: &TenantId, _: &[u8; 16]) -> Vec<Span> {
        Vec::new()
    }
}

/// A whole trace: stored and buffered spans, each span id once, by start time.
pub(crate) fn load_trace(
    store: &TraceStore,
    live: &dyn LiveTraces,
    tenant: &TenantId,
    id: &[u8; 16],
    deadline: &periscope_store::Deadline,
) -> Result<Vec<Span>, StoreError> {
    let mut spans = store.trace_within(tenant, id, deadline)?;
    let mut seen: HashSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    for s in live.spans(tenant, id) {
        if seen.insert(s.span_id) {
            spans.push(s);
        }
    }
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    Ok(spans)
}

/// One tag condition of a search.
#[derive(Clone, Debug)]
pub(crate) enum TagCond {
    Eq(String, String),
    Ne(String, String),
    Re(String, Regex),
    Exists(String),
}

impl TagCond {
    fn key(&self) -> &str {
        match self {
            TagCond::Eq(k, _) | TagCond::Ne(k, _) | TagCond::Re(k, _) | TagCond::Exists(k) => k,
        }
    }

    /// Whether the span (its attributes, then its resource's) satisfies it.
    /// `error` and `span.kind`/`status` match the span's status and kind.
    pub(crate) fn matches(&self, s: &Span) -> bool {
        let key = self.key();
        let special = match key {
            "error" => Some(s.is_error().to_string()),
            "span.kind" => Some(s.kind.as_str().to_owned()),
            "status" | "otel.status_code" => Some(s.status_code.as_str().to_owned()),
            "name" | "span.name" => Some(s.name.clone()),
            _ => None,
        };
        let find = |attrs: &[Attr]| {
            attrs
                .iter()
                .find(|a| a.key == key)
                .map(|a| a.value.to_text().into_owned())
        };
        let is_special = special.is_some();
        let value = special
            .or_else(|| find(&s.attributes))
            .or_else(|| find(&s.resource.attributes));
        let Some(v) = value else {
            return false;
        };
        match self {
            TagCond::Eq(_, want) if is_special => v.eq_ignore_ascii_case(want),
            TagCond::Eq(_, want) => v == *want,
            TagCond::Ne(_, want) => v != *want,
            TagCond::Re(_, re) => re.is_match(&v),
            TagCond::Exists(_) => true,
        }
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Splits on spaces outside double quotes.
fn split_tags(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses `key=value key!=value key=~regex key` (values may be "quoted").
pub(crate) fn parse_tags(s: &str) -> Result<Vec<TagCond>, ApiError> {
    split_tags(s)
        .into_iter()
        .map(|t| {
            // The operator is at the first `=` (keys hold no `=`; values may).
            let (cond, key) = match t.find('=') {
                None => (TagCond::Exists(t.clone()), t.clone()),
                Some(i) if i > 0 && t.as_bytes()[i - 1] == b'!' => {
                    let k = &t[..i - 1];
                    (
                        TagCond::Ne(k.into(), unquote(&t[i + 1..]).into()),
                        k.to_owned(),
                    )
                }
                Some(i) if t[i + 1..].starts_with('~') => {
                    let k = &t[..i];
                    let re =
                        Regex::new(&format!("^(?:{})$", unquote(&t[i + 2..]))).map_err(|e| {
                            ApiError::bad(format!("tag {t:?}: invalid regular expression: {e}"))
                        })?;
                    (TagCond::Re(k.into(), re), k.to_owned())
                }
                Some(i) => {
                    let k = &t[..i];
                    (
                        TagCond::Eq(k.into(), unquote(&t[i + 1..]).into()),
                        k.to_owned(),
                    )
                }
            };
            if key.is_empty() {
                return Err(ApiError::bad(format!("tag {t:?} has no key")));
            }
            Ok(cond)
        })
        .collect()
}

/// Parses `250ms`, `1.5s`, `2m`, `100us`, `1h` (a bare number is milliseconds… no: nanoseconds are
/// never meant; a bare number is taken as milliseconds).
pub(crate) fn parse_duration_ns(s: &str) -> Result<i64, ApiError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| ApiError::bad(format!("invalid duration {s:?}: use e.g. 250ms, 1.5s, 2m")))?;
    let mult = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "" | "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        u => {
            return Err(ApiError::bad(format!(
                "invalid duration unit {u:?} in {s:?}: use ns, us, ms, s, m or h"
            )));
        }
    };
    let ns = v * mult;
    if !ns.is_finite() || !(0.0..9.2e18).contains(&ns) {
        return Err(ApiError::bad(format!("duration {s:?} is out of range")));
    }
    Ok(ns as i64)
}

/// Span-level conditions of a search: all tags and the single-span
/// duration bounds hold for one span.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanConds {
    pub tags: Vec<TagCond>,
    pub min_ns: Option<i64>,
    pub max_ns: Option<i64>,
}

impl SpanConds {
    pub(crate) fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.min_ns.is_none() && self.max_ns.is_none()
    }

    pub(crate) fn matches(&self, spans: &[Span]) -> bool {
        spans.iter().any(|s| {
            let d = s.duration_ns();
            self.min_ns.is_none_or(|m| d >= m)
                && self.max_ns.is_none_or(|m| d <= m)
                && self.tags.iter().all(|t| t.matches(s))
        })
    }
}

/// Runs a search with span-level conditions on a blocking thread.
pub(crate) async fn run_search(
    st: &QueryState,
    tenant: TenantId,
    mut q: TraceQuery,
    conds: SpanConds,
) -> Result<Vec<TraceSummary>, ApiError> {
    let store = st.traces.clone();
    st.run(&tenant.clone(), None, move |d| {
        q.deadline = d.clone();
        if conds.is_empty() {
            store.search(&tenant, &q, None)
        } else {
            let pred = move |spans: &[Span]| conds.matches(spans);
            store.search(&tenant, &q, Some(&pred))
        }
    })
    .await
}

fn opt<'a>(p: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    p.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

fn time_param(p: &HashMap<String, String>, k: &str) -> Result<Option<i64>, ApiError> {
    opt(p, k)
        .map(|v| parse_time(v).map_err(|e| ApiError::bad(format!("{k}: {e}"))))
        .transpose()
}

const HOUR_NS: i64 = 3_600_000_000_000;

fn search_params(
    p: &HashMap<String, String>,
    limits: &crate::QueryLimits,
) -> Result<(TraceQuery, SpanConds), ApiError> {
    let now = periscope_proto::unix_now_ns();
    let end_ns = time_param(p, "end")?.unwrap_or(now);
    let start_ns = time_param(p, "start")?.unwrap_or(end_ns.saturating_sub(HOUR_NS));
    if start_ns > end_ns {
        return Err(ApiError::bad("start is after end"));
    }
    let dur = |k: &str| opt(p, k).map(parse_duration_ns).transpose();
    let limit = match opt(p, "limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::bad("limit must be 1 to 1000"))?,
        None => 20,
    };
    let error = match opt(p, "status") {
        None => None,
        Some("error") => Some(true),
        Some("ok") => Some(false),
        Some(s) => {
            return Err(ApiError::bad(format!(
                "unknown status {s:?}: use error or ok"
            )));
        }
    };
    if let Some(t) = opt(p, "tags") {
        limits.check_tags(t)?;
    }
    let conds = SpanConds {
        tags: opt(p, "tags")
            .map(parse_tags)
            .transpose()?
            .unwrap_or_default(),
        min_ns: dur("span_min_duration")?,
        max_ns: dur("span_max_duration")?,
    };
    let q = TraceQuery {
        start_ns,
        end_ns,
        service: opt(p, "service").map(str::to_owned),
        operation: opt(p, "operation").map(str::to_owned),
        min_duration_ns: dur("min_duration")?,
        max_duration_ns: dur("max_duration")?,
        span_min_duration_ns: conds.min_ns,
        span_max_duration_ns: conds.max_ns,
        error,
        limit,
        deadline: periscope_store::Deadline::none(),
    };
    Ok((q, conds))
}

fn summary_json(s: &TraceSummary) -> Value {
    json!({
        "trace_id": id_hex(&s.trace_id),
        "root_service": s.root_service,
        "root_operation": s.root_operation,
        "start_time": format_rfc3339_ns(s.start_ns),
        "duration_ns": s.duration_ns(),
        "span_count": s.span_count,
        "error_count": s.error_count,
        "services": s.services,
        "http_method": s.root_http_method,
        "http_route": s.root_http_route,
        "http_status_code": s.root_http_status,
        "truncated": s.truncated,
    })
}

fn span_json(s: &Span) -> Value {
    json!({
        "trace_id": id_hex(&s.trace_id),
        "span_id": id_hex(&s.span_id),
        "parent_span_id": s.parent_span_id.map(|p| id_hex(&p)).unwrap_or_default(),
        "trace_state": s.trace_state,
        "service": s.service(),
        "name": s.name,
        "kind": s.kind.as_str(),
        "start_time": format_rfc3339_ns(s.start_ns),
        "end_time": format_rfc3339_ns(s.end_ns),
        "duration_ns": s.duration_ns(),
        "status": {"code": s.status_code.as_str(), "message": s.status_message},
        "attributes": attrs_to_json(&s.attributes),
        "dropped_attributes_count": s.dropped_attributes_count,
        "resource": attrs_to_json(&s.resource.attributes),
        "scope": {"name": s.scope_name, "version": s.scope_version},
        "events": s.events.iter().map(|e| json!({
            "time": format_rfc3339_ns(e.time_ns),
            "name": e.name,
            "attributes": attrs_to_json(&e.attributes),
            "dropped_attributes_count": e.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "dropped_events_count": s.dropped_events_count,
        "links": s.links.iter().map(|l| json!({
            "trace_id": id_hex(&l.trace_id),
            "span_id": id_hex(&l.span_id),
            "trace_state": l.trace_state,
            "attributes": attrs_to_json(&l.attributes),
        })).collect::<Vec<_>>(),
        "dropped_links_count": s.dropped_links_count,
    })
}

pub(crate) async fn get_trace(
    st: &QueryState,
    tenant: TenantId,
    id: [u8; 16],
) -> Result<Vec<Span>, ApiError> {
    let (store, live) = (st.traces.clone(), st.live.clone());
    st.run(&tenant.clone(), None, move |d| {
        load_trace(&store, live.as_ref(), &tenant, &id, d)
    })
    .await
}

pub(crate) async fn trace_by_id(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    let tid = (id.len() == 32)
        .then(|| parse_trace_id(&id))
        .flatten()
        .ok_or_else(|| ApiError::bad(format!("invalid trace id {id:?}: expected 32 hex digits")))?;
    let spans = get_trace(&st, tenant, tid).await?;
    if spans.is_empty() {
        return Err(ApiError::new(
            crate::error::ErrorKind::NotFound,
            format!("trace {id} not found"),
        ));
    }
    Ok(Json(json!({
        "trace_id": id_hex(&tid),
        "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn search_traces(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    let (q, conds) = search_params(&p, &st.runtime.limits)?;
    let found = run_search(&st, tenant, q, conds).await?;
    Ok(Json(json!({
        "traces": found.iter().map(summary_json).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn operations(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    Ok(Json(json!({
        "operations": st.traces.operations_of(&tenant, &service),
    })))
}

fn round2(v: Option<f64>) -> Value {
    v.map(|v| json!((v * 100.0).round() / 100.0))
        .unwrap_or(Value::Null)
}

pub(crate) async fn service_map_handler(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = tenant(&headers)?;
    let now = periscope_proto::unix_now_ns();
    let end_ns = time_param(&p, "end")?.unwrap_or(now);
    let start_ns = time_param(&p, "start")?.unwrap_or(end_ns.saturating_sub(HOUR_NS));
    if start_ns > end_ns {
        return Err(ApiError::bad("start is after end"));
    }
    let store = st.metrics.clone();
    let map = st
        .run(&tenant.clone(), None, move |d| {
            service_map_within(
                &store,
                &tenant,
                start_ns.div_euclid(1_000_000),
                end_ns.div_euclid(1_000_000),
                d,
            )
        })
        .await?;
    Ok(Json(json!({
        "nodes": map.nodes.iter().map(|(id, (kind, req, err))| json!({
            "id": id, "kind": kind, "requests": req, "errors": err,
        })).collect::<Vec<_>>(),
        "edges": map.edges.iter().map(|((s, t), (req, err, h))| json!({
            "source": s, "target": t, "requests": req, "errors": err,
            "p50_ms": round2(h.quantile_ms(0.5)),
            "p95_ms": round2(h.quantile_ms(0.95)),
            "p99_ms": round2(h.quantile_ms(0.99)),
        })).collect::<Vec<_>>(),
    })))
}

/// Shared by both APIs.
pub(crate) type Live = Arc<dyn LiveTraces>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse() {
        let t =
            parse_tags(r#"http.request.method=GET  a!=b  c=~"x.*"  present route="/a b""#).unwrap();
        assert_eq!(t.len(), 5);
        assert!(matches!(&t[0], TagCond::Eq(k, v) if k == "http.request.method" && v == "GET"));
        assert!(matches!(&t[1], TagCond::Ne(..)));
        assert!(matches!(&t[2], TagCond::Re(..)));
        assert!(matches!(&t[3], TagCond::Exists(k) if k == "present"));
        assert!(matches!(&t[4], TagCond::Eq(_, v) if v == "/a b"));
        assert!(parse_tags("a=~(").is_err());
        assert!(parse_tags("=x").is_err());
        let t = parse_tags(r#"url.full="a?x!=y""#).unwrap();
        assert!(matches!(&t[0], TagCond::Eq(k, v) if k == "url.full" && v == "a?x!=y"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration_ns("100us").unwrap(), 100_000);
        assert_eq!(parse_duration_ns("2").unwrap(), 2_000_000);
        assert!(parse_duration_ns("fast").is_err());
        assert!(parse_duration_ns("5d").is_err());
    }
}
