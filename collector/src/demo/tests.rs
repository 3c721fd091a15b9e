//! Tests of the simulated shop: trace shapes, errors, the service graph the
//! traffic implies, correlation of logs, metrics, and the pod log files.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clap::Parser;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use periscope_proto::otlp::metrics::v1::metric;
use periscope_proto::{
    DeltaToCumulative, ExportRequest, Limits, find_str, flatten_traces, label, otlp_to_prometheus,
    validate,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::generator::Generator;
use super::pods::{PodLogs, cri_line};
use super::shop::{Shop, Svc};
use super::trace::{SimSpan, SimTrace};
use super::*;
use crate::config::{Cli, Command};

const NOW: u64 = 1_795_000_000_000_000_000;

fn generator(seed: u64) -> Generator {
    let mut rng = SmallRng::seed_from_u64(seed);
    let shop = Shop::new(&mut rng);
    Generator::new(rng, shop, 10.0)
}

/// `n` requests, one every 100 ms, the last ending at `NOW`.
fn traffic(g: &mut Generator, n: u64) -> Vec<SimTrace> {
    (0..n)
        .map(|i| g.request(NOW - (n - i) * 100_000_000))
        .collect()
}

fn has_status(t: &SimTrace, code: StatusCode) -> bool {
    t.spans.iter().any(|s| {
        s.span
            .status
            .as_ref()
            .is_some_and(|st| st.code == code as i32)
    })
}

#[test]
fn every_parent_exists_ids_are_unique_and_children_nest() {
    let mut g = generator(1);
    let traces = traffic(&mut g, 1000);
    let mut trace_ids = HashSet::new();
    let mut span_ids = HashSet::new();
    for t in &traces {
        let tid = &t.spans[0].span.trace_id;
        assert_eq!(tid.len(), 16);
        assert!(trace_ids.insert(tid.clone()), "trace id repeated");
        let by_id: HashMap<&[u8], &SimSpan> = t
            .spans
            .iter()
            .map(|s| (s.span.span_id.as_slice(), s))
            .collect();
        let roots: Vec<_> = t
            .spans
            .iter()
            .filter(|s| s.span.parent_span_id.is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "one root per trace");
        assert_eq!(roots[0].svc, Svc::Frontend);
        assert_eq!(roots[0].span.kind, SpanKind::Server as i32);
        for s in &t.spans {
            assert_eq!(&s.span.trace_id, tid);
            assert_eq!(s.span.span_id.len(), 8);
            assert!(span_ids.insert(s.span.span_id.clone()), "span id repeated");
            assert!(s.span.end_time_unix_nano >= s.span.start_time_unix_nano);
            if s.span.parent_span_id.is_empty() {
                continue;
            }
            let parent = by_id
                .get(s.span.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("parent of {} missing", s.span.name));
            assert!(s.span.start_time_unix_nano >= parent.span.start_time_unix_nano);
            // Only a consumer outlives its (producer) parent.
            if s.span.kind != SpanKind::Consumer as i32 {
                assert!(
                    s.span.end_time_unix_nano <= parent.span.end_time_unix_nano,
                    "{} ends after its parent {}",
                    s.span.name,
                    parent.span.name
                );
            }
            // A server span is called by a client span of another service.
            if s.span.kind == SpanKind::Server as i32 {
                assert_eq!(parent.span.kind, SpanKind::Client as i32);
                assert_ne!(parent.svc, s.svc);
            }
            if s.span.kind == SpanKind::Consumer as i32 {
                assert_eq!(parent.span.kind, SpanKind::Producer as i32);
                assert_eq!(s.span.links.len(), 1);
                assert_eq!(s.span.links[0].span_id, parent.span.span_id);
            }
        }
    }
    assert!(
        traces.iter().any(|t| t.spans.len() >= 15),
        "checkouts are deep"
    );
}

#[test]
fn a_trace_ends_when_asked() {
    let mut g = generator(2);
    for (i, t) in traffic(&mut g, 50).iter().enumerate() {
        let end = t.spans.iter().map(|s| s.span.end_time_unix_nano).max();
        let start = t.spans.iter().map(|s| s.span.start_time_unix_nano).min();
        assert_eq!(end, Some(NOW - (50 - i as u64) * 100_000_000));
        assert!(start < end);
        for l in &t.logs {
            assert!(start <= Some(l.record.time_unix_nano) && Some(l.record.time_unix_nano) <= end);
        }
    }
}

#[test]
fn errors_exceptions_and_slow_paths_occur_but_are_the_exception() {
    let mut g = generator(3);
    let traces = traffic(&mut g, 2000);
    let failed = traces
        .iter()
        .filter(|t| has_status(t, StatusCode::Error))
        .count();
    assert!(
        (40..500).contains(&failed),
        "{failed} of 2000 traces with an error"
    );
    let statuses: HashSet<u16> = traces
        .iter()
        .flat_map(|t| &t.spans)
        .filter_map(|s| s.red.map(|r| r.status))
        .collect();
    for want in [200, 201, 204, 402, 404, 500, 502, 503] {
        assert!(statuses.contains(&want), "no {want} in {statuses:?}");
    }
    let exceptions: HashSet<String> = traces
        .iter()
        .flat_map(|t| &t.spans)
        .flat_map(|s| &s.span.events)
        .filter(|e| e.name == "exception")
        .filter_map(|e| {
            e.attributes
                .iter()
                .find(|kv| kv.key == "exception.type")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
        })
        .collect();
    assert!(
        exceptions.len() >= 3,
        "exception types seen: {exceptions:?}"
    );
    // A server span answering 5xx is an error; one answering 4xx is not.
    for s in traces.iter().flat_map(|t| &t.spans) {
        if let Some(red) = s.red {
            let is_error = s
                .span
                .status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32);
            assert_eq!(
                is_error,
                red.status >= 500,
                "{} {}",
                s.span.name,
                red.status
            );
        }
    }
    let slow = traces
        .iter()
        .filter(|t| {
            let start = t.spans.iter().map(|s| s.span.start_time_unix_nano).min();
            let end = t.spans.iter().map(|s| s.span.end_time_unix_nano).max();
            end.zip(start).is_some_and(|(e, s)| e - s > 800_000_000)
        })
        .count();
    assert!((10..400).contains(&slow), "{slow} slow traces");
}

