//! Float samples of many series read a series at a time across every file
//! of a time range ([`MetricStore::scan_floats`]).
//!
//! Every samples file is sorted by metric name, then series id (a hash of
//! the labels), so all files of a tenant share one order. A scan opens one
//! reader per file on the wanted rows (the series file says where they
//! are), walks the union of wanted series in that order, and takes each
//! series' rows from every file and its samples from the head at once. Each
//! file is decoded once for the whole range, and memory stays at a batch
//! per file plus one series, however long the range. The series are split
//! into contiguous parts, one thread each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType};
use arrow_buffer::ScalarBuffer;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, RowSelection, RowSelector};
use periscope_proto::{Labels, NAME_LABEL, label};

use super::files::{self, SeriesTable, format_err, open_samples, series_table};
use super::{MetricStore, TenantHead, metrics_dir, on_threads};
use crate::sync::RwLockRecover;
use crate::{StoreError, TenantId};

/// How a float scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatScan {
    /// Every matching series with a sample in the range was visited.
    Done,
    /// Some matching sample is a native histogram, or a file is not in the
    /// shared order: what was visited is incomplete, read with
    /// [`MetricStore::select`] instead.
    Unsupported,
}

/// Receives each series of a scan: the part (thread) it was read in, its
/// labels and its samples `(ms, value)` sorted by time, staleness markers
/// included. Series of one part come one at a time, in one thread. An
/// error stops the scan and is returned by it.
pub type FloatVisitor<'a> = dyn Fn(usize, &Labels, &[(i64, f64)]) -> Result<(), String> + Sync + 'a;

/// Rows read at once from a file.
const SCAN_BATCH_ROWS: usize = 4 << 10;

/// One file of a scan: its wanted series (indexes into the table's
/// entries), in the table's order.
struct ScanFile {
    path: PathBuf,
    /// Where two files hold a sample at the same time, the higher order's
    /// copy is kept.
    order: u64,
    table: Arc<SeriesTable>,
    wanted: Vec<u32>,
    /// The wanted series' places in the shared order.
    keys: Vec<(u32, u64)>,
}

/// A series of the scan: its place in the shared order, labels, and its
/// samples in the head if any.
struct Key<'a> {
    /// The metric name's rank among the scan's names, and the series id.
    key: (u32, u64),
    labels: &'a Labels,
    head: Option<usize>,
}

/// The wanted rows of one samples file, read in order.
struct RowCursor {
    reader: ParquetRecordBatchReader,
    ts: ScalarBuffer<i64>,
    vals: arrow_array::Float64Array,
    pos: usize,
}

impl RowCursor {
    /// A reader of the rows `(first, count)`, given in row order; `None`
    /// when the file is gone.
    fn open(
        path: &Path,
        rows: impl Iterator<Item = (u64, u64)>,
    ) -> Result<Option<RowCursor>, StoreError> {
        let Some(builder) = open_samples(path)? else {
            return Ok(None);
        };
        let total = builder.metadata().file_metadata().num_rows() as u64;
        let mut selectors = Vec::new();
        let mut at = 0u64;
        for (first, count) in rows {
            if first < at {
                return Err(format_err(path, "series rows overlap in the series file"));
            }
            if first > at {
                selectors.push(RowSelector::skip((first - at) as usize));
            }
            selectors.push(RowSelector::select(count as usize));
            at = first + count;
        }
        if at > total {
            return Err(format_err(
                path,
                "the series file names rows past the samples file's end",
            ));
        }
        if total > at {
            selectors.push(RowSelector::skip((total - at) as usize));
        }
        // Timestamps and values only: the series come from the series file.
        let mask = ProjectionMask::roots(builder.parquet_schema(), [2, 3]);
        let reader = builder
            .with_row_selection(RowSelection::from(selectors))
            .with_projection(mask)
            .with_batch_size(SCAN_BATCH_ROWS)
            .build()
            .map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
        Ok(Some(RowCursor {
            reader,
            ts: ScalarBuffer::from(Vec::<i64>::new()),
            vals: arrow_array::Float64Array::from(Vec::<f64>::new()),
            pos: 0,
        }))
    }

