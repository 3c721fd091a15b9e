use std::path::Path;
use std::sync::mpsc;

use super::*;
use crate::TenantId;

fn entry(signal: Signal, body: &[u8]) -> WalEntry {
    WalEntry {
        signal,
        format: Default::default(),
        tenant: TenantId::parse("t1").unwrap(),
        body: body.to_vec(),
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 200,
        queue_capacity: 4,
    }
}

/// Appends and waits for every acknowledgement; returns the LSNs.
fn append_all(wal: &Wal<()>, entries: &[WalEntry]) -> Vec<u64> {
    let (tx, rx) = mpsc::channel();
    for e in entries {
        let tx = tx.clone();
        wal.append(
            e.encode(),
            (),
            Box::new(move |r| tx.send(r.unwrap()).unwrap()),
        )
        .unwrap();
    }
    drop(tx);
    rx.iter().collect()
}

/// The path of the single segment in a WAL directory.
fn only_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(segs.len(), 1, "expected one segment: {segs:?}");
    segs.remove(0)
}

fn replay_all(wal: &Wal<()>) -> Vec<WalRecord> {
    let mut out = Vec::new();
    wal.replay(|r| {
        out.push(r);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    out
}

#[test]
fn appended_entries_replay_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<WalEntry> = (0..20u8).map(|i| entry(Signal::Logs, &[i; 50])).collect();
    let (stx, srx) = mpsc::channel();
    {
        let wal = Wal::<()>::open(dir.path(), small(), 0).unwrap();
        wal.start(move |lsn, _, ()| stx.send(lsn).unwrap()).unwrap();
        let lsns = append_all(&wal, &entries);
        assert_eq!(lsns, (1..=20).collect::<Vec<_>>());
        wal.close();
    }
    assert_eq!(
        srx.iter().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>(),
        "sink sees every lsn in order"
    );
    let wal = Wal::<()>::open(dir.path(), small(), 0).unwrap();
    assert!(wal.stats().segments.load(Ordering::Relaxed) > 1);
    let got = replay_all(&wal);
    assert_eq!(
        got.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        entries
    );
    assert_eq!(wal.next_lsn(), 21);
}

#[test]
fn torn_tail_is_truncated_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::<()>::open(dir.path(), WalOptions::default(), 0).unwrap();
        wal.start(|_, _, ()| {}).unwrap();
        append_all(
            &wal,
            &[
                entry(Signal::Logs, b"one"),
                entry(Signal::Traces, b"two"),
                entry(Signal::Logs, b"three"),
            ],
        );
        wal.close();
    }
    let seg = only_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last frame in half.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let wal = Wal::<()>::open(dir.path(), WalOptions::default(), 0).unwrap();
    let got = replay_all(&wal);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].entry.body, b"two");
    assert_eq!(wal.next_lsn(), 3);
    // Appends continue after the cut and replay cleanly.
    wal.start(|_, _, ()| {}).unwrap();
    assert_eq!(append_all(&wal, &[entry(Signal::Logs, b"four")]), vec![3]);
    wal.close();
    drop(wal);
    let wal = Wal::<()>::open(dir.path(), WalOptions::default(), 0).unwrap();
    let bodies: Vec<Vec<u8>> = replay_all(&wal).into_iter().map(|r| r.entry.body).collect();
    assert_eq!(
        bodies,
        vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]
    );
}

#[test]
fn corrupt_byte_mid_segment_cuts_from_there() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::<()>::open(dir.path(), WalOptions::default(), 0).unwrap();
        wal.start(|_, _, ()| {}).unwrap();
        append_all(
            &wal,
            &[
                entry(Signal::Logs, b"aaaa"),
                entry(Signal::Logs, b"bbbb"),
                entry(Signal::Logs, b"cccc"),
            ],
        );
        wal.close();
    }
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let wal = Wal::<()>::open(dir.path(), WalOptions::default(), 0).unwrap();
    assert_eq!(replay_all(&wal).len(), 2);
}

#[test]
fn segments_are_deleted_only_when_every_signal_in_them_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::<()>::open(dir.path(), small(), 0).unwrap();
    wal.start(|_, _, ()| {}).unwrap();
    let mut entries: Vec<WalEntry> = (0..10u8).map(|i| entry(Signal::Logs, &[i; 80])).collect();
    entries.push(entry(Signal::Metrics, &[9; 80]));
    entries.extend((0..10u8).map(|i| entry(Signal::Logs, &[i; 80])));
    // One at a time: a group commit of everything at once would fill a
    // single segment, and segments roll only between groups.
    for e in &entries {
        append_all(&wal, std::slice::from_ref(e));
    }
    let before = wal.stats().segments.load(Ordering::Relaxed);
    wal.release(Signal::Logs, 21);
    let after = wal.stats().segments.load(Ordering::Relaxed);
    assert!(
        after < before,
        "log-only segments deleted ({before} -> {after})"
    );
    wal.close();
    drop(wal);
    let wal = Wal::<()>::open(dir.path(), small(), 0).unwrap();
    let got = replay_all(&wal);
    assert!(
        got.iter().any(|r| r.entry.signal == Signal::Metrics),
        "metrics stay until their store is durable"
    );
    assert_eq!(wal.next_lsn(), 22, "lsns never go back after deletion");
}

