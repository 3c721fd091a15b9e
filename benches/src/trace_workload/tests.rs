use std::collections::{HashMap, HashSet};

use periscope_proto::otlp::common::v1::any_value::Value;
use periscope_proto::otlp::trace::v1::span::SpanKind;
use periscope_proto::otlp::trace::v1::status::StatusCode;
use prost::Message;

use super::*;
use crate::SERVICES;
use crate::workload::unix_nanos;

/// A span with the service of its resource.
struct Flat<'a> {
    service: &'a str,
    span: &'a Span,
}

fn flat(req: &ExportTraceServiceRequest) -> Vec<Flat<'_>> {
    req.resource_spans
        .iter()
        .flat_map(|r| {
            let service = r
                .resource
                .as_ref()
                .and_then(|res| res.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.as_str()),
                    _ => None,
                })
                .unwrap();
            r.scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .map(move |span| Flat { service, span })
        })
        .collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn kind(span: &Span) -> SpanKind {
    SpanKind::try_from(span.kind).unwrap()
}

#[test]
fn trace_services_extend_the_log_services() {
    assert_eq!(TRACE_SERVICES[..SERVICES.len()], SERVICES);
    assert_eq!(
        TRACE_SERVICES.iter().collect::<HashSet<_>>().len(),
        TRACE_SERVICES.len()
    );
}

#[test]
fn deterministic_for_a_seed_and_run() {
    let a = TraceWorkload::new(1, "lgtest").request(300, 1_000_000_000_000);
    let b = TraceWorkload::new(1, "lgtest").request(300, 1_000_000_000_000);
    assert_eq!(a, b);
    let c = TraceWorkload::new(1, "lgother").request(300, 1_000_000_000_000);
    assert_ne!(a.1[0].trace_id, c.1[0].trace_id, "the run id salts the ids");
}

#[test]
fn requests_hold_whole_traces_near_the_batch() {
    let mut w = TraceWorkload::new(5, "lgtest");
    for batch in [1, 10, 100, 500, 2000] {
        for _ in 0..20 {
            let (req, traces) = w.request(batch, unix_nanos());
            let spans: usize = traces.iter().map(|t| t.spans as usize).sum();
            assert_eq!(flat(&req).len(), spans);
            assert!(!traces.is_empty());
            if batch > *TRACE_SPANS.end() {
                assert!(
                    spans + MEAN_SPANS / 2 >= batch && spans < batch + *TRACE_SPANS.end(),
                    "{spans} spans for a batch of {batch}"
                );
            } else if batch <= MEAN_SPANS / 2 {
                assert_eq!(traces.len(), 1, "one trace for a batch of {batch}");
            }
        }
    }
}

/// Every trace of many requests is a well-formed tree with realistic timing.
#[test]
fn traces_are_trees_nested_in_time() {
    let mut w = TraceWorkload::new(42, "lgtree");
    let now = unix_nanos();
    let mut sizes = HashSet::new();
    let mut service_counts = HashSet::new();
    for _ in 0..40 {
        let (req, traces) = w.request(500, now);
        let spans = flat(&req);
        assert_eq!(
            req.resource_spans.len(),
            spans
                .iter()
                .map(|s| s.service)
                .collect::<HashSet<_>>()
                .len(),
            "one resource per service"
        );
        for trace in &traces {
            let of_trace: Vec<&Flat> = spans
                .iter()
                .filter(|s| s.span.trace_id == trace.trace_id)
                .collect();
            check_trace(&of_trace, trace, now);
            sizes.insert(of_trace.len());
            service_counts.insert(
                of_trace
                    .iter()
                    .map(|s| s.service)
                    .collect::<HashSet<_>>()
                    .len(),
            );
        }
    }
    assert_eq!(sizes.iter().min(), Some(TRACE_SPANS.start()));
    assert_eq!(sizes.iter().max(), Some(TRACE_SPANS.end()));
    assert_eq!(
        service_counts,
        TRACE_SERVICE_COUNT.collect::<HashSet<_>>(),
        "every service count occurs"
    );
}

