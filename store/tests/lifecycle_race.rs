//! Queries racing compaction and retention: a writer keeps publishing small
//! file sets (so compaction keeps merging them) into a recent hour and into
//! an old one (so retention keeps dropping), while queries over the recent
//! hour run in a loop. Every query must see every trace and every sample
//! published before it started exactly once: not missed because a merge
//! deleted the files it had listed, not twice because it saw both a merge's
//! inputs and its output.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use periscope_proto::{
    Labels, PromBatch, PromSample, SampleValue, Span, SpanKind, SpanResource, StatusCode,
    normalize_labels,
};
use periscope_store::{
    DataDir, FlushBatch, Fragment, MetricStore, MetricStoreOptions, TenantFlush, TenantId,
    TraceQuery, TraceStore, TraceStoreOptions,
};

/// How long each race runs.
const RUN_FOR: Duration = Duration::from_secs(3);
const HOUR_NS: i64 = 3_600_000_000_000;
/// 2026-01-01T10:00:00Z, the recent hour the queries read.
const RECENT_NS: i64 = 1_767_225_600_000_000_000 + 10 * HOUR_NS;
/// An hour long past retention, which the writer keeps writing into.
const OLD_NS: i64 = RECENT_NS - 48 * HOUR_NS;

/// Sets the flag when dropped, also when a check panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn trace_id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&n.to_le_bytes());
    id
}

fn span(trace: u64, id: u8, start_ns: i64) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: [id; 8],
        parent_span_id: (id > 1).then_some([1; 8]),
        trace_state: String::new(),
        flags: 0,
        name: format!("op{id}"),
        kind: SpanKind::Server,
        start_ns,
        end_ns: start_ns + 1_000,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        attributes: vec![],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        resource: Arc::new(SpanResource {
            service: "web".into(),
            attributes: vec![],
        }),
        scope_name: String::new(),
        scope_version: String::new(),
    }
}

/// A flush of traces `first..first + n` (two spans each) into `hour_ns`.
fn trace_batch(tenant: &TenantId, first: u64, n: u64, hour_ns: i64, lsn: u64) -> FlushBatch {
    let mut b = FlushBatch {
        max_lsn: lsn,
        durable_lsn: lsn,
        ..Default::default()
    };
    let fragments = (first..first + n)
        .map(|t| {
            let start = hour_ns + (t as i64 % 3_000) * 1_000_000;
            Fragment {
                spans: Arc::new(vec![span(t, 1, start), span(t, 2, start + 10)]),
                truncated: false,
            }
        })
        .collect();
    b.tenants.insert(
        tenant.clone(),
        TenantFlush {
            fragments,
            ..Default::default()
        },
    );
    b
}

#[test]
fn trace_queries_racing_compaction_and_retention_see_every_trace_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let t = TenantId::default_tenant();
    let store = TraceStore::open(
        &data,
        TraceStoreOptions {
            retention: Duration::from_secs(24 * 3600),
            compact_min_files: 4,
            ..Default::default()
        },
    )
    .unwrap();
    const PER_SET: u64 = 200;
    // Traces 0..published (of the recent hour) are listed; those at or
    // above `appending` are not yet.
    let published = AtomicU64::new(0);
    let appending = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let now_ns = RECENT_NS + HOUR_NS / 2;
    let (mut queries, mut merges, mut dropped) = (0, 0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut lsn = 0;
            let mut old = 1 << 40;
            while !stop.load(Ordering::SeqCst) {
                lsn += 1;
                let first = published.load(Ordering::SeqCst);
                appending.store(first + PER_SET, Ordering::SeqCst);
                store
                    .write(trace_batch(&t, first, PER_SET, RECENT_NS, lsn))
                    .unwrap();
                published.store(first + PER_SET, Ordering::SeqCst);
                lsn += 1;
                store.write(trace_batch(&t, old, 1, OLD_NS, lsn)).unwrap();
                old += 1;
            }
        });
        let maintenance = s.spawn(|| {
            let (mut merges, mut dropped) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                merges += store.compact().unwrap();
                dropped += store.apply_retention(now_ns).unwrap();
            }
            (merges, dropped)
        });
        // A failed check stops the other threads too.
        let _stop = StopOnDrop(&stop);
        let started = Instant::now();
        while started.elapsed() < RUN_FOR {
            let before = published.load(Ordering::SeqCst);
            let q = TraceQuery {
                start_ns: RECENT_NS,
                end_ns: RECENT_NS + HOUR_NS - 1,
                limit: 1_000_000,
                ..Default::default()
            };
            let found = store.search(&t, &q, None).unwrap();
            let after = appending.load(Ordering::SeqCst);
            let ids: HashSet<[u8; 16]> = found.iter().map(|s| s.trace_id).collect();
            assert_eq!(ids.len(), found.len(), "a trace listed twice");
            for n in 0..before {
                assert!(
                    ids.contains(&trace_id(n)),
                    "query {queries} missed trace {n}"
                );
            }
            assert!(found.len() as u64 <= after, "a trace never written");
            for summary in &found {
                assert_eq!(
                    summary.span_count, 2,
                    "query {queries}: spans seen twice or missed"
                );
            }
            // Trace by id, of a trace published before the query.
            if before > 0 {
                let n = (queries as u64 * 7919) % before;
                let spans = store.trace(&t, &trace_id(n)).unwrap();
                assert_eq!(spans.len(), 2, "query {queries}: trace {n} by id");
            }
            queries += 1;
        }
        stop.store(true, Ordering::SeqCst);
        (merges, dropped) = maintenance.join().unwrap();
    });
    assert!(queries > 0);
    assert!(merges > 0, "compaction ran");
    assert!(dropped > 0, "retention ran");
}

