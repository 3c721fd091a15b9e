//! The synthetic log workload: OTLP log requests that look like a small web
//! shop's services (HTTP access lines, business events, debug chatter, slow
//! queries, exceptions with stack traces), deterministic for a given seed.
//!
//! Every record carries `loadgen.run` (the run id) and `loadgen.seq` (unique per
//! record within a run), so a run can count its own records through the query
//! API and tell lost records from duplicates.

use std::fmt::Write as _;

use periscope_proto::otlp::ExportLogsServiceRequest;
use periscope_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use periscope_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use periscope_proto::otlp::resource::v1::Resource;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The services records are spread over (roughly uniformly).
pub const SERVICES: [&str; 8] = [
    "frontend",
    "checkout",
    "cart",
    "payment",
    "inventory",
    "shipping",
    "auth",
    "recommendation",
];

/// Instances (pods) per service; each request names one per service.
pub(crate) const INSTANCES: u32 = 3;

const METHODS: [(&str, u32); 4] = [("GET", 60), ("POST", 25), ("PUT", 8), ("DELETE", 7)];
/// Request paths; those ending in `/` or `=` take a numeric id.
const PATHS: [&str; 10] = [
    "/api/v1/products/",
    "/api/v1/cart/items",
    "/api/v1/orders/",
    "/api/v1/checkout/session",
    "/api/v1/users/me",
    "/api/v1/recommendations?product=",
    "/api/v1/shipping/quote?zip=",
    "/api/v1/payments/intent",
    "/static/js/app.bundle.js",
    "/healthz",
];
const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
];
const EVENTS: [&str; 6] = [
    "order placed",
    "payment authorized",
    "cart updated",
    "shipment label created",
    "user signed in",
    "stock reserved",
];
const CACHE_KEYS: [&str; 4] = ["user", "cart", "product", "session"];
const TABLES: [&str; 4] = ["orders", "order_items", "customers", "stock_levels"];
const UPSTREAMS: [&str; 4] = [
    "payment-gateway",
    "tax-service",
    "carrier-api",
    "fraud-check",
];

/// Generates OTLP log requests. Deterministic: the same seed, sequence numbers
/// and clock give the same requests.
pub struct Workload {
    rng: SmallRng,
    run_id: String,
    /// Mixed into request ids so two runs do not share them.
    run_salt: u64,
    body: String,
}

impl Workload {
    /// A workload whose records carry `loadgen.run = run_id`.
    pub fn new(seed: u64, run_id: impl Into<String>) -> Workload {
        let run_id = run_id.into();
        let run_salt = run_salt(&run_id);
        Workload {
            rng: SmallRng::seed_from_u64(seed),
            run_id,
            run_salt,
            body: String::with_capacity(512),
        }
    }

