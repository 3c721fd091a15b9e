"""Measures how much memory one ingest request takes per byte of its body.

Not a test: the factors it prints are the ones charged to the in-flight
budget (proto/src/body.rs). For each body kind, a fresh collector (or agent
relay) is started, its peak RSS (VmHWM) read, one ~16 MB request sent, and
the peak read again once it is answered; the growth is divided by the
body's size on the wire and decompressed. The records are small (one short
body, one attribute), the worst case per byte.

    PERISCOPE_BIN=target/debug/periscope PERISCOPE_AGENT_BIN=target/debug/periscope-agent \
        python3 tests/e2e/measure_ingest_memory.py
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cramjam  # noqa: E402
import zstandard  # noqa: E402
from conftest import Collector, http_session  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402
from opentelemetry.proto.logs.v1 import logs_pb2  # noqa: E402

# MEASURE_SCALE=0.25 runs quarter-sized requests: the growth should scale with
# the body (a fixed part, such as the indexer's arena, would not).
RECORDS = int(135_000 * float(os.environ.get("MEASURE_SCALE", "1")))


def json_body() -> bytes:
    now = time.time_ns()
    recs = [{"timeUnixNano": str(now), "body": {"stringValue": "r"}, "attributes": [{"key": "k", "value": {"stringValue": "v"}}]} for _ in range(RECORDS)]
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": recs}]}]}, separators=(",", ":")).encode()


def protobuf_body(n: int = RECORDS * 3) -> bytes:
    now = time.time_ns()
    rec = logs_pb2.LogRecord(time_unix_nano=now, body=common_pb2.AnyValue(string_value="r"), attributes=[common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(string_value="v"))])
    req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[rec] * n)])])
    return req.SerializeToString()


def remote_write_body(series: int = int(20_000 * float(os.environ.get("MEASURE_SCALE", "1"))), per: int = 60) -> bytes:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_remote_write import timeseries, write_request

    now_ms = int(time.time() * 1000)
    raw = write_request([timeseries({"__name__": "m", "job": "j", "instance": f"i{s}"}, [(1.0, now_ms - i * 1000) for i in range(per)]) for s in range(series)])
    return raw


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def measure(name: str, url_of, headers: dict[str, str], body: bytes, decompressed: int, start) -> None:  # noqa: ANN001
    proc, stop = start()
    try:
        time.sleep(1.0)
        before = peak_kib(proc)
        r = http_session().post(url_of(), data=body, headers=headers, timeout=300)
        after = peak_kib(proc)
    finally:
        stop()
    grew = (after - before) * 1024
    print(f"{name:28} status {r.status_code} wire {len(body):>10} decompressed {decompressed:>10} peak +{grew >> 20:>5} MiB  {grew / len(body):6.1f}x wire  {grew / decompressed:6.1f}x decompressed", flush=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="periscope-measure-"))
    (tmp / "logs").mkdir()
    js = json_body()
    pb = protobuf_body()
    rw = remote_write_body()

    def collector():  # noqa: ANN202
        c = Collector(tmp / f"data-{time.time_ns()}", tmp / "logs", args=["--max-inflight-bytes", "8GiB", "--max-recv-msg-size", "64MiB"]).start()
        holder["c"] = c
        return c.pid, c.stop

    holder: dict[str, Collector] = {}
    url = lambda path: lambda: holder["c"].otlp_url(path)  # noqa: E731
    rows = [
        ("otlp json", {"Content-Type": "application/json"}, js, len(js)),
        ("otlp json gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, gzip.compress(js), len(js)),
        ("otlp protobuf", {"Content-Type": "application/x-protobuf"}, pb, len(pb)),
        ("otlp protobuf zstd", {"Content-Type": "application/x-protobuf", "Content-Encoding": "zstd"}, zstandard.compress(pb), len(pb)),
    ]
    for name, headers, body, dec in rows:
        measure(f"collector {name}", url("/v1/logs"), headers, body, dec, collector)
    rw_headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    measure("collector remote write", url("/api/v1/write"), rw_headers, bytes(cramjam.snappy.compress_raw(rw)), len(rw), collector)

    # The agent relay, forwarding to a collector that is not measured.
    from agent_util import Agent

    sink = Collector(tmp / "sink", tmp / "logs", args=["--max-inflight-bytes", "8GiB", "--max-recv-msg-size", "64MiB"]).start()
    (tmp / "empty").mkdir()
    agents: dict[str, Agent] = {}

    def agent():  # noqa: ANN202
        a = Agent(tmp / f"agent-{time.time_ns()}", tmp / "logs", f"http://{sink.grpc_target}", [f"{tmp}/empty/*.log"],
                  args=["--otlp-http-addr", "127.0.0.1:0", "--relay-max-inflight-bytes", "3GiB", "--relay-max-recv-msg-size", "64MiB", "--memory-queue-bytes", "1GiB"]).start()
        agents["a"] = a
        assert a.proc is not None
        return a.proc.pid, a.stop

    relay = lambda: f"http://{agents['a'].listening['otlp_http']}/v1/logs"  # noqa: E731
    for name, headers, body, dec in rows[::2]:
        measure(f"agent relay {name}", relay, headers, body, dec, agent)
    sink.stop()


if __name__ == "__main__":
    main()
