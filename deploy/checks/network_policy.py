"""What NetworkPolicies let into a pod, port by port.

check_manifests.py compares this with what each Periscope pod should accept.
The semantics are those of networking.k8s.io/v1: a pod selected by no
Ingress policy accepts everything; once one selects it, only the union of
the selecting policies' rules is allowed. A rule without `ports` allows every
port, a rule without `from` every source; a peer with only a `podSelector`
means pods of the policy's own namespace.

A peer is written as one string, so that sets of them compare:
`ns[<selector>] pods[<selector>]`, `ipBlock[<cidr> except ...]` or `*`
(anyone), a selector as sorted `key=value` and expression terms, `*` when
it selects everything.
"""

from __future__ import annotations

from typing import Any

ANYONE = "*"
ALL_PORTS = "all"


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector selects an object with these labels (an empty one selects all)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_text(selector: dict[str, Any] | None) -> str:
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()]
    for e in selector.get("matchExpressions", []):
        values = f" {sorted(e['values'])}" if e.get("values") else ""
        terms.append(f"{e['key']} {e['operator']}{values}")
    return ",".join(sorted(terms)) or "*"


def peer_text(peer: dict[str, Any], policy_namespace: str) -> str:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        excepts = f" except {','.join(block['except'])}" if block.get("except") else ""
        return f"ipBlock[{block['cidr']}{excepts}]"
    if "namespaceSelector" in peer:
        ns = selector_text(peer["namespaceSelector"])
    else:
        ns = f"kubernetes.io/metadata.name={policy_namespace}"
    return f"ns[{ns}] pods[{selector_text(peer.get('podSelector'))}]"


def ingress_policies(policies: list[dict[str, Any]], namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The Ingress policies that select a pod with `labels` in `namespace`."""
    out = []
    for p in policies:
        spec = p.get("spec", {})
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if (
            p["metadata"].get("namespace") == namespace
            and "Ingress" in types
            and selector_matches(spec.get("podSelector"), labels)
        ):
            out.append(p)
    return out


def allowed_ingress(
    policies: list[dict[str, Any]], namespace: str, labels: dict[str, str], port_names: dict[str, int]
) -> dict[int | str, set[str]] | None:
    """Port (number, or ALL_PORTS) -> the peers allowed to it; None when no policy selects the pod.

    `port_names` maps the pod's named container ports to their numbers. A
    port no rule names is absent: nothing reaches it.
    """
    selecting = ingress_policies(policies, namespace, labels)
    if not selecting:
        return None
    allowed: dict[int | str, set[str]] = {}
    for p in selecting:
        ns = p["metadata"]["namespace"]
        for rule in p["spec"].get("ingress", []) or []:
            peers = {peer_text(peer, ns) for peer in rule.get("from") or []} or {ANYONE}
            ports: list[int | str] = []
            for port in rule.get("ports") or [{}]:
                if port.get("protocol", "TCP") != "TCP":
                    continue
                number = port.get("port")
                if number is None:
                    ports.append(ALL_PORTS)
                elif isinstance(number, str):
                    ports.append(port_names.get(number, number))
                else:
                    ports.extend(range(number, port.get("endPort", number) + 1))
            for number in ports:
                allowed.setdefault(number, set()).update(peers)
    return allowed


def denies_all_ingress(policy: dict[str, Any]) -> bool:
    """A namespace-wide default deny: every pod selected, Ingress, no rule."""
    spec = policy.get("spec", {})
    return (
        selector_text(spec.get("podSelector")) == "*"
        and "Ingress" in (spec.get("policyTypes") or ["Ingress"])
        and not spec.get("ingress")
    )
