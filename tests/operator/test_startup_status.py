"""Slow loads are progress, real failures are Degraded (model/status.py, pure): what starting
servers say (`/ready`), the kubelet's and the scheduler's verdicts on pods, the phase column."""

from __future__ import annotations

import pytest

from vllm_operator.model import reasons
from vllm_operator.model.pods import (
    CONFIG_ERROR,
    CRASH_LOOP,
    IMAGE_PULL,
    UNSCHEDULABLE,
    StartupReport,
    Trouble,
)
from vllm_operator.model.status import (
    STARTING_NAMED,
    Condition,
    deployment_conditions,
    deployment_phase,
    deployment_status,
    duration,
    pod_problem,
    startup_problem,
    startup_progress,
)

T0 = "2026-01-01T00:00:00Z"
MINUTE, HOUR = 60, 3600


def report(phase: str, in_phase: float, uptime: float | None = None, error: str | None = None):
    return StartupReport(phase, in_phase, uptime if uptime is not None else in_phase, error)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (40.9, "40s"), (59, "59s"), (60, "1m00s"), (125, "2m05s"), (599, "9m59s"),
     (600, "10m"), (14 * MINUTE + 30, "14m"), (HOUR - 1, "59m"), (HOUR, "1h00m"),
     (HOUR + 5 * MINUTE, "1h05m"), (26 * HOUR, "1d02h"), (-5, "0s")],
)  # fmt: skip
def test_durations_read_at_a_glance(seconds: float, text: str):
    assert duration(seconds) == text


def test_starting_replicas_are_progress_with_their_phases():
    starting = {
        "m-a": report("profiling", 40),
        "m-b": report("loading_model", 14 * MINUTE + 10),
    }
    progress = startup_progress(3, starting)
    assert progress == Condition(
        "Progressing", True, reasons.LOADING_MODEL,
        "2/3 replicas starting: loading_model for 14m, profiling for 40s",
    )  # fmt: skip
    silent = startup_progress(1, {"m-a": None})
    assert silent.message == "1/1 replicas starting: not answering yet"
    assert startup_progress(2, {}) is None


def test_many_starting_replicas_are_counted_not_listed():
    starting = {f"m-{i:02d}": report("warming_up", i) for i in range(20)}
    message = startup_progress(20, starting).message
    assert message.startswith("20/20 replicas starting: warming_up for 0s, warming_up for 1s")
    assert message.endswith(f"and {20 - STARTING_NAMED} more")
    assert message.count("warming_up") == STARTING_NAMED


def test_twenty_minutes_of_loading_is_progressing_and_never_degraded():
    """As the Deployment looks through a long load: pods not ready, no progress deadline
    (progressDeadlineSeconds is set so that it never fires)."""
    deployment = {
        "status": {
            "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True",
                            "reason": "ReplicaSetUpdated"}],
        }
    }  # fmt: skip
    for minutes in (1, 5, 10, 15, 20):
        starting = {"m-0": report("loading_model", minutes * MINUTE - 30, minutes * MINUTE)}
        assert startup_problem(starting, None) is None
        status = deployment_status(
            previous={}, desired=1, deployment=deployment, problem=None, selector="",
            url="", generation=1, now=T0, starting=starting,
        )  # fmt: skip
        by_type = {c["type"]: c for c in status["conditions"]}
        assert by_type["Degraded"]["status"] == "False"
        assert by_type["Progressing"]["reason"] == "LoadingModel"
        assert by_type["Progressing"]["message"].startswith("1/1 replicas starting: loading_model")
        assert status["phase"] == "LoadingModel"


