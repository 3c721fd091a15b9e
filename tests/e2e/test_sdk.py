"""The official OpenTelemetry Python SDK talks to the collector over every transport.

Logs go through Python's `logging` module (the SDK's LoggingHandler) inside
an active span, over OTLP/gRPC and OTLP/HTTP protobuf; a hand-written OTLP/JSON
request is posted too. Every record must then be found by a body term, by an
attribute, by service and by trace id. Spans and metrics exported by the SDK
must be accepted and counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from typing import Any, Sequence

import pytest
from conftest import Collector, unique
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_util import hit_attr

N_RECORDS = 5


class RecordingLogExporter(LogRecordExporter):
    """Delegates to a real exporter and remembers every export result."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.results: list[tuple[int, LogRecordExportResult]] = []
        self.lock = threading.Lock()

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        with self.lock:
            self.results.append((len(batch), result))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def log_exporter(collector: Collector, transport: str) -> LogRecordExporter:
    if transport == "grpc":
        return GrpcLogExporter(endpoint=f"http://{collector.grpc_target}", insecure=True, timeout=20)
    return HttpLogExporter(endpoint=collector.otlp_url("/v1/logs"), timeout=20)


def send_sdk_logs(collector: Collector, transport: str, service: str) -> dict[str, Any]:
    """Emits N_RECORDS logs via `logging` inside one span; returns what was sent."""
    resource = Resource.create({"service.name": service, "deployment.environment": "e2e"})
    tracer_provider = TracerProvider(resource=resource)
    tracer = tracer_provider.get_tracer("e2e.sdk")
    exporter = RecordingLogExporter(log_exporter(collector, transport))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    logger = logging.getLogger(f"e2e.sdk.{service}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)

    common = unique("common")
    records = []
    try:
        with tracer.start_as_current_span("checkout") as span:
            ctx = span.get_span_context()
            for i in range(N_RECORDS):
                body_tok = unique("body")
                order_tok = unique("order")
                level = logging.WARNING if i == 0 else logging.INFO
                logger.log(
                    level,
                    "payment %s declined for order %s",
                    body_tok,
                    order_tok,
                    extra={"order_id": order_tok, "batch": common, "http.status_code": 500 + i},
                )
                records.append({"body_tok": body_tok, "order_tok": order_tok, "status": 500 + i, "level": level})
        assert logger_provider.force_flush(20_000), "LoggerProvider.force_flush timed out"
    finally:
        logger.removeHandler(handler)
        logger_provider.shutdown()
        tracer_provider.shutdown()

    assert exporter.results, "the SDK exported nothing"
    assert all(r == LogRecordExportResult.SUCCESS for _, r in exporter.results), f"{transport} log export failed: {exporter.results}"
    assert sum(n for n, _ in exporter.results) == N_RECORDS
    return {
        "service": service,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "common": common,
        "records": records,
    }


def check_findable(collector: Collector, sent: dict[str, Any], check_http_status: bool = True) -> None:
    service, trace_id = sent["service"], sent["trace_id"]
    records = sent["records"]
    n = len(records)

    # By a body term: exactly that record, with every field as sent.
    for rec in records:
        hits = collector.search_until(lambda h: len(h) >= 1, q=rec["body_tok"])
        assert len(hits) == 1, f"body term {rec['body_tok']} matched {len(hits)} records: {hits}"
        hit = hits[0]
        assert rec["body_tok"] in str(hit["body"]) and rec["order_tok"] in str(hit["body"]), hit
        assert hit["service"] == service, hit
        assert str(hit["trace_id"]).lower() == trace_id, f"trace_id {hit['trace_id']!r} != {trace_id}"
        assert str(hit["span_id"]).lower() == sent["span_id"], f"span_id {hit['span_id']!r} != {sent['span_id']}"
        assert hit_attr(hit, "order_id") == rec["order_tok"], hit["attributes"]
        if "level" in rec:
            want_num = 13 if rec["level"] == logging.WARNING else 9
            assert hit["severity_number"] == want_num, hit
            assert hit["severity_text"] == ("WARN" if want_num == 13 else "INFO"), hit
        assert isinstance(hit["timestamp"], str) and "T" in hit["timestamp"], f"timestamp not RFC 3339: {hit['timestamp']!r}"
        assert hit["resource"], f"resource missing: {hit}"

    # By an attribute.
    for rec in records:
        hits = collector.search_until(lambda h: len(h) >= 1, q=f"attributes.order_id:{rec['order_tok']}")
        assert len(hits) == 1 and rec["body_tok"] in str(hits[0]["body"]), hits
    hits = collector.search_until(lambda h: len(h) >= n, q=f"attributes.batch:{sent['common']}")
    assert len(hits) == n, hits

    # A dotted attribute key with an integer value, as in the design's example.
    if check_http_status:
        rec = records[1]
        hits = collector.search_until(
            lambda h: len(h) >= 1, q=f"attributes.http.status_code:{rec['status']} AND attributes.batch:{sent['common']}"
        )
        assert [h["body"] for h in hits] == [hits[0]["body"]] and rec["body_tok"] in str(hits[0]["body"]), hits

    # By service (the filter parameter) and a term.
    hits = collector.search_until(lambda h: len(h) >= n, service=service, limit=1000)
    assert len(hits) == n, f"service={service} returned {len(hits)} hits, want {n}"
    assert {h["service"] for h in hits} == {service}
    # Another service's filter must exclude them.
    hits = collector.search(service=service + "-other", q=f"attributes.batch:{sent['common']}")["hits"]
    assert hits == [], hits

    # By trace id (the filter parameter).
    hits = collector.search_until(lambda h: len(h) >= n, trace_id=trace_id, limit=1000)
    assert len(hits) == n and {str(h["trace_id"]).lower() for h in hits} == {trace_id}, hits


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_logs_are_searchable(collector: Collector, transport: str) -> None:
    service = f"sdk-{transport}-{unique('svc')}"
    sent = send_sdk_logs(collector, transport, service)
    check_findable(collector, sent)

    # Severity is a minimum: WARN keeps only the one warning.
    hits = collector.search_until(lambda h: len(h) >= 1, service=service, severity="WARN")
    assert len(hits) == 1 and hits[0]["severity_number"] == 13, hits

    # Newest first.
    hits = collector.search(service=service)["hits"]
    stamps = [h["timestamp"] for h in hits]
    assert stamps == sorted(stamps, reverse=True), f"hits not newest first: {stamps}"

    # Received and accepted counters carry the transport.
    assert collector.metric_sum("periscope_received_records_total", signal="logs", transport=transport) >= N_RECORDS
    assert collector.metric_sum("periscope_accepted_records_total", signal="logs") >= N_RECORDS

    collector.wait_services([service])


def test_otlp_json_logs_are_searchable(collector: Collector) -> None:
    service = f"json-{unique('svc')}"
    trace_id = "5b8efff798038103d269b633813fc60c"
    span_id = "eee19b7ec3c1b174"
    common = unique("common")
    now = time.time_ns()
    records = []
    log_records = []
    for i in range(3):
        body_tok, order_tok = unique("body"), unique("order")
        records.append({"body_tok": body_tok, "order_tok": order_tok, "status": 500 + i})
        log_records.append(
            {
                "timeUnixNano": str(now + i),
                "observedTimeUnixNano": str(now + i),
                "severityNumber": 17,
                "severityText": "ERROR",
                "traceId": trace_id,
                "spanId": span_id,
                "body": {"stringValue": f"json request {body_tok} for order {order_tok}"},
                "attributes": [
                    {"key": "order_id", "value": {"stringValue": order_tok}},
                    {"key": "batch", "value": {"stringValue": common}},
                    {"key": "http.status_code", "value": {"intValue": str(500 + i)}},
                    {"key": "retry", "value": {"boolValue": True}},
                ],
            }
        )
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeLogs": [{"scope": {"name": "hand-written", "version": "1.0"}, "logRecords": log_records}],
            }
        ]
    }
    r = collector.post_otlp("/v1/logs", json.dumps(body).encode(), content_type="application/json")
    assert r.status_code == 200, f"{r.status_code}: {r.text}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    resp = r.json()
    ps = resp.get("partialSuccess") or {}
    assert int(ps.get("rejectedLogRecords", 0)) == 0, resp

    sent = {"service": service, "trace_id": trace_id, "span_id": span_id, "common": common, "records": records}
    check_findable(collector, sent)
    hits = collector.search(service=service, severity="ERROR")["hits"]
    assert len(hits) == 3 and all(h["severity_number"] == 17 and h["severity_text"] == "ERROR" for h in hits), hits
    assert all(h["scope"] == "hand-written" or (isinstance(h["scope"], dict) and h["scope"].get("name") == "hand-written") for h in hits), hits
    assert collector.metric_sum("periscope_received_records_total", signal="logs", transport="http") >= 3


