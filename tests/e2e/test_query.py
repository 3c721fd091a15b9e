"""The log query API over real ingested data: query syntax, filters, time
ranges, paging, histogram and errors."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from conftest import Collector, unique
from opentelemetry.proto.logs.v1 import logs_pb2
from otlp_util import log_record, logs_request

SEC = 10**9


def send(c: Collector, records, service: str = "query-test", resource_attrs=None, tenant: str | None = None) -> None:
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    r = c.post_otlp("/v1/logs", logs_request(records, service=service, resource_attrs=resource_attrs).SerializeToString(), headers=headers)
    assert r.status_code == 200, f"{r.status_code}: {r.content[:300]!r}"


def bodies(hits) -> set[str]:
    return {h["body"] for h in hits}


def rfc3339(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / SEC, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_ns(ts: str) -> int:
    """RFC 3339 (UTC, optional fraction up to ns) to Unix ns."""
    assert ts.endswith("Z") or ts.endswith("+00:00"), f"not UTC RFC 3339: {ts}"
    core = ts[:-1] if ts.endswith("Z") else ts[: -len("+00:00")]
    whole, _, frac = core.partition(".")
    secs = dt.datetime.fromisoformat(whole + "+00:00").timestamp()
    return int(secs) * SEC + int((frac or "0").ljust(9, "0")[:9])


def test_query_syntax(collector: Collector) -> None:
    c = collector
    run = unique("q")
    p = unique("pfx")
    ns = unique("ns")
    svc = f"query-{unique('svc')}"
    texts = {
        "fox": f"{run} the quick brown fox {p}alpha",
        "rev": f"{run} brown quick dog {p}beta",
        "err": f"{run} payment error timeout",
        "ok": f"{run} payment succeeded",
    }
    records = [
        log_record(texts["fox"], attrs={"http.status_code": 500, "user": "alice"}, severity_number=logs_pb2.SEVERITY_NUMBER_ERROR, severity_text="ERROR"),
        log_record(texts["rev"], attrs={"http.status_code": 200, "user": "bob"}),
        log_record(texts["err"], attrs={"http.status_code": 503}, severity_number=logs_pb2.SEVERITY_NUMBER_WARN, severity_text="WARN"),
        log_record(texts["ok"], attrs={"http.status_code": 200}, severity_number=logs_pb2.SEVERITY_NUMBER_DEBUG, severity_text="DEBUG"),
    ]
    send(c, records, service=svc, resource_attrs={"k8s.namespace.name": ns})
    c.search_until(lambda h: len(h) == 4, q=run)

    cases = [
        (f'"quick brown" AND {run}', {"fox"}),
        (f"{run} AND payment AND NOT error", {"ok"}),
        (f'{run} AND NOT "quick brown"', {"rev", "err", "ok"}),
        (f"NOT payment AND {run}", {"fox", "rev"}),
        (f"{run} AND (error OR fox)", {"err", "fox"}),
        (f"{run} AND service:{svc}", set(texts)),
        (f"{run} AND service:other-{svc}", set()),
        (f"attributes.http.status_code:200 AND {run}", {"rev", "ok"}),
        (f"attributes.user:alice AND {run}", {"fox"}),
        (f"resource.k8s.namespace.name:{ns}", set(texts)),
        (f"{p}*", {"fox", "rev"}),
        (f"body:/{p}al.*/", {"fox"}),
    ]
    failures = []
    for q, want in cases:
        r = c.get("/api/v1/logs/search", params={"q": q, "start": int(time.time()) - 3600, "end": int(time.time()) + 60})
        if r.status_code != 200:
            failures.append(f"{q!r} -> {r.status_code}: {r.text[:200]}")
            continue
        got = bodies(r.json()["hits"])
        if got != {texts[k] for k in want}:
            failures.append(f"{q!r} -> {sorted(got)}, want {sorted(texts[k] for k in want)}")
    assert not failures, "\n".join(failures)

    # Severity is a minimum level.
    for sev, want in [("TRACE", set(texts)), ("INFO", {"fox", "rev", "err"}), ("WARN", {"fox", "err"}), ("ERROR", {"fox"}), ("FATAL", set())]:
        got = bodies(c.search(q=run, severity=sev)["hits"])
        assert got == {texts[k] for k in want}, f"severity={sev}: {sorted(got)}"


def test_time_range_and_default_window(collector: Collector) -> None:
    c = collector
    run = unique("tr")
    now = time.time_ns()
    send(c, [log_record(f"{run} recent", time_ns=now - 10 * 60 * SEC), log_record(f"{run} old", time_ns=now - 3 * 3600 * SEC)])
    c.search_until(lambda h: len(h) == 2, q=run)

    # No start/end: the last hour.
    r = c.get("/api/v1/logs/search", params={"q": run})
    assert r.status_code == 200, r.text
    assert bodies(r.json()["hits"]) == {f"{run} recent"}, r.json()

    # RFC 3339 bounds select the old one only.
    params = {"q": run, "start": rfc3339(now - 4 * 3600 * SEC), "end": rfc3339(now - 2 * 3600 * SEC)}
    r = c.get("/api/v1/logs/search", params=params)
    assert r.status_code == 200, f"{params} -> {r.status_code}: {r.text}"
    hits = r.json()["hits"]
    assert bodies(hits) == {f"{run} old"}, hits
    # Timestamps come back as RFC 3339 with nanoseconds, and parse back to the sent instant.
    ts = hits[0]["timestamp"]
    assert parse_ns(ts) == now - 3 * 3600 * SEC, f"{ts} != {now - 3 * 3600 * SEC} ns"


def test_paging_with_cursor_newest_first(collector: Collector) -> None:
    c = collector
    run = unique("pg")
    base = time.time_ns() - 60 * SEC
    # Two records share a timestamp: paging must still neither skip nor repeat.
    stamps = [base + i * SEC for i in range(24)] + [base + 23 * SEC]
    send(c, [log_record(f"{run} n{i}", attrs={"i": i}, time_ns=t) for i, t in enumerate(stamps)])
    c.search_until(lambda h: len(h) == 25, q=run, limit=100)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = c.search(q=run, limit=10, cursor=cursor)
        pages += 1
        seen += [h["body"] for h in page["hits"]]
        ts = [h["timestamp"] for h in page["hits"]]
        assert ts == sorted(ts, reverse=True), ts
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert pages < 10
    assert len(seen) == 25 and len(set(seen)) == 25, f"{len(seen)} hits, {len(set(seen))} distinct"
    assert pages == 3
    assert seen[-1] == f"{run} n0", seen


def test_default_and_maximum_limit(collector: Collector) -> None:
    c = collector
    run = unique("lim")
    base = time.time_ns() - 120 * SEC
    send(c, [log_record(f"{run} r{i}", time_ns=base + i * 1000) for i in range(150)])
    c.search_until(lambda h: len(h) == 150, q=run, limit=1000)
    page = c.search(q=run)
    assert len(page["hits"]) == 100, f"default limit: {len(page['hits'])} hits"
    assert page["next_cursor"], "100 of 150 hits but no next_cursor"
    rest = c.search(q=run, cursor=page["next_cursor"])
    assert len(rest["hits"]) == 50 and not rest["next_cursor"], (len(rest["hits"]), rest["next_cursor"])


def test_searchable_within_seconds_of_ack(collector: Collector) -> None:
    """The design promises ~2 s; allow 5 s for a debug build on a busy machine."""
    c = collector
    delays = []
    for _ in range(3):
        tok = unique("fresh")
        send(c, [log_record(f"fresh {tok}")])
        t0 = time.monotonic()
        c.search_until(lambda h: len(h) == 1, timeout=30, q=tok)
        delays.append(time.monotonic() - t0)
    assert max(delays) < 5, f"seconds from ack to searchable: {delays}"


def test_histogram_counts(collector: Collector) -> None:
    c = collector
    run = unique("hg")
    minute = 60 * SEC
    start = (time.time_ns() // minute - 10) * minute
    counts = {0: 2, 3: 1, 5: 4}
    records = [log_record(f"{run} m{m}", time_ns=start + m * minute + k * SEC) for m, n in counts.items() for k in range(n)]
    send(c, records)
    c.search_until(lambda h: len(h) == 7, q=run)
    params = {"q": run, "start": start // SEC, "end": start // SEC + 600, "step": "60s"}
    r = c.get("/api/v1/logs/histogram", params=params)
    assert r.status_code == 200, r.text
    buckets = r.json()["buckets"]
    got = {parse_ns(b["start"]): b["count"] for b in buckets if b["count"]}
    want = {start + m * minute: n for m, n in counts.items()}
    assert got == want, f"buckets {buckets}"
    assert sum(b["count"] for b in buckets) == 7


BAD_QUERIES = [
    {"q": "AND ("},
    {"q": "body:/[/"},
    {"q": 'payment "unclosed'},
    {"start": "yesterday"},
    {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    {"severity": "LOUD"},
    {"limit": "0"},
    {"limit": "many"},
    {"trace_id": "xyz"},
    {"cursor": "not-a-cursor"},
]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("query")
    c = Collector(base / "data", base).start()
    try:
        tok = unique("pop")
        send(c, [log_record(f"{tok} payment error")])
        c.search_until(lambda h: len(h) == 1, q=tok)
        yield c
        rc = c.stop()
        assert rc == 0, f"exit {rc}; stderr:\n{c.stderr_tail()}"
    finally:
        c.kill()


@pytest.mark.parametrize("params", BAD_QUERIES)
def test_bad_queries_400(populated: Collector, params: dict) -> None:
    r = populated.get("/api/v1/logs/search", params=params)
    assert r.status_code == 400, f"{params} -> {r.status_code}: {r.text[:300]}"
    err = r.json().get("error")
    assert isinstance(err, str) and err, r.text
    if "q" in params:
        r = populated.get("/api/v1/logs/histogram", params=params)
        assert r.status_code == 400, f"histogram {params} -> {r.status_code}: {r.text[:300]}"


@pytest.mark.parametrize("q", ["AND (", "body:/[/"])
def test_bad_query_400_even_when_nothing_is_stored(collector: Collector, q: str) -> None:
    """A syntax error is the query's fault whatever the data: it must not depend on partitions existing."""
    r = collector.get("/api/v1/logs/search", params={"q": q})
    assert r.status_code == 400, f"q={q!r} on an empty store -> {r.status_code}: {r.text[:300]}"


def test_health_endpoints(collector: Collector) -> None:
    assert collector.get("/healthz").status_code == 200
    assert collector.get("/readyz").status_code == 200
    r = collector.get("/metrics")
    assert r.status_code == 200 and "periscope_received_records_total" in r.text, r.text[:1000]
