"""Validates rendered Periscope manifests: Kubernetes schemas, then our rules.

Run by deploy/validate.sh on the output of `kubectl kustomize` for every
overlay, one multi-document YAML file per overlay:

    python deploy/check_manifests.py --repo . --k8s-version 1.30.0 \
        --rbac-overlay cluster rendered/single-node.yaml rendered/cluster.yaml

Every document is validated with kubernetes-validate in strict mode (unknown
fields are errors, and so is a kind it has no schema for, cert-manager's
aside, which checks/security.py checks) against each pinned Kubernetes
version. Then the rules the schemas cannot express: resources and probes on
every container, a DaemonSet that tolerates every taint and mounts the
host's logs read-only, RBAC only where API-server enrichment is on, configs
that agree with the pods and Services that use them (ports, paths, the keys,
flags and variables each binary reads, per its config.rs), and the security
rules of checks/security.py: Pod Security levels, NetworkPolicies, TLS and
tokens from Secrets. With --agent-bin, each overlay's agent arguments and
config also go through the real `periscope-agent --check-config`, with
stand-in files where the pod mounts its Secrets. Exit code 1 when anything
fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(
        f"check_manifests: {exc}; install kubernetes-validate "
        "(tests/e2e/requirements.txt) into the python that runs this script"
    )

# The rest of the rules live beside this file, under checks/.
from checks import security
from checks.layout import (
    AGENT,
    AGENT_NAMESPACE,
    CERT_MANAGER_NAMESPACE,
    COLLECTOR,
    COMPONENT_LABEL,
    NAMESPACE,
)

AGENT_CONFIG_KEY = "agent.toml"
COLLECTOR_CONFIG_KEY = "collector.toml"
# Host paths the agent may mount, and whether it may write to them.
READ_ONLY_HOST_PATHS = {"/var/log/pods", "/var/log/containers"}
WRITABLE_HOST_PATHS = {"/var/lib/periscope-agent"}
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "ClusterIssuer"}
# Where each binary's accepted keys, flags and variables are declared:
# (source file, the clap struct of its flags, the ConfigMap key of its file).
ACCEPTED_SOURCES = {
    "periscope serve": ("collector/src/config.rs", "ServeArgs", COLLECTOR_CONFIG_KEY),
    "periscope-agent": ("agent/src/config.rs", "Cli", AGENT_CONFIG_KEY),
}
# (config key, container port name, the binary's default) for each listener.
LISTEN_KEYS_AGENT = (
    ("otlp_grpc_addr", "otlp-grpc", ""),  # the relays are off unless configured
    ("otlp_http_addr", "otlp-http", ""),
    ("http_addr", "http", "0.0.0.0:8686"),
)
LISTEN_KEYS_COLLECTOR = (
    ("otlp_grpc_addr", "otlp-grpc", "0.0.0.0:4317"),
    ("otlp_http_addr", "otlp-http", "0.0.0.0:4318"),
    ("http_addr", "http", "0.0.0.0:8080"),
)
WORKLOAD_KINDS = {"DaemonSet", "StatefulSet", "Deployment", "ReplicaSet", "Job"}
# API groups of custom resources the manifests may use (components/cert-manager).
CRD_GROUPS = {"cert-manager.io"}


@dataclass
class Overlay:
    """One rendered overlay and the problems found in it."""

    name: str
    docs: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, obj: dict[str, Any] | None, message: str) -> None:
        where = ""
        if obj:
            ns = obj["metadata"].get("namespace")
            where = f"{obj['kind']}/{obj['metadata']['name']}{f' in {ns}' if ns else ''}: "
        self.errors.append(f"{self.name}: {where}{message}")

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object of that kind and name; in that namespace, when one is given."""
        for d in self.docs:
            if (
                d["kind"] == kind
                and d["metadata"]["name"] == name
                and (namespace is None or d["metadata"].get("namespace") == namespace)
            ):
                return d
        return None

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]


# ----- quantities ------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("500m", "2", "512Mi") as a number."""
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"unsupported quantity {value!r}")
    return float(m.group(1)) * _FACTORS[m.group(2)]


_SIZE = re.compile(r"^([0-9]+)\s*(B|KiB|MiB|GiB)?$")


