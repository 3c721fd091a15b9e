"""Trace search: order, limit, time range, operation, status and duration filters.

30 traces of one service start 2 s apart (trace i at base + 2i s + 100 ms) and
last 50.5 + i ms. They are sent in a shuffled order over six requests spread
across a few flushes, so search has to merge several files and still answer
newest first by trace start. Time windows and duration bounds fall between
traces, so inclusive/exclusive bounds and "starts in" vs "overlaps" readings of
a window give the same answer.
"""

from __future__ import annotations

import random
import time

import pytest
from conftest import Collector, unique
from otlp_util import MS, new_span_id, new_trace_id, parse_traces_response, span, traces_request
from trace_util import FAST_TRACE_ARGS, ids, rfc3339_ns, search_traces, search_traces_until

N = 30
GAP_S = 2
ERROR_EVERY = 5  # traces 0, 5, 10, ... have a failing child


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One collector with the 30 traces written; yields (collector, service, base seconds, trace ids by i)."""
    base_dir = tmp_path_factory.mktemp("trace-search")
    c = Collector(base_dir / "data", base_dir, args=FAST_TRACE_ARGS)
    c.start()
    try:
        svc = f"search-{unique('svc')}"
        base = int(time.time()) - 120
        traces = []
        for i in range(N):
            tid, root, child = new_trace_id(), new_span_id(), new_span_id()
            start = base * 1_000_000_000 + i * GAP_S * 1_000_000_000 + 100 * MS
            dur = 50 * MS + i * MS + MS // 2
            spans = [
                span(tid, root, "op-odd" if i % 2 else "op-even", start, start + dur, kind="server", attrs={"i": i}),
                span(
                    tid, child, "work", start + 1 * MS, start + 10 * MS, parent_span_id=root,
                    status="error" if i % ERROR_EVERY == 0 else "ok",
                ),
            ]
            traces.append((i, tid.hex(), spans))
        order = list(range(N))
        random.Random(7).shuffle(order)
        for chunk in range(6):
            batch = [s for i in order[chunk * 5 : chunk * 5 + 5] for s in traces[i][2]]
            r = c.post_otlp("/v1/traces", traces_request(batch, service=svc).SerializeToString())
            assert r.status_code == 200, r.text
            assert parse_traces_response(r.content).partial_success.rejected_spans == 0, r.content
            time.sleep(0.7)  # spread the traces over several flushes (idle 0.5 s, flush 1 s)
        by_i = {i: tid for i, tid, _ in traces}
        search_traces_until(c, lambda ts: len(ts) >= N, service=svc, limit=100)
        yield c, svc, base, by_i
    finally:
        try:
            if c.running():
                rc = c.stop()
                assert rc == 0, f"collector exited with {rc} after SIGTERM; stderr:\n{c.stderr_tail()}"
        finally:
            c.kill()


def expect(by_i: dict[int, str], indices) -> list[str]:  # noqa: ANN001
    """Trace ids of `indices`, newest first."""
    return [by_i[i] for i in sorted(indices, reverse=True)]


def test_all_newest_first_with_exact_summaries(sent) -> None:  # noqa: ANN001
    c, svc, base, by_i = sent
    traces = search_traces(c, service=svc, limit=100)
    assert ids(traces) == expect(by_i, range(N)), "search is not the 30 traces newest first"
    starts = [rfc3339_ns(t["start_time"]) for t in traces]
    assert starts == sorted(starts, reverse=True)
    index = {tid: i for i, tid in by_i.items()}
    for t in traces:
        i = index[t["trace_id"]]
        assert rfc3339_ns(t["start_time"]) == base * 1_000_000_000 + i * GAP_S * 1_000_000_000 + 100 * MS, t
        assert t["duration_ns"] == 50 * MS + i * MS + MS // 2, t
        assert (t["root_service"], t["root_operation"], t["span_count"], t["services"]) == (svc, "op-odd" if i % 2 else "op-even", 2, [svc]), t
        assert t["error_count"] == (1 if i % ERROR_EVERY == 0 else 0), t


def test_limit_returns_the_newest(sent) -> None:  # noqa: ANN001
    c, svc, _, by_i = sent
    assert ids(search_traces(c, service=svc, limit=5)) == expect(by_i, range(25, 30))
    assert ids(search_traces(c, service=svc, limit=1)) == expect(by_i, [29])


def test_time_range(sent) -> None:  # noqa: ANN001
    c, svc, base, by_i = sent
    # [base+20 s, base+30 s] holds the starts of traces 10..14 (each at +2i s + 100 ms, < 80 ms long).
    assert ids(search_traces(c, service=svc, start=base + 20, end=base + 30, limit=100)) == expect(by_i, range(10, 15))
    assert ids(search_traces(c, service=svc, start=base + 20, end=base + 30, limit=2)) == expect(by_i, [14, 13])
    # RFC 3339 works as well as Unix seconds.
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 51))
    assert ids(search_traces(c, service=svc, start=start, limit=100)) == expect(by_i, range(26, 30))
    assert search_traces(c, service=svc, start=base - 3600, end=base - 60) == []


def test_operation_status_and_duration_filters(sent) -> None:  # noqa: ANN001
    c, svc, _, by_i = sent
    odd = [i for i in range(N) if i % 2]
    assert ids(search_traces(c, service=svc, operation="op-odd", limit=100)) == expect(by_i, odd)
    assert ids(search_traces(c, service=svc, operation="op-odd", limit=3)) == expect(by_i, odd[-3:])
    assert ids(search_traces(c, service=svc, operation="work", limit=100)) == expect(by_i, range(N)), "operation matches non-root spans too"
    assert search_traces(c, service=svc, operation="no-such-op") == []

    errors = [i for i in range(N) if i % ERROR_EVERY == 0]
    assert ids(search_traces(c, service=svc, status="error", limit=100)) == expect(by_i, errors)
    assert ids(search_traces(c, service=svc, status="ok", limit=100)) == expect(by_i, set(range(N)) - set(errors))

    # Trace i lasts 50.5 + i ms.
    assert ids(search_traces(c, service=svc, min_duration="70ms", limit=100)) == expect(by_i, range(20, 30))
    assert ids(search_traces(c, service=svc, max_duration="55ms", limit=100)) == expect(by_i, range(0, 5))
    assert ids(search_traces(c, service=svc, min_duration="60ms", max_duration="65ms", limit=100)) == expect(by_i, range(10, 15))
    # Together with other filters and the limit.
    assert ids(search_traces(c, service=svc, operation="op-even", status="error", min_duration="55ms", limit=100)) == expect(by_i, [10, 20])
    assert ids(search_traces(c, service=svc, min_duration="70ms", limit=2)) == expect(by_i, [29, 28])


def test_unknown_service_and_bad_parameters(sent) -> None:  # noqa: ANN001
    c, svc, _, _ = sent
    assert search_traces(c, service=svc + "-nope") == []
    for bad in ({"min_duration": "fast"}, {"status": "maybe"}, {"start": "yesterday"}, {"limit": "-1"}, {"tags": "a=~("}):
        r = c.get("/api/v1/traces", params={"service": svc, **bad})
        assert r.status_code == 400, f"{bad} -> {r.status_code}: {r.text[:300]}"
        assert r.json().get("error"), r.text
