//! The span store: Parquet files per tenant and hour under
//! `<data-dir>/tenants/<tenant>/traces/<YYYY-MM-DDTHH>/`, listed in a per-tenant
//! manifest (`traces/manifest.json`, replaced by rename).
//!
//! Each write (a flush of completed traces by the collector's assembler)
//! adds, per partition it touches, a *file set*: `spans-N.parquet` (one row
//! per span, sorted by trace id then start, with a bloom filter on
//! `trace_id`), `summaries-N.parquet` (one row per trace fragment),
//! `edges-N.parquet` (service-graph edges per minute) and
//! `operations-N.parquet` (calls, errors and durations per operation and
//! minute). Files become visible only once the manifest lists them; a file
//! not listed is left over from a crash and deleted on open.
//!
//! Exactly-once after a crash: the manifest records `durable_lsn` — every
//! span of a WAL entry at or below it is in a listed file — and, per file
//! set, `max_lsn`, the last WAL entry the assembler had taken in when it
//! wrote the set. A trace written in a set includes every span of that trace
//! from entries up to `max_lsn`, so on replay a span of entry `L` is already
//! stored exactly when a set with `max_lsn >= L` holds its trace
//! ([`TraceStore::replay_filter`]). Compaction (`compact.rs`) only merges
//! sets at or below `durable_lsn`, which replay never consults.
//!
//! The manifest, its atomic replacement, the deletion of unlisted files and
//! the grace given to replaced sets are the shared file-set lifecycle of
//! `fileset.rs`.

mod compact;
mod read;
mod schema;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use arrow_array::RecordBatch;
pub use compact::{merge_edges, merge_operations};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use periscope_proto::Span;
pub use read::{SpanPredicate, TraceQuery};
pub use schema::SPAN_FILE_VERSION;
use serde::{Deserialize, Serialize};
pub use summary::{
    EdgeRow, LATENCY_BOUNDS_MS, LatencyHistogram, NODE_KINDS, OperationRow, TraceSummary,
};

use crate::fileset::{self, Graveyard, ListedFile};
use crate::layout::sync_dir;
use crate::partition::{HOUR_NS, parse_partition_dir_name, partition_dir_name};
use crate::sync::{MutexRecover, RwLockRecover};
use crate::{DataDir, StoreError, TenantId};

const MANIFEST_VERSION: u32 = 1;
const MINUTE_NS: i64 = 60_000_000_000;
/// Threads converting spans to Arrow while a span file is written.
const CONVERT_THREADS: usize = 2;

/// Tuning of the span store.
#[derive(Clone, Debug)]
pub struct TraceStoreOptions {
    /// Partitions whose hour ended longer ago than this are deleted. Default 7 days.
    pub retention: Duration,
    /// Rows per Parquet row group. Default 65,536.
    pub row_group_rows: usize,
    /// Compaction merges the file sets of a partition once it has this many. Default 8.
    pub compact_min_files: usize,
}

impl Default for TraceStoreOptions {
    fn default() -> Self {
        TraceStoreOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            row_group_rows: 65_536,
            compact_min_files: 8,
        }
    }
}

/// One written trace fragment: spans of one trace, all of one tenant.
#[derive(Debug)]
pub struct Fragment {
    pub spans: Arc<Vec<Span>>,
    /// The trace lost spans to the per-trace cap.
    pub truncated: bool,
}

/// What one tenant gets from a flush.
#[derive(Debug, Default)]
pub struct TenantFlush {
    pub fragments: Vec<Fragment>,
    pub edges: Vec<EdgeRow>,
    pub operations: Vec<OperationRow>,
}

/// One flush of the assembler.
#[derive(Debug, Default)]
pub struct FlushBatch {
    pub tenants: HashMap<TenantId, TenantFlush>,
    /// The last WAL entry the assembler had taken in when it cut this batch.
    pub max_lsn: u64,
    /// Every span of entries at or below this is already in listed files.
    pub durable_lsn: u64,
}

/// A tenant's written (not yet listed) sets, the operations they name, and
/// the next free file number.
type StagedTenant = (Vec<LiveSet>, BTreeSet<(String, String)>, u64);

