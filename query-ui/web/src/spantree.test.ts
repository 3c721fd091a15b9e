import { describe, expect, it } from "vitest";
import {
  adjustClockSkew,
  buildTree,
  criticalPath,
  initialCollapsed,
  preorder,
  refresh,
  visibleRows,
  type ApiSpan,
} from "./spantree";

const BASE = Date.UTC(2026, 10, 22, 10, 0, 0);
const t = (ms: number) => new Date(BASE + ms).toISOString().replace("Z", "000000Z").replace(/\.(\d{3})000000Z/, ".$1000000Z");

function span(id: string, parent: string, startMs: number, endMs: number, service = "svc", error = false): ApiSpan {
  return {
    trace_id: "0af7651916cd43dd8448eb211c80319c",
    span_id: id,
    parent_span_id: parent,
    service,
    name: `op-${id}`,
    kind: "internal",
    start_time: t(startMs),
    end_time: t(endMs),
    duration_ns: (endMs - startMs) * 1e6,
    status: { code: error ? "error" : "unset", message: "" },
    attributes: {},
    resource: {},
    events: [],
    links: [],
  };
}

describe("buildTree", () => {
  it("nests children under parents, ordered by start, with depths", () => {
    const tree = buildTree([span("c", "a", 50, 60), span("a", "", 0, 100), span("b", "a", 10, 40), span("d", "b", 20, 30)]);
    expect(tree.roots.map((r) => r.id)).toEqual(["a"]);
    expect(preorder(tree.roots).map((n) => `${n.id}${n.depth}`)).toEqual(["a0", "b1", "d2", "c1"]);
    expect(tree.endNs).toBe(100e6);
    expect(tree.byId.get("a")!.descendants).toBe(3);
  });
  it("makes orphans roots, keeps the first of duplicate ids, and breaks cycles", () => {
    const tree = buildTree([
      span("a", "", 0, 10),
      span("o", "missing", 5, 8),
      span("a", "", 0, 999),
      span("x", "y", 1, 2),
      span("y", "x", 1, 3),
      span("s", "s", 4, 5),
    ]);
    expect(tree.nodes).toHaveLength(5);
    expect(tree.byId.get("a")!.end).toBe(10e6);
    const all = preorder(tree.roots).map((n) => n.id).sort();
    expect(all).toEqual(["a", "o", "s", "x", "y"]);
    expect(tree.roots.map((r) => r.id)).toContain("o");
  });
  it("reads nanosecond timestamps without losing precision", () => {
    const s = span("a", "", 0, 1);
    s.start_time = "2026-11-22T10:00:00.000000001Z";
    s.end_time = "2026-11-22T10:00:00.000000251Z";
    const tree = buildTree([s]);
    expect(tree.byId.get("a")!.end - tree.byId.get("a")!.start).toBe(250);
  });
  it("marks errors", () => {
    const tree = buildTree([span("a", "", 0, 10, "s", true)]);
    expect(tree.nodes[0].error).toBe(true);
  });
});

describe("self time", () => {
  it("is the duration minus the union of children, clipped to the span", () => {
    // a: 0-100; children b 10-40 and c 30-60 overlap (union 10-60), d runs past the end.
    const tree = buildTree([span("a", "", 0, 100), span("b", "a", 10, 40), span("c", "a", 30, 60), span("d", "a", 90, 130)]);
    expect(tree.byId.get("a")!.selfNs).toBe((100 - 50 - 10) * 1e6);
    expect(tree.byId.get("b")!.selfNs).toBe(30e6);
  });
});

