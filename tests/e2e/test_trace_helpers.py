"""Self-tests of the trace test helpers; they need no collector.

They keep the specifications the end-to-end tests hold the collector to honest:
the golden Jaeger file must follow from the OTLP request the golden test sends
(through a small reference translation with Jaeger's conventions) and pass the
Jaeger schemas; the schemas must accept the documented shapes and reject wrong
ones; the Parquet checks must pass on a store written by pyarrow to the
documented layout and fail on a broken one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jaeger_schemas as js
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.common.v1 import common_pb2
from otlp_util import MS, merge_traces_requests, new_span_id, new_trace_id, parse_traces_response, span, traces_request
from test_jaeger_api import GOLDEN, GOLDEN_TRACE_ID, golden_trace_request
from test_traces_crash import PHASE1_BATCHES, PHASE2_BATCHES, SPANS_PER_TRACE, TRACES_PER_BATCH, Ids, batch_spans
from trace_util import (
    MANIFEST_SCHEMA,
    SEARCH_SCHEMA,
    SERVICE_MAP_SCHEMA,
    check_bloom_filter,
    check_spans_file,
    check_trace,
    duckdb_span_stats,
    manifest_paths,
    read_manifest,
    rfc3339_ns,
    span_attr,
    stored_span_keys,
    validate,
)

# ----- a reference OTLP -> Jaeger translation (Jaeger's conventions, see golden/README.md) ------------

KIND_TAG = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _tag(key: str, v: common_pb2.AnyValue) -> dict[str, Any]:
    which = v.WhichOneof("value")
    typ, val = {
        "string_value": ("string", v.string_value),
        "bool_value": ("bool", v.bool_value),
        "int_value": ("int64", v.int_value),
        "double_value": ("float64", v.double_value),
    }[which]
    return {"key": key, "type": typ, "value": val}


def _s(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "type": "string", "value": value}


def otlp_to_jaeger(req) -> dict[str, Any]:  # noqa: ANN001
    spans, processes = [], {}
    for rs in req.resource_spans:
        res = {kv.key: kv.value for kv in rs.resource.attributes}
        pid = f"p{len(processes) + 1}"
        processes[pid] = {"serviceName": res["service.name"].string_value, "tags": [_tag(k, v) for k, v in res.items() if k != "service.name"]}
        for ss in rs.scope_spans:
            scope_tags = ([_s("otel.scope.name", ss.scope.name)] if ss.scope.name else []) + ([_s("otel.scope.version", ss.scope.version)] if ss.scope.version else [])
            for sp in ss.spans:
                tags = scope_tags + [_tag(kv.key, kv.value) for kv in sp.attributes]
                if sp.kind in KIND_TAG:
                    tags.append(_s("span.kind", KIND_TAG[sp.kind]))
                if sp.status.code == 1:
                    tags.append(_s("otel.status_code", "OK"))
                if sp.status.code == 2:
                    tags += [_s("otel.status_code", "ERROR"), {"key": "error", "type": "bool", "value": True}]
                if sp.status.message:
                    tags.append(_s("otel.status_description", sp.status.message))
                refs = [{"refType": "CHILD_OF", "traceID": sp.trace_id.hex(), "spanID": sp.parent_span_id.hex()}] if sp.parent_span_id else []
                refs += [{"refType": "FOLLOWS_FROM", "traceID": ln.trace_id.hex(), "spanID": ln.span_id.hex()} for ln in sp.links]
                logs = [
                    {"timestamp": ev.time_unix_nano // 1000, "fields": [_s("event", ev.name)] + [_tag(kv.key, kv.value) for kv in ev.attributes]}
                    for ev in sp.events
                ]
                spans.append(
                    {
                        "traceID": sp.trace_id.hex(), "spanID": sp.span_id.hex(), "flags": 1, "operationName": sp.name,
                        "references": refs, "startTime": sp.start_time_unix_nano // 1000,
                        "duration": (sp.end_time_unix_nano - sp.start_time_unix_nano) // 1000,
                        "tags": tags, "logs": logs, "processID": pid, "warnings": None,
                    }
                )
    return {"traceID": spans[0]["traceID"], "spans": spans, "processes": processes, "warnings": None}


def structured(data: Any) -> dict[str, Any]:
    return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}


# ----- Jaeger ------------------------------------------------------------------------------


def test_golden_file_follows_from_the_golden_request() -> None:
    base_ns = (time.time_ns() // 1_000_000_000 - 10) * 1_000_000_000
    jaeger = otlp_to_jaeger(golden_trace_request(base_ns))
    validate(structured([jaeger]), js.TRACES_RESPONSE, "reference translation")
    js.check_trace_references(jaeger)
    golden = json.loads(GOLDEN.read_text("utf-8"))
    assert golden["traceID"] == GOLDEN_TRACE_ID
    assert js.normalize_trace(jaeger, base_ns // 1000) == golden


def test_golden_file_round_trips_through_the_schema() -> None:
    golden = json.loads(GOLDEN.read_text("utf-8"))
    base_us = 1_700_000_000_000_000
    trace = js.denormalize_trace(golden, base_us)
    validate(structured([trace]), js.TRACES_RESPONSE, "denormalised golden trace")
    js.check_trace_references(trace)
    assert js.normalize_trace(trace, base_us) == golden
    # Process ids are incidental: renaming them changes nothing after normalisation.
    renamed = json.loads(json.dumps(trace).replace('"p1"', '"px"').replace('"p2"', '"p1"').replace('"px"', '"p2"'))
    assert js.normalize_trace(renamed, base_us) == golden


def test_jaeger_schemas_reject_wrong_shapes() -> None:
    golden = json.loads(GOLDEN.read_text("utf-8"))
    good = js.denormalize_trace(golden, 1_700_000_000_000_000)

    def broken(mutate) -> dict[str, Any]:  # noqa: ANN001
        t = json.loads(json.dumps(good))
        mutate(t)
        return structured([t])

    cases = {
        "no processID": lambda t: t["spans"][0].pop("processID"),
        "int64 tag as a string": lambda t: t["spans"][0]["tags"].__setitem__(1, {"key": "x", "type": "int64", "value": "200"}),
        "unknown tag type": lambda t: t["spans"][0]["tags"].__setitem__(0, {"key": "x", "type": "str", "value": "a"}),
        "startTime in ns as a string": lambda t: t["spans"][0].__setitem__("startTime", "1700000000000000000"),
        "uppercase trace id": lambda t: t.__setitem__("traceID", GOLDEN_TRACE_ID.upper()),
        "short span id": lambda t: t["spans"][0].__setitem__("spanID", "abc"),
        "bad refType": lambda t: t["spans"][1]["references"][0].__setitem__("refType", "PARENT"),
        "process without tags": lambda t: next(iter(t["processes"].values())).pop("tags"),
        "references null": lambda t: t["spans"][0].__setitem__("references", None),
    }
    for what, mutate in cases.items():
        with pytest.raises(AssertionError):
            validate(broken(mutate), js.TRACES_RESPONSE, what)
    # And the envelope.
    with pytest.raises(AssertionError):
        validate({"data": [good]}, js.TRACES_RESPONSE, "no total/limit/offset/errors")
    validate({"data": ["a", "b"], "total": 2, "limit": 0, "offset": 0, "errors": None}, js.SERVICES_RESPONSE, "services")
    validate({"data": [{"parent": "a", "child": "b", "callCount": 3, "errorCount": 1}], "total": 0, "limit": 0, "offset": 0, "errors": None}, js.DEPENDENCIES_RESPONSE, "deps")
    with pytest.raises(AssertionError):
        validate({"data": [{"parent": "a", "child": "b"}], "total": 0, "limit": 0, "offset": 0, "errors": None}, js.DEPENDENCIES_RESPONSE, "deps without callCount")


def test_jaeger_error_shape() -> None:
    body = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 404, "msg": "trace not found"}]}
    validate(body, js.ERROR_RESPONSE, "404 body")
    with pytest.raises(AssertionError):
        validate({**body, "errors": None}, js.ERROR_RESPONSE, "error body without errors")
    with pytest.raises(AssertionError):
        validate({**body, "data": []}, js.ERROR_RESPONSE, "error body with data")


def test_jaeger_ui_shaped_trace_validates() -> None:
    """The shape Jaeger's own UI converter emits (warnings null, typed tags, logs, FOLLOWS_FROM) passes."""
    t = {
        "traceID": "0000000000000000000000000000000a",
        "spans": [
            {
                "traceID": "0000000000000000000000000000000a", "spanID": "000000000000000b", "flags": 1, "operationName": "op",
                "references": [], "startTime": 1485467191639875, "duration": 5,
                "tags": [
                    {"key": "peer.service", "type": "string", "value": "y"}, {"key": "n", "type": "int64", "value": 23456},
                    {"key": "error", "type": "bool", "value": True}, {"key": "t", "type": "float64", "value": 72.5},
                    {"key": "blob", "type": "binary", "value": "AAAwOQ=="},
                ],
                "logs": [{"timestamp": 1485467191639875, "fields": [{"key": "event", "type": "string", "value": "e"}]}],
                "processID": "p1", "warnings": None,
            }
        ],
        "processes": {"p1": {"serviceName": "x", "tags": []}},
        "warnings": None,
    }
    validate(structured([t]), js.TRACES_RESPONSE, "Jaeger-shaped trace")


