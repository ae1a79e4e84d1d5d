"""The CRDs' status conditions have the schema of Kubernetes' metav1.Condition (the
kubebuilder markers of `type Condition` in k8s.io/apimachinery/pkg/apis/meta/v1/types.go), and
their resource quantities the pattern Kubernetes (controller-gen) gives resource.Quantity.

Before: a condition took any strings and any integer (a 2000-character reason, a reason with
spaces, a negative observedGeneration, a type with spaces), and a quantity any string ("lots",
"1Gix"), which the operator then copied into the pods and the model cache's claim for the API
server to refuse there. Every case is shown as the API server would judge it (`admit()`: the
schema with jsonschema, the CEL rules with cel-python); the conditions the operator really
writes are built by its own code (vllm_operator.model.status) and must stay admitted."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from kubernetes.utils.quantity import parse_quantity

from vllm_operator.model import reasons
from vllm_operator.model.adapters import AdapterSpec, CallResult, ServerReport
from vllm_operator.model.pods import (
    CONFIG_ERROR,
    CRASH_LOOP,
    IMAGE_PULL,
    UNSCHEDULABLE,
    StartupReport,
    Trouble,
)
from vllm_operator.model.schema import openapi_schema
from vllm_operator.model.spec import InvalidSpec, parse_deployment
from vllm_operator.model.status import (
    Condition,
    adapter_conditions,
    adapter_status,
    deployment_conditions,
    deployment_status,
    inference_pool_condition,
    pod_config_problem,
    pod_problem,
    set_condition,
    startup_problem,
    startup_progress,
)
from vllm_testkit.admission import admit
from vllm_testkit.samples import GOOD, IMAGES, vllmd

KINDS = ("VLLMDeployment", "LoraAdapter")
NOW = "2025-01-02T03:04:05Z"
MODEL = {"uri": "hf://org/model"}

# metav1.Condition, as controller-gen renders its markers.
TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# resource.Quantity's (k8s.io/apimachinery/pkg/api/resource), as controller-gen renders it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _lora() -> dict[str, Any]:
    return {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": "a", "namespace": "models", "uid": "uid-a", "generation": 2},
        "spec": {"deploymentRef": {"name": "m"}, "source": {"uri": "/adapters/a"}},
    }


def with_status(kind: str, status: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(GOOD["gpu-hf-minimal"]) if kind == "VLLMDeployment" else _lora()
    body["status"] = status
    return body


def condition(**changes: Any) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "observedGeneration": 1,
        "lastTransitionTime": NOW,
        "reason": "AsExpected",
        "message": "",
        **changes,
    }


def condition_errors(kind: str, cond: dict[str, Any]) -> list[str]:
    return admit(kind, with_status(kind, {"conditions": [cond]}))


# --- the schema itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_conditions_are_a_map_of_metav1_conditions(kind: str):
    conditions = openapi_schema(kind)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    fields = item["properties"]
    assert {k: v for k, v in fields["type"].items() if k != "description"} == {
        "type": "string",
        "maxLength": 316,
        "pattern": TYPE_PATTERN,
    }
    assert fields["status"]["enum"] == ["True", "False", "Unknown"]
    assert {k: v for k, v in fields["observedGeneration"].items() if k != "description"} == {
        "type": "integer",
        "format": "int64",
        "minimum": 0,
    }
    assert fields["lastTransitionTime"]["format"] == "date-time"
    assert {k: v for k, v in fields["reason"].items() if k != "description"} == {
        "type": "string",
        "minLength": 1,
        "maxLength": 1024,
        "pattern": REASON_PATTERN,
    }
    assert {k: v for k, v in fields["message"].items() if k != "description"} == {
        "type": "string",
        "maxLength": 32768,
    }


def _quantity_fields() -> dict[str, dict[str, Any]]:
    spec = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]
    resources = spec["resources"]["properties"]
    return {
        "resources.requests.*": resources["requests"]["additionalProperties"],
        "resources.limits.*": resources["limits"]["additionalProperties"],
        "modelCache.size": spec["modelCache"]["properties"]["size"],
    }


@pytest.mark.parametrize("field", sorted(_quantity_fields()))
def test_quantities_are_int_or_string_with_the_quantity_pattern(field: str):
    schema = _quantity_fields()[field]
    assert schema["x-kubernetes-int-or-string"] is True
    assert schema["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert schema["pattern"] == QUANTITY_PATTERN
    assert "type" not in schema


def test_shm_size_stays_narrower_than_a_quantity():
    shm = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]["shmSize"]
    assert shm["pattern"] == "^[1-9][0-9]{0,5}(Mi|Gi)$"
    assert re.fullmatch(QUANTITY_PATTERN, "512Mi") and not re.fullmatch(shm["pattern"], "512M")


# --- conditions the API server refuses ------------------------------------------------------------

REFUSED_CONDITIONS = {
    "reason of 2000 characters": {"reason": "A" * 2000},
    "reason with spaces": {"reason": "Not Ready"},
    "empty reason": {"reason": ""},
    "reason starting with a digit": {"reason": "1stTry"},
    "reason ending with a colon": {"reason": "Failed:"},
    "reason with a dash": {"reason": "Apply-Failed"},
    "negative observedGeneration": {"observedGeneration": -1},
    "type with spaces": {"type": "Ready Now"},
    "type of 317 characters": {"type": "R" * 317},
    "type with an empty name": {"type": "example.com/"},
    "type with an uppercase prefix": {"type": "Example.com/Ready"},
    "message of 32769 characters": {"message": "m" * 32769},
    "status maybe": {"status": "Maybe"},
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(REFUSED_CONDITIONS))
def test_conditions_outside_metav1_condition_are_refused(kind: str, case: str):
    errors = condition_errors(kind, condition(**REFUSED_CONDITIONS[case]))
    assert errors, case
    assert all(e.startswith("status.conditions.0.") for e in errors), errors


ADMITTED_CONDITIONS = {
    "plain": {},
    "reason of 1024 characters": {"reason": "R" * 1024},
    "reason of one letter": {"reason": "A"},
    "reason with commas, colons and underscores": {"reason": "Foo,Bar:Baz_1"},
    "prefixed type": {"type": "example.com/Ready"},
    "type of 316 characters": {"type": "T" * 316},
    "message of 32768 characters": {"message": "m" * 32768},
    "observedGeneration 0": {"observedGeneration": 0},
    "status Unknown": {"status": "Unknown"},
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(ADMITTED_CONDITIONS))
def test_conditions_at_metav1_conditions_bounds_are_admitted(kind: str, case: str):
    assert condition_errors(kind, condition(**ADMITTED_CONDITIONS[case])) == []


# --- the conditions the operator writes -----------------------------------------------------------


def test_every_reason_the_operator_names_fits_the_pattern():
    names = {k: v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert len(names) > 20
    reason = openapi_schema("VLLMDeployment")["properties"]["status"]["properties"]["conditions"]
    pattern = reason["items"]["properties"]["reason"]["pattern"]
    assert {k: v for k, v in names.items() if not re.fullmatch(pattern, v)} == {}


def _deployment(ready: int, updated: int, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": {
            "replicas": 2,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "conditions": conditions,
        }
    }


def _vllmd_conditions() -> list[Condition]:
    """A VLLMDeployment's conditions, made by the operator's status code in its every branch."""
    deadline = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "late"}
    failure = {"type": "ReplicaFailure", "status": "True", "message": "quota exceeded"}
    long_kubelet = 'secret "hf" not found ' * 100  # cut by the operator
    many_pods = {f"m-{i:04d}": long_kubelet for i in range(1000)}
    troubles = {
        "p-a": Trouble(CONFIG_ERROR, "couldn't find key token in Secret models/hf"),
        "p-b": Trouble(IMAGE_PULL, "Back-off pulling image"),
        "p-c": Trouble(CRASH_LOOP, "back-off 5m0s restarting failed container"),
        "p-d": Trouble(UNSCHEDULABLE, "0/3 nodes are available: Insufficient nvidia.com/gpu"),
    }
    starting = {
        "p-1": StartupReport("loading_model", 840.0, 900.0),
        "p-2": None,
        "p-3": StartupReport("profiling", 40.0, 5000.0),
    }
    dead = {"p-4": StartupReport("dead", 1.0, 60.0, error="CUDA out of memory " * 500)}
    out = [
        *deployment_conditions(0, None, None),
        *deployment_conditions(2, None, None),
        *deployment_conditions(2, _deployment(2, 2, []), None),
        *deployment_conditions(2, _deployment(0, 1, [deadline]), None),
        *deployment_conditions(2, _deployment(1, 2, [failure]), None),
    ]
    for problem in (
        pod_config_problem({"p": 'secret "hf" not found'}),
        pod_config_problem({"p": "invalid env var"}),
        pod_config_problem(many_pods),
        pod_problem(troubles),
        pod_problem({k: Trouble(UNSCHEDULABLE, v) for k, v in many_pods.items()}),
        startup_progress(3, starting),
        startup_problem(dead, None),
        startup_problem(starting, 600.0),
        inference_pool_condition("m", served=False, in_place=[], conflicts=[], failures=[]),
        inference_pool_condition(
            "m", served=True, in_place=["InferencePool/m"], conflicts=[], failures=[]
        ),
        inference_pool_condition(
            "m", served=True, in_place=[], conflicts=[], failures=["InferencePool/m: 422: no"]
        ),
        inference_pool_condition(
            "m", served=True, in_place=[], conflicts=["InferencePool/m is someone's"], failures=[]
        ),
    ):
        assert problem is not None
        out.append(problem)
    # The reconciler's own (reconcile/deployment.py).
    out += [
        Condition("Degraded", True, reasons.INVALID_SPEC, "invalid spec: replicas too high"),
        Condition("Degraded", True, reasons.NAME_CONFLICT, "Service/m is someone else's"),
        Condition("Degraded", True, reasons.APPLY_FAILED, "Deployment/m: 422: invalid"),
    ]
    return out


def _adapter_conditions() -> list[Condition]:
    return [
        *adapter_conditions("deployment m does not serve LoRA", 0, 0, []),
        *adapter_conditions(None, 2, 1, ["p-1: 400: adapter not found"]),
        *adapter_conditions(None, 0, 0, []),
        *adapter_conditions(None, 2, 1, []),
        *adapter_conditions(None, 2, 2, []),
    ]


@pytest.mark.parametrize(
    ("kind", "made"),
    [("VLLMDeployment", _vllmd_conditions), ("LoraAdapter", _adapter_conditions)],
)
def test_the_conditions_the_operator_writes_are_admitted(kind: str, made: Any):
    conditions = made()
    assert len({(c.type, c.reason) for c in conditions}) > 5
    for cond in conditions:
        written = set_condition([], cond, now=NOW, generation=7)
        assert admit(kind, with_status(kind, {"conditions": written})) == [], cond


def test_a_whole_vllmdeployment_status_is_admitted():
    status = deployment_status(
        previous={},
        desired=3,
        deployment=_deployment(1, 2, []),
        problem=pod_problem({"p-a": Trouble(IMAGE_PULL, "Back-off pulling image")}),
        selector="app=m",
        url="http://m.models.svc:8000/v1",
        generation=4,
        now=NOW,
        starting={"p-1": StartupReport("warming_up", 3.0, 70.0)},
        extra=[inference_pool_condition("m", served=False, in_place=[], conflicts=[], failures=[])],
    )
    assert {c["type"] for c in status["conditions"]} == {
        "Available", "Progressing", "Degraded", "InferencePoolCreated",
    }  # fmt: skip
    assert admit("VLLMDeployment", with_status("VLLMDeployment", status)) == []


def test_a_whole_loraadapter_status_is_admitted():
    adapter = AdapterSpec(
        name="a", namespace="models", uid="uid-a", generation=2, created=NOW,
        deployment="m", adapter_name="a", source="/adapters/a", replicas=None,
    )  # fmt: skip
    status = adapter_status(
        previous={},
        adapter=adapter,
        problem=None,
        pods=["m-1", "m-2"],
        results={("a", "m-1"): CallResult(True), ("a", "m-2"): CallResult(False, "e" * 1024)},
        reports={"m-1": ServerReport(instance="i-1", adapters={}), "m-2": None},
        now=NOW,
    )
    assert admit("LoraAdapter", with_status("LoraAdapter", status)) == []


def test_a_loraadapter_failing_on_many_pods_keeps_its_message_within_bounds():
    """Degraded/LoadFailed joins every pod's error (each up to 1024 characters): past about 25
    failing pods that would exceed metav1.Condition's 32768, and the status write would fail."""
    errors = [f"m-{i:04d}: {'e' * 1023}…" for i in range(40)]
    written = []
    for cond in adapter_conditions(None, 40, 0, errors):
        written = set_condition(written, cond, now=NOW, generation=1)
    assert admit("LoraAdapter", with_status("LoraAdapter", {"conditions": written})) == []


