//! The service map read from the service-graph and span metrics the
//! collector writes under Grafana Tempo's names
//! (`traces_service_graph_request_total`, `…_failed_total`,
//! `…_server_seconds_bucket`, `traces_spanmetrics_calls_total`), so that the
//! map, the Jaeger dependencies and any dashboard built for Tempo read the
//! same numbers.
//!
//! Counts over a window are exact increases, not PromQL's extrapolated
//! `increase`: per series, the sum of the steps between consecutive totals
//! whose later sample lies in the window (a drop is a restart from zero).
//! The total a window's first step starts from is the series' last sample
//! before the window; the writer forgets a series idle for
//! [`IDLE_EXPIRY_MS`] and starts it again with a zero, so looking that far
//! back always finds it.

use std::collections::{BTreeMap, HashMap};

use periscope_proto::{Labels, SampleValue, label};
use periscope_store::{
    Deadline, LATENCY_BOUNDS_MS, LatencyHistogram, MetricStore, ReadBudget, StoreError, TenantId,
};

/// How long the collector keeps a service-graph series it does not update
/// before it starts it again from zero (the writer's idle expiry).
pub const IDLE_EXPIRY_MS: i64 = 15 * 60 * 1000;

/// The service map of a window: nodes with their traffic, edges with rates and latency.
#[derive(Debug, Default, PartialEq)]
pub struct ServiceMap {
    /// Node name → (kind, requests, errors). Kinds: `service`, `database`,
    /// `messaging`, `external`.
    pub nodes: BTreeMap<String, (&'static str, u64, u64)>,
    /// (client, server) → (requests, failures, server latency).
    pub edges: BTreeMap<(String, String), (u64, u64, LatencyHistogram)>,
}

/// The node kind Tempo's `connection_type` label stands for.
fn node_kind(connection_type: &str) -> &'static str {
    match connection_type {
        "database" => "database",
        "messaging_system" => "messaging",
        "virtual_node" => "external",
        _ => "service",
    }
}

/// The increase of one counter series over the samples at or after
/// `start_ms` (see the module docs).
fn window_increase(samples: &[(i64, SampleValue)], start_ms: i64) -> f64 {
    let mut prev: Option<f64> = None;
    let mut total = 0.0;
    for (t, v) in samples {
        let SampleValue::Float(v) = v else { continue };
        let v = *v;
        if v.is_nan() {
            continue;
        }
        if *t >= start_ms
            && let Some(p) = prev
        {
            total += if v >= p { v - p } else { v };
        }
        prev = Some(v);
    }
    total
}

/// The bucket index of a `le` label value over [`LATENCY_BOUNDS_MS`].
fn bucket_index(le: &str) -> Option<usize> {
    if le == "+Inf" {
        return Some(LATENCY_BOUNDS_MS.len());
    }
    let seconds: f64 = le.parse().ok()?;
    LATENCY_BOUNDS_MS
        .iter()
        .position(|ms| (ms / 1000.0 - seconds).abs() <= 1e-9 * seconds.abs().max(1e-3))
}

fn count(v: f64) -> u64 {
    v.round().max(0.0) as u64
}

/// The service map of `[start_ms, end_ms]` from one tenant's metrics.
#[cfg(test)]
pub fn service_map(
    metrics: &MetricStore,
    tenant: &TenantId,
    start_ms: i64,
    end_ms: i64,
) -> ServiceMap {
    service_map_within(metrics, tenant, start_ms, end_ms, &Deadline::none()).unwrap_or_default()
}

