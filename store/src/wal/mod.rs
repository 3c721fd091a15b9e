//! The write-ahead log: every accepted request is appended and fsynced here
//! before the client is answered.
//!
//! One writer thread owns the active segment. Appenders hand it encoded
//! entries through a bounded channel; it takes whatever has queued up, writes
//! it, fsyncs once for the whole group (group commit), answers every appender,
//! then passes the entries on in LSN order to the sink (the store pipelines).
//! Stores report the LSN they have made durable with [`Wal::release`]; a
//! segment is deleted once every signal it holds is durable elsewhere.
//!
//! A full disk is not fatal. When a group's write or fsync fails for lack of
//! space, the segment is truncated back to the end of the last durable group
//! (so no partial frame stays behind, and the next group rewrites the page
//! the failed one touched), the group's appenders get the retryable
//! [`StoreError::DiskFull`], and the next group simply tries again: appends
//! succeed by themselves once space is freed. Any other I/O failure leaves
//! the file in an unknown state and closes the WAL for good.

mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use periscope_proto::Signal;
pub use segment::{BodyFormat, EncodedEntry, WalEntry, WalRecord};
use segment::{SegmentReader, parse_segment_name};
use writer::SegmentWriter;

use crate::StoreError;
use crate::layout::sync_dir;
use crate::sync::MutexRecover;

/// Tuning of the WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A segment is closed and a new one started past this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Appends queued for the writer thread before `append` blocks. Default 1024.
    pub queue_capacity: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            queue_capacity: 1024,
        }
    }
}

/// Answers an appender once its entry is durable (with its LSN) or failed.
pub type AppendReply = Box<dyn FnOnce(Result<u64, StoreError>) + Send>;

/// Upper bounds (seconds) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Counters for self-metrics.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Bytes appended (frames, compressed).
    pub bytes_written: AtomicU64,
    /// Entries appended.
    pub entries: AtomicU64,
    /// Bytes in segments on disk.
    pub disk_bytes: AtomicU64,
    /// Segments on disk.
    pub segments: AtomicU64,
    /// fsync calls, and the sum of their durations in nanoseconds.
    pub fsyncs: AtomicU64,
    /// Sum of fsync durations, nanoseconds.
    pub fsync_nanos: AtomicU64,
    /// Cumulative fsync latency histogram counts per [`FSYNC_BUCKETS`] (non-cumulative per bucket; +Inf is `fsyncs`).
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len()],
    /// Entries waiting for the writer thread.
    pub queue_depth: AtomicU64,
    /// Entries refused because the disk was full.
    pub disk_full_refusals: AtomicU64,
    /// 1 while the last write failed for lack of space, else 0.
    pub disk_full: AtomicU64,
}

struct SegInfo {
    /// 0 while the segment holds no frame.
    last_lsn: u64,
    /// Per signal (indexed by discriminant), its last LSN in the segment; 0 when absent.
    signal_last: [u64; 4],
    bytes: u64,
    path: PathBuf,
}

struct Shared {
    dir: PathBuf,
    segments: Mutex<Vec<SegInfo>>,
    /// Per signal (indexed by discriminant), the LSN up to which its store is durable.
    durable: [AtomicU64; 4],
    stats: WalStats,
    failed: AtomicBool,
}

struct Append<T> {
    entry: EncodedEntry,
    item: T,
    reply: AppendReply,
}

