"""Helpers for the trace tests: the native trace API, its JSON shapes, and the
Parquet files on disk.

Timing contract (see the test modules): a span is visible to trace-by-id about
2 s after its acknowledgement; search, operations and the service map see a
trace only once it is complete (no span for `--trace-idle`) and written
(at least every `--trace-flush-interval`). Tests start the collector with
FAST_TRACE_ARGS and poll with deadlines, never fixed sleeps.

On disk: `<data-dir>/tenants/<tenant>/traces/manifest.json` lists the finished files
of every flush; files not listed may still be in progress, so readers open
only listed ones.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import requests
from conftest import Collector

# Short idle and flush periods so traces are written about 1.5 s after the last span.
FAST_TRACE_ARGS = ["--trace-idle", "500ms", "--trace-flush-interval", "1s"]

VISIBLE_TIMEOUT_S = 15.0  # trace-by-id (contract: ~2 s; generous for debug builds)
WRITTEN_TIMEOUT_S = 30.0  # search / service map / manifest
POLL_S = 0.25

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")

# ----- JSON Schemas of the native API (draft 2020-12) -------------------------------------

_INT = {"type": "integer", "minimum": 0}
_TIME = {"type": "string", "pattern": RFC3339}
_ATTRS = {"type": "object"}

SPAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_time", "end_time",
        "duration_ns", "status", "attributes", "resource", "events", "links",
    ],
    "properties": {
        "trace_id": {"type": "string", "pattern": HEX32.pattern},
        "span_id": {"type": "string", "pattern": HEX16.pattern},
        "parent_span_id": {"type": "string", "pattern": r"^([0-9a-f]{16})?$"},
        "service": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"enum": ["server", "client", "producer", "consumer", "internal", "unspecified"]},
        "start_time": _TIME,
        "end_time": _TIME,
        "duration_ns": _INT,
        "status": {
            "type": "object",
            "required": ["code"],
            "properties": {"code": {"enum": ["ok", "error", "unset"]}, "message": {"type": ["string", "null"]}},
        },
        "attributes": _ATTRS,
        "resource": _ATTRS,
        "dropped_attributes_count": _INT,
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["time", "name", "attributes"],
                "properties": {"time": _TIME, "name": {"type": "string"}, "attributes": _ATTRS},
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["trace_id", "span_id", "attributes"],
                "properties": {
                    "trace_id": {"type": "string", "pattern": HEX32.pattern},
                    "span_id": {"type": "string", "pattern": HEX16.pattern},
                    "attributes": _ATTRS,
                },
            },
        },
    },
}

TRACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["trace_id", "spans"],
    "properties": {"trace_id": {"type": "string", "pattern": HEX32.pattern}, "spans": {"type": "array", "items": SPAN_SCHEMA}},
}

SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["trace_id", "root_service", "root_operation", "start_time", "duration_ns", "span_count", "error_count", "services"],
    "properties": {
        "trace_id": {"type": "string", "pattern": HEX32.pattern},
        "root_service": {"type": "string"},
        "root_operation": {"type": "string"},
        "start_time": _TIME,
        "duration_ns": _INT,
        "span_count": {"type": "integer", "minimum": 1},
        "error_count": _INT,
        "services": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
}

SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["traces"],
    "properties": {"traces": {"type": "array", "items": SUMMARY_SCHEMA}},
}

OPERATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["operations"],
    "properties": {"operations": {"type": "array", "items": {"type": "string"}}},
}

_NUM = {"type": "number", "minimum": 0}
SERVICE_MAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["nodes", "edges"],
    "properties": {
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "kind", "requests", "errors"],
                "properties": {
                    "id": {"type": "string"},
                    "kind": {"enum": ["service", "database", "messaging", "external"]},
                    "requests": _INT,
                    "errors": _INT,
                },
            },
        },
        "edges": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "target", "requests", "errors", "p50_ms", "p95_ms", "p99_ms"],
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "requests": _INT,
                    "errors": _INT,
                    "p50_ms": _NUM,
                    "p95_ms": _NUM,
                    "p99_ms": _NUM,
                },
            },
        },
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "files"],
    "properties": {
        "version": {"const": 1},
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                # A file set names the files it has: a set may lack e.g. edges (none in that flush).
                "required": ["partition"],
                "anyOf": [{"required": ["spans"]}, {"required": ["summaries"]}, {"required": ["edges"]}],
                "properties": {
                    "partition": {"type": "string", "pattern": PARTITION.pattern},
                    "spans": {"type": "string", "pattern": r"^spans-\d+\.parquet$"},
                    "summaries": {"type": "string", "pattern": r"^summaries-\d+\.parquet$"},
                    "edges": {"type": "string", "pattern": r"^edges-\d+\.parquet$"},
                },
            },
        },
    },
}


def validate(instance: Any, schema: dict[str, Any], what: str) -> None:
    """jsonschema validation with a readable failure (path, message, excerpt)."""
    v = jsonschema.Draft202012Validator(schema)
    errors = sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors[:10]]
        raise AssertionError(f"{what} does not match its schema ({len(errors)} errors):\n" + "\n".join(lines) + f"\n{json.dumps(instance)[:1500]}")


# ----- times and values --------------------------------------------------------------------

_RFC3339_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def rfc3339_ns(s: str) -> int:
    """RFC 3339 with up to nine fraction digits -> Unix nanoseconds (exact, unlike datetime)."""
    import calendar

    m = _RFC3339_RE.match(s)
    assert m, f"not RFC 3339: {s!r}"
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(sec), 0, 0, 0))
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return secs * 1_000_000_000 + int((frac or "").ljust(9, "0"))


def span_attr(obj: dict[str, Any], key: str, field: str = "attributes") -> Any:
    """An attribute of a span (or its resource): flat dotted key, or nested objects."""
    attrs = obj.get(field) or {}
    if key in attrs:
        return attrs[key]
    cur: Any = attrs
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def default_window(params: dict[str, Any]) -> dict[str, Any]:
    """Drops None values and fills start/end (Unix seconds) with the last 6 h .. +1 h."""
    params = {k: v for k, v in params.items() if v is not None}
    params.setdefault("start", int(time.time()) - 6 * 3600)
    params.setdefault("end", int(time.time()) + 3600)
    return params


# ----- native API ---------------------------------------------------------------------------


def get_trace(c: Collector, trace_id: str, tenant: str | None = None) -> requests.Response:
    return c.get(f"/api/v1/traces/{trace_id}", tenant=tenant)


def fetch_trace(c: Collector, trace_id: str, tenant: str | None = None) -> dict[str, Any] | None:
    """The trace (schema-checked), or None on 404."""
    r = get_trace(c, trace_id, tenant)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, f"GET trace {trace_id} (tenant {tenant}) -> {r.status_code}: {r.text[:500]}"
    obj = r.json()
    check_trace(obj, trace_id)
    return obj


def check_trace(obj: dict[str, Any], trace_id: str) -> None:
    validate(obj, TRACE_SCHEMA, f"trace {trace_id}")
    assert obj["trace_id"] == trace_id, f"asked for {trace_id}, got {obj['trace_id']}"
    for s in obj["spans"]:
        assert s["trace_id"] == trace_id, f"span {s['span_id']} has trace id {s['trace_id']}"
        assert rfc3339_ns(s["end_time"]) - rfc3339_ns(s["start_time"]) == s["duration_ns"], f"duration_ns disagrees with times: {s}"


def wait_trace(
    c: Collector,
    trace_id: str,
    span_ids: Iterable[str] | None = None,
    n_spans: int | None = None,
    tenant: str | None = None,
    timeout: float = VISIBLE_TIMEOUT_S,
) -> dict[str, Any]:
    """Polls trace-by-id until it holds every id of `span_ids` (and at least `n_spans` spans)."""
    want = set(span_ids or ())
    deadline = time.monotonic() + timeout
    while True:
        obj = fetch_trace(c, trace_id, tenant)
        have = [s["span_id"] for s in obj["spans"]] if obj else []
        if obj is not None and want <= set(have) and len(have) >= (n_spans or 0):
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(
                f"trace {trace_id} (tenant {tenant}) incomplete after {timeout}s: have {len(have)} spans "
                f"{sorted(have)[:20]}, missing {sorted(want - set(have))[:20]}, want >= {n_spans}"
            )
        time.sleep(POLL_S)


def spans_by_id(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """span_id -> span, failing on a duplicate span id."""
    out: dict[str, dict[str, Any]] = {}
    for s in trace["spans"]:
        assert s["span_id"] not in out, f"span {s['span_id']} returned twice in trace {trace['trace_id']}"
        out[s["span_id"]] = s
    return out


def search_traces(c: Collector, tenant: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """GET /api/v1/traces (schema-checked); returns the summaries."""
    params = default_window(params)
    r = c.get("/api/v1/traces", params=params, tenant=tenant)
    assert r.status_code == 200, f"trace search {params} (tenant {tenant}) -> {r.status_code}: {r.text[:1000]}"
    obj = r.json()
    validate(obj, SEARCH_SCHEMA, f"trace search {params}")
    return obj["traces"]


def search_traces_until(
    c: Collector,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float = WRITTEN_TIMEOUT_S,
    tenant: str | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        traces = search_traces(c, tenant=tenant, **params)
        if predicate(traces):
            return traces
        if time.monotonic() > deadline:
            raise AssertionError(
                f"trace search {params} (tenant {tenant}) did not satisfy the condition within {timeout}s; "
                f"{len(traces)} traces: {json.dumps(traces[:5])[:1500]}"
            )
        time.sleep(POLL_S)


def ids(traces: list[dict[str, Any]]) -> list[str]:
    return [t["trace_id"] for t in traces]


def wait_written(c: Collector, trace_ids: Iterable[str], tenant: str | None = None, timeout: float = WRITTEN_TIMEOUT_S, **params: Any) -> list[dict[str, Any]]:
    """Polls a search (e.g. service=...) until it lists every trace id; returns the summaries."""
    want = set(trace_ids)
    params.setdefault("limit", 1000)
    return search_traces_until(c, lambda ts: want <= set(ids(ts)), timeout=timeout, tenant=tenant, **params)


def operations(c: Collector, service: str, tenant: str | None = None) -> list[str]:
    r = c.get(f"/api/v1/services/{service}/operations", tenant=tenant)
    assert r.status_code == 200, f"operations of {service} -> {r.status_code}: {r.text[:500]}"
    obj = r.json()
    validate(obj, OPERATIONS_SCHEMA, f"operations of {service}")
    return obj["operations"]


def service_map(c: Collector, tenant: str | None = None, **params: Any) -> dict[str, Any]:
    params = default_window(params)
    r = c.get("/api/v1/service-map", params=params, tenant=tenant)
    assert r.status_code == 200, f"service map {params} -> {r.status_code}: {r.text[:500]}"
    obj = r.json()
    validate(obj, SERVICE_MAP_SCHEMA, "service map")
    for e in obj["edges"]:
        assert e["errors"] <= e["requests"], f"edge with more errors than requests: {e}"
        assert e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"], f"edge quantiles out of order: {e}"
    return obj


def service_map_until(
    c: Collector, predicate: Callable[[dict[str, Any]], bool], timeout: float = WRITTEN_TIMEOUT_S, tenant: str | None = None, **params: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        m = service_map(c, tenant=tenant, **params)
        if predicate(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"service map {params} did not satisfy the condition within {timeout}s: {json.dumps(m)[:2000]}")
        time.sleep(POLL_S)


# ----- files on disk --------------------------------------------------------------------------


def traces_dir(data_dir: Path, tenant: str = "default") -> Path:
    return Path(data_dir) / "tenants" / tenant / "traces"


def read_manifest(data_dir: Path, tenant: str = "default") -> dict[str, Any]:
    """The tenant's manifest ({"version":1,"files":[]} when there is none yet), schema-checked."""
    p = traces_dir(data_dir, tenant) / "manifest.json"
    if not p.exists():
        return {"version": 1, "files": []}
    obj = json.loads(p.read_text("utf-8"))
    validate(obj, MANIFEST_SCHEMA, str(p))
    return obj


