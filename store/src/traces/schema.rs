//! Arrow schemas of the span files and conversions between [`Span`]s and
//! record batches.
//!
//! Attributes that queries and the service graph read often get their own
//! columns (`http.request.method`, `db.system`, `k8s.pod.name`, …); every
//! other attribute goes into a key/value list whose entries carry the value
//! in a column of its type (`str`, `int`, `double`, `bool`, or `json` for
//! arrays, maps and bytes). Reading a span back puts promoted attributes back
//! into its attribute list.

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder, StringBuilder,
    UInt32Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType, UInt32Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, ListArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use periscope_proto::{
    Attr, AttrValue, Span, SpanEvent, SpanKind, SpanLink, SpanResource, StatusCode,
};

/// Version of the span file schema, stored in each file's metadata.
pub const SPAN_FILE_VERSION: u32 = 1;

/// Span attributes stored as string columns of their own.
pub const SPAN_STR_COLUMNS: [&str; 16] = [
    "http.request.method",
    "http.route",
    "url.path",
    "url.full",
    "db.system",
    "db.namespace",
    "db.statement",
    "db.query.text",
    "db.operation.name",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "messaging.system",
    "messaging.destination.name",
    "peer.service",
    "server.address",
];
/// Span attributes stored as integer columns of their own.
pub const SPAN_INT_COLUMNS: [&str; 2] = ["http.response.status_code", "server.port"];
/// Resource attributes stored as string columns of their own.
pub const RESOURCE_STR_COLUMNS: [&str; 7] = [
    "service.namespace",
    "service.version",
    "service.instance.id",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.deployment.name",
    "k8s.node.name",
];

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn attr_struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("double", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
        Field::new("json", DataType::Utf8, true),
    ])
}

fn attr_list_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(attr_struct_fields()),
        false,
    )))
}

fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", ts_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", attr_list_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("attributes", attr_list_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(fields),
        false,
    )))
}

/// The schema of span files. Column order matters: the first columns are the sort key.
pub static SPAN_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("start_time", ts_type(), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
        Field::new("service", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("end_time", ts_type(), false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("status_code", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("scope_name", DataType::Utf8, false),
        Field::new("scope_version", DataType::Utf8, false),
    ];
    fields.extend(
        SPAN_STR_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true)),
    );
    fields.extend(
        SPAN_INT_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Int64, true)),
    );
    fields.extend(
        RESOURCE_STR_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true)),
    );
    fields.extend([
        Field::new("attributes", attr_list_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
        Field::new("resource", attr_list_type(), false),
        Field::new("events", list_of(event_fields()), false),
        Field::new("dropped_events_count", DataType::UInt32, false),
        Field::new("links", list_of(link_fields()), false),
        Field::new("dropped_links_count", DataType::UInt32, false),
    ]);
    Arc::new(Schema::new(fields))
});

/// Builds the attribute list column: one list per item of `rows`.
fn attr_list<'a>(rows: impl Iterator<Item = &'a [Attr]>) -> ListArray {
    attr_list_filtered(rows.map(|a| (a, 0)))
}

/// Like [`attr_list`], leaving out the attributes whose index is set in
/// each row's mask (only the first 128 can be left out).
fn attr_list_filtered<'a>(rows: impl Iterator<Item = (&'a [Attr], u128)>) -> ListArray {
    let rows: Vec<(&[Attr], u128)> = rows.collect();
    let (mut count, mut key_bytes, mut str_bytes) = (0, 0, 0);
    for (attrs, _) in &rows {
        count += attrs.len();
        for a in *attrs {
            key_bytes += a.key.len();
            str_bytes += a.value.heap_bytes();
        }
    }
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let mut key = StringBuilder::with_capacity(count, key_bytes);
    let mut str_ = StringBuilder::with_capacity(count, str_bytes);
    let mut int = Int64Builder::with_capacity(count);
    let mut double = Float64Builder::with_capacity(count);
    let mut bool_ = BooleanBuilder::with_capacity(count);
    let mut json = StringBuilder::with_capacity(count, 0);
    let mut n = 0i32;
    for (attrs, skip) in rows {
        for (i, a) in attrs.iter().enumerate() {
            if i < 128 && skip & (1u128 << i) != 0 {
                continue;
            }
            key.append_value(&a.key);
            match &a.value {
                AttrValue::Str(s) => str_.append_value(s),
                _ => str_.append_null(),
            }
            match &a.value {
                AttrValue::Int(i) => int.append_value(*i),
                _ => int.append_null(),
            }
            match &a.value {
                AttrValue::Double(d) => double.append_value(*d),
                _ => double.append_null(),
            }
            match &a.value {
                AttrValue::Bool(b) => bool_.append_value(*b),
                _ => bool_.append_null(),
            }
            match &a.value {
                AttrValue::Json(j) => json.append_value(j),
                _ => json.append_null(),
            }
            n += 1;
        }
        offsets.push(n);
    }
    let values = StructArray::new(
        attr_struct_fields(),
        vec![
            Arc::new(key.finish()),
            Arc::new(str_.finish()),
            Arc::new(int.finish()),
            Arc::new(double.finish()),
            Arc::new(bool_.finish()),
            Arc::new(json.finish()),
        ],
        None,
    );
    let DataType::List(field) = attr_list_type() else {
        unreachable!("attr_list_type is a list")
    };
    ListArray::new(
        field,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    )
}

