"""Periscope's security rules on a rendered overlay.

check_manifests.py runs these after its own checks:

- Pod Security: each namespace enforces its level (layout.ENFORCE), warns
  and audits at one at least as strict (at least `baseline`), and every pod
  template passes the level its namespace enforces; the agent breaks no
  `baseline` control but hostPath volumes.
- Secrets: no Secret is part of the manifests; every Secret volume is one
  the operator (or cert-manager) makes, required, mounted read-only and
  whole (a subPath mount never sees updates); the config keys naming TLS,
  auth and token files point into those mounts, at the right Secret key.
- TLS: the collector's probes use HTTPS when it serves TLS; the agent ships
  to an `https://` endpoint and never holds its token as a literal.
- NetworkPolicy: a default deny in both namespaces, and port by port
  exactly the peers deploy/README.md describes may reach the collector and
  the agents.
- cert-manager (components/cert-manager): Certificates make the mounted
  TLS Secrets, name every Service in front of the pods, and the collector's
  and the relay's share an issuer, so the agent's CA is the collector's.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from checks import network_policy, pod_security
from checks.layout import (
    AGENT,
    AGENT_BASELINE_EXCEPTIONS,
    AGENT_EXPORT_SECRET_FILES,
    AGENT_NAMESPACE,
    AGENT_RELAY_SECRET_FILES,
    CERT_MANAGER_NAMESPACE,
    COLLECTOR,
    COLLECTOR_SECRET_FILES,
    ENFORCE,
    NAME_LABEL,
    NAMESPACE,
    NAMESPACE_NAME_LABEL,
    QUERY_LABEL,
    SECRETS,
    TELEMETRY_LABEL,
    TLS_KEYS,
)

if TYPE_CHECKING:  # pragma: no cover
    from check_manifests import Overlay

Obj = dict[str, Any]

WORKLOAD_KINDS = {"DaemonSet", "StatefulSet", "Deployment", "ReplicaSet", "Job"}
CERTIFICATE_SPEC_FIELDS = {
    "additionalOutputFormats",
    "commonName",
    "dnsNames",
    "duration",
    "emailAddresses",
    "encodeUsagesInRequest",
    "ipAddresses",
    "isCA",
    "issuerRef",
    "keystores",
    "literalSubject",
    "nameConstraints",
    "otherNames",
    "privateKey",
    "renewBefore",
    "renewBeforePercentage",
    "revisionHistoryLimit",
    "secretName",
    "secretTemplate",
    "signatureAlgorithm",
    "subject",
    "uris",
    "usages",
}
ISSUER_TYPES = {"acme", "ca", "selfSigned", "vault", "venafi"}


def pod_spec(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]


def namespace_of(obj: Obj) -> str | None:
    return obj["metadata"].get("namespace")


# ----- Pod Security ----------------------------------------------------------


def check_pod_security(ov: Overlay) -> None:
    rank = {level: i for i, level in enumerate(pod_security.LEVELS)}
    for ns_name, wanted in ENFORCE.items():
        ns = ov.find("Namespace", ns_name)
        if ns is None:
            continue  # check_namespace reports it
        labels = ns["metadata"].get("labels", {})
        enforce = labels.get("pod-security.kubernetes.io/enforce")
        if enforce != wanted:
            ov.error(ns, f"enforces Pod Security level {enforce!r}, not {wanted!r}")
            continue
        for mode in ("warn", "audit"):
            level = labels.get(f"pod-security.kubernetes.io/{mode}")
            floor = max(rank[wanted], rank["baseline"])
            if level not in rank or rank[level] < floor:
                ov.error(
                    ns,
                    f"pod-security.kubernetes.io/{mode} is {level!r}; it should be "
                    f"{pod_security.LEVELS[floor]!r} or stricter, to report what the pods do beyond {wanted!r}",
                )
    for w in (d for d in ov.docs if d["kind"] in WORKLOAD_KINDS):
        ns = namespace_of(w)
        level = ENFORCE.get(ns or "")
        if level is None:
            ov.error(w, f"is in namespace {ns}, which enforces no Pod Security level we know")
            continue
        template = w["spec"]["template"]
        annotations = template.get("metadata", {}).get("annotations", {})
        for control, detail in pod_security.violations(level, template["spec"], annotations):
            ov.error(w, f"breaks Pod Security {level!r} ({control}): {detail}; namespace {ns} would refuse its pods")
        if level == "privileged":
            if w["kind"] != "DaemonSet" or w["metadata"]["name"] != AGENT:
                ov.error(w, f"only the agent may run in the privileged namespace {ns}")
                continue
            for control, detail in pod_security.baseline_violations(template["spec"], annotations):
                if control not in AGENT_BASELINE_EXCEPTIONS:
                    ov.error(
                        w, f"goes beyond Pod Security 'baseline' in more than hostPath volumes ({control}): {detail}"
                    )


# ----- Secrets and the files read from them ----------------------------------


def check_no_secret_objects(ov: Overlay) -> None:
    for d in ov.of_kind("Secret"):
        ov.error(d, "a Secret in the manifests: tokens and keys are created by the operator, never committed")


def made_by_certificate(ov: Overlay, namespace: str, secret: str) -> Obj | None:
    for cert in ov.of_kind("Certificate"):
        if namespace_of(cert) == namespace and cert.get("spec", {}).get("secretName") == secret:
            return cert
    return None


def check_secret_volumes(ov: Overlay, obj: Obj) -> None:
    """Every Secret volume is a known Secret, required, and mounted whole and read-only."""
    spec = pod_spec(obj)
    ns = namespace_of(obj) or ""
    secret_volumes = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
    for name, secret in secret_volumes.items():
        known = SECRETS.get((ns, secret.get("secretName", "")))
        if known is None:
            ov.error(obj, f"volume {name} mounts Secret {secret.get('secretName')!r}, which is not one of {ns}'s")
            continue
        if secret.get("optional"):
            ov.error(obj, f"volume {name}: Secret {secret['secretName']} is optional; the pod must wait for it")
        for item in secret.get("items", []):
            if item["key"] not in known:
                ov.error(obj, f"volume {name} names key {item['key']!r}, which Secret {secret['secretName']} lacks")
        mode = secret.get("defaultMode", 0o644)
        if mode & 0o007:
            ov.error(obj, f"volume {name}: defaultMode {oct(mode)} lets any user read the Secret's files")
    for c in pod_security.all_containers(spec):
        for m in c.get("volumeMounts", []):
            if m["name"] not in secret_volumes:
                continue
            if m.get("readOnly") is not True:
                ov.error(obj, f"container {c['name']} mounts Secret volume {m['name']} writable")
            if m.get("subPath") or m.get("subPathExpr"):
                ov.error(
                    obj, f"container {c['name']} mounts Secret volume {m['name']} with subPath: updates never reach it"
                )


def effective(c: Obj, cfg: dict[str, Any], key: str, env_prefix: str) -> tuple[Any, str]:
    """A config key's value and where it comes from: flag, then environment, then file."""
    flag = "--" + key.replace("_", "-")
    for a in c.get("args", []):
        if a == flag or a.startswith(flag + "="):
            return a.partition("=")[2], f"flag {flag}"
    for e in c.get("env", []):
        if e["name"] == env_prefix + key.upper():
            return e.get("value", e.get("valueFrom")), f"env {e['name']}"
    return cfg.get(key), "the config file"


