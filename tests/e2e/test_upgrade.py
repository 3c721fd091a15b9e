"""A data dir written by log partition format 1 (FST term dictionaries, the
committed `store/tests/golden/v1`, data dir format 1) opens in this collector:
its tenant directories move under `tenants/` (data dir format 2), its
partitions are rebuilt as format 2, their records are searchable through the
query API, and new records land beside them and survive a restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import unique
from otlp_util import log_record, logs_request

GOLDEN_V1 = Path(__file__).resolve().parents[2] / "store" / "tests" / "golden" / "v1"
OLD_PARTITION = Path("acme") / "logs" / "2026-01-01T00"
PARTITION = Path("tenants") / OLD_PARTITION
# The fixture's hour: 2026-01-01T00, far outside the default retention.
START, END = "2026-01-01T00:00:00Z", "2026-01-01T00:59:59Z"
RETENTION = ["--logs-retention", "36500d"]


def bodies(c, **params) -> list[str]:  # noqa: ANN001
    return [h["body"] for h in c.search(tenant="acme", start=START, end=END, **params)["hits"]]


def test_a_format_1_data_dir_is_rebuilt_and_served(collectors, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    shutil.copytree(GOLDEN_V1, data)
    # The fixture's WAL holds placeholder bodies for the store's own test;
    # here the WAL starts after the position the rebuilt partition committed.
    shutil.rmtree(data / "wal")
    assert json.loads((data / OLD_PARTITION / "partition.json").read_text())["version"] == 1
    assert json.loads((data / "periscope.json").read_text())["format_version"] == 1

    c = collectors(data_dir=data, args=RETENTION).start()
    assert bodies(c) == ["golden record 2", "golden record 1", "golden record 0"]
    assert bodies(c, q="attributes.n:1") == ["golden record 1"]
    assert bodies(c, trace_id="0102030405060708090a0b0c0d0e0f10")[0] == "golden record 2"
    assert json.loads((data / PARTITION / "partition.json").read_text())["version"] == 2
    assert sorted(p.name for p in (data / "tenants" / "acme" / "logs").iterdir()) == ["2026-01-01T00"]
    assert json.loads((data / "periscope.json").read_text())["format_version"] == 2
    assert not (data / "acme").exists(), sorted(str(p.relative_to(data)) for p in data.iterdir())
    assert "rebuilt a version 1 log partition" in c.stderr_text(), c.stderr_tail()

    # New records go beside the rebuilt ones; acknowledged, they survive
    # SIGKILL exactly once (the WAL continues after the rebuilt commit's position).
    word = unique("upgraded")
    r = c.post_otlp("/v1/logs", logs_request([log_record(word)]).SerializeToString(), headers={"X-Scope-OrgID": "acme"})
    assert r.status_code == 200, r.text[:300]
    c.kill()

    c2 = collectors(data_dir=data, args=RETENTION).start()
    assert len(c2.search_count_until(1, tenant="acme", q=word)) == 1
    assert bodies(c2) == ["golden record 2", "golden record 1", "golden record 0"]
    assert "rebuilt a version 1" not in c2.stderr_text()
