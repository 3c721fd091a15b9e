//! Metric samples in Parquet: one file per flush, tenant and hour under
//! `<data-dir>/<tenant>/metrics/<YYYY-MM-DDTHH>/samples-N.parquet`, listed in
//! `<data-dir>/<tenant>/metrics/manifest.json` with the WAL position the
//! tenant's files cover (`durable_lsn`, replaced by rename).
//!
//! Rows are sorted by metric name, series and time; `labels` is a map
//! column, native histograms are kept as JSON text in `histogram` (with a
//! null `value`). Files are zstd-compressed with dictionaries, statistics and
//! a page index, so a query for one metric reads only its row groups.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{MapBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ParquetRecordBatchReaderBuilder, RowFilter};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use periscope_proto::{Labels, NativeHistogram, SampleValue};
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::layout::write_atomic;

pub(crate) const MANIFEST_VERSION: u32 = 1;

/// A listed file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MetricFile {
    pub partition: String,
    pub name: String,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub version: u32,
    /// Every sample of this tenant's WAL entries at or below this is in a listed file.
    pub durable_lsn: u64,
    pub next_file: u64,
    pub files: Vec<MetricFile>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            durable_lsn: 0,
            next_file: 1,
            files: Vec::new(),
        }
    }
}

pub(crate) static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
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

fn format_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Format {
        path: path.to_owned(),
        message: message.into(),
    }
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, StoreError> {
    let m: Manifest =
        crate::layout::read_manifest(dir, "metric", MANIFEST_VERSION, |m: &Manifest| m.version)?;
    // Files no manifest lists are left over from a flush cut short.
    let listed: BTreeSet<(String, String)> = m
        .files
        .iter()
        .map(|f| (f.partition.clone(), f.name.clone()))
        .collect();
    crate::layout::delete_unlisted(dir, &listed, "metric")?;
    Ok(m)
}

pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::io("failed to create", dir))?;
    write_atomic(
        &dir.join("manifest.json"),
        &serde_json::to_vec_pretty(m).expect("manifest serialises"),
    )
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

/// Writes one file (rows already grouped by series; sorted here). Returns its size.
pub(crate) fn write_file(path: &Path, mut series: Vec<SeriesRows<'_>>) -> Result<u64, StoreError> {
    series.sort_by(|a, b| (a.name, series_id(a.labels)).cmp(&(b.name, series_id(b.labels))));
    let rows: usize = series.iter().map(|s| s.samples.len()).sum();
    let mut names = StringBuilder::with_capacity(rows, rows * 16);
    let mut ids = Vec::with_capacity(rows);
    let mut ts = Vec::with_capacity(rows);
    let mut values: Vec<Option<f64>> = Vec::with_capacity(rows);
    let mut hists: Vec<Option<String>> = Vec::with_capacity(rows);
    let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for s in &series {
        let id = series_id(s.labels);
        for (t, v) in &s.samples {
            names.append_value(s.name);
            ids.push(id);
            ts.push(*t);
            match v {
                SampleValue::Float(f) => {
                    values.push(Some(*f));
                    hists.push(None);
                }
                SampleValue::Histogram(h) => {
                    values.push(None);
                    hists.push(Some(histogram_json(h)));
                }
            }
            for (k, v) in s.labels {
                labels.keys().append_value(k);
                labels.values().append_value(v);
            }
            labels.append(true).expect("map entry");
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(names.finish()),
        Arc::new(arrow_array::UInt64Array::from(ids)),
        Arc::new(arrow_array::TimestampMillisecondArray::from(ts).with_timezone("UTC")),
        Arc::new(arrow_array::Float64Array::from(values)),
        Arc::new(StringArray::from(hists)),
        Arc::new(labels.finish()),
    ];
    let batch = RecordBatch::try_new(SCHEMA.clone(), columns)
        .map_err(|e| format_err(path, format!("building a metric batch failed: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("series_id"), false)
        .set_column_encoding(ColumnPath::from("series_id"), Encoding::DELTA_BINARY_PACKED)
        .build();
    let file = File::create(path).map_err(StoreError::io("failed to create", path))?;
    let perr =
        |e: parquet::errors::ParquetError| format_err(path, format!("parquet write failed: {e}"));
    let mut w = ArrowWriter::try_new(file, SCHEMA.clone(), Some(props)).map_err(perr)?;
    w.write(&batch).map_err(perr)?;
    let file = w.into_inner().map_err(perr)?;
    file.sync_all()
        .map_err(StoreError::io("failed to fsync", path))?;
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

/// Reads the series of one file (only `name`'s rows when given), grouped by
/// series, with samples in `[start_ms, end_ms]`.
pub(crate) fn read_file(
    path: &PathBuf,
    name: Option<&str>,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<super::SeriesSamples>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("failed to open", path)(e)),
    };
    let perr =
        |e: parquet::errors::ParquetError| format_err(path, format!("unreadable parquet: {e}"));
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
    let got = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect::<Vec<_>>();
    let want = SCHEMA
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect::<Vec<_>>();
    if got != want {
        return Err(format_err(
            path,
            "columns differ from the metric file format this build reads (version 1)",
        ));
    }
    let wanted = name.map(str::to_owned);
    let mask = ProjectionMask::roots(builder.parquet_schema(), [0, 2]);
    let pred = ArrowPredicateFn::new(mask, move |b: RecordBatch| {
        let n = b.column(0).as_string::<i32>();
        let t = b.column(1).as_primitive::<TimestampMillisecondType>();
        Ok((0..b.num_rows())
            .map(|i| {
                Some(
                    wanted.as_deref().is_none_or(|w| n.value(i) == w)
                        && (start_ms..=end_ms).contains(&t.value(i)),
                )
            })
            .collect::<BooleanArray>())
    });
    builder = builder.with_row_filter(RowFilter::new(vec![Box::new(pred)]));
    let reader = builder.build().map_err(perr)?;
    let mut out: Vec<super::SeriesSamples> = Vec::new();
    let mut last_id: Option<u64> = None;
    for b in reader {
        let b = b.map_err(|e| format_err(path, format!("unreadable parquet: {e}")))?;
        let ids = b.column(1).as_primitive::<UInt64Type>();
        let ts = b.column(2).as_primitive::<TimestampMillisecondType>();
        let vals = b.column(3).as_primitive::<Float64Type>();
        let hists = b.column(4).as_string::<i32>();
        let maps = b.column(5).as_map();
        for i in 0..b.num_rows() {
            let id = ids.value(i);
            if last_id != Some(id) {
                let entry = maps.value(i);
                let keys = entry.column(0).as_string::<i32>();
                let values = entry.column(1).as_string::<i32>();
                let labels: Labels = (0..keys.len())
                    .map(|j| (keys.value(j).to_owned(), values.value(j).to_owned()))
                    .collect();
                out.push((labels, Vec::new()));
                last_id = Some(id);
            }
            let v = if vals.is_valid(i) {
                SampleValue::Float(vals.value(i))
            } else if hists.is_valid(i) {
                match histogram_from_json(hists.value(i)) {
                    Some(h) => SampleValue::Histogram(h),
                    None => continue,
                }
            } else {
                continue;
            };
            if let Some(last) = out.last_mut() {
                last.1.push((ts.value(i), v));
            }
        }
    }
    Ok(out)
}
