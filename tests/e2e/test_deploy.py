"""The Kubernetes manifests in deploy/ render and validate.

`deploy/validate.sh` renders every Kustomize overlay with `kubectl kustomize`
and checks each object against the Kubernetes schemas (kubernetes-validate,
strict) and our own rules (deploy/check_manifests.py). The first test runs it
on the real tree; the others run it on a copy of deploy/ with one deliberate
defect each and expect it to fail for that reason, so a validator that
accepts anything cannot pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
TIMEOUT_S = 180


def run_validate(deploy_dir: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # This interpreter has the test requirements, kubernetes-validate included.
    env["PYTHON"] = sys.executable
    env["PERISCOPE_REPO"] = str(REPO_ROOT)
    env.update(extra_env or {})
    return subprocess.run(
        ["bash", str(deploy_dir / "validate.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_overlays_render_and_validate() -> None:
    proc = run_validate(DEPLOY)
    assert proc.returncode == 0, output(proc)
    for overlay in ("single-node", "cluster", "single-node+cert-manager", "cluster+cert-manager"):
        assert f"ok   {overlay}:" in proc.stdout, output(proc)


# (file under deploy/, text to find, replacement, expected in the output)
BROKEN = {
    "daemonset-unknown-field": (
        "base/agent-daemonset.yaml",
        "  updateStrategy:\n",
        "  hostLogs: true\n  updateStrategy:\n",
        "Additional properties are not allowed ('hostLogs' was unexpected)",
    ),
    "log-hostpath-writable": (
        "base/agent-daemonset.yaml",
        "              mountPath: /var/log/pods\n              readOnly: true\n",
        "              mountPath: /var/log/pods\n",
        "mounts host path /var/log/pods writable",
    ),
    "toleration-for-one-taint": (
        "base/agent-daemonset.yaml",
        "        - operator: Exists\n",
        "        - operator: Exists\n          key: node-role.kubernetes.io/control-plane\n",
        "does not tolerate every taint",
    ),
    "self-exclude-too-broad": (
        "base/agent-daemonset.yaml",
        "$(POD_NAMESPACE)_$(POD_NAME)_*",
        "$(POD_NAMESPACE)_*",
        "an --exclude glob also drops another pod's logs",
    ),
    "self-exclude-missing": (
        "base/agent-daemonset.yaml",
        "            - --exclude=/var/log/pods/$(POD_NAMESPACE)_$(POD_NAME)_*/*/*.log*\n",
        "",
        "no --exclude glob matches the agent's own pod logs",
    ),
    "rbac-in-single-node": (
        "overlays/single-node/kustomization.yaml",
        "resources:\n  - ../../base\n",
        "resources:\n  - ../../base\n\ncomponents:\n  - ../../components/api-enrichment\n",
        "RBAC object in an overlay without API-server enrichment",
    ),
    "agent-readiness-probe-removed": (
        "overlays/single-node/agent-resources.yaml",
        "          resources:\n",
        "          readinessProbe: null\n          resources:\n",
        "container agent has no readinessProbe",
    ),
    "collector-limits-removed": (
        "overlays/cluster/collector-resources.yaml",
        '            limits:\n              cpu: "4"\n              memory: 8Gi\n',
        "            limits: null\n",
        "container collector has no limits.memory",
    ),
    "collector-unknown-config-key": (
        "base/collector.toml",
        'log_level = "info"\n',
        'log_level = "info"\nretention = "7d"\n',
        "key 'retention' is not accepted by periscope serve",
    ),
    "collector-memory-below-budgets": (
        "overlays/single-node/collector-resources.yaml",
        "              memory: 1Gi\n",
        "              memory: 100Mi\n",
        "does not exceed the ingest and trace budgets",
    ),
    "agent-data-dir-not-on-host": (
        "base/agent.toml",
        'data_dir = "/var/lib/periscope-agent"',
        'data_dir = "/tmp/periscope-agent"',
        "is not the writable hostPath mount",
    ),
    "agent-unknown-config-key": (
        "base/agent.toml",
        'http_addr = "0.0.0.0:8686"\n',
        'http_addr = "0.0.0.0:8686"\nspool_dir = "/var/lib/periscope-agent/spool"\n',
        "agent.toml key 'spool_dir' is not accepted by periscope-agent",
    ),
    "agent-unknown-flag": (
        "base/agent-daemonset.yaml",
        "            - --exclude=*.tmp\n",
        "            - --exclude=*.tmp\n            - --exclude-self\n",
        "flag --exclude-self is not accepted by periscope-agent",
    ),
    "agent-relay-off": (
        "base/agent.toml",
        'otlp_grpc_addr = "0.0.0.0:4317"\n',
        "",
        "does not listen on container port otlp-grpc",
    ),
    "cluster-without-enrichment": (
        "overlays/cluster/kustomization.yaml",
        "components:\n  - ../../components/api-enrichment\n",
        "",
        "no RBAC objects although this overlay is meant to enable API-server enrichment",
    ),
    "enrichment-off-with-rbac": (
        "components/api-enrichment/agent.toml",
        "k8s_api_enrichment = true\n",
        "k8s_api_enrichment = false\n",
        "k8s_api_enrichment is off but RBAC is present",
    ),
    "enrichment-without-token": (
        "components/api-enrichment/agent-token.yaml",
        "automountServiceAccountToken: true\n",
        "automountServiceAccountToken: false\n",
        "mounts no ServiceAccount token although API-server enrichment is on",
    ),
    "deprecated-kustomize-field": (
        "overlays/cluster/kustomization.yaml",
        "resources:\n",
        "commonLabels:\n  tier: observability\n\nresources:\n",
        "deprecated",
    ),
    "collector-namespace-not-restricted": (
        "base/namespace.yaml",
        "    pod-security.kubernetes.io/enforce: restricted\n",
        "    pod-security.kubernetes.io/enforce: baseline\n",
        "enforces Pod Security level 'baseline', not 'restricted'",
    ),
    "collector-without-seccomp": (
        "base/collector-statefulset.yaml",
        "        seccompProfile:\n          type: RuntimeDefault\n",
        "",
        "breaks Pod Security 'restricted' (Seccomp)",
    ),
    "agent-relay-on-hostport": (
        "base/agent-daemonset.yaml",
        "              containerPort: 4317\n",
        "              containerPort: 4317\n              hostPort: 4317\n",
        "has hostPort 4317",
    ),
    "relay-service-not-node-local": (
        "base/agent-service.yaml",
        "  internalTrafficPolicy: Local\n",
        "",
        "internalTrafficPolicy is not Local",
    ),
    "agent-token-literal": (
        "base/agent.toml",
        'bearer_token_file = "/var/run/secrets/periscope/token/token"\n',
        'bearer_token = "s3cret"\n',
        "bearer_token is set by the config file",
    ),
    "agent-endpoint-plaintext": (
        "base/agent.toml",
        'endpoint = "https://',
        'endpoint = "http://',
        "is not https://",
    ),
    "collector-cert-not-from-secret": (
        "base/collector.toml",
        'tls_cert_file = "/var/run/secrets/periscope/tls/tls.crt"',
        'tls_cert_file = "/etc/periscope/tls.crt"',
        "tls_cert_file '/etc/periscope/tls.crt' (the config file) is not in a mounted Secret",
    ),
    "collector-probe-plain-http": (
        "base/collector-statefulset.yaml",
        "              path: /readyz\n              port: http\n              scheme: HTTPS\n",
        "              path: /readyz\n              port: http\n",
        "readinessProbe uses HTTP but the collector serves TLS",
    ),
    "secret-mounted-with-subpath": (
        "base/collector-statefulset.yaml",
        "              mountPath: /var/run/secrets/periscope/auth\n",
        "              mountPath: /var/run/secrets/periscope/auth/auth.toml\n              subPath: auth.toml\n",
        "with subPath",
    ),
    "secret-in-manifests": (
        "base/kustomization.yaml",
        "configMapGenerator:\n",
        "secretGenerator:\n  - name: periscope-auth\n    namespace: periscope\n    literals:\n      - auth.toml=x\n"
        "    options:\n      labels:\n        app.kubernetes.io/component: collector\n\nconfigMapGenerator:\n",
        "a Secret in the manifests",
    ),
    "query-port-open-to-telemetry": (
        "base/collector-networkpolicy.yaml",
        '              periscope.dev/query: "true"\n',
        '              periscope.dev/telemetry: "true"\n',
        "NetworkPolicy lets ns[periscope.dev/telemetry=true] pods[*] reach port 8080",
    ),
    "networkpolicy-rule-without-ports": (
        "base/collector-networkpolicy.yaml",
        "      ports:\n        - port: 8080\n          protocol: TCP\n",
        "",
        "a NetworkPolicy rule without ports",
    ),
    "networkpolicy-missing": (
        "base/kustomization.yaml",
        "  - collector-networkpolicy.yaml\n",
        "",
        "no NetworkPolicy selects its pods",
    ),
    "certificate-without-service-name": (
        "components/cert-manager/certificates.yaml",
        "    - periscope-collector.periscope.svc\n",
        "",
        "dnsNames lack periscope-collector.periscope.svc",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_copy_is_rejected(case: str, tmp_path: Path) -> None:
    rel, old, new, expected = BROKEN[case]
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    target = copy / rel
    text = target.read_text()
    assert text.count(old) == 1, f"{rel} no longer contains the text this case edits: {old!r}"
    target.write_text(text.replace(old, new))

    proc = run_validate(copy)
    assert proc.returncode != 0, f"validate.sh accepted {case}:\n{output(proc)}"
    assert expected in proc.stdout + proc.stderr, output(proc)


def fake_agent(tmp_path: Path, body: str) -> Path:
    """A stand-in periscope-agent for the --check-config step."""
    path = tmp_path / "periscope-agent"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_agent_check_config_gets_the_pod_arguments(tmp_path: Path) -> None:
    # Accepts only what the DaemonSet would pass: --check-config, the config
    # file, the excludes with the pod variables expanded (the agent's own
    # namespace), NODE_NAME set, and a readable stand-in for the mounted CA.
    agent = fake_agent(
        tmp_path,
        """
