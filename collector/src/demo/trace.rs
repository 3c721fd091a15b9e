//! Building one simulated request: spans and logs as OTLP records, with
//! times relative to the request's start until [`TraceBuilder::finish`]
//! places them on the clock.
//!
//! The helpers follow the OpenTelemetry semantic conventions: HTTP client
//! and server spans (`http.request.method`, `http.route`,
//! `http.response.status_code`, `url.full`, `server.address`; a server span
//! is an error from 500 up, a client span from 400 up), database client
//! spans (`db.system`, `db.namespace`/`db.name`, `db.query.text`/
//! `db.statement`) and exceptions recorded as `exception` events.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status};
use rand::Rng;
use rand::rngs::SmallRng;

use super::shop::Svc;

/// A string attribute.
pub fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn kv_i64(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A floating-point attribute.
pub fn kv_f64(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

/// The RED facts of a server span, for the request metrics.
#[derive(Clone, Copy, Debug)]
pub struct Red {
    /// `http.request.method`, `http.route`, `http.response.status_code`.
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

/// A span and the service that reports it.
#[derive(Clone, Debug)]
pub struct SimSpan {
    /// The service reporting the span.
    pub svc: Svc,
    /// The span as OTLP carries it.
    pub span: Span,
    /// Set on HTTP server spans.
    pub red: Option<Red>,
}

/// A log record and the service that writes it.
#[derive(Clone, Debug)]
pub struct SimLog {
    /// The service writing the log.
    pub svc: Svc,
    /// The record as OTLP carries it.
    pub record: LogRecord,
}

/// Everything one simulated request produced.
#[derive(Clone, Debug, Default)]
pub struct SimTrace {
    /// Every span of the trace; the root first.
    pub spans: Vec<SimSpan>,
    /// The logs written while serving it.
    pub logs: Vec<SimLog>,
    /// What became of the order, for checkouts: `placed`, `declined` or `failed`.
    pub order_outcome: Option<&'static str>,
}

/// An open span: where it is and its id.
#[derive(Clone, Copy, Debug)]
pub struct SpanRef {
    idx: usize,
    /// The span id.
    pub id: [u8; 8],
}

/// The answer of a simulated HTTP handler.
#[derive(Clone, Debug)]
pub struct Reply {
    /// When the handler finished (ns from the trace start).
    pub end: u64,
    /// The HTTP status code.
    pub status: u16,
    /// Why, for statuses from 500 up.
    pub error: Option<String>,
}

impl Reply {
    /// An answer that is not a server error (a 4xx is the caller's fault).
    pub fn ok(end: u64, status: u16) -> Reply {
        Reply {
            end,
            status,
            error: None,
        }
    }

    /// A server error, with why.
    pub fn fail(end: u64, status: u16, why: impl Into<String>) -> Reply {
        Reply {
            end,
            status,
            error: Some(why.into()),
        }
    }

    /// Whether the caller got what it asked for.
    pub fn is_success(&self) -> bool {
        self.status < 400
    }
}

/// A database the shop talks to.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    /// PostgreSQL, with the database name.
    Postgres(&'static str),
    Redis,
}

/// One query: operation, collection (table or key) and text.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    /// `db.operation.name`: `SELECT`, `HGETALL`, ...
    pub op: &'static str,
    /// The table, or the Redis key.
    pub target: &'a str,
    /// `db.query.text`, with placeholders for values.
    pub text: &'a str,
}

const MS: u64 = 1_000_000;

/// Builds the spans and logs of one trace.
pub struct TraceBuilder<'r> {
    /// Where every random choice of the request comes from.
    pub rng: &'r mut SmallRng,
    trace_id: [u8; 16],
    out: SimTrace,
}

impl<'r> TraceBuilder<'r> {
    /// A new trace with a fresh id drawn from `rng`.
    pub fn new(rng: &'r mut SmallRng) -> TraceBuilder<'r> {
        let mut trace_id: [u8; 16] = rng.random();
        // The W3C spec forbids the all-zero id.
        trace_id[0] |= 1;
        TraceBuilder {
            rng,
            trace_id,
            out: SimTrace::default(),
        }
    }

    /// A duration in ns around `median_ms`, log-normally spread (`sigma` 0.3
    /// is tight, 1.0 has a long tail).
    pub fn lat(&mut self, median_ms: f64, sigma: f64) -> u64 {
        // Box-Muller for a standard normal from two uniforms.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let ms = median_ms * (sigma * z).exp();
        (ms.clamp(0.01, 60_000.0) * MS as f64) as u64
    }

    /// A uniform duration in ns between two bounds in milliseconds.
    pub fn between(&mut self, lo_ms: f64, hi_ms: f64) -> u64 {
        (self.rng.random_range(lo_ms..hi_ms) * MS as f64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    /// Starts a span; it ends at its start until [`TraceBuilder::close`].
    pub fn open(
        &mut self,
        svc: Svc,
        parent: Option<&SpanRef>,
        name: impl Into<String>,
        kind: SpanKind,
        start: u64,
        attributes: Vec<KeyValue>,
    ) -> SpanRef {
        let mut id: [u8; 8] = self.rng.random();
        id[0] |= 1;
        self.out.spans.push(SimSpan {
            svc,
            span: Span {
                trace_id: self.trace_id.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| p.id.to_vec()).unwrap_or_default(),
                // Sampled, per W3C trace context.
                flags: 0x101,
                name: name.into(),
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start,
                attributes,
                ..Default::default()
            },
            red: None,
        });
        SpanRef {
            idx: self.out.spans.len() - 1,
            id,
        }
    }

    /// Ends a span.
    pub fn close(&mut self, s: &SpanRef, end: u64) {
        self.out.spans[s.idx].span.end_time_unix_nano = end;
    }

    /// Adds attributes to a span.
    pub fn attrs(&mut self, s: &SpanRef, attrs: impl IntoIterator<Item = KeyValue>) {
        self.out.spans[s.idx].span.attributes.extend(attrs);
    }

    /// Marks a span failed.
    pub fn error(&mut self, s: &SpanRef, message: &str) {
        self.out.spans[s.idx].span.status = Some(Status {
            message: message.to_owned(),
            code: status::StatusCode::Error as i32,
        });
    }

    /// Records an exception event on a span.
    pub fn exception(&mut self, s: &SpanRef, at: u64, ty: &str, message: &str, stack: &str) {
        self.out.spans[s.idx].span.events.push(Event {
            time_unix_nano: at,
            name: "exception".into(),
            attributes: vec![
                kv_str("exception.type", ty),
                kv_str("exception.message", message),
                kv_str("exception.stacktrace", stack),
            ],
            dropped_attributes_count: 0,
        });
    }

    /// Adds a non-exception event to a span.
    pub fn event(&mut self, s: &SpanRef, at: u64, name: &str, attrs: Vec<KeyValue>) {
        self.out.spans[s.idx].span.events.push(Event {
            time_unix_nano: at,
            name: name.into(),
            attributes: attrs,
            dropped_attributes_count: 0,
        });
    }

    /// Links a span to another span of this trace.
    pub fn link(&mut self, s: &SpanRef, to: &SpanRef, attrs: Vec<KeyValue>) {
        let trace_id = self.trace_id.to_vec();
        self.out.spans[s.idx].span.links.push(Link {
            trace_id,
            span_id: to.id.to_vec(),
            attributes: attrs,
            flags: 0x101,
            ..Default::default()
        });
    }

    /// Writes a log record of `svc`, correlated with span `s`.
    pub fn log(
        &mut self,
        svc: Svc,
        s: &SpanRef,
        at: u64,
        severity: SeverityNumber,
        body: impl Into<String>,
        attributes: Vec<KeyValue>,
    ) {
        let text = match severity {
            SeverityNumber::Debug => "DEBUG",
            SeverityNumber::Info => "INFO",
            SeverityNumber::Warn => "WARN",
            SeverityNumber::Error => "ERROR",
            _ => "",
        };
        self.out.logs.push(SimLog {
            svc,
            record: LogRecord {
                time_unix_nano: at,
                observed_time_unix_nano: at,
                severity_number: severity as i32,
                severity_text: text.into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body.into())),
                }),
                attributes,
                flags: 0x01,
                trace_id: self.trace_id.to_vec(),
                span_id: s.id.to_vec(),
                ..Default::default()
            },
        });
    }

    /// Records what became of an order.
    pub fn order_outcome(&mut self, outcome: &'static str) {
        self.out.order_outcome = Some(outcome);
    }

    /// The server span of an HTTP request handled by `to`, called by `from`
    /// through a client span (or, with `from` = `None`, by a browser).
    /// `handler` runs inside the server span and answers.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per simulated route reads best with everything spelled out"
    )]
    pub fn http(
        &mut self,
        from: Option<(Svc, &SpanRef)>,
        to: Svc,
        start: u64,
        method: &'static str,
        route: &'static str,
        path: &str,
        handler: impl FnOnce(&mut Self, &SpanRef, u64) -> Reply,
    ) -> Reply {
        let name = format!("{method} {route}");
        let client = from.map(|(svc, parent)| {
            let url = format!("http://{}:8080{path}", to.name());
            let c = self.open(
                svc,
                Some(parent),
                name.clone(),
                SpanKind::Client,
                start,
                vec![
                    kv_str("http.request.method", method),
                    kv_str("url.full", &url),
                    kv_str("server.address", to.name()),
                    kv_i64("server.port", 8080),
                    kv_str("network.protocol.version", "1.1"),
                ],
            );
            (svc, c)
        });
        let server_start = match client {
            Some(_) => start + self.lat(0.4, 0.4),
            None => start,
        };
        let (server_addr, scheme, port) = match from {
            Some(_) => (to.name(), "http", 8080),
            None => ("shop.example.com", "https", 443),
        };
        let (url_path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut attrs = vec![
            kv_str("http.request.method", method),
            kv_str("http.route", route),
            kv_str("url.path", url_path),
            kv_str("url.scheme", scheme),
            kv_str("server.address", server_addr),
            kv_i64("server.port", port),
            kv_str("network.protocol.version", "1.1"),
        ];
        if let Some(q) = query {
            attrs.push(kv_str("url.query", q));
        }
        if from.is_none() {
            attrs.push(kv_str(
                "user_agent.original",
                "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
            ));
            let client_ip = format!("203.0.113.{}", self.rng.random_range(1..255));
            attrs.push(kv_str("client.address", &client_ip));
        }
        let server = self.open(
            to,
            client.as_ref().map(|c| &c.1),
            name,
            SpanKind::Server,
            server_start,
            attrs,
        );
        let setup = self.lat(0.3, 0.5);
        let mut reply = handler(self, &server, server_start + setup);
        reply.end += self.lat(0.2, 0.5);
        self.close(&server, reply.end);
        self.attrs(
            &server,
            [kv_i64("http.response.status_code", reply.status.into())],
        );
        self.out.spans[server.idx].red = Some(Red {
            method,
            route,
            status: reply.status,
        });
        if reply.status >= 500 {
            let msg = reply
                .error
                .clone()
                .unwrap_or_else(|| format!("HTTP {}", reply.status));
            self.error(&server, &msg);
            self.attrs(&server, [kv_str("error.type", &reply.status.to_string())]);
        }
        if let Some((_, c)) = client {
            let end = reply.end + self.lat(0.4, 0.4);
            self.close(&c, end);
            self.attrs(
                &c,
                [kv_i64("http.response.status_code", reply.status.into())],
            );
            if reply.status >= 400 {
                self.error(&c, &format!("HTTP {}", reply.status));
                self.attrs(&c, [kv_str("error.type", &reply.status.to_string())]);
            }
            reply.end = end;
        }
        reply
    }

    /// A database client span of `svc`; `fail` makes it fail with that
    /// exception (type, message) after `dur`. Returns the end time.
    #[expect(
        clippy::too_many_arguments,
        reason = "a query is described by all of these; a struct per call would only move them"
    )]
    pub fn db(
        &mut self,
        svc: Svc,
        parent: &SpanRef,
        start: u64,
        db: Db,
        q: Query<'_>,
        dur: u64,
        fail: Option<(&str, &str)>,
    ) -> u64 {
        let (system, namespace, address, port, name) = match db {
            Db::Postgres(dbname) => (
                "postgresql",
                dbname,
                "postgres",
                5432,
                format!("{} {}", q.op, q.target),
            ),
            Db::Redis => ("redis", "0", "redis", 6379, q.op.to_owned()),
        };
        let mut attrs = vec![
            kv_str("db.system", system),
            kv_str("db.system.name", system),
            kv_str("db.name", namespace),
            kv_str("db.namespace", namespace),
            kv_str("db.operation.name", q.op),
            kv_str("db.statement", q.text),
            kv_str("db.query.text", q.text),
            kv_str("server.address", address),
            kv_i64("server.port", port),
        ];
        if let Db::Postgres(_) = db {
            attrs.push(kv_str("db.collection.name", q.target));
            attrs.push(kv_str("db.user", svc.name()));
        }
        let s = self.open(svc, Some(parent), name, SpanKind::Client, start, attrs);
        let end = start + dur;
        self.close(&s, end);
        if let Some((ty, message)) = fail {
            self.error(&s, message);
            self.exception(&s, end, ty, message, &stack(svc, ty, message));
            self.attrs(&s, [kv_str("error.type", ty)]);
        }
        end
    }

    /// Places the trace so that its last span ends at `end_ns` (Unix ns).
    pub fn finish(mut self, end_ns: u64) -> SimTrace {
        let last = self
            .out
            .spans
            .iter()
            .map(|s| s.span.end_time_unix_nano)
            .max()
            .unwrap_or(0);
        let shift = end_ns.saturating_sub(last);
        for s in &mut self.out.spans {
            s.span.start_time_unix_nano += shift;
            s.span.end_time_unix_nano += shift;
            for e in &mut s.span.events {
                e.time_unix_nano += shift;
            }
        }
        for l in &mut self.out.logs {
            l.record.time_unix_nano += shift;
            l.record.observed_time_unix_nano += shift;
        }
        self.out
    }
}