fn timestamps(values: impl Iterator<Item = i64>) -> TimestampNanosecondArray {
    TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC")
}

/// A string column, sized up front so its buffers never grow by copying.
fn strings<'a>(values: impl Iterator<Item = &'a str> + Clone) -> StringArray {
    let (n, bytes) = values
        .clone()
        .fold((0, 0), |(n, b), v| (n + 1, b + v.len()));
    let mut b = StringBuilder::with_capacity(n, bytes);
    for v in values {
        b.append_value(v);
    }
    b.finish()
}

fn u32s(values: impl Iterator<Item = u32>) -> ArrayRef {
    let mut b = UInt32Builder::new();
    b.extend(values.map(Some));
    Arc::new(b.finish())
}

fn list_offsets(lens: impl Iterator<Item = usize>) -> OffsetBuffer<i32> {
    OffsetBuffer::from_lengths(lens)
}

fn events_column(spans: &[&Span]) -> ListArray {
    let events: Vec<&SpanEvent> = spans.iter().flat_map(|s| &s.events).collect();
    let values = StructArray::new(
        event_fields(),
        vec![
            Arc::new(timestamps(events.iter().map(|e| e.time_ns))),
            Arc::new(strings(events.iter().map(|e| e.name.as_str()))),
            Arc::new(attr_list(events.iter().map(|e| e.attributes.as_slice()))),
            u32s(events.iter().map(|e| e.dropped_attributes_count)),
        ],
        None,
    );
    ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(event_fields()), false)),
        list_offsets(spans.iter().map(|s| s.events.len())),
        Arc::new(values),
        None,
    )
}

fn links_column(spans: &[&Span]) -> ListArray {
    let links: Vec<&SpanLink> = spans.iter().flat_map(|s| &s.links).collect();
    let mut tid = FixedSizeBinaryBuilder::with_capacity(links.len(), 16);
    let mut sid = FixedSizeBinaryBuilder::with_capacity(links.len(), 8);
    for l in &links {
        tid.append_value(l.trace_id).expect("16 bytes");
        sid.append_value(l.span_id).expect("8 bytes");
    }
    let values = StructArray::new(
        link_fields(),
        vec![
            Arc::new(tid.finish()),
            Arc::new(sid.finish()),
            Arc::new(strings(links.iter().map(|l| l.trace_state.as_str()))),
            Arc::new(attr_list(links.iter().map(|l| l.attributes.as_slice()))),
            u32s(links.iter().map(|l| l.dropped_attributes_count)),
        ],
        None,
    );
    ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(link_fields()), false)),
        list_offsets(spans.iter().map(|s| s.links.len())),
        Arc::new(values),
        None,
    )
}

