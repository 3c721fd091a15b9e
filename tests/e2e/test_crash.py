"""Crash safety: nothing acknowledged is lost, nothing is stored twice.

Clients stream 50,000+ log records (500 per OTLP/HTTP protobuf request), each
with a unique `seq` attribute and a common `run` attribute. After ~20,000 are
acknowledged, another thread SIGKILLs the collector while the clients keep
sending. The collector restarts on the same data dir (fresh ports) and must
hold every acknowledged `seq` exactly once; a further clean restart must not
change that.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Any

import requests
from conftest import Collector, unique
from otlp_util import as_int, hit_attr, log_record, logs_request, parse_logs_response

BATCH = 500
PHASE1_BATCHES = 100  # 50,000 records, some refused while the collector is dead
PHASE2_BATCHES = 10  # sent after the restart; must all be acknowledged
KILL_AFTER_ACKED = 20_000
SENDERS = 2
# Pause between requests of one sender: ~10k records/s, so that the kill comes
# mid-stream and after the index has committed part of what was acknowledged.
SEND_PAUSE_S = 0.1


def build_batch(run: str, batch: int) -> bytes:
    base = time.time_ns()
    records = [
        log_record(
            f"crash record seq{batch * BATCH + j} of {run}",
            attrs={"run": run, "seq": batch * BATCH + j, "batch": batch},
            time_ns=base + j,
        )
        for j in range(BATCH)
    ]
    return logs_request(records, service="crash-test").SerializeToString()


def wait_all_acked_visible(c: Collector, run: str, acked: set[int], timeout: float) -> list[dict[str, Any]]:
    """Polls (cheaply via the histogram when possible) until every acked seq is found; returns all hits."""
    deadline = time.monotonic() + timeout
    q = f"attributes.run:{run}"
    while True:
        total = c.histogram_total(q=q)
        if total is None or total >= len(acked):
            hits = c.search_all(q=q)
            found = {as_int(hit_attr(h, "seq")) for h in hits}
            if acked <= found:
                return hits
            missing = sorted(acked - found)
        else:
            missing = [f"histogram total {total} < {len(acked)} acknowledged"]  # type: ignore[list-item]
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s, acknowledged records are missing: {len(missing)} e.g. {missing[:20]}")
        time.sleep(1)


def check_exactly_once(hits: list[dict[str, Any]], acked: set[int], sent: set[int]) -> None:
    seqs = Counter(as_int(hit_attr(h, "seq")) for h in hits)
    dups = {s: n for s, n in seqs.items() if n > 1}
    assert not dups, f"{len(dups)} seqs stored more than once, e.g. {sorted(dups.items())[:20]}"
    missing = acked - set(seqs)
    assert not missing, f"{len(missing)} acknowledged seqs missing, e.g. {sorted(missing)[:20]}"
    invented = set(seqs) - sent
    assert not invented, f"records that were never sent: {sorted(invented)[:20]}"


def test_sigkill_mid_stream_loses_and_duplicates_nothing(collectors, tmp_path) -> None:
    run = unique("run")
    data_dir = tmp_path / "data"
    first: Collector = collectors(data_dir=data_dir, name="first").start()

    t0 = time.monotonic()
    bodies = [build_batch(run, b) for b in range(PHASE1_BATCHES + PHASE2_BATCHES)]
    print(f"built {len(bodies)} batches in {time.monotonic() - t0:.1f}s")

    lock = threading.Lock()
    acked_batches: set[int] = set()
    failed_batches: dict[int, str] = {}
    problems: list[str] = []
    next_batch = itertools.count()
    url = first.otlp_url("/v1/logs")

    def sender() -> None:
        s = requests.Session()
        s.trust_env = False
        while True:
            with lock:
                b = next(next_batch)
            if b >= PHASE1_BATCHES:
                return
            try:
                r = s.post(url, data=bodies[b], headers={"Content-Type": "application/x-protobuf"}, timeout=30)
            except requests.RequestException as e:
                with lock:
                    failed_batches[b] = type(e).__name__
                continue
            with lock:
                if r.status_code == 200:
                    resp = parse_logs_response(r.content)
                    if resp.partial_success.rejected_log_records:
                        problems.append(f"batch {b}: partial success {resp.partial_success}")
                    acked_batches.add(b)
                else:
                    failed_batches[b] = f"{r.status_code} {r.text[:100]}"
            time.sleep(SEND_PAUSE_S)

    killed_at: list[int] = []
    visible_at_kill: list[int] = []

    def killer() -> None:
        # Kill once ~20k records are acknowledged and some of them are already
        # in a committed index (so replay must skip those and add the rest).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                n = len(acked_batches) * BATCH
            if n >= KILL_AFTER_ACKED:
                try:
                    visible = len(first.search(q=f"attributes.run:{run}", limit=1)["hits"])
                except Exception:  # noqa: BLE001
                    visible = 0
                if visible:
                    total = first.histogram_total(q=f"attributes.run:{run}")
                    with lock:
                        killed_at.append(len(acked_batches) * BATCH)
                    first.kill()
                    visible_at_kill.append(total if total is not None else -1)
                    return
            time.sleep(0.02)

    t0 = time.monotonic()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    kt = threading.Thread(target=killer, daemon=True)
    kt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    kt.join(130)
    assert killed_at, f"never reached {KILL_AFTER_ACKED} acknowledged records (acked {len(acked_batches)} batches, failures {failed_batches})"
    assert first.proc is not None and first.proc.returncode == -9
    assert not problems, problems
    print(
        f"phase 1: {time.monotonic() - t0:.1f}s, killed at {killed_at[0]} acked records "
        f"({visible_at_kill[0]} searchable just before); "
        f"acked {len(acked_batches)} batches, failed {len(failed_batches)}"
    )
    # The crash must have happened mid-stream, not after everything was sent.
    assert len(failed_batches) > 0, "no request failed: the kill came too late to test anything"

    second: Collector = collectors(data_dir=data_dir, name="second").start()
    # The restarted collector takes new records alongside the replayed ones.
    for b in range(PHASE1_BATCHES, PHASE1_BATCHES + PHASE2_BATCHES):
        r = second.post_otlp("/v1/logs", bodies[b])
        assert r.status_code == 200, f"batch {b} after restart -> {r.status_code}: {r.text[:300]}"
        acked_batches.add(b)

    acked = {b * BATCH + j for b in acked_batches for j in range(BATCH)}
    sent = {s for s in range((PHASE1_BATCHES + PHASE2_BATCHES) * BATCH)}
    hits = wait_all_acked_visible(second, run, acked, timeout=90)
    # Give any late (duplicate) replay a moment to show up, then count exactly.
    time.sleep(3)
    hits = second.search_all(q=f"attributes.run:{run}")
    check_exactly_once(hits, acked, sent)
    n_after_crash = len(hits)
    print(f"after restart: {n_after_crash} records stored, {len(acked)} acknowledged")

    # A clean stop and start must neither lose nor re-add anything.
    second.stop_ok()
    third: Collector = collectors(data_dir=data_dir, name="third").start()
    hits = wait_all_acked_visible(third, run, acked, timeout=60)
    time.sleep(2)
    hits = third.search_all(q=f"attributes.run:{run}")
    check_exactly_once(hits, acked, sent)
    assert len(hits) == n_after_crash, f"{n_after_crash} records before the clean restart, {len(hits)} after"


def test_sigterm_right_after_acks_drains_and_keeps_everything(collectors, tmp_path) -> None:
    """SIGTERM straight after acknowledgements: exit 0 within 10 s, nothing lost or doubled."""
    run = unique("term")
    data_dir = tmp_path / "data"
    c: Collector = collectors(data_dir=data_dir, name="term").start()
    n_batches = 20
    for b in range(n_batches):
        r = c.post_otlp("/v1/logs", build_batch(run, b))
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    t0 = time.monotonic()
    c.stop_ok()
    print(f"drained and exited in {time.monotonic() - t0:.1f}s")

    c2: Collector = collectors(data_dir=data_dir, name="term-restart").start()
    acked = set(range(n_batches * BATCH))
    hits = wait_all_acked_visible(c2, run, acked, timeout=60)
    time.sleep(2)
    hits = c2.search_all(q=f"attributes.run:{run}")
    check_exactly_once(hits, acked, acked)
