// The web UI end to end: Chromium (Debian's, through playwright-core) against
// a running collector. run.sh starts the collector and passes BASE_URL and
// OTLP_HTTP; this script sends known records, then checks each page.
//
// Checks: log search finds the records; a log line opens its trace with the
// expected span count in the waterfall; the service map shows the expected
// nodes and edges; a metric chart draws points; an XSS payload in a log body
// is shown as text and never runs; back/forward restore the state.
// Screenshots go to tests/browser/screenshots/.

import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { sendBigTrace, sendFixture, sendLog } from "./otlp.mjs";

const BASE = process.env.BASE_URL ?? "http://127.0.0.1:8080";
const OTLP = process.env.OTLP_HTTP ?? "http://127.0.0.1:4318";
const DEMO = process.env.DEMO === "1";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
const DEADLINE_MS = 60_000;

const failures = [];
let current = "";
function check(cond, msg) {
  if (!cond) {
    failures.push(`${current}: ${msg}`);
    console.error(`  FAIL ${msg}`);
  } else {
    console.log(`  ok   ${msg}`);
  }
}

async function until(what, f, timeout = DEADLINE_MS) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

async function api(path) {
  const r = await fetch(`${BASE}${path}`);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

async function step(name, f) {
  current = name;
  console.log(`- ${name}`);
  try {
    await f();
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    console.error(`  FAIL ${e.message}`);
  }
}

mkdirSync(SHOTS, { recursive: true });
const fx = await sendFixture(OTLP);
const bigTrace = await sendBigTrace(OTLP, 10_000);
console.log(`sent fixture: term ${fx.term}, trace ${fx.traceId} (${fx.spanCount} spans)`);

// Wait until the API sees everything (the trace is written after it goes idle).
await until("log records", async () => (await api(`/api/v1/logs/search?q=${fx.term}`)).hits.length >= fx.logCount);
await until("trace by id", async () => (await api(`/api/v1/traces/${fx.traceId}`)).spans.length === fx.spanCount);
await until("service map edges", async () => {
  const m = await api(`/api/v1/service-map`);
  return m.edges.some((e) => e.source === fx.web && e.target === fx.api) && m.edges.some((e) => e.source === fx.api && e.target === fx.db);
});
await until("metric", async () => (await api(`/api/v1/metrics/names`)).metrics.some((m) => m.name === fx.metric));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const dialogs = [];
const pageErrors = [];
page.on("dialog", async (d) => {
  dialogs.push(d.message());
  await d.dismiss();
});
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => {
  if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
});
// Nothing may leave the machine.
await context.route(/^(?!http:\/\/127\.0\.0\.1)/, (route) => route.abort());
page.setDefaultTimeout(20_000);

const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });

await step("logs: search finds the records, payloads are text", async () => {
  await page.goto(`${BASE}/logs`);
  const q = page.getByTestId("log-query");
  await q.fill(fx.term);
  await q.press("Enter");
  await page.waitForURL((u) => u.searchParams.get("q") === fx.term);
  const bodies = page.getByTestId("log-body");
  await until("log rows", async () => (await bodies.count()) === fx.logCount, 20_000);
  check((await bodies.count()) === fx.logCount, `${fx.logCount} records found for ${fx.term}`);
  const texts = await bodies.allTextContents();
  check(texts.some((t) => t.includes(`<script>alert(1)</script> checkout failed ${fx.term}`)), "the <script> body is shown as text");
  check(texts.some((t) => t.includes("<img src=x onerror=alert(2)>")), "the <img onerror> body is shown as text");
  check((await page.locator("main script, main img").count()) === 0, "no script or img element was created from telemetry");
  // The histogram drew (uPlot canvas).
  check((await page.locator(".chart canvas").count()) > 0, "the volume histogram is drawn");
  // Expand a row: attributes with filter buttons.
  await page.locator(".logline", { hasText: "order stored" }).click();
  check(await page.locator(".logdetails:visible table.kv th", { hasText: "test.term" }).first().isVisible(), "an expanded row shows its attributes");
  await shot("logs");
});

