"""The chart's own pods (operator, uninstall hook, helm test) on the platforms teams run:
replicas spread over nodes, security contexts from values, and OpenShift's restricted-v2,
which assigns UIDs itself and refuses fixed ones (real Helm rendering)."""

from __future__ import annotations

from pathlib import Path

from vllm_operator.config import Settings
from vllm_operator.model.builders import build_all
from vllm_operator.model.spec import parse_deployment
from vllm_testkit.chart import render
from vllm_testkit.pod_security import violations
from vllm_testkit.samples import vllmd

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
    assert set(specs) == {"vllm", "vllm-crds", "vllm-uninstall", "vllm-test-tiny"}
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


def model_pod(operator_env: dict[str, str], spec: dict | None = None) -> dict:
    """The pod spec the operator, configured as the chart configures it, gives a model."""
    settings = Settings.from_env(operator_env)
    parsed = parse_deployment(
        vllmd("m", {"model": {"uri": "/m"}, "accelerator": "CPU", **(spec or {})}),
        settings.images,
        platform_assigns_uids=settings.platform_assigns_uids,
    )
    objects = build_all(parsed, monitoring_available=False, operator_namespace="vllm-system")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def operator_env(values: dict) -> dict[str, str]:
    (container,) = pod_specs(render(values))["vllm"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_on_openshift_the_model_pods_too_leave_uids_to_the_platform():
    """The chart tells the operator (VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS), whose model pods
    then fix no UID, GID or fsGroup and still pass the restricted profile."""
    forced = operator_env({"compatibility": {"openshift": {"adaptSecurityContext": "force"}}})
    assert forced["VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS"] == "true"
    pod = model_pod(forced)
    assert not FIXED_IDS & set(pod["securityContext"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert violations({"kind": "Pod", "metadata": {}, "spec": pod}) == []
    # A UID the spec names is the user's to keep (one inside the namespace's range).
    given = model_pod(forced, {"podSecurityContext": {"runAsUser": 1000750000}})
    assert given["securityContext"]["runAsUser"] == 1000750000
    # Elsewhere the operator is not told, and its pods run as the images' user.
    for mode in ("auto", "disabled"):
        env = operator_env({"compatibility": {"openshift": {"adaptSecurityContext": mode}}})
        assert "VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS" not in env
        assert model_pod(env)["securityContext"]["fsGroup"] == 65532


def test_hook_and_test_pods_take_their_pull_policy_from_values():
    values = {
        "deployments": [MODEL],
        "operator": {"image": {"pullPolicy": "Always"}},
        "tests": {"imagePullPolicy": "Never"},
        "uninstallHook": {"imagePullPolicy": "Always"},
    }
    specs = pod_specs(render(values))
    policy = {name: spec["containers"][0]["imagePullPolicy"] for name, spec in specs.items()}
    assert policy == {
        "vllm": "Always",
        "vllm-crds": "Always",  # the operator's image
        "vllm-uninstall": "Always",
        "vllm-test-tiny": "Never",
    }
