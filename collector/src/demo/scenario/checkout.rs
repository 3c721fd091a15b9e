//! The checkout: the deepest request of the shop. The frontend reads the
//! cart; `checkout` stores the order, asks `shipping` for a quote, has
//! `payment` charge the card at the payment provider, and publishes the
//! order to Kafka, where `shipping` consumes it. Deadlocks, provider
//! timeouts, slow charges and declined cards happen here.

use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use rand::Rng;

use super::super::shop::Svc;
use super::super::trace::{Db, Query, Reply, SpanRef, TraceBuilder, kv_f64, kv_i64, kv_str};
use super::{PG_ORDERS, PG_SHIPPING, cart_get, frontend};

const P_ORDER_DEADLOCK: f64 = 0.03;
const P_PSP_TIMEOUT: f64 = 0.04;
const P_PSP_SLOW: f64 = 0.08;
const P_CARD_DECLINED: f64 = 0.06;

const PG_PAYMENTS: Db = Db::Postgres("payments");

const COUNTRIES: [&str; 6] = ["DE", "FR", "NL", "US", "GB", "SE"];

pub(super) fn checkout(b: &mut TraceBuilder<'_>, user: &str) {
    let order = format!("o-{:08x}", b.rng.random::<u32>());
    let items: i64 = b.rng.random_range(1..6);
    let total_cents: i64 = items * b.rng.random_range(899..8999);
    let country = COUNTRIES[b.rng.random_range(0..COUNTRIES.len())];
    frontend(
        b,
        "POST",
        "/api/checkout",
        "/api/checkout",
        |b, server, t| {
            let cart = cart_get(b, server, t, user);
            if !cart.is_success() {
                return Reply {
                    end: cart.end + b.lat(0.5, 0.3),
                    ..cart
                };
            }
            let t = cart.end + b.lat(0.3, 0.3);
            let placed = b.http(
                Some((Svc::Frontend, server)),
                Svc::Checkout,
                t,
                "POST",
                "/checkout",
                "/checkout",
                |b, server, t| place_order(b, server, t, &order, items, total_cents, country, user),
            );
            if !placed.is_success() {
                return Reply {
                    end: placed.end + b.lat(0.5, 0.3),
                    ..placed
                };
            }
            // The order is placed: empty the cart.
            let path = format!("/cart/{user}");
            let at = placed.end + b.lat(0.2, 0.3);
            let cleared = b.http(
                Some((Svc::Frontend, server)),
                Svc::Cart,
                at,
                "DELETE",
                "/cart/{userId}",
                &path,
                |b, server, t| {
                    let key = format!("cart:{user}");
                    let text = format!("DEL {key}");
                    let dur = b.lat(0.4, 0.4);
                    let end = b.db(
                        Svc::Cart,
                        server,
                        t,
                        Db::Redis,
                        Query {
                            op: "DEL",
                            target: &key,
                            text: &text,
                        },
                        dur,
                        None,
                    );
                    Reply::ok(end, 204)
                },
            );
            Reply::ok(cleared.end + b.lat(0.5, 0.4), 201)
        },
    );
}

