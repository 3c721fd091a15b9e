"""A full disk: ingest refuses with a retry hint, queries keep answering, and
ingest resumes by itself once space returns, with nothing acknowledged lost.

The data dir lives on a small tmpfs mounted for the test (needs root, as in
CI; skipped otherwise). A filler file takes the remaining space: log exports
get 503 with Retry-After (OTLP/HTTP) and UNAVAILABLE (OTLP/gRPC), searches
still answer 200. Records acknowledged just before the disk filled have not
been committed to the index yet, so the index's own commit fails too and must
be retried. The filler is deleted; exports succeed again without a restart,
every acknowledged record is searchable exactly once, and again after a restart.
"""

from __future__ import annotations

import base64
import errno
import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from conftest import Collector, unique
from otlp_util import as_int, grpc_channel, grpc_export_logs, hit_attr, log_record, logs_request

PER_REQUEST = 5
# Bodies that zstd cannot shrink below a page: a refused WAL frame cannot
# squeeze into the last partly used page of a segment.
BODY_BYTES = 6000
RESUME_DEADLINE_S = 60


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the disk-full test needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Writes a filler file until the disk refuses more, down to the last byte."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 64 << 10, 4096, 1):
            chunk = b"\xa5" * size
            while True:
                try:
                    f.write(chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    return filler


def request(run: str, seq: int):
    records = [
        log_record(
            f"disk full {run} {base64.b64encode(os.urandom(BODY_BYTES)).decode()}",
            attrs={"run": run, "seq": seq * PER_REQUEST + j},
        )
        for j in range(PER_REQUEST)
    ]
    return logs_request(records, service="disk-full")


def post(c: Collector, run: str, seq: int):
    return c.post_otlp("/v1/logs", request(run, seq).SerializeToString())


def acked_seqs(seq: int) -> set[int]:
    return set(range(seq * PER_REQUEST, (seq + 1) * PER_REQUEST))


def check_searchable(c: Collector, run: str, acked: set[int]) -> None:
    hits = c.search_until(lambda h: acked <= {as_int(hit_attr(x, "seq")) for x in h}, all_pages=True, q=f"attributes.run:{run}")
    seqs = [as_int(hit_attr(x, "seq")) for x in hits]
    assert len(seqs) == len(set(seqs)), f"duplicates: {sorted(seqs)}"


def test_full_disk_refuses_ingest_retryably_and_resumes_by_itself(collectors, small_disk: Path) -> None:
    data_dir = small_disk / "data"
    run = unique("diskfull")
    c: Collector = collectors(data_dir=data_dir, name="disk-full").start()
    acked: set[int] = set()
    seq = 0
    for _ in range(4):
        r = post(c, run, seq)
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
        acked |= acked_seqs(seq)
        seq += 1
    check_searchable(c, run, acked)

    # Acknowledged but not yet committed to the index when the disk fills.
    r = post(c, run, seq)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    acked |= acked_seqs(seq)
    seq += 1
    filler = fill(small_disk)

    refused = 0
    for _ in range(6):
        r = post(c, run, seq)
        if r.status_code == 200:
            # Space a deletion freed meanwhile: acknowledged, so it must be kept.
            acked |= acked_seqs(seq)
        else:
            assert r.status_code == 503, f"{r.status_code}: {r.text[:300]}"
            assert r.headers.get("Retry-After"), f"no Retry-After: {dict(r.headers)}"
            assert "retry" in r.text.lower(), r.text[:300]
            refused += 1
        seq += 1
    assert refused >= 5, f"only {refused} of 6 exports refused on a full disk"

    with grpc_channel(c.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            grpc_export_logs(ch, request(run, seq))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    seq += 1

    # Queries answer while the disk is full.
    page = c.search(q=f"attributes.run:{run}", limit=10)
    assert page["hits"], "search on a full disk returned nothing"
    assert c.metric_sum("periscope_wal_disk_full") == 1
    assert c.running()

    filler.unlink()
    deadline = time.monotonic() + RESUME_DEADLINE_S
    while True:
        r = post(c, run, seq)
        if r.status_code == 200:
            acked |= acked_seqs(seq)
            seq += 1
            break
        assert r.status_code == 503, f"{r.status_code}: {r.text[:300]}"
        assert time.monotonic() < deadline, f"ingest did not resume after space returned: {r.text[:300]}"
        seq += 1
        time.sleep(0.5)
    for _ in range(3):
        r = post(c, run, seq)
        assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
        acked |= acked_seqs(seq)
        seq += 1

    check_searchable(c, run, acked)
    assert c.metric_sum("periscope_wal_disk_full") == 0
    c.stop_ok()

    c2: Collector = collectors(data_dir=data_dir, name="after-disk-full").start()
    check_searchable(c2, run, acked)