def _make_spans(service: str) -> tuple[Sequence[Any], str]:
    resource = Resource.create({"service.name": service})
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e.sdk")
    with tracer.start_as_current_span("GET /checkout", attributes={"http.request.method": "GET"}) as root:
        with tracer.start_as_current_span("SELECT orders", attributes={"db.system": "postgresql"}):
            pass
        with tracer.start_as_current_span("charge card"):
            pass
    provider.shutdown()
    spans = memory.get_finished_spans()
    assert len(spans) == 3
    return spans, format(root.get_span_context().trace_id, "032x")


def _make_metrics(service: str) -> Any:
    resource = Resource.create({"service.name": service})
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("e2e.sdk")
    counter = meter.create_counter("e2e.requests", unit="1")
    hist = meter.create_histogram("e2e.latency", unit="ms")
    for i in range(10):
        counter.add(1, {"route": "/checkout", "code": str(200 + i % 2)})
        hist.record(float(i * 7), {"route": "/checkout"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spans_and_metrics_are_accepted(collector: Collector, transport: str) -> None:
    trace_service = f"sdk-traces-{transport}-{unique('svc')}"
    metric_service = f"sdk-metrics-{transport}-{unique('svc')}"
    before_traces = collector.metric_sum("periscope_accepted_records_total", signal="traces")
    before_metrics = collector.metric_sum("periscope_accepted_records_total", signal="metrics")
    before_recv_traces = collector.metric_sum("periscope_received_records_total", signal="traces", transport=transport)
    before_recv_metrics = collector.metric_sum("periscope_received_records_total", signal="metrics", transport=transport)

    spans, _trace_id = _make_spans(trace_service)
    if transport == "grpc":
        span_exporter: Any = GrpcSpanExporter(endpoint=f"http://{collector.grpc_target}", insecure=True, timeout=20)
        metric_exporter: Any = GrpcMetricExporter(endpoint=f"http://{collector.grpc_target}", insecure=True, timeout=20)
    else:
        span_exporter = HttpSpanExporter(endpoint=collector.otlp_url("/v1/traces"), timeout=20)
        metric_exporter = HttpMetricExporter(endpoint=collector.otlp_url("/v1/metrics"), timeout=20)
    try:
        result = span_exporter.export(spans)
        assert result == SpanExportResult.SUCCESS, f"{transport} span export: {result}"
        data = _make_metrics(metric_service)
        mresult = metric_exporter.export(data)
        assert mresult == MetricExportResult.SUCCESS, f"{transport} metric export: {mresult}"
    finally:
        span_exporter.shutdown()
        metric_exporter.shutdown()

    # 3 spans; metrics: 2 counter series + 1 histogram series = 3 data points.
    after_traces = collector.metric_sum("periscope_accepted_records_total", signal="traces")
    after_metrics = collector.metric_sum("periscope_accepted_records_total", signal="metrics")
    assert after_traces - before_traces == 3, f"accepted traces counter went {before_traces} -> {after_traces}"
    assert after_metrics - before_metrics >= 3, f"accepted metrics counter went {before_metrics} -> {after_metrics}"
    assert collector.metric_sum("periscope_received_records_total", signal="traces", transport=transport) - before_recv_traces == 3
    assert collector.metric_sum("periscope_received_records_total", signal="metrics", transport=transport) - before_recv_metrics >= 3

    collector.wait_services([trace_service, metric_service])


def test_otlp_json_spans_and_metrics_are_accepted(collector: Collector) -> None:
    c = collector
    svc = f"json-spans-{unique('svc')}"
    now = time.time_ns()
    traces = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "hand-written"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "GET /",
                                "kind": 2,
                                "startTimeUnixNano": str(now - 5_000_000),
                                "endTimeUnixNano": str(now),
                                "attributes": [{"key": "http.response.status_code", "value": {"intValue": "200"}}],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    metrics = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "queue.depth",
                                "unit": "1",
                                "gauge": {"dataPoints": [{"timeUnixNano": str(now), "asInt": "42"}, {"timeUnixNano": str(now), "asDouble": 4.5}]},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    before_t = c.metric_sum("periscope_accepted_records_total", signal="traces")
    before_m = c.metric_sum("periscope_accepted_records_total", signal="metrics")
    for path, doc, key in [("/v1/traces", traces, "rejectedSpans"), ("/v1/metrics", metrics, "rejectedDataPoints")]:
        r = c.post_otlp(path, json.dumps(doc).encode(), content_type="application/json")
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
        ps = r.json().get("partialSuccess") or {}
        assert int(ps.get(key, 0)) == 0, r.text
    assert c.metric_sum("periscope_accepted_records_total", signal="traces") - before_t == 1
    assert c.metric_sum("periscope_accepted_records_total", signal="metrics") - before_m == 2
    c.wait_services([svc])
