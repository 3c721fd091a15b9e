//! The Jaeger query API's parameters: any query string (names and values
//! fuzzed) on every Jaeger endpoint is answered, never a panic or a 500.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_fuzz::{api, encode_query, encode_value};

fuzz_target!(|data: &[u8]| {
    let query = encode_query(data);
    for path in [
        "/jaeger/api/traces",
        "/jaeger/api/services",
        "/jaeger/api/dependencies",
    ] {
        api().get(path, &query);
    }
    let segment = encode_value(data);
    api().get(&format!("/jaeger/api/services/{segment}/operations"), &query);
    api().get(&format!("/jaeger/api/traces/{segment}"), "");
    api().get(&format!("/api/v1/traces/{segment}"), "");
});
