//! The ingest ceiling: what decoding OTLP and indexing it with tantivy costs
//! on its own, without network, WAL or backpressure. The collector's
//! end-to-end throughput (measured with `periscope-loadgen`) can only approach
//! this figure.
//!
//! Pre-generates requests of `RECORDS_PER_REQUEST` records with the load
//! generator's workload, encoded as protobuf. Three groups:
//! - `ingest_ceiling/decode_flatten_index`: `ExportLogsServiceRequest::decode`,
//!   `flatten_logs`, and the store's `LogIndexer` into a fresh data directory,
//!   up to and including its final commit, for `REQUESTS` requests (50k
//!   records: one segment, no merge);
//! - `ingest_ceiling/sustained`: the same for `SUSTAINED_REQUESTS` requests
//!   (2 M records, about as many as a 30 s end-to-end run acknowledges), so
//!   that the indexer commits every second and tantivy merges the small
//!   segments, as in the collector under steady load. Merges still running
//!   at the end are not timed, as in the end-to-end run, but each run waits
//!   (untimed) until they are done, so that they do not slow the next one;
//! - `decode_flatten/decode_flatten`: the first two steps only.
//!
//! Run with `cargo bench -p periscope-benches --bench ingest_ceiling`
//! (`-- decode_flatten_index` for the first group alone; the sustained group
//! takes about five minutes).

// The collector binary uses mimalloc; measure the ceiling with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use periscope_benches::{decode_and_flatten, encoded_log_requests, index_log_requests, unix_nanos};

const REQUESTS: u64 = 100;
const RECORDS_PER_REQUEST: u64 = 500;
const RECORDS: u64 = REQUESTS * RECORDS_PER_REQUEST;
const SUSTAINED_REQUESTS: u64 = 4000;
const SUSTAINED_RECORDS: u64 = SUSTAINED_REQUESTS * RECORDS_PER_REQUEST;

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

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, measurement: Duration, records: u64) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(measurement)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(records));
}

/// Times `index_log_requests` of `encoded` into a fresh directory per
/// iteration, then waits (untimed) for leftover merges.
fn bench_ingest(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    encoded: &[Vec<u8>],
    rates: &mut Rates,
) {
    let records = encoded.len() as u64 * RECORDS_PER_REQUEST;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("temp dir");
                let t0 = Instant::now();
                index_log_requests(encoded, dir.path()).expect("index requests");
                let took = t0.elapsed();
                rates.0.push(records as f64 / took.as_secs_f64());
                total += took;
                wait_until_idle();
            }
            total
        })
    });
}

/// This process's CPU time (user + system) in clock ticks, from /proc.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

/// Waits until tantivy's merge threads, which outlive a dropped writer,
/// have finished: until the process uses under a tenth of a core.
fn wait_until_idle() {
    let step = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = cpu_ticks();
    while Instant::now() < deadline {
        std::thread::sleep(step);
        let now = cpu_ticks();
        // Clock ticks are 1/100 s: 5 ticks in 500 ms is a tenth of a core.
        if now.saturating_sub(before) < 5 {
            return;
        }
        before = now;
    }
}

fn report(what: &str, rates: &Rates, bytes_per_record: f64) {
    if !rates.0.is_empty() {
        let r = rates.median();
        eprintln!(
            "{what}: {r:.0} records/s, {:.1} MB/s of OTLP (median of {} runs)",
            r * bytes_per_record / 1e6,
            rates.0.len()
        );
    }
}

fn main() {
    let encoded = encoded_log_requests(SUSTAINED_REQUESTS, RECORDS_PER_REQUEST);
    let otlp_bytes: usize = encoded.iter().map(Vec::len).sum();
    let bytes_per_record = otlp_bytes as f64 / SUSTAINED_RECORDS as f64;
    let burst = &encoded[..REQUESTS as usize];
    eprintln!(
        "ingest_ceiling: requests of {RECORDS_PER_REQUEST} records, {bytes_per_record:.0} bytes/record of OTLP protobuf"
    );
    let mut c = Criterion::default().configure_from_args();
    let (mut index_rates, mut sustained_rates, mut decode_rates) =
        (Rates::default(), Rates::default(), Rates::default());

    let mut group = c.benchmark_group("ingest_ceiling");
    configure(&mut group, Duration::from_secs(20), RECORDS);
    bench_ingest(&mut group, "decode_flatten_index", burst, &mut index_rates);
    configure(&mut group, Duration::from_secs(250), SUSTAINED_RECORDS);
    bench_ingest(&mut group, "sustained", &encoded, &mut sustained_rates);
    group.finish();

    let mut group = c.benchmark_group("decode_flatten");
    configure(&mut group, Duration::from_secs(5), RECORDS);
    group.bench_function("decode_flatten", |b| {
        b.iter_custom(|iters| {
            let now = unix_nanos() as i64;
            let t0 = Instant::now();
            for _ in 0..iters {
                for bytes in burst {
                    black_box(decode_and_flatten(bytes, now).expect("generated request decodes"));
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
    report(
        "ingest ceiling (decode + flatten + tantivy index + commit), 50k records",
        &index_rates,
        bytes_per_record,
    );
    report(
        "sustained ingest ceiling (commits every second, merges), 2 M records",
        &sustained_rates,
        bytes_per_record,
    );
    report("decode + flatten only", &decode_rates, bytes_per_record);
}
