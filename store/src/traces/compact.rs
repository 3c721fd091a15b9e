//! Compaction of the span store: merges the small file sets of a
//! partition into one. The choice of inputs is the pure [`pick_merge`]; the
//! merge reads and writes without holding the write lock (flushes go on),
//! takes it only to swap the manifest ([`Manifest::replacing`]), and leaves
//! the inputs to the graveyard (`fileset.rs`) so that a trace query that
//! listed them before the swap still finds its traces.
//!
//! Only sets at or below the manifest's `durable_lsn` are merged: replay
//! never consults them (see the module doc of `traces`).
//!
//! [`Manifest::replacing`]: crate::fileset::Manifest::replacing

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use periscope_proto::Span;

use super::{
    EdgeRow, FileSet, Fragment, LiveSet, OperationRow, TenantFlush, TraceStore, read,
    remove_set_files, traces_dir,
};
use crate::fileset::DELETE_GRACE;
use crate::partition::parse_partition_dir_name;
use crate::sync::MutexRecover;
use crate::{StoreError, TenantId};

/// Compaction merges sets with fewer spans than this…
const COMPACT_SMALL_SPANS: u64 = 100_000;
/// …into sets of at most this many spans.
const COMPACT_MAX_SPANS: u64 = 400_000;

impl TraceStore {
    /// Merges the file sets of partitions that have many small ones (only
    /// sets at or below `durable_lsn`, which replay never needs). Returns
    /// how many sets were merged away.
    pub fn compact(&self) -> Result<usize, StoreError> {
        {
            let _w = self.write_lock.lock_or_recover();
            self.graveyard.collect(DELETE_GRACE, |_| {});
        }
        let mut merged = 0;
        for tenant in self.tenants() {
            loop {
                let sets = {
                    let tenants = self.read_tenants();
                    let Some(st) = tenants.get(&tenant) else {
                        break;
                    };
                    let listed: Vec<FileSet> = st.sets.iter().map(|s| s.set.clone()).collect();
                    let Some(ids) = pick_merge(
                        &listed,
                        st.manifest.durable_lsn,
                        self.opts.compact_min_files,
                    ) else {
                        break;
                    };
                    let mut sets: Vec<Arc<LiveSet>> = st
                        .sets
                        .iter()
                        .filter(|s| ids.contains(&s.set.id))
                        .cloned()
                        .collect();
                    sets.sort_by_key(|s| s.set.id);
                    sets
                };
                merged += sets.len() - 1;
                self.merge_sets(&tenant, sets)?;
            }
        }
        Ok(merged)
    }

    /// Deletes the files of replaced sets at least `grace` ago.
    #[cfg(test)]
    pub(crate) fn collect_garbage(&self, grace: std::time::Duration) {
        let _w = self.write_lock.lock_or_recover();
        self.graveyard.collect(grace, |_| {});
    }

    /// Reads and rewrites without holding the write lock (flushes go on);
    /// takes it only to swap the manifest.
    fn merge_sets(&self, tenant: &TenantId, sets: Vec<Arc<LiveSet>>) -> Result<(), StoreError> {
        let mut fragments: HashMap<[u8; 16], Vec<Span>> = HashMap::new();
        let mut edges = Vec::new();
        let mut operations = Vec::new();
        let mut truncated: BTreeSet<[u8; 16]> = BTreeSet::new();
        for s in &sets {
            for span in read::read_all_spans(s)? {
                fragments.entry(span.trace_id).or_default().push(span);
            }
            for sum in read::read_summaries(s)? {
                if sum.truncated {
                    truncated.insert(sum.trace_id);
                }
            }
            edges.extend(read::read_edges(s)?.iter().cloned());
            operations.extend(read::read_operations(s)?.iter().cloned());
        }
        let hour = parse_partition_dir_name(&sets[0].set.partition).unwrap_or(0);
        let max_lsn = sets.iter().map(|s| s.set.max_lsn).max().unwrap_or(0);
        let dir = traces_dir(&self.data, tenant);
        let id = self.alloc_file(tenant);
        let part = TenantFlush {
            fragments: fragments
                .into_iter()
                .map(|(id, spans)| Fragment {
                    spans: Arc::new(spans),
                    truncated: truncated.contains(&id),
                })
                .collect(),
            edges: merge_edges(edges),
            operations: merge_operations(operations),
        };
        let new_set = self.write_set(&dir, hour, id, part, max_lsn)?;
        let old: BTreeSet<u64> = sets.iter().map(|s| s.set.id).collect();
        let inputs: Vec<FileSet> = sets.iter().map(|s| s.set.clone()).collect();
        let _w = self.write_lock.lock_or_recover();
        let Some(manifest) = self
            .read_tenants()
            .get(tenant)
            .map(|t| t.manifest.clone())
            .unwrap_or_default()
            .replacing(&inputs, Some(new_set.set.clone()), id + 1)
        else {
            // Retention dropped some of them meanwhile: give up this merge.
            remove_set_files(&dir, &new_set.set);
            return Ok(());
        };
        if let Err(e) = manifest.write(&dir) {
            remove_set_files(&dir, &new_set.set);
            return Err(e);
        }
        {
            let mut tenants = self.write_tenants();
            let st = tenants.entry(tenant.clone()).or_default();
            st.manifest = manifest;
            st.sets.retain(|s| !old.contains(&s.set.id));
            st.sets.push(Arc::new(new_set));
        }
        // Queries that took their snapshot before the swap may still read
        // the inputs: they are deleted after the grace, not now.
        self.graveyard.bury(&dir, &inputs);
        Ok(())
    }
}

