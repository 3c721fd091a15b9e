// PromQL autocompletion: where the cursor is (a metric or function name, a
// label name inside `{…}` or `by (…)`, a label value inside quotes) and what
// the accepted item turns the text into. The editor supplies the names.

/** What is being typed at the cursor. */
export type Context =
  | { kind: "name"; prefix: string; from: number }
  | { kind: "label"; prefix: string; from: number; metric: string | null; braces: boolean }
  | { kind: "value"; prefix: string; from: number; metric: string | null; label: string }
  | { kind: "none" };

/** Aggregations and functions offered with metric names. */
export const FUNCTIONS = [
  "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group",
  "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs", "ceil", "floor", "round",
  "clamp", "clamp_min", "clamp_max", "absent", "absent_over_time", "avg_over_time", "min_over_time",
  "max_over_time", "sum_over_time", "count_over_time", "last_over_time", "quantile_over_time", "label_replace",
  "label_join", "sort", "sort_desc", "time", "timestamp", "vector", "scalar", "changes", "resets", "predict_linear",
  "exp", "ln", "log2", "log10", "sqrt",
];

const IDENT_END = /[a-zA-Z_:][a-zA-Z0-9_:.]*$/;

/** The completion context at `cursor`. */
export function contextAt(text: string, cursor: number): Context {
  const before = text.slice(0, cursor);
  // Inside a string: a label value when it follows `label op "`.
  const quotes = (before.match(/(?<!\\)"/g) ?? []).length;
  if (quotes % 2 === 1) {
    const m = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)$/.exec(before);
    if (!m) return { kind: "none" };
    const brace = before.lastIndexOf("{", m.index);
    return {
      kind: "value",
      prefix: m[3],
      from: cursor - m[3].length,
      label: m[1],
      metric: brace >= 0 ? metricBefore(before, brace) : null,
    };
  }
  const open = before.lastIndexOf("{");
  const close = before.lastIndexOf("}");
  if (open > close) {
    const inner = before.slice(open + 1);
    const m = /(^|[,{\s])([a-zA-Z_][a-zA-Z0-9_]*)?$/.exec(inner);
    // Right after an operator or a closed value there is nothing to offer.
    if (m && !/(=|~|")\s*$/.test(inner.slice(0, inner.length - (m[2]?.length ?? 0)))) {
      const prefix = m[2] ?? "";
      return { kind: "label", prefix, from: cursor - prefix.length, metric: metricBefore(before, open), braces: true };
    }
    return { kind: "none" };
  }
  // Grouping labels: `by (`, `without (`, `on (`, `ignoring (`, `group_left (`.
  const g = /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)$/.exec(before);
  if (g) {
    const m = /([a-zA-Z_][a-zA-Z0-9_]*)?$/.exec(g[2]);
    const prefix = m?.[1] ?? "";
    return { kind: "label", prefix, from: cursor - prefix.length, metric: null, braces: false };
  }
  const id = IDENT_END.exec(before);
  if (id) {
    // Not inside a range or a number (`[5m`, `0.95`).
    const prev = before.slice(0, id.index);
    if (/\[[^\]]*$/.test(prev) || /\d$/.test(prev)) return { kind: "none" };
    return { kind: "name", prefix: id[0], from: id.index };
  }
  return { kind: "none" };
}

/** The metric name written just before the `{` at `brace`, if any. */
function metricBefore(text: string, brace: number): string | null {
  const m = /([a-zA-Z_:][a-zA-Z0-9_:]*)\s*$/.exec(text.slice(0, brace));
  if (!m) return null;
  return FUNCTIONS.includes(m[1]) ? null : m[1];
}

/** Candidates starting with the prefix first, then containing it; at most `limit`. */
export function rank(items: string[], prefix: string, limit = 50): string[] {
  const p = prefix.toLowerCase();
  const starts: string[] = [];
  const contains: string[] = [];
  for (const it of items) {
    const l = it.toLowerCase();
    if (l.startsWith(p)) starts.push(it);
    else if (p && l.includes(p)) contains.push(it);
  }
  starts.sort();
  contains.sort();
  return [...starts, ...contains].slice(0, limit);
}

/** The text and cursor after accepting `item` in `ctx`. */
export function apply(text: string, cursor: number, ctx: Context, item: string): { text: string; cursor: number } {
  if (ctx.kind === "none") return { text, cursor };
  let insert = item;
  let end = cursor;
  if (ctx.kind === "value") {
    insert = item.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
    // Replace the rest of the value up to its closing quote, adding one if missing.
    const rest = text.slice(cursor);
    const close = /^(?:[^"\\]|\\.)*"/.exec(rest);
    if (close) end = cursor + close[0].length;
    insert += '"';
  } else {
    const rest = /^[a-zA-Z0-9_:.]*/.exec(text.slice(cursor));
    end = cursor + (rest ? rest[0].length : 0);
    if (ctx.kind === "label" && ctx.braces && !/^\s*(=|!=|!~)/.test(text.slice(end))) {
      insert += '="';
      const out = text.slice(0, ctx.from) + insert + '"' + text.slice(end);
      return { text: out, cursor: ctx.from + insert.length };
    }
  }
  const out = text.slice(0, ctx.from) + insert + text.slice(end);
  return { text: out, cursor: ctx.from + insert.length };
}
