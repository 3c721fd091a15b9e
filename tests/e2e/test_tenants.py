"""Tenants: X-Scope-OrgID (HTTP header or gRPC metadata) separates data on
disk and in every query; invalid tenant ids are refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from conftest import Collector, unique
from otlp_util import grpc_channel, grpc_export_logs, log_record, logs_request, now_ns, span, traces_request
from test_remote_write import post, snappy, timeseries, write_request
from trace_util import FAST_TRACE_ARGS, fetch_trace, stored_span_keys


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
        assert (data / "tenants" / t / "logs").is_dir(), f"no tenants/{t}/logs in the data dir: {sorted(str(p.relative_to(data)) for p in data.rglob('*'))[:50]}"


@pytest.mark.parametrize("tenant", ["../x", "a/b", "..", "x" * 151])
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


# ----- Tenants cannot collide with Periscope's own files; one failing tenant stops no one -----

OWN_NAMES = ["periscope.json", "periscope.lock", "wal", "tenants", "manifest.json"]
FAST = [*FAST_TRACE_ARGS, "--metrics-flush-interval", "1s"]


def send_all(c: Collector, tenant: str, word: str, trace_id: bytes) -> None:
    """One log record, one span and one remote-write sample of `tenant`."""
    h = {"X-Scope-OrgID": tenant}
    r = c.post_otlp("/v1/logs", logs_request([log_record(word)]).SerializeToString(), headers=h)
    assert r.status_code == 200, r.text[:300]
    now = now_ns()
    sp = span(trace_id, b"\x01" * 8, word, now - 1_000_000, now, kind="server")
    r = c.post_otlp("/v1/traces", traces_request([sp], service=word).SerializeToString(), headers=h)
    assert r.status_code == 200, r.text[:300]
    body = write_request([timeseries({"__name__": "tenant_probe", "word": word}, [(1.0, now // 1_000_000)])])
    r = post(c, snappy(body), tenant=tenant)
    assert r.status_code == 204, r.text[:300]


def manifest_files(data: Path, tenant: str, store: str) -> list[dict]:
    m = data / "tenants" / tenant / store / "manifest.json"
    return json.loads(m.read_text())["files"] if m.is_file() else []


def wait_for(what: str, cond, timeout: float = 60.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_tenants_named_like_periscopes_own_files_are_ordinary(collectors) -> None:  # noqa: ANN001
    c = collectors(args=FAST).start()
    data = c.data_dir
    assert data is not None
    words = {t: unique("own") for t in [*OWN_NAMES, "default"]}
    tids = {t: bytes([i + 1]) * 16 for i, t in enumerate(words)}
    for t, w in words.items():
        send_all(c, t, w, tids[t])
    for t, w in words.items():
        assert [h["body"] for h in c.search_until(lambda h: len(h) >= 1, tenant=t, q=w)] == [w], t
        wait_for(f"{t}'s spans and samples in files", lambda t=t: manifest_files(data, t, "traces") and manifest_files(data, t, "metrics"))
        assert fetch_trace(c, tids[t].hex(), tenant=t) is not None, t
    assert json.loads((data / "periscope.json").read_text()) == {"format_version": 2}
    assert (data / "periscope.lock").is_file() and (data / "wal").is_dir()
    assert c.metric_sum("periscope_flush_failures_total") == 0
    # The tenants survive a restart, the data dir's own files too.
    c.stop_ok()
    c2 = collectors(data_dir=data, args=FAST).start()
    for t, w in words.items():
        assert [h["body"] for h in c2.search(tenant=t, q=w)["hits"]] == [w], t
        assert fetch_trace(c2, tids[t].hex(), tenant=t) is not None, t


def test_a_tenant_that_cannot_be_written_does_not_stop_the_others(collectors, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    # As root, permissions do not stop writes; a file where a directory goes does.
    for store in ("traces", "metrics"):
        (data / "tenants" / "broken").mkdir(parents=True, exist_ok=True)
        (data / "tenants" / "broken" / store).write_text("not a directory")
    c = collectors(data_dir=data, args=FAST).start()
    broken_word, broken_tid = unique("broken"), b"\xb0" * 16
    send_all(c, "broken", broken_word, broken_tid)
    wait_for("a failed trace and metric flush", lambda: c.metric_sum("periscope_flush_failures_total", signal="traces") >= 1
             and c.metric_sum("periscope_flush_failures_total", signal="metrics") >= 1)
    # Other tenants keep flushing, again and again.
    for i in range(3):
        word, tid = unique("healthy"), bytes([0xC0 + i]) * 16
        send_all(c, "healthy", word, tid)
        wait_for("the healthy tenant's spans in files", lambda tid=tid: tid.hex() in {k[0] for k in stored_span_keys(data, "healthy")[1]})
        assert fetch_trace(c, tid.hex(), tenant="healthy") is not None
    wait_for("the healthy tenant's samples in files", lambda: manifest_files(data, "healthy", "metrics"))
    assert c.metric_sum("periscope_flush_failing_tenants", signal="traces") == 1
    # The broken tenant's data is held (answered from memory), not lost.
    assert fetch_trace(c, broken_tid.hex(), tenant="broken") is not None
    assert "failed to write a tenant's traces" in c.stderr_text(), c.stderr_tail()

    # The obstacle gone, the retry writes it (backoff at most a minute).
    for store in ("traces", "metrics"):
        (data / "tenants" / "broken" / store).unlink()
    wait_for("the broken tenant's spans and samples in files", lambda: manifest_files(data, "broken", "traces") and manifest_files(data, "broken", "metrics"), timeout=120)
    wait_for("no failing tenant", lambda: c.metric_sum("periscope_flush_failing_tenants") == 0, timeout=120)
    assert broken_tid.hex() in {k[0] for k in stored_span_keys(data, "broken")[1]}