def secret_file(obj: Obj, c: Obj, path: str) -> tuple[str, str] | str:
    """The (Secret, key) a path in the container reads, or why it reads none."""
    spec = pod_spec(obj)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    directory, filename = posixpath.split(posixpath.normpath(path))
    for m in c.get("volumeMounts", []):
        if m["mountPath"].rstrip("/") != directory:
            continue
        secret = volumes.get(m["name"], {}).get("secret")
        if secret is None:
            return f"{directory} is volume {m['name']}, not a Secret"
        items = secret.get("items")
        if items:
            for item in items:
                if item["path"] == filename:
                    return secret["secretName"], item["key"]
            return f"Secret volume {m['name']} has no item at {filename}"
        return secret["secretName"], filename
    return f"no Secret volume is mounted at {directory}"


def check_secret_files(
    ov: Overlay, obj: Obj, c: Obj, cfg: dict[str, Any], wanted: dict[str, tuple[str, str, bool]], env_prefix: str
) -> None:
    for key, (secret, secret_key, required) in wanted.items():
        value, source = effective(c, cfg, key, env_prefix)
        if value in (None, ""):
            if required:
                ov.error(obj, f"{key} is not set: it must name {secret_key} of the mounted Secret {secret}")
            continue
        if not isinstance(value, str):
            ov.error(obj, f"{key} comes from {source} as {value}; it must be a path into the mounted Secret {secret}")
            continue
        got = secret_file(obj, c, value)
        if isinstance(got, str):
            ov.error(obj, f"{key} {value!r} ({source}) is not in a mounted Secret: {got}")
        elif got != (secret, secret_key):
            ov.error(obj, f"{key} {value!r} ({source}) reads {got[1]} of Secret {got[0]}, not {secret_key} of {secret}")


