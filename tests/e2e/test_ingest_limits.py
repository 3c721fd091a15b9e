"""The ingest edge cannot be stalled or blown up by one client.

Hostile clients against the real binaries: slowloris headers are cut at the
header read timeout, a stalled body is charged to the in-flight budget while
held and answered 408 at the body read timeout, a declared length over the
size limit is refused before the body is read, remote write requires its
content type and drops (and reports) samples outside OTLP's timestamp
bounds, and the agent relay refuses requests past its budget. The only
timing bounds are generous multiples of the server's own timeouts.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from agent_util import Agent
import grpc
from conftest import Collector, http_session, unique
from otlp_util import grpc_channel, grpc_export_logs, log_record, logs_request
from test_remote_write import post as rw_post
from test_remote_write import snappy, timeseries, write_request


def host_port(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes `sock` within `seconds`; what it sent."""
    sock.settimeout(0.5)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_slowloris_headers_are_cut_at_the_header_timeout(collectors) -> None:  # noqa: ANN001
    c = collectors(args=["--http-header-read-timeout", "2s"]).start()
    socks = []
    for addr in (c.listening["otlp_http"], c.listening["http"]):
        s = socket.create_connection(host_port(addr))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
        socks.append(s)
    for s in socks:
        # A byte now and then does not keep the connection.
        s.sendall(b"a")
        closed, _ = closed_within(s, 15)
        assert closed, "the server kept a connection with half-sent headers"
        s.close()
    assert c.metric_sum("periscope_header_timeouts_total") >= 2
    r = c.session.get(c.http_url("/healthz"), timeout=5)
    assert r.status_code == 200


def test_grpc_connections_are_limited_and_must_greet_in_time(collectors) -> None:  # noqa: ANN001
    c = collectors(args=["--max-connections", "2", "--http-header-read-timeout", "2s"]).start()
    target = host_port(c.listening["otlp_grpc"])
    # Two silent connections take both slots; a third is closed at once.
    silent = [socket.create_connection(target) for _ in range(2)]
    time.sleep(0.2)
    third = socket.create_connection(target)
    closed, _ = closed_within(third, 10)
    third.close()
    assert closed, "a connection past --max-connections was kept"
    assert c.metric_sum("periscope_refused_connections_total", listener="otlp_grpc") >= 1
    # Without an HTTP/2 preface, the silent ones are closed at the header timeout.
    for s in silent:
        closed, _ = closed_within(s, 15)
        s.close()
        assert closed, "a gRPC connection that never sent its preface was kept"
    assert c.metric_sum("periscope_header_timeouts_total", listener="otlp_grpc") >= 2
    # Slots are free again: a real client gets through.
    ch = grpc_channel(c.grpc_target)
    grpc_export_logs(ch, logs_request([log_record(unique("after-limit"))]))
    ch.close()


def test_stalled_body_is_charged_then_timed_out(collectors) -> None:  # noqa: ANN001
    """The review held eight 15 MiB bodies short of their last byte: 150 MiB
    of RSS while the budget read 0. What a body has sent is now charged,
    and a body that stalls is answered 408 at the body read timeout."""
    c = collectors(args=["--http-body-read-timeout", "4s"]).start()
    announced = 15 << 20
    s = socket.create_connection(host_port(c.listening["otlp_http"]))
    s.sendall(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Content-Length: {announced}\r\n\r\n".encode()
        + b"\0" * (announced - 1)
    )
    deadline = time.monotonic() + 3
    inflight = 0.0
    while time.monotonic() < deadline and inflight < announced - 1:
        inflight = c.metric_sum("periscope_inflight_bytes")
        time.sleep(0.05)
    assert inflight >= announced - 1, f"inflight {inflight} while {announced - 1} bytes of a body are held"
    closed, got = closed_within(s, 20)
    s.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"--http-body-read-timeout" in got, got
    assert c.metric_sum("periscope_body_timeouts_total", listener="otlp_http") == 1
    assert c.metric_sum("periscope_inflight_bytes") == 0


def test_over_budget_requests_get_429_naming_the_flag(collectors) -> None:  # noqa: ANN001
    c = collectors(args=["--max-inflight-bytes", "1MiB"]).start()
    # One request that has sent the whole budget holds it while its last byte stalls.
    s = socket.create_connection(host_port(c.listening["otlp_http"]))
    s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + f"Content-Length: {(1 << 20) + 1}\r\n\r\n".encode() + b" " * (1 << 20))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.metric_sum("periscope_inflight_bytes") < (1 << 20):
        time.sleep(0.05)
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()), "body": {"stringValue": "x"}}]}]}]}
    r = http_session().post(c.otlp_url("/v1/logs"), json=body, timeout=10)
    assert r.status_code == 429, r.text
    assert "--max-inflight-bytes" in r.text, r.text
    assert r.headers.get("Retry-After") == "1"
    s.close()


def test_declared_length_over_the_limit_is_refused_unread(collectors) -> None:  # noqa: ANN001
    c = collectors(args=["--max-recv-msg-size", "1MiB"]).start()
    for addr, path in ((c.listening["otlp_http"], "/v1/logs"), (c.listening["otlp_http"], "/api/v1/write"), (c.listening["http"], "/api/v1/write")):
        s = socket.create_connection(host_port(addr))
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {(1 << 20) + 1}\r\n\r\n".encode()
        )
        # No body byte is sent: the answer cannot depend on reading one.
        _, got = closed_within(s, 10)
        s.close()
        assert got.startswith(b"HTTP/1.1 413"), (path, got[:200])
        assert b"--max-recv-msg-size" in got, got


