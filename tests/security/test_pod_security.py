"""Pods that namespaces enforcing Pod Security's "restricted" profile admit: the test kit's check
of the profile (vllm_testkit.pod_security, the controls of the Kubernetes page) is shown to catch
each control, then every pod the operator builds passes it, for specs of every shape (the
property tests of test_crd_properties.py check the generated ones too, and tests/chart the
chart's own pods)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from vllm_operator.model.builders import build_all
from vllm_operator.model.spec import parse_deployment
from vllm_testkit.pod_security import BASELINE, RESTRICTED, pod_template, violations
from vllm_testkit.samples import GOOD, IMAGES, vllmd
from vllm_testkit.tiny_model import CPU_ENGINE

# --- the check itself ---------------------------------------------------------------------------

APPARMOR = "container.apparmor.security.beta.kubernetes.io/c"
COMPLIANT: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "annotations": {APPARMOR: "runtime/default"}},
    "spec": {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
            "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
        },
        "volumes": [
            {"name": "a", "emptyDir": {}},
            {"name": "b", "persistentVolumeClaim": {"claimName": "x"}},
            {"name": "c", "projected": {"sources": []}},
            {"name": "d"},  # the API server makes it an emptyDir
        ],
        "initContainers": [
            {
                "name": "init",
                "image": "i",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
            }
        ],
        "containers": [
            {
                "name": "c",
                "image": "i",
                "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
                "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "procMount": "Default",
                    "appArmorProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
    },
}


def changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    pod = copy.deepcopy(COMPLIANT)
    change(pod["spec"])
    return pod


def container(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["containers"][0]


def context(spec: dict[str, Any]) -> dict[str, Any]:
    return container(spec)["securityContext"]


def set_in(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change setting `path` (dotted, from the pod's spec; `c.` is the first container's)."""

    def change(spec: dict[str, Any]) -> None:
        node = spec
        parts = path.split(".")
        if parts[0] == "c":
            node, parts = container(spec), parts[1:]
        elif parts[0] == "init":
            node, parts = spec["initContainers"][0], parts[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value

    return change


def ephemeral(spec: dict[str, Any]) -> None:
    spec["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]


# Each control of the page, broken one way or several: (level, control, change).
BROKEN = [
    (BASELINE, "HostProcess", set_in("securityContext.windowsOptions.hostProcess", True)),
    (BASELINE, "HostProcess", set_in("c.securityContext.windowsOptions.hostProcess", True)),
    (BASELINE, "Host Namespaces", set_in("hostNetwork", True)),
    (BASELINE, "Host Namespaces", set_in("hostPID", True)),
    (BASELINE, "Host Namespaces", set_in("hostIPC", True)),
    (BASELINE, "Privileged Containers", set_in("c.securityContext.privileged", True)),
    (BASELINE, "Privileged Containers", set_in("init.securityContext.privileged", True)),
    (BASELINE, "Capabilities", set_in("c.securityContext.capabilities.add", ["SYS_ADMIN"])),
    (BASELINE, "HostPath Volumes", lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}})),
    (BASELINE, "Host Ports", set_in("c.ports", [{"containerPort": 80, "hostPort": 8080}])),
    (BASELINE, "Host Probes / Lifecycle Hooks", set_in("c.livenessProbe.httpGet.host", "10.0.0.1")),
    (BASELINE, "Host Probes / Lifecycle Hooks", set_in("c.readinessProbe.tcpSocket.host", "node")),
    (BASELINE, "Host Probes / Lifecycle Hooks", set_in("c.lifecycle.preStop", {"httpGet": {"host": "x", "port": 1}})),
    (BASELINE, "AppArmor", set_in("securityContext.appArmorProfile", {"type": "Unconfined"})),
    (BASELINE, "AppArmor", set_in("c.securityContext.appArmorProfile", {"type": "Unconfined"})),
    (BASELINE, "SELinux", set_in("securityContext.seLinuxOptions.type", "spc_t")),
    (BASELINE, "SELinux", set_in("c.securityContext.seLinuxOptions", {"user": "system_u"})),
    (BASELINE, "SELinux", set_in("c.securityContext.seLinuxOptions", {"role": "sysadm_r"})),
    (BASELINE, "/proc Mount Type", set_in("c.securityContext.procMount", "Unmasked")),
    (BASELINE, "Seccomp", set_in("securityContext.seccompProfile.type", "Unconfined")),
    (BASELINE, "Seccomp", set_in("c.securityContext.seccompProfile", {"type": "Unconfined"})),
    (BASELINE, "Sysctls", set_in("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}])),
    (RESTRICTED, "Volume Types", lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}})),
    (RESTRICTED, "Volume Types", lambda s: s["volumes"].append({"name": "g", "gitRepo": {"repository": "r"}})),
    (RESTRICTED, "Privilege Escalation", set_in("c.securityContext.allowPrivilegeEscalation", None)),
    (RESTRICTED, "Privilege Escalation", set_in("init.securityContext.allowPrivilegeEscalation", True)),
    (RESTRICTED, "Privilege Escalation", ephemeral),
    (RESTRICTED, "Running as Non-root", set_in("securityContext.runAsNonRoot", None)),
    (RESTRICTED, "Running as Non-root", set_in("securityContext.runAsNonRoot", False)),
    (RESTRICTED, "Running as Non-root", set_in("c.securityContext.runAsNonRoot", False)),
    (RESTRICTED, "Running as Non-root user", set_in("securityContext.runAsUser", 0)),
    (RESTRICTED, "Running as Non-root user", set_in("init.securityContext.runAsUser", 0)),
    (RESTRICTED, "Seccomp (restricted)", set_in("securityContext.seccompProfile", None)),
    (RESTRICTED, "Capabilities (restricted)", set_in("c.securityContext.capabilities", None)),
    (RESTRICTED, "Capabilities (restricted)", set_in("c.securityContext.capabilities.drop", ["NET_RAW"])),
    (RESTRICTED, "Capabilities (restricted)", set_in("init.securityContext.capabilities.add", ["CHOWN"])),
]  # fmt: skip


