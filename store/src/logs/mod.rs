//! Logs in tantivy: one index per tenant and hour, under
//! `<data-dir>/<tenant>/logs/<YYYY-MM-DDTHH>/`.
//!
//! The [`LogIndexer`] thread applies WAL entries to partition writers and
//! commits about once a second, each commit carrying the WAL position it
//! covers in its payload; [`LogStore`] holds the partitions and answers
//! searches. Retention deletes whole partitions.

mod indexer;
mod migrate;
mod schema;
mod search;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use indexer::{IndexBatch, IndexStats, LogIndexer, LogReread};
use schema::{Fields, PARTITION_VERSION};
pub use search::{
    Cursor, HistogramRequest, LogHit, LogSearch, MAX_LOG_QUERY_DEPTH, SearchPage, log_query_depth,
};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, ReloadPolicy};

use crate::layout::{check_version, read_version, write_atomic};
use crate::partition::{HOUR_NS, hour_partition};
use crate::partition::{parse_partition_dir_name, partition_dir_name};
use crate::sync::RwLockRecover;
use crate::{DataDir, StoreError, TenantId};

/// Tuning of the log store.
#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    /// Partitions whose hour ended longer ago than this are deleted. Default 7 days.
    pub retention: Duration,
    /// Indexing memory per open partition writer. Default 128 MiB.
    pub writer_memory_bytes: usize,
    /// Indexing threads per partition writer. Default 2.
    pub writer_threads: usize,
    /// How often new records are committed and made searchable. Default 1 s.
    pub commit_interval: Duration,
    /// Test hook simulating a slow disk: the indexer sleeps this long per batch. Default 0.
    pub test_apply_delay: Duration,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            retention: Duration::from_secs(7 * 86_400),
            writer_memory_bytes: 128 << 20,
            writer_threads: 2,
            commit_interval: Duration::from_secs(1),
            test_apply_delay: Duration::ZERO,
        }
    }
}

/// The commit payload: which WAL position this commit makes durable.
#[derive(serde::Serialize, serde::Deserialize)]
struct CommitPayload {
    version: u32,
    wal_lsn: u64,
}

/// One hour of one tenant's logs.
pub(crate) struct Partition {
    pub hour_ns: i64,
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    /// The WAL position of the last commit; replayed entries at or below it are skipped.
    pub committed_lsn: AtomicU64,
}

impl Partition {
    fn in_ram() -> Result<Partition, StoreError> {
        let index = Index::create_in_ram(schema::schema());
        schema::register_tokenizers(&index);
        let reader = index
            .reader()
            .map_err(StoreError::index("failed to open index reader"))?;
        let fields = Fields::new(&index.schema());
        Ok(Partition {
            hour_ns: 0,
            dir: PathBuf::new(),
            index,
            reader,
            fields,
            committed_lsn: AtomicU64::new(0),
        })
    }

