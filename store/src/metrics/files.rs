//! Metric samples in Parquet: one pair of files per flush (or merge),
//! tenant and hour under `<data-dir>/tenants/<tenant>/metrics/<YYYY-MM-DDTHH>/`,
//! listed in `tenants/<tenant>/metrics/manifest.json` with the WAL
//! position the tenant's files cover (`durable_lsn`, replaced by rename).
//!
//! - `samples-N.parquet`: `metric_name`, `series_id`, `timestamp`, `value`,
//!   `histogram` (native histograms as JSON text, with a null `value`), one
//!   row per sample, sorted by metric name, series and time. zstd, with
//!   statistics and a page index; the name is dictionary-encoded, series ids
//!   and timestamps delta-encoded, values byte-stream split.
//! - `series-N.parquet`: `series_id`, `metric_name`, `first_row` and `rows`
//!   (the series' rows in the samples file), `labels` (a map), one row per
//!   series of the samples file. Labels are written once per series
//!   rather than per sample: writing and reading them per row cost more than
//!   everything else together.
//!
//! In DuckDB: `SELECT ... FROM 'samples-N.parquet' JOIN 'series-N.parquet'
//! USING (series_id, metric_name) WHERE labels['job'] = ...`.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{MapBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use periscope_proto::{Labels, NativeHistogram, SampleValue};
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::fileset::{self, ListedFile};
use crate::sync::MutexRecover;

/// Version 2: labels moved from the samples file to its series file.
pub(crate) const MANIFEST_VERSION: u32 = 2;

/// A listed file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MetricFile {
    pub partition: String,
    pub name: String,
    /// Place in write order: a flushed file's number, or for a merged file
    /// the highest of its inputs'. Where two files hold a sample with the
    /// same series and time, the higher order's copy is the one kept.
    #[serde(default)]
    pub order: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub rows: u64,
    pub bytes: u64,
}

impl ListedFile for MetricFile {
    const MANIFEST_VERSION: u32 = MANIFEST_VERSION;
    const WHAT: &'static str = "metric";
    /// File names are unique within a partition.
    type Key = (String, String);

    fn key(&self) -> (String, String) {
        (self.partition.clone(), self.name.clone())
    }

    fn partition(&self) -> &str {
        &self.partition
    }

    fn file_names(&self) -> Vec<String> {
        vec![self.name.clone(), series_file_name(&self.name)]
    }
}

/// A tenant's metric manifest.
pub(crate) type Manifest = fileset::Manifest<MetricFile>;

pub(crate) static SAMPLES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("series_id", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Float64, true),
        Field::new("histogram", DataType::Utf8, true),
    ]))
});

pub(crate) static SERIES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt64, false),
        Field::new("metric_name", DataType::Utf8, false),
        // Where the series' rows are in the samples file: a reader of a few
        // series selects those rows (and skips whole pages) directly.
        Field::new("first_row", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new_map(
            "labels",
            "entries",
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
            false,
            false,
        ),
    ]))
});

/// The series file that goes with samples file `name`.
pub(crate) fn series_file_name(name: &str) -> String {
    match name.strip_prefix("samples-") {
        Some(rest) => format!("series-{rest}"),
        None => format!("series-{name}"),
    }
}

pub(super) fn format_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Format {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Manifest {
    /// The files, newest write first.
    pub(crate) fn files_newest_first(&self) -> impl Iterator<Item = &MetricFile> {
        let mut files: Vec<&MetricFile> = self.files.iter().collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.order));
        files.into_iter()
    }
}

