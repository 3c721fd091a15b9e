//! A span's content from its place in the tree: name, kind, about ten
//! attributes, occasional events, and the status of failed spans.
//!
//! Attribute names follow the OpenTelemetry semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/>); Redis spans use the older
//! `db.statement` where PostgreSQL spans use `db.query.text`, as a fleet of
//! mixed instrumentation versions does.

use periscope_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use periscope_proto::otlp::trace::v1::span::{Event, SpanKind};
use periscope_proto::otlp::trace::v1::status::StatusCode;
use periscope_proto::otlp::trace::v1::{Span, SpanFlags, Status};
use rand::Rng;
use rand::rngs::SmallRng;

use super::{Node, Role, TRACE_SERVICES};
use crate::workload::{kv_int, kv_str, pick, weighted};

/// The routes users call on `frontend`, weighted.
const ROUTES: [((&str, &str), u32); 8] = [
    (("GET", "/api/v1/products/{id}"), 30),
    (("GET", "/api/v1/search"), 15),
    (("GET", "/api/v1/recommendations"), 10),
    (("POST", "/api/v1/cart/items"), 15),
    (("GET", "/api/v1/orders/{id}"), 8),
    (("POST", "/api/v1/checkout/session"), 10),
    (("POST", "/api/v1/payments/intent"), 5),
    (("GET", "/api/v1/users/me"), 7),
];

/// What each service serves to the others, by index in [`TRACE_SERVICES`]:
/// HTTP method and route, gRPC service and method.
const ENDPOINTS: [(&str, &str, &str, &str); 10] = [
    ("GET", "/", "shop.frontend.v1.FrontendService", "Render"),
    (
        "POST",
        "/v1/orders",
        "shop.checkout.v1.CheckoutService",
        "PlaceOrder",
    ),
    (
        "GET",
        "/v1/carts/{user_id}",
        "shop.cart.v1.CartService",
        "GetCart",
    ),
    (
        "POST",
        "/v1/charges",
        "shop.payment.v1.PaymentService",
        "Charge",
    ),
    (
        "POST",
        "/v1/reservations",
        "shop.inventory.v1.InventoryService",
        "ReserveStock",
    ),
    (
        "GET",
        "/v1/quotes",
        "shop.shipping.v1.ShippingService",
        "GetQuote",
    ),
    (
        "GET",
        "/v1/sessions/{id}",
        "shop.auth.v1.AuthService",
        "ValidateSession",
    ),
    (
        "GET",
        "/v1/recommendations/{user_id}",
        "shop.recommendation.v1.RecommendationService",
        "ListRecommendations",
    ),
    (
        "GET",
        "/v1/search",
        "shop.search.v1.SearchService",
        "Search",
    ),
    (
        "POST",
        "/v1/emails",
        "shop.email.v1.EmailService",
        "SendOrderConfirmation",
    ),
];

/// In-process work: function and source file.
const FUNCTIONS: [(&str, &str); 8] = [
    ("CartRepository.load", "src/cart/repository.ts"),
    ("PriceCalculator.compute", "src/pricing/calculator.go"),
    ("OrderValidator.validate", "shop/checkout/validate.py"),
    ("render_template", "frontend/views/product.py"),
    ("TokenVerifier.verify", "auth/src/token.rs"),
    ("RankingModel.score", "recommendation/model.py"),
    ("QuoteHandler.Compute", "shipping/quote.go"),
    ("serialize_response", "lib/http/response.py"),
];

/// PostgreSQL queries: database, table, operation, query text.
const QUERIES: [(&str, &str, &str, &str); 6] = [
    (
        "orders",
        "orders",
        "SELECT",
        "SELECT id, status, total FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20",
    ),
    (
        "orders",
        "order_items",
        "INSERT",
        "INSERT INTO order_items (order_id, sku, quantity, price) VALUES ($1, $2, $3, $4)",
    ),
    (
        "catalog",
        "products",
        "SELECT",
        "SELECT id, name, price, stock FROM products WHERE id = ANY($1)",
    ),
    (
        "inventory",
        "stock_levels",
        "UPDATE",
        "UPDATE stock_levels SET reserved = reserved + $1 WHERE sku = $2 AND available >= $1",
    ),
    (
        "users",
        "customers",
        "SELECT",
        "SELECT id, email, tier FROM customers WHERE id = $1",
    ),
    (
        "payments",
        "charges",
        "INSERT",
        "INSERT INTO charges (order_id, amount, currency, provider_ref) VALUES ($1, $2, $3, $4)",
    ),
];

