"""What the operator reads off its pods (model/pods.py), pure: the port its server takes LoRA
calls on, the URL to reach it at, whether it is going away or serving, and whether it is ours
at all. Written to kill the mutants `make mutate` found alive: the module had no unit tests."""

from __future__ import annotations

import pytest

from vllm_operator.model.builders import build_deployment
from vllm_operator.model.pods import (
    CONFIG_ERROR,
    CRASH_LOOP,
    IMAGE_PULL,
    UNSCHEDULABLE,
    Trouble,
    admin_port,
    all_serving,
    config_error,
    containers_ready,
    deleting,
    pods_of,
    server_url,
    starting,
    trouble,
    troubles,
)
from vllm_operator.model.spec import parse_deployment
from vllm_testkit.samples import IMAGES, vllmd

T0 = "2026-01-01T00:00:00Z"


def pod(ip: str | None = "10.0.0.7", phase: str | None = "Running", *, gone: bool = False) -> dict:
    status = {k: v for k, v in (("podIP", ip), ("phase", phase)) if v is not None}
    return {"metadata": {"name": "p1"} | ({"deletionTimestamp": T0} if gone else {}),
            "status": status}  # fmt: skip


def test_admin_port_is_the_one_the_builder_names_admin():
    spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, "adminPort": 9100}), IMAGES)
    template = build_deployment(spec)["spec"]["template"]
    assert admin_port(template, default=8001) == 9100


def test_admin_port_is_found_in_any_container_and_port_list():
    sidecar = {"name": "proxy", "ports": [{"name": "http", "containerPort": 15001}]}
    server = {"name": "server", "ports": [{"name": "http", "containerPort": 8000},
                                          {"name": "admin", "containerPort": 8101}]}  # fmt: skip
    assert admin_port({"spec": {"containers": [sidecar, server]}}, default=8001) == 8101


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"spec": {}},
        {"spec": {"containers": [{"name": "server"}]}},
        {"spec": {"containers": [{"name": "server", "ports": [{"containerPort": 8000}]}]}},
        {"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000}]}]}},
    ],
    ids=["no-spec", "no-containers", "no-ports", "unnamed-port", "no-admin-port"],
)
def test_pods_from_before_the_admin_port_get_the_default(body: dict):
    assert admin_port(body, default=8001) == 8001


def test_server_url_of_a_running_pod_by_ipv4_and_bracketed_ipv6():
    assert server_url(pod("10.0.0.7"), 8001) == "http://10.0.0.7:8001"
    assert server_url(pod("fd00::7"), 8001) == "http://[fd00::7]:8001"
    # An emulated or older status without a phase counts as running.
    assert server_url(pod("10.0.0.7", phase=None), 8001) == "http://10.0.0.7:8001"


@pytest.mark.parametrize(
    "body",
    [pod(ip=None), pod(ip=""), pod(phase="Pending"), pod(phase="Succeeded"), pod(gone=True),
     {"metadata": {"name": "p1"}}],
    ids=["no-ip", "empty-ip", "pending", "finished", "deleting", "no-status"],
)  # fmt: skip
def test_no_server_url_for_a_pod_without_address_not_running_or_going_away(body: dict):
    assert server_url(body, 8001) is None


def test_deleting_is_the_deletion_timestamp():
    assert deleting(pod(gone=True)) is True
    assert deleting(pod()) is False
    assert deleting({}) is False


@pytest.mark.parametrize(
    ("statuses", "ready"),
    [
        ([{"name": "server", "ready": True}], True),
        ([{"name": "server", "ready": True}, {"name": "proxy", "ready": True}], True),
        ([{"name": "server", "ready": True}, {"name": "proxy", "ready": False}], False),
        ([{"name": "server"}], False),
        ([], False),  # no container status yet: nothing serves
        (None, False),
    ],
)
def test_containers_ready_only_when_every_container_says_so(statuses, ready: bool):
    body = {"status": {} if statuses is None else {"containerStatuses": statuses}}
    assert containers_ready(body) is ready


# --- the owner chain: VLLMDeployment -> Deployment -> ReplicaSet -> pod -------------------------


def owned(kind: str, uid: str | None, *owners: str, controller: bool = True) -> dict:
    refs = [{"uid": o, "controller": controller} for o in owners]
    meta = {"name": f"{kind}-{uid}", "ownerReferences": refs} | ({"uid": uid} if uid else {})
    return {"kind": kind, "metadata": meta}


DEPLOYMENT = owned("Deployment", "d1", "cr1")
SETS = [owned("ReplicaSet", "rs-old", "d1"), owned("ReplicaSet", "rs-new", "d1")]


