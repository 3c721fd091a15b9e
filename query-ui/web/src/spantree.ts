// The span tree of a trace and what the waterfall derives from it: visible
// rows under collapsed subtrees, self time, the critical path and an
// optional clock-skew adjustment. Everything is iterative: a trace may hold
// tens of thousands of spans in one chain.

import { nsSince, parseRfc3339Ms } from "./format";

/** A span as `/api/v1/traces/{id}` returns it. */
export interface ApiSpan {
  trace_id: string;
  span_id: string;
  parent_span_id: string;
  service: string;
  name: string;
  kind: string;
  start_time: string;
  end_time: string;
  duration_ns: number;
  status: { code: string; message: string };
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
  scope?: { name: string; version: string };
  events: { time: string; name: string; attributes: Record<string, unknown> }[];
  links: { trace_id: string; span_id: string; attributes: Record<string, unknown> }[];
  trace_state?: string;
}

/** One span in the tree; times in nanoseconds since the trace's origin. */
export interface SpanNode {
  span: ApiSpan;
  id: string;
  parent: SpanNode | null;
  children: SpanNode[];
  depth: number;
  start: number;
  end: number;
  error: boolean;
  /** Time not covered by any child. */
  selfNs: number;
  /** Time this span itself contributes to the critical path. */
  criticalNs: number;
  /** Shift applied by the clock-skew adjustment (0 when none). */
  skewNs: number;
  /** Number of spans below it. */
  descendants: number;
}

/** A built trace. */
export interface SpanTree {
  roots: SpanNode[];
  nodes: SpanNode[];
  byId: Map<string, SpanNode>;
  /** Milliseconds since the epoch of the earliest span start (the origin). */
  originMs: number;
  /** Latest end, in ns since the origin. */
  endNs: number;
}

/** Builds the tree: children by start time; spans whose parent is missing
 *  (or part of a cycle) become roots. */
export function buildTree(spans: ApiSpan[]): SpanTree {
  let originMs = Infinity;
  for (const s of spans) originMs = Math.min(originMs, parseRfc3339Ms(s.start_time));
  if (!Number.isFinite(originMs)) originMs = 0;
  const byId = new Map<string, SpanNode>();
  const nodes: SpanNode[] = [];
  for (const s of spans) {
    if (byId.has(s.span_id)) continue;
    const start = nsSince(s.start_time, originMs);
    const end = Math.max(start, nsSince(s.end_time, originMs));
    const n: SpanNode = {
      span: s,
      id: s.span_id,
      parent: null,
      children: [],
      depth: 0,
      start,
      end,
      error: s.status?.code === "error",
      selfNs: 0,
      criticalNs: 0,
      skewNs: 0,
      descendants: 0,
    };
    byId.set(s.span_id, n);
    nodes.push(n);
  }
  for (const n of nodes) {
    const p = n.span.parent_span_id ? byId.get(n.span.parent_span_id) : undefined;
    if (p && p !== n) {
      n.parent = p;
      p.children.push(n);
    }
  }
  const byStart = (a: SpanNode, b: SpanNode) => a.start - b.start || a.id.localeCompare(b.id);
  const roots = nodes.filter((n) => n.parent === null).sort(byStart);
  // Walk from the roots; whatever is not reached sits in a parent cycle.
  const reached = new Set<SpanNode>();
  const walk = (from: SpanNode[]) => {
    const stack = [...from].reverse();
    for (const r of from) r.depth = 0;
    while (stack.length) {
      const n = stack.pop()!;
      reached.add(n);
      n.children.sort(byStart);
      for (let i = n.children.length - 1; i >= 0; i--) {
        const c = n.children[i];
        if (reached.has(c)) continue;
        c.depth = n.depth + 1;
        stack.push(c);
      }
    }
  };
  walk(roots);
  for (const n of nodes) {
    if (!reached.has(n)) {
      // Break the cycle here: detach from its parent and make it a root.
      if (n.parent) n.parent.children = n.parent.children.filter((c) => c !== n);
      n.parent = null;
      roots.push(n);
      walk([n]);
    }
  }
  roots.sort(byStart);
  const tree: SpanTree = { roots, nodes, byId, originMs, endNs: 0 };
  refresh(tree);
  return tree;
}

/** Nodes in pre-order (parents before children, children by start). */
export function preorder(roots: SpanNode[]): SpanNode[] {
  const out: SpanNode[] = [];
  const stack = [...roots].reverse();
  while (stack.length) {
    const n = stack.pop()!;
    out.push(n);
    for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
  }
  return out;
}

/** Recomputes end, descendant counts, self time and the critical path. */
export function refresh(tree: SpanTree): void {
  const order = preorder(tree.roots);
  tree.endNs = 0;
  for (const n of order) tree.endNs = Math.max(tree.endNs, n.end);
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    n.descendants = n.children.reduce((a, c) => a + 1 + c.descendants, 0);
    n.selfNs = selfTime(n);
  }
  criticalPath(tree);
}

