use std::sync::mpsc::sync_channel;
use std::time::Instant;

use periscope_proto::LogRecord;

use super::*;

fn rec(ts: i64, body: &str, service: &str) -> LogRecord {
    LogRecord {
        timestamp_ns: ts,
        observed_timestamp_ns: ts,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: body.into(),
        service: service.into(),
        trace_id: String::new(),
        span_id: String::new(),
        attributes: serde_json::json!({"http.status_code": 500, "user": "Alice"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        resource: serde_json::json!({"service.name": service})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        scope: "test".into(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Indexes batches through a real indexer thread and waits for its final commit.
fn index(store: &Arc<LogStore>, batches: Vec<(u64, Vec<LogRecord>)>) -> u64 {
    let (tx, rx) = sync_channel(4);
    let (ctx, crx) = std::sync::mpsc::channel();
    let h = LogIndexer::spawn(store.clone(), rx, move |lsn| {
        let _ = ctx.send(lsn);
    })
    .unwrap();
    let tenant = TenantId::default_tenant();
    for (lsn, records) in batches {
        tx.send(IndexBatch {
            lsn,
            tenant: tenant.clone(),
            records,
            hold: Box::new(()),
            acked_at: Instant::now(),
        })
        .unwrap();
    }
    drop(tx);
    h.join().unwrap();
    crx.try_iter().last().unwrap_or(0)
}

fn search(store: &LogStore, query: &str) -> LogSearch {
    let _ = store;
    LogSearch {
        query: query.into(),
        start_ns: now() - 7_200_000_000_000,
        end_ns: now() + 1_000_000_000,
        limit: 100,
        ..Default::default()
    }
}

#[test]
fn index_search_page_and_replay_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let t = TenantId::default_tenant();
    let base = now() - 1_000_000_000;
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    // Two records share a timestamp: paging must still return each once.
    let batch1: Vec<LogRecord> = (0..5)
        .map(|i| rec(base + i, &format!("payment failed {i}"), "checkout"))
        .collect();
    let mut batch2: Vec<LogRecord> = (0..5)
        .map(|i| rec(base + 10 + i, &format!("cart ok {i}"), "cart"))
        .collect();
    batch2.push(rec(base + 14, "cart ok dup", "cart"));
    assert_eq!(
        index(&store, vec![(1, batch1.clone()), (2, batch2.clone())]),
        2
    );

    let page = store.search(&t, &search(&store, "failed")).unwrap();
    assert_eq!(page.hits.len(), 5);
    assert_eq!(page.hits[0].body, "payment failed 4", "newest first");
    assert_eq!(
        store
            .search(&t, &search(&store, "attributes.http.status_code:500"))
            .unwrap()
            .hits
            .len(),
        11
    );
    assert_eq!(
        store
            .search(
                &t,
                &search(&store, "attributes.user:alice AND service:cart")
            )
            .unwrap()
            .hits
            .len(),
        6
    );
    assert_eq!(
        store
            .search(&t, &search(&store, "fail*"))
            .unwrap()
            .hits
            .len(),
        5
    );
    assert!(store.search(&t, &search(&store, "body:(")).is_err());
    assert_eq!(
        store
            .search(&t, &search(&store, "payment AND NOT \"failed 3\""))
            .unwrap()
            .hits
            .len(),
        4
    );
    assert_eq!(
        store
            .search(&t, &search(&store, "NOT payment"))
            .unwrap()
            .hits
            .len(),
        6
    );

    let mut seen = Vec::new();
    let mut s = search(&store, "");
    s.limit = 4;
    loop {
        let page = store.search(&t, &s).unwrap();
        seen.extend(page.hits.iter().map(|h| h.body.clone()));
        match page.next_cursor {
            Some(c) => s.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 11);

    let h = store
        .histogram(
            &t,
            &HistogramRequest {
                search: LogSearch {
                    start_ns: base,
                    end_ns: base + 19,
                    ..search(&store, "")
                },
                step_ns: 10,
            },
        )
        .unwrap();
    assert_eq!(h, vec![(base, 5), (base + 10, 6)]);
    assert_eq!(
        store
            .services(&t, base - HOUR_NS, base + HOUR_NS)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["cart", "checkout"]
    );
    drop(store);

    // Replaying the same WAL entries after a restart adds nothing; a new one is added.
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    assert_eq!(store.max_committed_lsn(), 2);
    index(
        &store,
        vec![
            (1, batch1),
            (2, batch2),
            (3, vec![rec(base + 20, "after restart", "cart")]),
        ],
    );
    assert_eq!(
        store.search(&t, &search(&store, "")).unwrap().hits.len(),
        12
    );
    // Another tenant sees nothing.
    assert!(
        store
            .search(&TenantId::parse("other").unwrap(), &search(&store, ""))
            .unwrap()
            .hits
            .is_empty()
    );
}

#[test]
fn bad_queries_fail_even_without_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(
        &DataDir::open(dir.path()).unwrap(),
        LogStoreOptions::default(),
    )
    .unwrap();
    let t = TenantId::default_tenant();
    // A NUL in a JSON field path once tripped an assertion in tantivy.
    for q in [
        "AND (",
        "body:/[/",
        "attributes.http.s\0\0tatus:500",
        "a\u{1}b",
    ] {
        assert!(store.search(&t, &search(&store, q)).is_err(), "{q}");
    }
    assert!(
        store
            .search(&t, &search(&store, "fine"))
            .unwrap()
            .hits
            .is_empty()
    );
}

#[test]
fn retention_deletes_whole_old_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let opts = LogStoreOptions {
        retention: Duration::from_secs(3 * 3600),
        ..Default::default()
    };
    let store = LogStore::open(&data, opts).unwrap();
    let n = now();
    index(
        &store,
        vec![(
            1,
            vec![rec(n - 2 * HOUR_NS, "old", "a"), rec(n, "new", "a")],
        )],
    );
    assert_eq!(store.apply_retention(n + 2 * HOUR_NS).unwrap(), 1);
    let t = TenantId::default_tenant();
    let mut s = search(&store, "");
    s.start_ns = n - 5 * HOUR_NS;
    let hits = store.search(&t, &s).unwrap().hits;
    assert_eq!(
        hits.iter().map(|h| h.body.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    assert_eq!(std::fs::read_dir(data.logs_dir(&t)).unwrap().count(), 1);
}

#[test]
fn newest_first_over_many_segments_pages_every_match_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    let base = now() - 1_800_000_000_000;
    // (ts, lsn, index in batch, body): seq orders equal timestamps by lsn, then index.
    let mut expected: Vec<(i64, u64, usize, String)> = Vec::new();
    let mut lsn = 0;
    let mut add = |store: &Arc<LogStore>, ts: &mut dyn Iterator<Item = i64>| {
        lsn += 1;
        let records: Vec<LogRecord> = ts
            .enumerate()
            .map(|(i, t)| {
                let parity = if i % 2 == 0 { "even" } else { "odd" };
                let body = format!("record {lsn}-{i} {parity}");
                expected.push((t, lsn, i, body.clone()));
                rec(t, &body, "svc")
            })
            .collect();
        // Each call ends with a commit, so each batch is a segment of its own.
        index(store, vec![(lsn, records)]);
    };
    // Interleaved segments: none can be skipped.
    for k in 0..4 {
        add(&store, &mut (0..30).map(|i| base + i * 1_000 + k * 7));
    }
    // Older segments, skipped once a page is full of newer hits.
    for k in 0..3 {
        add(
            &store,
            &mut (0..20).map(|i| base - 600_000_000_000 - k * 100_000 - i),
        );
    }
    // Equal timestamps in two segments.
    add(&store, &mut std::iter::repeat_n(base + 15_000, 5));
    add(&store, &mut std::iter::repeat_n(base + 15_000, 5));
    expected.sort_by_key(|e| std::cmp::Reverse((e.0, e.1, e.2)));
    let segments: usize = store
        .partitions_in(&TenantId::default_tenant(), base - 3_600_000_000_000, base)
        .iter()
        .map(|p| p.reader.searcher().segment_readers().len())
        .sum();
    assert!(segments >= 9, "{segments} segments");

    for (query, limit) in [("", 7), ("", 1), ("even", 4), ("odd", 100)] {
        let want: Vec<(i64, String)> = expected
            .iter()
            .filter(|e| query.is_empty() || e.3.ends_with(query))
            .map(|e| (e.0, e.3.clone()))
            .collect();
        let mut got = Vec::new();
        let mut s = LogSearch {
            limit,
            ..search(&store, query)
        };
        loop {
            let page = store.search(&TenantId::default_tenant(), &s).unwrap();
            assert!(page.hits.len() <= limit);
            got.extend(page.hits.into_iter().map(|h| (h.timestamp_ns, h.body)));
            match page.next_cursor {
                Some(c) => s.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, want, "query {query:?}, limit {limit}");
    }
}

#[test]
fn cursor_older_than_start_is_an_empty_page_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    let t = now();
    index(&store, vec![(1, vec![rec(t, "one", "svc")])]);
    let s = LogSearch {
        cursor: Some(Cursor::parse("0.0").unwrap()),
        ..search(&store, "")
    };
    let page = store.search(&TenantId::default_tenant(), &s).unwrap();
    assert!(page.hits.is_empty());
}

#[test]
fn extreme_histogram_range_counts_the_record_not_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    index(&store, vec![(1, vec![rec(now(), "one", "svc")])]);
    let (start_ns, end_ns) = (-9_200_000_000_000_000_000, 9_200_000_000_000_000_000);
    let h = HistogramRequest {
        search: LogSearch {
            start_ns,
            end_ns,
            ..search(&store, "")
        },
        step_ns: 200_000_000_000_000_000,
    };
    let buckets = store.histogram(&TenantId::default_tenant(), &h).unwrap();
    assert_eq!(buckets.len(), 93);
    assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 1);
    assert_eq!(buckets[0].0, start_ns);
}

#[test]
fn nested_log_query_is_refused_by_the_store_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    for (q, ok) in [
        (format!("{}a{}", "(".repeat(100), ")".repeat(100)), true),
        (format!("{}a{}", "(".repeat(3000), ")".repeat(3000)), false),
        (format!("{}a", "NOT ".repeat(3000)), false),
    ] {
        assert_eq!(
            crate::log_query_depth(&q).unwrap() > MAX_LOG_QUERY_DEPTH,
            !ok
        );
        let r = store.search(&TenantId::default_tenant(), &search(&store, &q));
        assert_eq!(r.is_ok(), ok, "{}", &q[..20]);
    }
}

#[test]
fn searches_stop_at_their_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    index(&store, vec![(1, vec![rec(now(), "one", "svc")])]);
    let deadline = crate::Deadline::none();
    deadline.cancel();
    let s = LogSearch {
        deadline: deadline.clone(),
        ..search(&store, "one")
    };
    let t = TenantId::default_tenant();
    assert!(matches!(store.search(&t, &s), Err(StoreError::Cancelled)));
    let h = HistogramRequest {
        search: s,
        step_ns: 1_000_000_000_000,
    };
    assert!(matches!(
        store.histogram(&t, &h),
        Err(StoreError::Cancelled)
    ));
    assert!(matches!(
        store.services_within(&t, 0, i64::MAX, &deadline),
        Err(StoreError::Cancelled)
    ));
}
