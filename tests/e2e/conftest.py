"""Shared fixtures for the end-to-end tests.

Every test drives the real `periscope` binary (env PERISCOPE_BIN, default
target/debug/periscope) on a fresh data directory, with every listener on
127.0.0.1 port 0, and talks to it with real clients. The helpers here start
and stop the binary, read its listening line, wait for /readyz, and poll the
query API with deadlines (records are searchable ~2 s after acknowledgement).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import requests

# Clients must never go through a proxy to reach 127.0.0.1.
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

REPO_ROOT = Path(__file__).resolve().parents[2]
PERISCOPE_BIN = os.environ.get("PERISCOPE_BIN", str(REPO_ROOT / "target" / "debug" / "periscope"))

LISTEN_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0
SEARCHABLE_TIMEOUT_S = 30.0

# Protobuf status codes (google.rpc.Code).
RPC_INVALID_ARGUMENT = 3
RPC_RESOURCE_EXHAUSTED = 8


class CollectorError(Exception):
    pass


def http_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


class Collector:
    """One run of `periscope serve`.

    `data_dir=None` passes no --data-dir (the default or env/file decides);
    `addrs=False` passes no address flags.
    """

    def __init__(
        self,
        data_dir: Path | None,
        log_dir: Path,
        args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        addrs: bool = True,
        name: str = "collector",
        tls_ca: str | None = None,
        token: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.extra_args = list(args)
        self.extra_env = dict(env or {})
        self.cwd = cwd
        self.addrs = addrs
        self.stderr_path = log_dir / f"{name}-{uuid.uuid4().hex[:8]}.stderr.log"
        self.stdout_lines: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.listening: dict[str, str] = {}
        self._stdout_thread: threading.Thread | None = None
        self._first_line = threading.Event()
        self.session = http_session()
        # With TLS: https, trusting `tls_ca`; with auth: the token on every
        # request of `session` (the probes need none).
        self.scheme = "https" if tls_ca else "http"
        if tls_ca:
            self.session.verify = tls_ca
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # ----- process lifecycle -------------------------------------------------

    def command(self) -> list[str]:
        cmd = [PERISCOPE_BIN, "serve"]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.addrs:
            cmd += [
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ]
        return cmd + self.extra_args

    def spawn(self) -> None:
        if not Path(PERISCOPE_BIN).exists():
            raise CollectorError(f"periscope binary not found at {PERISCOPE_BIN} (set PERISCOPE_BIN)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERISCOPE_")}
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        self._stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=env,
            cwd=str(self.cwd) if self.cwd else None,
            start_new_session=True,
        )
        self._stdout_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout_thread.start()

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._first_line.set()
        self._first_line.set()

    def start(self, wait_ready: bool = True) -> "Collector":
        self.spawn()
        self.wait_listening()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_listening(self, timeout: float = LISTEN_TIMEOUT_S) -> dict[str, str]:
        assert self.proc is not None
        if not self._first_line.wait(timeout):
            self.kill()
            raise CollectorError(f"no listening line on stdout within {timeout}s; stderr:\n{self.stderr_tail()}")
        if not self.stdout_lines:
            rc = self.proc.wait(5)
            raise CollectorError(f"collector exited with {rc} before printing its listening line; stderr:\n{self.stderr_tail()}")
        line = self.stdout_lines[0]
        try:
            obj = json.loads(line)
        except ValueError as e:
            self.kill()
            raise CollectorError(f"first stdout line is not JSON ({e}): {line!r}") from e
        if obj.get("event") != "listening":
            self.kill()
            raise CollectorError(f"first stdout line is not a listening event: {line!r}")
        for key in ("otlp_grpc", "otlp_http", "http"):
            if not isinstance(obj.get(key), str) or ":" not in obj[key]:
                self.kill()
                raise CollectorError(f"listening line lacks {key!r}: {line!r}")
        self.listening = obj
        return obj

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise CollectorError(f"collector exited with {self.proc.returncode} while waiting for /readyz; stderr:\n{self.stderr_tail()}")
            try:
                r = self.session.get(self.http_url("/readyz"), timeout=5)
                last = (r.status_code, r.text[:200])
                if r.status_code == 200:
                    return
                if r.status_code != 503:
                    raise CollectorError(f"/readyz answered {r.status_code} (expected 200 or 503): {r.text[:500]}")
            except requests.ConnectionError as e:
                last = e
            time.sleep(0.1)
        raise CollectorError(f"/readyz not 200 within {timeout}s; last: {last}; stderr:\n{self.stderr_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = SHUTDOWN_TIMEOUT_S) -> int:
        """Sends `sig` and waits; returns the exit code (kills it on timeout and raises)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise CollectorError(f"collector did not exit within {timeout}s of signal {sig}; stderr:\n{self.stderr_tail()}")
        self._close()
        return self.proc.returncode

    def stop_ok(self) -> None:
        rc = self.stop()
        assert rc == 0, f"collector exited with {rc} after SIGTERM; stderr:\n{self.stderr_tail()}"

    def kill(self) -> None:
        """SIGKILL, no questions asked."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self._stdout_thread is not None:
            self._stdout_thread.join(5)
        f = getattr(self, "_stderr_file", None)
        if f is not None and not f.closed:
            f.close()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def rss_hwm_kib(self) -> int:
        """Peak resident set size (VmHWM) of the process, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise CollectorError("no VmHWM in /proc status")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise CollectorError("no VmRSS in /proc status")

    # ----- addresses ---------------------------------------------------------

    @property
    def grpc_target(self) -> str:
        return self.listening["otlp_grpc"]

    def otlp_url(self, path: str) -> str:
        return f"{self.scheme}://{self.listening['otlp_http']}{path}"

    def http_url(self, path: str) -> str:
        return f"{self.scheme}://{self.listening['http']}{path}"

    # ----- OTLP/HTTP ---------------------------------------------------------

    def post_otlp(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/x-protobuf",
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        h = {"Content-Type": content_type}
        h.update(headers or {})
        return self.session.post(self.otlp_url(path), data=body, headers=h, timeout=timeout)

    # ----- query API ---------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None, tenant: str | None = None, timeout: float = 30) -> requests.Response:
        headers = {"X-Scope-OrgID": tenant} if tenant is not None else {}
        return self.session.get(self.http_url(path), params=params, headers=headers, timeout=timeout)

    def search(self, tenant: str | None = None, **params: Any) -> dict[str, Any]:
        params = {k: v for k, v in params.items() if v is not None}
        params.setdefault("start", int(time.time()) - 6 * 3600)
        params.setdefault("end", int(time.time()) + 3600)
        r = self.get("/api/v1/logs/search", params=params, tenant=tenant)
        assert r.status_code == 200, f"search {params} (tenant {tenant}) -> {r.status_code}: {r.text[:1000]}"
        obj = r.json()
        assert isinstance(obj.get("hits"), list), f"search response lacks hits: {r.text[:500]}"
        assert "next_cursor" in obj, f"search response lacks next_cursor: {r.text[:500]}"
        return obj

    def search_all(self, tenant: str | None = None, page_limit: int = 1000, max_pages: int = 10_000, **params: Any) -> list[dict[str, Any]]:
        """Every hit of a query, following next_cursor."""
        hits: list[dict[str, Any]] = []
        # Fix the window so that every page reads the same range.
        params.setdefault("start", int(time.time()) - 6 * 3600)
        params.setdefault("end", int(time.time()) + 3600)
        cursor = None
        for _ in range(max_pages):
            page = self.search(tenant=tenant, limit=page_limit, cursor=cursor, **params)
            hits.extend(page["hits"])
            cursor = page["next_cursor"]
            if not cursor:
                return hits
            assert page["hits"], f"page with next_cursor {cursor!r} but no hits"
        raise AssertionError(f"more than {max_pages} pages for {params}")

    def search_until(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = SEARCHABLE_TIMEOUT_S,
        tenant: str | None = None,
        all_pages: bool = False,
        **params: Any,
    ) -> list[dict[str, Any]]:
        """Polls a search until `predicate(hits)` holds; returns the hits (fails on deadline)."""
        deadline = time.monotonic() + timeout
        hits: list[dict[str, Any]] = []
        while True:
            if all_pages:
                hits = self.search_all(tenant=tenant, **params)
            else:
                hits = self.search(tenant=tenant, **params)["hits"]
            if predicate(hits):
                return hits
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"search {params} (tenant {tenant}) did not satisfy the condition within {timeout}s; "
                    f"{len(hits)} hits, first: {json.dumps(hits[:3])[:1500]}"
                )
            time.sleep(0.25)

    def search_count_until(self, n: int, timeout: float = SEARCHABLE_TIMEOUT_S, tenant: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Polls until the query has at least `n` hits (all pages)."""
        return self.search_until(lambda h: len(h) >= n, timeout=timeout, tenant=tenant, all_pages=True, **params)

    def histogram_total(self, tenant: str | None = None, **params: Any) -> int | None:
        """Total count of a query over the histogram endpoint (None if it answers non-200)."""
        params = {k: v for k, v in params.items() if v is not None}
        params.setdefault("start", int(time.time()) - 6 * 3600)
        params.setdefault("end", int(time.time()) + 3600)
        params.setdefault("step", "3600s")
        r = self.get("/api/v1/logs/histogram", params=params, tenant=tenant)
        if r.status_code != 200:
            return None
        return sum(int(b["count"]) for b in r.json()["buckets"])

    def wait_services(self, names: Iterable[str], tenant: str | None = None, timeout: float = SEARCHABLE_TIMEOUT_S) -> list[str]:
        """Polls /api/v1/services until it lists every name; returns the last list."""
        want = set(names)
        deadline = time.monotonic() + timeout
        while True:
            r = self.get("/api/v1/services", tenant=tenant)
            assert r.status_code == 200, f"/api/v1/services -> {r.status_code}: {r.text[:300]}"
            services = r.json()["services"]
            if want <= set(services):
                return services
            if time.monotonic() > deadline:
                raise AssertionError(f"services {sorted(want - set(services))} not listed within {timeout}s: {services}")
            time.sleep(0.25)

    # ----- self metrics ------------------------------------------------------

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        r = self.get("/metrics")
        assert r.status_code == 200, f"/metrics -> {r.status_code}: {r.text[:500]}"
        return parse_prometheus(r.text)

    def metric_sum(self, name: str, **labels: str) -> float:
        total = 0.0
        for (n, lbls), v in self.metrics().items():
            if n != name:
                continue
            d = dict(lbls)
            if all(d.get(k) == val for k, val in labels.items()):
                total += v
        return total


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A small Prometheus text-format parser: samples only, labels unescaped."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_s, value_s = rest.rsplit("}", 1)
            labels = _parse_labels(labels_s)
        else:
            name, value_s = line.split(None, 1)
            labels = {}
        value = float(value_s.split()[0])
        out[(name.strip(), frozenset(labels.items()))] = value
    return out


def _parse_labels(s: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    i = 0
    while i < len(s):
        while i < len(s) and s[i] in " ,":
            i += 1
        if i >= len(s):
            break
        eq = s.index("=", i)
        key = s[i:eq].strip()
        assert s[eq + 1] == '"', f"bad label syntax in {s!r}"
        j = eq + 2
        val = []
        while s[j] != '"':
            if s[j] == "\\":
                j += 1
                val.append({"n": "\n"}.get(s[j], s[j]))
            else:
                val.append(s[j])
            j += 1
        labels[key] = "".join(val)
        i = j + 1
    return labels


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def collectors(request: pytest.FixtureRequest, tmp_path: Path):
    """A factory: `collectors(data_dir=..., args=[...], env={...}).start()`.

    Every collector still running at teardown gets SIGTERM and must exit 0
    within 10 s; on test failure stderr tails are printed and leftovers killed.
    """
    started: list[Collector] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)

    def make(data_dir: Path | None | str = "default", **kw: Any) -> Collector:
        if data_dir == "default":
            data_dir = tmp_path / "data"
        c = Collector(data_dir, log_dir, **kw)  # type: ignore[arg-type]
        started.append(c)
        return c

    yield make

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    errors = []
    for c in started:
        if failed:
            print(f"\n----- stderr of {c.command()} (tail) -----\n{c.stderr_tail(60)}")
        if c.running():
            try:
                rc = c.stop()
                if rc != 0 and not failed:
                    errors.append(f"collector exited with {rc} after SIGTERM at teardown; stderr:\n{c.stderr_tail()}")
            except CollectorError as e:
                errors.append(str(e))
            finally:
                c.kill()
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def collector(collectors) -> Collector:  # noqa: ANN001
    """One running collector on a fresh data dir with default settings."""
    return collectors().start()


def unique(prefix: str = "t") -> str:
    """A token that tantivy's default tokenizer keeps as one lowercase term."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"