/** Span duration minus the union of its children's intervals (clipped to it). */
export function selfTime(n: SpanNode): number {
  const iv = n.children
    .map((c) => [Math.max(c.start, n.start), Math.min(c.end, n.end)] as [number, number])
    .filter(([a, b]) => b > a)
    .sort((a, b) => a[0] - b[0]);
  let covered = 0;
  let curA = -Infinity;
  let curB = -Infinity;
  for (const [a, b] of iv) {
    if (a > curB) {
      if (curB > curA) covered += curB - curA;
      curA = a;
      curB = b;
    } else if (b > curB) {
      curB = b;
    }
  }
  if (curB > curA) covered += curB - curA;
  return Math.max(0, n.end - n.start - covered);
}

/**
 * The critical path: walking back from a span's end, the child that finished
 * last before the current point is what the span waited for; the path goes
 * into it, then continues before that child's start. Time no child covers is
 * the span's own. Sets `criticalNs` on every node (0 off the path); returns
 * the ids on the path.
 */
export function criticalPath(tree: SpanTree): Set<string> {
  for (const n of tree.nodes) n.criticalNs = 0;
  const on = new Set<string>();
  // The root that ends last leads the path (usually the only root).
  let root: SpanNode | null = null;
  for (const r of tree.roots) if (!root || r.end > root.end) root = r;
  if (!root) return on;
  type Frame = { n: SpanNode; cursor: number; kids: SpanNode[]; i: number };
  const frame = (n: SpanNode, cap: number): Frame => {
    on.add(n.id);
    return {
      n,
      cursor: Math.min(n.end, cap),
      kids: [...n.children].sort((a, b) => b.end - a.end),
      i: 0,
    };
  };
  const stack: Frame[] = [frame(root, root.end)];
  while (stack.length) {
    const f = stack[stack.length - 1];
    let descended = false;
    while (f.i < f.kids.length) {
      const c = f.kids[f.i++];
      if (c.start >= f.cursor || c.end <= f.n.start) continue;
      const cEnd = Math.min(c.end, f.cursor);
      f.n.criticalNs += f.cursor - cEnd;
      f.cursor = Math.max(c.start, f.n.start);
      stack.push(frame(c, cEnd));
      descended = true;
      break;
    }
    if (descended) continue;
    f.n.criticalNs += Math.max(0, f.cursor - f.n.start);
    stack.pop();
  }
  return on;
}

/**
 * Clock-skew adjustment: a span that starts before its parent or ends after
 * it, on another service (another host's clock), is moved with its subtree
 * into the parent, centred in it when it is shorter (half the remaining time
 * each way is network). Returns how many spans moved; each keeps its shift
 * in `skewNs`. Call `refresh` after.
 */
export function adjustClockSkew(tree: SpanTree): number {
  let moved = 0;
  const stack = [...tree.roots].map((n) => ({ n, shift: 0 }));
  while (stack.length) {
    const { n, shift } = stack.pop()!;
    let own = shift;
    if (shift !== 0) {
      n.start += shift;
      n.end += shift;
    }
    const p = n.parent;
    if (p && p.span.service !== n.span.service && (n.start < p.start || n.end > p.end)) {
      const dur = n.end - n.start;
      const pdur = p.end - p.start;
      const target = dur <= pdur ? p.start + (pdur - dur) / 2 : p.start;
      const delta = target - n.start;
      n.start += delta;
      n.end += delta;
      own += delta;
    }
    if (own !== 0) {
      n.skewNs = own;
      moved++;
    }
    for (const c of n.children) stack.push({ n: c, shift: own });
  }
  // Re-base so the earliest span starts at 0 again.
  let min = Infinity;
  for (const n of tree.nodes) min = Math.min(min, n.start);
  if (Number.isFinite(min) && min !== 0) {
    for (const n of tree.nodes) {
      n.start -= min;
      n.end -= min;
    }
    tree.originMs += min / 1e6;
  }
  return moved;
}

/** The rows the waterfall shows: pre-order, skipping collapsed subtrees. */
export function visibleRows(roots: SpanNode[], collapsed: Set<string>): SpanNode[] {
  const out: SpanNode[] = [];
  const stack = [...roots].reverse();
  while (stack.length) {
    const n = stack.pop()!;
    out.push(n);
    if (collapsed.has(n.id)) continue;
    for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
  }
  return out;
}

/**
 * What a large trace opens with: the shallowest depth limit under which at
 * most `maxRows` rows show, collapsing the spans at that depth that have
 * children (small traces open fully expanded).
 */
export function initialCollapsed(tree: SpanTree, maxRows = 2000): Set<string> {
  if (tree.nodes.length <= maxRows) return new Set();
  const perDepth: number[] = [];
  for (const n of tree.nodes) perDepth[n.depth] = (perDepth[n.depth] ?? 0) + 1;
  let depth = 0;
  let shown = perDepth[0] ?? 0;
  while (depth + 1 < perDepth.length && shown + perDepth[depth + 1] <= maxRows) {
    depth++;
    shown += perDepth[depth];
  }
  const out = new Set<string>();
  for (const n of tree.nodes) if (n.depth === depth && n.children.length) out.add(n.id);
  return out;
}
