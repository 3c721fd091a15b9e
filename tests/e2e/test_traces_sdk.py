"""A distributed trace made by the official OpenTelemetry Python SDK, end to end.

Four services, each with its own TracerProvider, Resource and exporter
(OTLP/gRPC or OTLP/HTTP protobuf), propagate context in-process the way
instrumentation libraries do across a network hop:

    frontend  GET /checkout (SERVER) ── POST /api/checkout (CLIENT)
    checkout  POST /api/checkout (SERVER)
                ├── charge (CLIENT) ──── payment  Charge (SERVER, ERROR + exception)
                ├── SELECT orders (CLIENT, db.system=postgresql)
                └── reserve (CLIENT) ─── inventory  Reserve (SERVER)

Span times are set explicitly so durations are exact. The trace must come back
by id with the SDK's parent links, be found by every search filter once
written, give exactly the expected service map and operations, and share its
trace id format with the logs API.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

import pytest
from conftest import Collector, unique
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from otlp_util import MS, log_record, logs_request
from trace_util import (
    FAST_TRACE_ARGS,
    ids,
    operations,
    rfc3339_ns,
    search_traces,
    service_map_until,
    span_attr,
    spans_by_id,
    wait_trace,
    wait_written,
)

SERVICES = ("frontend", "checkout", "payment", "inventory")
TRACE_MS = 250


class RecordingSpanExporter(SpanExporter):
    """Delegates to a real exporter; remembers every span and export result."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.spans: list[ReadableSpan] = []
        self.results: list[SpanExportResult] = []
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        with self.lock:
            self.spans.extend(spans)
            self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def exporter(c: Collector, transport: str) -> SpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=f"http://{c.grpc_target}", insecure=True, timeout=20)
    return HttpSpanExporter(endpoint=c.otlp_url("/v1/traces"), timeout=20)


def make_trace(c: Collector, transport: str, names: dict[str, str], run: str, t0: int) -> list[ReadableSpan]:
    """Builds and exports the trace; returns the spans as the SDK exported them."""
    providers: dict[str, TracerProvider] = {}
    exporters: dict[str, RecordingSpanExporter] = {}
    tracers = {}
    for key in SERVICES:
        res = Resource.create({"service.name": names[key], "e2e.run": run, "deployment.environment": "e2e"})
        providers[key] = TracerProvider(resource=res)
        exporters[key] = RecordingSpanExporter(exporter(c, transport))
        providers[key].add_span_processor(BatchSpanProcessor(exporters[key], schedule_delay_millis=200))
        tracers[key] = providers[key].get_tracer(f"e2e.{key}", "1.0.0")

    def ctx(parent):  # noqa: ANN001, ANN202
        return otel_trace.set_span_in_context(parent)

    def at(ms: int) -> int:
        return t0 + ms * MS

    try:
        fe = tracers["frontend"]
        root = fe.start_span(
            "GET /checkout", kind=SpanKind.SERVER, start_time=at(0),
            attributes={"http.request.method": "GET", "http.route": "/checkout", "url.path": "/checkout", "http.response.status_code": 200},
        )
        fe_call = fe.start_span(
            "POST /api/checkout", context=ctx(root), kind=SpanKind.CLIENT, start_time=at(10),
            attributes={"http.request.method": "POST", "server.address": "checkout", "server.port": 8080},
        )
        co = tracers["checkout"]
        co_srv = co.start_span(
            "POST /api/checkout", context=ctx(fe_call), kind=SpanKind.SERVER, start_time=at(15),
            attributes={"http.request.method": "POST", "http.route": "/api/checkout"},
        )
        charge = co.start_span("charge", context=ctx(co_srv), kind=SpanKind.CLIENT, start_time=at(20), attributes={"rpc.system": "grpc", "server.address": "payment"})
        pay = tracers["payment"].start_span("Charge", context=ctx(charge), kind=SpanKind.SERVER, start_time=at(25), attributes={"rpc.system": "grpc"})
        pay.record_exception(ValueError("card declined"), timestamp=at(90))
        pay.set_status(Status(StatusCode.ERROR, "card declined"))
        pay.end(end_time=at(95))
        charge.set_status(Status(StatusCode.ERROR, "card declined"))
        charge.end(end_time=at(100))
        db = co.start_span(
            "SELECT orders", context=ctx(co_srv), kind=SpanKind.CLIENT, start_time=at(105),
            attributes={
                "db.system": "postgresql",
                "db.namespace": "shop",
                "db.query.text": "SELECT * FROM orders WHERE id = $1",
                "server.address": "db.internal",
                "server.port": 5432,
            },
        )
        db.end(end_time=at(135))
        reserve = co.start_span("reserve", context=ctx(co_srv), kind=SpanKind.CLIENT, start_time=at(140), attributes={"server.address": "inventory"})
        inv = tracers["inventory"].start_span("Reserve", context=ctx(reserve), kind=SpanKind.SERVER, start_time=at(145))
        inv.end(end_time=at(195))
        reserve.end(end_time=at(200))
        co_srv.end(end_time=at(225))
        fe_call.end(end_time=at(230))
        root.end(end_time=at(TRACE_MS))
        for key, p in providers.items():
            assert p.force_flush(20_000), f"force_flush of {key} timed out"
    finally:
        for p in providers.values():
            p.shutdown()

    spans: list[ReadableSpan] = []
    for key, e in exporters.items():
        assert e.results and all(r == SpanExportResult.SUCCESS for r in e.results), f"{transport} export of {key}: {e.results}"
        spans.extend(e.spans)
    assert len(spans) == 8, f"the SDK exported {len(spans)} spans, want 8"
    return spans


