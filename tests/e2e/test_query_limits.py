"""Query limits against the real binary: hostile queries are refused with a
4xx naming the limit's flag and the collector stays up; a query past its
timeout is stopped and answered 503; a query beyond the concurrency limit
gets 429 with Retry-After at once.

One collector serves the module, with `--query-max-concurrent 1` so that a
single slow query fills it, and a short `--query-timeout`.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
import requests
from conftest import Collector, http_session

QUERY_TIMEOUT_S = 5
# Nested subqueries at 10,000 steps: 600 × 600 evaluations per step, far
# past the timeout.
SLOW_PATH = "/prometheus/api/v1/query_range"
SLOW_PARAMS = {
    "query": "count_over_time(count_over_time(vector(1)[10m:1s])[10m:1s])",
    "start": "1700000000",
    "end": "1700010000",
    "step": "1s",
}


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    tmp = tmp_path_factory.mktemp("query-limits")
    (tmp / "logs").mkdir()
    col = Collector(
        tmp / "data",
        tmp / "logs",
        args=[
            "--query-max-concurrent",
            "1",
            "--query-max-concurrent-per-tenant",
            "1",
            "--query-timeout",
            f"{QUERY_TIMEOUT_S}s",
        ],
    ).start()
    yield col
    try:
        assert col.stop() == 0, col.stderr_tail()
    finally:
        col.kill()


def assert_up(c: Collector) -> None:
    assert c.running(), c.stderr_tail()
    assert c.get("/healthz").status_code == 200
    r = c.get("/prometheus/api/v1/query", params={"query": "1"})
    assert r.status_code == 200, r.text


def error_text(r: requests.Response) -> str:
    body = r.json()
    if "error" in body:
        return str(body["error"])
    return str(body.get("errors"))


def wait_idle(c: Collector, timeout: float = 30) -> None:
    """Until no query runs (a stopped query frees its slot at its next check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.metric_sum("periscope_query_running") == 0:
            return
        time.sleep(0.05)
    pytest.fail("a query still runs")


DEEP_LOG = "(" * 3000 + "a" + ")" * 3000
DEEP_PROMQL = "(" * 50_000 + "1" + ")" * 50_000


@pytest.mark.parametrize(
    "method,path,params,status,flag",
    [
        ("GET", "/api/v1/logs/search", {"q": DEEP_LOG}, 400, "--query-max-depth"),
        ("GET", "/api/v1/logs/search", {"q": "NOT " * 1000 + "a"}, 400, "--query-max-depth"),
        ("GET", "/api/v1/logs/histogram", {"q": DEEP_LOG}, 400, "--query-max-depth"),
        ("POST", "/prometheus/api/v1/query", {"query": DEEP_PROMQL}, 400, "--query-max-length"),
        ("POST", "/prometheus/api/v1/query", {"query": "(" * 5000 + "1" + ")" * 5000}, 400, "--query-max-depth"),
        ("POST", "/prometheus/api/v1/query", {"query": "-" * 20_000 + "1"}, 400, "--query-max-depth"),
        ("POST", "/prometheus/api/v1/query", {"query": "+".join(["1"] * 20_000)}, 400, "--query-max-depth"),
        ("GET", "/api/v1/traces", {"tags": "a=~" + "(" * 300 + "x" + ")" * 300}, 400, "--query-max-depth"),
        ("GET", "/jaeger/api/traces", {"service": "x", "tags": '{"k":"' + "[" * 300 + '"}'}, 400, "--query-max-depth"),
    ],
)
def test_deep_and_long_queries_are_refused_and_the_server_stays_up(
    c: Collector, method: str, path: str, params: dict[str, str], status: int, flag: str
) -> None:
    s = http_session()
    if method == "POST":
        r = s.post(c.http_url(path), data=params, timeout=30)
    else:
        r = s.get(c.http_url(path), params=params, timeout=30)
    assert r.status_code == status, r.text[:300]
    assert flag in error_text(r), r.text[:300]
    if path.startswith("/prometheus"):
        assert r.json()["errorType"] == "bad_data"
    assert_up(c)


@pytest.mark.parametrize(
    "path,params,status,words",
    [
        # L1: a step below 1 ms divided by zero.
        ("/prometheus/api/v1/query_range", {"query": "1", "start": "1700000000", "end": "1700000060", "step": "0.0001"}, 400, "minimum of 1ms"),
        # H5: a step that wrapped the chunk loop until memory ran out.
        ("/prometheus/api/v1/query_range", {"query": "1", "start": "1700000000", "end": "1700003600", "step": "9999999999y"}, 400, "too large"),
        # H6: a subquery of 315 billion steps.
        ("/prometheus/api/v1/query", {"query": "count_over_time(vector(1)[10y:1ms])"}, 400, "points per series"),
        # L2: a cursor older than the start panicked.
        ("/api/v1/logs/search", {"cursor": "0.0"}, 200, ""),
        # L3: a histogram over an extreme range overflowed.
        ("/api/v1/logs/histogram", {"start": "-9200000000", "end": "9200000000"}, 200, ""),
        ("/api/v1/logs/search", {"limit": "100000"}, 400, "limit"),
    ],
)
def test_hostile_parameters_get_a_4xx_not_a_crash(
    c: Collector, path: str, params: dict[str, str], status: int, words: str
) -> None:
    r = c.get(path, params=params)
    assert r.status_code == status, r.text[:300]
    assert words in r.text
    assert_up(c)


def test_a_query_past_its_timeout_is_stopped_and_answered_503(c: Collector) -> None:
    wait_idle(c)
    before = c.metric_sum("periscope_query_timeouts_total")
    r = c.get(SLOW_PATH, params={**SLOW_PARAMS, "timeout": "1s"}, timeout=60)
    assert r.status_code == 503, r.text[:300]
    assert r.json()["errorType"] == "timeout"
    # The work stopped too: the slot is free again.
    wait_idle(c)
    assert c.metric_sum("periscope_query_timeouts_total") > before
    assert_up(c)


def test_a_query_beyond_the_concurrency_limit_gets_429_at_once(c: Collector) -> None:
    wait_idle(c)
    slow: dict[str, requests.Response] = {}

    def run_slow() -> None:
        slow["r"] = http_session().get(c.http_url(SLOW_PATH), params=SLOW_PARAMS, timeout=60)

    t = threading.Thread(target=run_slow, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while c.metric_sum("periscope_query_running") < 1:
        assert time.monotonic() < deadline, "the slow query never started"
        time.sleep(0.02)
    for path, params in [
        ("/prometheus/api/v1/query", {"query": "1"}),
        ("/api/v1/logs/search", {"q": "a"}),
        ("/api/v1/traces", {}),
    ]:
        r = c.get(path, params=params)
        assert r.status_code == 429, r.text[:300]
        assert "Retry-After" in r.headers
        assert "--query-max-concurrent" in error_text(r)
    assert c.metric_sum("periscope_query_rejected_busy_total") >= 3
    # Ingest is not queued behind queries.
    assert c.get("/healthz").status_code == 200
    t.join(timeout=QUERY_TIMEOUT_S + 30)
    assert slow["r"].status_code == 503, slow["r"].text[:300]
    wait_idle(c)
    assert_up(c)