/// `checkout` handling `POST /checkout`: store the order, quote shipping,
/// charge the card, publish the order to Kafka.
#[expect(
    clippy::too_many_arguments,
    reason = "the order's fields, drawn once by the caller"
)]
fn place_order(
    b: &mut TraceBuilder<'_>,
    server: &SpanRef,
    t: u64,
    order: &str,
    items: i64,
    total_cents: i64,
    country: &str,
    user: &str,
) -> Reply {
    let order_attrs = |extra: Vec<_>| {
        let mut v = vec![kv_str("order.id", order), kv_str("user.id", user)];
        v.extend(extra);
        v
    };
    // Store the order.
    let deadlock = b.chance(P_ORDER_DEADLOCK);
    let dur = if deadlock {
        b.between(900.0, 1500.0)
    } else {
        b.lat(4.0, 0.5)
    };
    let t = b.db(
        Svc::Checkout,
        server,
        t,
        PG_ORDERS,
        Query {
            op: "INSERT",
            target: "orders",
            text: "INSERT INTO orders (id, user_id, items, total_cents, currency, status) VALUES ($1, $2, $3, $4, 'EUR', 'pending')",
        },
        dur,
        deadlock.then_some((
            "org.postgresql.util.PSQLException",
            "ERROR: deadlock detected (SQLSTATE 40P01)",
        )),
    );
    if deadlock {
        b.log(
            Svc::Checkout,
            server,
            t,
            SeverityNumber::Error,
            format!("failed to store order {order}: deadlock detected"),
            order_attrs(vec![
                kv_str("exception.type", "org.postgresql.util.PSQLException"),
                kv_str(
                    "exception.message",
                    "ERROR: deadlock detected (SQLSTATE 40P01)",
                ),
            ]),
        );
        b.order_outcome("failed");
        return Reply::fail(t + b.lat(0.5, 0.3), 500, "failed to store the order");
    }

    // Quote shipping.
    let quote_cents: i64 = 299 + 100 * items;
    let path = format!("/shipping/quote?country={country}&items={items}");
    let at = t + b.lat(0.2, 0.3);
    let quote = b.http(
        Some((Svc::Checkout, server)),
        Svc::Shipping,
        at,
        "GET",
        "/shipping/quote",
        &path,
        |b, server, t| {
            let dur = b.lat(2.0, 0.5);
            let end = b.db(
                Svc::Shipping,
                server,
                t,
                PG_SHIPPING,
                Query {
                    op: "SELECT",
                    target: "shipping_rates",
                    text: "SELECT zone, base_cents, per_item_cents FROM shipping_rates WHERE country = $1",
                },
                dur,
                None,
            );
            b.log(
                Svc::Shipping,
                server,
                end,
                SeverityNumber::Info,
                format!(
                    "quote for {items} items to {country}: {}.{:02} EUR",
                    quote_cents / 100,
                    quote_cents % 100
                ),
                vec![
                    kv_str("shipping.country", country),
                    kv_i64("shipping.items", items),
                ],
            );
            Reply::ok(end, 200)
        },
    );

    // Charge the card.
    let amount = format!("{}.{:02}", total_cents / 100, total_cents % 100);
    let at = quote.end + b.lat(0.3, 0.3);
    let paid = b.http(
        Some((Svc::Checkout, server)),
        Svc::Payment,
        at,
        "POST",
        "/payments",
        "/payments",
        |b, server, t| charge(b, server, t, order, &amount),
    );
    if !paid.is_success() {
        let (severity, body, outcome) = if paid.status == 402 {
            (
                SeverityNumber::Warn,
                format!("payment declined for order {order}"),
                "declined",
            )
        } else {
            (
                SeverityNumber::Error,
                format!("payment failed for order {order}: HTTP {}", paid.status),
                "failed",
            )
        };
        let t = paid.end + b.lat(0.3, 0.3);
        let dur = b.lat(3.0, 0.5);
        let end = b.db(
            Svc::Checkout,
            server,
            t,
            PG_ORDERS,
            Query {
                op: "UPDATE",
                target: "orders",
                text: "UPDATE orders SET status = 'cancelled' WHERE id = $1",
            },
            dur,
            None,
        );
        b.log(
            Svc::Checkout,
            server,
            end,
            severity,
            body,
            order_attrs(vec![]),
        );
        b.order_outcome(outcome);
        return match paid.status {
            402 => Reply::ok(end + b.lat(0.3, 0.3), 402),
            _ => Reply::fail(end + b.lat(0.3, 0.3), 502, "payment service failed"),
        };
    }
    let dur = b.lat(3.0, 0.5);
    let at = paid.end + b.lat(0.2, 0.3);
    let t = b.db(
        Svc::Checkout,
        server,
        at,
        PG_ORDERS,
        Query {
            op: "UPDATE",
            target: "orders",
            text: "UPDATE orders SET status = 'paid' WHERE id = $1",
        },
        dur,
        None,
    );

    // Publish the order; shipping consumes it.
    let partition: i64 = b.rng.random_range(0..6);
    let offset: i64 = b.rng.random_range(100_000..900_000);
    let at = t + b.lat(0.1, 0.3);
    let producer = b.open(
        Svc::Checkout,
        Some(server),
        "publish orders",
        SpanKind::Producer,
        at,
        vec![
            kv_str("messaging.system", "kafka"),
            kv_str("messaging.destination.name", "orders"),
            kv_str("messaging.operation.type", "send"),
            kv_str("messaging.operation.name", "send"),
            kv_str("messaging.kafka.message.key", order),
            kv_i64("messaging.destination.partition.id", partition),
            kv_str("server.address", "kafka"),
            kv_i64("server.port", 9092),
        ],
    );
    let sent = t + b.lat(2.0, 0.5);
    b.close(&producer, sent);
    b.log(
        Svc::Checkout,
        server,
        sent,
        SeverityNumber::Info,
        format!("order {order} placed: {items} items, {amount} EUR, shipping to {country}"),
        order_attrs(vec![
            kv_i64("order.items", items),
            kv_f64("order.total", total_cents as f64 / 100.0),
            kv_str("order.currency", "EUR"),
        ]),
    );
    b.order_outcome("placed");
    let consume_at = sent + b.lat(15.0, 0.8);
    consume_order(b, &producer, consume_at, order, partition, offset);
    Reply::ok(sent + b.lat(0.5, 0.3), 201)
}

