//! The tantivy schema of a log partition and the conversion of records into
//! documents. See DESIGN.md "Data model".

use periscope_proto::LogRecord;
use tantivy::schema::{
    FAST, Field, IndexRecordOption, JsonObjectOptions, NumericOptions, STORED, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

/// Version of the partition format (schema, payload, term dictionary kind).
/// Bump on any change. 1: FST term dictionaries; 2: SSTable term
/// dictionaries, no field norms, `timestamp` and `seq` only as fast fields
/// (same fields). Version 1 partitions are rebuilt on open (`migrate.rs`).
pub(crate) const PARTITION_VERSION: u32 = 2;

/// Untokenized but case-insensitive: for severity text.
const RAW_LOWER: &str = "raw_lower";

/// Field handles of the log schema.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    pub timestamp: Field,
    pub observed_timestamp: Field,
    pub seq: Field,
    pub severity_number: Field,
    pub severity_text: Field,
    pub body: Field,
    pub service: Field,
    pub trace_id: Field,
    pub span_id: Field,
    pub attributes: Field,
    pub resource: Field,
    pub scope: Field,
}

/// Indexed whole (one term per value), stored. No field norms: they only
/// serve relevance scoring, and hits are ordered by time.
fn keyword() -> TextOptions {
    TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
        .set_stored()
}

pub(crate) fn schema() -> Schema {
    let mut b = Schema::builder();
    // Timestamps are nearly unique per record: a term per value would double
    // the term dictionary. Range filters run on the fast field instead.
    // Not stored either: hits read it from the fast field (as they order by it).
    b.add_i64_field("timestamp", NumericOptions::default().set_fast());
    let num = NumericOptions::default()
        .set_indexed()
        .set_fast()
        .set_stored();
    b.add_i64_field("observed_timestamp", STORED);
    b.add_u64_field("seq", FAST);
    b.add_i64_field("severity_number", num);
    b.add_text_field(
        "severity_text",
        TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(RAW_LOWER)
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            )
            .set_stored(),
    );
    b.add_text_field(
        "body",
        TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                    .set_fieldnorms(false),
            )
            .set_stored(),
    );
    b.add_text_field("service", keyword().set_fast("raw"));
    b.add_text_field("trace_id", keyword());
    b.add_text_field("span_id", keyword());
    // Record attributes hold free text too (messages, routes): words and phrases.
    let attributes = JsonObjectOptions::default()
        .set_stored()
        .set_expand_dots_enabled()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                .set_fieldnorms(false),
        );
    b.add_json_field("attributes", attributes);
    // Resource attributes are identifiers (service, pod, namespace, host)
    // repeated on every record: matched whole and case-insensitively, without positions.
    let resource = JsonObjectOptions::default()
        .set_stored()
        .set_expand_dots_enabled()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(RAW_LOWER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
    b.add_json_field("resource", resource);
    b.add_text_field("scope", keyword());
    b.build()
}

impl Fields {
    pub(crate) fn new(schema: &Schema) -> Fields {
        let f = |name: &str| {
            schema
                .get_field(name)
                .unwrap_or_else(|_| panic!("schema lacks field {name}"))
        };
        Fields {
            timestamp: f("timestamp"),
            observed_timestamp: f("observed_timestamp"),
            seq: f("seq"),
            severity_number: f("severity_number"),
            severity_text: f("severity_text"),
            body: f("body"),
            service: f("service"),
            trace_id: f("trace_id"),
            span_id: f("span_id"),
            attributes: f("attributes"),
            resource: f("resource"),
            scope: f("scope"),
        }
    }
}

/// Registers the tokenizers the schema names; needed on every opened index.
pub(crate) fn register_tokenizers(index: &Index) {
    index.tokenizers().register(
        RAW_LOWER,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(LowerCaser)
            .build(),
    );
}

/// Builds the document of one record. `seq` orders records with equal timestamps.
pub(crate) fn to_document(f: &Fields, r: LogRecord, seq: u64) -> TantivyDocument {
    let mut d = TantivyDocument::default();
    d.add_i64(f.timestamp, r.timestamp_ns);
    d.add_i64(f.observed_timestamp, r.observed_timestamp_ns);
    d.add_u64(f.seq, seq);
    d.add_i64(f.severity_number, i64::from(r.severity_number));
    d.add_text(f.severity_text, &r.severity_text);
    d.add_text(f.body, &r.body);
    d.add_text(f.service, &r.service);
    if !r.trace_id.is_empty() {
        d.add_text(f.trace_id, &r.trace_id);
    }
    if !r.span_id.is_empty() {
        d.add_text(f.span_id, &r.span_id);
    }
    // Straight from the JSON values, without an intermediate `OwnedValue` tree.
    d.add_field_value(f.attributes, &serde_json::Value::Object(r.attributes));
    d.add_field_value(f.resource, &serde_json::Value::Object(r.resource));
    d.add_text(f.scope, &r.scope);
    d
}