#[test]
fn spans_imply_the_shops_service_graph_and_virtual_nodes() {
    let mut g = generator(4);
    let traces = traffic(&mut g, 600);
    let spans = flatten_traces(g.traces_request(&traces));
    let mut edges: HashSet<(String, String)> = HashSet::new();
    let mut virtual_nodes: HashSet<(String, String)> = HashSet::new();
    let by_id: HashMap<([u8; 16], [u8; 8]), &periscope_proto::Span> =
        spans.iter().map(|s| ((s.trace_id, s.span_id), s)).collect();
    let parents: HashSet<([u8; 16], [u8; 8])> = spans
        .iter()
        .filter_map(|s| s.parent_span_id.map(|p| (s.trace_id, p)))
        .collect();
    for s in &spans {
        if let Some(p) = s.parent_span_id {
            let parent = by_id[&(s.trace_id, p)];
            if parent.service() != s.service() {
                edges.insert((parent.service().into(), s.service().into()));
            }
        }
        let leaf = !parents.contains(&(s.trace_id, s.span_id));
        if leaf
            && matches!(
                s.kind,
                periscope_proto::SpanKind::Client | periscope_proto::SpanKind::Producer
            )
        {
            let a = &s.attributes;
            let peer = find_str(a, "db.system")
                .or_else(|| find_str(a, "messaging.destination.name"))
                .or_else(|| find_str(a, "server.address"))
                .unwrap_or("?");
            virtual_nodes.insert((s.service().into(), peer.into()));
        }
    }
    for (from, to) in [
        ("frontend", "cart"),
        ("frontend", "checkout"),
        ("checkout", "payment"),
        ("checkout", "shipping"),
    ] {
        assert!(
            edges.contains(&(from.into(), to.into())),
            "no edge {from}→{to}: {edges:?}"
        );
    }
    let want: HashSet<(String, String)> = [
        ("frontend", "redis"),
        ("frontend", "postgresql"),
        ("cart", "redis"),
        ("checkout", "postgresql"),
        ("payment", "postgresql"),
        ("payment", "psp.example.net"),
        ("shipping", "postgresql"),
        ("shipping", "shipments"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    // Calls between services always reach the callee: no service shows up
    // as a virtual node.
    assert_eq!(virtual_nodes, want);
    // Resource attributes survive the trip.
    let s = &spans[0];
    for key in [
        "service.version",
        "service.instance.id",
        "deployment.environment",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.node.name",
    ] {
        assert!(
            find_str(&s.resource.attributes, key).is_some(),
            "resource lacks {key}"
        );
    }
}

#[test]
fn http_and_db_spans_carry_their_semantic_attributes() {
    let mut g = generator(5);
    let traces = traffic(&mut g, 300);
    let spans = flatten_traces(g.traces_request(&traces));
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == periscope_proto::SpanKind::Server)
        .collect();
    assert!(!servers.is_empty());
    for s in servers {
        for key in [
            "http.request.method",
            "http.route",
            "url.path",
            "server.address",
        ] {
            assert!(
                find_str(&s.attributes, key).is_some(),
                "{} lacks {key}",
                s.name
            );
        }
    }
    let pg: Vec<_> = spans
        .iter()
        .filter(|s| find_str(&s.attributes, "db.system") == Some("postgresql"))
        .collect();
    assert!(!pg.is_empty());
    for s in pg {
        for key in ["db.statement", "db.query.text", "db.name", "db.namespace"] {
            assert!(
                find_str(&s.attributes, key).is_some(),
                "{} lacks {key}",
                s.name
            );
        }
    }
    assert!(spans.iter().any(|s| {
        s.kind == periscope_proto::SpanKind::Producer
            && find_str(&s.attributes, "messaging.system") == Some("kafka")
            && find_str(&s.attributes, "messaging.destination.name") == Some("orders")
    }));
    assert!(
        spans
            .iter()
            .any(|s| s.kind == periscope_proto::SpanKind::Consumer && s.service() == "shipping")
    );
}

#[test]
fn logs_point_at_spans_of_their_trace() {
    let mut g = generator(6);
    let traces = traffic(&mut g, 1000);
    let mut severities = HashSet::new();
    let mut with_attributes = 0;
    for t in &traces {
        let spans: HashSet<&[u8]> = t.spans.iter().map(|s| s.span.span_id.as_slice()).collect();
        assert!(!t.logs.is_empty(), "every request writes an access log");
        for l in &t.logs {
            assert_eq!(l.record.trace_id, t.spans[0].span.trace_id);
            assert!(spans.contains(l.record.span_id.as_slice()));
            severities.insert(l.record.severity_number);
            with_attributes += usize::from(!l.record.attributes.is_empty());
        }
    }
    for s in [
        SeverityNumber::Debug,
        SeverityNumber::Info,
        SeverityNumber::Warn,
        SeverityNumber::Error,
    ] {
        assert!(severities.contains(&(s as i32)), "no {s:?} log");
    }
    assert!(with_attributes > 1000);
}

#[test]
fn requests_pass_the_collectors_validation() {
    let mut g = generator(7);
    let traces = traffic(&mut g, 200);
    let limits = Limits {
        max_depth: 8,
        min_timestamp_ns: (NOW - 3_600_000_000_000) as i64,
        max_timestamp_ns: (NOW + 3_600_000_000_000) as i64,
    };
    let spans = g.traces_request(&traces);
    let n_spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    let v = validate(ExportRequest::Traces(spans), &limits);
    assert_eq!(v.rejected, 0, "{}", v.error_message);
    assert_eq!(v.request.record_count(), n_spans);
    let v = validate(ExportRequest::Logs(g.logs_request(&traces)), &limits);
    assert_eq!(v.rejected, 0, "{}", v.error_message);
    // Metric points are stamped with the wall clock.
    let now = periscope_proto::unix_now_ns();
    let limits = Limits {
        min_timestamp_ns: now - 3_600_000_000_000,
        max_timestamp_ns: now + 3_600_000_000_000,
        ..limits
    };
    let v = validate(
        ExportRequest::Metrics(g.metrics_request(Duration::from_secs(10))),
        &limits,
    );
    assert_eq!(v.rejected, 0, "{}", v.error_message);
}

#[test]
fn metrics_are_cumulative_consistent_and_named_as_prometheus_expects() {
    let mut g = generator(8);
    let first = traffic(&mut g, 300);
    let m1 = g.metrics_request(Duration::from_secs(30));
    traffic(&mut g, 300);
    let m2 = g.metrics_request(Duration::from_secs(30));
    let count_of = |req: &periscope_proto::otlp::ExportMetricsServiceRequest, svc: &str| -> u64 {
        req.resource_metrics
            .iter()
            .filter(|rm| {
                rm.resource
                    .as_ref()
                    .is_some_and(|r| r.attributes.iter().any(|kv| kv.key == "service.name" && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(s)) if s == svc)))
            })
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|m| m.name == "http.server.request.duration")
            .map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h
                    .data_points
                    .iter()
                    .map(|p| {
                        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
                        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                        p.count
                    })
                    .sum::<u64>(),
                _ => panic!("duration is not a histogram"),
            })
            .sum()
    };
    // Every request enters through the frontend, once.
    assert_eq!(count_of(&m1, "frontend"), first.len() as u64);
    assert_eq!(count_of(&m2, "frontend"), 600);
    assert!(count_of(&m2, "payment") > count_of(&m1, "payment"));

    let batch = otlp_to_prometheus(&m2, &mut DeltaToCumulative::default());
    let names: HashSet<(&str, &str)> = batch
        .samples
        .iter()
        .filter_map(|s| Some((label(&s.labels, "__name__")?, label(&s.labels, "job")?)))
        .collect();
    for svc in ["frontend", "cart", "checkout", "payment", "shipping"] {
        for name in [
            "http_server_requests_total",
            "http_server_request_duration_seconds_bucket",
            "http_server_active_requests",
            "process_memory_usage_bytes",
        ] {
            assert!(names.contains(&(name, svc)), "no {name} for {svc}");
        }
    }
    assert!(names.contains(&("shop_orders_total", "checkout")));
}

