//! Every query limit through the real router, over an empty store: each
//! hostile request gets its 4xx/429/503 with a message naming the limit's
//! flag, and the next request is still answered. Regression tests are named
//! after what used to break.

use std::sync::Arc;

use axum::Router;
use periscope_store::{
    DataDir, LogStore, LogStoreOptions, MetricStore, TenantId, TraceStore, TraceStoreOptions,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{NoLiveTraces, QueryLimits, QueryRuntime, QueryState, ServiceRegistry};

/// The router over stores in a temporary directory, with `limits`.
fn app(limits: QueryLimits) -> (Router, QueryState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let state = QueryState {
        logs: LogStore::open(&data, LogStoreOptions::default()).unwrap(),
        services: Arc::new(ServiceRegistry::default()),
        traces: TraceStore::open(&data, TraceStoreOptions::default()).unwrap(),
        live: Arc::new(NoLiveTraces),
        metrics: MetricStore::new(Default::default()),
        runtime: QueryRuntime::new(limits).unwrap(),
    };
    (crate::router(state.clone()), state, dir)
}

/// Serves `app` on a loopback port and sends one request; the status, the
/// `Retry-After` header and the JSON body.
async fn send(app: &Router, method: &str, target: &str, body: &str) -> (u16, bool, Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app.clone()).into_future());
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    server.abort();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry = head.to_ascii_lowercase().contains("retry-after:");
    // The body may be chunked: take the JSON object inside.
    let json = body
        .find('{')
        .zip(body.rfind('}'))
        .and_then(|(a, b)| serde_json::from_str(&body[a..=b]).ok())
        .unwrap_or(Value::Null);
    (status, retry, json)
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap()[2..].to_owned()
}

