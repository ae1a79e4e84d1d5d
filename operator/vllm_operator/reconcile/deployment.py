"""One VLLMDeployment, level-based: read, build, apply what drifted, prune, write status.

Called for every event that may change the outcome (the CR itself, its Deployment, a Service
deleted, the drift loop); it computes the whole desired state each time, so running it twice
changes nothing.
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
from ..model.spec import DeploymentSpec, InvalidSpec, parse_deployment
from ..model.status import Condition, deployment_status
from .status_writer import now, write_status

log = logging.getLogger(__name__)

# Kinds the operator creates and removes again when the spec stops wanting them. The model
# cache claim is left out on purpose: turning the cache off must not delete downloaded models
# (it goes with the VLLMDeployment, through its owner reference).
PRUNABLE = ("Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PodMonitor")
MONITORING = ("ServiceMonitor", "PodMonitor")


def backoff(retry: int) -> float:
    """Seconds before retry number `retry + 1`: 5, 10, 20, ... capped at 5 minutes."""
    return float(min(300, 5 * 2**retry))


async def reconcile_deployment(
    kube: Kube, body: Mapping[str, Any], settings: Settings, *, retry: int, prune_children: bool
) -> None:
    """Bring the cluster to what `body` asks for and write its status. Raises
    kopf.PermanentError for a spec that cannot work, kopf.TemporaryError (with a delay growing
    with `retry`) where waiting helps; both after the status and an event say why."""
    try:
        spec = parse_deployment(body, settings.images)
    except (InvalidSpec, KeyError, TypeError) as e:
        message = f"invalid spec: {e}"
        problem = Condition("Degraded", True, reasons.INVALID_SPEC, message)
        await _write_status(kube, body, None, problem)
        raise kopf.PermanentError(message) from e

    problem = None
    if missing := await missing_secrets(kube, spec):
        problem = Condition("Degraded", True, reasons.SECRET_NOT_FOUND, "; ".join(missing))
    else:
        wanted = build_all(
            spec,
            monitoring_available=await kube.serves("ServiceMonitor"),
            operator_namespace=settings.namespace,
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
        if conflicts:
            message = "; ".join(conflicts + failures)
            problem = Condition("Degraded", True, reasons.NAME_CONFLICT, message)
        elif failures:
            problem = Condition("Degraded", True, reasons.APPLY_FAILED, "; ".join(failures))

    await _write_status(kube, body, spec, problem)
    if problem is not None:
        raise kopf.TemporaryError(problem.message, delay=backoff(retry))


async def missing_secrets(kube: Kube, spec: DeploymentSpec) -> list[str]:
    missing = []
    for ref in spec.secrets:
        secret = await kube.get_or_none("Secret", spec.namespace, ref.name)
        if secret is None:
            missing.append(f"Secret {ref.name!r} not found")
        elif ref.key not in (secret.get("data") or {}):
            missing.append(f"Secret {ref.name!r} has no key {ref.key!r}")
    return missing


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
    kube: Kube, body: Mapping[str, Any], spec: DeploymentSpec | None, problem: Condition | None
) -> None:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    deployment = await kube.get_or_none("Deployment", namespace, name) if spec else None
    if spec and deployment and not owned_by(deployment, spec.uid):
        deployment = None  # someone else's, of the same name: its replicas are not ours
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
