//! Compaction of the metric store: merges runs of small files of a
//! partition into one, with a stronger zstd level. The choice of inputs is
//! the pure [`pick_merge`]; the merge reads without blocking flushes,
//! swaps the manifest under the flush lock ([`Manifest::replacing`]) and
//! leaves the inputs to the graveyard (`fileset.rs`), so that queries that
//! listed them can finish.
//!
//! [`Manifest::replacing`]: crate::fileset::Manifest::replacing

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use periscope_proto::{Labels, NAME_LABEL, SampleValue, label};

use super::files::{self, MetricFile};
use super::{MetricStore, TenantHead, metrics_dir};
use crate::fileset::DELETE_GRACE;
use crate::partition::HOUR_MS;
use crate::sync::{MutexRecover, RwLockRecover};
use crate::{DataDir, StoreError, TenantId};

/// A partition's files are merged once it holds this many small ones, or
/// two once its hour has been over for [`COMPACT_SETTLE_MS`].
const COMPACT_MIN_FILES: usize = 4;
const COMPACT_SETTLE_MS: i64 = 10 * 60 * 1000;
/// The most rows one merge reads: bounds its memory (about 30 bytes a row
/// in flight). Files of half this or more are left alone.
const COMPACT_MAX_ROWS: u64 = 16_000_000;
impl MetricStore {
    /// Merges small files of a partition into one (smallest first, at most
    /// `COMPACT_MAX_ROWS` rows a merge), with a stronger zstd level, and
    /// deletes files replaced more than `DELETE_GRACE` ago. Returns the
    /// number of merges. Flushes wait only while a manifest is swapped.
    pub fn compact(&self, now_ms: i64) -> Result<usize, StoreError> {
        let Some(data) = self.data.clone() else {
            return Ok(0);
        };
        self.collect_garbage(DELETE_GRACE);
        let tenants: Vec<(TenantId, Arc<RwLock<TenantHead>>)> = self
            .tenants
            .read_or_recover()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut merges = 0;
        for (tenant, t) in tenants {
            loop {
                let pick = {
                    let h = t.read_or_recover();
                    pick_merge(&h.manifest.files, now_ms)
                };
                let Some(pick) = pick else { break };
                self.merge_files(&data, &tenant, &t, pick)?;
                merges += 1;
            }
        }
        Ok(merges)
    }

    /// Deletes files replaced at least `grace` ago.
    pub(super) fn collect_garbage(&self, grace: Duration) {
        let _f = self.flush_lock.lock_or_recover();
        self.graveyard.collect(grace, files::forget_series);
    }

    fn merge_files(
        &self,
        data: &DataDir,
        tenant: &TenantId,
        t: &Arc<RwLock<TenantHead>>,
        inputs: Vec<files::MetricFile>,
    ) -> Result<(), StoreError> {
        let dir = metrics_dir(data, tenant);
        let partition = inputs[0].partition.clone();
        let pdir = dir.join(&partition);
        // Newest file first: with a stable sort by time, the dedup below
        // keeps its copy of a sample written twice.
        let mut merged: foldhash::HashMap<Labels, Vec<(i64, SampleValue)>> = Default::default();
        for f in inputs.iter().rev() {
            for (labels, samples) in
                files::read_file(&pdir.join(&f.name), None, &|_| true, i64::MIN, i64::MAX)?
            {
                merged.entry(labels).or_default().extend(samples);
            }
        }
        let mut series: Vec<files::SeriesRows<'_>> = merged
            .iter_mut()
            .map(|(labels, samples)| {
                samples.sort_by_key(|(ts, _)| *ts);
                samples.dedup_by(|later, kept| later.0 == kept.0);
                files::SeriesRows {
                    labels,
                    name: label(labels, NAME_LABEL).unwrap_or(""),
                    samples: std::mem::take(samples),
                }
            })
            .collect();
        series.retain(|s| !s.samples.is_empty());
        let rows: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
        let min_ts = series
            .iter()
            .filter_map(|s| s.samples.first())
            .map(|x| x.0)
            .min();
        let max_ts = series
            .iter()
            .filter_map(|s| s.samples.last())
            .map(|x| x.0)
            .max();
        // The output's number is reserved in the in-memory manifest; the
        // next manifest written (by a flush or this merge) records it.
        let name = {
            let _f = self.flush_lock.lock_or_recover();
            let mut h = t.write_or_recover();
            let n = h.manifest.next_file;
            h.manifest.next_file += 1;
            format!("samples-{n}.parquet")
        };
        let path = pdir.join(&name);
        let bytes = files::write_file(&path, series, files::COMPACT_ZSTD_LEVEL)?;
        crate::layout::sync_dir(&pdir)?;
        // Swap: flushes and retention change the manifest under the same lock.
        let _f = self.flush_lock.lock_or_recover();
        let mut h = t.write_or_recover();
        let output = (rows > 0).then(|| MetricFile {
            partition: partition.clone(),
            name: name.clone(),
            order: inputs.iter().map(|f| f.order).max().unwrap_or(0),
            min_ts_ms: min_ts.unwrap_or(0),
            max_ts_ms: max_ts.unwrap_or(0),
            rows,
            bytes,
        });
        let Some(manifest) = h.manifest.replacing(&inputs, output.clone(), 0) else {
            // Retention dropped an input meanwhile: the merge is stale.
            drop(h);
            let _ = std::fs::remove_file(path.with_file_name(files::series_file_name(&name)));
            let _ = std::fs::remove_file(&path);
            return Ok(());
        };
        manifest.write(&dir)?;
        h.manifest = manifest;
        drop(h);
        self.graveyard.bury(&dir, &inputs);
        if output.is_none() {
            // Nothing left to list: the output goes the inputs' way.
            let empty = MetricFile {
                partition,
                name,
                order: 0,
                min_ts_ms: 0,
                max_ts_ms: 0,
                rows: 0,
                bytes: 0,
            };
            self.graveyard.bury(&dir, &[empty]);
        }
        Ok(())
    }
}

