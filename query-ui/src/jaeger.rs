//! The Jaeger-compatible query API under `/jaeger/api/`, in the JSON shapes
//! the Jaeger UI and Grafana's Jaeger data source read: every answer is
//! `{"data": …, "total", "limit", "offset", "errors"}`; spans carry
//! `traceID`, `spanID`, `references`, microsecond `startTime`/`duration`,
//! typed `tags`, `logs` and a `processID` into the trace's `processes`.
//! OTLP fields without a Jaeger counterpart become tags the way Jaeger's
//! own OTLP translation names them (`span.kind`, `otel.status_code`,
//! `error`, `otel.scope.name`).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use periscope_proto::{
    Attr, AttrValue, Span, SpanKind, StatusCode as SpanStatus, id_hex, parse_trace_id,
};
use periscope_store::TraceQuery;
use serde_json::{Value, json};

use crate::api::{QueryState, tenant};
use crate::service_map::service_map_within;
use crate::traces::{SpanConds, TagCond, get_trace, load_trace, parse_duration_ns};

pub(crate) fn router() -> Router<QueryState> {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route("/jaeger/api/services/{service}/operations", get(operations))
        .route("/jaeger/api/operations", get(operations_v2))
        .route("/jaeger/api/traces", get(find_traces))
        .route("/jaeger/api/traces/{trace_id}", get(trace))
        .route("/jaeger/api/dependencies", get(dependencies))
}

/// Jaeger's error answer.
type JaegerError = crate::error::Error<crate::error::Jaeger>;

fn ok(data: Value, total: usize) -> Json<Value> {
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

fn kv_json(key: &str, v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({"key": key, "type": "string", "value": s}),
        AttrValue::Bool(b) => json!({"key": key, "type": "bool", "value": b}),
        AttrValue::Int(i) => json!({"key": key, "type": "int64", "value": i}),
        AttrValue::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => json!({"key": key, "type": "float64", "value": n}),
            None => json!({"key": key, "type": "string", "value": d.to_string()}),
        },
        AttrValue::Json(j) => json!({"key": key, "type": "string", "value": j}),
    }
}

fn tags(attrs: &[Attr]) -> Vec<Value> {
    attrs.iter().map(|a| kv_json(&a.key, &a.value)).collect()
}

fn micros(ns: i64) -> i64 {
    ns.div_euclid(1000)
}

/// A trace in Jaeger's shape: one process per distinct resource.
fn trace_json(spans: &[Span]) -> Value {
    let mut processes: Vec<(&periscope_proto::SpanResource, String)> = Vec::new();
    let mut out_spans = Vec::with_capacity(spans.len());
    for s in spans {
        let pid = match processes.iter().find(|(r, _)| **r == *s.resource) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", processes.len() + 1);
                processes.push((&s.resource, id.clone()));
                id
            }
        };
        let mut references = Vec::new();
        if let Some(p) = s.parent_span_id {
            references.push(json!({"refType": "CHILD_OF", "traceID": id_hex(&s.trace_id), "spanID": id_hex(&p)}));
        }
        for l in &s.links {
            references.push(json!({"refType": "FOLLOWS_FROM", "traceID": id_hex(&l.trace_id), "spanID": id_hex(&l.span_id)}));
        }
        let mut span_tags = tags(&s.attributes);
        if s.kind != SpanKind::Unspecified {
            span_tags.push(json!({"key": "span.kind", "type": "string", "value": s.kind.as_str()}));
        }
        match s.status_code {
            SpanStatus::Error => {
                span_tags
                    .push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
                span_tags.push(json!({"key": "error", "type": "bool", "value": true}));
            }
            SpanStatus::Ok => {
                span_tags.push(json!({"key": "otel.status_code", "type": "string", "value": "OK"}));
            }
            SpanStatus::Unset => {}
        }
        if !s.status_message.is_empty() {
            span_tags.push(json!({"key": "otel.status_description", "type": "string", "value": s.status_message}));
        }
        if !s.scope_name.is_empty() {
            span_tags
                .push(json!({"key": "otel.scope.name", "type": "string", "value": s.scope_name}));
        }
        if !s.scope_version.is_empty() {
            span_tags.push(
                json!({"key": "otel.scope.version", "type": "string", "value": s.scope_version}),
            );
        }
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![json!({"key": "event", "type": "string", "value": e.name})];
                fields.extend(tags(&e.attributes));
                json!({"timestamp": micros(e.time_ns), "fields": fields})
            })
            .collect();
        out_spans.push(json!({
            "traceID": id_hex(&s.trace_id),
            "spanID": id_hex(&s.span_id),
            "flags": s.flags,
            "operationName": s.name,
            "references": references,
            "startTime": micros(s.start_ns),
            "duration": micros(s.duration_ns()),
            "tags": span_tags,
            "logs": logs,
            "processID": pid,
            "warnings": null,
        }));
    }
    let procs: serde_json::Map<String, Value> = processes
        .iter()
        .map(|(r, id)| {
            let t: Vec<Value> = r
                .attributes
                .iter()
                .filter(|a| a.key != "service.name")
                .map(|a| kv_json(&a.key, &a.value))
                .collect();
            (id.clone(), json!({"serviceName": r.service, "tags": t}))
        })
        .collect();
    json!({
        "traceID": spans.first().map(|s| id_hex(&s.trace_id)).unwrap_or_default(),
        "spans": out_spans,
        "processes": procs,
        "warnings": null,
    })
}

