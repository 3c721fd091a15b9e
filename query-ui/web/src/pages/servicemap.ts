// The service map: services and virtual nodes (databases, queues, external
// peers) laid out in layers by dagre, edges labelled with rate, errors and
// p95; focus on a service and its neighbours; a node's RED charts and top
// operations; an edge's traces. The same map is listed as text below the
// drawing (for keyboard and screen-reader use).

import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import { getJson, iso, isAbort, promInstant, promRange, type MapNode, type PromSeries, type ServiceMap } from "../api";
import { Chart } from "../components/chart";
import { emptyState } from "../components/empty";
import { TimePicker } from "../components/timepicker";
import { h, replace, status } from "../dom";
import { formatDuration, formatNumber } from "../format";
import { edgeLabel, edgeTracesQuery, formatRate, neighbourhood, nodeColor, nodeSize, restrict } from "../graph";
import { navigate, type Page, type PageCtx } from "../router";
import { cssVar, onThemeChange } from "../theme";
import { pickStep, resolveRange, type Resolved } from "../timerange";
import { readState, writeState } from "../urlstate";

cytoscape.use(dagre);

const DEFAULTS = { from: "now-15m", to: "now", focus: "", hops: "1", node: "" };
type MapState = typeof DEFAULTS;
const REFRESH_MS = 15_000;

const SHAPES: Record<MapNode["kind"], string> = {
  service: "ellipse",
  database: "barrel",
  messaging: "round-diamond",
  external: "round-hexagon",
};