await step("logs: back and forward restore the search", async () => {
  const q = page.getByTestId("log-query");
  await q.fill(`${fx.term} AND service:${fx.api}`);
  await q.press("Enter");
  await until("filtered rows", async () => (await page.getByTestId("log-body").count()) === 1, 20_000);
  check((await page.getByTestId("log-body").count()) === 1, "the narrower query shows one record");
  await page.goBack();
  await page.waitForURL((u) => u.searchParams.get("q") === fx.term);
  await until("restored rows", async () => (await page.getByTestId("log-body").count()) === fx.logCount, 20_000);
  check((await q.inputValue()) === fx.term, "back restores the query box");
  check((await page.getByTestId("log-body").count()) === fx.logCount, "back restores the results");
  await page.goForward();
  await until("forward rows", async () => (await page.getByTestId("log-body").count()) === 1, 20_000);
  check((await q.inputValue()) === `${fx.term} AND service:${fx.api}`, "forward restores the narrower query");
  await page.goBack();
  await until("rows again", async () => (await page.getByTestId("log-body").count()) === fx.logCount, 20_000);
});

await step("logs: live tail shows new records", async () => {
  await page.getByRole("button", { name: /Live tail/ }).click();
  await page.waitForURL((u) => u.searchParams.get("live") === "1");
  await sendLog(OTLP, fx.term, "tailed record");
  const tailed = page.getByTestId("log-body").filter({ hasText: "tailed record" });
  await until("tailed record", async () => (await tailed.count()) === 1, 20_000);
  check((await tailed.count()) === 1, "a record sent after the page loaded appears");
  await page.getByRole("button", { name: /Stop tail/ }).click();
  await page.waitForURL((u) => !u.searchParams.has("live"));
  fx.logCount += 1;
  await until("rows", async () => (await page.getByTestId("log-body").count()) === fx.logCount, 20_000);
});

if (DEMO) {
  await step("logs: infinite scroll pages by cursor", async () => {
    const p2 = await context.newPage();
    await p2.goto(`${BASE}/logs`);
    const rows = p2.getByTestId("log-body");
    await until("first page", async () => (await rows.count()) === 100, 20_000);
    check((await rows.count()) === 100, "the first page holds 100 records");
    await p2.locator(".sentinel").scrollIntoViewIfNeeded();
    await until("second page", async () => (await rows.count()) > 100, 20_000).catch(() => undefined);
    check((await rows.count()) > 100, `scrolling loads older records (${await rows.count()})`);
    await p2.close();
  });
}

await step("trace: a log line opens its waterfall", async () => {
  const row = page.locator(".logline", { hasText: "<script>alert(1)</script>" });
  await row.getByTestId("log-trace-link").click();
  await page.waitForURL(new RegExp(`/traces/${fx.traceId}`));
  const count = page.getByTestId("span-count");
  await count.waitFor();
  check((await count.textContent()) === String(fx.spanCount), `the header says ${fx.spanCount} spans`);
  await until("waterfall rows", async () => (await page.locator(".wf-row").count()) === fx.spanCount, 10_000);
  check((await page.locator(".wf-row").count()) === fx.spanCount, `the waterfall has ${fx.spanCount} rows`);
  check((await page.locator(".wf-row.error").count()) === 2, "both error spans are highlighted");
  check((await page.locator(".wf-row.selected").count()) === 1, "the log's span is selected");
  await page.locator(".wf-row", { hasText: "INSERT orders" }).click();
  await page.waitForURL(/span=/);
  check(await page.locator(".spandetails", { hasText: "INSERT INTO orders" }).isVisible(), "span details show attributes");
  // Keyboard: collapse the api server span's subtree.
  await page.locator(".wf-row", { hasText: "uitest-api" }).filter({ hasText: "POST /orders" }).click();
  await page.getByTestId("waterfall").press("ArrowLeft");
  await until("collapsed", async () => (await page.locator(".wf-row").count()) === fx.spanCount - 3, 5000);
  check((await page.locator(".wf-row").count()) === fx.spanCount - 3, "ArrowLeft collapses a subtree");
  await page.getByTestId("waterfall").press("ArrowRight");
  await shot("trace");
  // Selecting spans replaces the history entry: one step back is the log search.
  await page.goBack();
  await page.waitForURL(/\/logs/);
  await until("logs after back", async () => (await page.getByTestId("log-body").count()) === fx.logCount, 20_000);
  check((await page.getByTestId("log-query").inputValue()) === fx.term, "back from the trace returns to the log search");
});

