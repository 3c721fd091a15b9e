// Time ranges as they appear in the URL: `from`/`to` are either relative to
// now (`now`, `now-15m`, `now-2h30m`, or a bare duration `15m` meaning
// `now-15m`) or absolute (ISO 8601 or Unix milliseconds).

/** A range as written in the URL. */
export interface TimeRange {
  from: string;
  to: string;
}

/** A resolved range in milliseconds since the epoch. */
export interface Resolved {
  startMs: number;
  endMs: number;
}

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Parses `500ms`, `30s`, `5m`, `1h30m`, `2d`, `1w` into milliseconds; null if invalid. */
export function parseDuration(s: string): number | null {
  const t = s.trim();
  if (t === "") return null;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/y;
  let total = 0;
  let pos = 0;
  while (pos < t.length) {
    re.lastIndex = pos;
    const m = re.exec(t);
    if (!m) return null;
    total += Number(m[1]) * UNIT_MS[m[2]];
    pos = re.lastIndex;
  }
  return Number.isFinite(total) ? total : null;
}

/** Formats milliseconds as the shortest `1h30m`-style duration. */
export function formatDurationShort(ms: number): string {
  if (ms <= 0) return "0s";
  let rest = Math.round(ms);
  let out = "";
  for (const u of ["w", "d", "h", "m", "s"]) {
    const n = Math.floor(rest / UNIT_MS[u]);
    if (n > 0) {
      out += `${n}${u}`;
      rest -= n * UNIT_MS[u];
    }
  }
  if (rest > 0) out += `${rest}ms`;
  return out;
}

/** Resolves one end of a range to milliseconds; null if it cannot be read. */
export function parseTimeExpr(s: string, nowMs: number): number | null {
  const t = s.trim();
  if (t === "" || t === "now") return t === "now" ? nowMs : null;
  const rel = /^now\s*([+-])\s*(.+)$/.exec(t);
  if (rel) {
    const d = parseDuration(rel[2]);
    if (d === null) return null;
    return rel[1] === "-" ? nowMs - d : nowMs + d;
  }
  const bare = parseDuration(t);
  if (bare !== null && !/^\d+$/.test(t)) return nowMs - bare;
  if (/^\d{9,16}$/.test(t)) {
    const n = Number(t);
    // Ten digits are seconds (until 2286); more are milliseconds.
    return t.length <= 10 ? n * 1000 : n;
  }
  // Date-time: with a zone as given, without one in local time.
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/.test(t)) {
    const iso = t.replace(" ", "T");
    const ms = Date.parse(iso.length === 10 ? `${iso}T00:00` : iso);
    return Number.isNaN(ms) ? null : ms;
  }
  return null;
}

/** Whether the range moves with the clock (its end is relative to now). */
export function isRelative(r: TimeRange): boolean {
  return r.to.trim() === "now" || r.to.trim().startsWith("now");
}

/** Resolves a range; an error message when an end is unreadable or reversed. */
export function resolveRange(r: TimeRange, nowMs: number): Resolved | string {
  const start = parseTimeExpr(r.from, nowMs);
  if (start === null) return `cannot read start time "${r.from}": use now-15m, 15m, 2026-11-22T10:00 or Unix ms`;
  const end = parseTimeExpr(r.to, nowMs);
  if (end === null) return `cannot read end time "${r.to}": use now, now-5m, 2026-11-22T10:00 or Unix ms`;
  if (start >= end) return "the start time must be before the end time";
  return { startMs: start, endMs: end };
}

/** The quick choices of the picker. */
export const PRESETS: { label: string; from: string }[] = [
  { label: "Last 5 minutes", from: "now-5m" },
  { label: "Last 15 minutes", from: "now-15m" },
  { label: "Last 1 hour", from: "now-1h" },
  { label: "Last 6 hours", from: "now-6h" },
  { label: "Last 24 hours", from: "now-24h" },
  { label: "Last 7 days", from: "now-7d" },
];

/** A short label: `Last 15 minutes`, `Last 2h30m`, or `a → b`. */
export function describeRange(r: TimeRange): string {
  if (r.to.trim() === "now") {
    const p = PRESETS.find((p) => p.from === r.from.trim());
    if (p) return p.label;
    const m = /^now-(.+)$/.exec(r.from.trim());
    if (m) return `Last ${m[1]}`;
  }
  const fmt = (s: string) => {
    if (/^\d{9,16}$/.test(s.trim())) {
      const ms = parseTimeExpr(s, 0);
      return ms === null ? s : new Date(ms).toISOString().replace("T", " ").replace(/\.000Z$/, "Z");
    }
    return s;
  };
  return `${fmt(r.from)} → ${fmt(r.to)}`;
}

const NICE_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/** A step in seconds giving at most about `points` points over the range. */
export function pickStep(startMs: number, endMs: number, points = 240): number {
  const raw = (endMs - startMs) / 1000 / points;
  return NICE_STEPS_S.find((s) => s >= raw) ?? Math.ceil(raw / 86400) * 86400;
}