/// The number in a file name `samples-N.parquet`.
fn file_number(name: &str) -> u64 {
    name.strip_prefix("samples-")
        .and_then(|n| n.strip_suffix(".parquet"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Opens a tenant's manifest (deleting files it does not list).
pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, StoreError> {
    let mut m = Manifest::open(dir)?;
    // Manifests written before merges existed list flushed files only.
    for f in &mut m.files {
        if f.order == 0 {
            f.order = file_number(&f.name);
        }
    }
    Ok(m)
}

/// A stable id of a label set (FNV-1a over names and values).
pub(crate) fn series_id(labels: &Labels) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn histogram_json(h: &NativeHistogram) -> String {
    serde_json::json!({
        "schema": h.schema, "zero_threshold": h.zero_threshold, "zero_count": h.zero_count,
        "count": h.count, "sum": h.sum,
        "positive_spans": h.positive_spans, "positive_buckets": h.positive_buckets,
        "negative_spans": h.negative_spans, "negative_buckets": h.negative_buckets,
    })
    .to_string()
}

fn histogram_from_json(s: &str) -> Option<NativeHistogram> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    let spans = |k: &str| -> Vec<(i32, u32)> {
        serde_json::from_value(v.get(k).cloned().unwrap_or_default()).unwrap_or_default()
    };
    let buckets = |k: &str| -> Vec<f64> {
        serde_json::from_value(v.get(k).cloned().unwrap_or_default()).unwrap_or_default()
    };
    Some(NativeHistogram {
        schema: v.get("schema").and_then(|x| x.as_i64()).unwrap_or(0) as i32,
        zero_threshold: f("zero_threshold"),
        zero_count: f("zero_count"),
        count: f("count"),
        sum: f("sum"),
        positive_spans: spans("positive_spans"),
        positive_buckets: buckets("positive_buckets"),
        negative_spans: spans("negative_spans"),
        negative_buckets: buckets("negative_buckets"),
    })
}

/// One series' samples to write.
pub(crate) struct SeriesRows<'a> {
    pub labels: &'a Labels,
    pub name: &'a str,
    pub samples: Vec<(i64, SampleValue)>,
}

/// zstd level of files written by a flush: fast, the head is waiting.
pub(crate) const FLUSH_ZSTD_LEVEL: i32 = 3;
/// zstd level of files written by compaction, off the ingest path: about
/// 10 % smaller than level 3 on counters and gauges.
pub(crate) const COMPACT_ZSTD_LEVEL: i32 = 9;

/// Rows per record batch decoded by readers (the reader's default is 1,024:
/// larger batches spend less per batch).
const READ_BATCH_ROWS: usize = 16 << 10;

/// Rows per record batch handed to the Parquet writer.
const WRITE_BATCH_ROWS: usize = 1 << 16;

/// Column builders of one record batch of samples.
struct BatchBuilder {
    names: StringBuilder,
    ids: Vec<u64>,
    ts: Vec<i64>,
    values: Vec<Option<f64>>,
    hists: Vec<Option<String>>,
}

impl BatchBuilder {
    fn new() -> Self {
        BatchBuilder {
            names: StringBuilder::with_capacity(WRITE_BATCH_ROWS, WRITE_BATCH_ROWS * 16),
            ids: Vec::with_capacity(WRITE_BATCH_ROWS),
            ts: Vec::with_capacity(WRITE_BATCH_ROWS),
            values: Vec::with_capacity(WRITE_BATCH_ROWS),
            hists: Vec::with_capacity(WRITE_BATCH_ROWS),
        }
    }

    fn push(&mut self, name: &str, id: u64, t: i64, v: &SampleValue) {
        self.names.append_value(name);
        self.ids.push(id);
        self.ts.push(t);
        match v {
            SampleValue::Float(f) => {
                self.values.push(Some(*f));
                self.hists.push(None);
            }
            SampleValue::Histogram(h) => {
                self.values.push(None);
                self.hists.push(Some(histogram_json(h)));
            }
        }
    }

    fn finish(&mut self, path: &Path) -> Result<RecordBatch, StoreError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.names.finish()),
            Arc::new(arrow_array::UInt64Array::from(std::mem::take(
                &mut self.ids,
            ))),
            Arc::new(
                arrow_array::TimestampMillisecondArray::from(std::mem::take(&mut self.ts))
                    .with_timezone("UTC"),
            ),
            Arc::new(arrow_array::Float64Array::from(std::mem::take(
                &mut self.values,
            ))),
            Arc::new(StringArray::from(std::mem::take(&mut self.hists))),
        ];
        RecordBatch::try_new(SAMPLES_SCHEMA.clone(), columns)
            .map_err(|e| format_err(path, format!("building a metric batch failed: {e}")))
    }
}

