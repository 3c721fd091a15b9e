use std::sync::Arc;

use periscope_proto::{Attr, AttrValue, Span, SpanKind, SpanResource, StatusCode};

use super::*;

fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, start_ns: i64, dur_ns: i64) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        trace_state: String::new(),
        flags: 0,
        name: format!("op{id}"),
        kind: if parent.is_none() {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_ns,
        end_ns: start_ns + dur_ns,
        status_code: if id == 3 {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message: String::new(),
        attributes: vec![Attr::new(
            "http.request.method",
            AttrValue::Str("GET".into()),
        )],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        resource: Arc::new(SpanResource {
            service: service.into(),
            attributes: vec![Attr::new("service.name", AttrValue::Str(service.into()))],
        }),
        scope_name: String::new(),
        scope_version: String::new(),
    }
}

const T0: i64 = 1_700_000_000_000_000_000;

fn flush(tenant: &TenantId, traces: Vec<Vec<Span>>, max_lsn: u64, durable_lsn: u64) -> FlushBatch {
    let mut b = FlushBatch {
        max_lsn,
        durable_lsn,
        ..Default::default()
    };
    b.tenants.insert(
        tenant.clone(),
        TenantFlush {
            fragments: traces
                .into_iter()
                .map(|spans| Fragment {
                    spans: Arc::new(spans),
                    truncated: false,
                })
                .collect(),
            edges: vec![],
            operations: vec![OperationRow {
                minute_ns: minute_of(T0),
                service: "web".into(),
                operation: "op1".into(),
                kind: "server",
                calls: 1,
                errors: 0,
                duration: LatencyHistogram::default(),
            }],
        },
    );
    b
}

#[test]
fn write_reopen_read_search_compact() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let t = TenantId::parse("default").unwrap();
    let store = TraceStore::open(
        &data,
        TraceStoreOptions {
            compact_min_files: 2,
            ..Default::default()
        },
    )
    .unwrap();
    // Trace 1 in two fragments (a late span), trace 2 and 3 in the second flush.
    store
        .write(flush(
            &t,
            vec![vec![
                span(1, 1, None, "web", T0, 100),
                span(1, 2, Some(1), "db", T0 + 10, 50),
            ]],
            5,
            0,
        ))
        .unwrap();
    store
        .write(flush(
            &t,
            vec![
                vec![span(1, 3, Some(1), "api", T0 + 20, 30)],
                vec![span(2, 1, None, "web", T0 + 1_000, 10)],
                vec![span(3, 1, None, "web", T0 + 2_000, 5_000)],
            ],
            9,
            5,
        ))
        .unwrap();
    assert_eq!(store.trace(&t, &[1; 16]).unwrap().len(), 3);
    assert_eq!(store.durable_lsn(), 5);

    // Replay filter: only sets above durable 5, i.e. the second flush (max_lsn 9).
    let f = store.replay_filter(5).unwrap();
    assert_eq!(f.get(&(t.clone(), [2; 16])), Some(&9));
    assert_eq!(f.get(&(t.clone(), [1; 16])), Some(&9));

    drop(store);
    let store = TraceStore::open(
        &data,
        TraceStoreOptions {
            compact_min_files: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let spans = store.trace(&t, &[1; 16]).unwrap();
    assert_eq!(spans.len(), 3);
    assert!(store.trace(&t, &[7; 16]).unwrap().is_empty());
    assert_eq!(store.operations_of(&t, "web"), vec!["op1".to_string()]);

    let q = TraceQuery {
        start_ns: T0 - 1,
        end_ns: T0 + 10_000,
        limit: 2,
        ..Default::default()
    };
    let found = store.search(&t, &q, None).unwrap();
    let ids: Vec<u8> = found.iter().map(|s| s.trace_id[0]).collect();
    assert_eq!(ids, vec![3, 2], "newest first");
    let q = TraceQuery {
        error: Some(true),
        limit: 10,
        start_ns: T0 - 1,
        end_ns: T0 + 10_000,
        ..Default::default()
    };
    let found = store.search(&t, &q, None).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].span_count, 3, "fragments merged");
    assert_eq!(found[0].root_service, "web");
    let q = TraceQuery {
        min_duration_ns: Some(1_000),
        limit: 10,
        start_ns: T0 - 1,
        end_ns: T0 + 10_000,
        ..Default::default()
    };
    assert_eq!(store.search(&t, &q, None).unwrap().len(), 1);
    let pred = |spans: &[Span]| spans.iter().any(|s| s.service() == "db");
    let q = TraceQuery {
        limit: 10,
        start_ns: T0 - 1,
        end_ns: T0 + 10_000,
        ..Default::default()
    };
    let found = store.search(&t, &q, Some(&pred)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].trace_id, [1; 16]);

    // Compaction merges only sets at or below durable (5): just the first.
    assert_eq!(store.compact().unwrap(), 0);
    store
        .write(flush(
            &t,
            vec![vec![span(4, 1, None, "web", T0 + 3_000, 1)]],
            12,
            12,
        ))
        .unwrap();
    assert_eq!(store.compact().unwrap(), 2);
    assert_eq!(store.file_sets(&t).len(), 1);
    assert_eq!(store.trace(&t, &[1; 16]).unwrap().len(), 3);
    assert_eq!(store.trace(&t, &[4; 16]).unwrap().len(), 1);

    // A file not in the manifest is deleted on open.
    let part = dir
        .path()
        .join("tenants/default/traces")
        .join(&store.file_sets(&t)[0].partition);
    std::fs::write(part.join("spans-999.parquet"), b"junk").unwrap();
    drop(store);
    let store = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
    assert!(!part.join("spans-999.parquet").exists());
    assert_eq!(
        store
            .apply_retention(T0 + 30 * 24 * 3_600_000_000_000)
            .unwrap(),
        1
    );
    assert!(store.trace(&t, &[1; 16]).unwrap().is_empty());
}