    fn open_or_create(dir: &Path, hour_ns: i64) -> Result<Partition, StoreError> {
        let meta_path = dir.join("partition.json");
        if read_version(&meta_path, "version")? == Some(migrate::FROM_VERSION) {
            migrate::rebuild(dir, hour_ns)?;
        }
        let existed = check_version(&meta_path, "version", PARTITION_VERSION, "log partition")?;
        if !existed {
            std::fs::create_dir_all(dir)
                .map_err(StoreError::io("failed to create partition", dir))?;
        }
        let mmap = MmapDirectory::open(dir).map_err(|e| StoreError::Format {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let index = if Index::exists(&mmap).map_err(StoreError::index("failed to open index"))? {
            Index::open(mmap).map_err(StoreError::index(format!(
                "failed to open index {}",
                dir.display()
            )))?
        } else {
            create_index(mmap, dir)?
        };
        if !existed {
            write_partition_json(dir, hour_ns)?;
        }
        schema::register_tokenizers(&index);
        let fields = Fields::new(&index.schema());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(StoreError::index("failed to open index reader"))?;
        let committed_lsn = read_payload_lsn(&index, dir)?;
        Ok(Partition {
            hour_ns,
            dir: dir.to_owned(),
            index,
            reader,
            fields,
            committed_lsn: AtomicU64::new(committed_lsn),
        })
    }
}

/// A new, empty partition index in `dir`.
fn create_index(mmap: MmapDirectory, dir: &Path) -> Result<Index, StoreError> {
    let settings = tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::Zstd(tantivy::store::ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: 128 << 10,
        ..Default::default()
    };
    Index::builder()
        .schema(schema::schema())
        .settings(settings)
        .open_or_create(mmap)
        .map_err(StoreError::index(format!(
            "failed to create index {}",
            dir.display()
        )))
}

fn write_partition_json(dir: &Path, hour_ns: i64) -> Result<(), StoreError> {
    let body =
        serde_json::json!({"version": PARTITION_VERSION, "kind": "logs", "hour_start_ns": hour_ns});
    write_atomic(&dir.join("partition.json"), body.to_string().as_bytes())
}

/// The commit payload recording that everything up to `lsn` is durable.
fn commit_payload(lsn: u64) -> String {
    serde_json::to_string(&CommitPayload {
        version: PARTITION_VERSION,
        wal_lsn: lsn,
    })
    .unwrap_or_default()
}

fn read_payload_lsn(index: &Index, dir: &Path) -> Result<u64, StoreError> {
    let metas = index
        .load_metas()
        .map_err(StoreError::index("failed to load index metas"))?;
    match metas.payload {
        None => Ok(0),
        Some(p) => {
            let p: CommitPayload = serde_json::from_str(&p).map_err(|e| StoreError::Format {
                path: dir.to_owned(),
                message: format!("invalid commit payload: {e}"),
            })?;
            Ok(p.wal_lsn)
        }
    }
}

type TenantPartitions = BTreeMap<i64, Arc<Partition>>;

/// All log partitions of all tenants.
pub struct LogStore {
    data: DataDir,
    opts: LogStoreOptions,
    partitions: RwLock<HashMap<TenantId, TenantPartitions>>,
    stats: IndexStats,
    /// An empty in-memory partition to validate queries against.
    query_check: Partition,
}

impl LogStore {
    /// Opens every partition found in the data directory.
    pub fn open(data: &DataDir, opts: LogStoreOptions) -> Result<Arc<LogStore>, StoreError> {
        let mut partitions: HashMap<TenantId, TenantPartitions> = HashMap::new();
        for tenant in crate::layout::tenants_with(data, "logs")? {
            let logs = data.logs_dir(&tenant);
            migrate::recover(&logs)?;
            for p in std::fs::read_dir(&logs)
                .map_err(StoreError::io("failed to list", &logs))?
                .flatten()
            {
                let Some(hour) = p.file_name().to_str().and_then(parse_partition_dir_name) else {
                    continue;
                };
                let part = Partition::open_or_create(&p.path(), hour)?;
                partitions
                    .entry(tenant.clone())
                    .or_default()
                    .insert(hour, Arc::new(part));
            }
        }
        Ok(Arc::new(LogStore {
            data: data.clone(),
            opts,
            partitions: RwLock::new(partitions),
            stats: IndexStats::default(),
            query_check: Partition::in_ram()?,
        }))
    }

    /// The highest WAL position any partition has committed.
    pub fn max_committed_lsn(&self) -> u64 {
        self.read()
            .values()
            .flat_map(|m| m.values())
            .map(|p| p.committed_lsn.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &LogStoreOptions {
        &self.opts
    }

    /// Indexing counters for self-metrics.
    pub fn stats(&self) -> &IndexStats {
        &self.stats
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, TenantPartitions>> {
        self.partitions.read_or_recover()
    }

    pub(crate) fn get_or_create(
        &self,
        tenant: &TenantId,
        hour_ns: i64,
    ) -> Result<Arc<Partition>, StoreError> {
        if let Some(p) = self.read().get(tenant).and_then(|m| m.get(&hour_ns)) {
            return Ok(p.clone());
        }
        let mut w = self.partitions.write_or_recover();
        let m = w.entry(tenant.clone()).or_default();
        if let Some(p) = m.get(&hour_ns) {
            return Ok(p.clone());
        }
        let dir = self.data.logs_dir(tenant).join(partition_dir_name(hour_ns));
        let p = Arc::new(Partition::open_or_create(&dir, hour_ns)?);
        m.insert(hour_ns, p.clone());
        Ok(p)
    }

    /// A tenant's partitions overlapping `[start_ns, end_ns]`, newest first.
    pub(crate) fn partitions_in(
        &self,
        tenant: &TenantId,
        start_ns: i64,
        end_ns: i64,
    ) -> Vec<Arc<Partition>> {
        let from = hour_partition(start_ns);
        // `BTreeMap::range` panics on a reversed range (a cursor older
        // than the start): nothing is in it.
        if from > end_ns {
            return Vec::new();
        }
        self.read()
            .get(tenant)
            .map(|m| {
                m.range(from..=end_ns)
                    .rev()
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes partitions whose hour ended before `now_ns - retention`.
    /// Returns how many were deleted. The indexer never writes to them again:
    /// records older than retention are rejected at the receivers and skipped on replay.
    pub fn apply_retention(&self, now_ns: i64) -> Result<usize, StoreError> {
        let cutoff = self.retention_cutoff(now_ns);
        let mut doomed = Vec::new();
        {
            let mut w = self.partitions.write_or_recover();
            for m in w.values_mut() {
                let old: Vec<i64> = m
                    .range(..)
                    .filter(|(h, _)| **h + HOUR_NS <= cutoff)
                    .map(|(h, _)| *h)
                    .collect();
                for h in old {
                    if let Some(p) = m.remove(&h) {
                        doomed.push(p.dir.clone());
                    }
                }
            }
        }
        for dir in &doomed {
            tracing::info!(partition = %dir.display(), "retention: deleting log partition");
            std::fs::remove_dir_all(dir)
                .map_err(StoreError::io("failed to delete partition", dir))?;
        }
        Ok(doomed.len())
    }

    /// Records older than this (Unix ns) are outside retention.
    pub fn retention_cutoff(&self, now_ns: i64) -> i64 {
        now_ns.saturating_sub(i64::try_from(self.opts.retention.as_nanos()).unwrap_or(i64::MAX))
    }
}
