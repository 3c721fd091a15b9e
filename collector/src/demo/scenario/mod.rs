//! The shop's requests: what a browser asks the frontend and what each
//! service then does, with the odds of each error and slow path.
//!
//! ```text
//! browser → frontend ─┬→ redis, postgresql (catalog)
//!                     ├→ cart → redis
//!                     └→ checkout ─┬→ postgresql (orders)
//!                                  ├→ shipping → postgresql (quote, shipment status)
//!                                  ├→ payment ─┬→ postgresql (payments)
//!                                  │           └→ psp.example.net (card charges)
//!                                  └→ kafka `orders` ⇢ shipping ─┬→ postgresql
//!                                                                └→ kafka `shipments`
//! ```
//!
//! The checkout, the deepest request, lives in `checkout.rs`.

mod checkout;

use checkout::checkout;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use rand::Rng;
use rand::rngs::SmallRng;

use super::shop::Svc;
use super::trace::{Db, Query, Reply, SimTrace, SpanRef, TraceBuilder, kv_i64, kv_str};

/// Odds of the failure and slow paths.
const P_CATALOG_CACHE_MISS: f64 = 0.25;
const P_SLOW_CATALOG_QUERY: f64 = 0.04;
const P_REDIS_TIMEOUT: f64 = 0.02;
const P_ORDER_NOT_FOUND: f64 = 0.05;

const PG_CATALOG: Db = Db::Postgres("catalog");
pub(super) const PG_ORDERS: Db = Db::Postgres("orders");
pub(super) const PG_SHIPPING: Db = Db::Postgres("shipping");

const CATEGORIES: [&str; 5] = ["books", "kitchen", "garden", "toys", "outdoor"];

/// Simulates one browser request; the trace's last span ends at `end_ns`.
pub fn simulate(rng: &mut SmallRng, end_ns: u64) -> SimTrace {
    let mut b = TraceBuilder::new(rng);
    let user = format!("u-{}", b.rng.random_range(1000..10000));
    let pick = b.rng.random_range(0..100);
    match pick {
        0..30 => products(&mut b),
        30..52 => view_cart(&mut b, &user),
        52..72 => add_to_cart(&mut b, &user),
        72..88 => checkout(&mut b, &user),
        _ => order_status(&mut b),
    };
    b.finish(end_ns)
}

/// The frontend's access log line for a request it served.
fn access_log(b: &mut TraceBuilder<'_>, server: &SpanRef, method: &str, path: &str, r: &Reply) {
    let (severity, body) = match r.status {
        500.. => (
            SeverityNumber::Error,
            format!(
                "{method} {path} failed with {}: {}",
                r.status,
                r.error.as_deref().unwrap_or("upstream error")
            ),
        ),
        400.. => (
            SeverityNumber::Warn,
            format!("{method} {path} answered {}", r.status),
        ),
        _ => (
            SeverityNumber::Info,
            format!("{method} {path} answered {}", r.status),
        ),
    };
    b.log(
        Svc::Frontend,
        server,
        r.end,
        severity,
        body,
        vec![
            kv_str("http.request.method", method),
            kv_str("url.path", path),
            kv_i64("http.response.status_code", r.status.into()),
        ],
    );
}

/// A browser request to the frontend: `handler` serves it, then the
/// frontend writes its access log.
fn frontend<'r>(
    b: &mut TraceBuilder<'r>,
    method: &'static str,
    route: &'static str,
    path: &str,
    handler: impl FnOnce(&mut TraceBuilder<'r>, &SpanRef, u64) -> Reply,
) {
    let mut root = None;
    let reply = b.http(
        None,
        Svc::Frontend,
        0,
        method,
        route,
        path,
        |b, server, t| {
            root = Some(*server);
            let r = handler(b, server, t);
            Reply {
                end: r.end + b.lat(1.0, 0.4),
                ..r
            }
        },
    );
    if let Some(root) = root {
        access_log(b, &root, method, path, &reply);
    }
}