/// Converts spans (already in file order) into one record batch of [`SPAN_SCHEMA`].
pub fn spans_to_batch(spans: &[&Span]) -> RecordBatch {
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(spans.len(), 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(spans.len(), 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(spans.len(), 8);
    for s in spans {
        trace_id.append_value(s.trace_id).expect("16 bytes");
        span_id.append_value(s.span_id).expect("8 bytes");
        match &s.parent_span_id {
            Some(p) => parent.append_value(p).expect("8 bytes"),
            None => parent.append_null(),
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(timestamps(spans.iter().map(|s| s.start_ns))),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(strings(spans.iter().map(|s| s.service()))),
        Arc::new(strings(spans.iter().map(|s| s.name.as_str()))),
        Arc::new(strings(spans.iter().map(|s| s.kind.as_str()))),
        Arc::new(timestamps(spans.iter().map(|s| s.end_ns))),
        Arc::new(arrow_array::Int64Array::from_iter_values(
            spans.iter().map(|s| s.duration_ns()),
        )),
        Arc::new(strings(spans.iter().map(|s| s.status_code.as_str()))),
        Arc::new(strings(spans.iter().map(|s| s.status_message.as_str()))),
        Arc::new(strings(spans.iter().map(|s| s.trace_state.as_str()))),
        u32s(spans.iter().map(|s| s.flags)),
        Arc::new(strings(spans.iter().map(|s| s.scope_name.as_str()))),
        Arc::new(strings(spans.iter().map(|s| s.scope_version.as_str()))),
    ];
    // Promoted attributes: a value of the column's type moves into the
    // column; anything else (another type, a repeated key) stays in the list.
    let span_cls: Vec<Promoted> = spans
        .iter()
        .map(|s| Promoted::of(&s.attributes, &SPAN_SLOTS))
        .collect();
    let mut res_cache: HashMap<*const SpanResource, Promoted> = HashMap::new();
    let res_cls: Vec<Promoted> = spans
        .iter()
        .map(|s| {
            res_cache
                .entry(Arc::as_ptr(&s.resource))
                .or_insert_with(|| resource_promoted(&s.resource))
                .clone()
        })
        .collect();
    for (c, _) in SPAN_STR_COLUMNS.iter().enumerate() {
        let mut b = StringBuilder::new();
        for (s, cls) in spans.iter().zip(&span_cls) {
            match cls.slots[c].map(|i| &s.attributes[i].value) {
                Some(AttrValue::Str(v)) => b.append_value(v),
                _ => b.append_null(),
            }
        }
        columns.push(Arc::new(b.finish()));
    }
    for (c, _) in SPAN_INT_COLUMNS.iter().enumerate() {
        let mut b = Int64Builder::new();
        for (s, cls) in spans.iter().zip(&span_cls) {
            match cls.slots[SPAN_STR_COLUMNS.len() + c].map(|i| &s.attributes[i].value) {
                Some(AttrValue::Int(v)) => b.append_value(*v),
                _ => b.append_null(),
            }
        }
        columns.push(Arc::new(b.finish()));
    }
    for (c, _) in RESOURCE_STR_COLUMNS.iter().enumerate() {
        let mut b = StringBuilder::new();
        for (s, cls) in spans.iter().zip(&res_cls) {
            match cls.slots[c].map(|i| &s.resource.attributes[i].value) {
                Some(AttrValue::Str(v)) => b.append_value(v),
                _ => b.append_null(),
            }
        }
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(attr_list_filtered(
        spans
            .iter()
            .zip(&span_cls)
            .map(|(s, c)| (s.attributes.as_slice(), c.skip)),
    )));
    columns.push(u32s(spans.iter().map(|s| s.dropped_attributes_count)));
    columns.push(Arc::new(attr_list_filtered(
        spans
            .iter()
            .zip(&res_cls)
            .map(|(s, c)| (s.resource.attributes.as_slice(), c.skip)),
    )));
    columns.push(Arc::new(events_column(spans)));
    columns.push(u32s(spans.iter().map(|s| s.dropped_events_count)));
    columns.push(Arc::new(links_column(spans)));
    columns.push(u32s(spans.iter().map(|s| s.dropped_links_count)));
    RecordBatch::try_new(SPAN_SCHEMA.clone(), columns).expect("columns match SPAN_SCHEMA")
}

/// Which promoted column a key goes to, for span and resource attributes,
/// with the type its value must have.
#[derive(Clone, Copy, PartialEq)]
enum SlotType {
    Str,
    Int,
}

static SPAN_SLOTS: LazyLock<HashMap<&'static str, (usize, SlotType)>> = LazyLock::new(|| {
    let mut m: HashMap<&'static str, (usize, SlotType)> = SPAN_STR_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, (i, SlotType::Str)))
        .collect();
    for (i, c) in SPAN_INT_COLUMNS.iter().enumerate() {
        m.insert(c, (SPAN_STR_COLUMNS.len() + i, SlotType::Int));
    }
    m
});

static RESOURCE_SLOTS: LazyLock<HashMap<&'static str, (usize, SlotType)>> = LazyLock::new(|| {
    RESOURCE_STR_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, (i, SlotType::Str)))
        .collect()
});

