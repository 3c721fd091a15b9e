"""Crash and outage: kill -9 of the agent mid-stream then a restart loses no
line; the collector stopped for ~30 s makes the spool fill (up to its bound,
where reading pauses) and drain, losing no line; a corrupt spool record is
skipped with a warning and everything else is delivered.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from agent_util import Agent, Writer, describe_gaps, free_port, missing, received, wait_settled


def test_kill_9_mid_stream_then_restart_loses_nothing(collectors, tmp_path) -> None:  # noqa: ANN001
    collector = collectors().start()
    logs = tmp_path / "pods"
    logs.mkdir()
    endpoint = f"http://{collector.grpc_target}"
    agent = Agent(tmp_path / "agent", tmp_path / "logs", endpoint, [f"{logs}/*.log"]).start()
    writers = [Writer(logs / f"k{i}.log", f"k{i}", 3000) for i in range(2)]
    for w in writers:
        w.start()
    time.sleep(3)
    agent.wait_metric("periscope_agent_records_acknowledged_total", lambda v: v > 1000)
    agent.kill()
    time.sleep(1.5)  # lines keep coming while the agent is dead
    agent2 = Agent(tmp_path / "agent", tmp_path / "logs", endpoint, [f"{logs}/*.log"], name="agent2").start()
    try:
        time.sleep(3)
        expected = {w.tag: w.finish() for w in writers}
        wait_settled(agent2, collector)
        got = received(collector, expected)
        gaps = missing(got, expected)
        assert not gaps, f"{describe_gaps(gaps)}; agent stderr:\n{agent2.stderr_tail()}"
        total = sum(expected.values())
        dups = sum(len(v) for v in got.values()) - total
        # At most what was in flight: about a second of lines plus a batch.
        assert dups <= 4 * 3000 + 10_000, f"{dups} duplicates for {total} lines"
    finally:
        assert agent2.stop() == 0, agent2.stderr_tail()


def test_collector_outage_spool_fills_and_drains(collectors, tmp_path) -> None:  # noqa: ANN001
    port = free_port()
    args = ["--otlp-grpc-addr", f"127.0.0.1:{port}", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    collector = collectors(addrs=False, args=args).start()
    logs = tmp_path / "pods"
    logs.mkdir()
    spool_max = 3 << 20
    agent = Agent(
        tmp_path / "agent",
        tmp_path / "logs",
        f"http://127.0.0.1:{port}",
        [f"{logs}/*.log"],
        args=["--memory-queue-bytes", "256KiB", "--spool-max-bytes", str(spool_max)],
    ).start()
    try:
        w = Writer(logs / "o0.log", "o0", 2500, line_bytes=120)
        w.start()
        time.sleep(3)
        collector.stop_ok()
        outage_start = time.monotonic()
        max_spool = 0.0
        while time.monotonic() - outage_start < 30:
            m = agent.metrics()
            max_spool = max(max_spool, m["periscope_agent_spool_bytes"])
            time.sleep(0.5)
        m = agent.metrics()
        assert max_spool > 1 << 20, f"spool never filled: {m}"
        # Bounded: the spool stops taking batches at its bound (one batch may cross it).
        assert max_spool <= spool_max + (4 << 20), f"spool grew to {max_spool}"
        assert m["periscope_agent_backpressure_waits_total"] >= 1, f"reading never paused: {m}"
        assert m["periscope_agent_export_retries_total"] >= 3, m

        collector = collectors(addrs=False, args=args).start()
        time.sleep(3)
        expected = {w.tag: w.finish()}
        wait_settled(agent, collector, timeout=70)
        assert agent.metric("periscope_agent_spool_bytes") == 0
        got = received(collector, expected)
        gaps = missing(got, expected)
        assert not gaps, f"{describe_gaps(gaps)}; agent stderr:\n{agent.stderr_tail()}"
    finally:
        assert agent.stop() == 0, agent.stderr_tail()


def corrupt_second_record(spool_dir: Path) -> int:
    """Flips a byte in the body of the second record of the first segment;
    returns how many records the segment holds."""
    seg = sorted(spool_dir.glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    offsets = []
    off = 0
    while off + 8 <= len(data):
        (length,) = struct.unpack_from("<I", data, off)
        offsets.append(off)
        off += 8 + length
    assert len(offsets) >= 3, f"expected several spooled records, found {len(offsets)}"
    data[offsets[1] + 8 + 20] ^= 0xFF
    seg.write_bytes(bytes(data))
    return len(offsets)


def test_corrupt_spool_record_is_skipped_with_a_warning(collectors, tmp_path) -> None:  # noqa: ANN001
    port = free_port()
    logs = tmp_path / "pods"
    logs.mkdir()
    n = 20_000
    with open(logs / "s0.log", "w") as f:
        for i in range(n):
            f.write(f"s0 {i:09d} {'y' * 80}\n")
    agent_dir = tmp_path / "agent"
    # Nobody listens on the port: everything beyond the first batch spills.
    agent = Agent(agent_dir, tmp_path / "logs", f"http://127.0.0.1:{port}", [f"{logs}/*.log"], args=["--memory-queue-bytes", "1"]).start()
    agent.wait_metric("periscope_agent_lines_read_total", lambda v: v >= n)
    agent.wait_metric("periscope_agent_spool_batches_written_total", lambda v: v >= 3)
    assert agent.stop() == 0, agent.stderr_tail()
    records = corrupt_second_record(agent_dir / "spool")

    args = ["--otlp-grpc-addr", f"127.0.0.1:{port}", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    collector = collectors(addrs=False, args=args).start()
    agent2 = Agent(agent_dir, tmp_path / "logs", f"http://127.0.0.1:{port}", [f"{logs}/*.log"], name="agent2").start()
    try:
        wait_settled(agent2, collector)
        assert agent2.running(), agent2.stderr_tail()
        assert "corrupt spool record" in agent2.stderr_text(), agent2.stderr_tail()
        assert agent2.metric("periscope_agent_spool_corrupt_records_total") == 1
        got = received(collector, {"s0": n})
        gaps = missing(got, {"s0": n}).get("s0", [])
        # Exactly one batch is lost: a contiguous run of lines, not everything.
        assert 0 < len(gaps) < n // 2, f"{len(gaps)} lines missing of {n} ({records} spooled records)"
        assert gaps == list(range(gaps[0], gaps[0] + len(gaps))), "missing lines are not one batch"
    finally:
        assert agent2.stop() == 0, agent2.stderr_tail()
