"""A torn or corrupt WAL tail: the collector starts, warns, and keeps the rest.

Records are acknowledged while indexing is slowed down (--test-index-delay-ms),
then the collector is SIGKILLed so the WAL alone holds them. The newest WAL
segment is damaged (its last frame cut in the middle, or garbage appended) and
the collector restarted: it must come up, warn about the torn/corrupt tail on
stderr, and serve every record before the damage. Records written after that
must survive a further crash (the damaged tail must really be cut off, not
left in front of new frames).
"""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path

import pytest
import requests
from conftest import Collector, unique
from otlp_util import as_int, hit_attr, log_record, logs_request, parse_logs_response

N_REQUESTS = 8
# Long enough that the last requests are not indexed (let alone committed)
# when the collector is killed; short because it may also slow acknowledgements.
INDEX_DELAY_MS = "500"
PER_REQUEST = 20
WAL_MAGIC = b"PSCWAL"
WAL_HEADER = 8
FRAME_HEADER = 16


def send(c: Collector, run: str, req: int) -> None:
    records = [
        log_record(f"torn test {run} req{req} rec{j}", attrs={"run": run, "seq": req * PER_REQUEST + j, "req": req})
        for j in range(PER_REQUEST)
    ]
    r = c.post_otlp("/v1/logs", logs_request(records, service="torn-test").SerializeToString())
    assert r.status_code == 200, f"request {req} -> {r.status_code}: {r.text[:300]}"
    assert parse_logs_response(r.content).partial_success.rejected_log_records == 0


def segment_key(p: Path) -> tuple[int, str]:
    m = re.match(r"^(\d+)", p.stem)
    return (int(m.group(1)) if m else -1, p.name)


def newest_segment(data_dir: Path) -> Path:
    segs = sorted((data_dir / "wal").glob("*.wal"), key=segment_key)
    assert segs, f"no WAL segment in {data_dir / 'wal'}: {list((data_dir).rglob('*'))[:50]}"
    nonempty = [s for s in segs if s.stat().st_size > WAL_HEADER]
    assert nonempty, f"every WAL segment is empty: {[(s.name, s.stat().st_size) for s in segs]}"
    return nonempty[-1]


def last_frame_start(data: bytes) -> int | None:
    """Offset of the last complete frame, when the segment is in the documented format."""
    if not data.startswith(WAL_MAGIC):
        return None
    off, last = WAL_HEADER, None
    while off + FRAME_HEADER <= len(data):
        (length,) = struct.unpack_from("<I", data, off)
        end = off + FRAME_HEADER + length
        if end > len(data):
            break
        last, off = off, end
    return last


def seqs_of(hits: list[dict]) -> list[int]:
    return [as_int(hit_attr(h, "seq")) for h in hits]


@pytest.mark.parametrize("damage", ["cut_last_frame", "garbage_tail"])
def test_torn_wal_tail_is_cut_and_the_rest_kept(collectors, tmp_path, damage: str) -> None:
    data_dir = tmp_path / "data"
    run = unique("torn")
    c1: Collector = collectors(data_dir=data_dir, args=["--test-index-delay-ms", INDEX_DELAY_MS], name="slow").start()
    t0 = time.monotonic()
    for req in range(N_REQUESTS):
        send(c1, run, req)
    c1.kill()
    print(f"{N_REQUESTS} requests acknowledged in {time.monotonic() - t0:.1f}s, then SIGKILL")

    seg = newest_segment(data_dir)
    data = seg.read_bytes()
    if damage == "cut_last_frame":
        start = last_frame_start(data)
        cut = (start + (len(data) - start) // 2) if start is not None else len(data) - 7
        assert 0 < cut < len(data)
        with open(seg, "r+b") as f:
            f.truncate(cut)
        expected = set(range((N_REQUESTS - 1) * PER_REQUEST))
    else:
        with open(seg, "ab") as f:
            f.write(b"\xde\xad\xbe\xef torn write garbage \x00\x01\x02" * 3)
        expected = set(range(N_REQUESTS * PER_REQUEST))
    print(f"damaged {seg.name} ({len(data)} bytes) by {damage}")

    c2: Collector = collectors(data_dir=data_dir, name="after-damage").start()
    stderr = c2.stderr_text()
    assert re.search(r"torn|corrupt", stderr, re.IGNORECASE), f"no warning about the torn tail on stderr:\n{c2.stderr_tail()}"

    q = f"attributes.run:{run}"
    hits = c2.search_until(lambda h: expected <= set(seqs_of(h)), timeout=60, all_pages=True, q=q)
    seqs = seqs_of(hits)
    assert len(seqs) == len(set(seqs)), f"duplicates after replay: {sorted(seqs)}"
    assert set(seqs) <= set(range(N_REQUESTS * PER_REQUEST))

    # Records written after the repair survive another crash.
    run2 = unique("torn")
    send(c2, run2, 0)
    c2.kill()
    c3: Collector = collectors(data_dir=data_dir, name="after-second-crash").start()
    c3.search_until(lambda h: len(h) == PER_REQUEST, timeout=60, all_pages=True, q=f"attributes.run:{run2}")
    hits = c3.search_until(lambda h: expected <= set(seqs_of(h)), timeout=60, all_pages=True, q=q)
    assert len(seqs_of(hits)) == len(set(seqs_of(hits)))


def test_readyz_503_until_replay_finished(collectors, tmp_path) -> None:
    """While the WAL replays (slowed by --test-index-delay-ms) /readyz says 503, then 200."""
    data_dir = tmp_path / "data"
    run = unique("ready")
    c1: Collector = collectors(data_dir=data_dir, args=["--test-index-delay-ms", INDEX_DELAY_MS], name="slow").start()
    for req in range(N_REQUESTS):
        send(c1, run, req)
    c1.kill()

    c2: Collector = collectors(data_dir=data_dir, args=["--test-index-delay-ms", "1000"], name="replaying")
    c2.spawn()
    c2.wait_listening()
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            r = c2.session.get(c2.http_url("/readyz"), timeout=5)
            statuses.append(r.status_code)
            if r.status_code == 200:
                break
        except requests.ConnectionError:
            statuses.append("refused")
        time.sleep(0.05)
    assert statuses and statuses[-1] == 200, f"/readyz never 200: {statuses[-10:]}"
    assert 503 in statuses, f"/readyz was never 503 during a replay of {N_REQUESTS} slow entries: {statuses[:20]}"
    assert c2.get("/healthz").status_code == 200
    c2.search_until(lambda h: len(h) == N_REQUESTS * PER_REQUEST, timeout=60, all_pages=True, q=f"attributes.run:{run}")