/// A stack trace in the style of the service's language.
fn stack(svc: Svc, ty: &str, message: &str) -> String {
    match svc {
        Svc::Checkout => format!(
            "{ty}: {message}\n\tat org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2733)\n\tat shop.checkout.OrderRepository.insert(OrderRepository.java:88)\n\tat shop.checkout.CheckoutController.placeOrder(CheckoutController.java:142)"
        ),
        Svc::Payment => format!(
            "Traceback (most recent call last):\n  File \"/app/payment/psp.py\", line 57, in charge\n    resp = await self.client.post(url, json=body, timeout=3.0)\n  File \"/app/payment/http.py\", line 31, in post\n    raise {ty}(msg)\n{ty}: {message}"
        ),
        Svc::Cart => format!(
            "{ty}: {message}\n\ngoroutine 118 [running]:\nshop/cart/store.(*RedisStore).Get(0xc000212000, {{0x1a2b3c0, 0xc0003e4f00}}, {{0xc00041c0a8, 0x9}})\n\t/src/cart/store/redis.go:64 +0x1f4"
        ),
        Svc::Frontend => format!(
            "{ty}: {message}\n    at Catalog.list (/app/src/catalog.ts:41:17)\n    at async Router.handle (/app/src/router.ts:112:5)"
        ),
        Svc::Shipping => format!(
            "{ty}: {message}\n   0: shipping::store::insert_shipment\n             at ./src/store.rs:73:14"
        ),
    }
}
