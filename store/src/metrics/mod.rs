//! The metric store: samples of Prometheus-shaped series per tenant.
//!
//! New samples go to an in-memory head. [`MetricStore::flush`] writes the
//! whole head to Parquet (`files.rs`: one file per tenant and hour) and then
//! each tenant's manifest with the WAL position the flush covers; the WAL
//! releases metric entries up to it. Replay skips a tenant's entries at or
//! below its manifest's position, so every acknowledged sample is stored
//! exactly once after a crash. Queries read the head, a flush in progress and
//! the files.

mod files;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use periscope_proto::{
    Labels, MetricMeta, NAME_LABEL, NativeHistogram, PromBatch, SampleValue, label,
};

use crate::{DataDir, StoreError, TenantId};

const HOUR_MS: i64 = 3_600_000;

fn metrics_dir(data: &DataDir, tenant: &TenantId) -> PathBuf {
    data.root().join(tenant.as_str()).join("metrics")
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
                    .map(|(t, h)| (*t, SampleValue::Histogram(h.clone()))),
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
    by_labels: HashMap<Labels, usize>,
    by_name: HashMap<String, Vec<usize>>,
    metadata: BTreeMap<String, MetricMeta>,
    samples: u64,
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
            opts,
            stats: MetricStoreStats::default(),
            data: None,
            last_lsn: AtomicU64::new(0),
            unflushed: AtomicU64::new(0),
            first_unflushed: Mutex::new(None),
            flush_lock: Mutex::new(()),
            cut: AtomicU64::new(0),
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
            .map(|t| {
                t.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .manifest
                    .durable_lsn
            })
            .unwrap_or(0)
    }

    /// The highest WAL position any manifest records.
    pub fn max_durable_lsn(&self) -> u64 {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|t| {
                t.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .manifest
                    .durable_lsn
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether the head holds `max_samples` or has held samples for `max_age`.
    pub fn flush_due(&self, max_samples: u64, max_age: Duration) -> bool {
        self.unflushed.load(Ordering::Relaxed) >= max_samples
            || self
                .first_unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() >= max_age)
    }

    /// Writes the head to files and publishes them; returns the WAL position
    /// now durable for metrics (every metric entry at or below it).
    pub fn flush(&self) -> Result<u64, StoreError> {
        let _f = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(data) = self.data.clone() else {
            return Ok(self.last_lsn.load(Ordering::SeqCst));
        };
        // Cut: every tenant's head moves to `flushing` at one WAL position.
        let tenants: Vec<(TenantId, Arc<RwLock<TenantHead>>)> = {
            let map = self.tenants.write().unwrap_or_else(|p| p.into_inner());
            let cut = self.last_lsn.load(Ordering::SeqCst);
            self.unflushed.store(0, Ordering::Relaxed);
            *self
                .first_unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            let list: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (_, t) in &list {
                let mut h = t.write().unwrap_or_else(|p| p.into_inner());
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
            }
            drop(map);
            self.cut.store(cut, Ordering::SeqCst);
            list
        };
        let cut = self.cut.load(Ordering::SeqCst);
        // Phase 1: files. Phase 2: manifests.
        let mut staged = Vec::new();
        let mut result = Ok(());
        for (tenant, t) in &tenants {
            match self.write_tenant_files(&data, tenant, t, cut) {
                Ok(m) => staged.push((tenant, t, m)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            for (tenant, t, manifest) in &staged {
                let dir = metrics_dir(&data, tenant);
                if let Err(e) = files::write_manifest(&dir, manifest) {
                    result = Err(e);
                    break;
                }
                let mut h = t.write().unwrap_or_else(|p| p.into_inner());
                h.manifest = manifest.clone();
                h.flushing.clear();
            }
        }
        if let Err(e) = result {
            // Whatever was not published goes back to the head, to be retried.
            for (_, t) in &tenants {
                let mut h = t.write().unwrap_or_else(|p| p.into_inner());
                for s in std::mem::take(&mut h.flushing) {
                    let idx = h.by_labels.get(&s.labels).copied();
                    if let Some(i) = idx {
                        for (ts, v) in s.floats {
                            h.series[i].insert_float(ts, v);
                        }
                        for (ts, v) in s.histograms {
                            h.series[i].insert_histogram(ts, v);
                        }
                    }
                }
            }
            self.unflushed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        Ok(cut)
    }

    fn write_tenant_files(
        &self,
        data: &DataDir,
        tenant: &TenantId,
        t: &Arc<RwLock<TenantHead>>,
        cut: u64,
    ) -> Result<files::Manifest, StoreError> {
        let dir = metrics_dir(data, tenant);
        let h = t.read().unwrap_or_else(|p| p.into_inner());
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
            let partition = crate::logs::partition_dir_name(hour * 1_000_000);
            let pdir = dir.join(&partition);
            std::fs::create_dir_all(&pdir).map_err(StoreError::io("failed to create", &pdir))?;
            let name = format!("samples-{}.parquet", manifest.next_file);
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
            let bytes = files::write_file(&pdir.join(&name), series)?;
            crate::layout::sync_dir(&pdir)?;
            manifest.files.push(files::MetricFile {
                partition,
                name,
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
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
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
            let map = self.tenants.read().unwrap_or_else(|p| p.into_inner());
            if map.contains_key(tenant) {
                break map;
            }
            drop(map);
            self.tenants
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(tenant.clone())
                .or_default();
        };
        let t = map.get(tenant).expect("created above");
        let mut h = t.write().unwrap_or_else(|p| p.into_inner());
        let n = batch.samples.len() as u64;
        for m in batch.metadata {
            h.metadata.insert(m.name.clone(), m);
        }
        for s in batch.samples {
            let idx = match h.by_labels.get(&s.labels) {
                Some(i) => *i,
                None => {
                    let i = h.series.len();
                    let name = label(&s.labels, NAME_LABEL).unwrap_or("").to_owned();
                    h.by_name.entry(name).or_default().push(i);
                    h.by_labels.insert(s.labels.clone(), i);
                    h.series.push(HeadSeries {
                        labels: s.labels,
                        ..Default::default()
                    });
                    self.stats.series.fetch_add(1, Relaxed);
                    i
                }
            };
            match s.value {
                SampleValue::Float(v) => h.series[idx].insert_float(s.timestamp_ms, v),
                SampleValue::Histogram(hist) => {
                    h.series[idx].insert_histogram(s.timestamp_ms, hist)
                }
            }
        }
        h.samples += n;
        if let Some(lsn) = lsn {
            self.last_lsn.fetch_max(lsn, Ordering::SeqCst);
        }
        drop(h);
        drop(map);
        self.stats.samples_appended.fetch_add(n, Relaxed);
        if n > 0 && self.unflushed.fetch_add(n, Relaxed) == 0 {
            self.first_unflushed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
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
        keep: &dyn Fn(&Labels) -> bool,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<SeriesSamples> {
        let Some(t) = self.tenant(tenant) else {
            return Vec::new();
        };
        let mut merged: HashMap<Labels, Vec<(i64, SampleValue)>> = HashMap::new();
        let files: Vec<(PathBuf, i64, i64)> = {
            let h = t.read().unwrap_or_else(|p| p.into_inner());
            let mut add = |s: &HeadSeries| {
                if name.is_some_and(|n| label(&s.labels, NAME_LABEL) != Some(n)) || !keep(&s.labels)
                {
                    return;
                }
                let samples = s.samples_in(start_ms, end_ms);
                if !samples.is_empty() {
                    merged.entry(s.labels.clone()).or_default().extend(samples);
                }
            };
            match name {
                Some(n) => {
                    for i in h.by_name.get(n).into_iter().flatten() {
                        add(&h.series[*i]);
                    }
                }
                None => h.series.iter().for_each(&mut add),
            }
            h.flushing.iter().for_each(&mut add);
            match &self.data {
                Some(data) => h
                    .manifest
                    .files
                    .iter()
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
        for (path, ..) in files {
            match files::read_file(&path, name, start_ms, end_ms) {
                Ok(series) => {
                    for (labels, samples) in series {
                        if keep(&labels) && !samples.is_empty() {
                            merged.entry(labels).or_default().extend(samples);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "failed to read metric file"),
            }
        }
        merged
            .into_iter()
            .map(|(l, mut samples)| {
                samples.sort_by_key(|(t, _)| *t);
                // The same sample in a file and in a retried head keeps the later copy.
                samples.dedup_by(|b, a| a.0 == b.0);
                (l, samples)
            })
            .collect()
    }

    /// Label names of the series `keep` accepts that have samples in the range.
    pub fn label_names(
        &self,
        tenant: &TenantId,
        keep: &dyn Fn(&Labels) -> bool,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        let mut names = BTreeSet::new();
        for (labels, _) in self.select(tenant, None, keep, start_ms, end_ms) {
            names.extend(labels.into_iter().map(|(n, _)| n));
        }
        names.into_iter().collect()
    }

    /// Values of one label over the series `keep` accepts.
    pub fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        keep: &dyn Fn(&Labels) -> bool,
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        let mut values = BTreeSet::new();
        for (labels, _) in self.select(tenant, None, keep, start_ms, end_ms) {
            if let Some(v) = label(&labels, name) {
                values.insert(v.to_owned());
            }
        }
        values.into_iter().collect()
    }

    /// Metadata of metric families.
    pub fn metadata(&self, tenant: &TenantId) -> Vec<MetricMeta> {
        self.tenant(tenant)
            .map(|t| {
                t.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .metadata
                    .values()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops samples older than the retention, series left empty, and
    /// files whose newest sample is older.
    pub fn apply_retention(&self, now_ms: i64) {
        let cutoff = now_ms - self.opts.retention.as_millis() as i64;
        if let Some(data) = &self.data {
            let _f = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            let tenants: Vec<_> = self
                .tenants
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (tenant, t) in tenants {
                let mut manifest = t.read().unwrap_or_else(|p| p.into_inner()).manifest.clone();
                let (gone, kept): (Vec<_>, Vec<_>) =
                    manifest.files.drain(..).partition(|f| f.max_ts_ms < cutoff);
                if gone.is_empty() {
                    continue;
                }
                manifest.files = kept;
                let dir = metrics_dir(data, &tenant);
                if let Err(e) = files::write_manifest(&dir, &manifest) {
                    tracing::warn!(error = %e, "metric retention failed");
                    continue;
                }
                t.write().unwrap_or_else(|p| p.into_inner()).manifest = manifest;
                for f in gone {
                    let _ = std::fs::remove_file(dir.join(&f.partition).join(&f.name));
                    let _ = std::fs::remove_dir(dir.join(&f.partition));
                }
            }
        }
        let tenants: Vec<_> = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for t in tenants {
            let mut h = t.write().unwrap_or_else(|p| p.into_inner());
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
                let series: Vec<HeadSeries> = std::mem::take(&mut h.series)
                    .into_iter()
                    .filter(|s| !s.floats.is_empty() || !s.histograms.is_empty())
                    .collect();
                h.by_labels.clear();
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

#[cfg(test)]
mod tests {
    use periscope_proto::{PromSample, normalize_labels};

    use super::*;

    fn s(name: &str, job: &str, ts: i64, v: f64) -> PromSample {
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
            },
        );
        store.append(
            &t,
            PromBatch {
                samples: vec![s("up", "a", 20, 2.0)],
                metadata: vec![],
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
