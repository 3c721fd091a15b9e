//! Indexer tests driven step by step (apply, commit round) rather than
//! through its thread, so they count commits, not time.

use std::sync::mpsc;

use super::*;
use crate::DataDir;
use crate::logs::LogStoreOptions;
use crate::partition::HOUR_NS;
use crate::test_disk::SmallDisk;

fn rec(ts: i64, body: String) -> LogRecord {
    LogRecord {
        timestamp_ns: ts,
        observed_timestamp_ns: ts,
        body,
        service: "svc".into(),
        ..Default::default()
    }
}

fn now() -> i64 {
    periscope_proto::unix_now_ns()
}

fn batch(lsn: u64, records: Vec<LogRecord>) -> IndexBatch {
    IndexBatch {
        lsn,
        tenant: TenantId::default_tenant(),
        records,
        hold: Box::new(()),
        acked_at: Instant::now(),
    }
}

/// `n` records of entry `lsn`, record `i` in hour `i % hours` before now.
fn spread(lsn: u64, n: usize, hours: i64, base: i64) -> Vec<LogRecord> {
    (0..n)
        .map(|i| {
            let ts = base - (i as i64 % hours) * HOUR_NS;
            rec(ts, format!("entry {lsn} record {i} {:x}", mix(lsn, i)))
        })
        .collect()
}

/// Scrambled bits, so bodies do not compress away.
fn mix(lsn: u64, i: usize) -> u64 {
    (lsn << 32 ^ i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
}

/// An indexer driven by hand; the receiver gets each released WAL position.
fn indexer(store: &Arc<LogStore>, reread: Option<LogReread>) -> (LogIndexer, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel();
    let on_commit = Box::new(move |lsn| {
        let _ = tx.send(lsn);
    });
    (LogIndexer::new(store.clone(), on_commit, reread), rx)
}

/// A reread hook serving copies of the given entries, like the WAL would.
fn reread_from(entries: Vec<(u64, Vec<LogRecord>)>) -> LogReread {
    Box::new(move |after, upto, sink| {
        for (lsn, records) in &entries {
            if *lsn > after && *lsn <= upto {
                sink(batch(*lsn, records.clone()));
            }
        }
        Ok(())
    })
}

fn docs(store: &LogStore) -> u64 {
    store
        .partitions_in(&TenantId::default_tenant(), 0, i64::MAX)
        .iter()
        .map(|p| {
            p.reader.reload().unwrap();
            p.reader.searcher().num_docs()
        })
        .sum()
}

fn stat(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

#[test]
fn writer_churn_over_eight_hours_commits_each_partition_once() {
    // One request of 1,200 records over 8 hours once took 1,200 commits.
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    let base = now() - 1_000_000_000;
    let entries: Vec<(u64, Vec<LogRecord>)> = (1..=10)
        .map(|lsn| (lsn, spread(lsn, 120, 8, base)))
        .collect();
    let (mut ix, released) = indexer(&store, None);
    for (lsn, records) in entries.clone() {
        ix.apply(batch(lsn, records));
        assert!(ix.writers.len() <= MAX_OPEN_WRITERS);
    }
    assert!(ix.staged_records > 0, "hours beyond the open writers wait");
    assert_eq!(stat(&store.stats.partition_commits), 0, "no switch commits");
    ix.commit_round();
    assert_eq!(stat(&store.stats.partition_commits), 8, "one per partition");
    assert_eq!(stat(&store.stats.commits), 1);
    assert_eq!(released.try_iter().collect::<Vec<_>>(), vec![10]);
    assert_eq!(docs(&store), 1_200);
    drop(ix);
    drop(store);

    // Every partition's commit covers position 10: replay adds nothing.
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    assert_eq!(store.max_committed_lsn(), 10);
    let (mut ix, _) = indexer(&store, None);
    for (lsn, records) in entries {
        ix.apply(batch(lsn, records));
    }
    ix.commit_round();
    assert_eq!(stat(&store.stats.partition_commits), 0);
    assert_eq!(stat(&store.stats.replay_skipped_records), 1_200);
    assert_eq!(docs(&store), 1_200);
}

#[test]
fn failed_partition_is_rebuilt_from_the_wal_including_later_entries() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    let base = now() - 1_000_000_000;
    let entries: Vec<(u64, Vec<LogRecord>)> =
        (1..=3).map(|lsn| (lsn, spread(lsn, 40, 2, base))).collect();
    let (mut ix, released) = indexer(&store, Some(reread_from(entries.clone())));
    ix.apply(batch(1, entries[0].1.clone()));
    ix.commit_round();
    assert_eq!(released.try_iter().collect::<Vec<_>>(), vec![1]);
    ix.apply(batch(2, entries[1].1.clone()));
    // The writer of the current hour fails: its entry-2 records are lost with it.
    let key = (TenantId::default_tenant(), hour_partition(base));
    ix.writers.remove(&key);
    let e = StoreError::InvalidArgument("simulated writer failure".into());
    ix.mark_broken(key.clone(), 1, &e);
    // Entry 3 arrives meanwhile; the rebuild covers its records of that hour too.
    ix.apply(batch(3, entries[2].1.clone()));
    ix.commit_round();
    assert!(ix.broken.is_empty());
    assert_eq!(stat(&store.stats.rebuilt_partitions), 1);
    assert_eq!(released.try_iter().collect::<Vec<_>>(), vec![3]);
    assert_eq!(docs(&store), 120, "each record exactly once");
}

#[test]
fn failed_partition_without_reread_holds_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    let base = now() - 1_000_000_000;
    let (mut ix, released) = indexer(&store, None);
    ix.apply(batch(1, spread(1, 10, 1, base)));
    let key = (TenantId::default_tenant(), hour_partition(base));
    ix.writers.remove(&key);
    let e = StoreError::InvalidArgument("simulated writer failure".into());
    ix.mark_broken(key, 0, &e);
    ix.commit_round();
    assert_eq!(
        released.try_iter().count(),
        0,
        "the entry stays in the wal for the next start's replay"
    );
    assert_eq!(stat(&store.stats.commits), 0);
}

#[test]
fn index_commit_on_a_full_disk_is_retried_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let data = DataDir::open(disk.path()).unwrap();
    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    let base = now() - 1_000_000_000;
    let entries: Vec<(u64, Vec<LogRecord>)> = (1..=2)
        .map(|lsn| (lsn, spread(lsn, 3_000, 1, base)))
        .collect();
    let (mut ix, released) = indexer(&store, Some(reread_from(entries.clone())));
    ix.apply(batch(1, entries[0].1.clone()));
    ix.commit_round();
    assert_eq!(released.try_iter().collect::<Vec<_>>(), vec![1]);

    ix.apply(batch(2, entries[1].1.clone()));
    disk.fill();
    ix.commit_round();
    assert!(stat(&store.stats.commit_errors) >= 1, "the commit failed");
    assert_eq!(released.try_iter().count(), 0, "nothing released");
    assert_eq!(docs(&store), 3_000, "searches still answer");

    // Still full: the rebuild fails too, and is tried again.
    ix.commit_round();
    assert_eq!(released.try_iter().count(), 0);

    disk.free();
    ix.commit_round();
    assert_eq!(released.try_iter().collect::<Vec<_>>(), vec![2]);
    assert_eq!(docs(&store), 6_000);
    drop(ix);
    drop(store);

    let store = LogStore::open(&data, LogStoreOptions::default()).unwrap();
    assert_eq!(store.max_committed_lsn(), 2);
    assert_eq!(docs(&store), 6_000);
}
