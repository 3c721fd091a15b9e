"""Nobody can hurt the collector with a request.

The real binary runs under an address-space cap (`prlimit --as`) with small
query and connection limits. A well-behaved client, the OpenTelemetry Python
SDK, keeps writing logs, spans and metrics to tenant `good` and querying
them, while hostile requests of every class the hardening work knows about
arrive from other tenants: deeply nested queries, absurd PromQL steps and
subqueries, poison tenant names, requests spread over many hours, remote
write from the far future, unbounded bodies and slow clients, floods of
connections and heavy queries.

Asserted: each hostile request gets its 4xx/429/503 (or is cut off) within a
few seconds, the collector stays up and under its memory cap, other tenants
keep flushing, and the well-behaved client loses nothing and keeps getting
answers.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence
import warnings

import pytest
import requests
from conftest import PERISCOPE_BIN, Collector, http_session, unique
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from otlp_util import log_record, logs_request
from trace_util import wait_written
from test_remote_write import post as rw_post
from test_remote_write import snappy, timeseries, write_request

GOOD = "good"
EVIL = "evil"
# Address-space cap of the collector: virtual memory, so generous (thread
# stacks, mmapped index files and allocator arenas count); resident memory
# is checked against RSS_CAP_KIB.
AS_CAP_BYTES = 6 << 30
RSS_CAP_KIB = 1_500_000
# A hostile request must be answered (or its connection closed) within this.
ANSWER_S = 10.0

ARGS = [
    "--max-inflight-bytes", "64MiB",
    "--query-timeout", "5s",
    "--query-max-concurrent", "6",
    "--query-max-concurrent-per-tenant", "2",
    "--http-header-read-timeout", "2s",
    "--http-body-read-timeout", "4s",
    "--trace-idle", "1s",
    "--trace-flush-interval", "1s",
    "--metrics-flush-interval", "2s",
]


class Recording:
    """Counts what an SDK exporter sent and whether each export succeeded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.failed: list[str] = []


class RecordingLogs(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, rec: Recording, acked: list[str]) -> None:
        self.inner, self.rec, self.acked = inner, rec, acked

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        with self.rec.lock:
            if result == LogRecordExportResult.SUCCESS:
                self.rec.ok += len(batch)
                self.acked.extend(str(r.log_record.body) for r in batch)
            else:
                self.rec.failed.append(f"logs: {result}")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class RecordingSpans(SpanExporter):
    def __init__(self, inner: SpanExporter, rec: Recording, acked: list[str]) -> None:
        self.inner, self.rec, self.acked = inner, rec, acked

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        result = self.inner.export(spans)
        with self.rec.lock:
            if result == SpanExportResult.SUCCESS:
                self.rec.ok += len(spans)
                self.acked.extend(format(s.context.trace_id, "032x") for s in spans)
            else:
                self.rec.failed.append(f"spans: {result}")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


class RecordingMetrics(MetricExporter):
    def __init__(self, inner: MetricExporter, rec: Recording) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality)
        self.inner, self.rec = inner, rec

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> MetricExportResult:
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        with self.rec.lock:
            if result == MetricExportResult.SUCCESS:
                self.rec.ok += 1
            else:
                self.rec.failed.append(f"metrics: {result}")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
        self.inner.shutdown()


