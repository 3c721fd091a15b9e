//! The metric store: samples of Prometheus-shaped series per tenant.
//!
//! This first stage keeps series in memory (the head) and nothing on disk:
//! the WAL keeps every metric entry (their segments are never released), and
//! replay rebuilds the head after a restart, so acknowledged samples are not
//! lost. Parquet files per hour partition, flushed from the head with the WAL
//! position in a manifest, come next; until then memory and WAL grow with
//! the retained samples.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use periscope_proto::{
    Labels, MetricMeta, NAME_LABEL, NativeHistogram, PromBatch, SampleValue, label,
};

use crate::TenantId;

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
}

impl std::fmt::Debug for MetricStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricStore").finish_non_exhaustive()
    }
}

impl MetricStore {
    pub fn new(opts: MetricStoreOptions) -> Arc<MetricStore> {
        Arc::new(MetricStore {
            tenants: RwLock::new(HashMap::new()),
            opts,
            stats: MetricStoreStats::default(),
        })
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

    fn tenant_or_create(&self, tenant: &TenantId) -> Arc<RwLock<TenantHead>> {
        if let Some(t) = self.tenant(tenant) {
            return t;
        }
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.clone())
            .or_default()
            .clone()
    }

    /// Adds a batch of samples (any order; a repeated timestamp replaces).
    pub fn append(&self, tenant: &TenantId, batch: PromBatch) {
        use std::sync::atomic::Ordering::Relaxed;
        if batch.samples.is_empty() && batch.metadata.is_empty() {
            return;
        }
        let t = self.tenant_or_create(tenant);
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
        self.stats.samples_appended.fetch_add(n, Relaxed);
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
    ) -> Vec<(Labels, Vec<(i64, SampleValue)>)> {
        let Some(t) = self.tenant(tenant) else {
            return Vec::new();
        };
        let h = t.read().unwrap_or_else(|p| p.into_inner());
        let pick = |s: &HeadSeries| {
            if !keep(&s.labels) {
                return None;
            }
            let samples = s.samples_in(start_ms, end_ms);
            (!samples.is_empty()).then(|| (s.labels.clone(), samples))
        };
        match name {
            Some(n) => h
                .by_name
                .get(n)
                .into_iter()
                .flatten()
                .filter_map(|i| pick(&h.series[*i]))
                .collect(),
            None => h.series.iter().filter_map(pick).collect(),
        }
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

    /// Drops samples older than the retention, and series left empty.
    pub fn apply_retention(&self, now_ms: i64) {
        let cutoff = now_ms - self.opts.retention.as_millis() as i64;
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
}
