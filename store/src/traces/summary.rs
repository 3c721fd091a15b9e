//! Trace summaries (one row per written trace fragment, read first by trace
//! search) and the service-graph and RED rows written with them.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{FixedSizeBinaryBuilder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType, UInt32Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use periscope_proto::{AttrValue, Span, find_attr, find_str};

use super::schema::{column, ts_type};

/// What one written fragment of a trace contains, for search.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSummary {
    pub trace_id: [u8; 16],
    pub start_ns: i64,
    pub end_ns: i64,
    pub span_count: u32,
    pub error_count: u32,
    /// Whether the fragment holds the root span (a span without parent).
    pub has_root: bool,
    /// Service and name of the root, or of the earliest span without one.
    pub root_service: String,
    pub root_operation: String,
    pub root_http_method: Option<String>,
    pub root_http_route: Option<String>,
    pub root_http_status: Option<i64>,
    /// Distinct services, sorted.
    pub services: Vec<String>,
    /// Distinct (service, span name) pairs, sorted.
    pub operations: Vec<(String, String)>,
    pub min_span_duration_ns: i64,
    pub max_span_duration_ns: i64,
    /// Spans were dropped past `--max-spans-per-trace`.
    pub truncated: bool,
}

impl TraceSummary {
    /// Summarises the spans of one fragment (not empty).
    pub fn of(spans: &[&Span], truncated: bool) -> TraceSummary {
        let root = spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .min_by_key(|s| s.start_ns)
            .or_else(|| spans.iter().min_by_key(|s| s.start_ns))
            .expect("a fragment has spans");
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service()).collect();
        let operations: BTreeSet<(&str, &str)> = spans
            .iter()
            .map(|s| (s.service(), s.name.as_str()))
            .collect();
        TraceSummary {
            trace_id: root.trace_id,
            start_ns: spans.iter().map(|s| s.start_ns).min().unwrap_or(0),
            end_ns: spans.iter().map(|s| s.end_ns).max().unwrap_or(0),
            span_count: spans.len() as u32,
            error_count: spans.iter().filter(|s| s.is_error()).count() as u32,
            has_root: root.parent_span_id.is_none(),
            root_service: root.service().to_owned(),
            root_operation: root.name.clone(),
            root_http_method: find_str(&root.attributes, "http.request.method")
                .or_else(|| find_str(&root.attributes, "http.method"))
                .map(str::to_owned),
            root_http_route: find_str(&root.attributes, "http.route").map(str::to_owned),
            root_http_status: match find_attr(&root.attributes, "http.response.status_code")
                .or_else(|| find_attr(&root.attributes, "http.status_code"))
            {
                Some(AttrValue::Int(i)) => Some(*i),
                Some(AttrValue::Str(s)) => s.parse().ok(),
                _ => None,
            },
            services: services.into_iter().map(str::to_owned).collect(),
            operations: operations
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            min_span_duration_ns: spans.iter().map(|s| s.duration_ns()).min().unwrap_or(0),
            max_span_duration_ns: spans.iter().map(|s| s.duration_ns()).max().unwrap_or(0),
            truncated,
        }
    }

    pub fn duration_ns(&self) -> i64 {
        (self.end_ns - self.start_ns).max(0)
    }

    /// Folds another fragment of the same trace into this one.
    pub fn merge(&mut self, o: &TraceSummary) {
        let take_root = (o.has_root && !self.has_root)
            || (o.has_root == self.has_root && o.start_ns < self.start_ns);
        if take_root {
            self.has_root = o.has_root;
            self.root_service = o.root_service.clone();
            self.root_operation = o.root_operation.clone();
            self.root_http_method = o.root_http_method.clone();
            self.root_http_route = o.root_http_route.clone();
            self.root_http_status = o.root_http_status;
        }
        self.start_ns = self.start_ns.min(o.start_ns);
        self.end_ns = self.end_ns.max(o.end_ns);
        self.span_count += o.span_count;
        self.error_count += o.error_count;
        let services: BTreeSet<String> =
            self.services.drain(..).chain(o.services.clone()).collect();
        self.services = services.into_iter().collect();
        let ops: BTreeSet<(String, String)> = self
            .operations
            .drain(..)
            .chain(o.operations.clone())
            .collect();
        self.operations = ops.into_iter().collect();
        self.min_span_duration_ns = self.min_span_duration_ns.min(o.min_span_duration_ns);
        self.max_span_duration_ns = self.max_span_duration_ns.max(o.max_span_duration_ns);
        self.truncated |= o.truncated;
    }
}

fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
}

/// The schema of summary files.
pub static SUMMARY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("start_time", ts_type(), false),
        Field::new("end_time", ts_type(), false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("span_count", DataType::UInt32, false),
        Field::new("error_count", DataType::UInt32, false),
        Field::new("has_root", DataType::Boolean, false),
        Field::new("root_service", DataType::Utf8, false),
        Field::new("root_operation", DataType::Utf8, false),
        Field::new("root_http_method", DataType::Utf8, true),
        Field::new("root_http_route", DataType::Utf8, true),
        Field::new("root_http_status", DataType::Int64, true),
        Field::new("services", utf8_list(), false),
        Field::new("operation_services", utf8_list(), false),
        Field::new("operation_names", utf8_list(), false),
        Field::new("min_span_duration_ns", DataType::Int64, false),
        Field::new("max_span_duration_ns", DataType::Int64, false),
        Field::new("truncated", DataType::Boolean, false),
    ]))
});

fn string_list<'a>(rows: impl Iterator<Item = Vec<&'a str>>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        false,
    )));
    for row in rows {
        for v in row {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn ts(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(arrow_array::TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

pub fn summaries_to_batch(rows: &[&TraceSummary]) -> RecordBatch {
    let mut tid = FixedSizeBinaryBuilder::with_capacity(rows.len(), 16);
    for r in rows {
        tid.append_value(r.trace_id).expect("16 bytes");
    }
    let opt_str = |f: fn(&TraceSummary) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(r)).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(tid.finish()),
        ts(rows.iter().map(|r| r.start_ns)),
        ts(rows.iter().map(|r| r.end_ns)),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.duration_ns()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.span_count),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.error_count),
        )),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.has_root))
                .collect::<BooleanArray>(),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.root_service),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.root_operation),
        )),
        opt_str(|r| r.root_http_method.as_deref()),
        opt_str(|r| r.root_http_route.as_deref()),
        Arc::new(
            rows.iter()
                .map(|r| r.root_http_status)
                .collect::<Int64Array>(),
        ),
        string_list(
            rows.iter()
                .map(|r| r.services.iter().map(String::as_str).collect()),
        ),
        string_list(
            rows.iter()
                .map(|r| r.operations.iter().map(|o| o.0.as_str()).collect()),
        ),
        string_list(
            rows.iter()
                .map(|r| r.operations.iter().map(|o| o.1.as_str()).collect()),
        ),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.min_span_duration_ns),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.max_span_duration_ns),
        )),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.truncated))
                .collect::<BooleanArray>(),
        ),
    ];
    RecordBatch::try_new(SUMMARY_SCHEMA.clone(), columns).expect("columns match SUMMARY_SCHEMA")
}

/// A list-of-strings column, read row by row without looking it up again.
struct StringLists<'a> {
    offsets: &'a [i32],
    values: &'a StringArray,
}

impl<'a> StringLists<'a> {
    fn new(batch: &'a RecordBatch, name: &str) -> StringLists<'a> {
        let list = column(batch, name)
            .expect("summary column")
            .as_list::<i32>();
        StringLists {
            offsets: list.value_offsets(),
            values: list.values().as_string::<i32>(),
        }
    }

    fn row(&self, row: usize) -> impl Iterator<Item = String> + '_ {
        self.row_str(row).map(str::to_owned)
    }

