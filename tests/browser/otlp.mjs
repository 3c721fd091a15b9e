// Known records sent through OTLP/HTTP JSON, so the browser test does not
// depend on the demo's random traffic: a trace with a known shape, logs
// (one with an XSS payload) linked to it, and a gauge.

import { randomBytes } from "node:crypto";

const hex = (n) => randomBytes(n).toString("hex");
const kv = (key, v) => ({
  key,
  value: typeof v === "number" ? (Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v }) : { stringValue: String(v) },
});
const attrs = (o) => Object.entries(o).map(([k, v]) => kv(k, v));
const resource = (service) => ({ attributes: attrs({ "service.name": service, "host.name": "ui-test" }) });

async function post(base, path, body) {
  const res = await fetch(`${base}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return text;
}

/**
 * Sends the fixture to the OTLP/HTTP receiver at `base`. Returns what the
 * test checks: the unique term, the trace id and span count, the services,
 * the database node and the metric name.
 */
export async function sendFixture(base) {
  const term = `uitest${hex(4)}`;
  const traceId = hex(16);
  const now = BigInt(Date.now()) * 1_000_000n;
  const ms = (n) => String(now - 3_000_000_000n + BigInt(Math.round(n * 1e6)));
  const id = () => hex(8);
  const web = "uitest-web";
  const api = "uitest-api";
  const db = "uitestdb";
  const root = id();
  const apiClient = id();
  const apiServer = id();
  const q1 = id();
  const q2 = id();
  const render = id();
  const cache = id();
  const span = (spanId, parent, name, kind, start, end, a = {}, error = false) => ({
    traceId,
    spanId,
    parentSpanId: parent,
    name,
    kind,
    startTimeUnixNano: ms(start),
    endTimeUnixNano: ms(end),
    attributes: attrs(a),
    status: error ? { code: 2, message: "card declined" } : {},
    events: name === "GET /checkout" ? [{ timeUnixNano: ms(5), name: "request.received", attributes: attrs({ size: 42 }) }] : [],
  });
  const webSpans = [
    span(root, "", "GET /checkout", 2, 0, 120, { "http.request.method": "GET", "http.route": "/checkout", "http.response.status_code": 500 }, true),
    span(apiClient, root, "POST /orders", 3, 10, 100, { "http.request.method": "POST", "server.address": "uitest-api" }),
    span(render, root, "render", 1, 102, 118),
  ];
  const apiSpans = [
    span(apiServer, apiClient, "POST /orders", 2, 15, 95, { "http.request.method": "POST", "http.route": "/orders" }, true),
    span(q1, apiServer, "SELECT orders", 3, 20, 40, { "db.system": db, "db.statement": "SELECT * FROM orders WHERE id = $1" }),
    span(q2, apiServer, "INSERT orders", 3, 45, 90, { "db.system": db, "db.statement": "INSERT INTO orders VALUES ($1)" }),
    span(cache, apiServer, "cache lookup", 1, 16, 19),
  ];
  await post(base, "/v1/traces", {
    resourceSpans: [
      { resource: resource(web), scopeSpans: [{ scope: { name: "ui-test" }, spans: webSpans }] },
      { resource: resource(api), scopeSpans: [{ scope: { name: "ui-test" }, spans: apiSpans }] },
    ],
  });
  const log = (body, sev, sevText, spanId, extra = {}) => ({
    timeUnixNano: ms(50),
    observedTimeUnixNano: ms(50),
    severityNumber: sev,
    severityText: sevText,
    body: { stringValue: body },
    attributes: attrs({ "test.term": term, ...extra }),
    traceId,
    spanId,
  });
  await post(base, "/v1/logs", {
    resourceLogs: [
      {
        resource: resource(web),
        scopeLogs: [
          {
            scope: { name: "ui-test" },
            logRecords: [
              log(`<script>alert(1)</script> checkout failed ${term}`, 17, "ERROR", root, { "http.route": "/checkout" }),
              log(`<img src=x onerror=alert(2)> payment retry ${term}`, 13, "WARN", apiClient),
            ],
          },
        ],
      },
      {
        resource: resource(api),
        scopeLogs: [{ scope: { name: "ui-test" }, logRecords: [log(`order stored ${term}`, 9, "INFO", q2)] }],
      },
    ],
  });
  const metric = "uitest_queue_depth";
  const points = [-240, -180, -120, -60, -30, 0].map((s, i) => ({
    timeUnixNano: String(now + BigInt(s) * 1_000_000_000n),
    asDouble: 3 + i * 2,
    attributes: attrs({ queue: "orders" }),
  }));
  await post(base, "/v1/metrics", {
    resourceMetrics: [
      {
        resource: resource(api),
        scopeMetrics: [{ scope: { name: "ui-test" }, metrics: [{ name: metric, description: "Orders waiting", gauge: { dataPoints: points } }] }],
      },
    ],
  });
  return { term, traceId, spanCount: webSpans.length + apiSpans.length, web, api, db, metric, logCount: 3 };
}

/** One more log record with `term` in its body (for live tail). */
export async function sendLog(base, term, body) {
  const now = String(BigInt(Date.now()) * 1_000_000n);
  await post(base, "/v1/logs", {
    resourceLogs: [
      {
        resource: resource("uitest-web"),
        scopeLogs: [{ scope: { name: "ui-test" }, logRecords: [{ timeUnixNano: now, observedTimeUnixNano: now, severityNumber: 9, severityText: "INFO", body: { stringValue: `${body} ${term}` } }] }],
      },
    ],
  });
}

/** A trace of `n` spans: a root, `n / 100` children and the rest below them. */
export async function sendBigTrace(base, n) {
  const traceId = hex(16);
  const start = BigInt(Date.now()) * 1_000_000n - 5_000_000_000n;
  const t = (us) => String(start + BigInt(us) * 1000n);
  const root = hex(8);
  const spans = [{ traceId, spanId: root, parentSpanId: "", name: "batch job", kind: 2, startTimeUnixNano: t(0), endTimeUnixNano: t(2_000_000) }];
  const groups = Math.max(1, Math.floor(n / 100));
  const parents = [];
  for (let g = 0; g < groups && spans.length < n; g++) {
    const id = hex(8);
    parents.push(id);
    spans.push({ traceId, spanId: id, parentSpanId: root, name: `chunk ${g}`, kind: 1, startTimeUnixNano: t(g * 1000), endTimeUnixNano: t(g * 1000 + 500_000) });
  }
  for (let i = 0; spans.length < n; i++) {
    const g = i % parents.length;
    spans.push({ traceId, spanId: hex(8), parentSpanId: parents[g], name: `item ${i}`, kind: 3, startTimeUnixNano: t(g * 1000 + (i % 400) * 1000), endTimeUnixNano: t(g * 1000 + (i % 400) * 1000 + 800), attributes: attrs({ "db.system": "uitestbulk" }) });
  }
  // Several requests: one 10,000-span JSON body is a few MB.
  for (let i = 0; i < spans.length; i += 2500) {
    await post(base, "/v1/traces", {
      resourceSpans: [{ resource: resource("uitest-batch"), scopeSpans: [{ scope: { name: "ui-test" }, spans: spans.slice(i, i + 2500) }] }],
    });
  }
  return traceId;
}