await step("trace: 10,000 spans open fast and scroll", async () => {
  await until("big trace", async () => (await api(`/api/v1/traces/${bigTrace}`)).spans.length === 10_000, 60_000);
  await page.goto(`${BASE}/traces/${bigTrace}`);
  const count = page.getByTestId("span-count");
  await count.waitFor({ timeout: 30_000 });
  check((await count.textContent()) === "10000", "the header says 10000 spans");
  const wf = page.getByTestId("waterfall");
  const ms = Number(await wf.getAttribute("data-render-ms"));
  check(ms > 0 && ms < 1000, `built and drawn in under a second (${ms} ms)`);
  const rendered = await page.locator(".wf-row").count();
  check(rendered > 10 && rendered < 200, `only the rows in view exist (${rendered})`);
  await page.getByRole("button", { name: "Expand all" }).click();
  const t0 = Date.now();
  for (let i = 0; i < 20; i++) await wf.evaluate((el, y) => (el.scrollTop = y), i * 5000);
  await page.waitForFunction(() => document.querySelectorAll(".wf-row").length > 10);
  const scrollMs = Date.now() - t0;
  check(scrollMs < 3000, `20 jumps through the expanded trace took ${scrollMs} ms`);
  check((await page.locator(".wf-row").count()) < 200, "rows stay virtualised when expanded");
  await shot("trace-10k");
});

await step("traces: search lists the trace", async () => {
  await page.goto(`${BASE}/traces?service=${fx.web}`);
  const item = page.getByTestId("trace-item").filter({ hasText: fx.traceId.slice(0, 12) });
  await until("trace item", async () => (await item.count()) === 1, 20_000);
  check((await item.count()) === 1, "the trace is in the results");
  check((await item.textContent()).includes(`${fx.spanCount} spans`), "with its span count");
  check((await page.locator(".chart canvas").count()) > 0, "the duration scatter plot is drawn");
  await shot("traces");
});

await step("service map: nodes and edges", async () => {
  await page.goto(`${BASE}/map?from=now-1h`);
  const edge = (s, t) => page.locator(`[data-testid=map-edge][data-source="${s}"][data-target="${t}"]`);
  await until("edges", async () => (await edge(fx.web, fx.api).count()) === 1, 20_000);
  check((await edge(fx.web, fx.api).count()) === 1, `edge ${fx.web} → ${fx.api}`);
  check((await edge(fx.api, fx.db).count()) === 1, `edge ${fx.api} → ${fx.db}`);
  const node = (n) => page.locator(`[data-testid=map-node][data-node="${n}"]`);
  check((await node(fx.db).getAttribute("data-kind")) === "database", `${fx.db} is a database node`);
  if (DEMO) {
    for (const n of ["frontend", "cart", "checkout", "payment", "shipping"]) {
      await until(`node ${n}`, async () => (await node(n).count()) === 1, 30_000).catch(() => undefined);
      check((await node(n).count()) === 1, `demo service ${n} is on the map`);
    }
    const kinds = await page.locator("[data-testid=map-node]").evaluateAll((els) => els.map((e) => `${e.dataset.node}:${e.dataset.kind}`));
    check(kinds.some((k) => /postgres/i.test(k) && k.endsWith(":database")), "a PostgreSQL database node");
    check(kinds.some((k) => /redis/i.test(k) && k.endsWith(":database")), "a Redis database node");
  }
  check((await page.locator("[data-testid=service-map] canvas").count()) > 0, "the graph is drawn");
  await node(fx.api).getByRole("button").click();
  await page.waitForURL(/node=/);
  await until("RED charts", async () => (await page.locator(".nodepanel .chart canvas").count()) >= 3, 20_000);
  check((await page.locator(".nodepanel .chart canvas").count()) >= 3, "a node opens its RED charts");
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot("service-map");
  await page.locator(`[data-testid=map-edge][data-source="${fx.web}"][data-target="${fx.api}"] a`).click();
  await page.waitForURL(/\/traces\?/);
  const item = page.getByTestId("trace-item").filter({ hasText: fx.traceId.slice(0, 12) });
  await until("edge traces", async () => (await item.count()) === 1, 20_000);
  check((await item.count()) === 1, "an edge opens the traces between the two services");
});