    fn row_str(&self, row: usize) -> impl Iterator<Item = &'a str> + '_ {
        (self.offsets[row] as usize..self.offsets[row + 1] as usize).map(|i| self.values.value(i))
    }
}

/// The columns of a summary batch, to test rows before building them
/// (a summary holds dozens of strings; most rows of a search are not wanted).
pub struct SummaryRows<'a> {
    tid: &'a arrow_array::FixedSizeBinaryArray,
    start: &'a arrow_array::TimestampNanosecondArray,
    end: &'a arrow_array::TimestampNanosecondArray,
    spans: &'a UInt32Array,
    errors: &'a UInt32Array,
    has_root: &'a BooleanArray,
    rs: &'a StringArray,
    ro: &'a StringArray,
    rm: &'a StringArray,
    rr: &'a StringArray,
    rst: &'a Int64Array,
    mind: &'a Int64Array,
    maxd: &'a Int64Array,
    trunc: &'a BooleanArray,
    services: StringLists<'a>,
    op_services: StringLists<'a>,
    op_names: StringLists<'a>,
}

impl<'a> SummaryRows<'a> {
    pub fn new(batch: &'a RecordBatch) -> SummaryRows<'a> {
        let col = |n: &str| column(batch, n).unwrap_or_else(|| panic!("summary batch lacks {n}"));
        SummaryRows {
            tid: col("trace_id").as_fixed_size_binary(),
            start: col("start_time").as_primitive::<TimestampNanosecondType>(),
            end: col("end_time").as_primitive::<TimestampNanosecondType>(),
            spans: col("span_count").as_primitive::<UInt32Type>(),
            errors: col("error_count").as_primitive::<UInt32Type>(),
            has_root: col("has_root").as_boolean(),
            rs: col("root_service").as_string::<i32>(),
            ro: col("root_operation").as_string::<i32>(),
            rm: col("root_http_method").as_string::<i32>(),
            rr: col("root_http_route").as_string::<i32>(),
            rst: col("root_http_status").as_primitive::<Int64Type>(),
            mind: col("min_span_duration_ns").as_primitive::<Int64Type>(),
            maxd: col("max_span_duration_ns").as_primitive::<Int64Type>(),
            trunc: col("truncated").as_boolean(),
            services: StringLists::new(batch, "services"),
            op_services: StringLists::new(batch, "operation_services"),
            op_names: StringLists::new(batch, "operation_names"),
        }
    }

    pub fn len(&self) -> usize {
        self.tid.len()
    }

    pub fn trace_id(&self, i: usize) -> [u8; 16] {
        self.tid.value(i).try_into().unwrap_or([0; 16])
    }

    pub fn start_ns(&self, i: usize) -> i64 {
        self.start.value(i)
    }

    pub fn duration_ns(&self, i: usize) -> i64 {
        (self.end.value(i) - self.start.value(i)).max(0)
    }

    pub fn error_count(&self, i: usize) -> u32 {
        self.errors.value(i)
    }

    pub fn min_span_duration_ns(&self, i: usize) -> i64 {
        self.mind.value(i)
    }

    pub fn max_span_duration_ns(&self, i: usize) -> i64 {
        self.maxd.value(i)
    }

    pub fn has_service(&self, i: usize, service: &str) -> bool {
        self.services.row_str(i).any(|s| s == service)
    }

    /// A span named `name` (of `service`, when given).
    pub fn has_operation(&self, i: usize, service: Option<&str>, name: &str) -> bool {
        self.op_services
            .row_str(i)
            .zip(self.op_names.row_str(i))
            .any(|(svc, op)| op == name && service.is_none_or(|want| want == svc))
    }

    pub fn get(&self, i: usize) -> TraceSummary {
        use arrow_array::Array;
        let opt = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_owned());
        TraceSummary {
            trace_id: self.trace_id(i),
            start_ns: self.start.value(i),
            end_ns: self.end.value(i),
            span_count: self.spans.value(i),
            error_count: self.errors.value(i),
            has_root: self.has_root.value(i),
            root_service: self.rs.value(i).to_owned(),
            root_operation: self.ro.value(i).to_owned(),
            root_http_method: opt(self.rm),
            root_http_route: opt(self.rr),
            root_http_status: self.rst.is_valid(i).then(|| self.rst.value(i)),
            services: self.services.row(i).collect(),
            operations: self.op_services.row(i).zip(self.op_names.row(i)).collect(),
            min_span_duration_ns: self.mind.value(i),
            max_span_duration_ns: self.maxd.value(i),
            truncated: self.trunc.value(i),
        }
    }
}