/// `payment` handling `POST /payments`: store the payment, charge the card
/// at the payment provider, store the result.
fn charge(b: &mut TraceBuilder<'_>, server: &SpanRef, t: u64, order: &str, amount: &str) -> Reply {
    let card = format!("****{:04}", b.rng.random_range(0..10000));
    b.log(
        Svc::Payment,
        server,
        t,
        SeverityNumber::Info,
        format!("charging {amount} EUR for order {order} with card {card}"),
        vec![kv_str("order.id", order), kv_str("payment.card", &card)],
    );
    let dur = b.lat(3.0, 0.5);
    let t = b.db(
        Svc::Payment,
        server,
        t,
        PG_PAYMENTS,
        Query {
            op: "INSERT",
            target: "payments",
            text: "INSERT INTO payments (id, order_id, amount_cents, status) VALUES ($1, $2, $3, 'authorizing')",
        },
        dur,
        None,
    );
    // The payment provider: an external HTTPS API.
    let roll: f64 = b.rng.random();
    let (dur, outcome) = if roll < P_PSP_TIMEOUT {
        (3_000_000_000, 504)
    } else if roll < P_PSP_TIMEOUT + P_CARD_DECLINED {
        (b.lat(180.0, 0.4), 402)
    } else if roll < P_PSP_TIMEOUT + P_CARD_DECLINED + P_PSP_SLOW {
        (b.between(900.0, 2500.0), 200)
    } else {
        (b.lat(140.0, 0.4), 200)
    };
    let start = t + b.lat(0.2, 0.3);
    let psp = b.open(
        Svc::Payment,
        Some(server),
        "POST",
        SpanKind::Client,
        start,
        vec![
            kv_str("http.request.method", "POST"),
            kv_str("url.full", "https://psp.example.net/v1/charges"),
            kv_str("server.address", "psp.example.net"),
            kv_i64("server.port", 443),
            kv_str("network.protocol.version", "2"),
        ],
    );
    let end = start + dur;
    b.close(&psp, end);
    if outcome == 504 {
        let msg = "psp.example.net did not answer within 3000 ms";
        b.error(&psp, msg);
        b.exception(
            &psp,
            end,
            "httpx.ReadTimeout",
            msg,
            &format!("Traceback (most recent call last):\n  File \"/app/payment/psp.py\", line 57, in charge\n    resp = await self.client.post(url, json=body, timeout=3.0)\nhttpx.ReadTimeout: {msg}"),
        );
        b.attrs(&psp, [kv_str("error.type", "httpx.ReadTimeout")]);
        b.log(
            Svc::Payment,
            server,
            end,
            SeverityNumber::Error,
            format!("payment provider timed out for order {order}"),
            vec![
                kv_str("order.id", order),
                kv_str("exception.type", "httpx.ReadTimeout"),
                kv_str("exception.message", msg),
            ],
        );
    } else {
        b.attrs(&psp, [kv_i64("http.response.status_code", outcome.into())]);
        if outcome == 402 {
            b.error(&psp, "HTTP 402");
            b.attrs(&psp, [kv_str("error.type", "402")]);
            b.event(
                &psp,
                end,
                "payment.declined",
                vec![kv_str("decline.code", "insufficient_funds")],
            );
            b.log(
                Svc::Payment,
                server,
                end,
                SeverityNumber::Warn,
                format!("card {card} declined: insufficient_funds"),
                vec![
                    kv_str("order.id", order),
                    kv_str("decline.code", "insufficient_funds"),
                ],
            );
        } else if dur > 800_000_000 {
            b.log(
                Svc::Payment,
                server,
                end,
                SeverityNumber::Warn,
                format!("payment provider slow: {} ms", dur / 1_000_000),
                vec![
                    kv_str("order.id", order),
                    kv_i64("duration_ms", (dur / 1_000_000) as i64),
                ],
            );
        }
    }
    let dur = b.lat(2.5, 0.5);
    let at = end + b.lat(0.2, 0.3);
    let t = b.db(
        Svc::Payment,
        server,
        at,
        PG_PAYMENTS,
        Query {
            op: "UPDATE",
            target: "payments",
            text: "UPDATE payments SET status = $1 WHERE id = $2",
        },
        dur,
        None,
    );
    match outcome {
        504 => Reply::fail(t, 502, "payment provider timed out"),
        402 => Reply::ok(t, 402),
        _ => Reply::ok(t, 201),
    }
}

