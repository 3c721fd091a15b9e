//! Shared harness of the query fuzz targets: the real query router over
//! real (small) stores in a temporary data directory, called in process.
//!
//! The stores are opened once per fuzzing process; each input is one or
//! more GET requests through the router. A panic anywhere aborts the run
//! (libFuzzer's panic hook), so a target only has to send requests.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use periscope_proto::LogRecord;
use periscope_query::{NoLiveTraces, QueryLimits, QueryRuntime, QueryState, ServiceRegistry};
use periscope_store::{
    DataDir, IndexBatch, LogIndexer, LogStore, LogStoreOptions, MetricStore, MetricStoreOptions,
    TenantId, TraceStore, TraceStoreOptions,
};
use tower::ServiceExt;

/// The router and the runtime it runs on.
pub struct Api {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

/// The process-wide harness, built on first use.
pub fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(Api::new)
}

/// A few log records an hour ago, so that log queries run against a real partition.
fn seed_logs(logs: &Arc<LogStore>) {
    let now = periscope_proto::unix_now_ns();
    let records: Vec<LogRecord> = (0..8)
        .map(|i| LogRecord {
            timestamp_ns: now - 3_600_000_000_000 + i * 1_000_000_000,
            observed_timestamp_ns: now,
            severity_number: 9 + i as i32,
            severity_text: "INFO".into(),
            body: format!("payment {i} declined for order a{i}b timeout"),
            service: "checkout".into(),
            trace_id: "5b8efff798038103d269b633813fc60c".into(),
            span_id: "eee19b7ec3c1b174".into(),
            attributes: serde_json::json!({"http.status_code": 500 + i, "user": "Alice"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            resource: serde_json::json!({"service.name": "checkout"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            scope: "fuzz".into(),
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let indexer = LogIndexer::spawn(logs.clone(), rx, |_| {}).expect("indexer starts");
    tx.send(IndexBatch {
        lsn: 1,
        tenant: TenantId::default_tenant(),
        records,
        hold: Box::new(()),
        acked_at: Instant::now(),
    })
    .expect("indexer takes the batch");
    drop(tx);
    indexer.join().expect("indexer finishes");
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::open(dir.path()).expect("data dir");
        let logs = LogStore::open(&data, LogStoreOptions::default()).expect("log store");
        seed_logs(&logs);
        let traces = TraceStore::open(&data, TraceStoreOptions::default()).expect("span store");
        let metrics = MetricStore::open(&data, MetricStoreOptions::default()).expect("metric store");
        let router = periscope_query::router(QueryState {
            logs,
            services: Arc::new(ServiceRegistry::default()),
            traces,
            live: Arc::new(NoLiveTraces),
            metrics,
            // Small limits: an input runs for at most a couple of seconds.
            runtime: QueryRuntime::new(QueryLimits {
                timeout: std::time::Duration::from_secs(2),
                max_samples: 1_000_000,
                threads: 1,
                ..Default::default()
            })
            .expect("query threads start"),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Api {
            rt,
            router,
            _dir: dir,
        }
    }

    /// Sends `GET path?query` and returns the status. A status of 500 means
    /// a request reached an internal error: a bug, reported by panicking.
    pub fn get(&self, path: &str, query: &str) -> StatusCode {
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let Ok(req) = Request::get(uri).body(Body::empty()) else {
            return StatusCode::BAD_REQUEST;
        };
        let status = self
            .rt
            .block_on(self.router.clone().oneshot(req))
            .expect("the router is infallible")
            .status();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "GET {path}?{query} answered 500"
        );
        status
    }
}

/// Percent-encodes every byte but unreserved characters, for one query value.
pub fn encode_value(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turns fuzz bytes into a query string: `&` and `=` stay as separators,
/// everything else is percent-encoded, so names and values are both fuzzed.
pub fn encode_query(raw: &[u8]) -> String {
    raw.split(|&b| b == b'&')
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let k = encode_value(kv.next().unwrap_or_default());
            match kv.next() {
                Some(v) => format!("{k}={}", encode_value(v)),
                None => k,
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}