/// The summaries of the rows `keep` accepts.
pub fn batch_to_summaries_where(
    batch: &RecordBatch,
    keep: impl Fn(&SummaryRows<'_>, usize) -> bool,
) -> Vec<TraceSummary> {
    let rows = SummaryRows::new(batch);
    (0..rows.len())
        .filter(|i| keep(&rows, *i))
        .map(|i| rows.get(i))
        .collect()
}

/// Upper bounds (milliseconds) of the latency histogram buckets; the last
/// bucket (`+Inf`) is implied. Powers of two from 0.25 ms to ~65 s, as
/// service-graph generators commonly use.
pub static LATENCY_BOUNDS_MS: LazyLock<Vec<f64>> =
    LazyLock::new(|| (0..19).map(|i| 0.25 * f64::from(1u32 << i)).collect());

/// Counts of a latency histogram over [`LATENCY_BOUNDS_MS`] (plus `+Inf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    pub counts: Vec<u64>,
    pub sum_ns: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, duration_ns: i64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        }
        let ms = duration_ns.max(0) as f64 / 1e6;
        let idx = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[idx] += 1;
        self.sum_ns += duration_ns.max(0) as u64;
    }

    pub fn add(&mut self, o: &LatencyHistogram) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum_ns += o.sum_ns;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile in milliseconds, interpolated linearly inside the
    /// bucket as Prometheus' `histogram_quantile` does; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS_MS[i - 1]
                };
                let Some(upper) = LATENCY_BOUNDS_MS.get(i) else {
                    return Some(lower);
                };
                let frac = ((rank - seen as f64) / *c as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * frac);
            }
            seen += c;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }
}

/// Kinds of service-map nodes.
pub const NODE_KINDS: [&str; 4] = ["service", "database", "messaging", "external"];

/// Requests from one node to another within one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRow {
    pub minute_ns: i64,
    pub client: String,
    pub server: String,
    /// One of [`NODE_KINDS`].
    pub server_kind: &'static str,
    pub requests: u64,
    pub failures: u64,
    pub latency: LatencyHistogram,
}

/// Calls of one operation of one service within one minute (RED metrics).
#[derive(Clone, Debug, PartialEq)]
pub struct OperationRow {
    pub minute_ns: i64,
    pub service: String,
    pub operation: String,
    pub kind: &'static str,
    pub calls: u64,
    pub errors: u64,
    pub duration: LatencyHistogram,
}

fn hist_list(rows: impl Iterator<Item = Vec<u64>>) -> ArrayRef {
    let mut b = ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int64,
        false,
    )));
    for r in rows {
        for c in r {
            b.values().append_value(c as i64);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn read_hist(batch: &RecordBatch, counts: &str, sum: &str, row: usize) -> LatencyHistogram {
    let list = column(batch, counts)
        .expect("histogram column")
        .as_list::<i32>();
    let values = list.values().as_primitive::<Int64Type>();
    let off = list.value_offsets();
    LatencyHistogram {
        counts: (off[row] as usize..off[row + 1] as usize)
            .map(|i| values.value(i) as u64)
            .collect(),
        sum_ns: column(batch, sum)
            .expect("histogram sum")
            .as_primitive::<Int64Type>()
            .value(row) as u64,
    }
}

fn kind_of(s: &str) -> &'static str {
    NODE_KINDS
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("service")
}

fn span_kind_of(s: &str) -> &'static str {
    periscope_proto::SpanKind::parse(s)
        .unwrap_or(periscope_proto::SpanKind::Unspecified)
        .as_str()
}

