"""One VLLMDeployment, level-based: read, build, apply what drifted, prune, write status.

Called for every event that may change the outcome (the CR itself, its Deployment, a Service
deleted, the drift loop); it computes the whole desired state each time, so running it twice
changes nothing. A pod the kubelet cannot start from its configuration (a missing Secret or key:
`CreateContainerConfigError`) refreshes only the status (`refresh_status`).

Secrets are never read: the operator neither checks that referenced Secrets exist nor reads
their values. The pods' own status tells (the kubelet reads them, with the pods' rights).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from .. import MANAGER
from ..clients.kube import ApiError, Kube
from ..config import Settings
from ..metrics import APPLIES
from ..model import reasons
from ..model.builders import build_all, selector_labels, service_url
from ..model.drift import child_action, owned_by, with_digest
from ..model.pods import config_errors, pods_of
from ..model.spec import DeploymentSpec, InvalidSpec, parse_deployment
from ..model.status import (
    Condition,
    deployment_status,
    pod_config_problem,
    refreshable_from_pods,
)
from .status_writer import now, write_status

log = logging.getLogger(__name__)

# Kinds the operator creates and removes again when the spec stops wanting them. The model
# cache claim is left out on purpose: turning the cache off must not delete downloaded models
# (it goes with the VLLMDeployment, through its owner reference).
PRUNABLE = ("Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PodMonitor")
MONITORING = ("ServiceMonitor", "PodMonitor")
# What the last status written of each VLLMDeployment, by (namespace, name), reported of its
# pods: pod name -> the kubelet's message. A pod event that would change none of it costs no API
# call (see `Reconciler.pod_changed`).
Reported = dict[tuple[str, str], dict[str, str]]


def backoff(retry: int) -> float:
    """Seconds before retry number `retry + 1`: 5, 10, 20, ... capped at 5 minutes."""
    return float(min(300, 5 * 2**retry))


async def reconcile_deployment(
    kube: Kube,
    body: Mapping[str, Any],
    settings: Settings,
    *,
    retry: int,
    prune_children: bool,
    reported: Reported | None = None,
) -> None:
    """Bring the cluster to what `body` asks for and write its status (into `reported` too:
    what it says of the pods). Raises kopf.PermanentError for a spec that cannot work,
    kopf.TemporaryError (with a delay growing with `retry`) where waiting helps; both after the
    status and an event say why. Pods that cannot start are in the status only: the kubelet
    retries them, and their events refresh the status."""
    try:
        spec = parse_deployment(body, settings.images)
    except (InvalidSpec, KeyError, TypeError) as e:
        message = f"invalid spec: {e}"
        problem = Condition("Degraded", True, reasons.INVALID_SPEC, message)
        await _write_status(kube, body, None, problem, reported)
        raise kopf.PermanentError(message) from e

    # The children are applied even while pods fail to start: only then do the pods exist.
    wanted = build_all(
        spec,
        monitoring_available=await kube.serves("ServiceMonitor"),
        operator_namespace=settings.namespace,
        admin_public_key=settings.admin_public_key,
    )
    applied, conflicts, failures = await apply_children(kube, spec, wanted)
    removed = []
    if prune_children:
        try:
            removed = await prune(kube, spec, wanted)
        except ApiError as e:
            failures.append(f"pruning: {e}")
    if applied or removed:
        log.info(
            "reconciled %s: applied %s, pruned %s",
            spec.name, applied or "nothing", removed or "nothing",
        )  # fmt: skip
    problem = None
    if conflicts:
        message = "; ".join(conflicts + failures)
        problem = Condition("Degraded", True, reasons.NAME_CONFLICT, message)
    elif failures:
        problem = Condition("Degraded", True, reasons.APPLY_FAILED, "; ".join(failures))

    await _write_status(kube, body, spec, problem, reported)
    if problem is not None:
        raise kopf.TemporaryError(problem.message, delay=backoff(retry))


async def refresh_status(
    kube: Kube, body: Mapping[str, Any], settings: Settings, reported: Reported | None = None
) -> None:
    """The status of `body` from its Deployment and pods, without an apply round (a pod of it
    gained or lost a config error). Left to the next apply round while one is due: a spec not
    reconciled yet, or a problem only an apply round clears (`refreshable_from_pods`)."""
    if not refreshable_from_pods(body):
        return
    try:
        spec = parse_deployment(body, settings.images)
    except (InvalidSpec, KeyError, TypeError):
        return  # its status says so already (the generation was reconciled)
    await _write_status(kube, body, spec, None, reported)


async def apply_children(
    kube: Kube, spec: DeploymentSpec, wanted: list[dict[str, Any]]
) -> tuple[list[str], list[str], list[str]]:
    """Create or apply each child that is missing, that we now want differently (the digest), or
    that someone changed (a field of ours differs); one child's failure does not stop the
    others. Returns what was written, the name conflicts (an object of a child's name that this
    VLLMDeployment does not control: left as it is) and the failures. An unchanged object costs
    a read, not a write (and no watch event echoing back to us)."""
    applied, conflicts, failures = [], [], []
    for obj in map(with_digest, wanted):  # the Deployment comes before what routes to it
        meta = obj["metadata"]
        what = f"{obj['kind']}/{meta['name']}"
        try:
            actual = await kube.get_or_none(obj["kind"], meta["namespace"], meta["name"])
            action = child_action(obj, actual, spec.uid)
            if action == "conflict":
                conflicts.append(f"{what} exists and is not controlled by this VLLMDeployment")
                if obj["kind"] == "Deployment":
                    # Someone else's workload holds the name: no Service (or monitor) of ours
                    # may send this model's clients, and their keys, to it.
                    break
                continue
            if action == "wait":
                failures.append(f"{what} is being deleted; it comes back once it is gone")
                continue
            if action == "create":
                await kube.create(obj)
            elif action == "apply":
                await kube.apply(obj)
            else:
                continue
        except ApiError as e:
            failures.append(f"{what}: {e.message}")
            continue
        APPLIES.labels(obj["kind"]).inc()
        applied.append(what)
    return applied, conflicts, failures


async def prune(kube: Kube, spec: DeploymentSpec, wanted: list[dict[str, Any]]) -> list[str]:
    """Delete objects this VLLMDeployment owns but no longer wants; returns what went."""
    keep = {(o["kind"], o["metadata"]["name"]) for o in wanted}
    labels = {**selector_labels(spec.name), "app.kubernetes.io/managed-by": MANAGER}
    removed = []
    for kind in PRUNABLE:
        if kind in MONITORING and not await kube.serves(kind):
            continue
        for obj in await kube.list(kind, spec.namespace, labels):
            name = obj["metadata"]["name"]
            # The label selector narrows the list; ownership decides (labels can be copied).
            if (kind, name) not in keep and owned_by(obj, spec.uid):
                await kube.delete(kind, spec.namespace, name)
                removed.append(f"{kind}/{name}")
    return removed


async def _write_status(
    kube: Kube,
    body: Mapping[str, Any],
    spec: DeploymentSpec | None,
    problem: Condition | None,
    reported: Reported | None,
) -> None:
    """The status from the Deployment and its pods, with the apply round's `problem` (which
    comes first; else pods the kubelet cannot start from their configuration are Degraded)."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    deployment = await kube.get_or_none("Deployment", namespace, name) if spec else None
    if spec and deployment and not owned_by(deployment, spec.uid):
        deployment = None  # someone else's, of the same name: its replicas are not ours
    errors = await _pod_config_errors(kube, spec, deployment) if spec and not problem else {}
    problem = problem or pod_config_problem(errors)
    desired = spec.replicas if spec else (body.get("spec") or {}).get("replicas", 0)
    status = deployment_status(
        previous=body.get("status") or {},
        desired=desired,
        deployment=deployment,
        problem=problem,
        selector=",".join(f"{k}={v}" for k, v in selector_labels(name).items()),
        url=service_url(spec) if spec else "",
        generation=meta.get("generation"),
        now=now(),
    )
    await write_status(kube, "VLLMDeployment", body, status)
    if reported is not None:
        reported[namespace, name] = errors


async def _pod_config_errors(
    kube: Kube, spec: DeploymentSpec, deployment: Mapping[str, Any] | None
) -> dict[str, str]:
    """The kubelet's messages for the pods of `deployment` (chosen through their owner chain,
    labels only narrow the lists) it cannot start from their configuration."""
    if deployment is None:
        return {}
    labels = selector_labels(spec.name)
    replica_sets = await kube.list("ReplicaSet", spec.namespace, labels)
    pods = await kube.list("Pod", spec.namespace, labels) if replica_sets else []
    return config_errors(pods_of(deployment, replica_sets, pods, spec.uid))
