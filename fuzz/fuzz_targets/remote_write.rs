//! Prometheus remote-write bodies (snappy-compressed protobuf): decoding never
//! panics, and what decodes survives a re-encode, and the OTLP metric
//! conversion never panics on protobuf metric requests either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_proto::{
    DeltaToCumulative, ExportRequest, Signal, decode_remote_write, encode_remote_write,
    otlp_to_prometheus,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_remote_write(data) {
        let again = decode_remote_write(&encode_remote_write(&batch.samples)).expect("re-encoded body decodes");
        assert_eq!(again.samples.len(), batch.samples.len());
    }
    if let Ok(ExportRequest::Metrics(req)) = ExportRequest::decode_protobuf(Signal::Metrics, data) {
        let mut deltas = DeltaToCumulative::default();
        let _ = otlp_to_prometheus(&req, &mut deltas);
    }
});
