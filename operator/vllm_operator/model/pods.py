"""What the operator reads off its pods: where to reach the server, whether it runs, and
whether the kubelet can start it at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .builders import ADMIN_PORT_NAME
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


def config_errors(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Pod name -> the kubelet's message, for the pods it cannot start from their
    configuration."""
    found = {pod["metadata"]["name"]: config_error(pod) for pod in pods}
    return {name: message for name, message in found.items() if message is not None}


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
