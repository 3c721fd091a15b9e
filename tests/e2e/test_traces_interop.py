"""The trace Parquet files are readable by pyarrow and DuckDB, as written.

Only files listed in `<data-dir>/tenants/<tenant>/traces/manifest.json` are read
(unlisted ones may be in progress). Checked: the layout
(`tenants/<tenant>/traces/<YYYY-MM-DDTHH>/{spans,summaries,edges}-<n>.parquet`), the
spans schema (trace_id FixedSizeBinary(16), span_id FixedSizeBinary(8), times
in ns, ...), every sent span once with the values sent, rows sorted by
trace_id with a working bloom filter on it (DESIGN.md), one summary row per
trace, edge rows for cross-service calls, DuckDB's count equal to the API's,
DuckDB reading trace_id as BLOB whose hex is the API's id, and another
tenant's spans in that tenant's directory only.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import Collector, unique
from otlp_util import MS, merge_traces_requests, new_span_id, new_trace_id, parse_traces_response, span, traces_request
from trace_util import (
    FAST_TRACE_ARGS,
    PARTITION,
    WRITTEN_TIMEOUT_S,
    check_bloom_filter,
    check_spans_file,
    duckdb_span_stats,
    fetch_trace,
    manifest_paths,
    read_manifest,
    stored_span_keys,
    traces_dir,
    wait_written,
)

N_TRACES = 5


def build(u: str, t0: int):  # noqa: ANN201
    """N_TRACES traces of 4 spans over two services (web -> api -> postgresql).

    Returns (trace id hex -> span ids, span id -> facts as sent, request).
    """
    web, api = f"web-{u}", f"api-{u}"
    by_trace: dict[str, list[bytes]] = {}
    facts: dict[bytes, dict] = {}
    web_spans, api_spans = [], []
    for i in range(N_TRACES):
        tid = new_trace_id()
        root, call, srv, db = (new_span_id() for _ in range(4))
        s = t0 + i * 1000 * MS
        rows = [
            (web_spans, web, span(tid, root, "GET /page", s, s + 80 * MS, kind="server")),
            (web_spans, web, span(tid, call, "GET /api", s + 5 * MS, s + 70 * MS, parent_span_id=root, kind="client")),
            (api_spans, api, span(tid, srv, "GET /api", s + 10 * MS, s + 65 * MS, parent_span_id=call, kind="server", status="error" if i == 0 else "unset")),
            (api_spans, api, span(tid, db, "SELECT", s + 20 * MS, s + 40 * MS, parent_span_id=srv, kind="client", attrs={"db.system": "postgresql"})),
        ]
        for bucket, svc, sp in rows:
            bucket.append(sp)
            facts[sp.span_id] = {
                "trace_id": tid, "service": svc, "name": sp.name,
                "start": sp.start_time_unix_nano, "end": sp.end_time_unix_nano, "parent": sp.parent_span_id,
            }
        by_trace[tid.hex()] = [root, call, srv, db]
    req = merge_traces_requests(traces_request(web_spans, service=web), traces_request(api_spans, service=api))
    return by_trace, facts, req


def test_parquet_files_are_readable_by_pyarrow_and_duckdb(collectors, tmp_path) -> None:  # noqa: ANN001
    data_dir = tmp_path / "data"
    c: Collector = collectors(data_dir=data_dir, args=FAST_TRACE_ARGS).start()
    u = unique("")[:10]
    t0 = time.time_ns() - 30_000_000_000
    by_trace, facts, req = build(u, t0)
    r = c.post_otlp("/v1/traces", req.SerializeToString())
    assert r.status_code == 200 and parse_traces_response(r.content).partial_success.rejected_spans == 0, r.content
    other_tid, other_sid = new_trace_id(), new_span_id()
    r = c.post_otlp(
        "/v1/traces",
        traces_request([span(other_tid, other_sid, "other", t0, t0 + MS)], service=f"other-{u}").SerializeToString(),
        headers={"X-Scope-OrgID": "team-x"},
    )
    assert r.status_code == 200, r.text

    wait_written(c, by_trace, service=f"web-{u}")
    # Search reads summaries; also wait until the manifest lists every span.
    want_keys = {(f["trace_id"].hex(), sid.hex()) for sid, f in facts.items()}
    deadline = time.monotonic() + WRITTEN_TIMEOUT_S
    while not want_keys <= stored_span_keys(data_dir)[1]:
        assert time.monotonic() < deadline, "the manifest-listed spans files still lack some spans"
        time.sleep(0.25)

    # The API's view first, while the collector runs.
    api_spans, api_ids = 0, set()
    for tid in by_trace:
        trace = fetch_trace(c, tid)
        assert trace is not None, f"trace {tid} not found by id"
        api_spans += len(trace["spans"])
        api_ids.add(trace["trace_id"])
    # Then read the files at rest: SIGTERM writes whatever is pending, and no
    # compaction can replace files under the readers.
    c.stop_ok()

    # ----- layout ---------------------------------------------------------------------------
    manifest = read_manifest(data_dir)  # schema-checked
    assert manifest["files"], "empty manifest"
    base = traces_dir(data_dir)
    for entry in manifest["files"]:
        assert PARTITION.match(entry["partition"]), entry
        for kind in ("spans", "summaries", "edges"):
            if entry.get(kind):
                p = base / entry["partition"] / entry[kind]
                assert p.is_file(), f"the manifest lists {p}, which does not exist"
    spans_paths = manifest_paths(data_dir, kind="spans")

    # ----- pyarrow: schema, values, order; bloom filter -------------------------------------
    seen: dict[bytes, dict] = {}
    for p in spans_paths:
        rows = check_spans_file(p, facts)
        dup = set(rows) & set(seen)
        assert not dup, f"spans {[d.hex() for d in dup]} are in more than one file"
        seen.update(rows)
        check_bloom_filter(p, "trace_id")
    assert set(seen) == set(facts), f"{len(set(facts) - set(seen))} spans missing from the listed files"

    summary_ids: list[bytes] = []
    for p in manifest_paths(data_dir, kind="summaries"):
        t = pq.read_table(p)
        assert "trace_id" in t.schema.names and t.schema.field("trace_id").type == pa.binary(16), f"{p}: {t.schema}"
        summary_ids += [x for x in t.column("trace_id").to_pylist() if x.hex() in by_trace]
    assert sorted(summary_ids) == sorted(bytes.fromhex(x) for x in by_trace), f"want one summary row per trace: {[x.hex() for x in summary_ids]}"
    edge_rows = sum(pq.read_table(p).num_rows for p in manifest_paths(data_dir, kind="edges"))
    assert edge_rows > 0, "no edge rows although every trace has a web -> api call"

    # ----- DuckDB agrees with the API --------------------------------------------------------
    stats = duckdb_span_stats(spans_paths, [bytes.fromhex(t) for t in by_trace], f"web-{u}")
    assert stats["count"] == api_spans == 4 * N_TRACES, f"DuckDB counts {stats['count']} spans, the API returned {api_spans}"
    assert stats["trace_id_type"] == "BLOB", f"DuckDB reads trace_id as {stats['trace_id_type']}"
    assert stats["hex_ids"] == api_ids, f"hex(trace_id) {sorted(stats['hex_ids'])} != API ids {sorted(api_ids)}"
    assert stats["duplicates"] == 0, f"{stats['duplicates']} duplicate span rows"

    # ----- the other tenant ------------------------------------------------------------------
    assert stored_span_keys(data_dir, "team-x")[1] == {(other_tid.hex(), other_sid.hex())}, "team-x's files"
    assert (other_tid.hex(), other_sid.hex()) not in stored_span_keys(data_dir)[1], "team-x's span is in the default tenant's files"
