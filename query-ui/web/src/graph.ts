// Pure logic of the service map: neighbourhoods, node sizes and colours,
// edge labels, and where an edge click leads.

import type { MapEdge, MapNode, ServiceMap } from "./api";

/** The nodes within `hops` edges of `focus` (either direction), focus included. */
export function neighbourhood(map: ServiceMap, focus: string, hops: number): Set<string> {
  const adj = new Map<string, string[]>();
  const link = (a: string, b: string) => {
    if (!adj.has(a)) adj.set(a, []);
    adj.get(a)!.push(b);
  };
  for (const e of map.edges) {
    link(e.source, e.target);
    link(e.target, e.source);
  }
  const seen = new Set([focus]);
  let frontier = [focus];
  for (let d = 0; d < hops && frontier.length; d++) {
    const next: string[] = [];
    for (const n of frontier) for (const m of adj.get(n) ?? []) if (!seen.has(m)) (seen.add(m), next.push(m));
    frontier = next;
  }
  return seen;
}

/** The map restricted to a set of node ids. */
export function restrict(map: ServiceMap, keep: Set<string>): ServiceMap {
  return {
    nodes: map.nodes.filter((n) => keep.has(n.id)),
    edges: map.edges.filter((e) => keep.has(e.source) && keep.has(e.target)),
  };
}

/** Node diameter in px: grows with the log of its traffic. */
export function nodeSize(requests: number, maxRequests: number): number {
  if (maxRequests <= 0) return 36;
  return 36 + 44 * (Math.log1p(requests) / Math.log1p(maxRequests));
}

/** Node colour: blue when healthy, towards red as errors reach 20%. */
export function nodeColor(n: MapNode): string {
  const ratio = n.requests ? n.errors / n.requests : 0;
  const k = Math.min(1, ratio * 5);
  return `hsl(${Math.round(212 * (1 - k))}, ${Math.round(60 + 15 * k)}%, ${Math.round(52 - 4 * k)}%)`;
}

/** A request rate: `12/s`, `0.25/s`, `3.5/min`, `<0.01/min`. */
export function formatRate(requests: number, windowS: number): string {
  const rate = requests / Math.max(1, windowS);
  if (rate >= 10) return `${rate.toFixed(0)}/s`;
  if (rate >= 0.1) return `${Number(rate.toPrecision(2))}/s`;
  const perMin = rate * 60;
  if (perMin >= 0.01) return `${Number(perMin.toPrecision(2))}/min`;
  return requests > 0 ? "<0.01/min" : "0/s";
}

/** `12/s · 1.2% err · p95 45 ms` for an edge over `windowS` seconds. */
export function edgeLabel(e: MapEdge, windowS: number): string {
  const err = e.requests ? (100 * e.errors) / e.requests : 0;
  const r = formatRate(e.requests, windowS);
  const p95 = e.p95_ms === null ? "–" : e.p95_ms >= 100 ? e.p95_ms.toFixed(0) : String(Number(e.p95_ms.toPrecision(2)));
  return `${r} · ${err.toFixed(err && err < 1 ? 2 : 1)}% err · p95 ${p95} ms`;
}

/** The trace search of the calls along an edge (a URL query string). */
export function edgeTracesQuery(e: MapEdge, serverKind: MapNode["kind"] | undefined, from: string, to: string): string {
  const p = new URLSearchParams({ service: e.source });
  if (serverKind === "database") p.set("tags", `db.system=${quoteTag(e.target)}`);
  else if (serverKind === "messaging") p.set("tags", `messaging.destination.name=${quoteTag(e.target)}`);
  else if (serverKind === "external") p.set("tags", `peer.service=${quoteTag(e.target)}`);
  else p.set("with", e.target);
  p.set("from", from);
  p.set("to", to);
  return p.toString();
}

function quoteTag(v: string): string {
  return /[\s"]/.test(v) ? `"${v.replace(/"/g, "")}"` : v;
}