    /// Appends the samples of the next `n` rows with a time in
    /// `[start_ms, end_ms]` to `out`. `None` when one of the rows is a
    /// histogram; otherwise whether the rows' times were increasing.
    fn take(
        &mut self,
        path: &Path,
        mut n: u64,
        (start_ms, end_ms): (i64, i64),
        out: &mut Vec<(i64, f64)>,
    ) -> Result<Option<bool>, StoreError> {
        let mut sorted = true;
        let mut prev = i64::MIN;
        while n > 0 {
            if self.pos == self.ts.len() {
                let b = match self.reader.next() {
                    Some(b) => {
                        b.map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?
                    }
                    None => return Err(format_err(path, "ended before its series' rows")),
                };
                self.ts = b
                    .column(0)
                    .as_primitive::<TimestampMillisecondType>()
                    .values()
                    .clone();
                self.vals = b.column(1).as_primitive::<Float64Type>().clone();
                self.pos = 0;
            }
            let k = (n as usize).min(self.ts.len() - self.pos);
            let (from, to) = (self.pos, self.pos + k);
            self.pos = to;
            n -= k as u64;
            if self.vals.null_count() > 0 && (from..to).any(|i| self.vals.is_null(i)) {
                return Ok(None);
            }
            let times = &self.ts[from..to];
            let values = &self.vals.values()[from..to];
            if times[0] > prev && times.is_sorted_by(|a, b| a < b) {
                prev = times[k - 1];
                let lo = times.partition_point(|t| *t < start_ms);
                let hi = times.partition_point(|t| *t <= end_ms);
                out.extend(
                    times[lo..hi]
                        .iter()
                        .copied()
                        .zip(values[lo..hi].iter().copied()),
                );
            } else {
                sorted = false;
                out.extend(
                    times
                        .iter()
                        .copied()
                        .zip(values.iter().copied())
                        .filter(|(t, _)| (start_ms..=end_ms).contains(t)),
                );
            }
        }
        Ok(Some(sorted))
    }
}

/// Whether a file's wanted series are in the shared order, with their rows
/// in that order too.
fn in_shared_order(f: &ScanFile) -> bool {
    f.wanted.windows(2).all(|w| {
        let (a, b) = (
            &f.table.entries[w[0] as usize],
            &f.table.entries[w[1] as usize],
        );
        (a.name.as_str(), a.id) <= (b.name.as_str(), b.id) && a.first_row + a.rows <= b.first_row
    })
}

