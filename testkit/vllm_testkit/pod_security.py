"""The Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
policy version v1.34): the Baseline and Restricted controls, field by field as that page lists
them, checked on a pod spec, for tests (no cluster, no admission plugin at hand).

`violations(obj)` takes a Pod or any object with a pod template (Deployment, Job, ...) and
returns one `Violation` per control a container or the pod breaks, naming the control as the page
does and the field. Two things the page mentions are left out, which makes the check stricter than
the admission plugin, never looser: pods in user namespaces (`hostUsers: false`, which relax the
non-root controls) are judged like the others, and the sysctls are the page's list (the plugin
of a later version may allow more). A volume that names no source is judged as the emptyDir the
API server makes of it. `spec.os.name: windows` relaxes the Linux-only controls, as on the page.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

BASELINE, RESTRICTED = "baseline", "restricted"

# Baseline, "Capabilities": what containers may add.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})  # fmt: skip
# Baseline, "SELinux": the types a pod or container may set.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})  # fmt: skip
# Baseline, "Sysctls": the safe set.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})  # fmt: skip
# Restricted, "Volume Types": every volume sets one of these.
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                "persistentVolumeClaim", "projected", "secret"})  # fmt: skip
# Every volume source of the core Volume type (a volume without one becomes an emptyDir).
VOLUME_SOURCES = RESTRICTED_VOLUMES | {
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
    "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
    "vsphereVolume", "quobyte", "azureDisk", "portworxVolume", "scaleIO", "storageos", "image",
}  # fmt: skip
SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")
APPARMOR_ALLOWED = ("RuntimeDefault", "Localhost")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")


@dataclass(frozen=True)
class Violation:
    level: str  # baseline or restricted: the lowest profile that forbids it
    control: str  # the control's name on the page
    field: str  # where, e.g. spec.containers[0].securityContext.privileged

    def __str__(self) -> str:
        return f"{self.level} {self.control}: {self.field}"


def pod_template(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(metadata, spec) of a Pod, or of the pod template of a workload object."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj.get("metadata") or {}, obj["spec"]
    if kind == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "PodTemplate"):
        template = obj["template"] if kind == "PodTemplate" else obj["spec"]["template"]
    else:
        raise ValueError(f"{kind} has no pod template")
    return template.get("metadata") or {}, template["spec"]


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key in CONTAINER_LISTS:
        for i, container in enumerate(spec.get(key) or ()):
            yield f"spec.{key}[{i}]", container


def _context(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


def violations(obj: Mapping[str, Any], level: str = RESTRICTED) -> list[Violation]:
    """The controls of `level` (baseline, or restricted: baseline's and its own) that the pod of
    `obj` breaks; [] when the profile admits it."""
    if level not in (BASELINE, RESTRICTED):
        raise ValueError(level)
    meta, spec = pod_template(obj)
    found = _baseline(meta, spec)
    if level == RESTRICTED:
        found += _restricted(spec)
    return found


def _baseline(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> list[Violation]:
    out: list[Violation] = []

    def bad(control: str, field: str) -> None:
        out.append(Violation(BASELINE, control, field))

    pod = _context(spec)
    if (pod.get("windowsOptions") or {}).get("hostProcess"):
        bad("HostProcess", "spec.securityContext.windowsOptions.hostProcess")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad("Host Namespaces", f"spec.{field}")
    for i, volume in enumerate(spec.get("volumes") or ()):
        if volume.get("hostPath") is not None:
            bad("HostPath Volumes", f"spec.volumes[{i}].hostPath")
    if (pod.get("appArmorProfile") or {}).get("type", "RuntimeDefault") not in APPARMOR_ALLOWED:
        bad("AppArmor", "spec.securityContext.appArmorProfile.type")
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            bad("AppArmor", f"metadata.annotations[{key!r}]")
    out += [Violation(BASELINE, "SELinux", f) for f in _selinux(pod, "spec.securityContext")]
    if (pod.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad("Seccomp", "spec.securityContext.seccompProfile.type")
    for i, sysctl in enumerate(pod.get("sysctls") or ()):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad("Sysctls", f"spec.securityContext.sysctls[{i}].name")
    for where, container in _containers(spec):
        context = _context(container)
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            bad("HostProcess", f"{where}.securityContext.windowsOptions.hostProcess")
        if context.get("privileged"):
            bad("Privileged Containers", f"{where}.securityContext.privileged")
        added = (context.get("capabilities") or {}).get("add") or ()
        if any(cap not in BASELINE_CAPABILITIES for cap in added):
            bad("Capabilities", f"{where}.securityContext.capabilities.add")
        for j, port in enumerate(container.get("ports") or ()):
            if port.get("hostPort"):
                bad("Host Ports", f"{where}.ports[{j}].hostPort")
        for name in (*PROBES, *(f"lifecycle.{hook}" for hook in HOOKS)):
            handler = container
            for part in name.split("."):
                handler = handler.get(part) or {}
            for kind in ("httpGet", "tcpSocket"):
                if (handler.get(kind) or {}).get("host"):
                    bad("Host Probes / Lifecycle Hooks", f"{where}.{name}.{kind}.host")
        apparmor = (context.get("appArmorProfile") or {}).get("type", "RuntimeDefault")
        if apparmor not in APPARMOR_ALLOWED:
            bad("AppArmor", f"{where}.securityContext.appArmorProfile.type")
        out += [
            Violation(BASELINE, "SELinux", f) for f in _selinux(context, f"{where}.securityContext")
        ]
        if context.get("procMount", "Default") != "Default":
            bad("/proc Mount Type", f"{where}.securityContext.procMount")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            bad("Seccomp", f"{where}.securityContext.seccompProfile.type")
    return out


def _selinux(context: Mapping[str, Any], where: str) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    fields = []
    if options.get("type", "") not in SELINUX_TYPES:
        fields.append(f"{where}.seLinuxOptions.type")
    fields += [f"{where}.seLinuxOptions.{k}" for k in ("user", "role") if options.get(k)]
    return fields


def _restricted(spec: Mapping[str, Any]) -> list[Violation]:
    out: list[Violation] = []

    def bad(control: str, field: str) -> None:
        out.append(Violation(RESTRICTED, control, field))

    for i, volume in enumerate(spec.get("volumes") or ()):
        sources = set(volume) & VOLUME_SOURCES or {"emptyDir"}  # none: the API server's default
        if not sources <= RESTRICTED_VOLUMES:
            bad("Volume Types", f"spec.volumes[{i}]: {', '.join(sorted(sources))}")
    linux = (spec.get("os") or {}).get("name") != "windows"
    pod = _context(spec)
    if pod.get("runAsNonRoot") is False:
        bad("Running as Non-root", "spec.securityContext.runAsNonRoot")
    if pod.get("runAsUser") == 0:
        bad("Running as Non-root user", "spec.securityContext.runAsUser")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    for where, container in _containers(spec):
        context = _context(container)
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and pod.get("runAsNonRoot") is not True):
            bad("Running as Non-root", f"{where}.securityContext.runAsNonRoot")
        if context.get("runAsUser") == 0:
            bad("Running as Non-root user", f"{where}.securityContext.runAsUser")
        if not linux:
            continue
        if context.get("allowPrivilegeEscalation") is not False:
            bad("Privilege Escalation", f"{where}.securityContext.allowPrivilegeEscalation")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if (seccomp or pod_seccomp) not in SECCOMP_ALLOWED:
            bad("Seccomp (restricted)", f"{where}.securityContext.seccompProfile.type")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or ()):
            bad("Capabilities (restricted)", f"{where}.securityContext.capabilities.drop")
        if any(cap != "NET_BIND_SERVICE" for cap in capabilities.get("add") or ()):
            bad("Capabilities (restricted)", f"{where}.securityContext.capabilities.add")
    # A pod-level profile that is set must be an allowed one, containers or not.
    if linux and pod_seccomp is not None and pod_seccomp not in SECCOMP_ALLOWED:
        bad("Seccomp (restricted)", "spec.securityContext.seccompProfile.type")
    return out
