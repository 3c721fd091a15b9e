"""Builders for raw OTLP requests (opentelemetry-proto classes) and gRPC calls.

Logs: `log_record`, `logs_request`, `grpc_export_logs`. Traces: `span` (with
`event` and `link`), `traces_request`, `merge_traces_requests`,
`grpc_export_traces`, `parse_traces_response`, and `new_trace_id` /
`new_span_id` for random non-zero ids.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

GRPC_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def now_ns() -> int:
    return time.time_ns()


def any_value(v: Any) -> common_pb2.AnyValue:
    if isinstance(v, common_pb2.AnyValue):
        return v
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, str):
        return common_pb2.AnyValue(string_value=v)
    if isinstance(v, bytes):
        return common_pb2.AnyValue(bytes_value=v)
    if isinstance(v, (list, tuple)):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(x) for x in v]))
    if isinstance(v, dict):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[kv(k, x) for k, x in v.items()]))
    raise TypeError(f"no AnyValue for {type(v)}")


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=any_value(value))


def log_record(
    body: Any,
    attrs: dict[str, Any] | None = None,
    time_ns: int | None = None,
    severity_number: int = logs_pb2.SEVERITY_NUMBER_INFO,
    severity_text: str = "INFO",
    trace_id: bytes = b"",
    span_id: bytes = b"",
) -> logs_pb2.LogRecord:
    t = now_ns() if time_ns is None else time_ns
    return logs_pb2.LogRecord(
        time_unix_nano=t,
        observed_time_unix_nano=t,
        severity_number=severity_number,
        severity_text=severity_text,
        body=any_value(body),
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
        trace_id=trace_id,
        span_id=span_id,
    )


def logs_request(
    records: Iterable[logs_pb2.LogRecord],
    service: str = "e2e",
    resource_attrs: dict[str, Any] | None = None,
    scope: str = "e2e-tests",
) -> logs_service_pb2.ExportLogsServiceRequest:
    res_attrs = {"service.name": service}
    res_attrs.update(resource_attrs or {})
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(attributes=[kv(k, v) for k, v in res_attrs.items()]),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        scope=common_pb2.InstrumentationScope(name=scope),
                        log_records=list(records),
                    )
                ],
            )
        ]
    )


def parse_logs_response(data: bytes) -> logs_service_pb2.ExportLogsServiceResponse:
    resp = logs_service_pb2.ExportLogsServiceResponse()
    resp.ParseFromString(data)
    return resp


def grpc_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=GRPC_OPTIONS)


def grpc_export_logs(
    channel: grpc.Channel,
    request: logs_service_pb2.ExportLogsServiceRequest,
    metadata: list[tuple[str, str]] | None = None,
    timeout: float = 30,
    compression: grpc.Compression | None = None,
) -> logs_service_pb2.ExportLogsServiceResponse:
    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
    return stub.Export(request, metadata=metadata, timeout=timeout, compression=compression)


# ----- traces ---------------------------------------------------------------------------

# OTLP SpanKind and StatusCode numbers by the names the query API uses.
SPAN_KIND = {"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUS_CODE = {"unset": 0, "ok": 1, "error": 2}

MS = 1_000_000  # nanoseconds


def new_trace_id() -> bytes:
    """16 random bytes, never all zero."""
    while True:
        b = os.urandom(16)
        if any(b):
            return b


def new_span_id() -> bytes:
    """8 random bytes, never all zero."""
    while True:
        b = os.urandom(8)
        if any(b):
            return b


def event(time_ns: int, name: str, attrs: dict[str, Any] | None = None) -> trace_pb2.Span.Event:
    return trace_pb2.Span.Event(time_unix_nano=time_ns, name=name, attributes=[kv(k, v) for k, v in (attrs or {}).items()])


def link(trace_id: bytes, span_id: bytes, attrs: dict[str, Any] | None = None) -> trace_pb2.Span.Link:
    return trace_pb2.Span.Link(trace_id=trace_id, span_id=span_id, attributes=[kv(k, v) for k, v in (attrs or {}).items()])


def span(
    trace_id: bytes,
    span_id: bytes,
    name: str,
    start_ns: int,
    end_ns: int,
    parent_span_id: bytes = b"",
    kind: str | int = "internal",
    attrs: dict[str, Any] | None = None,
    status: str | int = "unset",
    status_message: str = "",
    events: Iterable[trace_pb2.Span.Event] = (),
    links: Iterable[trace_pb2.Span.Link] = (),
    dropped_attributes_count: int = 0,
) -> trace_pb2.Span:
    """One OTLP span; `kind`/`status` by API name ("server", "error") or raw number (e.g. kind 9)."""
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=SPAN_KIND[kind] if isinstance(kind, str) else kind,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
        dropped_attributes_count=dropped_attributes_count,
        events=list(events),
        links=list(links),
        status=trace_pb2.Status(code=STATUS_CODE[status] if isinstance(status, str) else status, message=status_message),
    )


def traces_request(
    spans: Iterable[trace_pb2.Span],
    service: str = "e2e",
    resource_attrs: dict[str, Any] | None = None,
    scope: str = "e2e-tests",
    scope_version: str = "",
) -> trace_service_pb2.ExportTraceServiceRequest:
    """One resource (service.name = `service`) with one scope holding `spans`."""
    res_attrs = {"service.name": service}
    res_attrs.update(resource_attrs or {})
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[kv(k, v) for k, v in res_attrs.items()]),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name=scope, version=scope_version),
                        spans=list(spans),
                    )
                ],
            )
        ]
    )


def merge_traces_requests(*requests: trace_service_pb2.ExportTraceServiceRequest) -> trace_service_pb2.ExportTraceServiceRequest:
    """One request holding the resources of all given requests (several services in one export)."""
    out = trace_service_pb2.ExportTraceServiceRequest()
    for r in requests:
        out.resource_spans.extend(r.resource_spans)
    return out


def parse_traces_response(data: bytes) -> trace_service_pb2.ExportTraceServiceResponse:
    resp = trace_service_pb2.ExportTraceServiceResponse()
    resp.ParseFromString(data)
    return resp


def grpc_export_traces(
    channel: grpc.Channel,
    request: trace_service_pb2.ExportTraceServiceRequest,
    metadata: list[tuple[str, str]] | None = None,
    timeout: float = 30,
) -> trace_service_pb2.ExportTraceServiceResponse:
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    return stub.Export(request, metadata=metadata, timeout=timeout)


def grpc_raw_call(channel: grpc.Channel, method: str, body: bytes, metadata: list[tuple[str, str]] | None = None, timeout: float = 30) -> bytes:
    """A unary call that sends `body` as is (identity serializers)."""
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(body, metadata=metadata, timeout=timeout)


# ----- hand-encoded protobuf, for shapes the protobuf library refuses to build ----------
# (upb caps message nesting at 100 when copying sub-messages.)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_kvlist_bytes(depth: int, leaf: str = "leaf") -> bytes:
    """An encoded AnyValue that is `depth` kvlist levels around a string."""
    v = len_field(1, leaf.encode())  # AnyValue.string_value
    for _ in range(depth):
        key_value = len_field(1, b"k") + len_field(2, v)  # KeyValue.key, KeyValue.value
        v = len_field(6, len_field(1, key_value))  # AnyValue.kvlist_value{values: [kv]}
    return v


def nested_array_bytes(depth: int, leaf: str = "leaf") -> bytes:
    """An encoded AnyValue that is `depth` array levels around a string."""
    v = len_field(1, leaf.encode())
    for _ in range(depth):
        v = len_field(5, len_field(1, v))  # AnyValue.array_value{values: [v]}
    return v


def record_with_attr_bytes(record: logs_pb2.LogRecord, key: str, value_bytes: bytes) -> bytes:
    """`record` encoded, plus one attribute whose encoded AnyValue is given."""
    return record.SerializeToString() + len_field(6, len_field(1, key.encode()) + len_field(2, value_bytes))


def record_with_body_bytes(record: logs_pb2.LogRecord, body_bytes: bytes) -> bytes:
    """`record` (without body) encoded, with the encoded AnyValue as its body."""
    r = logs_pb2.LogRecord()
    r.CopyFrom(record)
    r.ClearField("body")
    return r.SerializeToString() + len_field(5, body_bytes)


def logs_request_bytes(records: list[bytes], service: str = "e2e", scope: str = "e2e-tests") -> bytes:
    """An ExportLogsServiceRequest around already-encoded log records."""
    empty = logs_request([], service=service, scope=scope).resource_logs[0]
    scope_logs = empty.scope_logs[0].SerializeToString() + b"".join(len_field(2, r) for r in records)
    res = logs_pb2.ResourceLogs(resource=empty.resource).SerializeToString() + len_field(2, scope_logs)
    return len_field(1, res)


def nested_kvlist_json(depth: int, leaf: str = "leaf") -> dict[str, Any]:
    v: dict[str, Any] = {"stringValue": leaf}
    for _ in range(depth):
        v = {"kvlistValue": {"values": [{"key": "k", "value": v}]}}
    return v


def hit_attr(hit: dict[str, Any], key: str) -> Any:
    """An attribute of a search hit: flat dotted key, or nested objects."""
    attrs = hit.get("attributes") or {}
    if key in attrs:
        return attrs[key]
    cur: Any = attrs
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def as_int(v: Any) -> int:
    """An integer attribute as the API returns it (a JSON number, or a string per OTLP/JSON int64)."""
    if isinstance(v, dict) and "intValue" in v:
        v = v["intValue"]
    if isinstance(v, bool):
        raise TypeError(f"not an int: {v!r}")
    return int(v)
