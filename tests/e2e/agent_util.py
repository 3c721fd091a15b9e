"""Helpers for the agent end-to-end tests: run `periscope-agent` (env
PERISCOPE_AGENT_BIN, default target/debug/periscope-agent), write numbered
log lines with rotation, and read back which line numbers the collector holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import requests
from conftest import REPO_ROOT, Collector, http_session, parse_prometheus

AGENT_BIN = os.environ.get("PERISCOPE_AGENT_BIN", str(REPO_ROOT / "target" / "debug" / "periscope-agent"))


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One run of `periscope-agent`; `args` come after the defaults."""

    def __init__(self, data_dir: Path, log_dir: Path, endpoint: str, include: Iterable[str], args: Iterable[str] = (), name: str = "agent") -> None:
        self.data_dir = data_dir
        self.endpoint = endpoint
        self.include = list(include)
        self.args = list(args)
        self.stderr_path = log_dir / f"{name}-{uuid.uuid4().hex[:8]}.stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.listening: dict[str, Any] = {}
        self.session = http_session()

    def command(self) -> list[str]:
        cmd = [AGENT_BIN, "--endpoint", self.endpoint, "--data-dir", str(self.data_dir), "--http-addr", "127.0.0.1:0", "--read-from", "beginning", "--node-name", "e2e-node"]
        if "--metrics-interval" not in self.args:
            cmd += ["--metrics-interval", "0s"]
        for inc in self.include:
            cmd += ["--include", inc]
        return cmd + self.args

    def start(self) -> "Agent":
        if not Path(AGENT_BIN).exists():
            raise RuntimeError(f"agent binary not found at {AGENT_BIN} (set PERISCOPE_AGENT_BIN)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERISCOPE_") and k != "NODE_NAME"}
        env.setdefault("RUST_BACKTRACE", "1")
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode("utf-8", "replace")
        if not line:
            rc = self.proc.wait(10)
            raise RuntimeError(f"agent exited with {rc} before its listening line; stderr:\n{self.stderr_tail()}")
        obj = json.loads(line)
        assert obj.get("event") == "listening", line
        self.listening = obj
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"agent did not stop within {timeout}s of SIGTERM; stderr:\n{self.stderr_tail()}")
        self._stderr.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if hasattr(self, "_stderr"):
            self._stderr.close()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def metrics(self) -> dict[str, float]:
        r = self.session.get(f"http://{self.listening['http']}/metrics", timeout=10)
        assert r.status_code == 200, r.text[:300]
        return {name: v for (name, labels), v in parse_prometheus(r.text).items() if not labels}

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_metric(self, name: str, pred, timeout: float = 30) -> float:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        v = self.metric(name)
        while not pred(v):
            if time.monotonic() > deadline:
                raise AssertionError(f"agent metric {name} = {v} did not reach the condition within {timeout}s; stderr:\n{self.stderr_tail()}")
            time.sleep(0.2)
            v = self.metric(name)
        return v


