"""The agent's API-server enrichment against a fake Kubernetes API server.

The fake (a threaded http.server on 127.0.0.1) checks the bearer token and
the node's field selector, answers the pod list, and streams the watch as
the API server does: chunked, one JSON event per line. The tests drive it
through the cases that matter on a node: a pod whose file the agent tails
before the watch reports it (late metadata), a pod deleted while its file
still gets lines (grace period), a 410 Gone that forces a relist, a rotated
token, and an API server that is down (logs flow with path metadata).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent_util import Agent
from conftest import unique

NODE = "e2e-node"
LABEL_PREFIX = "k8s.pod.label."
END_WATCH = object()


def pod(uid: str, ns: str, name: str, labels: dict[str, str], owner: tuple[str, str] | None, rv: str = "100") -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "namespace": ns, "name": name, "labels": labels, "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": f"owner-{uid}", "controller": True}]
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": {"nodeName": NODE}, "status": {"phase": "Running"}}


class FakeApiServer:
    """`GET /api/v1/pods` (list and watch) for one node, with a bearer token."""

    def __init__(self, token: str, listen: bool = True) -> None:
        self.token = token
        self.pods: dict[str, dict[str, Any]] = {}
        self.resource_version = 1000
        self.events: queue.Queue[Any] = queue.Queue()
        self.lists = 0
        self.watches = 0
        self.watch_queries: list[dict[str, list[str]]] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                q = parse_qs(url.query)
                auth = self.headers.get("Authorization")
                with fake.lock:
                    token = fake.token
                if auth != f"Bearer {token}":
                    fake.rejected.append(f"bad token {auth!r} for {self.path}")
                    self.reply(401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401})
                    return
                if url.path != "/api/v1/pods" or q.get("fieldSelector") != [f"spec.nodeName={NODE}"]:
                    fake.rejected.append(f"unexpected request {self.path}")
                    self.reply(400, {"kind": "Status", "status": "Failure", "reason": "BadRequest", "code": 400})
                    return
                if q.get("watch") == ["true"]:
                    self.watch(q)
                    return
                with fake.lock:
                    fake.lists += 1
                    body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(fake.resource_version)}, "items": list(fake.pods.values())}
                self.reply(200, body)

            def watch(self, q: dict[str, list[str]]) -> None:
                with fake.lock:
                    fake.watches += 1
                    fake.watch_queries.append(q)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                try:
                    while not fake.stopping.is_set():
                        try:
                            ev = fake.events.get(timeout=0.1)
                        except queue.Empty:
                            continue
                        if ev is END_WATCH:
                            break
                        line = json.dumps(ev).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                        if ev["type"] == "ERROR":
                            break
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.server_bind()
        self.port = self.server.server_address[1]
        self.thread: threading.Thread | None = None
        if listen:
            self.listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listen(self) -> None:
        """Starts accepting: until then connections to the (reserved) port are refused."""
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def add(self, p: dict[str, Any], event: str | None = "ADDED") -> None:
        with self.lock:
            self.resource_version += 1
            p["metadata"]["resourceVersion"] = str(self.resource_version)
            self.pods[p["metadata"]["uid"]] = p
        if event:
            self.events.put({"type": event, "object": p})

    def delete(self, uid: str) -> None:
        with self.lock:
            self.resource_version += 1
            p = self.pods.pop(uid)
            p["metadata"]["resourceVersion"] = str(self.resource_version)
        self.events.put({"type": "DELETED", "object": p})

    def send(self, event: Any) -> None:
        self.events.put(event)

    def wait(self, what: str, pred, timeout: float = 30) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"fake API server: {what} not reached within {timeout}s (lists {self.lists}, watches {self.watches}, rejected {self.rejected})")
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.server.shutdown()
        self.server.server_close()


def write(path: Path, tag: str, seq: int, text: str = "line") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{tag} {seq:09d} {text}\n")


def one_hit(collector, tag: str, seq: int) -> dict[str, Any]:  # noqa: ANN001
    want = f"{tag} {seq:09d} "
    hits = collector.search_until(lambda h: any(x["body"].startswith(want) for x in h), q=tag)
    return next(x for x in hits if x["body"].startswith(want))


def labels(hit: dict[str, Any]) -> dict[str, str]:
    return {k[len(LABEL_PREFIX):]: v for k, v in hit["resource"].items() if k.startswith(LABEL_PREFIX)}


def start_agent(tmp_path: Path, collector, api_url: str, token_file: Path) -> Agent:  # noqa: ANN001
    return Agent(
        tmp_path / "agent",
        tmp_path / "logs",
        f"http://{collector.grpc_target}",
        [f"{tmp_path}/var/log/pods/*/*/*.log*"],
        args=[
            "--k8s-api-enrichment", "true",
            "--k8s-api-url", api_url,
            "--k8s-token-file", str(token_file),
            "--k8s-ca-file", "",
            "--k8s-deleted-pod-grace", "5m",
        ],
    ).start()


def test_labels_owners_late_pods_deleted_pods_and_relist(collectors, tmp_path: Path) -> None:  # noqa: ANN001
    collector = collectors().start()
    pods_dir = tmp_path / "var/log/pods"
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    api = FakeApiServer("token-one")
    web = pod("uid-web", "shop", "web-7d9f8c6b5-x2x4z", {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8c6b5", "team": "payments"}, ("ReplicaSet", "web-7d9f8c6b5"))
    batch = pod("uid-batch", "jobs", "report-29412345-abcde", {"app.kubernetes.io/name": "report"}, ("Job", "report-29412345"))
    api.add(web, event=None)
    api.add(batch, event=None)
    web_log = pods_dir / "shop_web-7d9f8c6b5-x2x4z_uid-web/nginx/0.log"
    batch_log = pods_dir / "jobs_report-29412345-abcde_uid-batch/report/0.log"
    late_log = pods_dir / "shop_late-0_uid-late/app/0.log"
    tag = unique("k8s")
    # The late pod's file exists (and is tailed) before the API server knows the pod.
    write(late_log, tag + "late", 0)
    agent = start_agent(tmp_path, collector, api.url, token_file)
    try:
        api.wait("first list and watch", lambda: api.lists >= 1 and api.watches >= 1)
        agent.wait_metric("periscope_agent_k8s_pods_cached", lambda v: v == 2)

        # Path metadata only for the pod the API server does not know yet.
        h = one_hit(collector, tag + "late", 0)
        assert h["service"] == "app"
        assert h["resource"]["k8s.pod.uid"] == "uid-late"
        assert labels(h) == {}
        assert "k8s.statefulset.name" not in h["resource"]

        # Labels, owner names and service.name from app.kubernetes.io/name.
        write(web_log, tag + "web", 0)
        write(batch_log, tag + "batch", 0)
        h = one_hit(collector, tag + "web", 0)
        assert h["service"] == "checkout", h
        assert labels(h) == {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8c6b5", "team": "payments"}
        res = h["resource"]
        assert res["k8s.deployment.name"] == "web"
        assert res["k8s.replicaset.name"] == "web-7d9f8c6b5"
        assert res["k8s.container.name"] == "nginx"
        assert res["k8s.namespace.name"] == "shop"
        assert res["k8s.node.name"] == NODE
        h = one_hit(collector, tag + "batch", 0)
        assert h["service"] == "report"
        assert h["resource"]["k8s.job.name"] == "report-29412345"
        assert h["resource"]["k8s.cronjob.name"] == "report"

        # The late pod arrives by the watch: the file already open picks it up.
        api.add(pod("uid-late", "shop", "late-0", {"app.kubernetes.io/name": "late-svc", "tier": "db"}, ("StatefulSet", "late")))
        agent.wait_metric("periscope_agent_k8s_pods_cached", lambda v: v == 3)
        write(late_log, tag + "late", 1)
        h = one_hit(collector, tag + "late", 1)
        assert h["service"] == "late-svc", h
        assert labels(h) == {"app.kubernetes.io/name": "late-svc", "tier": "db"}
        assert h["resource"]["k8s.statefulset.name"] == "late"
        assert h["resource"]["k8s.container.name"] == "app"

        # Deleted while its file still gets lines: kept for the grace period.
        events = agent.metric("periscope_agent_k8s_watch_events_total")
        api.delete("uid-batch")
        agent.wait_metric("periscope_agent_k8s_watch_events_total", lambda v: v >= events + 1)
        write(batch_log, tag + "batch", 1)
        h = one_hit(collector, tag + "batch", 1)
        assert h["service"] == "report"
        assert h["resource"]["k8s.job.name"] == "report-29412345"
        assert agent.metric("periscope_agent_k8s_pods_cached") == 3

        # A bookmark, then 410 Gone: the agent relists and watches again.
        lists, watches = api.lists, api.watches
        api.send({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "5000"}}})
        api.send({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 5000 (6000)", "reason": "Expired", "code": 410}})
        api.wait("relist after 410", lambda: api.lists > lists and api.watches > watches)
        assert agent.metric("periscope_agent_k8s_lists_total") >= 2
        # The resumed watch starts from the relist's version, not the bookmark's.
        assert api.watch_queries[-1]["resourceVersion"] == [str(api.resource_version)]
        assert all(q.get("allowWatchBookmarks") == ["true"] for q in api.watch_queries)

        # A rotated token is read again at the next connection.
        token_file.write_text("token-two\n")
        with api.lock:
            api.token = "token-two"
        watches = api.watches
        api.send(END_WATCH)
        api.wait("watch with the rotated token", lambda: api.watches > watches)
        api.add(pod("uid-web", "shop", "web-7d9f8c6b5-x2x4z", {"app.kubernetes.io/name": "checkout-v2", "pod-template-hash": "7d9f8c6b5"}, ("ReplicaSet", "web-7d9f8c6b5")), event="MODIFIED")
        deadline = time.monotonic() + 30
        seq = 1
        while True:
            write(web_log, tag + "web", seq)
            h = one_hit(collector, tag + "web", seq)
            if h["service"] == "checkout-v2":
                break
            assert time.monotonic() < deadline, f"relabelled pod never seen: {h}"
            seq += 1
        assert labels(h) == {"app.kubernetes.io/name": "checkout-v2", "pod-template-hash": "7d9f8c6b5"}
        assert api.rejected == [], api.rejected
        assert agent.metric("periscope_agent_k8s_watch_errors_total") == 0
    finally:
        rc = agent.stop()
        api.stop()
    assert rc == 0, agent.stderr_tail()


def test_api_server_down_logs_flow_with_path_metadata(collectors, tmp_path: Path) -> None:  # noqa: ANN001
    collector = collectors().start()
    token_file = tmp_path / "token"
    token_file.write_text("t0k3n")
    # The port is ours but refuses connections until listen().
    api = FakeApiServer("t0k3n", listen=False)
    api.add(pod("uid-a", "shop", "api-0", {"app.kubernetes.io/name": "api"}, ("StatefulSet", "api")), event=None)
    log = tmp_path / "var/log/pods/shop_api-0_uid-a/server/0.log"
    tag = unique("down")
    write(log, tag, 0)
    agent = start_agent(tmp_path, collector, api.url, token_file)
    try:
        h = one_hit(collector, tag, 0)
        assert h["service"] == "server"
        assert h["resource"]["k8s.pod.name"] == "api-0"
        assert h["resource"]["k8s.pod.uid"] == "uid-a"
        assert labels(h) == {}
        agent.wait_metric("periscope_agent_k8s_watch_errors_total", lambda v: v >= 1)
        for i in range(1, 20):
            write(log, tag, i)
        hits = collector.search_until(lambda h: len(h) >= 20, q=tag)
        assert all(x["service"] == "server" for x in hits)
        assert "pod list failed" in agent.stderr_text(), agent.stderr_tail()

        # The API server comes back: enrichment resumes without a restart.
        api.listen()
        api.wait("list after the outage", lambda: api.lists >= 1, timeout=60)
        agent.wait_metric("periscope_agent_k8s_pods_cached", lambda v: v == 1)
        write(log, tag, 20)
        h = one_hit(collector, tag, 20)
        assert h["service"] == "api", h
        assert h["resource"]["k8s.statefulset.name"] == "api"
    finally:
        rc = agent.stop()
        api.stop()
    assert rc == 0, agent.stderr_tail()
