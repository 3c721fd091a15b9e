//! The service graph and RED metrics of written traces.
//!
//! The assembler hands over whole trace fragments, so pairing needs no
//! waiting: an edge `client service → server service` for every span whose
//! parent belongs to another service (the parent may sit in an earlier,
//! already written fragment: [`RecentSpans`] remembers those for a while);
//! a CLIENT or PRODUCER span without a child that names its peer gives an
//! edge to a virtual node (database, messaging, external). Rows are stamped
//! with the span's minute, not the time of processing.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet};
use periscope_proto::{Span, SpanKind, SpanResource, find_str};
use periscope_store::{EdgeRow, LatencyHistogram, OperationRow, TenantId, minute_of};

type TraceKey = (TenantId, [u8; 16]);
/// The resource (hence service) of each span of a trace.
type SpanResources = HashMap<[u8; 8], Arc<SpanResource>>;

/// Services of spans of recently written traces, to pair late spans with
/// their parents. Bounded by a number of spans; the oldest go first.
pub struct RecentSpans {
    /// Per trace: how many entries of `order` refer to it, and its spans.
    map: HashMap<TraceKey, (usize, SpanResources)>,
    order: VecDeque<(TraceKey, usize)>,
    spans: usize,
    capacity: usize,
}

impl RecentSpans {
    pub fn new(capacity: usize) -> RecentSpans {
        RecentSpans {
            map: HashMap::new(),
            order: VecDeque::new(),
            spans: 0,
            capacity,
        }
    }

    fn get(&self, tenant: &TenantId, trace: &[u8; 16]) -> Option<&SpanResources> {
        self.map.get(&(tenant.clone(), *trace)).map(|(_, m)| m)
    }

    fn remember(&mut self, tenant: &TenantId, spans: &[Span]) {
        let Some(first) = spans.first() else { return };
        let key = (tenant.clone(), first.trace_id);
        let entry = self.map.entry(key.clone()).or_default();
        entry.0 += 1;
        for s in spans {
            entry.1.insert(s.span_id, s.resource.clone());
        }
        self.order.push_back((key, spans.len()));
        self.spans += spans.len();
        while self.spans > self.capacity {
            let Some((k, n)) = self.order.pop_front() else {
                break;
            };
            self.spans -= n;
            // The trace may have a newer entry in `order`; keep it until that goes.
            if let Some(e) = self.map.get_mut(&k) {
                e.0 -= 1;
                if e.0 == 0 {
                    self.map.remove(&k);
                }
            }
        }
    }
}

/// The virtual node a client span without a child talks to: `(id, kind)`.
fn virtual_peer(s: &Span) -> Option<(&str, &'static str)> {
    let a = &s.attributes;
    if let Some(db) = find_str(a, "db.system").or_else(|| find_str(a, "db.system.name")) {
        return Some((db, "database"));
    }
    if let Some(sys) = find_str(a, "messaging.system") {
        let dest = find_str(a, "messaging.destination.name").unwrap_or(sys);
        return Some((dest, "messaging"));
    }
    if let Some(peer) = find_str(a, "peer.service") {
        return Some((peer, "external"));
    }
    find_str(a, "server.address")
        .or_else(|| find_str(a, "net.peer.name"))
        .map(|h| (h, "external"))
}

/// Rows found by a hash of their key parts, so that counting a span
/// allocates nothing unless its row is new.
struct Rows<R> {
    index: HashMap<u64, Vec<usize>>,
    rows: Vec<(TenantId, R)>,
    hasher: foldhash::fast::FixedState,
}