def test_pods_of_follow_the_controller_chain_through_every_replica_set():
    pods = [owned("Pod", "p1", "rs-old"), owned("Pod", "p2", "rs-new")]
    assert pods_of(DEPLOYMENT, SETS, pods, "cr1") == pods


def test_a_pod_that_only_looks_like_ours_is_not():
    """Labels can be set by anyone: a pod outside the owner chain never gets the API key,
    adapters or a readiness gate."""
    lookalikes = [
        owned("Pod", "bare"),  # our labels, no owner
        owned("Pod", "stray", "rs-theirs"),  # another ReplicaSet's
        owned("Pod", "mere-owner", "rs-new", controller=False),  # an owner, not the controller
        owned("Pod", "direct", "d1"),  # the Deployment never owns pods itself
    ]
    ours = owned("Pod", "p1", "rs-new")
    theirs = [owned("ReplicaSet", "rs-theirs", "d-other")]
    assert pods_of(DEPLOYMENT, SETS + theirs, [*lookalikes, ours], "cr1") == [ours]


@pytest.mark.parametrize(
    ("deployment", "sets"),
    [
        (None, SETS),  # not created yet
        (owned("Deployment", "d1", "cr-other"), SETS),  # someone else's Deployment of that name
        (owned("Deployment", "d1", "cr1", controller=False), SETS),
        (owned("Deployment", None, "cr1"), SETS),  # no uid: nothing can be its child
        (DEPLOYMENT, [owned("ReplicaSet", None, "d1")]),  # a ReplicaSet without a uid
        (DEPLOYMENT, [owned("ReplicaSet", "rs-new", "d-other")]),
    ],
    ids=["no-deployment", "not-ours", "owner-not-controller", "deployment-without-uid",
         "set-without-uid", "set-of-another-deployment"],
)  # fmt: skip
def test_no_pods_without_an_unbroken_chain(deployment, sets):
    assert pods_of(deployment, sets, [owned("Pod", "p1", "rs-new")], "cr1") == []


def waiting(reason: str, message: str | None = None, name: str = "server") -> dict:
    state = {"waiting": {"reason": reason} | ({"message": message} if message else {})}
    return {"name": name, "state": state}


def test_config_error_is_the_kubelets_message_for_a_container_it_cannot_create():
    message = 'secret "hf-token" not found'
    failing = {"metadata": {"name": "p1"},
               "status": {"containerStatuses": [waiting("CreateContainerConfigError", message)]}}  # fmt: skip
    assert config_error(failing) == message
    assert troubles([failing]) == {"p1": Trouble(CONFIG_ERROR, message)}
    unexplained = {"status": {"containerStatuses": [waiting("CreateContainerConfigError")]}}
    assert config_error(unexplained) == "CreateContainerConfigError"
    # Init containers first; any container, not only the first.
    init = waiting("CreateContainerConfigError", 'configmap "c" not found', "init")
    both = {"status": {"initContainerStatuses": [init],
                       "containerStatuses": [waiting("PodInitializing"),
                                             waiting("CreateContainerConfigError", message)]}}  # fmt: skip
    assert config_error(both) == 'configmap "c" not found'
    second = {"status": {"containerStatuses": [{"name": "a", "state": {"running": {}}},
                                               waiting("CreateContainerConfigError", message)]}}  # fmt: skip
    assert config_error(second) == message


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"containerStatuses": []},
        {"containerStatuses": [{"name": "server"}]},
        {"containerStatuses": [{"name": "server", "state": {"running": {}}}]},
        {"containerStatuses": [waiting("ContainerCreating")]},
        {"containerStatuses": [waiting("ImagePullBackOff", "secret x")]},  # not a config error
        {"containerStatuses": [waiting("CrashLoopBackOff")]},
    ],
)
def test_no_config_error_otherwise(status):
    assert config_error({"metadata": {"name": "p1"}, "status": status}) is None
    assert CONFIG_ERROR not in {
        t.kind for t in troubles([{"metadata": {"name": "p1"}, "status": status}]).values()
    }


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"phase": "Pending"},
        {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]},  # not yet
        {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
        {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        {"containerStatuses": [waiting("ContainerCreating")]},  # pulling a 10 GB image: waiting
        {"containerStatuses": [waiting("PodInitializing")]},
        {"containerStatuses": [{"name": "server", "state": {"running": {}}, "restartCount": 4}]},
        {"containerStatuses": [{"name": "server", "state": {"terminated": {"exitCode": 1}}}]},
    ],
)  # fmt: skip
def test_waiting_running_and_restarting_are_no_trouble(status):
    assert trouble({"metadata": {"name": "p1"}, "status": status}) is None