fn series(job: &str) -> Labels {
    normalize_labels(vec![
        ("__name__".into(), "up".into()),
        ("job".into(), job.into()),
    ])
}

#[test]
fn metric_queries_racing_compaction_and_retention_see_every_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let t = TenantId::default_tenant();
    let store = MetricStore::open(
        &data,
        MetricStoreOptions {
            retention: Duration::from_secs(24 * 3600),
        },
    )
    .unwrap();
    let recent_ms = RECENT_NS / 1_000_000;
    let old_ms = OLD_NS / 1_000_000;
    let now_ms = recent_ms + 1_800_000;
    const JOBS: [&str; 16] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
    ];
    /// Samples per job and flush.
    const PER_FLUSH: i64 = 2_000;
    // Samples at 0..published ms past the recent hour's start, per job, are
    // in files or the head; those at or above `appending` are not yet.
    let published = AtomicU64::new(0);
    let appending = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut queries = 0;
    let mut merges = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut lsn = 0;
            let mut old = 0;
            while !stop.load(Ordering::SeqCst) {
                lsn += 1;
                let first = published.load(Ordering::SeqCst) as i64;
                let mut samples: Vec<PromSample> = (first..first + PER_FLUSH)
                    .flat_map(|ts| {
                        JOBS.map(|job| PromSample {
                            labels: series(job),
                            timestamp_ms: recent_ms + ts,
                            value: SampleValue::Float(ts as f64),
                        })
                    })
                    .collect();
                samples.push(PromSample {
                    labels: series("old"),
                    timestamp_ms: old_ms + old,
                    value: SampleValue::Float(0.0),
                });
                old += 1;
                appending.store(first as u64 + PER_FLUSH as u64, Ordering::SeqCst);
                store.append_at(
                    &t,
                    PromBatch {
                        samples,
                        ..Default::default()
                    },
                    lsn,
                );
                published.store(first as u64 + PER_FLUSH as u64, Ordering::SeqCst);
                store.flush().unwrap();
            }
        });
        let maintenance = s.spawn(|| {
            let mut merges = 0;
            while !stop.load(Ordering::SeqCst) {
                merges += store.compact(now_ms).unwrap();
                store.apply_retention(now_ms);
            }
            merges
        });
        // A failed check stops the other threads too.
        let _stop = StopOnDrop(&stop);
        let started = Instant::now();
        while started.elapsed() < RUN_FOR {
            let before = published.load(Ordering::SeqCst) as i64;
            let got = store.select(&t, None, &|_| true, recent_ms, recent_ms + 3_599_999);
            let after = appending.load(Ordering::SeqCst) as i64;
            let mut by_job: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for (labels, samples) in got {
                let job = labels
                    .iter()
                    .find(|(k, _)| k == "job")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                assert!(
                    by_job.insert(job.clone(), Vec::new()).is_none(),
                    "series {job} twice"
                );
                let seen = by_job.get_mut(&job).unwrap();
                for (ts, v) in samples {
                    assert_eq!(v, SampleValue::Float((ts - recent_ms) as f64));
                    seen.push(ts - recent_ms);
                }
            }
            for job in JOBS {
                let seen = by_job.get(job).map(Vec::as_slice).unwrap_or(&[]);
                // Exactly once each, in order: a prefix of 0..after that
                // holds at least 0..before.
                assert!(
                    seen.len() as i64 >= before,
                    "query {queries} missed samples of {job}"
                );
                assert!(
                    seen.len() as i64 <= after,
                    "query {queries}: samples of {job} twice"
                );
                assert!(
                    seen.iter().enumerate().all(|(i, ts)| *ts == i as i64),
                    "query {queries}: samples of {job} missed or repeated"
                );
            }
            assert!(!by_job.contains_key("old"));
            queries += 1;
        }
        stop.store(true, Ordering::SeqCst);
        merges = maintenance.join().unwrap();
    });
    assert!(queries > 0);
    assert!(merges > 0, "compaction ran");
}
