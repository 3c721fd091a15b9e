"""Rotation torture: writers append numbered lines at >= 20,000 lines/s in
total to several files while rotating each every second, alternately by
rename (the old name leaves the include glob: the agent must read the old
file to its end) and by copytruncate (the copy is tailed as a new file; the
agent must notice the truncation even when the file refilled past its
offset). Every line must arrive at the collector, no gaps.
"""

from __future__ import annotations

import os
import time

from agent_util import Agent, Writer, describe_gaps, missing, received_windows, wait_settled

WRITERS = 4
RATE_PER_WRITER = 5_600
SECONDS = float(os.environ.get("AGENT_TORTURE_SECONDS", "30"))


def test_rotation_torture_every_line_arrives(collectors, tmp_path) -> None:  # noqa: ANN001
    collector = collectors().start()
    logs = tmp_path / "pods"
    logs.mkdir()
    agent = Agent(tmp_path / "agent", tmp_path / "logs", f"http://{collector.grpc_target}", [f"{logs}/*.log"], args=["--batch-max-records", "5000"]).start()
    try:
        writers = [Writer(logs / f"w{i}.log", f"w{i}", RATE_PER_WRITER, rotate_every=1.0, line_bytes=64) for i in range(WRITERS)]
        t0 = time.monotonic()
        wall0 = time.time()
        for w in writers:
            w.start()
        time.sleep(SECONDS)
        expected = {w.tag: w.finish() for w in writers}
        elapsed = time.monotonic() - t0
        total = sum(expected.values())
        rate = total / elapsed
        assert rate >= 20_000, f"writers only reached {rate:.0f} lines/s"
        assert all(w.rotations["rename"] >= SECONDS // 2 - 1 and w.rotations["copytruncate"] >= SECONDS // 2 - 1 for w in writers), [w.rotations for w in writers]

        got_total = wait_settled(agent, collector, timeout=60)
        t1 = time.monotonic()
        got = received_windows(collector, expected, wall0 - 2, time.time() + 1)
        print(f"{total} lines at {rate:.0f}/s, {got_total} records stored, read back in {time.monotonic() - t1:.1f}s")
        gaps = missing(got, expected)
        assert not gaps, f"{describe_gaps(gaps)}; {got_total} records in the collector for {total} lines; agent stderr:\n{agent.stderr_tail()}"
        m = agent.metrics()
        assert m["periscope_agent_records_rejected_total"] == 0
    finally:
        rc = agent.stop()
    assert rc == 0, agent.stderr_tail()
