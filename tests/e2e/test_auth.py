"""Authentication, tenant authorization and TLS, with real clients.

A private CA is made per test (trustme). The collector runs with
--auth-file and TLS on all three listeners; the OpenTelemetry Python SDK
exports over gRPC and HTTP with TLS and token headers, remote write and the
Prometheus API use HTTP Basic as Prometheus and Grafana do.
"""

from __future__ import annotations

import base64
import http.client
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
import trustme
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import PERISCOPE_BIN, Collector, http_session, parse_prometheus, unique
from test_remote_write import sample, snappy, timeseries, write_request


def new_token(name: str, tenants: list[str], scopes: str) -> tuple[str, str]:
    """`periscope token new`: the token and its auth file block."""
    args = [PERISCOPE_BIN, "token", "new", "--name", name, "--scope", scopes]
    for t in tenants:
        args += ["--tenant", t]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    token, rest = out.split("\n", 1)
    return token, rest


class Setup:
    """A CA, a server certificate for 127.0.0.1, tokens and an auth file."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.ca = trustme.CA()
        self.ca_pem = d / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.cert = d / "tls.crt"
        self.key = d / "tls.key"
        self.issue()
        self.shop, shop_block = new_token("shop-apps", ["shop"], "write,read")
        self.ops, ops_block = new_token("ops", ["*"], "read,admin")
        self.blocks = {"shop-apps": shop_block, "ops": ops_block}
        self.auth = d / "auth.toml"
        self.write_auth()

    def issue(self) -> None:
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        leaf.private_key_pem.write_to_path(str(self.key))
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))

    def write_auth(self, extra: str = "") -> None:
        tmp = self.auth.with_suffix(".tmp")
        tmp.write_text("\n".join(self.blocks.values()) + extra)
        tmp.replace(self.auth)

    def args(self, client_ca: bool = False) -> list[str]:
        a = ["--auth-file", str(self.auth), "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)]
        if client_ca:
            a += ["--tls-client-ca-file", str(self.ca_pem)]
        return a


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def start(collectors, s: Setup, client_ca: bool = False) -> Collector:  # noqa: ANN001
    return collectors(args=s.args(client_ca), tls_ca=str(s.ca_pem)).start()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def grpc_creds(s: Setup, client: trustme.LeafCert | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=s.ca.cert_pem.bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=s.ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes(),
        certificate_chain=client.cert_chain_pems[0].bytes(),
    )


def sdk_logs_grpc(c: Collector, s: Setup, body: str, token: str | None, tenant: str | None = None, client=None) -> bool:  # noqa: ANN001
    """Exports one log record with the SDK over gRPC; whether it was accepted."""
    headers = {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if tenant:
        headers["x-scope-orgid"] = tenant
    exporter = GrpcLogExporter(endpoint=f"https://{c.grpc_target}", credentials=grpc_creds(s, client), headers=headers, timeout=10)
    return export_log(exporter, body)


def export_log(exporter, body: str) -> bool:  # noqa: ANN001
    result: list[bool] = []

    class Recording:
        def __init__(self, inner) -> None:  # noqa: ANN001
            self.inner = inner

        def export(self, batch):  # noqa: ANN001
            r = self.inner.export(batch)
            result.append(getattr(r, "name", str(r)) == "SUCCESS")
            return r

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    provider = LoggerProvider(resource=Resource.create({"service.name": "auth-test"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(Recording(exporter)))
    provider.get_logger("auth").emit(body=body)
    provider.shutdown()
    return bool(result) and result[0]


def searchable(c: Collector, token: str, q: str, tenant: str | None = None, n: int = 1, timeout: float = 30) -> list:
    headers = bearer(token)
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    deadline = time.monotonic() + timeout
    hits: list = []
    while time.monotonic() < deadline:
        r = c.session.get(c.http_url("/api/v1/logs/search"), params={"q": q, "limit": 1000}, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        if len(hits) >= n:
            return hits
        time.sleep(0.3)
    return hits


def test_token_new_prints_a_token_and_the_block(setup: Setup) -> None:
    token, block = new_token("ci", ["a", "b"], "write")
    assert token.startswith("pscp_") and len(token) >= 5 + 32
    assert token not in block and 'name = "ci"' in block and 'tenants = ["a", "b"]' in block
    bad = subprocess.run([PERISCOPE_BIN, "token", "new", "--name", "x", "--tenant", "t", "--scope", "root"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid scope" in bad.stderr


def test_bad_settings_stop_the_start_with_one_line(collectors, setup: Setup, tmp_path: Path) -> None:  # noqa: ANN001
    other = trustme.CA().issue_cert("127.0.0.1")
    wrong_key = tmp_path / "wrong.key"
    other.private_key_pem.write_to_path(str(wrong_key))
    garbage = tmp_path / "garbage.toml"
    garbage.write_text("[[token]]\nname = 'x'\n")
    cases = [
        (["--tls-cert-file", str(setup.cert), "--tls-key-file", str(wrong_key)], "do not make a usable certificate and key"),
        (["--tls-cert-file", str(setup.cert)], "go together"),
        (["--tls-cert-file", str(garbage), "--tls-key-file", str(setup.key)], "no certificate"),
        (["--auth-file", str(garbage)], "invalid auth_file"),
        (["--auth-file", str(tmp_path / "missing.toml")], "cannot read"),
    ]
    for args, want in cases:
        c = collectors(args=args)
        c.spawn()
        rc = c.proc.wait(timeout=30)
        err = c.stderr_text().strip()
        assert rc == 2, (args, rc, err)
        assert want in err and len(err.splitlines()) == 1, (args, err)
    # The demo's simulated shop has no token: it refuses auth and TLS.
    demo = subprocess.run([PERISCOPE_BIN, "demo", "--data-dir", str(tmp_path / "demo"), "--auth-file", str(setup.auth)], capture_output=True, text=True, timeout=30)
    assert demo.returncode == 2 and "for periscope serve" in demo.stderr, demo.stderr


def test_sdk_over_tls_with_tokens_grpc_and_http(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    # gRPC: accepted with the token, refused without or for another tenant.
    ok, none, other = unique("grpcok"), unique("grpcnone"), unique("grpcother")
    assert sdk_logs_grpc(c, setup, ok, setup.shop)
    assert not sdk_logs_grpc(c, setup, none, None)
    assert not sdk_logs_grpc(c, setup, other, setup.shop, tenant="someone-else")
    # HTTP: the SDK's exporter with the CA and the token header.
    hok, hbad = unique("httpok"), unique("httpbad")
    assert export_log(HttpLogExporter(endpoint=c.otlp_url("/v1/logs"), certificate_file=str(setup.ca_pem), headers=bearer(setup.shop), timeout=10, session=http_session()), hok)
    assert not export_log(HttpLogExporter(endpoint=c.otlp_url("/v1/logs"), certificate_file=str(setup.ca_pem), headers=bearer("pscp_" + "0" * 64), timeout=10, session=http_session()), hbad)
    # What was accepted is in tenant `shop`, readable with the token (its
    # only tenant is implied) and by `ops` naming the tenant.
    assert len(searchable(c, setup.shop, ok)) == 1
    assert len(searchable(c, setup.shop, hok)) == 1
    assert len(searchable(c, setup.ops, ok, tenant="shop")) == 1
    for q in (none, other, hbad):
        assert searchable(c, setup.ops, q, tenant="shop", timeout=0.5) == []
    # Refusals: 401 with a challenge, 403 for a tenant or scope the token lacks.
    r = c.session.get(c.http_url("/api/v1/logs/search"), params={"q": ok})
    assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"], r.text
    r = c.session.get(c.http_url("/api/v1/logs/search"), params={"q": ok}, headers={**bearer(setup.shop), "X-Scope-OrgID": "other"})
    assert r.status_code == 403 and "does not reach tenant" in r.json()["error"]
    r = c.session.get(c.http_url("/api/v1/logs/search"), params={"q": ok}, headers=bearer(setup.ops))
    assert r.status_code == 403 and "several tenants" in r.json()["error"]
    assert c.session.get(c.http_url("/metrics"), headers=bearer(setup.shop)).status_code == 403
    r = c.session.get(c.http_url("/metrics"), headers=bearer(setup.ops))
    assert r.status_code == 200
    m = parse_prometheus(r.text)
    assert m[("periscope_auth_enabled", frozenset())] == 1
    refused = sum(v for (n, _), v in m.items() if n == "periscope_auth_refusals_total")
    assert refused >= 5
    # Probes and the UI's page stay open; the token never reaches the log.
    assert c.session.get(c.http_url("/healthz")).status_code == 200
    assert c.session.get(c.http_url("/readyz")).status_code == 200
    assert c.session.get(c.http_url("/")).status_code == 200
    log = c.stderr_text()
    assert setup.shop not in log and setup.ops not in log
    assert "shop-apps" in log and "reason" in log


def test_plain_text_to_a_tls_port_is_refused(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    with pytest.raises(requests.ConnectionError):
        http_session().get(f"http://{c.listening['http']}/healthz", timeout=5)
    with pytest.raises(requests.ConnectionError):
        http_session().post(f"http://{c.listening['otlp_http']}/v1/logs", data=b"", headers=bearer(setup.shop), timeout=5)
    channel = grpc.insecure_channel(c.grpc_target)
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=3)
    channel.close()
    # An untrusted CA fails the handshake from the client's side.
    stranger = trustme.CA()
    ctx = ssl.create_default_context(cadata=stranger.cert_pem.bytes().decode())
    with socket.create_connection(tuple_addr(c.listening["http"])) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    m = parse_prometheus(c.session.get(c.http_url("/metrics"), headers=bearer(setup.ops)).text)
    failures = sum(v for (n, _), v in m.items() if n == "periscope_tls_handshake_failures_total")
    assert failures >= 3


def tuple_addr(a: str) -> tuple[str, int]:
    host, port = a.rsplit(":", 1)
    return host, int(port)


def test_remote_write_and_the_prometheus_api_with_basic_auth(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    now_ms = int(time.time() * 1000)
    name = unique("rw_basic")
    body = snappy(write_request([timeseries({"__name__": name, "job": "j"}, [(42.0, now_ms)])]))
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
    s = http_session()
    s.verify = str(setup.ca_pem)
    # Prometheus' remote_write basic_auth: any user name with the token as password.
    assert s.post(c.otlp_url("/api/v1/write"), data=body, headers=headers, auth=("prometheus", setup.shop), timeout=10).status_code == 204
    assert s.post(c.otlp_url("/api/v1/write"), data=body, headers=headers, auth=("prometheus", "wrong"), timeout=10).status_code == 401
    # The query port's remote write needs `write`: ops has only read/admin.
    assert s.post(c.http_url("/api/v1/write"), data=body, headers=headers, auth=("shop", setup.ops), timeout=10).status_code == 403
    # Grafana's Prometheus data source: Basic auth, the user name selects
    # the tenant of a token that has several.
    deadline = time.monotonic() + 30
    result: list = []
    while time.monotonic() < deadline and not result:
        r = s.get(c.http_url("/prometheus/api/v1/query"), params={"query": name, "time": now_ms / 1000}, auth=("shop", setup.ops), timeout=10)
        assert r.status_code == 200, r.text
        result = r.json()["data"]["result"]
        time.sleep(0.3)
    assert result and result[0]["value"][1] == "42"
    # A token for every tenant: the user name is the tenant, whichever it is.
    r = s.get(c.http_url("/prometheus/api/v1/query"), params={"query": name}, auth=("grafana", setup.ops), timeout=10)
    assert r.status_code == 200 and r.json()["data"]["result"] == []
    multi, block = new_token("two", ["shop", "lab"], "read")
    setup.blocks["two"] = block
    setup.write_auth()
    c.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = s.get(c.http_url("/prometheus/api/v1/query"), params={"query": name}, auth=("grafana", multi), timeout=10)
        if r.status_code != 401:
            break
        time.sleep(0.2)
    assert r.status_code == 403 and "several tenants" in r.json()["error"], r.text
    r = s.get(c.http_url("/prometheus/api/v1/query"), params={"query": name, "time": now_ms / 1000}, auth=("shop", multi), timeout=10)
    assert r.status_code == 200 and r.json()["data"]["result"][0]["value"][1] == "42"
    r = s.get(c.http_url("/prometheus/api/v1/query"), params={"query": name}, auth=("shop", "nope"), timeout=10)
    assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"], r.headers
    basic = base64.b64encode(f"other:{setup.shop}".encode()).decode()
    r = s.get(c.http_url("/prometheus/api/v1/query"), params={"query": name}, headers={"Authorization": f"Basic {basic}"}, timeout=10)
    # A user name that is not one of the token's tenants does not select one.
    assert r.status_code == 200


class Sender(threading.Thread):
    """Keeps sending log records over HTTP with `token` on fresh
    connections; remembers which ones were acknowledged."""

    def __init__(self, c: Collector, s: Setup, token: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.c, self.s, self.token, self.prefix = c, s, token, prefix
        self.acked: list[str] = []
        self.refused = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from otlp_util import log_record, logs_request

        i = 0
        while not self.stop.is_set():
            body = f"{self.prefix} n{i}"
            i += 1
            sess = http_session()
            sess.verify = str(self.s.ca_pem)
            try:
                r = sess.post(self.c.otlp_url("/v1/logs"), data=logs_request([log_record(body)]).SerializeToString(), headers={"Content-Type": "application/x-protobuf", **bearer(self.token)}, timeout=10)
                if r.status_code == 200:
                    self.acked.append(body)
                elif r.status_code == 401:
                    self.refused += 1
            except requests.RequestException:
                self.errors += 1
            finally:
                sess.close()
            time.sleep(0.02)


def test_revocation_and_rotation_while_a_client_keeps_sending(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    before = leaf_serial(c)
    # A keep-alive connection opened before the rotation.
    host, port = tuple_addr(c.listening["http"])
    held = http.client.HTTPSConnection(host, port, timeout=10, context=ssl.create_default_context(cafile=str(setup.ca_pem)))
    held.request("GET", "/api/v1/services", headers=bearer(setup.shop))
    assert held.getresponse().read() and held.sock is not None
    held_cert = held.sock.getpeercert(binary_form=True)
    prefix = unique("rot")
    sender = Sender(c, setup, setup.shop, prefix)
    sender.start()
    time.sleep(1.5)
    # The certificate is replaced, as cert-manager renews it: new
    # connections get the new one, the client keeps sending.
    setup.issue()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and leaf_serial(c) == before:
        time.sleep(0.2)
    assert leaf_serial(c) != before, "the new certificate was not served"
    # The open connection was not dropped: it still answers, on the old certificate.
    held.request("GET", "/api/v1/services", headers=bearer(setup.shop))
    assert held.getresponse().status == 200
    assert held.sock.getpeercert(binary_form=True) == held_cert == before
    held.close()
    time.sleep(1)
    acked_before_revocation = len(sender.acked)
    assert acked_before_revocation > 0
    # A bad auth file keeps the last good one.
    good = setup.auth.read_text()
    setup.auth.write_text(good + "\n[[token]]\nname = 'broken'\n")
    c.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    m = parse_prometheus(c.session.get(c.http_url("/metrics"), headers=bearer(setup.ops)).text)
    assert m[("periscope_config_reload_ok", frozenset({("file", "auth")}))] == 0
    assert sender.refused == 0
    # Revoking the token: refused within a few seconds, no restart.
    del setup.blocks["shop-apps"]
    setup.write_auth()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sender.refused == 0:
        time.sleep(0.1)
    sender.stop.set()
    sender.join(15)
    assert sender.refused > 0, "the revoked token still works"
    assert sender.errors == 0, f"{sender.errors} requests failed to connect during rotation"
    m = parse_prometheus(c.session.get(c.http_url("/metrics"), headers=bearer(setup.ops)).text)
    assert m[("periscope_config_reload_ok", frozenset({("file", "auth")}))] == 1
    assert m[("periscope_config_reloads_total", frozenset({("file", "tls")}))] >= 1
    # Nothing acknowledged is lost.
    hits = searchable(c, setup.ops, prefix, tenant="shop", n=len(sender.acked))
    got = {h["body"] for h in hits}
    missing = [b for b in sender.acked if b not in got]
    assert not missing, f"{len(missing)} acknowledged records missing"


def leaf_serial(c: Collector) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(tuple_addr(c.listening["otlp_http"])) as raw, ctx.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def test_mutual_tls_on_the_otlp_listeners(collectors, setup: Setup) -> None:  # noqa: ANN001
    setup.write_auth('\n[client_certificate]\ntenants = ["devices"]\nscopes = ["write"]\n')
    c = start(collectors, setup, client_ca=True)
    client = setup.ca.issue_cert("agent-node-1")
    stranger = trustme.CA().issue_cert("intruder")
    with_cert, no_cert, bad_cert = unique("mtlsok"), unique("mtlsnone"), unique("mtlsbad")
    # The client certificate stands in for a token: tenant `devices`.
    assert sdk_logs_grpc(c, setup, with_cert, None, client=client)
    assert not sdk_logs_grpc(c, setup, no_cert, setup.shop)
    assert not sdk_logs_grpc(c, setup, bad_cert, setup.shop, client=stranger)
    # A token still selects its own tenant over the certificate.
    tok = unique("mtlstoken")
    assert sdk_logs_grpc(c, setup, tok, setup.shop, client=client)
    assert len(searchable(c, setup.ops, with_cert, tenant="devices")) == 1
    assert len(searchable(c, setup.shop, tok)) == 1
    # OTLP/HTTP wants the certificate too; the query port does not.
    s = http_session()
    s.verify = str(setup.ca_pem)
    with pytest.raises(requests.exceptions.SSLError):
        s.post(c.otlp_url("/v1/logs"), data=b"", headers=bearer(setup.shop), timeout=5)
    s.cert = (write_pem(setup.dir / "client.crt", client.cert_chain_pems[0].bytes()), write_pem(setup.dir / "client.key", client.private_key_pem.bytes()))
    from otlp_util import log_record, logs_request

    r = s.post(c.otlp_url("/v1/logs"), data=logs_request([log_record(unique("mtlshttp"))]).SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text
    assert c.session.get(c.http_url("/healthz")).status_code == 200


def write_pem(p: Path, b: bytes) -> str:
    p.write_bytes(b)
    return str(p)


def test_without_an_auth_file_one_warning_names_the_open_listeners(collectors) -> None:  # noqa: ANN001
    c = collectors(addrs=False, args=["--otlp-grpc-addr", "0.0.0.0:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]).start()
    lines = [l for l in c.stderr_text().splitlines() if "no --auth-file" in l]
    assert len(lines) == 1 and "otlp_grpc 0.0.0.0:" in lines[0] and "otlp_http" not in lines[0], lines
    # Open as before: tenants from the header.
    assert c.get("/api/v1/logs/search", params={"q": "x"}, tenant="anyone").status_code == 200


def test_repeated_failures_from_one_address_are_slowed(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    for _ in range(8):
        r = c.session.get(c.http_url("/api/v1/logs/search"), params={"q": "x"}, headers=bearer("pscp_guess"))
        assert r.status_code == 401
    m = parse_prometheus(c.session.get(c.http_url("/metrics"), headers=bearer(setup.ops)).text)
    # Five failures are free; the next three were held back.
    assert m[("periscope_auth_slowed_total", frozenset())] == 3
    assert m[("periscope_auth_refusals_total", frozenset({("listener", "http"), ("reason", "invalid")}))] == 8


def test_the_agent_exports_to_an_authenticated_tls_collector(collectors, setup: Setup, tmp_path: Path) -> None:  # noqa: ANN001
    from agent_util import Agent

    c = start(collectors, setup)
    logs = tmp_path / "app"
    logs.mkdir()
    tag = unique("agenttls")
    (logs / "a.log").write_text("".join(f"{tag} line {i}\n" for i in range(50)))
    agent = Agent(tmp_path / "agent-data", tmp_path, f"https://{c.grpc_target}", [str(logs / "*.log")],
                  args=["--tls-ca-file", str(setup.ca_pem), "--tls-server-name", "localhost", "--bearer-token", setup.shop]).start()
    try:
        hits = searchable(c, setup.shop, tag, n=50, timeout=60)
        assert len(hits) == 50, len(hits)
    finally:
        agent.stop()
    # An agent with a token the file does not list delivers nothing: every
    # export is refused (and it keeps the lines for a retry).
    bad_tag = unique("agentbad")
    (logs / "b.log").write_text("".join(f"{bad_tag} line {i}\n" for i in range(5)))
    bad = Agent(tmp_path / "agent-bad", tmp_path, f"https://{c.grpc_target}", [str(logs / "b.log")],
                args=["--tls-ca-file", str(setup.ca_pem), "--bearer-token", "pscp_" + "1" * 64], name="bad-agent").start()
    try:
        deadline = time.monotonic() + 20
        refused = 0.0
        while time.monotonic() < deadline and refused == 0:
            m = parse_prometheus(c.session.get(c.http_url("/metrics"), headers=bearer(setup.ops)).text)
            refused = m.get(("periscope_auth_refusals_total", frozenset({("listener", "otlp_grpc"), ("reason", "invalid")})), 0)
            time.sleep(0.3)
        assert refused > 0
        assert searchable(c, setup.ops, bad_tag, tenant="shop", timeout=1) == []
    finally:
        bad.kill()


def test_every_data_route_needs_a_token(collectors, setup: Setup) -> None:  # noqa: ANN001
    # A token without the scope each route needs gets 403 from every one
    # (refusals of authorization are not slowed down; unknown tokens are).
    admin_only, block = new_token("admin-only", ["shop"], "admin")
    setup.blocks["admin-only"] = block
    setup.write_auth()
    c = start(collectors, setup)
    s = http_session()
    s.verify = str(setup.ca_pem)
    gets = [
        "/api/v1/logs/search?q=x", "/api/v1/logs/histogram", "/api/v1/services", "/api/v1/services/shop/operations",
        "/api/v1/traces", "/api/v1/traces/0123456789abcdef0123456789abcdef", "/api/v1/service-map",
        "/api/v1/metrics/names", "/prometheus/api/v1/query?query=up", "/prometheus/api/v1/query_range?query=up&start=0&end=1&step=1",
        "/prometheus/api/v1/labels", "/prometheus/api/v1/label/job/values", "/prometheus/api/v1/series?match[]=up",
        "/prometheus/api/v1/metadata", "/prometheus/api/v1/status/buildinfo", "/jaeger/api/services",
        "/jaeger/api/services/shop/operations", "/jaeger/api/operations?service=shop", "/jaeger/api/traces?service=shop",
        "/jaeger/api/traces/0123456789abcdef0123456789abcdef", "/jaeger/api/dependencies",
    ]
    for p in gets:
        r = s.get(c.http_url(p), headers=bearer(admin_only), timeout=10)
        assert r.status_code == 403 and "read" in r.json()["error"], (p, r.status_code, r.text[:200])
        assert s.get(c.http_url(p), headers=bearer(setup.shop), timeout=10).status_code != 403, p
    for p in ("/prometheus/api/v1/query", "/prometheus/api/v1/labels", "/prometheus/api/v1/series"):
        r = s.post(c.http_url(p), data={"query": "up", "match[]": "up"}, headers=bearer(admin_only), timeout=10)
        assert r.status_code == 403, (p, r.status_code)
    assert s.get(c.http_url("/metrics"), headers=bearer(setup.shop), timeout=10).status_code == 403
    for url in (c.http_url("/api/v1/write"), c.otlp_url("/api/v1/write"), c.otlp_url("/v1/logs"), c.otlp_url("/v1/traces"), c.otlp_url("/v1/metrics"), c.otlp_url("/anything")):
        r = s.post(url, data=b"x", headers={"Content-Type": "application/x-protobuf", **bearer(admin_only)}, timeout=10)
        assert r.status_code == 403 and "write" in r.json()["error"], (url, r.status_code)
    # And without any credential: 401.
    for p in ("/api/v1/logs/search?q=x", "/prometheus/api/v1/query?query=up", "/jaeger/api/services", "/metrics"):
        assert s.get(c.http_url(p), timeout=10).status_code == 401, p
