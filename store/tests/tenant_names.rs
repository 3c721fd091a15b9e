//! Tenant ids that name Periscope's own files and directories (format 1
//! kept tenants beside them, and a tenant called `periscope.json` stopped
//! every trace and metric flush): each writes and reads logs, spans and
//! metrics like any other, across a restart, and disturbs no one.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use periscope_proto::{
    LogRecord, PromBatch, PromSample, SampleValue, Span, SpanKind, SpanResource, StatusCode,
};
use periscope_store::{
    DataDir, FlushBatch, Fragment, IndexBatch, LogIndexer, LogSearch, LogStore, LogStoreOptions,
    MetricStore, MetricStoreOptions, TenantFlush, TenantId, TraceStore, TraceStoreOptions,
};

/// Names of the data dir's own entries, of entries inside a tenant's
/// stores, and the default tenant beside them.
const NAMES: [&str; 9] = [
    "periscope.json",
    "periscope.lock",
    "periscope.tmp",
    "wal",
    "tenants",
    "manifest.json",
    "logs",
    "metrics",
    "default",
];

fn now_ns() -> i64 {
    periscope_proto::unix_now_ns()
}

fn record(tenant: &str, ts: i64) -> LogRecord {
    LogRecord {
        timestamp_ns: ts,
        observed_timestamp_ns: ts,
        body: format!("hello from {tenant}"),
        service: "svc".into(),
        ..Default::default()
    }
}

fn span(i: u8, ts: i64) -> Span {
    Span {
        trace_id: [i + 1; 16],
        span_id: [1; 8],
        parent_span_id: None,
        trace_state: String::new(),
        flags: 0,
        name: "op".into(),
        kind: SpanKind::Server,
        start_ns: ts,
        end_ns: ts + 1_000,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        attributes: vec![],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        resource: Arc::new(SpanResource {
            service: "svc".into(),
            attributes: vec![],
        }),
        scope_name: String::new(),
        scope_version: String::new(),
    }
}

fn sample(tenant: &str, i: usize, ts_ms: i64) -> PromSample {
    PromSample {
        labels: periscope_proto::normalize_labels(vec![
            ("__name__".into(), "up".into()),
            ("tenant_name".into(), tenant.into()),
        ]),
        timestamp_ms: ts_ms,
        value: SampleValue::Float(i as f64),
    }
}

fn check(data: &DataDir, ts: i64) {
    let logs = LogStore::open(data, LogStoreOptions::default()).unwrap();
    let traces = TraceStore::open(data, TraceStoreOptions::default()).unwrap();
    let metrics = MetricStore::open(data, MetricStoreOptions::default()).unwrap();
    for (i, name) in NAMES.iter().enumerate() {
        let t = TenantId::parse(name).unwrap();
        let search = LogSearch {
            query: String::new(),
            start_ns: ts - 1,
            end_ns: ts + 1,
            limit: 10,
            ..Default::default()
        };
        let bodies: Vec<String> = logs
            .search(&t, &search)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.body)
            .collect();
        assert_eq!(bodies, [format!("hello from {name}")], "logs of {name}");
        let spans = traces.trace(&t, &[i as u8 + 1; 16]).unwrap();
        assert_eq!(spans.len(), 1, "trace of {name}");
        let other = traces
            .trace(&t, &[((i + 1) % NAMES.len()) as u8 + 1; 16])
            .unwrap();
        assert!(other.is_empty(), "{name} sees another tenant's trace");
        let got = metrics.select(&t, Some("up"), &|_| true, 0, i64::MAX);
        assert_eq!(got.len(), 1, "series of {name}");
        assert_eq!(
            got[0].1,
            vec![(ts / 1_000_000, SampleValue::Float(i as f64))]
        );
    }
}

#[test]
fn tenants_named_like_periscopes_own_files_are_ordinary_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let _lock = data.lock().unwrap();
    let ts = now_ns();
    {
        let logs = LogStore::open(&data, LogStoreOptions::default()).unwrap();
        let traces = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
        let metrics = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        let (tx, rx) = sync_channel(NAMES.len());
        let indexer = LogIndexer::spawn(logs, rx, |_| {}).unwrap();
        let mut batch = FlushBatch {
            max_lsn: 3 * NAMES.len() as u64,
            ..Default::default()
        };
        for (i, name) in NAMES.iter().enumerate() {
            let t = TenantId::parse(name).unwrap();
            let lsn = 3 * i as u64;
            tx.send(IndexBatch {
                lsn: lsn + 1,
                tenant: t.clone(),
                records: vec![record(name, ts)],
                hold: Box::new(()),
                acked_at: Instant::now(),
            })
            .unwrap();
            batch.tenants.insert(
                t.clone(),
                TenantFlush {
                    fragments: vec![Fragment {
                        spans: Arc::new(vec![span(i as u8, ts)]),
                        truncated: false,
                    }],
                    ..Default::default()
                },
            );
            metrics.append_at(
                &t,
                PromBatch {
                    samples: vec![sample(name, i, ts / 1_000_000)],
                    ..Default::default()
                },
                lsn + 3,
            );
        }
        drop(tx);
        indexer.join().unwrap();
        traces.write(batch).unwrap();
        metrics.flush().unwrap();
    }
    // The data dir's own files are untouched, and every tenant reads back.
    let version = std::fs::read_to_string(dir.path().join("periscope.json")).unwrap();
    assert!(version.contains("\"format_version\": 2"), "{version}");
    assert!(dir.path().join("periscope.lock").is_file());
    check(&data, ts);
    // And again after a restart (the stores list tenants from disk).
    let data = DataDir::open(dir.path()).unwrap();
    check(&data, ts);
}