/// Redis commands and key prefixes.
const REDIS: [(&str, &str); 4] = [
    ("GET", "cart"),
    ("GET", "session"),
    ("SETEX", "product"),
    ("HGETALL", "user"),
];

const TOPICS: [&str; 4] = [
    "orders.placed",
    "payments.authorized",
    "stock.reserved",
    "emails.outbox",
];

const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "okhttp/4.12.0",
];

/// Events other than exceptions: name, attribute key and value.
const EVENTS: [(&str, &str, &str); 3] = [
    ("cache miss", "cache.key", "product"),
    ("retry", "retry.reason", "connection reset"),
    ("rate limited", "limiter.name", "per-user"),
];
/// Share of spans with an event other than an exception.
const EVENT_SHARE: f64 = 0.05;
/// Share of failed spans that record an `exception` event.
const EXCEPTION_SHARE: f64 = 0.6;

/// What every span of a trace shares.
pub(super) struct TraceContext<'a> {
    pub trace_id: [u8; 16],
    /// By span index: distinct and non-zero.
    span_ids: Vec<u64>,
    run_id: &'a str,
    method: &'static str,
    route: &'static str,
    /// The root's HTTP status when it does not fail.
    status: i64,
    user: String,
    session: String,
    checkout_v2: bool,
}

impl<'a> TraceContext<'a> {
    pub fn new(rng: &mut SmallRng, run_id: &'a str, spans: usize) -> TraceContext<'a> {
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id);
        // All-zero ids are invalid in OTLP.
        trace_id[0] |= 1;
        let mut span_ids = Vec::with_capacity(spans);
        while span_ids.len() < spans {
            let id: u64 = rng.random();
            if id != 0 && !span_ids.contains(&id) {
                span_ids.push(id);
            }
        }
        let (method, route) = *weighted(rng, &ROUTES);
        TraceContext {
            trace_id,
            span_ids,
            run_id,
            method,
            route,
            status: *pick(rng, &[200, 200, 200, 200, 200, 201, 304, 404]),
            user: format!("user-{}", rng.random_range(1..50_000u32)),
            session: format!("{:016x}", rng.random::<u64>()),
            checkout_v2: rng.random_bool(0.3),
        }
    }

    /// The span at `index` of `nodes`.
    pub fn span(&self, rng: &mut SmallRng, nodes: &[Node], index: usize) -> Span {
        let node = &nodes[index];
        let mut attributes = Vec::with_capacity(12);
        let (kind, name) = match node.role {
            Role::Root => self.root(rng, node.failed, &mut attributes),
            Role::Call { callee, grpc } => {
                self.remote(rng, node, callee, grpc, SpanKind::Client, &mut attributes)
            }
            Role::Serve { grpc } => self.remote(
                rng,
                node,
                node.service,
                grpc,
                SpanKind::Server,
                &mut attributes,
            ),
            Role::Internal => self.internal(rng, &mut attributes),
            Role::Query { redis: false } => postgres(rng, &mut attributes),
            Role::Query { redis: true } => self.redis(rng, &mut attributes),
            Role::Publish => self.publish(rng, node.service, &mut attributes),
        };
        attributes.push(kv_str("loadgen.run", self.run_id));

        let mut events = Vec::new();
        if rng.random_bool(EVENT_SHARE) {
            let (name, key, value) = *pick(rng, &EVENTS);
            events.push(Event {
                time_unix_nano: rng.random_range(node.start..=node.end),
                name: name.into(),
                attributes: vec![kv_str(key, value)],
                ..Default::default()
            });
        }
        let status = node.failed.then(|| {
            let (kind, message) = exception(node.role);
            if rng.random_bool(EXCEPTION_SHARE) {
                events.push(Event {
                    time_unix_nano: rng.random_range(node.start..=node.end),
                    name: "exception".into(),
                    attributes: vec![
                        kv_str("exception.type", kind),
                        kv_str("exception.message", message),
                    ],
                    ..Default::default()
                });
            }
            Status {
                message: format!("{kind}: {message}"),
                code: StatusCode::Error as i32,
            }
        });

        // Sampled, and whether the parent is remote is known: it is for the
        // server side of a call.
        let mut flags = 0x01 | SpanFlags::ContextHasIsRemoteMask as u32;
        if let Some(p) = node.parent
            && matches!(nodes[p].role, Role::Call { .. })
        {
            flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_ids[index].to_be_bytes().to_vec(),
            parent_span_id: node
                .parent
                .map(|p| self.span_ids[p].to_be_bytes().to_vec())
                .unwrap_or_default(),
            flags,
            name,
            kind: kind as i32,
            start_time_unix_nano: node.start,
            end_time_unix_nano: node.end,
            attributes,
            events,
            status,
            ..Default::default()
        }
    }