# ----- native API shapes -----------------------------------------------------------------------


def test_native_schemas_accept_the_contract_examples() -> None:
    tid, sid = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    trace = {
        "trace_id": tid,
        "spans": [
            {
                "trace_id": tid, "span_id": sid, "parent_span_id": "", "service": "checkout", "name": "GET /", "kind": "server",
                "start_time": "2026-11-22T03:00:00.000000001Z", "end_time": "2026-11-22T03:00:00.250000001Z", "duration_ns": 250_000_000,
                "status": {"code": "error", "message": "boom"}, "attributes": {"http.request.method": "GET"},
                "resource": {"service.name": "checkout"}, "dropped_attributes_count": 0,
                "events": [{"time": "2026-11-22T03:00:00.1Z", "name": "exception", "attributes": {"exception.type": "E"}}],
                "links": [{"trace_id": tid, "span_id": sid, "attributes": {}}],
            }
        ],
    }
    check_trace(trace, tid)
    bad = json.loads(json.dumps(trace))
    bad["spans"][0]["duration_ns"] = 1
    with pytest.raises(AssertionError):
        check_trace(bad, tid)
    bad = json.loads(json.dumps(trace))
    bad["spans"][0]["parent_span_id"] = None
    with pytest.raises(AssertionError):
        check_trace(bad, tid)
    assert span_attr(trace["spans"][0], "http.request.method") == "GET"
    assert span_attr({"attributes": {"http": {"request": {"method": "GET"}}}}, "http.request.method") == "GET"

    summary = {
        "trace_id": tid, "root_service": "frontend", "root_operation": "GET /", "start_time": "2026-11-22T03:00:00.000000001Z",
        "duration_ns": 5, "span_count": 8, "error_count": 1, "services": ["frontend", "checkout"],
    }
    validate({"traces": [summary]}, SEARCH_SCHEMA, "search")
    validate(
        {
            "nodes": [{"id": "checkout", "kind": "service", "requests": 1, "errors": 0}, {"id": "postgresql", "kind": "database", "requests": 1, "errors": 0}],
            "edges": [{"source": "checkout", "target": "postgresql", "requests": 1, "errors": 0, "p50_ms": 1.5, "p95_ms": 2, "p99_ms": 2}],
        },
        SERVICE_MAP_SCHEMA,
        "service map",
    )
    validate(
        {
            "version": 1,
            "durable_lsn": 7,
            "files": [
                {"partition": "2026-11-22T03", "spans": "spans-12.parquet", "summaries": "summaries-12.parquet", "edges": "edges-12.parquet", "id": 12},
                {"partition": "2026-11-22T04", "spans": "spans-13.parquet", "summaries": "summaries-13.parquet", "operations": "operations-13.parquet"},
            ],
        },
        MANIFEST_SCHEMA,
        "manifest",
    )
    for bad in ({"partition": "2026-11-22T03"}, {"partition": "2026-11-22", "spans": "spans-1.parquet"}, {"partition": "2026-11-22T03", "spans": "x.parquet"}):
        with pytest.raises(AssertionError):
            validate({"version": 1, "files": [bad]}, MANIFEST_SCHEMA, "bad manifest")


