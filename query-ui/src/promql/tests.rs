//! Conformance suite: expressions over a fixed synthetic data set, each with
//! its result worked out by hand (arithmetic in the comments).
//!
//! Data set (times in seconds, one sample a minute from 0 to 600 unless said):
//! - `http_requests_total` counters:
//!   `{job=api,instance=a}` 0,10,20,...,100 (10 a minute);
//!   `{job=api,instance=b}` 0,20,40,60,5,25,45,65,85,105,125 (reset at 240);
//!   `{job=web,instance=c}` 0,30,...,300 (30 a minute).
//! - `cpu_temp` gauges: `{host=h1}` 50,52,48,55,53,51,49,60,58,57,56;
//!   `{host=h2}` 40,41,42 at 0..120, then a gap, 45 at 600;
//!   `{host=h3}` 30,31,32,33 at 0..180, a staleness marker at 240.
//! - `up` 1 for a and c, 0 for b (same job/instance labels as the counters).
//! - `machine_info{instance=a,version=v1}` and `{instance=b,version=v2}`, 1.
//! - `req_duration_bucket` classic histogram, k = minute index (0..10):
//!   `{job=api}` le 0.1: k, 0.5: 3k, 1: 4k, +Inf: 5k;
//!   `{job=web}` le 0.1: 2k, 0.5: 2k, 1: 8k, +Inf: 8k.
//! - `lat_native{job=api}` one native histogram at 600: schema 0, zero
//!   bucket ±0.001 with 2, buckets (0.5,1]: 4, (1,2]: 2, (2,4]: 2; count 10, sum 15.
//! - `lat_hist` native histogram counters, one a minute, k = minute index:
//!   `{job=api}` schema 0, zero bucket ±0.001 with m, (1,2]: 2m, (2,4]: m,
//!   count 4m, sum 5m, where m = k for k <= 4, then m = k - 4 (reset at 300:
//!   m 4 → 1);
//!   `{job=web}` schema 1, no zero count, buckets (1,√2] and (√2,2]:
//!   k, k for k <= 5, then k - 6, 20 + 2(k - 6) (a bucket reset at 360
//!   while the count goes up 10 → 20), sum 1.5 × count.
//! - `lat_mixed{job=api}` floats 0, 1, 2 at 0..120, then histograms at
//!   180..600: schema 0, bucket (0.5,1] with k, count k, sum k.

use std::time::Duration;

use periscope_proto::{Labels, NativeHistogram, STALE_NAN_BITS, SampleValue};

use super::*;

fn labels(spec: &str) -> Labels {
    // `name{k=v,k=v}` or `{k=v}`.
    let (name, rest) = spec.split_once('{').unwrap_or((spec, "}"));
    let mut out: Labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    if !name.is_empty() {
        out.push(("__name__".into(), name.into()));
    }
    out.sort();
    out
}

fn series(spec: &str, points: &[(i64, f64)]) -> Series {
    Series {
        labels: labels(spec),
        samples: points
            .iter()
            .map(|(t, v)| (t * 1000, SampleValue::Float(*v)))
            .collect(),
    }
}

fn per_minute(spec: &str, values: &[f64]) -> Series {
    let points: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 * 60, *v))
        .collect();
    series(spec, &points)
}

fn hist(schema: i32, zero: f64, sum: f64, first: i32, buckets: &[f64]) -> NativeHistogram {
    NativeHistogram {
        schema,
        zero_threshold: 0.001,
        zero_count: zero,
        count: zero + buckets.iter().sum::<f64>(),
        sum,
        positive_spans: vec![(first, buckets.len() as u32)],
        positive_buckets: buckets.to_vec(),
        negative_spans: vec![],
        negative_buckets: vec![],
    }
}

fn hist_series(spec: &str, points: impl Iterator<Item = (i64, SampleValue)>) -> Series {
    Series {
        labels: labels(spec),
        samples: points.map(|(t, v)| (t * 60_000, v)).collect(),
    }
}

fn hist_value(h: NativeHistogram) -> SampleValue {
    SampleValue::Histogram(Box::new(h))
}

