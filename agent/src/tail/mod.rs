//! The tailer: follows every discovered file from its checkpoint, through
//! rotation (rename + create: the old file is read to its end; copytruncate:
//! a size below the offset or changed first bytes restart at 0), deletion
//! (drained, then closed), idle close and reopen, and a budget of open files.
//!
//! A file's identity is its (device, inode) plus a [`Fingerprint`] of its
//! first bytes, so a reused inode is not mistaken for the checkpointed file.
//! [`Tailer::poll`] reads at most one quantum per file per round so one noisy
//! file cannot starve the others. [`Tailer::marks`] returns, per file, the
//! offset below which every line has been handed to the sink (lines held in
//! a parser's pending buffer are not passed), which is what batches carry to
//! the checkpoints.

mod file;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_proto::otlp::common::v1::KeyValue;

use crate::checkpoint::{Committed, FileId, Fingerprint, Mark, unix_secs};
use crate::config::ReadFrom;
use crate::discover::Globs;
use crate::parse::{ParseOptions, Record};
use crate::sync::MutexRecover;
use crate::telemetry::Stats;
use file::{Prefix, Tracked};

/// Bytes of a file's start covered by its fingerprint.
pub const FINGERPRINT_BYTES: u32 = 256;

/// A scan slower than this spaces the following ones out.
pub const CHEAP_SCAN: Duration = Duration::from_millis(5);
/// Gap between slow periodic scans, as a multiple of the last one's
/// duration (file events ask for the scans that matter sooner).
pub const SCAN_COST_FACTOR: u32 = 300;
/// Longest gap between periodic scans.
pub const MAX_SCAN_GAP: Duration = Duration::from_secs(60);
/// Shortest gap between asked-for scans, as a multiple of the last scan's
/// duration: a tree that changes all the time costs at most 1/20 of a core.
pub const ASKED_SCAN_FACTOR: u32 = 20;

/// How stale a checkpoint's `seen` time may get before a scan refreshes it.
const SEEN_REFRESH_SECS: u64 = 60;

/// Truncation prefixes remembered for copy detection.
const RECENT_PREFIXES: usize = 64;

/// Receives the records read.
pub trait Sink {
    /// One record of file `id`, whose resource attributes are `resource`.
    fn record(&mut self, id: FileId, resource: &Arc<Vec<KeyValue>>, rec: Record);
}

impl Sink for Vec<(FileId, Record)> {
    fn record(&mut self, id: FileId, _resource: &Arc<Vec<KeyValue>>, rec: Record) {
        self.push((id, rec));
    }
}

/// Tailer options.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// What to tail.
    pub globs: Globs,
    /// Start of files found at the first start.
    pub read_from: ReadFrom,
    /// Line length cap.
    pub max_line_bytes: usize,
    /// Idle files are closed after this long.
    pub idle_close: Duration,
    /// Open file budget.
    pub max_open_files: usize,
    /// Bytes read per file per round.
    pub read_quantum: usize,
    /// Bytes read per round over all files.
    pub round_budget: usize,
    /// A file whose path went away is closed once at its end for this long.
    pub rotate_wait: Duration,
    /// Node name for resource attributes.
    pub node_name: String,
    /// Pod metadata from the API server, when enrichment is on.
    pub pods: Option<Arc<crate::k8s::PodCache>>,
    /// Parser options.
    pub parse: ParseOptions,
}

/// Follows the discovered files.
#[derive(Debug)]
pub struct Tailer {
    opts: TailOptions,
    files: BTreeMap<FileId, Tracked>,
    /// Marks of files dropped since the last [`Tailer::marks`].
    finished: Vec<Mark>,
    /// Read prefixes of files truncated lately (copytruncate: the copy
    /// appears as a new file and should not be shipped twice).
    recent: Vec<Prefix>,
    /// Where the next round starts (round robin).
    cursor: Option<FileId>,
    committed: Committed,
    /// No checkpoint file existed: files of the first scan honour `read_from`.
    first_start: bool,
    scanned: bool,
    /// Scans are skipped until then (see [`Tailer::scan`]).
    next_scan: Option<Instant>,
    /// A scan was asked for (see [`Tailer::request_scan`]).
    scan_wanted: bool,
    /// Start and duration of the last scan.
    last_scan: Option<(Instant, Duration)>,
    /// Every file that is open or gone (and maybe a few that no longer
    /// are): the only ones a round visits, so that thousands of idle closed
    /// files cost nothing per round.
    live: BTreeSet<FileId>,
    /// Files whose safe offset may have moved since the last
    /// [`Tailer::marks`], or whose parser holds pending lines: the only ones
    /// `marks` and `flush_idle` look at, so that thousands of idle files
    /// cost nothing per round.
    active: BTreeSet<FileId>,
    stats: Arc<Stats>,
}