async fn services(
    State(st): State<QueryState>,
    headers: HeaderMap,
) -> Result<Json<Value>, JaegerError> {
    let tenant = tenant(&headers)?;
    let names = st.traces.services(&tenant);
    let n = names.len();
    Ok(ok(json!(names), n))
}

async fn operations(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<Json<Value>, JaegerError> {
    let tenant = tenant(&headers)?;
    let ops = st.traces.operations_of(&tenant, &service);
    let n = ops.len();
    Ok(ok(json!(ops), n))
}

/// `/api/operations?service=&spanKind=` as newer Jaeger UIs call it.
async fn operations_v2(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, JaegerError> {
    let tenant = tenant(&headers)?;
    let service = p
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JaegerError::bad("parameter 'service' is required"))?;
    let ops: Vec<Value> = st
        .traces
        .operations_of(&tenant, service)
        .into_iter()
        .map(|name| json!({"name": name, "spanKind": ""}))
        .collect();
    let n = ops.len();
    Ok(ok(json!(ops), n))
}

fn trace_id(s: &str) -> Result<[u8; 16], JaegerError> {
    parse_trace_id(s).ok_or_else(|| JaegerError::bad(format!("invalid trace id {s:?}")))
}

async fn trace(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, JaegerError> {
    let tenant = tenant(&headers)?;
    let tid = trace_id(&id)?;
    let spans = get_trace(&st, tenant, tid).await?;
    if spans.is_empty() {
        return Err(JaegerError::new(
            crate::error::ErrorKind::NotFound,
            "trace not found",
        ));
    }
    Ok(ok(json!([trace_json(&spans)]), 1))
}

fn micros_param(p: &HashMap<String, String>, k: &str) -> Result<Option<i64>, JaegerError> {
    p.get(k)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map(|us| us.saturating_mul(1000))
                .map_err(|_| {
                    JaegerError::bad(format!(
                        "parameter '{k}' must be microseconds since the epoch"
                    ))
                })
        })
        .transpose()
}

