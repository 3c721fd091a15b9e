#!/usr/bin/env python3
"""Latency of the trace API over a running collector's span store.

Usage: .venv/bin/python benches/trace_query_latency.py HTTP_BASE DATA_DIR [RUNS] [TENANT]

Samples trace ids with DuckDB from the summary files the manifest lists, then
times (wall clock, one request at a time, from this machine):
  - trace by id (every sampled id once): p50, p99, max;
  - trace search over the last 24 h with typical filters (RUNS times each): p50;
  - the service map over the last hour (RUNS times): p50.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import duckdb
import requests


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(s: requests.Session, url: str, params: dict | None = None) -> tuple[float, requests.Response]:
    t = time.perf_counter()
    r = s.get(url, params=params, timeout=60)
    return (time.perf_counter() - t) * 1000, r


def main() -> int:
    base, data_dir = sys.argv[1].rstrip("/"), Path(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    tenant = sys.argv[4] if len(sys.argv) > 4 else "default"
    tdir = data_dir / "tenants" / tenant / "traces"
    manifest = json.loads((tdir / "manifest.json").read_text())
    summaries = [str(tdir / f["partition"] / f["summaries"]) for f in manifest["files"] if f.get("summaries")]
    spans_total = sum(f["span_count"] for f in manifest["files"])
    disk = sum(p.stat().st_size for p in tdir.rglob("*.parquet"))
    con = duckdb.connect()
    ids = [r[0].lower() for r in con.execute(
        "SELECT hex(trace_id) FROM read_parquet($1) USING SAMPLE 500 ROWS", [summaries]).fetchall()]
    s = requests.Session()
    s.trust_env = False
    s.headers["X-Scope-OrgID"] = tenant
    print(f"{spans_total} spans in {len(manifest['files'])} file sets, {disk / 1e6:.1f} MB of Parquet "
          f"({disk / max(spans_total, 1):.1f} bytes per span); {len(ids)} sampled traces", file=sys.stderr)

    by_id = []
    for tid in ids:
        ms, r = timed(s, f"{base}/api/v1/traces/{tid}")
        if r.status_code != 200:
            print(f"trace {tid}: {r.status_code} {r.text[:200]}", file=sys.stderr)
            return 1
        by_id.append(ms)

    now = time.time()
    day = {"start": int(now - 86400), "end": int(now)}
    searches = {
        "newest 20, no filter": {},
        "service=checkout": {"service": "checkout"},
        "service=payment, status=error": {"service": "payment", "status": "error"},
        "min_duration=200ms": {"min_duration": "200ms"},
        "tags http.response.status_code=500": {"tags": "http.response.status_code=500"},
        "service=cart, operation + tag": {"service": "cart", "tags": "db.system=redis"},
    }
    rows = [("trace by id", f"{statistics.median(by_id):.1f}", f"{pct(by_id, 99):.1f}", f"{max(by_id):.1f}", "")]
    for name, params in searches.items():
        lat, n = [], 0
        for _ in range(runs):
            ms, r = timed(s, f"{base}/api/v1/traces", {**day, "limit": 20, **params})
            r.raise_for_status()
            n = len(r.json()["traces"])
            lat.append(ms)
        rows.append((f"search 24 h: {name}", f"{statistics.median(lat):.1f}", f"{pct(lat, 99):.1f}", f"{max(lat):.1f}", f"{n} traces"))
    lat = []
    for _ in range(runs):
        ms, r = timed(s, f"{base}/api/v1/service-map", {"start": int(now - 3600), "end": int(now)})
        r.raise_for_status()
        m = r.json()
        lat.append(ms)
    rows.append(("service map, 1 h", f"{statistics.median(lat):.1f}", f"{pct(lat, 99):.1f}", f"{max(lat):.1f}",
                 f"{len(m['nodes'])} nodes, {len(m['edges'])} edges"))
    print("| query | p50 ms | p99 ms | max ms | result |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
