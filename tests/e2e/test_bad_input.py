"""Bad input gets a precise error and harms nothing else.

One collector serves the whole module while a well-behaved client keeps
sending logs in the background; each test throws one kind of bad input at it.
The last test checks that the well-behaved client never saw an error and that
every record it got acknowledged is searchable.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from typing import Iterator

import grpc
import pytest
import requests
import zstandard
from conftest import Collector, http_session, unique
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_util import (
    LOGS_EXPORT_METHOD,
    as_int,
    grpc_channel,
    grpc_export_logs,
    grpc_raw_call,
    hit_attr,
    kv,
    log_record,
    logs_request,
    logs_request_bytes,
    nested_array_bytes,
    nested_kvlist_bytes,
    nested_kvlist_json,
    parse_logs_response,
    record_with_attr_bytes,
    record_with_body_bytes,
)

MiB = 1024 * 1024


class GoodClient:
    """Sends a small valid batch every 20 ms over OTLP/HTTP protobuf, counting acknowledgements."""

    def __init__(self, c: Collector) -> None:
        self.c = c
        self.run = unique("good")
        self.acked: set[int] = set()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.seq = 0

    def _loop(self) -> None:
        s = http_session()
        while not self.stop.is_set():
            seqs = list(range(self.seq, self.seq + 10))
            self.seq += 10
            body = logs_request(
                [log_record(f"good client record {self.run}", attrs={"run": self.run, "seq": q}) for q in seqs],
                service="good-client",
            ).SerializeToString()
            try:
                r = s.post(self.c.otlp_url("/v1/logs"), data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30)
                if r.status_code == 200 and parse_logs_response(r.content).partial_success.rejected_log_records == 0:
                    self.acked.update(seqs)
                else:
                    self.failures.append(f"{r.status_code} {r.content[:200]!r}")
            except requests.RequestException as e:
                self.failures.append(repr(e))
            time.sleep(0.02)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, GoodClient]]:
    base = tmp_path_factory.mktemp("bad-input")
    c = Collector(base / "data", base)
    c.start()
    good = GoodClient(c)
    good.thread.start()
    try:
        yield c, good
    finally:
        good.stop.set()
        good.thread.join(30)
        try:
            if c.running():
                rc = c.stop()
                assert rc == 0, f"collector exited with {rc} after SIGTERM; stderr:\n{c.stderr_tail()}"
        finally:
            print(f"\n----- collector stderr (tail) -----\n{c.stderr_tail(60)}")
            c.kill()


@pytest.fixture
def c(env: tuple[Collector, GoodClient]) -> Collector:
    c = env[0]
    assert c.running(), f"collector is not running any more; stderr:\n{c.stderr_tail()}"
    return c


def status_of(r: requests.Response) -> status_pb2.Status:
    """The google.rpc.Status of an OTLP/HTTP protobuf error response."""
    st = status_pb2.Status()
    st.ParseFromString(r.content)
    return st


def barrier(c: Collector) -> None:
    """Sends a fresh record and waits until it is searchable, so earlier accepted ones would be too."""
    tok = unique("barrier")
    r = c.post_otlp("/v1/logs", logs_request([log_record(f"barrier {tok}")]).SerializeToString())
    assert r.status_code == 200, r.text
    c.search_until(lambda h: len(h) == 1, q=tok)
    time.sleep(0.5)


def assert_absent(c: Collector, query: str) -> None:
    barrier(c)
    hits = c.search(q=query)["hits"]
    assert hits == [], f"record matching {query} from a rejected request/record was stored: {hits}"


def assert_healthy(c: Collector) -> None:
    assert c.running(), f"collector died; stderr:\n{c.stderr_tail()}"
    r = c.get("/healthz")
    assert r.status_code == 200, r.text


# ----- malformed requests -------------------------------------------------------

MALFORMED_PROTOBUF = b"\x0a\xff\xff\xff\x0f\x12garbage that is not protobuf"


def test_malformed_protobuf_http_400(c: Collector) -> None:
    r = c.post_otlp("/v1/logs", MALFORMED_PROTOBUF)
    assert r.status_code == 400, f"{r.status_code}: {r.content[:300]!r}"
    assert r.headers.get("Content-Type", "").startswith("application/x-protobuf"), r.headers
    st = status_of(r)
    assert st.code == 3 and st.message, f"google.rpc.Status expected, got code={st.code} message={st.message!r}"
    assert_healthy(c)


def test_malformed_protobuf_grpc_invalid_argument(c: Collector) -> None:
    with grpc_channel(c.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            grpc_raw_call(ch, LOGS_EXPORT_METHOD, MALFORMED_PROTOBUF)
    err = ei.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.code()}: {err.details()}"
    assert err.details(), "no error message"
    assert_healthy(c)


def test_malformed_json_400_with_status(c: Collector) -> None:
    r = c.post_otlp("/v1/logs", b'{"resourceLogs": [{"scopeLogs": [', content_type="application/json")
    assert r.status_code == 400, f"{r.status_code}: {r.text[:300]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body.get("code") == 3 and isinstance(body.get("message"), str) and body["message"], body

    # A well-formed document with a wrongly typed field: the message names the field.
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "yesterday", "body": {"stringValue": "x"}}]}]}]}
    r = c.post_otlp("/v1/logs", json.dumps(doc).encode(), content_type="application/json")
    assert r.status_code == 400, f"{r.status_code}: {r.text[:300]}"
    body = r.json()
    assert body.get("code") == 3, body
    assert "timeUnixNano" in body.get("message", "") or "time_unix_nano" in body.get("message", ""), f"message does not name the field: {body}"
    assert_healthy(c)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_wrong_content_type_415(c: Collector, content_type: str) -> None:
    body = logs_request([log_record("wrong content type")]).SerializeToString()
    r = c.post_otlp("/v1/logs", body, content_type=content_type)
    assert r.status_code == 415, f"{r.status_code}: {r.text[:300]}"


# ----- decompression bombs (before any large request raises the memory peak) -----


def _bomb_check(c: Collector, body: bytes, encoding: str) -> None:
    hwm_before = c.rss_hwm_kib()
    r = c.post_otlp("/v1/logs", body, headers={"Content-Encoding": encoding}, timeout=60)
    assert r.status_code in (413, 400), f"{encoding} bomb -> {r.status_code}: {r.content[:300]!r}"
    assert_healthy(c)
    hwm_after = c.rss_hwm_kib()
    grew_mib = (hwm_after - hwm_before) / 1024
    print(f"{encoding} bomb: peak RSS {hwm_before / 1024:.0f} -> {hwm_after / 1024:.0f} MiB")
    assert grew_mib < 64, f"peak RSS grew by {grew_mib:.0f} MiB on a {encoding} bomb: decompression is not capped"
    assert c.rss_kib() < 1024 * 1024, f"RSS {c.rss_kib() / 1024:.0f} MiB after a {encoding} bomb"


def test_gzip_bomb_rejected_with_bounded_memory(c: Collector) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        chunk = b"\0" * MiB
        for _ in range(100):
            gz.write(chunk)
    body = buf.getvalue()
    assert len(body) < MiB
    _bomb_check(c, body, "gzip")


def test_zstd_bomb_rejected_with_bounded_memory(c: Collector) -> None:
    body = zstandard.ZstdCompressor(level=3).compress(b"\0" * (100 * MiB))
    assert len(body) < MiB
    _bomb_check(c, body, "zstd")


def test_compressed_requests_accepted(c: Collector) -> None:
    toks = [unique("gz"), unique("zst")]
    raw = [logs_request([log_record(f"compressed {t}")]).SerializeToString() for t in toks]
    r = c.post_otlp("/v1/logs", gzip.compress(raw[0]), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, f"gzip -> {r.status_code}: {r.content[:300]!r}"
    r = c.post_otlp("/v1/logs", zstandard.ZstdCompressor().compress(raw[1]), headers={"Content-Encoding": "zstd"})
    assert r.status_code == 200, f"zstd -> {r.status_code}: {r.content[:300]!r}"
    for t in toks:
        c.search_until(lambda h: len(h) == 1, q=t)


def test_grpc_gzip_compressed_request_accepted(c: Collector) -> None:
    tok = unique("grpcgz")
    with grpc_channel(c.grpc_target) as ch:
        resp = grpc_export_logs(ch, logs_request([log_record(f"gzip over grpc {tok} " + "pad " * 200)]), compression=grpc.Compression.Gzip)
    assert resp.partial_success.rejected_log_records == 0
    c.search_until(lambda h: len(h) == 1, q=tok)


def test_content_type_parameters_accepted(c: Collector) -> None:
    tok = unique("charset")
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()), "body": {"stringValue": f"charset {tok}"}}]}]}]}
    r = c.post_otlp("/v1/logs", json.dumps(doc).encode(), content_type="application/json; charset=utf-8")
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    c.search_until(lambda h: len(h) == 1, q=tok)


# ----- ids ----------------------------------------------------------------------


def test_empty_trace_id_means_absent(c: Collector) -> None:
    tok = unique("notrace")
    r = c.post_otlp("/v1/logs", logs_request([log_record(f"no trace {tok}", trace_id=b"", span_id=b"")]).SerializeToString())
    assert r.status_code == 200, r.content
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 0, resp
    hits = c.search_until(lambda h: len(h) == 1, q=tok)
    assert not hits[0].get("trace_id"), f"an empty trace id must read as absent: {hits[0]}"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_17_byte_trace_id_rejects_only_that_record(c: Collector, transport: str) -> None:
    good1, bad, good2 = unique("ok"), unique("bad"), unique("ok")
    req = logs_request(
        [
            log_record(f"first {good1}", trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9))),
            log_record(f"broken {bad}", trace_id=bytes(range(1, 18)), span_id=bytes(range(1, 9))),
            log_record(f"second {good2}"),
        ]
    )
    rejected_before = c.metric_sum("periscope_rejected_records_total", signal="logs", transport=transport)
    if transport == "http":
        r = c.post_otlp("/v1/logs", req.SerializeToString())
        assert r.status_code == 200, f"{r.status_code}: {r.content[:300]!r}"
        assert r.headers.get("Content-Type", "").startswith("application/x-protobuf"), r.headers
        resp = parse_logs_response(r.content)
    else:
        with grpc_channel(c.grpc_target) as ch:
            resp = grpc_export_logs(ch, req)
    assert resp.partial_success.rejected_log_records == 1, f"partial success: {resp}"
    assert resp.partial_success.error_message, "partial success without an error message"
    rejected_after = c.metric_sum("periscope_rejected_records_total", signal="logs", transport=transport)
    assert rejected_after - rejected_before >= 1, f"periscope_rejected_records_total went {rejected_before} -> {rejected_after}"
    c.search_until(lambda h: len(h) == 1, q=good1)
    hits = c.search_until(lambda h: len(h) == 1, q=good2)
    assert hits[0]["body"] == f"second {good2}"
    assert_absent(c, bad)


def test_span_with_17_byte_trace_id_rejected_via_partial_success(c: Collector) -> None:
    now = time.time_ns()

    def span(trace_id: bytes, name: str) -> trace_pb2.Span:
        return trace_pb2.Span(trace_id=trace_id, span_id=b"\x02" * 8, name=name, start_time_unix_nano=now - 1000, end_time_unix_nano=now)

    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[kv("service.name", "bad-spans")]),
                scope_spans=[trace_pb2.ScopeSpans(spans=[span(b"\x01" * 16, "good"), span(b"\x01" * 17, "bad"), span(b"\x01" * 16, "good2")])],
            )
        ]
    )
    r = c.post_otlp("/v1/traces", req.SerializeToString())
    assert r.status_code == 200, f"{r.status_code}: {r.content[:300]!r}"
    resp = trace_service_pb2.ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert resp.partial_success.rejected_spans == 1, f"partial success: {resp}"
    assert resp.partial_success.error_message


def test_9_byte_span_id_rejects_only_that_record(c: Collector) -> None:
    good, bad = unique("ok"), unique("bad")
    req = logs_request(
        [
            log_record(f"good {good}", trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9))),
            log_record(f"bad span {bad}", trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 10))),
        ]
    )
    r = c.post_otlp("/v1/logs", req.SerializeToString())
    assert r.status_code == 200, r.content
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 1, resp
    hits = c.search_until(lambda h: len(h) == 1, q=good)
    assert str(hits[0]["trace_id"]).lower() == bytes(range(1, 17)).hex()
    assert str(hits[0]["span_id"]).lower() == bytes(range(1, 9)).hex()
    assert_absent(c, bad)


# ----- strings and nesting -------------------------------------------------------


def test_invalid_utf8_is_replaced_and_kept(c: Collector) -> None:
    tok = unique("utf")
    placeholder = b"QQQQZZZZ"
    req = logs_request([log_record(f"invalid utf8 {tok} QQQQZZZZ end", attrs={"raw": "QQQQZZZZ", "tok": tok})])
    data = req.SerializeToString()
    assert data.count(placeholder) == 2
    data = data.replace(placeholder, b"ok\xff\xfe\xc3(ok")  # same length: 8 bytes
    r = c.post_otlp("/v1/logs", data)
    assert r.status_code == 200, f"{r.status_code}: {r.content[:300]!r}"
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 0, resp
    hits = c.search_until(lambda h: len(h) == 1, q=tok)
    body = hits[0]["body"]
    assert "\ufffd" in body and tok in body and body.endswith(" end"), f"body: {body!r}"
    assert "\ufffd" in str(hit_attr(hits[0], "raw")), hits[0]["attributes"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_protobuf_nested_beyond_recursion_limit_rejects_request(c: Collector, transport: str) -> None:
    ok, deep = unique("ok"), unique("deep")
    data = logs_request_bytes(
        [
            log_record(f"innocent {ok}").SerializeToString(),
            record_with_attr_bytes(log_record(f"deep {deep}"), "deep", nested_kvlist_bytes(100)),
        ]
    )
    if transport == "http":
        r = c.post_otlp("/v1/logs", data)
        assert r.status_code == 400, f"{r.status_code}: {r.content[:300]!r}"
        msg = status_of(r).message
    else:
        with grpc_channel(c.grpc_target) as ch:
            with pytest.raises(grpc.RpcError) as ei:
                grpc_raw_call(ch, LOGS_EXPORT_METHOD, data)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{ei.value.code()}: {ei.value.details()}"
        msg = ei.value.details()
    assert "recursion" in msg.lower() or "too deep" in msg.lower() or "nest" in msg.lower(), f"message does not say why: {msg!r}"
    assert_absent(c, ok)
    assert_healthy(c)


def test_json_nested_100_levels_rejects_only_that_record(c: Collector) -> None:
    ok, deep = unique("ok"), unique("deep")
    now = str(time.time_ns())
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-deep"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": now, "body": {"stringValue": f"innocent {ok}"}},
                            {
                                "timeUnixNano": now,
                                "body": {"stringValue": f"deep {deep}"},
                                "attributes": [{"key": "deep", "value": nested_kvlist_json(100)}],
                            },
                        ]
                    }
                ],
            }
        ]
    }
    r = c.post_otlp("/v1/logs", json.dumps(doc).encode(), content_type="application/json")
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    ps = body.get("partialSuccess") or {}
    assert ps.get("rejectedLogRecords") == "1", f"want partialSuccess.rejectedLogRecords \"1\" (int64 as string): {body}"
    assert ps.get("errorMessage"), body
    c.search_until(lambda h: len(h) == 1, q=ok)
    assert_absent(c, deep)


def test_protobuf_anyvalue_deeper_than_32_rejects_only_that_record(c: Collector) -> None:
    ok, shallow, deep = unique("ok"), unique("shallow"), unique("deep")
    data = logs_request_bytes(
        [
            log_record(f"innocent {ok}").SerializeToString(),
            record_with_attr_bytes(log_record(f"nested ten {shallow}"), "nested", nested_array_bytes(10)),
            record_with_body_bytes(log_record("replaced", attrs={"marker": deep}), nested_array_bytes(40, leaf=f"deep {deep}")),
        ]
    )
    r = c.post_otlp("/v1/logs", data)
    assert r.status_code == 200, f"{r.status_code}: {r.content[:300]!r}"
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 1, resp
    assert resp.partial_success.error_message
    c.search_until(lambda h: len(h) == 1, q=ok)
    c.search_until(lambda h: len(h) == 1, q=shallow)
    assert_absent(c, f"attributes.marker:{deep}")


def test_timestamp_older_than_retention_rejected(c: Collector) -> None:
    ok, old = unique("ok"), unique("old")
    thirty_days_ago = time.time_ns() - 30 * 24 * 3600 * 10**9
    req = logs_request([log_record(f"fresh {ok}"), log_record(f"ancient {old}", time_ns=thirty_days_ago)])
    r = c.post_otlp("/v1/logs", req.SerializeToString())
    assert r.status_code == 200, r.content
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 1, resp
    c.search_until(lambda h: len(h) == 1, q=ok)
    barrier(c)
    hits = c.search(q=old, start=int(time.time()) - 40 * 24 * 3600)["hits"]
    assert hits == [], hits


def test_metric_points_are_kept_for_the_metrics_retention_not_the_logs_one(c: Collector) -> None:
    """Ingest checks each signal against its own retention: metrics keep 30 days
    by default (logs 7), so a ten-day-old point is stored and a forty-day-old one
    rejected, alone."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    job = unique("ret")
    day_ns = 24 * 3600 * 10**9
    now = time.time_ns() // 10**9 * 10**9
    ten_days_ago, forty_days_ago = now - 10 * day_ns, now - 40 * day_ns
    points = [metrics_pb2.NumberDataPoint(time_unix_nano=t, as_double=v) for t, v in [(ten_days_ago, 1.5), (forty_days_ago, 2.5), (now, 3.5)]]
    req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=[kv("service.name", job)]),
                scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metrics_pb2.Metric(name="retention_probe", gauge=metrics_pb2.Gauge(data_points=points))])],
            )
        ]
    )
    r = c.post_otlp("/v1/metrics", req.SerializeToString())
    assert r.status_code == 200, r.content
    resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_data_points == 1, resp
    assert "older than the retention period" in resp.partial_success.error_message, resp

    def value_at(t_ns: int) -> list:
        r = c.session.get(c.http_url("/prometheus/api/v1/query"), params={"query": f'retention_probe{{job="{job}"}}', "time": t_ns / 1e9}, timeout=30)
        assert r.status_code == 200, r.text
        return [float(s["value"][1]) for s in r.json()["data"]["result"]]

    deadline = time.time() + 10
    while value_at(now) != [3.5] and time.time() < deadline:
        time.sleep(0.1)
    assert value_at(now) == [3.5]
    assert value_at(ten_days_ago) == [1.5]
    assert value_at(forty_days_ago) == []