export default function serviceMapPage(root: HTMLElement, ctx: PageCtx): Page {
  let state: MapState = readState(ctx.search, DEFAULTS);
  let ctl: AbortController | null = null;
  let map: ServiceMap = { nodes: [], edges: [] };
  let range: Resolved | null = null;
  let cy: cytoscape.Core | null = null;
  let timer = 0;
  let drawnKey = "";
  const charts: Chart[] = [];
  const go = (changes: Partial<MapState>, replaceEntry = false) =>
    navigate("/map" + writeState({ ...state, ...changes }, DEFAULTS), replaceEntry);

  const picker = new TimePicker((r) => go({ from: r.from, to: r.to }));
  const focusSel = h("select", { "aria-label": "Focus on a service" }, h("option", { value: "" }, "Whole map"));
  const hopsIn = h("input", { type: "number", min: 1, max: 6, "aria-label": "Hops", size: 2, class: "hops" });
  focusSel.addEventListener("change", () => go({ focus: focusSel.value }));
  hopsIn.addEventListener("change", () => go({ hops: String(Math.max(1, Math.min(6, Number(hopsIn.value) || 1))) }));
  const info = h("div", { class: "resultinfo", role: "status" });
  const canvas = h("div", { class: "mapcanvas", "data-testid": "service-map", "aria-hidden": "true" });
  const panel = h("aside", { class: "nodepanel", "aria-label": "Node details" });
  const listing = h("div", { class: "maplisting" });
  replace(
    root,
    h(
      "div",
      { class: "page" },
      h("h1", { class: "sr-only" }, "Service map"),
      h(
        "div",
        { class: "toolbar" },
        h("label", null, "Focus ", focusSel),
        h("label", null, "within ", hopsIn, " hops"),
        picker.el,
        h("button", { type: "button", class: "ghost", onclick: () => void load() }, "↻ Refresh"),
      ),
      info,
      h("div", { class: "mapview" }, canvas, panel),
      listing,
    ),
  );
  // The canvas narrows when the node panel opens: fit the map again.
  const mapRo = new ResizeObserver(() => {
    if (!cy) return;
    cy.resize();
    fit();
  });
  mapRo.observe(canvas);
  const offTheme = onThemeChange(() => {
    drawnKey = "";
    draw();
  });

  function windowS() {
    return range ? (range.endMs - range.startMs) / 1000 : 900;
  }

  function shown(): ServiceMap {
    if (!state.focus || !map.nodes.some((n) => n.id === state.focus)) return map;
    return restrict(map, neighbourhood(map, state.focus, Number(state.hops) || 1));
  }

  function draw() {
    const m = shown();
    const maxReq = Math.max(0, ...m.nodes.map((n) => n.requests));
    const structure = JSON.stringify([m.nodes.map((n) => n.id), m.edges.map((e) => `${e.source}>${e.target}`)]);
    const firstDraw = !cy || structure !== drawnKey;
    drawnKey = structure;
    const text = cssVar("--fg") || "#222";
    const bg = cssVar("--bg") || "#fff";
    const muted = cssVar("--muted") || "#888";
    const elements: cytoscape.ElementDefinition[] = [
      ...m.nodes.map((n) => ({
        data: {
          id: n.id,
          label: `${n.id}\n${formatRate(n.requests, windowS())}${n.errors ? ` · ${((100 * n.errors) / Math.max(1, n.requests)).toFixed(1)}% err` : ""}`,
          size: nodeSize(n.requests, maxReq),
          color: nodeColor(n),
          shape: SHAPES[n.kind] ?? "ellipse",
        },
        classes: `${n.kind}${n.id === state.node ? " picked" : ""}${n.id === state.focus ? " focus" : ""}`,
      })),
      ...m.edges.map((e) => ({
        data: {
          id: `${e.source}->${e.target}`,
          source: e.source,
          target: e.target,
          label: edgeLabel(e, windowS()),
          color: e.errors ? nodeColor({ id: "", kind: "service", requests: e.requests, errors: e.errors }) : muted,
        },
      })),
    ];
    const style: cytoscape.StylesheetJson = [
      {
        selector: "node",
        style: {
          label: "data(label)",
          width: "data(size)",
          height: "data(size)",
          shape: "data(shape)" as never,
          "background-color": "data(color)",
          color: text,
          "font-size": 11,
          "text-wrap": "wrap",
          "text-valign": "bottom",
          "text-margin-y": 4,
          "text-background-color": bg,
          "text-background-opacity": 0.8,
          "text-background-padding": "2px",
          "border-width": 2,
          "border-color": bg,
        },
      },
      { selector: "node.picked", style: { "border-color": text, "border-width": 3 } },
      { selector: "node.focus", style: { "border-style": "double", "border-width": 5, "border-color": text } },
      {
        selector: "edge",
        style: {
          label: "data(label)",
          width: 2,
          "curve-style": "bezier",
          "target-arrow-shape": "triangle",
          "line-color": "data(color)",
          "target-arrow-color": "data(color)",
          "font-size": 9,
          color: muted,
          "text-rotation": "autorotate",
          "text-background-color": bg,
          "text-background-opacity": 0.85,
          "text-background-padding": "1px",
        },
      },
      { selector: "edge:selected, edge:active", style: { width: 4 } },
    ];
    if (!firstDraw && cy) {
      // Same graph: update labels and colours in place, keep the layout.
      cy.batch(() => {
        for (const el of elements) {
          const c = cy!.getElementById(el.data.id!);
          c.data(el.data);
          if (el.classes !== undefined) c.classes(el.classes as string);
        }
      });
      cy.style(style);
      return;
    }
    cy?.destroy();
    cy = cytoscape({
      container: canvas,
      elements,
      style,
      layout: { name: "dagre", rankDir: "LR", nodeSep: 40, rankSep: 140, padding: 20 } as cytoscape.LayoutOptions,
      wheelSensitivity: 0.3,
      minZoom: 0.2,
      maxZoom: 3,
    });
    cy.one("layoutstop", fit);
    cy.on("tap", "node", (e) => go({ node: e.target.id() }, true));
    cy.on("tap", "edge", (e) => openEdge(e.target.data("source"), e.target.data("target")));
    cy.on("tap", (e) => {
      if (e.target === cy) go({ node: "" }, true);
    });
  }

  /** Fits the map to the canvas, but never blows a small map up beyond readable text. */
  function fit() {
    if (!cy) return;
    cy.fit(undefined, 20);
    if (cy.zoom() > 1.1) {
      cy.zoom(1.1);
      cy.center();
    }
  }

  function openEdge(source: string, target: string) {
    const e = map.edges.find((x) => x.source === source && x.target === target);
    if (!e) return;
    const kind = map.nodes.find((n) => n.id === target)?.kind;
    navigate(`/traces?${edgeTracesQuery(e, kind, state.from, state.to)}`);
  }

  function list() {
    const m = shown();
    const w = windowS();
    replace(
      listing,
      h("h2", null, "Edges"),
      m.edges.length
        ? h(
            "table",
            { class: "grid", "data-testid": "map-edges" },
            h("thead", null, h("tr", null, ["From", "To", "Rate", "Errors", "p50", "p95", "p99", ""].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              m.edges.map((e) =>
                h(
                  "tr",
                  { "data-testid": "map-edge", "data-source": e.source, "data-target": e.target },
                  h("td", null, nodeButton(e.source)),
                  h("td", null, nodeButton(e.target)),
                  h("td", { class: "num" }, formatRate(e.requests, w)),
                  h("td", { class: "num" }, e.requests ? `${((100 * e.errors) / e.requests).toFixed(1)}%` : "–"),
                  ...[e.p50_ms, e.p95_ms, e.p99_ms].map((v) => h("td", { class: "num" }, v === null ? "–" : formatDuration(v * 1e6))),
                  h("td", null, h("a", { href: `/traces?${edgeTracesQuery(e, m.nodes.find((n) => n.id === e.target)?.kind, state.from, state.to)}` }, "traces")),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No calls between services in this window."),
      h("h2", null, "Nodes"),
      h(
        "ul",
        { class: "nodelist" },
        m.nodes.map((n) =>
          h("li", { "data-testid": "map-node", "data-node": n.id, "data-kind": n.kind }, nodeButton(n.id), ` ${n.kind} · ${formatRate(n.requests, w)} · ${n.errors} errors`),
        ),
      ),
    );
  }

  function nodeButton(id: string) {
    return h("button", { type: "button", class: "linklike", onclick: () => go({ node: id }, true) }, id);
  }

  function sync() {
    picker.set({ from: state.from, to: state.to });
    hopsIn.value = state.hops;
    const ids = map.nodes.map((n) => n.id).sort();
    focusSel.replaceChildren(h("option", { value: "" }, "Whole map"), ...ids.map((id) => h("option", { value: id }, id)));
    if (state.focus && !ids.includes(state.focus)) focusSel.append(h("option", { value: state.focus }, state.focus));
    focusSel.value = state.focus;
  }

  async function load() {
    ctl?.abort();
    ctl = new AbortController();
    const signal = ctl.signal;
    window.clearTimeout(timer);
    const r = resolveRange({ from: state.from, to: state.to }, Date.now());
    if (typeof r === "string") {
      replace(info, status("error", r));
      return;
    }
    range = r;
    if (!map.nodes.length) replace(info, status("loading", "Loading the service map…"));
    try {
      map = await getJson<ServiceMap>("/api/v1/service-map", { start: iso(r.startMs), end: iso(r.endMs) }, signal);
      sync();
      if (!map.nodes.length) {
        cy?.destroy();
        cy = null;
        drawnKey = "";
        canvas.hidden = true;
        replace(info, emptyState("No services yet", "The map is drawn from traces; none were written in this time range."));
        listing.replaceChildren();
      } else {
        canvas.hidden = false;
        info.textContent = `${map.nodes.length} nodes, ${map.edges.length} edges · ${new Date().toLocaleTimeString()}`;
        draw();
        list();
      }
      void showPanel();
    } catch (e) {
      if (isAbort(e)) return;
      replace(info, status("error", (e as Error).message));
    }
    if (state.to.startsWith("now") && !signal.aborted) timer = window.setTimeout(() => void load(), REFRESH_MS);
  }

  let panelKey = "";
  async function showPanel() {
    const node = map.nodes.find((n) => n.id === state.node);
    const key = `${state.node}|${state.from}|${state.to}|${range?.startMs}`;
    if (!node || !range) {
      charts.splice(0).forEach((c) => c.destroy());
      panel.classList.remove("open");
      replace(panel, h("p", { class: "muted" }, "Click a node for its rate, errors and latency; click an edge for its traces."));
      panelKey = "";
      return;
    }
    if (key === panelKey) return;
    panelKey = key;
    panel.classList.add("open");
    charts.splice(0).forEach((c) => c.destroy());
    const rateEl = h("div", { class: "chart" });
    const errEl = h("div", { class: "chart" });
    const latEl = h("div", { class: "chart" });
    const ops = h("div");
    const note = h("div");
    replace(
      panel,
      h("div", { class: "titleline" }, h("h3", null, node.id), h("button", { type: "button", class: "mini", "aria-label": "Close", onclick: () => go({ node: "" }, true) }, "×")),
      h(
        "p",
        { class: "meta" },
        h("span", null, node.kind),
        h("a", { href: `/traces?service=${encodeURIComponent(node.id)}&from=${state.from}&to=${state.to}` }, "Traces"),
        node.kind === "service" ? h("a", { href: `/logs?service=${encodeURIComponent(node.id)}&from=${state.from}&to=${state.to}` }, "Logs") : null,
        h("button", { type: "button", class: "mini", onclick: () => go({ focus: node.id }) }, "Focus here"),
      ),
      note,
      h("h4", null, "Requests per second"),
      rateEl,
      h("h4", null, "Errors per second"),
      errEl,
      h("h4", null, "Latency p50 / p95 / p99"),
      latEl,
      node.kind === "service" ? h("h4", null, "Top operations") : null,
      ops,
    );
    const r = range;
    const step = pickStep(r.startMs, r.endMs, 120);
    const w = `${Math.max(60, step * 2)}s`;
    const q = JSON.stringify(node.id);
    const kinds = `span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"`;
    const exprs =
      node.kind === "service"
        ? {
            rate: `sum(rate(traces_spanmetrics_calls_total{service=${q},${kinds}}[${w}]))`,
            err: `sum(rate(traces_spanmetrics_calls_total{service=${q},${kinds},status_code="STATUS_CODE_ERROR"}[${w}])) or vector(0)`,
            lat: (p: number) => `histogram_quantile(${p}, sum by (le) (rate(traces_spanmetrics_latency_bucket{service=${q},${kinds}}[${w}])))`,
          }
        : {
            rate: `sum(rate(traces_service_graph_request_total{server=${q}}[${w}]))`,
            err: `sum(rate(traces_service_graph_request_failed_total{server=${q}}[${w}])) or vector(0)`,
            lat: (p: number) => `histogram_quantile(${p}, sum by (le) (rate(traces_service_graph_request_server_seconds_bucket{server=${q}}[${w}])))`,
          };
    const series = async (expr: string) => {
      const res = await promRange(expr, r.startMs, r.endMs, step);
      return (res.result as PromSeries[])[0]?.values ?? [];
    };
    try {
      const [rate, err, p50, p95, p99] = await Promise.all([series(exprs.rate), series(exprs.err), series(exprs.lat(0.5)), series(exprs.lat(0.95)), series(exprs.lat(0.99))]);
      if (panelKey !== key) return;
      const xs: number[] = [];
      for (let t = Math.ceil(r.startMs / 1000 / step) * step; t <= r.endMs / 1000; t += step) xs.push(t);
      const align = (vals: [number, string][]) => {
        // Answers come at start + k·step; map them onto the step grid of `xs`.
        const m = new Map(vals.map(([t, v]) => [Math.round(t / step) * step, Number(v)]));
        return xs.map((x) => {
          const v = m.get(x);
          return v === undefined || !Number.isFinite(v) ? null : v;
        });
      };
      const xRange: [number, number] = [r.startMs / 1000, r.endMs / 1000];
      if (!rate.length) replace(note, status("note", "No request metrics for this node in the window yet."));
      charts.push(
        new Chart(rateEl, { kind: "line", xs, series: [{ label: "req/s", values: align(rate) }], height: 110, xRange, yFormat: formatNumber }),
        new Chart(errEl, { kind: "line", xs, series: [{ label: "errors/s", values: align(err), color: "#ef4444" }], height: 110, xRange, yFormat: formatNumber }),
        new Chart(latEl, {
          kind: "line",
          xs,
          series: [
            { label: "p50", values: align(p50) },
            { label: "p95", values: align(p95) },
            { label: "p99", values: align(p99) },
          ],
          height: 130,
          xRange,
          yFormat: (v) => formatDuration(v * 1e9),
        }),
      );
    } catch (e) {
      if (!isAbort(e)) replace(note, status("error", (e as Error).message));
    }
    if (node.kind !== "service") return;
    try {
      const win = `${Math.max(60, Math.round((r.endMs - r.startMs) / 1000))}s`;
      const [calls, errs, p95] = await Promise.all([
        promInstant(`sum by (span_name, span_kind) (increase(traces_spanmetrics_calls_total{service=${q}}[${win}]))`, r.endMs),
        promInstant(`sum by (span_name, span_kind) (increase(traces_spanmetrics_calls_total{service=${q},status_code="STATUS_CODE_ERROR"}[${win}]))`, r.endMs),
        promInstant(`histogram_quantile(0.95, sum by (le, span_name, span_kind) (rate(traces_spanmetrics_latency_bucket{service=${q}}[${win}])))`, r.endMs),
      ]);
      if (panelKey !== key) return;
      const k = (s: PromSeries) => `${s.metric.span_name}|${s.metric.span_kind}`;
      const errBy = new Map((errs.result as PromSeries[]).map((s) => [k(s), Number(s.value?.[1] ?? 0)]));
      const p95By = new Map((p95.result as PromSeries[]).map((s) => [k(s), Number(s.value?.[1] ?? NaN)]));
      const rowsData = (calls.result as PromSeries[])
        .map((s) => ({ name: s.metric.span_name ?? "", kind: (s.metric.span_kind ?? "").replace("SPAN_KIND_", "").toLowerCase(), calls: Number(s.value?.[1] ?? 0), errors: errBy.get(k(s)) ?? 0, p95: p95By.get(k(s)) ?? NaN }))
        .sort((a, b) => b.calls - a.calls)
        .slice(0, 10);
      replace(
        ops,
        rowsData.length
          ? h(
              "table",
              { class: "grid" },
              h("thead", null, h("tr", null, ["Operation", "Kind", "Calls", "Errors", "p95"].map((c) => h("th", null, c)))),
              h(
                "tbody",
                null,
                rowsData.map((o) =>
                  h(
                    "tr",
                    null,
                    h("td", null, h("a", { href: `/traces?service=${encodeURIComponent(node.id)}&operation=${encodeURIComponent(o.name)}&from=${state.from}&to=${state.to}` }, o.name)),
                    h("td", null, o.kind),
                    h("td", { class: "num" }, formatNumber(o.calls)),
                    h("td", { class: "num" }, formatNumber(o.errors)),
                    h("td", { class: "num" }, Number.isFinite(o.p95) ? formatDuration(o.p95 * 1e9) : "–"),
                  ),
                ),
              ),
            )
          : h("p", { class: "muted" }, "No operations in this window."),
      );
    } catch (e) {
      if (!isAbort(e)) replace(ops, status("error", (e as Error).message));
    }
  }

  sync();
  void load();
  return {
    update(c) {
      const prev = state;
      state = readState(c.search, DEFAULTS);
      sync();
      if (prev.from !== state.from || prev.to !== state.to) void load();
      else {
        draw();
        list();
        void showPanel();
      }
    },
    destroy() {
      ctl?.abort();
      window.clearTimeout(timer);
      offTheme();
      mapRo.disconnect();
      charts.forEach((c) => c.destroy());
      cy?.destroy();
    },
  };
}