seen="$*"
case "$seen" in
  "--check-config --config="*"/agent.toml --exclude=*.gz --exclude=*.tmp --exclude=/var/log/pods/periscope-agent_periscope-agent-"*"_*/*/*.log*") ;;
  *) echo "unexpected arguments: $seen" >&2; exit 2 ;;
esac
config="${2#--config=}"
grep -q '^endpoint = ' "$config" || { echo "config without endpoint" >&2; exit 2; }
# The pod's Secrets are not in the manifests: a stand-in CA takes the place of ca.crt.
ca="$(sed -n 's/^tls_ca_file = "\\(.*\\)"$/\\1/p' "$config")"
grep -q 'BEGIN CERTIFICATE' "$ca" || { echo "tls_ca_file $ca is no certificate" >&2; exit 2; }
[ -n "$NODE_NAME" ] || { echo "NODE_NAME unset" >&2; exit 2; }
echo "configuration ok: endpoint x, data dir y, 1 include glob(s)"
""",
    )
    proc = run_validate(DEPLOY, {"PERISCOPE_AGENT_BIN": str(agent)})
    assert proc.returncode == 0, output(proc)
    assert "does not implement --check-config" not in proc.stdout, output(proc)


def test_config_the_agent_rejects_fails_validation(tmp_path: Path) -> None:
    agent = fake_agent(
        tmp_path,
        'echo "periscope-agent: configuration error: invalid value \\"ftp://x\\" for k8s_api_url: scheme must be http or https" >&2\nexit 2\n',
    )
    proc = run_validate(DEPLOY, {"PERISCOPE_AGENT_BIN": str(agent)})
    assert proc.returncode != 0, output(proc)
    assert "--check-config rejects the config (exit 2)" in proc.stdout, output(proc)
    assert "for k8s_api_url: scheme must be http or https" in proc.stdout, output(proc)
