//! OTLP protobuf bodies of every signal: decoding (with the UTF-8 repair
//! fallback), validation and record counting never panic, and the cheap
//! record count agrees with the decoded request for logs and spans.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_proto::{Encoding, ExportRequest, Limits, Signal, count_records, decode_request, validate};

fuzz_target!(|data: &[u8]| {
    for signal in Signal::ALL {
        let counted = count_records(signal, data);
        if let Ok(req) = ExportRequest::decode_protobuf(signal, data) {
            // Metrics may repeat a oneof member, which decoding collapses.
            if signal != Signal::Metrics {
                assert_eq!(req.record_count(), counted);
            }
        }
        if let Ok(req) = decode_request(signal, Encoding::Protobuf, data) {
            let limits = Limits { max_depth: 32, min_timestamp_ns: 0, max_timestamp_ns: i64::MAX };
            let v = validate(req, &limits);
            let _ = v.request.encode_to_vec();
        }
    }
});