def manifest_paths(data_dir: Path, tenant: str = "default", kind: str = "spans") -> list[Path]:
    """Absolute paths of the listed files of one kind (spans, summaries or edges)."""
    base = traces_dir(data_dir, tenant)
    return [base / f["partition"] / f[kind] for f in read_manifest(data_dir, tenant)["files"] if f.get(kind)]


def stored_span_keys(data_dir: Path, tenant: str = "default", service: str | None = None) -> tuple[int, set[tuple[str, str]]]:
    """(row count, set of (trace_id hex, span_id hex)) over every listed spans file, optionally one service's.

    Safe while the collector runs: compaction may delete listed files right after
    replacing the manifest, so a read that loses a file re-reads the manifest.
    """
    import duckdb

    sql = "SELECT lower(hex(trace_id)), lower(hex(span_id)) FROM read_parquet(?)"
    if service is not None:
        sql += " WHERE service = ?"
    for attempt in range(5):
        paths = manifest_paths(data_dir, tenant, "spans")
        if not paths:
            return 0, set()
        con = duckdb.connect()
        try:
            rows = con.execute(sql, [[str(p) for p in paths]] + ([service] if service is not None else [])).fetchall()
            return len(rows), {(t, s) for t, s in rows}
        except duckdb.IOException:
            if attempt == 4 or all(p.exists() for p in paths):
                raise
            time.sleep(0.1)  # a listed file went away: compaction replaced it
        finally:
            con.close()
    raise AssertionError("unreachable")


