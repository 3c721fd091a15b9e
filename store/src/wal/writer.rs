//! The WAL writer thread: group commit into the active segment, segment
//! rolls, and the handling of a full disk (see the parent module).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use periscope_proto::Signal;

use super::segment::{self, header, segment_path, write_frame};
use super::{Append, FSYNC_BUCKETS, SegInfo, Shared, WalOptions};
use crate::StoreError;
use crate::layout::sync_dir;

/// The writer thread's state: the active segment file.
pub(super) struct SegmentWriter {
    file: File,
    path: PathBuf,
    bytes: u64,
    next_lsn: u64,
}

impl SegmentWriter {
    /// Appends to the newest segment if it has room, else starts a new one.
    pub(super) fn open_active(shared: &Shared, next_lsn: u64) -> Result<SegmentWriter, StoreError> {
        let last = shared
            .lock_segments()
            .last()
            .map(|s| (s.path.clone(), s.bytes));
        match last {
            Some((path, bytes)) if bytes >= segment::HEADER_LEN => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(StoreError::io("failed to open wal segment", &path))?;
                Ok(SegmentWriter {
                    file,
                    path,
                    bytes,
                    next_lsn,
                })
            }
            _ => SegmentWriter::create(shared, next_lsn),
        }
    }

    fn create(shared: &Shared, first_lsn: u64) -> Result<SegmentWriter, StoreError> {
        let path = segment_path(&shared.dir, first_lsn);
        let created = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(StoreError::io("failed to create wal segment", &path))
            .and_then(|mut file| {
                file.write_all(&header())
                    .map_err(StoreError::io("failed to write", &path))?;
                file.sync_all()
                    .map_err(StoreError::io("failed to fsync", &path))?;
                sync_dir(&shared.dir)?;
                Ok(file)
            });
        let file = match created {
            Ok(f) => f,
            Err(e) => {
                // A headerless file would only be cut off at the next open;
                // with a full disk, it is better gone at once.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let mut segs = shared.lock_segments();
        // An empty or headerless newest segment is replaced by this one.
        if segs
            .last()
            .is_some_and(|s| s.last_lsn == 0 && s.path != path)
            && let Some(old) = segs.pop()
        {
            let _ = std::fs::remove_file(&old.path);
        }
        segs.retain(|s| s.path != path);
        segs.push(SegInfo {
            last_lsn: 0,
            signal_last: [0; 4],
            bytes: segment::HEADER_LEN,
            path: path.clone(),
        });
        shared.update_disk_stats(&segs);
        Ok(SegmentWriter {
            file,
            path,
            bytes: segment::HEADER_LEN,
            next_lsn: first_lsn,
        })
    }

    pub(super) fn run<T>(
        &mut self,
        shared: &Shared,
        opts: &WalOptions,
        rx: Receiver<Append<T>>,
        sink: &mut impl FnMut(u64, Signal, T),
    ) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut batch: Vec<Append<T>> = Vec::new();
        // Each iteration is one group commit: block for the first entry, then
        // take whatever else is already queued (up to 16 MiB).
        while let Ok(first) = rx.recv() {
            let mut size = first.entry.frame_len();
            batch.push(first);
            while size < (16 << 20) {
                match rx.try_recv() {
                    Ok(a) => {
                        size += a.entry.frame_len();
                        batch.push(a);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            shared
                .stats
                .queue_depth
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            let first_lsn = self.next_lsn;
            buf.clear();
            let mut signal_last = [0u64; 4];
            for (i, a) in batch.iter().enumerate() {
                write_frame(&mut buf, first_lsn + i as u64, &a.entry);
                signal_last[a.entry.signal as usize] = first_lsn + i as u64;
            }
            match self.write_and_sync(shared, &buf) {
                Ok(()) => {
                    let last_lsn = first_lsn + batch.len() as u64 - 1;
                    self.next_lsn = last_lsn + 1;
                    {
                        let mut segs = shared.lock_segments();
                        if let Some(s) = segs.last_mut() {
                            s.last_lsn = last_lsn;
                            for (have, new) in s.signal_last.iter_mut().zip(signal_last) {
                                *have = (*have).max(new);
                            }
                            s.bytes = self.bytes;
                        }
                        shared.update_disk_stats(&segs);
                    }
                    shared
                        .stats
                        .entries
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    shared
                        .stats
                        .bytes_written
                        .fetch_add(buf.len() as u64, Ordering::Relaxed);
                    let items: Vec<(u64, Signal, T)> = batch
                        .drain(..)
                        .enumerate()
                        .map(|(i, a)| {
                            let lsn = first_lsn + i as u64;
                            (a.reply)(Ok(lsn));
                            (lsn, a.entry.signal, a.item)
                        })
                        .collect();
                    for (lsn, signal, item) in items {
                        sink(lsn, signal, item);
                    }
                    if shared.stats.disk_full.swap(0, Ordering::Relaxed) == 1 {
                        tracing::info!(segment = %self.path.display(), "wal writes succeed again");
                    }
                    if self.bytes >= opts.segment_bytes {
                        match SegmentWriter::create(shared, self.next_lsn) {
                            Ok(w) => *self = w,
                            // The current segment grows on; the roll is tried again after the next group.
                            Err(e) if e.is_retryable() => {
                                tracing::warn!(error = %e, "cannot start a new wal segment; will retry");
                            }
                            Err(e) => self.fail(shared, &e),
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    let n = batch.len() as u64;
                    match self.roll_back(shared, &e) {
                        Ok(()) => {
                            shared
                                .stats
                                .disk_full_refusals
                                .fetch_add(n, Ordering::Relaxed);
                            for a in batch.drain(..) {
                                (a.reply)(Err(StoreError::DiskFull {
                                    path: self.path.clone(),
                                    source: std::io::ErrorKind::StorageFull.into(),
                                }));
                            }
                        }
                        Err(e) => {
                            self.fail(shared, &e);
                            for a in batch.drain(..) {
                                (a.reply)(Err(StoreError::WalClosed(e.to_string())));
                            }
                        }
                    }
                }
                Err(e) => {
                    // After a failed write or fsync the file's state is unknown
                    // (fsync errors are not retryable on Linux): refuse further writes.
                    self.fail(shared, &e);
                    for a in batch.drain(..) {
                        (a.reply)(Err(StoreError::WalClosed(e.to_string())));
                    }
                }
            }
            if shared.failed.load(Ordering::Relaxed) {
                for a in rx.try_iter() {
                    (a.reply)(Err(StoreError::WalClosed("a previous write failed".into())));
                }
            }
        }
    }

    /// Undoes a group that failed for lack of space: cuts the segment back
    /// to the end of the last durable group and fsyncs that. The dirty pages
    /// a failed fsync may have left "clean" in the page cache lie past the
    /// cut (or are rewritten whole with the next group), so nothing of the
    /// failed group can reach the disk later. Fails when the file cannot be
    /// brought back to a known state (the WAL then closes).
    fn roll_back(&mut self, shared: &Shared, cause: &StoreError) -> Result<(), StoreError> {
        if shared.stats.disk_full.swap(1, Ordering::Relaxed) == 0 {
            tracing::error!(error = %cause, segment = %self.path.display(),
                "wal disk full: refusing writes until space is freed");
        }
        self.file
            .set_len(self.bytes)
            .map_err(StoreError::io("failed to truncate wal segment", &self.path))?;
        // Files opened for a new segment write at their cursor, not the end.
        self.file
            .seek(SeekFrom::Start(self.bytes))
            .map_err(StoreError::io("failed to seek wal segment", &self.path))?;
        self.file
            .sync_all()
            .map_err(StoreError::io("failed to fsync wal segment", &self.path))
    }

    fn fail(&self, shared: &Shared, e: &StoreError) {
        tracing::error!(error = %e, segment = %self.path.display(), "wal write failed; refusing further writes");
        shared.failed.store(true, Ordering::Relaxed);
    }

    fn write_and_sync(&mut self, shared: &Shared, buf: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(buf)
            .map_err(StoreError::io("failed to write wal segment", &self.path))?;
        let t = Instant::now();
        self.file
            .sync_data()
            .map_err(StoreError::io("failed to fsync wal segment", &self.path))?;
        let d = t.elapsed();
        let st = &shared.stats;
        st.fsyncs.fetch_add(1, Ordering::Relaxed);
        st.fsync_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        if let Some(i) = FSYNC_BUCKETS.iter().position(|b| d.as_secs_f64() <= *b) {
            st.fsync_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.bytes += buf.len() as u64;
        Ok(())
    }
}
