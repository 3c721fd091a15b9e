//! Reading the span store: trace by id, trace search over summaries, and
//! the service graph and operation rows of a time window.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::statistics::Statistics;
use periscope_proto::Span;

use super::summary::{self, EdgeRow, OperationRow, SummaryRows, TraceSummary};
use super::{LiveSet, TraceStore, format_err, reader_metadata, schema};
use crate::{Deadline, StoreError, TenantId};

/// Candidates whose spans are read together when a span predicate is checked.
const PREDICATE_CHUNK: usize = 256;

/// A span-level condition checked on a trace's spans (tags, single-span durations).
pub type SpanPredicate<'a> = &'a (dyn Fn(&[Span]) -> bool + Send + Sync);

/// Trace search conditions that summaries answer.
#[derive(Clone, Debug, Default)]
pub struct TraceQuery {
    /// Trace start within `[start_ns, end_ns]`.
    pub start_ns: i64,
    pub end_ns: i64,
    /// A span of this service…
    pub service: Option<String>,
    /// …(of that service, when given) with this name.
    pub operation: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    /// Some span at least this long (summaries prune; the predicate decides).
    pub span_min_duration_ns: Option<i64>,
    /// Some span at most this long.
    pub span_max_duration_ns: Option<i64>,
    /// `Some(true)`: at least one error span; `Some(false)`: none.
    pub error: Option<bool>,
    pub limit: usize,
    /// When the search stops with [`StoreError::DeadlineExceeded`];
    /// checked between span files and chunks of candidates.
    pub deadline: Deadline,
}

impl TraceQuery {
    /// The conditions that concern a whole trace, checked on its merged summary.
    fn matches_whole(&self, s: &TraceSummary) -> bool {
        let d = s.duration_ns();
        s.start_ns >= self.start_ns
            && s.start_ns <= self.end_ns
            && self.min_duration_ns.is_none_or(|m| d >= m)
            && self.max_duration_ns.is_none_or(|m| d <= m)
            && self.error.is_none_or(|e| (s.error_count > 0) == e)
    }

    /// The conditions a fragment must meet to be a candidate, on the columns.
    fn matches_row(&self, r: &SummaryRows<'_>, i: usize) -> bool {
        let (start, d) = (r.start_ns(i), r.duration_ns(i));
        start >= self.start_ns
            && start <= self.end_ns
            && self.min_duration_ns.is_none_or(|m| d >= m)
            && self.max_duration_ns.is_none_or(|m| d <= m)
            && self
                .span_min_duration_ns
                .is_none_or(|m| r.max_span_duration_ns(i) >= m)
            && self
                .span_max_duration_ns
                .is_none_or(|m| r.min_span_duration_ns(i) <= m)
            && self.error.is_none_or(|e| (r.error_count(i) > 0) == e)
            && self
                .service
                .as_ref()
                .is_none_or(|svc| r.has_service(i, svc))
            && self
                .operation
                .as_ref()
                .is_none_or(|op| r.has_operation(i, self.service.as_deref(), op))
    }
}

/// Opens a listed file for reading, or `None` when compaction or
/// retention deleted it after the reader took its snapshot of the sets.
/// A file whose schema is not the one this build writes is an error, not
/// a panic.
fn open_builder(
    set: &LiveSet,
    name: &str,
    meta: &std::sync::OnceLock<ArrowReaderMetadata>,
    want: &arrow_schema::SchemaRef,
) -> Result<Option<ParquetRecordBatchReaderBuilder<File>>, StoreError> {
    let path = set.path(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("failed to open", &path)(e)),
    };
    let meta = match meta.get() {
        Some(m) => m.clone(),
        None => {
            let m = reader_metadata(&path)?;
            check_schema(&path, m.schema(), want)?;
            let _ = meta.set(m.clone());
            m
        }
    };
    Ok(Some(ParquetRecordBatchReaderBuilder::new_with_metadata(
        file, meta,
    )))
}

fn check_schema(
    path: &Path,
    got: &arrow_schema::SchemaRef,
    want: &arrow_schema::SchemaRef,
) -> Result<(), StoreError> {
    let same = got.fields().len() == want.fields().len()
        && got
            .fields()
            .iter()
            .zip(want.fields())
            .all(|(g, w)| g.name() == w.name() && g.data_type().equals_datatype(w.data_type()));
    if same {
        Ok(())
    } else {
        Err(format_err(
            path,
            "columns differ from the span file format this build reads (version 1)",
        ))
    }
}