/// The write-ahead log. `T` is what the sink receives with each entry once it
/// is durable (the decoded request, its memory permit...).
pub struct Wal<T> {
    shared: Arc<Shared>,
    next_lsn: u64,
    opts: WalOptions,
    tx: Mutex<Option<SyncSender<Append<T>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Send + 'static> Wal<T> {
    /// Opens the WAL in `dir`: scans every segment, cuts off a torn or
    /// corrupt tail (with a warning), and finds the next LSN. `min_next_lsn`
    /// is one past the highest LSN any store recorded, so LSNs are never
    /// reused even if every segment was deleted.
    pub fn open(dir: &Path, opts: WalOptions, min_next_lsn: u64) -> Result<Wal<T>, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io("failed to create wal dir", dir))?;
        let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(StoreError::io("failed to list wal dir", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((parse_segment_name(&e.path())?, e.path())))
            .collect();
        paths.sort();
        let mut segments = Vec::new();
        let mut next_lsn = min_next_lsn.max(1);
        for (first_lsn, path) in paths {
            let mut r = SegmentReader::open(&path)?;
            let mut info = SegInfo {
                last_lsn: 0,
                signal_last: [0; 4],
                bytes: 0,
                path: path.clone(),
            };
            while let Some(f) = r.next_frame() {
                info.last_lsn = f.lsn;
                info.signal_last[usize::from(f.signal & 0x0f) & 3] = f.lsn;
            }
            if let Some(why) = &r.torn {
                tracing::warn!(segment = %path.display(), reason = %why, valid_bytes = r.valid_len,
                    "wal segment has a torn or corrupt tail; truncating it");
                truncate(&path, r.valid_len)?;
            }
            info.bytes = r.valid_len;
            next_lsn = next_lsn.max(first_lsn).max(info.last_lsn + 1);
            segments.push(info);
        }
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            segments: Mutex::new(segments),
            durable: Default::default(),
            stats: WalStats::default(),
            failed: AtomicBool::new(false),
        });
        shared.update_disk_stats(&shared.segments.lock_or_recover());
        Ok(Wal {
            shared,
            next_lsn,
            opts,
            tx: Mutex::new(None),
            writer: Mutex::new(None),
        })
    }

    /// Reads every record still in the WAL, oldest first. Call before [`Wal::start`].
    pub fn replay<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(WalRecord) -> Result<(), E>,
    ) -> Result<u64, E> {
        let paths: Vec<PathBuf> = self
            .shared
            .lock_segments()
            .iter()
            .map(|s| s.path.clone())
            .collect();
        let mut n = 0;
        for path in paths {
            let mut r = SegmentReader::open(&path)?;
            while let Some(frame) = r.next_frame() {
                f(frame.decode(r.path())?)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Reads back the durable entries of `signal` with `after < lsn <= upto`,
    /// oldest first, while the writer runs (for a store rebuilding what it
    /// lost). Entries of segments deleted meanwhile are skipped: a segment
    /// goes only once every store holds its entries.
    pub fn read_range(
        &self,
        signal: Signal,
        after: u64,
        upto: u64,
        mut f: impl FnMut(WalRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let paths: Vec<PathBuf> = self
            .shared
            .lock_segments()
            .iter()
            .filter(|s| s.last_lsn == 0 || s.last_lsn > after)
            .map(|s| s.path.clone())
            .collect();
        for path in paths {
            let mut r = match SegmentReader::open(&path) {
                Ok(r) => r,
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Frames past `upto` may be half written: stop before them.
            while let Some(frame) = r.next_frame() {
                if frame.lsn > upto {
                    return Ok(());
                }
                if frame.lsn > after && frame.signal & 0x0f == signal as u8 {
                    f(frame.decode(r.path())?)?;
                }
            }
        }
        Ok(())
    }

    /// Starts the writer thread. `sink` receives every entry once it is
    /// durable, in LSN order; it may block, which backs pressure up to appenders.
    pub fn start(
        &self,
        mut sink: impl FnMut(u64, Signal, T) + Send + 'static,
    ) -> Result<(), StoreError> {
        let (tx, rx) = sync_channel::<Append<T>>(self.opts.queue_capacity);
        let mut writer = SegmentWriter::open_active(&self.shared, self.next_lsn)?;
        let shared = self.shared.clone();
        let opts = self.opts.clone();
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(&shared, &opts, rx, &mut sink))
            .map_err(StoreError::io(
                "failed to spawn wal writer",
                &self.shared.dir,
            ))?;
        *self.tx.lock_or_recover() = Some(tx);
        *self.writer.lock_or_recover() = Some(handle);
        Ok(())
    }

    /// Queues an entry; `reply` is called once it is fsynced (or failed).
    /// Blocks while the writer's queue is full: call from a blocking thread.
    pub fn append(
        &self,
        entry: EncodedEntry,
        item: T,
        reply: AppendReply,
    ) -> Result<(), StoreError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(StoreError::WalClosed("a previous write failed".into()));
        }
        let tx = self.tx.lock_or_recover().clone();
        let Some(tx) = tx else {
            return Err(StoreError::WalClosed("not accepting writes".into()));
        };
        self.shared
            .stats
            .queue_depth
            .fetch_add(1, Ordering::Relaxed);
        tx.send(Append { entry, item, reply }).map_err(|_| {
            self.shared
                .stats
                .queue_depth
                .fetch_sub(1, Ordering::Relaxed);
            StoreError::WalClosed("writer stopped".into())
        })
    }

    /// Records that `signal`'s store has made everything up to `lsn` durable,
    /// and deletes segments no store needs any more.
    pub fn release(&self, signal: Signal, lsn: u64) {
        self.shared.durable[signal as usize].fetch_max(lsn, Ordering::SeqCst);
        self.shared.delete_covered_segments();
    }

    /// Stops accepting appends, lets the writer drain its queue (everything
    /// queued is fsynced and passed to the sink), and waits for it.
    pub fn close(&self) {
        self.tx.lock_or_recover().take();
        if let Some(h) = self.writer.lock_or_recover().take() {
            let _ = h.join();
        }
    }

    /// Self-metrics counters.
    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }

    /// The LSN the next append will get (before [`Wal::start`]: one past the last record).
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }
}

impl<T> Drop for Wal<T> {
    fn drop(&mut self) {
        self.tx.lock_or_recover().take();
        if let Some(h) = self.writer.lock_or_recover().take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    fn lock_segments(&self) -> std::sync::MutexGuard<'_, Vec<SegInfo>> {
        self.segments.lock_or_recover()
    }

    fn update_disk_stats(&self, segs: &[SegInfo]) {
        self.stats
            .segments
            .store(segs.len() as u64, Ordering::Relaxed);
        self.stats
            .disk_bytes
            .store(segs.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
    }

    fn covered(&self, s: &SegInfo) -> bool {
        Signal::ALL.iter().all(|sig| {
            let last = s.signal_last[*sig as usize];
            last == 0 || self.durable[*sig as usize].load(Ordering::SeqCst) >= last
        })
    }

    fn delete_covered_segments(&self) {
        let mut segs = self.lock_segments();
        // The newest segment is never deleted: it is being written, and its
        // name keeps LSNs increasing across restarts.
        let keep_last = segs.len().saturating_sub(1);
        let mut i = 0;
        let mut deleted = false;
        segs.retain(|s| {
            let idx = i;
            i += 1;
            if idx >= keep_last || !self.covered(s) {
                return true;
            }
            match std::fs::remove_file(&s.path) {
                Ok(()) => {
                    deleted = true;
                    false
                }
                Err(e) => {
                    tracing::warn!(segment = %s.path.display(), error = %e, "failed to delete wal segment");
                    true
                }
            }
        });
        if deleted {
            let _ = sync_dir(&self.dir);
        }
        self.update_disk_stats(&segs);
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StoreError::io("failed to open for truncation", path))?;
    f.set_len(len)
        .map_err(StoreError::io("failed to truncate", path))?;
    f.sync_all()
        .map_err(StoreError::io("failed to fsync", path))
}
