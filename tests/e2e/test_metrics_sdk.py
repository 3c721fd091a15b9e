"""Metrics from the official OpenTelemetry Python SDK, read back through PromQL.

Each run uses its own service name (the `job` label). The SDK exports over
gRPC or HTTP/protobuf with cumulative or delta temporality; the collector
converts to Prometheus series (delta becomes cumulative at ingest), and the
Prometheus HTTP API under /prometheus answers queries.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from conftest import Collector, http_session, unique

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableGauge, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

DEADLINE_S = 30.0


def prom(c: Collector, path: str, **params: Any) -> dict[str, Any]:
    r = http_session().get(c.http_url(f"/prometheus/api/v1/{path}"), params=params, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (r.status_code, body)
    return body["data"]


def query_until(c: Collector, q: str, want_len: int = 1) -> list[dict[str, Any]]:
    """An instant query polled until it returns `want_len` series."""
    deadline = time.monotonic() + DEADLINE_S
    last: Any = None
    while time.monotonic() < deadline:
        data = prom(c, "query", query=q)
        assert data["resultType"] == "vector", data
        last = data["result"]
        if len(last) == want_len:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{q}: wanted {want_len} series, last answer {last}")


def value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def make_provider(transport: str, endpoint: str, service: str, delta: bool) -> tuple[MeterProvider, PeriodicExportingMetricReader]:
    temporality = {}
    if delta:
        temporality = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    if transport == "grpc":
        exporter = GrpcExporter(endpoint=endpoint, insecure=True, preferred_temporality=temporality)
    else:
        exporter = HttpExporter(endpoint=endpoint, preferred_temporality=temporality)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = [
        View(instrument_name="e2e.latency", aggregation=ExplicitBucketHistogramAggregation(boundaries=[10, 50, 100, 500])),
        View(instrument_name="e2e.payload", aggregation=ExponentialBucketHistogramAggregation(max_size=160)),
    ]
    provider = MeterProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": "i-1", "deployment.environment": "e2e"}),
        metric_readers=[reader],
        views=views,
    )
    return provider, reader


@pytest.mark.parametrize("transport,delta", [("grpc", False), ("http", True)], ids=["grpc-cumulative", "http-delta"])
def test_sdk_metrics_through_promql(collector: Collector, transport: str, delta: bool) -> None:
    service = unique("metrics")
    endpoint = collector.grpc_target if transport == "grpc" else collector.otlp_url("/v1/metrics")
    if transport == "grpc":
        endpoint = f"http://{collector.grpc_target}"
    provider, reader = make_provider(transport, endpoint, service, delta)
    meter = provider.get_meter("e2e-metrics")
    requests = meter.create_counter("e2e.requests", unit="1", description="requests served")
    active = meter.create_up_down_counter("e2e.active")
    latency = meter.create_histogram("e2e.latency", unit="ms")
    payload = meter.create_histogram("e2e.payload", unit="By")

    def depth(_: CallbackOptions) -> list[Observation]:
        return [Observation(42.5, {"queue": "orders"})]

    meter.create_observable_gauge("e2e.queue.depth", callbacks=[depth], unit="{items}")

    requests.add(5, {"route": "/cart"})
    active.add(3)
    for _ in range(100):
        latency.record(30)
        payload.record(1000)
    assert reader.force_flush(30_000)
    time.sleep(1.5)
    requests.add(7, {"route": "/cart"})
    active.add(-1)
    # A second, wider spread of payloads: the SDK lowers the histogram's
    # scale to fit 4000 next to 1000, so the two exports differ in schema.
    for _ in range(60):
        payload.record(1000)
    for _ in range(40):
        payload.record(4000)
    assert reader.force_flush(30_000)
    provider.shutdown()

    job = f'job="{service}"'
    # The counter: 5 + 7 whichever temporality the SDK used.
    got = query_until(collector, f'e2e_requests_total{{{job},route="/cart"}}')
    assert value(got[0]) == 12.0, got
    assert got[0]["metric"]["instance"] == "i-1", got
    rate = query_until(collector, f"rate(e2e_requests_total{{{job}}}[5m])")
    assert value(rate[0]) > 0 and math.isfinite(value(rate[0])), rate
    # An up-down counter is a gauge: its last value.
    assert value(query_until(collector, f"e2e_active{{{job}}}")[0]) == 2.0
    # The observable gauge's last value.
    assert value(query_until(collector, f'e2e_queue_depth{{{job},queue="orders"}}')[0]) == 42.5
    # Classic histogram: every value in the (10, 50] bucket, so the median is inside it.
    q = f"histogram_quantile(0.5, e2e_latency_milliseconds_bucket{{{job}}})"
    p50 = value(query_until(collector, q)[0])
    assert 10 < p50 <= 50, p50
    count = value(query_until(collector, f"e2e_latency_milliseconds_count{{{job}}}")[0])
    assert count == 100.0, count
    # Exponential histogram → native histogram: the median lies within one bucket of 1000.
    payload_sel = f"e2e_payload_bytes{{{job}}}"
    p50 = value(query_until(collector, f"histogram_quantile(0.5, {payload_sel})")[0])
    assert 900 < p50 < 1100, p50
    assert value(query_until(collector, f"histogram_count(sum({payload_sel}))")[0]) == 200.0
    # The rate of the native histogram is the second export's observations
    # (60 × 1000, 40 × 4000), bucket-wise across the change of schema: the
    # median within one bucket of 1000, the 90th percentile of 4000.
    p50 = value(query_until(collector, f"histogram_quantile(0.5, sum(rate({payload_sel}[5m])))")[0])
    assert 900 < p50 < 1100, p50
    p90 = value(query_until(collector, f"histogram_quantile(0.9, sum(rate({payload_sel}[5m])))")[0])
    assert 3600 < p90 < 4400, p90
    # Subtracting the first export's histogram (read `@` its own time) leaves
    # exactly the second export's observations, across the change of schema.
    samples = prom(collector, "query", query=f"{payload_sel}[5m]")["result"][0]["histograms"]
    first_t = samples[0][0]
    assert float(samples[0][1]["count"]) == 100.0, samples
    diff = f"sum({payload_sel}) - sum({payload_sel} @ {first_t})"
    got = query_until(collector, f"histogram_count({diff})")
    assert value(got[0]) == 100.0, got
    got = query_until(collector, f"histogram_sum({diff})")
    assert value(got[0]) == 60 * 1000 + 40 * 4000, got

    # Metadata and label APIs see the family.
    names = prom(collector, "label/__name__/values", **{"match[]": f"{{{job}}}"})
    assert "e2e_requests_total" in names, names
    meta = prom(collector, "metadata")
    assert any(k.startswith("e2e_requests") for k in meta), meta
    series = prom(collector, "series", **{"match[]": f"e2e_requests_total{{{job}}}"})
    assert len(series) == 1 and series[0]["route"] == "/cart", series


def test_prometheus_api_errors_and_buildinfo(collector: Collector) -> None:
    s = http_session()
    r = s.get(collector.http_url("/prometheus/api/v1/query"), params={"query": "sum(("}, timeout=10)
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data", r.text
    r = s.get(collector.http_url("/prometheus/api/v1/query_range"), params={"query": "up", "start": "10", "end": "5", "step": "1"}, timeout=10)
    assert r.status_code == 400 and r.json()["status"] == "error", r.text
    r = s.post(collector.http_url("/prometheus/api/v1/query"), data={"query": "vector(1) + 1", "time": "100"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"][0]["value"] == [100, "2"], r.text
    info = prom(collector, "status/buildinfo")
    assert "version" in info
