//! The metric store: samples of Prometheus-shaped series per tenant.
//!
//! New samples go to an in-memory head. [`MetricStore::flush`] writes the
//! whole head to Parquet (`files.rs`: one file per tenant and hour) and then
//! each tenant's manifest with the WAL position the flush covers; the WAL
//! releases metric entries up to it. Replay skips a tenant's entries at or
//! below its manifest's position, so every acknowledged sample is stored
//! exactly once after a crash. Queries read the head, a flush in progress and
//! the files. The manifest and the lifecycle of files (publish, replace with
//! a deletion grace, delete unlisted on open) are `fileset.rs`'s;
//! compaction is `compact.rs`.

mod compact;
mod files;
#[cfg(test)]
mod flush_tests;
mod scan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use periscope_proto::{
    Labels, MetricMeta, NAME_LABEL, NativeHistogram, PromBatch, SampleValue, SeriesRef, label,
};

use crate::fileset::{self, Graveyard};
use crate::sync::{MutexRecover, RwLockRecover};
use crate::{DataDir, ReadBudget, StoreError, TenantId};

pub use scan::{FloatScan, FloatVisitor};

use crate::partition::HOUR_MS;

fn metrics_dir(data: &DataDir, tenant: &TenantId) -> PathBuf {
    data.metrics_dir(tenant)
}

/// Tuning of the metric store.
#[derive(Clone, Debug)]
pub struct MetricStoreOptions {
    /// Samples older than this are dropped. Default 30 days.
    pub retention: Duration,
}

