//! The ingest ceiling: what decoding OTLP and indexing it with tantivy costs
//! on its own, without network, WAL or backpressure. The collector's
//! end-to-end throughput (measured with `periscope-loadgen`) can only approach
//! this figure.
//!
//! Pre-generates `REQUESTS` × `RECORDS_PER_REQUEST` records with the load
//! generator's workload, encoded as protobuf. Two groups:
//! - `ingest_ceiling/decode_flatten_index`: `ExportLogsServiceRequest::decode`,
//!   `flatten_logs`, and the store's `LogIndexer` into a fresh data directory,
//!   up to and including its final commit;
//! - `decode_flatten/decode_flatten`: the first two steps only.
//!
//! Run with `cargo bench -p periscope-benches --bench ingest_ceiling`.

// The collector binary uses mimalloc; measure the ceiling with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use periscope_benches::{Workload, unix_nanos};
use periscope_proto::flatten_logs;
use periscope_proto::otlp::ExportLogsServiceRequest;
use periscope_store::{DataDir, IndexBatch, LogIndexer, LogStore, LogStoreOptions, TenantId};
use prost::Message;

const REQUESTS: u64 = 100;
const RECORDS_PER_REQUEST: u64 = 500;
const RECORDS: u64 = REQUESTS * RECORDS_PER_REQUEST;
/// Bound of the queue into the indexer thread (batches, not records).
const INDEX_QUEUE: usize = 64;

fn requests() -> Vec<Vec<u8>> {
    let mut w = Workload::new(0x5eed, "lgbench");
    let now = unix_nanos();
    (0..REQUESTS)
        .map(|i| {
            w.request(i * RECORDS_PER_REQUEST, RECORDS_PER_REQUEST as usize, now)
                .encode_to_vec()
        })
        .collect()
}

fn decode_flatten(bytes: &[u8], now_ns: i64) -> Vec<periscope_proto::LogRecord> {
    let req = ExportLogsServiceRequest::decode(bytes).expect("generated request decodes");
    flatten_logs(req, now_ns)
}

/// Decodes, flattens and indexes every request into a new store under `dir`;
/// returns once the indexer made everything durable and searchable.
fn ingest(encoded: &[Vec<u8>], dir: &std::path::Path) {
    let data = DataDir::open(dir).expect("open data dir");
    let store = LogStore::open(&data, LogStoreOptions::default()).expect("open log store");
    let (tx, rx) = sync_channel(INDEX_QUEUE);
    let indexer = LogIndexer::spawn(store, rx, |_lsn| {}).expect("spawn indexer");
    let now = unix_nanos() as i64;
    for (lsn, bytes) in (1..).zip(encoded) {
        let records = decode_flatten(bytes, now);
        let batch = IndexBatch {
            lsn,
            tenant: TenantId::default_tenant(),
            records,
            hold: Box::new(()),
            acked_at: Instant::now(),
        };
        tx.send(batch).expect("indexer alive");
    }
    drop(tx);
    indexer.join().expect("indexer thread panicked");
}

/// Records/s of each timed run, for the summary printed at the end.
#[derive(Default)]
struct Rates(Vec<f64>);

impl Rates {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, measurement: Duration) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(measurement)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(RECORDS));
}

fn main() {
    let encoded = requests();
    let otlp_bytes: usize = encoded.iter().map(Vec::len).sum();
    eprintln!(
        "ingest_ceiling: {REQUESTS} requests x {RECORDS_PER_REQUEST} records, {:.1} MB of OTLP protobuf ({:.0} bytes/record)",
        otlp_bytes as f64 / 1e6,
        otlp_bytes as f64 / RECORDS as f64
    );
    let mut c = Criterion::default().configure_from_args();
    let (mut index_rates, mut decode_rates) = (Rates::default(), Rates::default());

    let mut group = c.benchmark_group("ingest_ceiling");
    configure(&mut group, Duration::from_secs(20));
    group.bench_function("decode_flatten_index", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("temp dir");
                let t0 = Instant::now();
                ingest(&encoded, dir.path());
                let took = t0.elapsed();
                index_rates.0.push(RECORDS as f64 / took.as_secs_f64());
                total += took;
            }
            total
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode_flatten");
    configure(&mut group, Duration::from_secs(5));
    group.bench_function("decode_flatten", |b| {
        b.iter_custom(|iters| {
            let now = unix_nanos() as i64;
            let t0 = Instant::now();
            for _ in 0..iters {
                for bytes in &encoded {
                    black_box(decode_flatten(bytes, now));
                }
            }
            let took = t0.elapsed();
            decode_rates
                .0
                .push(RECORDS as f64 * iters as f64 / took.as_secs_f64());
            took
        })
    });
    group.finish();

    c.final_summary();
    if !index_rates.0.is_empty() {
        let r = index_rates.median();
        eprintln!(
            "ingest ceiling (decode + flatten + tantivy index + commit): {r:.0} records/s, {:.1} MB/s of OTLP (median of {} runs)",
            r * otlp_bytes as f64 / RECORDS as f64 / 1e6,
            index_rates.0.len()
        );
    }
    if !decode_rates.0.is_empty() {
        let r = decode_rates.median();
        eprintln!(
            "decode + flatten only: {r:.0} records/s, {:.1} MB/s of OTLP (median of {} samples)",
            r * otlp_bytes as f64 / RECORDS as f64 / 1e6,
            decode_rates.0.len()
        );
    }
}
