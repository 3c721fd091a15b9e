//! Committed data dirs of the Parquet stores that the current code must
//! still open, beside the log fixtures of `golden.rs`:
//!
//! - `golden/spans1`: the span store, span file format 1
//!   (`SPAN_FILE_VERSION`) and trace manifest version 1: two file sets in
//!   one partition, one trace split across both, with service-graph edges
//!   and operation rows.
//! - `golden/metrics2`: the metric store, manifest version 2 (labels in the
//!   series file): two flushed file pairs in one partition.
//!
//! Each is opened from a copy (opening deletes unlisted files and
//! compaction rewrites), read back, then compacted and read again.
//!
//! Regenerate (only with a format version bump, into a new directory) with
//! `PERISCOPE_REGENERATE_GOLDEN=1 cargo test -p periscope-store --test golden_files`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use periscope_proto::{
    Attr, AttrValue, Labels, PromBatch, PromSample, SampleValue, Span, SpanKind, SpanResource,
    StatusCode, normalize_labels,
};
use periscope_store::{
    DataDir, EdgeRow, FlushBatch, Fragment, LatencyHistogram, MetricStore, MetricStoreOptions,
    OperationRow, TenantFlush, TenantId, TraceQuery, TraceStore, TraceStoreOptions,
};

/// 2026-01-01T00:00:00Z
const BASE_NS: i64 = 1_767_225_600_000_000_000;
const BASE_MS: i64 = BASE_NS / 1_000_000;
const SPANS_FIXTURE: &str = "spans1";
const METRICS_FIXTURE: &str = "metrics2";
/// The fixtures are old; keep them inside retention.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(base).unwrap().to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A copy of fixture `name` (regenerated first when asked).
fn fixture(name: &str, regenerate: fn(&Path)) -> tempfile::TempDir {
    if std::env::var_os("PERISCOPE_REGENERATE_GOLDEN").is_some() {
        let dir = golden_dir(name);
        let _ = std::fs::remove_dir_all(&dir);
        regenerate(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(name), tmp.path());
    tmp
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, start_ns: i64) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        trace_state: String::new(),
        flags: 1,
        name: format!("op{id}"),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_ns,
        end_ns: start_ns + 5_000_000,
        status_code: if id == 3 {
            StatusCode::Error
        } else {
            StatusCode::Ok
        },
        status_message: if id == 3 {
            "boom".into()
        } else {
            String::new()
        },
        attributes: vec![
            Attr::new("http.request.method", AttrValue::Str("GET".into())),
            Attr::new("golden.n", AttrValue::Int(i64::from(id))),
        ],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        resource: Arc::new(SpanResource {
            service: service.into(),
            attributes: vec![Attr::new("service.name", AttrValue::Str(service.into()))],
        }),
        scope_name: "golden".into(),
        scope_version: "1".into(),
    }
}

/// The spans of the fixture by flush: trace 1 is split across both.
fn span_flushes() -> [Vec<Vec<Span>>; 2] {
    [
        vec![
            vec![
                span(1, 1, None, "web", BASE_NS + 1_000),
                span(1, 2, Some(1), "web", BASE_NS + 2_000),
            ],
            vec![span(2, 1, None, "api", BASE_NS + 3_000)],
        ],
        vec![vec![span(1, 3, Some(2), "db", BASE_NS + 4_000)]],
    ]
}

fn edge() -> EdgeRow {
    let mut latency = LatencyHistogram::default();
    latency.observe(5_000_000);
    EdgeRow {
        minute_ns: BASE_NS,
        client: "web".into(),
        server: "db".into(),
        server_kind: "service",
        requests: 1,
        failures: 1,
        latency,
    }
}

fn operation() -> OperationRow {
    let mut duration = LatencyHistogram::default();
    duration.observe(5_000_000);
    OperationRow {
        minute_ns: BASE_NS,
        service: "web".into(),
        operation: "op1".into(),
        kind: "server",
        calls: 1,
        errors: 0,
        duration,
    }
}

fn regenerate_spans(dir: &Path) {
    let data = DataDir::open(dir).unwrap();
    let store = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
    for (i, traces) in span_flushes().into_iter().enumerate() {
        let lsn = i as u64 + 1;
        let mut batch = FlushBatch {
            max_lsn: lsn,
            durable_lsn: lsn,
            ..Default::default()
        };
        let flush = TenantFlush {
            fragments: traces
                .into_iter()
                .map(|spans| Fragment {
                    spans: Arc::new(spans),
                    truncated: false,
                })
                .collect(),
            edges: if i == 1 { vec![edge()] } else { vec![] },
            operations: if i == 0 { vec![operation()] } else { vec![] },
        };
        batch.tenants.insert(tenant(), flush);
        store.write(batch).unwrap();
    }
}

fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.span_id);
    spans
}

