"""`periscope demo`: the collector plus its simulated shop.

One run of the real binary on free ports and a temporary data dir: the
shop's traffic must arrive through the collector's own OTLP receiver and be
visible through the query API as a newcomer would see it in the UI: the five
services, the service map with its edges and database nodes, error traces,
the logs of a trace, and request counters in PromQL. SIGTERM stops it all
with exit code 0.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import PERISCOPE_BIN, Collector

SERVICES = ["frontend", "cart", "checkout", "payment", "shipping"]
# Spans become complete after --trace-idle (5 s) and are written every
# --trace-flush-interval (10 s): the map fills within ~20 s of the first request.
DEADLINE_S = 60.0


class Demo(Collector):
    """`periscope demo` with the same flags `serve` gets in the fixtures;
    `binary` runs another copy of the binary."""

    binary: str | None = None

    def command(self) -> list[str]:
        cmd = super().command()
        assert cmd[1] == "serve"
        return [self.binary or cmd[0], "demo", *cmd[2:]]


@pytest.fixture
def demos(tmp_path: Path):  # noqa: ANN201
    """A factory of `Demo`s on `tmp_path/<name>`; leftovers are killed."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    made: list[Demo] = []

    def make(*args: str, name: str = "demo") -> Demo:
        d = Demo(tmp_path / name, log_dir, args=["--demo-rate", "15", "--demo-seed", "42", *args], name=name)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            if d.running():
                print(f"\n----- stderr of {d.command()} (tail) -----\n{d.stderr_tail(60)}")
                d.kill()


@pytest.fixture
def demo(demos) -> Demo:  # noqa: ANN001
    return demos()


def poll(what: str, deadline: float, fn: Callable[[], Any]) -> Any:
    """Calls `fn` until it returns something truthy; fails at `deadline` (monotonic)."""
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within the deadline; last answer: {str(last)[:1500]}")
        time.sleep(0.5)


def test_demo_fills_every_view_and_stops_cleanly(demo: Demo) -> None:
    started = time.monotonic()
    demo.start()
    deadline = started + DEADLINE_S

    # The UI address is printed for the person who ran it.
    http_port = demo.listening["http"].rsplit(":", 1)[1]
    url_line = poll(
        "UI URL on stdout",
        started + 15,
        lambda: next((line for line in demo.stdout_lines[1:] if re.search(rf"http://127\.0\.0\.1:{http_port}/", line)), None),
    )
    assert "demo" in url_line.lower()

    demo.wait_services(SERVICES, timeout=max(1.0, deadline - time.monotonic()))

    # The service map: calls between services, and the databases and the
    # payment provider as virtual nodes.
    want_edges = {("frontend", "cart"), ("frontend", "checkout"), ("checkout", "payment"), ("checkout", "shipping"),
                  ("frontend", "postgresql"), ("cart", "redis"), ("checkout", "postgresql")}

    def service_map() -> dict[str, Any] | None:
        r = demo.get("/api/v1/service-map")
        assert r.status_code == 200, r.text[:500]
        m = r.json()
        edges = {(e["source"], e["target"]) for e in m["edges"]}
        return m if want_edges <= edges else None

    m = poll("service map edges", deadline, service_map)
    kinds = {n["id"]: n["kind"] for n in m["nodes"]}
    assert kinds.get("postgresql") == "database", kinds
    assert kinds.get("redis") == "database", kinds
    for svc in SERVICES:
        assert kinds.get(svc) == "service", kinds
    assert all(e["requests"] > 0 for e in m["edges"]), m["edges"]

    # Error traces are found, and open with their spans.
    # (A declined card is an error of the payment client span under a 402;
    # a 5xx answer is an error all the way up.)
    def failed_traces() -> list[dict[str, Any]]:
        r = demo.get("/api/v1/traces", params={"status": "error", "limit": 100})
        assert r.status_code == 200, r.text[:500]
        errors = r.json()["traces"]
        assert all(t["error_count"] > 0 for t in errors), errors[:3]
        assert all(t["root_service"] == "frontend" for t in errors), errors[:3]
        return [t for t in errors if (t["http_status_code"] or 0) >= 500]

    failed = poll("traces answered with 5xx", deadline, failed_traces)
    trace = max(failed, key=lambda t: t["span_count"])
    r = demo.get(f"/api/v1/traces/{trace['trace_id']}")
    assert r.status_code == 200, r.text[:500]
    spans = r.json()["spans"]
    assert len(spans) == trace["span_count"]
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s["parent_span_id"]]
    assert len(roots) == 1 and roots[0]["service"] == "frontend", roots
    assert all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"]), "a parent is missing"
    assert any(s["status"]["code"] == "error" for s in spans), [s["status"] for s in spans]

    # The logs of that trace.
    hits = demo.search_until(lambda h: len(h) > 0, timeout=max(1.0, deadline - time.monotonic()), trace_id=trace["trace_id"])
    assert all(h["trace_id"] == trace["trace_id"] for h in hits), hits[:3]
    assert {h["span_id"] for h in hits} <= ids, "a log points at a span outside its trace"
    assert any(h["severity_text"] == "ERROR" for h in hits), [h["body"] for h in hits]

    # Request counters per service in PromQL.
    def counters() -> set[str] | None:
        r = demo.get("/prometheus/api/v1/query", params={"query": "sum by (job) (http_server_requests_total)"})
        assert r.status_code == 200, r.text[:500]
        body = r.json()
        assert body["status"] == "success", body
        jobs = {s["metric"].get("job") for s in body["data"]["result"] if float(s["value"][1]) > 0}
        return jobs if set(SERVICES) <= jobs else None

    poll("request counters of every service", deadline, counters)
    r = demo.get(
        "/prometheus/api/v1/query",
        params={"query": 'sum by (le) (http_server_request_duration_seconds_bucket{job="frontend"})'},
    )
    assert r.status_code == 200 and r.json()["data"]["result"], r.text[:500]

    assert time.monotonic() - started < DEADLINE_S + 5
    demo.stop_ok()


