"""JSON Schemas of the Jaeger query API responses that the Jaeger UI reads, and
the normalisation used to compare a Jaeger trace with a golden file.

Sources (read, not copied): Jaeger's `model/json/model.go` (Trace, Span,
Reference, Process, Log, KeyValue, DependencyLink) and the query service's
`structuredResponse`/`structuredError` in `cmd/query/app/http_handler.go`;
the Jaeger UI's `src/types/trace.ts` (SpanData, Process, Log, KeyValuePair),
`src/model/transform-trace-data.tsx` (what it dereferences: `processes[processID]`,
`startTime`, `duration`, `references[].spanID`) and `src/api/jaeger.ts`
(errors are read from `errors[].code`/`errors[].msg`).

Where Jaeger's Go structs use `omitempty` (references, tags, logs, warnings,
flags) Jaeger itself still emits `[]` for references/tags/logs through its UI
converter; the schemas below require those arrays because the UI maps over
them, and allow `warnings` to be null. Ids must be lowercase hex; Periscope
always emits 32-digit trace ids and 16-digit span ids (checked here, stricter
than Jaeger, which also accepts short ids).
"""

from __future__ import annotations

import copy
from typing import Any

HEX32 = r"^[0-9a-f]{32}$"
HEX16 = r"^[0-9a-f]{16}$"

KEY_VALUE: dict[str, Any] = {
    "type": "object",
    "required": ["key", "type", "value"],
    "properties": {
        "key": {"type": "string"},
        "type": {"enum": ["string", "bool", "int64", "float64", "binary"]},
        "value": {"type": ["string", "number", "boolean"]},
    },
    # The declared type must agree with the JSON value (binary is base64 text).
    "allOf": [
        {"if": {"properties": {"type": {"const": "string"}}}, "then": {"properties": {"value": {"type": "string"}}}},
        {"if": {"properties": {"type": {"const": "binary"}}}, "then": {"properties": {"value": {"type": "string"}}}},
        {"if": {"properties": {"type": {"const": "bool"}}}, "then": {"properties": {"value": {"type": "boolean"}}}},
        {"if": {"properties": {"type": {"const": "int64"}}}, "then": {"properties": {"value": {"type": "integer"}}}},
        {"if": {"properties": {"type": {"const": "float64"}}}, "then": {"properties": {"value": {"type": "number"}}}},
    ],
}

REFERENCE: dict[str, Any] = {
    "type": "object",
    "required": ["refType", "traceID", "spanID"],
    "properties": {
        "refType": {"enum": ["CHILD_OF", "FOLLOWS_FROM"]},
        "traceID": {"type": "string", "pattern": HEX32},
        "spanID": {"type": "string", "pattern": HEX16},
    },
}

LOG: dict[str, Any] = {
    "type": "object",
    "required": ["timestamp", "fields"],
    "properties": {"timestamp": {"type": "integer", "minimum": 0}, "fields": {"type": "array", "items": KEY_VALUE}},
}

PROCESS: dict[str, Any] = {
    "type": "object",
    "required": ["serviceName", "tags"],
    "properties": {"serviceName": {"type": "string", "minLength": 1}, "tags": {"type": "array", "items": KEY_VALUE}},
}

SPAN: dict[str, Any] = {
    "type": "object",
    "required": ["traceID", "spanID", "operationName", "references", "startTime", "duration", "tags", "logs", "processID"],
    "properties": {
        "traceID": {"type": "string", "pattern": HEX32},
        "spanID": {"type": "string", "pattern": HEX16},
        "flags": {"type": "integer", "minimum": 0},
        "operationName": {"type": "string"},
        "references": {"type": "array", "items": REFERENCE},
        "startTime": {"type": "integer", "minimum": 1},  # µs; the UI drops spans with a zero start
        "duration": {"type": "integer", "minimum": 0},  # µs
        "tags": {"type": "array", "items": KEY_VALUE},
        "logs": {"type": "array", "items": LOG},
        "processID": {"type": "string", "minLength": 1},
        "warnings": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}

TRACE: dict[str, Any] = {
    "type": "object",
    "required": ["traceID", "spans", "processes"],
    "properties": {
        "traceID": {"type": "string", "pattern": HEX32},
        "spans": {"type": "array", "items": SPAN, "minItems": 1},
        "processes": {"type": "object", "additionalProperties": PROCESS},
        "warnings": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}

STRUCTURED_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["msg"],
    "properties": {"code": {"type": "integer"}, "msg": {"type": "string"}, "traceID": {"type": "string"}},
}


def structured(data: dict[str, Any] | None) -> dict[str, Any]:
    """Jaeger's structuredResponse around a `data` schema (None: data must be null, as in errors)."""
    return {
        "type": "object",
        "required": ["data", "total", "limit", "offset", "errors"],
        "properties": {
            "data": data if data is not None else {"type": "null"},
            "total": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "errors": {"type": ["array", "null"], "items": STRUCTURED_ERROR},
        },
    }


SERVICES_RESPONSE = structured({"type": "array", "items": {"type": "string"}})
OPERATIONS_RESPONSE = structured({"type": "array", "items": {"type": "string"}})
TRACES_RESPONSE = structured({"type": "array", "items": TRACE})
# `errorCount` is Periscope's addition (Jaeger's DependencyLink has parent, child, callCount);
# the UI ignores unknown keys. The tests require it separately.
DEPENDENCIES_RESPONSE = structured(
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["parent", "child", "callCount"],
            "properties": {
                "parent": {"type": "string"},
                "child": {"type": "string"},
                "callCount": {"type": "integer", "minimum": 0},
                "errorCount": {"type": "integer", "minimum": 0},
            },
        },
    }
)
ERROR_RESPONSE = {
    **structured(None),
    "properties": {**structured(None)["properties"], "errors": {"type": "array", "items": STRUCTURED_ERROR, "minItems": 1}},
}


