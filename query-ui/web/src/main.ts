// The app shell: header with navigation, session and theme switch, and the
// router. When the collector asks for sign-in, the sign-in page stands in
// for the pages until a session exists, and again whenever a call is
// answered 401 (the session expired, was signed out or its token revoked).

import "./style.css";
import { onUnauthorized } from "./api";
import { renderAccount } from "./components/account";
import { signInPage } from "./components/signin";
import { h } from "./dom";
import { Router, navigate, type PageFactory } from "./router";
import { authEnabled, currentSession, signOut, type SessionInfo } from "./session";
import { applyTheme, toggleTheme } from "./theme";

applyTheme();

const NAV: [string, string, string][] = [
  ["map", "/map", "Service map"],
  ["traces", "/traces", "Traces"],
  ["logs", "/logs", "Logs"],
  ["metrics", "/metrics-explorer", "Metrics"],
];

const links = NAV.map(([name, href, label]) => h("a", { href, "data-nav": name }, label));
const nav = h("nav", { "aria-label": "Pages" }, links);
const main = h("main", { id: "main", tabindex: "-1" });
const account = h("span", { class: "account", "data-testid": "account", hidden: true });
const app = document.getElementById("app")!;
app.replaceChildren(
  h("a", { class: "skip", href: "#main", onclick: (e: Event) => (e.preventDefault(), main.focus()) }, "Skip to content"),
  h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "/map" }, "Periscope"),
    nav,
    h("span", { class: "spacer" }),
    h("span", { class: "keys", title: "Keyboard: / focuses the query box, g then m/t/l/x opens a page" }, "Keys: / g m t l x"),
    account,
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

// ----- sign-in -----

let signingIn = false;

function showSignIn(note = ""): void {
  if (signingIn) return;
  signingIn = true;
  router.pause();
  nav.hidden = true;
  account.hidden = true;
  document.title = "Sign in · Periscope";
  main.replaceChildren(signInPage(signedIn, note));
}

function showSession(s: SessionInfo): void {
  account.hidden = false;
  renderAccount(account, s, {
    switched: (n) => {
      showSession(n);
      void router.reload();
    },
    signOut: () => {
      signOut()
        .catch(() => undefined)
        .finally(() => showSignIn());
    },
  });
}

function signedIn(s: SessionInfo): void {
  signingIn = false;
  nav.hidden = false;
  showSession(s);
  void router.reload();
}

async function start(): Promise<void> {
  let enabled = false;
  try {
    enabled = await authEnabled();
  } catch {
    // The collector could not say: the pages show why their calls fail.
  }
  if (!enabled) {
    void router.render();
    return;
  }
  onUnauthorized(() => showSignIn("Your session ended: sign in again."));
  const s = await currentSession().catch(() => null);
  if (s) signedIn(s);
  else showSignIn();
}
void start();

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