/// Jaeger's `tags` parameter: a JSON object, or repeated `key:value` pairs.
fn jaeger_tags(
    p: &[(String, String)],
    limits: &crate::QueryLimits,
) -> Result<Vec<TagCond>, JaegerError> {
    let mut out = Vec::new();
    for (k, v) in p {
        if k == "tags" || k == "tag" {
            limits.check_tags(v)?;
        }
        match k.as_str() {
            "tags" => {
                let obj: BTreeMap<String, Value> = serde_json::from_str(v)
                    .map_err(|e| JaegerError::bad(format!("malformed 'tags' parameter: {e}")))?;
                for (key, val) in obj {
                    let val = match val {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.push(TagCond::Eq(key, val));
                }
            }
            "tag" => {
                let (key, val) = v.split_once(':').ok_or_else(|| {
                    JaegerError::bad(format!(
                        "malformed 'tag' parameter {v:?}: expected key:value"
                    ))
                })?;
                out.push(TagCond::Eq(key.to_owned(), val.to_owned()));
            }
            _ => {}
        }
    }
    Ok(out)
}

async fn find_traces(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, JaegerError> {
    let tenant = tenant(&headers)?;
    let p: HashMap<String, String> = pairs.iter().cloned().collect();
    let now = periscope_proto::unix_now_ns();
    let end_ns = micros_param(&p, "end")?.unwrap_or(now);
    let lookback_ns = match p
        .get("lookback")
        .filter(|v| !v.is_empty() && *v != "custom")
    {
        Some(l) => parse_duration_ns(l).map_err(JaegerError::from)?,
        None => 3_600_000_000_000,
    };
    let start_ns = micros_param(&p, "start")?.unwrap_or(end_ns.saturating_sub(lookback_ns));
    if start_ns > end_ns {
        return Err(JaegerError::bad("parameter 'start' is after 'end'"));
    }
    let dur = |k: &str| {
        p.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| parse_duration_ns(v).map_err(JaegerError::from))
            .transpose()
    };
    let limit = match p.get("limit").filter(|v| !v.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1500).contains(l))
            .ok_or_else(|| JaegerError::bad("parameter 'limit' must be 1 to 1500"))?,
        None => 20,
    };
    // Jaeger applies min/max duration to spans matching the other conditions.
    let conds = SpanConds {
        tags: jaeger_tags(&pairs, &st.runtime.limits)?,
        min_ns: dur("minDuration")?,
        max_ns: dur("maxDuration")?,
    };
    let q = TraceQuery {
        start_ns,
        end_ns,
        service: p.get("service").filter(|s| !s.is_empty()).cloned(),
        operation: p
            .get("operation")
            .filter(|s| !s.is_empty() && *s != "all")
            .cloned(),
        span_min_duration_ns: conds.min_ns,
        span_max_duration_ns: conds.max_ns,
        limit,
        ..Default::default()
    };
    // The search and the loading of its traces are one query, under one
    // deadline, and at most `max_spans_per_response` spans are loaded: a
    // search of 1,500 traces of 100,000 spans each would hold 150 million.
    let (store, live) = (st.traces.clone(), st.live.clone());
    let max_spans = st.runtime.limits.max_spans_per_response;
    let (found, left_out) = st
        .run(&tenant.clone(), None, move |d| {
            let mut q = q;
            q.deadline = d.clone();
            let summaries = if conds.is_empty() {
                store.search(&tenant, &q, None)?
            } else {
                let pred = move |spans: &[Span]| conds.matches(spans);
                store.search(&tenant, &q, Some(&pred))?
            };
            let (mut traces, mut spans_held, mut left_out) = (Vec::new(), 0usize, 0usize);
            for s in &summaries {
                if spans_held.saturating_add(s.span_count as usize) > max_spans {
                    left_out += 1;
                    continue;
                }
                let spans = load_trace(&store, live.as_ref(), &tenant, &s.trace_id, d)?;
                spans_held += spans.len();
                if spans_held > max_spans {
                    left_out += 1;
                    continue;
                }
                if !spans.is_empty() {
                    traces.push(spans);
                }
            }
            Ok((traces, left_out))
        })
        .await?;
    let traces: Vec<Value> = found.iter().map(|t| trace_json(t)).collect();
    let n = traces.len();
    if left_out > 0 {
        return Ok(Json(json!({
            "data": traces, "total": n, "limit": 0, "offset": 0,
            "errors": [{"code": 206, "msg": format!(
                "{left_out} traces left out: a response holds at most {max_spans} spans (--query-max-spans-per-response); narrow the search"
            )}],
        })));
    }
    Ok(ok(Value::Array(traces), n))
}

async fn dependencies(
    State(st): State<QueryState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, JaegerError> {
    let tenant = tenant(&headers)?;
    let ms = |k: &str| -> Result<Option<i64>, JaegerError> {
        p.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map(|ms| ms.saturating_mul(1_000_000))
                    .map_err(|_| JaegerError::bad(format!("parameter '{k}' must be milliseconds")))
            })
            .transpose()
    };
    let end_ns = ms("endTs")?.unwrap_or_else(periscope_proto::unix_now_ns);
    let lookback = ms("lookback")?.unwrap_or(86_400_000_000_000);
    let store = st.metrics.clone();
    let map = st
        .run(&tenant.clone(), None, move |d| {
            service_map_within(
                &store,
                &tenant,
                end_ns.saturating_sub(lookback).div_euclid(1_000_000),
                end_ns.div_euclid(1_000_000),
                d,
            )
        })
        .await?;
    let deps: Vec<Value> = map
        .edges
        .iter()
        .map(|((parent, child), (calls, errors, _))| {
            json!({"parent": parent, "child": child, "callCount": calls, "errorCount": errors})
        })
        .collect();
    let n = deps.len();
    Ok(ok(Value::Array(deps), n))
}