fn write_props(path: &Path, zstd_level: i32) -> Result<WriterProperties, StoreError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level).map_err(|e| format_err(path, e.to_string()))?,
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("series_id"), false)
        .set_column_encoding(ColumnPath::from("series_id"), Encoding::DELTA_BINARY_PACKED)
        // Byte-stream split puts the sign/exponent bytes of consecutive
        // values together, where zstd finds them nearly constant: about a
        // third smaller than plain doubles on counters and gauges.
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT)
        .build())
}

/// Writes a samples file at `path` and its series file (rows grouped by
/// series; sorted here), both fsynced. Returns their total size.
pub(crate) fn write_file(
    path: &Path,
    mut series: Vec<SeriesRows<'_>>,
    zstd_level: i32,
) -> Result<u64, StoreError> {
    series.sort_by_cached_key(|s| (s.name.to_owned(), series_id(s.labels)));
    let perr =
        |e: parquet::errors::ParquetError| format_err(path, format!("parquet write failed: {e}"));
    // Series first: a samples file never exists without its series file
    // (both are unlisted until the manifest names the samples file).
    let series_path = path.with_file_name(series_file_name(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    ));
    let mut ids = Vec::with_capacity(series.len());
    let mut names = StringBuilder::new();
    let mut first_rows = Vec::with_capacity(series.len());
    let mut row_counts = Vec::with_capacity(series.len());
    let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut next_row = 0u64;
    for s in &series {
        ids.push(series_id(s.labels));
        names.append_value(s.name);
        first_rows.push(next_row);
        row_counts.push(s.samples.len() as u64);
        next_row += s.samples.len() as u64;
        for (k, v) in s.labels {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels.append(true).expect("map entry");
    }
    let batch = RecordBatch::try_new(
        SERIES_SCHEMA.clone(),
        vec![
            Arc::new(arrow_array::UInt64Array::from(ids)),
            Arc::new(names.finish()),
            Arc::new(arrow_array::UInt64Array::from(first_rows)),
            Arc::new(arrow_array::UInt64Array::from(row_counts)),
            Arc::new(labels.finish()),
        ],
    )
    .map_err(|e| format_err(path, format!("building a series batch failed: {e}")))?;
    let file =
        File::create(&series_path).map_err(StoreError::io("failed to create", &series_path))?;
    let mut w = ArrowWriter::try_new(
        file,
        SERIES_SCHEMA.clone(),
        Some(write_props(path, zstd_level)?),
    )
    .map_err(perr)?;
    w.write(&batch).map_err(perr)?;
    let file = w.into_inner().map_err(perr)?;
    file.sync_all()
        .map_err(StoreError::io("failed to fsync", &series_path))?;
    let series_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);

    let file = File::create(path).map_err(StoreError::io("failed to create", path))?;
    let mut w = ArrowWriter::try_new(
        file,
        SAMPLES_SCHEMA.clone(),
        Some(write_props(path, zstd_level)?),
    )
    .map_err(perr)?;
    let mut batch = BatchBuilder::new();
    let mut rows = 0;
    for s in &series {
        let id = series_id(s.labels);
        for (t, v) in &s.samples {
            batch.push(s.name, id, *t, v);
            rows += 1;
            if rows == WRITE_BATCH_ROWS {
                w.write(&batch.finish(path)?).map_err(perr)?;
                rows = 0;
            }
        }
    }
    if rows > 0 {
        w.write(&batch.finish(path)?).map_err(perr)?;
    }
    let file = w.into_inner().map_err(perr)?;
    file.sync_all()
        .map_err(StoreError::io("failed to fsync", path))?;
    Ok(series_bytes + file.metadata().map(|m| m.len()).unwrap_or(0))
}

/// The file at `path`; `None` when it is gone (a merge's inputs deleted
/// past their grace, under a reader that listed them).
fn open_file(path: &Path) -> Result<Option<File>, StoreError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("failed to open", path)(e)),
    }
}