class GoodClient:
    """The well-behaved application: SDK logs, spans and a counter, plus queries."""

    def __init__(self, c: Collector) -> None:
        self.c = c
        self.stop = threading.Event()
        self.logs: list[str] = []
        self.traces: list[str] = []
        self.rec = Recording()
        self.query_errors: list[str] = []
        self.queries_ok = 0
        self.counter_total = 0
        self.run = unique("good")
        headers = {"x-scope-orgid": GOOD}
        resource = Resource.create({"service.name": "good-app"})
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(
                RecordingLogs(
                    GrpcLogExporter(endpoint=f"http://{c.grpc_target}", insecure=True, timeout=30, headers=headers),
                    self.rec,
                    self.logs,
                )
            )
        )
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(
                RecordingSpans(
                    GrpcSpanExporter(endpoint=f"http://{c.grpc_target}", insecure=True, timeout=30, headers=headers),
                    self.rec,
                    self.traces,
                )
            )
        )
        self.reader = PeriodicExportingMetricReader(
            RecordingMetrics(HttpMetricExporter(endpoint=c.otlp_url("/v1/metrics"), timeout=30, headers=headers), self.rec),
            export_interval_millis=1000,
        )
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.counter = self.meter_provider.get_meter("good").create_counter("good_requests")
        self.threads = [threading.Thread(target=self._write, daemon=True), threading.Thread(target=self._query, daemon=True)]

    def start(self) -> "GoodClient":
        for t in self.threads:
            t.start()
        return self

    def _write(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(level=logging.INFO, logger_provider=self.logger_provider)
        logger = logging.getLogger(f"e2e.adversarial.{self.run}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        tracer = self.tracer_provider.get_tracer("good")
        i = 0
        try:
            while not self.stop.is_set():
                with tracer.start_as_current_span(f"GET /item/{i % 5}"):
                    logger.info("good record %s n%d", self.run, i)
                self.counter.add(1)
                self.counter_total += 1
                i += 1
                time.sleep(0.05)
        finally:
            logger.removeHandler(handler)

    def _query(self) -> None:
        s = http_session()
        h = {"X-Scope-OrgID": GOOD}
        while not self.stop.is_set():
            for path, params in (
                ("/api/v1/logs/search", {"q": self.run, "limit": 20}),
                ("/api/v1/traces", {"service": "good-app", "limit": 5}),
                ("/prometheus/api/v1/query", {"query": "sum(good_requests_total)"}),
            ):
                try:
                    r = s.get(self.c.http_url(path), params=params, headers=h, timeout=30)
                    if r.status_code == 200:
                        self.queries_ok += 1
                    else:
                        self.query_errors.append(f"{path} -> {r.status_code}: {r.text[:200]}")
                except requests.RequestException as e:
                    self.query_errors.append(f"{path}: {e!r}")
            time.sleep(0.2)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        self.logger_provider.shutdown()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


# ----- hostile requests ---------------------------------------------------------

def q_get(c: Collector, path: str, params: dict[str, Any], tenant: str = EVIL) -> requests.Response:
    return http_session().get(c.http_url(path), params=params, headers={"X-Scope-OrgID": tenant}, timeout=ANSWER_S)


def q_post(c: Collector, path: str, data: dict[str, Any], tenant: str = EVIL) -> requests.Response:
    return http_session().post(c.http_url(path), data=data, headers={"X-Scope-OrgID": tenant}, timeout=ANSWER_S)


def expect(r: requests.Response, codes: set[int], what: str, mentions: str | None = None) -> None:
    assert r.status_code in codes, f"{what}: {r.status_code} {r.text[:300]} (want one of {sorted(codes)})"
    if mentions:
        assert mentions in r.text, f"{what}: the refusal should name {mentions!r}: {r.text[:300]}"


def hostile_queries(c: Collector) -> None:
    now = int(time.time())
    deep_log = "(" * 3000 + "a" + ")" * 3000
    expect(q_get(c, "/api/v1/logs/search", {"q": deep_log}), {400}, "log query 3000 deep", "--query-max-depth")
    expect(q_get(c, "/api/v1/logs/histogram", {"q": deep_log}), {400}, "log histogram 3000 deep", "--query-max-depth")
    expect(q_get(c, "/api/v1/logs/search", {"q": "a" * 200_000}), {400, 414, 431}, "log query 200 KB long")
    deep_prom = "(" * 50_000 + "1" + ")" * 50_000
    expect(q_post(c, "/prometheus/api/v1/query", {"query": deep_prom}), {400}, "PromQL 50000 deep", "bad_data")
    expect(q_post(c, "/prometheus/api/v1/query", {"query": "-" * 50_000 + "1"}), {400}, "PromQL 50000 unary minus")
    rng = {"query": "1", "start": now - 3600, "end": now}
    expect(q_get(c, "/prometheus/api/v1/query_range", {**rng, "step": "9999999999y"}), {400}, "step 9999999999y")
    expect(q_get(c, "/prometheus/api/v1/query_range", {**rng, "step": "0.0001"}), {400}, "step 0.0001")
    expect(q_get(c, "/prometheus/api/v1/query_range", {**rng, "start": -9.2e12, "end": 9.2e12, "step": "1"}), {400}, "range of centuries at 1s")
    expect(q_get(c, "/prometheus/api/v1/query", {"query": "count_over_time(vector(1)[10y:1ms])"}), {400, 422}, "subquery 10y:1ms")
    expect(q_get(c, "/prometheus/api/v1/query", {"query": "rate(x[100000y])"}), {200, 400, 422}, "range of 100000y")
    expect(q_get(c, "/api/v1/logs/search", {"cursor": "0.0"}), {200, 400}, "cursor before start")
    # Over centuries: answered with about 100 wide buckets (once overflowed into one empty bucket).
    r = q_get(c, "/api/v1/logs/histogram", {"start": -9200000000, "end": 9200000000})
    expect(r, {200, 400}, "histogram over centuries")
    if r.status_code == 200:
        assert 2 <= len(r.json()["buckets"]) <= 11_000, r.text[:300]
    expect(q_get(c, "/api/v1/logs/search", {"limit": 10**12}), {400}, "huge limit")
    expect(q_get(c, "/api/v1/traces", {"limit": 10**12}), {400}, "huge trace limit")
    expect(q_get(c, "/api/v1/traces", {"tags": "k=~(a{1000}){1000}"}), {400}, "huge regex")
    expect(q_get(c, "/api/v1/traces", {"tags": " ".join(f"k{i}=v" for i in range(2_000))}), {200, 400}, "2000 tag conditions")
    expect(q_get(c, "/api/v1/traces", {"tags": " ".join(f"k{i}=v" for i in range(20_000))}), {400, 414, 431}, "20000 tag conditions")
    deep_tags = json.dumps(json.loads("[" * 100 + "]" * 100))
    expect(q_get(c, "/jaeger/api/traces", {"service": "x", "tags": deep_tags}), {400}, "jaeger nested tags")
    expect(q_get(c, "/jaeger/api/traces", {"service": "x", "limit": 10**12}), {400}, "jaeger huge limit")
    expect(q_get(c, "/api/v1/logs/search", {"start": "-99999999999999999999"}), {400}, "absurd start")


def poison_tenants(c: Collector) -> None:
    """Tenant names that once named the data root's own files."""
    now = time.time_ns()
    for tenant in ("periscope.json", "periscope.lock", "tenants", "manifest.json"):
        body = logs_request([log_record(f"poison {tenant}")], service="poison").SerializeToString()
        r = c.post_otlp("/v1/logs", body, headers={"X-Scope-OrgID": tenant}, timeout=ANSWER_S)
        assert r.status_code in (200, 400), f"tenant {tenant}: {r.status_code} {r.text[:200]}"
        rw = snappy(write_request([timeseries({"__name__": "poison_metric"}, [(1.0, now // 1_000_000)])]))
        r = rw_post(c, rw, tenant=tenant)
        assert r.status_code in (204, 200, 400), f"remote write tenant {tenant}: {r.status_code} {r.text[:200]}"
        span = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "poison"}}]},
                 "scopeSpans": [{"spans": [{"traceId": "ab" * 16, "spanId": "0102030405060708", "name": "GET /",
                                            "kind": 2, "startTimeUnixNano": str(now - 1_000_000), "endTimeUnixNano": str(now)}]}]}]}
        r = c.post_otlp("/v1/traces", json.dumps(span).encode(), content_type="application/json", headers={"X-Scope-OrgID": tenant}, timeout=ANSWER_S)
        assert r.status_code in (200, 400), f"span tenant {tenant}: {r.status_code} {r.text[:200]}"


def churn(c: Collector) -> None:
    """1,200 records spread over 8 hours in one request."""
    now, hour = time.time_ns(), 3600 * 10**9
    recs = [{"timeUnixNano": str(now - (i % 8) * hour - 10**9), "body": {"stringValue": f"churn {i}"}} for i in range(1200)]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": recs}]}]}).encode()
    r = c.post_otlp("/v1/logs", body, content_type="application/json", headers={"X-Scope-OrgID": "churn"}, timeout=ANSWER_S)
    assert r.status_code == 200, f"churn request: {r.status_code} {r.text[:200]}"


def remote_write_out_of_bounds(c: Collector) -> None:
    hour_ms = 3_600_000
    future = [(1.0, 7258118400000 + i * hour_ms) for i in range(100)]  # from 2200-01-01
    past = [(1.0, 1000 + i * hour_ms) for i in range(100)]  # from 1970-01-01
    for name, samples in (("future", future), ("past", past)):
        body = snappy(write_request([timeseries({"__name__": "sec_probe", "job": name}, samples)]))
        r = rw_post(c, body, tenant="rw-probe")
        assert r.status_code == 400, f"remote write from the {name}: {r.status_code} {r.text[:200]}"
    r = http_session().post(
        c.otlp_url("/api/v1/write"),
        data=b"not protobuf",
        headers={"Content-Type": "text/plain", "X-Scope-OrgID": "rw-probe"},
        timeout=ANSWER_S,
    )
    assert r.status_code == 415, f"remote write as text/plain: {r.status_code} {r.text[:200]}"


def slowloris(c: Collector) -> None:
    """Half-sent headers and stalled bodies are cut off by the server."""
    socks = []
    for addr, path in ((c.listening["http"], b"/api/v1/write"), (c.listening["otlp_http"], b"/v1/logs")):
        host, port = addr.rsplit(":", 1)
        for _ in range(3):
            s = socket.create_connection((host, int(port)), timeout=ANSWER_S)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
            socks.append(s)
        s = socket.create_connection((host, int(port)), timeout=ANSWER_S)
        s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 15728640\r\n\r\n" + b"\0" * 1024)
        socks.append(s)
    for s in socks:
        # The server closes (EOF) or answers 408; either way within the timeout.
        data = s.recv(4096)
        assert data == b"" or b" 408 " in data.split(b"\r\n", 1)[0] or b" 413 " in data.split(b"\r\n", 1)[0], data[:200]
        s.close()


def many_connections(c: Collector, n: int = 400) -> None:
    host, port = c.listening["otlp_http"].rsplit(":", 1)
    socks = []
    try:
        for _ in range(n):
            try:
                socks.append(socket.create_connection((host, int(port)), timeout=5))
            except OSError:
                break
        # Meanwhile the service answers.
        r = http_session().get(c.http_url("/healthz"), timeout=ANSWER_S)
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()


def big_json_bodies(c: Collector) -> None:
    """Four concurrent ~16 MB OTLP/JSON bodies: refused or admitted within the budget."""
    now = time.time_ns()
    recs = [{"timeUnixNano": str(now), "body": {"stringValue": "r"}, "attributes": [{"key": "k", "value": {"stringValue": "v"}}]}
            for _ in range(135_000)]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": recs}]}]}, separators=(",", ":")).encode()

    def one(_: int) -> int:
        return c.post_otlp("/v1/logs", body, content_type="application/json", headers={"X-Scope-OrgID": "big"}, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        codes = list(ex.map(one, range(4)))
    assert set(codes) <= {200, 413, 429}, codes


def heavy_query_flood(c: Collector) -> None:
    """More heavy queries than the limits allow, from one tenant with data."""
    now = int(time.time())
    for batch in range(4):
        recs = [{"timeUnixNano": str(time.time_ns() - i * 10**6), "body": {"stringValue": f"heavy abc {batch} {i} " + "x" * 40}}
                for i in range(10_000)]
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": recs}]}]}).encode()
        deadline = time.monotonic() + 60
        while True:
            r = c.post_otlp("/v1/logs", body, content_type="application/json", headers={"X-Scope-OrgID": EVIL}, timeout=60)
            if r.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
        assert r.status_code == 200, f"seeding the heavy tenant: {r.status_code} {r.text[:200]}"

    def one(i: int) -> int:
        if i % 2:
            r = q_get(c, "/api/v1/logs/search", {"q": "body:/.*a.*b.*c.*/", "start": now - 30 * 86400, "end": now})
        else:
            r = q_get(c, "/prometheus/api/v1/query_range",
                      {"query": "sum(rate({__name__=~\".+\"}[5m]))", "start": now - 10 * 86400, "end": now, "step": "120"})
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(one, range(32)))
    assert set(codes) <= {200, 422, 429, 503}, codes
    assert 429 in codes, f"16 clients at once never met the per-tenant limit of 2: {codes}"


def timed(name: str, fn: Callable[[Collector], None], c: Collector, log: list[str]) -> None:
    t0 = time.monotonic()
    fn(c)
    log.append(f"{name}: {time.monotonic() - t0:.1f}s")
    assert c.running(), f"collector died during {name}:\n{c.stderr_tail()}"


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is needed to cap the collector's memory")
def test_hostile_clients_cannot_hurt_the_collector(collectors, tmp_path: Path) -> None:
    c: Collector = collectors(args=ARGS)
    # The collector runs under an address-space cap: a runaway allocation
    # ends in an allocation failure, which the assertions below catch.
    c.command = lambda: ["prlimit", f"--as={AS_CAP_BYTES}", "--", PERISCOPE_BIN, "serve", "--data-dir", str(c.data_dir),  # type: ignore[method-assign]
                         "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", *ARGS]
    c.start()
    good = GoodClient(c).start()
    log: list[str] = []
    try:
        time.sleep(2)
        for name, fn in (
            ("hostile queries", hostile_queries),
            ("poison tenants", poison_tenants),
            ("records over 8 hours", churn),
            ("remote write out of bounds", remote_write_out_of_bounds),
            ("slow clients", slowloris),
            ("many connections", many_connections),
            ("big JSON bodies", big_json_bodies),
            ("heavy query flood", heavy_query_flood),
        ):
            timed(name, fn, c, log)
        time.sleep(3)
    finally:
        good.finish()
    print("\n".join(log))

    assert c.running(), f"the collector died:\n{c.stderr_tail()}"
    hwm = c.rss_hwm_kib()
    assert hwm < RSS_CAP_KIB, f"peak RSS {hwm} KiB over {RSS_CAP_KIB} KiB"

    # The well-behaved client lost nothing and kept getting answers.
    assert not good.rec.failed, f"the SDK's exports failed: {good.rec.failed[:5]}"
    assert good.logs and good.traces, "the well-behaved client sent nothing"
    assert good.queries_ok > 10, f"too few answered queries: {good.queries_ok}"
    assert not good.query_errors, f"the well-behaved client's queries failed: {good.query_errors[:5]}"
    hits = c.search_count_until(len(good.logs), tenant=GOOD, q=good.run)
    assert sorted(str(h["body"]) for h in hits) == sorted(good.logs), "acknowledged log records differ from those stored"
    # Other tenants keep flushing: every acknowledged trace is written.
    wait_written(c, set(good.traces), tenant=GOOD, service="good-app", limit=1000)
    deadline = time.monotonic() + 30
    while True:
        r = q_get(c, "/prometheus/api/v1/query", {"query": "sum(good_requests_total)"}, tenant=GOOD)
        result = r.json()["data"]["result"]
        if result and float(result[0]["value"][1]) == good.counter_total:
            break
        assert time.monotonic() < deadline, f"counter {result} never reached {good.counter_total}"
        time.sleep(0.5)
    # Nothing was written for the far future or the distant past.
    probe = c.data_dir
    assert not any(p.name.startswith(("2200-", "1970-")) for p in probe.rglob("*")), "remote write created partitions out of bounds"