# Span durations (ms): 250 220 210 80 70 30 60 50; nothing in 100..200 ms.
# Every search below is scoped by the run's resource attribute so no other trace interferes.


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_trace_round_trip(collectors, transport: str) -> None:  # noqa: ANN001
    c: Collector = collectors(args=FAST_TRACE_ARGS).start()
    u = unique("")[:9]
    names = {k: f"{k}-{transport}-{u}" for k in SERVICES}
    run = unique("run")
    t0 = time.time_ns()
    sdk_spans = make_trace(c, transport, names, run, t0)
    trace_id = format(sdk_spans[0].context.trace_id, "032x")
    assert {s.context.trace_id for s in sdk_spans} == {sdk_spans[0].context.trace_id}

    # ----- trace by id: every span, with the SDK's links, names, kinds, times ------------------
    want = {format(s.context.span_id, "016x"): s for s in sdk_spans}
    got = spans_by_id(wait_trace(c, trace_id, span_ids=want))
    assert set(got) == set(want), f"span ids differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
    for sid, s in want.items():
        g = got[sid]
        parent = format(s.parent.span_id, "016x") if s.parent is not None else ""
        assert g["parent_span_id"] == parent, f"{s.name}: parent {g['parent_span_id']!r}, SDK says {parent!r}"
        assert g["service"] == s.resource.attributes["service.name"], g
        assert g["name"] == s.name, g
        assert g["kind"] == s.kind.name.lower(), f"{s.name}: kind {g['kind']}, SDK says {s.kind.name}"
        assert rfc3339_ns(g["start_time"]) == s.start_time and rfc3339_ns(g["end_time"]) == s.end_time, (g["start_time"], g["end_time"], s.start_time, s.end_time)
        assert g["duration_ns"] == s.end_time - s.start_time
        want_code = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}[s.status.status_code]
        assert g["status"]["code"] == want_code, f"{s.name}: status {g['status']}, SDK says {s.status.status_code}"
        assert span_attr(g, "e2e.run", "resource") == run, f"resource lacks e2e.run: {g['resource']}"
        for k, v in (s.attributes or {}).items():
            got_v = span_attr(g, k)
            assert got_v == v or str(got_v) == str(v), f"{s.name}: attribute {k}={got_v!r}, SDK sent {v!r}"
    by_name = {g["name"] + "/" + g["kind"]: g for g in got.values()}
    pay = by_name["Charge/server"]
    assert pay["status"]["message"] == "card declined", pay["status"]
    exc = [e for e in pay["events"] if e["name"] == "exception"]
    assert len(exc) == 1, f"exception event missing: {pay['events']}"
    assert span_attr(exc[0], "exception.type") == "ValueError" and span_attr(exc[0], "exception.message") == "card declined", exc[0]
    assert rfc3339_ns(exc[0]["time"]) == t0 + 90 * MS, exc[0]["time"]
    root = by_name["GET /checkout/server"]
    assert root["parent_span_id"] == "" and span_attr(root, "http.request.method") == "GET", root

    # ----- search: once complete and written ------------------------------------------------
    window = {"start": t0 // 1_000_000_000 - 60, "end": t0 // 1_000_000_000 + 60, "limit": 100}
    summary = next(t for t in wait_written(c, [trace_id], service=names["checkout"], **window) if t["trace_id"] == trace_id)
    assert summary["root_service"] == names["frontend"] and summary["root_operation"] == "GET /checkout", summary
    assert (summary["span_count"], summary["error_count"]) == (8, 2), summary  # Charge and its charge client span
    assert sorted(summary["services"]) == sorted(names.values()), summary
    assert summary["duration_ns"] == TRACE_MS * MS and rfc3339_ns(summary["start_time"]) == t0, summary

    tag = f"e2e.run={run}"
    found = {
        "service=frontend": dict(service=names["frontend"]),
        "service=payment (not the root)": dict(service=names["payment"]),
        "service+operation (child span)": dict(service=names["checkout"], operation="SELECT orders"),
        "service+operation (other service)": dict(service=names["payment"], operation="Charge"),
        "tag key=value": dict(service=names["frontend"], tags="http.request.method=GET"),
        "resource tag": dict(tags=tag),
        "tag regex": dict(tags=f"{tag} http.route=~/check.*"),
        "tag regex on resource": dict(tags=f"e2e.run=~{run[:10]}.*"),
        "tag presence": dict(tags=f"{tag} db.query.text"),
        "tag !=": dict(tags=f"{tag} http.route!=/nope"),
        "min_duration": dict(tags=tag, min_duration="240ms"),
        "max_duration": dict(tags=tag, max_duration="260ms"),
        "min+max_duration": dict(tags=tag, min_duration="200ms", max_duration="300ms"),
        "span_min_duration": dict(tags=tag, span_min_duration="240ms"),
        "span_min+max_duration": dict(tags=tag, span_min_duration="65ms", span_max_duration="75ms"),
        "status=error": dict(tags=tag, status="error"),
        "status=error + service": dict(service=names["inventory"], status="error"),
    }
    not_found = {
        "wrong operation": dict(service=names["frontend"], operation="SELECT orders"),
        "tag value": dict(service=names["frontend"], tags="http.request.method=DELETE"),
        "tag regex": dict(tags=f"{tag} http.route=~/nomatch.*"),
        "tag presence": dict(tags=f"{tag} no.such.attribute"),
        "tag !=": dict(tags=f"e2e.run!={run}"),
        "min_duration": dict(tags=tag, min_duration="260ms"),
        "max_duration": dict(tags=tag, max_duration="240ms"),
        "span_min_duration": dict(tags=tag, span_min_duration="255ms"),
        "span_min+max_duration": dict(tags=tag, span_min_duration="100ms", span_max_duration="200ms"),
        "time window before": dict(service=names["frontend"], start=t0 // 1_000_000_000 - 3600, end=t0 // 1_000_000_000 - 1800),
    }
    for what, params in found.items():
        got_ids = ids(search_traces(c, **{**window, **params}))
        assert got_ids.count(trace_id) == 1, f"search by {what} ({params}) -> {got_ids}, want the trace once"
    for what, params in not_found.items():
        got_ids = ids(search_traces(c, **{**window, **params}))
        assert trace_id not in got_ids, f"search by {what} ({params}) found the trace"

    # ----- operations and services ----------------------------------------------------------
    want_ops = {
        "frontend": {"GET /checkout", "POST /api/checkout"},
        "checkout": {"POST /api/checkout", "charge", "SELECT orders", "reserve"},
        "payment": {"Charge"},
        "inventory": {"Reserve"},
    }
    for key, ops in want_ops.items():
        got_ops = operations(c, names[key])
        assert sorted(got_ops) == sorted(ops), f"operations of {names[key]}: {got_ops}, want {sorted(ops)}"
    c.wait_services(names.values())

    # ----- service map ----------------------------------------------------------------------
    fe, co, pa, inv = (names[k] for k in SERVICES)
    want_edges = {(fe, co): 0, (co, pa): 1, (co, inv): 0, (co, "postgresql"): 0}
    m = service_map_until(
        c, lambda m: set(want_edges) <= {(e["source"], e["target"]) for e in m["edges"]},
        start=window["start"], end=window["end"],
    )
    edges = {(e["source"], e["target"]): e for e in m["edges"]}
    assert len(edges) == len(m["edges"]), f"duplicate edges: {m['edges']}"
    assert set(edges) == set(want_edges), f"edges {sorted(edges)}, want exactly {sorted(want_edges)}"
    for key, errors in want_edges.items():
        e = edges[key]
        assert (e["requests"], e["errors"]) == (1, errors), f"edge {key}: {e}, want 1 request, {errors} errors"
        assert 0 < e["p50_ms"] and e["p99_ms"] < 1000, f"edge {key} latency out of range for a <250 ms call: {e}"
    nodes = {n["id"]: n for n in m["nodes"]}
    assert len(nodes) == len(m["nodes"]), f"duplicate nodes: {m['nodes']}"
    assert {k: n["kind"] for k, n in nodes.items()} == {fe: "service", co: "service", pa: "service", inv: "service", "postgresql": "database"}, nodes

    # ----- logs share the trace id format ---------------------------------------------------
    tok = unique("corr")
    pay_span_id = next(sid for sid, s in want.items() if s.name == "Charge")
    rec = log_record(f"payment failed {tok}", trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(pay_span_id), time_ns=t0 + 90 * MS)
    r = c.post_otlp("/v1/logs", logs_request([rec], service=names["payment"]).SerializeToString())
    assert r.status_code == 200, r.text
    hits = c.search_until(lambda h: len(h) >= 1, trace_id=trace_id)
    assert len(hits) == 1 and tok in str(hits[0]["body"]), hits
    assert str(hits[0]["trace_id"]).lower() == trace_id and str(hits[0]["span_id"]).lower() == pay_span_id, hits[0]