/// A file's (device, inode).
pub fn file_id(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Reads the fingerprint of an open file: CRC-32 of its first `len` bytes
/// (at most [`FINGERPRINT_BYTES`]).
pub fn fingerprint(f: &File, size: u64) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::FileExt;
    let len = size.min(u64::from(FINGERPRINT_BYTES)) as usize;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(Fingerprint {
        len: got as u32,
        crc: crc32fast::hash(&buf[..got]),
    })
}

/// CRC-32 of a file's first `len` bytes.
fn prefix_crc(f: &File, len: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = f.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize())
}

/// Whether the file's first bytes still match `fp`.
pub fn fingerprint_matches(f: &File, size: u64, fp: Fingerprint) -> std::io::Result<bool> {
    if fp.len == 0 {
        return Ok(true);
    }
    if size < u64::from(fp.len) {
        return Ok(false);
    }
    Ok(fingerprint(f, u64::from(fp.len))? == fp)
}

impl Tailer {
    /// A tailer resuming from `committed`; `first_start` when no checkpoint file existed.
    pub fn new(
        opts: TailOptions,
        committed: Committed,
        first_start: bool,
        stats: Arc<Stats>,
    ) -> Self {
        Tailer {
            opts,
            files: BTreeMap::new(),
            finished: Vec::new(),
            recent: Vec::new(),
            cursor: None,
            committed,
            first_start,
            scanned: false,
            next_scan: None,
            scan_wanted: false,
            last_scan: None,
            live: BTreeSet::new(),
            active: BTreeSet::new(),
            stats,
        }
    }

    /// Files held open.
    pub fn open_files(&self) -> usize {
        self.live
            .iter()
            .filter(|id| self.files.get(id).is_some_and(|t| t.is_open()))
            .count()
    }

    /// Asks for a scan at the next [`Tailer::scan`], as soon as the last
    /// scan's cost allows (`ASKED_SCAN_FACTOR`): files appeared, moved or
    /// went away.
    pub fn request_scan(&mut self) {
        self.scan_wanted = true;
    }

    /// Whether an asked-for scan has not been made yet.
    pub fn scan_requested(&self) -> bool {
        self.scan_wanted
    }

    /// Looks at files whose content or metadata changed: a known file that
    /// was closed and changed size is reopened; a matching file not known
    /// yet asks for a scan (its creation event was lost or not seen yet).
    pub fn touched(&mut self, paths: &[PathBuf], now: Instant) {
        for path in paths {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = file_id(&meta);
            match self.files.get(&id) {
                Some(t) => {
                    if !t.is_open() && t.gone_since.is_none() && meta.len() != t.read_pos() {
                        self.reopen(id, now);
                    }
                }
                None => {
                    if self.opts.globs.matches(path) {
                        self.scan_wanted = true;
                    }
                }
            }
        }
    }

    /// Discovers files: new ones are tracked, known ones refreshed, tracked
    /// ones no longer at any matching path marked gone, idle-closed ones that
    /// changed reopened.
    ///
    /// A scan walks every matching directory and stats every file, so its
    /// cost grows with the tree (10,000 pod logs: 20,000 directories). When a
    /// scan found nothing new (no new file, none gone, none to reopen) and
    /// took longer than `CHEAP_SCAN`, calls within `SCAN_COST_FACTOR`
    /// times its duration (at most `MAX_SCAN_GAP`) return at once, unless
    /// a scan was asked for ([`Tailer::request_scan`]) and `ASKED_SCAN_FACTOR`
    /// times the last scan's duration passed: an idle large node then spends
    /// about 0.3 % of a core on scans. Small trees, and trees that change,
    /// are scanned at every call.
    pub fn scan(&mut self, now: Instant) {
        let periodic = self.next_scan.is_none_or(|next| now >= next);
        let asked = self.scan_wanted
            && self
                .last_scan
                .is_none_or(|(at, cost)| now >= at + cost.saturating_mul(ASKED_SCAN_FACTOR));
        if !periodic && !asked {
            return;
        }
        let started = Instant::now();
        let changed = self.scan_now(now);
        let cost = started.elapsed();
        self.scan_wanted = false;
        self.last_scan = Some((now, cost));
        self.next_scan = (!changed && cost > CHEAP_SCAN)
            .then(|| now + cost.saturating_mul(SCAN_COST_FACTOR).min(MAX_SCAN_GAP));
    }

