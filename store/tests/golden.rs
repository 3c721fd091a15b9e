//! The committed data dir in `golden/v1` was written by format version 1; the
//! current code must still open it: WAL replay and log search included.
//! Regenerate (only with a format version bump) with
//! `PERISCOPE_REGENERATE_GOLDEN=1 cargo test -p periscope-store --test golden`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use periscope_proto::{LogRecord, Signal};
use periscope_store::{
    DataDir, IndexBatch, LogIndexer, LogSearch, LogStore, LogStoreOptions, TenantId, Wal, WalEntry,
    WalOptions,
};

/// 2026-01-01T00:00:00Z
const BASE_NS: i64 = 1_767_225_600_000_000_000;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn opts() -> LogStoreOptions {
    // The fixture is old; keep it inside retention.
    LogStoreOptions {
        retention: Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    }
}

fn record(i: i64) -> LogRecord {
    LogRecord {
        timestamp_ns: BASE_NS + i,
        observed_timestamp_ns: BASE_NS + i,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: format!("golden record {i}"),
        service: "golden".into(),
        trace_id: "0102030405060708090a0b0c0d0e0f10".into(),
        span_id: "0102030405060708".into(),
        attributes: serde_json::json!({"n": i})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        resource: serde_json::json!({"service.name": "golden"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        scope: "fixture".into(),
    }
}

fn regenerate(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let data = DataDir::open(dir).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let wal = Wal::<()>::open(&data.wal_dir(), WalOptions::default(), 1).unwrap();
    wal.start(|_, _, ()| {}).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for (signal, body) in [
        (Signal::Logs, b"logs-body".to_vec()),
        (Signal::Traces, b"spans-body".to_vec()),
    ] {
        let tx = tx.clone();
        let e = WalEntry {
            signal,
            format: Default::default(),
            tenant: tenant.clone(),
            body,
        };
        wal.append(
            e.encode(),
            (),
            Box::new(move |r| tx.send(r.unwrap()).unwrap()),
        )
        .unwrap();
    }
    drop(tx);
    assert_eq!(rx.iter().count(), 2);
    wal.close();
    let store = LogStore::open(&data, opts()).unwrap();
    let (itx, irx) = sync_channel(1);
    let h = LogIndexer::spawn(store, irx, |_| {}).unwrap();
    itx.send(IndexBatch {
        lsn: 1,
        tenant,
        records: (0..3).map(record).collect(),
        hold: Box::new(()),
        acked_at: Instant::now(),
    })
    .unwrap();
    drop(itx);
    h.join().unwrap();
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

#[test]
fn golden_v1_data_dir_still_opens() {
    if std::env::var_os("PERISCOPE_REGENERATE_GOLDEN").is_some() {
        regenerate(&golden_dir());
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(), tmp.path());
    let data = DataDir::open(tmp.path()).unwrap();
    let store = LogStore::open(&data, opts()).unwrap();
    assert_eq!(store.max_committed_lsn(), 1);
    let tenant = TenantId::parse("acme").unwrap();
    let s = LogSearch {
        query: "golden AND attributes.n:2".into(),
        start_ns: BASE_NS - 1,
        end_ns: BASE_NS + 1_000,
        limit: 10,
        ..Default::default()
    };
    let hits = store.search(&tenant, &s).unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body, "golden record 2");
    assert_eq!(hits[0].trace_id, "0102030405060708090a0b0c0d0e0f10");

    let wal = Wal::<()>::open(&data.wal_dir(), WalOptions::default(), 2).unwrap();
    let mut entries = Vec::new();
    wal.replay(|r| {
        entries.push((r.lsn, r.entry.signal, r.entry.body));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        entries,
        vec![
            (1, Signal::Logs, b"logs-body".to_vec()),
            (2, Signal::Traces, b"spans-body".to_vec())
        ]
    );
}
