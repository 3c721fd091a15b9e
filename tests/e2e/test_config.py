"""Configuration: flag > env > file > default, and clear errors (exit 2) for
unknown keys and invalid values."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from agent_util import AGENT_BIN
from conftest import PERISCOPE_BIN, Collector, unique
from otlp_util import LOGS_EXPORT_METHOD, grpc_channel, grpc_raw_call, log_record, logs_request, parse_logs_response

MiB = 1024 * 1024
PORT0 = ["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / f"periscope-{unique('cfg')}.toml"
    p.write_text(text)
    return p


def toml_str(p: Path | str) -> str:
    return '"' + str(p).replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_failing(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 20) -> tuple[int, str, str]:
    """Runs `periscope serve ARGS`, which must exit by itself; returns (code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PERISCOPE_")}
    full_env.update(env or {})
    p = subprocess.Popen(
        [PERISCOPE_BIN, "serve", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"periscope serve {args} kept running ({timeout}s) instead of failing; stdout {out[:300]!r} stderr {err[-2000:]!r}")
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def error_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines, minus clap's standard hint/usage lines."""
    return [l for l in stderr.splitlines() if l.strip() and not re.match(r"^\s*(For more information|Usage:)", l)]


def assert_config_error(rc: int, out: str, err: str, *names: str) -> None:
    assert rc == 2, f"exit code {rc}, want 2; stderr:\n{err}"
    assert "listening" not in out, f"it started listening despite the error: {out!r}"
    lines = error_lines(err)
    assert len(lines) == 1, f"want a one-line error on stderr, got {len(lines)} lines:\n{err}"
    assert any(n in lines[0] for n in names), f"the error does not name any of {names}: {lines[0]!r}"


# ----- precedence -------------------------------------------------------------------


def _which_data_dir(candidates: dict[str, Path]) -> list[str]:
    return [name for name, d in candidates.items() if (d / "periscope.json").exists()]


def test_data_dir_precedence_flag_env_file_default(collectors, tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("file", "env", "flag")}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    dirs["default"] = cwd / "data"
    cfg = write_config(tmp_path, f"data_dir = {toml_str(dirs['file'])}\n")
    env = {"PERISCOPE_DATA_DIR": str(dirs["env"])}

    cases = [
        ("default", [], {}),
        ("file", ["--config", str(cfg)], {}),
        ("env", ["--config", str(cfg)], env),
        ("flag", ["--config", str(cfg), "--data-dir", str(dirs["flag"])], env),
    ]
    for want, args, e in cases:
        c: Collector = collectors(data_dir=None, args=args, env=e, cwd=cwd, name=f"precedence-{want}").start()
        # Use it, so the data dir is certainly touched.
        r = c.post_otlp("/v1/logs", logs_request([log_record("precedence")]).SerializeToString())
        assert r.status_code == 200, r.text
        c.stop_ok()
        used = _which_data_dir(dirs)
        assert want in used, f"case {want}: data dirs initialised: {used}"
        for other in used:
            if other != want:
                # Dirs from earlier cases exist already; none may appear out of turn.
                assert [w for w, _, _ in cases].index(other) < [w for w, _, _ in cases].index(want), (
                    f"case {want}: {other} data dir was used"
                )


def test_http_addr_precedence_flag_env_file(collectors, tmp_path: Path) -> None:
    p_file, p_env, p_flag = free_port(), free_port(), free_port()
    cfg = write_config(tmp_path, f'http_addr = "127.0.0.1:{p_file}"\notlp_grpc_addr = "127.0.0.1:0"\notlp_http_addr = "127.0.0.1:0"\n')
    env = {"PERISCOPE_HTTP_ADDR": f"127.0.0.1:{p_env}"}
    for want, args, e in [
        (p_file, ["--config", str(cfg)], {}),
        (p_env, ["--config", str(cfg)], env),
        (p_flag, ["--config", str(cfg), "--http-addr", f"127.0.0.1:{p_flag}"], env),
    ]:
        c: Collector = collectors(args=args, env=e, addrs=False).start()
        assert c.listening["http"] == f"127.0.0.1:{want}", f"want http on port {want}: {c.listening}"
        assert c.get("/healthz").status_code == 200
        c.stop_ok()


def test_env_names_every_flag(collectors, tmp_path: Path) -> None:
    """Every address comes from PERISCOPE_* env vars when no flag is given."""
    ports = [free_port() for _ in range(3)]
    env = {
        "PERISCOPE_DATA_DIR": str(tmp_path / "envdata"),
        "PERISCOPE_OTLP_GRPC_ADDR": f"127.0.0.1:{ports[0]}",
        "PERISCOPE_OTLP_HTTP_ADDR": f"127.0.0.1:{ports[1]}",
        "PERISCOPE_HTTP_ADDR": f"127.0.0.1:{ports[2]}",
        "PERISCOPE_LOG_LEVEL": "debug",
    }
    c: Collector = collectors(data_dir=None, env=env, addrs=False).start()
    assert (c.listening["otlp_grpc"], c.listening["otlp_http"], c.listening["http"]) == tuple(f"127.0.0.1:{p}" for p in ports)
    assert (tmp_path / "envdata" / "periscope.json").exists()
    c.stop_ok()


# ----- values with units take effect -------------------------------------------------------


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_max_recv_msg_size_units_take_effect(collectors, tmp_path: Path, source: str) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if source == "flag":
        args = ["--max-recv-msg-size", "4MiB"]
    elif source == "env":
        env = {"PERISCOPE_MAX_RECV_MSG_SIZE": str(4 * MiB)}
    else:
        args = ["--config", str(write_config(tmp_path, 'max_recv_msg_size = "4MiB"\n'))]
    c: Collector = collectors(args=args, env=env).start()

    small = logs_request([log_record("s" * (3 * MiB))]).SerializeToString()
    big = logs_request([log_record("b" * (5 * MiB))]).SerializeToString()
    r = c.post_otlp("/v1/logs", small)
    assert r.status_code == 200, f"3 MiB request under a 4 MiB limit -> {r.status_code}: {r.content[:200]!r}"
    r = c.post_otlp("/v1/logs", big)
    assert r.status_code == 413, f"5 MiB request over a 4 MiB limit -> {r.status_code}: {r.content[:200]!r}"
    with grpc_channel(c.grpc_target) as ch:
        grpc_raw_call(ch, LOGS_EXPORT_METHOD, small)
        with pytest.raises(grpc.RpcError) as ei:
            grpc_raw_call(ch, LOGS_EXPORT_METHOD, big)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{ei.value.code()}: {ei.value.details()}"


def test_logs_retention_from_env_and_file(collectors, tmp_path: Path) -> None:
    """Retention bounds accepted timestamps; env (1d) beats file (3d)."""
    cfg = write_config(tmp_path, 'logs_retention = "3d"\n')
    c: Collector = collectors(args=["--config", str(cfg)], env={"PERISCOPE_LOGS_RETENTION": "1d"}).start()
    now = time.time_ns()
    hour = 3600 * 10**9
    req = logs_request([log_record("twelve hours old", time_ns=now - 12 * hour), log_record("two days old", time_ns=now - 48 * hour)])
    r = c.post_otlp("/v1/logs", req.SerializeToString())
    assert r.status_code == 200, r.content
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 1, f"with 1d retention the 2-day-old record must be rejected: {resp}"
    c.stop_ok()

    c = collectors(args=["--config", str(cfg)], data_dir=tmp_path / "other").start()
    r = c.post_otlp("/v1/logs", req.SerializeToString())
    assert r.status_code == 200, r.content
    resp = parse_logs_response(r.content)
    assert resp.partial_success.rejected_log_records == 0, f"with 3d retention (file) both records fit: {resp}"


# ----- errors ---------------------------------------------------------------------


def test_unknown_toml_key_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"data_dir = {toml_str(tmp_path / 'd')}\nmax_inflight_bytez = \"1MiB\"\n")
    rc, out, err = run_failing(["--config", str(cfg), *PORT0])
    assert_config_error(rc, out, err, "max_inflight_bytez")


@pytest.mark.parametrize(
    "how,args,env,cfg,names",
    [
        ("flag", ["--max-recv-msg-size", "banana"], {}, None, ("max-recv-msg-size", "max_recv_msg_size")),
        ("file", [], {}, 'logs_retention = "forever"\n', ("logs_retention",)),
        ("file-type", [], {}, "max_inflight_bytes = true\n", ("max_inflight_bytes",)),
        ("env", [], {"PERISCOPE_MAX_INFLIGHT_BYTES": "lots"}, None, ("PERISCOPE_MAX_INFLIGHT_BYTES", "max_inflight_bytes", "max-inflight-bytes")),
        ("env-addr", [], {"PERISCOPE_HTTP_ADDR": "not-an-address"}, None, ("PERISCOPE_HTTP_ADDR", "http_addr", "http-addr")),
    ],
)
def test_invalid_value_exit_2(tmp_path: Path, how: str, args: list[str], env: dict[str, str], cfg: str | None, names: tuple[str, ...]) -> None:
    full = ["--data-dir", str(tmp_path / "d")]
    if cfg is not None:
        full += ["--config", str(write_config(tmp_path, cfg))]
    # Leave the address flags out where the env must provide one.
    full += PORT0[:4] if how == "env-addr" else PORT0
    rc, out, err = run_failing(full + args, env=env)
    assert_config_error(rc, out, err, *names)


# ----- one grammar for both binaries ----------------------------------------------------

# Whether each string is a valid size or duration; the Rust tests check the
# whole table (periscope_settings::examples) against both crates' parsers,
# this checks that the two binaries, as started, agree on a few.
SIZE_STRINGS = {"16M": True, "16MiB": True, "10KB": True, "2k": True, "1TiB": True, "banana": False, "5XB": False, "-1": False, "1.5GiB": False}
DURATION_STRINGS = {"250ms": True, "90m": True, "7d": True, "2w": True, "5": False, "forever": False, "5y": False, "1h30m": False}


def collector_accepts(tmp_path: Path, flag: str, value: str) -> bool:
    """Whether `periscope serve` takes `flag=value`. A `logs_retention` under
    1h, checked after every other setting, keeps a valid configuration from
    starting: the one-line error then names logs_retention, not the flag."""
    rc, out, err = run_failing(["--data-dir", str(tmp_path / "d"), *PORT0, f"{flag}={value}", "--logs-retention", "30m"])
    assert rc == 2, f"{flag}={value}: exit code {rc}; stderr {err!r}"
    line = error_lines(err)[0]
    names_flag = flag[2:] in line or flag[2:].replace("-", "_") in line
    assert ("logs_retention" in line) != names_flag, f"{flag}={value}: {line!r}"
    return "logs_retention" in line


def agent_accepts(flag: str, value: str) -> bool:
    """Whether `periscope-agent --check-config` takes `flag=value` (exit 0, or 2 and one line)."""
    r = subprocess.run(
        [AGENT_BIN, "--check-config", "--node-name", "n", f"{flag}={value}"], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}
    )
    assert r.returncode in (0, 2), (flag, value, r.returncode, r.stderr)
    if r.returncode == 2:
        assert len(r.stderr.strip().splitlines()) == 1, (flag, value, r.stderr)
        assert flag[2:] in r.stderr or flag[2:].replace("-", "_") in r.stderr, (flag, value, r.stderr)
    return r.returncode == 0


