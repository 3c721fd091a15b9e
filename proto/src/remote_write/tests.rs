//! Tests of remote write decoding and encoding.

use super::*;
use crate::STALE_NAN_BITS;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn compress(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

#[test]
fn round_trip_keeps_floats_and_both_histogram_encodings() {
    let up = labels(&[("__name__", "up"), ("job", "api")]);
    let lat = labels(&[("__name__", "latency"), ("job", "api")]);
    let integer = NativeHistogram {
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: 2.0,
        count: 12.0,
        sum: 3.5,
        positive_spans: vec![(-2, 2), (3, 1)],
        positive_buckets: vec![4.0, 1.0, 3.0],
        negative_spans: vec![(0, 1)],
        negative_buckets: vec![2.0],
    };
    let float = NativeHistogram {
        count: 1.5,
        positive_spans: vec![(0, 1)],
        positive_buckets: vec![1.5],
        ..Default::default()
    };
    let samples = vec![
        PromSample {
            labels: up.clone(),
            timestamp_ms: 1_000,
            value: SampleValue::Float(1.0),
        },
        PromSample {
            labels: lat.clone(),
            timestamp_ms: 1_000,
            value: SampleValue::Histogram(Box::new(integer)),
        },
        PromSample {
            labels: up.clone(),
            timestamp_ms: 2_000,
            value: SampleValue::Float(f64::INFINITY),
        },
        PromSample {
            labels: lat,
            timestamp_ms: 2_000,
            value: SampleValue::Histogram(Box::new(float)),
        },
    ];
    let body = encode_remote_write(&samples);
    let batch = decode_remote_write(&body).unwrap();
    // Samples come back grouped by series, in order of first appearance.
    let expected: Vec<PromSample> = [0, 2, 1, 3].iter().map(|i| samples[*i].clone()).collect();
    assert_eq!(batch.samples, expected);
    assert!(batch.metadata.is_empty());

    // The integer histogram went out delta-encoded.
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let req = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
    let h = &req.timeseries[1].histograms;
    assert_eq!(h[0].positive_deltas, vec![4, -3, 2]);
    assert_eq!(h[0].count, Some(prompb::Count::Int(12)));
    assert_eq!(h[1].positive_counts, vec![1.5]);
}

#[test]
fn stale_markers_survive_the_round_trip() {
    let samples = vec![PromSample {
        labels: labels(&[("__name__", "up")]),
        timestamp_ms: 5,
        value: SampleValue::Float(f64::from_bits(STALE_NAN_BITS)),
    }];
    let batch = decode_remote_write(&encode_remote_write(&samples)).unwrap();
    let SampleValue::Float(v) = batch.samples[0].value else {
        panic!()
    };
    assert_eq!(v.to_bits(), STALE_NAN_BITS);
}

#[test]
fn labels_are_normalised_and_metadata_decoded() {
    let req = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![
                prompb::Label {
                    name: "job".into(),
                    value: "api".into(),
                },
                prompb::Label {
                    name: "empty".into(),
                    value: String::new(),
                },
                prompb::Label {
                    name: "__name__".into(),
                    value: "http_requests_total".into(),
                },
            ],
            samples: vec![prompb::Sample {
                value: 3.0,
                timestamp: 7,
            }],
            exemplars: vec![prompb::Exemplar {
                labels: vec![],
                value: 1.0,
                timestamp: 7,
            }],
            histograms: vec![],
        }],
        metadata: vec![
            prompb::MetricMetadata {
                r#type: prompb::MetricType::Counter as i32,
                metric_family_name: "http_requests".into(),
                help: "Requests.".into(),
                unit: String::new(),
            },
            prompb::MetricMetadata {
                r#type: 42,
                metric_family_name: "odd".into(),
                help: String::new(),
                unit: String::new(),
            },
        ],
    };
    let batch = decode_remote_write(&compress(&req.encode_to_vec())).unwrap();
    assert_eq!(
        batch.samples[0].labels,
        labels(&[("__name__", "http_requests_total"), ("job", "api")])
    );
    let kinds: Vec<_> = batch.metadata.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["counter", "unknown"]);
    assert_eq!(batch.metadata[0].help, "Requests.");
}