class Writer(threading.Thread):
    """Appends lines `<tag> <seq:09d> <padding>` to `path` at about `rate`
    lines/s, rotating every `rotate_every` s, alternately by rename (to
    `<path>.<k>`, outside `*.log`) and by copytruncate (copy to
    `<stem>-c<k>.log`, which the agent also tails, then truncate)."""

    def __init__(self, path: Path, tag: str, rate: int, rotate_every: float | None = None, line_bytes: int = 100) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.tag = tag
        self.rate = rate
        self.rotate_every = rotate_every
        self.line_bytes = line_bytes
        self.seq = 0
        self.stop_event = threading.Event()
        self.rotations = {"rename": 0, "copytruncate": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def _run(self) -> None:
        tick = 0.01
        per_tick = max(1, int(self.rate * tick))
        pad = "x" * max(0, self.line_bytes - len(self.tag) - 12)
        f = open(self.path, "a")
        start = time.monotonic()
        next_rotate = start + self.rotate_every if self.rotate_every else None
        k = 0
        while not self.stop_event.is_set():
            f.write("".join(f"{self.tag} {self.seq + i:09d} {pad}\n" for i in range(per_tick)))
            self.seq += per_tick
            f.flush()
            now = time.monotonic()
            if next_rotate is not None and now >= next_rotate:
                k += 1
                f.close()
                if k % 2 == 1:
                    os.rename(self.path, f"{self.path}.{k}")
                    self.rotations["rename"] += 1
                else:
                    shutil.copyfile(self.path, self.path.with_name(f"{self.path.stem}-c{k}.log"))
                    with open(self.path, "r+") as t:
                        t.truncate(0)
                    self.rotations["copytruncate"] += 1
                f = open(self.path, "a")
                next_rotate += self.rotate_every
            # Pace to the rate.
            target = start + self.seq / self.rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        f.close()

    def finish(self) -> int:
        self.stop_event.set()
        self.join(30)
        if self.error is not None:
            raise self.error
        return self.seq


LINE_RE = re.compile(r"^(\S+) (\d{9}) ")


def received(collector: Collector, tags: Iterable[str]) -> dict[str, list[int]]:
    """Line numbers per tag in the collector (with duplicates), all pages;
    one query per tag, run in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    def one(tag: str) -> list[int]:
        nums = []
        for h in collector.search_all(q=tag, page_limit=1000, max_pages=100_000):
            m = LINE_RE.match(h["body"])
            if m and m.group(1) == tag:
                nums.append(int(m.group(2)))
        return nums

    tags = list(tags)
    with ThreadPoolExecutor(max_workers=len(tags)) as ex:
        return dict(zip(tags, ex.map(one, tags)))


def received_windows(collector: Collector, tags: Iterable[str], start_s: float, end_s: float, step_s: float = 1.0) -> dict[str, list[int]]:
    """Like `received`, but reads every record in [start_s, end_s] in short
    time windows, in parallel: each query then ranks only its window's
    records, which keeps paging through hundreds of thousands linear."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = set(tags)
    windows = []
    t = start_s
    while t < end_s:
        # Overlap by a millisecond: a record on a boundary is read twice rather than never.
        windows.append((t - 0.001, min(t + step_s, end_s)))
        t += step_s

    def one(w: tuple[float, float]) -> list[tuple[str, int]]:
        out = []
        for h in collector.search_all(page_limit=1000, max_pages=100_000, start=f"{w[0]:.3f}", end=f"{w[1]:.3f}"):
            m = LINE_RE.match(h["body"])
            if m and m.group(1) in wanted:
                out.append((m.group(1), int(m.group(2))))
        return out

    got: dict[str, list[int]] = {tag: [] for tag in wanted}
    with ThreadPoolExecutor(max_workers=4) as ex:
        for part in ex.map(one, windows):
            for tag, n in part:
                got[tag].append(n)
    return got


def histogram_total(collector: Collector) -> int:
    return collector.histogram_total() or 0


def wait_total(collector: Collector, n: int, timeout: float) -> int:
    """Polls the histogram until it counts at least `n` records."""
    deadline = time.monotonic() + timeout
    total = histogram_total(collector)
    while total < n:
        if time.monotonic() > deadline:
            return total
        time.sleep(0.5)
        total = histogram_total(collector)
    return total


def wait_settled(agent: Agent, collector: Collector, timeout: float = 60) -> int:
    """Waits until the agent has read everything and every record it queued
    is acknowledged, then until the collector's count stops changing (records
    become searchable about 2 s after acknowledgement). Returns that count."""
    deadline = time.monotonic() + timeout
    while True:
        m = agent.metrics()
        lag = sum(v for (name, _), v in parse_prometheus(agent.session.get(f"http://{agent.listening['http']}/metrics", timeout=10).text).items() if name == "periscope_agent_read_lag_bytes")
        if lag == 0 and m["periscope_agent_records_acknowledged_total"] + m["periscope_agent_records_rejected_total"] >= m["periscope_agent_records_queued_total"] and m["periscope_agent_memory_queue_bytes"] == 0 and m["periscope_agent_spool_bytes"] == 0:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"agent did not settle within {timeout}s: {m}; stderr:\n{agent.stderr_tail()}")
        time.sleep(0.3)
    last, stable_since = -1, time.monotonic()
    while True:
        total = histogram_total(collector)
        now = time.monotonic()
        if total != last:
            last, stable_since = total, now
        elif now - stable_since >= 3:
            return total
        if now > deadline:
            return total
        time.sleep(0.5)


def missing(got: dict[str, list[int]], expected: dict[str, int]) -> dict[str, list[int]]:
    """Per tag, the numbers below expected[tag] that never arrived."""
    out = {}
    for tag, n in expected.items():
        have = set(got.get(tag, []))
        gaps = [i for i in range(n) if i not in have]
        if gaps:
            out[tag] = gaps
    return out


def describe_gaps(gaps: dict[str, list[int]]) -> str:
    parts = []
    for tag, g in gaps.items():
        parts.append(f"{tag}: {len(g)} missing, first {g[:10]}")
    return "; ".join(parts)