const MAX_SLOTS: usize = SPAN_STR_COLUMNS.len() + SPAN_INT_COLUMNS.len();

/// Where a span's (or resource's) attributes go: per promoted column the
/// index of the attribute it takes, and the mask of attributes left out of
/// the key/value list. A key that occurs twice stays in the list.
#[derive(Clone)]
struct Promoted {
    slots: [Option<usize>; MAX_SLOTS],
    skip: u128,
}

impl Promoted {
    fn of(attrs: &[Attr], table: &HashMap<&'static str, (usize, SlotType)>) -> Promoted {
        let mut p = Promoted {
            slots: [None; MAX_SLOTS],
            skip: 0,
        };
        let mut repeated = 0u32;
        for (i, a) in attrs.iter().enumerate().take(128) {
            let Some(&(slot, ty)) = table.get(a.key.as_str()) else {
                continue;
            };
            if repeated & (1 << slot) != 0 {
                continue;
            }
            if let Some(first) = p.slots[slot] {
                // A repeated key: both stay in the list.
                p.slots[slot] = None;
                p.skip &= !(1u128 << first);
                repeated |= 1 << slot;
                continue;
            }
            let fits = matches!(
                (&a.value, ty),
                (AttrValue::Str(_), SlotType::Str) | (AttrValue::Int(_), SlotType::Int)
            );
            if fits {
                p.slots[slot] = Some(i);
                p.skip |= 1u128 << i;
            } else {
                // Remember the key so a later occurrence counts as a repeat.
                p.slots[slot] = None;
                repeated |= 1 << slot;
            }
        }
        p
    }
}

/// Resource attributes: promoted columns, and `service.name` left out of the
/// list when the `service` column holds it exactly.
fn resource_promoted(r: &SpanResource) -> Promoted {
    let mut p = Promoted::of(&r.attributes, &RESOURCE_SLOTS);
    let names: Vec<usize> = r
        .attributes
        .iter()
        .enumerate()
        .filter(|(_, a)| a.key == "service.name")
        .map(|(i, _)| i)
        .collect();
    if let [i] = names[..]
        && i < 128
        && matches!(&r.attributes[i].value, AttrValue::Str(v) if *v == r.service)
    {
        p.skip |= 1u128 << i;
    }
    p
}

fn read_attrs(list: &ListArray, row: usize) -> Vec<Attr> {
    let offsets = list.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    let values = list.values().as_struct();
    let key = values.column(0).as_string::<i32>();
    let str_ = values.column(1).as_string::<i32>();
    let int = values.column(2).as_primitive::<Int64Type>();
    let double = values
        .column(3)
        .as_primitive::<arrow_array::types::Float64Type>();
    let bool_ = values.column(4).as_boolean();
    let json = values.column(5).as_string::<i32>();
    (start..end)
        .map(|i| {
            let value = if str_.is_valid(i) {
                AttrValue::Str(str_.value(i).to_owned())
            } else if int.is_valid(i) {
                AttrValue::Int(int.value(i))
            } else if double.is_valid(i) {
                AttrValue::Double(double.value(i))
            } else if bool_.is_valid(i) {
                AttrValue::Bool(bool_.value(i))
            } else if json.is_valid(i) {
                AttrValue::Json(json.value(i).to_owned())
            } else {
                AttrValue::Json("null".into())
            };
            Attr::new(key.value(i), value)
        })
        .collect()
}

fn fixed<const N: usize>(a: &FixedSizeBinaryArray, i: usize) -> [u8; N] {
    a.value(i).try_into().unwrap_or([0; N])
}

/// A column of a batch by name (for batches read with a projection).
pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    batch.column_by_name(name)
}