impl Default for MetricStoreOptions {
    fn default() -> Self {
        MetricStoreOptions {
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A series' labels and samples `(ms, value)`, sorted by time.
pub type SeriesSamples = (Labels, Vec<(i64, SampleValue)>);

/// One series in the head: float samples and native-histogram samples,
/// each sorted by timestamp (ms).
#[derive(Clone, Debug, Default)]
pub struct HeadSeries {
    pub labels: Labels,
    pub floats: Vec<(i64, f64)>,
    pub histograms: Vec<(i64, NativeHistogram)>,
}

impl HeadSeries {
    fn insert_float(&mut self, ts: i64, v: f64) {
        match self.floats.last() {
            Some((last, _)) if *last < ts => self.floats.push((ts, v)),
            None => self.floats.push((ts, v)),
            _ => match self.floats.binary_search_by_key(&ts, |(t, _)| *t) {
                // A repeated timestamp keeps the latest value, as a retried write intends.
                Ok(i) => self.floats[i].1 = v,
                Err(i) => self.floats.insert(i, (ts, v)),
            },
        }
    }

    fn insert_histogram(&mut self, ts: i64, h: NativeHistogram) {
        match self.histograms.binary_search_by_key(&ts, |(t, _)| *t) {
            Ok(i) => self.histograms[i].1 = h,
            Err(i) => self.histograms.insert(i, (ts, h)),
        }
    }

    /// Whether the series has a sample in `[start_ms, end_ms]`.
    pub fn has_samples_in(&self, start_ms: i64, end_ms: i64) -> bool {
        let lo = self.floats.partition_point(|(t, _)| *t < start_ms);
        let hlo = self.histograms.partition_point(|(t, _)| *t < start_ms);
        self.floats.get(lo).is_some_and(|(t, _)| *t <= end_ms)
            || self.histograms.get(hlo).is_some_and(|(t, _)| *t <= end_ms)
    }

    /// Samples in `[start_ms, end_ms]`, floats and histograms merged by time.
    pub fn samples_in(&self, start_ms: i64, end_ms: i64) -> Vec<(i64, SampleValue)> {
        let lo = self.floats.partition_point(|(t, _)| *t < start_ms);
        let hi = self.floats.partition_point(|(t, _)| *t <= end_ms);
        let mut out: Vec<(i64, SampleValue)> = self.floats[lo..hi]
            .iter()
            .map(|(t, v)| (*t, SampleValue::Float(*v)))
            .collect();
        if !self.histograms.is_empty() {
            let lo = self.histograms.partition_point(|(t, _)| *t < start_ms);
            let hi = self.histograms.partition_point(|(t, _)| *t <= end_ms);
            out.extend(
                self.histograms[lo..hi]
                    .iter()
                    .map(|(t, h)| (*t, SampleValue::Histogram(Box::new(h.clone())))),
            );
            out.sort_by_key(|(t, _)| *t);
        }
        out
    }
}

#[derive(Default)]
struct TenantHead {
    /// Samples being written by a flush (still visible to queries).
    flushing: Vec<HeadSeries>,
    manifest: files::Manifest,
    series: Vec<HeadSeries>,
    by_labels: foldhash::HashMap<Labels, usize>,
    /// Series by the number the converter gave their labels ([`SeriesRef`]).
    by_ref: foldhash::HashMap<u64, usize>,
    by_name: foldhash::HashMap<String, Vec<usize>>,
    metadata: BTreeMap<String, MetricMeta>,
    samples: u64,
    /// Per hour (Unix ms / 1 h) of sample time, the write sequence of the
    /// last append with a sample in that hour; see [`MetricStore::generation`].
    written: BTreeMap<i64, u64>,
    /// The write sequence of the last retention pass that dropped anything.
    dropped: u64,
    /// The oldest WAL entry with samples in `series` (not yet in files),
    /// and the same for `flushing`: the WAL is released only below it.
    first_lsn: Option<u64>,
    flushing_first_lsn: Option<u64>,
    /// Set while the tenant's flushes fail: the next attempt waits until then.
    retry: Option<Retry>,
}

/// A tenant's failed flushes, for its retry backoff.
#[derive(Debug)]
struct Retry {
    failures: u32,
    not_before: Instant,
}

/// How long a tenant whose flush failed `failures` times in a row waits
/// before the next attempt: 1 s, doubling, at most a minute.
fn retry_backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// What [`MetricStore::flush_tenants`] did.
#[derive(Debug, Default)]
pub struct MetricFlush {
    /// The WAL position now durable for metrics: every metric entry at or
    /// below it is in files. Below the oldest entry of a tenant whose
    /// samples are still in memory (failed or waiting to retry).
    pub durable_lsn: u64,
    /// Tenants whose files or manifest could not be written, with why.
    /// Their samples stay in memory and are retried after a backoff.
    pub failed: Vec<(TenantId, StoreError)>,
    /// Tenants not attempted this time: still waiting out a backoff.
    pub deferred: usize,
}

impl TenantHead {
    /// The index of the series with `labels`, added when new.
    fn series_index(&mut self, labels: &Labels, stats: &MetricStoreStats) -> usize {
        if let Some(i) = self.by_labels.get(labels) {
            return *i;
        }
        let i = self.series.len();
        let name = label(labels, NAME_LABEL).unwrap_or("").to_owned();
        self.by_name.entry(name).or_default().push(i);
        self.by_labels.insert(labels.clone(), i);
        self.series.push(HeadSeries {
            labels: labels.clone(),
            ..Default::default()
        });
        stats
            .series
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        i
    }

    /// The index of a series known by reference.
    fn ref_index(&mut self, series: &SeriesRef, stats: &MetricStoreStats) -> usize {
        if let Some(i) = self.by_ref.get(&series.id) {
            return *i;
        }
        // Numbers of series the converter has forgotten pile up: start over.
        if self.by_ref.len() > 2 * self.series.len() + 1024 {
            self.by_ref.clear();
        }
        let i = self.series_index(&series.labels, stats);
        self.by_ref.insert(series.id, i);
        i
    }

    /// Calls `f` with the head's series of metric `name` (every series when
    /// `None`), then with every series being flushed (`f` checks their name).
    fn each_series(&self, name: Option<&str>, mut f: impl FnMut(&HeadSeries)) {
        match name {
            Some(n) => {
                for i in self.by_name.get(n).into_iter().flatten() {
                    f(&self.series[*i]);
                }
            }
            None => self.series.iter().for_each(&mut f),
        }
        self.flushing.iter().for_each(f);
    }
}

/// Counters for self-metrics.
#[derive(Debug, Default)]
pub struct MetricStoreStats {
    pub samples_appended: std::sync::atomic::AtomicU64,
    pub series: std::sync::atomic::AtomicU64,
}

/// Every tenant's series.
pub struct MetricStore {
    tenants: RwLock<HashMap<TenantId, Arc<RwLock<TenantHead>>>>,
    /// Counts appends and retention drops, for [`MetricStore::generation`].
    write_seq: AtomicU64,
    opts: MetricStoreOptions,
    stats: MetricStoreStats,
    /// Where files go; `None` keeps everything in memory (tests).
    data: Option<DataDir>,
    /// The last WAL position appended to the head.
    last_lsn: AtomicU64,
    /// Samples in the head since the last flush, and when the first arrived.
    unflushed: AtomicU64,
    first_unflushed: Mutex<Option<Instant>>,
    flush_lock: Mutex<()>,
    /// The WAL position of the flush in progress.
    cut: AtomicU64,
    /// Files replaced by compaction, deleted after their grace.
    graveyard: Graveyard,
}

impl std::fmt::Debug for MetricStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricStore").finish_non_exhaustive()
    }
}

impl MetricStore {
    /// A store that keeps everything in memory.
    pub fn new(opts: MetricStoreOptions) -> Arc<MetricStore> {
        Arc::new(MetricStore {
            tenants: RwLock::new(HashMap::new()),
            write_seq: AtomicU64::new(0),
            opts,
            stats: MetricStoreStats::default(),
            data: None,
            last_lsn: AtomicU64::new(0),
            unflushed: AtomicU64::new(0),
            first_unflushed: Mutex::new(None),
            flush_lock: Mutex::new(()),
            cut: AtomicU64::new(0),
            graveyard: Graveyard::default(),
        })
    }

