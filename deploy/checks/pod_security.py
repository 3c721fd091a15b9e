"""The Pod Security Standards' `baseline` and `restricted` rules, on a pod spec.

check_manifests.py asks which rules a pod template breaks, so that a
namespace's `pod-security.kubernetes.io/enforce` label can be checked before
a cluster refuses the pods. The rules are those of the Pod Security Admission
controller at `latest` (Kubernetes 1.30 to 1.37), as listed in
https://kubernetes.io/docs/concepts/security/pod-security-standards/; each
violation names the control it breaks, in that page's words.
"""

from __future__ import annotations

from typing import Any

# `baseline`: capabilities a container may add.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
BASELINE_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
BASELINE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
# `restricted`: the only volume types, and the only capability to add.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
SECCOMP_CONFINED = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

LEVELS = ("privileged", "baseline", "restricted")


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec.get("containers", []) + spec.get("ephemeralContainers", [])


def baseline_violations(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(control, detail) for each `baseline` rule the pod spec breaks."""
    out: list[tuple[str, str]] = []
    psc = spec.get("securityContext", {})
    containers = all_containers(spec)
    contexts = [("pod", psc)] + [(f"container {c['name']}", c.get("securityContext", {})) for c in containers]

    for where, sc in contexts:
        if sc.get("windowsOptions", {}).get("hostProcess"):
            out.append(("HostProcess", f"{where} sets windowsOptions.hostProcess"))
        se = sc.get("seLinuxOptions", {})
        if se.get("type", "") not in BASELINE_SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(("SELinux", f"{where} sets seLinuxOptions {se}"))
        if sc.get("seccompProfile", {}).get("type") == "Unconfined":
            out.append(("Seccomp", f"{where} sets seccompProfile Unconfined"))
        aa = sc.get("appArmorProfile", {}).get("type")
        if aa is not None and aa not in SECCOMP_CONFINED:
            out.append(("AppArmor", f"{where} sets appArmorProfile {aa}"))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(("Host Namespaces", f"{key} is true"))
    for c in containers:
        sc = c.get("securityContext", {})
        label = f"container {c['name']}"
        if sc.get("privileged"):
            out.append(("Privileged Containers", f"{label} is privileged"))
        extra = set(sc.get("capabilities", {}).get("add", [])) - BASELINE_CAPABILITIES
        if extra:
            out.append(("Capabilities", f"{label} adds {sorted(extra)}"))
        if sc.get("procMount", "Default") != "Default":
            out.append(("/proc Mount Type", f"{label} sets procMount {sc['procMount']}"))
        for p in c.get("ports", []):
            if p.get("hostPort"):
                out.append(("Host Ports", f"{label} uses hostPort {p['hostPort']}"))
    for v in spec.get("volumes", []):
        if "hostPath" in v:
            out.append(("HostPath Volumes", f"volume {v['name']} is hostPath {v['hostPath'].get('path')}"))
    for s in psc.get("sysctls", []):
        if s.get("name") not in BASELINE_SYSCTLS:
            out.append(("Sysctls", f"sysctl {s.get('name')} is not in the safe set"))
    for key, value in (annotations or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and value != "runtime/default" and not value.startswith("localhost/"):
            out.append(("AppArmor", f"annotation {key}: {value}"))
    return out


def restricted_violations(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(control, detail) for each `restricted` rule the pod spec breaks, `baseline`'s included."""
    out = baseline_violations(spec, annotations)
    psc = spec.get("securityContext", {})
    containers = all_containers(spec)
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(("Volume Types", f"volume {v['name']} is {sorted(kinds)}"))
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = psc.get("seccompProfile", {}).get("type") in SECCOMP_CONFINED
    if psc.get("runAsUser") == 0:
        out.append(("Running as Non-root user", "pod sets runAsUser 0"))
    for c in containers:
        sc = c.get("securityContext", {})
        label = f"container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(("Privilege Escalation", f"{label} does not set allowPrivilegeEscalation: false"))
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            out.append(("Running as Non-root", f"{label} may run as root (runAsNonRoot not true)"))
        if sc.get("runAsUser") == 0:
            out.append(("Running as Non-root user", f"{label} sets runAsUser 0"))
        seccomp = sc.get("seccompProfile", {}).get("type")
        if not (seccomp in SECCOMP_CONFINED or (seccomp is None and pod_seccomp)):
            out.append(("Seccomp", f"{label} has no RuntimeDefault or Localhost seccomp profile"))
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(("Capabilities", f"{label} does not drop ALL"))
        extra = set(caps.get("add", [])) - RESTRICTED_CAPABILITIES
        if extra:
            out.append(("Capabilities", f"{label} adds {sorted(extra)}"))
    return list(dict.fromkeys(out))  # a capability beyond both levels is reported once


def violations(level: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """What the pod spec breaks at a Pod Security level (nothing at `privileged`)."""
    if level == "restricted":
        return restricted_violations(spec, annotations)
    if level == "baseline":
        return baseline_violations(spec, annotations)
    if level == "privileged":
        return []
    raise ValueError(f"unknown Pod Security level {level!r}")