def test_a_startup_timeout_and_a_dead_server_are_degraded():
    starting = {"m-0": report("loading_model", 50 * MINUTE, 2 * HOUR + 5 * MINUTE)}
    late = startup_problem(starting, 2 * HOUR)
    assert (late.type, late.status, late.reason) == ("Degraded", True, reasons.STARTUP_TIMEOUT)
    assert late.message == (
        "pod m-0 is over its startupTimeout of 2h00m: starting for 2h05m, loading_model for 50m"
    )
    assert startup_problem(starting, 3 * HOUR) is None
    dead = {"m-0": report("dead", 0, 30, "CUDA out of memory"), "m-1": report("profiling", 3)}
    failed = startup_problem(dead, None)
    assert (failed.reason, failed.message) == (
        reasons.SERVER_FAILED, "pod m-0 failed: CUDA out of memory",
    )  # fmt: skip
    # A dead server is no progress.
    assert startup_progress(2, dead).message == "1/2 replicas starting: profiling for 3s"


def test_the_weightiest_pod_trouble_names_the_reason_and_all_are_told():
    gpu = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    problem = pod_problem({
        "m-0": Trouble(UNSCHEDULABLE, gpu),
        "m-1": Trouble(UNSCHEDULABLE, gpu),
        "m-2": Trouble(CRASH_LOOP, "container server OOMKilled with code 137, restarted 3 times"),
    })  # fmt: skip
    assert problem.reason == reasons.CRASH_LOOP_BACK_OFF
    assert problem.message == (
        "pod m-2 keeps failing: container server OOMKilled with code 137, restarted 3 times; "
        f"pods m-0, m-1 cannot be scheduled: {gpu}"
    )
    assert pod_problem({"m-0": Trouble(UNSCHEDULABLE, gpu)}).reason == reasons.UNSCHEDULABLE
    pull = pod_problem({"m-0": Trouble(IMAGE_PULL, "x"), "m-1": Trouble(CRASH_LOOP, "y")})
    assert pull.reason == reasons.IMAGE_PULL_BACK_OFF
    secret = pod_problem({"m-0": Trouble(CONFIG_ERROR, 'secret "s" not found'),
                          "m-1": Trouble(IMAGE_PULL, "x")})  # fmt: skip
    assert secret.reason == reasons.SECRET_NOT_FOUND
    assert pod_problem({}) is None


@pytest.mark.parametrize(
    ("desired", "ready", "updated", "problem", "starting", "phase"),
    [
        (1, 0, 0, None, {}, "Pending"),
        (1, 0, 1, None, {"m-0": None}, "Starting"),
        (2, 0, 2, None, {"m-0": report("profiling", 1), "m-1": report("importing", 9)},
         "Importing"),
        (1, 0, 1, None, {"m-0": report("starting_api", 1)}, "StartingAPI"),
        (1, 0, 1, None, {"m-0": report("some_new_phase", 1)}, "Starting"),
        (3, 2, 3, None, {}, "RollingOut"),
        (3, 3, 3, None, {}, "Ready"),
        (0, 0, 0, None, {}, "ScaledToZero"),
        (1, 0, 1, "x", {"m-0": report("loading_model", 1)}, "Degraded"),
    ],
)  # fmt: skip
def test_the_phase_column(desired, ready, updated, problem, starting, phase):
    deployment = {"status": {"readyReplicas": ready, "updatedReplicas": updated}}
    degraded = None if problem is None else Condition("Degraded", True, "X", problem)
    conditions = deployment_conditions(
        desired, deployment, degraded, startup_progress(desired, starting)
    )
    assert deployment_phase(desired, conditions, starting) == phase


def test_a_server_that_is_ready_sleeping_or_draining_is_not_starting():
    """Its container can be not ready for other reasons (a slow readiness probe, a sidecar):
    hours of uptime must not read as a start over its startupTimeout."""
    from vllm_operator.model.status import still_starting

    assert still_starting(None)
    for phase in ("starting", "importing", "loading_model", "profiling", "warming_up",
                  "starting_api", "dead"):  # fmt: skip
        assert still_starting(report(phase, 1)), phase
    for phase in ("ready", "sleeping", "draining", "something_new"):
        assert not still_starting(report(phase, 0, 3 * HOUR)), phase