# ----- size limits ------------------------------------------------------------------


def _big_request() -> bytes:
    return logs_request([log_record("x" * (20 * MiB))]).SerializeToString()


def test_20mib_request_http_413(c: Collector) -> None:
    r = c.post_otlp("/v1/logs", _big_request(), timeout=60)
    assert r.status_code == 413, f"{r.status_code}: {r.content[:300]!r}"
    assert_healthy(c)


def test_20mib_request_grpc_resource_exhausted(c: Collector) -> None:
    with grpc_channel(c.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            grpc_raw_call(ch, LOGS_EXPORT_METHOD, _big_request(), timeout=60)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{ei.value.code()}: {ei.value.details()}"
    assert_healthy(c)


# ----- and nobody else noticed ---------------------------------------------------------


def test_zz_well_behaved_client_unharmed(env: tuple[Collector, GoodClient]) -> None:
    c, good = env
    time.sleep(1)
    good.stop.set()
    good.thread.join(30)
    assert good.acked, "the well-behaved client got nothing acknowledged"
    assert not good.failures, f"the well-behaved client saw {len(good.failures)} failures, e.g. {good.failures[:5]}"
    hits = c.search_count_until(len(good.acked), timeout=60, q=f"attributes.run:{good.run}")
    seqs = [as_int(hit_attr(h, "seq")) for h in hits]
    assert len(seqs) == len(set(seqs)), "duplicates"
    assert good.acked <= set(seqs), f"missing: {sorted(good.acked - set(seqs))[:20]}"
    print(f"well-behaved client: {len(good.acked)} records acknowledged and stored")
