//! The log query language: any query text, searched and counted over a
//! real partition through the query API, is answered (200 or 4xx), never
//! a panic, a stack overflow or a 500.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_fuzz::{api, encode_value};

fuzz_target!(|data: &[u8]| {
    let q = encode_value(data);
    let now = periscope_proto::unix_now_ns() / 1_000_000_000;
    let window = format!("start={}&end={}", now - 7200, now + 60);
    api().get("/api/v1/logs/search", &format!("q={q}&{window}"));
    api().get("/api/v1/logs/histogram", &format!("q={q}&{window}&step=5m"));
});
