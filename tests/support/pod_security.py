"""The "restricted" Pod Security Standard, checked on a pod spec the way the admission controller would.

Written from the Kubernetes Pod Security Standards document
(https://kubernetes.io/docs/concepts/security/pod-security-standards/): the
"baseline" controls, then the "restricted" ones on top (the profiles are
cumulative). Each control is one function returning what it found wrong, so
a test can say which control a manifest breaks. `violations(spec)` runs them
all over the pod spec and every container, init container and ephemeral
container in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Spec = dict[str, Any]

#: Baseline: the only capabilities a container may add.
BASELINE_CAPABILITIES = frozenset(
    {
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
)
#: Baseline: the "safe" sysctls.
SAFE_SYSCTLS = frozenset(
    {
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
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
#: Restricted: the only volume types.
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
CONFINED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})


def containers(spec: Spec) -> Iterator[Spec]:
    for key in ("containers", "initContainers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _context(container: Spec) -> Spec:
    return container.get("securityContext") or {}


# --- baseline -----------------------------------------------------------------------------------------


def host_process(spec: Spec) -> list[str]:
    contexts = [spec.get("securityContext") or {}, *map(_context, containers(spec))]
    return ["hostProcess"] if any((c.get("windowsOptions") or {}).get("hostProcess") for c in contexts) else []


def host_namespaces(spec: Spec) -> list[str]:
    return [key for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]


def privileged(spec: Spec) -> list[str]:
    return [f"{c['name']}: privileged" for c in containers(spec) if _context(c).get("privileged")]


def added_capabilities(spec: Spec) -> list[str]:
    return [
        f"{c['name']}: adds {added}"
        for c in containers(spec)
        for added in (_context(c).get("capabilities") or {}).get("add") or []
        if added not in BASELINE_CAPABILITIES
    ]


def host_path_volumes(spec: Spec) -> list[str]:
    return [f"volume {v['name']}: hostPath" for v in spec.get("volumes") or [] if "hostPath" in v]


def host_ports(spec: Spec) -> list[str]:
    return [
        f"{c['name']}: hostPort {port['hostPort']}"
        for c in containers(spec)
        for port in c.get("ports") or []
        if port.get("hostPort")
    ]


def app_armor(spec: Spec, annotations: dict[str, str] | None = None) -> list[str]:
    found = [
        f"annotation {key}: {value}"
        for key, value in (annotations or {}).items()
        if key.startswith("container.apparmor.security.beta.kubernetes.io/")
        and value != "runtime/default"
        and not value.startswith("localhost/")
    ]
    contexts = [spec.get("securityContext") or {}, *map(_context, containers(spec))]
    found += [
        f"appArmorProfile {profile['type']}"
        for context in contexts
        if (profile := context.get("appArmorProfile")) and profile.get("type") not in ("RuntimeDefault", "Localhost")
    ]
    return found


def se_linux(spec: Spec) -> list[str]:
    contexts = [spec.get("securityContext") or {}, *map(_context, containers(spec))]
    found = []
    for context in contexts:
        options = context.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
            found.append(f"seLinuxOptions {options}")
    return found


def proc_mount(spec: Spec) -> list[str]:
    return [
        f"{c['name']}: procMount {_context(c)['procMount']}"
        for c in containers(spec)
        if _context(c).get("procMount", "Default") != "Default"
    ]


def unconfined_seccomp(spec: Spec) -> list[str]:
    contexts = [spec.get("securityContext") or {}, *map(_context, containers(spec))]
    return ["seccomp Unconfined" for c in contexts if (c.get("seccompProfile") or {}).get("type") == "Unconfined"]


def sysctls(spec: Spec) -> list[str]:
    names = [item["name"] for item in (spec.get("securityContext") or {}).get("sysctls") or []]
    return [f"sysctl {name}" for name in names if name not in SAFE_SYSCTLS]


BASELINE: list[Callable[[Spec], list[str]]] = [
    host_process,
    host_namespaces,
    privileged,
    added_capabilities,
    host_path_volumes,
    host_ports,
    app_armor,
    se_linux,
    proc_mount,
    unconfined_seccomp,
    sysctls,
]

# --- restricted ---------------------------------------------------------------------------------------


def volume_types(spec: Spec) -> list[str]:
    return [
        f"volume {v['name']}: {', '.join(sorted(set(v) - {'name'} - RESTRICTED_VOLUMES))}"
        for v in spec.get("volumes") or []
        if set(v) - {"name"} - RESTRICTED_VOLUMES
    ]


def privilege_escalation(spec: Spec) -> list[str]:
    return [
        f"{c['name']}: allowPrivilegeEscalation is not false"
        for c in containers(spec)
        if _context(c).get("allowPrivilegeEscalation") is not False
    ]


def running_as_non_root(spec: Spec) -> list[str]:
    pod = (spec.get("securityContext") or {}).get("runAsNonRoot")
    found = ["pod: runAsNonRoot is false"] if pod is False else []
    for c in containers(spec):
        own = _context(c).get("runAsNonRoot")
        if own is False or (own is None and pod is not True):
            found.append(f"{c['name']}: runAsNonRoot is not true (here or on the pod)")
    return found


def running_as_non_root_user(spec: Spec) -> list[str]:
    contexts = [("pod", spec.get("securityContext") or {})] + [(c["name"], _context(c)) for c in containers(spec)]
    return [f"{name}: runAsUser 0" for name, context in contexts if context.get("runAsUser") == 0]


def seccomp(spec: Spec) -> list[str]:
    pod = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    found = [] if pod in (None, *CONFINED_SECCOMP) else [f"pod: seccomp {pod}"]
    for c in containers(spec):
        own = (_context(c).get("seccompProfile") or {}).get("type")
        if own is None and pod not in CONFINED_SECCOMP:
            found.append(f"{c['name']}: no RuntimeDefault or Localhost seccomp profile (here or on the pod)")
        elif own is not None and own not in CONFINED_SECCOMP:
            found.append(f"{c['name']}: seccomp {own}")
    return found


def capabilities(spec: Spec) -> list[str]:
    found = []
    for c in containers(spec):
        granted = _context(c).get("capabilities") or {}
        if "ALL" not in (granted.get("drop") or []):
            found.append(f"{c['name']}: does not drop ALL capabilities")
        found += [f"{c['name']}: adds {added}" for added in granted.get("add") or [] if added != "NET_BIND_SERVICE"]
    return found


RESTRICTED: list[Callable[[Spec], list[str]]] = [
    volume_types,
    privilege_escalation,
    running_as_non_root,
    running_as_non_root_user,
    seccomp,
    capabilities,
]


def violations(spec: Spec, annotations: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Control name -> what breaks it, for every control of the restricted profile the pod spec breaks."""
    found = {check.__name__: check(spec) for check in BASELINE + RESTRICTED if check is not app_armor}
    found["app_armor"] = app_armor(spec, annotations)
    return {name: problems for name, problems in found.items() if problems}
