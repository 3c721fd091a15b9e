"""Bad spans are rejected one by one through OTLP partial success; the rest is stored.

Each bad span travels between two good spans of a good trace. Rejected: a
missing or all-zero trace id or span id, an end before the start. Accepted as
is: an unknown kind number (stored as `unspecified`) and a span with 10,000
attributes (clamped to at most 128, with `dropped_attributes_count`). A
malformed protobuf body is refused whole (HTTP 400 / gRPC INVALID_ARGUMENT);
malformed ids on the query side are 400, unknown ones 404.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import grpc
import pytest
from conftest import Collector, unique
from google.rpc import status_pb2
from otlp_util import (
    MS,
    TRACES_EXPORT_METHOD,
    grpc_channel,
    grpc_export_traces,
    grpc_raw_call,
    new_span_id,
    new_trace_id,
    parse_traces_response,
    span,
    traces_request,
)
from trace_util import FAST_TRACE_ARGS, fetch_trace, get_trace, spans_by_id, wait_trace

MAX_ATTRS = 128
MALFORMED_PROTOBUF = b"\x0a\xff\xff\xff\x0f\x12garbage that is not protobuf"

# (case, overrides of the bad span, words one of which the error message must contain)
REJECTED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("zero trace id", {"trace_id": b"\x00" * 16}, ("trace id", "trace_id", "traceid")),
    ("missing trace id", {"trace_id": b""}, ("trace id", "trace_id", "traceid")),
    ("zero span id", {"span_id": b"\x00" * 8}, ("span id", "span_id", "spanid")),
    ("missing span id", {"span_id": b""}, ("span id", "span_id", "spanid")),
    ("end before start", {"end_delta_ms": -5}, ("end",)),
]


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    base = tmp_path_factory.mktemp("trace-bad-input")
    col = Collector(base / "data", base, args=FAST_TRACE_ARGS)
    col.start()
    try:
        yield col
    finally:
        try:
            if col.running():
                rc = col.stop()
                assert rc == 0, f"collector exited with {rc} after SIGTERM; stderr:\n{col.stderr_tail()}"
        finally:
            print(f"\n----- collector stderr (tail) -----\n{col.stderr_tail(60)}")
            col.kill()


def good_and_bad(tid: bytes, overrides: dict[str, Any], t0: int) -> tuple[list, bytes, bytes, bytes]:  # noqa: ANN001
    """[good1, bad, good2] of trace `tid`; returns (spans, good1 id, bad id, good2 id)."""
    g1, bad_id, g2 = new_span_id(), new_span_id(), new_span_id()
    kw = dict(overrides)
    end_delta = kw.pop("end_delta_ms", 10)
    bad = span(
        kw.pop("trace_id", tid), kw.pop("span_id", bad_id), "bad span", t0 + 5 * MS, t0 + 5 * MS + end_delta * MS,
        parent_span_id=g1, **kw,
    )
    spans = [
        span(tid, g1, "good root", t0, t0 + 50 * MS, kind="server"),
        bad,
        span(tid, g2, "good child", t0 + 10 * MS, t0 + 20 * MS, parent_span_id=g1),
    ]
    return spans, g1, bad_id, g2


def export(c: Collector, req, transport: str = "http"):  # noqa: ANN001, ANN201
    """Sends a traces request; returns its ExportTraceServiceResponse (asserting success status)."""
    if transport == "grpc":
        with grpc_channel(c.grpc_target) as ch:
            return grpc_export_traces(ch, req)
    r = c.post_otlp("/v1/traces", req.SerializeToString())
    assert r.status_code == 200, f"partial success must be 200: {r.status_code} {r.content[:300]!r}"
    return parse_traces_response(r.content)


def assert_healthy(c: Collector) -> None:
    assert c.running(), f"collector died; stderr:\n{c.stderr_tail()}"
    assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize("case,overrides,words", REJECTED, ids=[r[0] for r in REJECTED])
def test_bad_span_is_rejected_alone(c: Collector, case: str, overrides: dict[str, Any], words: tuple[str, ...]) -> None:
    tid = new_trace_id()
    spans, g1, bad_id, g2 = good_and_bad(tid, overrides, time.time_ns() - 1_000_000_000)
    resp = export(c, traces_request(spans, service=f"bad-{unique('svc')}"))
    ps = resp.partial_success
    assert ps.rejected_spans == 1, f"{case}: partial success {ps}"
    msg = ps.error_message.lower()
    assert msg and any(w in msg for w in words), f"{case}: error message {ps.error_message!r} should mention one of {words}"

    got = spans_by_id(wait_trace(c, tid.hex(), span_ids=[g1.hex(), g2.hex()]))
    # A rejected span with a good trace id must not be in that trace either.
    assert bad_id.hex() not in got, f"{case}: the rejected span was stored: {got[bad_id.hex()]}"
    assert len(got) == 2, f"{case}: {sorted(got)}"
    assert_healthy(c)


def test_unknown_kind_is_kept_as_unspecified(c: Collector) -> None:
    tid, sid = new_trace_id(), new_span_id()
    t0 = time.time_ns() - 1_000_000_000
    resp = export(c, traces_request([span(tid, sid, "odd kind", t0, t0 + MS, kind=9)], service=f"bad-{unique('svc')}"))
    assert resp.partial_success.rejected_spans == 0, resp.partial_success
    got = spans_by_id(wait_trace(c, tid.hex(), span_ids=[sid.hex()]))
    assert got[sid.hex()]["kind"] == "unspecified", got[sid.hex()]


def test_ten_thousand_attributes_are_clamped(c: Collector) -> None:
    tid, sid, other = new_trace_id(), new_span_id(), new_span_id()
    t0 = time.time_ns() - 1_000_000_000
    attrs = {f"attr_{i:05d}": f"value {i}" for i in range(10_000)}
    req = traces_request(
        [span(tid, sid, "wide span", t0, t0 + MS, attrs=attrs), span(tid, other, "narrow span", t0, t0 + MS, parent_span_id=sid, attrs={"k": "v"})],
        service=f"bad-{unique('svc')}",
    )
    resp = export(c, req)
    assert resp.partial_success.rejected_spans == 0, resp.partial_success
    got = spans_by_id(wait_trace(c, tid.hex(), span_ids=[sid.hex(), other.hex()]))
    wide = got[sid.hex()]
    n = len(wide["attributes"])
    assert 0 < n <= MAX_ATTRS, f"the wide span kept {n} attributes, want 1..{MAX_ATTRS}"
    dropped = wide.get("dropped_attributes_count", 0)
    assert dropped > 0 and n + dropped >= 10_000, f"dropped_attributes_count {dropped} with {n} kept does not account for 10,000 sent"
    assert all(attrs.get(k) == v for k, v in wide["attributes"].items()), "kept attributes must be ones that were sent, unchanged"
    assert got[other.hex()]["attributes"] == {"k": "v"} and got[other.hex()].get("dropped_attributes_count", 0) == 0, got[other.hex()]
    assert_healthy(c)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_all_bad_kinds_in_one_request(c: Collector, transport: str) -> None:
    """Every rejection counted in one response; every good, odd-kind and wide span stored."""
    tid = new_trace_id()
    t0 = time.time_ns() - 1_000_000_000
    root, child, odd, wide = new_span_id(), new_span_id(), new_span_id(), new_span_id()
    spans = [span(tid, root, "root", t0, t0 + 50 * MS, kind="server")]
    for _, overrides, _ in REJECTED:
        spans += good_and_bad(tid, overrides, t0)[0][1:2]  # the bad span alone (its parent id is random)
    spans += [
        span(tid, odd, "odd kind", t0 + MS, t0 + 2 * MS, parent_span_id=root, kind=9),
        span(tid, wide, "wide", t0 + MS, t0 + 3 * MS, parent_span_id=root, attrs={f"a{i}": i for i in range(1000)}),
        span(tid, child, "child", t0 + 5 * MS, t0 + 9 * MS, parent_span_id=root),
    ]
    resp = export(c, traces_request(spans, service=f"bad-{unique('svc')}"), transport)
    assert resp.partial_success.rejected_spans == len(REJECTED), resp.partial_success
    assert resp.partial_success.error_message, "no error message with rejected spans"
    got = spans_by_id(wait_trace(c, tid.hex(), span_ids=[x.hex() for x in (root, child, odd, wide)]))
    assert set(got) == {x.hex() for x in (root, child, odd, wide)}, f"stored spans: {sorted(got)}"
    assert len(got[wide.hex()]["attributes"]) <= MAX_ATTRS and got[wide.hex()].get("dropped_attributes_count", 0) >= 1000 - MAX_ATTRS
    assert_healthy(c)


def test_malformed_protobuf_http_400(c: Collector) -> None:
    r = c.post_otlp("/v1/traces", MALFORMED_PROTOBUF)
    assert r.status_code == 400, f"{r.status_code}: {r.content[:300]!r}"
    st = status_pb2.Status()
    st.ParseFromString(r.content)
    assert st.code == 3 and st.message, f"google.rpc.Status expected, got code={st.code} message={st.message!r}"
    assert_healthy(c)


def test_malformed_protobuf_grpc_invalid_argument(c: Collector) -> None:
    with grpc_channel(c.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            grpc_raw_call(ch, TRACES_EXPORT_METHOD, MALFORMED_PROTOBUF)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{ei.value.code()}: {ei.value.details()}"
    assert_healthy(c)


@pytest.mark.parametrize("bad_id", ["not-hex-at-all", "4bf92f3577b34da6a3ce929d0e0e473", "4bf92f3577b34da6a3ce929d0e0e47366", "zz" * 16])
def test_malformed_trace_id_query_is_400(c: Collector, bad_id: str) -> None:
    r = get_trace(c, bad_id)
    assert r.status_code == 400, f"{bad_id!r} -> {r.status_code}: {r.text[:300]}"
    assert r.json().get("error"), r.text


def test_unknown_trace_id_is_404(c: Collector) -> None:
    assert fetch_trace(c, new_trace_id().hex()) is None