fn message(v: &Value) -> String {
    v.get("error")
        .or_else(|| v.pointer("/errors/0/msg"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn hostile_queries_are_refused_with_the_limit_named_and_the_server_stays_up() {
    // Small enough for a GET's target to carry a query past it.
    let (app, _, _dir) = app(QueryLimits {
        max_length: 8 << 10,
        ..Default::default()
    });
    let deep_log = format!("{}a{}", "(".repeat(3000), ")".repeat(3000));
    let nots = format!("{}a", "NOT ".repeat(1000));
    let deep_promql = format!("{}1{}", "(".repeat(50_000), ")".repeat(50_000));
    let minus_chain = format!("{}1", "-".repeat(1_000));
    let plus_chain = vec!["1"; 1_000].join("+");
    let tags = format!("a=~{}x{}", "(".repeat(300), ")".repeat(300));
    let long = "a".repeat(10 << 10);
    // (method, target, form body, status, errorType or "", flag in message)
    let cases: Vec<(&str, String, String, u16, &str, &str)> = vec![
        (
            "GET",
            format!("/api/v1/logs/search?q={}", enc(&deep_log)),
            String::new(),
            400,
            "",
            "--query-max-depth",
        ),
        (
            "GET",
            format!("/api/v1/logs/search?q={}", enc(&nots)),
            String::new(),
            400,
            "",
            "--query-max-depth",
        ),
        (
            "GET",
            format!("/api/v1/logs/histogram?q={}", enc(&deep_log)),
            String::new(),
            400,
            "",
            "--query-max-depth",
        ),
        (
            "GET",
            format!("/api/v1/logs/search?q={}", enc(&long)),
            String::new(),
            400,
            "",
            "--query-max-length",
        ),
        (
            "GET",
            format!("/api/v1/traces?tags={}", enc(&tags)),
            String::new(),
            400,
            "",
            "--query-max-depth",
        ),
        (
            "GET",
            format!(
                "/jaeger/api/traces?service=x&tags={}",
                enc(&format!("{{\"k\":\"{long}\"}}"))
            ),
            String::new(),
            400,
            "",
            "--query-max-length",
        ),
        (
            "POST",
            "/prometheus/api/v1/query".into(),
            format!("query={}", enc(&deep_promql)),
            400,
            "bad_data",
            "--query-max-length",
        ),
        (
            "POST",
            "/prometheus/api/v1/query".into(),
            format!("query={}", enc(&deep_promql[49_500..50_500])),
            400,
            "bad_data",
            "--query-max-depth",
        ),
        (
            "POST",
            "/prometheus/api/v1/query".into(),
            format!("query={}", enc(&minus_chain)),
            400,
            "bad_data",
            "--query-max-depth",
        ),
        (
            "POST",
            "/prometheus/api/v1/query".into(),
            format!("query={}", enc(&plus_chain)),
            400,
            "bad_data",
            "--query-max-depth",
        ),
        (
            "GET",
            format!(
                "/prometheus/api/v1/series?match[]={}",
                enc(&format!("{}up{}", "(".repeat(500), ")".repeat(500)))
            ),
            String::new(),
            400,
            "bad_data",
            "--query-max-depth",
        ),
    ];
    for (method, target, body, status, kind, flag) in cases {
        let (got, _, v) = send(&app, method, &target, &body).await;
        let what = &target[..target.len().min(60)];
        assert_eq!(got, status, "{what}: {v}");
        if !kind.is_empty() {
            assert_eq!(v["errorType"], kind, "{what}: {v}");
        }
        assert!(message(&v).contains(flag), "{what}: {v}");
        let (up, _, _) = send(&app, "GET", "/api/v1/logs/search?q=a", "").await;
        assert_eq!(up, 200, "after {what}");
    }
}

#[tokio::test]
async fn nested_log_query_is_refused_not_a_stack_overflow() {
    let (app, _, _dir) = app(QueryLimits::default());
    let q = format!("{}a{}", "(".repeat(3000), ")".repeat(3000));
    let (status, _, v) = send(
        &app,
        "GET",
        &format!("/api/v1/logs/search?q={}", enc(&q)),
        "",
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        message(&v).contains("query nesting depth 3000 exceeds the limit 128 (--query-max-depth)"),
        "{v}"
    );
}

#[tokio::test]
async fn nested_promql_is_refused_not_a_stack_overflow() {
    let (app, _, _dir) = app(QueryLimits::default());
    let q = format!("{}1{}", "(".repeat(3000), ")".repeat(3000));
    let (status, _, v) = send(
        &app,
        "POST",
        "/prometheus/api/v1/query",
        &format!("query={}", enc(&q)),
    )
    .await;
    assert_eq!(
        (status, v["errorType"].as_str()),
        (400, Some("bad_data")),
        "{v}"
    );
    assert!(message(&v).contains("(--query-max-depth)"), "{v}");
}

/// (target, status, errorType, words in the message)
type PromCase = (String, u16, &'static str, &'static str);

#[tokio::test]
async fn prometheus_steps_and_subqueries_are_bounded() {
    let (app, _, _dir) = app(QueryLimits {
        max_samples: 1_000,
        ..Default::default()
    });
    let range = |q: &str, step: &str| {
        format!(
            "/prometheus/api/v1/query_range?query={}&start=1700000000&end=1700003600&step={step}",
            enc(q)
        )
    };
    let cases: Vec<PromCase> = vec![
        // L1: a step rounding to 0 ms once divided by zero.
        (range("1", "0.0001"), 400, "bad_data", "minimum of 1ms"),
        // H5: a step that saturated and wrapped the chunk loop.
        (range("1", "9999999999y"), 400, "bad_data", "too large"),
        // A step just below i64::MAX ms: one point, no wrapped chunk bound.
        (range("1", "106751991167d"), 200, "", ""),
        (range("1", "1ms"), 400, "bad_data", "11,000 points"),
        // H6: a subquery of 315 billion steps.
        (
            format!(
                "/prometheus/api/v1/query?query={}&time=1700000000",
                enc("count_over_time(vector(1)[10y:1ms])")
            ),
            400,
            "bad_data",
            "points per series",
        ),
        // Subquery points count against the samples limit.
        (
            format!(
                "/prometheus/api/v1/query?query={}&time=1700000000",
                enc("count_over_time(vector(1)[1h:1s])")
            ),
            422,
            "execution",
            "--query-max-samples",
        ),
        (range("1", "1y"), 200, "", ""),
    ];
    for (target, status, kind, words) in cases {
        let (got, _, v) = send(&app, "GET", &target, "").await;
        assert_eq!(got, status, "{target}: {v}");
        if status != 200 {
            assert_eq!(v["errorType"], kind, "{target}: {v}");
            assert!(
                v["error"].as_str().unwrap_or("").contains(words),
                "{target}: {v}"
            );
        }
    }
}

#[tokio::test]
async fn huge_step_is_refused_not_a_wrapping_loop() {
    let (app, _, _dir) = app(QueryLimits::default());
    let (status, _, v) = send(
        &app,
        "GET",
        "/prometheus/api/v1/query_range?query=1&start=1700000000&end=1700003600&step=9999999999y",
        "",
    )
    .await;
    assert_eq!(
        (status, v["errorType"].as_str()),
        (400, Some("bad_data")),
        "{v}"
    );
}

#[tokio::test]
async fn a_query_past_its_timeout_is_stopped_and_answered_503() {
    let (app, _, _dir) = app(QueryLimits::default());
    // 11,000 steps of a 600-point subquery: far more than a millisecond.
    let target = format!(
        "/prometheus/api/v1/query_range?query={}&start=1700000000&end=1700010000&step=1s&timeout=0.001",
        enc("count_over_time(vector(1)[10m:1s])")
    );
    let (status, _, v) = send(&app, "GET", &target, "").await;
    assert_eq!(
        (status, v["errorType"].as_str()),
        (503, Some("timeout")),
        "{v}"
    );
    assert!(message(&v).contains("--query-timeout"), "{v}");
}

#[tokio::test]
async fn queries_past_the_concurrency_limit_get_429_with_retry_after() {
    let (app, state, _dir) = app(QueryLimits {
        max_concurrent: 1,
        max_concurrent_per_tenant: 1,
        ..Default::default()
    });
    let held = state.runtime.hold_for_test(&TenantId::default_tenant());
    for target in [
        "/api/v1/logs/search?q=a",
        "/api/v1/traces",
        "/jaeger/api/traces?service=x",
        "/prometheus/api/v1/query?query=1",
        "/prometheus/api/v1/labels",
    ] {
        let (status, retry, v) = send(&app, "GET", target, "").await;
        assert_eq!((status, retry), (429, true), "{target}: {v}");
        assert!(
            message(&v).contains("--query-max-concurrent"),
            "{target}: {v}"
        );
    }
    drop(held);
    let (status, _, v) = send(&app, "GET", "/prometheus/api/v1/query?query=1", "").await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn hostile_parameters_are_refused_not_panics() {
    let (app, _, _dir) = app(QueryLimits::default());
    for target in [
        "/api/v1/logs/search?cursor=0.0",
        "/api/v1/logs/search?cursor=-9223372036854775808.0&start=9200000000",
        "/api/v1/logs/histogram?start=-9200000000&end=9200000000",
        "/api/v1/logs/histogram?start=-9200000000&end=9200000000&step=1ms",
        "/api/v1/logs/search?end=-9200000000",
        "/api/v1/services?start=-9200000000&end=9200000000",
        "/api/v1/traces?end=-9200000000&min_duration=99999999999h",
        "/api/v1/service-map?end=-9200000000",
        "/jaeger/api/traces?service=x&end=-9223372036854775808&lookback=99999999h",
        "/jaeger/api/traces?service=x&start=9223372036854775807&end=-9223372036854775808",
        "/jaeger/api/dependencies?endTs=-9223372036854775808&lookback=9223372036854775807",
        "/prometheus/api/v1/query_range?query=1&start=-9200000000&end=9200000000&step=1y",
        "/prometheus/api/v1/query?query=up%20offset%20-292y&time=-9200000000",
        "/prometheus/api/v1/query?query=rate(up[292y])&time=9200000000",
        "/prometheus/api/v1/query?query=max_over_time(up[292y:1y])&time=-9200000000",
        "/prometheus/api/v1/series?match[]=up&start=-9200000000&end=9200000000",
        "/prometheus/api/v1/query?query=1&timeout=99999999999y",
    ] {
        let (status, _, v) = send(&app, "GET", target, "").await;
        assert!((200..500).contains(&status), "{target}: {status} {v}");
    }
}