fn collect_batches(
    builder: ParquetRecordBatchReaderBuilder<File>,
    path: &Path,
) -> Result<Vec<RecordBatch>, StoreError> {
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
    reader
        .map(|b| b.map_err(|e| format_err(path, format!("unreadable parquet: {e}"))))
        .collect()
}

fn read_small(
    set: &LiveSet,
    name: Option<&String>,
    want: &arrow_schema::SchemaRef,
) -> Result<Vec<RecordBatch>, StoreError> {
    let Some(name) = name else {
        return Ok(Vec::new());
    };
    let path = set.path(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("failed to open", &path)(e)),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format_err(&path, format!("unreadable parquet: {e}")))?;
    check_schema(&path, builder.schema(), want)?;
    collect_batches(builder, &path)
}

pub(crate) fn read_summaries(set: &LiveSet) -> Result<Vec<TraceSummary>, StoreError> {
    read_summaries_where(set, |_, _| true)
}

/// The summaries of a set whose rows `keep` accepts (tested on the columns,
/// before a summary is built).
pub(crate) fn read_summaries_where(
    set: &LiveSet,
    keep: impl Fn(&SummaryRows<'_>, usize) -> bool,
) -> Result<Vec<TraceSummary>, StoreError> {
    let Some(name) = &set.set.summaries else {
        return Ok(Vec::new());
    };
    let Some(builder) = open_builder(set, name, &set.summaries_meta, &summary::SUMMARY_SCHEMA)?
    else {
        return Ok(Vec::new());
    };
    Ok(collect_batches(builder, &set.path(name))?
        .iter()
        .flat_map(|b| summary::batch_to_summaries_where(b, &keep))
        .collect())
}

/// The trace ids of a set (only that column is read).
pub(crate) fn read_trace_ids(set: &LiveSet) -> Result<Vec<[u8; 16]>, StoreError> {
    let Some(name) = &set.set.summaries else {
        return Ok(Vec::new());
    };
    let Some(builder) = open_builder(set, name, &set.summaries_meta, &summary::SUMMARY_SCHEMA)?
    else {
        return Ok(Vec::new());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
    Ok(
        collect_batches(builder.with_projection(mask), &set.path(name))?
            .iter()
            .flat_map(|b| {
                let col = b.column(0).as_fixed_size_binary();
                (0..col.len())
                    .map(|i| col.value(i).try_into().unwrap_or([0; 16]))
                    .collect::<Vec<[u8; 16]>>()
            })
            .collect(),
    )
}

/// The edge rows of a set (read once, then kept: they are few).
pub(crate) fn read_edges(set: &LiveSet) -> Result<Arc<Vec<EdgeRow>>, StoreError> {
    if let Some(rows) = set.edges.get() {
        return Ok(rows.clone());
    }
    let rows: Arc<Vec<EdgeRow>> = Arc::new(
        read_small(set, set.set.edges.as_ref(), &summary::EDGE_SCHEMA)?
            .iter()
            .flat_map(summary::batch_to_edges)
            .collect(),
    );
    let _ = set.edges.set(rows.clone());
    Ok(rows)
}

/// The operation rows of a set (read once, then kept).
pub(crate) fn read_operations(set: &LiveSet) -> Result<Arc<Vec<OperationRow>>, StoreError> {
    if let Some(rows) = set.operations.get() {
        return Ok(rows.clone());
    }
    let rows: Arc<Vec<OperationRow>> = Arc::new(
        read_small(set, set.set.operations.as_ref(), &summary::OPERATION_SCHEMA)?
            .iter()
            .flat_map(summary::batch_to_operations)
            .collect(),
    );
    let _ = set.operations.set(rows.clone());
    Ok(rows)
}

pub(crate) fn read_all_spans(set: &LiveSet) -> Result<Vec<Span>, StoreError> {
    let Some(name) = &set.set.spans else {
        return Ok(Vec::new());
    };
    let Some(builder) = open_builder(set, name, &set.spans_meta, &schema::SPAN_SCHEMA)? else {
        return Ok(Vec::new());
    };
    Ok(collect_batches(builder, &set.path(name))?
        .iter()
        .flat_map(schema::batch_to_spans)
        .collect())
}

/// The spans of the given traces in one set: row groups are pruned by the
/// `trace_id` statistics (rows are sorted by it), rows by a filter on it.
pub(crate) fn read_spans_of(
    set: &LiveSet,
    ids: &HashSet<[u8; 16]>,
) -> Result<Vec<Span>, StoreError> {
    let Some(name) = &set.set.spans else {
        return Ok(Vec::new());
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let Some(builder) = open_builder(set, name, &set.spans_meta, &schema::SPAN_SCHEMA)? else {
        return Ok(Vec::new());
    };
    let (lo, hi) = (
        ids.iter().min().copied().unwrap_or([0; 16]),
        ids.iter().max().copied().unwrap_or([0xff; 16]),
    );
    let groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(0).statistics() {
            Some(st @ Statistics::FixedLenByteArray(_)) => {
                let min = st.min_bytes_opt().unwrap_or(&[0u8; 16][..]);
                let max = st.max_bytes_opt().unwrap_or(&[0xffu8; 16][..]);
                min <= &hi[..] && max >= &lo[..]
            }
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
    let wanted = ids.clone();
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let col = batch.column(0).as_fixed_size_binary();
        Ok((0..col.len())
            .map(|i| Some(<[u8; 16]>::try_from(col.value(i)).is_ok_and(|id| wanted.contains(&id))))
            .collect::<BooleanArray>())
    });
    let builder = builder
        .with_row_groups(groups)
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
    Ok(collect_batches(builder, &set.path(name))?
        .iter()
        .flat_map(schema::batch_to_spans)
        .collect())
}

use arrow_array::Array;

impl TraceStore {
    /// Every stored span of a trace, from all its fragments, without
    /// duplicates (a span id seen twice is returned once).
    pub fn trace(&self, tenant: &TenantId, trace_id: &[u8; 16]) -> Result<Vec<Span>, StoreError> {
        self.trace_within(tenant, trace_id, &Deadline::none())
    }

    /// [`TraceStore::trace`], stopping at `deadline`.
    pub fn trace_within(
        &self,
        tenant: &TenantId,
        trace_id: &[u8; 16],
        deadline: &Deadline,
    ) -> Result<Vec<Span>, StoreError> {
        let ids: HashSet<[u8; 16]> = [*trace_id].into();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for set in self.sets(tenant).iter().filter(|s| s.may_hold(trace_id)) {
            deadline.check()?;
            for s in read_spans_of(set, &ids)? {
                if seen.insert(s.span_id) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// The newest traces (by start) matching `q` and, when given, `pred`
    /// over their spans. Fragments of a trace found together are merged.
    pub fn search(
        &self,
        tenant: &TenantId,
        q: &TraceQuery,
        pred: Option<SpanPredicate<'_>>,
    ) -> Result<Vec<TraceSummary>, StoreError> {
        let mut sets: Vec<_> = self
            .sets(tenant)
            .into_iter()
            .filter(|s| s.set.summaries.is_some())
            .filter(|s| s.set.max_time_ns >= q.start_ns && s.set.min_time_ns <= q.end_ns)
            .collect();
        sets.sort_by_key(|s| std::cmp::Reverse(s.set.max_time_ns));
        let limit = q.limit.max(1);
        let mut found: HashMap<[u8; 16], TraceSummary> = HashMap::new();
        for set in sets {
            q.deadline.check()?;
            if found.len() >= limit {
                let mut starts: Vec<i64> = found.values().map(|s| s.start_ns).collect();
                starts.sort_unstable_by(|a, b| b.cmp(a));
                if set.set.max_time_ns < starts[limit - 1] {
                    break;
                }
            }
            let mut cands: Vec<TraceSummary> =
                read_summaries_where(&set, |r, i| q.matches_row(r, i))?;
            if let Some(pred) = pred
                && !cands.is_empty()
            {
                // Newest candidates first, in chunks: once this set has given
                // `limit` matches, its older candidates cannot make the cut.
                cands.sort_by_key(|c| std::cmp::Reverse(c.start_ns));
                let mut kept = Vec::new();
                for chunk in cands.chunks(PREDICATE_CHUNK.max(limit.saturating_mul(4))) {
                    q.deadline.check()?;
                    let ids: HashSet<[u8; 16]> = chunk.iter().map(|s| s.trace_id).collect();
                    let mut by_trace: HashMap<[u8; 16], Vec<Span>> = HashMap::new();
                    for s in read_spans_of(&set, &ids)? {
                        by_trace.entry(s.trace_id).or_default().push(s);
                    }
                    kept.extend(
                        chunk
                            .iter()
                            .filter(|c| by_trace.get(&c.trace_id).is_some_and(|spans| pred(spans)))
                            .cloned(),
                    );
                    if kept.len() >= limit {
                        break;
                    }
                }
                cands = kept;
            }
            for c in cands {
                match found.get_mut(&c.trace_id) {
                    Some(f) => f.merge(&c),
                    None => {
                        found.insert(c.trace_id, c);
                    }
                }
            }
        }
        let mut out: Vec<TraceSummary> = found.into_values().collect();
        out.sort_by(|a, b| {
            b.start_ns
                .cmp(&a.start_ns)
                .then(a.trace_id.cmp(&b.trace_id))
        });
        // Whole-trace conditions (duration, "no error", the start window)
        // hold for the merge of all fragments, not for the one that matched.
        out.truncate(limit.saturating_mul(2));
        self.complete_summaries(tenant, &mut out, &q.deadline)?;
        out.retain(|s| q.matches_whole(s));
        out.sort_by(|a, b| {
            b.start_ns
                .cmp(&a.start_ns)
                .then(a.trace_id.cmp(&b.trace_id))
        });
        out.truncate(limit);
        Ok(out)
    }

    /// Replaces each summary by the merge of every stored fragment of its
    /// trace, so a result shows the whole trace even when only one fragment
    /// matched.
    fn complete_summaries(
        &self,
        tenant: &TenantId,
        out: &mut [TraceSummary],
        deadline: &Deadline,
    ) -> Result<(), StoreError> {
        let sets = self.sets(tenant);
        let wanted: HashSet<[u8; 16]> = out.iter().map(|s| s.trace_id).collect();
        let mut cache: HashMap<u64, Vec<TraceSummary>> = HashMap::new();
        for result in out.iter_mut() {
            deadline.check()?;
            let mut merged: Option<TraceSummary> = None;
            for set in sets.iter().filter(|s| s.may_hold(&result.trace_id)) {
                let sums = match cache.entry(set.set.id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v
                        .insert(read_summaries_where(set, |r, i| {
                            wanted.contains(&r.trace_id(i))
                        })?),
                };
                for f in sums.iter().filter(|f| f.trace_id == result.trace_id) {
                    match &mut merged {
                        Some(m) => m.merge(f),
                        None => merged = Some(f.clone()),
                    }
                }
            }
            if let Some(m) = merged {
                *result = m;
            }
        }
        Ok(())
    }

    /// Service-graph rows with a minute in `[start_ns, end_ns)`.
    pub fn edges(
        &self,
        tenant: &TenantId,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<EdgeRow>, StoreError> {
        let mut out = Vec::new();
        for set in self.sets(tenant) {
            if set.set.edges.is_none()
                || set.set.max_time_ns < start_ns.saturating_sub(super::MINUTE_NS)
                || set.set.min_time_ns >= end_ns
            {
                continue;
            }
            out.extend(
                read_edges(&set)?
                    .iter()
                    .filter(|e| e.minute_ns >= super::minute_of(start_ns) && e.minute_ns < end_ns)
                    .cloned(),
            );
        }
        Ok(out)
    }

    /// Operation (RED) rows with a minute in `[start_ns, end_ns)`.
    pub fn operation_rows(
        &self,
        tenant: &TenantId,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<OperationRow>, StoreError> {
        let mut out = Vec::new();
        for set in self.sets(tenant) {
            if set.set.operations.is_none()
                || set.set.max_time_ns < start_ns.saturating_sub(super::MINUTE_NS)
                || set.set.min_time_ns >= end_ns
            {
                continue;
            }
            out.extend(
                read_operations(&set)?
                    .iter()
                    .filter(|e| e.minute_ns >= super::minute_of(start_ns) && e.minute_ns < end_ns)
                    .cloned(),
            );
        }
        Ok(out)
    }
}
