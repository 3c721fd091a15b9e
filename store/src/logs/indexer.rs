//! The indexing thread: applies WAL entries to partition writers in LSN order
//! and commits them periodically with the covered WAL position as payload.
//!
//! Records of one entry may fall into many (tenant, hour) partitions. They
//! are grouped by partition before they are applied, and at most
//! [`MAX_OPEN_WRITERS`] writers are open: records for a partition whose
//! writer cannot be opened (every open writer holds uncommitted records) are
//! staged in memory and written at the next commit round, one writer at a
//! time. So a partition costs at most one commit per round however its
//! records are spread over the entries, and a round is never forced by a
//! switch (only by [`MAX_STAGED_RECORDS`]).
//!
//! Every partition commit carries the applied WAL position: all records of
//! entries up to it that belong to the partition are in the commit (entries
//! are applied whole, in LSN order, and staged records are written before
//! their partition commits). A writer that fails (a full disk) is dropped,
//! with everything it held since its last commit; its partition is rebuilt
//! from the WAL at the next round through the [`LogReread`] hook. The WAL is
//! released only after a round in which nothing failed or stayed staged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use periscope_proto::LogRecord;
use tantivy::IndexWriter;

use super::schema::to_document;
use super::{LogStore, Partition};
use crate::partition::hour_partition;
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

/// Reads the log entries with `after < lsn <= upto` back from the WAL, in
/// LSN order, and hands each to the sink. Used to rebuild a partition whose
/// writer failed (its uncommitted records are lost with the writer).
pub type LogReread =
    Box<dyn FnMut(u64, u64, &mut dyn FnMut(IndexBatch)) -> Result<(), StoreError> + Send>;

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
    /// Tantivy commits (one per dirty partition per round).
    pub partition_commits: AtomicU64,
    /// Records waiting in memory for a writer of their partition.
    pub staged_records: AtomicU64,
    /// Partitions rebuilt from the WAL after their writer failed.
    pub rebuilt_partitions: AtomicU64,
}

/// A (tenant, hour) partition.
type Key = (TenantId, i64);

struct OpenWriter {
    partition: Arc<Partition>,
    writer: IndexWriter,
    dirty: bool,
    last_used: Instant,
}

/// Records of a partition without an open writer, with their sequence numbers.
struct Staged {
    partition: Arc<Partition>,
    docs: Vec<(u64, LogRecord)>,
}

/// Writers idle this long are committed and closed to free their memory.
const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// At most this many partition writers are open at once (late or early
/// records open older or newer hours). Each has its own indexing threads and
/// memory budget, so this bounds the indexer's memory and threads.
pub(crate) const MAX_OPEN_WRITERS: usize = 4;
/// Staged records past this count start a commit round early, which bounds
/// the memory they hold (about 1 KiB each).
pub(crate) const MAX_STAGED_RECORDS: usize = 100_000;

/// Owns the partition writers. Runs on its own thread: tantivy work never
/// runs on the async runtime.
pub struct LogIndexer {
    store: Arc<LogStore>,
    writers: HashMap<Key, OpenWriter>,
    staged: BTreeMap<Key, Staged>,
    staged_records: usize,
    /// Partitions whose writer failed, with the WAL position after which
    /// their records must be read back (their last commit's).
    broken: BTreeMap<Key, u64>,
    applied_lsn: u64,
    oldest_uncommitted: Option<Instant>,
    on_commit: Box<dyn FnMut(u64) + Send>,
    reread: Option<LogReread>,
}

/// The sequence number of record `i` of entry `lsn`: unique per tenant and
/// stable across replays and rebuilds, it orders equal timestamps.
fn seq(lsn: u64, i: usize) -> u64 {
    (lsn << 24) | (i as u64 & 0xff_ffff)
}

impl LogIndexer {
    /// Starts the indexing thread. It stops, after a final commit, when every
    /// sender of `rx` is dropped. `on_commit` gets the WAL position each
    /// commit round made durable (to release WAL segments). A partition whose
    /// writer fails is rebuilt by the WAL replay of the next start; use
    /// [`LogIndexer::spawn_with_reread`] to rebuild it at once.
    pub fn spawn(
        store: Arc<LogStore>,
        rx: Receiver<IndexBatch>,
        on_commit: impl FnMut(u64) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        LogIndexer::spawn_with_reread(store, rx, on_commit, None)
    }