    /// The run id stamped on every record.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// One request of `records` log records numbered `first_seq..first_seq +
    /// records`, timestamped within the 50 ms before `now_ns`, grouped into
    /// one `ResourceLogs` per service.
    pub fn request(
        &mut self,
        first_seq: u64,
        records: usize,
        now_ns: u64,
    ) -> ExportLogsServiceRequest {
        let mut by_service: [Vec<LogRecord>; SERVICES.len()] = Default::default();
        for seq in first_seq..first_seq + records as u64 {
            let service = self.rng.random_range(0..SERVICES.len());
            let record = self.record(seq, now_ns);
            by_service[service].push(record);
        }
        let resource_logs = by_service
            .into_iter()
            .enumerate()
            .filter(|(_, recs)| !recs.is_empty())
            .map(|(service, log_records)| ResourceLogs {
                resource: Some(self.resource(service)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: format!("shop.{}", SERVICES[service]),
                        version: "1.4.2".into(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }
    }

    fn resource(&mut self, service: usize) -> Resource {
        let instance = self.rng.random_range(0..INSTANCES);
        Resource {
            attributes: resource_attributes(service, SERVICES[service], instance),
            ..Default::default()
        }
    }

    fn record(&mut self, seq: u64, now_ns: u64) -> LogRecord {
        let rng = &mut self.rng;
        // 70% INFO, 15% DEBUG, 10% WARN, 5% ERROR.
        let (severity_number, severity_text) = match rng.random_range(0..100u32) {
            0..70 => (9, "INFO"),
            70..85 => (5, "DEBUG"),
            85..95 => (13, "WARN"),
            _ => (17, "ERROR"),
        };
        let method = *weighted(rng, &METHODS);
        let path = pick(rng, &PATHS);
        let status: i64 = match severity_number {
            9 => *pick(rng, &[200, 200, 200, 200, 201, 204, 304]),
            13 => *pick(rng, &[404, 409, 429, 499]),
            17 => *pick(rng, &[500, 502, 503, 504]),
            _ => 200,
        };
        let user = rng.random_range(1..50_000u32);
        let request_id = format!("{:016x}", mix(seq ^ self.run_salt));
        self.body.clear();
        let b = &mut self.body;
        // Writing to a String cannot fail.
        let _ = match severity_number {
            9 if rng.random_bool(0.8) => write!(
                b,
                "10.42.{}.{} - user-{user} \"{method} {}{} HTTP/1.1\" {status} {} \"https://shop.example.com/\" \"{}\" rt={:.3} req_id={request_id}",
                rng.random_range(0..16u32),
                rng.random_range(2..250u32),
                path,
                if path.ends_with(['/', '=']) {
                    rng.random_range(1..100_000u32).to_string()
                } else {
                    String::new()
                },
                rng.random_range(120..90_000u32),
                pick(rng, &AGENTS),
                rng.random_range(1..900u32) as f64 / 1000.0,
            ),
            9 => write!(
                b,
                "{} order_id=ORD-{} items={} total={}.{:02} currency={} customer=user-{user} tier={} channel={} duration_ms={} region=eu-west-{} session={:016x}",
                pick(rng, &EVENTS),
                rng.random_range(100_000..999_999u32),
                rng.random_range(1..9u32),
                rng.random_range(5..900u32),
                rng.random_range(0..100u32),
                pick(rng, &["EUR", "USD", "GBP"]),
                pick(rng, &["bronze", "silver", "gold"]),
                pick(rng, &["web", "ios", "android"]),
                rng.random_range(2..400u32),
                rng.random_range(1..4u32),
                rng.random::<u64>(),
            ),
            5 => write!(
                b,
                "cache lookup key={}:{user}:{} hit={} backend=redis-{}.cache.svc:6379 ttl_ms=30000 elapsed_us={} pool_in_use={}/32 bytes={} caller={}Repository.load request_id={request_id}",
                pick(rng, &CACHE_KEYS),
                rng.random_range(1..1000u32),
                rng.random_bool(0.7),
                rng.random_range(0..3u32),
                rng.random_range(40..5000u32),
                rng.random_range(1..32u32),
                rng.random_range(64..8192u32),
                pick(rng, &["Cart", "Session", "Product", "Price"]),
            ),
            13 if rng.random_bool(0.5) => write!(
                b,
                "slow query on {}-db took {} ms (threshold 500 ms): SELECT id, status, total FROM {} WHERE customer_id = $1 AND created_at > $2 ORDER BY created_at DESC LIMIT {}",
                pick(rng, &["orders", "catalog", "users"]),
                rng.random_range(500..5000u32),
                pick(rng, &TABLES),
                pick(rng, &[20, 50, 100]),
            ),
            13 => write!(
                b,
                "upstream {} responded {status}, retrying in {} ms (attempt {}/5) request_id={request_id} circuit={} queue_depth={} upstream_addr=10.42.{}.{}:8443",
                pick(rng, &UPSTREAMS),
                pick(rng, &[100, 200, 400, 800]),
                rng.random_range(1..5u32),
                pick(rng, &["closed", "half-open"]),
                rng.random_range(0..200u32),
                rng.random_range(0..16u32),
                rng.random_range(2..250u32),
            ),
            _ => match rng.random_range(0..3u32) {
                0 => write!(
                    b,
                    "failed to reserve stock for order ORD-{}: java.lang.IllegalStateException: reservation {} expired\n\tat shop.inventory.ReservationService.commit(ReservationService.java:{})\n\tat shop.checkout.OrderFlow.place(OrderFlow.java:88)",
                    rng.random_range(100_000..999_999u32),
                    rng.random_range(1000..99_999u32),
                    rng.random_range(100..400u32),
                ),
                1 => write!(
                    b,
                    "Traceback (most recent call last):\n  File \"/app/payment/client.py\", line {}, in charge\n    resp = session.post(url, json=body, timeout=5)\nrequests.exceptions.ReadTimeout: HTTPSConnectionPool(host='{}.internal', port=443): Read timed out.",
                    rng.random_range(100..300u32),
                    pick(rng, &UPSTREAMS),
                ),
                _ => write!(
                    b,
                    "panic recovered: runtime error: invalid memory address or nil pointer dereference\ngoroutine {} [running]:\nmain.(*QuoteHandler).Compute(0x0, 0xc000{:06x})\n\t/src/shipping/quote.go:{} +0x1d",
                    rng.random_range(1..20_000u32),
                    rng.random_range(0..0xff_ffffu32),
                    rng.random_range(40..200u32),
                ),
            },
        };
        let (trace_id, span_id) = if rng.random_bool(0.5) {
            let mut t = [0u8; 16];
            let mut s = [0u8; 8];
            rng.fill(&mut t);
            rng.fill(&mut s);
            // All-zero ids are invalid in OTLP.
            t[0] |= 1;
            s[0] |= 1;
            (t.to_vec(), s.to_vec())
        } else {
            (Vec::new(), Vec::new())
        };
        let time_unix_nano = now_ns.saturating_sub(rng.random_range(0..50_000_000u64));
        LogRecord {
            time_unix_nano,
            observed_time_unix_nano: now_ns,
            severity_number,
            severity_text: severity_text.into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(self.body.clone())),
            }),
            attributes: vec![
                kv_str("http.method", method),
                kv_int("http.status_code", status),
                kv_str("user.id", format!("user-{user}")),
                kv_str("request.id", request_id),
                kv_int("loadgen.seq", seq as i64),
                kv_str("loadgen.run", self.run_id.as_str()),
            ],
            trace_id,
            span_id,
            flags: 0,
            ..Default::default()
        }
    }
}