#[test]
fn the_same_seed_makes_the_same_traffic() {
    let ids = |seed| {
        let mut g = generator(seed);
        traffic(&mut g, 20)
            .iter()
            .map(|t| t.spans[0].span.trace_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(9), ids(9));
    assert_ne!(ids(9), ids(10));
}

#[test]
fn pod_logs_are_cri_lines_in_the_kubelet_layout_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    let shop = Shop::new(&mut rng);
    let mut g = Generator::new(rng, shop.clone(), 10.0);
    let root = dir.path().join("pods");
    // Leftovers of an earlier run are removed.
    std::fs::create_dir_all(root.join("shop_old-pod_1234/old")).unwrap();
    let mut pods = PodLogs::new(root.clone(), &shop).rotate_at(4096);
    pods.prepare().unwrap();
    assert!(!root.join("shop_old-pod_1234").exists());
    let traces = traffic(&mut g, 400);
    let lines: Vec<_> = traces.iter().flat_map(|t| &t.logs).map(cri_line).collect();
    for l in &lines {
        let mut parts = l.text.splitn(4, ' ');
        let ts = parts.next().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
        assert!(matches!(parts.next(), Some("stdout" | "stderr")));
        assert_eq!(parts.next(), Some("F"));
        let msg = parts.next().unwrap();
        assert!(msg.starts_with("level=") && msg.contains(" trace_id=") && msg.ends_with('\n'));
        assert_eq!(msg.matches('\n').count(), 1, "one line: {msg:?}");
    }
    for chunk in lines.chunks(50) {
        pods.append(chunk).unwrap();
    }
    let pod = shop.pod(Svc::Checkout);
    let container = root
        .join(format!("shop_{}_{}", pod.name, pod.uid))
        .join("checkout");
    let current = std::fs::read_to_string(container.join("0.log")).unwrap();
    assert!(!current.is_empty() && current.len() <= 4096);
    let files: Vec<_> = std::fs::read_dir(&container)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "0.log and one rotated file: {files:?}");
    assert!(files.iter().any(|f| f.starts_with("0.log.")));
    assert_eq!(pods.glob(), format!("{}/*/*/*.log", root.display()));
}