/// Sums edge rows with the same minute and endpoints.
pub fn merge_edges(rows: Vec<EdgeRow>) -> Vec<EdgeRow> {
    let mut m: HashMap<(i64, String, String), EdgeRow> = HashMap::new();
    for r in rows {
        match m.entry((r.minute_ns, r.client.clone(), r.server.clone())) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let e = e.get_mut();
                e.requests += r.requests;
                e.failures += r.failures;
                e.latency.add(&r.latency);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(r);
            }
        }
    }
    m.into_values().collect()
}

/// Sums operation rows with the same minute, service, operation and kind.
pub fn merge_operations(rows: Vec<OperationRow>) -> Vec<OperationRow> {
    let mut m: HashMap<(i64, String, String, &'static str), OperationRow> = HashMap::new();
    for r in rows {
        match m.entry((r.minute_ns, r.service.clone(), r.operation.clone(), r.kind)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let e = e.get_mut();
                e.calls += r.calls;
                e.errors += r.errors;
                e.duration.add(&r.duration);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(r);
            }
        }
    }
    m.into_values().collect()
}

/// The ids of the sets to merge next, if any: in the partition with the
/// most candidates, the small sets (under [`COMPACT_SMALL_SPANS`] spans) at
/// or below `durable_lsn`, oldest first, as many as fit in
/// [`COMPACT_MAX_SPANS`] (a merge reads its inputs into memory), once
/// there are `min_files` (at least two) of them.
pub(super) fn pick_merge(sets: &[FileSet], durable_lsn: u64, min_files: usize) -> Option<Vec<u64>> {
    let mut by_part: HashMap<&str, Vec<&FileSet>> = HashMap::new();
    for s in sets {
        if s.max_lsn <= durable_lsn && s.span_count < COMPACT_SMALL_SPANS {
            by_part.entry(&s.partition).or_default().push(s);
        }
    }
    by_part
        .into_values()
        .map(|mut v| {
            v.sort_by_key(|s| s.id);
            let mut total = 0;
            v.retain(|s| {
                total += s.span_count;
                total <= COMPACT_MAX_SPANS
            });
            v
        })
        .filter(|v| v.len() >= min_files.max(2))
        // Ties go to the partition of the oldest set, so the choice does
        // not depend on hash order.
        .max_by_key(|v| (v.len(), std::cmp::Reverse(v[0].id)))
        .map(|v| v.iter().map(|s| s.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(partition: &str, id: u64, max_lsn: u64, span_count: u64) -> FileSet {
        FileSet {
            partition: partition.into(),
            id,
            spans: Some(format!("spans-{id}.parquet")),
            summaries: Some(format!("summaries-{id}.parquet")),
            edges: None,
            operations: None,
            max_lsn,
            min_time_ns: 0,
            max_time_ns: 0,
            span_count,
            trace_count: 1,
            bytes: 0,
        }
    }

    /// (what, listed sets, durable_lsn, min_files, the ids picked)
    type Case = (&'static str, Vec<FileSet>, u64, usize, Option<Vec<u64>>);

    const P: &str = "2026-01-01T00";
    const Q: &str = "2026-01-01T01";

    #[test]
    fn picks_small_durable_sets_of_the_fullest_partition_within_the_size_bound() {
        let cases: &[Case] = &[
            ("too few sets", vec![set(P, 1, 1, 10)], 5, 2, None),
            (
                "two small durable sets",
                vec![set(P, 1, 1, 10), set(P, 2, 2, 10)],
                5,
                2,
                Some(vec![1, 2]),
            ),
            (
                "a set above durable is left for replay",
                vec![set(P, 1, 1, 10), set(P, 2, 9, 10)],
                5,
                2,
                None,
            ),
            (
                "a large set is left alone",
                vec![set(P, 1, 1, 10), set(P, 2, 2, COMPACT_SMALL_SPANS)],
                5,
                2,
                None,
            ),
            (
                "sets of different partitions never merge",
                vec![set(P, 1, 1, 10), set(Q, 2, 2, 10)],
                5,
                2,
                None,
            ),
            (
                "the partition with more candidates goes first",
                vec![
                    set(P, 1, 1, 10),
                    set(P, 2, 1, 10),
                    set(Q, 3, 1, 10),
                    set(Q, 4, 1, 10),
                    set(Q, 5, 1, 10),
                ],
                5,
                2,
                Some(vec![3, 4, 5]),
            ),
            (
                "at most COMPACT_MAX_SPANS spans, oldest first",
                vec![
                    set(P, 3, 1, 90_000),
                    set(P, 1, 1, 90_000),
                    set(P, 2, 1, 90_000),
                    set(P, 4, 1, 90_000),
                    set(P, 5, 1, 90_000),
                ],
                5,
                2,
                Some(vec![1, 2, 3, 4]),
            ),
            (
                "min_files is respected",
                vec![set(P, 1, 1, 10), set(P, 2, 1, 10), set(P, 3, 1, 10)],
                5,
                8,
                None,
            ),
        ];
        for (what, sets, durable, min_files, want) in cases {
            assert_eq!(&pick_merge(sets, *durable, *min_files), want, "{what}");
        }
    }
}