def test_rfc3339_ns() -> None:
    assert rfc3339_ns("2023-11-14T22:13:20Z") == 1_700_000_000_000_000_000
    assert rfc3339_ns("2023-11-14T22:13:20.000000001Z") == 1_700_000_000_000_000_001
    assert rfc3339_ns("2023-11-14T22:13:20.5Z") == 1_700_000_000_500_000_000
    assert rfc3339_ns("2023-11-14T23:13:20.000000001+01:00") == 1_700_000_000_000_000_001
    with pytest.raises(AssertionError):
        rfc3339_ns("1700000000")


# ----- OTLP builders and the crash test's request plan ----------------------------------------------


def test_trace_builders() -> None:
    tid, sid = new_trace_id(), new_span_id()
    req = merge_traces_requests(
        traces_request([span(tid, sid, "a", 1, 2, kind=9, status="error", status_message="m")], service="s1"),
        traces_request([span(tid, new_span_id(), "b", 1, 2, parent_span_id=sid, kind="client")], service="s2"),
    )
    again = type(req)()
    again.ParseFromString(req.SerializeToString())
    assert [rs.resource.attributes[0].value.string_value for rs in again.resource_spans] == ["s1", "s2"]
    a = again.resource_spans[0].scope_spans[0].spans[0]
    assert (a.kind, a.status.code, a.status.message, len(a.trace_id), len(a.span_id)) == (9, 2, "m", 16, 8)
    assert again.resource_spans[1].scope_spans[0].spans[0].parent_span_id == sid
    assert parse_traces_response(b"").partial_success.rejected_spans == 0