def test_troubles_as_the_kubelet_and_scheduler_report_them():
    pulling = {"status": {"containerStatuses": [waiting("ErrImagePull", 'pull "x:1": not found')]}}
    assert trouble(pulling) == Trouble(IMAGE_PULL, 'pull "x:1": not found')
    for reason in ("ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"):
        assert trouble({"status": {"containerStatuses": [waiting(reason)]}}) == Trouble(
            IMAGE_PULL, reason
        )
    crashing = dict(waiting("CrashLoopBackOff", "back-off 5m0s restarting failed container"))
    crashing |= {
        "restartCount": 7,
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
    }
    assert trouble({"status": {"containerStatuses": [crashing]}}) == Trouble(
        CRASH_LOOP, "container server OOMKilled with code 137, restarted 7 times"
    )
    plain = dict(waiting("CrashLoopBackOff")) | {"restartCount": 2}
    assert trouble({"status": {"containerStatuses": [plain]}}) == Trouble(
        CRASH_LOOP, "container server exited, restarted 2 times"
    )
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message}  # fmt: skip
    pending = {"status": {"phase": "Pending", "conditions": [unschedulable]}}
    assert trouble(pending) == Trouble(UNSCHEDULABLE, message)
    # A config error is named first; the image before a crash loop (in any container).
    both = {"status": {"containerStatuses": [crashing, waiting("ErrImagePull", "x")]}}
    assert trouble(both).kind == IMAGE_PULL
    config = {
        "status": {"containerStatuses": [crashing, waiting("CreateContainerConfigError", "s")]}
    }
    assert trouble(config).kind == CONFIG_ERROR
    # Going away: none.
    assert trouble({"metadata": {"deletionTimestamp": T0}, "status": pending["status"]}) is None


def test_starting_pods_run_without_serving():
    def pod_with(phase: str, ready: bool, gone: bool = False) -> dict:
        meta = {"name": "p"} | ({"deletionTimestamp": T0} if gone else {})
        statuses = [{"name": "server", "ready": ready, "state": {"running": {}}}]
        return {"metadata": meta, "status": {"phase": phase, "containerStatuses": statuses}}

    assert starting(pod_with("Running", ready=False))
    assert not starting(pod_with("Running", ready=True))
    assert not starting(pod_with("Pending", ready=False))
    assert not starting(pod_with("Running", ready=False, gone=True))
    assert starting({"metadata": {"name": "p"}, "status": {"phase": "Running"}})  # no statuses yet


def test_a_pod_going_away_has_no_config_error():
    failing = {"containerStatuses": [waiting("CreateContainerConfigError", "secret x")]}
    gone = {"metadata": {"name": "p1", "deletionTimestamp": T0}, "status": failing}
    assert config_error(gone) is None


def test_a_crash_loop_stays_one_while_the_next_attempt_runs():
    """Between two back-offs the kubelet runs the server again (minutes of loading on a GPU):
    the verdict must not flip to healthy and back with every attempt."""

    def attempt(restarts: int, *, ready: bool = False, exit_code: int = 137) -> dict:
        container = {
            "name": "server", "ready": ready, "restartCount": restarts,
            "state": {"running": {"startedAt": T0}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": exit_code}},
        }  # fmt: skip
        return {"metadata": {"name": "p1"}, "status": {"phase": "Running",
                                                       "containerStatuses": [container]}}  # fmt: skip

    assert trouble(attempt(7)) == Trouble(
        CRASH_LOOP, "container server OOMKilled with code 137, restarted 7 times"
    )
    assert trouble(attempt(3)).kind == CRASH_LOOP
    assert trouble(attempt(2)) is None  # a restart or two: not a loop yet
    assert trouble(attempt(7, ready=True)) is None  # it serves again
    assert trouble(attempt(7, exit_code=0)) is None  # it stopped cleanly (a drain, a rollout)


@pytest.mark.parametrize(
    ("desired", "status", "serving"),
    [
        (2, {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, True),
        (2, {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1}, False),  # one starts
        (2, {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 2}, False),  # an old pod left
        (2, {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 2}, False),  # rolling out
        (
            2,
            {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "unavailableReplicas": 1},
            False,
        ),
        (3, {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, False),  # scaling up
        (0, {}, False),
        (1, {}, False),
    ],
)
def test_a_deployment_at_rest_needs_no_pod_reads(desired, status, serving):
    assert all_serving({"status": status}, desired) is serving
    assert all_serving(None, desired) is False
