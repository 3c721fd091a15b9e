//! PromQL: any expression, parsed and evaluated as an instant and as a range
//! query over a small in-memory store with the engine's limits, returns a
//! value or an error, never a panic, a stack overflow or unbounded memory.
//! The Prometheus HTTP API's parameters are fuzzed through the router too.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use periscope_fuzz::{api, encode_query};
use periscope_proto::{Labels, SampleValue};
use periscope_query::promql::{EngineOptions, MemorySource, Series, instant_query, range_query};

const T0: i64 = 1_700_000_000_000;

fn source() -> &'static MemorySource {
    static SRC: OnceLock<MemorySource> = OnceLock::new();
    SRC.get_or_init(|| {
        let mut series = Vec::new();
        for (name, job, kind) in [
            ("http_requests_total", "api", "counter"),
            ("http_requests_total", "web", "counter"),
            ("memory_bytes", "api", "gauge"),
            ("latency_bucket", "api", "histogram"),
        ] {
            for le in ["0.1", "1", "+Inf"].iter().take(if kind == "histogram" { 3 } else { 1 }) {
                let mut labels: Labels = vec![
                    ("__name__".to_owned(), name.to_owned()),
                    ("job".to_owned(), job.to_owned()),
                ];
                if kind == "histogram" {
                    labels.push(("le".to_owned(), (*le).to_owned()));
                }
                labels.sort();
                let samples = (0..40)
                    .map(|i| {
                        let v = if kind == "gauge" { (i % 7) as f64 } else { (i * 3) as f64 };
                        (T0 + i * 15_000, SampleValue::Float(v))
                    })
                    .collect();
                series.push(Series { labels, samples });
            }
        }
        MemorySource { series }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (params, rest) = data.split_at(4);
    let Ok(query) = std::str::from_utf8(rest) else {
        api().get("/prometheus/api/v1/query_range", &encode_query(rest));
        return;
    };
    let opts = EngineOptions {
        max_samples: 1_000_000,
        timeout: Duration::from_secs(2),
        range_threads: 1,
        ..Default::default()
    };
    let _ = instant_query(source(), query, T0 + i64::from(params[0]) * 15_000, &opts);
    let start = T0 + i64::from(params[1]) * 10_000;
    let end = start + i64::from(params[2]) * 20_000;
    let step = 1 + i64::from(params[3]) * 1_000;
    let _ = range_query(source(), query, start, end, step, &opts);
    api().get("/prometheus/api/v1/query", &format!("query={}", periscope_fuzz::encode_value(rest)));
});
