// Client-side routing over the History API: each page owns a path and reads
// its state from the query string; back and forward re-run `update`.

/** What a page gets: the path parameters and the query string. */
export interface PageCtx {
  params: Record<string, string>;
  search: string;
}

/** A mounted page. `update` is called when the URL changes within it. */
export interface Page {
  update(ctx: PageCtx): void;
  destroy(): void;
}

/** Builds a page into `root`. */
export type PageFactory = (root: HTMLElement, ctx: PageCtx) => Page;

interface Route {
  name: string;
  pattern: RegExp;
  keys: string[];
  load: () => Promise<PageFactory>;
}

const listeners: (() => void)[] = [];

/** Goes to `url` (same origin), adding a history entry unless `replace`. */
export function navigate(url: string, replace = false): void {
  const cur = location.pathname + location.search;
  if (url === cur) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  listeners.forEach((l) => l());
}

/** The router: matches routes, mounts and updates pages. */
export class Router {
  private routes: Route[] = [];
  private current: { route: Route; page: Page; key: string } | null = null;
  private seq = 0;
  private paused = false;

  constructor(
    private root: HTMLElement,
    private onRoute: (name: string) => void,
  ) {
    listeners.push(() => void this.render());
    window.addEventListener("popstate", () => void this.render());
    // Same-origin links without a target go through the router.
    document.addEventListener("click", (e) => {
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      const a = (e.target as Element | null)?.closest?.("a");
      if (!a || a.target || a.hasAttribute("download")) return;
      const href = a.getAttribute("href");
      if (!href || !href.startsWith("/") || href.startsWith("//")) return;
      if (/^\/(api|prometheus|jaeger)\//.test(href)) return;
      e.preventDefault();
      navigate(href);
    });
  }

  /** Adds a route like `/traces/:id`. */
  add(name: string, path: string, load: () => Promise<PageFactory>): this {
    const keys: string[] = [];
    const re = path.replace(/:([a-z]+)/g, (_, k) => {
      keys.push(k);
      return "([^/]+)";
    });
    this.routes.push({ name, pattern: new RegExp(`^${re}/?$`), keys, load });
    return this;
  }

  /** Stops showing pages (the sign-in page takes the root) until `reload`;
   * the URL still follows links and history meanwhile. */
  pause(): void {
    this.paused = true;
    this.seq++;
    this.current?.page.destroy();
    this.current = null;
  }

  /** Mounts the current URL's page afresh (after signing in or switching tenant). */
  reload(): Promise<void> {
    this.paused = false;
    this.current?.page.destroy();
    this.current = null;
    return this.render();
  }

  /** Renders the page of the current URL. */
  async render(): Promise<void> {
    if (this.paused) return;
    const seq = ++this.seq;
    const path = location.pathname;
    let match: { route: Route; params: Record<string, string> } | null = null;
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (m) {
        const params: Record<string, string> = {};
        route.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1])));
        match = { route, params };
        break;
      }
    }
    if (!match) {
      navigate("/map", true);
      return;
    }
    const ctx: PageCtx = { params: match.params, search: location.search };
    const key = match.route.name + JSON.stringify(match.params);
    this.onRoute(match.route.name);
    if (this.current && this.current.key === key) {
      this.current.page.update(ctx);
      return;
    }
    const factory = await match.route.load();
    if (seq !== this.seq) return;
    this.current?.page.destroy();
    this.root.replaceChildren();
    const page = factory(this.root, ctx);
    this.current = { route: match.route, page, key };
  }
}
