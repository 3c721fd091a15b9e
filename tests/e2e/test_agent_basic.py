"""The agent on a fake Kubernetes node: CRI files under a `var/log/pods`
tree get their Kubernetes metadata from the path, partial lines are joined
and stack traces grouped; the local OTLP relay forwards apps' logs with the
node's attributes; host metrics arrive as OTLP metrics; the tenant header is
sent; configuration errors exit 2 with one line.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from datetime import datetime, timedelta, timezone

import zstandard
from agent_util import AGENT_BIN, Agent
from conftest import unique
from otlp_util import grpc_channel, grpc_export_logs, log_record, logs_request


BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)


def ts(delta_s: float, tz: timezone = timezone.utc) -> str:
    t = (BASE + timedelta(seconds=delta_s)).astimezone(tz)
    return t.isoformat().replace("+00:00", "Z")


def write_pod_logs(root, token: str) -> None:  # noqa: ANN001
    d = root / "var/log/pods/shop_web-7d9f8_0b1c2d3e-1111/nginx"
    d.mkdir(parents=True)
    plus1 = timezone(timedelta(hours=1))
    (d / "2.log").write_text(
        f"{ts(0)[:-1]}.000000001Z stdout F {token} plain request line\n"
        f"{ts(1.5, plus1)} stdout P {token} partial first half \n"
        f"{ts(1.6)} stdout F and second half\n"
        f"{ts(2)} stderr F {token} ERROR java.lang.IllegalStateException: boom\n"
        f"{ts(2)} stderr F \tat com.example.Foo.bar(Foo.java:42)\n"
        f"{ts(2)} stderr F \tat com.example.Main.main(Main.java:7)\n"
        f"{ts(3)} stderr F {token} WARN after the trace\n"
    )
    # The kubelet's symlink to the same file: followed, read once, and the
    # metadata still comes from the target's path.
    links = root / "var/log/containers"
    links.mkdir(parents=True)
    (links / "web-7d9f8_shop_nginx-abc123.log").symlink_to(d / "2.log")


def test_pod_logs_get_kubernetes_metadata(collectors, tmp_path) -> None:  # noqa: ANN001
    collector = collectors().start()
    token = unique("pod")
    write_pod_logs(tmp_path, token)
    agent = Agent(
        tmp_path / "agent",
        tmp_path / "logs",
        f"http://{collector.grpc_target}",
        [f"{tmp_path}/var/log/containers/*.log", f"{tmp_path}/var/log/pods/*/*/*.log*"],
        args=["--multiline-start", r"^\S", "--tenant", "acme"],
    ).start()
    try:
        hits = collector.search_until(lambda h: len(h) >= 4, q=token, tenant="acme")
        time.sleep(2)  # a duplicate through the symlink would show up by now
        hits = collector.search(q=token, tenant="acme")["hits"]
        assert len(hits) == 4, [h["body"] for h in hits]
        by_body = {h["body"].split(token + " ", 1)[1]: h for h in hits}
        assert set(by_body) == {
            "plain request line",
            "partial first half and second half",
            "ERROR java.lang.IllegalStateException: boom\n\tat com.example.Foo.bar(Foo.java:42)\n\tat com.example.Main.main(Main.java:7)",
            "WARN after the trace",
        }, list(by_body)
        h = by_body["plain request line"]
        res = h["resource"]
        assert res["k8s.namespace.name"] == "shop"
        assert res["k8s.pod.name"] == "web-7d9f8"
        assert res["k8s.pod.uid"] == "0b1c2d3e-1111"
        assert res["k8s.container.name"] == "nginx"
        assert str(res["k8s.container.restart_count"]) == "2"
        assert res["k8s.node.name"] == "e2e-node"
        assert h["service"] == "nginx"
        assert h["timestamp"] == ts(0)[:-1] + ".000000001Z", h["timestamp"]
        assert by_body["partial first half and second half"]["timestamp"] == ts(1.5)[:-1] + "000Z", "±hh:mm offset, time of the first piece"
        trace = by_body["ERROR java.lang.IllegalStateException: boom\n\tat com.example.Foo.bar(Foo.java:42)\n\tat com.example.Main.main(Main.java:7)"]
        assert trace["severity_text"] == "ERROR"
        assert trace["attributes"]["log.iostream"] == "stderr"
        assert by_body["WARN after the trace"]["severity_text"] == "WARN"
        # Nothing under the default tenant.
        assert collector.search(q=token)["hits"] == []
    finally:
        assert agent.stop() == 0, agent.stderr_tail()


def test_relay_and_host_metrics(collectors, tmp_path) -> None:  # noqa: ANN001
    collector = collectors().start()
    (tmp_path / "empty").mkdir()
    agent = Agent(
        tmp_path / "agent",
        tmp_path / "logs",
        f"http://{collector.grpc_target}",
        [f"{tmp_path}/empty/*.log"],
        args=["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--metrics-interval", "1s"],
    ).start()
    try:
        token = unique("relay")
        # OTLP/HTTP JSON to the relay.
        body = {
            "resourceLogs": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
                    "scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()), "body": {"stringValue": f"{token} via http"}}]}],
                }
            ]
        }
        r = agent.session.post(f"http://{agent.listening['otlp_http']}/v1/logs", json=body, timeout=10)
        assert r.status_code == 200, r.text
        # OTLP/gRPC to the relay.
        ch = grpc_channel(agent.listening["otlp_grpc"])
        grpc_export_logs(ch, logs_request([log_record(f"{token} via grpc")], service="payments"))
        # Compressed OTLP/HTTP: gzip protobuf and zstd JSON.
        relay_logs = f"http://{agent.listening['otlp_http']}/v1/logs"
        gz = gzip.compress(logs_request([log_record(f"{token} via gzip")], service="cart").SerializeToString())
        r = agent.session.post(relay_logs, data=gz, headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 200, r.text
        body["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"] = "search"
        body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"]["stringValue"] = f"{token} via zstd"
        zs = zstandard.ZstdCompressor().compress(json.dumps(body).encode())
        r = agent.session.post(relay_logs, data=zs, headers={"Content-Type": "application/json", "Content-Encoding": "zstd"}, timeout=10)
        assert r.status_code == 200, r.text
        hits = collector.search_until(lambda h: len(h) >= 4, q=token)
        assert sorted(h["service"] for h in hits) == ["cart", "checkout", "payments", "search"]
        for h in hits:
            assert h["resource"]["k8s.node.name"] == "e2e-node"
        assert agent.metric("periscope_agent_relay_requests_total") == 4
        # Bad input gets a 400, not a crash.
        r = agent.session.post(relay_logs, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 400
        r = agent.session.post(relay_logs, data=b"not gzip", headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 400 and "invalid gzip body" in r.text, r.text
        # A body that expands past the relay's 16 MiB limit: 413.
        bomb = zstandard.ZstdCompressor().compress(b"\0" * (17 << 20))
        r = agent.session.post(relay_logs, data=bomb, headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "zstd"}, timeout=10)
        assert r.status_code == 413, r.text
        assert agent.metric("periscope_agent_relay_requests_total") == 4

        agent.wait_metric("periscope_agent_host_metric_scrapes_total", lambda v: v >= 2)
        deadline = time.monotonic() + 30
        names: list[str] = []
        while time.monotonic() < deadline:
            r = collector.get("/prometheus/api/v1/label/__name__/values")
            names = r.json().get("data", []) if r.status_code == 200 else []
            if any(n.startswith("system_cpu_time") for n in names) and any(n.startswith("system_memory_usage") for n in names):
                break
            time.sleep(0.5)
        assert any(n.startswith("system_cpu_time") for n in names), names
        assert any(n.startswith("system_network_io") for n in names), names
    finally:
        assert agent.stop() == 0, agent.stderr_tail()


def test_config_errors_exit_2_and_check_config(tmp_path) -> None:  # noqa: ANN001
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AGENT_BIN, *args], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})

    ok = run("--check-config", "--node-name", "n")
    assert ok.returncode == 0, ok.stderr
    cfg = tmp_path / "agent.toml"
    cfg.write_text('endpoint = "http://127.0.0.1:1"\nnot_a_key = 1\n')
    bad = run("--config", str(cfg), "--check-config")
    assert bad.returncode == 2
    assert "not_a_key" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    for args in (["--read-from", "middle"], ["--spool-max-bytes", "lots"], ["--k8s-api-url", "ftp://10.0.0.1"]):
        r = run(*args, "--check-config")
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run("--k8s-api-url", "ftp://10.0.0.1", "--check-config")
    assert "k8s_api_url" in r.stderr, r.stderr
    # API-server enrichment is accepted without a cluster at hand: the API
    # server is looked up when the agent runs, never by --check-config.
    r = run("--k8s-api-enrichment", "true", "--check-config")
    assert r.returncode == 0, r.stderr