/// A Parquet reader of `file` (at `path`), checked to have `schema`'s columns.
fn open_parquet(
    file: File,
    path: &Path,
    schema: &SchemaRef,
    page_index: bool,
) -> Result<ParquetRecordBatchReaderBuilder<File>, StoreError> {
    let options = ArrowReaderOptions::new().with_page_index_policy(if page_index {
        PageIndexPolicy::Optional
    } else {
        PageIndexPolicy::Skip
    });
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
    let got: Vec<&String> = builder.schema().fields().iter().map(|f| f.name()).collect();
    let want: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    if got != want {
        return Err(format_err(
            path,
            format!(
                "columns differ from the metric file format this build reads (version {MANIFEST_VERSION})"
            ),
        ));
    }
    Ok(builder)
}

/// Opens a samples file for reading, its footer and page index from
/// [`FOOTERS`] when read before; `None` when the file is gone.
pub(super) fn open_samples(
    path: &Path,
) -> Result<Option<ParquetRecordBatchReaderBuilder<File>>, StoreError> {
    let Some(file) = open_file(path)? else {
        return Ok(None);
    };
    let cached = FOOTERS
        .lock_or_recover()
        .map
        .get(path)
        .map(|(md, _)| md.clone());
    if let Some(md) = cached {
        return Ok(Some(ParquetRecordBatchReaderBuilder::new_with_metadata(
            file, md,
        )));
    }
    let builder = open_parquet(file, path, &SAMPLES_SCHEMA, true)?;
    let md = ArrowReaderMetadata::try_new(
        builder.metadata().clone(),
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )
    .map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
    let bytes = md.metadata().memory_size();
    let mut c = FOOTERS.lock_or_recover();
    match c.map.insert(path.to_owned(), (md, bytes)) {
        Some((_, old)) => c.bytes -= old,
        None => c.order.push_back(path.to_owned()),
    }
    c.bytes += bytes;
    while c.bytes > FOOTER_CACHE_BYTES {
        let Some(old) = c.order.pop_front() else {
            break;
        };
        if let Some((_, b)) = c.map.remove(&old) {
            c.bytes -= b;
        }
    }
    Ok(Some(builder))
}

/// Parsed footers of samples files (with their page indexes): files never
/// change once written, and parsing a footer cost about a millisecond, most
/// of a query over a few series of a day. Oldest out first.
#[derive(Default)]
struct FooterCache {
    map: std::collections::HashMap<std::path::PathBuf, (ArrowReaderMetadata, usize)>,
    order: std::collections::VecDeque<std::path::PathBuf>,
    /// What the footers take in memory.
    bytes: usize,
}

/// The most memory the footers take.
const FOOTER_CACHE_BYTES: usize = 64 << 20;

static FOOTERS: LazyLock<std::sync::Mutex<FooterCache>> = LazyLock::new(Default::default);

/// One row of a series file.
pub(super) struct SeriesEntry {
    pub id: u64,
    pub name: String,
    pub first_row: u64,
    pub rows: u64,
    /// Shared by every cached file holding the series (see [`LabelSets`]).
    pub labels: Arc<Labels>,
}

/// The label sets of cached series files, each kept once: a series is in
/// one file per hour, and a day of 20,000 series of 9 labels took ~300 MiB
/// as separate copies, more than the cache's budget, so that every query
/// parsed the files again.
#[derive(Default)]
struct LabelSets {
    by_hash: foldhash::HashMap<u64, Vec<Arc<Labels>>>,
}

