//! Committed data dirs that the current code must still open, WAL replay
//! and log search included:
//!
//! - `golden/v1` and `golden/v2`: written by log partition format 1 and 2,
//!   in data dir format 1 (tenants beside `periscope.json`). Their tenant
//!   directories move under `tenants/` on open; version 1 partitions (FST
//!   term dictionaries) are rebuilt.
//! - `golden/data2`: the current data dir format (2) and partition format (2).
//!
//! Regenerate the current fixture (only with a format version bump, into a
//! new directory) with
//! `PERISCOPE_REGENERATE_GOLDEN=1 cargo test -p periscope-store --test golden`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use periscope_proto::{LogRecord, Signal};
use periscope_store::{
    DATA_FORMAT_VERSION, DataDir, IndexBatch, LogIndexer, LogSearch, LogStore, LogStoreOptions,
    TenantId, Wal, WalEntry, WalOptions,
};

/// 2026-01-01T00:00:00Z
const BASE_NS: i64 = 1_767_225_600_000_000_000;

/// The partition format version the current code writes.
const CURRENT: u32 = 2;
/// The fixture of the current formats (data dir and partition).
const CURRENT_FIXTURE: &str = "data2";
/// The fixture's only partition, relative to the data dir once opened.
const PARTITION: &str = "tenants/acme/logs/2026-01-01T00";

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}"))
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

/// A copy of fixture `name` in a temporary directory.
fn fixture(name: &str) -> tempfile::TempDir {
    if name == CURRENT_FIXTURE && std::env::var_os("PERISCOPE_REGENERATE_GOLDEN").is_some() {
        regenerate(&golden_dir(CURRENT_FIXTURE));
    }
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(name), tmp.path());
    tmp
}

fn data_format(data: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("periscope.json")).unwrap()).unwrap();
    v["format_version"].as_u64().unwrap()
}

fn partition_version(partition: &Path) -> u64 {
    let meta = std::fs::read(partition.join("partition.json")).unwrap();
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
    assert_eq!(partition_version(&dir.join(PARTITION)), u64::from(CURRENT));

    let wal = Wal::<()>::open(&data.wal_dir(), WalOptions::default(), 2).unwrap();
    let mut entries = Vec::new();
    wal.replay(|r| {
        entries.push((r.lsn, r.entry.signal, r.entry.body));
        Ok::<_, periscope_store::StoreError>(())
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
    let mut names: Vec<String> = std::fs::read_dir(data.join("tenants/acme/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn golden_current_data_dir_still_opens() {
    let tmp = fixture(CURRENT_FIXTURE);
    assert_eq!(data_format(tmp.path()), u64::from(DATA_FORMAT_VERSION));
    check_fixture(tmp.path());
}

#[test]
fn golden_v1_partitions_are_rebuilt_on_open() {
    let tmp = fixture("v1");
    assert_eq!(
        partition_version(&tmp.path().join("acme/logs/2026-01-01T00")),
        1
    );
    check_fixture(tmp.path());
    assert_eq!(logs_dir_entries(tmp.path()), ["2026-01-01T00"]);
    // Opened again: nothing left to rebuild.
    check_fixture(tmp.path());
}

#[test]
fn golden_format_1_data_dirs_move_their_tenants_under_tenants() {
    for name in ["v1", "v2"] {
        let tmp = fixture(name);
        let root = tmp.path();
        assert_eq!(data_format(root), 1, "{name}");
        check_fixture(root);
        assert_eq!(data_format(root), u64::from(DATA_FORMAT_VERSION), "{name}");
        assert!(!root.join("acme").exists(), "{name}: acme left in the root");
        let mut top: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["periscope.json", "periscope.lock", "tenants", "wal"],
            "{name}"
        );
        // Opened again: already format 2, nothing moves.
        check_fixture(root);
    }
}

#[test]
fn a_rebuild_interrupted_before_the_swap_starts_again() {
    let tmp = fixture("v1");
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
    let tmp = fixture(CURRENT_FIXTURE);
    let logs = tmp.path().join("tenants/acme/logs");
    // A crash after the new partition took its place, before the old one was deleted.
    copy_dir(
        &golden_dir("v1").join("acme/logs/2026-01-01T00"),
        &logs.join("2026-01-01T00.v1-old"),
    );
    check_fixture(tmp.path());
    assert_eq!(logs_dir_entries(tmp.path()), ["2026-01-01T00"]);
}
