"""Pure status logic and spec parsing of the operator."""

from __future__ import annotations

import pytest

from vllm_operator.model import reasons
from vllm_operator.model.spec import InvalidSpec, parse_deployment
from vllm_operator.model.status import (
    Condition,
    deployment_conditions,
    deployment_status,
    set_condition,
    transitions,
)
from vllm_testkit.samples import IMAGES, vllmd

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_set_condition_moves_the_transition_time_only_on_a_flip():
    first = set_condition(
        [], Condition("Available", False, "NoReplicaReady", "0/1"), now=T0, generation=1
    )
    same = set_condition(
        first, Condition("Available", False, "NoReplicaReady", "still"), now=T1, generation=2
    )
    assert same[0]["lastTransitionTime"] == T0
    assert same[0]["message"] == "still"
    assert same[0]["observedGeneration"] == 2
    flipped = set_condition(
        same, Condition("Available", True, "MinimumReplicasReady", "1/1"), now=T1, generation=2
    )
    assert flipped[0]["lastTransitionTime"] == T1
    assert flipped[0]["status"] == "True"


def test_set_condition_keeps_other_types_and_their_order():
    conditions = [
        {"type": "A", "status": "True", "reason": "X", "message": "", "lastTransitionTime": T0},
        {"type": "B", "status": "True", "reason": "X", "message": "", "lastTransitionTime": T0},
    ]
    out = set_condition(conditions, Condition("A", False, "Y", "m"), now=T1, generation=None)
    assert [c["type"] for c in out] == ["A", "B"]
    assert out[1] == conditions[1]
    assert "observedGeneration" not in out[0]


def deployment(ready: int, updated: int, *conditions: dict) -> dict:
    return {"status": {"replicas": 2, "readyReplicas": ready, "updatedReplicas": updated,
                       "conditions": list(conditions)}}  # fmt: skip


def by_type(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


def test_conditions_while_rolling_out_and_when_complete():
    rolling = by_type(deployment_conditions(2, deployment(0, 1), None))
    assert (rolling["Available"].status, rolling["Available"].reason) == (
        False,
        reasons.NO_REPLICA_READY,
    )
    assert rolling["Progressing"].reason == reasons.ROLLING_OUT
    assert rolling["Degraded"].status is False
    done = by_type(deployment_conditions(2, deployment(2, 2), None))
    assert done["Available"].status is True
    assert (done["Progressing"].status, done["Progressing"].reason) == (
        True,
        reasons.ROLLOUT_COMPLETE,
    )


def test_conditions_when_stuck_or_failing_or_scaled_to_zero():
    stuck = deployment(0, 0, {"type": "Progressing", "status": "False",
                              "reason": "ProgressDeadlineExceeded", "message": "too slow"})  # fmt: skip
    got = by_type(deployment_conditions(2, stuck, None))
    assert got["Progressing"].status is False
    assert (got["Degraded"].status, got["Degraded"].reason) == (
        True,
        reasons.PROGRESS_DEADLINE_EXCEEDED,
    )
    failing = deployment(1, 2, {"type": "ReplicaFailure", "status": "True", "message": "quota"})
    assert by_type(deployment_conditions(2, failing, None))["Degraded"].message == "quota"
    zero = by_type(deployment_conditions(0, deployment(0, 0), None))
    assert zero["Available"].reason == reasons.SCALED_TO_ZERO


def test_a_problem_wins_degraded():
    problem = Condition("Degraded", True, reasons.SECRET_NOT_FOUND, "Secret 'x' not found")
    assert by_type(deployment_conditions(1, None, problem))["Degraded"] == problem


def test_status_has_scale_fields_and_transitions_are_found():
    status = deployment_status(
        previous={}, desired=2, deployment=deployment(1, 2), problem=None,
        selector="a=b", url="http://x", generation=3, now=T0,
    )  # fmt: skip
    assert status["replicas"] == 2
    assert status["readyReplicas"] == 1
    assert status["readyText"] == "1/2"
    assert status["selector"] == "a=b"
    assert status["observedGeneration"] == 3
    assert transitions([], status["conditions"]) == []  # a first status is no news
    degraded = set_condition(
        [], Condition("Degraded", True, reasons.SECRET_NOT_FOUND, "x"), now=T0, generation=1
    )
    assert transitions([], degraded) == degraded  # unless it is a problem
    down = set_condition(
        status["conditions"], Condition("Available", False, "NoReplicaReady", "0/2"),
        now=T1, generation=3,
    )  # fmt: skip
    assert [c["type"] for c in transitions(status["conditions"], down)] == ["Available"]
    again = deployment_status(
        previous=status, desired=2, deployment=deployment(1, 2), problem=None,
        selector="a=b", url="http://x", generation=3, now=T1,
    )  # fmt: skip
    assert transitions(status["conditions"], again["conditions"]) == []
    assert again == status  # nothing changed: nothing to write


def test_spec_defaults():
    spec = parse_deployment(vllmd("m", {"model": {"uri": "hf://org/name"}}), IMAGES)
    assert (spec.replicas, spec.accelerator, spec.gpus, spec.port) == (1, "GPU", 1, 8000)
    assert spec.model.served_name == "org/name"
    assert spec.lora.enabled is False
    assert spec.lora.max_rank == 16
    assert spec.pdb_enabled is True
    cpu = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, "accelerator": "CPU"}), IMAGES)
    assert cpu.gpus == 0
    assert cpu.model.served_name == "m"