/// A [`TraceStore::write`] that failed for some tenants: their part of the
/// batch is not stored (nothing of theirs was published); every other
/// tenant's part is.
#[derive(Debug)]
pub struct WriteError {
    pub failed: Vec<(TenantId, StoreError)>,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.failed.first() {
            Some((tenant, e)) => write!(
                f,
                "failed to write the traces of {} tenant(s), first {tenant}: {e}",
                self.failed.len()
            ),
            None => f.write_str("no tenant failed"),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failed
            .first()
            .map(|(_, e)| e as &(dyn std::error::Error + 'static))
    }
}

/// A file set in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileSet {
    /// Partition directory name (`YYYY-MM-DDTHH`).
    pub partition: String,
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summaries: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<String>,
    pub max_lsn: u64,
    /// Earliest and latest fragment start (or edge minute) in the set, Unix ns.
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    pub span_count: u64,
    pub trace_count: u64,
    pub bytes: u64,
}

impl ListedFile for FileSet {
    const MANIFEST_VERSION: u32 = MANIFEST_VERSION;
    const WHAT: &'static str = "trace";
    /// Set ids are unique within a tenant.
    type Key = u64;

    fn key(&self) -> u64 {
        self.id
    }

    fn partition(&self) -> &str {
        &self.partition
    }

