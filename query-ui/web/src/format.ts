// Formatting of durations, times and numbers for display.

/** `1.23 s`, `45.6 ms`, `789 µs`, `12 ns`. */
export function formatDuration(ns: number): string {
  const a = Math.abs(ns);
  if (a >= 60e9) {
    const m = Math.floor(a / 60e9);
    const s = (a - m * 60e9) / 1e9;
    return `${ns < 0 ? "-" : ""}${m}m ${s.toFixed(s < 10 ? 1 : 0)}s`;
  }
  if (a >= 1e9) return `${(ns / 1e9).toPrecision(3)} s`;
  if (a >= 1e6) return `${(ns / 1e6).toPrecision(3)} ms`;
  if (a >= 1e3) return `${(ns / 1e3).toPrecision(3)} µs`;
  return `${Math.round(ns)} ns`;
}

/** RFC 3339 with nanoseconds → milliseconds since the epoch (fraction kept). */
export function parseRfc3339Ms(s: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(s);
  if (!m) return Date.parse(s);
  const base = Date.parse(m[1] + m[4]);
  const frac = m[3] ? Number(`0.${m[3]}`) * 1000 : 0;
  return base + frac;
}

/** RFC 3339 with nanoseconds → nanoseconds since the epoch as a float
 *  relative to `originMs` (avoids losing sub-microsecond precision). */
export function nsSince(s: string, originMs: number): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(s);
  if (!m) return (Date.parse(s) - originMs) * 1e6;
  const base = Date.parse(m[1] + m[4]);
  const frac = m[3] ? Number((m[3] + "000000000").slice(0, 9)) : 0;
  return (base - originMs) * 1e6 + frac;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** `2026-11-22 10:04:05.123` in local time. */
export function formatTime(ms: number, withDate = true): string {
  const d = new Date(ms);
  const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}` : t;
}

/** `1.2k`, `3.4M`; small numbers with up to 3 significant digits. */
export function formatNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${(v / 1e3).toPrecision(3)}k`;
  if (a === 0 || a >= 100) return String(Math.round(v));
  return String(Number(v.toPrecision(3)));
}

/** A stable colour for a service name (hue from a string hash). */
export function serviceColor(name: string): string {
  let hash = 2166136261;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  const hue = (hash >>> 0) % 360;
  return `hsl(${hue} 60% 52%)`;
}