fn check_trace(spans: &[&Flat], trace: &TraceRef, now: u64) {
    assert_eq!(spans.len(), trace.spans as usize);
    assert!(TRACE_SPANS.contains(&spans.len()));
    let services: HashSet<&str> = spans.iter().map(|s| s.service).collect();
    assert!(
        TRACE_SERVICE_COUNT.contains(&services.len()),
        "{} services",
        services.len()
    );
    assert!(services.iter().all(|s| TRACE_SERVICES.contains(s)));

    let by_id: HashMap<&[u8], &Flat> = spans
        .iter()
        .map(|s| (s.span.span_id.as_slice(), *s))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are distinct");
    assert!(
        spans
            .iter()
            .all(|s| s.span.span_id.len() == 8 && s.span.span_id != [0; 8])
    );

    let roots: Vec<&&Flat> = spans
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "exactly one root");
    let root = roots[0];
    assert_eq!(root.service, "frontend");
    assert_eq!(kind(root.span), SpanKind::Server);
    for key in [
        "http.request.method",
        "http.route",
        "url.path",
        "http.response.status_code",
    ] {
        assert!(attr(root.span, key).is_some(), "root without {key}");
    }
    assert!(root.span.end_time_unix_nano <= now);
    assert!(root.span.end_time_unix_nano > now - 100_000_000);

    let mut children: HashMap<&[u8], Vec<&Flat>> = HashMap::new();
    for s in spans {
        let span = s.span;
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
        if span.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id
            .get(span.parent_span_id.as_slice())
            .expect("the parent is in the trace");
        assert!(
            parent.span.start_time_unix_nano <= span.start_time_unix_nano
                && span.end_time_unix_nano <= parent.span.end_time_unix_nano,
            "{} outside its parent {}",
            span.name,
            parent.span.name
        );
        children
            .entry(span.parent_span_id.as_slice())
            .or_default()
            .push(s);
    }
    // Every span reaches the root, so with one parent each they form a tree.
    for s in spans {
        let mut at = s.span;
        for _ in 0..spans.len() {
            if at.parent_span_id.is_empty() {
                break;
            }
            at = by_id[at.parent_span_id.as_slice()].span;
        }
        assert!(
            at.parent_span_id.is_empty(),
            "{} is in a cycle",
            s.span.name
        );
    }

    for s in spans {
        let kids = children
            .get(s.span.span_id.as_slice())
            .map_or(&[][..], |k| k);
        match kind(s.span) {
            SpanKind::Client if attr(s.span, "db.system").is_some() => {
                assert!(kids.is_empty(), "a query has no children");
                assert!(attr(s.span, "db.namespace").is_some());
                assert!(attr(s.span, "server.address").is_some());
            }
            SpanKind::Client => {
                assert_eq!(kids.len(), 1, "a call has one child");
                let server = kids[0];
                assert_eq!(kind(server.span), SpanKind::Server);
                assert_ne!(server.service, s.service, "a call crosses services");
                for key in [
                    "rpc.service",
                    "rpc.method",
                    "http.request.method",
                    "http.route",
                ] {
                    assert_eq!(attr(s.span, key), attr(server.span, key), "{key}");
                }
            }
            SpanKind::Producer => {
                assert!(kids.is_empty());
                assert!(attr(s.span, "messaging.destination.name").is_some());
            }
            _ => {}
        }
        assert!(
            matches!(attr(s.span, "loadgen.run"), Some(Value::StringValue(r)) if r == "lgtree")
        );
    }
}

#[test]
fn mix_of_spans() {
    let mut w = TraceWorkload::new(7, "lgmix");
    let (req, traces) = w.request(50_000, unix_nanos());
    let spans = flat(&req);
    let total = spans.len() as f64;
    let share =
        |f: &dyn Fn(&Span) -> bool| spans.iter().filter(|s| f(s.span)).count() as f64 / total;

    let errors = share(&|s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.code == StatusCode::Error as i32)
    });
    assert!((0.012..0.03).contains(&errors), "error share {errors}");
    let exceptions = share(&|s| s.events.iter().any(|e| e.name == "exception"));
    assert!(
        exceptions > 0.0 && exceptions < errors,
        "exception share {exceptions}"
    );
    let with_events = share(&|s| !s.events.is_empty());
    assert!(
        (0.03..0.1).contains(&with_events),
        "event share {with_events}"
    );
    let producers = share(&|s| kind(s) == SpanKind::Producer);
    assert!(
        (0.01..0.1).contains(&producers),
        "producer share {producers}"
    );
    for system in ["postgresql", "redis"] {
        let db =
            share(&|s| matches!(attr(s, "db.system"), Some(Value::StringValue(v)) if v == system));
        assert!(db > 0.05, "{system} share {db}");
    }

    let attributes = spans.iter().map(|s| s.span.attributes.len()).sum::<usize>() as f64 / total;
    assert!(
        (8.5..11.5).contains(&attributes),
        "{attributes} attributes per span"
    );
    let kinds: HashSet<_> = spans
        .iter()
        .flat_map(|s| &s.span.attributes)
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(_) => Some("string"),
            Value::IntValue(_) => Some("int"),
            Value::BoolValue(_) => Some("bool"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds.len(), 3, "strings, ints and bools");

    let mean_spans = total / traces.len() as f64;
    assert!(
        (27.0..33.0).contains(&mean_spans),
        "{mean_spans} spans per trace"
    );
    let bytes_per_span = req.encoded_len() as f64 / total;
    assert!(
        (250.0..700.0).contains(&bytes_per_span),
        "{bytes_per_span} protobuf bytes per span"
    );
}

#[test]
fn resources_describe_the_pod() {
    let (req, _) = TraceWorkload::new(9, "lgres").request(500, unix_nanos());
    for r in &req.resource_spans {
        let keys: HashSet<&str> = r
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        for key in [
            "service.name",
            "service.version",
            "service.instance.id",
            "host.name",
            "k8s.namespace.name",
            "k8s.pod.name",
        ] {
            assert!(keys.contains(key), "resource without {key}");
        }
    }
}
