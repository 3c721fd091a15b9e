// Trace search: service, operation, tags, duration bounds, status and time
// range; a duration-over-time scatter plot and the list of traces.

import { getJson, iso, isAbort, type TraceSummary } from "../api";
import { Chart } from "../components/chart";
import { emptyState } from "../components/empty";
import { TimePicker } from "../components/timepicker";
import { h, replace, status } from "../dom";
import { formatDuration, formatTime, parseRfc3339Ms, serviceColor } from "../format";
import { navigate, type Page, type PageCtx } from "../router";
import { resolveRange } from "../timerange";
import { readState, writeState } from "../urlstate";

const DEFAULTS = {
  service: "",
  operation: "",
  tags: "",
  min: "",
  max: "",
  status: "",
  from: "now-1h",
  to: "now",
  limit: "50",
  /** Only traces that also pass through this service (set by the service map). */
  with: "",
};
type TraceState = typeof DEFAULTS;

export default function tracesPage(root: HTMLElement, ctx: PageCtx): Page {
  let state: TraceState = readState(ctx.search, DEFAULTS);
  let ctl: AbortController | null = null;
  const go = (changes: Partial<TraceState>) => navigate("/traces" + writeState({ ...state, ...changes }, DEFAULTS));

  const svcSel = h("select", { "aria-label": "Service", "data-testid": "trace-service" }, h("option", { value: "" }, "All services"));
  const opSel = h("select", { "aria-label": "Operation" }, h("option", { value: "" }, "All operations"));
  const tagsIn = h("input", {
    type: "search",
    "data-query": "",
    "aria-label": "Tags",
    placeholder: "tags: http.response.status_code=500 error=true db.system=~post.*",
    spellcheck: "false",
    class: "query",
  });
  const minIn = h("input", { type: "text", "aria-label": "Min duration", placeholder: "min 100ms", size: 8 });
  const maxIn = h("input", { type: "text", "aria-label": "Max duration", placeholder: "max 2s", size: 8 });
  const statusSel = h(
    "select",
    { "aria-label": "Status" },
    h("option", { value: "" }, "Any status"),
    h("option", { value: "error" }, "Errors"),
    h("option", { value: "ok" }, "No errors"),
  );
  const limitSel = h("select", { "aria-label": "Limit" }, ["20", "50", "100", "500"].map((n) => h("option", { value: n }, `${n} traces`)));
  const picker = new TimePicker((r) => go({ from: r.from, to: r.to }));
  const withNote = h("div", { class: "chips" });
  const chartEl = h("div", { class: "chart", "aria-label": "Trace durations over time; click a point to open it" });
  const info = h("div", { class: "resultinfo", role: "status" });
  const list = h("div", { class: "tracelist", "data-testid": "trace-list" });

  const form = h(
    "form",
    {
      class: "toolbar wrap",
      role: "search",
      onsubmit: (e: Event) => {
        e.preventDefault();
        go({
          service: svcSel.value,
          operation: opSel.value,
          tags: tagsIn.value.trim(),
          min: minIn.value.trim(),
          max: maxIn.value.trim(),
          status: statusSel.value,
          limit: limitSel.value,
        });
      },
    },
    svcSel,
    opSel,
    tagsIn,
    minIn,
    maxIn,
    statusSel,
    limitSel,
    picker.el,
    h("button", { type: "submit" }, "Find traces"),
  );
  svcSel.addEventListener("change", () => void loadOperations(svcSel.value, ""));
  replace(root, h("div", { class: "page" }, h("h1", { class: "sr-only" }, "Traces"), form, withNote, chartEl, info, list));

  let shown: TraceSummary[] = [];
  const chart = new Chart(chartEl, { kind: "points", xs: [], series: [], height: 160 });

  let services: string[] = [];
  const servicesReady = getJson<{ services: string[] }>("/api/v1/services")
    .then((r) => {
      services = [...new Set(r.services)].sort();
      for (const s of services) svcSel.append(h("option", { value: s }, s));
      svcSel.value = state.service;
    })
    .catch(() => undefined);

  async function loadOperations(service: string, selected: string) {
    opSel.replaceChildren(h("option", { value: "" }, "All operations"));
    if (!service) return;
    try {
      const r = await getJson<{ operations: string[] }>(`/api/v1/services/${encodeURIComponent(service)}/operations`);
      for (const o of [...r.operations].sort()) opSel.append(h("option", { value: o }, o));
      if (selected && !r.operations.includes(selected)) opSel.append(h("option", { value: selected }, selected));
      opSel.value = selected;
    } catch {
      /* the list stays at "All operations" */
    }
  }

  function sync() {
    if (state.service && ![...svcSel.options].some((o) => o.value === state.service)) {
      svcSel.append(h("option", { value: state.service }, state.service));
    }
    svcSel.value = state.service;
    void loadOperations(state.service, state.operation);
    tagsIn.value = state.tags;
    minIn.value = state.min;
    maxIn.value = state.max;
    statusSel.value = state.status;
    limitSel.value = state.limit;
    picker.set({ from: state.from, to: state.to });
    replace(
      withNote,
      state.with
        ? h(
            "span",
            { class: "chip" },
            `also through ${state.with}`,
            h("button", { type: "button", class: "mini", "aria-label": "Remove", onclick: () => go({ with: "" }) }, "×"),
          )
        : null,
    );
  }

  function drawChart(startMs: number, endMs: number) {
    // One series per root service; x sorted (uPlot wants ascending x).
    const pts = shown
      .map((t) => ({ t, x: parseRfc3339Ms(t.start_time) / 1000 }))
      .sort((a, b) => a.x - b.x);
    const roots = [...new Set(pts.map((p) => p.t.root_service))];
    chart.update({
      kind: "points",
      xs: pts.map((p) => p.x),
      series: roots.map((r) => ({
        label: r,
        color: serviceColor(r),
        values: pts.map((p) => (p.t.root_service === r ? p.t.duration_ns / 1e6 : null)),
      })),
      height: 160,
      xRange: [startMs / 1000, endMs / 1000],
      yFormat: (v) => formatDuration(v * 1e6),
      onSelect: (a, b) => go({ from: String(Math.floor(a * 1000)), to: String(Math.ceil(b * 1000)) }),
      onPick: (_s, i) => navigate(`/traces/${pts[i].t.trace_id}`),
    });
  }

  function traceRow(t: TraceSummary): HTMLElement {
    const ms = parseRfc3339Ms(t.start_time);
    const max = Math.max(...shown.map((x) => x.duration_ns), 1);
    return h(
      "a",
      { class: `traceitem${t.error_count ? " has-error" : ""}`, href: `/traces/${t.trace_id}`, "data-testid": "trace-item" },
      h(
        "div",
        { class: "title" },
        h("span", { class: "svcdot", style: `background:${serviceColor(t.root_service)}` }),
        h("strong", null, `${t.root_service}: ${t.root_operation}`),
        t.http_status_code ? h("span", { class: "badge" }, String(t.http_status_code)) : null,
        t.error_count ? h("span", { class: "badge err" }, `${t.error_count} error${t.error_count > 1 ? "s" : ""}`) : null,
        t.truncated ? h("span", { class: "badge" }, "truncated") : null,
        h("span", { class: "spacer" }),
        h("span", { class: "dur" }, formatDuration(t.duration_ns)),
      ),
      h("div", { class: "durbar" }, h("span", { style: `width:${Math.max(0.5, (100 * t.duration_ns) / max)}%` })),
      h(
        "div",
        { class: "meta" },
        h("span", null, `${t.span_count} span${t.span_count === 1 ? "" : "s"}`),
        h("span", null, formatTime(ms)),
        h("span", { class: "mono muted" }, t.trace_id.slice(0, 12)),
        h("span", { class: "svcs" }, t.services.map((s) => h("span", { class: "svctag", style: `border-color:${serviceColor(s)}` }, s))),
      ),
    );
  }

  async function load() {
    ctl?.abort();
    ctl = new AbortController();
    const signal = ctl.signal;
    const range = resolveRange({ from: state.from, to: state.to }, Date.now());
    if (typeof range === "string") {
      replace(info, status("error", range));
      return;
    }
    replace(info, status("loading", "Searching traces…"));
    try {
      const want = Number(state.limit) || 50;
      const r = await getJson<{ traces: TraceSummary[] }>(
        "/api/v1/traces",
        {
          service: state.service,
          operation: state.operation,
          tags: state.tags,
          min_duration: state.min,
          max_duration: state.max,
          status: state.status,
          start: iso(range.startMs),
          end: iso(range.endMs),
          // The "with" filter is applied here, so ask for more.
          limit: String(state.with ? Math.min(1000, want * 5) : want),
        },
        signal,
      );
      shown = (state.with ? r.traces.filter((t) => t.services.includes(state.with)) : r.traces).slice(0, want);
      list.replaceChildren(...shown.map(traceRow));
      drawChart(range.startMs, range.endMs);
      if (!shown.length) {
        await servicesReady;
        replace(
          info,
          services.length
            ? status("note", "No traces match in this time range. Traces appear a few seconds after their last span.")
            : emptyState("No traces yet", "Periscope has not received any spans."),
        );
      } else {
        replace(info, `${shown.length} trace${shown.length === 1 ? "" : "s"}`);
      }
    } catch (e) {
      if (isAbort(e)) return;
      replace(info, status("error", (e as Error).message));
    }
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
      chart.destroy();
    },
  };
}