describe("critical path", () => {
  it("follows the last-finishing child back in time", () => {
    // root 0-100 waits on b (10-50) then c (55-95); d (20-30) overlaps b and is off the path.
    const tree = buildTree([
      span("root", "", 0, 100),
      span("b", "root", 10, 50),
      span("c", "root", 55, 95),
      span("d", "root", 20, 30),
      span("e", "c", 60, 90),
    ]);
    const on = criticalPath(tree);
    expect([...on].sort()).toEqual(["b", "c", "e", "root"]);
    const ms = (id: string) => tree.byId.get(id)!.criticalNs / 1e6;
    expect(ms("root")).toBe(5 + 5 + 10);
    expect(ms("c")).toBe(5 + 5);
    expect(ms("e")).toBe(30);
    expect(ms("b")).toBe(40);
    expect(ms("d")).toBe(0);
    // The pieces add up to the root's duration.
    expect(tree.nodes.reduce((a, n) => a + n.criticalNs, 0)).toBe(100e6);
  });
  it("takes overlapping children one after the other", () => {
    const tree = buildTree([span("r", "", 0, 100), span("x", "r", 0, 80), span("y", "r", 50, 100)]);
    criticalPath(tree);
    expect(tree.byId.get("y")!.criticalNs).toBe(50e6);
    expect(tree.byId.get("x")!.criticalNs).toBe(50e6);
    expect(tree.byId.get("r")!.criticalNs).toBe(0);
  });
});

describe("clock skew", () => {
  it("moves a child of another service inside its parent, with its subtree, and marks it", () => {
    // The server's clock runs 100 ms ahead of the client's.
    const tree = buildTree([
      span("client", "", 0, 50, "frontend"),
      span("server", "client", 110, 140, "cart"),
      span("db", "server", 115, 135, "cart"),
    ]);
    expect(adjustClockSkew(tree)).toBe(2);
    refresh(tree);
    const s = tree.byId.get("server")!;
    const c = tree.byId.get("client")!;
    expect(s.start).toBe(c.start + 10e6);
    expect(s.end).toBe(c.start + 40e6);
    expect(tree.byId.get("db")!.start).toBe(s.start + 5e6);
    expect(s.skewNs).toBe(-100e6);
    expect(tree.endNs).toBe(50e6);
  });
  it("leaves consistent traces and same-service children alone", () => {
    const tree = buildTree([span("a", "", 0, 50, "x"), span("b", "a", 10, 40, "y"), span("c", "a", 45, 70, "x")]);
    expect(adjustClockSkew(tree)).toBe(0);
    expect(tree.byId.get("c")!.end).toBe(70e6);
  });
});

describe("visible rows", () => {
  it("skips collapsed subtrees", () => {
    const tree = buildTree([span("a", "", 0, 100), span("b", "a", 10, 40), span("d", "b", 20, 30), span("c", "a", 50, 60)]);
    expect(visibleRows(tree.roots, new Set(["b"])).map((n) => n.id)).toEqual(["a", "b", "c"]);
    expect(visibleRows(tree.roots, new Set(["a"])).map((n) => n.id)).toEqual(["a"]);
  });
  it("opens a 10,000-span trace quickly with deep levels collapsed", () => {
    const spans: ApiSpan[] = [span("s0", "", 0, 10_000)];
    // 99 children of the root, each with 100 children.
    for (let i = 1; i < 100; i++) {
      spans.push(span(`p${i}`, "s0", i * 10, i * 10 + 500, `svc${i % 7}`));
      for (let j = 0; j < 100; j++) spans.push(span(`c${i}-${j}`, `p${i}`, i * 10 + j, i * 10 + j + 3, `svc${j % 5}`));
    }
    const t0 = performance.now();
    const tree = buildTree(spans);
    const collapsed = initialCollapsed(tree, 2000);
    const rows = visibleRows(tree.roots, collapsed);
    const elapsed = performance.now() - t0;
    expect(tree.nodes).toHaveLength(10_000);
    expect(rows).toHaveLength(100);
    expect(elapsed).toBeLessThan(1000);
  });
  it("handles a chain of 20,000 spans without recursion limits", () => {
    const spans: ApiSpan[] = [];
    for (let i = 0; i < 20_000; i++) spans.push(span(`s${i}`, i ? `s${i - 1}` : "", i, 40_000 - i));
    const tree = buildTree(spans);
    expect(tree.byId.get("s19999")!.depth).toBe(19_999);
    expect(criticalPath(tree).size).toBe(20_000);
  });
});