    fn root(
        &self,
        rng: &mut SmallRng,
        failed: bool,
        attrs: &mut Vec<KeyValue>,
    ) -> (SpanKind, String) {
        let id = rng.random_range(1..100_000u32).to_string();
        attrs.extend([
            kv_str("http.request.method", self.method),
            kv_str("http.route", self.route),
            kv_str("url.path", self.route.replace("{id}", &id)),
            kv_str("url.scheme", "https"),
            kv_int(
                "http.response.status_code",
                if failed { 500 } else { self.status },
            ),
            kv_str("server.address", "shop.example.com"),
            kv_str(
                "client.address",
                format!("203.0.113.{}", rng.random_range(1..255u32)),
            ),
            kv_str("user_agent.original", *pick(rng, &USER_AGENTS)),
            kv_str("user.id", self.user.as_str()),
            kv_str("session.id", self.session.as_str()),
            kv_bool("feature_flag.checkout_v2", self.checkout_v2),
        ]);
        (SpanKind::Server, format!("{} {}", self.method, self.route))
    }

    /// Either side of a call to `callee`: both carry the same HTTP or gRPC
    /// attributes, the client its peer's address, the server its client's.
    fn remote(
        &self,
        rng: &mut SmallRng,
        node: &Node,
        callee: usize,
        grpc: bool,
        kind: SpanKind,
        attrs: &mut Vec<KeyValue>,
    ) -> (SpanKind, String) {
        let (method, route, rpc_service, rpc_method) = ENDPOINTS[callee];
        let host = format!("{}.shop.svc.cluster.local", TRACE_SERVICES[callee]);
        let peer = if kind == SpanKind::Client {
            "network.peer.address"
        } else {
            "client.address"
        };
        if grpc {
            attrs.extend([
                kv_str("rpc.system", "grpc"),
                kv_str("rpc.service", rpc_service),
                kv_str("rpc.method", rpc_method),
                kv_int("rpc.grpc.status_code", if node.failed { 14 } else { 0 }),
                kv_str("server.address", host),
                kv_int("server.port", 50051),
            ]);
        } else {
            let path = route
                .replace("{user_id}", self.user.trim_start_matches("user-"))
                .replace("{id}", &self.session);
            attrs.extend([
                kv_str("http.request.method", method),
                kv_str("http.route", route),
                kv_str("url.path", path),
                kv_int(
                    "http.response.status_code",
                    if node.failed { 503 } else { 200 },
                ),
                kv_str("network.protocol.version", "1.1"),
                kv_str("server.address", host),
                kv_int("server.port", 8080),
            ]);
        }
        attrs.extend([
            kv_str(peer, pod_address(rng)),
            kv_str("user.id", self.user.as_str()),
        ]);
        let name = if grpc {
            format!("{rpc_service}/{rpc_method}")
        } else {
            format!("{method} {route}")
        };
        (kind, name)
    }

    fn internal(&self, rng: &mut SmallRng, attrs: &mut Vec<KeyValue>) -> (SpanKind, String) {
        let (function, file) = *pick(rng, &FUNCTIONS);
        attrs.extend([
            kv_str("code.function.name", function),
            kv_str("code.file.path", file),
            kv_int("code.line.number", rng.random_range(20..600)),
            kv_int("thread.id", rng.random_range(1..64)),
            kv_bool("app.cache.hit", rng.random_bool(0.7)),
            kv_int("app.items.count", rng.random_range(0..40)),
            kv_bool("feature_flag.checkout_v2", self.checkout_v2),
            kv_str("user.id", self.user.as_str()),
        ]);
        (SpanKind::Internal, function.to_owned())
    }

