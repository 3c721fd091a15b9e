//! Where a log record's bytes go on disk, and how fast the store indexes
//! them: generates `REQUESTS` (env, default 1000) requests of 500 load
//! generator records, decodes, flattens and indexes them through the store's
//! `LogIndexer` (commits every second, as in the collector), merges each
//! partition into one segment, and prints records/s and bytes per record by
//! index component (`store` documents, `term` dictionaries, `idx` postings,
//! `pos` positions, `fast` fields, `fieldnorm`).
//!
//! `cargo run --release -p periscope-benches --example log_index_size`

// The collector binary uses mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use periscope_benches::{encoded_log_requests, index_log_requests};

fn main() {
    let n: u64 = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let encoded = encoded_log_requests(n, 500);
    let otlp: usize = encoded.iter().map(Vec::len).sum();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    index_log_requests(&encoded, dir.path()).unwrap();
    let took = t0.elapsed().as_secs_f64();
    let recs = (n * 500) as f64;
    // Merge everything into one segment per partition for a stable size.
    let mut by_ext = std::collections::BTreeMap::<String, u64>::new();
    for part in walk(dir.path()) {
        if part.join("meta.json").exists() {
            let idx = tantivy::Index::open_in_dir(&part).unwrap();
            let ids = idx.searchable_segment_ids().unwrap();
            let mut wr: tantivy::IndexWriter<tantivy::TantivyDocument> =
                idx.writer_with_num_threads(1, 64 << 20).unwrap();
            if ids.len() > 1 {
                wr.merge(&ids).wait().unwrap();
            }
            wr.garbage_collect_files().wait().unwrap();
            wr.wait_merging_threads().unwrap();
            for f in std::fs::read_dir(&part).unwrap().flatten() {
                let name = f.file_name().into_string().unwrap();
                let ext = name.rsplit('.').next().unwrap().to_string();
                *by_ext.entry(ext).or_default() += f.metadata().unwrap().len();
            }
        }
    }
    let total: u64 = by_ext.values().sum();
    print!(
        "rate {:.1}k/s  bytes/rec {:.1} ({:.3}x otlp {:.0}B/rec) |",
        recs / took / 1e3,
        total as f64 / recs,
        total as f64 / otlp as f64,
        otlp as f64 / recs
    );
    for (k, v) in by_ext {
        if v as f64 / recs > 0.5 {
            print!(" {k}={:.1}", v as f64 / recs);
        }
    }
    println!();
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![p.to_owned()];
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}
