//! The synthetic trace workload: whole traces of the web shop, each a user's
//! HTTP request to `frontend` fanning out over 5–10 services through HTTP and
//! gRPC calls, with in-process work, PostgreSQL and Redis queries and Kafka
//! messages below them. Deterministic for a given seed and run id.
//!
//! A request holds whole traces, and [`TraceWorkload::request`] returns each
//! trace's id and span count, so a run can fetch its traces back through the
//! query API and tell lost spans from duplicates. Every span carries
//! `loadgen.run` (the run id).
//!
//! This module shapes and times a trace's tree; `spans.rs` fills in each
//! span's name, kind, attributes, events and status.

mod spans;

use std::ops::RangeInclusive;

use periscope_proto::otlp::ExportTraceServiceRequest;
use periscope_proto::otlp::common::v1::InstrumentationScope;
use periscope_proto::otlp::resource::v1::Resource;
use periscope_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::workload::{INSTANCES, kv_str, mix, resource_attributes, run_salt};

/// The services traces are spread over: those of the log workload
/// ([`SERVICES`](crate::SERVICES)), then two that only other services call.
pub const TRACE_SERVICES: [&str; 10] = [
    "frontend",
    "checkout",
    "cart",
    "payment",
    "inventory",
    "shipping",
    "auth",
    "recommendation",
    "search",
    "email",
];

/// Spans per trace, uniformly distributed.
pub const TRACE_SPANS: RangeInclusive<usize> = 10..=50;

/// Services per trace, `frontend` included: uniformly distributed up to what
/// the trace's spans allow, since each service past `frontend` costs a CLIENT
/// and a SERVER span (10 spans reach 5 services).
pub const TRACE_SERVICE_COUNT: RangeInclusive<usize> = 5..=10;

const FRONTEND: usize = 0;
const MEAN_SPANS: usize = (*TRACE_SPANS.start() + *TRACE_SPANS.end()) / 2;
/// Share of spans that fail. A call fails when the server side it waits for
/// fails, so calls are not drawn on their own.
const ERROR_SHARE: f64 = 0.02;

/// A generated trace, as verification remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRef {
    pub trace_id: [u8; 16],
    pub spans: u32,
}

/// What a span does, which decides its kind, name and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `frontend` handling the user's HTTP request: the root.
    Root,
    /// A call to service `callee`; its only child is the callee's `Serve`.
    Call { callee: usize, grpc: bool },
    /// The callee's side of a `Call`.
    Serve { grpc: bool },
    /// In-process work.
    Internal,
    /// A PostgreSQL or Redis query.
    Query { redis: bool },
    /// A Kafka message sent.
    Publish,
}

impl Role {
    /// Whether spans of this role take children other than a call's server
    /// side.
    fn hosts(self) -> bool {
        matches!(self, Role::Root | Role::Serve { .. } | Role::Internal)
    }
}

/// One span of a trace being generated.
#[derive(Debug)]
struct Node {
    service: usize,
    parent: Option<usize>,
    role: Role,
    /// Children so far, and this span's rank among its parent's children:
    /// children run one after the other in their parent's time.
    children: u32,
    rank: u32,
    start: u64,
    end: u64,
    failed: bool,
}

/// A trace's spans, parents before their children.
#[derive(Default)]
struct Tree {
    nodes: Vec<Node>,
    /// The spans that take children (see [`Role::hosts`]).
    hosts: Vec<usize>,
}

impl Tree {
    fn add(&mut self, parent: Option<usize>, service: usize, role: Role) -> usize {
        let rank = match parent {
            Some(p) => {
                self.nodes[p].children += 1;
                self.nodes[p].children - 1
            }
            None => 0,
        };
        let index = self.nodes.len();
        self.nodes.push(Node {
            service,
            parent,
            role,
            children: 0,
            rank,
            start: 0,
            end: 0,
            failed: false,
        });
        if role.hosts() {
            self.hosts.push(index);
        }
        index
    }

    /// A call from span `caller` to service `callee`: two spans.
    fn call(&mut self, caller: usize, callee: usize, grpc: bool) {
        let client = self.add(
            Some(caller),
            self.nodes[caller].service,
            Role::Call { callee, grpc },
        );
        self.add(Some(client), callee, Role::Serve { grpc });
    }

    fn random_host(&self, rng: &mut SmallRng) -> usize {
        self.hosts[rng.random_range(0..self.hosts.len())]
    }
}

/// Generates OTLP trace requests. Deterministic: the same seed, run id and
/// clock give the same requests.
pub struct TraceWorkload {
    rng: SmallRng,
    run_id: String,
}

impl TraceWorkload {
    /// A workload whose spans carry `loadgen.run = run_id`. The run id also
    /// seeds the ids, so two runs with the same seed do not share traces.
    pub fn new(seed: u64, run_id: impl Into<String>) -> TraceWorkload {
        let run_id = run_id.into();
        TraceWorkload {
            rng: SmallRng::seed_from_u64(seed ^ mix(run_salt(&run_id))),
            run_id,
        }
    }