#[test]
fn malformed_bodies_are_named_errors() {
    let valid_proto = prompb::WriteRequest::default().encode_to_vec();
    let no_labels = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries::default()],
        metadata: vec![],
    }
    .encode_to_vec();
    let bad_spans = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![prompb::Label {
                name: "__name__".into(),
                value: "h".into(),
            }],
            histograms: vec![prompb::Histogram {
                positive_spans: vec![prompb::BucketSpan {
                    offset: 0,
                    length: 3,
                }],
                positive_deltas: vec![1, 1],
                ..Default::default()
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
    .encode_to_vec();
    let negative = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![prompb::Label {
                name: "__name__".into(),
                value: "h".into(),
            }],
            histograms: vec![prompb::Histogram {
                positive_spans: vec![prompb::BucketSpan {
                    offset: 0,
                    length: 2,
                }],
                positive_deltas: vec![1, -2],
                ..Default::default()
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
    .encode_to_vec();
    // A snappy header announcing 128 MiB (varint) and nothing after it.
    let huge = [0x80, 0x80, 0x80, 0x40];
    let rows: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body decodes", compress(&valid_proto), ""),
        (
            "not snappy",
            b"\xff\xff\xff\xff\xff\xff".to_vec(),
            "malformed snappy: ",
        ),
        (
            "truncated snappy",
            compress(b"some protobuf bytes")[..6].to_vec(),
            "malformed snappy: ",
        ),
        (
            "uncompressed protobuf sent as is",
            no_labels.clone(),
            "malformed snappy: ",
        ),
        (
            "snappy around garbage",
            compress(b"\x0a\xff\xff\xff"),
            "malformed protobuf: ",
        ),
        (
            "too large",
            huge.to_vec(),
            "decompressed body of 134217728 bytes exceeds the limit of 67108864 bytes",
        ),
        (
            "series without labels",
            compress(&no_labels),
            "invalid remote write: time series 0 has no labels",
        ),
        (
            "spans and buckets disagree",
            compress(&bad_spans),
            "invalid remote write: time series 0: positive spans cover 3 buckets but 2 are given",
        ),
        (
            "negative bucket",
            compress(&negative),
            "invalid remote write: time series 0: positive bucket counts go negative or overflow",
        ),
    ];
    for (what, body, want) in rows {
        match decode_remote_write(&body) {
            Ok(_) => assert!(want.is_empty(), "{what}: decoded"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!want.is_empty() && msg.starts_with(want), "{what}: {msg}");
            }
        }
    }
}

/// Remote write once kept samples from 1970 and 2200, making one partition
/// per hour between them; the OTLP bounds now apply.
#[test]
fn out_of_bounds_timestamps_are_dropped_and_counted() {
    let up = labels(&[("__name__", "up")]);
    let hist = labels(&[("__name__", "h")]);
    let sample = |labels: &Labels, ts: i64, hist: bool| PromSample {
        labels: labels.clone(),
        timestamp_ms: ts,
        value: if hist {
            SampleValue::Histogram(Box::default())
        } else {
            SampleValue::Float(1.0)
        },
    };
    let (min, max) = (1_000, 2_000);
    /// (what, samples as (timestamp, histogram?), kept timestamps, old, new)
    type Row = (&'static str, Vec<(i64, bool)>, Vec<i64>, usize, usize);
    let rows: Vec<Row> = vec![
        (
            "all within",
            vec![(1_000, false), (2_000, true)],
            vec![1_000, 2_000],
            0,
            0,
        ),
        (
            "1970 and 2200",
            vec![(999, false), (7_258_118_400_000, true), (1_500, false)],
            vec![1_500],
            1,
            1,
        ),
        ("only old", vec![(0, false), (-5, true)], vec![], 2, 0),
    ];
    for (what, input, kept, old, new) in rows {
        let samples: Vec<PromSample> = input
            .iter()
            .map(|(ts, h)| sample(if *h { &hist } else { &up }, *ts, *h))
            .collect();
        let body = encode_remote_write(&samples);
        let got = decode_remote_write_bounded(&body, min, max).unwrap();
        let ts: Vec<i64> = got.batch.samples.iter().map(|s| s.timestamp_ms).collect();
        let mut ts_sorted = ts.clone();
        ts_sorted.sort();
        assert_eq!(ts_sorted, kept, "{what}");
        assert_eq!(
            got.dropped,
            OutOfBounds {
                too_old: old,
                too_new: new
            },
            "{what}"
        );
        match got.body {
            None => assert_eq!(old + new, 0, "{what}: nothing dropped keeps the body"),
            Some(b) => {
                // The re-encoded body holds exactly the kept samples.
                let again = decode_remote_write(&b).unwrap();
                assert_eq!(again.samples.len(), kept.len(), "{what}");
            }
        }
    }
}
