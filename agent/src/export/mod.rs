//! The exporter: one thread that owns the in-memory queue, the disk spool and
//! the gRPC client, and sends requests strictly oldest first, one at a time.
//!
//! Batches arrive on a bounded channel and are queued encoded (protobuf
//! bytes, sent as they are on every attempt). While exports succeed, the
//! exporter takes a batch only when the memory queue holds less than 4 MiB
//! and the spool is empty: a collector that is slower than reading makes the
//! channel fill and the tailer wait, and nothing is written to the spool
//! that the files still hold. While exports fail (retries), a batch goes to
//! the memory queue unless the queue is over `memory_queue_bytes` or the
//! spool already holds something (then to the spool, so order is kept:
//! memory, then spool, then newer arrivals). When the spool reaches
//! `spool_max_bytes`, the exporter stops taking batches: the channel fills
//! and the tailer waits (backpressure, nothing dropped).
//!
//! Ack flow: every batch gets a sequence number; it is *safe* once the
//! collector acknowledged it or it is fsynced in the spool. The
//! [`Finalizer`] applies checkpoint marks of safe batches in sequence order
//! only, so a checkpoint never passes a record that could still be lost.
//!
//! Retries: forever, with exponential backoff from 100 ms doubling to 30 s,
//! full jitter, or the server's `RetryInfo` hint when given. Permanent
//! refusals (e.g. `INVALID_ARGUMENT`) are logged, counted and dropped.

pub mod grpc;
pub mod spool;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use rand::Rng;

use crate::batch::{Batch, Payload};
use crate::checkpoint::{Committed, Mark};
use crate::telemetry::Stats;
use grpc::{Client, ClientOptions, Outcome};
use spool::Spool;

/// Cap of the retry backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Memory queue bound while exports succeed (see `Exporter::hold_back`).
const HEALTHY_QUEUE_BYTES: usize = 4 << 20;

/// Exporter options.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// gRPC client options.
    pub client: ClientOptions,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool bound.
    pub spool_max_bytes: u64,
    /// Memory queue bound.
    pub memory_queue_bytes: usize,
}

/// Applies checkpoint marks of safe batches in sequence order.
#[derive(Debug)]
pub struct Finalizer {
    next: u64,
    done: BTreeMap<u64, Vec<Mark>>,
    committed: Committed,
}

impl Finalizer {
    /// Starts at sequence 0.
    pub fn new(committed: Committed) -> Self {
        Finalizer {
            next: 0,
            done: BTreeMap::new(),
            committed,
        }
    }

    /// Batch `seq` is safe; applies every contiguous safe batch's marks.
    pub fn done(&mut self, seq: u64, marks: Vec<Mark>) {
        self.done.insert(seq, marks);
        while let Some(marks) = self.done.remove(&self.next) {
            for m in &marks {
                self.committed.apply(m);
            }
            self.next += 1;
        }
    }
}

/// A queued request, held encoded: protobuf bytes are about half the
/// memory of the decoded records, and every attempt sends them as they are.
#[derive(Debug)]
struct Item {
    seq: u64,
    kind: u8,
    /// The tenant the relay admitted it for; `None`: the agent's own.
    tenant: Option<String>,
    records: u64,
    body: Bytes,
    marks: Vec<Mark>,
    /// Memory held: the encoding plus the marks.
    bytes: usize,
}

