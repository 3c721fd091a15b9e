#!/usr/bin/env python3
"""Ingest acknowledgement and light-query latency while heavy queries run.

Starts a collector (release binary), fills tenant `heavy` with log records,
then runs two phases of the same length on tenant `good`:

  A. the load generator at a fixed rate, plus a light query every 100 ms;
  B. the same, while HEAVY_CLIENTS threads send heavy queries (regex log
     searches and fine histograms over a day) to
     tenant `heavy` without pause: at or above the query concurrency limit.

Prints one JSON line per phase: acknowledgement p50/p99 (from the load
generator), light-query p50/p99, and the heavy queries' status counts.

Usage: benches/query_isolation.py [--bin-dir target/release] [--seconds 60]
       [--rate 20000] [--heavy-clients 8] [--seed-records 2000000]
Everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen


def get(base: str, path: str, params: dict, tenant: str, timeout: float = 150) -> int:
    req = Request(f"{base}{path}?{urlencode(params)}", headers={"X-Scope-OrgID": tenant})
    try:
        with urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except HTTPError as e:
        return e.code
    except OSError:
        return 0


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def loadgen(bin_dir: Path, grpc: str, *args: str) -> dict:
    out = subprocess.run(
        [str(bin_dir / "periscope-loadgen"), "--endpoint", f"http://{grpc}", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def phase(bin_dir: Path, grpc: str, base: str, seconds: int, rate: int, heavy_clients: int) -> dict:
    stop = threading.Event()
    light: list[float] = []
    light_codes: Counter = Counter()
    heavy_codes: Counter = Counter()

    def light_loop() -> None:
        while not stop.is_set():
            now = int(time.time())
            t0 = time.monotonic()
            code = get(base, "/api/v1/logs/search", {"q": "error", "limit": 100, "start": now - 900, "end": now}, "good")
            light.append((time.monotonic() - t0) * 1000)
            light_codes[code] += 1
            time.sleep(0.1)

    def heavy_loop(i: int) -> None:
        while not stop.is_set():
            now = int(time.time())
            if i % 2 == 0:
                code = get(base, "/api/v1/logs/search", {"q": "body:/.*e.*r.*/", "limit": 1000, "start": now - 86400, "end": now}, "heavy")
            else:
                code = get(base, "/api/v1/logs/histogram", {"q": "error OR timeout", "step": "10s", "start": now - 86400, "end": now}, "heavy")
            heavy_codes[code] += 1

    threads = [threading.Thread(target=light_loop)] + [threading.Thread(target=heavy_loop, args=(i,)) for i in range(heavy_clients)]
    for t in threads:
        t.start()
    try:
        ack = loadgen(bin_dir, grpc, "--tenant", "good", "--rate", str(rate), "--duration", str(seconds), "--clients", "4")
    finally:
        stop.set()
        for t in threads:
            t.join()
    return {
        "heavy_clients": heavy_clients,
        "acked_records_per_s": round(ack["records_per_s"]),
        "ack_p50_ms": ack["latency_p50_ms"],
        "ack_p99_ms": ack["latency_p99_ms"],
        "light_queries": len(light),
        "light_p50_ms": round(quantile(light, 0.5), 1),
        "light_p99_ms": round(quantile(light, 0.99), 1),
        "light_status": dict(light_codes),
        "heavy_status": dict(heavy_codes),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=str(Path(__file__).resolve().parents[1] / "target" / "release"))
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--heavy-clients", type=int, default=8)
    ap.add_argument("--seed-records", type=int, default=2_000_000)
    ap.add_argument("--collector-args", default="", help="extra flags for periscope serve")
    a = ap.parse_args()
    bin_dir = Path(a.bin_dir)
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.Popen(
            [str(bin_dir / "periscope"), "serve", "--data-dir", f"{work}/data", "--otlp-grpc-addr", "127.0.0.1:0",
             "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", *a.collector_args.split()],
            stdout=subprocess.PIPE, stderr=open(f"{work}/collector.err", "wb"), text=True,
        )
        try:
            addrs = json.loads(proc.stdout.readline())
            base = f"http://{addrs['http']}"
            while get(base, "/readyz", {}, "good", timeout=5) != 200:
                time.sleep(0.1)
            seed = loadgen(bin_dir, addrs["otlp_grpc"], "--tenant", "heavy", "--records", str(a.seed_records))
            print(json.dumps({"seeded_records": seed["acked_records"], "seed_records_per_s": round(seed["records_per_s"])}), flush=True)
            time.sleep(5)
            for heavy in (0, a.heavy_clients):
                print(json.dumps(phase(bin_dir, addrs["otlp_grpc"], base, a.seconds, a.rate, heavy)), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
