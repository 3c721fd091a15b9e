// The trace view: a virtualised waterfall (only the rows in view exist in
// the DOM) with a collapsible span tree, service colours, a time ruler,
// errors, the critical path and self time, an optional clock-skew
// adjustment, and the details of the selected span.

import { getJson, isAbort, type Trace } from "../api";
import { kvTable } from "../components/attrs";
import { copyText, h, replace, status } from "../dom";
import { formatDuration, formatTime, nsSince, serviceColor } from "../format";
import { navigate, type Page, type PageCtx } from "../router";
import {
  adjustClockSkew,
  buildTree,
  initialCollapsed,
  refresh,
  visibleRows,
  type SpanNode,
  type SpanTree,
} from "../spantree";
import { readState, writeState } from "../urlstate";

const DEFAULTS = { span: "", skew: "", cp: "1" };
type ViewState = typeof DEFAULTS;
const ROW_H = 26;
const OVERSCAN = 12;

export default function tracePage(root: HTMLElement, ctx: PageCtx): Page {
  const traceId = ctx.params.id.toLowerCase();
  let state: ViewState = readState(ctx.search, DEFAULTS);
  const ctl = new AbortController();
  let raw: Trace | null = null;
  let tree: SpanTree | null = null;
  let collapsed = new Set<string>();
  let rows: SpanNode[] = [];
  let onPath = new Set<string>();
  let skewed = 0;
  let raf = 0;

  const go = (changes: Partial<ViewState>, replaceEntry = true) =>
    navigate(`/traces/${traceId}` + writeState({ ...state, ...changes }, DEFAULTS), replaceEntry);

  const head = h("div", { class: "tracehead" });
  const ruler = h("div", { class: "ruler", "aria-hidden": "true" });
  const spacer = h("div", { class: "wf-spacer" });
  const viewport = h(
    "div",
    {
      class: "wf-viewport",
      tabindex: "0",
      role: "tree",
      "aria-label": "Spans (arrow keys move, left/right collapse/expand, Enter selects)",
      "data-testid": "waterfall",
    },
    spacer,
  );
  const details = h("aside", { class: "spandetails", "aria-label": "Span details" });
  const body = h("div", { class: "traceview" }, h("div", { class: "wf" }, h("div", { class: "wf-header" }, h("div", { class: "wf-namecol" }, "Service · operation"), ruler), viewport), details);
  const msg = h("div");
  replace(root, h("div", { class: "page" }, h("h1", { class: "sr-only" }, "Trace"), msg, head, body));
  replace(msg, status("loading", `Loading trace ${traceId}…`));

  viewport.addEventListener("scroll", () => {
    cancelAnimationFrame(raf);
    raf = requestAnimationFrame(draw);
  });
  const ro = new ResizeObserver(() => draw());
  ro.observe(viewport);
  viewport.addEventListener("keydown", onKey);

  function build() {
    if (!raw) return;
    tree = buildTree(raw.spans);
    skewed = 0;
    if (state.skew) {
      skewed = adjustClockSkew(tree);
      refresh(tree);
    }
    onPath = new Set(tree.nodes.filter((n) => n.criticalNs > 0).map((n) => n.id));
  }

  function relayout() {
    if (!tree) return;
    rows = visibleRows(tree.roots, collapsed);
    spacer.style.height = `${rows.length * ROW_H}px`;
    draw();
  }

  function header() {
    if (!tree || !raw) return;
    const rootNode = tree.roots[0];
    const errors = tree.nodes.filter((n) => n.error).length;
    const services = [...new Set(tree.nodes.map((n) => n.span.service))];
    const copyBtn = h("button", { type: "button", class: "mini", title: "Copy the trace id" }, "Copy");
    copyBtn.addEventListener("click", async () => {
      copyBtn.textContent = (await copyText(traceId)) ? "Copied" : "Copy failed";
      setTimeout(() => (copyBtn.textContent = "Copy"), 1500);
    });
    const toggle = (label: string, key: "skew" | "cp", title: string) => {
      const cb = h("input", { type: "checkbox", checked: !!state[key] });
      cb.addEventListener("change", () => go({ [key]: cb.checked ? "1" : "" } as Partial<ViewState>));
      return h("label", { class: "toggle", title }, cb, ` ${label}`);
    };
    replace(
      head,
      h(
        "div",
        { class: "titleline" },
        h("h2", null, rootNode ? `${rootNode.span.service}: ${rootNode.span.name}` : "Trace"),
        errors ? h("span", { class: "badge err" }, `${errors} error${errors > 1 ? "s" : ""}`) : null,
      ),
      h(
        "div",
        { class: "meta" },
        h("span", null, "Trace ", h("code", { "data-testid": "trace-id" }, traceId), " ", copyBtn),
        h("span", null, formatTime(tree.originMs)),
        h("span", null, "Duration ", h("strong", null, formatDuration(tree.endNs))),
        h("span", null, h("strong", { "data-testid": "span-count" }, String(tree.nodes.length)), " spans"),
        h("span", null, `${services.length} service${services.length === 1 ? "" : "s"}`),
        h("a", { href: `/logs?trace_id=${traceId}&from=${Math.floor(tree.originMs - 60_000)}&to=${Math.ceil(tree.originMs + tree.endNs / 1e6 + 60_000)}` }, "Logs of this trace"),
      ),
      h(
        "div",
        { class: "meta" },
        h("span", { class: "svcs" }, services.map((s) => h("span", { class: "svctag", style: `border-color:${serviceColor(s)}` }, s))),
        h("span", { class: "spacer" }),
        toggle("Critical path", "cp", "Highlight what the trace waited for; the Self column shows time not spent in children"),
        toggle("Adjust clock skew", "skew", "Move spans of other hosts inside their parent when clocks disagree"),
        state.skew ? h("span", { class: "muted" }, `${skewed} span${skewed === 1 ? "" : "s"} adjusted (⇄)`) : null,
        h("button", { type: "button", class: "mini", onclick: () => ((collapsed = new Set()), relayout()) }, "Expand all"),
        h(
          "button",
          {
            type: "button",
            class: "mini",
            onclick: () => {
              collapsed = new Set(tree!.nodes.filter((n) => n.depth >= 1 && n.children.length).map((n) => n.id));
              relayout();
            },
          },
          "Collapse all",
        ),
      ),
    );
    // The ruler: five ticks over the trace's duration.
    replace(
      ruler,
      [0, 0.25, 0.5, 0.75, 1].map((f) =>
        h("span", { class: "tick", style: f === 1 ? "right:0" : `left:${f * 100}%` }, formatDuration(tree!.endNs * f)),
      ),
    );
  }

  function draw() {
    if (!tree) return;
    const top = viewport.scrollTop;
    const height = viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const total = tree.endNs || 1;
    const out: HTMLElement[] = [spacer];
    for (let i = first; i < last; i++) out.push(rowEl(rows[i], i, total));
    viewport.replaceChildren(...out);
  }

  function rowEl(n: SpanNode, i: number, total: number): HTMLElement {
    const s = n.span;
    const left = (100 * n.start) / total;
    const width = Math.max(0.15, (100 * (n.end - n.start)) / total);
    const isCollapsed = collapsed.has(n.id);
    const selected = state.span === n.id;
    const color = serviceColor(s.service);
    const crit = state.cp && onPath.has(n.id);
    const row = h(
      "div",
      {
        class: `wf-row${selected ? " selected" : ""}${n.error ? " error" : ""}`,
        role: "treeitem",
        "aria-level": n.depth + 1,
        "aria-selected": String(selected),
        "aria-expanded": n.children.length ? String(!isCollapsed) : null,
        style: `top:${i * ROW_H}px`,
        "data-span": n.id,
      },
      h(
        "div",
        { class: "wf-namecol", style: `padding-left:${Math.min(n.depth, 40) * 12 + 4}px` },
        n.children.length
          ? h(
              "button",
              { type: "button", class: "twisty", tabindex: "-1", "aria-label": isCollapsed ? "Expand" : "Collapse", onclick: (e: Event) => (e.stopPropagation(), toggleNode(n)) },
              isCollapsed ? `▸ ${n.descendants}` : "▾",
            )
          : h("span", { class: "twisty" }),
        h("span", { class: "svcdot", style: `background:${color}` }),
        h("span", { class: "svcname" }, s.service),
        h("span", { class: "opname" }, s.name),
        n.error ? h("span", { class: "errmark", title: s.status.message || "error" }, "⚠") : null,
        n.skewNs ? h("span", { class: "skewmark", title: `shifted by ${formatDuration(n.skewNs)} (clock skew)` }, "⇄") : null,
      ),
      h(
        "div",
        { class: "wf-timecol" },
        h(
          "div",
          {
            class: `bar${crit ? " critical" : ""}`,
            style: `left:${left}%;width:${width}%;background:${n.error ? "var(--error)" : color}`,
          },
        ),
        h(
          "span",
          {
            class: left + width <= 78 ? "barlabel" : left >= 25 ? "barlabel" : "barlabel inbar",
            style: left + width <= 78 ? `left:${left + width + 0.5}%` : left >= 25 ? `right:${100 - left + 0.5}%` : `left:${left + 0.5}%`,
          },
          formatDuration(n.end - n.start),
          state.cp ? ` · self ${formatDuration(n.selfNs)}` : "",
        ),
      ),
    );
    row.addEventListener("click", () => select(n));
    return row;
  }

  function toggleNode(n: SpanNode) {
    if (!n.children.length) return;
    if (collapsed.has(n.id)) collapsed.delete(n.id);
    else collapsed.add(n.id);
    relayout();
  }

  function select(n: SpanNode) {
    go({ span: state.span === n.id ? "" : n.id });
  }

  function scrollTo(index: number) {
    const top = index * ROW_H;
    if (top < viewport.scrollTop) viewport.scrollTop = top;
    else if (top + ROW_H > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = top + ROW_H - viewport.clientHeight;
  }

  function onKey(e: KeyboardEvent) {
    if (!tree || !rows.length) return;
    let i = rows.findIndex((r) => r.id === state.span);
    const cur = i >= 0 ? rows[i] : null;
    const pick = (j: number) => {
      j = Math.max(0, Math.min(rows.length - 1, j));
      scrollTo(j);
      go({ span: rows[j].id });
    };
    switch (e.key) {
      case "ArrowDown":
      case "j":
        pick(i + 1);
        break;
      case "ArrowUp":
      case "k":
        pick(i < 0 ? 0 : i - 1);
        break;
      case "PageDown":
        pick(i + Math.floor(viewport.clientHeight / ROW_H));
        break;
      case "PageUp":
        pick(i - Math.floor(viewport.clientHeight / ROW_H));
        break;
      case "ArrowRight":
        if (cur && collapsed.has(cur.id)) toggleNode(cur);
        break;
      case "ArrowLeft":
        if (cur && cur.children.length && !collapsed.has(cur.id)) toggleNode(cur);
        else if (cur?.parent) {
          i = rows.indexOf(cur.parent);
          if (i >= 0) pick(i);
        }
        break;
      case "Enter":
      case " ":
        if (cur) toggleNode(cur);
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  function showDetails() {
    const n = tree && state.span ? tree.byId.get(state.span) : undefined;
    if (!n || !tree) {
      replace(details, h("p", { class: "muted" }, "Select a span to see its attributes, events, links and resource."));
      details.classList.remove("open");
      return;
    }
    details.classList.add("open");
    const s = n.span;
    const origin = tree.originMs;
    const logsHref = `/logs?trace_id=${traceId}&q=${encodeURIComponent(`span_id:${s.span_id}`)}&from=${Math.floor(origin - 60_000)}&to=${Math.ceil(origin + tree.endNs / 1e6 + 60_000)}`;
    replace(
      details,
      h("div", { class: "titleline" }, h("h3", null, s.name), h("button", { type: "button", class: "mini", "aria-label": "Close details", onclick: () => go({ span: "" }) }, "×")),
      h(
        "table",
        { class: "kv" },
        h(
          "tbody",
          null,
          [
            ["Service", s.service],
            ["Kind", s.kind],
            ["Status", s.status.message ? `${s.status.code}: ${s.status.message}` : s.status.code],
            ["Start", `+${formatDuration(n.start)}`],
            ["Duration", formatDuration(n.end - n.start)],
            ["Self time", formatDuration(n.selfNs)],
            ["On critical path", n.criticalNs > 0 ? formatDuration(n.criticalNs) : "no"],
            ["Span id", s.span_id],
            ["Parent", s.parent_span_id || "(root)"],
            ["Scope", s.scope ? `${s.scope.name} ${s.scope.version}`.trim() : ""],
            n.skewNs ? ["Clock skew", `shifted by ${formatDuration(n.skewNs)}`] : null,
          ]
            .filter((r): r is string[] => !!r)
            .map(([k, v]) => h("tr", null, h("th", { scope: "row" }, k), h("td", null, v))),
        ),
      ),
      h("p", null, h("a", { href: logsHref, "data-testid": "span-logs" }, "Logs of this span")),
      h("h4", null, "Attributes"),
      kvTable(s.attributes),
      h("h4", null, `Events (${s.events.length})`),
      s.events.length
        ? h(
            "ul",
            { class: "events" },
            s.events.map((ev) =>
              h("li", null, h("strong", null, ev.name), ` +${formatDuration(nsSince(ev.time, origin) - n.start)}`, kvTable(ev.attributes)),
            ),
          )
        : h("p", { class: "muted" }, "none"),
      h("h4", null, `Links (${s.links.length})`),
      s.links.length
        ? h(
            "ul",
            { class: "events" },
            s.links.map((l) => h("li", null, h("a", { href: `/traces/${l.trace_id}?span=${l.span_id}` }, `${l.trace_id} / ${l.span_id}`), kvTable(l.attributes))),
          )
        : h("p", { class: "muted" }, "none"),
      h("h4", null, "Resource"),
      kvTable(s.resource),
    );
  }

  function revealSelected() {
    if (!tree || !state.span) return;
    const n = tree.byId.get(state.span);
    if (!n) return;
    // Expand the ancestors of the selected span so it has a row.
    let changed = false;
    for (let p = n.parent; p; p = p.parent) if (collapsed.delete(p.id)) changed = true;
    if (changed) rows = visibleRows(tree.roots, collapsed);
    const i = rows.indexOf(n);
    if (i >= 0) scrollTo(i);
  }

  function render() {
    header();
    revealSelected();
    relayout();
    showDetails();
  }

  void (async () => {
    try {
      raw = await getJson<Trace>(`/api/v1/traces/${encodeURIComponent(traceId)}`, {}, ctl.signal);
      const t0 = performance.now();
      build();
      collapsed = initialCollapsed(tree!);
      msg.replaceChildren();
      render();
      // How long building and drawing took (read by the browser test).
      viewport.dataset.renderMs = (performance.now() - t0).toFixed(1);
      // A span named in the URL is scrolled into view once rows have a size.
      requestAnimationFrame(() => revealSelected());
    } catch (e) {
      if (isAbort(e)) return;
      const m = (e as Error).message;
      replace(
        msg,
        status("error", m.startsWith("404") ? `Trace ${traceId} was not found (spans appear about two seconds after they are sent).` : m),
      );
    }
  })();

  return {
    update(c) {
      const prev = state;
      state = readState(c.search, DEFAULTS);
      if (!tree) return;
      if (prev.skew !== state.skew) build();
      render();
    },
    destroy() {
      ctl.abort();
      ro.disconnect();
      cancelAnimationFrame(raf);
    },
  };
}