#[test]
fn foreign_or_missing_files_are_errors_or_empty_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let t = TenantId::parse("default").unwrap();
    let store = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
    store
        .write(flush(
            &t,
            vec![vec![span(1, 1, None, "web", T0, 100)]],
            1,
            0,
        ))
        .unwrap();
    let set = store.file_sets(&t).remove(0);
    let part = data.traces_dir(&t).join(&set.partition);
    let spans = part.join(set.spans.as_ref().unwrap());
    // A Parquet file of another schema in place of the span file.
    std::fs::copy(part.join(set.operations.as_ref().unwrap()), &spans).unwrap();
    drop(store);
    let store = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
    let err = store.trace(&t, &[1; 16]).unwrap_err();
    assert!(err.to_string().contains("columns differ"), "{err}");
    // A listed file deleted under a reader reads as empty.
    std::fs::remove_file(&spans).unwrap();
    assert!(store.trace(&t, &[1; 16]).unwrap().is_empty());
}

#[test]
fn a_manifest_of_another_version_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    for store in ["traces", "metrics"] {
        let d = dir.path().join("tenants/default").join(store);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("manifest.json"),
            br#"{"version":99,"durable_lsn":0,"next_file":1,"files":[]}"#,
        )
        .unwrap();
    }
    let err = TraceStore::open(&data, TraceStoreOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("trace manifest version 99"),
        "{err}"
    );
    let err = crate::MetricStore::open(&data, crate::MetricStoreOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("metric manifest version 99"),
        "{err}"
    );
}

/// Puts a regular file where a tenant's `traces` directory would go: as
/// root, permissions do not stop writes, but this does.
fn obstruct(data: &DataDir, tenant: &TenantId) -> PathBuf {
    let path = data.traces_dir(tenant);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"not a directory").unwrap();
    path
}

#[test]
fn a_tenant_whose_directory_cannot_be_written_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
    let (good, bad) = (
        TenantId::parse("good").unwrap(),
        TenantId::parse("bad").unwrap(),
    );
    let obstacle = obstruct(&data, &bad);
    let both = |trace: u8, max_lsn: u64| {
        let mut b = flush(
            &good,
            vec![vec![span(trace, 1, None, "web", T0, 10)]],
            max_lsn,
            0,
        );
        let other = flush(
            &bad,
            vec![vec![span(trace + 100, 1, None, "web", T0, 10)]],
            max_lsn,
            0,
        );
        b.tenants.extend(other.tenants);
        b
    };
    let err = store.write(both(1, 3)).unwrap_err();
    assert_eq!(err.failed.len(), 1, "{err}");
    assert_eq!(err.failed[0].0, bad);
    assert!(err.to_string().contains("bad"), "{err}");
    assert_eq!(store.trace(&good, &[1; 16]).unwrap().len(), 1);
    assert!(store.trace(&bad, &[101; 16]).unwrap().is_empty());
    assert!(
        store.file_sets(&bad).is_empty(),
        "nothing of the failed tenant is listed"
    );

    // The obstacle gone, the failed tenant's part is written on retry.
    std::fs::remove_file(&obstacle).unwrap();
    store.write(both(2, 4)).unwrap();
    assert_eq!(store.trace(&bad, &[102; 16]).unwrap().len(), 1);
    drop(store);
    let store = TraceStore::open(&data, TraceStoreOptions::default()).unwrap();
    assert_eq!(store.trace(&good, &[1; 16]).unwrap().len(), 1);
    assert_eq!(store.trace(&good, &[2; 16]).unwrap().len(), 1);
    assert_eq!(store.trace(&bad, &[102; 16]).unwrap().len(), 1);
}

/// Regression: compaction deleted the sets it replaced at once, and the
/// reader treats a vanished file as empty, so a trace query that had listed
/// the sets just before the swap missed their traces.
#[test]
fn a_query_that_listed_sets_before_a_compaction_still_reads_their_spans() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let t = TenantId::default_tenant();
    let opts = TraceStoreOptions {
        compact_min_files: 2,
        ..Default::default()
    };
    let store = TraceStore::open(&data, opts).unwrap();
    for (i, trace) in [1u8, 2].into_iter().enumerate() {
        let lsn = i as u64 + 1;
        let spans = vec![span(trace, 1, None, "web", T0 + i64::from(trace), 10)];
        store.write(flush(&t, vec![spans], lsn, lsn)).unwrap();
    }
    // The query's snapshot, taken just before the swap.
    let listed = store.sets(&t);
    assert_eq!(store.compact().unwrap(), 1);
    assert_eq!(store.file_sets(&t).len(), 1);
    let ids: std::collections::HashSet<[u8; 16]> = [[1; 16], [2; 16]].into();
    let mut found = 0;
    for set in &listed {
        found += read::read_spans_of(set, &ids).unwrap().len();
    }
    assert_eq!(found, 2, "the replaced sets are still readable");
    // Once the grace is over they go, with their files.
    store.collect_garbage(std::time::Duration::ZERO);
    for set in &listed {
        for name in set.set.file_names() {
            assert!(!set.path(&name).exists(), "{name}");
        }
    }
    assert_eq!(store.trace(&t, &[1; 16]).unwrap().len(), 1);
    assert_eq!(store.trace(&t, &[2; 16]).unwrap().len(), 1);
}
