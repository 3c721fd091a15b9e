"""Crash safety for metrics: every acknowledged sample is queryable exactly once.

Two senders stream remote-write requests; request `b` carries 100 samples of
its own series `crash_points{req="b"}` at distinct timestamps. After 30
requests are acknowledged the collector is SIGKILLed mid-stream, restarted on
the same data dir, and then every acknowledged series must have exactly its
100 samples (an unacknowledged one 0 or 100), and a clean restart must not
change that.
"""

from __future__ import annotations

import itertools
import threading
import time

import requests
from conftest import Collector, http_session, unique
from test_remote_write import snappy, timeseries, write_request

# Flushes every 200 ms: the kill lands between flushes, with part of what was
# acknowledged in Parquet files and the rest only in the WAL.
ARGS = ["--metrics-flush-interval", "200ms"]
REQUESTS = 120
SAMPLES = 100
KILL_AFTER = 30


def counts(c: Collector, job: str, t: float) -> dict[str, int]:
    r = http_session().get(
        c.http_url("/prometheus/api/v1/query"),
        params={"query": f'count_over_time(crash_points{{job="{job}"}}[1h])', "time": t},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return {s["metric"]["req"]: int(float(s["value"][1])) for s in r.json()["data"]["result"]}


def test_kill9_during_metric_ingest(collectors) -> None:  # noqa: ANN001
    job = unique("crash")
    base_ms = int(time.time() * 1000) - 30 * 60_000
    bodies = [
        snappy(write_request([timeseries(
            {"__name__": "crash_points", "job": job, "req": str(b)},
            [(float(i), base_ms + b * 1000 + i) for i in range(SAMPLES)],
        )]))
        for b in range(REQUESTS)
    ]
    first: Collector = collectors(name="first", args=ARGS).start()
    url = first.otlp_url("/api/v1/write")
    acked: set[int] = set()
    lock = threading.Lock()
    next_b = itertools.count()

    def sender() -> None:
        s = http_session()
        while (b := next(next_b)) < REQUESTS:
            try:
                r = s.post(url, data=bodies[b], headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}, timeout=10)
            except requests.RequestException:
                continue
            if r.status_code == 204:
                with lock:
                    acked.add(b)
            time.sleep(0.02)

    manifest = first.data_dir / "tenants" / "default" / "metrics" / "manifest.json"

    def killer() -> None:
        # Once enough is acknowledged and at least one flush is listed.
        while True:
            with lock:
                if len(acked) >= KILL_AFTER and manifest.exists():
                    break
            time.sleep(0.005)
        first.kill()

    threads = [threading.Thread(target=sender) for _ in range(2)] + [threading.Thread(target=killer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert first.proc is not None and first.proc.returncode == -9
    assert KILL_AFTER <= len(acked) < REQUESTS, f"the kill did not land mid-stream: {len(acked)} acked"
    assert manifest.exists(), "no flush happened before the kill"

    t = time.time()
    second: Collector = collectors(name="second", args=ARGS).start()
    got = counts(second, job, t)
    missing = [b for b in acked if got.get(str(b)) != SAMPLES]
    assert not missing, f"acknowledged requests without exactly {SAMPLES} samples: {[(b, got.get(str(b))) for b in missing][:10]}"
    odd = {k: v for k, v in got.items() if v != SAMPLES}
    assert not odd, f"series with a partial or doubled request: {odd}"

    second.stop_ok()
    third: Collector = collectors(name="third", args=ARGS).start()
    assert counts(third, job, t) == got, "a clean restart changed the samples"
