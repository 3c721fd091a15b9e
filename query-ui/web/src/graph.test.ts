import { describe, expect, it } from "vitest";
import type { ServiceMap } from "./api";
import { edgeLabel, edgeTracesQuery, formatRate, neighbourhood, nodeColor, restrict } from "./graph";
import { addTerm, severityClass } from "./pages/logquery";

const e = (source: string, target: string, requests = 10, errors = 0) => ({ source, target, requests, errors, p50_ms: 1, p95_ms: 12.345, p99_ms: 20 });
const MAP: ServiceMap = {
  nodes: ["frontend", "cart", "checkout", "payment", "postgresql"].map((id) => ({ id, kind: id === "postgresql" ? "database" : "service", requests: 10, errors: 0 })),
  edges: [e("frontend", "cart"), e("frontend", "checkout"), e("checkout", "payment"), e("payment", "postgresql")],
};

describe("service map logic", () => {
  it("finds neighbours within N hops in both directions", () => {
    expect([...neighbourhood(MAP, "checkout", 1)].sort()).toEqual(["checkout", "frontend", "payment"]);
    expect([...neighbourhood(MAP, "checkout", 2)].sort()).toEqual(["cart", "checkout", "frontend", "payment", "postgresql"]);
    expect(restrict(MAP, neighbourhood(MAP, "postgresql", 1)).edges).toEqual([MAP.edges[3]]);
  });
  it("labels edges with rate, errors and p95", () => {
    expect(edgeLabel(e("a", "b", 600, 6), 60)).toBe("10/s · 1.0% err · p95 12 ms");
    expect(edgeLabel(e("a", "b", 3, 0), 3600)).toBe("0.05/min · 0.0% err · p95 12 ms");
    expect(formatRate(30, 60)).toBe("0.5/s");
    expect(formatRate(0, 60)).toBe("0/s");
  });
  it("turns red with errors", () => {
    expect(nodeColor({ id: "x", kind: "service", requests: 10, errors: 0 })).toBe("hsl(212, 60%, 52%)");
    expect(nodeColor({ id: "x", kind: "service", requests: 10, errors: 5 })).toBe("hsl(0, 75%, 48%)");
  });
  it("sends an edge click to the traces between the two", () => {
    expect(edgeTracesQuery(MAP.edges[2], "service", "now-15m", "now")).toBe("service=checkout&with=payment&from=now-15m&to=now");
    expect(edgeTracesQuery(MAP.edges[3], "database", "now-15m", "now")).toBe("service=payment&tags=db.system%3Dpostgresql&from=now-15m&to=now");
  });
});

describe("log query helpers", () => {
  it("adds filter-for and filter-out terms", () => {
    expect(addTerm("", "attributes.http.route", "/cart", false)).toBe('attributes.http.route:"/cart"');
    expect(addTerm("error", "resource.host", 'a"b', true)).toBe('error AND NOT resource.host:"a\\"b"');
    expect(addTerm("a OR b", "service", "x", false)).toBe('(a OR b) AND service:"x"');
    expect(addTerm("", "service", "x", true)).toBe('* AND NOT service:"x"');
  });
  it("maps severity numbers to classes", () => {
    expect([1, 5, 9, 13, 17, 21, 0].map(severityClass)).toEqual(["sev-trace", "sev-debug", "sev-info", "sev-warn", "sev-error", "sev-fatal", "sev-unset"]);
  });
});