    /// Opens every tenant's manifest (deleting files none lists).
    pub fn open(data: &DataDir, opts: MetricStoreOptions) -> Result<Arc<MetricStore>, StoreError> {
        let mut tenants = HashMap::new();
        for tenant in crate::layout::tenants_with(data, "metrics")? {
            let head = TenantHead {
                manifest: files::read_manifest(&metrics_dir(data, &tenant))?,
                ..Default::default()
            };
            tenants.insert(tenant, Arc::new(RwLock::new(head)));
        }
        let store = MetricStore::new(opts);
        let mut store = Arc::try_unwrap(store).unwrap_or_else(|_| unreachable!("fresh Arc"));
        store.data = Some(data.clone());
        *store.tenants.get_mut().unwrap_or_else(|p| p.into_inner()) = tenants;
        Ok(Arc::new(store))
    }

    /// The WAL position up to which a tenant's samples are in files.
    pub fn durable_lsn(&self, tenant: &TenantId) -> u64 {
        self.tenant(tenant)
            .map(|t| t.read_or_recover().manifest.durable_lsn)
            .unwrap_or(0)
    }

    /// The highest WAL position any manifest records.
    pub fn max_durable_lsn(&self) -> u64 {
        self.tenants
            .read_or_recover()
            .values()
            .map(|t| t.read_or_recover().manifest.durable_lsn)
            .max()
            .unwrap_or(0)
    }

    /// Whether the head holds `max_samples` or has held samples for `max_age`.
    pub fn flush_due(&self, max_samples: u64, max_age: Duration) -> bool {
        self.unflushed.load(Ordering::Relaxed) >= max_samples
            || self
                .first_unflushed
                .lock_or_recover()
                .is_some_and(|t| t.elapsed() >= max_age)
    }

    /// Writes the head to files and publishes them; returns the WAL position
    /// now durable for metrics (every metric entry at or below it), or the
    /// first tenant's error if any failed (see [`MetricStore::flush_tenants`]).
    pub fn flush(&self) -> Result<u64, StoreError> {
        let report = self.flush_tenants();
        match report.failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(report.durable_lsn),
        }
    }

    /// Writes each tenant's head to files and publishes them, one tenant at
    /// a time: a tenant that fails (its directory cannot be written, say)
    /// keeps its samples in the head, is retried after a backoff and holds
    /// back only the WAL position (see [`MetricFlush::durable_lsn`]); the
    /// other tenants' files are written and published all the same.
    pub fn flush_tenants(&self) -> MetricFlush {
        let _f = self.flush_lock.lock_or_recover();
        let now = Instant::now();
        let Some(data) = self.data.clone() else {
            return MetricFlush {
                durable_lsn: self.last_lsn.load(Ordering::SeqCst),
                ..Default::default()
            };
        };
        // Cut: every tenant's head (but those waiting out a retry backoff)
        // moves to `flushing` at one WAL position.
        let (tenants, deferred, cut) = {
            let map = self.tenants.write_or_recover();
            let cut = self.last_lsn.load(Ordering::SeqCst);
            self.unflushed.store(0, Ordering::Relaxed);
            *self.first_unflushed.lock_or_recover() = None;
            let mut list = Vec::new();
            let mut deferred = Vec::new();
            for (k, t) in map.iter() {
                let mut h = t.write_or_recover();
                if h.retry.as_ref().is_some_and(|r| r.not_before > now) {
                    deferred.push(t.clone());
                    continue;
                }
                let snapshot: Vec<HeadSeries> = h
                    .series
                    .iter_mut()
                    .filter(|s| !s.floats.is_empty() || !s.histograms.is_empty())
                    .map(|s| HeadSeries {
                        labels: s.labels.clone(),
                        floats: std::mem::take(&mut s.floats),
                        histograms: std::mem::take(&mut s.histograms),
                    })
                    .collect();
                h.flushing = snapshot;
                h.flushing_first_lsn = h.first_lsn.take();
                list.push((k.clone(), t.clone()));
            }
            drop(map);
            self.cut.store(cut, Ordering::SeqCst);
            (list, deferred, cut)
        };
        let mut report = MetricFlush {
            durable_lsn: cut,
            failed: Vec::new(),
            deferred: deferred.len(),
        };
        // Per tenant: files, then its manifest. A failure stays with its tenant.
        let mut held_back = deferred;
        for (tenant, t) in tenants {
            let published = self
                .write_tenant_files(&data, &tenant, &t, cut)
                .and_then(|m| m.write(&data.metrics_dir(&tenant)).map(|()| m));
            let mut h = t.write_or_recover();
            match published {
                Ok(manifest) => {
                    h.manifest = manifest;
                    h.flushing.clear();
                    h.flushing_first_lsn = None;
                    h.retry = None;
                }
                Err(e) => {
                    // Back to the head, to be written by a later flush.
                    for s in std::mem::take(&mut h.flushing) {
                        if let Some(i) = h.by_labels.get(&s.labels).copied() {
                            for (ts, v) in s.floats {
                                h.series[i].insert_float(ts, v);
                            }
                            for (ts, v) in s.histograms {
                                h.series[i].insert_histogram(ts, v);
                            }
                        }
                    }
                    if let Some(first) = h.flushing_first_lsn.take() {
                        h.first_lsn = Some(h.first_lsn.map_or(first, |f| f.min(first)));
                    }
                    let failures = h.retry.as_ref().map_or(0, |r| r.failures) + 1;
                    h.retry = Some(Retry {
                        failures,
                        not_before: now + retry_backoff(failures),
                    });
                    drop(h);
                    report.failed.push((tenant, e));
                    held_back.push(t);
                }
            }
        }
        // What stays in the head: re-arm the age trigger (a failed flush
        // must be retried even if no new sample arrives), and release the
        // WAL only below the oldest entry a held-back tenant still needs.
        let mut pending = 0;
        for t in &held_back {
            let h = t.read_or_recover();
            pending += h
                .series
                .iter()
                .map(|s| (s.floats.len() + s.histograms.len()) as u64)
                .sum::<u64>();
            if let Some(first) = h.first_lsn {
                report.durable_lsn = report.durable_lsn.min(first.saturating_sub(1));
            }
        }
        if pending > 0 {
            self.unflushed.fetch_add(pending, Ordering::Relaxed);
            self.first_unflushed.lock_or_recover().get_or_insert(now);
        }
        report
    }