@pytest.mark.parametrize(("value", "valid"), SIZE_STRINGS.items())
def test_both_binaries_take_the_same_sizes(tmp_path: Path, value: str, valid: bool) -> None:
    assert collector_accepts(tmp_path, "--max-recv-msg-size", value) == valid, value
    assert agent_accepts("--spool-max-bytes", value) == valid, value


@pytest.mark.parametrize(("value", "valid"), DURATION_STRINGS.items())
def test_both_binaries_take_the_same_durations(tmp_path: Path, value: str, valid: bool) -> None:
    assert collector_accepts(tmp_path, "--traces-retention", value) == valid, value
    assert agent_accepts("--idle-close", value) == valid, value


def test_missing_config_file_fails(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    rc, out, err = run_failing(["--config", str(missing), *PORT0])
    assert rc != 0, err
    assert str(missing) in err or "nope.toml" in err, f"error does not name the file: {err!r}"


def test_cors_allowed_origins(collectors) -> None:
    allowed, other = "http://ui.example", "http://evil.example"
    c: Collector = collectors(args=["--cors-allowed-origins", f"{allowed},http://second.example"]).start()
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    r = c.session.options(c.otlp_url("/v1/logs"), headers={"Origin": allowed, **pre}, timeout=10)
    assert r.status_code in (200, 204), f"preflight from an allowed origin -> {r.status_code}: {r.text[:200]}"
    assert r.headers.get("Access-Control-Allow-Origin") == allowed, dict(r.headers)
    r = c.post_otlp("/v1/logs", logs_request([log_record("cors")]).SerializeToString(), headers={"Origin": allowed})
    assert r.status_code == 200 and r.headers.get("Access-Control-Allow-Origin") == allowed, dict(r.headers)
    r = c.session.options(c.otlp_url("/v1/logs"), headers={"Origin": other, **pre}, timeout=10)
    assert r.headers.get("Access-Control-Allow-Origin") not in (other, "*"), dict(r.headers)
    c.stop_ok()

    # Default: no CORS headers at all.
    c = collectors(data_dir=None, args=["--data-dir", str(c.data_dir) + "-nocors"]).start()
    r = c.post_otlp("/v1/logs", logs_request([log_record("cors")]).SerializeToString(), headers={"Origin": allowed})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers, dict(r.headers)


def test_sigint_exits_0(collectors) -> None:
    c: Collector = collectors().start()
    rc = c.stop(signal.SIGINT)
    assert rc == 0, f"exit {rc} after SIGINT; stderr:\n{c.stderr_tail()}"


def test_second_collector_on_the_same_data_dir_is_refused(collectors, tmp_path: Path) -> None:
    data = tmp_path / "shared"
    first: Collector = collectors(data_dir=data, name="first").start()
    r = first.post_otlp("/v1/logs", logs_request([log_record("held by the first collector")]).SerializeToString())
    assert r.status_code == 200, r.text
    port = lambda: f"127.0.0.1:{free_port()}"  # noqa: E731
    rc, _, err = run_failing(["--data-dir", str(data), "--otlp-grpc-addr", port(), "--otlp-http-addr", port(), "--http-addr", port()])
    assert rc != 0, "a second collector started on a data dir in use"
    assert "in use by another process" in err, err[-2000:]
    # The first one is untouched and still serves.
    r = first.post_otlp("/v1/logs", logs_request([log_record("still serving")]).SerializeToString())
    assert r.status_code == 200, r.text
    first.stop_ok()
    # Once it has stopped, the directory opens again.
    again: Collector = collectors(data_dir=data, name="again").start()
    again.stop_ok()