impl MetricStore {
    /// Hands every series of `tenant` that `keep` accepts (only `name`'s
    /// when given) with a sample in `[start_ms, end_ms]` to `visit`, with
    /// all its samples in the range, from up to `parts` threads. Unlike
    /// [`MetricStore::select`] it never holds more than one series per
    /// thread: a query over a day of thousands of series reads each file
    /// once and keeps only what it computes. Float samples only; see
    /// [`FloatScan::Unsupported`].
    #[allow(clippy::too_many_arguments)]
    pub fn scan_floats(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
        parts: usize,
        visit: &FloatVisitor<'_>,
    ) -> Result<FloatScan, String> {
        let Some(t) = self.tenant(tenant) else {
            return Ok(FloatScan::Done);
        };
        // The head's samples (its series and a flush in progress, merged),
        // and the files to read, oldest first.
        let (head, listed) = {
            let h = t.read_or_recover();
            let Some(head) = head_floats(&h, name, keep, start_ms, end_ms) else {
                return Ok(FloatScan::Unsupported);
            };
            let mut listed: Vec<(i64, u64, PathBuf)> = match &self.data {
                Some(data) => h
                    .manifest
                    .files
                    .iter()
                    .filter(|f| f.max_ts_ms >= start_ms && f.min_ts_ms <= end_ms)
                    .map(|f| {
                        (
                            f.min_ts_ms,
                            f.order,
                            metrics_dir(data, tenant).join(&f.partition).join(&f.name),
                        )
                    })
                    .collect(),
                None => Vec::new(),
            };
            listed.sort_by_key(|(min, order, _)| (*min, *order));
            (head, listed)
        };
        // Each file's series table (parsed on first use) and wanted series,
        // on up to `parts` threads.
        let opened: Vec<Option<ScanFile>> = on_threads(&listed, parts, |chunk| {
            // Files of the same series share their label sets: each set is
            // matched once.
            let mut kept = foldhash::HashMap::default();
            chunk
                .iter()
                .map(|(_, order, path)| scan_file(path, *order, name, keep, &mut kept))
                .collect()
        });
        let mut files = Vec::with_capacity(opened.len());
        for f in opened.into_iter().flatten() {
            if !in_shared_order(&f) {
                return Ok(FloatScan::Unsupported);
            }
            files.push(f);
        }
        // Metric names by rank, so that series compare as integers.
        let mut names: Vec<String> = head.iter().map(|h| h.0.clone()).collect();
        for f in &files {
            let mut last: Option<&str> = None;
            for i in &f.wanted {
                let name = f.table.entries[*i as usize].name.as_str();
                if last != Some(name) {
                    names.push(name.to_owned());
                    last = Some(name);
                }
            }
        }
        names.sort_unstable();
        names.dedup();
        let rank = |name: &str| {
            names
                .binary_search_by(|n| n.as_str().cmp(name))
                .unwrap_or(0) as u32
        };
        for f in &mut files {
            let mut last: Option<(&str, u32)> = None;
            let keys = f
                .wanted
                .iter()
                .map(|i| {
                    let e = &f.table.entries[*i as usize];
                    let r = match last {
                        Some((n, r)) if n == e.name => r,
                        _ => rank(&e.name),
                    };
                    last = Some((&e.name, r));
                    (r, e.id)
                })
                .collect();
            f.keys = keys;
        }
        // Every wanted series once, in the shared order; a series in the
        // head sorts before its copies in files, and the first copy stays.
        let mut keys: Vec<Key<'_>> = head
            .iter()
            .enumerate()
            .map(|(i, (name, id, labels, _))| Key {
                key: (rank(name), *id),
                labels,
                head: Some(i),
            })
            .collect();
        for f in &files {
            keys.extend(f.wanted.iter().zip(&f.keys).map(|(i, key)| Key {
                key: *key,
                labels: &f.table.entries[*i as usize].labels,
                head: None,
            }));
        }
        keys.sort_unstable_by_key(|k| (k.key, k.head.is_none()));
        keys.dedup_by_key(|k| k.key);
        if keys.is_empty() {
            return Ok(FloatScan::Done);
        }
        let parts = parts.clamp(1, keys.len());
        let per_part = keys.len().div_ceil(parts);
        let stop = AtomicBool::new(false);
        let range = (start_ms, end_ms);
        let results: Vec<Result<FloatScan, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = keys
                .chunks(per_part)
                .enumerate()
                .map(|(part, keys)| {
                    let (files, head, stop) = (&files, &head, &stop);
                    scope.spawn(move || {
                        let r = scan_part(part, keys, files, head, range, visit, stop);
                        if r != Ok(FloatScan::Done) {
                            stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a scan thread panicked".to_owned()))
                })
                .collect()
        });
        // An error first, then a scan that could not finish.
        let mut out = FloatScan::Done;
        for r in results {
            match r? {
                FloatScan::Done => {}
                FloatScan::Unsupported => out = FloatScan::Unsupported,
            }
        }
        Ok(out)
    }
}

/// A file's wanted series; `None` when it has none, or is gone or
/// unreadable (as `select` does, with a warning).
fn scan_file(
    path: &Path,
    order: u64,
    name: Option<&str>,
    keep: &(dyn Fn(&Labels) -> bool + Sync),
    kept: &mut foldhash::HashMap<*const Labels, (Arc<Labels>, bool)>,
) -> Option<ScanFile> {
    let series_path = path.with_file_name(files::series_file_name(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    ));
    let table = match series_table(&series_path) {
        Ok(t) => t?,
        Err(e) => {
            tracing::warn!(error = %e, "failed to read metric file");
            return None;
        }
    };
    let wanted: Vec<u32> = (0..table.entries.len() as u32)
        .filter(|i| {
            let e = &table.entries[*i as usize];
            // The memo holds the label set, so its address is not reused.
            name.is_none_or(|n| e.name == n)
                && kept
                    .entry(Arc::as_ptr(&e.labels))
                    .or_insert_with(|| (e.labels.clone(), keep(&e.labels)))
                    .1
        })
        .collect();
    (!wanted.is_empty()).then(|| ScanFile {
        path: path.to_owned(),
        order,
        table,
        wanted,
        keys: Vec::new(),
    })
}

/// A series of the head for a scan: name, id, labels, float samples.
type HeadFloats = (String, u64, Labels, Vec<(i64, f64)>);

/// The head's matching series with float samples in the range, a series
/// being flushed merged with its newer samples; `None` when one has a
/// histogram sample in the range.
fn head_floats(
    h: &TenantHead,
    name: Option<&str>,
    keep: &(dyn Fn(&Labels) -> bool + Sync),
    start_ms: i64,
    end_ms: i64,
) -> Option<Vec<HeadFloats>> {
    let mut out: Vec<HeadFloats> = Vec::new();
    let mut index: foldhash::HashMap<Labels, usize> = Default::default();
    let mut merged = Vec::new();
    let mut histogram = false;
    h.each_series(name, |s| {
        if histogram
            || name.is_some_and(|n| label(&s.labels, NAME_LABEL) != Some(n))
            || !keep(&s.labels)
        {
            return;
        }
        let lo = s.histograms.partition_point(|(t, _)| *t < start_ms);
        if s.histograms.get(lo).is_some_and(|(t, _)| *t <= end_ms) {
            histogram = true;
            return;
        }
        let lo = s.floats.partition_point(|(t, _)| *t < start_ms);
        let hi = s.floats.partition_point(|(t, _)| *t <= end_ms);
        if lo == hi {
            return;
        }
        match index.get(&s.labels) {
            // The head's series comes before the same series being
            // flushed: its copy of a sample is newer.
            Some(i) => {
                out[*i].3.extend_from_slice(&s.floats[lo..hi]);
                merged.push(*i);
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push((
                    label(&s.labels, NAME_LABEL).unwrap_or("").to_owned(),
                    files::series_id(&s.labels),
                    s.labels.clone(),
                    s.floats[lo..hi].to_vec(),
                ));
            }
        }
    });
    if histogram {
        return None;
    }
    for i in merged {
        let samples = &mut out[i].3;
        samples.sort_by_key(|(t, _)| *t);
        samples.dedup_by_key(|(t, _)| *t);
    }
    Some(out)
}

/// One part of a scan: its series (contiguous in the shared order) from
/// every file and the head.
fn scan_part(
    part: usize,
    keys: &[Key<'_>],
    files: &[ScanFile],
    head: &[HeadFloats],
    range: (i64, i64),
    visit: &FloatVisitor<'_>,
    stop: &AtomicBool,
) -> Result<FloatScan, String> {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(FloatScan::Done);
    };
    let (lo_key, hi_key) = (first.key, last.key);
    // Per file: its cursor, its wanted series within this part, the next
    // one to take.
    let mut cursors = Vec::new();
    for f in files {
        let lo = f.keys.partition_point(|k| *k < lo_key);
        let hi = f.keys.partition_point(|k| *k <= hi_key);
        if lo == hi {
            continue;
        }
        let wanted = (&f.wanted[lo..hi], &f.keys[lo..hi]);
        let rows = wanted.0.iter().map(|i| {
            let e = &f.table.entries[*i as usize];
            (e.first_row, e.rows)
        });
        match RowCursor::open(&f.path, rows) {
            Ok(Some(c)) => cursors.push((f, c, wanted, 0usize)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "failed to read metric file"),
        }
    }
    let mut buf: Vec<(i64, f64)> = Vec::new();
    // Where each file's (or the head's) samples start in `buf`, and their
    // precedence.
    let mut runs: Vec<(usize, u64)> = Vec::new();
    for key in keys {
        if stop.load(Ordering::Relaxed) {
            return Ok(FloatScan::Done);
        }
        buf.clear();
        runs.clear();
        let mut in_order = true;
        for (f, cursor, wanted, next) in &mut cursors {
            while let Some(i) = wanted.0.get(*next).copied() {
                if wanted.1[*next] > key.key {
                    break;
                }
                *next += 1;
                let start = buf.len();
                let rows = f.table.entries[i as usize].rows;
                match cursor
                    .take(&f.path, rows, range, &mut buf)
                    .map_err(|e| e.to_string())?
                {
                    None => return Ok(FloatScan::Unsupported),
                    Some(sorted) => in_order &= sorted,
                }
                if buf.len() > start {
                    in_order &= start == 0 || buf[start - 1].0 < buf[start].0;
                    runs.push((start, f.order));
                }
            }
        }
        if let Some(h) = key.head {
            let start = buf.len();
            buf.extend_from_slice(&head[h].3);
            if buf.len() > start {
                in_order &= start == 0 || buf[start - 1].0 < buf[start].0;
                runs.push((start, u64::MAX));
            }
        }
        if !in_order {
            merge_runs(&mut buf, &runs);
        }
        if !buf.is_empty() {
            visit(part, key.labels, &buf)?;
        }
    }
    Ok(FloatScan::Done)
}

/// Sorts a series' samples gathered from several sources by time, keeping
/// for each time the copy of the source with the highest precedence.
fn merge_runs(buf: &mut Vec<(i64, f64)>, runs: &[(usize, u64)]) {
    let mut all: Vec<(i64, std::cmp::Reverse<u64>, f64)> = Vec::with_capacity(buf.len());
    for (r, (start, precedence)) in runs.iter().enumerate() {
        let end = runs.get(r + 1).map_or(buf.len(), |(s, _)| *s);
        all.extend(
            buf[*start..end]
                .iter()
                .map(|(t, v)| (*t, std::cmp::Reverse(*precedence), *v)),
        );
    }
    all.sort_by_key(|(t, p, _)| (*t, *p));
    all.dedup_by_key(|(t, ..)| *t);
    buf.clear();
    buf.extend(all.into_iter().map(|(t, _, v)| (t, v)));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use periscope_proto::{PromBatch, PromSample, SampleValue};

    use super::*;
    use crate::DataDir;
    use crate::metrics::MetricStoreOptions;
    use crate::metrics::tests::s as sample;
    use crate::partition::HOUR_MS;

    fn append(store: &MetricStore, samples: Vec<PromSample>, lsn: u64) {
        let t = TenantId::default_tenant();
        store.append_at(
            &t,
            PromBatch {
                samples,
                ..Default::default()
            },
            lsn,
        );
    }

    type Found = BTreeMap<Labels, Vec<(i64, u64)>>;

    /// What `select` returns, as floats (bit patterns, so that NaN compares).
    fn selected(
        store: &MetricStore,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        (lo, hi): (i64, i64),
    ) -> Found {
        store
            .select(&TenantId::default_tenant(), name, keep, lo, hi)
            .into_iter()
            .map(|(l, s)| {
                let floats = s
                    .into_iter()
                    .map(|(t, v)| match v {
                        SampleValue::Float(f) => (t, f.to_bits()),
                        SampleValue::Histogram(_) => panic!("histogram"),
                    })
                    .collect();
                (l, floats)
            })
            .collect()
    }

    fn scanned(
        store: &MetricStore,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        (lo, hi): (i64, i64),
        parts: usize,
    ) -> (FloatScan, Found) {
        let found = Mutex::new(Found::new());
        let visit = |part: usize, l: &Labels, s: &[(i64, f64)]| {
            assert!(part < parts);
            let floats = s.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            let old = found.lock().unwrap().insert(l.clone(), floats);
            assert!(old.is_none(), "{l:?} visited twice");
            Ok(())
        };
        let r = store
            .scan_floats(
                &TenantId::default_tenant(),
                name,
                keep,
                lo,
                hi,
                parts,
                &visit,
            )
            .unwrap();
        (r, found.into_inner().unwrap())
    }

    #[test]
    fn rows_out_of_order_in_a_file_are_merged_sorted_with_the_newest_copy_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples-1.parquet");
        let labels = sample("a", "j", 0, 0.0).labels;
        let rows = vec![files::SeriesRows {
            labels: &labels,
            name: "a",
            samples: [3, 1, 2, 2, 9]
                .iter()
                .map(|t| (t * 1000, SampleValue::Float(*t as f64)))
                .collect(),
        }];
        files::write_file(&path, rows, files::FLUSH_ZSTD_LEVEL).unwrap();
        let mut cursor = RowCursor::open(&path, [(0, 5)].into_iter())
            .unwrap()
            .unwrap();
        let mut buf = Vec::new();
        // Times in range only; reported as not increasing.
        let sorted = cursor.take(&path, 5, (0, 5000), &mut buf).unwrap();
        assert_eq!(sorted, Some(false));
        assert_eq!(buf.len(), 4);
        // The head's copy of time 2 (precedence above every file) is kept.
        buf.push((2000, 20.0));
        merge_runs(&mut buf, &[(0, 1), (4, u64::MAX)]);
        assert_eq!(buf, vec![(1000, 1.0), (2000, 20.0), (3000, 3.0)]);
        // A file naming rows the samples file does not have is an error.
        assert!(RowCursor::open(&path, [(3, 5)].into_iter()).is_err());
    }