impl LabelSets {
    /// The shared copy of the label set `pairs`, and whether it is new.
    fn intern<'a>(
        &mut self,
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> (Arc<Labels>, bool) {
        use std::hash::{BuildHasher, Hasher};
        let mut h = foldhash::fast::FixedState::with_seed(0x5e71e5).build_hasher();
        for (k, v) in pairs.clone() {
            h.write(k.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xfe);
        }
        let bucket = self.by_hash.entry(h.finish()).or_default();
        let same = |l: &Labels| {
            let mut it = pairs.clone();
            l.iter()
                .all(|(k, v)| it.next().is_some_and(|(a, b)| a == k && b == v))
                && it.next().is_none()
        };
        if let Some(l) = bucket.iter().find(|l| same(l)) {
            return (l.clone(), false);
        }
        let l: Arc<Labels> = Arc::new(pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).collect());
        bucket.push(l.clone());
        (l, true)
    }

    /// Forgets label sets no cached file holds any more.
    fn sweep(&mut self) {
        self.by_hash.retain(|_, sets| {
            sets.retain(|l| Arc::strong_count(l) > 1);
            !sets.is_empty()
        });
    }
}

/// A series file, parsed.
pub(super) struct SeriesTable {
    pub entries: Vec<SeriesEntry>,
    /// About what it takes in memory.
    bytes: usize,
}

/// Parsed series files, shared by queries: files never change once
/// written, and parsing every label map again cost more than reading the
/// samples of a few series. Bounded by memory; oldest out first.
#[derive(Default)]
struct SeriesCache {
    tables: std::collections::HashMap<std::path::PathBuf, Arc<SeriesTable>>,
    order: std::collections::VecDeque<std::path::PathBuf>,
    bytes: usize,
    labels: LabelSets,
}

/// The most memory the cache holds (about 600 bytes a series of 7 labels).
const SERIES_CACHE_MAX_BYTES: usize = 256 << 20;

static SERIES_CACHE: LazyLock<std::sync::Mutex<SeriesCache>> = LazyLock::new(Default::default);

/// Drops a deleted file's entry from the series cache.
pub(crate) fn forget_series(samples_path: &Path) {
    let series_path = samples_path.with_file_name(series_file_name(
        &samples_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
    ));
    {
        let mut f = FOOTERS.lock_or_recover();
        if let Some((_, b)) = f.map.remove(samples_path) {
            f.bytes -= b;
            f.order.retain(|p| p != samples_path);
        }
    }
    let mut c = SERIES_CACHE.lock_or_recover();
    if let Some(t) = c.tables.remove(&series_path) {
        c.bytes -= t.bytes;
        c.order.retain(|p| *p != series_path);
        drop(t);
        c.labels.sweep();
    }
}

/// The parsed series file at `path`, from the cache or read now; `None`
/// when the file is gone.
pub(super) fn series_table(path: &Path) -> Result<Option<Arc<SeriesTable>>, StoreError> {
    if let Some(t) = SERIES_CACHE.lock_or_recover().tables.get(path) {
        return Ok(Some(t.clone()));
    }
    let Some(file) = open_file(path)? else {
        return Ok(None);
    };
    let builder = open_parquet(file, path, &SERIES_SCHEMA, false)?;
    let perr =
        |e: parquet::errors::ParquetError| format_err(path, format!("unreadable parquet: {e}"));
    let mut entries = Vec::new();
    // About what the table takes in memory: its entries, and the label sets
    // it brought into the cache.
    let mut bytes = 0;
    for b in builder.build().map_err(perr)? {
        let b = b.map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
        let ids = b.column(0).as_primitive::<UInt64Type>();
        let names = b.column(1).as_string::<i32>();
        let first_rows = b.column(2).as_primitive::<UInt64Type>();
        let row_counts = b.column(3).as_primitive::<UInt64Type>();
        let maps = b.column(4).as_map();
        let mut c = SERIES_CACHE.lock_or_recover();
        for i in 0..b.num_rows() {
            let entry = maps.value(i);
            let keys = entry.column(0).as_string::<i32>();
            let values = entry.column(1).as_string::<i32>();
            let (labels, new) = c
                .labels
                .intern((0..keys.len()).map(|j| (keys.value(j), values.value(j))));
            let name = names.value(i).to_owned();
            bytes += 104 + name.len();
            if new {
                bytes += labels
                    .iter()
                    .map(|(k, v)| 48 + k.len() + v.len())
                    .sum::<usize>();
            }
            entries.push(SeriesEntry {
                id: ids.value(i),
                name,
                first_row: first_rows.value(i),
                rows: row_counts.value(i),
                labels,
            });
        }
    }
    let table = Arc::new(SeriesTable { entries, bytes });
    let mut c = SERIES_CACHE.lock_or_recover();
    if c.tables.insert(path.to_owned(), table.clone()).is_none() {
        c.bytes += table.bytes;
        c.order.push_back(path.to_owned());
    }
    let mut evicted = false;
    while c.bytes > SERIES_CACHE_MAX_BYTES {
        let Some(old) = c.order.pop_front() else {
            break;
        };
        if let Some(t) = c.tables.remove(&old) {
            c.bytes -= t.bytes;
            evicted = true;
        }
    }
    if evicted {
        c.labels.sweep();
    }
    Ok(Some(table))
}