    /// Like [`LogIndexer::spawn`]; `reread` reads entries back from the WAL
    /// to rebuild, at the next commit round, a partition whose writer failed
    /// (a full disk), so indexing resumes by itself once the cause is gone.
    pub fn spawn_with_reread(
        store: Arc<LogStore>,
        rx: Receiver<IndexBatch>,
        on_commit: impl FnMut(u64) + Send + 'static,
        reread: Option<LogReread>,
    ) -> std::io::Result<JoinHandle<()>> {
        let mut me = LogIndexer::new(store, Box::new(on_commit), reread);
        std::thread::Builder::new()
            .name("log-indexer".into())
            .spawn(move || me.run(rx))
    }

    fn new(
        store: Arc<LogStore>,
        on_commit: Box<dyn FnMut(u64) + Send>,
        reread: Option<LogReread>,
    ) -> LogIndexer {
        LogIndexer {
            store,
            writers: HashMap::new(),
            staged: BTreeMap::new(),
            staged_records: 0,
            broken: BTreeMap::new(),
            applied_lsn: 0,
            oldest_uncommitted: None,
            on_commit,
            reread,
        }
    }

    fn run(&mut self, rx: Receiver<IndexBatch>) {
        let interval = self.store.opts.commit_interval;
        let mut next_commit = Instant::now() + interval;
        loop {
            let wait = next_commit.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(batch) => self.apply(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_commit || self.staged_records >= MAX_STAGED_RECORDS {
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

    fn apply(&mut self, batch: IndexBatch) {
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
        let mut skipped = 0u64;
        // Grouped by hour first: one writer lookup (and at most one switch)
        // per partition, however the records interleave.
        let mut groups: BTreeMap<i64, Vec<(u64, LogRecord)>> = BTreeMap::new();
        for (i, r) in records.into_iter().enumerate() {
            if r.timestamp_ns < cutoff {
                // Out of retention (only possible on replay of an old WAL).
                skipped += 1;
                continue;
            }
            groups
                .entry(hour_partition(r.timestamp_ns))
                .or_default()
                .push((seq(lsn, i), r));
        }
        let mut pending = 0u64;
        for (hour, docs) in groups {
            let (indexed, skip) = self.apply_group((tenant.clone(), hour), lsn, docs);
            pending += indexed;
            skipped += skip;
        }
        drop(hold);
        self.applied_lsn = self.applied_lsn.max(lsn);
        if pending > 0 {
            self.oldest_uncommitted.get_or_insert(acked_at);
        }
        self.store
            .stats
            .replay_skipped_records
            .fetch_add(skipped, Ordering::Relaxed);
        self.store
            .stats
            .staged_records
            .store(self.staged_records as u64, Ordering::Relaxed);
    }

    /// Adds one partition's records of entry `lsn` to its writer, or stages
    /// them. Returns (records indexed or staged, records skipped).
    fn apply_group(&mut self, key: Key, lsn: u64, docs: Vec<(u64, LogRecord)>) -> (u64, u64) {
        if self.broken.contains_key(&key) {
            // Its rebuild reads these records back from the WAL.
            return (0, 0);
        }
        let partition = match self.writers.get(&key) {
            Some(w) => w.partition.clone(),
            None => match self.store.get_or_create(&key.0, key.1) {
                Ok(p) => p,
                Err(e) => {
                    // Nothing of it exists yet: rebuild from this entry on.
                    self.mark_broken(key, lsn.saturating_sub(1), &e);
                    return (0, 0);
                }
            },
        };
        let n = docs.len() as u64;
        if partition.committed_lsn.load(Ordering::SeqCst) >= lsn {
            return (0, n);
        }
        if let Some(s) = self.staged.get_mut(&key) {
            self.staged_records += docs.len();
            s.docs.extend(docs);
            return (n, 0);
        }
        match self.open_slot(&key, &partition) {
            Ok(true) => (self.add_docs(&key, docs), 0),
            Ok(false) => {
                self.staged_records += docs.len();
                self.staged.insert(key, Staged { partition, docs });
                (n, 0)
            }
            Err(e) => {
                let from = partition.committed_lsn.load(Ordering::SeqCst);
                self.mark_broken(key, from, &e);
                (0, 0)
            }
        }
    }

    /// Makes sure `key` has an open writer, closing the least recently used
    /// clean writer at the limit. `Ok(false)` when every open writer holds
    /// uncommitted records (the caller stages instead: closing one would
    /// cost a commit).
    fn open_slot(&mut self, key: &Key, partition: &Arc<Partition>) -> Result<bool, StoreError> {
        if let Some(w) = self.writers.get_mut(key) {
            w.last_used = Instant::now();
            return Ok(true);
        }
        if self.writers.len() >= MAX_OPEN_WRITERS {
            let lru = self
                .writers
                .iter()
                .filter(|(_, w)| !w.dirty)
                .min_by_key(|(_, w)| w.last_used)
                .map(|(k, _)| k.clone());
            match lru.and_then(|k| self.writers.remove(&k)) {
                Some(w) => {
                    let _ = w.writer.wait_merging_threads();
                }
                None => return Ok(false),
            }
        }
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
                partition: partition.clone(),
                writer,
                dirty: false,
                last_used: Instant::now(),
            },
        );
        self.update_writer_gauge();
        Ok(true)
    }

    /// Hands records to `key`'s open writer. On failure the writer is dropped
    /// and the partition marked for a rebuild. Returns how many were added.
    fn add_docs(&mut self, key: &Key, docs: Vec<(u64, LogRecord)>) -> u64 {
        let Some(w) = self.writers.get_mut(key) else {
            return 0;
        };
        let mut n = 0u64;
        let mut failed = None;
        for (seq, r) in docs {
            if let Err(e) = w
                .writer
                .add_document(to_document(&w.partition.fields, r, seq))
            {
                failed = Some(e);
                break;
            }
            n += 1;
        }
        w.dirty |= n > 0;
        w.last_used = Instant::now();
        if let Some(e) = failed {
            let from = w.partition.committed_lsn.load(Ordering::SeqCst);
            self.writers.remove(key);
            self.update_writer_gauge();
            self.mark_broken(
                key.clone(),
                from,
                &StoreError::index("failed to add document")(e),
            );
            return 0;
        }
        self.store
            .stats
            .indexed_records
            .fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Commits one open writer with `lsn` as payload. A failure drops the
    /// writer (tantivy may have lost some of its records, so it must never
    /// commit again) and marks the partition for a rebuild.
    fn commit_writer(&mut self, key: &Key, lsn: u64) -> bool {
        let Some(w) = self.writers.get_mut(key) else {
            return false;
        };
        let payload = super::commit_payload(lsn);
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
                self.store
                    .stats
                    .partition_commits
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.store
                    .stats
                    .commit_errors
                    .fetch_add(1, Ordering::Relaxed);
                let from = w.partition.committed_lsn.load(Ordering::SeqCst);
                self.writers.remove(key);
                self.update_writer_gauge();
                self.mark_broken(
                    key.clone(),
                    from,
                    &StoreError::index("log index commit failed")(e),
                );
                false
            }
        }
    }

    /// Commits every dirty writer, then writes and commits staged records
    /// one partition at a time, then rebuilds failed partitions, all with
    /// the applied WAL position as payload, and makes the new documents
    /// visible to searches. The WAL is released only when nothing failed.
    fn commit_round(&mut self) {
        let lsn = self.applied_lsn;
        let dirty: Vec<Key> = self
            .writers
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(k, _)| k.clone())
            .collect();
        for key in dirty {
            self.commit_writer(&key, lsn);
        }
        // Every open writer is clean now, so each staged partition finds a slot.
        while let Some((key, s)) = self.staged.pop_first() {
            self.staged_records -= s.docs.len();
            match self.open_slot(&key, &s.partition) {
                Ok(true) => {
                    if self.add_docs(&key, s.docs) > 0 {
                        self.commit_writer(&key, lsn);
                    }
                }
                Ok(false) => {
                    let e = StoreError::InvalidArgument("no writer slot for staged records".into());
                    let from = s.partition.committed_lsn.load(Ordering::SeqCst);
                    self.mark_broken(key, from, &e);
                }
                Err(e) => {
                    let from = s.partition.committed_lsn.load(Ordering::SeqCst);
                    self.mark_broken(key, from, &e);
                }
            }
        }
        self.store.stats.staged_records.store(0, Ordering::Relaxed);
        self.rebuild_broken(lsn);
        if !self.broken.is_empty() {
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
        self.update_writer_gauge();
        (self.on_commit)(lsn);
    }

    fn update_writer_gauge(&self) {
        self.store
            .stats
            .open_writers
            .store(self.writers.len() as u64, Ordering::Relaxed);
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

#[path = "rebuild.rs"]
mod rebuild;
#[cfg(test)]
#[path = "indexer_tests.rs"]
mod tests;
