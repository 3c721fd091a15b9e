// Small pieces of the logs page that are pure logic (and unit-tested).

/** Quotes a value for the log query language. */
export function quote(v: string): string {
  return `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The query with `field:value` required (or excluded) in addition. */
export function addTerm(q: string, field: string, value: string, exclude: boolean): string {
  const term = `${field}:${quote(value)}`;
  const cur = q.trim();
  if (!exclude) return cur ? `${wrap(cur)} AND ${term}` : term;
  return cur ? `${wrap(cur)} AND NOT ${term}` : `* AND NOT ${term}`;
}

/** Parenthesises a query holding OR so that AND binds as the user meant. */
function wrap(q: string): string {
  return /\bOR\b/.test(q) && !(q.startsWith("(") && q.endsWith(")")) ? `(${q})` : q;
}

/** The CSS class of a severity number (OTLP ranges). */
export function severityClass(n: number): string {
  if (n >= 21) return "sev-fatal";
  if (n >= 17) return "sev-error";
  if (n >= 13) return "sev-warn";
  if (n >= 9) return "sev-info";
  if (n >= 5) return "sev-debug";
  if (n >= 1) return "sev-trace";
  return "sev-unset";
}