    fn file_names(&self) -> Vec<String> {
        [&self.spans, &self.summaries, &self.edges, &self.operations]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// A tenant's span manifest.
type Manifest = fileset::Manifest<FileSet>;

/// A listed file set with what readers keep in memory about it.
#[derive(Debug)]
pub(crate) struct LiveSet {
    pub(crate) set: FileSet,
    pub(crate) dir: PathBuf,
    /// First 8 bytes of every trace id in the set, sorted.
    pub(crate) trace_keys: Vec<u64>,
    pub(crate) spans_meta: OnceLock<ArrowReaderMetadata>,
    pub(crate) summaries_meta: OnceLock<ArrowReaderMetadata>,
    pub(crate) edges: OnceLock<Arc<Vec<EdgeRow>>>,
    pub(crate) operations: OnceLock<Arc<Vec<OperationRow>>>,
}

impl LiveSet {
    pub(crate) fn may_hold(&self, trace_id: &[u8; 16]) -> bool {
        self.trace_keys.binary_search(&trace_key(trace_id)).is_ok()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(crate) fn trace_key(id: &[u8; 16]) -> u64 {
    u64::from_be_bytes(id[..8].try_into().expect("8 bytes"))
}

#[derive(Default)]
struct TenantState {
    manifest: Manifest,
    sets: Vec<Arc<LiveSet>>,
    operations: BTreeSet<(String, String)>,
    /// The next file number to hand out (flushes and compaction write
    /// concurrently; the manifest's `next_file` follows when they publish).
    next_alloc: u64,
}

/// Counters for self-metrics.
#[derive(Debug, Default)]
pub struct TraceStoreStats {
    pub files_written: std::sync::atomic::AtomicU64,
    pub spans_written: std::sync::atomic::AtomicU64,
    pub bytes_written: std::sync::atomic::AtomicU64,
}

/// The span store of every tenant.
pub struct TraceStore {
    data: DataDir,
    opts: TraceStoreOptions,
    tenants: RwLock<HashMap<TenantId, TenantState>>,
    /// Serialises writers (flushes, compaction, retention).
    write_lock: Mutex<()>,
    /// Sets replaced by compaction, deleted after their grace.
    graveyard: Graveyard,
    stats: TraceStoreStats,
}

impl std::fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStore").finish_non_exhaustive()
    }
}

fn traces_dir(data: &DataDir, tenant: &TenantId) -> PathBuf {
    data.traces_dir(tenant)
}

fn format_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Format {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl TraceStore {
    /// Opens every tenant's manifest, deletes files no manifest lists, and
    /// loads the trace ids of every listed set.
    pub fn open(data: &DataDir, opts: TraceStoreOptions) -> Result<Arc<TraceStore>, StoreError> {
        let mut tenants = HashMap::new();
        for tenant in crate::layout::tenants_with(data, "traces")? {
            let dir = traces_dir(data, &tenant);
            tenants.insert(tenant, open_tenant(&dir)?);
        }
        Ok(Arc::new(TraceStore {
            data: data.clone(),
            opts,
            tenants: RwLock::new(tenants),
            write_lock: Mutex::new(()),
            graveyard: Graveyard::default(),
            stats: TraceStoreStats::default(),
        }))
    }

    pub fn stats(&self) -> &TraceStoreStats {
        &self.stats
    }

    fn read_tenants(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, TenantState>> {
        self.tenants.read_or_recover()
    }

    fn write_tenants(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<TenantId, TenantState>> {
        self.tenants.write_or_recover()
    }

    /// The highest `durable_lsn` any manifest recorded: every span of a WAL
    /// entry at or below it is stored.
    pub fn durable_lsn(&self) -> u64 {
        self.read_tenants()
            .values()
            .map(|t| t.manifest.durable_lsn)
            .max()
            .unwrap_or(0)
    }

    /// The highest WAL position any manifest mentions.
    pub fn max_lsn(&self) -> u64 {
        self.read_tenants()
            .values()
            .flat_map(|t| {
                std::iter::once(t.manifest.durable_lsn)
                    .chain(t.manifest.files.iter().map(|f| f.max_lsn))
            })
            .max()
            .unwrap_or(0)
    }

    /// For replay after a crash: per (tenant, trace id), the highest
    /// `max_lsn` of the sets above `durable` that hold the trace. A span of
    /// WAL entry `L` is already stored when its trace maps to `>= L`.
    pub fn replay_filter(
        &self,
        durable: u64,
    ) -> Result<HashMap<(TenantId, [u8; 16]), u64>, StoreError> {
        let mut out = HashMap::new();
        let tenants = self.read_tenants();
        for (tenant, st) in tenants.iter() {
            for set in st.sets.iter().filter(|s| s.set.max_lsn > durable) {
                for trace_id in read::read_trace_ids(set)? {
                    let e = out.entry((tenant.clone(), trace_id)).or_insert(0);
                    *e = (*e).max(set.set.max_lsn);
                }
            }
        }
        Ok(out)
    }

    /// Writes a flush: per tenant and partition one file set, then the
    /// tenant's manifest. Tenants are independent: one whose files or
    /// manifest cannot be written (its directory is unwritable, say) is
    /// reported in the error with nothing of it published, and the others
    /// are written all the same. Returns once everything written is durable.
    pub fn write(&self, batch: FlushBatch) -> Result<(), WriteError> {
        let _w = self.write_lock.lock_or_recover();
        let mut failed = Vec::new();
        let mut tenants: Vec<(TenantId, TenantFlush)> = batch.tenants.into_iter().collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        for (tenant, flush) in tenants {
            // A failure in the files publishes nothing (those written so
            // far are removed, or go away on open as unlisted); a failed
            // manifest write removes the tenant's new files too.
            let result = self
                .write_tenant_files(&tenant, flush, batch.max_lsn)
                .and_then(|(sets, ops, next_file)| {
                    self.publish(&tenant, sets, ops, next_file, batch.durable_lsn)
                });
            if let Err(e) = result {
                failed.push((tenant, e));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(WriteError { failed })
        }
    }

    /// Writes a tenant's file sets of a flush; returns them, the operations
    /// they name, and the next free file number.
    fn write_tenant_files(
        &self,
        tenant: &TenantId,
        flush: TenantFlush,
        max_lsn: u64,
    ) -> Result<StagedTenant, StoreError> {
        let dir = traces_dir(&self.data, tenant);
        let mut parts: HashMap<i64, TenantFlush> = HashMap::new();
        for f in flush.fragments {
            let start = f.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
            parts.entry(hour_of(start)).or_default().fragments.push(f);
        }
        for e in flush.edges {
            parts.entry(hour_of(e.minute_ns)).or_default().edges.push(e);
        }
        for o in flush.operations {
            parts
                .entry(hour_of(o.minute_ns))
                .or_default()
                .operations
                .push(o);
        }
        let mut next_file = 1;
        let mut new_sets = Vec::new();
        let mut new_ops = BTreeSet::new();
        for (hour, part) in parts {
            let id = self.alloc_file(tenant);
            next_file = id + 1;
            new_ops.extend(
                part.operations
                    .iter()
                    .map(|o| (o.service.clone(), o.operation.clone())),
            );
            match self.write_set(&dir, hour, id, part, max_lsn) {
                Ok(set) => new_sets.push(set),
                Err(e) => {
                    for s in &new_sets {
                        remove_set_files(&dir, &s.set);
                    }
                    return Err(e);
                }
            }
        }
        Ok((new_sets, new_ops, next_file))
    }

    /// Hands out a file number of a tenant.
    fn alloc_file(&self, tenant: &TenantId) -> u64 {
        let mut tenants = self.write_tenants();
        let st = tenants.entry(tenant.clone()).or_default();
        let id = st.next_alloc.max(st.manifest.next_file).max(1);
        st.next_alloc = id + 1;
        id
    }

    /// Adds sets to a tenant's manifest (durable first), then to the
    /// in-memory view. Callers hold `write_lock`, so the manifest read here
    /// is the latest; readers are not blocked during the fsync.
    fn publish(
        &self,
        tenant: &TenantId,
        sets: Vec<LiveSet>,
        ops: BTreeSet<(String, String)>,
        next_file: u64,
        durable_lsn: u64,
    ) -> Result<(), StoreError> {
        let dir = traces_dir(&self.data, tenant);
        let manifest = self
            .read_tenants()
            .get(tenant)
            .map(|t| t.manifest.clone())
            .unwrap_or_default()
            .publishing(sets.iter().map(|s| s.set.clone()), durable_lsn, next_file);
        if let Err(e) = manifest.write(&dir) {
            for s in &sets {
                remove_set_files(&dir, &s.set);
            }
            return Err(e);
        }
        let mut tenants = self.write_tenants();
        let st = tenants.entry(tenant.clone()).or_default();
        st.manifest = manifest;
        st.sets.extend(sets.into_iter().map(Arc::new));
        st.operations.extend(ops);
        Ok(())
    }

    fn write_set(
        &self,
        tenant_dir: &Path,
        hour: i64,
        id: u64,
        mut part: TenantFlush,
        max_lsn: u64,
    ) -> Result<LiveSet, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let partition = partition_dir_name(hour);
        let dir = tenant_dir.join(&partition);
        std::fs::create_dir_all(&dir).map_err(StoreError::io("failed to create", &dir))?;
        let mut set = FileSet {
            partition,
            id,
            spans: None,
            summaries: None,
            edges: None,
            operations: None,
            max_lsn,
            min_time_ns: i64::MAX,
            max_time_ns: i64::MIN,
            span_count: 0,
            trace_count: 0,
            bytes: 0,
        };
        let mut trace_keys = Vec::new();
        if !part.fragments.is_empty() {
            let mut summaries: Vec<TraceSummary> = part
                .fragments
                .iter()
                .map(|f| {
                    let refs: Vec<&Span> = f.spans.iter().collect();
                    TraceSummary::of(&refs, f.truncated)
                })
                .collect();
            summaries.sort_by_key(|s| s.trace_id);
            let mut spans: Vec<&Span> =
                part.fragments.iter().flat_map(|f| f.spans.iter()).collect();
            spans.sort_by_key(|s| (s.trace_id, s.start_ns));
            for s in &summaries {
                set.min_time_ns = set.min_time_ns.min(s.start_ns);
                set.max_time_ns = set.max_time_ns.max(s.start_ns);
            }
            trace_keys = summaries.iter().map(|s| trace_key(&s.trace_id)).collect();
            set.span_count = spans.len() as u64;
            set.trace_count = summaries.len() as u64;
            let name = format!("spans-{id}.parquet");
            // One Arrow batch per row group keeps the conversion's memory
            // small; two threads convert alternate row groups while this one
            // encodes and compresses them in order.
            let rows = self.opts.row_group_rows.max(1);
            let chunks: Vec<&[&Span]> = spans.chunks(rows).collect();
            let n = chunks.len();
            set.bytes += std::thread::scope(|scope| {
                let mut receivers = Vec::new();
                for lane in 0..CONVERT_THREADS {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let chunks = &chunks;
                    scope.spawn(move || {
                        for chunk in chunks.iter().skip(lane).step_by(CONVERT_THREADS) {
                            if tx.send(schema::spans_to_batch(chunk)).is_err() {
                                break;
                            }
                        }
                    });
                    receivers.push(rx);
                }
                let batches = (0..n).map_while(|i| receivers[i % CONVERT_THREADS].recv().ok());
                self.write_parquet(
                    &dir.join(&name),
                    &schema::SPAN_SCHEMA,
                    batches,
                    ParquetKind::Spans,
                    summaries.len() as u64,
                )
            })?;
            set.spans = Some(name);
            let refs: Vec<&TraceSummary> = summaries.iter().collect();
            let name = format!("summaries-{id}.parquet");
            set.bytes += self.write_parquet(
                &dir.join(&name),
                &summary::SUMMARY_SCHEMA,
                std::iter::once(summary::summaries_to_batch(&refs)),
                ParquetKind::Summaries,
                0,
            )?;
            set.summaries = Some(name);
        }
        if !part.edges.is_empty() {
            part.edges.sort_by(|a, b| {
                (a.minute_ns, &a.client, &a.server).cmp(&(b.minute_ns, &b.client, &b.server))
            });
            for e in &part.edges {
                set.min_time_ns = set.min_time_ns.min(e.minute_ns);
                set.max_time_ns = set.max_time_ns.max(e.minute_ns);
            }
            let refs: Vec<&EdgeRow> = part.edges.iter().collect();
            let name = format!("edges-{id}.parquet");
            set.bytes += self.write_parquet(
                &dir.join(&name),
                &summary::EDGE_SCHEMA,
                std::iter::once(summary::edges_to_batch(&refs)),
                ParquetKind::Small,
                0,
            )?;
            set.edges = Some(name);
        }
        if !part.operations.is_empty() {
            part.operations.sort_by(|a, b| {
                (a.minute_ns, &a.service, &a.operation).cmp(&(
                    b.minute_ns,
                    &b.service,
                    &b.operation,
                ))
            });
            for o in &part.operations {
                set.min_time_ns = set.min_time_ns.min(o.minute_ns);
                set.max_time_ns = set.max_time_ns.max(o.minute_ns);
            }
            let refs: Vec<&OperationRow> = part.operations.iter().collect();
            let name = format!("operations-{id}.parquet");
            set.bytes += self.write_parquet(
                &dir.join(&name),
                &summary::OPERATION_SCHEMA,
                std::iter::once(summary::operations_to_batch(&refs)),
                ParquetKind::Small,
                0,
            )?;
            set.operations = Some(name);
        }
        sync_dir(&dir)?;
        self.stats.files_written.fetch_add(1, Relaxed);
        self.stats.spans_written.fetch_add(set.span_count, Relaxed);
        self.stats.bytes_written.fetch_add(set.bytes, Relaxed);
        Ok(LiveSet {
            set,
            dir,
            trace_keys: sorted_keys(trace_keys),
            spans_meta: OnceLock::new(),
            summaries_meta: OnceLock::new(),
            edges: OnceLock::new(),
            operations: OnceLock::new(),
        })
    }

    fn write_parquet(
        &self,
        path: &Path,
        schema: &arrow_schema::SchemaRef,
        batches: impl Iterator<Item = RecordBatch>,
        kind: ParquetKind,
        distinct_traces: u64,
    ) -> Result<u64, StoreError> {
        let props = writer_properties(kind, self.opts.row_group_rows, distinct_traces);
        let file = File::create(path).map_err(StoreError::io("failed to create", path))?;
        let parquet_err = |e: parquet::errors::ParquetError| {
            format_err(path, format!("parquet write failed: {e}"))
        };
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_err)?;
        for batch in batches {
            w.write(&batch).map_err(parquet_err)?;
        }
        let file = w.into_inner().map_err(parquet_err)?;
        file.sync_all()
            .map_err(StoreError::io("failed to fsync", path))?;
        Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
    }

    /// The file sets of a tenant, for readers.
    pub(crate) fn sets(&self, tenant: &TenantId) -> Vec<Arc<LiveSet>> {
        self.read_tenants()
            .get(tenant)
            .map(|t| t.sets.clone())
            .unwrap_or_default()
    }

    /// The manifest's file sets of a tenant (for tests and tools).
    pub fn file_sets(&self, tenant: &TenantId) -> Vec<FileSet> {
        self.sets(tenant).iter().map(|s| s.set.clone()).collect()
    }

    /// The operations (span names) seen for a service, sorted.
    pub fn operations_of(&self, tenant: &TenantId, service: &str) -> Vec<String> {
        self.read_tenants()
            .get(tenant)
            .map(|t| {
                t.operations
                    .iter()
                    .filter(|(s, _)| s == service)
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every service that has operations in a tenant.
    pub fn services(&self, tenant: &TenantId) -> Vec<String> {
        self.read_tenants()
            .get(tenant)
            .map(|t| {
                let s: BTreeSet<&String> = t.operations.iter().map(|(s, _)| s).collect();
                s.into_iter().cloned().collect()
            })
            .unwrap_or_default()
    }

    /// Tenants with a span store.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.read_tenants().keys().cloned().collect()
    }

    /// Deletes partitions whose hour ended longer ago than the retention.
    /// Returns how many file sets were dropped.
    pub fn apply_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        let cutoff = now_ns - i64::try_from(self.opts.retention.as_nanos()).unwrap_or(i64::MAX);
        self.drop_sets(|s| {
            parse_partition_dir_name(&s.partition).is_some_and(|h| h + HOUR_NS <= cutoff)
        })
    }

    fn drop_sets(&self, doomed: impl Fn(&FileSet) -> bool) -> Result<usize, StoreError> {
        let _w = self.write_lock.lock_or_recover();
        let mut dropped = 0;
        for tenant in self.tenants() {
            let Some((manifest, gone)) = self
                .read_tenants()
                .get(&tenant)
                .and_then(|t| t.manifest.dropping(&doomed))
            else {
                continue;
            };
            let dir = traces_dir(&self.data, &tenant);
            manifest.write(&dir)?;
            {
                let mut tenants = self.write_tenants();
                let st = tenants.entry(tenant.clone()).or_default();
                st.manifest = manifest;
                st.sets.retain(|s| !doomed(&s.set));
            }
            dropped += gone.len();
            fileset::remove_files(&dir, &gone);
        }
        Ok(dropped)
    }
}

/// The start of the minute holding `ts_ns`.
pub fn minute_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(MINUTE_NS) * MINUTE_NS
}

fn hour_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(HOUR_NS) * HOUR_NS
}

fn sorted_keys(mut keys: Vec<u64>) -> Vec<u64> {
    keys.sort_unstable();
    keys.dedup();
    keys.shrink_to_fit();
    keys
}

#[derive(Clone, Copy, PartialEq)]
enum ParquetKind {
    Spans,
    Summaries,
    Small,
}

fn writer_properties(
    kind: ParquetKind,
    row_group_rows: usize,
    distinct_traces: u64,
) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        // Small pages let a reader of a few rows (trace by id) skip the rest
        // of a column chunk through the page index.
        .set_data_page_row_count_limit(4096)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "periscope.format_version".to_owned(),
            SPAN_FILE_VERSION.to_string(),
        )]));
    let col = |c: &str| ColumnPath::from(c);
    match kind {
        ParquetKind::Spans => {
            b = b
                .set_sorting_columns(Some(vec![
                    SortingColumn {
                        column_idx: 0,
                        descending: false,
                        nulls_first: false,
                    },
                    SortingColumn {
                        column_idx: 1,
                        descending: false,
                        nulls_first: false,
                    },
                ]))
                .set_column_bloom_filter_enabled(col("trace_id"), true)
                .set_column_bloom_filter_fpp(col("trace_id"), 0.01)
                .set_column_bloom_filter_max_ndv(col("trace_id"), distinct_traces.max(1));
            for c in [
                "span_id",
                "parent_span_id",
                "duration_ns",
                "start_time",
                "end_time",
            ] {
                b = b.set_column_dictionary_enabled(col(c), false);
            }
            for c in ["start_time", "end_time", "duration_ns"] {
                b = b.set_column_encoding(col(c), Encoding::DELTA_BINARY_PACKED);
            }
        }
        ParquetKind::Summaries => {
            b = b.set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            }]));
        }
        ParquetKind::Small => {}
    }
    b.build()
}

