// Metrics: a browser of metric names (type, unit, description; label names
// and values), a PromQL editor with completion, and the result as a line
// chart (legend, hover) or a table.

import {
  getJson,
  isAbort,
  promInstant,
  promLabels,
  promLabelValues,
  promRange,
  type MetricInfo,
  type PromResult,
  type PromSeries,
} from "../api";
import { Chart } from "../components/chart";
import { emptyState } from "../components/empty";
import { TimePicker } from "../components/timepicker";
import { h, replace, status } from "../dom";
import { formatNumber } from "../format";
import { FUNCTIONS, apply, contextAt, rank, type Context } from "../promcomplete";
import { navigate, type Page, type PageCtx } from "../router";
import { pickStep, resolveRange } from "../timerange";
import { readState, writeState } from "../urlstate";

const DEFAULTS = { expr: "", from: "now-1h", to: "now", view: "chart", metric: "" };
type MetricsState = typeof DEFAULTS;
const MAX_SERIES = 40;

/** `name{a="b", c="d"}` for a series. */
export function seriesName(m: Record<string, string>): string {
  const { __name__: name = "", ...rest } = m;
  const labels = Object.entries(rest)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(", ");
  return labels ? `${name}{${labels}}` : name || "{}";
}

export default function metricsPage(root: HTMLElement, ctx: PageCtx): Page {
  let state: MetricsState = readState(ctx.search, DEFAULTS);
  let ctl: AbortController | null = null;
  let metrics: MetricInfo[] = [];
  let chart: Chart | null = null;
  const labelCache = new Map<string, Promise<string[]>>();
  const valueCache = new Map<string, Promise<string[]>>();
  const go = (changes: Partial<MetricsState>, replaceEntry = false) =>
    navigate("/metrics-explorer" + writeState({ ...state, ...changes }, DEFAULTS), replaceEntry);

  // ----- browser -----
  const filterIn = h("input", { type: "search", placeholder: "Filter metrics", "aria-label": "Filter metrics" });
  const nameList = h("ul", { class: "metriclist", "data-testid": "metric-list" });
  const labelBox = h("div", { class: "labelbox" });
  filterIn.addEventListener("input", () => renderNames());
  const browser = h("aside", { class: "browser", "aria-label": "Metric browser" }, filterIn, nameList, labelBox);

  // ----- editor -----
  const editor = h("textarea", {
    class: "promql",
    rows: 3,
    "data-query": "",
    "data-testid": "promql",
    "aria-label": "PromQL expression",
    "aria-autocomplete": "list",
    spellcheck: "false",
    placeholder: "PromQL, e.g. sum by (service) (rate(traces_spanmetrics_calls_total[5m]))  —  Ctrl+Enter runs",
  });
  const suggest = h("ul", { class: "suggest", role: "listbox", hidden: true, "aria-label": "Completions" });
  const picker = new TimePicker((r) => go({ from: r.from, to: r.to }));
  const tabs = (["chart", "table"] as const).map((v) =>
    h("button", { type: "button", role: "tab", class: "tab", "data-view": v, onclick: () => go({ view: v }) }, v === "chart" ? "Chart" : "Table"),
  );
  const info = h("div", { class: "resultinfo", role: "status" });
  const result = h("div", { class: "result", "data-testid": "metric-result" });
  const form = h(
    "form",
    {
      class: "editor",
      onsubmit: (e: Event) => {
        e.preventDefault();
        run();
      },
    },
    h("div", { class: "editwrap" }, editor, suggest),
    h("div", { class: "toolbar" }, h("button", { type: "submit" }, "Run query"), picker.el, h("span", { class: "spacer" }), h("div", { role: "tablist", class: "tabs" }, tabs)),
  );
  replace(root, h("div", { class: "page metricspage" }, h("h1", { class: "sr-only" }, "Metrics"), browser, h("section", { class: "metricmain" }, form, info, result)));

  function run() {
    closeSuggest();
    go({ expr: editor.value.trim() });
  }

  // ----- completion -----
  let items: string[] = [];
  let active = 0;
  let sctx: Context = { kind: "none" };
  let seq = 0;

  function closeSuggest() {
    suggest.hidden = true;
    items = [];
    editor.removeAttribute("aria-activedescendant");
  }

  async function candidates(c: Context): Promise<string[]> {
    if (c.kind === "name") return [...metrics.map((m) => m.name), ...FUNCTIONS];
    if (c.kind === "label") {
      const k = c.metric ?? "";
      if (!labelCache.has(k)) labelCache.set(k, promLabels(c.metric ? c.metric : null).catch(() => []));
      return (await labelCache.get(k)!).filter((l) => l !== "__name__");
    }
    if (c.kind === "value") {
      const k = `${c.metric ?? ""}|${c.label}`;
      if (!valueCache.has(k)) valueCache.set(k, promLabelValues(c.label, c.metric).catch(() => []));
      return valueCache.get(k)!;
    }
    return [];
  }

  async function updateSuggest() {
    const mine = ++seq;
    const c = contextAt(editor.value, editor.selectionStart ?? editor.value.length);
    sctx = c;
    if (c.kind === "none" || (c.kind === "name" && c.prefix.length < 1)) return closeSuggest();
    const all = await candidates(c);
    if (mine !== seq) return;
    items = rank(all, c.prefix, 12).filter((x) => x !== c.prefix || c.kind === "value");
    if (!items.length) return closeSuggest();
    active = 0;
    renderSuggest();
  }

  function renderSuggest() {
    suggest.hidden = false;
    replace(
      suggest,
      items.map((it, i) =>
        h(
          "li",
          {
            id: `sugg-${i}`,
            role: "option",
            "aria-selected": String(i === active),
            class: i === active ? "active" : "",
            onmousedown: (e: Event) => (e.preventDefault(), accept(i)),
          },
          it,
          sctx.kind === "name" ? h("span", { class: "muted" }, metrics.find((m) => m.name === it)?.type ?? (FUNCTIONS.includes(it) ? "function" : "")) : null,
        ),
      ),
    );
    editor.setAttribute("aria-activedescendant", `sugg-${active}`);
  }

  function accept(i: number) {
    const r = apply(editor.value, editor.selectionStart ?? editor.value.length, sctx, items[i]);
    editor.value = r.text;
    editor.setSelectionRange(r.cursor, r.cursor);
    editor.focus();
    closeSuggest();
    void updateSuggest();
  }

  editor.addEventListener("input", () => void updateSuggest());
  editor.addEventListener("blur", () => setTimeout(closeSuggest, 100));
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
      return;
    }
    if (suggest.hidden) {
      if (e.key === " " && e.ctrlKey) {
        e.preventDefault();
        void updateSuggest();
      }
      return;
    }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      renderSuggest();
    } else if (e.key === "Enter" || e.key === "Tab") {
      e.preventDefault();
      accept(active);
    } else if (e.key === "Escape") {
      e.preventDefault();
      closeSuggest();
    }
  });

  // ----- browser -----
  function renderNames() {
    const f = filterIn.value.trim().toLowerCase();
    const shown = metrics.filter((m) => !f || m.name.toLowerCase().includes(f)).slice(0, 500);
    replace(
      nameList,
      shown.map((m) =>
        h(
          "li",
          { class: m.name === state.metric ? "selected" : "" },
          h(
            "button",
            { type: "button", class: "linklike", title: m.description || m.name, onclick: () => go({ metric: m.name, expr: state.expr || m.name }) },
            m.name,
          ),
          h("span", { class: "badge" }, m.type),
          m.unit ? h("span", { class: "muted" }, ` ${m.unit}`) : null,
          m.description ? h("div", { class: "desc muted" }, m.description) : null,
        ),
      ),
    );
  }

  let labelsFor = "";
  async function renderLabels() {
    if (state.metric === labelsFor) return;
    labelsFor = state.metric;
    if (!state.metric) return labelBox.replaceChildren();
    const metric = state.metric;
    const sel = `{__name__=${JSON.stringify(metric)}}`;
    replace(labelBox, status("loading", "Loading labels…"));
    try {
      const names = (await promLabels(sel)).filter((l) => l !== "__name__");
      if (labelsFor !== metric) return;
      const info = metrics.find((m) => m.name === metric);
      replace(
        labelBox,
        h("h3", null, metric),
        info?.description ? h("p", { class: "muted" }, info.description) : null,
        h("p", null, h("span", { class: "badge" }, info?.type ?? "unknown"), info?.unit ? ` unit: ${info.unit}` : ""),
        names.length ? null : h("p", { class: "muted" }, "no labels"),
        names.map((l) => {
          const vals = h("ul", { class: "values" });
          const d = h("details", null, h("summary", null, l), vals);
          d.addEventListener("toggle", async () => {
            if (!d.open || vals.firstChild) return;
            const vs = await promLabelValues(l, sel).catch(() => [] as string[]);
            replace(
              vals,
              vs.slice(0, 200).map((v) =>
                h(
                  "li",
                  null,
                  h(
                    "button",
                    { type: "button", class: "linklike", title: "Query this series", onclick: () => go({ expr: `${metric}{${l}=${JSON.stringify(v)}}` }) },
                    v,
                  ),
                ),
              ),
            );
          });
          return d;
        }),
      );
    } catch (e) {
      replace(labelBox, status("error", (e as Error).message));
    }
  }

  // ----- results -----
  async function load() {
    ctl?.abort();
    ctl = new AbortController();
    const signal = ctl.signal;
    chart?.destroy();
    chart = null;
    result.replaceChildren();
    if (!state.expr) {
      info.replaceChildren();
      if (metrics.length) replace(result, status("note", "Pick a metric on the left or write a PromQL expression, then run it."));
      return;
    }
    const range = resolveRange({ from: state.from, to: state.to }, Date.now());
    if (typeof range === "string") return replace(info, status("error", range));
    replace(info, status("loading", "Running query…"));
    try {
      if (state.view === "table") {
        const r = await promInstant(state.expr, range.endMs, signal);
        renderTable(r);
      } else {
        const step = pickStep(range.startMs, range.endMs);
        const r = await promRange(state.expr, range.startMs, range.endMs, step, signal);
        renderChart(r, range.startMs, range.endMs, step);
      }
    } catch (e) {
      if (isAbort(e)) return;
      replace(info, status("error", (e as Error).message));
    }
  }

  function renderChart(r: PromResult, startMs: number, endMs: number, step: number) {
    const all = r.resultType === "matrix" ? (r.result as PromSeries[]) : [];
    if (!all.length) {
      replace(info, status("note", "The query returned no series in this time range."));
      return;
    }
    const series = all.slice(0, MAX_SERIES);
    const xs: number[] = [];
    for (let t = Math.ceil(startMs / 1000 / step) * step; t <= endMs / 1000 + 1e-9; t += step) xs.push(t);
    const index = new Map(xs.map((x, i) => [x, i]));
    const points = series.reduce((a, s) => a + (s.values?.length ?? 0), 0);
    info.textContent = `${all.length} series${all.length > MAX_SERIES ? ` (first ${MAX_SERIES} drawn)` : ""}, ${points} points, step ${step}s`;
    const el = h("div", { class: "chart big", "data-testid": "metric-chart", "data-points": String(points) });
    result.replaceChildren(el);
    chart = new Chart(el, {
      kind: "line",
      xs,
      series: series.map((s) => {
        const vals: (number | null)[] = xs.map(() => null);
        for (const [t, v] of s.values ?? []) {
          const i = index.get(Math.round(t / step) * step) ?? index.get(t);
          const n = Number(v);
          if (i !== undefined && Number.isFinite(n)) vals[i] = n;
        }
        return { label: seriesName(s.metric), values: vals };
      }),
      height: 320,
      xRange: [startMs / 1000, endMs / 1000],
      yFormat: formatNumber,
      onSelect: (a, b) => go({ from: String(Math.floor(a * 1000)), to: String(Math.ceil(b * 1000)) }),
    });
  }

  function renderTable(r: PromResult) {
    if (r.resultType === "scalar" || r.resultType === "string") {
      const [, v] = r.result as [number, string];
      info.textContent = r.resultType;
      result.replaceChildren(h("p", { class: "scalar" }, v));
      return;
    }
    const rows = (r.result as PromSeries[]).map((s) => ({
      name: seriesName(s.metric),
      value: s.value ? s.value[1] : s.values?.length ? s.values[s.values.length - 1][1] : "",
    }));
    info.textContent = `${rows.length} series at the end of the range`;
    if (!rows.length) return replace(info, status("note", "The query returned no series."));
    result.replaceChildren(
      h(
        "table",
        { class: "grid", "data-testid": "metric-table" },
        h("thead", null, h("tr", null, h("th", null, "Series"), h("th", { class: "num" }, "Value"))),
        h("tbody", null, rows.map((x) => h("tr", null, h("td", { class: "mono" }, x.name), h("td", { class: "num" }, x.value)))),
      ),
    );
  }

  function sync() {
    if (document.activeElement !== editor || !editor.value) editor.value = state.expr;
    picker.set({ from: state.from, to: state.to });
    for (const t of tabs) t.setAttribute("aria-selected", String(t.dataset.view === state.view));
    renderNames();
    void renderLabels();
  }

  void getJson<{ metrics: MetricInfo[] }>("/api/v1/metrics/names")
    .then((r) => {
      metrics = r.metrics.sort((a, b) => a.name.localeCompare(b.name));
      renderNames();
      if (!metrics.length) replace(result, emptyState("No metrics yet", "Periscope has not received any metrics."));
      else if (!state.expr) replace(result, status("note", "Pick a metric on the left or write a PromQL expression, then run it."));
    })
    .catch((e) => replace(nameList, status("error", (e as Error).message)));

  sync();
  void load();
  return {
    update(c) {
      const prev = state;
      state = readState(c.search, DEFAULTS);
      if (prev.expr !== state.expr) editor.value = state.expr;
      sync();
      if (prev.expr !== state.expr || prev.from !== state.from || prev.to !== state.to || prev.view !== state.view) void load();
    },
    destroy() {
      ctl?.abort();
      chart?.destroy();
    },
  };
}