def test_crash_plan_sends_every_span_once() -> None:
    ids = Ids()
    seen: dict[tuple[int, int], int] = {}
    n_batches = PHASE1_BATCHES + PHASE2_BATCHES
    for b in range(n_batches):
        pairs = batch_spans(b)
        assert len(pairs) == (TRACES_PER_BATCH * SPANS_PER_TRACE // 2 if b == 0 else TRACES_PER_BATCH * SPANS_PER_TRACE)
        for p in pairs:
            assert p not in seen, f"span {p} in requests {seen[p]} and {b}"
            seen[p] = b
    assert len(seen) >= 20_000
    assert len({ids.trace(t) for t, _ in seen}) == n_batches * TRACES_PER_BATCH
    assert len({Ids.span(t, j) for t, j in seen}) == len(seen)
    assert all(len(ids.trace(t)) == 16 and len(Ids.span(t, j)) == 8 for t, j in list(seen)[:100])


# ----- Parquet checks on a store written by pyarrow -----------------------------------------------


def write_store(data_dir: Path, facts: dict[bytes, dict[str, Any]], sort: bool = True, bloom: bool = True) -> None:
    """A tenant `default` trace store in the documented layout: one flush, one partition."""
    part = data_dir / "tenants" / "default" / "traces" / "2026-11-22T03"
    part.mkdir(parents=True)
    rows = sorted(facts.items(), key=lambda kv: (kv[1]["trace_id"], kv[0])) if sort else list(facts.items())
    if not sort:
        rows.reverse()
    spans = pa.table(
        {
            "trace_id": pa.array([f["trace_id"] for _, f in rows], pa.binary(16)),
            "span_id": pa.array([sid for sid, _ in rows], pa.binary(8)),
            "parent_span_id": pa.array([f["parent"] or None for _, f in rows], pa.binary(8)),
            "service": [f["service"] for _, f in rows],
            "name": [f["name"] for _, f in rows],
            "kind": ["server"] * len(rows),
            "start_time": pa.array([f["start"] for _, f in rows], pa.timestamp("ns", tz="UTC")),
            "end_time": pa.array([f["end"] for _, f in rows], pa.timestamp("ns", tz="UTC")),
            "duration_ns": pa.array([f["end"] - f["start"] for _, f in rows], pa.int64()),
            "status_code": ["unset"] * len(rows),
        }
    )
    kw: dict[str, Any] = {"bloom_filter_options": {"trace_id": {"ndv": 1000, "fpp": 0.01}}} if bloom else {}
    pq.write_table(spans, part / "spans-1.parquet", **kw)
    tids = sorted({f["trace_id"] for f in facts.values()})
    pq.write_table(pa.table({"trace_id": pa.array(tids, pa.binary(16))}), part / "summaries-1.parquet")
    pq.write_table(pa.table({"source": ["a"], "target": ["b"]}), part / "edges-1.parquet")
    (data_dir / "tenants" / "default" / "traces" / "manifest.json").write_text(
        json.dumps({"version": 1, "files": [{"partition": "2026-11-22T03", "spans": "spans-1.parquet", "summaries": "summaries-1.parquet", "edges": "edges-1.parquet"}]})
    )
    # An unlisted, half-written file must be ignored by every reader.
    (part / "spans-2.parquet").write_bytes(b"PAR1 not finished")


def make_facts(n_traces: int = 20) -> dict[bytes, dict[str, Any]]:
    facts: dict[bytes, dict[str, Any]] = {}
    t0 = time.time_ns()
    for i in range(n_traces):
        tid, root, child = new_trace_id(), new_span_id(), new_span_id()
        facts[root] = {"trace_id": tid, "service": "web", "name": "GET /", "start": t0 + i, "end": t0 + i + 5 * MS + 1, "parent": b""}
        facts[child] = {"trace_id": tid, "service": "api", "name": "q", "start": t0 + i + 1, "end": t0 + i + 3, "parent": root}
    return facts


def test_parquet_checks_pass_on_a_good_store(tmp_path: Path) -> None:
    facts = make_facts()
    write_store(tmp_path, facts)
    assert read_manifest(tmp_path)["version"] == 1
    assert read_manifest(tmp_path, "nobody") == {"version": 1, "files": []}
    paths = manifest_paths(tmp_path)
    assert [p.name for p in paths] == ["spans-1.parquet"]
    m = json.loads((tmp_path / "tenants" / "default" / "traces" / "manifest.json").read_text())
    m["files"].append({"partition": "2026-11-22T03", "edges": "edges-9.parquet"})
    (tmp_path / "tenants" / "default" / "traces" / "manifest.json").write_text(json.dumps(m))
    assert [p.name for p in manifest_paths(tmp_path)] == ["spans-1.parquet"]
    assert [p.name for p in manifest_paths(tmp_path, kind="edges")] == ["edges-1.parquet", "edges-9.parquet"]
    assert check_spans_file(paths[0], facts).keys() == facts.keys()
    check_bloom_filter(paths[0])
    rows, keys = stored_span_keys(tmp_path)
    assert rows == len(keys) == len(facts)
    assert stored_span_keys(tmp_path, service="web")[0] == len(facts) // 2
    assert stored_span_keys(tmp_path, "nobody") == (0, set())
    tids = sorted({f["trace_id"] for f in facts.values()})
    stats = duckdb_span_stats(paths, tids[:3], "web")
    assert stats == {"count": 6, "trace_id_type": "BLOB", "hex_ids": {t.hex() for t in tids}, "duplicates": 0}


def test_parquet_checks_fail_on_a_broken_store(tmp_path: Path) -> None:
    facts = make_facts()
    write_store(tmp_path / "unsorted", facts, sort=False)
    with pytest.raises(AssertionError, match="not sorted"):
        check_spans_file(manifest_paths(tmp_path / "unsorted")[0], facts)
    write_store(tmp_path / "nobloom", facts, bloom=False)
    with pytest.raises(AssertionError, match="bloom"):
        check_bloom_filter(manifest_paths(tmp_path / "nobloom")[0])
    # A listed file that stays missing is an error (after a few re-reads of the manifest).
    import duckdb

    (manifest_paths(tmp_path / "nobloom")[0]).unlink()
    with pytest.raises(duckdb.IOException):
        stored_span_keys(tmp_path / "nobloom")
    wrong = {sid: {**f, "end": f["end"] + 1} for sid, f in facts.items()}
    write_store(tmp_path / "times", facts)
    with pytest.raises(AssertionError):
        check_spans_file(manifest_paths(tmp_path / "times")[0], wrong)
