"""The names the manifests use and the checks rely on: namespaces, workloads,
labels, Secrets and the config keys that read files from them.

Renaming one of these under deploy/ means renaming it here too.
"""

from __future__ import annotations

# The collector's namespace, and the agent's: the collector's enforces the
# `restricted` Pod Security Standard, the agent's has to admit hostPath.
NAMESPACE = "periscope"
AGENT_NAMESPACE = "periscope-agent"
COLLECTOR = "periscope-collector"
AGENT = "periscope-agent"
# Where cert-manager keeps the Secrets of ClusterIssuers (components/cert-manager).
CERT_MANAGER_NAMESPACE = "cert-manager"

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
# The namespace label Kubernetes sets on every namespace (1.22 and newer).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Namespaces whose pods may send telemetry (to the agents' relay and to the
# collector's OTLP ports), and namespaces whose pods may query (the ingress
# controller in front of the UI). The operator sets them (deploy/README.md).
TELEMETRY_LABEL = ("periscope.dev/telemetry", "true")
QUERY_LABEL = ("periscope.dev/query", "true")

# The Pod Security level each namespace enforces, and the `baseline`
# controls the agent alone may break there (to read the node's logs).
ENFORCE = {NAMESPACE: "restricted", AGENT_NAMESPACE: "privileged"}
AGENT_BASELINE_EXCEPTIONS = {"HostPath Volumes"}

TLS_KEYS = {"tls.crt", "tls.key", "ca.crt"}
# The Secrets the pods mount, by (namespace, name): their keys. The operator
# creates them (deploy/README.md); components/cert-manager makes the TLS
# ones. None is ever part of the manifests.
SECRETS = {
    (NAMESPACE, "periscope-collector-tls"): TLS_KEYS,
    (NAMESPACE, "periscope-auth"): {"auth.toml"},
    (AGENT_NAMESPACE, "periscope-agent-token"): {"token"},
    (AGENT_NAMESPACE, "periscope-agent-relay-tls"): TLS_KEYS,
    (AGENT_NAMESPACE, "periscope-agent-relay-auth"): {"auth.toml"},
}

# Config keys naming files that must come from a mounted Secret:
# key -> (Secret, key in the Secret, whether the key must be set).
COLLECTOR_SECRET_FILES = {
    "tls_cert_file": ("periscope-collector-tls", "tls.crt", True),
    "tls_key_file": ("periscope-collector-tls", "tls.key", True),
    "tls_client_ca_file": ("periscope-collector-tls", "ca.crt", False),
    "auth_file": ("periscope-auth", "auth.toml", True),
}
# The agent trusts the collector through `ca.crt` of its relay's TLS Secret:
# one CA signs both certificates (components/cert-manager does, and so do
# the commands in deploy/README.md).
AGENT_EXPORT_SECRET_FILES = {
    "bearer_token_file": ("periscope-agent-token", "token", True),
    "tls_ca_file": ("periscope-agent-relay-tls", "ca.crt", True),
}
# Required once a relay listener is on.
AGENT_RELAY_SECRET_FILES = {
    "relay_tls_cert_file": ("periscope-agent-relay-tls", "tls.crt", True),
    "relay_tls_key_file": ("periscope-agent-relay-tls", "tls.key", True),
    "relay_tls_client_ca_file": ("periscope-agent-relay-tls", "ca.crt", False),
    "relay_auth_file": ("periscope-agent-relay-auth", "auth.toml", True),
}