/// The exporter thread's state.
pub struct Exporter {
    opts: ExportOptions,
    rx: Receiver<Batch>,
    rx_open: bool,
    mem: VecDeque<Item>,
    mem_bytes: usize,
    spool: Spool,
    finalizer: Finalizer,
    next_seq: u64,
    client: Client,
    rt: tokio::runtime::Handle,
    stats: Arc<Stats>,
    shutdown: Arc<AtomicBool>,
    tail_done: Arc<AtomicBool>,
    paused: bool,
    /// The last spool append failed.
    spool_failing: bool,
    /// The last export attempt failed and is being retried.
    export_failing: bool,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The spool could not be opened.
    #[error("cannot open the disk spool: {0}")]
    Spool(#[from] spool::SpoolError),
    /// The endpoint is invalid.
    #[error(transparent)]
    Client(#[from] grpc::ClientError),
}

impl Exporter {
    /// Opens the spool and the client; `rt` runs the gRPC calls. At
    /// `shutdown` the exporter stops sending and spools what arrives until
    /// `tail_done` (the tailer sent its last batch).
    pub fn new(
        opts: ExportOptions,
        rx: Receiver<Batch>,
        committed: Committed,
        stats: Arc<Stats>,
        shutdown: Arc<AtomicBool>,
        tail_done: Arc<AtomicBool>,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, ExportError> {
        let spool = Spool::open(&opts.spool_dir)?;
        if !spool.is_empty() {
            tracing::info!(
                bytes = spool.bytes(),
                "disk spool holds data from an earlier run; sending it"
            );
        }
        stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        let client = {
            let _g = rt.enter();
            Client::new(opts.client.clone())?
        };
        Ok(Exporter {
            opts,
            rx,
            rx_open: true,
            mem: VecDeque::new(),
            mem_bytes: 0,
            spool,
            finalizer: Finalizer::new(committed),
            next_seq: 0,
            client,
            rt,
            stats,
            shutdown,
            tail_done,
            paused: false,
            spool_failing: false,
            export_failing: false,
        })
    }

    fn publish(&self) {
        self.stats
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
        self.stats
            .memory_queue_bytes
            .store(self.mem_bytes as u64, Ordering::Relaxed);
    }

    /// No room for more batches: the spool is at its bound, or (when the
    /// spool cannot be written, e.g. a full disk) the memory queue is at twice
    /// its bound. Reading then pauses.
    fn spool_full(&self) -> bool {
        self.spool.bytes() >= self.opts.spool_max_bytes
            || (self.spool_failing
                && self.mem_bytes >= self.opts.memory_queue_bytes.saturating_mul(2))
    }

    /// Takes one arrived batch into the memory queue or the spool.
    fn admit(&mut self, b: Batch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let records = b.payload.records() as u64;
        if let Payload::Logs(_) = &b.payload {
            Stats::add(&self.stats.records_queued, records);
        }
        let (kind, body) = if records == 0 {
            (b.payload.kind(), Bytes::new())
        } else {
            (b.payload.kind(), Bytes::from(b.payload.encode()))
        };
        drop(b.payload);
        let item = Item {
            seq,
            kind,
            records,
            bytes: body.len() + b.marks.len() * 64 + b.tenant.as_ref().map_or(0, String::len),
            tenant: b.tenant,
            body,
            marks: b.marks,
        };
        if item.records == 0 {
            // Marks only: safe as soon as everything before it is.
            if self.mem.is_empty() {
                self.finalizer.done(item.seq, item.marks);
            } else {
                self.mem_bytes += item.bytes;
                self.mem.push_back(item);
            }
            return;
        }
        if self.spool.is_empty() && self.mem_bytes + item.bytes <= self.opts.memory_queue_bytes
            || self.mem.is_empty() && self.spool.is_empty()
        {
            self.mem_bytes += item.bytes;
            self.mem.push_back(item);
        } else {
            self.spill(item);
        }
        self.publish();
    }

    /// Writes an item to the spool; on failure keeps it in memory (the
    /// memory bound is then exceeded rather than anything dropped).
    fn spill(&mut self, item: Item) {
        match self
            .spool
            .append_encoded(item.kind, item.tenant.as_deref(), &item.body)
        {
            Ok(_) => {
                self.spool_failing = false;
                Stats::add(&self.stats.spool_batches_written, 1);
                self.finalizer.done(item.seq, item.marks);
            }
            Err(e) => {
                self.spool_failing = true;
                tracing::error!(error = %e, "cannot write to the disk spool; keeping the batch in memory");
                self.mem_bytes += item.bytes;
                self.mem.push_back(item);
            }
        }
    }

    /// The collector answers but more slowly than files are read: arrivals
    /// wait in the channel (and reading pauses) while the memory queue is at
    /// its bound or the spool still drains. The spool takes overflow only
    /// while exports fail: then reading on keeps up with rotation, whereas
    /// spooling what a healthy collector will take in a moment would only
    /// write the files' bytes to disk a second time.
    ///
    /// While healthy, the memory queue is kept to [`HEALTHY_QUEUE_BYTES`]:
    /// a few requests ready to go are all that sending needs, and the rest of
    /// `memory_queue_bytes` stays free to absorb the start of an outage.
    fn hold_back(&self) -> bool {
        let bound = self.opts.memory_queue_bytes.min(HEALTHY_QUEUE_BYTES);
        !self.export_failing && (!self.spool.is_empty() || self.mem_bytes >= bound)
    }

    /// Takes arrived batches without waiting, unless the spool is full or
    /// the exporter holds back.
    fn intake(&mut self) {
        while self.rx_open {
            if self.hold_back() {
                return;
            }
            if self.spool_full() {
                if !self.paused {
                    self.paused = true;
                    Stats::add(&self.stats.backpressure_waits, 1);
                    tracing::warn!(
                        spool_bytes = self.spool.bytes(),
                        "export queue full (disk spool at its bound or unwritable); reading paused until it drains"
                    );
                }
                return;
            }
            self.paused = false;
            match self.rx.try_recv() {
                Ok(b) => self.admit(b),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.rx_open = false,
            }
        }
    }

    /// Waits up to `d`, taking arrivals meanwhile.
    fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            self.intake();
            let now = Instant::now();
            if now >= until || self.shutdown.load(Ordering::Relaxed) {
                return;
            }
            let step = (until - now).min(Duration::from_millis(50));
            if !self.rx_open || self.spool_full() || self.hold_back() {
                std::thread::sleep(step);
                continue;
            }
            match self.rx.recv_timeout(step) {
                Ok(b) => self.admit(b),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.rx_open = false,
            }
        }
    }

    /// Runs until shutdown: sends, retries, spills. At shutdown, whatever is
    /// still in memory goes to the spool so its marks can be persisted.
    pub fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            self.intake();
            let stopping = self.shutdown.load(Ordering::Relaxed);
            if stopping {
                break;
            }
            // The oldest item: memory first, then the spool.
            // Encoded straight from the queued request: no copy of its records.
            let from_mem = !self.mem.is_empty();
            let (kind, tenant, records, body) = if let Some(i) = self.mem.front() {
                (i.kind, i.tenant.clone(), i.records, i.body.clone())
            } else {
                match self.spool.peek() {
                    Ok(Some(s)) => {
                        let (kind, records, body) = encoded(&s.payload);
                        (kind, s.tenant, records, body)
                    }
                    Ok(None) => {
                        self.stats
                            .spool_corrupt_records
                            .store(self.spool.corrupt_records(), Ordering::Relaxed);
                        self.publish();
                        if !self.rx_open {
                            break;
                        }
                        self.wait(Duration::from_millis(100));
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the disk spool; retrying");
                        self.wait(Duration::from_secs(1));
                        continue;
                    }
                }
            };
            self.stats
                .spool_corrupt_records
                .store(self.spool.corrupt_records(), Ordering::Relaxed);
            if records == 0 {
                self.finish_front(from_mem);
                continue;
            }
            Stats::add(&self.stats.records_sent, records);
            let outcome = self
                .rt
                .block_on(self.client.send_encoded(kind, tenant.as_deref(), body));
            match outcome {
                Outcome::Acked { rejected } => {
                    backoff = MIN_BACKOFF;
                    self.export_failing = false;
                    Stats::add(
                        &self.stats.records_acked,
                        records.saturating_sub(rejected.max(0) as u64),
                    );
                    if rejected > 0 {
                        Stats::add(&self.stats.records_rejected, rejected as u64);
                        tracing::warn!(
                            rejected,
                            "collector refused part of a batch (partial success)"
                        );
                    }
                    self.finish_front(from_mem);
                }
                Outcome::Rejected { reason } => {
                    backoff = MIN_BACKOFF;
                    self.export_failing = false;
                    Stats::add(&self.stats.records_rejected, records);
                    tracing::error!(records, reason = %reason, "collector refused a batch permanently; dropping it");
                    self.finish_front(from_mem);
                }
                Outcome::Retry { hint, reason } => {
                    Stats::add(&self.stats.export_retries, 1);
                    self.export_failing = true;
                    let delay = match hint {
                        Some(h) => h.min(MAX_BACKOFF),
                        None => {
                            let d = rand::rng().random_range(Duration::ZERO..=backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            d.max(Duration::from_millis(10))
                        }
                    };
                    tracing::warn!(reason = %reason, retry_in_ms = delay.as_millis() as u64, "export failed; will retry");
                    // While waiting, memory that overflows goes to the spool.
                    self.wait(delay);
                }
            }
        }
        self.shutdown_spill();
    }