# --- quantities -----------------------------------------------------------------------------------

REFUSED_QUANTITIES = ["1Gix", "lots", "", " 1", "1 Gi", "1GB", "Gi", "1K", "0x10", "²", "1e", "--1"]
ADMITTED_QUANTITIES = [
    "500m", "2Gi", 1, 0, "1.5", "1e3", "1E-3", "+1", ".5", "1.", "100Ki", "1.5Gi", "16", "4n",
]  # fmt: skip


def _resources(where: str, key: str, value: Any) -> dict[str, Any]:
    return vllmd("m", {"model": MODEL, "resources": {where: {key: value}}})


@pytest.mark.parametrize("where", ["requests", "limits"])
@pytest.mark.parametrize("value", REFUSED_QUANTITIES)
def test_resources_that_are_no_quantities_are_refused(where: str, value: str):
    errors = admit("VLLMDeployment", _resources(where, "memory", value))
    assert errors and all(e.startswith(f"spec.resources.{where}.memory") for e in errors), errors


@pytest.mark.parametrize("where", ["requests", "limits"])
@pytest.mark.parametrize("value", ADMITTED_QUANTITIES, ids=repr)
def test_resource_quantities_are_admitted_and_parsed(where: str, value: Any):
    body = _resources(where, "cpu", value)
    assert admit("VLLMDeployment", body) == []
    spec = parse_deployment(body, IMAGES)
    assert getattr(spec, where) == {"cpu": str(value)}
    parse_quantity(str(value))  # the operator's drift check reads them (model/drift.py)