/// Converts a record batch of [`SPAN_SCHEMA`] (all columns) back into spans.
/// Spans of one resource (same service and resource attributes) share it.
pub fn batch_to_spans(batch: &RecordBatch) -> Vec<Span> {
    let col = |name: &str| {
        column(batch, name).unwrap_or_else(|| panic!("span batch lacks column {name}"))
    };
    let trace_id = col("trace_id").as_fixed_size_binary();
    let span_id = col("span_id").as_fixed_size_binary();
    let parent = col("parent_span_id").as_fixed_size_binary();
    let service = col("service").as_string::<i32>();
    let name = col("name").as_string::<i32>();
    let kind = col("kind").as_string::<i32>();
    let start = col("start_time").as_primitive::<TimestampNanosecondType>();
    let end = col("end_time").as_primitive::<TimestampNanosecondType>();
    let status_code = col("status_code").as_string::<i32>();
    let status_message = col("status_message").as_string::<i32>();
    let trace_state = col("trace_state").as_string::<i32>();
    let flags = col("flags").as_primitive::<UInt32Type>();
    let scope_name = col("scope_name").as_string::<i32>();
    let scope_version = col("scope_version").as_string::<i32>();
    let attributes = col("attributes").as_list::<i32>();
    let dropped_attrs = col("dropped_attributes_count").as_primitive::<UInt32Type>();
    let resource = col("resource").as_list::<i32>();
    let events = col("events").as_list::<i32>();
    let dropped_events = col("dropped_events_count").as_primitive::<UInt32Type>();
    let links = col("links").as_list::<i32>();
    let dropped_links = col("dropped_links_count").as_primitive::<UInt32Type>();
    let span_str: Vec<&StringArray> = SPAN_STR_COLUMNS
        .iter()
        .map(|c| col(c).as_string::<i32>())
        .collect();
    let span_int: Vec<_> = SPAN_INT_COLUMNS
        .iter()
        .map(|c| col(c).as_primitive::<Int64Type>())
        .collect();
    let res_str: Vec<&StringArray> = RESOURCE_STR_COLUMNS
        .iter()
        .map(|c| col(c).as_string::<i32>())
        .collect();

    let ev_struct = events.values().as_struct();
    let ev_time = ev_struct
        .column(0)
        .as_primitive::<TimestampNanosecondType>();
    let ev_name = ev_struct.column(1).as_string::<i32>();
    let ev_attrs = ev_struct.column(2).as_list::<i32>();
    let ev_dropped = ev_struct.column(3).as_primitive::<UInt32Type>();
    let ln_struct = links.values().as_struct();
    let ln_tid = ln_struct.column(0).as_fixed_size_binary();
    let ln_sid = ln_struct.column(1).as_fixed_size_binary();
    let ln_state = ln_struct.column(2).as_string::<i32>();
    let ln_attrs = ln_struct.column(3).as_list::<i32>();
    let ln_dropped = ln_struct.column(4).as_primitive::<UInt32Type>();

    let mut last_resource: Option<Arc<SpanResource>> = None;
    (0..batch.num_rows())
        .map(|i| {
            let mut attrs = Vec::new();
            for (c, name) in span_str.iter().zip(SPAN_STR_COLUMNS) {
                if c.is_valid(i) {
                    attrs.push(Attr::new(name, AttrValue::Str(c.value(i).to_owned())));
                }
            }
            for (c, name) in span_int.iter().zip(SPAN_INT_COLUMNS) {
                if c.is_valid(i) {
                    attrs.push(Attr::new(name, AttrValue::Int(c.value(i))));
                }
            }
            attrs.extend(read_attrs(attributes, i));

            let svc = service.value(i);
            let mut res_attrs = vec![Attr::new("service.name", AttrValue::Str(svc.to_owned()))];
            for (c, name) in res_str.iter().zip(RESOURCE_STR_COLUMNS) {
                if c.is_valid(i) {
                    res_attrs.push(Attr::new(name, AttrValue::Str(c.value(i).to_owned())));
                }
            }
            let rest = read_attrs(resource, i);
            if rest.iter().any(|a| a.key == "service.name") {
                res_attrs.remove(0);
            }
            res_attrs.extend(rest);
            // Rows are sorted by trace: neighbours usually share a resource.
            let res = match &last_resource {
                Some(r) if r.service == svc && r.attributes == res_attrs => r.clone(),
                _ => {
                    let r = Arc::new(SpanResource {
                        service: svc.to_owned(),
                        attributes: res_attrs,
                    });
                    last_resource = Some(r.clone());
                    r
                }
            };

            let ev_off = events.value_offsets();
            let span_events = (ev_off[i] as usize..ev_off[i + 1] as usize)
                .map(|e| SpanEvent {
                    time_ns: ev_time.value(e),
                    name: ev_name.value(e).to_owned(),
                    attributes: read_attrs(ev_attrs, e),
                    dropped_attributes_count: ev_dropped.value(e),
                })
                .collect();
            let ln_off = links.value_offsets();
            let span_links = (ln_off[i] as usize..ln_off[i + 1] as usize)
                .map(|l| SpanLink {
                    trace_id: fixed(ln_tid, l),
                    span_id: fixed(ln_sid, l),
                    trace_state: ln_state.value(l).to_owned(),
                    attributes: read_attrs(ln_attrs, l),
                    dropped_attributes_count: ln_dropped.value(l),
                })
                .collect();
            Span {
                trace_id: fixed(trace_id, i),
                span_id: fixed(span_id, i),
                parent_span_id: parent.is_valid(i).then(|| fixed(parent, i)),
                trace_state: trace_state.value(i).to_owned(),
                flags: flags.value(i),
                name: name.value(i).to_owned(),
                kind: SpanKind::parse(kind.value(i)).unwrap_or(SpanKind::Unspecified),
                start_ns: start.value(i),
                end_ns: end.value(i),
                status_code: StatusCode::parse(status_code.value(i)).unwrap_or(StatusCode::Unset),
                status_message: status_message.value(i).to_owned(),
                attributes: attrs,
                dropped_attributes_count: dropped_attrs.value(i),
                events: span_events,
                dropped_events_count: dropped_events.value(i),
                links: span_links,
                dropped_links_count: dropped_links.value(i),
                resource: res,
                scope_name: scope_name.value(i).to_owned(),
                scope_version: scope_version.value(i).to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_span(trace: u8, span: u8, parent: Option<u8>) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [span; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 1,
            name: format!("op-{span}"),
            kind: SpanKind::Server,
            start_ns: 1_000 + i64::from(span),
            end_ns: 2_000,
            status_code: StatusCode::Error,
            status_message: "bad".into(),
            attributes: vec![
                Attr::new("http.request.method", AttrValue::Str("GET".into())),
                Attr::new("http.response.status_code", AttrValue::Int(500)),
                Attr::new("db.system", AttrValue::Int(3)),
                Attr::new("x", AttrValue::Json("[1,2]".into())),
                Attr::new("f", AttrValue::Double(0.5)),
                Attr::new("b", AttrValue::Bool(true)),
                Attr::new("http.route", AttrValue::Str("/a".into())),
                Attr::new("http.route", AttrValue::Str("/b".into())),
            ],
            dropped_attributes_count: 2,
            events: vec![SpanEvent {
                time_ns: 1_500,
                name: "exception".into(),
                attributes: vec![Attr::new("exception.type", AttrValue::Str("E".into()))],
                dropped_attributes_count: 0,
            }],
            dropped_events_count: 0,
            links: vec![SpanLink {
                trace_id: [9; 16],
                span_id: [8; 8],
                trace_state: "a=b".into(),
                attributes: vec![],
                dropped_attributes_count: 1,
            }],
            dropped_links_count: 0,
            resource: Arc::new(SpanResource {
                service: "cart".into(),
                attributes: vec![
                    Attr::new("service.name", AttrValue::Str("cart".into())),
                    Attr::new("k8s.pod.name", AttrValue::Str("cart-1".into())),
                    Attr::new("host.name", AttrValue::Str("n1".into())),
                ],
            }),
            scope_name: "lib".into(),
            scope_version: "1".into(),
        }
    }

    fn sorted(mut a: Vec<Attr>) -> Vec<Attr> {
        a.sort_by(|x, y| x.key.cmp(&y.key));
        a
    }

    #[test]
    fn spans_round_trip() {
        let spans = [sample_span(1, 1, None), sample_span(1, 2, Some(1))];
        let refs: Vec<&Span> = spans.iter().collect();
        let batch = spans_to_batch(&refs);
        assert_eq!(batch.num_rows(), 2);
        let back = batch_to_spans(&batch);
        for (a, b) in spans.iter().zip(&back) {
            let mut a = a.clone();
            let mut b = b.clone();
            a.attributes = sorted(a.attributes);
            b.attributes = sorted(b.attributes);
            assert_eq!(
                sorted(a.resource.attributes.clone()),
                sorted(b.resource.attributes.clone())
            );
            b.resource = a.resource.clone();
            assert_eq!(a, b);
        }
        assert!(Arc::ptr_eq(&back[0].resource, &back[1].resource));
    }
}