    fn write_tenant_files(
        &self,
        data: &DataDir,
        tenant: &TenantId,
        t: &Arc<RwLock<TenantHead>>,
        cut: u64,
    ) -> Result<files::Manifest, StoreError> {
        let dir = data.metrics_dir(tenant);
        let h = t.read_or_recover();
        let mut manifest = h.manifest.clone();
        manifest.durable_lsn = manifest.durable_lsn.max(cut);
        let mut by_hour: BTreeMap<i64, Vec<files::SeriesRows<'_>>> = BTreeMap::new();
        for s in &h.flushing {
            let name = label(&s.labels, NAME_LABEL).unwrap_or("");
            let mut per_hour: BTreeMap<i64, Vec<(i64, SampleValue)>> = BTreeMap::new();
            for (ts, v) in s.samples_in(i64::MIN, i64::MAX) {
                per_hour
                    .entry(ts.div_euclid(HOUR_MS) * HOUR_MS)
                    .or_default()
                    .push((ts, v));
            }
            for (hour, samples) in per_hour {
                by_hour.entry(hour).or_default().push(files::SeriesRows {
                    labels: &s.labels,
                    name,
                    samples,
                });
            }
        }
        for (hour, series) in by_hour {
            let partition = crate::partition::partition_dir_name(hour * 1_000_000);
            let pdir = dir.join(&partition);
            std::fs::create_dir_all(&pdir).map_err(StoreError::io("failed to create", &pdir))?;
            let order = manifest.next_file;
            let name = format!("samples-{order}.parquet");
            manifest.next_file += 1;
            let rows: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
            let min_ts = series
                .iter()
                .filter_map(|s| s.samples.first())
                .map(|x| x.0)
                .min()
                .unwrap_or(0);
            let max_ts = series
                .iter()
                .filter_map(|s| s.samples.last())
                .map(|x| x.0)
                .max()
                .unwrap_or(0);
            let bytes = files::write_file(&pdir.join(&name), series, files::FLUSH_ZSTD_LEVEL)?;
            crate::layout::sync_dir(&pdir)?;
            manifest.files.push(files::MetricFile {
                partition,
                name,
                order,
                min_ts_ms: min_ts,
                max_ts_ms: max_ts,
                rows,
                bytes,
            });
        }
        Ok(manifest)
    }

    pub fn stats(&self) -> &MetricStoreStats {
        &self.stats
    }

    fn tenant(&self, tenant: &TenantId) -> Option<Arc<RwLock<TenantHead>>> {
        self.tenants.read_or_recover().get(tenant).cloned()
    }

    /// Adds the samples of WAL entry `lsn`.
    pub fn append_at(&self, tenant: &TenantId, batch: PromBatch, lsn: u64) {
        self.insert(tenant, batch, Some(lsn));
    }

    /// Adds a batch of samples not from the WAL (derived series); any order,
    /// a repeated timestamp replaces.
    pub fn append(&self, tenant: &TenantId, batch: PromBatch) {
        self.insert(tenant, batch, None);
    }