fn products(b: &mut TraceBuilder<'_>) {
    let category = CATEGORIES[b.rng.random_range(0..CATEGORIES.len())];
    let page = b.rng.random_range(1..6);
    let path = format!("/api/products?category={category}&page={page}");
    frontend(b, "GET", "/api/products", &path, |b, server, t| {
        let key = format!("catalog:{category}:{page}");
        let dur = b.lat(0.5, 0.4);
        let text = format!("GET {key}");
        let mut t = b.db(
            Svc::Frontend,
            server,
            t,
            Db::Redis,
            Query {
                op: "GET",
                target: &key,
                text: &text,
            },
            dur,
            None,
        );
        if b.chance(P_CATALOG_CACHE_MISS) {
            b.log(
                Svc::Frontend,
                server,
                t,
                SeverityNumber::Debug,
                format!("catalog cache miss for {key}"),
                vec![kv_str("cache.key", &key)],
            );
            let slow = b.chance(P_SLOW_CATALOG_QUERY);
            let dur = if slow {
                b.between(800.0, 2400.0)
            } else {
                b.lat(12.0, 0.5)
            };
            let at = t + b.lat(0.1, 0.3);
            t = b.db(
                    Svc::Frontend,
                    server,
                    at,
                    PG_CATALOG,
                    Query {
                        op: "SELECT",
                        target: "products",
                        text: "SELECT id, name, price_cents, stock FROM products WHERE category = $1 ORDER BY popularity DESC LIMIT 24 OFFSET $2",
                    },
                    dur,
                    None,
                );
            if slow {
                b.log(
                    Svc::Frontend,
                    server,
                    t,
                    SeverityNumber::Warn,
                    format!("slow query on catalog.products: {} ms", dur / 1_000_000),
                    vec![
                        kv_str("db.collection.name", "products"),
                        kv_i64("duration_ms", (dur / 1_000_000) as i64),
                    ],
                );
            }
            let text = format!("SET {key} ? EX 300");
            let dur = b.lat(0.5, 0.4);
            let at = t + b.lat(0.3, 0.3);
            t = b.db(
                Svc::Frontend,
                server,
                at,
                Db::Redis,
                Query {
                    op: "SET",
                    target: &key,
                    text: &text,
                },
                dur,
                None,
            );
        }
        Reply::ok(t + b.lat(2.0, 0.5), 200)
    });
}

/// `cart` reading a user's cart from Redis; a Redis timeout answers 503.
fn cart_get(b: &mut TraceBuilder<'_>, parent: &SpanRef, t: u64, user: &str) -> Reply {
    let path = format!("/cart/{user}");
    b.http(
        Some((Svc::Frontend, parent)),
        Svc::Cart,
        t,
        "GET",
        "/cart/{userId}",
        &path,
        |b, server, t| {
            let key = format!("cart:{user}");
            let text = format!("HGETALL {key}");
            if b.chance(P_REDIS_TIMEOUT) {
                let end = b.db(
                    Svc::Cart,
                    server,
                    t,
                    Db::Redis,
                    Query {
                        op: "HGETALL",
                        target: &key,
                        text: &text,
                    },
                    500_000_000,
                    Some(("redis.TimeoutError", "redis: i/o timeout after 500ms")),
                );
                b.log(
                    Svc::Cart,
                    server,
                    end,
                    SeverityNumber::Error,
                    format!("failed to read cart of {user}: redis: i/o timeout after 500ms"),
                    vec![
                        kv_str("user.id", user),
                        kv_str("exception.type", "redis.TimeoutError"),
                        kv_str("exception.message", "redis: i/o timeout after 500ms"),
                    ],
                );
                return Reply::fail(end, 503, "cart store unavailable");
            }
            let dur = b.lat(0.6, 0.4);
            let end = b.db(
                Svc::Cart,
                server,
                t,
                Db::Redis,
                Query {
                    op: "HGETALL",
                    target: &key,
                    text: &text,
                },
                dur,
                None,
            );
            Reply::ok(end, 200)
        },
    )
}