fn dataset() -> MemorySource {
    let k = |f: f64| -> Vec<f64> { (0..=10).map(|i| f * i as f64).collect() };
    let stale = f64::from_bits(STALE_NAN_BITS);
    let native = NativeHistogram {
        schema: 0,
        zero_threshold: 0.001,
        zero_count: 2.0,
        count: 10.0,
        sum: 15.0,
        positive_spans: vec![(0, 3)],
        positive_buckets: vec![4.0, 2.0, 2.0],
        negative_spans: vec![],
        negative_buckets: vec![],
    };
    MemorySource {
        series: vec![
            per_minute("http_requests_total{job=api,instance=a}", &k(10.0)),
            per_minute(
                "http_requests_total{job=api,instance=b}",
                &[0., 20., 40., 60., 5., 25., 45., 65., 85., 105., 125.],
            ),
            per_minute("http_requests_total{job=web,instance=c}", &k(30.0)),
            per_minute(
                "cpu_temp{host=h1}",
                &[50., 52., 48., 55., 53., 51., 49., 60., 58., 57., 56.],
            ),
            series(
                "cpu_temp{host=h2}",
                &[(0, 40.), (60, 41.), (120, 42.), (600, 45.)],
            ),
            series(
                "cpu_temp{host=h3}",
                &[(0, 30.), (60, 31.), (120, 32.), (180, 33.), (240, stale)],
            ),
            per_minute("up{job=api,instance=a}", &[1.; 11]),
            per_minute("up{job=api,instance=b}", &[0.; 11]),
            per_minute("up{job=web,instance=c}", &[1.; 11]),
            per_minute("machine_info{instance=a,version=v1}", &[1.; 11]),
            per_minute("machine_info{instance=b,version=v2}", &[1.; 11]),
            per_minute("req_duration_bucket{job=api,le=0.1}", &k(1.0)),
            per_minute("req_duration_bucket{job=api,le=0.5}", &k(3.0)),
            per_minute("req_duration_bucket{job=api,le=1}", &k(4.0)),
            per_minute("req_duration_bucket{job=api,le=+Inf}", &k(5.0)),
            per_minute("req_duration_bucket{job=web,le=0.1}", &k(2.0)),
            per_minute("req_duration_bucket{job=web,le=0.5}", &k(2.0)),
            per_minute("req_duration_bucket{job=web,le=1}", &k(8.0)),
            per_minute("req_duration_bucket{job=web,le=+Inf}", &k(8.0)),
            Series {
                labels: labels("lat_native{job=api}"),
                samples: vec![(600_000, SampleValue::Histogram(Box::new(native)))],
            },
            hist_series(
                "lat_hist{job=api}",
                (0..=10).map(|k| {
                    let m = if k <= 4 { k } else { k - 4 } as f64;
                    (k, hist_value(hist(0, m, 5.0 * m, 1, &[2.0 * m, m])))
                }),
            ),
            hist_series(
                "lat_hist{job=web}",
                (0..=10).map(|k| {
                    let kf = k as f64;
                    let b = if k <= 5 {
                        [kf, kf]
                    } else {
                        [kf - 6.0, 20.0 + 2.0 * (kf - 6.0)]
                    };
                    (k, hist_value(hist(1, 0.0, 1.5 * (b[0] + b[1]), 1, &b)))
                }),
            ),
            hist_series(
                "lat_mixed{job=api}",
                (0..=10).map(|k| {
                    let kf = k as f64;
                    if k <= 2 {
                        (k, SampleValue::Float(kf))
                    } else {
                        (k, hist_value(hist(0, 0.0, kf, 0, &[kf])))
                    }
                }),
            ),
        ],
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Runs `query` as range queries with the series-at-a-time evaluator and
/// with the step evaluator in small chunks, and checks both give the same series, points and
/// values (or errors of the same kind). Every expression of this suite goes
/// through here.
fn same_both_ways(query: &str) {
    let src = dataset();
    // The step evaluator, and chunks of a few steps (each loading its own
    // samples), must not change a result.
    let step_only = EngineOptions {
        series_at_a_time: false,
        range_chunk_ms: 100_000,
        ..EngineOptions::default()
    };
    for (start, end, step) in [
        (0, 600_000, 60_000),
        (-120_000, 900_000, 45_000),
        (590_000, 610_000, 1_000),
    ] {
        let fast = range_query(&src, query, start, end, step, &EngineOptions::default());
        let slow = range_query(&src, query, start, end, step, &step_only);
        match (fast, slow) {
            (Ok(QueryValue::Matrix(f)), Ok(QueryValue::Matrix(s))) => {
                assert_eq!(f.len(), s.len(), "{query}: {f:?} vs {s:?}");
                for ((fl, fp), (sl, sp)) in f.iter().zip(&s) {
                    assert_eq!(fl, sl, "{query}");
                    assert_eq!(fp.len(), sp.len(), "{query} {fl:?}: {fp:?} vs {sp:?}");
                    for ((ft, fv), (st, sv)) in fp.iter().zip(sp) {
                        assert_eq!(ft, st, "{query} {fl:?}");
                        match (fv, sv) {
                            (SampleValue::Float(a), SampleValue::Float(b)) => {
                                assert!(close(*a, *b), "{query} {fl:?} at {ft}: {a} vs {b}")
                            }
                            (a, b) => assert_eq!(a, b, "{query}"),
                        }
                    }
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.kind, b.kind, "{query}: {a} vs {b}"),
            (a, b) => panic!("{query}: {a:?} vs {b:?}"),
        }
    }
}

/// Runs an instant query at `t` seconds and compares the vector result,
/// order-insensitively, with `(labels, value)` pairs.
fn check_vector(query: &str, t: i64, want: &[(&str, f64)]) {
    same_both_ways(query);
    let got = instant_query(&dataset(), query, t * 1000, &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let QueryValue::Vector(mut got) = got else {
        panic!("{query}: not a vector: {got:?}")
    };
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(Labels, f64)> = want.iter().map(|(l, v)| (labels(l), *v)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want.len(), "{query}: got {got:?}");
    for ((gl, gt, gv), (wl, wv)) in got.iter().zip(&want) {
        assert_eq!(gl, wl, "{query}");
        assert_eq!(*gt, t * 1000, "{query}");
        let SampleValue::Float(gv) = gv else {
            panic!("{query}: histogram {gv:?}")
        };
        assert!(close(*gv, *wv), "{query}: {gl:?} got {gv}, want {wv}");
    }
}

fn check_scalar(query: &str, t: i64, want: f64) {
    same_both_ways(query);
    match instant_query(&dataset(), query, t * 1000, &EngineOptions::default()) {
        Ok(QueryValue::Scalar(ts, v)) => {
            assert_eq!(ts, t * 1000);
            assert!(close(v, want), "{query}: got {v}, want {want}");
        }
        other => panic!("{query}: {other:?}"),
    }
}

fn check_error(query: &str, kind: &str) {
    same_both_ways(query);
    match instant_query(&dataset(), query, 600_000, &EngineOptions::default()) {
        Err(e) => assert_eq!(e.kind.as_str(), kind, "{query}: {e}"),
        Ok(v) => panic!("{query}: expected an error, got {v:?}"),
    }
}

/// Range query from `start` to `end` seconds; `want` lists each series'
/// labels and its points `(seconds, value)`.
fn check_range(query: &str, start: i64, end: i64, step: i64, want: &[(&str, &[(i64, f64)])]) {
    same_both_ways(query);
    let got = range_query(
        &dataset(),
        query,
        start * 1000,
        end * 1000,
        step * 1000,
        &EngineOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{query}: {e}"));
    let QueryValue::Matrix(got) = got else {
        panic!("{query}: not a matrix")
    };
    let mut want: Vec<(Labels, &[(i64, f64)])> =
        want.iter().map(|(l, p)| (labels(l), *p)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want.len(), "{query}: got {got:?}");
    for ((gl, gp), (wl, wp)) in got.iter().zip(&want) {
        assert_eq!(gl, wl, "{query}");
        assert_eq!(gp.len(), wp.len(), "{query}: {gl:?} got {gp:?}");
        for ((gt, gv), (wt, wv)) in gp.iter().zip(wp.iter()) {
            assert_eq!(*gt, wt * 1000, "{query}");
            let SampleValue::Float(gv) = gv else {
                panic!("histogram")
            };
            assert!(close(*gv, *wv), "{query}: at {gt} got {gv}, want {wv}");
        }
    }
}

const A: &str = "http_requests_total{job=api,instance=a}";
const B: &str = "http_requests_total{job=api,instance=b}";
const C: &str = "http_requests_total{job=web,instance=c}";

#[test]
fn selectors_and_matchers() {
    check_vector(
        "http_requests_total",
        600,
        &[(A, 100.), (B, 125.), (C, 300.)],
    );
    check_vector(
        r#"http_requests_total{job="api"}"#,
        600,
        &[(A, 100.), (B, 125.)],
    );
    check_vector(
        r#"http_requests_total{job=~"a.*"}"#,
        600,
        &[(A, 100.), (B, 125.)],
    );
    // Regexes are anchored: "p" alone matches nothing.
    check_vector(r#"http_requests_total{job=~"p"}"#, 600, &[]);
    check_vector(
        r#"http_requests_total{instance!="a"}"#,
        600,
        &[(B, 125.), (C, 300.)],
    );
    check_vector(r#"http_requests_total{instance!~"a|b"}"#, 600, &[(C, 300.)]);
    check_vector(
        r#"{__name__=~"up|cpu_temp",host="h1"}"#,
        600,
        &[("cpu_temp{host=h1}", 56.)],
    );
    // An absent label matches the empty string.
    check_vector(
        r#"cpu_temp{job=""}"#,
        600,
        &[("cpu_temp{host=h1}", 56.), ("cpu_temp{host=h2}", 45.)],
    );
    // Between samples the latest one is used: 330 → the sample at 300.
    check_vector(r#"http_requests_total{instance="a"}"#, 330, &[(A, 50.)]);
}

#[test]
fn lookback_and_staleness() {
    // h2's last sample before 600 is at 120; 300 - 120 = 180 < 300 s lookback.
    check_vector(
        "cpu_temp",
        300,
        &[("cpu_temp{host=h1}", 51.), ("cpu_temp{host=h2}", 42.)],
    );
    // 419 - 120 = 299 < 300: still seen.
    check_vector(r#"cpu_temp{host="h2"}"#, 419, &[("cpu_temp{host=h2}", 42.)]);
    // 420 - 300 = 120: the window (120, 420] is left-open, the sample is gone.
    check_vector(r#"cpu_temp{host="h2"}"#, 420, &[]);
    // h3 has a staleness marker at 240: gone immediately, not after 5 minutes.
    check_vector(r#"cpu_temp{host="h3"}"#, 200, &[("cpu_temp{host=h3}", 33.)]);
    check_vector(r#"cpu_temp{host="h3"}"#, 240, &[]);
    check_vector(r#"cpu_temp{host="h3"}"#, 300, &[]);
    check_vector(
        "cpu_temp",
        600,
        &[("cpu_temp{host=h1}", 56.), ("cpu_temp{host=h2}", 45.)],
    );
    // Before the first sample there is nothing.
    check_vector("cpu_temp", -1, &[]);
}

#[test]
fn offset_and_at() {
    check_vector(
        r#"cpu_temp{host="h1"} offset 5m"#,
        600,
        &[("cpu_temp{host=h1}", 51.)],
    );
    check_vector(
        r#"cpu_temp{host="h1"} @ 120"#,
        600,
        &[("cpu_temp{host=h1}", 48.)],
    );
    check_vector(
        r#"cpu_temp{host="h1"} @ 300 offset 1m"#,
        0,
        &[("cpu_temp{host=h1}", 53.)],
    );
    // Negative offset reads the future: 300 + 60.
    check_vector(
        r#"cpu_temp{host="h1"} offset -1m"#,
        300,
        &[("cpu_temp{host=h1}", 49.)],
    );
    // (a) 100-50, (b) 125-25, (c) 300-150.
    check_vector(
        "http_requests_total - http_requests_total offset 5m",
        600,
        &[
            ("{job=api,instance=a}", 50.),
            ("{job=api,instance=b}", 100.),
            ("{job=web,instance=c}", 150.),
        ],
    );
    check_range(
        r#"cpu_temp{host="h1"} @ start()"#,
        60,
        180,
        60,
        &[("cpu_temp{host=h1}", &[(60, 52.), (120, 52.), (180, 52.)])],
    );
    check_range(
        r#"cpu_temp{host="h1"} @ end()"#,
        60,
        180,
        60,
        &[("cpu_temp{host=h1}", &[(60, 55.), (120, 55.), (180, 55.)])],
    );
}

#[test]
fn rate_increase_irate() {
    // Window (300, 600]: samples at 360..600, a: 60..100. Change 40 over a
    // sampled 240 s; the first sample is 60 s after the window start (< 1.1 ×
    // the 60 s average interval, so extrapolated fully), the last at the end:
    // 40 × (240 + 60 + 0) / 240 = 50; rate = 50 / 300.
    // b: 45..125 → 80 × 1.25 = 100. c: 180..300 → 120 × 1.25 = 150.
    check_vector(
        "increase(http_requests_total[5m])",
        600,
        &[
            ("{job=api,instance=a}", 50.),
            ("{job=api,instance=b}", 100.),
            ("{job=web,instance=c}", 150.),
        ],
    );
    check_vector(
        "rate(http_requests_total[5m])",
        600,
        &[
            ("{job=api,instance=a}", 50. / 300.),
            ("{job=api,instance=b}", 100. / 300.),
            ("{job=web,instance=c}", 0.5),
        ],
    );
    // b over (0, 600]: samples 60..600: 20,40,60,5,...,125. 125 - 20 = 105,
    // plus 60 for the reset (5 < 60) = 165; sampled 540 s, start gap 60 s;
    // zero point 540 × 20/165 = 65.5 s is farther than 60 s → 165 × 600/540.
    check_vector(
        r#"increase(http_requests_total{instance="b"}[10m])"#,
        600,
        &[("{job=api,instance=b}", 165. * 600. / 540.)],
    );
    check_vector(
        r#"rate(http_requests_total{instance="b"}[10m])"#,
        600,
        &[("{job=api,instance=b}", 165. / 540.)],
    );
    // a over (-60, 540]: samples 0..540, values 0..90. The start gap 60 s is
    // clamped to where the counter would be zero: 540 × 0/90 = 0 → 90 × 540/540.
    check_vector(
        r#"increase(http_requests_total{instance="a"}[10m])"#,
        540,
        &[("{job=api,instance=a}", 90.)],
    );
    // (510, 630]: samples 540 (90), 600 (100); gaps 30 s each side (< 66 s):
    // 10 × (60 + 30 + 30) / 60 = 20.
    check_vector(
        r#"increase(http_requests_total{instance="a"}[2m])"#,
        630,
        &[("{job=api,instance=a}", 20.)],
    );
    // (510, 690]: the end gap 90 s ≥ 66 s, so only half an interval (30 s) is
    // extrapolated: 10 × (60 + 30 + 30) / 60 = 20, not 30.
    check_vector(
        r#"increase(http_requests_total{instance="a"}[3m])"#,
        690,
        &[("{job=api,instance=a}", 20.)],
    );
    // A single sample in the window: no result.
    check_vector(r#"rate(http_requests_total{instance="a"}[1m])"#, 630, &[]);
    // irate: last two samples, 90 → 100 over 60 s; b 105 → 125.
    check_vector(
        r#"irate(http_requests_total{job="api"}[5m])"#,
        600,
        &[
            ("{job=api,instance=a}", 10. / 60.),
            ("{job=api,instance=b}", 20. / 60.),
        ],
    );
    // irate across the reset at 240 (60 → 5): the new value 5 over 60 s.
    check_vector(
        r#"irate(http_requests_total{instance="b"}[5m])"#,
        240,
        &[("{job=api,instance=b}", 5. / 60.)],
    );
    check_range(
        r#"rate(http_requests_total{instance="a"}[5m])"#,
        300,
        600,
        150,
        &[(
            "{job=api,instance=a}",
            &[(300, 1. / 6.), (450, 1. / 6.), (600, 1. / 6.)],
        )],
    );
}

#[test]
fn delta_deriv_resets_changes() {
    // h1 over (300, 600]: 49,60,58,57,56 → (56 - 49) × 1.25 = 8.75 (no counter logic).
    check_vector(
        r#"delta(cpu_temp{host="h1"}[5m])"#,
        600,
        &[("{host=h1}", 8.75)],
    );
    check_vector(
        r#"idelta(cpu_temp{host="h1"}[5m])"#,
        600,
        &[("{host=h1}", -1.)],
    );
    check_vector(
        r#"deriv(http_requests_total{instance="a"}[5m])"#,
        600,
        &[("{job=api,instance=a}", 10. / 60.)],
    );
    check_vector(
        r#"resets(http_requests_total{instance="b"}[10m])"#,
        600,
        &[("{job=api,instance=b}", 1.)],
    );
    check_vector(
        r#"resets(http_requests_total{instance="a"}[10m])"#,
        600,
        &[("{job=api,instance=a}", 0.)],
    );
    // h1 over (0, 600]: 52,48,55,53,51,49,60,58,57,56: every step changes.
    check_vector(
        r#"changes(cpu_temp{host="h1"}[10m])"#,
        600,
        &[("{host=h1}", 9.)],
    );
}

#[test]
fn over_time_functions() {
    // h1 over (300, 600]: 49,60,58,57,56; sum 280, mean 56.
    let h1 = |f: &str, v: f64| {
        check_vector(
            &format!(r#"{f}(cpu_temp{{host="h1"}}[5m])"#),
            600,
            &[("{host=h1}", v)],
        )
    };
    h1("avg_over_time", 56.);
    h1("min_over_time", 49.);
    h1("max_over_time", 60.);
    h1("sum_over_time", 280.);
    h1("count_over_time", 5.);
    h1("present_over_time", 1.);
    // Deviations -7,4,2,1,0 → squares 49+16+4+1+0 = 70, / 5 = 14.
    h1("stdvar_over_time", 14.);
    h1("stddev_over_time", 14f64.sqrt());
    // last_over_time keeps the metric name.
    check_vector(
        r#"last_over_time(cpu_temp{host="h1"}[5m])"#,
        600,
        &[("cpu_temp{host=h1}", 56.)],
    );
    // Sorted 49,56,57,58,60: q=0.5 → rank 2 → 57; q=0.25 → rank 1 → 56;
    // q=0.9 → rank 3.6 → 58 × 0.4 + 60 × 0.6 = 59.2.
    check_vector(
        r#"quantile_over_time(0.5, cpu_temp{host="h1"}[5m])"#,
        600,
        &[("{host=h1}", 57.)],
    );
    check_vector(
        r#"quantile_over_time(0.25, cpu_temp{host="h1"}[5m])"#,
        600,
        &[("{host=h1}", 56.)],
    );
    check_vector(
        r#"quantile_over_time(0.9, cpu_temp{host="h1"}[5m])"#,
        600,
        &[("{host=h1}", 59.2)],
    );
    // The staleness marker is not a sample: h3 over (0, 300] has 31,32,33.
    check_vector(
        r#"count_over_time(cpu_temp{host="h3"}[5m])"#,
        300,
        &[("{host=h3}", 3.)],
    );
    // h2 over (300, 600]: only 45 at 600.
    check_vector(
        r#"avg_over_time(cpu_temp{host="h2"}[5m])"#,
        600,
        &[("{host=h2}", 45.)],
    );
    // Subquery: h1 evaluated at 360, 420, 480, 540, 600 → max 60.
    check_vector(
        r#"max_over_time(cpu_temp{host="h1"}[5m:1m])"#,
        600,
        &[("{host=h1}", 60.)],
    );
}

#[test]
fn aggregations() {
    // a 100, b 125, c 300.
    check_vector("sum(http_requests_total)", 600, &[("{}", 525.)]);
    check_vector(
        "sum by (job) (http_requests_total)",
        600,
        &[("{job=api}", 225.), ("{job=web}", 300.)],
    );
    check_vector(
        "sum without (instance) (http_requests_total)",
        600,
        &[("{job=api}", 225.), ("{job=web}", 300.)],
    );
    check_vector("avg(http_requests_total)", 600, &[("{}", 175.)]);
    check_vector("min(http_requests_total)", 600, &[("{}", 100.)]);
    check_vector(
        "max by (job) (http_requests_total)",
        600,
        &[("{job=api}", 125.), ("{job=web}", 300.)],
    );
    check_vector("count(http_requests_total)", 600, &[("{}", 3.)]);
    check_vector(
        "count by (job) (up)",
        600,
        &[("{job=api}", 2.), ("{job=web}", 1.)],
    );
    // Mean 175, deviations -75,-50,125 → (5625 + 2500 + 15625) / 3 = 7916.67.
    check_vector("stdvar(http_requests_total)", 600, &[("{}", 23750. / 3.)]);
    check_vector(
        "stddev(http_requests_total)",
        600,
        &[("{}", (23750f64 / 3.).sqrt())],
    );
    check_vector(
        "group by (job) (http_requests_total)",
        600,
        &[("{job=api}", 1.), ("{job=web}", 1.)],
    );
    check_vector("topk(2, http_requests_total)", 600, &[(C, 300.), (B, 125.)]);
    check_vector("bottomk(1, http_requests_total)", 600, &[(A, 100.)]);
    check_vector(
        "topk by (job) (1, http_requests_total)",
        600,
        &[(B, 125.), (C, 300.)],
    );
    check_vector("quantile(0.5, http_requests_total)", 600, &[("{}", 125.)]);
    // Ranks 0..2 of 100,125,300: q=0.75 → rank 1.5 → (125 + 300) / 2.
    check_vector("quantile(0.75, http_requests_total)", 600, &[("{}", 212.5)]);
    check_vector(
        r#"count_values("value", up)"#,
        600,
        &[("{value=1}", 2.), ("{value=0}", 1.)],
    );
    check_vector("sum(nonexistent)", 600, &[]);
    // `by` a label nobody has: one group with no labels.
    check_vector("sum by (nope) (up)", 600, &[("{}", 2.)]);
}

#[test]
fn arithmetic_and_comparisons() {
    check_scalar("2 ^ 3", 600, 8.);
    check_scalar("7 % 3", 600, 1.);
    check_scalar("1 + 2 * 3", 600, 7.);
    check_scalar("1 == bool 1", 600, 1.);
    check_scalar("2 < bool 1", 600, 0.);
    check_vector(
        "http_requests_total / 100",
        600,
        &[
            ("{job=api,instance=a}", 1.),
            ("{job=api,instance=b}", 1.25),
            ("{job=web,instance=c}", 3.),
        ],
    );
    // Filters keep the metric name.
    check_vector("http_requests_total > 110", 600, &[(B, 125.), (C, 300.)]);
    check_vector(
        "http_requests_total > bool 110",
        600,
        &[
            ("{job=api,instance=a}", 0.),
            ("{job=api,instance=b}", 1.),
            ("{job=web,instance=c}", 1.),
        ],
    );
    // The scalar on the left: the vector's value is kept.
    check_vector("200 < http_requests_total", 600, &[(C, 300.)]);
    check_vector(
        "up == 1",
        600,
        &[
            ("up{job=api,instance=a}", 1.),
            ("up{job=web,instance=c}", 1.),
        ],
    );
    check_vector(
        r#"-http_requests_total{instance="a"}"#,
        600,
        &[("{job=api,instance=a}", -100.)],
    );
    // One-to-one on all labels but the name: b is 125 / 0.
    check_vector(
        "http_requests_total / up",
        600,
        &[
            ("{job=api,instance=a}", 100.),
            ("{job=api,instance=b}", f64::INFINITY),
            ("{job=web,instance=c}", 300.),
        ],
    );
    check_vector(
        "http_requests_total > up",
        600,
        &[(A, 100.), (B, 125.), (C, 300.)],
    );
    check_vector("vector(1) + vector(2)", 600, &[("{}", 3.)]);
    // `on` keeps only the matching labels.
    check_vector(
        r#"sum by (job) (http_requests_total) / on (job) count by (job) (up)"#,
        600,
        &[("{job=api}", 112.5), ("{job=web}", 300.)],
    );
    check_vector(
        "http_requests_total - ignoring(instance) group_left sum by (job) (up)",
        600,
        &[
            ("{job=api,instance=a}", 99.),
            ("{job=api,instance=b}", 124.),
            ("{job=web,instance=c}", 299.),
        ],
    );
    // group_left copies `version` from the one side.
    check_vector(
        "http_requests_total * on (instance) group_left (version) machine_info",
        600,
        &[
            ("{job=api,instance=a,version=v1}", 100.),
            ("{job=api,instance=b,version=v2}", 125.),
        ],
    );
    check_vector(
        "machine_info * on (instance) group_right (version) http_requests_total",
        600,
        &[
            ("{job=api,instance=a,version=v1}", 100.),
            ("{job=api,instance=b,version=v2}", 125.),
        ],
    );
    check_vector(r#"cpu_temp{host="h1"} % 10"#, 600, &[("{host=h1}", 6.)]);
    check_vector(r#"cpu_temp{host="h1"} ^ 0"#, 600, &[("{host=h1}", 1.)]);
}

#[test]
fn set_operators() {
    check_vector(
        "http_requests_total and up == 1",
        600,
        &[(A, 100.), (C, 300.)],
    );
    check_vector("http_requests_total unless up == 1", 600, &[(B, 125.)]);
    check_vector(
        r#"http_requests_total{job="api"} or http_requests_total"#,
        600,
        &[(A, 100.), (B, 125.), (C, 300.)],
    );
    check_vector(
        r#"up{instance="a"} or cpu_temp"#,
        600,
        &[
            ("up{job=api,instance=a}", 1.),
            ("cpu_temp{host=h1}", 56.),
            ("cpu_temp{host=h2}", 45.),
        ],
    );
    check_vector(
        r#"http_requests_total and on (job) up{instance="c"}"#,
        600,
        &[(C, 300.)],
    );
    check_vector(
        r#"http_requests_total unless ignoring (instance) up{instance="c"}"#,
        600,
        &[(A, 100.), (B, 125.)],
    );
}

#[test]
fn element_functions() {
    check_vector(
        r#"abs(-1 * cpu_temp{host="h1"})"#,
        600,
        &[("{host=h1}", 56.)],
    );
    check_vector("ceil(vector(1.2))", 600, &[("{}", 2.)]);
    check_vector("floor(vector(1.8))", 600, &[("{}", 1.)]);
    check_vector("round(vector(2.5))", 600, &[("{}", 3.)]);
    // Half rounds up: floor(-2.5 + 0.5) = -2.
    check_vector("round(vector(-2.5))", 600, &[("{}", -2.)]);
    // floor(123.456 × 10 + 0.5) / 10 = 1235 / 10.
    check_vector("round(vector(123.456), 0.1)", 600, &[("{}", 123.5)]);
    check_vector(
        r#"clamp(cpu_temp{host="h1"}, 50, 55)"#,
        600,
        &[("{host=h1}", 55.)],
    );
    check_vector("clamp(vector(1), 5, 2)", 600, &[]);
    check_vector(
        "clamp_min(cpu_temp, 50)",
        600,
        &[("{host=h1}", 56.), ("{host=h2}", 50.)],
    );
    check_vector(
        "clamp_max(cpu_temp, 50)",
        600,
        &[("{host=h1}", 50.), ("{host=h2}", 45.)],
    );
    check_vector("ln(vector(1))", 600, &[("{}", 0.)]);
    check_vector("log2(vector(8))", 600, &[("{}", 3.)]);
    check_vector("log10(vector(1000))", 600, &[("{}", 3.)]);
    check_vector("exp(vector(0))", 600, &[("{}", 1.)]);
    check_vector("sqrt(vector(16))", 600, &[("{}", 4.)]);
    check_vector("sgn(vector(-3))", 600, &[("{}", -1.)]);
    check_vector("sqrt(vector(-1))", 600, &[("{}", f64::NAN)]);
}

#[test]
fn labels_and_misc_functions() {
    check_vector(
        r#"label_replace(up{instance="a"}, "host", "$1-x", "instance", "(.*)")"#,
        600,
        &[("up{job=api,instance=a,host=a-x}", 1.)],
    );
    // No match: unchanged.
    check_vector(
        r#"label_replace(up{instance="a"}, "host", "$1", "instance", "z(.*)")"#,
        600,
        &[("up{job=api,instance=a}", 1.)],
    );
    // An empty replacement removes the label.
    check_vector(
        r#"label_replace(up{instance="a"}, "job", "", "job", ".*")"#,
        600,
        &[("up{instance=a}", 1.)],
    );
    check_vector(
        r#"label_join(up{instance="a"}, "combo", "/", "job", "instance")"#,
        600,
        &[("up{job=api,instance=a,combo=api/a}", 1.)],
    );
    check_vector("vector(time())", 600, &[("{}", 600.)]);
    check_scalar("time()", 600, 600.);
    check_scalar(r#"scalar(up{instance="a"})"#, 600, 1.);
    check_scalar("scalar(up)", 600, f64::NAN);
    // The sample's own timestamp, not the evaluation time.
    check_vector(
        r#"timestamp(cpu_temp{host="h2"})"#,
        419,
        &[("{host=h2}", 120.)],
    );
    check_vector(r#"absent(nonexistent{job="x"})"#, 600, &[("{job=x}", 1.)]);
    check_vector("absent(up)", 600, &[]);
    check_vector("absent_over_time(nonexistent[5m])", 600, &[("{}", 1.)]);
    check_vector("absent_over_time(up[5m])", 600, &[]);
    check_vector("hour(vector(7200))", 600, &[("{}", 2.)]);
    check_vector("minute(vector(90))", 600, &[("{}", 1.)]);
    // 1970-01-01 was a Thursday.
    check_vector("day_of_week(vector(0))", 600, &[("{}", 4.)]);
    check_vector("month(vector(0))", 600, &[("{}", 1.)]);
    check_vector("year(vector(0))", 600, &[("{}", 1970.)]);
    check_vector("days_in_month(vector(0))", 600, &[("{}", 31.)]);
    // Day 40 after the epoch is February 10th, the 41st day of the year.
    check_vector("day_of_year(vector(3456000))", 600, &[("{}", 41.)]);
}

#[test]
fn sort_orders() {
    let order = |q: &str| -> Vec<Labels> {
        match instant_query(&dataset(), q, 600_000, &EngineOptions::default()).unwrap() {
            QueryValue::Vector(v) => v.into_iter().map(|(l, _, _)| l).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        order("sort(http_requests_total)"),
        vec![labels(A), labels(B), labels(C)]
    );
    assert_eq!(
        order("sort_desc(http_requests_total)"),
        vec![labels(C), labels(B), labels(A)]
    );
}

#[test]
fn histogram_quantiles() {
    // api at 600 (k=10): 0.1:10, 0.5:30, 1:40, +Inf:50. q=0.5 → rank 25, in
    // (0.1, 0.5]: 0.1 + 0.4 × (25 - 10) / (30 - 10) = 0.4.
    // web: 0.1:20, 0.5:20, 1:80, +Inf:80. rank 40 in (0.5, 1]:
    // 0.5 + 0.5 × (40 - 20) / (80 - 20) = 0.6667.
    check_vector(
        "histogram_quantile(0.5, req_duration_bucket)",
        600,
        &[("{job=api}", 0.4), ("{job=web}", 0.5 + 0.5 * 20. / 60.)],
    );
    // Rates scale every bucket alike: same quantiles.
    check_vector(
        "histogram_quantile(0.5, rate(req_duration_bucket[5m]))",
        600,
        &[("{job=api}", 0.4), ("{job=web}", 0.5 + 0.5 * 20. / 60.)],
    );
    check_vector(
        "histogram_quantile(0.5, sum by (job, le) (rate(req_duration_bucket[5m])))",
        600,
        &[("{job=api}", 0.4), ("{job=web}", 0.5 + 0.5 * 20. / 60.)],
    );
    // api q=0.99: rank 49.5 > 40 lands in +Inf: the highest finite bound, 1.
    check_vector(
        r#"histogram_quantile(0.99, req_duration_bucket{job="api"})"#,
        600,
        &[("{job=api}", 1.)],
    );
    // q=0.05: rank 2.5 in the first bucket (0, 0.1]: 0.1 × 2.5 / 10.
    check_vector(
        r#"histogram_quantile(0.05, req_duration_bucket{job="api"})"#,
        600,
        &[("{job=api}", 0.025)],
    );
    check_vector(
        r#"histogram_quantile(2, req_duration_bucket{job="api"})"#,
        600,
        &[("{job=api}", f64::INFINITY)],
    );
    // At 0 every bucket is empty.
    check_vector(
        r#"histogram_quantile(0.5, req_duration_bucket{job="api"})"#,
        0,
        &[("{job=api}", f64::NAN)],
    );
    // Without the +Inf bucket there is no answer.
    check_vector(
        r#"histogram_quantile(0.5, req_duration_bucket{job="api",le!="+Inf"})"#,
        600,
        &[("{job=api}", f64::NAN)],
    );
}

#[test]
fn native_histograms() {
    // Rank 5 of 10: zero bucket 2, then (0.5, 1] holds 4 → fraction
    // (5 - 2) / 4 = 0.75, exponential: 2^(log2 0.5 + 0.75 × 1) = 2^-0.25.
    check_vector(
        "histogram_quantile(0.5, lat_native)",
        600,
        &[("{job=api}", 2f64.powf(-0.25))],
    );
    // Rank 1 in the zero bucket, no negative buckets → linear in [0, 0.001]: 0.0005.
    check_vector(
        "histogram_quantile(0.1, lat_native)",
        600,
        &[("{job=api}", 0.0005)],
    );
    check_vector("histogram_count(lat_native)", 600, &[("{job=api}", 10.)]);
    check_vector("histogram_sum(lat_native)", 600, &[("{job=api}", 15.)]);
    check_vector("histogram_avg(lat_native)", 600, &[("{job=api}", 1.5)]);
    let v = instant_query(&dataset(), "lat_native", 600_000, &EngineOptions::default()).unwrap();
    assert_eq!(
        v.to_prometheus_json(),
        serde_json::json!({"resultType": "vector", "result": [{
            "metric": {"__name__": "lat_native", "job": "api"},
            "histogram": [600, {"count": "10", "sum": "15", "buckets": [
                [3, "-0.001", "0.001", "2"],
                [0, "0.5", "1", "4"],
                [0, "1", "2", "2"],
                [0, "2", "4", "2"],
            ]}],
        }]})
    );
}

#[test]
fn range_queries() {
    // h2: 40 at 0, 42 from 120 while within 5 minutes of 120 (360 yes, 480
    // no), 45 at 600.
    check_range(
        r#"cpu_temp{host="h2"}"#,
        0,
        600,
        120,
        &[(
            "cpu_temp{host=h2}",
            &[(0, 40.), (120, 42.), (240, 42.), (360, 42.), (600, 45.)],
        )],
    );
    // h3 ends at the staleness marker at 240.
    check_range(
        r#"cpu_temp{host="h3"}"#,
        0,
        300,
        60,
        &[(
            "cpu_temp{host=h3}",
            &[(0, 30.), (60, 31.), (120, 32.), (180, 33.)],
        )],
    );
    check_range(
        "1 + 1",
        0,
        120,
        60,
        &[("{}", &[(0, 2.), (60, 2.), (120, 2.)])],
    );
    // Steps that do not divide the range stop at or before the end: 0, 250, 500.
    check_range(
        r#"up{instance="a"}"#,
        0,
        600,
        250,
        &[("up{job=api,instance=a}", &[(0, 1.), (250, 1.), (500, 1.)])],
    );
    check_range(
        "sum by (job) (http_requests_total)",
        0,
        120,
        60,
        &[
            ("{job=api}", &[(0, 0.), (60, 30.), (120, 60.)]),
            ("{job=web}", &[(0, 0.), (60, 30.), (120, 60.)]),
        ],
    );
}

#[test]
fn errors() {
    for q in [
        "sum(",
        "foo{",
        "1 +",
        "rate(up)",
        "sum by (job) up[",
        "up[5m] + 1",
        r#"foo{a=~"("}"#,
    ] {
        check_error(q, "bad_data");
    }
    check_error("unknown_function(up)", "bad_data");
    // Two series with job="api" on the right of a one-to-one match.
    check_error("http_requests_total + on (job) up", "execution");
    // Dropping the name makes a and the up series of a collide.
    check_error(
        r#"rate({__name__=~"http_requests_total|up", instance="a"}[5m])"#,
        "execution",
    );
    let opts = EngineOptions::default();
    let err = range_query(&dataset(), "up[5m]", 0, 600_000, 60_000, &opts).unwrap_err();
    assert_eq!(err.kind.as_str(), "bad_data");
    let err = range_query(&dataset(), "up", 0, 600_000, 0, &opts).unwrap_err();
    assert_eq!(err.kind.as_str(), "bad_data");
    let err = range_query(&dataset(), "up", 0, 100_000_000, 1, &opts).unwrap_err();
    assert_eq!(err.kind.as_str(), "bad_data");
}

#[test]
fn sample_limit() {
    // http_requests_total[10m] at 600 loads 3 series × 11 samples = 33
    // (the select range is inclusive, the window then left-open).
    let opts = EngineOptions {
        max_samples: 32,
        ..EngineOptions::default()
    };
    let err = instant_query(
        &dataset(),
        "count_over_time(http_requests_total[10m])",
        600_000,
        &opts,
    )
    .unwrap_err();
    assert_eq!(err.kind.as_str(), "execution");
    assert!(err.message.contains("too many samples"), "{}", err.message);
    let opts = EngineOptions {
        max_samples: 33,
        ..EngineOptions::default()
    };
    instant_query(
        &dataset(),
        "count_over_time(http_requests_total[10m])",
        600_000,
        &opts,
    )
    .unwrap();
    // The output of a range query counts too: 11 steps of 1 sample.
    let opts = EngineOptions {
        max_samples: 10,
        ..EngineOptions::default()
    };
    let err = range_query(&dataset(), "vector(1)", 0, 600_000, 60_000, &opts).unwrap_err();
    assert_eq!(err.kind.as_str(), "execution");
}

#[test]
fn timeout() {
    let opts = EngineOptions {
        timeout: Duration::ZERO,
        ..EngineOptions::default()
    };
    let err = instant_query(&dataset(), "up", 600_000, &opts).unwrap_err();
    assert_eq!(err.kind.as_str(), "timeout");
    // A range query read a series at a time stops as well.
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    assert!(super::range::streams(
        &promql_parser::parser::parse(q).unwrap()
    ));
    let err = range_query(&dataset(), q, 0, 600_000, 60_000, &opts).unwrap_err();
    assert_eq!(err.kind.as_str(), "timeout");
}

#[test]
fn a_range_query_read_a_series_at_a_time_keeps_to_the_sample_limit() {
    // 3 series × 11 steps of output columns.
    let q = "rate(http_requests_total[5m])";
    let run = |max_samples| {
        let opts = EngineOptions {
            max_samples,
            ..EngineOptions::default()
        };
        range_query(&dataset(), q, 0, 600_000, 60_000, &opts)
    };
    let err = run(20).unwrap_err();
    assert_eq!(err.kind.as_str(), "execution");
    assert!(err.message.contains("too many samples"), "{}", err.message);
    run(50_000_000).unwrap();
}

#[test]
fn prometheus_json() {
    let v = instant_query(
        &dataset(),
        r#"up{instance="a"}"#,
        1_500,
        &EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(
        v.to_prometheus_json(),
        serde_json::json!({"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "instance": "a", "job": "api"}, "value": [1.5, "1"]}
        ]})
    );
    let v = instant_query(&dataset(), "1 / 0", 600_000, &EngineOptions::default()).unwrap();
    assert_eq!(
        v.to_prometheus_json(),
        serde_json::json!({"resultType": "scalar", "result": [600, "+Inf"]})
    );
    assert_eq!(
        QueryValue::Scalar(0, f64::NAN).to_prometheus_json()["result"][1],
        serde_json::json!("NaN")
    );
    assert_eq!(
        QueryValue::Scalar(0, -0.25).to_prometheus_json()["result"][1],
        serde_json::json!("-0.25")
    );
    let v = instant_query(&dataset(), r#""hello""#, 600_000, &EngineOptions::default()).unwrap();
    assert_eq!(
        v.to_prometheus_json(),
        serde_json::json!({"resultType": "string", "result": [600, "hello"]})
    );
    let v = instant_query(
        &dataset(),
        r#"cpu_temp{host="h1"}[2m]"#,
        600_000,
        &EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(
        v.to_prometheus_json(),
        serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {"__name__": "cpu_temp", "host": "h1"}, "values": [[540, "57"], [600, "56"]]}
        ]})
    );
}

/// Runs an instant query at `t` seconds and compares its histogram results
/// with `(labels, histogram)` pairs, counts and sum within rounding.
fn check_histograms(query: &str, t: i64, want: &[(&str, NativeHistogram)]) {
    same_both_ways(query);
    let got = instant_query(&dataset(), query, t * 1000, &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let QueryValue::Vector(mut got) = got else {
        panic!("{query}: not a vector: {got:?}")
    };
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(Labels, &NativeHistogram)> =
        want.iter().map(|(l, h)| (labels(l), h)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want.len(), "{query}: got {got:?}");
    for ((gl, _, gv), (wl, wh)) in got.iter().zip(&want) {
        assert_eq!(gl, wl, "{query}");
        let SampleValue::Histogram(gh) = gv else {
            panic!("{query}: float {gv:?}")
        };
        let fields = |h: &NativeHistogram| {
            (
                h.schema,
                h.zero_threshold,
                h.positive_spans.clone(),
                h.negative_spans.clone(),
            )
        };
        assert_eq!(fields(gh), fields(wh), "{query}: got {gh:?}");
        let counts = |h: &NativeHistogram| -> Vec<f64> {
            [h.zero_count, h.count, h.sum]
                .into_iter()
                .chain(h.positive_buckets.iter().copied())
                .chain(h.negative_buckets.iter().copied())
                .collect()
        };
        let (g, w) = (counts(gh), counts(wh));
        assert_eq!(g.len(), w.len(), "{query}: got {gh:?}");
        for (a, b) in g.iter().zip(&w) {
            assert!(close(*a, *b), "{query}: got {gh:?}, want {wh:?}");
        }
    }
}

#[test]
fn native_histogram_rates() {
    // api over (0, 600]: m = 1,2,3,4,1,2,3,4,5,6 at 60..600; the reset at 300
    // adds back m = 4: 6 - 1 + 4 = 9 m-units (count 36). Extrapolation:
    // 60 s to the start (< 1.1 × 60), to zero 540 × 4/36 = 60 (not shorter),
    // 0 to the end: × 600/540 → 10 m-units: zero 10, (1,2] 20, (2,4] 10,
    // count 40, sum 50.
    let api_increase = hist(0, 10.0, 50.0, 1, &[20.0, 10.0]);
    check_histograms(
        r#"increase(lat_hist{job="api"}[10m])"#,
        600,
        &[("{job=api}", api_increase.clone())],
    );
    // rate: the same over 600 s.
    check_histograms(
        r#"rate(lat_hist{job="api"}[10m])"#,
        600,
        &[(
            "{job=api}",
            hist(
                0,
                10.0 / 600.0,
                50.0 / 600.0,
                1,
                &[20.0 / 600.0, 10.0 / 600.0],
            ),
        )],
    );
    // web over (0, 600]: first (1, 1) at 60, last (4, 28) at 600; at 360 the
    // first bucket falls 5 → 0 though the count rises 10 → 20: a reset,
    // (5, 5) added back: (4 - 1 + 5, 28 - 1 + 5) = (8, 32), count 40. To
    // zero: 540 × 2/40 = 27 < 60 → factor (540 + 27)/540 = 1.05:
    // (8.4, 33.6), count 42, sum 1.5 × 42 = 63.
    check_histograms(
        r#"increase(lat_hist{job="web"}[10m])"#,
        600,
        &[("{job=web}", hist(1, 0.0, 63.0, 1, &[8.4, 33.6]))],
    );
    check_vector(
        "resets(lat_hist[10m])",
        600,
        &[("{job=api}", 1.), ("{job=web}", 1.)],
    );
    // A window without the reset: (300, 600] holds m = 2..6 at 360..600:
    // 4 m-units, start 60 s away (to zero 240 × 8/16 = 120, longer), × 300/240
    // → 5 m-units, count 20.
    check_vector(
        r#"histogram_count(increase(lat_hist{job="api"}[5m]))"#,
        600,
        &[("{job=api}", 20.)],
    );
    // delta does not correct resets: m 6 - 1 = 5 (count 20) × 600/540.
    check_vector(
        r#"histogram_count(delta(lat_hist{job="api"}[10m]))"#,
        600,
        &[("{job=api}", 20. * 600. / 540.)],
    );
    // irate at 600: m 5 → 6 over 60 s: count 4/60. At 300 (m 4 → 1, a
    // reset) the last histogram alone: count 4/60; idelta: 4 - 16 = -12.
    check_histograms(
        r#"irate(lat_hist{job="api"}[10m])"#,
        600,
        &[(
            "{job=api}",
            hist(0, 1.0 / 60.0, 5.0 / 60.0, 1, &[2.0 / 60.0, 1.0 / 60.0]),
        )],
    );
    check_vector(
        r#"histogram_count(irate(lat_hist{job="api"}[2m]))"#,
        300,
        &[("{job=api}", 4. / 60.)],
    );
    check_vector(
        r#"histogram_count(idelta(lat_hist{job="api"}[2m]))"#,
        300,
        &[("{job=api}", -12.)],
    );
    // The usual dashboard query. api at schema 0 plus web brought to schema
    // 0 (both its buckets fall in (1,2]): zero 10, (1,2] 20 + 8.4 + 33.6 =
    // 62, (2,4] 10; count 82, sum 50 + 63 = 113.
    check_histograms(
        "sum(increase(lat_hist[10m]))",
        600,
        &[("{}", hist(0, 10.0, 113.0, 1, &[62.0, 10.0]))],
    );
    check_vector(
        "histogram_count(sum(rate(lat_hist[10m])))",
        600,
        &[("{}", 82. / 600.)],
    );
    // q 0.9: rank 73.8; zero 10 and (1,2] 62 make 72, so 1.8 of 10 into
    // (2,4]: 2^(1 + 0.18). Rates scale every bucket alike.
    check_vector(
        "histogram_quantile(0.9, sum(rate(lat_hist[10m])))",
        600,
        &[("{}", 2f64.powf(1.18))],
    );
    check_vector(
        "histogram_quantile(0.9, sum by (job) (rate(lat_hist[10m])))",
        600,
        // api: rank 36 of 40, 30 below (2,4] → 6/10 in: 2^1.6. web: rank
        // 37.8 of 42 at schema 1, (1,√2] 8.4, (√2,2] 33.6 → (37.8 - 8.4)/33.6
        // = 0.875 in: 2^(0.5 + 0.875 × 0.5).
        &[
            ("{job=api}", 2f64.powf(1.6)),
            ("{job=web}", 2f64.powf(0.5 + 0.875 * 0.5)),
        ],
    );
    // avg: the sum over 2.
    check_vector(
        "histogram_count(avg(increase(lat_hist[10m])))",
        600,
        &[("{}", 41.)],
    );
    // A window mixing floats and histograms has no rate; one of histograms
    // alone has: (300, 600] counts 6..10, 4 × (240 + 60)/240 = 5 over 300 s.
    check_vector("rate(lat_mixed[5m])", 240, &[]);
    check_vector("sum_over_time(lat_mixed[5m])", 240, &[]);
    check_vector(
        "histogram_count(rate(lat_mixed[5m]))",
        600,
        &[("{job=api}", 5. / 300.)],
    );
    // (0, 600]: floats 1 → 2, then the switch to histograms (a reset and a
    // change), then 7 changes 3 → 10 without a reset.
    check_vector("resets(lat_mixed[10m])", 600, &[("{job=api}", 1.)]);
    check_vector("changes(lat_mixed[10m])", 600, &[("{job=api}", 9.)]);
    // Only the floats: max 2 (at 120).
    check_vector("max_over_time(lat_mixed[10m])", 600, &[("{job=api}", 2.)]);
    check_vector("max_over_time(lat_hist[10m])", 600, &[]);
    check_vector(
        "count_over_time(lat_mixed[10m])",
        600,
        &[("{job=api}", 10.)],
    );
    // sum_over_time over m = 4, 5, 6: counts 16 + 20 + 24; avg 20.
    check_vector(
        r#"histogram_count(sum_over_time(lat_hist{job="api"}[3m]))"#,
        600,
        &[("{job=api}", 60.)],
    );
    check_vector(
        r#"histogram_count(avg_over_time(lat_hist{job="api"}[3m]))"#,
        600,
        &[("{job=api}", 20.)],
    );
    check_vector(
        "histogram_count(last_over_time(lat_hist[5m]))",
        600,
        &[("{job=api}", 24.), ("{job=web}", 32.)],
    );
    // Through a range query, both evaluators.
    check_range(
        "histogram_count(sum(increase(lat_hist[10m])))",
        600,
        600,
        60,
        &[("{}", &[(600, 82.)])],
    );
}

#[test]
fn native_histogram_aggregations_and_operators() {
    // At 600: api m = 6 (count 24, sum 30), web (4, 28) (count 32, sum 48).
    check_vector("count(lat_hist)", 600, &[("{}", 2.)]);
    check_vector("group(lat_hist)", 600, &[("{}", 1.)]);
    check_vector("max(lat_hist)", 600, &[]);
    check_vector("topk(1, lat_hist)", 600, &[]);
    check_vector("quantile(0.5, lat_hist)", 600, &[]);
    check_vector("histogram_count(sum(lat_hist))", 600, &[("{}", 56.)]);
    // Floats and histograms in one group: no sum, but a count.
    check_vector(r#"sum(lat_hist{job="api"} or up{instance="a"})"#, 600, &[]);
    check_vector(
        r#"count(lat_hist{job="api"} or up{instance="a"})"#,
        600,
        &[("{}", 2.)],
    );
    // Scaling.
    for q in [
        r#"histogram_count(lat_hist{job="api"} * 2)"#,
        r#"histogram_count(2 * lat_hist{job="api"})"#,
    ] {
        check_vector(q, 600, &[("{job=api}", 48.)]);
    }
    check_histograms(
        r#"lat_hist{job="api"} / 2"#,
        600,
        &[("{job=api}", hist(0, 3.0, 15.0, 1, &[6.0, 3.0]))],
    );
    check_vector(
        r#"histogram_count(-lat_hist{job="api"})"#,
        600,
        &[("{job=api}", -24.)],
    );
    // Operators histograms do not take drop them.
    for q in [
        "2 / lat_hist",
        "lat_hist + 1",
        "lat_hist > 1",
        "lat_hist * lat_hist",
        r#"lat_hist{job="api"} + on (job) up{instance="a"}"#,
    ] {
        check_vector(q, 600, &[]);
    }
    // Histogram plus and minus histogram, the finer one brought to schema 0:
    // counts 24 + 32 = 56, sums 30 - 48 = -18.
    check_vector(
        r#"histogram_count(lat_hist{job="api"} + ignoring (job) lat_hist{job="web"})"#,
        600,
        &[("{}", 56.)],
    );
    check_histograms(
        r#"lat_hist{job="api"} - ignoring (job) lat_hist{job="web"}"#,
        600,
        // (1,2]: 12 - (4 + 28) = -20; (2,4]: 6; zero 6; count 24 - 32.
        &[("{}", {
            let mut h = hist(0, 6.0, -18.0, 1, &[-20.0, 6.0]);
            h.count = -8.0;
            h
        })],
    );
    // Comparisons between histograms compare whole histograms.
    check_vector(
        "histogram_count(lat_hist == lat_hist)",
        600,
        &[("{job=api}", 24.), ("{job=web}", 32.)],
    );
    check_vector("lat_hist != lat_hist", 600, &[]);
    check_vector(
        "lat_hist == bool lat_hist",
        600,
        &[("{job=api}", 1.), ("{job=web}", 1.)],
    );
    check_vector(
        r#"lat_hist{job="api"} == bool ignoring (job) lat_hist{job="web"}"#,
        600,
        &[("{}", 0.)],
    );
}

#[test]
fn native_histogram_functions() {
    // lat_native: zero 2 in [-0.001, 0.001] (only positive buckets: [0,
    // 0.001]), (0.5,1]: 4, (1,2]: 2, (2,4]: 2; count 10.
    // [0, 1]: everything below 1 = 6 → 0.6.
    check_vector(
        "histogram_fraction(-1, 1, lat_native)",
        600,
        &[("{job=api}", 0.6)],
    );
    // [0.0005, 3]: half the zero bucket (linear) is below 0.0005 → 1;
    // 3 is log2(3) - 1 of the way into (2,4] → 8 + 2 × (log2 3 - 1).
    check_vector(
        "histogram_fraction(0.0005, 3, lat_native)",
        600,
        &[("{job=api}", (8. + 2. * (3f64.log2() - 1.) - 1.) / 10.)],
    );
    check_vector(
        "histogram_fraction(5, 1, lat_native)",
        600,
        &[("{job=api}", 0.)],
    );
    // api at 600: zero 6, (1,2] 12, (2,4] 6: [0, 1.5] holds 6 + 12 × log2 1.5.
    check_vector(
        r#"histogram_fraction(0, 1.5, lat_hist{job="api"})"#,
        600,
        &[("{job=api}", (6. + 12. * 1.5f64.log2()) / 24.)],
    );
    // Mean 1.5; bucket midpoints 0 (zero bucket), √0.5, √2, √8.
    let var = (2. * 1.5f64.powi(2)
        + 4. * (0.5f64.sqrt() - 1.5).powi(2)
        + 2. * (2f64.sqrt() - 1.5).powi(2)
        + 2. * (8f64.sqrt() - 1.5).powi(2))
        / 10.;
    check_vector("histogram_stdvar(lat_native)", 600, &[("{job=api}", var)]);
    check_vector(
        "histogram_stddev(lat_native)",
        600,
        &[("{job=api}", var.sqrt())],
    );
    // Floats are not histograms.
    check_vector("histogram_count(up)", 600, &[]);
    check_vector("histogram_fraction(0, 1, up)", 600, &[]);
}

#[test]
fn more_functions() {
    // h2 at 0, 60, 120: 40, 41, 42, a line of slope 1/60 through 42 at 120.
    check_vector(
        r#"predict_linear(cpu_temp{host="h2"}[3m], 60)"#,
        120,
        &[("{host=h2}", 43.)],
    );
    // a: 10 a minute; 100 at 600, 600 s on: 200.
    check_vector(
        r#"predict_linear(http_requests_total{instance="a"}[5m], 600)"#,
        600,
        &[("{job=api,instance=a}", 200.)],
    );
    // up is constant: itself.
    check_vector(
        r#"predict_linear(up{instance="a"}[5m], 3600)"#,
        600,
        &[("{job=api,instance=a}", 1.)],
    );
    // h1 over (0, 180]: 52, 48, 55. s = 52, trend -4; then 48: 0.5 × 48 +
    // 0.5 × (52 - 4) = 48; trend 0.5 × (48 - 52) + 0.5 × -4 = -4; then 55:
    // 27.5 + 0.5 × (48 - 4) = 49.5.
    check_vector(
        r#"double_exponential_smoothing(cpu_temp{host="h1"}[3m], 0.5, 0.5)"#,
        180,
        &[("{host=h1}", 49.5)],
    );
    check_error(
        "double_exponential_smoothing(cpu_temp[5m], 1, 0.5)",
        "execution",
    );
    check_scalar("pi()", 0, std::f64::consts::PI);
    check_vector("deg(vector(pi()))", 0, &[("{}", 180.)]);
    check_vector("rad(vector(90))", 0, &[("{}", std::f64::consts::FRAC_PI_2)]);
    check_vector("cos(vector(0))", 0, &[("{}", 1.)]);
    check_vector("sin(vector(pi() / 2))", 0, &[("{}", 1.)]);
    check_vector("tan(vector(0))", 0, &[("{}", 0.)]);
    check_vector("asin(vector(1))", 0, &[("{}", std::f64::consts::FRAC_PI_2)]);
    check_vector("acos(vector(1))", 0, &[("{}", 0.)]);
    check_vector("atan(vector(1))", 0, &[("{}", std::f64::consts::FRAC_PI_4)]);
    check_vector("sinh(vector(0))", 0, &[("{}", 0.)]);
    check_vector("cosh(vector(0))", 0, &[("{}", 1.)]);
    check_vector("tanh(vector(0))", 0, &[("{}", 0.)]);
    check_vector("asinh(vector(0))", 0, &[("{}", 0.)]);
    check_vector("acosh(vector(1))", 0, &[("{}", 0.)]);
    // atanh(0.5) = ln(3) / 2.
    check_vector("atanh(vector(0.5))", 0, &[("{}", 3f64.ln() / 2.)]);
    check_vector("acos(vector(2))", 0, &[("{}", f64::NAN)]);
    // limitk keeps k of each group; limit_ratio r and r - 1 split a group.
    check_vector("count(limitk(2, up))", 600, &[("{}", 2.)]);
    check_vector("count(limitk(5, up))", 600, &[("{}", 3.)]);
    check_vector(
        "limitk by (instance) (1, up)",
        600,
        &[
            ("up{job=api,instance=a}", 1.),
            ("up{job=api,instance=b}", 0.),
            ("up{job=web,instance=c}", 1.),
        ],
    );
    check_vector("limitk(0, up)", 600, &[]);
    check_vector("count(limit_ratio(1, up))", 600, &[("{}", 3.)]);
    check_vector(
        "count(limit_ratio(0.5, up) or limit_ratio(-0.5, up))",
        600,
        &[("{}", 3.)],
    );
    check_vector(
        "count(limit_ratio(0.5, up) and limit_ratio(-0.5, up))",
        600,
        &[],
    );
}

/// A source that counts its selects and names a generation, so range
/// queries over it use the chunk cache.
struct CachedSource {
    inner: MemorySource,
    id: String,
    generation: std::sync::atomic::AtomicU64,
    selects: std::sync::atomic::AtomicUsize,
    /// The time ranges selected.
    reads: std::sync::Mutex<Vec<(i64, i64)>>,
}

impl SeriesSource for CachedSource {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, QueryError> {
        self.selects
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.reads.lock().unwrap().push((start_ms, end_ms));
        self.inner.select(matchers, start_ms, end_ms)
    }

    fn cache_id(&self) -> Option<String> {
        Some(self.id.clone())
    }

    fn generation(&self, _: i64, _: i64) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn range_chunks_come_from_the_cache_until_their_samples_change() {
    use std::sync::atomic::Ordering::SeqCst;
    // Evaluated a series at a time in one pass, and in chunks.
    for q in [
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum by (job) (rate(http_requests_total[5m])) and on() vector(1)",
    ] {
        let src = CachedSource {
            inner: dataset(),
            id: format!("cache-test-{:?}-{q}", std::thread::current().id()),
            generation: 1.into(),
            selects: 0.into(),
            reads: Default::default(),
        };
        let opts = EngineOptions {
            range_chunk_ms: 120_000,
            ..EngineOptions::default()
        };
        let first = range_query(&src, q, 0, 900_000, 60_000, &opts).unwrap();
        let cold = src.selects.load(SeqCst);
        assert!(cold > 0);
        // The same query again: every chunk from the cache, the same answer.
        let again = range_query(&src, q, 0, 900_000, 60_000, &opts).unwrap();
        assert_eq!(again, first);
        assert_eq!(src.selects.load(SeqCst), cold, "nothing read again");
        // A shifted window (a refresh) reads only what the chunk it has not
        // seen needs: [960 s, 1,020 s] with 5 minutes before.
        src.reads.lock().unwrap().clear();
        let shifted = range_query(&src, q, 120_000, 1_020_000, 60_000, &opts).unwrap();
        let reads = src.reads.lock().unwrap().clone();
        assert!(!reads.is_empty());
        assert!(reads.iter().all(|(lo, _)| *lo >= 660_000), "{q}: {reads:?}");
        let direct = range_query(&src.inner, q, 120_000, 1_020_000, 60_000, &opts).unwrap();
        assert_eq!(shifted, direct);
        // Samples changed: everything evaluated again.
        src.generation.store(2, SeqCst);
        let before = src.selects.load(SeqCst);
        let after_write = range_query(&src, q, 0, 900_000, 60_000, &opts).unwrap();
        assert_eq!(after_write, first);
        assert_eq!(src.selects.load(SeqCst) - before, cold);
    }
}

#[test]
fn counter_rate_windows_match_the_rate_of_their_samples_exactly() {
    use super::functions::{counter_rate_window, counter_resets, range_function_floats};
    // Resets (including to the same and to a higher-than-zero value), a NaN
    // and repeated values.
    let values = [
        1.0,
        4.0,
        4.0,
        2.0,
        9.5,
        f64::NAN,
        3.0,
        3.0,
        0.0,
        7.25,
        1e12,
        5.0,
        6.0,
    ];
    let pts: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 * 15_000 + (i as i64 % 3) * 700, *v))
        .collect();
    let mut resets = Vec::new();
    counter_resets(&pts, &mut resets);
    assert_eq!(resets, vec![3, 8, 11]);
    for lo in 0..pts.len() {
        for hi in lo..=pts.len() {
            for (name, per_second) in [("rate", true), ("increase", false)] {
                let (start, end) = (pts[lo].0 - 4_000, pts[hi.max(1) - 1].0 + 9_000);
                let fast = counter_rate_window(&pts, (lo, hi), &resets, start, end, per_second);
                let slow = range_function_floats(name, &pts[lo..hi], f64::NAN, start, end);
                assert_eq!(
                    fast.map(f64::to_bits),
                    slow.map(f64::to_bits),
                    "{name} over [{lo}, {hi})"
                );
            }
        }
    }
}

#[test]
fn dashboard_expressions_are_evaluated_a_series_at_a_time() {
    use super::range::streams;
    for (q, want) in [
        ("sum by (job) (rate(http_requests_total[5m]))", true),
        (
            "histogram_quantile(0.99, sum by (le) (rate(req_duration_bucket[5m])))",
            true,
        ),
        (
            r#"sum(rate(x{code=~"5.."}[5m])) / sum(rate(x[5m])) * 100"#,
            true,
        ),
        ("topk(3, max by (job) (max_over_time(up[10m])))", true),
        ("quantile(0.9, up)", false),
        ("up and on() vector(1)", false),
        ("rate(up[5m:1m])", false),
    ] {
        let expr = promql_parser::parser::parse(q).unwrap();
        assert_eq!(streams(&expr), want, "{q}");
    }
}