/// The label sets of one samples file's series that `keep` accepts (only
/// `name`'s when given), from its series file alone.
pub(crate) fn series_labels(
    path: &Path,
    name: Option<&str>,
    keep: &(dyn Fn(&Labels) -> bool + Sync),
) -> Result<Vec<Labels>, StoreError> {
    let series_path = path.with_file_name(series_file_name(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    ));
    let Some(table) = series_table(&series_path)? else {
        return Ok(Vec::new());
    };
    Ok(table
        .entries
        .iter()
        .filter(|e| name.is_none_or(|n| e.name == n) && keep(&e.labels))
        .map(|e| Labels::clone(&e.labels))
        .collect())
}

/// Reads the series of one samples file that `keep` accepts (only `name`'s
/// when given), grouped by series, with their samples in
/// `[start_ms, end_ms]`, sorted by time. The series file is read first;
/// the samples file only for row groups that may hold wanted rows.
pub(crate) fn read_file(
    path: &Path,
    name: Option<&str>,
    keep: &(dyn Fn(&Labels) -> bool + Sync),
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<super::SeriesSamples>, StoreError> {
    let perr =
        |e: parquet::errors::ParquetError| format_err(path, format!("unreadable parquet: {e}"));
    let series_path = path.with_file_name(series_file_name(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    ));
    let Some(table) = series_table(&series_path)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<super::SeriesSamples> = Vec::new();
    let mut index: foldhash::HashMap<u64, usize> = Default::default();
    // (first row, rows) of each wanted series in the samples file.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    // Rows of each wanted series, in `out`'s order.
    let mut series_rows: Vec<u64> = Vec::new();
    let mut all = true;
    for e in &table.entries {
        if name.is_some_and(|n| e.name != n) || !keep(&e.labels) {
            all = false;
            continue;
        }
        index.insert(e.id, out.len());
        out.push((Labels::clone(&e.labels), Vec::new()));
        ranges.push((e.first_row, e.rows));
        series_rows.push(e.rows);
    }
    if out.is_empty() {
        return Ok(out);
    }
    let Some(mut builder) = open_samples(path)? else {
        return Ok(Vec::new());
    };
    if !all {
        // Only the wanted series' rows; with the page index, pages holding
        // none of them are not even decompressed.
        ranges.sort_unstable();
        let total = builder.metadata().file_metadata().num_rows() as u64;
        let mut selectors = Vec::new();
        let mut at = 0u64;
        for (first, rows) in ranges {
            if first > at {
                selectors.push(RowSelector::skip((first - at) as usize));
            }
            selectors.push(RowSelector::select(rows as usize));
            at = first + rows;
        }
        if total > at {
            selectors.push(RowSelector::skip((total - at) as usize));
        }
        builder = builder.with_row_selection(RowSelection::from(selectors));
    }
    // Row groups whose name and time statistics rule them out are skipped.
    let groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| {
            let name_ok = match (name, rg.column(0).statistics()) {
                (Some(n), Some(Statistics::ByteArray(st))) => {
                    st.min_opt().is_none_or(|m| m.data() <= n.as_bytes())
                        && st.max_opt().is_none_or(|m| m.data() >= n.as_bytes())
                }
                _ => true,
            };
            let time_ok = match rg.column(2).statistics() {
                Some(Statistics::Int64(st)) => {
                    st.min_opt().is_none_or(|m| *m <= end_ms)
                        && st.max_opt().is_none_or(|m| *m >= start_ms)
                }
                _ => true,
            };
            name_ok && time_ok
        })
        .map(|(i, _)| i)
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    // Room for each series' samples in the range (assuming them spread
    // evenly over the file's time span), so that vectors do not grow.
    let (mut file_min, mut file_max) = (i64::MAX, i64::MIN);
    for rg in builder.metadata().row_groups() {
        if let Some(Statistics::Int64(st)) = rg.column(2).statistics() {
            file_min = file_min.min(st.min_opt().copied().unwrap_or(i64::MIN));
            file_max = file_max.max(st.max_opt().copied().unwrap_or(i64::MAX));
        }
    }
    if file_min <= file_max {
        let span = (file_max as f64 - file_min as f64) + 1.0;
        let overlap = (end_ms.min(file_max) as f64 - start_ms.max(file_min) as f64 + 1.0).max(0.0);
        let share = (overlap / span).min(1.0);
        for ((_, samples), rows) in out.iter_mut().zip(&series_rows) {
            samples.reserve((*rows as f64 * share).ceil() as usize + 1);
        }
    }
    // The histogram column is decoded only where some row holds one.
    let histograms = groups.iter().any(|i| {
        let rg = builder.metadata().row_group(*i);
        rg.column(4)
            .statistics()
            .and_then(|st| st.null_count_opt())
            .is_none_or(|nulls| nulls < rg.num_rows() as u64)
    });
    if all {
        // (A row selection counts rows of every group: groups are pruned
        // only without one.)
        builder = builder.with_row_groups(groups);
    }
    // No row filter: it would decode the id and time columns twice, and the
    // row selection already holds only wanted series; times are checked in
    // the loop below.
    let columns: &[usize] = if histograms {
        &[1, 2, 3, 4]
    } else {
        &[1, 2, 3]
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let mut unsorted = false;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(perr)?;
    for b in reader {
        let b = b.map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
        let ids = b.column(0).as_primitive::<UInt64Type>();
        let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
        let vals = b.column(2).as_primitive::<Float64Type>();
        let hists = histograms.then(|| b.column(3).as_string::<i32>());
        if hists.is_none() && vals.null_count() == 0 {
            unsorted |= read_float_runs(
                (ids.values(), ts.values(), vals.values()),
                &index,
                &mut out,
                start_ms,
                end_ms,
            );
            continue;
        }
        let mut last: Option<(u64, usize)> = None;
        for i in 0..b.num_rows() {
            let t = ts.value(i);
            if t < start_ms || t > end_ms {
                continue;
            }
            let id = ids.value(i);
            let slot = match last {
                Some((l, slot)) if l == id => slot,
                _ => match index.get(&id) {
                    Some(slot) => {
                        last = Some((id, *slot));
                        *slot
                    }
                    None => continue,
                },
            };
            let v = if vals.is_valid(i) {
                SampleValue::Float(vals.value(i))
            } else if let Some(h) = hists.filter(|h| h.is_valid(i)) {
                match histogram_from_json(h.value(i)) {
                    Some(h) => SampleValue::Histogram(Box::new(h)),
                    None => continue,
                }
            } else {
                continue;
            };
            let samples = &mut out[slot].1;
            if samples.last().is_some_and(|(last, _)| *last >= t) {
                unsorted = true;
            }
            samples.push((t, v));
        }
    }
    out.retain(|(_, samples)| !samples.is_empty());
    if unsorted {
        // Files are written sorted by series and time; a file that is not
        // still reads as sorted, with one sample per timestamp.
        for (_, samples) in &mut out {
            samples.sort_by_key(|(t, _)| *t);
            samples.dedup_by_key(|(t, _)| *t);
        }
    }
    Ok(out)
}

/// The rows of a batch of float samples (ids, times, values), taken a run
/// of one series at a time: one index lookup a run, the run's times in
/// range found by binary search when they are sorted, and the samples
/// copied as a slice. True when some series' samples were not in order.
fn read_float_runs(
    (ids, ts, vals): (&[u64], &[i64], &[f64]),
    index: &foldhash::HashMap<u64, usize>,
    out: &mut [super::SeriesSamples],
    start_ms: i64,
    end_ms: i64,
) -> bool {
    let mut unsorted = false;
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        let j = i + ids[i..].iter().take_while(|x| **x == id).count();
        if let Some(slot) = index.get(&id) {
            let samples = &mut out[*slot].1;
            let (times, values) = (&ts[i..j], &vals[i..j]);
            if times.is_sorted_by(|a, b| a < b) {
                let lo = times.partition_point(|t| *t < start_ms);
                let hi = times.partition_point(|t| *t <= end_ms);
                if lo < hi && samples.last().is_some_and(|(last, _)| *last >= times[lo]) {
                    unsorted = true;
                }
                samples.extend(
                    times[lo..hi]
                        .iter()
                        .zip(&values[lo..hi])
                        .map(|(t, v)| (*t, SampleValue::Float(*v))),
                );
            } else {
                unsorted = true;
                samples.extend(
                    times
                        .iter()
                        .zip(values)
                        .filter(|(t, _)| (start_ms..=end_ms).contains(*t))
                        .map(|(t, v)| (*t, SampleValue::Float(*v))),
                );
            }
        }
        i = j;
    }
    unsorted
}

