"""Pure status logic and spec parsing of the operator."""

from __future__ import annotations

import copy

import pytest

from vllm_operator.model import reasons
from vllm_operator.model.spec import InvalidSpec, parse_deployment
from vllm_operator.model.status import (
    INFERENCE_POOL,
    KUBELET_MESSAGE_CHARS,
    POD_CONFIG_MESSAGE_CHARS,
    Condition,
    deployment_conditions,
    deployment_status,
    inference_pool_condition,
    pod_config_problem,
    refreshable_from_pods,
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


def test_a_rollout_is_not_complete_while_only_old_pods_are_ready():
    # Both replicas ready, but one still runs the old template: still rolling out.
    halfway = by_type(deployment_conditions(2, deployment(2, 1), None))
    assert (halfway["Progressing"].reason, halfway["Progressing"].message) == (
        reasons.ROLLING_OUT, "1 updated, 2 ready of 2 replicas"
    )  # fmt: skip
    assert halfway["Available"].status is True


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
    problem = Condition(
        "Degraded", True, reasons.SECRET_NOT_FOUND, 'pod m-1 cannot start: secret "x" not found'
    )
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


def test_inference_pool_condition_says_whether_the_pool_is_in_place_and_why_not():
    def pool(**kwargs):
        args = {"served": True, "in_place": [], "conflicts": [], "failures": []} | kwargs
        return inference_pool_condition("p", **args)

    created = pool(in_place=["Deployment/m", "InferencePool/p"])
    assert (created.type, created.status, created.reason) == (INFERENCE_POOL, True, "Created")
    missing = pool(served=False)
    assert (missing.status, missing.reason) == (False, reasons.CRD_NOT_INSTALLED)
    assert "install the Gateway API Inference Extension's CRDs" in missing.message
    conflict = "InferencePool/p exists and is not controlled by this VLLMDeployment"
    taken = pool(conflicts=["Service/m exists and is not controlled", conflict])
    assert (taken.status, taken.reason, taken.message) == (
        False, reasons.NAME_CONFLICT, f"not applied: {conflict}",
    )  # fmt: skip
    failed = pool(failures=["Service/m: boom", "InferencePool/p: 422: spec.targetPorts: bad"])
    assert (failed.reason, failed.message) == (
        reasons.APPLY_FAILED, "InferencePool/p: 422: spec.targetPorts: bad",
    )  # fmt: skip
    # Someone else's Deployment stops the round before the pool: that conflict is why.
    held = pool(conflicts=["Deployment/m exists and is not controlled by this VLLMDeployment"])
    assert (held.reason, held.message) == (
        reasons.NAME_CONFLICT,
        "not applied: Deployment/m exists and is not controlled by this VLLMDeployment",
    )


def test_the_inference_pool_condition_is_kept_by_refreshes_and_dropped_when_not_asked():
    args = {"desired": 1, "deployment": deployment(1, 1), "problem": None, "selector": "a=b",
            "url": "http://x", "generation": 1}  # fmt: skip
    missing = inference_pool_condition("p", served=False, in_place=[], conflicts=[], failures=[])
    first = deployment_status(previous={}, now=T0, extra=(missing,), **args)
    (news,) = transitions([], first["conditions"])  # a pool asked for and missing: news
    assert (news["type"], news["status"]) == (INFERENCE_POOL, "False")
    refreshed = deployment_status(previous=first, now=T1, **args)
    assert refreshed == first
    created = Condition(INFERENCE_POOL, True, "Created", "InferencePool/p applied")
    later = deployment_status(previous=first, now=T1, extra=(created,), **args)
    assert [c["type"] for c in transitions(first["conditions"], later["conditions"])] == [
        INFERENCE_POOL
    ]
    dropped = deployment_status(previous=later, now=T1, stale=(INFERENCE_POOL,), **args)
    assert INFERENCE_POOL not in [c["type"] for c in dropped["conditions"]]


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
    failing = pod_gate_condition(passed, Condition(ADAPTERS_LOADED, False, "X", ""), now=T1)
    assert failing is not None
    assert (failing["status"], failing["lastTransitionTime"]) == ("False", T1)
    # Still passing, for another reason: the reason is current, the transition time stays.
    loaded = Condition(ADAPTERS_LOADED, True, "AdaptersLoaded", "holds sql")
    again = pod_gate_condition(passed, loaded, now=T1)
    assert again is not None
    assert (again["reason"], again["message"], again["lastTransitionTime"]) == (
        "AdaptersLoaded", "holds sql", T0
    )  # fmt: skip


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


# --- every condition, message included (what `kubectl describe` shows) -------------------------

PROGRESS_STUCK = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
FINE = Condition("Degraded", False, reasons.AS_EXPECTED, "")


@pytest.mark.parametrize(
    ("desired", "deployment_", "expected"),
    [
        (2, None, [Condition("Available", False, reasons.NO_REPLICA_READY, "0/2 replicas ready"),
                   Condition("Progressing", True, reasons.ROLLING_OUT, "0 updated, 0 ready of 2 replicas"),
                   FINE]),
        # Not created yet, even at 0 replicas: the rollout has not happened.
        (0, None, [Condition("Available", False, reasons.SCALED_TO_ZERO, "replicas is 0"),
                   Condition("Progressing", True, reasons.ROLLING_OUT, "0 updated, 0 ready of 0 replicas"),
                   FINE]),
        # Just created: the Deployment controller has not written a count yet.
        (2, {"status": {}}, [
            Condition("Available", False, reasons.NO_REPLICA_READY, "0/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLING_OUT, "0 updated, 0 ready of 2 replicas"),
            FINE]),
        (2, {"status": {"readyReplicas": 2}}, [
            Condition("Available", True, reasons.MINIMUM_REPLICAS_READY, "2/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLING_OUT, "0 updated, 2 ready of 2 replicas"),
            FINE]),
        (2, deployment(1, 2), [
            Condition("Available", True, reasons.MINIMUM_REPLICAS_READY, "1/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLING_OUT, "2 updated, 1 ready of 2 replicas"),
            FINE]),
        (2, deployment(2, 2), [
            Condition("Available", True, reasons.MINIMUM_REPLICAS_READY, "2/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLOUT_COMPLETE, "2/2 replicas ready"),
            FINE]),
        (0, deployment(0, 0), [
            Condition("Available", False, reasons.SCALED_TO_ZERO, "replicas is 0"),
            Condition("Progressing", True, reasons.ROLLOUT_COMPLETE, "0/0 replicas ready"),
            FINE]),
        (2, deployment(0, 0, {**PROGRESS_STUCK, "message": "too slow"}), [
            Condition("Available", False, reasons.NO_REPLICA_READY, "0/2 replicas ready"),
            Condition("Progressing", False, reasons.PROGRESS_DEADLINE_EXCEEDED, "too slow"),
            Condition("Degraded", True, reasons.PROGRESS_DEADLINE_EXCEEDED, "too slow")]),
        (2, deployment(0, 0, PROGRESS_STUCK), [
            Condition("Available", False, reasons.NO_REPLICA_READY, "0/2 replicas ready"),
            Condition("Progressing", False, reasons.PROGRESS_DEADLINE_EXCEEDED, ""),
            Condition("Degraded", True, reasons.PROGRESS_DEADLINE_EXCEEDED, "")]),
        (2, deployment(2, 2, {"type": "ReplicaFailure", "status": "True", "message": "quota"}), [
            Condition("Available", True, reasons.MINIMUM_REPLICAS_READY, "2/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLOUT_COMPLETE, "2/2 replicas ready"),
            Condition("Degraded", True, reasons.REPLICA_FAILURE, "quota")]),
        (2, deployment(2, 2, {"type": "ReplicaFailure", "status": "True"}), [
            Condition("Available", True, reasons.MINIMUM_REPLICAS_READY, "2/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLOUT_COMPLETE, "2/2 replicas ready"),
            Condition("Degraded", True, reasons.REPLICA_FAILURE, "replica failure")]),
        (2, deployment(2, 2, {"type": "ReplicaFailure", "status": "False", "message": "old"}), [
            Condition("Available", True, reasons.MINIMUM_REPLICAS_READY, "2/2 replicas ready"),
            Condition("Progressing", True, reasons.ROLLOUT_COMPLETE, "2/2 replicas ready"),
            FINE]),
    ],
    ids=["not-created", "not-created-at-zero", "no-counts-yet", "ready-but-not-updated",
         "rolling-out", "complete", "scaled-to-zero", "deadline-exceeded",
         "deadline-exceeded-without-message", "replica-failure", "replica-failure-without-message",
         "replica-failure-over"],
)  # fmt: skip
def test_every_deployment_condition_with_its_message(desired, deployment_, expected):
    assert deployment_conditions(desired, deployment_, None) == expected


def test_a_condition_that_lost_its_transition_time_gets_one_without_a_flip():
    old = [{"type": "Available", "status": "True", "reason": "X", "message": ""}]
    out = set_condition(old, Condition("Available", True, "X", ""), now=T1, generation=None)
    assert out[0]["lastTransitionTime"] == T1


def test_status_of_a_deployment_without_counts_yet():
    status = deployment_status(
        previous={}, desired=2, deployment={"status": {}}, problem=None,
        selector="a=b", url="http://m.ns.svc:8000/v1", generation=4, now=T0,
    )  # fmt: skip
    conditions = status.pop("conditions")
    assert status == {
        "phase": "Pending",
        "replicas": 0,
        "readyReplicas": 0,
        "readyText": "0/2",
        "selector": "a=b",
        "url": "http://m.ns.svc:8000/v1",
        "observedGeneration": 4,
    }
    assert [(c["type"], c["lastTransitionTime"], c["observedGeneration"]) for c in conditions] == [
        ("Available", T0, 4), ("Progressing", T0, 4), ("Degraded", T0, 4)
    ]  # fmt: skip


def test_status_carries_the_reconciles_problem_as_degraded():
    problem = Condition(
        "Degraded", True, reasons.SECRET_NOT_FOUND, 'pod m-1 cannot start: secret "x" not found'
    )
    status = deployment_status(
        previous={}, desired=1, deployment=None, problem=problem,
        selector="a=b", url="http://x", generation=None, now=T0,
    )  # fmt: skip
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded == {"type": "Degraded", "status": "True", "reason": reasons.SECRET_NOT_FOUND,
                        "message": 'pod m-1 cannot start: secret "x" not found', "lastTransitionTime": T0}  # fmt: skip
    assert "observedGeneration" not in status


# Messages as the kubelet writes them (kuberuntime's makeEnvironmentVariables and friends).
NO_SECRET = 'secret "hf-token" not found'
NO_KEY = "couldn't find key token in Secret models/hf-token"
NO_CONFIG_MAP = 'configmap "settings" not found'


def test_no_pod_failing_its_config_is_no_problem():
    assert pod_config_problem({}) is None


def test_pods_failing_on_a_secret_are_secret_not_found_naming_pod_and_message():
    problem = pod_config_problem({"m-1": NO_SECRET})
    assert problem == Condition(
        "Degraded", True, reasons.SECRET_NOT_FOUND, f"pod m-1 cannot start: {NO_SECRET}"
    )
    both = pod_config_problem({"m-2": NO_KEY, "m-1": NO_SECRET})
    assert both.reason == reasons.SECRET_NOT_FOUND  # a missing key is about a Secret too
    assert both.message == f"pod m-1 cannot start: {NO_SECRET}; pod m-2 cannot start: {NO_KEY}"


def test_other_config_errors_are_pod_config_error():
    assert pod_config_problem({"m-1": NO_CONFIG_MAP}).reason == reasons.POD_CONFIG_ERROR
    mixed = pod_config_problem({"m-1": NO_SECRET, "m-2": NO_CONFIG_MAP})
    assert mixed.reason == reasons.POD_CONFIG_ERROR  # not every message is about a Secret
    assert NO_SECRET in mixed.message and NO_CONFIG_MAP in mixed.message
    odd = pod_config_problem({"m-1": "container has runAsNonRoot and image will run as root"})
    assert odd.reason == reasons.POD_CONFIG_ERROR
    # A word that merely contains "secret" is not about a Secret.
    assert pod_config_problem({"m-1": "volume secretless not found"}).reason == (
        reasons.POD_CONFIG_ERROR
    )


def test_pods_failing_alike_share_one_entry_and_the_message_stays_bounded():
    many = {f"m-{i:03}": NO_SECRET for i in range(500)}
    problem = pod_config_problem(many | {"x-1": NO_CONFIG_MAP})
    assert problem.message == (
        f"pods m-000, m-001, m-002 and 497 more cannot start: {NO_SECRET}; "
        f"pod x-1 cannot start: {NO_CONFIG_MAP}"
    )
    # Many distinct messages (each pod missing another Secret), long ones, on several lines.
    distinct = {f"m-{i:03}": f'secret "s-{i}" not found\n' + "x" * 1000 for i in range(50)}
    bounded = pod_config_problem(distinct)
    assert len(bounded.message) == POD_CONFIG_MESSAGE_CHARS
    assert bounded.message.startswith('pod m-000 cannot start: secret "s-0" not found xxx')
    assert bounded.message.endswith("...") and "\n" not in bounded.message
    assert bounded.reason == reasons.SECRET_NOT_FOUND


def test_pod_config_bounds_at_their_edges():
    assert pod_config_problem({"a": NO_SECRET, "b": NO_SECRET}).message == (
        f"pods a, b cannot start: {NO_SECRET}"
    )
    assert pod_config_problem({"a": NO_SECRET, "b": NO_SECRET, "c": NO_SECRET}).message == (
        f"pods a, b, c cannot start: {NO_SECRET}"
    )
    prefix = "pod a cannot start: "
    exact = "s" * KUBELET_MESSAGE_CHARS
    assert pod_config_problem({"a": exact}).message == prefix + exact  # kept whole
    longer = pod_config_problem({"a": exact + "t"}).message
    assert longer == prefix + "s" * (KUBELET_MESSAGE_CHARS - 3) + "..."
    # The whole message: exactly at its bound it is kept, one character more is cut to it.
    # Four entries "pod pN cannot start: MESSAGE" (21 characters and the message), "; " apart.
    messages = {f"p{i}": f"{i}" * KUBELET_MESSAGE_CHARS for i in range(3)}
    rest = POD_CONFIG_MESSAGE_CHARS - (4 * 21 + 3 * 2 + 3 * KUBELET_MESSAGE_CHARS)
    at_bound = pod_config_problem(messages | {"p3": "x" * rest}).message
    assert len(at_bound) == POD_CONFIG_MESSAGE_CHARS and at_bound.endswith("x")
    beyond = pod_config_problem(messages | {"p3": "x" * (rest + 1)}).message
    assert beyond == at_bound[:-3] + "..."


def cr_status(generation: int, observed: int | None, degraded: str | None) -> dict:
    status = {} if observed is None else {"observedGeneration": observed}
    if degraded:
        status["conditions"] = [{"type": "Degraded", "status": "True", "reason": degraded}]
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("body", "refreshable"),
    [
        (cr_status(2, 2, None), True),
        (cr_status(2, 2, reasons.SECRET_NOT_FOUND), True),
        (cr_status(2, 2, reasons.POD_CONFIG_ERROR), True),
        (cr_status(2, 2, reasons.REPLICA_FAILURE), True),
        (cr_status(3, 2, None), False),  # a spec change not applied yet
        (cr_status(1, None, None), False),  # never reconciled
        (cr_status(2, 2, reasons.NAME_CONFLICT), False),  # the apply round's to clear
        (cr_status(2, 2, reasons.APPLY_FAILED), False),
        (cr_status(2, 2, reasons.INVALID_SPEC), False),
    ],
)
def test_a_status_is_refreshed_from_pods_only_when_no_apply_round_is_due(body, refreshable):
    assert refreshable_from_pods(body) is refreshable


def test_a_degraded_that_stays_degraded_is_no_news():
    problem = Condition(
        "Degraded", True, reasons.SECRET_NOT_FOUND, 'pod m-1 cannot start: secret "x" not found'
    )
    before = set_condition([], problem, now=T0, generation=1)
    still = set_condition(before, problem, now=T1, generation=2)
    assert transitions(before, still) == []


# --- spec parsing: what the schema does not check, and every field read ------------------------


@pytest.mark.parametrize("model", [{}, {"uri": ""}])
def test_a_spec_without_a_model_uri_is_refused(model: dict):
    with pytest.raises(InvalidSpec, match=r"^spec\.model\.uri is required$"):
        parse_deployment(vllmd("m", {"model": model}), IMAGES)


@pytest.mark.parametrize(
    "ports",
    [{"port": 9000, "adminPort": 9000}, {"port": 9000, "orca": {"grpcPort": 9000}},
     {"adminPort": 9001, "orca": {"grpcPort": 9001}}],
    ids=["port-admin", "port-grpc", "admin-grpc"],
)  # fmt: skip
def test_the_server_ports_must_differ(ports: dict):
    with pytest.raises(InvalidSpec, match=r"^port, adminPort and orca\.grpcPort must differ: \["):
        parse_deployment(vllmd("m", {"model": {"uri": "/m"}, **ports}), IMAGES)


def test_spec_reads_the_objects_identity_and_defaults_what_metadata_lacks():
    spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}}), IMAGES)
    assert (spec.name, spec.namespace, spec.uid, spec.generation) == ("m", "models", "uid-m", 1)
    bare = vllmd("m", {"model": {"uri": "/m"}})
    bare["metadata"] = {"name": "m", "namespace": "models"}
    spec = parse_deployment(bare, IMAGES)
    assert (spec.uid, spec.generation) == ("", None)


def test_spec_lora_and_pdb_defaults_and_settings():
    spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}}), IMAGES)
    assert spec.lora.allow_hub is False
    assert spec.lora.allowed_source_roots == ()
    assert spec.pdb_max_unavailable == 1
    assert spec.engine.enforce_eager is False
    spec = parse_deployment(
        vllmd("m", {"model": {"uri": "/m"},
                    "lora": {"enabled": True, "allowHub": True, "allowedSourceRoots": ["/a", "/b"]},
                    "podDisruptionBudget": {"maxUnavailable": "25%"}}),
        IMAGES,
    )  # fmt: skip
    assert (spec.lora.allow_hub, spec.lora.allowed_source_roots) == (True, ("/a", "/b"))
    assert spec.pdb_max_unavailable == "25%"


