//! The indexing thread: applies WAL entries to partition writers in LSN order
//! and commits them periodically with the covered WAL position as payload.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use periscope_proto::LogRecord;
use tantivy::IndexWriter;

use super::schema::to_document;
use super::{LogStore, Partition, hour_partition};
use crate::{StoreError, TenantId};

/// Records of one WAL entry, to index. Sent through a bounded channel, so a
/// slow indexer backs pressure up to the WAL writer and the receivers.
pub struct IndexBatch {
    /// The WAL position of the entry.
    pub lsn: u64,
    /// Whose records.
    pub tenant: TenantId,
    /// The flattened records.
    pub records: Vec<LogRecord>,
    /// Dropped once the records are handed to tantivy (releases the
    /// receiver's in-flight memory permit).
    pub hold: Box<dyn Send>,
    /// When the entry was acknowledged, for the index-lag metric.
    pub acked_at: Instant,
}

/// Indexing counters for self-metrics.
#[derive(Debug, Default)]
pub struct IndexStats {
    /// Records handed to tantivy.
    pub indexed_records: AtomicU64,
    /// Records skipped during replay because a commit already held them.
    pub replay_skipped_records: AtomicU64,
    /// Successful commit rounds.
    pub commits: AtomicU64,
    /// Acknowledgement-to-searchable delay of the oldest record of the last commit, in nanoseconds.
    pub last_lag_nanos: AtomicU64,
    /// Open partition writers.
    pub open_writers: AtomicU64,
    /// Failed commits.
    pub commit_errors: AtomicU64,
}

struct OpenWriter {
    partition: Arc<Partition>,
    writer: IndexWriter,
    dirty: bool,
    last_used: Instant,
}

/// Writers idle this long are committed and closed to free their memory.
const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// At most this many partition writers are open at once (late or early
/// records open older or newer hours).
const MAX_OPEN_WRITERS: usize = 4;

/// Owns the partition writers. Runs on its own thread: tantivy work never
/// runs on the async runtime.
pub struct LogIndexer {
    store: Arc<LogStore>,
    writers: HashMap<(TenantId, i64), OpenWriter>,
    applied_lsn: u64,
    oldest_uncommitted: Option<Instant>,
    on_commit: Box<dyn FnMut(u64) + Send>,
}

impl LogIndexer {
    /// Starts the indexing thread. It stops, after a final commit, when every
    /// sender of `rx` is dropped. `on_commit` gets the WAL position each
    /// commit round made durable (to release WAL segments).
    pub fn spawn(
        store: Arc<LogStore>,
        rx: Receiver<IndexBatch>,
        on_commit: impl FnMut(u64) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let mut me = LogIndexer {
            store,
            writers: HashMap::new(),
            applied_lsn: 0,
            oldest_uncommitted: None,
            on_commit: Box::new(on_commit),
        };
        std::thread::Builder::new()
            .name("log-indexer".into())
            .spawn(move || me.run(rx))
    }