def size_bytes(value: Any) -> int:
    """A Periscope size ("64MiB", 1048576) in bytes, as collector/src/config.rs reads it."""
    m = _SIZE.match(str(value).strip())
    if not m:
        raise ValueError(f"unsupported size {value!r}")
    unit = {None: 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[m.group(2)]
    return int(m.group(1)) * unit


# ----- schema validation -----------------------------------------------------


def validate_schemas(ov: Overlay, versions: list[str]) -> None:
    for d in ov.docs:
        if d["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue  # no schema in kubernetes-validate; checks/security.py checks them
        for version in versions:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                ov.error(d, f"invalid against Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                ov.error(d, f"no schema: {e.message}")
            except Exception as e:  # noqa: BLE001 - e.g. a version whose schemas this release no longer ships
                ov.error(d, f"cannot validate against Kubernetes {version} with kubernetes-validate: {e!r}")


# ----- pods ------------------------------------------------------------------


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def check_containers(ov: Overlay, obj: dict[str, Any]) -> None:
    spec = pod_spec(obj)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
    for c in spec.get("initContainers", []) + spec["containers"]:
        is_init = c in spec.get("initContainers", [])
        label = f"container {c['name']}"
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    ov.error(obj, f"{label} has no {kind}.{r}")
        for r in ("cpu", "memory"):
            try:
                if quantity(res["requests"][r]) > quantity(res["limits"][r]):
                    ov.error(obj, f"{label} requests more {r} than its limit")
            except (KeyError, ValueError):
                pass
        port_names = {p.get("name") for p in c.get("ports", [])}
        port_numbers = {p["containerPort"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            if is_init:
                continue
            p = c.get(probe)
            if not p:
                ov.error(obj, f"{label} has no {probe}")
                continue
            port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
            if port is not None and port not in port_names and port not in port_numbers:
                ov.error(obj, f"{label} {probe} uses port {port!r}, which the container does not declare")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if "@" not in image and (not tag or tag == "latest"):
            ov.error(obj, f"{label} image {image!r} has no pinned tag (set it in the overlay's images:)")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            ov.error(obj, f"{label} root filesystem is not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            ov.error(obj, f"{label} allows privilege escalation")
        if sc.get("privileged"):
            ov.error(obj, f"{label} is privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            ov.error(obj, f"{label} does not drop all capabilities")
        if sc.get("capabilities", {}).get("add"):
            ov.error(obj, f"{label} adds capabilities")
        for m in c.get("volumeMounts", []):
            vol = volumes.get(m["name"])
            if vol is None:
                if m["name"] not in claims:
                    ov.error(obj, f"{label} mounts undefined volume {m['name']!r}")
                continue
            host = vol.get("hostPath", {}).get("path")
            if host is None:
                continue
            if host in READ_ONLY_HOST_PATHS:
                if m.get("readOnly") is not True:
                    ov.error(obj, f"{label} mounts host path {host} writable; it must be readOnly")
            elif host not in WRITABLE_HOST_PATHS:
                ov.error(obj, f"{label} mounts unexpected host path {host}")
    ns = obj["metadata"].get("namespace")
    for v in spec.get("volumes", []):
        cm = v.get("configMap", {}).get("name")
        if cm and not ov.find("ConfigMap", cm, ns):
            ov.error(obj, f"volume {v['name']} references ConfigMap {cm}, which is not in namespace {ns}")
    sa = spec.get("serviceAccountName")
    if sa and not ov.find("ServiceAccount", sa, ns):
        ov.error(obj, f"references ServiceAccount {sa}, which is not in namespace {ns}")


def mounted_config(ov: Overlay, obj: dict[str, Any], key: str) -> tuple[dict[str, Any], str, str] | None:
    """The TOML file `key` of the ConfigMap the pod mounts: parsed, its mount directory, its text."""
    spec = pod_spec(obj)
    for v in spec.get("volumes", []):
        cm_name = v.get("configMap", {}).get("name")
        cm = ov.find("ConfigMap", cm_name, obj["metadata"].get("namespace")) if cm_name else None
        if not cm or key not in cm.get("data", {}):
            continue
        mount = next(
            (m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == v["name"]),
            None,
        )
        try:
            return tomllib.loads(cm["data"][key]), mount or "", cm["data"][key]
        except tomllib.TOMLDecodeError as e:
            ov.error(cm, f"{key} is not valid TOML: {e}")
            return None
    ov.error(obj, f"mounts no ConfigMap with {key}")
    return None


def addr_port(value: Any) -> int | None:
    """The port of a `host:port` listen address, None when it has none."""
    _, sep, port = str(value).rpartition(":")
    return int(port) if sep and port.isdigit() else None


def container_ports(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in container.get("ports", []) if "name" in p}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ----- the agent -------------------------------------------------------------


def glob_matches(pattern: str, path: str, cross_slash: bool) -> bool:
    """Glob match where `*` crosses `/` or not: the agent's matcher may do either."""
    if cross_slash:
        return fnmatch.fnmatchcase(path, pattern)
    regex = "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, path) is not None


def run_agent_check_config(ov: Overlay, ds: dict[str, Any], c: dict[str, Any], cfg_text: str, agent_bin: Path) -> None:
    """Runs the real agent's --check-config on the container's arguments and config file.

    The Secrets the pod mounts are not in the manifests: stand-in files take
    their place (security.stand_in_secrets), and paths into their mounts
    are rewritten to the stand-ins, since --check-config reads the files.
    """
    namespace = ds["metadata"].get("namespace", "")
    values = {"POD_NAMESPACE": namespace, "POD_NAME": f"{AGENT}-x7k2p", "NODE_NAME": "node-1"}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            moved = security.stand_in_secrets(ds, c, Path(tmp))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            ov.error(ds, f"cannot make stand-in Secrets for --check-config: {e}")
            return

        def relocate(text: str) -> str:
            for mount, stand_in in moved.items():
                text = re.sub(rf"(?<![\w/.-]){re.escape(mount)}/", stand_in + "/", text)
            return text

        conf = Path(tmp) / AGENT_CONFIG_KEY
        args = []
        for a in c.get("args", []):
            if a.startswith("--config="):
                a = f"--config={conf}"
            args.append(relocate(re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), a)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERISCOPE_")}
        env.update(values)
        env.update({e["name"]: relocate(e["value"]) for e in c.get("env", []) if "value" in e})

        def check(text: str) -> subprocess.CompletedProcess[str] | None:
            conf.write_text(relocate(text))
            try:
                return subprocess.run(
                    [str(agent_bin), "--check-config", *args],
                    cwd=tmp,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                ov.error(ds, f"cannot run {agent_bin} --check-config: {e}")
                return None

        proc = check(cfg_text)
    if proc is None:
        return
    if proc.returncode != 0:
        ov.error(
            ds, f"{agent_bin.name} --check-config rejects the config (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    elif "configuration ok" not in proc.stdout:
        ov.notes.append(f"{ov.name}: {agent_bin} does not implement --check-config (stale build?); not checked")


def check_agent(ov: Overlay, rbac_expected: bool, repo: Path, agent_bin: Path | None) -> dict[str, Any] | None:
    ds = ov.find("DaemonSet", AGENT)
    if ds is None:
        ov.error(None, f"no DaemonSet {AGENT}")
        return None
    spec = pod_spec(ds)
    if not any(
        t.get("operator") == "Exists" and not t.get("key") and not t.get("effect") for t in spec.get("tolerations", [])
    ):
        ov.error(ds, "does not tolerate every taint (a toleration with operator Exists and no key or effect)")
    if spec.get("priorityClassName") != "system-node-critical":
        ov.error(ds, "priorityClassName is not system-node-critical")
    c = spec["containers"][0]
    ports = container_ports(c)
    for name, number in (("otlp-grpc", 4317), ("otlp-http", 4318)):
        if ports.get(name, {}).get("containerPort") != number:
            ov.error(ds, f"port {name} is not containerPort {number}")
    check_relay_service(ov, ds)
    env = env_of(c)
    for var, path in (
        ("NODE_NAME", "spec.nodeName"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ):
        got = env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if got != path:
            ov.error(ds, f"env {var} does not come from the downward API field {path}")
    for probe in ("livenessProbe", "readinessProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("path") != "/healthz":
            ov.error(ds, f"{probe} is not on /healthz")

    # The agent's own pod is excluded: expand the variables as the kubelet
    # does and try the globs on log paths of this pod and of others.
    excludes = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--exclude=")]
    own = "/var/log/pods/{ns}_{pod}_0b6f1a52-7d1e-4c7e-9a55-3f2f4c1d2e9a/agent/0.log"
    agent_ns = ds["metadata"].get("namespace", "")
    this_pod = {"POD_NAMESPACE": agent_ns, "POD_NAME": f"{AGENT}-x7k2p"}
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: this_pod.get(m.group(1), m.group(0)), e) for e in excludes]
    for cross in (True, False):
        if not any(glob_matches(e, own.format(ns=agent_ns, pod=f"{AGENT}-x7k2p"), cross) for e in expanded):
            ov.error(ds, "no --exclude glob matches the agent's own pod logs")
        for other_ns, other_pod in (
            (NAMESPACE, f"{COLLECTOR}-0"),
            (agent_ns, f"{AGENT}-q9z4m"),
            ("default", "web-5d9c"),
        ):
            path = own.format(ns=other_ns, pod=other_pod)
            if any(glob_matches(e, path, cross) for e in expanded):
                ov.error(ds, f"an --exclude glob also drops another pod's logs: {path}")

    parsed = mounted_config(ov, ds, AGENT_CONFIG_KEY)
    if parsed is None:
        return None
    cfg, config_dir, cfg_text = parsed
    if not any(a == f"--config={config_dir}/{AGENT_CONFIG_KEY}" for a in c.get("args", [])):
        ov.error(ds, f"args do not pass --config={config_dir}/{AGENT_CONFIG_KEY}")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    host_mounts = {
        v["hostPath"]["path"]: mounts.get(v["name"], {}).get("mountPath")
        for v in spec.get("volumes", [])
        if "hostPath" in v
    }
    state_dirs = {host_mounts.get(p) for p in WRITABLE_HOST_PATHS}
    if cfg.get("data_dir") not in state_dirs:
        ov.error(
            ds,
            f"agent data_dir {cfg.get('data_dir')!r} is not the writable hostPath mount {sorted(map(str, state_dirs))}",
        )
    for pattern in cfg.get("include", []):
        if not any(pattern.startswith(host_mounts.get(p) or "\0") for p in READ_ONLY_HOST_PATHS):
            ov.error(ds, f"include glob {pattern!r} is outside the mounted log directories")
    for key, name, default in LISTEN_KEYS_AGENT:
        if addr_port(cfg.get(key, default)) != ports.get(name, {}).get("containerPort"):
            ov.error(ds, f"{key} {cfg.get(key, default)!r} does not listen on container port {name}")

    check_accepted(ov, ds, c, cfg, repo, "periscope-agent")
    security.check_agent_security(ov, ds, c, cfg)
    if agent_bin is not None:
        run_agent_check_config(ov, ds, c, cfg_text, agent_bin)

    enrichment = cfg.get("k8s_api_enrichment") is True
    if enrichment != rbac_expected:
        ov.error(
            ds,
            f"k8s_api_enrichment is {'on' if enrichment else 'off'} but RBAC is {'present' if rbac_expected else 'absent'}",
        )
    if spec.get("automountServiceAccountToken", True) != rbac_expected:
        ov.error(
            ds,
            "mounts a ServiceAccount token without API-server enrichment"
            if not rbac_expected
            else "mounts no ServiceAccount token although API-server enrichment is on",
        )
    return cfg


def check_relay_service(ov: Overlay, ds: dict[str, Any]) -> None:
    """The relay is reached through a node-local Service, never through hostPorts."""
    for c in pod_spec(ds)["containers"]:
        for p in c.get("ports", []):
            if p.get("hostPort"):
                ov.error(
                    ds,
                    f"port {p.get('name', p['containerPort'])} has hostPort {p['hostPort']}: the relay is "
                    f"reached through the Service {AGENT}, where NetworkPolicy applies",
                )
    if pod_spec(ds).get("hostNetwork"):
        ov.error(ds, "uses hostNetwork: the relay would listen on the node's addresses")
    svc = ov.find("Service", AGENT, ds["metadata"].get("namespace"))
    if svc is None:
        ov.error(ds, f"no Service {AGENT} in its namespace for the relay")
        return
    if svc["spec"].get("internalTrafficPolicy") != "Local":
        ov.error(
            svc,
            "internalTrafficPolicy is not Local: pods' telemetry would reach other nodes' agents "
            "and get the wrong node's attributes",
        )
    by_port = {p["port"]: p.get("targetPort") for p in svc["spec"].get("ports", [])}
    for number, name in ((4317, "otlp-grpc"), (4318, "otlp-http")):
        if by_port.get(number) not in (name, number):
            ov.error(svc, f"does not forward port {number} to the agent's {name}")


def check_rbac(ov: Overlay, allowed: bool) -> bool:
    """RBAC objects appear only where allowed, and grant no more than reading pods."""
    rbac = [d for d in ov.docs if d["kind"] in RBAC_KINDS]
    if rbac and not allowed:
        for d in rbac:
            ov.error(d, "RBAC object in an overlay without API-server enrichment")
        return True
    if allowed and not rbac:
        ov.error(None, "no RBAC objects although this overlay is meant to enable API-server enrichment")
    for d in rbac:
        if d["kind"] in ("ClusterRole", "Role"):
            for rule in d.get("rules", []):
                if (
                    rule.get("apiGroups") != [""]
                    or rule.get("resources") != ["pods"]
                    or not set(rule.get("verbs", [])) <= {"get", "list", "watch"}
                ):
                    ov.error(d, f"grants more than get/list/watch on pods: {rule}")
        else:
            subjects = d.get("subjects", [])
            if subjects != [{"kind": "ServiceAccount", "name": AGENT, "namespace": AGENT_NAMESPACE}]:
                ov.error(d, f"is not bound to exactly the agent's ServiceAccount: {subjects}")
            if not ov.find(d["roleRef"]["kind"], d["roleRef"]["name"]):
                ov.error(d, f"references missing {d['roleRef']['kind']} {d['roleRef']['name']}")
    return bool(rbac)


# ----- the collector ---------------------------------------------------------


@dataclass
class AcceptedConfig:
    """What a binary accepts, read from its config source: TOML keys, flags, environment variables."""

    keys: set[str]
    flags: set[str]
    envs: set[str]


def accepted_config(repo: Path, source: str, args_struct: str) -> AcceptedConfig:
    """Reads the `FileConfig` keys, the `args_struct` flags and the `env = "..."` names of `source`."""
    text = (repo / source).read_text()

    def fields(struct: str) -> set[str]:
        m = re.search(rf"struct {struct} \{{(.*?)\n\}}", text, re.DOTALL)
        if not m:
            raise ValueError(f"struct {struct} not found in {source}")
        return set(re.findall(r"^\s*(?:pub\s+)?(\w+)\s*:", m.group(1), re.MULTILINE))

    return AcceptedConfig(
        keys=fields("FileConfig"),
        flags={"--" + f.replace("_", "-") for f in fields(args_struct)},
        envs=set(re.findall(r'env\s*=\s*"(\w+)"', text)),
    )


def check_accepted(
    ov: Overlay, obj: dict[str, Any], c: dict[str, Any], cfg: dict[str, Any], repo: Path, binary: str
) -> None:
    """The config file's keys, the container's flags and PERISCOPE_* variables are ones the binary reads."""
    source, args_struct, file_key = ACCEPTED_SOURCES[binary]
    try:
        acc = accepted_config(repo, source, args_struct)
    except (OSError, ValueError) as e:
        ov.error(obj, f"cannot read what {binary} accepts: {e}")
        return
    for k in sorted(set(cfg) - acc.keys):
        ov.error(obj, f"{file_key} key {k!r} is not accepted by {binary}")
    for a in c.get("args", []):
        flag = a.split("=", 1)[0]
        if flag.startswith("--") and flag not in acc.flags:
            ov.error(obj, f"flag {flag} is not accepted by {binary}")
    for name in sorted(n for n in env_of(c) if n.startswith("PERISCOPE_") and n not in acc.envs):
        ov.error(obj, f"env {name} is not read by {binary}")


def check_collector(ov: Overlay, repo: Path) -> None:
    sts = ov.find("StatefulSet", COLLECTOR)
    if sts is None:
        ov.error(None, f"no StatefulSet {COLLECTOR}")
        return
    spec = pod_spec(sts)
    c = spec["containers"][0]
    ports = container_ports(c)
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        ov.error(sts, "readinessProbe is not on /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        ov.error(sts, "livenessProbe is not on /healthz")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
        ov.error(sts, "does not run as a non-root user")
    claims = sts["spec"].get("volumeClaimTemplates", [])
    if not claims:
        ov.error(sts, "has no PersistentVolumeClaim template")
    headless = ov.find("Service", sts["spec"].get("serviceName", ""))
    if headless is None or headless["spec"].get("clusterIP") != "None":
        ov.error(sts, f"serviceName {sts['spec'].get('serviceName')!r} is not a headless Service")

    parsed = mounted_config(ov, sts, COLLECTOR_CONFIG_KEY)
    if parsed is None:
        return
    cfg, config_dir, _ = parsed
    if f"--config={config_dir}/{COLLECTOR_CONFIG_KEY}" not in c.get("args", []):
        ov.error(sts, f"args do not pass --config={config_dir}/{COLLECTOR_CONFIG_KEY}")
    check_accepted(ov, sts, c, cfg, repo, "periscope serve")
    security.check_collector_security(ov, sts, c, cfg)
    claim_mounts = {
        m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in {cl["metadata"]["name"] for cl in claims}
    }
    if cfg.get("data_dir") not in claim_mounts:
        ov.error(
            sts, f"collector data_dir {cfg.get('data_dir')!r} is not on the PersistentVolume ({sorted(claim_mounts)})"
        )
    for key, name, default in LISTEN_KEYS_COLLECTOR:
        if addr_port(cfg.get(key, default)) != ports.get(name, {}).get("containerPort"):
            ov.error(sts, f"{key} {cfg.get(key, default)!r} does not listen on container port {name}")
    # The memory limit must hold the configured budgets (env overrides the file).
    env = env_of(c)
    try:
        budgets = sum(
            size_bytes(
                env[f"PERISCOPE_{k.upper()}"]["value"] if f"PERISCOPE_{k.upper()}" in env else cfg.get(k, "256MiB")
            )
            for k in ("max_inflight_bytes", "trace_buffer_bytes")
        )
        limit = quantity(c["resources"]["limits"]["memory"])
        if limit <= budgets:
            ov.error(
                sts,
                f"memory limit {c['resources']['limits']['memory']} does not exceed the ingest and trace budgets ({budgets} bytes)",
            )
    except (KeyError, ValueError) as e:
        ov.error(sts, f"cannot compare memory limit and budgets: {e}")


# ----- Services and the wiring between components ----------------------------


def check_services(ov: Overlay, agent_cfg: dict[str, Any] | None) -> None:
    workloads = [d for d in ov.docs if d["kind"] in WORKLOAD_KINDS]
    for svc in ov.of_kind("Service"):
        selector = svc["spec"].get("selector", {})
        targets = [
            w
            for w in workloads
            if selector and selector.items() <= w["spec"]["template"]["metadata"].get("labels", {}).items()
        ]
        if not targets:
            ov.error(svc, f"selector {selector} matches no pod template")
            continue
        names = {p.get("name") for w in targets for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                ov.error(svc, f"targetPort {p['targetPort']} is not a port of the selected pods")
    svc = ov.find("Service", COLLECTOR)
    if svc is None:
        ov.error(None, f"no Service {COLLECTOR}")
        return
    by_port = {p["port"]: p for p in svc["spec"]["ports"]}
    for port in (4317, 4318, 8080):
        if port not in by_port:
            ov.error(svc, f"does not expose port {port}")
    if agent_cfg is not None:
        # The agent reaches the collector across namespaces: the Service's
        # name must carry the collector's namespace.
        endpoint = str(agent_cfg.get("endpoint", ""))
        ns = svc["metadata"].get("namespace")
        wanted = {f"https://{COLLECTOR}.{ns}.svc{sfx}:4317" for sfx in ("", ".cluster.local")}
        if endpoint not in wanted:
            ov.error(None, f"agent endpoint {endpoint!r} is not the collector Service's OTLP/gRPC port ({min(wanted)})")


def check_namespace(ov: Overlay) -> None:
    """The collector and the agent each in their own namespace, every object with its component."""
    homes = {"collector": NAMESPACE, "agent": AGENT_NAMESPACE}
    for ns in homes.values():
        if not ov.find("Namespace", ns):
            ov.error(None, f"no Namespace {ns}")
    for d in ov.docs:
        if d["kind"] in CLUSTER_SCOPED_KINDS:
            continue
        ns = d["metadata"].get("namespace")
        component = d["metadata"].get("labels", {}).get(COMPONENT_LABEL)
        if d["apiVersion"].startswith("cert-manager.io/") and ns == CERT_MANAGER_NAMESPACE and component is None:
            continue  # the CA of components/cert-manager, beside its ClusterIssuer
        if component not in homes:
            ov.error(d, f"has no {COMPONENT_LABEL} label of {sorted(homes)}, so no namespace of its own")
        elif ns != homes[component]:
            ov.error(d, f"is a {component} object outside namespace {homes[component]}")
    sts, ds = ov.find("StatefulSet", COLLECTOR), ov.find("DaemonSet", AGENT)
    if sts and ds and sts["metadata"].get("namespace") == ds["metadata"].get("namespace"):
        ov.error(ds, "shares the collector's namespace: the agent needs a namespace of its own, which admits hostPath")


def check_overlay(
    ov: Overlay, versions: list[str], repo: Path, rbac_allowed: bool, agent_bin: Path | None
) -> dict[str, Any] | None:
    """Runs every check on one overlay; returns the agent's parsed config."""
    validate_schemas(ov, versions)
    if ov.errors:
        return None  # the rules below assume schema-valid objects
    check_namespace(ov)
    has_rbac = check_rbac(ov, rbac_allowed)
    for d in ov.docs:
        if d["kind"] in WORKLOAD_KINDS:
            check_containers(ov, d)
            security.check_secret_volumes(ov, d)
    agent_cfg = check_agent(ov, has_rbac, repo, agent_bin)
    check_collector(ov, repo)
    check_services(ov, agent_cfg)
    security.check_no_secret_objects(ov)
    security.check_pod_security(ov)
    security.check_network_policies(ov)
    security.check_certificates(ov, agent_cfg)
    return agent_cfg


def check_agent_configs_agree(overlays: list[tuple[Overlay, dict[str, Any] | None]]) -> list[str]:
    """Overlays may differ in the agent config only by k8s_api_enrichment."""
    errors = []
    base = None
    for ov, cfg in overlays:
        if cfg is None:
            continue
        stripped = {k: v for k, v in cfg.items() if k != "k8s_api_enrichment"}
        if base is None:
            base = (ov.name, stripped)
        elif stripped != base[1]:
            errors.append(f"{ov.name}: agent.toml differs from {base[0]}'s in more than k8s_api_enrichment")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="repository root (for collector/src/config.rs)")
    ap.add_argument(
        "--k8s-version", action="append", required=True, help="Kubernetes version to validate against (repeatable)"
    )
    ap.add_argument(
        "--rbac-overlay", action="append", default=[], help="overlay allowed (and required) to carry RBAC (repeatable)"
    )
    ap.add_argument(
        "--agent-bin",
        type=Path,
        help="a built periscope-agent: each overlay's agent config is run through --check-config",
    )
    ap.add_argument("rendered", nargs="+", type=Path, help="rendered overlay, named <overlay>.yaml")
    args = ap.parse_args()

    utils = kubernetes_validate.utils
    shipped = sorted({utils.major_minor(v) for v in utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    missing = [v for v in args.k8s_version if utils.major_minor(v.removeprefix("v")) not in shipped]
    if missing:
        print(
            f"FAIL kubernetes-validate {kubernetes_validate.__version__} has no schemas for Kubernetes "
            f"{', '.join(missing)} (it has {shipped[0]} to {shipped[-1]}); change K8S_VERSIONS or the package version"
        )
        return 1

    failed = False
    agent_cfgs = []
    for path in args.rendered:
        name = path.stem
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as e:
            print(f"FAIL {name}: cannot read {path}: {e}")
            failed = True
            continue
        bad = [d for d in docs if not isinstance(d, dict) or not {"apiVersion", "kind", "metadata"} <= d.keys()]
        if bad or not docs:
            print(f"FAIL {name}: {len(bad)} document(s) without apiVersion, kind and metadata, {len(docs)} in all")
            failed = True
            continue
        ov = Overlay(name, docs)
        agent_bin = args.agent_bin.resolve() if args.agent_bin else None
        agent_cfg = check_overlay(ov, args.k8s_version, args.repo, name in args.rbac_overlay, agent_bin)
        for n in ov.notes:
            print(f"note {n}")
        for e in ov.errors:
            print(f"FAIL {e}")
        if ov.errors:
            failed = True
        else:
            kinds = sorted({d["kind"] for d in docs})
            print(
                f"ok   {name}: {len(docs)} objects valid against Kubernetes {', '.join(args.k8s_version)} and our rules ({', '.join(kinds)})"
            )
            agent_cfgs.append((ov, agent_cfg))
    for e in check_agent_configs_agree(agent_cfgs):
        print(f"FAIL {e}")
        failed = True
    for name in args.rbac_overlay:
        if name not in {p.stem for p in args.rendered}:
            print(f"FAIL {name}: named by --rbac-overlay but not rendered")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
