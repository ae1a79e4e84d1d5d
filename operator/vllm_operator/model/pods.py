"""What the operator reads off its pods: where to reach the server, whether it runs, and
whether the kubelet can start it at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .builders import ADMIN_PORT_NAME, LWS_NAME_LABEL
from .drift import owned_by


def admin_port(pod: Mapping[str, Any], default: int) -> int:
    """The port to manage the pod's server on: its container port named `admin` (the API port
    refuses the LoRA routes there); `default` for pods from before the admin port."""
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == ADMIN_PORT_NAME:
                return int(port["containerPort"])
    return default


def deleting(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def server_url(pod: Mapping[str, Any], port: int) -> str | None:
    """The server's URL on `port`, if the pod runs, has an address and is not going away."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase", "Running") != "Running" or deleting(pod):
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


# The kubelet's reason for a container it cannot create from the pod's configuration: a missing
# Secret or ConfigMap (or key of one), a security context the image cannot meet, ...
CONFIG_ERROR = "CreateContainerConfigError"


def config_error(pod: Mapping[str, Any]) -> str | None:
    """The kubelet's message (e.g. `secret "hf-token" not found`) if it cannot create a
    container of `pod` from its configuration, init containers first; None if it can, or if the
    pod is going away."""
    if deleting(pod):
        return None
    status = pod.get("status") or {}
    containers = [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == CONFIG_ERROR:
            return str(waiting.get("message") or CONFIG_ERROR)
    return None


# What else keeps a pod from serving, as the kubelet and the scheduler say it.
CRASH_LOOP = "CrashLoopBackOff"
IMAGE_PULL = "ImagePullBackOff"
_IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", IMAGE_PULL, "InvalidImageName", "ErrImageNeverPull"}
)
UNSCHEDULABLE = "Unschedulable"
# A pod of a multi-node group whose container failed: LeaderWorkerSet recreates the whole group
# at the first restart (RecreateGroupOnPodRestart), so no crash loop ever shows on a pod.
GROUP_RESTART = "GroupRestart"


@dataclass(frozen=True)
class Trouble:
    """Why a pod cannot serve, beyond waiting: `kind` is CONFIG_ERROR, IMAGE_PULL, CRASH_LOOP,
    GROUP_RESTART or UNSCHEDULABLE; `message` is the kubelet's or the scheduler's words."""

    kind: str
    message: str


def _crash_loop(container: Mapping[str, Any]) -> str:
    last = (container.get("lastState") or {}).get("terminated") or {}
    restarts = container.get("restartCount", 0)
    exit_code = last.get("exitCode")
    how = last.get("reason") or "exited"
    if exit_code is not None:
        how += f" with code {exit_code}"
    return f"container {container.get('name', '?')} {how}, restarted {restarts} times"


# Restarts after failures that make a container that runs again, not ready yet, still a crash
# loop: between two back-offs the kubelet runs it again (for minutes, while a GPU model loads),
# and the verdict must not flip back and forth with each attempt.
CRASH_RESTARTS = 3


def _crash_looping(container: Mapping[str, Any]) -> bool:
    state = container.get("state") or {}
    if (state.get("waiting") or {}).get("reason") == CRASH_LOOP:
        return True
    last = (container.get("lastState") or {}).get("terminated") or {}
    return (
        "running" in state
        and not container.get("ready")
        and container.get("restartCount", 0) >= CRASH_RESTARTS
        and last.get("exitCode", 0) != 0
    )


def trouble(pod: Mapping[str, Any]) -> Trouble | None:
    """What keeps `pod` from ever serving without a change (a missing Secret, an image that
    cannot be pulled, a server that keeps exiting, no node that fits), or None: it runs, starts,
    or waits its turn (being created, pulled, scheduled), or is going away. A pod of a
    multi-node group whose container failed and restarted is GROUP_RESTART, going away or not
    (its group goes with it)."""
    if LWS_NAME_LABEL in ((pod.get("metadata") or {}).get("labels") or {}):
        for container in (pod.get("status") or {}).get("containerStatuses") or ():
            last = (container.get("lastState") or {}).get("terminated") or {}
            if container.get("restartCount", 0) >= 1 and last.get("exitCode", 0) != 0:
                return Trouble(GROUP_RESTART, _crash_loop(container))
    if deleting(pod):
        return None
    if (message := config_error(pod)) is not None:
        return Trouble(CONFIG_ERROR, message)
    status = pod.get("status") or {}
    containers = [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_REASONS:
            return Trouble(IMAGE_PULL, str(waiting.get("message") or waiting["reason"]))
    for container in containers:
        if _crash_looping(container):
            return Trouble(CRASH_LOOP, _crash_loop(container))
    for condition in status.get("conditions") or ():
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == UNSCHEDULABLE
        ):
            return Trouble(UNSCHEDULABLE, str(condition.get("message") or UNSCHEDULABLE))
    return None