/// The schema of edge files.
pub static EDGE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("minute", ts_type(), false),
        Field::new("client", DataType::Utf8, false),
        Field::new("server", DataType::Utf8, false),
        Field::new("server_kind", DataType::Utf8, false),
        Field::new("requests", DataType::Int64, false),
        Field::new("failures", DataType::Int64, false),
        Field::new("latency_sum_ns", DataType::Int64, false),
        Field::new(
            "latency_bucket_counts",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
            false,
        ),
    ]))
});

/// The schema of operation (RED) files.
pub static OPERATION_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("minute", ts_type(), false),
        Field::new("service", DataType::Utf8, false),
        Field::new("operation", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("calls", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("duration_sum_ns", DataType::Int64, false),
        Field::new(
            "duration_bucket_counts",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
            false,
        ),
    ]))
});

pub fn edges_to_batch(rows: &[&EdgeRow]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        ts(rows.iter().map(|r| r.minute_ns)),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.client),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.server),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.server_kind),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.requests as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.failures as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.latency.sum_ns as i64),
        )),
        hist_list(rows.iter().map(|r| r.latency.counts.clone())),
    ];
    RecordBatch::try_new(EDGE_SCHEMA.clone(), columns).expect("columns match EDGE_SCHEMA")
}

pub fn batch_to_edges(batch: &RecordBatch) -> Vec<EdgeRow> {
    let minute = batch.column(0).as_primitive::<TimestampNanosecondType>();
    let client = batch.column(1).as_string::<i32>();
    let server = batch.column(2).as_string::<i32>();
    let kind = batch.column(3).as_string::<i32>();
    let req = batch.column(4).as_primitive::<Int64Type>();
    let fail = batch.column(5).as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|i| EdgeRow {
            minute_ns: minute.value(i),
            client: client.value(i).to_owned(),
            server: server.value(i).to_owned(),
            server_kind: kind_of(kind.value(i)),
            requests: req.value(i) as u64,
            failures: fail.value(i) as u64,
            latency: read_hist(batch, "latency_bucket_counts", "latency_sum_ns", i),
        })
        .collect()
}

pub fn operations_to_batch(rows: &[&OperationRow]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        ts(rows.iter().map(|r| r.minute_ns)),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.service),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.operation),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.calls as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.errors as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.duration.sum_ns as i64),
        )),
        hist_list(rows.iter().map(|r| r.duration.counts.clone())),
    ];
    RecordBatch::try_new(OPERATION_SCHEMA.clone(), columns).expect("columns match OPERATION_SCHEMA")
}

pub fn batch_to_operations(batch: &RecordBatch) -> Vec<OperationRow> {
    let minute = batch.column(0).as_primitive::<TimestampNanosecondType>();
    let service = batch.column(1).as_string::<i32>();
    let op = batch.column(2).as_string::<i32>();
    let kind = batch.column(3).as_string::<i32>();
    let calls = batch.column(4).as_primitive::<Int64Type>();
    let errors = batch.column(5).as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|i| OperationRow {
            minute_ns: minute.value(i),
            service: service.value(i).to_owned(),
            operation: op.value(i).to_owned(),
            kind: span_kind_of(kind.value(i)),
            calls: calls.value(i) as u64,
            errors: errors.value(i) as u64,
            duration: read_hist(batch, "duration_bucket_counts", "duration_sum_ns", i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let mut h = LatencyHistogram::default();
        for _ in 0..100 {
            h.observe(3_000_000); // 3 ms: bucket (2, 4]
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!(p50 > 2.0 && p50 <= 4.0, "{p50}");
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), None);
        let mut g = h.clone();
        g.add(&h);
        assert_eq!(g.count(), 200);
    }
}
