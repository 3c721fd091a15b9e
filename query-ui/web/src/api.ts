// Calls to the collector's APIs (same origin). Errors carry the server's
// message: `{"error": "..."}` from the query API and the Prometheus API alike.

import type { ApiSpan } from "./spantree";

/** A failed call, with the server's message when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
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
  let res: Response;
  try {
    res = await fetch(qs ? `${path}?${qs}` : path, { signal, headers: { Accept: "application/json" } });
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
    throw new ApiError(`${res.status} ${res.statusText}: ${msg}`, res.status);
  }
  return body as T;
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