def test_the_compliant_pod_passes_both_profiles():
    assert violations(COMPLIANT, BASELINE) == []
    assert violations(COMPLIANT, RESTRICTED) == []


@pytest.mark.parametrize(
    ("level", "control", "change"), BROKEN, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BROKEN)]
)
def test_each_control_is_caught(level: str, control: str, change):
    found = violations(changed(change), RESTRICTED)
    assert control in {v.control for v in found}, found
    assert {v.level for v in found if v.control == control} == {level}
    baseline = {v.control for v in violations(changed(change), BASELINE)}
    assert (control in baseline) == (level == BASELINE)  # restricted's own controls only there


def test_every_control_of_the_page_is_exercised():
    assert {control for _, control, _ in BROKEN} == {
        "HostProcess", "Host Namespaces", "Privileged Containers", "Capabilities",
        "HostPath Volumes", "Host Ports", "Host Probes / Lifecycle Hooks", "AppArmor", "SELinux",
        "/proc Mount Type", "Seccomp", "Sysctls", "Volume Types", "Privilege Escalation",
        "Running as Non-root", "Running as Non-root user", "Seccomp (restricted)",
        "Capabilities (restricted)",
    }  # fmt: skip


def test_apparmor_annotations():
    pod = copy.deepcopy(COMPLIANT)
    pod["metadata"]["annotations"][APPARMOR] = "localhost/my-profile"
    assert violations(pod) == []
    pod["metadata"]["annotations"][APPARMOR] = "unconfined"
    assert [v.control for v in violations(pod, BASELINE)] == ["AppArmor"]


def test_container_fields_may_stand_in_for_the_pods():
    """runAsNonRoot and seccomp on every container instead of the pod: admitted."""

    def per_container(spec: dict[str, Any]) -> None:
        for c in (*spec["containers"], *spec["initContainers"]):
            c["securityContext"] |= {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
            }
        del spec["securityContext"]["runAsNonRoot"], spec["securityContext"]["seccompProfile"]

    assert violations(changed(per_container)) == []

    # ...but all of them: one container without is a violation.
    def one_left_out(spec: dict[str, Any]) -> None:
        per_container(spec)
        del spec["initContainers"][0]["securityContext"]["runAsNonRoot"]

    assert {v.control for v in violations(changed(one_left_out))} == {"Running as Non-root"}


def test_windows_pods_are_spared_the_linux_only_controls():
    def windows(spec: dict[str, Any]) -> None:
        spec["os"] = {"name": "windows"}
        del context(spec)["allowPrivilegeEscalation"], context(spec)["capabilities"]
        del spec["securityContext"]["seccompProfile"]

    assert violations(changed(windows)) == []


