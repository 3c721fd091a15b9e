"""Spans that arrive out of order or after their trace was written.

- A child sent before its parent: trace-by-id holds both with the right link,
  and the written summary names the parent as the root.
- A late span: the trace is written (it shows up in search) and then one more
  span of it arrives. Trace-by-id must return every span exactly once, before
  and after the late fragment is written, and after a restart; search must list
  the trace once; the Parquet files must hold each span once.

About "30 s later": what makes a span late is that its trace was already
complete and written when it arrived, not the wall clock. With
`--trace-idle 500ms --trace-flush-interval 1s` the test waits only until search
shows the trace (so it was written), then sends a span whose timestamps are
30 s after the trace's. Waiting 30 real seconds would test nothing more and
cost the suite's time budget.
"""

from __future__ import annotations

import time
from collections import Counter

from conftest import Collector, unique
from otlp_util import MS, new_span_id, new_trace_id, parse_traces_response, span, traces_request
from trace_util import (
    FAST_TRACE_ARGS,
    ids,
    search_traces,
    search_traces_until,
    spans_by_id,
    stored_span_keys,
    wait_trace,
    wait_written,
)


def send(c: Collector, req) -> None:  # noqa: ANN001
    r = c.post_otlp("/v1/traces", req.SerializeToString())
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert parse_traces_response(r.content).partial_success.rejected_spans == 0, r.content


def test_child_before_parent(collectors) -> None:  # noqa: ANN001
    c: Collector = collectors(args=FAST_TRACE_ARGS).start()
    svc = f"late-{unique('svc')}"
    tid, parent, child, grandchild = new_trace_id(), new_span_id(), new_span_id(), new_span_id()
    t0 = time.time_ns() - 2_000_000_000
    # Grandchild first, then child, then the root: each in its own request.
    send(c, traces_request([span(tid, grandchild, "query", t0 + 20 * MS, t0 + 30 * MS, parent_span_id=child, kind="client")], service=svc))
    send(c, traces_request([span(tid, child, "handle", t0 + 10 * MS, t0 + 40 * MS, parent_span_id=parent, kind="internal")], service=svc))
    send(c, traces_request([span(tid, parent, "GET /late", t0, t0 + 50 * MS, kind="server")], service=svc))

    got = spans_by_id(wait_trace(c, tid.hex(), span_ids=[parent.hex(), child.hex(), grandchild.hex()]))
    assert len(got) == 3, got
    assert got[parent.hex()]["parent_span_id"] == ""
    assert got[child.hex()]["parent_span_id"] == parent.hex()
    assert got[grandchild.hex()]["parent_span_id"] == child.hex()

    summary = next(t for t in wait_written(c, [tid.hex()], service=svc) if t["trace_id"] == tid.hex())
    assert (summary["root_service"], summary["root_operation"], summary["span_count"]) == (svc, "GET /late", 3), summary
    assert summary["duration_ns"] == 50 * MS, summary


def test_span_arriving_after_its_trace_was_written(collectors, tmp_path) -> None:  # noqa: ANN001
    data_dir = tmp_path / "data"
    c: Collector = collectors(data_dir=data_dir, args=FAST_TRACE_ARGS).start()
    svc = f"late-{unique('svc')}"
    marker = unique("late")
    tid = new_trace_id()
    root, a, b, late = new_span_id(), new_span_id(), new_span_id(), new_span_id()
    t0 = time.time_ns() - 60_000_000_000
    send(
        c,
        traces_request(
            [
                span(tid, root, "GET /order", t0, t0 + 100 * MS, kind="server"),
                span(tid, a, "load", t0 + 10 * MS, t0 + 40 * MS, parent_span_id=root),
                span(tid, b, "save", t0 + 50 * MS, t0 + 90 * MS, parent_span_id=root),
            ],
            service=svc,
        ),
    )
    wait_written(c, [tid.hex()], service=svc)  # complete and written

    # The late span: 30 s after the trace (an async job reporting back), same trace, parent = root.
    send(
        c,
        traces_request(
            [span(tid, late, "async retry", t0 + 30_000 * MS, t0 + 30_020 * MS, parent_span_id=root, kind="consumer", attrs={"late.marker": marker})],
            service=svc,
        ),
    )
    all_ids = {x.hex() for x in (root, a, b, late)}

    def check_by_id(coll: Collector, when: str) -> None:
        trace = wait_trace(coll, tid.hex(), span_ids=all_ids)
        counts = Counter(s["span_id"] for s in trace["spans"])
        assert set(counts) == all_ids and set(counts.values()) == {1}, f"{when}: spans by id {dict(counts)}, want each of {sorted(all_ids)} once"
        assert spans_by_id(trace)[late.hex()]["parent_span_id"] == root.hex()

    check_by_id(c, "before the late fragment is written")

    # Wait until the late fragment is written too (search only sees written data).
    search_traces_until(c, lambda ts: tid.hex() in ids(ts), tags=f"late.marker={marker}")
    check_by_id(c, "after the late fragment is written")
    listed = ids(search_traces(c, service=svc, limit=100))
    assert listed.count(tid.hex()) == 1, f"search lists the trace {listed.count(tid.hex())} times: {listed}"

    rows, keys = stored_span_keys(data_dir, service=svc)
    assert rows == len(keys) == 4, f"Parquet holds {rows} rows / {len(keys)} distinct spans of the trace, want 4 and 4"

    # After a restart everything is read back from disk (and the WAL replay must not add copies).
    c.stop_ok()
    c2: Collector = collectors(data_dir=data_dir, args=FAST_TRACE_ARGS, name="restarted").start()
    check_by_id(c2, "after a restart")
    # Give a wrongly replayed copy time to be assembled and written (idle 0.5 s + flush 1 s).
    time.sleep(2.5)
    check_by_id(c2, "2.5 s after a restart")
    listed = ids(search_traces(c2, service=svc, limit=100))
    assert listed.count(tid.hex()) == 1, f"after a restart search lists the trace {listed.count(tid.hex())} times"
    rows, keys = stored_span_keys(data_dir, service=svc)
    assert rows == len(keys) == 4, f"after a restart Parquet holds {rows} rows / {len(keys)} distinct spans, want 4 and 4"
