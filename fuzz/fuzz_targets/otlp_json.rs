//! OTLP/JSON bodies of every signal: decoding and validation never panic,
//! and whatever decodes re-encodes as protobuf that decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_proto::{Encoding, ExportRequest, Limits, Signal, decode_request, validate};

fuzz_target!(|data: &[u8]| {
    for signal in Signal::ALL {
        if let Ok(req) = decode_request(signal, Encoding::Json, data) {
            let limits = Limits { max_depth: 32, min_timestamp_ns: 0, max_timestamp_ns: i64::MAX };
            let bytes = validate(req, &limits).request.encode_to_vec();
            assert!(ExportRequest::decode_protobuf(signal, &bytes).is_ok());
        }
    }
});