    fn run(&mut self, rx: Receiver<IndexBatch>) {
        let interval = self.store.opts.commit_interval;
        let mut next_commit = Instant::now() + interval;
        loop {
            let wait = next_commit.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(batch) => {
                    if let Err(e) = self.apply(batch) {
                        tracing::error!(error = %e, "failed to index log batch");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_commit {
                self.commit_round();
                next_commit = Instant::now() + interval;
            }
        }
        self.commit_round();
        // Everything is committed: merges still running are not waited for
        // (they are redone after the next start; waiting for a large one
        // could take longer than a shutdown may).
        self.writers.clear();
    }

    fn apply(&mut self, batch: IndexBatch) -> Result<(), StoreError> {
        if !self.store.opts.test_apply_delay.is_zero() {
            std::thread::sleep(self.store.opts.test_apply_delay);
        }
        let cutoff = self.store.retention_cutoff(periscope_proto::unix_now_ns());
        let IndexBatch {
            lsn,
            tenant,
            records,
            hold,
            acked_at,
        } = batch;
        let mut indexed = 0u64;
        let mut skipped = 0u64;
        for (i, r) in records.into_iter().enumerate() {
            if r.timestamp_ns < cutoff {
                // Out of retention (only possible on replay of an old WAL).
                skipped += 1;
                continue;
            }
            let hour = hour_partition(r.timestamp_ns);
            let w = self.writer(&tenant, hour)?;
            if w.partition.committed_lsn.load(Ordering::SeqCst) >= lsn {
                skipped += 1;
                continue;
            }
            // Unique per tenant and stable across replays: orders equal timestamps.
            let seq = (lsn << 24) | (i as u64 & 0xff_ffff);
            w.writer
                .add_document(to_document(&w.partition.fields, r, seq))
                .map_err(StoreError::index("failed to add document"))?;
            w.dirty = true;
            indexed += 1;
        }
        drop(hold);
        self.applied_lsn = self.applied_lsn.max(lsn);
        if indexed > 0 {
            self.oldest_uncommitted.get_or_insert(acked_at);
        }
        self.store
            .stats
            .indexed_records
            .fetch_add(indexed, Ordering::Relaxed);
        self.store
            .stats
            .replay_skipped_records
            .fetch_add(skipped, Ordering::Relaxed);
        Ok(())
    }

    fn writer(&mut self, tenant: &TenantId, hour: i64) -> Result<&mut OpenWriter, StoreError> {
        let key = (tenant.clone(), hour);
        if !self.writers.contains_key(&key) {
            if self.writers.len() >= MAX_OPEN_WRITERS {
                self.close_least_recently_used();
            }
            let partition = self.store.get_or_create(tenant, hour)?;
            let writer = partition
                .index
                .writer_with_num_threads(
                    self.store.opts.writer_threads,
                    self.store.opts.writer_memory_bytes,
                )
                .map_err(StoreError::index(format!(
                    "failed to open writer for {}",
                    partition.dir.display()
                )))?;
            writer.set_merge_policy(Box::new(merge_policy()));
            self.writers.insert(
                key.clone(),
                OpenWriter {
                    partition,
                    writer,
                    dirty: false,
                    last_used: Instant::now(),
                },
            );
            self.store
                .stats
                .open_writers
                .store(self.writers.len() as u64, Ordering::Relaxed);
        }
        let w = self
            .writers
            .get_mut(&key)
            .ok_or_else(|| StoreError::InvalidArgument("writer vanished".into()))?;
        w.last_used = Instant::now();
        Ok(w)
    }

    fn close_least_recently_used(&mut self) {
        // Commit first so the closed writer's records are durable with the current position.
        self.commit_round();
        let lru = self
            .writers
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(k, _)| k.clone());
        if let Some(w) = lru.and_then(|k| self.writers.remove(&k)) {
            let _ = w.writer.wait_merging_threads();
        }
    }

    /// Commits every dirty writer with the applied WAL position as payload,
    /// then makes the new documents visible to searches.
    fn commit_round(&mut self) {
        let lsn = self.applied_lsn;
        let payload = super::commit_payload(lsn);
        let mut ok = true;
        for w in self.writers.values_mut().filter(|w| w.dirty) {
            let res = w.writer.prepare_commit().and_then(|mut c| {
                c.set_payload(&payload);
                c.commit()
            });
            match res {
                Ok(_) => {
                    w.dirty = false;
                    w.partition.committed_lsn.store(lsn, Ordering::SeqCst);
                    if let Err(e) = w.partition.reader.reload() {
                        tracing::warn!(error = %e, "failed to reload index reader");
                    }
                }
                Err(e) => {
                    ok = false;
                    self.store
                        .stats
                        .commit_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, partition = %w.partition.dir.display(), "log index commit failed");
                }
            }
        }
        if !ok {
            return;
        }
        if let Some(t) = self.oldest_uncommitted.take() {
            self.store
                .stats
                .last_lag_nanos
                .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        self.store.stats.commits.fetch_add(1, Ordering::Relaxed);
        // Close writers idle for a while to give their memory back.
        let idle: Vec<_> = self
            .writers
            .iter()
            .filter(|(_, w)| w.last_used.elapsed() > IDLE_CLOSE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            if let Some(w) = self.writers.remove(&k) {
                let _ = w.writer.wait_merging_threads();
            }
        }
        self.store
            .stats
            .open_writers
            .store(self.writers.len() as u64, Ordering::Relaxed);
        (self.on_commit)(lsn);
    }
}

/// Segments of at least this many documents are not merged again.
const MERGED_SEGMENT_DOCS: usize = 500_000;

/// Segments are merged 16 at a time (tantivy's default is 8): with a commit
/// a second, each record is rewritten by fewer merge levels. Merged segments
/// stop growing at [`MERGED_SEGMENT_DOCS`]: at high rates (a commit's segment
/// holds tens of thousands of records) a record is rewritten once, not twice
/// on its way to tantivy's default of 10 M documents, at the price of more
/// segments for a search to visit (about 20 per 10 M records).
fn merge_policy() -> tantivy::merge_policy::LogMergePolicy {
    let mut p = tantivy::merge_policy::LogMergePolicy::default();
    p.set_min_num_segments(16);
    p.set_max_docs_before_merge(MERGED_SEGMENT_DOCS);
    p
}