def check_collector_security(ov: Overlay, sts: Obj, c: Obj, cfg: dict[str, Any]) -> None:
    check_secret_files(ov, sts, c, cfg, COLLECTOR_SECRET_FILES, "PERISCOPE_")
    tls_on = effective(c, cfg, "tls_cert_file", "PERISCOPE_")[0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c.get(probe, {}).get("httpGet")
        if tls_on and get and get.get("scheme", "HTTP") != "HTTPS":
            ov.error(sts, f"{probe} uses {get.get('scheme', 'HTTP')} but the collector serves TLS: set scheme: HTTPS")


def check_agent_security(ov: Overlay, ds: Obj, c: Obj, cfg: dict[str, Any]) -> None:
    value, source = effective(c, cfg, "bearer_token", "PERISCOPE_AGENT_")
    if value is not None:
        ov.error(ds, f"bearer_token is set by {source}: the token must come from bearer_token_file, a mounted Secret")
    endpoint = str(effective(c, cfg, "endpoint", "PERISCOPE_AGENT_")[0] or "")
    if not endpoint.startswith("https://"):
        ov.error(ds, f"endpoint {endpoint!r} is not https://: the token would travel in clear")
    check_secret_files(ov, ds, c, cfg, AGENT_EXPORT_SECRET_FILES, "PERISCOPE_AGENT_")
    relay_on = any(effective(c, cfg, k, "PERISCOPE_AGENT_")[0] for k in ("otlp_grpc_addr", "otlp_http_addr"))
    if relay_on:
        check_secret_files(ov, ds, c, cfg, AGENT_RELAY_SECRET_FILES, "PERISCOPE_AGENT_")


# ----- NetworkPolicy ---------------------------------------------------------


def check_network_policies(ov: Overlay) -> None:
    policies = ov.of_kind("NetworkPolicy")
    for ns in (NAMESPACE, AGENT_NAMESPACE):
        if not any(namespace_of(p) == ns and network_policy.denies_all_ingress(p) for p in policies):
            ov.error(None, f"namespace {ns} has no default-deny ingress NetworkPolicy (podSelector {{}}, no rules)")
    sts = ov.find("StatefulSet", COLLECTOR)
    ds = ov.find("DaemonSet", AGENT)
    if sts is None or ds is None:
        return
    telemetry = f"ns[{TELEMETRY_LABEL[0]}={TELEMETRY_LABEL[1]}] pods[*]"
    query = f"ns[{QUERY_LABEL[0]}={QUERY_LABEL[1]}] pods[*]"
    agent_labels = ds["spec"]["template"]["metadata"].get("labels", {})
    agents = f"ns[{NAMESPACE_NAME_LABEL}={namespace_of(ds)}] pods[{NAME_LABEL}={agent_labels.get(NAME_LABEL)}]"
    # Port name -> who may reach it; a port not named here is reached by no one.
    check_pod_ingress(ov, sts, {"otlp-grpc": {agents, telemetry}, "otlp-http": {agents, telemetry}, "http": {query}})
    check_pod_ingress(ov, ds, {"otlp-grpc": {telemetry}, "otlp-http": {telemetry}})


def check_pod_ingress(ov: Overlay, obj: Obj, wanted_by_name: dict[str, set[str]]) -> None:
    spec = pod_spec(obj)
    port_names = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
    wanted = {port_names.get(name, name): peers for name, peers in wanted_by_name.items()}
    labels = obj["spec"]["template"]["metadata"].get("labels", {})
    allowed = network_policy.allowed_ingress(ov.of_kind("NetworkPolicy"), namespace_of(obj) or "", labels, port_names)
    if allowed is None:
        ov.error(obj, "no NetworkPolicy selects its pods: every pod in the cluster reaches every port")
        return
    if network_policy.ALL_PORTS in allowed:
        everyone = sorted(allowed[network_policy.ALL_PORTS])
        ov.error(obj, f"a NetworkPolicy rule without ports lets {everyone} reach every port")
    for port in sorted(set(wanted) | set(allowed) - {network_policy.ALL_PORTS}, key=str):
        got, want = allowed.get(port, set()), wanted.get(port, set())
        for peer in sorted(got - want):
            ov.error(obj, f"NetworkPolicy lets {peer} reach port {port}; only {sorted(want) or 'no one'} should")
        for peer in sorted(want - got):
            ov.error(obj, f"NetworkPolicy does not let {peer} reach port {port}")


# ----- cert-manager ----------------------------------------------------------


def check_certificates(ov: Overlay, agent_cfg: dict[str, Any] | None) -> None:
    certs = ov.of_kind("Certificate")
    issuers = ov.of_kind("Issuer") + ov.of_kind("ClusterIssuer")
    for d in certs + issuers:
        if not d["apiVersion"].startswith("cert-manager.io/"):
            ov.error(d, f"unexpected apiVersion {d['apiVersion']}")
    for issuer in issuers:
        kinds = set(issuer.get("spec", {})) & ISSUER_TYPES
        if len(kinds) != 1 or set(issuer.get("spec", {})) - ISSUER_TYPES:
            ov.error(issuer, f"spec must hold exactly one of {sorted(ISSUER_TYPES)}")
        ca_secret = issuer.get("spec", {}).get("ca", {}).get("secretName")
        if ca_secret:
            ca_ns = CERT_MANAGER_NAMESPACE if issuer["kind"] == "ClusterIssuer" else namespace_of(issuer)
            ca = made_by_certificate(ov, ca_ns or "", ca_secret)
            if ca is None or ca["spec"].get("isCA") is not True:
                ov.error(issuer, f"signs with Secret {ca_ns}/{ca_secret}, which no CA Certificate (isCA) makes")
    for cert in certs:
        spec = cert.get("spec", {})
        unknown = set(spec) - CERTIFICATE_SPEC_FIELDS
        if unknown:
            ov.error(cert, f"unknown spec fields {sorted(unknown)}")
        if not isinstance(spec.get("secretName"), str) or not spec.get("issuerRef", {}).get("name"):
            ov.error(cert, "needs spec.secretName and spec.issuerRef.name")
            continue
        ref = spec["issuerRef"]
        if ref.get("group", "cert-manager.io") == "cert-manager.io":
            kind = ref.get("kind", "Issuer")
            if not ov.find(kind, ref["name"], namespace_of(cert) if kind == "Issuer" else None):
                ov.error(cert, f"issuerRef names {kind} {ref['name']}, which is not in the manifests")
        if spec.get("isCA"):
            continue
        ns = namespace_of(cert) or ""
        if SECRETS.get((ns, spec["secretName"])) != TLS_KEYS:
            ov.error(cert, f"makes Secret {spec['secretName']}, which no pod in {ns} mounts as its TLS Secret")
            continue
        names = set(spec.get("dnsNames", []))
        for svc in services_in_front_of(ov, ns, spec["secretName"]):
            s, n = svc["metadata"]["name"], ns
            needed = {s, f"{s}.{n}", f"{s}.{n}.svc", f"{s}.{n}.svc.cluster.local"}
            if svc["spec"].get("clusterIP") == "None":
                needed |= {f"*.{s}.{n}.svc", f"*.{s}.{n}.svc.cluster.local"}
            for missing in sorted(needed - names):
                ov.error(cert, f"dnsNames lack {missing} (Service {s})")
    collector_cert = made_by_certificate(ov, NAMESPACE, COLLECTOR_SECRET_FILES["tls_cert_file"][0])
    agent_ca_secret = AGENT_EXPORT_SECRET_FILES["tls_ca_file"][0]
    agent_ca_cert = made_by_certificate(ov, AGENT_NAMESPACE, agent_ca_secret)
    if collector_cert and agent_ca_cert:
        if issuer_key(collector_cert) != issuer_key(agent_ca_cert):
            ov.error(
                agent_ca_cert,
                f"is signed by {issuer_key(agent_ca_cert)}, the collector's certificate by "
                f"{issuer_key(collector_cert)}: the agent trusts ca.crt of {agent_ca_secret} for the collector, "
                "so one issuer must sign both",
            )
    if (collector_cert is None) != (agent_ca_cert is None):
        ov.error(None, "cert-manager makes only one of the collector's and the relay's TLS Secrets: both or neither")
    if collector_cert and agent_cfg is not None:
        host = agent_cfg.get("tls_server_name") or host_of(str(agent_cfg.get("endpoint", "")))
        if host not in collector_cert["spec"].get("dnsNames", []):
            ov.error(collector_cert, f"dnsNames lack {host!r}, the name the agent connects to")


def issuer_key(cert: Obj) -> str:
    """The issuer a Certificate names, as `Kind name` (`Kind namespace/name` for an Issuer)."""
    ref = cert["spec"]["issuerRef"]
    kind = ref.get("kind", "Issuer")
    return f"{kind} {namespace_of(cert)}/{ref['name']}" if kind == "Issuer" else f"{kind} {ref['name']}"


def host_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit(":", 1)[0]


def services_in_front_of(ov: Overlay, namespace: str, secret: str) -> list[Obj]:
    """The Services in `namespace` that select pods mounting `secret`."""
    pods = [
        w["spec"]["template"]
        for w in ov.docs
        if w["kind"] in WORKLOAD_KINDS
        and namespace_of(w) == namespace
        and any(v.get("secret", {}).get("secretName") == secret for v in pod_spec(w).get("volumes", []))
    ]
    pod_labels = [p["metadata"].get("labels", {}) for p in pods]
    return [
        s
        for s in ov.of_kind("Service")
        if namespace_of(s) == namespace
        and s["spec"].get("selector")
        and any(network_policy.selector_matches({"matchLabels": s["spec"]["selector"]}, ls) for ls in pod_labels)
    ]


# ----- stand-in files for --check-config -------------------------------------

STAND_IN_TOKEN = "stand-in-token-for-check-config"


def stand_in_secrets(obj: Obj, c: Obj, root: Path) -> dict[str, str]:
    """Writes stand-ins for the Secrets the container mounts under `root`.

    Returns each mount path and the directory standing in for it, so that
    the config's paths can be rewritten. TLS Secrets get a throwaway CA and
    a certificate it signed (openssl), tokens a fixed string, auth files one
    [[token]] entry for it.
    """
    spec = pod_spec(obj)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ns = namespace_of(obj) or ""
    pki = None
    moved: dict[str, str] = {}
    for m in c.get("volumeMounts", []):
        secret = volumes.get(m["name"], {}).get("secret")
        if secret is None:
            continue
        keys = SECRETS.get((ns, secret.get("secretName", "")), set())
        target = root / "secrets" / m["name"]
        target.mkdir(parents=True, exist_ok=True)
        for key in keys:
            if key in TLS_KEYS:
                pki = pki or make_pki(root / "pki")
                content = (pki / key).read_bytes()
            elif key == "token":
                content = STAND_IN_TOKEN.encode()
            elif key == "auth.toml":
                digest = hashlib.sha256(STAND_IN_TOKEN.encode()).hexdigest()
                content = (
                    f'[[token]]\nname = "stand-in"\nsha256 = "{digest}"\ntenants = ["*"]\nscopes = ["write"]\n'
                ).encode()
            else:
                content = b""
            path = next((i["path"] for i in secret.get("items", []) if i["key"] == key), key)
            (target / path).write_bytes(content)
        moved[m["mountPath"].rstrip("/")] = str(target)
    return moved


def make_pki(directory: Path) -> Path:
    """A throwaway CA (ca.crt) and a serving certificate it signed (tls.crt, tls.key)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl not found: it makes the stand-in certificates for --check-config")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=stand-in CA")
    run("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=stand-in")
    (directory / "ext.cnf").write_text("subjectAltName=DNS:stand-in\nextendedKeyUsage=serverAuth\n")
    run(
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "ext.cnf", "-out", "tls.crt",
    )  # fmt: skip
    return directory
