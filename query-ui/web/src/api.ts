// Calls to the collector's APIs (same origin). Errors carry the server's
// message: `{"error": "..."}` from the query API and the Prometheus API alike.
//
// Every call goes through `request`: it sends the session cookie (when the
// collector asks for sign-in) and `X-Periscope-Request: 1`, the header the
// collector wants on state-changing requests made with the cookie, which a
// page of another site cannot send. A 401 is reported to the handler set
// with `onUnauthorized` (main.ts shows the sign-in page).

import type { ApiSpan } from "./spantree";

/** A failed call, with the server's message when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    /** The server's own message (`error` of its JSON), or the body's start. */
    readonly detail = "",
  ) {
    super(message);
  }
}

/** The header every call of the UI carries. */
export const REQUEST_HEADER = "X-Periscope-Request";

let unauthorized: ((e: ApiError) => void) | null = null;

/** Sets what happens when a call is answered 401 (not signed in, or the session ended). */
export function onUnauthorized(f: ((e: ApiError) => void) | null): void {
  unauthorized = f;
}

/** `fetch` with the session cookie and the UI's header. */
export function request(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set(REQUEST_HEADER, "1");
  if (!headers.has("Accept")) headers.set("Accept", "application/json");
  return fetch(path, { ...init, headers, credentials: "same-origin" });
}

/** Options of `callJson`. */
export interface CallOptions {
  /** Whether a 401 goes to the `onUnauthorized` handler (default true). */
  signInOn401?: boolean;
}

/** Sends a request and reads its JSON answer (null when it has none). */
export async function callJson<T>(path: string, init: RequestInit = {}, opts: CallOptions = {}): Promise<T> {
  let res: Response;
  try {
    res = await request(path, init);
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(`cannot reach the collector: ${(e as Error).message}`, 0);
  }
  let body: unknown = null;
  const text = await res.text();
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const msg =
      body && typeof body === "object" && "error" in body ? String((body as { error: unknown }).error) : text.slice(0, 300);
    const err = new ApiError(`${res.status} ${res.statusText}: ${msg}`, res.status, msg);
    if (res.status === 401 && opts.signInOn401 !== false) unauthorized?.(err);
    throw err;
  }
  return body as T;
}

/** GETs JSON from `path` with the given parameters (empty ones left out). */
export async function getJson<T>(
  path: string,
  params: Record<string, string | number | undefined | null | string[]> = {},
  signal?: AbortSignal,
): Promise<T> {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.set(k, String(v));
  }
  const qs = q.toString();
  return callJson<T>(qs ? `${path}?${qs}` : path, { signal });
}

/** Whether an error is an abort (a newer request replaced the call). */
export function isAbort(e: unknown): boolean {
  return e instanceof Error && e.name === "AbortError";
}

// ----- shapes -----

export interface LogHit {
  timestamp: string;
  observed_timestamp: string;
  severity_text: string;
  severity_number: number;
  body: string;
  service: string;
  trace_id: string;
  span_id: string;
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
  scope: string;
}

export interface LogPage {
  hits: LogHit[];
  next_cursor: string | null;
}

export interface Histogram {
  step_seconds: number;
  buckets: { start: string; count: number }[];
}

export interface TraceSummary {
  trace_id: string;
  root_service: string;
  root_operation: string;
  start_time: string;
  duration_ns: number;
  span_count: number;
  error_count: number;
  services: string[];
  http_method?: string | null;
  http_route?: string | null;
  http_status_code?: number | null;
  truncated?: boolean;
}

export interface Trace {
  trace_id: string;
  spans: ApiSpan[];
}

export interface MapNode {
  id: string;
  kind: "service" | "database" | "messaging" | "external";
  requests: number;
  errors: number;
}

export interface MapEdge {
  source: string;
  target: string;
  requests: number;
  errors: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
}

export interface ServiceMap {
  nodes: MapNode[];
  edges: MapEdge[];
}

export interface MetricInfo {
  name: string;
  type: string;
  unit: string;
  description: string;
}

export interface PromSeries {
  metric: Record<string, string>;
  values?: [number, string][];
  value?: [number, string];
}

export interface PromResult {
  resultType: "matrix" | "vector" | "scalar" | "string";
  result: PromSeries[] | [number, string];
}

interface PromEnvelope<T> {
  status: string;
  data: T;
  warnings?: string[];
}

/** Seconds for the Prometheus API. */
const secs = (ms: number) => (ms / 1000).toFixed(3);

export function promRange(expr: string, startMs: number, endMs: number, stepS: number, signal?: AbortSignal) {
  return getJson<PromEnvelope<PromResult>>(
    "/prometheus/api/v1/query_range",
    { query: expr, start: secs(startMs), end: secs(endMs), step: String(stepS) },
    signal,
  ).then((r) => r.data);
}

export function promInstant(expr: string, timeMs: number, signal?: AbortSignal) {
  return getJson<PromEnvelope<PromResult>>("/prometheus/api/v1/query", { query: expr, time: secs(timeMs) }, signal).then(
    (r) => r.data,
  );
}

export function promLabels(match: string | null, signal?: AbortSignal) {
  return getJson<PromEnvelope<string[]>>("/prometheus/api/v1/labels", { "match[]": match ? [match] : undefined }, signal).then(
    (r) => r.data,
  );
}

export function promLabelValues(label: string, match: string | null, signal?: AbortSignal) {
  return getJson<PromEnvelope<string[]>>(
    `/prometheus/api/v1/label/${encodeURIComponent(label)}/values`,
    { "match[]": match ? [match] : undefined },
    signal,
  ).then((r) => r.data);
}

/** RFC 3339 for the query API's `start`/`end`. */
export const iso = (ms: number) => new Date(ms).toISOString();