    /// One full scan; true if it found anything new.
    fn scan_now(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let paths = self.opts.globs.expand();
        let mut seen: HashSet<FileId> = HashSet::with_capacity(paths.len());
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = file_id(&meta);
            if !seen.insert(id) {
                continue; // the same file through another path (symlink)
            }
            if let Some(t) = self.files.get_mut(&id) {
                t.gone_since = None;
                if t.path != path {
                    t.path = path;
                }
                if !t.is_open() && meta.len() != t.read_pos() {
                    changed = true;
                    self.reopen(id, now);
                }
                continue;
            }
            changed = true;
            self.track(id, path, now);
        }
        // Refreshed once a minute, not at every scan: a changed entry
        // makes the checkpoint file be written again, and the time only
        // matters against the 24 h TTL.
        self.committed
            .refresh_seen(&seen, unix_secs(), SEEN_REFRESH_SECS);
        for (id, t) in self.files.iter_mut() {
            if t.gone_since.is_none() && !seen.contains(id) {
                changed = true;
                t.gone_since = Some(now);
                self.live.insert(*id);
            }
        }
        self.scanned = true;
        self.publish();
        changed
    }

    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .open_files
            .store(self.open_files() as u64, Relaxed);
        self.stats
            .tracked_files
            .store(self.files.len() as u64, Relaxed);
        let lags = self
            .live
            .iter()
            .filter_map(|id| self.files.get(id))
            .filter(|t| t.is_open())
            .map(|t| (t.path.display().to_string(), t.lag()))
            .collect();
        *self.stats.read_lag.lock_or_recover() = lags;
    }

    /// Starts following a newly discovered file.
    fn track(&mut self, id: FileId, path: PathBuf, now: Instant) {
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot open file");
                return;
            }
        };
        let Ok(meta) = f.metadata() else { return };
        if file_id(&meta) != id {
            return; // replaced between stat and open; the next scan sees it
        }
        let size = meta.len();
        let Ok(fp) = fingerprint(&f, size) else {
            return;
        };
        let resumed = self.committed.get(id).and_then(|e| {
            let ok = fingerprint_matches(&f, size, e.fingerprint()).unwrap_or(false);
            // A file shorter than its checkpoint was truncated meanwhile.
            ok.then_some(if size < e.offset { 0 } else { e.offset })
        });
        let at_end = self.first_start && !self.scanned && self.opts.read_from == ReadFrom::End;
        let copy_of = if resumed.is_none() && !at_end {
            self.find_copy(&f, size)
        } else {
            None
        };
        let offset = match resumed {
            Some(o) => o,
            None if at_end => size,
            None => 0,
        };
        if resumed.is_none() || resumed == Some(0) {
            self.committed.apply(&Mark {
                id,
                fingerprint: fp,
                path: path.clone(),
                offset,
            });
        }
        let mut t = match copy_of {
            Some(of) => {
                tracing::info!(path = %path.display(), offset = of.offset, "new file is a copy of one already read; reading it after the copied part");
                Tracked::new_copy(id, path, fp, of, &self.opts, now)
            }
            None => {
                tracing::debug!(path = %path.display(), offset, "tracking file");
                Tracked::new(id, path, fp, offset, &self.opts, now)
            }
        };
        if self.open_files() < self.opts.max_open_files || self.make_room() {
            t.file = Some(f);
        }
        self.files.insert(id, t);
        self.live.insert(id);
        self.active.insert(id);
    }

    /// Closes the idle open file that was quiet the longest; false if none.
    fn make_room(&mut self) -> bool {
        let victim = self
            .live
            .iter()
            .filter_map(|id| self.files.get(id).map(|t| (id, t)))
            .filter(|(_, t)| t.is_open() && t.gone_since.is_none() && t.at_eof())
            .min_by_key(|(_, t)| t.last_activity)
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                if let Some(t) = self.files.get_mut(&id) {
                    t.file = None;
                }
                true
            }
            None => false,
        }
    }

    fn reopen(&mut self, id: FileId, now: Instant) {
        if self.open_files() >= self.opts.max_open_files && !self.make_room() {
            return;
        }
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        let Ok(f) = File::open(&t.path) else { return };
        match f.metadata() {
            Ok(m) if file_id(&m) == id => {
                t.file = Some(f);
                t.last_activity = now;
                self.live.insert(id);
            }
            _ => {}
        }
    }

    /// One round: up to a quantum from each open file, starting after the
    /// file where the last round stopped. Returns the bytes read.
    pub fn poll(&mut self, now: Instant, sink: &mut dyn Sink) -> usize {
        // Closed files that are still at a matching path have nothing to do
        // here (a scan or a change event reopens them when they change):
        // with thousands of idle files, a round visits only the open and
        // the gone ones, kept apart in `live`.
        let files = &self.files;
        self.live.retain(|id| {
            files
                .get(id)
                .is_some_and(|t| t.is_open() || t.gone_since.is_some())
        });
        let mut ids: Vec<FileId> = match self.cursor {
            Some(c) => self
                .live
                .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .chain(self.live.range(..=c))
                .copied()
                .collect(),
            None => self.live.iter().copied().collect(),
        };
        // Rotated-away files first, so their last lines precede the new
        // file's (a stable partition, without a lookup per comparison).
        if ids
            .iter()
            .any(|id| self.files.get(id).is_some_and(|t| t.gone_since.is_some()))
        {
            let (mut gone, live): (Vec<FileId>, Vec<FileId>) = ids
                .into_iter()
                .partition(|id| self.files.get(id).is_some_and(|t| t.gone_since.is_some()));
            gone.extend(live);
            ids = gone;
        }
        let mut total = 0;
        let mut drop_ids = Vec::new();
        for id in ids {
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            self.active.insert(id);
            match t.read_some(&self.opts, now, sink, &self.stats, &mut self.recent) {
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), error = %e, "read failed; closing the file until it changes");
                    t.file = None;
                }
            }
            self.cursor = Some(id);
            if t.should_drop(&self.opts, now) {
                drop_ids.push(id);
            } else if t.should_idle_close(&self.opts, now) {
                t.parser_flush(now, true, sink);
                t.file = None;
            }
            if total >= self.opts.round_budget {
                break;
            }
        }
        for id in drop_ids {
            if let Some(mut t) = self.files.remove(&id) {
                t.finish(now, sink);
                tracing::debug!(path = %t.path.display(), offset = t.read_pos(), "file finished");
                self.finished.push(t.mark());
            }
        }
        // Keep the last few truncation prefixes only.
        let excess = self.recent.len().saturating_sub(RECENT_PREFIXES);
        self.recent.drain(..excess);
        total
    }

    /// A tracked (or lately truncated) file whose read prefix the new file
    /// `f` starts with, byte for byte (fingerprint, then CRC-32 of the whole
    /// prefix): `f` is a copy made by copytruncate, and its first bytes were
    /// already read from the original.
    fn find_copy(&self, f: &File, size: u64) -> Option<Prefix> {
        let mut fps: HashMap<u32, Fingerprint> = HashMap::new();
        let candidates = self
            .files
            .values()
            .filter_map(|t| t.prefix())
            .chain(self.recent.iter().rev().copied());
        for c in candidates {
            if c.offset == 0 || c.offset > size || u64::from(c.fp.len) > size || c.fp.len == 0 {
                continue;
            }
            let fp = match fps.get(&c.fp.len) {
                Some(fp) => *fp,
                None => {
                    let fp = fingerprint(f, u64::from(c.fp.len)).ok()?;
                    fps.insert(c.fp.len, fp);
                    fp
                }
            };
            if fp != c.fp {
                continue;
            }
            if prefix_crc(f, c.offset).ok()? == c.crc {
                return Some(c);
            }
        }
        None
    }

    /// Emits multiline and partial records that waited past their timeout.
    pub fn flush_idle(&mut self, now: Instant, sink: &mut dyn Sink) {
        for id in &self.active {
            if let Some(t) = self.files.get_mut(id) {
                t.parser_flush(now, false, sink);
            }
        }
    }

    /// Checkpoint marks of every file whose safe offset moved since the last call.
    pub fn marks(&mut self) -> Vec<Mark> {
        let mut out = std::mem::take(&mut self.finished);
        let files = &mut self.files;
        self.active.retain(|id| {
            let Some(t) = files.get_mut(id) else {
                return false;
            };
            let safe = t.safe_offset();
            if t.marked != Some(safe) {
                t.marked = Some(safe);
                out.push(t.mark());
            }
            // Nothing can move until the file is read again (and so
            // visited), unless a parser still holds lines to flush.
            t.has_pending()
        });
        out
    }

    /// The path of a tracked file (for tests and logs).
    pub fn path_of(&self, id: FileId) -> Option<&Path> {
        self.files.get(&id).map(|t| t.path.as_path())
    }
}

#[cfg(test)]
mod tests;