/// `shipping` consuming the order from Kafka: a consumer span parented to
/// (and linked with) the producer, then a shipment row and an event on the
/// `shipments` topic, which nothing in the shop consumes.
fn consume_order(
    b: &mut TraceBuilder<'_>,
    producer: &SpanRef,
    t: u64,
    order: &str,
    partition: i64,
    offset: i64,
) {
    let consumer = b.open(
        Svc::Shipping,
        Some(producer),
        "process orders",
        SpanKind::Consumer,
        t,
        vec![
            kv_str("messaging.system", "kafka"),
            kv_str("messaging.destination.name", "orders"),
            kv_str("messaging.operation.type", "process"),
            kv_str("messaging.operation.name", "process"),
            kv_str("messaging.consumer.group.name", "shipping"),
            kv_str("messaging.kafka.message.key", order),
            kv_i64("messaging.destination.partition.id", partition),
            kv_i64("messaging.kafka.offset", offset),
        ],
    );
    b.link(
        &consumer,
        producer,
        vec![kv_str("messaging.operation.type", "send")],
    );
    let shipment = format!("s-{:08x}", b.rng.random::<u32>());
    let carrier = ["DHL", "UPS", "PostNL", "Colissimo"][b.rng.random_range(0..4)];
    let dur = b.lat(3.0, 0.5);
    let at = t + b.lat(0.3, 0.3);
    let t = b.db(
        Svc::Shipping,
        &consumer,
        at,
        PG_SHIPPING,
        Query {
            op: "INSERT",
            target: "shipments",
            text: "INSERT INTO shipments (id, order_id, carrier, status) VALUES ($1, $2, $3, 'created')",
        },
        dur,
        None,
    );
    let at = t + b.lat(0.1, 0.3);
    let publish = b.open(
        Svc::Shipping,
        Some(&consumer),
        "publish shipments",
        SpanKind::Producer,
        at,
        vec![
            kv_str("messaging.system", "kafka"),
            kv_str("messaging.destination.name", "shipments"),
            kv_str("messaging.operation.type", "send"),
            kv_str("messaging.operation.name", "send"),
            kv_str("messaging.kafka.message.key", &shipment),
            kv_str("server.address", "kafka"),
            kv_i64("server.port", 9092),
        ],
    );
    let t = t + b.lat(1.5, 0.4);
    b.close(&publish, t);
    b.log(
        Svc::Shipping,
        &consumer,
        t,
        SeverityNumber::Info,
        format!("shipment {shipment} created for order {order} with {carrier}"),
        vec![
            kv_str("order.id", order),
            kv_str("shipment.id", &shipment),
            kv_str("shipment.carrier", carrier),
        ],
    );
    let end = t + b.lat(0.3, 0.3);
    b.close(&consumer, end);
}