    fn finish_front(&mut self, from_mem: bool) {
        if from_mem {
            if let Some(i) = self.mem.pop_front() {
                self.mem_bytes -= i.bytes;
                self.finalizer.done(i.seq, i.marks);
            }
        } else {
            self.spool.advance();
        }
        self.publish();
    }

    /// Moves arrived and in-memory batches to the spool at shutdown.
    fn shutdown_spill(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = self.tail_done.load(Ordering::SeqCst);
            while let Ok(b) = self.rx.try_recv() {
                self.admit(b);
            }
            if done || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let items: Vec<Item> = self.mem.drain(..).collect();
        self.mem_bytes = 0;
        let n = items.len();
        for item in items {
            if item.records == 0 {
                self.finalizer.done(item.seq, item.marks);
                continue;
            }
            if let Err(e) = self
                .spool
                .append_encoded(item.kind, item.tenant.as_deref(), &item.body)
            {
                tracing::error!(error = %e, "cannot spool at shutdown; these records will be read again from their files");
                continue;
            }
            self.finalizer.done(item.seq, item.marks);
        }
        if n > 0 {
            tracing::info!(batches = n, "unsent batches written to the disk spool");
        }
        self.publish();
    }
}

/// A request's kind, record count and protobuf encoding.
fn encoded(p: &Payload) -> (u8, u64, Bytes) {
    (p.kind(), p.records() as u64, p.encode().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{FileId, Fingerprint};

    fn mark(ino: u64, offset: u64) -> Mark {
        Mark {
            id: FileId { dev: 1, ino },
            fingerprint: Fingerprint::default(),
            path: "/x".into(),
            offset,
        }
    }

    #[test]
    fn finalizer_applies_marks_in_sequence_order_only() {
        let c = Committed::default();
        let mut f = Finalizer::new(c.clone());
        f.done(1, vec![mark(7, 200)]);
        assert!(
            c.get(FileId { dev: 1, ino: 7 }).is_none(),
            "batch 0 is not safe yet"
        );
        f.done(0, vec![mark(7, 100), mark(8, 5)]);
        assert_eq!(c.get(FileId { dev: 1, ino: 7 }).unwrap().offset, 200);
        assert_eq!(c.get(FileId { dev: 1, ino: 8 }).unwrap().offset, 5);
        f.done(3, vec![mark(8, 50)]);
        f.done(2, vec![]);
        assert_eq!(c.get(FileId { dev: 1, ino: 8 }).unwrap().offset, 50);
    }
}
