"""The standard gRPC health service answers SERVING for the server and each OTLP service."""

import grpc
import pytest

from otlp_util import grpc_channel, grpc_raw_call, len_field

SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


@pytest.mark.parametrize(
    "service",
    [
        "",
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
    ],
)
def test_grpc_health_serving(collector, service: str) -> None:
    request = len_field(1, service.encode()) if service else b""
    with grpc_channel(collector.grpc_target) as ch:
        assert grpc_raw_call(ch, "/grpc.health.v1.Health/Check", request) == SERVING


def test_grpc_health_unknown_service_is_not_found(collector) -> None:
    with grpc_channel(collector.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            grpc_raw_call(ch, "/grpc.health.v1.Health/Check", len_field(1, b"no.such.Service"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