/// The files of one partition to merge next, if any: a run of small files
/// adjacent in write order (so that the merged file's place in that order
/// is right for every sample in it), once the run has
/// [`COMPACT_MIN_FILES`] files, or two once its hour is settled; at most
/// [`COMPACT_MAX_ROWS`] rows.
pub(super) fn pick_merge(files: &[MetricFile], now_ms: i64) -> Option<Vec<MetricFile>> {
    let mut by_partition: BTreeMap<&str, Vec<&MetricFile>> = BTreeMap::new();
    for f in files {
        by_partition.entry(&f.partition).or_default().push(f);
    }
    for (_, mut list) in by_partition {
        list.sort_by_key(|f| f.order);
        let mut run: Vec<&MetricFile> = Vec::new();
        let mut rows = 0;
        // A trailing `None` ends the last run.
        for f in list.into_iter().map(Some).chain([None]) {
            let fits = f.is_some_and(|f| {
                f.rows < COMPACT_MAX_ROWS / 2 && rows + f.rows <= COMPACT_MAX_ROWS
            });
            if fits && let Some(f) = f {
                rows += f.rows;
                run.push(f);
                continue;
            }
            let hour_end = run
                .iter()
                .map(|f| f.max_ts_ms.div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS)
                .max()
                .unwrap_or(i64::MAX);
            let settled = now_ms >= hour_end.saturating_add(COMPACT_SETTLE_MS);
            if run.len() >= COMPACT_MIN_FILES || (run.len() >= 2 && settled) {
                return Some(run.into_iter().cloned().collect());
            }
            run.clear();
            rows = 0;
            if let Some(f) = f
                && f.rows < COMPACT_MAX_ROWS / 2
            {
                rows = f.rows;
                run.push(f);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use periscope_proto::PromBatch;

    use super::*;
    use crate::metrics::MetricStoreOptions;
    use crate::metrics::tests::s;

    #[test]
    fn compaction_merges_small_files_keeps_every_sample_and_the_newest_copy() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let t = TenantId::default_tenant();
        let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        // Five flushes into one hour; the last rewrites ts 40 of job a.
        for (i, lsn) in (1..=5u64).enumerate() {
            let ts = 10 * (i as i64 + 1);
            let mut samples = vec![s("up", "a", ts, ts as f64), s("up", "b", ts, -(ts as f64))];
            if lsn == 5 {
                samples.push(s("up", "a", 40, 400.0));
            }
            store.append_at(
                &t,
                PromBatch {
                    samples,
                    metadata: vec![],
                    ..Default::default()
                },
                lsn,
            );
            store.flush().unwrap();
        }
        let before = |store: &MetricStore| {
            let mut got = store.select(&t, None, &|_| true, 0, HOUR_MS);
            got.sort_by(|a, b| a.0.cmp(&b.0));
            got
        };
        let want = before(&store);
        assert_eq!(want[0].1[3], (40, SampleValue::Float(400.0)));
        let files_before = store
            .tenant(&t)
            .unwrap()
            .read()
            .unwrap()
            .manifest
            .files
            .len();
        assert_eq!(files_before, 5);
        // Four or more small files merge at once, however recent.
        assert_eq!(store.compact(0).unwrap(), 1);
        let m = store.tenant(&t).unwrap().read().unwrap().manifest.clone();
        assert_eq!(m.files.len(), 1);
        assert_eq!(m.files[0].rows, 10);
        assert_eq!(before(&store), want);
        // Replaced files stay until the grace period is over, then go.
        let pdir = metrics_dir(&data, &t).join(&m.files[0].partition);
        assert_eq!(std::fs::read_dir(&pdir).unwrap().count(), 12);
        store.collect_garbage(Duration::ZERO);
        assert_eq!(std::fs::read_dir(&pdir).unwrap().count(), 2);
        // The merged manifest survives a restart, durable position intact;
        // a pair of files no manifest lists (a merge or flush cut short by
        // kill -9) is deleted on open, the listed pair kept.
        drop(store);
        let merged = m.files[0].name.clone();
        std::fs::copy(pdir.join(&merged), pdir.join("samples-99.parquet")).unwrap();
        std::fs::copy(
            pdir.join(files::series_file_name(&merged)),
            pdir.join("series-99.parquet"),
        )
        .unwrap();
        let store = MetricStore::open(&data, MetricStoreOptions::default()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [merged.clone(), files::series_file_name(&merged)]);
        assert_eq!(store.durable_lsn(&t), 5);
        assert_eq!(before(&store), want);
        // Two files merge only once their hour is settled.
        store.append_at(
            &t,
            PromBatch {
                samples: vec![s("up", "c", 70, 7.0)],
                metadata: vec![],
                ..Default::default()
            },
            6,
        );
        store.flush().unwrap();
        assert_eq!(store.compact(HOUR_MS).unwrap(), 0);
        assert_eq!(store.compact(HOUR_MS + COMPACT_SETTLE_MS).unwrap(), 1);
        assert_eq!(before(&store).len(), 3);
    }
}