fn remove_set_files(tenant_dir: &Path, set: &FileSet) {
    fileset::remove_files(tenant_dir, std::slice::from_ref(set));
}

fn open_tenant(dir: &Path) -> Result<TenantState, StoreError> {
    let manifest = Manifest::open(dir)?;
    let mut st = TenantState {
        manifest: manifest.clone(),
        ..Default::default()
    };
    for set in manifest.files {
        let live = LiveSet {
            dir: dir.join(&set.partition),
            set,
            trace_keys: Vec::new(),
            spans_meta: OnceLock::new(),
            summaries_meta: OnceLock::new(),
            edges: OnceLock::new(),
            operations: OnceLock::new(),
        };
        let keys = read::read_trace_ids(&live)?.iter().map(trace_key).collect();
        for o in read::read_operations(&live)?.iter() {
            st.operations
                .insert((o.service.clone(), o.operation.clone()));
        }
        st.sets.push(Arc::new(LiveSet {
            trace_keys: sorted_keys(keys),
            ..live
        }));
    }
    Ok(st)
}

pub(crate) fn reader_metadata(path: &Path) -> Result<ArrowReaderMetadata, StoreError> {
    let file = File::open(path).map_err(StoreError::io("failed to open", path))?;
    ArrowReaderMetadata::load(
        &file,
        ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional),
    )
    .map_err(|e| format_err(path, format!("unreadable parquet: {e}")))
}