await step("metrics: completion, chart and table", async () => {
  await page.goto(`${BASE}/metrics-explorer?from=now-15m`);
  await page.getByTestId("metric-list").getByText(fx.metric).waitFor();
  const editor = page.getByTestId("promql");
  await editor.fill("");
  await editor.pressSequentially("uitest_q");
  await page.locator(".suggest li", { hasText: fx.metric }).waitFor();
  await editor.press("Enter");
  check((await editor.inputValue()) === fx.metric, "completion fills in the metric name");
  await editor.press("Control+Enter");
  const chart = page.getByTestId("metric-chart");
  await chart.waitFor();
  const points = Number(await chart.getAttribute("data-points"));
  check(points >= 3, `the chart has points (${points})`);
  check((await chart.locator("canvas").count()) > 0, "the chart is drawn");
  // The canvas holds drawn pixels of the series colour.
  const drawn = await chart.locator("canvas").first().evaluate((c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 120) n++;
    return n;
  });
  check(drawn > 20, `the line is drawn (${drawn} blue pixels)`);
  await shot("metrics");
  await page.getByRole("tab", { name: "Table" }).click();
  await page.getByTestId("metric-table").waitFor();
  check((await page.getByTestId("metric-table").textContent()).includes('queue="orders"'), "the table lists the series");
  await page.goBack();
  await page.getByTestId("metric-chart").waitFor();
  check(true, "back returns to the chart view");
});

await step("theme and empty tenant", async () => {
  await page.goto(`${BASE}/map?from=now-1h`);
  await page.getByRole("button", { name: /Theme/ }).click();
  const theme = await page.evaluate(() => document.documentElement.dataset.theme);
  check(theme === "dark" || theme === "light", `theme switches (${theme})`);
  await page.locator("[data-testid=map-edge]").first().waitFor();
  await shot(`service-map-${theme}`);
  await context.setExtraHTTPHeaders({ "X-Scope-OrgID": "empty-tenant" });
  await page.setViewportSize({ width: 1920, height: 1080 });
  await page.goto(`${BASE}/logs`);
  await page.getByTestId("empty-state").waitFor();
  check((await page.getByTestId("empty-state").textContent()).includes("OTEL_EXPORTER_OTLP_ENDPOINT"), "an empty tenant shows how to send data");
  await shot("empty-logs");
});

current = "whole run";
check(dialogs.length === 0, `no dialog opened (${dialogs.join(", ")})`);
check(pageErrors.length === 0, `no page errors (${pageErrors.join(" | ")})`);
await browser.close();
if (failures.length) {
  console.error(`\n${failures.length} failure(s):\n${failures.map((f) => `  - ${f}`).join("\n")}`);
  process.exit(1);
}
console.log(`\nall checks passed; screenshots in ${SHOTS}`);
