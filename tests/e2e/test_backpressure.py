"""Backpressure: a tiny in-flight budget and slow indexing make the collector
refuse work (HTTP 429 with Retry-After, gRPC RESOURCE_EXHAUSTED); clients that
retry as told get everything stored exactly once.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time

import grpc
from conftest import Collector, http_session, unique
from otlp_util import as_int, grpc_channel, grpc_export_logs, hit_attr, log_record, logs_request, parse_logs_response

HTTP_CLIENTS = 4
GRPC_CLIENTS = 2
BATCHES_PER_CLIENT = 10
PER_BATCH = 150
DEADLINE_S = 150
MAX_RETRY_AFTER_S = 10


def retry_after_seconds(value: str | None) -> float:
    assert value is not None, "429 without Retry-After"
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = email.utils.parsedate_to_datetime(value)  # an HTTP date is allowed too
    return max(0.0, when.timestamp() - time.time())


def test_backpressure_refuses_then_stores_everything_once(collectors) -> None:
    c: Collector = collectors(args=["--max-inflight-bytes", "64KiB", "--test-index-delay-ms", "200"]).start()
    run = unique("bp")
    lock = threading.Lock()
    stats = {"http_429": 0, "grpc_exhausted": 0, "acked_batches": 0, "retry_after": []}
    errors: list[str] = []
    deadline = time.monotonic() + DEADLINE_S

    def batch(client: int, b: int):
        base = (client * BATCHES_PER_CLIENT + b) * PER_BATCH
        return logs_request(
            [
                log_record(f"backpressure client{client} batch{b} record{j} " + "payload " * 8, attrs={"run": run, "seq": base + j})
                for j in range(PER_BATCH)
            ],
            service="backpressure",
        )

    def http_client(client: int) -> None:
        s = http_session()
        for b in range(BATCHES_PER_CLIENT):
            body = batch(client, b).SerializeToString()
            while True:
                if time.monotonic() > deadline:
                    errors.append(f"http client {client} batch {b}: deadline")
                    return
                try:
                    r = s.post(c.otlp_url("/v1/logs"), data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"http client {client} batch {b}: {e!r}")
                    return
                if r.status_code == 200:
                    resp = parse_logs_response(r.content)
                    if resp.partial_success.rejected_log_records:
                        errors.append(f"http client {client} batch {b}: partial success {resp.partial_success}")
                    with lock:
                        stats["acked_batches"] += 1
                    break
                if r.status_code == 429:
                    try:
                        wait = retry_after_seconds(r.headers.get("Retry-After"))
                    except (AssertionError, ValueError, TypeError) as e:
                        errors.append(f"http client {client}: bad Retry-After {r.headers.get('Retry-After')!r}: {e}")
                        return
                    with lock:
                        stats["http_429"] += 1
                        stats["retry_after"].append(wait)
                    time.sleep(min(wait, MAX_RETRY_AFTER_S) + random.uniform(0, 0.05))
                    continue
                errors.append(f"http client {client} batch {b}: unexpected {r.status_code} {r.content[:200]!r}")
                return

    def grpc_client(client: int) -> None:
        with grpc_channel(c.grpc_target) as ch:
            for b in range(BATCHES_PER_CLIENT):
                req = batch(client, b)
                backoff = 0.05
                while True:
                    if time.monotonic() > deadline:
                        errors.append(f"grpc client {client} batch {b}: deadline")
                        return
                    try:
                        resp = grpc_export_logs(ch, req, timeout=30)
                    except grpc.RpcError as e:
                        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            with lock:
                                stats["grpc_exhausted"] += 1
                            time.sleep(backoff * random.uniform(0.5, 1.5))
                            backoff = min(backoff * 2, 1.0)
                            continue
                        errors.append(f"grpc client {client} batch {b}: {e.code()} {e.details()}")
                        return
                    if resp.partial_success.rejected_log_records:
                        errors.append(f"grpc client {client} batch {b}: partial success {resp.partial_success}")
                    with lock:
                        stats["acked_batches"] += 1
                    break

    threads = [threading.Thread(target=http_client, args=(i,), daemon=True) for i in range(HTTP_CLIENTS)]
    threads += [threading.Thread(target=grpc_client, args=(HTTP_CLIENTS + i,), daemon=True) for i in range(GRPC_CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S + 40)
    print(f"clients done in {time.monotonic() - t0:.1f}s: {stats['acked_batches']} batches, {stats['http_429']} x 429, "
          f"{stats['grpc_exhausted']} x RESOURCE_EXHAUSTED, retry-after values {sorted(set(stats['retry_after']))}")
    assert not errors, errors[:10]
    n_clients = HTTP_CLIENTS + GRPC_CLIENTS
    assert stats["acked_batches"] == n_clients * BATCHES_PER_CLIENT
    assert stats["http_429"] > 0, "no HTTP client was ever refused with 429: backpressure did not engage"
    assert stats["grpc_exhausted"] > 0, "no gRPC client was ever refused with RESOURCE_EXHAUSTED"

    refused = c.metric_sum("periscope_refused_records_total")
    assert refused > 0, "periscope_refused_records_total is 0 after refusals"
    # HTTP bodies are charged as they arrive, so most HTTP refusals come
    # before the body is read and its records cannot be counted.
    assert c.metric_sum("periscope_refused_requests_total", transport="http") > 0
    assert c.metric_sum("periscope_refused_records_total", transport="grpc") > 0

    total = n_clients * BATCHES_PER_CLIENT * PER_BATCH
    c.search_count_until(total, timeout=90, q=f"attributes.run:{run}")
    time.sleep(2)  # let any duplicate show up before counting
    hits = c.search_all(q=f"attributes.run:{run}")
    seqs = [as_int(hit_attr(h, "seq")) for h in hits]
    assert len(seqs) == len(set(seqs)), f"{len(seqs) - len(set(seqs))} records stored twice"
    assert set(seqs) == set(range(total)), f"missing {sorted(set(range(total)) - set(seqs))[:20]}"