#[test]
fn lsns_stay_above_what_stores_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::<()>::open(dir.path(), small(), 500).unwrap();
    wal.start(|_, _, ()| {}).unwrap();
    assert_eq!(append_all(&wal, &[entry(Signal::Logs, b"x")]), vec![500]);
}

#[test]
fn body_format_survives_a_round_trip_and_old_entries_read_as_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let mut rw = entry(Signal::Metrics, b"remote write");
    rw.format = BodyFormat::PromRemoteWrite;
    let plain = entry(Signal::Metrics, b"otlp");
    {
        let wal: Wal<()> = Wal::open(dir.path(), small(), 1).unwrap();
        wal.start(|_, _, _| {}).unwrap();
        append_all(&wal, &[rw.clone(), plain.clone()]);
        wal.close();
    }
    let wal: Wal<()> = Wal::open(dir.path(), small(), 1).unwrap();
    let mut got = Vec::new();
    wal.replay(|r| {
        got.push(r.entry);
        Ok::<_, StoreError>(())
    })
    .unwrap();
    assert_eq!(got, vec![rw, plain]);
}

/// An entry of `len` bytes that zstd cannot shrink.
fn incompressible(seed: u64, len: usize) -> WalEntry {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let body: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    entry(Signal::Logs, &body)
}

/// Appends one entry and waits for its outcome.
fn append_one(wal: &Wal<()>, e: &WalEntry) -> Result<u64, StoreError> {
    let (tx, rx) = mpsc::channel();
    wal.append(e.encode(), (), Box::new(move |r| tx.send(r).unwrap()))
        .unwrap();
    rx.recv().unwrap()
}

#[test]
fn disk_full_refuses_retryably_and_appends_resume_when_space_returns() {
    let Some(disk) = crate::test_disk::SmallDisk::mount(8) else {
        return;
    };
    let dir = disk.path().join("wal");
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        queue_capacity: 16,
    };
    let mut acked = Vec::new();
    {
        let wal = Wal::<()>::open(&dir, opts.clone(), 0).unwrap();
        wal.start(|_, _, ()| {}).unwrap();
        for i in 0..3 {
            let e = incompressible(i, 100_000);
            append_one(&wal, &e).unwrap();
            acked.push(e);
        }
        disk.fill();
        for i in 3..6 {
            let err = append_one(&wal, &incompressible(i, 100_000)).unwrap_err();
            assert!(err.is_retryable(), "{err}");
            assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
        }
        assert_eq!(wal.stats().disk_full.load(Ordering::Relaxed), 1);
        assert_eq!(wal.stats().disk_full_refusals.load(Ordering::Relaxed), 3);
        disk.free();
        // Enough to roll over to new segments, which need space as well.
        for i in 6..30 {
            let e = incompressible(i, 100_000);
            let lsn = append_one(&wal, &e).unwrap();
            assert_eq!(lsn, i - 2, "refused entries used no lsn");
            acked.push(e);
        }
        assert_eq!(wal.stats().disk_full.load(Ordering::Relaxed), 0);
        wal.close();
    }
    let wal = Wal::<()>::open(&dir, opts, 0).unwrap();
    let got: Vec<WalEntry> = replay_all(&wal).into_iter().map(|r| r.entry).collect();
    assert!(
        got == acked,
        "replay returns exactly the acknowledged entries"
    );
    drop(wal);
}

#[test]
fn full_disk_while_rolling_segments_keeps_every_acknowledged_entry() {
    let Some(disk) = crate::test_disk::SmallDisk::mount(8) else {
        return;
    };
    let dir = disk.path().join("wal");
    // Every group rolls: new segments are refused along with the appends.
    let opts = WalOptions {
        segment_bytes: 1,
        queue_capacity: 16,
    };
    let mut acked = Vec::new();
    {
        let wal = Wal::<()>::open(&dir, opts.clone(), 0).unwrap();
        wal.start(|_, _, ()| {}).unwrap();
        for i in 0..40u64 {
            if i == 10 {
                disk.fill();
            }
            if i == 25 {
                disk.free();
            }
            let e = incompressible(i, 50_000 + i as usize);
            match append_one(&wal, &e) {
                Ok(_) => acked.push(e),
                Err(err) => assert!(err.is_retryable(), "{err}"),
            }
        }
        assert!(acked.len() >= 25, "appends resumed: {}", acked.len());
        wal.close();
    }
    let wal = Wal::<()>::open(&dir, opts, 0).unwrap();
    let got: Vec<WalEntry> = replay_all(&wal).into_iter().map(|r| r.entry).collect();
    assert!(
        got == acked,
        "replay returns exactly the acknowledged entries"
    );
}

#[test]
fn read_range_returns_one_signal_between_positions() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::<()>::open(dir.path(), small(), 0).unwrap();
    wal.start(|_, _, ()| {}).unwrap();
    for i in 0..12u8 {
        let signal = if i % 3 == 0 {
            Signal::Traces
        } else {
            Signal::Logs
        };
        append_all(&wal, &[entry(signal, &[i; 60])]);
    }
    let mut got = Vec::new();
    wal.read_range(Signal::Logs, 4, 10, |r| {
        got.push(r.lsn);
        Ok(())
    })
    .unwrap();
    // LSN n holds entry n - 1: traces at 1, 4, 7, 10.
    assert_eq!(got, vec![5, 6, 8, 9]);
}