def test_parsing_leaves_the_object_as_it_was():
    body = vllmd("m", {"model": {"uri": "/m"}, "lora": {"enabled": True}, "engine": {}})
    before = copy.deepcopy(body)
    parse_deployment(body, IMAGES)
    assert body == before  # the defaults went into a copy


def test_defaults_apply_inside_list_items_and_are_copies(monkeypatch):
    """The API server's structural defaulting, which `with_defaults` repeats: a default applies
    where a field is missing and its parent exists, list items included."""
    from vllm_operator.model import schema

    ports = {"type": "array", "items": {"properties": {"protocol": {"default": "TCP"}}}}
    selector = {"type": "object", "default": {"matchLabels": {"team": "ml"}}}
    fake = {"properties": {"spec": {"properties": {"ports": ports, "hosts": ports,
                                                   "selector": selector}}}}  # fmt: skip
    monkeypatch.setattr(schema, "openapi_schema", lambda kind: fake)
    obj = {"spec": {"ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}], "hosts": None}}
    out = schema.with_defaults("Fake", obj)
    assert out["spec"]["ports"] == [
        {"port": 80, "protocol": "TCP"},
        {"port": 81, "protocol": "UDP"},
    ]
    assert out["spec"]["hosts"] is None  # a null list stays null
    out["spec"]["selector"]["matchLabels"]["team"] = "changed"
    assert selector["default"] == {"matchLabels": {"team": "ml"}}  # not shared with the schema
    assert obj == {
        "spec": {"ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}], "hosts": None}
    }


# --- drift: what makes the operator apply, and whose object it is ------------------------------


def test_the_digest_is_stable_across_key_order_and_releases():
    """A digest that changed with key order or between releases would re-apply every child
    object (and roll every pod) for nothing."""
    from vllm_operator.model.drift import APPLIED, with_digest

    obj = {"metadata": {"name": "x"}, "spec": {"replicas": 1, "paused": False}}
    reordered = {"spec": {"paused": False, "replicas": 1}, "metadata": {"name": "x"}}
    digest = with_digest(obj)["metadata"]["annotations"][APPLIED]
    assert digest == with_digest(reordered)["metadata"]["annotations"][APPLIED]
    assert digest == "be412716bd22cb20"  # sha256 of the sorted JSON, 16 hex digits


def test_the_digest_joins_the_objects_own_annotations():
    from vllm_operator.model.drift import APPLIED, with_digest

    obj = {"metadata": {"name": "x", "annotations": {"team": "ml"}}, "spec": {}}
    annotations = with_digest(obj)["metadata"]["annotations"]
    assert annotations.keys() == {"team", APPLIED}
    assert annotations["team"] == "ml"


def test_needs_apply_when_missing_or_drifted_whatever_the_api_version():
    from vllm_operator.model.drift import needs_apply

    wanted = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
              "spec": {"maxUnavailable": 1}}  # fmt: skip
    assert needs_apply(wanted, None) is True
    # Read back through another version (or without one): the same object, nothing to do.
    assert needs_apply(wanted, {**wanted, "apiVersion": "policy/v1beta1"}) is False
    assert (
        needs_apply(wanted, {"kind": "PodDisruptionBudget", "spec": {"maxUnavailable": 1}}) is False
    )
    assert needs_apply(wanted, {**wanted, "spec": {"maxUnavailable": 2}}) is True


@pytest.mark.parametrize(
    ("refs", "owned"),
    [
        ([{"uid": "u1", "controller": True}], True),
        ([{"uid": "u0", "controller": True}, {"uid": "u1", "controller": True}], True),
        ([{"uid": "u1"}], False),  # an owner, not the controller
        ([{"uid": "u1", "controller": False}], False),
        ([{"uid": "u2", "controller": True}], False),
        ([], False),
        (None, False),
    ],
)
def test_owned_by_means_the_controller_owner_reference(refs, owned: bool):
    from vllm_operator.model.drift import owned_by

    obj = {"metadata": {} if refs is None else {"ownerReferences": refs}}
    assert owned_by(obj, "u1") is owned
    assert owned_by({}, "u1") is False


def test_child_action_creates_applies_or_leaves_our_children():
    from vllm_operator.model.drift import child_action

    ours = {"metadata": {"name": "m", "ownerReferences": [{"uid": "cr1", "controller": True}]}}
    service = {**ours, "kind": "Service", "spec": {"ports": [{"port": 8000}]}}
    claim = {**ours, "kind": "PersistentVolumeClaim", "spec": {"resources": {"storage": "50Gi"}}}
    assert child_action(service, None, "cr1") == "apply"
    assert child_action(service, service, "cr1") == "none"
    assert child_action(service, {**service, "spec": {"ports": []}}, "cr1") == "apply"
    # A claim is created once and never written again, whatever changed in the spec.
    assert child_action(claim, None, "cr1") == "create"
    assert child_action(claim, claim, "cr1") == "none"
    assert (
        child_action(claim, {**claim, "spec": {"resources": {"storage": "1Gi"}}}, "cr1") == "none"
    )


@pytest.mark.parametrize("kind", ["Service", "PersistentVolumeClaim"])
@pytest.mark.parametrize(
    "refs",
    [[], [{"uid": "cr2", "controller": True}], [{"uid": "cr1", "controller": False}]],
    ids=["unowned", "another-controller", "owner-not-controller"],
)
def test_a_child_name_held_by_someone_else_is_a_conflict(kind: str, refs: list):
    from vllm_operator.model.drift import child_action

    wanted = {"kind": kind, "metadata": {"name": "m"}, "spec": {}}
    theirs = {"kind": kind, "metadata": {"name": "m", "ownerReferences": refs}, "spec": {}}
    assert child_action(wanted, theirs, "cr1") == "conflict"
