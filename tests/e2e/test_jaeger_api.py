"""The Jaeger-compatible query API (`/jaeger/api/...`) answers in Jaeger's shapes.

Every response is validated against the JSON Schemas in jaeger_schemas.py
(what the Jaeger UI reads); one fixed trace is compared with a committed golden
file; services, operations, search (service + tags JSON + minDuration),
dependencies (with errorCount), tenant isolation through X-Scope-OrgID and
Jaeger's 404 error body are checked against raw OTLP input.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, unique
from jaeger_schemas import (
    DEPENDENCIES_RESPONSE,
    ERROR_RESPONSE,
    OPERATIONS_RESPONSE,
    SERVICES_RESPONSE,
    TRACES_RESPONSE,
    check_trace_references,
    normalize_trace,
)
from otlp_util import MS, event, link, merge_traces_requests, new_span_id, new_trace_id, parse_traces_response, span, traces_request
from trace_util import FAST_TRACE_ARGS, POLL_S, VISIBLE_TIMEOUT_S, WRITTEN_TIMEOUT_S, validate

GOLDEN = Path(__file__).parent / "golden" / "jaeger_trace.json"
GOLDEN_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


# ----- helpers ------------------------------------------------------------------------------


def jaeger(c: Collector, path: str, schema: dict[str, Any], tenant: str | None = None, **params: Any) -> dict[str, Any]:
    """GET /jaeger/api/<path>, 200 and schema-checked."""
    r = c.get(f"/jaeger/api/{path}", params=params or None, tenant=tenant)
    assert r.status_code == 200, f"/jaeger/api/{path} {params} (tenant {tenant}) -> {r.status_code}: {r.text[:800]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    obj = r.json()
    validate(obj, schema, f"/jaeger/api/{path}")
    if schema is TRACES_RESPONSE:
        for t in obj["data"]:
            check_trace_references(t)
    return obj


def jaeger_until(c: Collector, path: str, schema: dict[str, Any], predicate, timeout: float = WRITTEN_TIMEOUT_S, tenant: str | None = None, **params: Any) -> dict[str, Any]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        # A trace by id is 404 until its spans reach the assembler, a moment
        # after the acknowledgement.
        if path.startswith("traces/") and time.monotonic() < deadline:
            r = c.get(f"/jaeger/api/{path}", params=params or None, tenant=tenant)
            if r.status_code == 404:
                time.sleep(POLL_S)
                continue
        obj = jaeger(c, path, schema, tenant=tenant, **params)
        if predicate(obj):
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"/jaeger/api/{path} {params} (tenant {tenant}) not as expected within {timeout}s: {json.dumps(obj)[:2000]}")
        time.sleep(POLL_S)


def micros_window(pad_s: int = 3600) -> dict[str, int]:
    now_us = time.time_ns() // 1000
    return {"start": now_us - pad_s * 1_000_000, "end": now_us + pad_s * 1_000_000}


def search_params(**params: Any) -> dict[str, Any]:
    """A UI-like search: µs window, lookback=custom, limit 20, tags as a JSON object."""
    out: dict[str, Any] = {**micros_window(), "lookback": "custom", "limit": 20}
    for k, v in params.items():
        out[k] = json.dumps(v) if k == "tags" else v
    return out


def trace_ids(obj: dict[str, Any]) -> list[str]:
    return [t["traceID"] for t in obj["data"]]


def post_traces(c: Collector, req, tenant: str | None = None) -> None:  # noqa: ANN001
    headers = {"X-Scope-OrgID": tenant} if tenant else None
    r = c.post_otlp("/v1/traces", req.SerializeToString(), headers=headers)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert parse_traces_response(r.content).partial_success.rejected_spans == 0, r.content


# ----- the golden trace -----------------------------------------------------------------------


def golden_trace_request(base_ns: int):  # noqa: ANN201
    """The fixed trace of golden/jaeger_trace.json, starting at `base_ns` (whole µs)."""
    tid = bytes.fromhex(GOLDEN_TRACE_ID)
    root, db, render = (bytes.fromhex(x) for x in ("00f067aa0ba902b7", "b7ad6b7169203331", "e457b5a2e4d86bd1"))
    frontend = traces_request(
        [
            span(
                tid, root, "GET /cart", base_ns, base_ns + 120 * MS, kind="server", status="ok",
                attrs={"http.request.method": "GET", "http.response.status_code": 200, "url.path": "/cart"},
                events=[event(base_ns + 5 * MS, "cache miss", {"cache.key": "cart:42"})],
            ),
            span(tid, render, "render", base_ns + 95 * MS, base_ns + 118 * MS, parent_span_id=root, kind="internal"),
        ],
        service="golden-frontend",
        resource_attrs={"host.name": "web-1", "service.version": "2.0.1"},
        scope="golden-scope",
        scope_version="1.2.3",
    )
    cart = traces_request(
        [
            span(
                tid, db, "SELECT carts", base_ns + 10 * MS, base_ns + 90 * MS, parent_span_id=root, kind="client",
                status="error", status_message="timeout",
                attrs={"db.system": "postgresql", "db.namespace": "shop", "server.port": 5432, "retry": False, "sample.ratio": 0.25},
                links=[link(bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes.fromhex("00f067aa0ba902b8"), {"link.kind": "retry"})],
            )
        ],
        service="golden-cart",
        resource_attrs={"host.name": "cart-1"},
        scope="cart-db",
    )
    return merge_traces_requests(frontend, cart)


def test_trace_matches_golden_file(collectors) -> None:  # noqa: ANN001
    c: Collector = collectors(args=FAST_TRACE_ARGS).start()
    # Whole seconds a little in the past, so µs values are exact and the trace is not "in the future".
    base_ns = (time.time_ns() // 1_000_000_000 - 10) * 1_000_000_000
    post_traces(c, golden_trace_request(base_ns))

    # Trace-by-id sees spans ~2 s after the acknowledgement, written or not.
    obj = jaeger_until(
        c, f"traces/{GOLDEN_TRACE_ID}", TRACES_RESPONSE,
        lambda o: bool(o["data"]) and len(o["data"][0]["spans"]) >= 3, timeout=VISIBLE_TIMEOUT_S,
    )
    assert len(obj["data"]) == 1, obj
    trace = obj["data"][0]
    assert trace["traceID"] == GOLDEN_TRACE_ID
    assert min(s["startTime"] for s in trace["spans"]) == base_ns // 1000, "startTime is not the span start in µs"

    actual = normalize_trace(trace, base_ns // 1000)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(actual, indent=2) + "\n", "utf-8")
        pytest.skip(f"rewrote {GOLDEN}; review the diff")
    expected = json.loads(GOLDEN.read_text("utf-8"))
    if actual != expected:
        # Per-span diff first: the whole documents are long.
        exp_spans = {s["spanID"]: s for s in expected["spans"]}
        act_spans = {s["spanID"]: s for s in actual["spans"]}
        lines = []
        for sid in sorted(set(exp_spans) | set(act_spans)):
            if exp_spans.get(sid) != act_spans.get(sid):
                lines.append(f"span {sid}:\n  expected {json.dumps(exp_spans.get(sid), sort_keys=True)}\n  actual   {json.dumps(act_spans.get(sid), sort_keys=True)}")
        raise AssertionError("Jaeger trace differs from golden/jaeger_trace.json (normalised):\n" + "\n".join(lines or [json.dumps(actual)]))

    # The same trace once written (after idle + flush) reads the same from Parquet.
    jaeger_until(c, "traces", TRACES_RESPONSE, lambda o: GOLDEN_TRACE_ID in trace_ids(o), **search_params(service="golden-frontend"))
    c.stop_ok()
    c2: Collector = collectors(args=FAST_TRACE_ARGS, name="restarted").start()
    obj = jaeger_until(c2, f"traces/{GOLDEN_TRACE_ID}", TRACES_RESPONSE, lambda o: bool(o["data"]), timeout=VISIBLE_TIMEOUT_S)
    assert normalize_trace(obj["data"][0], base_ns // 1000) == expected, "the trace read back after a restart differs from the golden file"


# ----- services, operations, search, dependencies --------------------------------------------


def topology(u: str, base_ns: int) -> tuple[dict[str, str], str, Any]:
    """frontend -> checkout -> payment (fails), checkout -> postgresql; returns (services, trace id, request)."""
    svc = {"fe": f"jfe-{u}", "co": f"jco-{u}", "pay": f"jpay-{u}"}
    tid = new_trace_id()
    ids = {k: new_span_id() for k in ("root", "fe_call", "co_srv", "co_charge", "pay_srv", "co_db")}
    b = base_ns
    req = merge_traces_requests(
        traces_request(
            [
                span(tid, ids["root"], "GET /buy", b, b + 200 * MS, kind="server", attrs={"http.request.method": "GET"}),
                span(tid, ids["fe_call"], "POST /order", b + 5 * MS, b + 195 * MS, parent_span_id=ids["root"], kind="client", attrs={"server.address": "checkout"}),
            ],
            service=svc["fe"],
        ),
        traces_request(
            [
                span(tid, ids["co_srv"], "POST /order", b + 10 * MS, b + 190 * MS, parent_span_id=ids["fe_call"], kind="server", attrs={"order.kind": "express"}),
                span(tid, ids["co_charge"], "charge", b + 20 * MS, b + 100 * MS, parent_span_id=ids["co_srv"], kind="client", status="error", attrs={"server.address": "payment"}),
                span(tid, ids["co_db"], "SELECT orders", b + 110 * MS, b + 150 * MS, parent_span_id=ids["co_srv"], kind="client", attrs={"db.system": "postgresql", "db.namespace": "shop"}),
            ],
            service=svc["co"],
        ),
        traces_request(
            [span(tid, ids["pay_srv"], "Charge", b + 25 * MS, b + 95 * MS, parent_span_id=ids["co_charge"], kind="server", status="error", status_message="declined")],
            service=svc["pay"],
        ),
    )
    return svc, tid.hex(), req


def test_services_operations_search_and_dependencies(collectors) -> None:  # noqa: ANN001
    c: Collector = collectors(args=FAST_TRACE_ARGS).start()
    svc, tid, req = topology(unique("j"), time.time_ns() - 5_000_000_000)
    post_traces(c, req)

    # Search only sees written traces: poll until it does.
    found = jaeger_until(c, "traces", TRACES_RESPONSE, lambda o: tid in trace_ids(o), **search_params(service=svc["co"]))
    t = next(t for t in found["data"] if t["traceID"] == tid)
    assert len(t["spans"]) == 6, f"search result carries {len(t['spans'])} spans, want the whole trace (6)"
    assert {p["serviceName"] for p in t["processes"].values()} == set(svc.values()), t["processes"]

    services = jaeger(c, "services", SERVICES_RESPONSE)["data"]
    assert set(svc.values()) <= set(services), services
    assert len(services) == len(set(services)), f"duplicate services: {services}"

    want_ops = {"fe": {"GET /buy", "POST /order"}, "co": {"POST /order", "charge", "SELECT orders"}, "pay": {"Charge"}}
    for k, ops in want_ops.items():
        got = jaeger(c, f"services/{svc[k]}/operations", OPERATIONS_RESPONSE)["data"]
        assert sorted(got) == sorted(ops), f"operations of {svc[k]}: {got}, want {sorted(ops)}"

    # service + tags (JSON object) + minDuration, as the UI sends them. The tagged span
    # (checkout's server span, 180 ms) and the whole trace (200 ms) both pass 150ms and
    # both fail 250ms, so either reading of minDuration gives the same answer.
    hit = search_params(service=svc["co"], tags={"order.kind": "express"}, minDuration="150ms")
    assert tid in trace_ids(jaeger(c, "traces", TRACES_RESPONSE, **hit))
    for miss in (
        search_params(service=svc["co"], tags={"order.kind": "express"}, minDuration="250ms"),
        search_params(service=svc["co"], tags={"order.kind": "standard"}),
        search_params(service=svc["co"], tags={"order.kind": "express"}, maxDuration="100ms"),
        search_params(service=svc["pay"], operation="NoSuchOperation"),
    ):
        assert tid not in trace_ids(jaeger(c, "traces", TRACES_RESPONSE, **miss)), f"trace found by {miss}"
    for other in (
        search_params(service=svc["co"], operation="charge"),
        search_params(service=svc["pay"], operation="Charge"),
        search_params(service=svc["co"], tags={"db.system": "postgresql"}),
        search_params(service=svc["fe"], tags={"http.request.method": "GET"}, minDuration="1ms", maxDuration="1s"),
    ):
        assert tid in trace_ids(jaeger(c, "traces", TRACES_RESPONSE, **other)), f"trace not found by {other}"
    # limit is honoured.
    assert len(jaeger(c, "traces", TRACES_RESPONSE, **{**search_params(service=svc["co"]), "limit": 1})["data"]) <= 1

    # Dependencies (ms), with Periscope's errorCount: the failed charge counts on checkout -> payment.
    def links(o: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(d["parent"], d["child"]): d for d in o["data"]}

    deps = jaeger_until(
        c, "dependencies", DEPENDENCIES_RESPONSE,
        lambda o: {(svc["fe"], svc["co"]), (svc["co"], svc["pay"])} <= set(links(o)),
        endTs=int(time.time() * 1000) + 60_000, lookback=3_600_000,
    )
    got = links(deps)
    for key, calls, errors in (((svc["fe"], svc["co"]), 1, 0), ((svc["co"], svc["pay"]), 1, 1)):
        d = got[key]
        assert "errorCount" in d, f"dependency without errorCount: {d}"
        assert (d["callCount"], d["errorCount"]) == (calls, errors), f"{key}: {d}, want callCount {calls} errorCount {errors}"
    ours = {k for k in got if set(k) & set(svc.values())}
    # checkout -> postgresql (a virtual database node) may be listed too; nothing else may.
    assert ours - {(svc["co"], "postgresql")} == {(svc["fe"], svc["co"]), (svc["co"], svc["pay"])}, f"unexpected dependencies: {sorted(ours)}"
    assert len(deps["data"]) == len(got), f"duplicate dependency links: {deps['data']}"


# ----- tenants and errors --------------------------------------------------------------------


def test_tenant_isolation_on_the_jaeger_api(collectors) -> None:  # noqa: ANN001
    c: Collector = collectors(args=FAST_TRACE_ARGS).start()
    svc, tid, req = topology(unique("t"), time.time_ns() - 5_000_000_000)
    post_traces(c, req, tenant="team-a")

    jaeger_until(c, "traces", TRACES_RESPONSE, lambda o: tid in trace_ids(o), tenant="team-a", **search_params(service=svc["co"]))
    jaeger_until(
        c, "dependencies", DEPENDENCIES_RESPONSE, lambda o: any(d["parent"] == svc["fe"] for d in o["data"]),
        tenant="team-a", endTs=int(time.time() * 1000) + 60_000, lookback=3_600_000,
    )
    assert jaeger(c, f"traces/{tid}", TRACES_RESPONSE, tenant="team-a")["data"][0]["traceID"] == tid
    assert set(svc.values()) <= set(jaeger(c, "services", SERVICES_RESPONSE, tenant="team-a")["data"])

    for other in (None, "default", "team-b"):
        r = c.get(f"/jaeger/api/traces/{tid}", tenant=other)
        assert r.status_code == 404, f"tenant {other} reads team-a's trace: {r.status_code} {r.text[:300]}"
        services = jaeger(c, "services", SERVICES_RESPONSE, tenant=other)["data"]
        assert not set(svc.values()) & set(services), f"tenant {other} sees team-a's services: {services}"
        ops = jaeger(c, f"services/{svc['co']}/operations", OPERATIONS_RESPONSE, tenant=other)["data"]
        assert ops == [], f"tenant {other} sees team-a's operations: {ops}"
        found = jaeger(c, "traces", TRACES_RESPONSE, tenant=other, **search_params(service=svc["co"]))["data"]
        assert found == [], f"tenant {other} finds team-a's traces: {trace_ids({'data': found})}"
        deps = jaeger(c, "dependencies", DEPENDENCIES_RESPONSE, tenant=other, endTs=int(time.time() * 1000) + 60_000, lookback=3_600_000)["data"]
        assert not [d for d in deps if {d["parent"], d["child"]} & set(svc.values())], f"tenant {other} sees team-a's dependencies: {deps}"


def test_unknown_trace_is_404_in_jaegers_error_shape(collector: Collector) -> None:
    c = collector
    r = c.get(f"/jaeger/api/traces/{new_trace_id().hex()}")
    assert r.status_code == 404, f"{r.status_code}: {r.text[:300]}"
    assert r.json() == {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 404, "msg": "trace not found"}]}, r.text

    # A malformed id is the client's error, in the same shape.
    r = c.get("/jaeger/api/traces/not-a-trace-id")
    assert r.status_code == 400, f"{r.status_code}: {r.text[:300]}"
    body = r.json()
    validate(body, ERROR_RESPONSE, "Jaeger 400 body")
    assert body["errors"][0].get("code") == 400 and body["errors"][0]["msg"], body
