"""Range queries against instant queries, over metrics from the official
OpenTelemetry Python SDK.

Range queries over the expressions dashboards use most are evaluated a
series at a time from one scan of the store (files and head together);
instant queries load their windows and run the step evaluator. At every
step, a range query's points must be the instant query's answer at that
time, whether the samples are in flushed files, in the head, or both.
"""

from __future__ import annotations

import math
import time

from conftest import unique
from test_metrics_sdk import make_provider, prom, query_until

# Flushed every second: the exports land in several files and the head.
ARGS = ["--metrics-flush-interval", "1s"]


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def test_range_query_points_are_the_instant_answers_at_each_step(collectors) -> None:  # noqa: ANN001
    c = collectors(args=ARGS).start()
    service = unique("range")
    provider, reader = make_provider("grpc", f"http://{c.grpc_target}", service, delta=False)
    meter = provider.get_meter("e2e-range")
    requests = meter.create_counter("e2e.requests", unit="1")
    active = meter.create_up_down_counter("e2e.active")
    latency = meter.create_histogram("e2e.latency", unit="ms")
    payload = meter.create_histogram("e2e.payload", unit="By")

    start = math.floor(time.time()) - 1
    for i in range(6):
        requests.add(3 + 2 * i, {"route": "/cart"})
        requests.add(1 + i, {"route": "/pay"})
        active.add(1 if i % 2 == 0 else -2)
        for k in range(20):
            latency.record(5 + 40 * ((k + i) % 4))
            payload.record(500 + 250 * ((k * i) % 5))
        assert reader.force_flush(30_000)
        time.sleep(1.1)
    provider.shutdown()

    job = f'job="{service}"'
    # Everything exported is queryable before comparing.
    total = query_until(c, f"sum(e2e_requests_total{{{job}}})")
    assert float(total[0]["value"][1]) == sum(3 + 2 * i + 1 + i for i in range(6)), total
    end = math.ceil(time.time()) + 1

    queries = [
        f"sum by (route) (rate(e2e_requests_total{{{job}}}[4s]))",
        f"increase(e2e_requests_total{{{job}}}[3s])",
        f"e2e_active{{{job}}}",
        f"histogram_quantile(0.5, sum by (le) (rate(e2e_latency_milliseconds_bucket{{{job}}}[4s])))",
        f'sum(rate(e2e_requests_total{{{job},route="/pay"}}[4s])) / sum(rate(e2e_requests_total{{{job}}}[4s]))',
        f"max_over_time(e2e_requests_total{{{job}}}[2s]) * 2",
        # Native histograms: the chunked evaluation, for comparison.
        f"histogram_quantile(0.9, sum(rate(e2e_payload_bytes{{{job}}}[4s])))",
    ]
    for q in queries:
        data = prom(c, "query_range", query=q, start=start, end=end, step=1)
        assert data["resultType"] == "matrix", data
        ranged: dict[int, dict[str, float]] = {}
        for s in data["result"]:
            key = repr(sorted(s["metric"].items()))
            for t, v in s["values"]:
                ranged.setdefault(int(t), {})[key] = float(v)
        assert len(ranged) >= 3, (q, data["result"])
        for t in range(start, end + 1):
            inst = prom(c, "query", query=q, time=t)
            assert inst["resultType"] == "vector", inst
            want = {repr(sorted(s["metric"].items())): float(s["value"][1]) for s in inst["result"]}
            got = ranged.get(t, {})
            assert got.keys() == want.keys(), (q, t, got, want)
            for k, v in want.items():
                assert close(got[k], v), (q, t, k, got[k], v)