AGENT_BIN = Path(PERISCOPE_BIN).with_name("periscope-agent")


@pytest.mark.skipif(not AGENT_BIN.exists(), reason=f"{AGENT_BIN} is not built (cargo build -p periscope-agent)")
def test_with_agent_ships_the_pods_container_logs(demos) -> None:  # noqa: ANN001
    started = time.monotonic()
    d = demos("--with-agent").start()
    pods = d.data_dir / "demo" / "pods"
    def all_pods() -> list[Path] | None:
        # Pods start one after another: wait for every service's file.
        files = sorted(pods.glob("shop_*/*/0.log"))
        return files if {f.parent.name for f in files} == set(SERVICES) else None

    files = poll("a log file for every pod", started + 15, all_pods)
    assert {f.parent.name for f in files} == set(SERVICES), files
    first = poll("a CRI line", started + 15, lambda: next((f.read_text().splitlines()[:1] for f in files if f.stat().st_size), None))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) F level=", first[0]), first

    # Only the container lines (logfmt) say `level=`: the OTLP log bodies do not.
    hits = d.search_until(lambda h: len(h) > 0, timeout=max(1.0, started + DEADLINE_S - time.monotonic()), q="level")
    for h in hits:
        assert h["body"].startswith("level="), h
        assert h["resource"].get("k8s.namespace.name") == "shop", h["resource"]
        assert h["resource"].get("k8s.container.name") in SERVICES, h["resource"]
    assert d.running()
    for problem in ("periscope-agent exited", "periscope-agent not found", "failed to start"):
        assert problem not in d.stderr_text(), d.stderr_tail()
    d.stop_ok()


def test_with_agent_missing_the_demo_goes_on(demos, tmp_path: Path) -> None:  # noqa: ANN001
    lonely = tmp_path / "bin" / "periscope"
    lonely.parent.mkdir()
    try:
        os.link(PERISCOPE_BIN, lonely)
    except OSError:
        shutil.copy2(PERISCOPE_BIN, lonely)
    d = demos("--with-agent", name="lonely")
    d.binary = str(lonely)
    started = time.monotonic()
    d.start()
    poll("the missing agent reported", started + 15, lambda: "periscope-agent not found" in d.stderr_text())
    d.wait_services(SERVICES, timeout=DEADLINE_S)
    d.stop_ok()