def test_workload_objects_are_judged_by_their_pod_template():
    deployment = {
        "kind": "Deployment",
        "spec": {"template": {"metadata": {}, "spec": COMPLIANT["spec"]}},
    }
    job = {
        "kind": "CronJob",
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": changed(set_in("hostPID", True))["spec"]}}
            }
        },
    }
    assert violations(deployment) == []
    assert [str(v) for v in violations(job)] == ["baseline Host Namespaces: spec.hostPID"]
    assert pod_template(COMPLIANT) == (COMPLIANT["metadata"], COMPLIANT["spec"])
    with pytest.raises(ValueError, match="no pod template"):
        pod_template({"kind": "Service"})


# --- every pod the operator builds --------------------------------------------------------------

MODEL = {"uri": "hf://org/model"}
VARIANTS: dict[str, dict[str, Any]] = {
    **{f"sample {name}": body["spec"] for name, body in GOOD.items()},
    "gpu, defaults": {"model": MODEL},
    "gpu, 8 GPUs, tensor parallel": {"model": MODEL, "gpusPerReplica": 8, "engine": {"tensorParallelSize": 8}},
    "cpu, tiny engine": {"model": {"uri": "/models/tiny"}, "accelerator": "CPU", "engine": CPU_ENGINE},
    "lora with roots": {"model": MODEL, "lora": {"enabled": True, "allowedSourceRoots": ["/adapters"]}},
    "pvc model": {"model": {"uri": "pvc://weights/llama"}},
    "model cache on": {"model": MODEL, "modelCache": {"enabled": True, "accessMode": "ReadWriteMany"}},
    "model cache off": {"model": MODEL, "modelCache": {"enabled": False}},
    "extra volumes": {
        "model": {"uri": "/models/llama"},
        "volumes": [
            {"name": "weights", "persistentVolumeClaim": {"claimName": "w", "readOnly": True}},
            {"name": "templates", "configMap": {"name": "t"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
            {"name": "creds", "secret": {"secretName": "s"}},
            {"name": "csi", "csi": {"driver": "example.csi"}},
        ],
        "volumeMounts": [
            {"name": "weights", "mountPath": "/models", "readOnly": True},
            {"name": "templates", "mountPath": "/etc/templates"},
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "creds", "mountPath": "/home/vllm/.config/creds", "readOnly": True},
            {"name": "csi", "mountPath": "/data", "subPath": "x/y"},
        ],
    },
    "placement": {
        "model": MODEL,
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}],
        "schedulerName": "gpu",
        "runtimeClassName": "nvidia",
    },
    "overrides that keep to the profile": {
        "model": MODEL,
        "podSecurityContext": {"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 1001},
        "securityContext": {"readOnlyRootFilesystem": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
    },
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_the_operator_builds_passes_the_restricted_profile(variant: str):
    spec = parse_deployment(vllmd("m", VARIANTS[variant]), IMAGES)
    objects = build_all(spec, monitoring_available=True, operator_namespace="vllm-system")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert violations(deployment) == []


@pytest.mark.parametrize(
    ("overrides", "controls"),
    [
        ({"podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0}},
         {"Running as Non-root", "Running as Non-root user"}),
        ({"securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}},
         {"Capabilities", "Capabilities (restricted)"}),
        ({"securityContext": {"privileged": True, "allowPrivilegeEscalation": True}},
         {"Privileged Containers", "Privilege Escalation"}),
        ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
         {"Seccomp", "Seccomp (restricted)"}),
        ({"volumes": [{"name": "host", "hostPath": {"path": "/data"}}]},
         {"HostPath Volumes", "Volume Types"}),
    ],
)  # fmt: skip
def test_overrides_that_leave_the_profile_are_the_users_to_make(overrides, controls):
    """The spec can relax the defaults (a namespace's Pod Security decides): the check sees it."""
    spec = parse_deployment(vllmd("m", {"model": MODEL, **overrides}), IMAGES)
    (deployment,) = [o for o in build_all(spec, monitoring_available=False, operator_namespace="x")
                     if o["kind"] == "Deployment"]  # fmt: skip
    assert {v.control for v in violations(deployment)} == controls
