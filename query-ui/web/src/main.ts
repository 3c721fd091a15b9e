// The app shell: header with navigation and theme switch, and the router.

import "./style.css";
import { h } from "./dom";
import { Router, navigate, type PageFactory } from "./router";
import { applyTheme, toggleTheme } from "./theme";

applyTheme();

const NAV: [string, string, string][] = [
  ["map", "/map", "Service map"],
  ["traces", "/traces", "Traces"],
  ["logs", "/logs", "Logs"],
  ["metrics", "/metrics-explorer", "Metrics"],
];

const links = NAV.map(([name, href, label]) => h("a", { href, "data-nav": name }, label));
const main = h("main", { id: "main", tabindex: "-1" });
const app = document.getElementById("app")!;
app.replaceChildren(
  h("a", { class: "skip", href: "#main", onclick: (e: Event) => (e.preventDefault(), main.focus()) }, "Skip to content"),
  h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "/map" }, "Periscope"),
    h("nav", { "aria-label": "Pages" }, links),
    h("span", { class: "spacer" }),
    h("span", { class: "keys", title: "Keyboard: / focuses the query box, g then m/t/l/x opens a page" }, "Keys: / g m t l x"),
    h("button", { type: "button", class: "ghost", title: "Switch light / dark theme", onclick: () => toggleTheme() }, "◐ Theme"),
  ),
  main,
);

const page = (load: () => Promise<{ default: PageFactory }>) => () => load().then((m) => m.default);

const router = new Router(main, (name) => {
  for (const a of links) {
    if (a.dataset.nav === name || (name === "trace" && a.dataset.nav === "traces")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const label = NAV.find(([n]) => n === name)?.[2] ?? (name === "trace" ? "Trace" : "");
  document.title = label ? `${label} · Periscope` : "Periscope";
});
router
  .add("map", "/map", page(() => import("./pages/servicemap")))
  .add("traces", "/traces", page(() => import("./pages/traces")))
  .add("trace", "/traces/:id", page(() => import("./pages/trace")))
  .add("logs", "/logs", page(() => import("./pages/logs")))
  .add("metrics", "/metrics-explorer", page(() => import("./pages/metrics")));
void router.render();

// Keyboard: `/` focuses the page's query box; `g` then a letter opens a page.
let pendingG = 0;
document.addEventListener("keydown", (e) => {
  const t = e.target as HTMLElement;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (t.closest("input, textarea, select, [contenteditable]")) {
    if (e.key === "Escape") t.blur();
    return;
  }
  if (e.key === "/") {
    const q = document.querySelector<HTMLElement>("[data-query]");
    if (q) {
      e.preventDefault();
      q.focus();
    }
    return;
  }
  if (e.key === "g") {
    pendingG = Date.now();
    return;
  }
  if (Date.now() - pendingG < 1500) {
    const to = { m: "/map", t: "/traces", l: "/logs", x: "/metrics-explorer" }[e.key];
    pendingG = 0;
    if (to) {
      e.preventDefault();
      navigate(to);
    }
  }
});