    fn redis(&self, rng: &mut SmallRng, attrs: &mut Vec<KeyValue>) -> (SpanKind, String) {
        let (command, prefix) = *pick(rng, &REDIS);
        attrs.extend([
            kv_str("db.system", "redis"),
            kv_str("db.namespace", "0"),
            kv_str("db.operation.name", command),
            kv_str("db.statement", format!("{command} {prefix}:{}", self.user)),
            kv_str("server.address", "redis-master.cache.svc.cluster.local"),
            kv_int("server.port", 6379),
            kv_str("network.peer.address", pod_address(rng)),
            kv_bool("app.cache.hit", rng.random_bool(0.8)),
        ]);
        (SpanKind::Client, command.to_owned())
    }

    fn publish(
        &self,
        rng: &mut SmallRng,
        service: usize,
        attrs: &mut Vec<KeyValue>,
    ) -> (SpanKind, String) {
        let topic = *pick(rng, &TOPICS);
        attrs.extend([
            kv_str("messaging.system", "kafka"),
            kv_str("messaging.destination.name", topic),
            kv_str("messaging.operation.type", "send"),
            kv_str("messaging.operation.name", "publish"),
            kv_str("messaging.kafka.message.key", self.user.as_str()),
            kv_int("messaging.message.body.size", rng.random_range(200..4000)),
            kv_str(
                "messaging.destination.partition.id",
                rng.random_range(0..12u32).to_string(),
            ),
            kv_str("server.address", "kafka-0.kafka.svc.cluster.local"),
            kv_int("server.port", 9092),
            kv_str(
                "messaging.client.id",
                format!("{}-producer-1", TRACE_SERVICES[service]),
            ),
        ]);
        (SpanKind::Producer, format!("publish {topic}"))
    }
}

fn postgres(rng: &mut SmallRng, attrs: &mut Vec<KeyValue>) -> (SpanKind, String) {
    let (db, table, operation, query) = *pick(rng, &QUERIES);
    let rows = if operation == "SELECT" {
        rng.random_range(0..50)
    } else {
        1
    };
    attrs.extend([
        kv_str("db.system", "postgresql"),
        kv_str("db.namespace", db),
        kv_str("db.collection.name", table),
        kv_str("db.operation.name", operation),
        kv_str("db.query.text", query),
        kv_str("server.address", format!("{db}-db.shop.svc.cluster.local")),
        kv_int("server.port", 5432),
        kv_str("network.peer.address", pod_address(rng)),
        kv_int("db.response.returned_rows", rows),
    ]);
    (SpanKind::Client, format!("{operation} {table}"))
}

/// The exception type and message a span of `role` fails with.
fn exception(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Call { grpc: true, .. } | Role::Serve { grpc: true } => (
            "io.grpc.StatusRuntimeException",
            "UNAVAILABLE: upstream connect error or disconnect/reset before headers",
        ),
        Role::Call { .. } | Role::Serve { .. } => (
            "java.net.SocketTimeoutException",
            "Read timed out after 5000 ms",
        ),
        Role::Query { redis: false } => (
            "org.postgresql.util.PSQLException",
            "ERROR: canceling statement due to statement timeout",
        ),
        Role::Query { redis: true } => (
            "redis.exceptions.TimeoutError",
            "Timeout reading from socket",
        ),
        Role::Root | Role::Internal => (
            "java.lang.IllegalStateException",
            "reservation expired before commit",
        ),
        Role::Publish => (
            "org.apache.kafka.common.errors.TimeoutException",
            "Expiration of 1 record(s): 30012 ms has passed since batch creation",
        ),
    }
}

fn pod_address(rng: &mut SmallRng) -> String {
    format!(
        "10.42.{}.{}",
        rng.random_range(0..16u32),
        rng.random_range(2..250u32)
    )
}

fn kv_bool(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}