    #[test]
    fn a_scan_sees_what_select_sees_across_files_and_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        let jobs: Vec<String> = (0..20).map(|i| format!("j{i}")).collect();
        // Two hours of two metrics, one sample a minute, in one flush.
        let mut samples = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            for m in 0..120 {
                let ts = m * 60_000;
                samples.push(sample("req_total", job, ts, (m * (i as i64 + 1)) as f64));
                samples.push(sample("up", job, ts + 7, 1.0));
            }
        }
        append(&store, samples, 1);
        store.flush().unwrap();
        // A second file rewrites some samples of hour 1 and adds hour 2 for
        // half the jobs, with a NaN and a staleness-marker-like value.
        let mut samples = Vec::new();
        for job in jobs.iter().step_by(2) {
            samples.push(sample("req_total", job, 90 * 60_000, -5.0));
            for m in 120..150 {
                samples.push(sample("req_total", job, m * 60_000, m as f64));
            }
            samples.push(sample("req_total", job, 150 * 60_000, f64::NAN));
        }
        append(&store, samples, 2);
        store.flush().unwrap();
        // The head: newer copies of flushed samples, later samples, and a
        // series only here.
        let mut samples = vec![sample("req_total", "head-only", 140 * 60_000, 3.0)];
        for job in jobs.iter().take(5) {
            samples.push(sample("req_total", job, 130 * 60_000, 1e9));
            samples.push(sample("req_total", job, 170 * 60_000, 2e9));
        }
        append(&store, samples, 3);

        let not_j3 = |l: &Labels| label(l, "job") != Some("j3");
        let all = |_: &Labels| true;
        for (name, keep) in [
            (
                Some("req_total"),
                &not_j3 as &(dyn Fn(&Labels) -> bool + Sync),
            ),
            (None, &all),
            (Some("nothing"), &all),
        ] {
            for range in [
                (0, 3 * HOUR_MS),
                (45 * 60_000, 135 * 60_000),
                (150 * 60_000, 150 * 60_000),
            ] {
                let want = selected(&store, name, keep, range);
                for parts in [1, 2, 3, 7] {
                    let (r, got) = scanned(&store, name, keep, range, parts);
                    assert_eq!(r, FloatScan::Done);
                    assert_eq!(got, want, "{name:?} {range:?} in {parts} parts");
                }
            }
        }
        let (_, got) = scanned(&store, Some("req_total"), &all, (0, 3 * HOUR_MS), 2);
        assert_eq!(got.len(), 21);

        // A histogram in the range: left to `select`; outside it, no matter.
        store.append_at(
            &TenantId::default_tenant(),
            PromBatch {
                samples: vec![PromSample {
                    labels: sample("req_total", "j1", 0, 0.0).labels,
                    timestamp_ms: 175 * 60_000,
                    value: SampleValue::Histogram(Box::default()),
                }],
                ..Default::default()
            },
            4,
        );
        let (r, _) = scanned(&store, Some("req_total"), &all, (0, 3 * HOUR_MS), 2);
        assert_eq!(r, FloatScan::Unsupported);
        let (r, _) = scanned(&store, Some("req_total"), &all, (0, 2 * HOUR_MS), 2);
        assert_eq!(r, FloatScan::Done);
        store.flush().unwrap();
        let (r, _) = scanned(&store, Some("req_total"), &all, (0, 3 * HOUR_MS), 2);
        assert_eq!(r, FloatScan::Unsupported);

        // An error from the visitor stops the scan and comes back.
        let err = store
            .scan_floats(
                &TenantId::default_tenant(),
                Some("up"),
                &all,
                0,
                HOUR_MS,
                2,
                &|_, _, _| Err("enough".to_owned()),
            )
            .unwrap_err();
        assert_eq!(err, "enough");
    }
}