def check_trace_references(trace: dict[str, Any]) -> None:
    """What the UI dereferences: every processID names a process; CHILD_OF refs of one trace."""
    for s in trace["spans"]:
        assert s["processID"] in trace["processes"], f"span {s['spanID']} has processID {s['processID']} not in processes"
        assert s["traceID"] == trace["traceID"], f"span {s['spanID']} has traceID {s['traceID']} in trace {trace['traceID']}"
        child_of = [r for r in s["references"] if r["refType"] == "CHILD_OF"]
        assert len(child_of) <= 1, f"span {s['spanID']} has {len(child_of)} CHILD_OF references"
        # Jaeger puts the parent first (backends look for it there).
        if child_of:
            assert s["references"][0]["refType"] == "CHILD_OF", f"parent is not the first reference: {s['references']}"


def normalize_trace(trace: dict[str, Any], base_us: int) -> dict[str, Any]:
    """A Jaeger trace in a form that does not depend on incidental choices.

    - spans sorted by spanID; tags, process tags and log fields sorted by key;
      logs sorted by timestamp;
    - processID replaced by the process it names (ids like p1/p2 are arbitrary),
      and the top-level `processes` map dropped;
    - startTime and log timestamps made relative to `base_us` (the test's clock);
    - absent or null `warnings`, `flags`, empty `references`/`tags`/`logs` made uniform
      (warnings omitted when empty; flags dropped: the UI does not read them).
    """
    t = copy.deepcopy(trace)
    processes = t.pop("processes", {})
    spans = []
    for s in t["spans"]:
        s = dict(s)
        proc = processes[s.pop("processID")]
        s["process"] = {"serviceName": proc["serviceName"], "tags": sorted(proc.get("tags") or [], key=_tag_key)}
        s["startTime"] = s["startTime"] - base_us
        s["tags"] = sorted(s.get("tags") or [], key=_tag_key)
        s["references"] = list(s.get("references") or [])
        s["logs"] = sorted(
            ({"timestamp": lg["timestamp"] - base_us, "fields": sorted(lg.get("fields") or [], key=_tag_key)} for lg in s.get("logs") or []),
            key=lambda lg: (lg["timestamp"], [f["key"] for f in lg["fields"]]),
        )
        s.pop("flags", None)
        if not s.get("warnings"):
            s.pop("warnings", None)
        spans.append(s)
    t["spans"] = sorted(spans, key=lambda s: s["spanID"])
    if not t.get("warnings"):
        t.pop("warnings", None)
    return t


def _tag_key(kv: dict[str, Any]) -> tuple[str, str]:
    return (kv["key"], str(kv.get("value")))


def denormalize_trace(norm: dict[str, Any], base_us: int) -> dict[str, Any]:
    """The inverse of normalize_trace (processes p1, p2, ... in order of first use), for self-tests."""
    t = copy.deepcopy(norm)
    processes: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for s in t["spans"]:
        proc = s.pop("process")
        k = repr(proc)
        if k not in keys:
            keys[k] = f"p{len(keys) + 1}"
            processes[keys[k]] = proc
        s["processID"] = keys[k]
        s["startTime"] += base_us
        for lg in s["logs"]:
            lg["timestamp"] += base_us
    t["processes"] = processes
    return t
