//! Trace search, log search and service map parameters: any query string
//! (names and values fuzzed) is answered with 200 or a 4xx, never a panic
//! or a 500.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_fuzz::{api, encode_query};

fuzz_target!(|data: &[u8]| {
    let query = encode_query(data);
    for path in [
        "/api/v1/traces",
        "/api/v1/logs/search",
        "/api/v1/logs/histogram",
        "/api/v1/service-map",
        "/api/v1/services",
    ] {
        api().get(path, &query);
    }
});