impl<R> Default for Rows<R> {
    fn default() -> Self {
        Rows {
            index: HashMap::new(),
            rows: Vec::new(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl<R> Rows<R> {
    fn get_or_insert(
        &mut self,
        hash_parts: impl std::hash::Hash,
        tenant: &TenantId,
        matches: impl Fn(&R) -> bool,
        make: impl FnOnce() -> R,
    ) -> &mut R {
        let h = self.hasher.hash_one(hash_parts);
        let slot = self.index.entry(h).or_default();
        let found = slot
            .iter()
            .copied()
            .find(|i| self.rows[*i].0 == *tenant && matches(&self.rows[*i].1));
        let i = match found {
            Some(i) => i,
            None => {
                self.rows.push((tenant.clone(), make()));
                slot.push(self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        &mut self.rows[i].1
    }
}

/// Accumulates edge and operation rows of one flush.
#[derive(Default)]
pub struct GraphBuilder {
    edges: Rows<EdgeRow>,
    ops: Rows<OperationRow>,
}

impl GraphBuilder {
    /// Counts `span` (its status and duration) as one request from `client` to `server`.
    fn edge(&mut self, tenant: &TenantId, client: &str, server: (&str, &'static str), span: &Span) {
        let (server, kind) = server;
        let minute = minute_of(span.start_ns);
        let row = self.edges.get_or_insert(
            (tenant.as_str(), minute, client, server),
            tenant,
            |r| r.minute_ns == minute && r.client == client && r.server == server,
            || EdgeRow {
                minute_ns: minute,
                client: client.to_owned(),
                server: server.to_owned(),
                server_kind: kind,
                requests: 0,
                failures: 0,
                latency: LatencyHistogram::default(),
            },
        );
        row.requests += 1;
        row.failures += u64::from(span.is_error());
        row.latency.observe(span.duration_ns());
    }

    /// Adds the rows of one trace fragment and remembers its spans.
    pub fn add_fragment(&mut self, tenant: &TenantId, spans: &[Span], recent: &mut RecentSpans) {
        let by_id: HashMap<[u8; 8], &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
        let earlier = spans.first().and_then(|s| recent.get(tenant, &s.trace_id));
        let mut has_child: HashSet<[u8; 8]> = HashSet::default();
        for s in spans {
            let Some(parent) = s.parent_span_id else {
                continue;
            };
            has_child.insert(parent);
            let parent_service = match by_id.get(&parent) {
                Some(p) => Some(p.service()),
                None => earlier
                    .and_then(|e| e.get(&parent))
                    .map(|r| r.service.as_str()),
            };
            if let Some(ps) = parent_service
                && ps != s.service()
            {
                self.edge(tenant, ps, (s.service(), "service"), s);
            }
        }
        for s in spans {
            if matches!(s.kind, SpanKind::Client | SpanKind::Producer)
                && !has_child.contains(&s.span_id)
                && let Some((peer, kind)) = virtual_peer(s)
                && peer != s.service()
            {
                self.edge(tenant, s.service(), (peer, kind), s);
            }
            let minute = minute_of(s.start_ns);
            let row = self.ops.get_or_insert(
                (
                    tenant.as_str(),
                    minute,
                    s.service(),
                    s.name.as_str(),
                    s.kind,
                ),
                tenant,
                |r| {
                    r.minute_ns == minute
                        && r.service == s.service()
                        && r.operation == s.name
                        && r.kind == s.kind.as_str()
                },
                || OperationRow {
                    minute_ns: minute,
                    service: s.service().to_owned(),
                    operation: s.name.clone(),
                    kind: s.kind.as_str(),
                    calls: 0,
                    errors: 0,
                    duration: LatencyHistogram::default(),
                },
            );
            row.calls += 1;
            row.errors += u64::from(s.is_error());
            row.duration.observe(s.duration_ns());
        }
        recent.remember(tenant, spans);
    }

    /// The rows, per tenant.
    pub fn finish(self) -> std::collections::HashMap<TenantId, (Vec<EdgeRow>, Vec<OperationRow>)> {
        let mut out: std::collections::HashMap<TenantId, (Vec<EdgeRow>, Vec<OperationRow>)> =
            std::collections::HashMap::new();
        for (t, e) in self.edges.rows {
            out.entry(t).or_default().0.push(e);
        }
        for (t, o) in self.ops.rows {
            out.entry(t).or_default().1.push(o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use periscope_proto::{Attr, AttrValue, StatusCode};

    use super::*;

    fn span(id: u8, parent: Option<u8>, service: &str, kind: SpanKind, attrs: Vec<Attr>) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 0,
            name: format!("op{id}"),
            kind,
            start_ns: 120_000_000_000,
            end_ns: 120_005_000_000,
            status_code: if id == 4 {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            status_message: String::new(),
            attributes: attrs,
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            resource: Arc::new(SpanResource {
                service: service.into(),
                attributes: vec![],
            }),
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    #[test]
    fn edges_and_virtual_nodes_including_late_children() {
        let t = TenantId::default_tenant();
        let mut recent = RecentSpans::new(1000);
        let mut g = GraphBuilder::default();
        let pg = vec![Attr::new("db.system", AttrValue::Str("postgresql".into()))];
        g.add_fragment(
            &t,
            &[
                span(1, None, "web", SpanKind::Server, vec![]),
                span(2, Some(1), "web", SpanKind::Client, vec![]),
                span(3, Some(2), "api", SpanKind::Server, vec![]),
                span(5, Some(3), "api", SpanKind::Client, pg),
            ],
            &mut recent,
        );
        // A late child of span 2 in a later fragment is still paired.
        g.add_fragment(
            &t,
            &[span(4, Some(2), "pay", SpanKind::Server, vec![])],
            &mut recent,
        );
        let rows = g.finish();
        let (edges, ops) = &rows[&t];
        let mut pairs: Vec<(String, String, &str, u64, u64)> = edges
            .iter()
            .map(|e| {
                (
                    e.client.clone(),
                    e.server.clone(),
                    e.server_kind,
                    e.requests,
                    e.failures,
                )
            })
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("api".into(), "postgresql".into(), "database", 1, 0),
                ("web".into(), "api".into(), "service", 1, 0),
                ("web".into(), "pay".into(), "service", 1, 1),
            ]
        );
        assert_eq!(ops.iter().map(|o| o.calls).sum::<u64>(), 5);
        assert!(edges.iter().all(|e| e.minute_ns == 120_000_000_000));
    }
}