def troubles(pods: Sequence[Mapping[str, Any]]) -> dict[str, Trouble]:
    """Pod name -> its trouble, for the pods that have one."""
    found = {pod["metadata"]["name"]: trouble(pod) for pod in pods}
    return {name: t for name, t in found.items() if t is not None}


@dataclass(frozen=True)
class Download:
    """A starting server's download of an hf:// or s3:// model (`/ready`'s `download`, from
    the download's start on), as far as the status needs it."""

    source: str  # the model URI as the server was given it
    revision: str | None  # the commit an hf:// download resolved to
    bytes: int  # of the model in place so far, what the cache already held included
    total_bytes: int | None  # None until known
    eta_seconds: float | None  # None while the rate or the total is unknown
    complete: bool  # every file in place


@dataclass(frozen=True)
class StartupReport:
    """A starting server's `/ready` body, as far as the status needs it."""

    phase: str  # vllm-ext-serve's: starting, waiting_for_cache, downloading, ..., dead
    phase_seconds: float  # in the current phase
    uptime_seconds: float
    error: str | None = None  # why the server died (phase "dead")
    download: Download | None = None  # an hf:// or s3:// model's, once it started


def all_serving(deployment: Mapping[str, Any] | None, desired: int) -> bool:
    """Whether the Deployment's own counts say every pod it has is of the current template and
    ready (so none is starting or in trouble): its pods need not be listed. The reconcile of
    every model at rest, the drift check's every minute included, then costs no pod reads."""
    status = (deployment or {}).get("status") or {}
    counts = [status.get(k, 0) for k in ("replicas", "updatedReplicas", "readyReplicas")]
    return (
        deployment is not None
        and desired > 0
        and counts == [desired] * 3
        and not status.get("unavailableReplicas")
    )


def starting(pod: Mapping[str, Any]) -> bool:
    """Whether `pod` runs but does not serve yet (its server loads, or died): the pods whose
    `/ready` says how far they are."""
    phase = (pod.get("status") or {}).get("phase")
    return phase == "Running" and not deleting(pod) and not containers_ready(pod)


def containers_ready(pod: Mapping[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def pods_of(
    deployment: Mapping[str, Any] | None,
    replica_sets: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    owner: str,
) -> list[Mapping[str, Any]]:
    """The pods of `deployment` through their owner chain: the Deployment controlled by the
    VLLMDeployment with uid `owner`, its ReplicaSets, their pods. Labels only narrow the lists:
    anyone can label a pod, and such a pod must never get the API key, adapters or a gate."""
    if deployment is None or not owned_by(deployment, owner):
        return []
    controller = (deployment.get("metadata") or {}).get("uid")
    sets = {
        rs["metadata"].get("uid")
        for rs in replica_sets
        if controller and owned_by(rs, controller) and rs["metadata"].get("uid")
    }
    return [p for p in pods if any(owned_by(p, uid) for uid in sets)]


def group_workers(
    leaders: Sequence[Mapping[str, Any]],
    sets: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    """The workers of multi-node groups whose `leaders` are given: LeaderWorkerSet makes each
    leader pod the controller of a StatefulSet of its group's workers."""
    leader_uids = {uid for p in leaders if (uid := (p.get("metadata") or {}).get("uid"))}
    group_sets = {
        uid
        for s in sets
        if (uid := s["metadata"].get("uid")) and any(owned_by(s, leader) for leader in leader_uids)
    }
    return [p for p in pods if any(owned_by(p, uid) for uid in group_sets)]
