//! Rebuilding a log partition whose writer failed (a full disk): tantivy
//! may have lost any of the records the writer held since its last commit,
//! so the writer is dropped and never commits again; its partition is
//! marked, its new records are ignored, and at the next commit round a fresh
//! writer gets every record of the partition from the entries after its last
//! commit, read back from the WAL through the [`LogReread`](super::LogReread) hook, and commits
//! them. Until that succeeds the round does not release the WAL.

use std::sync::atomic::Ordering;

use super::{IndexBatch, Key, LogIndexer, seq};
use crate::StoreError;
use crate::logs::schema::to_document;
use crate::partition::hour_partition;

impl LogIndexer {
    /// Records that `key` lost its uncommitted records (held since WAL
    /// position `from`): its staged records go too, the rebuild reads
    /// everything after `from` back.
    pub(super) fn mark_broken(&mut self, key: Key, from: u64, e: &StoreError) {
        tracing::error!(error = %e, tenant = %key.0, hour_ns = key.1, from_lsn = from,
            "log partition write failed; it is rebuilt from the wal");
        if let Some(s) = self.staged.remove(&key) {
            self.staged_records -= s.docs.len();
        }
        self.broken
            .entry(key)
            .and_modify(|f| *f = (*f).min(from))
            .or_insert(from);
    }

    /// Rebuilds each failed partition: a fresh writer gets its records of
    /// the entries after its last commit, read back from the WAL, and
    /// commits them at `lsn`. A partition that fails again waits for the
    /// next round.
    pub(super) fn rebuild_broken(&mut self, lsn: u64) {
        if self.broken.is_empty() {
            return;
        }
        let Some(mut reread) = self.reread.take() else {
            return;
        };
        let cutoff = self.store.retention_cutoff(periscope_proto::unix_now_ns());
        let keys: Vec<(Key, u64)> = self.broken.iter().map(|(k, f)| (k.clone(), *f)).collect();
        for (key, from) in keys {
            let partition = match self.store.get_or_create(&key.0, key.1) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "log partition rebuild failed; will retry");
                    continue;
                }
            };
            match self.open_slot(&key, &partition) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "log partition rebuild failed; will retry");
                    continue;
                }
            }
            let Some(w) = self.writers.get_mut(&key) else {
                continue;
            };
            let committed = partition.committed_lsn.load(Ordering::SeqCst);
            let mut added = 0u64;
            let mut add_error = None;
            let read = reread(from, lsn, &mut |b: IndexBatch| {
                if b.tenant != key.0 || b.lsn <= committed || add_error.is_some() {
                    return;
                }
                for (i, r) in b.records.into_iter().enumerate() {
                    if r.timestamp_ns < cutoff || hour_partition(r.timestamp_ns) != key.1 {
                        continue;
                    }
                    let doc = to_document(&w.partition.fields, r, seq(b.lsn, i));
                    if let Err(e) = w.writer.add_document(doc) {
                        add_error = Some(e);
                        return;
                    }
                    added += 1;
                }
            });
            w.dirty |= added > 0;
            let failed = match (read, add_error) {
                (Err(e), _) => Some(e),
                (Ok(()), Some(e)) => Some(StoreError::index("failed to add document")(e)),
                (Ok(()), None) => None,
            };
            if let Some(e) = failed {
                tracing::warn!(error = %e, "log partition rebuild failed; will retry");
                self.writers.remove(&key);
                self.update_writer_gauge();
                continue;
            }
            if added > 0 && !self.commit_writer(&key, lsn) {
                continue;
            }
            self.broken.remove(&key);
            self.store
                .stats
                .indexed_records
                .fetch_add(added, Ordering::Relaxed);
            self.store
                .stats
                .rebuilt_partitions
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(tenant = %key.0, hour_ns = key.1, records = added, "log partition rebuilt from the wal");
        }
        self.reread = Some(reread);
    }
}