/// [`service_map`], stopping at `deadline` (checked before each file read).
pub fn service_map_within(
    metrics: &MetricStore,
    tenant: &TenantId,
    start_ms: i64,
    end_ms: i64,
    deadline: &Deadline,
) -> Result<ServiceMap, StoreError> {
    let from = start_ms.saturating_sub(IDLE_EXPIRY_MS + 60_000);
    let budget = ReadBudget::new(deadline.clone(), usize::MAX, usize::MAX);
    let read = |name: &str| -> Result<Vec<(Labels, f64)>, StoreError> {
        Ok(metrics
            .select_within(tenant, Some(name), &|_| true, from, end_ms, &budget)?
            .into_iter()
            .map(|(l, s)| (l, window_increase(&s, start_ms)))
            // Series with nothing in the window leave no node or edge.
            .filter(|(_, v)| *v > 0.0)
            .collect())
    };
    let get = |l: &Labels, k: &str| label(l, k).unwrap_or_default().to_owned();
    let mut map = ServiceMap::default();
    let mut kinds: HashMap<String, &'static str> = HashMap::new();
    // A name seen as a service anywhere stays a service node.
    let mut mark = |name: &str, kind: &'static str| {
        let k = kinds.entry(name.to_owned()).or_insert(kind);
        if kind == "service" {
            *k = kind;
        }
    };
    for (metric, failed) in [
        ("traces_service_graph_request_total", false),
        ("traces_service_graph_request_failed_total", true),
    ] {
        for (l, v) in read(metric)? {
            let (client, server) = (get(&l, "client"), get(&l, "server"));
            mark(&client, "service");
            mark(&server, node_kind(&get(&l, "connection_type")));
            let e = map.edges.entry((client, server)).or_default();
            if failed {
                e.1 += count(v);
            } else {
                e.0 += count(v);
            }
        }
    }
    // Cumulative bucket increases per edge, then counts per bucket.
    let mut cumulative: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for (l, v) in read("traces_service_graph_request_server_seconds_bucket")? {
        let Some(i) = label(&l, "le").and_then(bucket_index) else {
            continue;
        };
        let key = (get(&l, "client"), get(&l, "server"));
        let c = cumulative
            .entry(key)
            .or_insert_with(|| vec![0.0; LATENCY_BOUNDS_MS.len() + 1]);
        c[i] += v;
    }
    for (key, c) in cumulative {
        let Some(e) = map.edges.get_mut(&key) else {
            continue;
        };
        let mut below = 0.0;
        let counts = c
            .iter()
            .map(|cum| {
                let n = count(cum - below);
                below = below.max(*cum);
                n
            })
            .collect();
        e.2 = LatencyHistogram { counts, sum_ns: 0 };
    }
    // Services: calls and errors of their server and consumer spans (the
    // requests they handled); virtual nodes: what their callers sent.
    let mut served: HashMap<String, (u64, u64)> = HashMap::new();
    for (l, v) in read("traces_spanmetrics_calls_total")? {
        let service = get(&l, "service");
        mark(&service, "service");
        let s = served.entry(service).or_default();
        if matches!(
            label(&l, "span_kind"),
            Some("SPAN_KIND_SERVER" | "SPAN_KIND_CONSUMER")
        ) {
            s.0 += count(v);
            if label(&l, "status_code") == Some("STATUS_CODE_ERROR") {
                s.1 += count(v);
            }
        }
    }
    for (name, kind) in kinds {
        let (req, err) = if kind == "service" {
            served.get(&name).copied().unwrap_or_default()
        } else {
            map.edges
                .iter()
                .filter(|((_, t), _)| *t == name)
                .fold((0, 0), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.1))
        };
        map.nodes.insert(name, (kind, req, err));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use periscope_proto::{NAME_LABEL, PromBatch, PromSample, normalize_labels};

    use super::*;

    fn sample(name: &str, pairs: &[(&str, &str)], t: i64, v: f64) -> PromSample {
        let mut l: Labels = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.push((NAME_LABEL.to_owned(), name.to_owned()));
        PromSample {
            labels: normalize_labels(l),
            timestamp_ms: t,
            value: SampleValue::Float(v),
        }
    }

    #[test]
    fn increases_are_exact_and_handle_restarts() {
        let s = |v: &[(i64, f64)]| -> Vec<(i64, SampleValue)> {
            v.iter()
                .map(|(t, v)| (*t, SampleValue::Float(*v)))
                .collect()
        };
        // Baseline before the window, two steps inside.
        assert_eq!(
            window_increase(&s(&[(5, 10.0), (15, 12.0), (20, 15.0)]), 10),
            5.0
        );
        // A new series: its zero, then totals.
        assert_eq!(window_increase(&s(&[(11, 0.0), (12, 4.0)]), 10), 4.0);
        // A restart: the total drops and grows from zero again.
        assert_eq!(
            window_increase(&s(&[(5, 100.0), (12, 0.0), (13, 7.0)]), 10),
            7.0
        );
        // Nothing in the window.
        assert_eq!(window_increase(&s(&[(1, 3.0), (2, 9.0)]), 10), 0.0);
        assert_eq!(bucket_index("+Inf"), Some(LATENCY_BOUNDS_MS.len()));
        assert_eq!(bucket_index("0.00025"), Some(0));
        assert_eq!(bucket_index("0.001"), Some(2));
        assert_eq!(bucket_index("0.0003"), None);
    }

    #[test]
    fn map_from_tempo_series() {
        let store = MetricStore::new(Default::default());
        let t = TenantId::default_tenant();
        let web_api = [
            ("client", "web"),
            ("server", "api"),
            ("connection_type", ""),
        ];
        let api_db = [
            ("client", "api"),
            ("server", "postgresql"),
            ("connection_type", "database"),
        ];
        let mut samples = vec![
            // Before the window: a baseline of 10 requests.
            sample("traces_service_graph_request_total", &web_api, 1_000, 10.0),
            sample("traces_service_graph_request_total", &web_api, 61_000, 14.0),
            sample(
                "traces_service_graph_request_failed_total",
                &web_api,
                1_000,
                0.0,
            ),
            sample(
                "traces_service_graph_request_failed_total",
                &web_api,
                61_000,
                1.0,
            ),
            sample("traces_service_graph_request_total", &api_db, 60_999, 0.0),
            sample("traces_service_graph_request_total", &api_db, 61_000, 4.0),
        ];
        // Server latency of web → api: 3 in the 1 ms bucket, 1 at +Inf.
        for (i, bound) in LATENCY_BOUNDS_MS.iter().enumerate() {
            let le = format!("{}", bound / 1000.0);
            let cum = if i >= 2 { 3.0 } else { 0.0 };
            let mut pairs = web_api.to_vec();
            pairs.push(("le", &le));
            samples.push(sample(
                "traces_service_graph_request_server_seconds_bucket",
                &pairs,
                60_999,
                0.0,
            ));
            samples.push(sample(
                "traces_service_graph_request_server_seconds_bucket",
                &pairs,
                61_000,
                cum,
            ));
        }
        let mut pairs = web_api.to_vec();
        pairs.push(("le", "+Inf"));
        samples.push(sample(
            "traces_service_graph_request_server_seconds_bucket",
            &pairs,
            61_000,
            4.0,
        ));
        samples.push(sample(
            "traces_service_graph_request_server_seconds_bucket",
            &pairs,
            60_999,
            0.0,
        ));
        for (status, v) in [("STATUS_CODE_UNSET", 3.0), ("STATUS_CODE_ERROR", 1.0)] {
            let pairs = [
                ("service", "api"),
                ("span_name", "GET /"),
                ("span_kind", "SPAN_KIND_SERVER"),
                ("status_code", status),
            ];
            samples.push(sample(
                "traces_spanmetrics_calls_total",
                &pairs,
                60_999,
                0.0,
            ));
            samples.push(sample("traces_spanmetrics_calls_total", &pairs, 61_000, v));
        }
        store.append(
            &t,
            PromBatch {
                samples,
                metadata: Vec::new(),
                ..Default::default()
            },
        );
        let m = service_map(&store, &t, 30_000, 90_000);
        let edge = &m.edges[&("web".to_owned(), "api".to_owned())];
        assert_eq!((edge.0, edge.1), (4, 1));
        assert_eq!(edge.2.count(), 4);
        assert_eq!(edge.2.counts[2], 3);
        assert_eq!(edge.2.counts[LATENCY_BOUNDS_MS.len()], 1);
        assert_eq!(m.edges[&("api".to_owned(), "postgresql".to_owned())].0, 4);
        assert_eq!(m.nodes["postgresql"], ("database", 4, 0));
        assert_eq!(m.nodes["api"], ("service", 4, 1));
        assert_eq!(m.nodes["web"], ("service", 0, 0));
        // A window after everything is empty.
        assert_eq!(
            service_map(&store, &t, 100_000, 200_000),
            ServiceMap::default()
        );
    }
}
