// Logs: query, time range, service and severity filters, a volume histogram
// (drag to zoom), newest-first results with infinite scroll by cursor, rows
// that expand to every attribute with filter for / out, and live tail.

import { getJson, iso, isAbort, type Histogram, type LogHit, type LogPage } from "../api";
import { Chart } from "../components/chart";
import { emptyState } from "../components/empty";
import { kvTable, valueText } from "../components/attrs";
import { TimePicker } from "../components/timepicker";
import { h, replace, status } from "../dom";
import { formatNumber, formatTime, parseRfc3339Ms } from "../format";
import { navigate, type Page, type PageCtx } from "../router";
import { resolveRange, type Resolved } from "../timerange";
import { readState, writeState } from "../urlstate";
import { addTerm, severityClass } from "./logquery";

const DEFAULTS = { q: "", from: "now-1h", to: "now", service: "", severity: "", trace_id: "", live: "" };
type LogState = typeof DEFAULTS;

const SEVERITIES = ["", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
const PAGE = 100;
const TAIL_MS = 2000;

const HELP: [string, string][] = [
  ["timeout", "a word in the body"],
  ['"connection refused"', "a phrase"],
  ["error AND service:checkout", "both (also OR, NOT, parentheses)"],
  ["attributes.http.status_code:500", "an attribute (attributes.<key>:<value>)"],
  ["resource.k8s.namespace.name:shop", "a resource attribute"],
  ["severity_number:[17 TO 24]", "a range"],
  ["span_id:00f067aa0ba902b7", "records of one span (trace_id:… likewise)"],
];

export default function logsPage(root: HTMLElement, ctx: PageCtx): Page {
  let state: LogState = readState(ctx.search, DEFAULTS);
  let ctl: AbortController | null = null;
  let cursor: string | null = null;
  let loading = false;
  let tailTimer = 0;
  let newestNs = "";
  const seen = new Set<string>();
  let shown = 0;

  const go = (changes: Partial<LogState>, replaceEntry = false) =>
    navigate("/logs" + writeState({ ...state, ...changes }, DEFAULTS), replaceEntry);

  const qIn = h("input", {
    type: "search",
    class: "query",
    "data-query": "",
    "data-testid": "log-query",
    "aria-label": "Log query",
    placeholder: 'Search logs: error AND service:checkout, "a phrase", attributes.key:value',
    spellcheck: "false",
  });
  const svcSel = h("select", { "aria-label": "Service", "data-testid": "log-service" }, h("option", { value: "" }, "All services"));
  const sevSel = h(
    "select",
    { "aria-label": "Minimum severity" },
    SEVERITIES.map((s) => h("option", { value: s }, s ? `≥ ${s}` : "Any severity")),
  );
  const picker = new TimePicker((r) => go({ from: r.from, to: r.to }));
  const liveBtn = h("button", { type: "button", class: "ghost", "aria-pressed": "false", title: "Follow new records as they arrive" }, "▶ Live tail");
  const help = h(
    "div",
    { class: "help", hidden: true },
    h("table", { class: "kv" }, h("tbody", null, HELP.map(([q, d]) => h("tr", null, h("th", null, h("code", null, q)), h("td", null, d))))),
  );
  const traceNote = h("div", { class: "chips" });
  const histEl = h("div", { class: "chart", "aria-label": "Log volume; drag to zoom" });
  const info = h("div", { class: "resultinfo", role: "status" });
  const rowsEl = h("div", { class: "logrows", role: "list", "data-testid": "log-rows" });
  const sentinel = h("div", { class: "sentinel" });
  const moreBtn = h("button", { type: "button", class: "ghost", hidden: true, onclick: () => void loadMore() }, "Load older");
  const body = h("div", null, histEl, info, rowsEl, sentinel, moreBtn);

  const form = h(
    "form",
    {
      class: "toolbar",
      role: "search",
      onsubmit: (e: Event) => {
        e.preventDefault();
        go({ q: qIn.value.trim(), service: svcSel.value, severity: sevSel.value });
      },
    },
    qIn,
    h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", class: "ghost", "aria-label": "Query help", onclick: () => (help.hidden = !help.hidden) }, "?"),
    svcSel,
    sevSel,
    picker.el,
    liveBtn,
  );
  svcSel.addEventListener("change", () => go({ service: svcSel.value }));
  sevSel.addEventListener("change", () => go({ severity: sevSel.value }));
  liveBtn.addEventListener("click", () => go(state.live ? { live: "" } : { live: "1", from: state.from, to: "now" }));
  replace(root, h("div", { class: "page" }, h("h1", { class: "sr-only" }, "Logs"), form, help, traceNote, body));

  const chart = new Chart(histEl, {
    kind: "bars",
    xs: [],
    series: [{ label: "records", values: [] }],
    height: 120,
    legend: false,
    yFormat: formatNumber,
    onSelect: (a, b) => go({ from: String(Math.floor(a * 1000)), to: String(Math.ceil(b * 1000)), live: "" }),
  });

  const io = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) void loadMore();
  });
  io.observe(sentinel);

  const servicesReady = getJson<{ services: string[] }>("/api/v1/services")
    .then((r) => {
      const cur = svcSel.value;
      for (const s of [...new Set(r.services)].sort()) svcSel.append(h("option", { value: s }, s));
      svcSel.value = state.service || cur;
    })
    .catch(() => undefined);

  function params(range: Resolved, extra: Record<string, string> = {}) {
    return {
      q: state.q,
      service: state.service,
      severity: state.severity,
      trace_id: state.trace_id,
      start: iso(range.startMs),
      end: iso(range.endMs),
      ...extra,
    };
  }

  function keyOf(hit: LogHit) {
    return `${hit.timestamp}|${hit.service}|${hit.span_id}|${hit.body}`;
  }

  function row(hit: LogHit): HTMLElement {
    const details = h("div", { class: "logdetails", hidden: true });
    const ms = parseRfc3339Ms(hit.timestamp);
    const sev = hit.severity_text || (hit.severity_number ? String(hit.severity_number) : "");
    const line = h(
      "div",
      { class: "logline", role: "button", tabindex: "0", "aria-expanded": "false" },
      h("span", { class: "ts", title: hit.timestamp }, formatTime(ms)),
      h("span", { class: `sev ${severityClass(hit.severity_number)}` }, sev || "—"),
      h("span", { class: "svc" }, hit.service || "—"),
      h("span", { class: "body", "data-testid": "log-body" }, hit.body),
      hit.trace_id
        ? h(
            "a",
            { class: "tracelink", href: `/traces/${hit.trace_id}${hit.span_id ? `?span=${hit.span_id}` : ""}`, title: "Open the trace", "data-testid": "log-trace-link" },
            "trace",
          )
        : null,
    );
    const toggle = () => {
      const open = details.hidden;
      details.hidden = !open;
      line.setAttribute("aria-expanded", String(open));
      if (open && !details.firstChild) fillDetails(details, hit);
    };
    line.addEventListener("click", (e) => {
      if ((e.target as Element).closest("a")) return;
      toggle();
    });
    line.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        toggle();
      } else if (e.key === "ArrowDown" || e.key === "j") {
        e.preventDefault();
        (line.parentElement?.nextElementSibling?.querySelector(".logline") as HTMLElement | null)?.focus();
      } else if (e.key === "ArrowUp" || e.key === "k") {
        e.preventDefault();
        (line.parentElement?.previousElementSibling?.querySelector(".logline") as HTMLElement | null)?.focus();
      }
    });
    return h("div", { class: "logrow", role: "listitem" }, line, details);
  }

  function filterButtons(prefix: string) {
    return (key: string, value: unknown) => {
      const field = `${prefix}.${key}`;
      const v = valueText(value);
      return [
        h("button", { type: "button", class: "mini", title: `Filter for ${field}`, onclick: () => go({ q: addTerm(state.q, field, v, false) }) }, "+"),
        h("button", { type: "button", class: "mini", title: `Filter out ${field}`, onclick: () => go({ q: addTerm(state.q, field, v, true) }) }, "−"),
      ];
    };
  }

  function fillDetails(el: HTMLElement, hit: LogHit) {
    const top: Record<string, unknown> = {
      timestamp: hit.timestamp,
      observed_timestamp: hit.observed_timestamp,
      severity: `${hit.severity_text} (${hit.severity_number})`,
      service: hit.service,
      scope: hit.scope,
      trace_id: hit.trace_id,
      span_id: hit.span_id,
    };
    replace(
      el,
      h("pre", { class: "fullbody" }, hit.body),
      h(
        "div",
        { class: "actions" },
        hit.service ? h("button", { type: "button", class: "ghost", onclick: () => go({ service: hit.service }) }, `Only ${hit.service}`) : null,
        hit.trace_id ? h("a", { href: `/traces/${hit.trace_id}` }, "Open trace") : null,
        hit.trace_id ? h("button", { type: "button", class: "ghost", onclick: () => go({ trace_id: hit.trace_id, q: "" }) }, "Logs of this trace") : null,
      ),
      h("h3", null, "Record"),
      kvTable(top),
      h("h3", null, "Attributes"),
      kvTable(hit.attributes, filterButtons("attributes")),
      h("h3", null, "Resource"),
      kvTable(hit.resource, filterButtons("resource")),
    );
  }

  function addHits(hits: LogHit[], atTop: boolean) {
    const frag = document.createDocumentFragment();
    let added = 0;
    for (const hit of hits) {
      const k = keyOf(hit);
      if (seen.has(k)) continue;
      seen.add(k);
      frag.append(row(hit));
      added++;
      if (!newestNs || hit.timestamp > newestNs) newestNs = hit.timestamp;
    }
    if (atTop) rowsEl.prepend(frag);
    else rowsEl.append(frag);
    shown += added;
    return added;
  }

  function updateInfo(more: boolean) {
    info.textContent = shown ? `${shown} record${shown === 1 ? "" : "s"}${more ? " (scroll for older)" : ""}${state.live ? " · live" : ""}` : "";
  }

  async function load() {
    ctl?.abort();
    ctl = new AbortController();
    const signal = ctl.signal;
    window.clearTimeout(tailTimer);
    cursor = null;
    newestNs = "";
    seen.clear();
    shown = 0;
    moreBtn.hidden = true;
    rowsEl.replaceChildren();
    const range = resolveRange({ from: state.from, to: state.to }, Date.now());
    if (typeof range === "string") {
      replace(info, status("error", range));
      return;
    }
    replace(info, status("loading", "Searching…"));
    loading = true;
    try {
      const [page, hist] = await Promise.all([
        getJson<LogPage>("/api/v1/logs/search", params(range, { limit: String(PAGE) }), signal),
        getJson<Histogram>("/api/v1/logs/histogram", params(range), signal),
      ]);
      chart.update({
        kind: "bars",
        xs: hist.buckets.map((b) => parseRfc3339Ms(b.start) / 1000),
        series: [{ label: "records", values: hist.buckets.map((b) => b.count) }],
        xRange: [range.startMs / 1000, range.endMs / 1000],
        height: 120,
        legend: false,
        yFormat: formatNumber,
        onSelect: (a, b) => go({ from: String(Math.floor(a * 1000)), to: String(Math.ceil(b * 1000)), live: "" }),
      });
      addHits(page.hits, false);
      cursor = page.next_cursor;
      moreBtn.hidden = !cursor;
      if (!page.hits.length) {
        await servicesReady;
        const anyData = svcSel.options.length > 1;
        replace(
          info,
          anyData || state.q || state.trace_id
            ? status("note", "No log records match in this time range.")
            : emptyState("No logs yet", "Periscope has not received any log records."),
        );
      } else {
        updateInfo(!!cursor);
      }
    } catch (e) {
      if (isAbort(e)) return;
      replace(info, status("error", (e as Error).message));
    } finally {
      if (!signal.aborted) loading = false;
    }
    if (state.live && !signal.aborted) tailTimer = window.setTimeout(() => void tail(signal), TAIL_MS);
  }

  async function loadMore() {
    if (loading || !cursor || ctl === null) return;
    const range = resolveRange({ from: state.from, to: state.to }, Date.now());
    if (typeof range === "string") return;
    loading = true;
    const signal = ctl.signal;
    try {
      const page = await getJson<LogPage>("/api/v1/logs/search", params(range, { limit: String(PAGE), cursor }), signal);
      addHits(page.hits, false);
      cursor = page.next_cursor;
      moreBtn.hidden = !cursor;
      updateInfo(!!cursor);
    } catch (e) {
      if (!isAbort(e)) replace(info, status("error", (e as Error).message));
    } finally {
      if (!signal.aborted) loading = false;
    }
  }

  async function tail(signal: AbortSignal) {
    if (signal.aborted || !state.live) return;
    const now = Date.now();
    const start = newestNs ? parseRfc3339Ms(newestNs) : now - 60_000;
    try {
      const page = await getJson<LogPage>(
        "/api/v1/logs/search",
        params({ startMs: start, endMs: now + 1000 }, { limit: "500" }),
        signal,
      );
      if (addHits(page.hits, true)) updateInfo(!!cursor);
    } catch (e) {
      if (isAbort(e)) return;
    }
    if (!signal.aborted) tailTimer = window.setTimeout(() => void tail(signal), TAIL_MS);
  }

  function sync() {
    qIn.value = state.q;
    svcSel.value = state.service;
    if (svcSel.value !== state.service) svcSel.append(h("option", { value: state.service }, state.service)), (svcSel.value = state.service);
    sevSel.value = state.severity;
    picker.set({ from: state.from, to: state.to });
    liveBtn.setAttribute("aria-pressed", String(!!state.live));
    liveBtn.textContent = state.live ? "■ Stop tail" : "▶ Live tail";
    replace(
      traceNote,
      state.trace_id
        ? h(
            "span",
            { class: "chip" },
            "trace ",
            h("a", { href: `/traces/${state.trace_id}` }, state.trace_id),
            h("button", { type: "button", class: "mini", "aria-label": "Remove trace filter", onclick: () => go({ trace_id: "" }) }, "×"),
          )
        : null,
    );
  }

  sync();
  void load();
  return {
    update(c) {
      state = readState(c.search, DEFAULTS);
      sync();
      void load();
    },
    destroy() {
      ctl?.abort();
      window.clearTimeout(tailTimer);
      io.disconnect();
      chart.destroy();
    },
  };
}
