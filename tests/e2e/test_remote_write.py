"""Prometheus remote write 1.0 into the metric store, read back with PromQL.

The client builds a `prometheus.WriteRequest` by hand (protobuf wire format)
and compresses it with snappy's block format, as Prometheus does.
"""

from __future__ import annotations

import struct
import time

import cramjam
from conftest import Collector, http_session, unique
from otlp_util import len_field, varint


def label(name: str, value: str) -> bytes:
    return len_field(1, name.encode()) + len_field(2, value.encode())


def sample(value: float, ts_ms: int) -> bytes:
    # field 1: double (wire type 1), field 2: int64 varint
    return b"\x09" + struct.pack("<d", value) + b"\x10" + varint(ts_ms)


def timeseries(labels: dict[str, str], samples: list[tuple[float, int]]) -> bytes:
    body = b"".join(len_field(1, label(k, v)) for k, v in sorted(labels.items()))
    body += b"".join(len_field(2, sample(v, t)) for v, t in samples)
    return body


def write_request(series: list[bytes]) -> bytes:
    return b"".join(len_field(1, s) for s in series)


def snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def post(c: Collector, body: bytes, port: str = "otlp", tenant: str | None = None):
    url = c.otlp_url("/api/v1/write") if port == "otlp" else c.http_url("/api/v1/write")
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    return http_session().post(url, data=body, headers=headers, timeout=30)


def instant(c: Collector, q: str, t: float, tenant: str | None = None) -> list:
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    r = http_session().get(c.http_url("/prometheus/api/v1/query"), params={"query": q, "time": t}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_remote_write_samples_are_queryable(collector: Collector) -> None:
    job = unique("rw")
    now_ms = int(time.time() * 1000) // 1000 * 1000
    t0 = now_ms - 120_000
    counter = timeseries(
        {"__name__": "rw_requests_total", "job": job, "instance": "a"},
        [(float(i * 10), t0 + i * 15_000) for i in range(9)],
    )
    gauge = timeseries({"__name__": "rw_temperature", "job": job, "room": "b"}, [(21.5, t0), (22.0, now_ms)])
    r = post(collector, snappy(write_request([counter, gauge])))
    assert r.status_code == 204, r.text
    # The query port accepts remote write too, for another tenant.
    other = timeseries({"__name__": "rw_temperature", "job": job, "room": "c"}, [(5.0, now_ms)])
    r = post(collector, snappy(write_request([other])), port="query", tenant="team-rw")
    assert r.status_code == 204, r.text

    t = now_ms / 1000
    got = instant(collector, f'rw_requests_total{{job="{job}"}}', t)
    assert [float(s["value"][1]) for s in got] == [80.0], got
    got = instant(collector, f'rw_temperature{{job="{job}"}}', t)
    assert [(s["metric"]["room"], float(s["value"][1])) for s in got] == [("b", 22.0)], got
    # 80 over the 120 s between the first and last sample, extrapolated to the 2 m window.
    got = instant(collector, f'increase(rw_requests_total{{job="{job}"}}[2m])', t)
    assert len(got) == 1 and 70 <= float(got[0]["value"][1]) <= 90, got
    got = instant(collector, f'rw_temperature{{job="{job}"}}', t, tenant="team-rw")
    assert [(s["metric"]["room"], float(s["value"][1])) for s in got] == [("c", 5.0)], got


def test_remote_write_bad_input_is_400(collector: Collector) -> None:
    r = post(collector, b"\xff\xff\xff\xff not snappy")
    assert r.status_code == 400, r.text
    r = post(collector, snappy(b"\x0a\xff\xff\xff\x0f garbage"))
    assert r.status_code == 400, r.text
    # The collector still takes good writes afterwards.
    good = timeseries({"__name__": "rw_after_bad", "job": unique("rw")}, [(1.0, int(time.time() * 1000))])
    assert post(collector, snappy(write_request([good]))).status_code == 204
