//! Service-graph and span metrics as Prometheus series under the names
//! Grafana Tempo's metrics-generator uses, so dashboards built for Tempo
//! work unchanged:
//!
//! - `traces_service_graph_request_total{client,server,connection_type}`
//! - `traces_service_graph_request_failed_total{…}`
//! - `traces_service_graph_request_server_seconds_{bucket,sum,count}{…}`
//! - `traces_spanmetrics_calls_total{service,span_name,span_kind,status_code}`
//! - `traces_spanmetrics_latency_{bucket,sum,count}{service,span_name,span_kind}`
//!
//! They are counters: each flush of written traces adds its edge and
//! operation rows to running totals and appends the totals, stamped with the
//! flush time. The totals live in memory; after a restart they start again
//! at zero, which PromQL's counter functions read as a reset.
//!
//! A new series is written with a zero a millisecond before its first total,
//! so that its first increment is an increase like any other (PromQL's
//! `increase` needs two samples). A series not updated for
//! [`IDLE_EXPIRY_MS`] is forgotten and starts again from zero: a reader that
//! looks [`IDLE_EXPIRY_MS`] back from a window's start therefore always finds
//! the total each increment in the window started from.

use std::collections::HashMap;

use periscope_proto::{Labels, NAME_LABEL, PromBatch, PromSample, SampleValue, normalize_labels};
use periscope_store::{EdgeRow, LATENCY_BOUNDS_MS, LatencyHistogram, OperationRow, TenantId};

/// A series not updated for this long is forgotten (as Tempo's
/// metrics-generator drops stale series); it starts again from zero.
pub const IDLE_EXPIRY_MS: i64 = 15 * 60 * 1000;

/// Running totals per tenant and series, with when each was last updated.
#[derive(Default)]
pub struct TempoMetrics {
    totals: HashMap<(TenantId, Labels), (f64, i64)>,
    /// Series created by the current `record` call.
    created: Vec<Labels>,
    now_ms: i64,
}

fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.push((NAME_LABEL.to_owned(), name.to_owned()));
    normalize_labels(l)
}

/// Tempo's `connection_type` for the kind of the server node.
fn connection_type(server_kind: &str) -> &'static str {
    match server_kind {
        "database" => "database",
        "messaging" => "messaging_system",
        "external" => "virtual_node",
        _ => "",
    }
}

fn span_kind(kind: &str) -> String {
    format!("SPAN_KIND_{}", kind.to_ascii_uppercase())
}