    /// The run id stamped on every span.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// One request of whole traces holding about `spans` spans (rounded to
    /// whole traces, at least one trace), each trace ending within the 50 ms
    /// before `now_ns`, grouped into one `ResourceSpans` per service; with
    /// each trace's id and span count.
    pub fn request(
        &mut self,
        spans: usize,
        now_ns: u64,
    ) -> (ExportTraceServiceRequest, Vec<TraceRef>) {
        let mut by_service: [Vec<Span>; TRACE_SERVICES.len()] = Default::default();
        let mut traces = Vec::with_capacity(spans / MEAN_SPANS + 1);
        let mut total = 0;
        // Stopping once less than half a mean trace is missing keeps requests
        // at `spans` on average, without favouring short traces.
        while traces.is_empty() || spans.saturating_sub(total) > MEAN_SPANS / 2 {
            let trace = self.trace(now_ns, &mut by_service);
            total += trace.spans as usize;
            traces.push(trace);
        }
        let resource_spans = by_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(service, spans)| ResourceSpans {
                resource: Some(self.resource(service)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("shop.{}", TRACE_SERVICES[service]),
                        version: "1.4.2".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        (ExportTraceServiceRequest { resource_spans }, traces)
    }

    fn resource(&mut self, service: usize) -> Resource {
        let name = TRACE_SERVICES[service];
        let instance = self.rng.random_range(0..INSTANCES);
        let mut attributes = resource_attributes(service, name, instance);
        let pod = ["x2k4p", "m9qzt", "b7hcl"][instance as usize % 3];
        attributes.push(kv_str("k8s.pod.name", format!("{name}-7d9f8c5b4-{pod}")));
        Resource {
            attributes,
            ..Default::default()
        }
    }

    /// Generates one trace, appending its spans to their services' lists.
    fn trace(&mut self, now_ns: u64, by_service: &mut [Vec<Span>]) -> TraceRef {
        let spans = self.rng.random_range(TRACE_SPANS);
        let reachable = (1 + (spans - 1) / 2).min(*TRACE_SERVICE_COUNT.end());
        let services = self
            .rng
            .random_range(*TRACE_SERVICE_COUNT.start()..=reachable);
        let mut tree = self.shape(spans, services);
        self.time(&mut tree.nodes, now_ns);
        self.fail(&mut tree.nodes);

        let ctx = spans::TraceContext::new(&mut self.rng, &self.run_id, spans);
        for (index, node) in tree.nodes.iter().enumerate() {
            let span = ctx.span(&mut self.rng, &tree.nodes, index);
            by_service[node.service].push(span);
        }
        TraceRef {
            trace_id: ctx.trace_id,
            spans: spans as u32,
        }
    }

    /// The tree of a trace of `spans` spans over `services` services: the
    /// root, one call into each other service, then further calls, in-process
    /// work, queries and messages below random spans that take children.
    fn shape(&mut self, spans: usize, services: usize) -> Tree {
        let rng = &mut self.rng;
        let mut others: Vec<usize> = (1..TRACE_SERVICES.len()).collect();
        let called = others.partial_shuffle(rng, services - 1).0.to_vec();

        let mut tree = Tree::default();
        tree.add(None, FRONTEND, Role::Root);
        for &callee in &called {
            let caller = tree.random_host(rng);
            tree.call(caller, callee, rng.random_bool(0.4));
        }
        while tree.nodes.len() < spans {
            let parent = tree.random_host(rng);
            let service = tree.nodes[parent].service;
            match rng.random_range(0..100u32) {
                0..20 => {
                    let callee = called[rng.random_range(0..called.len())];
                    if callee != service && spans - tree.nodes.len() >= 2 {
                        tree.call(parent, callee, rng.random_bool(0.4));
                    }
                }
                20..50 => {
                    tree.add(Some(parent), service, Role::Internal);
                }
                50..94 => {
                    let redis = rng.random_bool(0.4);
                    tree.add(Some(parent), service, Role::Query { redis });
                }
                _ => {
                    tree.add(Some(parent), service, Role::Publish);
                }
            }
        }
        tree
    }

    /// Times the spans: the root ends within the 50 ms before `now_ns`; the
    /// server side of a call sits inside the call, less the network time;
    /// other children run one after the other, each within its slice of the
    /// parent's time.
    fn time(&mut self, nodes: &mut [Node], now_ns: u64) {
        let rng = &mut self.rng;
        let root_us = match rng.random_range(0..100u32) {
            0..80 => rng.random_range(5_000..120_000u64),
            80..97 => rng.random_range(120_000..800_000),
            _ => rng.random_range(800_000..3_000_000),
        };
        nodes[0].end = now_ns.saturating_sub(rng.random_range(0..50_000_000));
        nodes[0].start = nodes[0].end.saturating_sub(root_us * 1000);
        for i in 1..nodes.len() {
            let Some(p) = nodes[i].parent else { continue };
            let (p_start, p_end) = (nodes[p].start, nodes[p].end);
            let length = p_end - p_start;
            let (start, end) = if let Role::Call { .. } = nodes[p].role {
                let network = rng.random_range(50_000..600_000u64).min(length / 8);
                (p_start + network, p_end - network)
            } else {
                let slice = length / u64::from(nodes[p].children);
                let slice_start = p_start + slice * u64::from(nodes[i].rank);
                let busy = (slice as f64 * rng.random_range(0.3..0.95)) as u64;
                let start = slice_start + rng.random_range(0..=slice - busy);
                (start, start + busy)
            };
            nodes[i].start = start;
            nodes[i].end = end;
        }
    }

    /// Draws which spans fail; a call fails with its server side.
    fn fail(&mut self, nodes: &mut [Node]) {
        for i in 0..nodes.len() {
            if !matches!(nodes[i].role, Role::Call { .. }) && self.rng.random_bool(ERROR_SHARE) {
                nodes[i].failed = true;
                if let (Role::Serve { .. }, Some(p)) = (nodes[i].role, nodes[i].parent) {
                    nodes[p].failed = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