#[test]
fn demo_takes_the_flags_of_serve_and_checks_its_own() {
    let cli = Cli::try_parse_from([
        "periscope",
        "demo",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        "/tmp/x",
        "--demo-rate",
        "5",
        "--with-agent",
    ])
    .unwrap();
    let Command::Demo(d) = cli.command else {
        panic!("not demo")
    };
    assert!(d.with_agent);
    assert_eq!(d.demo_rate, 5.0);
    d.validate().unwrap();
    let cfg = d.serve.resolve().unwrap();
    assert_eq!(cfg.http_addr.port(), 0);
    assert_eq!(cfg.otlp_grpc_addr.port(), 4317);
    for bad in ["0", "-1", "1001", "NaN"] {
        let flag = format!("--demo-rate={bad}");
        let cli = Cli::try_parse_from(["periscope", "demo", flag.as_str()]).unwrap();
        let Command::Demo(d) = cli.command else {
            panic!("not demo")
        };
        assert!(d.validate().is_err(), "{bad}");
    }
}

#[test]
fn clients_reach_unspecified_listeners_through_loopback() {
    for (bound, want) in [
        ("0.0.0.0:4317", "127.0.0.1:4317"),
        ("[::]:8080", "[::1]:8080"),
        ("10.1.2.3:9", "10.1.2.3:9"),
    ] {
        assert_eq!(reachable(bound.parse().unwrap()).to_string(), want);
    }
}