#[cfg(test)]
mod tests {
    use periscope_proto::{NAME_LABEL, normalize_labels};

    use super::*;

    fn labels(name: &str, job: &str) -> Labels {
        normalize_labels(vec![
            (NAME_LABEL.into(), name.into()),
            ("job".into(), job.into()),
        ])
    }

    #[test]
    fn reads_only_the_wanted_series_rows_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples-1.parquet");
        let all: Vec<Labels> = (0..50)
            .map(|i| labels(if i % 2 == 0 { "a" } else { "b" }, &format!("j{i}")))
            .collect();
        let rows: Vec<SeriesRows<'_>> = all
            .iter()
            .map(|l| SeriesRows {
                labels: l,
                name: periscope_proto::label(l, NAME_LABEL).unwrap(),
                samples: (0..100)
                    .map(|t| (t * 1000, SampleValue::Float(t as f64)))
                    .collect(),
            })
            .collect();
        write_file(&path, rows, FLUSH_ZSTD_LEVEL).unwrap();
        // One series of metric b, a time window.
        let want = labels("b", "j7");
        let got = read_file(&path, Some("b"), &|l| *l == want, 10_000, 19_000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, want);
        let times: Vec<i64> = got[0].1.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, (10..20).map(|t| t * 1000).collect::<Vec<_>>());
        // Every series of metric a, whole range.
        let got = read_file(&path, Some("a"), &|_| true, i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.len(), 25);
        assert!(got.iter().all(|(l, s)| l[0].1 == "a" && s.len() == 100));
        // Everything.
        let got = read_file(&path, None, &|_| true, i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.iter().map(|(_, s)| s.len()).sum::<usize>(), 5000);
        // Several scattered series.
        let picked = [labels("a", "j0"), labels("b", "j49"), labels("a", "j24")];
        let got = read_file(&path, None, &|l| picked.contains(l), 0, 5_000).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(_, s)| s.len() == 6));
    }

    #[test]
    fn a_file_written_out_of_order_still_reads_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples-1.parquet");
        let l = labels("a", "j");
        let rows = vec![SeriesRows {
            labels: &l,
            name: "a",
            samples: [3, 1, 2, 2]
                .iter()
                .map(|t| (t * 1000, SampleValue::Float(*t as f64)))
                .collect(),
        }];
        write_file(&path, rows, FLUSH_ZSTD_LEVEL).unwrap();
        let got = read_file(&path, None, &|_| true, i64::MIN, i64::MAX).unwrap();
        let times: Vec<i64> = got[0].1.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![1000, 2000, 3000]);
    }
}