/// The wall clock in Unix nanoseconds.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The resource attributes of service `name`, number `service` of the shop,
/// running as instance `instance`.
pub(crate) fn resource_attributes(service: usize, name: &str, instance: u32) -> Vec<KeyValue> {
    vec![
        kv_str("service.name", name),
        kv_str(
            "service.version",
            format!("2.{}.{}", service % 3, 7 + service),
        ),
        kv_str("service.instance.id", format!("{name}-7d9f8c-{instance}")),
        kv_str(
            "host.name",
            format!("node-{}", (service as u32 + instance) % 5),
        ),
        kv_str("k8s.namespace.name", "shop"),
        kv_str("deployment.environment", "production"),
    ]
}

/// An FNV-1a hash of the run id, mixed into generated ids so that two runs
/// with the same seed do not share them.
pub(crate) fn run_salt(run_id: &str) -> u64 {
    run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// splitmix64's finalizer: a bijection, so distinct sequence numbers give
/// distinct, random-looking request ids.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(crate) fn pick<'a, T>(rng: &mut SmallRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub(crate) fn weighted<'a, T>(rng: &mut SmallRng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (item, w) in items {
        if roll < *w {
            return item;
        }
        roll -= w;
    }
    &items[0].0
}

pub(crate) fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message;

    use super::*;

    fn records(req: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
        req.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .collect()
    }

    fn attr<'a>(r: &'a LogRecord, key: &str) -> &'a any_value::Value {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .unwrap()
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = Workload::new(1, "lgtest").request(0, 200, 1_000_000_000_000);
        let b = Workload::new(1, "lgtest").request(0, 200, 1_000_000_000_000);
        assert_eq!(a, b);
    }

    #[test]
    fn shape_of_a_request() {
        let mut w = Workload::new(42, "lgtest");
        let now = unix_nanos();
        let req = w.request(1000, 2000, now);
        let recs = records(&req);
        assert_eq!(recs.len(), 2000);
        assert_eq!(req.resource_logs.len(), SERVICES.len());

        let seqs: HashSet<i64> = recs
            .iter()
            .map(|r| match attr(r, "loadgen.seq") {
                any_value::Value::IntValue(v) => *v,
                v => panic!("seq is {v:?}"),
            })
            .collect();
        assert_eq!(seqs, (1000..3000).collect());
        let ids: HashSet<_> = recs
            .iter()
            .map(|r| format!("{:?}", attr(r, "request.id")))
            .collect();
        assert_eq!(ids.len(), 2000, "request ids are unique");
        assert!(recs.iter().all(|r| r.attributes.len() == 6));
        assert!(
            recs.iter()
                .all(|r| r.time_unix_nano <= now && r.time_unix_nano > now - 100_000_000)
        );

        let share = |f: &dyn Fn(&LogRecord) -> bool| {
            recs.iter().filter(|r| f(r)).count() as f64 / recs.len() as f64
        };
        let info = share(&|r| r.severity_number == 9);
        let error = share(&|r| r.severity_number == 17);
        let traced = share(&|r| r.trace_id.len() == 16 && r.span_id.len() == 8);
        assert!((0.65..0.75).contains(&info), "info share {info}");
        assert!((0.03..0.07).contains(&error), "error share {error}");
        assert!((0.45..0.55).contains(&traced), "traced share {traced}");

        let body_bytes: usize = recs
            .iter()
            .map(|r| match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.len(),
                _ => 0,
            })
            .sum();
        let body_len = body_bytes as f64 / recs.len() as f64;
        assert!(
            (170.0..240.0).contains(&body_len),
            "mean body length {body_len}"
        );
        let bytes_per_record = req.encoded_len() as f64 / recs.len() as f64;
        assert!(
            (300.0..600.0).contains(&bytes_per_record),
            "{bytes_per_record} protobuf bytes per record"
        );
    }

    #[test]
    fn flattens_with_the_run_attribute() {
        let req = Workload::new(3, "lgflat").request(0, 50, unix_nanos());
        let flat = periscope_proto::flatten_logs(req, 0);
        assert_eq!(flat.len(), 50);
        assert!(
            flat.iter()
                .all(|r| r.attributes.get("loadgen.run") == Some(&serde_json::json!("lgflat")))
        );
        assert!(flat.iter().all(|r| SERVICES.contains(&r.service.as_str())));
    }
}