fn view_cart(b: &mut TraceBuilder<'_>, user: &str) {
    frontend(b, "GET", "/api/cart", "/api/cart", |b, server, t| {
        cart_get(b, server, t, user)
    });
}

fn add_to_cart(b: &mut TraceBuilder<'_>, user: &str) {
    let sku = format!("SKU-{}", b.rng.random_range(1000..1300));
    let qty: i64 = b.rng.random_range(1..4);
    frontend(
        b,
        "POST",
        "/api/cart/items",
        "/api/cart/items",
        |b, server, t| {
            let path = format!("/cart/{user}/items");
            b.http(
                Some((Svc::Frontend, server)),
                Svc::Cart,
                t,
                "POST",
                "/cart/{userId}/items",
                &path,
                |b, server, t| {
                    let key = format!("cart:{user}");
                    let text = format!("HINCRBY {key} {sku} {qty}");
                    let dur = b.lat(0.5, 0.4);
                    let t = b.db(
                        Svc::Cart,
                        server,
                        t,
                        Db::Redis,
                        Query {
                            op: "HINCRBY",
                            target: &key,
                            text: &text,
                        },
                        dur,
                        None,
                    );
                    let text = format!("EXPIRE {key} 86400");
                    let dur = b.lat(0.3, 0.4);
                    let at = t + b.lat(0.05, 0.3);
                    let t = b.db(
                        Svc::Cart,
                        server,
                        at,
                        Db::Redis,
                        Query {
                            op: "EXPIRE",
                            target: &key,
                            text: &text,
                        },
                        dur,
                        None,
                    );
                    b.log(
                        Svc::Cart,
                        server,
                        t,
                        SeverityNumber::Info,
                        format!("added {qty} x {sku} to the cart of {user}"),
                        vec![
                            kv_str("user.id", user),
                            kv_str("product.sku", &sku),
                            kv_i64("quantity", qty),
                        ],
                    );
                    Reply::ok(t + b.lat(0.2, 0.3), 201)
                },
            )
        },
    );
}

fn order_status(b: &mut TraceBuilder<'_>) {
    let order = format!("o-{:08x}", b.rng.random::<u32>());
    let path = format!("/api/orders/{order}");
    frontend(b, "GET", "/api/orders/{orderId}", &path, |b, server, t| {
        let inner = format!("/orders/{order}");
        b.http(
                Some((Svc::Frontend, server)),
                Svc::Checkout,
                t,
                "GET",
                "/orders/{orderId}",
                &inner,
                |b, server, t| {
                    let dur = b.lat(2.0, 0.5);
                    let t = b.db(
                        Svc::Checkout,
                        server,
                        t,
                        PG_ORDERS,
                        Query {
                            op: "SELECT",
                            target: "orders",
                            text: "SELECT id, status, items, total_cents, created_at FROM orders WHERE id = $1",
                        },
                        dur,
                        None,
                    );
                    if b.chance(P_ORDER_NOT_FOUND) {
                        b.log(
                            Svc::Checkout,
                            server,
                            t,
                            SeverityNumber::Info,
                            format!("order {order} not found"),
                            vec![kv_str("order.id", &order)],
                        );
                        return Reply::ok(t + b.lat(0.2, 0.3), 404);
                    }
                    let path = format!("/shipments?order={order}");
                    let at = t + b.lat(0.2, 0.3);
                    let s = b.http(
                        Some((Svc::Checkout, server)),
                        Svc::Shipping,
                        at,
                        "GET",
                        "/shipments",
                        &path,
                        |b, server, t| {
                            let dur = b.lat(1.5, 0.5);
                            let end = b.db(
                                Svc::Shipping,
                                server,
                                t,
                                PG_SHIPPING,
                                Query {
                                    op: "SELECT",
                                    target: "shipments",
                                    text: "SELECT id, carrier, status, updated_at FROM shipments WHERE order_id = $1",
                                },
                                dur,
                                None,
                            );
                            Reply::ok(end, 200)
                        },
                    );
                    Reply::ok(s.end + b.lat(0.3, 0.3), 200)
                },
            )
    });
}