/// `le` as Prometheus writes it.
fn le(bound_s: f64) -> String {
    let s = format!("{bound_s}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

impl TempoMetrics {
    fn add(&mut self, tenant: &TenantId, l: Labels, v: f64, out: &mut Vec<(Labels, f64)>) {
        let now = self.now_ms;
        let entry = self
            .totals
            .entry((tenant.clone(), l.clone()))
            .or_insert_with(|| {
                self.created.push(l.clone());
                (0.0, now)
            });
        entry.0 += v;
        entry.1 = now;
        out.push((l, entry.0));
    }

    fn histogram(
        &mut self,
        tenant: &TenantId,
        family: &str,
        base: &[(&str, &str)],
        h: &LatencyHistogram,
        out: &mut Vec<(Labels, f64)>,
    ) {
        let mut cumulative = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let bound = match LATENCY_BOUNDS_MS.get(i) {
                Some(ms) => le(ms / 1000.0),
                None => "+Inf".to_owned(),
            };
            let mut pairs = base.to_vec();
            pairs.push(("le", &bound));
            let l = labels(&format!("{family}_bucket"), &pairs);
            self.add(tenant, l, cumulative as f64, out);
        }
        self.add(
            tenant,
            labels(&format!("{family}_sum"), base),
            h.sum_ns as f64 / 1e9,
            out,
        );
        self.add(
            tenant,
            labels(&format!("{family}_count"), base),
            h.count() as f64,
            out,
        );
    }

    /// Adds one tenant's rows of a flush; returns the updated series at `now_ms`.
    pub fn record(
        &mut self,
        tenant: &TenantId,
        edges: &[EdgeRow],
        ops: &[OperationRow],
        now_ms: i64,
    ) -> PromBatch {
        self.now_ms = now_ms;
        self.created.clear();
        self.totals
            .retain(|_, (_, updated)| now_ms - *updated < IDLE_EXPIRY_MS);
        let mut out = Vec::new();
        for e in edges {
            let ct = connection_type(e.server_kind);
            let base = [
                ("client", e.client.as_str()),
                ("server", e.server.as_str()),
                ("connection_type", ct),
            ];
            self.add(
                tenant,
                labels("traces_service_graph_request_total", &base),
                e.requests as f64,
                &mut out,
            );
            self.add(
                tenant,
                labels("traces_service_graph_request_failed_total", &base),
                e.failures as f64,
                &mut out,
            );
            self.histogram(
                tenant,
                "traces_service_graph_request_server_seconds",
                &base,
                &e.latency,
                &mut out,
            );
        }
        for o in ops {
            let kind = span_kind(o.kind);
            let base = [
                ("service", o.service.as_str()),
                ("span_name", o.operation.as_str()),
                ("span_kind", kind.as_str()),
            ];
            let ok = [&base[..], &[("status_code", "STATUS_CODE_UNSET")]].concat();
            let err = [&base[..], &[("status_code", "STATUS_CODE_ERROR")]].concat();
            self.add(
                tenant,
                labels("traces_spanmetrics_calls_total", &ok),
                (o.calls - o.errors) as f64,
                &mut out,
            );
            self.add(
                tenant,
                labels("traces_spanmetrics_calls_total", &err),
                o.errors as f64,
                &mut out,
            );
            self.histogram(
                tenant,
                "traces_spanmetrics_latency",
                &base,
                &o.duration,
                &mut out,
            );
        }
        // A series updated several times in one flush keeps its last total.
        let mut last: HashMap<Labels, f64> = HashMap::new();
        for (l, v) in out {
            last.insert(l, v);
        }
        let zeros = self.created.drain(..).map(|labels| PromSample {
            labels,
            timestamp_ms: now_ms - 1,
            value: SampleValue::Float(0.0),
        });
        PromBatch {
            samples: zeros
                .chain(last.into_iter().map(|(labels, v)| PromSample {
                    labels,
                    timestamp_ms: now_ms,
                    value: SampleValue::Float(v),
                }))
                .collect(),
            ref_samples: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use periscope_proto::label;

    use super::*;

    #[test]
    fn counters_accumulate_across_flushes() {
        let t = TenantId::default_tenant();
        let mut m = TempoMetrics::default();
        let mut h = LatencyHistogram::default();
        h.observe(3_000_000);
        let edge = EdgeRow {
            minute_ns: 0,
            client: "web".into(),
            server: "postgresql".into(),
            server_kind: "database",
            requests: 2,
            failures: 1,
            latency: h,
        };
        m.record(&t, std::slice::from_ref(&edge), &[], 1000);
        let b = m.record(&t, &[edge], &[], 2000);
        let total = b
            .samples
            .iter()
            .find(|s| label(&s.labels, NAME_LABEL) == Some("traces_service_graph_request_total"))
            .unwrap();
        assert_eq!(total.value, SampleValue::Float(4.0));
        assert_eq!(label(&total.labels, "connection_type"), Some("database"));
        let inf = b
            .samples
            .iter()
            .find(|s| label(&s.labels, "le") == Some("+Inf"))
            .unwrap();
        assert_eq!(inf.value, SampleValue::Float(2.0));
        assert_eq!(le(0.004), "0.004");
        assert_eq!(le(1.0), "1.0");
    }

    #[test]
    fn new_series_start_from_a_zero_and_idle_ones_expire() {
        let t = TenantId::default_tenant();
        let mut m = TempoMetrics::default();
        let edge = EdgeRow {
            minute_ns: 0,
            client: "web".into(),
            server: "api".into(),
            server_kind: "service",
            requests: 3,
            failures: 0,
            latency: LatencyHistogram::default(),
        };
        let total = |b: &PromBatch| -> Vec<(i64, SampleValue)> {
            let mut v: Vec<_> = b
                .samples
                .iter()
                .filter(|s| {
                    label(&s.labels, NAME_LABEL) == Some("traces_service_graph_request_total")
                })
                .map(|s| (s.timestamp_ms, s.value.clone()))
                .collect();
            v.sort_by_key(|(t, _)| *t);
            v
        };
        let b = m.record(&t, std::slice::from_ref(&edge), &[], 10_000);
        assert_eq!(
            total(&b),
            vec![
                (9_999, SampleValue::Float(0.0)),
                (10_000, SampleValue::Float(3.0))
            ]
        );
        // Updated again within the expiry: no zero, the total grows.
        let b = m.record(&t, std::slice::from_ref(&edge), &[], 20_000);
        assert_eq!(total(&b), vec![(20_000, SampleValue::Float(6.0))]);
        // Idle longer than the expiry: forgotten, starts again from zero.
        let later = 20_000 + IDLE_EXPIRY_MS;
        let b = m.record(&t, std::slice::from_ref(&edge), &[], later);
        assert_eq!(
            total(&b),
            vec![
                (later - 1, SampleValue::Float(0.0)),
                (later, SampleValue::Float(3.0))
            ]
        );
    }
}
