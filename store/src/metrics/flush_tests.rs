//! Flushes that fail for one tenant: the others are written, the failed
//! tenant is retried, and the WAL position stays below what it still needs.

use std::time::Instant;

use periscope_proto::PromBatch;

use super::tests::s;
use super::*;

fn batch(name: &str, ts: i64, v: f64) -> PromBatch {
    PromBatch {
        samples: vec![s(name, "j", ts, v)],
        ..Default::default()
    }
}

fn values(store: &MetricStore, tenant: &TenantId, name: &str) -> Vec<(i64, SampleValue)> {
    store
        .select(tenant, Some(name), &|_| true, 0, i64::MAX)
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect()
}

impl MetricStore {
    /// Ends every tenant's retry backoff (tests do not wait it out).
    fn retry_now(&self) {
        for t in self.tenants.read().unwrap().values() {
            if let Some(r) = t.write().unwrap().retry.as_mut() {
                r.not_before = Instant::now();
            }
        }
    }
}

#[test]
fn a_tenant_whose_directory_cannot_be_written_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
    let (good, bad) = (
        TenantId::parse("good").unwrap(),
        TenantId::parse("bad").unwrap(),
    );
    // As root, permissions do not stop writes: a file where the directory goes does.
    let obstacle = data.metrics_dir(&bad);
    std::fs::create_dir_all(obstacle.parent().unwrap()).unwrap();
    std::fs::write(&obstacle, b"not a directory").unwrap();

    store.append_at(&good, batch("up", 10, 1.0), 1);
    store.append_at(&bad, batch("up", 10, 2.0), 2);
    store.append_at(&good, batch("up", 20, 3.0), 3);
    let report = store.flush_tenants();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, bad);
    assert_eq!(
        report.durable_lsn, 1,
        "held below the failed tenant's entry 2"
    );
    assert_eq!(
        store.durable_lsn(&good),
        3,
        "the good tenant's files cover its entries"
    );
    assert_eq!(store.durable_lsn(&bad), 0);
    assert_eq!(
        values(&store, &bad, "up").len(),
        1,
        "kept in memory, still answered"
    );

    // The age trigger is armed again although samples are left over.
    assert!(store.flush_due(u64::MAX, Duration::ZERO));
    // Waiting out the backoff: not attempted, still held back.
    store.append_at(&good, batch("up", 30, 4.0), 4);
    let report = store.flush_tenants();
    assert_eq!((report.failed.len(), report.deferred), (0, 1));
    assert_eq!(report.durable_lsn, 1);
    assert_eq!(store.durable_lsn(&good), 4);

    // Still failing after the backoff; then the obstacle goes and it is written.
    store.retry_now();
    assert_eq!(store.flush_tenants().failed.len(), 1);
    std::fs::remove_file(&obstacle).unwrap();
    store.retry_now();
    let report = store.flush_tenants();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.durable_lsn, 4);
    assert_eq!(store.durable_lsn(&bad), 4);
    drop(store);
    let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
    assert_eq!(
        values(&store, &bad, "up"),
        vec![(10, SampleValue::Float(2.0))]
    );
    assert_eq!(values(&store, &good, "up").len(), 3);
}

#[test]
fn a_failed_flush_is_retried_by_the_age_trigger_without_new_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
    let bad = TenantId::parse("bad").unwrap();
    let obstacle = data.metrics_dir(&bad);
    std::fs::create_dir_all(obstacle.parent().unwrap()).unwrap();
    std::fs::write(&obstacle, b"x").unwrap();
    store.append_at(&bad, batch("up", 10, 1.0), 1);
    assert!(store.flush().is_err());
    // Before the fix only a million new samples would trigger the next try.
    assert!(store.flush_due(1_000_000, Duration::ZERO));
    // New samples keep it armed too.
    store.append_at(&bad, batch("up", 20, 1.0), 2);
    assert!(store.flush_due(1_000_000, Duration::ZERO));
}