def test_remote_write_requires_protobuf_content_type(collector: Collector) -> None:
    body = snappy(write_request([timeseries({"__name__": "ct_probe"}, [(1.0, int(time.time() * 1000))])]))
    for url in (collector.otlp_url("/api/v1/write"), collector.http_url("/api/v1/write")):
        # What a cross-site form or no-preflight fetch can send.
        r = http_session().post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.status_code == 415, r.text
        assert "application/x-protobuf" in r.text
        r = http_session().post(url, data=body, headers={"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}, timeout=10)
        assert r.status_code == 415, r.text
    assert rw_post(collector, body).status_code == 204


def test_remote_write_out_of_bounds_samples_are_dropped_and_reported(collectors, tmp_path: Path) -> None:  # noqa: ANN001
    """The review's reproduction: hourly samples from 2200 and from 1970
    made 201 hour partitions; now they are dropped, counted and reported."""
    c = collectors(args=["--metrics-flush-interval", "1s"]).start()
    tenant = unique("rw-probe")
    hour = 3_600_000
    future = timeseries({"__name__": "sec_probe", "job": "probe"}, [(1.0, 7258118400000 + i * hour) for i in range(100)])
    past = timeseries({"__name__": "sec_probe", "job": "probe"}, [(1.0, 1000 + i * hour) for i in range(100)])
    now_ms = int(time.time() * 1000)
    good = timeseries({"__name__": "sec_probe_ok", "job": "probe"}, [(2.0, now_ms - 1000)])
    r = rw_post(c, snappy(write_request([future, good])), tenant=tenant)
    assert r.status_code == 400, r.text
    assert "stored 1 samples; dropped 100 out of bounds" in r.text, r.text
    assert "100 more than 86400s in the future" in r.text, r.text
    r = rw_post(c, snappy(write_request([past])), tenant=tenant)
    assert r.status_code == 400, r.text
    assert "100 older than the metrics retention" in r.text and "--metrics-retention" in r.text, r.text
    assert c.metric_sum("periscope_rejected_samples_total", reason="too_old") == 100
    assert c.metric_sum("periscope_rejected_samples_total", reason="too_new") == 100
    # The valid sample was stored and is queryable.
    deadline = time.monotonic() + 30
    result: list = []
    while time.monotonic() < deadline and not result:
        q = http_session().get(c.http_url("/prometheus/api/v1/query"), params={"query": "sec_probe_ok", "time": now_ms / 1000}, headers={"X-Scope-OrgID": tenant}, timeout=10)
        result = q.json()["data"]["result"]
        time.sleep(0.2)
    assert result, "the in-bounds sample of the same request is stored"
    c.stop_ok()
    # No partition for 1970 or 2200 anywhere in the data dir.
    assert c.data_dir is not None
    odd = [p for p in c.data_dir.rglob("*") if p.is_dir() and (p.name.startswith("1970-") or p.name.startswith("2200-"))]
    assert odd == [], odd


def test_agent_relay_refuses_over_budget_requests(collectors, tmp_path: Path) -> None:  # noqa: ANN001
    collector = collectors().start()
    (tmp_path / "empty").mkdir()
    agent = Agent(
        tmp_path / "agent",
        tmp_path / "logs",
        f"http://{collector.grpc_target}",
        [f"{tmp_path}/empty/*.log"],
        args=["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--relay-max-inflight-bytes", "1MiB", "--relay-body-read-timeout", "20s"],
    ).start()
    try:
        relay = agent.listening["otlp_http"]
        # One request that has sent the whole budget holds it while its last byte stalls.
        s = socket.create_connection(host_port(relay))
        s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + f"Content-Length: {(1 << 20) + 1}\r\n\r\n".encode() + b" " * (1 << 20))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and agent.metric("periscope_agent_relay_inflight_bytes") < (1 << 20):
            time.sleep(0.1)
        assert agent.metric("periscope_agent_relay_inflight_bytes") >= (1 << 20)
        body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()), "body": {"stringValue": "x"}}]}]}]}
        r = agent.session.post(f"http://{relay}/v1/logs", json=body, timeout=10)
        assert r.status_code == 429, r.text
        assert "relay_max_inflight_bytes" in r.text
        assert r.headers.get("Retry-After") == "1"
        # gRPC shares the budget: charged as the message arrives, refused.
        ch = grpc_channel(agent.listening["otlp_grpc"])
        try:
            grpc_export_logs(ch, logs_request([log_record("over budget")]))
            raise AssertionError("gRPC export accepted past the relay budget")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            assert "relay_max_inflight_bytes" in (e.details() or "")
        ch.close()
        s.close()
        # Once the stalled request is gone, the budget is free again.
        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline and status != 200:
            status = agent.session.post(f"http://{relay}/v1/logs", json=body, timeout=10).status_code
            time.sleep(0.1)
        assert status == 200
        r = agent.session.post(f"http://{relay}/v1/logs", data=b"{}", headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.status_code == 415
        assert agent.metric("periscope_agent_relay_refused_requests_total") >= 1
    finally:
        agent.stop()
