"""Metric files are plain Parquet: pyarrow reads every listed file, and DuckDB's
sum over one series equals what PromQL answers; after a restart the samples
come from the files (the WAL is released once they are flushed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from conftest import Collector, http_session, unique
from test_remote_write import post, snappy, timeseries, write_request

ARGS = ["--metrics-flush-interval", "1s"]


def listed_files(data_dir: Path, tenant: str = "default") -> list[str]:
    m = data_dir / "tenants" / tenant / "metrics" / "manifest.json"
    if not m.exists():
        return []
    manifest = json.loads(m.read_text())
    return [str(data_dir / "tenants" / tenant / "metrics" / f["partition"] / f["name"]) for f in manifest["files"]]


def promql(c: Collector, q: str, t: float) -> list:
    r = http_session().get(c.http_url("/prometheus/api/v1/query"), params={"query": q, "time": t}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_metric_files_read_by_pyarrow_and_duckdb(collectors, tmp_path) -> None:  # noqa: ANN001
    data_dir = tmp_path / "data"
    c: Collector = collectors(data_dir=data_dir, args=ARGS).start()
    job = unique("interop")
    now_ms = int(time.time() * 1000)
    values = [(float(i) * 1.5, now_ms - 60_000 + i * 1000) for i in range(50)]
    body = snappy(write_request([timeseries({"__name__": "interop_gauge", "job": job}, values)]))
    assert post(c, body).status_code == 204

    deadline = time.monotonic() + 30
    files: list[str] = []
    while time.monotonic() < deadline and not files:
        files = listed_files(data_dir)
        time.sleep(0.2)
    assert files, "no metric file listed within 30 s"
    series_files = [os.path.join(os.path.dirname(f), "series-" + os.path.basename(f)[len("samples-"):]) for f in files]
    for f, sf in zip(files, series_files):
        table = pq.read_table(f)
        assert {"metric_name", "series_id", "timestamp", "value", "histogram"} <= set(table.column_names), table.schema
        series = pq.read_table(sf)
        assert {"series_id", "metric_name", "first_row", "rows", "labels"} <= set(series.column_names), series.schema
        # Each series' rows are where its series file says.
        ids = table.column("series_id").to_pylist()
        for sid, first, n in zip(*(series.column(c).to_pylist() for c in ("series_id", "first_row", "rows"))):
            assert set(ids[first : first + n]) == {sid}, (f, sid, first, n)
    rows = duckdb.execute(
        "SELECT count(*), sum(s.value) FROM read_parquet($1) s JOIN read_parquet($2) r USING (series_id, metric_name) "
        "WHERE s.metric_name = 'interop_gauge' AND r.labels['job'] = $3",
        [files, series_files, job],
    ).fetchone()
    want = sum(v for v, _ in values)
    assert rows == (50, want), rows
    got = promql(c, f'sum_over_time(interop_gauge{{job="{job}"}}[5m])', now_ms / 1000)
    assert float(got[0]["value"][1]) == want, got

    # After a clean restart the samples are read from the files, once.
    c.stop_ok()
    c2: Collector = collectors(data_dir=data_dir, args=ARGS).start()
    got = promql(c2, f'count_over_time(interop_gauge{{job="{job}"}}[5m])', now_ms / 1000)
    assert float(got[0]["value"][1]) == 50.0, got