@pytest.mark.parametrize("value", ["lots", "50 Gi", "50GB", ""])
def test_a_model_cache_size_that_is_no_quantity_is_refused(value: str):
    body = vllmd("m", {"model": MODEL, "modelCache": {"enabled": True, "size": value}})
    errors = admit("VLLMDeployment", body)
    assert errors and all(e.startswith("spec.modelCache.size") for e in errors), errors


@pytest.mark.parametrize("value", ["100Gi", "1Ti", "500G", 107374182400], ids=repr)
def test_model_cache_sizes_are_admitted(value: Any):
    body = vllmd("m", {"model": MODEL, "modelCache": {"enabled": True, "size": value}})
    assert admit("VLLMDeployment", body) == []
    assert parse_deployment(body, IMAGES).model_cache.size == str(value)  # as claims want


def test_the_model_cache_default_is_a_quantity():
    body = vllmd("m", {"model": MODEL, "modelCache": {"enabled": True}})
    assert admit("VLLMDeployment", body) == []
    assert parse_deployment(body, IMAGES).model_cache.size == "50Gi"


# "²" and the Arabic-Indic and fullwidth 1: str.isdigit() takes them all, int() not "²". The
# API server refuses them now; the operator's own check (spec._whole_number) stays behind it.
@pytest.mark.parametrize("value", ["²", "\u0661", "\uff11", " 1"], ids=ascii)
def test_gpu_counts_in_other_scripts_are_refused_by_the_crd_and_the_operator(value: str):
    body = _resources("limits", "nvidia.com/gpu", value)
    errors = admit("VLLMDeployment", body)
    assert errors and all(e.startswith("spec.resources.limits.nvidia.com/gpu") for e in errors)
    with pytest.raises(InvalidSpec, match="must be a whole number"):
        parse_deployment(body, IMAGES)
