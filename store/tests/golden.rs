//! The committed data dirs in `golden/vN` were written by the log partition
//! format version N; the current code must still open them, WAL replay and
//! log search included. Version 1 partitions (FST term dictionaries) are
//! rebuilt on open. Regenerate the current version's fixture (only with a
//! format version bump, into a new `vN`) with
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

/// The partition format version the current code writes.
const CURRENT: u32 = 2;
/// The fixture's only partition, relative to the data dir.
const PARTITION: &str = "acme/logs/2026-01-01T00";

fn golden_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{version}"))
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

/// A copy of fixture `version` in a temporary directory.
fn fixture(version: u32) -> tempfile::TempDir {
    if version == CURRENT && std::env::var_os("PERISCOPE_REGENERATE_GOLDEN").is_some() {
        regenerate(&golden_dir(CURRENT));
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(version), tmp.path());
    tmp
}

fn partition_version(data: &Path) -> u64 {
    let meta = std::fs::read(data.join(PARTITION).join("partition.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    v["version"].as_u64().unwrap()
}

/// Opens the data dir in `dir` and checks that it holds what `regenerate` wrote.
fn check_fixture(dir: &Path) {
    let data = DataDir::open(dir).unwrap();
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
    assert_eq!(hits[0].timestamp_ns, BASE_NS + 2);
    let all = LogSearch {
        query: "trace_id:0102030405060708090a0b0c0d0e0f10".into(),
        ..s
    };
    let hits = store.search(&tenant, &all).unwrap().hits;
    let bodies: Vec<_> = hits.iter().map(|h| h.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["golden record 2", "golden record 1", "golden record 0"]
    );
    drop(store);
    assert_eq!(partition_version(dir), u64::from(CURRENT));

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

/// The entries of the fixture partition's `logs` directory.
fn logs_dir_entries(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("acme/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn golden_current_data_dir_still_opens() {
    let tmp = fixture(CURRENT);
    check_fixture(tmp.path());
}

#[test]
fn golden_v1_partitions_are_rebuilt_on_open() {
    let tmp = fixture(1);
    assert_eq!(partition_version(tmp.path()), 1);
    check_fixture(tmp.path());
    assert_eq!(logs_dir_entries(tmp.path()), ["2026-01-01T00"]);
    // Opened again: nothing left to rebuild.
    check_fixture(tmp.path());
}

#[test]
fn a_rebuild_interrupted_before_the_swap_starts_again() {
    let tmp = fixture(1);
    let logs = tmp.path().join("acme/logs");
    // A crash after the old partition was moved aside, before the new one
    // took its place: the new one may be incomplete.
    std::fs::rename(
        logs.join("2026-01-01T00"),
        logs.join("2026-01-01T00.v1-old"),
    )
    .unwrap();
    std::fs::create_dir_all(logs.join("2026-01-01T00.migrating")).unwrap();
    std::fs::write(logs.join("2026-01-01T00.migrating/meta.json"), b"{").unwrap();
    check_fixture(tmp.path());
    assert_eq!(logs_dir_entries(tmp.path()), ["2026-01-01T00"]);
}

#[test]
fn a_rebuild_interrupted_after_the_swap_finishes() {
    let tmp = fixture(CURRENT);
    let logs = tmp.path().join("acme/logs");
    // A crash after the new partition took its place, before the old one was deleted.
    copy_dir(
        &golden_dir(1).join(PARTITION),
        &logs.join("2026-01-01T00.v1-old"),
    );
    check_fixture(tmp.path());
    assert_eq!(logs_dir_entries(tmp.path()), ["2026-01-01T00"]);
}