    fn insert(&self, tenant: &TenantId, batch: PromBatch, lsn: Option<u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        // The map's read lock is held for the whole insertion, so a flush
        // (which takes it for writing to cut) sees each entry whole, with
        // its WAL position.
        let map = loop {
            let map = self.tenants.read_or_recover();
            if map.contains_key(tenant) {
                break map;
            }
            drop(map);
            self.tenants
                .write_or_recover()
                .entry(tenant.clone())
                .or_default();
        };
        let t = map.get(tenant).expect("created above");
        let mut h = t.write_or_recover();
        let n = batch.len() as u64;
        for m in batch.metadata {
            h.metadata.insert(m.name.clone(), m);
        }
        let seq = self.write_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last_hour = None;
        let mut written = |h: &mut TenantHead, ts: i64| {
            let hour = ts.div_euclid(HOUR_MS);
            if last_hour != Some(hour) {
                last_hour = Some(hour);
                h.written.insert(hour, seq);
            }
        };
        for s in batch.samples {
            written(&mut h, s.timestamp_ms);
            let idx = h.series_index(&s.labels, &self.stats);
            match s.value {
                SampleValue::Float(v) => h.series[idx].insert_float(s.timestamp_ms, v),
                SampleValue::Histogram(hist) => {
                    h.series[idx].insert_histogram(s.timestamp_ms, *hist)
                }
            }
        }
        for s in batch.ref_samples {
            written(&mut h, s.timestamp_ms);
            let idx = h.ref_index(&s.series, &self.stats);
            h.series[idx].insert_float(s.timestamp_ms, s.value);
        }
        h.samples += n;
        if let Some(lsn) = lsn {
            self.last_lsn.fetch_max(lsn, Ordering::SeqCst);
            if n > 0 {
                h.first_lsn = Some(h.first_lsn.map_or(lsn, |f| f.min(lsn)));
            }
        }
        drop(h);
        drop(map);
        self.stats.samples_appended.fetch_add(n, Relaxed);
        if n > 0 {
            self.unflushed.fetch_add(n, Relaxed);
            // Armed whenever the head holds samples, not only on the first
            // sample after a flush: after a failed flush `unflushed` is not
            // zero, and the age trigger must still fire.
            self.first_unflushed
                .lock_or_recover()
                .get_or_insert_with(Instant::now);
        }
    }

    /// Series for which `keep` holds (given the metric name when the query
    /// names one, to look only at that metric's series), with their samples
    /// in `[start_ms, end_ms]`; series without samples there are left out.
    pub fn select(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<SeriesSamples> {
        // An unlimited budget never fails.
        self.select_within(
            tenant,
            name,
            keep,
            start_ms,
            end_ms,
            &ReadBudget::unlimited(),
        )
        .unwrap_or_default()
    }

    /// [`MetricStore::select`] within a budget: samples are counted as
    /// each file is read (and the head's as they are copied), so the read
    /// stops at the limit instead of loading everything first; the
    /// deadline is checked before each file.
    pub fn select_within(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
        budget: &ReadBudget,
    ) -> Result<Vec<SeriesSamples>, StoreError> {
        budget.deadline.check()?;
        let Some(t) = self.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let mut merged: foldhash::HashMap<Labels, Vec<(i64, SampleValue)>> = Default::default();
        let mut over: Option<StoreError> = None;
        let files: Vec<(PathBuf, i64, i64)> = {
            let h = t.read_or_recover();
            let mut add = |s: &HeadSeries| {
                if over.is_some()
                    || name.is_some_and(|n| label(&s.labels, NAME_LABEL) != Some(n))
                    || !keep(&s.labels)
                {
                    return;
                }
                let samples = s.samples_in(start_ms, end_ms);
                if !samples.is_empty() {
                    if let Err(e) = budget.charge_samples(samples.len()) {
                        over = Some(e);
                        return;
                    }
                    merged.entry(s.labels.clone()).or_default().extend(samples);
                }
            };
            h.each_series(name, &mut add);
            // A series both in the head and being flushed has the head's
            // samples first: sorted, with the head's (newer) copy of a
            // repeated time kept.
            for samples in merged.values_mut() {
                if !samples.is_sorted_by(|a, b| a.0 < b.0) {
                    samples.sort_by_key(|(t, _)| *t);
                    samples.dedup_by_key(|(t, _)| *t);
                }
            }
            match &self.data {
                // Newest first: the dedup below keeps the first copy of a
                // sample written twice (the head's, then the newest file's).
                Some(data) => h
                    .manifest
                    .files_newest_first()
                    .filter(|f| f.max_ts_ms >= start_ms && f.min_ts_ms <= end_ms)
                    .map(|f| {
                        (
                            metrics_dir(data, tenant).join(&f.partition).join(&f.name),
                            f.min_ts_ms,
                            f.max_ts_ms,
                        )
                    })
                    .collect(),
                None => Vec::new(),
            }
        };
        // Files are read on a few threads; results are merged in the list's
        // order (newest first), after the head's.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(files.len().max(1));
        if let Some(e) = over {
            return Err(e);
        }
        budget.charge_series(merged.len())?;
        let results: Vec<Result<Vec<SeriesSamples>, StoreError>> =
            on_threads(&files, threads, |chunk| {
                chunk
                    .iter()
                    .map(|(path, ..)| {
                        // Stops every thread once one went over.
                        budget.deadline.check()?;
                        budget.charge_samples(0)?;
                        let found = files::read_file(path, name, keep, start_ms, end_ms)
                            .unwrap_or_else(|e| {
                                tracing::warn!(error = %e, "failed to read metric file");
                                Vec::new()
                            });
                        budget.charge_samples(found.iter().map(|s| s.1.len()).sum())?;
                        Ok(found)
                    })
                    .collect()
            });
        let head_series = merged.len();
        let mut merged: foldhash::HashMap<Labels, Vec<Vec<(i64, SampleValue)>>> = merged
            .into_iter()
            .map(|(l, samples)| (l, vec![samples]))
            .collect();
        for series in results {
            for (labels, samples) in series? {
                if !samples.is_empty() {
                    merged.entry(labels).or_default().push(samples);
                }
            }
        }
        // The head's series were counted above.
        budget.charge_series(merged.len() - head_series)?;
        Ok(merged
            .into_iter()
            .map(|(l, mut chunks)| {
                // Oldest chunk first is usually already in order, with no
                // sample twice; otherwise sort the newest-first concatenation
                // (stable) and keep the first copy of a repeated timestamp.
                // Each chunk is sorted (the head's by construction, a file's
                // by `read_file`): only the chunks' ends need comparing.
                chunks.retain(|c| !c.is_empty());
                let in_order = chunks
                    .windows(2)
                    .all(|w| match (w[0].first(), w[1].last()) {
                        (Some(newer), Some(older)) => older.0 < newer.0,
                        _ => true,
                    });
                if in_order {
                    // Moved, not cloned sample by sample.
                    let mut all = chunks.pop().unwrap_or_default();
                    all.reserve(chunks.iter().map(Vec::len).sum());
                    while let Some(mut c) = chunks.pop() {
                        all.append(&mut c);
                    }
                    return (l, all);
                }
                let mut samples = chunks.concat();
                samples.sort_by_key(|(t, _)| *t);
                // A sample written twice keeps its newest copy, met first.
                samples.dedup_by(|later, kept| later.0 == kept.0);
                (l, samples)
            })
            .collect())
    }

    /// A number that changes whenever the samples of `tenant` with a
    /// timestamp in `[start_ms, end_ms]` may have changed: an append with a
    /// sample in an hour of the range, or retention dropping anything.
    /// Flushes and compaction move samples without changing them and leave
    /// it alone. Lets a query cache results for data that has not changed.
    pub fn generation(&self, tenant: &TenantId, start_ms: i64, end_ms: i64) -> u64 {
        let Some(t) = self.tenant(tenant) else {
            return 0;
        };
        let h = t.read_or_recover();
        let (lo, hi) = (start_ms.div_euclid(HOUR_MS), end_ms.div_euclid(HOUR_MS));
        if lo > hi {
            return h.dropped;
        }
        h.written
            .range(lo..=hi)
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0)
            .max(h.dropped)
    }

