"""Rollouts that never need a spare GPU: the Deployment's rolling update (spec.rollout and its
accelerator-dependent defaults), checked with Kubernetes' own arithmetic for 1, 2 and many
replicas, the PodDisruptionBudget that goes with it, and the progress deadline that never
fires before the operator's own startup timeout."""

from __future__ import annotations

import math

import pytest

from vllm_operator.model.builders import build_all, build_deployment
from vllm_operator.model.spec import InvalidSpec, parse_deployment
from vllm_testkit.admission import admit
from vllm_testkit.samples import IMAGES, vllmd

GPU = {"model": {"uri": "hf://org/llama"}, "accelerator": "GPU", "gpusPerReplica": 1}
CPU = {"model": {"uri": "/models/tiny"}, "accelerator": "CPU"}


def scaled(value: int | str, replicas: int, *, round_up: bool) -> int:
    """Kubernetes' intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * replicas / 100
    return math.ceil(share) if round_up else math.floor(share)


def rollout_bounds(deployment: dict) -> tuple[int, int]:
    """(most pods at once, fewest available at once) during a rolling update, as the
    Deployment controller computes them (deploymentutil.ResolveFenceposts: surge rounded up,
    unavailable down, and one unavailable if both come to 0)."""
    spec = deployment["spec"]
    replicas, update = spec["replicas"], spec["strategy"]["rollingUpdate"]
    surge = scaled(update["maxSurge"], replicas, round_up=True)
    unavailable = scaled(update["maxUnavailable"], replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return replicas + surge, replicas - unavailable


def deployment_for(spec: dict, replicas: int) -> dict:
    return build_deployment(parse_deployment(vllmd("m", spec | {"replicas": replicas}), IMAGES))


@pytest.mark.parametrize("replicas", [1, 2, 3, 8, 50])
def test_gpu_replicas_update_in_place_without_a_spare_gpu(replicas: int):
    deployment = deployment_for(GPU, replicas)
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    most, fewest = rollout_bounds(deployment)
    assert most == replicas  # never a pod more than the GPUs already held
    assert fewest == replicas - 1  # one replaced at a time


@pytest.mark.parametrize("replicas", [1, 2, 3, 8, 50])
def test_cpu_replicas_surge_and_lose_no_capacity(replicas: int):
    deployment = deployment_for(CPU, replicas)
    most, fewest = rollout_bounds(deployment)
    assert fewest == replicas  # no capacity lost during an update
    assert most == replicas + math.ceil(replicas / 4)


def test_the_rollout_is_the_users_to_set():
    spec = GPU | {"rollout": {"maxSurge": 1, "maxUnavailable": 0}}  # a spare GPU node exists
    assert rollout_bounds(deployment_for(spec, 4)) == (5, 4)
    half = GPU | {"rollout": {"maxUnavailable": "50%"}}  # faster, surge still 0
    assert rollout_bounds(deployment_for(half, 4)) == (4, 2)


@pytest.mark.parametrize(
    ("spec", "maxUnavailable"),
    [(GPU, 1), (CPU, 1), (GPU | {"rollout": {"maxUnavailable": "25%"}}, "25%"),
     (GPU | {"podDisruptionBudget": {"maxUnavailable": 2}}, 2)],
)  # fmt: skip
def test_the_disruption_budget_follows_the_rollout(spec: dict, maxUnavailable: int | str):
    """Evictions (a node drain) take down at most as many pods as an update does (one when an
    update takes none down), unless the budget says otherwise."""
    objects = build_all(
        parse_deployment(vllmd("m", spec | {"replicas": 4}), IMAGES),
        monitoring_available=False,
        operator_namespace="vllm-system",
    )
    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == maxUnavailable


@pytest.mark.parametrize(
    ("rollout", "refused"),
    [
        ({"maxSurge": 0, "maxUnavailable": 0}, "cannot both be 0"),
        ({"maxSurge": "0%", "maxUnavailable": 0}, "cannot both be 0"),
        ({"maxSurge": -1}, "rollout.maxSurge must be a count"),
        ({"maxUnavailable": "101%"}, "rollout.maxUnavailable must be a count"),
        ({"maxUnavailable": "half"}, "rollout.maxUnavailable must be a count"),
        ({"maxSurge": 1, "maxUnavailable": "10%"}, None),
    ],
)
def test_rollouts_that_cannot_replace_a_pod_are_refused_at_admission(
    rollout: dict, refused: str | None
):
    errors = admit("VLLMDeployment", vllmd("m", GPU | {"rollout": rollout}))
    if refused is None:
        assert errors == []
    else:
        assert any(refused in e for e in errors), errors


def test_a_default_that_would_leave_no_way_to_replace_a_pod_is_invalid():
    """The CRD sees the fields given, not the accelerator's defaults: a GPU deployment that sets
    maxUnavailable 0 alone (maxSurge defaults to 0 there) is refused by the operator, saying
    which default."""
    body = vllmd("m", GPU | {"rollout": {"maxUnavailable": 0}})
    assert admit("VLLMDeployment", body) == []
    with pytest.raises(InvalidSpec, match="with accelerator GPU, maxSurge defaults to 0"):
        parse_deployment(body, IMAGES)


@pytest.mark.parametrize(
    ("timeout", "deadline"),
    [(None, 2**31 - 1), ("2h", 7200 + 600), ("1h30m", 5400 + 600), ("45s", 645),
     ("99999h", 99999 * 3600 + 600)],
)  # fmt: skip
def test_kubernetes_progress_deadline_never_fires_before_the_startup_timeout(timeout, deadline):
    spec = GPU if timeout is None else GPU | {"startupTimeout": timeout}
    deployment = deployment_for(spec, 1)
    assert deployment["spec"]["progressDeadlineSeconds"] == deadline


@pytest.mark.parametrize("timeout", ["0s", "90", "1h0m", "2d", "h", "1.5h", "-1h", "1m1h"])
def test_startup_timeouts_that_are_not_durations_are_refused(timeout: str):
    errors = admit("VLLMDeployment", vllmd("m", GPU | {"startupTimeout": timeout}))
    assert any("startupTimeout" in e for e in errors), errors
    with pytest.raises(InvalidSpec, match="startupTimeout"):
        parse_deployment(vllmd("m", GPU | {"startupTimeout": timeout}), IMAGES)