def test_gpus_from_resources_like_any_pod_spec():
    spec = parse_deployment(
        vllmd("m", {"model": {"uri": "/m"}, "resources": {"limits": {"nvidia.com/gpu": 2}}}), IMAGES
    )
    assert spec.gpus == 2
    assert "nvidia.com/gpu" not in spec.limits  # set from spec.gpus by the builder, once


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"accelerator": "CPU", "gpusPerReplica": 2}, "runs without GPUs"),
        (
            {"accelerator": "CPU", "resources": {"limits": {"nvidia.com/gpu": 1}}},
            "runs without GPUs",
        ),
        ({"gpusPerReplica": 2, "resources": {"limits": {"nvidia.com/gpu": 1}}}, "disagree"),
        (
            {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
            "differ",
        ),
        ({"resources": {"limits": {"nvidia.com/gpu": "half"}}}, "whole number"),
    ],
)
def test_what_the_schema_lets_through_is_still_refused(spec: dict, message: str):
    with pytest.raises(InvalidSpec, match=message):
        parse_deployment(vllmd("m", {"model": {"uri": "/m"}, **spec}), IMAGES)


def test_pod_gate_condition_only_for_gated_pods_and_only_on_change():
    from vllm_operator.model.builders import ADAPTERS_LOADED
    from vllm_operator.model.status import Condition, pod_gate_condition

    gated = {"spec": {"readinessGates": [{"conditionType": ADAPTERS_LOADED}]}, "status": {}}
    passing = Condition(ADAPTERS_LOADED, True, "NoAdapters", "")
    condition = pod_gate_condition(gated, passing, now=T0)
    assert condition is not None
    assert (condition["type"], condition["status"]) == (ADAPTERS_LOADED, "True")
    assert pod_gate_condition({"spec": {}}, passing, now=T0) is None
    passed = {**gated, "status": {"conditions": [condition]}}
    assert pod_gate_condition(passed, passing, now=T0) is None
    failing = pod_gate_condition(passed, Condition(ADAPTERS_LOADED, False, "X", ""), now=T0)
    assert failing is not None
    assert failing["status"] == "False"


def test_drifted_sees_changes_of_our_fields_and_ignores_server_defaults():
    from vllm_operator.model.drift import drifted

    wanted = {"spec": {"replicas": 2, "ports": [{"name": "http", "port": 8000}]}}
    defaulted = {"spec": {"replicas": 2, "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                          "clusterIP": "10.0.0.1"}}  # fmt: skip
    assert not drifted(wanted, defaulted)
    assert drifted(wanted, {"spec": {"replicas": 3, "ports": defaulted["spec"]["ports"]}})
    assert drifted(wanted, {"spec": {"replicas": 2, "ports": []}})


def test_the_digest_changes_when_a_field_is_removed():
    from vllm_operator.model.drift import APPLIED, with_digest

    with_selector = {"metadata": {"name": "x"}, "spec": {"nodeSelector": {"gpu": "a100"}}}
    without = {"metadata": {"name": "x"}, "spec": {}}
    digest = with_digest(with_selector)["metadata"]["annotations"][APPLIED]
    assert digest != with_digest(without)["metadata"]["annotations"][APPLIED]
    assert digest == with_digest(with_selector)["metadata"]["annotations"][APPLIED]
    assert "annotations" not in with_selector["metadata"]  # the input is left alone


def test_drifted_compares_quantities_by_value_as_the_api_server_canonicalizes_them():
    from vllm_operator.model.drift import drifted

    wanted = {"resources": {"requests": {"cpu": 2, "memory": "1024Mi"}, "limits": {"cpu": "0.5"}}}
    canonical = {
        "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "500m"}}
    }
    assert not drifted(wanted, canonical)
    assert drifted(wanted, {"resources": {**canonical["resources"], "limits": {"cpu": "1"}}})
    assert not drifted({"emptyDir": {"sizeLimit": "1024Mi"}}, {"emptyDir": {"sizeLimit": "1Gi"}})
    assert drifted({"args": ["--max-model-len", "1k"]}, {"args": ["--max-model-len", "1000"]})
    assert drifted(
        {"resources": {"limits": {"cpu": "lots"}}}, {"resources": {"limits": {"cpu": "lots!"}}}
    )
