"""The chart's own pods (operator, uninstall hook, helm test) on the platforms teams run:
replicas spread over nodes, security contexts from values, and OpenShift's restricted-v2,
which assigns UIDs itself and refuses fixed ones (real Helm rendering)."""

from __future__ import annotations

from pathlib import Path

from vllm_testkit.chart import render
from vllm_testkit.pod_security import violations

CHART = Path(__file__).parents[2] / "charts" / "vllm"
MODEL = {"name": "tiny", "spec": {"model": {"uri": "/m"}, "accelerator": "CPU"}}
FIXED_IDS = {"runAsUser", "runAsGroup", "fsGroup"}


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    specs = {}
    for obj in objects:
        if obj["kind"] == "Pod":
            specs[obj["metadata"]["name"]] = obj["spec"]
        elif obj["kind"] in ("Deployment", "Job"):
            specs[obj["metadata"]["name"]] = obj["spec"]["template"]["spec"]
    return specs


def test_operator_replicas_spread_over_nodes():
    alone = pod_specs(render({}))["vllm"]
    assert "topologySpreadConstraints" not in alone
    spread = pod_specs(render({"operator": {"replicas": 3}}))["vllm"]["topologySpreadConstraints"]
    assert spread == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm-operator",
                                          "app.kubernetes.io/instance": "vllm"}},
    }]  # fmt: skip
    zones = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
              "whenUnsatisfiable": "DoNotSchedule"}]  # fmt: skip
    given = {"operator": {"replicas": 3, "topologySpreadConstraints": zones}}
    assert pod_specs(render(given))["vllm"]["topologySpreadConstraints"] == zones


def test_security_contexts_come_from_values():
    """Merged over the defaults, as Helm merges values; null drops a default."""
    values = {
        "operator": {
            "podSecurityContext": {"runAsUser": 1000750000, "runAsGroup": None, "fsGroup": None},
            "securityContext": {"runAsNonRoot": True},
        }
    }
    operator = pod_specs(render(values))["vllm"]
    assert operator["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000750000, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert operator["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
    }  # fmt: skip


def test_on_openshift_the_chart_leaves_uids_to_the_platform():
    """restricted-v2 assigns each namespace's UID range and refuses pods that fix a UID outside
    it: `force` (and `auto` on a cluster serving security.openshift.io/v1) leaves them out, and
    every pod still passes the Pod Security Standards' restricted profile."""
    values = {
        "compatibility": {"openshift": {"adaptSecurityContext": "force"}},
        "deployments": [MODEL],
    }
    specs = pod_specs(render(values))
    assert set(specs) == {"vllm", "vllm-uninstall", "vllm-test-tiny"}
    for name, spec in specs.items():
        assert not FIXED_IDS & set(spec.get("securityContext") or {}), name
        for container in spec["containers"]:
            assert not FIXED_IDS & set(container.get("securityContext") or {}), name
        assert violations({"kind": "Pod", "metadata": {}, "spec": spec}) == [], name
    # Elsewhere (auto, no OpenShift API here; or disabled) they are fixed: non-root by number.
    for mode in ("auto", "disabled"):
        values = {
            "compatibility": {"openshift": {"adaptSecurityContext": mode}},
            "deployments": [MODEL],
        }
        for name, spec in pod_specs(render(values)).items():
            assert spec["securityContext"]["runAsUser"] == 65532, (mode, name)