# ----- Parquet checks (pyarrow and DuckDB, as an outside reader would) --------------------------

SPANS_COLUMNS = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_time", "end_time", "duration_ns", "status_code")
KIND_NAMES = {"unspecified", "internal", "server", "client", "producer", "consumer"}


def _is_stringish(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_spans_file(path: Path, facts: dict[bytes, dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    """Reads one spans file with pyarrow and checks its schema, order and the rows of known spans.

    `facts` maps span id bytes -> {"trace_id", "service", "name", "start", "end", "parent"}
    (what was sent). Returns the rows of those spans found in the file, by span id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert table.num_rows > 0, f"{path} has no rows"
    sch = table.schema
    missing = [n for n in SPANS_COLUMNS if n not in sch.names]
    assert not missing, f"{path} lacks columns {missing}: {sch.names}"
    assert sch.field("trace_id").type == pa.binary(16), f"{path}: trace_id is {sch.field('trace_id').type}, want fixed_size_binary[16]"
    assert sch.field("span_id").type == pa.binary(8), f"{path}: span_id is {sch.field('span_id').type}, want fixed_size_binary[8]"
    assert _is_stringish(sch.field("service").type) and _is_stringish(sch.field("name").type), sch
    for tcol in ("start_time", "end_time"):
        ty = sch.field(tcol).type
        assert (pa.types.is_timestamp(ty) and ty.unit == "ns") or pa.types.is_int64(ty), f"{path}: {tcol} is {ty}, want timestamp[ns] or int64 ns"
    assert pa.types.is_integer(sch.field("duration_ns").type), f"{path}: duration_ns is {sch.field('duration_ns').type}"

    trace_ids = table.column("trace_id").to_pylist()
    assert trace_ids == sorted(trace_ids), f"{path} is not sorted by trace_id"

    sel = table.select(list(SPANS_COLUMNS))
    for tcol in ("start_time", "end_time"):  # exact ns: to_pylist() turns timestamps into µs datetimes
        sel = sel.set_column(sel.schema.get_field_index(tcol), tcol, sel.column(tcol).cast(pa.int64()))
    kind_is_name = _is_stringish(sch.field("kind").type)
    found: dict[bytes, dict[str, Any]] = {}
    for row in sel.to_pylist():
        if kind_is_name:
            assert row["kind"] in KIND_NAMES, f"{path}: kind {row['kind']!r}"
        sid = row["span_id"]
        if sid not in facts:
            continue
        f = facts[sid]
        assert sid not in found, f"{path}: span {sid.hex()} is in two rows"
        found[sid] = row
        assert (row["trace_id"], row["service"], row["name"]) == (f["trace_id"], f["service"], f["name"]), f"{path}: {row} vs sent {f}"
        parent = row["parent_span_id"]
        if f["parent"]:
            assert parent == f["parent"], f"{path}: span {sid.hex()} parent {parent!r}, sent {f['parent']!r}"
        else:
            assert parent in (None, b"", b"\x00" * 8), f"{path}: root span {sid.hex()} has parent {parent!r}"
        assert (row["start_time"], row["end_time"], row["duration_ns"]) == (f["start"], f["end"], f["end"] - f["start"]), f"{path}: {row} vs sent {f}"
    return found


def check_bloom_filter(path: Path, column: str = "trace_id") -> None:
    """Every row group has a bloom filter on `column` that admits present values and excludes absent ones."""
    import os

    import duckdb
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    names = [md.schema.column(i).path for i in range(md.num_columns)]
    assert column in names, f"{path}: no column {column} in {names}"
    col = names.index(column)
    for rg in range(md.num_row_groups):
        cc = md.row_group(rg).column(col)
        if hasattr(cc, "bloom_filter_offset"):  # pyarrow >= 20 reports it
            assert cc.bloom_filter_offset is not None and cc.bloom_filter_offset > 0, f"{path} row group {rg}: no bloom filter on {column}"
    con = duckdb.connect()
    try:
        probe = f"SELECT bloom_filter_excludes FROM parquet_bloom_probe(?, '{column}', ?)"
        present = pq.read_table(path, columns=[column]).column(column)[0].as_py()
        rows = con.execute(probe, [str(path), present]).fetchall()
        assert rows and not any(x for (x,) in rows), f"{path}: the bloom filter excludes a value that is present"
        width = len(present)
        excluded = sum(all(x for (x,) in con.execute(probe, [str(path), os.urandom(width)]).fetchall()) for _ in range(20))
        assert excluded > 0, f"{path}: the bloom filter excluded none of 20 absent values"
    finally:
        con.close()


def duckdb_span_stats(paths: list[Path], trace_ids: Iterable[bytes], service: str) -> dict[str, Any]:
    """What DuckDB sees over `paths`: rows of `trace_ids`, trace_id's type, hex ids of `service`, duplicate rows."""
    import duckdb

    files = [str(p) for p in paths]
    con = duckdb.connect()
    try:
        (count,) = con.execute("SELECT count(*) FROM read_parquet(?) WHERE list_contains(?, trace_id)", [files, list(trace_ids)]).fetchone()
        (ty,) = con.execute("SELECT typeof(trace_id) FROM read_parquet(?) LIMIT 1", [files]).fetchone()
        hex_ids = {h.lower() for (h,) in con.execute("SELECT DISTINCT hex(trace_id) FROM read_parquet(?) WHERE service = ?", [files, service]).fetchall()}
        (dups,) = con.execute("SELECT count(*) - count(DISTINCT (trace_id, span_id)) FROM read_parquet(?)", [files]).fetchone()
    finally:
        con.close()
    return {"count": count, "trace_id_type": ty, "hex_ids": hex_ids, "duplicates": dups}