/// What the span fixture holds, read through every query path.
fn check_spans(store: &TraceStore) {
    let t = tenant();
    let [first, second] = span_flushes();
    let trace1: Vec<Span> = first[0].iter().chain(&second[0]).cloned().collect();
    assert_eq!(sorted(store.trace(&t, &[1; 16]).unwrap()), sorted(trace1));
    assert_eq!(store.trace(&t, &[2; 16]).unwrap(), first[1]);
    let q = TraceQuery {
        start_ns: BASE_NS,
        end_ns: BASE_NS + 3_600_000_000_000 - 1,
        limit: 10,
        ..Default::default()
    };
    let found = store.search(&t, &q, None).unwrap();
    let got: Vec<([u8; 16], u32, u32)> = found
        .iter()
        .map(|s| (s.trace_id, s.span_count, s.error_count))
        .collect();
    assert_eq!(got, [([2; 16], 1, 0), ([1; 16], 3, 1)]);
    assert_eq!(found[1].root_service, "web");
    assert_eq!(
        store.edges(&t, BASE_NS, BASE_NS + 60_000_000_000).unwrap(),
        [edge()]
    );
    assert_eq!(
        store
            .operation_rows(&t, BASE_NS, BASE_NS + 60_000_000_000)
            .unwrap(),
        [operation()]
    );
    assert_eq!(store.operations_of(&t, "web"), ["op1"]);
    assert_eq!(store.durable_lsn(), 2);
}

#[test]
fn golden_span_store_still_opens_reads_and_compacts() {
    let tmp = fixture(SPANS_FIXTURE, regenerate_spans);
    let before = files_under(tmp.path());
    let data = DataDir::open(tmp.path()).unwrap();
    let opts = TraceStoreOptions {
        retention: FOREVER,
        compact_min_files: 2,
        ..Default::default()
    };
    let store = TraceStore::open(&data, opts.clone()).unwrap();
    assert_eq!(files_under(tmp.path()), before, "opening changes no file");
    assert_eq!(store.file_sets(&tenant()).len(), 2);
    check_spans(&store);
    // The old files merge into a set of the current format.
    assert_eq!(store.compact().unwrap(), 1);
    assert_eq!(store.file_sets(&tenant()).len(), 1);
    check_spans(&store);
    drop(store);
    check_spans(&TraceStore::open(&data, opts).unwrap());
}

fn series(job: &str) -> Labels {
    normalize_labels(vec![
        ("__name__".into(), "golden_requests_total".into()),
        ("job".into(), job.into()),
        ("instance".into(), "127.0.0.1:9100".into()),
    ])
}

/// The samples of the fixture by flush: job `a` in both, `b` in the second.
fn metric_flushes() -> [Vec<PromSample>; 2] {
    let s = |job: &str, ts: i64, v: f64| PromSample {
        labels: series(job),
        timestamp_ms: BASE_MS + ts,
        value: SampleValue::Float(v),
    };
    [
        vec![s("a", 0, 1.0), s("a", 15_000, 2.0)],
        vec![
            s("a", 30_000, 3.0),
            s("b", 30_000, 10.0),
            s("b", 45_000, 11.5),
        ],
    ]
}

fn regenerate_metrics(dir: &Path) {
    let data = DataDir::open(dir).unwrap();
    let store = MetricStore::open(&data, MetricStoreOptions { retention: FOREVER }).unwrap();
    for (i, samples) in metric_flushes().into_iter().enumerate() {
        store.append_at(
            &tenant(),
            PromBatch {
                samples,
                ..Default::default()
            },
            i as u64 + 1,
        );
        store.flush().unwrap();
    }
}

fn check_metrics(store: &MetricStore) {
    let mut got = store.select(&tenant(), None, &|_| true, BASE_MS, BASE_MS + 3_599_999);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let v = |ts: i64, v: f64| (BASE_MS + ts, SampleValue::Float(v));
    assert_eq!(
        got,
        [
            (series("a"), vec![v(0, 1.0), v(15_000, 2.0), v(30_000, 3.0)]),
            (series("b"), vec![v(30_000, 10.0), v(45_000, 11.5)]),
        ]
    );
    assert_eq!(store.durable_lsn(&tenant()), 2);
}

#[test]
fn golden_metric_store_still_opens_reads_and_compacts() {
    let tmp = fixture(METRICS_FIXTURE, regenerate_metrics);
    let before = files_under(tmp.path());
    let data = DataDir::open(tmp.path()).unwrap();
    let opts = MetricStoreOptions { retention: FOREVER };
    let store = MetricStore::open(&data, opts.clone()).unwrap();
    assert_eq!(files_under(tmp.path()), before, "opening changes no file");
    check_metrics(&store);
    // The hour is long settled: its two files merge.
    assert_eq!(store.compact(BASE_MS + 2 * 3_600_000).unwrap(), 1);
    check_metrics(&store);
    drop(store);
    check_metrics(&MetricStore::open(&data, opts).unwrap());
}