    /// The label sets of the series `keep` accepts (only `name`'s when
    /// given) that may have samples in `[start_ms, end_ms]`, sorted. Reads
    /// labels only, never samples: head series count when they have a
    /// sample in the range, a file's series when the file's time range
    /// overlaps it (as Prometheus answers its label APIs per block).
    pub fn series_labels(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<Labels> {
        // An unlimited budget never fails.
        self.series_labels_within(
            tenant,
            name,
            keep,
            start_ms,
            end_ms,
            &ReadBudget::unlimited(),
        )
        .unwrap_or_default()
    }

    /// [`MetricStore::series_labels`] within a budget: the deadline is
    /// checked and the series counted after each file.
    pub fn series_labels_within(
        &self,
        tenant: &TenantId,
        name: Option<&str>,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
        budget: &ReadBudget,
    ) -> Result<Vec<Labels>, StoreError> {
        budget.deadline.check()?;
        let Some(t) = self.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let mut out: foldhash::HashSet<Labels> = Default::default();
        let files: Vec<PathBuf> = {
            let h = t.read_or_recover();
            let mut add = |s: &HeadSeries| {
                if name.is_none_or(|n| label(&s.labels, NAME_LABEL) == Some(n))
                    && s.has_samples_in(start_ms, end_ms)
                    && keep(&s.labels)
                {
                    out.insert(s.labels.clone());
                }
            };
            h.each_series(name, &mut add);
            match &self.data {
                Some(data) => h
                    .manifest
                    .files_newest_first()
                    .filter(|f| f.max_ts_ms >= start_ms && f.min_ts_ms <= end_ms)
                    .map(|f| metrics_dir(data, tenant).join(&f.partition).join(&f.name))
                    .collect(),
                None => Vec::new(),
            }
        };
        let mut counted = 0;
        for path in files {
            budget.charge_series(out.len() - counted)?;
            counted = out.len();
            budget.deadline.check()?;
            match files::series_labels(&path, name, keep) {
                Ok(labels) => out.extend(labels),
                Err(e) => tracing::warn!(error = %e, "failed to read metric series file"),
            }
        }
        budget.charge_series(out.len() - counted)?;
        let mut out: Vec<Labels> = out.into_iter().collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Label names of the series `keep` accepts that have samples in the range.
    pub fn label_names(
        &self,
        tenant: &TenantId,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        let mut names = BTreeSet::new();
        for labels in self.series_labels(tenant, None, keep, start_ms, end_ms) {
            names.extend(labels.into_iter().map(|(n, _)| n));
        }
        names.into_iter().collect()
    }

    /// Values of one label over the series `keep` accepts.
    pub fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        keep: &(dyn Fn(&Labels) -> bool + Sync),
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        let mut values = BTreeSet::new();
        for labels in self.series_labels(tenant, None, keep, start_ms, end_ms) {
            if let Some(v) = label(&labels, name) {
                values.insert(v.to_owned());
            }
        }
        values.into_iter().collect()
    }

    /// Metadata of metric families.
    pub fn metadata(&self, tenant: &TenantId) -> Vec<MetricMeta> {
        self.tenant(tenant)
            .map(|t| t.read_or_recover().metadata.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops samples older than the retention, series left empty, and
    /// files whose newest sample is older.
    pub fn apply_retention(&self, now_ms: i64) {
        let cutoff = now_ms - self.opts.retention.as_millis() as i64;
        if let Some(data) = &self.data {
            let _f = self.flush_lock.lock_or_recover();
            let tenants: Vec<_> = self
                .tenants
                .read_or_recover()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (tenant, t) in tenants {
                let manifest = t.read_or_recover().manifest.clone();
                let Some((manifest, gone)) = manifest.dropping(|f| f.max_ts_ms < cutoff) else {
                    continue;
                };
                let dir = metrics_dir(data, &tenant);
                if let Err(e) = manifest.write(&dir) {
                    tracing::warn!(error = %e, "metric retention failed");
                    continue;
                }
                {
                    let mut h = t.write_or_recover();
                    h.manifest = manifest;
                    h.dropped = self.write_seq.fetch_add(1, Ordering::SeqCst) + 1;
                }
                for f in &gone {
                    files::forget_series(&dir.join(&f.partition).join(&f.name));
                }
                fileset::remove_files(&dir, &gone);
            }
        }
        let tenants: Vec<_> = self.tenants.read_or_recover().values().cloned().collect();
        for t in tenants {
            let mut h = t.write_or_recover();
            let mut changed = false;
            for s in &mut h.series {
                let f = s.floats.partition_point(|(ts, _)| *ts < cutoff);
                let g = s.histograms.partition_point(|(ts, _)| *ts < cutoff);
                if f + g > 0 {
                    s.floats.drain(..f);
                    s.histograms.drain(..g);
                    changed = true;
                }
            }
            if changed {
                h.dropped = self.write_seq.fetch_add(1, Ordering::SeqCst) + 1;
                let series: Vec<HeadSeries> = std::mem::take(&mut h.series)
                    .into_iter()
                    .filter(|s| !s.floats.is_empty() || !s.histograms.is_empty())
                    .collect();
                h.by_labels.clear();
                h.by_ref.clear();
                h.by_name.clear();
                for (i, s) in series.iter().enumerate() {
                    h.by_labels.insert(s.labels.clone(), i);
                    let name = label(&s.labels, NAME_LABEL).unwrap_or("").to_owned();
                    h.by_name.entry(name).or_default().push(i);
                }
                h.series = series;
            }
        }
    }
}

/// `f` over consecutive slices of `items` on up to `threads` threads, the
/// results in the items' order.
fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    let per_thread = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| {
                let f = &f;
                scope.spawn(move || f(chunk))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use periscope_proto::{PromSample, normalize_labels};

    use super::*;

    /// A float sample of series `name{job=...}`.
    pub(crate) fn s(name: &str, job: &str, ts: i64, v: f64) -> PromSample {
        PromSample {
            labels: normalize_labels(vec![
                (NAME_LABEL.into(), name.into()),
                ("job".into(), job.into()),
            ]),
            timestamp_ms: ts,
            value: SampleValue::Float(v),
        }
    }

    #[test]
    fn samples_by_reference_land_in_the_series_of_their_labels() {
        use periscope_proto::RefSample;
        let store = MetricStore::new(MetricStoreOptions::default());
        let t = TenantId::default_tenant();
        let r = |id: u64, job: &str, ts: i64, v: f64| RefSample {
            series: Arc::new(SeriesRef {
                id,
                labels: s("up", job, 0, 0.0).labels,
            }),
            timestamp_ms: ts,
            value: v,
        };
        store.append(
            &t,
            PromBatch {
                samples: vec![s("up", "a", 10, 1.0)],
                ref_samples: vec![r(1, "a", 20, 2.0), r(2, "b", 20, 5.0), r(1, "a", 30, 3.0)],
                ..Default::default()
            },
        );
        // The converter forgot series 1 and numbered `a` again as 3.
        store.append(
            &t,
            PromBatch {
                ref_samples: vec![r(3, "a", 40, 4.0), r(2, "b", 40, 6.0)],
                ..Default::default()
            },
        );
        let mut got = store.select(&t, Some("up"), &|_| true, 0, 100);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let values = |i: usize| -> Vec<(i64, f64)> {
            got[i]
                .1
                .iter()
                .map(|(t, v)| match v {
                    SampleValue::Float(f) => (*t, *f),
                    SampleValue::Histogram(_) => unreachable!(),
                })
                .collect()
        };
        assert_eq!(got.len(), 2);
        assert_eq!(values(0), vec![(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]);
        assert_eq!(values(1), vec![(20, 5.0), (40, 6.0)]);
        assert_eq!(store.stats().series.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn append_select_out_of_order_and_retention() {
        let store = MetricStore::new(MetricStoreOptions {
            retention: Duration::from_millis(1000),
        });
        let t = TenantId::default_tenant();
        store.append(
            &t,
            PromBatch {
                samples: vec![
                    s("up", "a", 20, 1.0),
                    s("up", "a", 10, 0.0),
                    s("up", "b", 10, 1.0),
                    s("x", "a", 10, 5.0),
                ],
                metadata: vec![],
                ..Default::default()
            },
        );
        store.append(
            &t,
            PromBatch {
                samples: vec![s("up", "a", 20, 2.0)],
                metadata: vec![],
                ..Default::default()
            },
        );
        let got = store.select(&t, Some("up"), &|l| label(l, "job") == Some("a"), 0, 100);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].1,
            vec![(10, SampleValue::Float(0.0)), (20, SampleValue::Float(2.0))],
            "sorted, repeated timestamp replaced"
        );
        assert_eq!(store.select(&t, None, &|_| true, 15, 100).len(), 1);
        assert_eq!(
            store.label_values(&t, "job", &|_| true, 0, 100),
            vec!["a", "b"]
        );
        assert!(
            store
                .select(&TenantId::parse("other").unwrap(), None, &|_| true, 0, 100)
                .is_empty()
        );
        store.apply_retention(1015);
        let got = store.select(&t, None, &|_| true, 0, 100);
        assert_eq!(got.len(), 1, "only up{{job=a}} has a sample at or after 15");
    }

    #[test]
    fn generation_changes_only_for_the_hours_written_and_on_retention() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        let t = TenantId::default_tenant();
        let hour = 3_600_000;
        let one = |ts: i64| PromBatch {
            samples: vec![s("up", "a", ts, 1.0)],
            metadata: vec![],
            ..Default::default()
        };
        assert_eq!(store.generation(&t, 0, 10 * hour), 0);
        store.append(&t, one(hour + 5));
        let g1 = store.generation(&t, hour, 2 * hour - 1);
        assert!(g1 > 0);
        assert_eq!(
            store.generation(&t, 3 * hour, 4 * hour),
            0,
            "other hours untouched"
        );
        // A flush moves samples without changing them.
        store.flush().unwrap();
        assert_eq!(store.generation(&t, hour, 2 * hour - 1), g1);
        store.append(&t, one(3 * hour));
        assert_eq!(store.generation(&t, hour, 2 * hour - 1), g1);
        assert!(store.generation(&t, 0, 10 * hour) > g1);
        // Retention dropping anything changes every range.
        let g2 = store.generation(&t, 0, 10 * hour);
        let now = 2 * hour + MetricStoreOptions::default().retention.as_millis() as i64;
        store.apply_retention(now);
        assert!(store.generation(&t, 3 * hour, 4 * hour) > g2);
    }

    #[test]
    fn flush_reopen_and_durable_positions() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let t = TenantId::default_tenant();
        let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        store.append_at(
            &t,
            PromBatch {
                samples: vec![s("up", "a", 10, 1.0), s("up", "a", 20, 2.0)],
                metadata: vec![],
                ..Default::default()
            },
            5,
        );
        assert!(store.flush_due(2, Duration::from_secs(3600)));
        assert_eq!(store.flush().unwrap(), 5);
        assert_eq!(store.durable_lsn(&t), 5);
        // After the flush: a newer sample in the head, the older ones in a file.
        store.append_at(
            &t,
            PromBatch {
                samples: vec![s("up", "a", 30, 3.0)],
                metadata: vec![],
                ..Default::default()
            },
            6,
        );
        let got = store.select(&t, Some("up"), &|_| true, 0, 100);
        assert_eq!(got[0].1.len(), 3);
        drop(store);
        let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        assert_eq!(
            store.durable_lsn(&t),
            5,
            "entry 6 was not flushed: replay brings it back"
        );
        let got = store.select(&t, None, &|_| true, 0, 100);
        assert_eq!(
            got[0].1,
            vec![(10, SampleValue::Float(1.0)), (20, SampleValue::Float(2.0))]
        );
        assert_eq!(label(&got[0].0, "job"), Some("a"));
        store.apply_retention(30 * 24 * 3_600_000 + 1000);
        assert!(store.select(&t, None, &|_| true, 0, 100).is_empty());
    }
}
