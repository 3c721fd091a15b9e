"""Tenants: X-Scope-OrgID (HTTP header or gRPC metadata) separates data on
disk and in every query; invalid tenant ids are refused."""

from __future__ import annotations

import grpc
import pytest
from conftest import Collector, unique
from otlp_util import grpc_channel, grpc_export_logs, log_record, logs_request


def test_tenants_see_only_their_own_records(collector: Collector) -> None:
    c = collector
    shared = unique("shared")
    tok = {t: unique(t.replace("-", "")) for t in ("team-a", "team-b", "default")}
    svc = {t: f"svc-{t}-{unique('s')}" for t in tok}
    trace = {"team-a": bytes([0xA] * 16), "team-b": bytes([0xB] * 16), "default": bytes([0xD] * 16)}

    def req(t: str):
        return logs_request([log_record(f"{shared} {tok[t]}", trace_id=trace[t], span_id=b"\x01" * 8)], service=svc[t])

    r = c.post_otlp("/v1/logs", req("team-a").SerializeToString(), headers={"X-Scope-OrgID": "team-a"})
    assert r.status_code == 200, r.content
    with grpc_channel(c.grpc_target) as ch:
        grpc_export_logs(ch, req("team-b"), metadata=[("x-scope-orgid", "team-b")])
    r = c.post_otlp("/v1/logs", req("default").SerializeToString())
    assert r.status_code == 200, r.content

    for t in ("team-a", "team-b", "default"):
        header = None if t == "default" else t
        hits = c.search_until(lambda h: len(h) >= 1, tenant=header, q=shared)
        # Give the other tenants' records time to (wrongly) show up too.
        if t == "team-a":
            for other in ("team-b", "default"):
                c.search_until(lambda h: len(h) >= 1, tenant=None if other == "default" else other, q=shared)
        hits = c.search(tenant=header, q=shared)["hits"]
        assert [h["body"] for h in hits] == [f"{shared} {tok[t]}"], f"tenant {t} sees: {hits}"
        assert [h["service"] for h in hits] == [svc[t]]
        # Filters don't cross tenants either.
        for other in tok:
            if other == t:
                continue
            assert c.search(tenant=header, service=svc[other])["hits"] == [], f"{t} sees {other}'s service"
            assert c.search(tenant=header, trace_id=trace[other].hex())["hits"] == [], f"{t} sees {other}'s trace"
            assert c.search(tenant=header, q=tok[other])["hits"] == [], f"{t} sees {other}'s record"
        services = c.get("/api/v1/services", tenant=header).json()["services"]
        assert svc[t] in services and not any(svc[o] in services for o in tok if o != t), f"{t} services: {services}"
        total = c.histogram_total(tenant=header, q=shared)
        assert total == 1, f"{t} histogram counts {total} records for the shared term"

    # Explicit `default` is the same tenant as no header.
    hits = c.search(tenant="default", q=shared)["hits"]
    assert [h["body"] for h in hits] == [f"{shared} {tok['default']}"], hits

    # An unknown tenant sees nothing.
    assert c.search(tenant="team-c", q=shared)["hits"] == []

    data = c.data_dir
    assert data is not None
    for t in ("team-a", "team-b"):
        assert (data / t / "logs").is_dir(), f"no {t}/logs in the data dir: {sorted(str(p.relative_to(data)) for p in data.iterdir())}"


@pytest.mark.parametrize("tenant", ["../x", "a/b", "wal", "x" * 151])
def test_invalid_tenant_ids_are_refused(collector: Collector, tenant: str) -> None:
    c = collector
    body = logs_request([log_record("bad tenant")]).SerializeToString()
    r = c.post_otlp("/v1/logs", body, headers={"X-Scope-OrgID": tenant})
    assert r.status_code == 400, f"ingest with tenant {tenant!r} -> {r.status_code}: {r.content[:300]!r}"

    r = c.get("/api/v1/logs/search", params={"q": "x"}, tenant=tenant)
    assert r.status_code == 400, f"search with tenant {tenant!r} -> {r.status_code}: {r.text[:300]}"
    assert isinstance(r.json().get("error"), str) and r.json()["error"], r.text

    with grpc_channel(c.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            grpc_export_logs(ch, logs_request([log_record("bad tenant")]), metadata=[("x-scope-orgid", tenant)])
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{ei.value.code()}: {ei.value.details()}"

    if tenant == "../x":
        assert c.data_dir is not None and not (c.data_dir.parent / "x").exists(), "a tenant id escaped the data dir"
