"""Service-graph and span metrics of written traces, queryable with PromQL under
Grafana Tempo's metric names."""

from __future__ import annotations

import time

from conftest import Collector, http_session, unique
from otlp_util import MS, merge_traces_requests, new_span_id, new_trace_id, span, traces_request
from trace_util import FAST_TRACE_ARGS

DEADLINE_S = 30.0


def query(c: Collector, q: str) -> list:
    r = http_session().get(c.http_url("/prometheus/api/v1/query"), params={"query": q}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def query_until(c: Collector, q: str) -> list:
    deadline = time.monotonic() + DEADLINE_S
    got: list = []
    while time.monotonic() < deadline:
        got = query(c, q)
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{q}: no series within {DEADLINE_S} s")


def test_service_graph_and_span_metrics_under_tempo_names(collectors) -> None:  # noqa: ANN001
    c: Collector = collectors(args=FAST_TRACE_ARGS).start()
    web, api = unique("web"), unique("api")
    t0 = time.time_ns() - 5_000 * MS
    tid = new_trace_id()
    root, call, server, db = new_span_id(), new_span_id(), new_span_id(), new_span_id()
    req = merge_traces_requests(
        traces_request([
            span(tid, root, "GET /", t0, t0 + 100 * MS, kind="server"),
            span(tid, call, "call api", t0 + 10 * MS, t0 + 90 * MS, parent_span_id=root, kind="client"),
        ], service=web),
        traces_request([
            span(tid, server, "handle", t0 + 20 * MS, t0 + 80 * MS, parent_span_id=call, kind="server", status="error"),
            span(tid, db, "SELECT", t0 + 30 * MS, t0 + 40 * MS, parent_span_id=server, kind="client", attrs={"db.system": "postgresql"}),
        ], service=api),
    )
    r = c.post_otlp("/v1/traces", req.SerializeToString())
    assert r.status_code == 200, r.text

    got = query_until(c, f'traces_service_graph_request_total{{client="{web}",server="{api}"}}')
    assert float(got[0]["value"][1]) == 1.0, got
    assert "connection_type" not in got[0]["metric"], got  # empty: a service-to-service edge
    failed = query(c, f'traces_service_graph_request_failed_total{{client="{web}",server="{api}"}}')
    assert float(failed[0]["value"][1]) == 1.0, failed
    db_edge = query_until(c, f'traces_service_graph_request_total{{client="{api}",server="postgresql"}}')
    assert db_edge[0]["metric"]["connection_type"] == "database", db_edge
    calls = query_until(c, f'sum by (status_code) (traces_spanmetrics_calls_total{{service="{api}",span_name="handle"}})')
    by_status = {s["metric"]["status_code"]: float(s["value"][1]) for s in calls}
    assert by_status == {"STATUS_CODE_UNSET": 0.0, "STATUS_CODE_ERROR": 1.0}, by_status
    p = query_until(c, f'histogram_quantile(0.5, traces_spanmetrics_latency_bucket{{service="{api}",span_name="handle"}})')
    assert 0.03 <= float(p[0]["value"][1]) <= 0.07, p  # one 60 ms span: inside its (32 ms, 64 ms] bucket
