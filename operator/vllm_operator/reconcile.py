"""Level-based reconciliation of a VLLMDeployment: read, build, apply, prune, write status.

Called for every event that may change the outcome (the CR itself, its Deployment, a timer);
it computes the whole desired state each time, so running it twice changes nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import kopf
from kubernetes.utils import parse_quantity

from . import GROUP, MANAGER, reasons
from .adapters import AdapterReconciler
from .builders import build_all, selector_labels, service_url
from .coalesce import KeyedRuns
from .k8s import ApiError, Kube
from .metrics import APPLIES, reconcile_timer
from .report import report_status
from .servers import Servers
from .spec import DeploymentSpec, Images, InvalidSpec, parse_deployment
from .status import Condition, deployment_status

log = logging.getLogger(__name__)

# Kinds the operator creates and removes again when the spec stops wanting them. The model
# cache claim is left out on purpose: turning the cache off must not delete downloaded models
# (it goes with the VLLMDeployment, through its owner reference).
APPLIED = f"{GROUP}/applied"  # annotation: digest of the object as last applied
PRUNABLE = ("Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PodMonitor")
MONITORING = ("ServiceMonitor", "PodMonitor")


@dataclass(frozen=True)
class OperatorConfig:
    images: Images
    namespace: str  # where the operator runs (its pods are let through NetworkPolicies)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Where the API server rewrites quantities into their canonical form (2 -> "2", "0.5" -> "500m",
# "1024Mi" -> "1Gi"): compared by value there, or every reconcile would see drift and apply.
QUANTITY_KEYS = frozenset({"resources", "sizeLimit"})


def drifted(wanted: Any, actual: Any, *, quantities: bool = False) -> bool:
    """Whether `actual` lacks something of `wanted`. The API server adds defaults (also inside
    list items), so `actual` may hold more; lists must match item by item."""
    if isinstance(wanted, Mapping):
        return not isinstance(actual, Mapping) or any(
            k not in actual or drifted(v, actual[k], quantities=quantities or k in QUANTITY_KEYS)
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            not isinstance(actual, list)
            or len(wanted) != len(actual)
            or any(
                drifted(w, a, quantities=quantities) for w, a in zip(wanted, actual, strict=True)
            )
        )
    if wanted != actual and quantities and (value := _quantity(wanted)) is not None:
        return value != _quantity(actual)
    return wanted != actual


def _quantity(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None


def with_digest(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` annotated with a digest of itself: a change of the wanted object, removals
    included (which a comparison with the live object cannot see), changes the digest."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj["metadata"]
    return {
        **obj,
        "metadata": {**meta, "annotations": {**meta.get("annotations", {}), APPLIED: digest}},
    }


async def apply_drifted(kube: Kube, wanted: list[dict[str, Any]]) -> list[str]:
    """Apply the objects that are missing, that we now want differently (the digest), or that
    someone changed (a field of ours differs); returns what was applied. An unchanged object
    costs a read, not a write (and no watch event echoing back to us)."""
    applied = []
    for obj in map(with_digest, wanted):
        meta = obj["metadata"]
        actual = await kube.get_or_none(obj["kind"], meta["namespace"], meta["name"])
        if actual is None or drifted({k: v for k, v in obj.items() if k != "apiVersion"}, actual):
            await kube.apply(obj)
            APPLIES.labels(obj["kind"]).inc()
            applied.append(f"{obj['kind']}/{meta['name']}")
    return applied


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


async def missing_secrets(kube: Kube, spec: DeploymentSpec) -> list[str]:
    missing = []
    for ref in spec.secrets:
        secret = await kube.get_or_none("Secret", spec.namespace, ref.name)
        if secret is None:
            missing.append(f"Secret {ref.name!r} not found")
        elif ref.key not in (secret.get("data") or {}):
            missing.append(f"Secret {ref.name!r} has no key {ref.key!r}")
    return missing


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


class Reconciler:
    """The operator's state for its life: the API client, the configuration, and the runs per
    object (`KeyedRuns`: the CR's handlers, its children's events and the drift loop may fire
    together; one reconcile per object runs at a time, and LoRA reconciles are shared)."""

    def __init__(self, kube: Kube, config: OperatorConfig, servers: Servers) -> None:
        self.kube = kube
        self.config = config
        self.servers = servers
        self.lora = AdapterReconciler(kube, servers, config.images, now)
        self._runs = KeyedRuns()

    async def close(self) -> None:
        await self.kube.close()
        await self.servers.close()

    async def adapters(
        self, namespace: str, deployment: str, *, adapter: str | None = None, retry: int = 0
    ) -> None:
        """Make the deployment's pods hold their LoRA adapters (see `adapters`). Raises
        kopf.TemporaryError, with backoff, while `adapter` (a LoraAdapter name) has problems."""

        async def run() -> dict[str, list[str]]:
            async with reconcile_timer("LoraAdapters"):
                return await self.lora.reconcile(namespace, deployment)

        problems = await self._runs.shared((namespace, "lora", deployment), run)
        if adapter is not None and problems.get(adapter):
            raise kopf.TemporaryError("; ".join(problems[adapter]), delay=backoff(retry))

    async def deployment(
        self, namespace: str, name: str, *, retry: int = 0, prune: bool = True
    ) -> None:
        """Bring the cluster to what the VLLMDeployment asks for and write its status.
        Raises kopf.PermanentError for a spec that cannot work, kopf.TemporaryError (with a
        delay growing with `retry`) where waiting helps; both after the status and an event
        say why. `prune=False` skips looking for objects the spec no longer wants (only a spec
        change can make one unwanted), for reconciles caused by a child's event."""
        # Read it under the lock: a reconcile that just ran may have changed the status, and
        # conditions (and their events) must build on the latest one.
        async with self._runs.locked((namespace, name)), reconcile_timer("VLLMDeployment"):
            body = await self.kube.get_or_none("VLLMDeployment", namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            await _reconcile(self.kube, body, self.config, retry, prune)


def backoff(retry: int) -> float:
    """Seconds before retry number `retry + 1`: 5, 10, 20, ... capped at 5 minutes."""
    return float(min(300, 5 * 2**retry))


async def _reconcile(
    kube: Kube, body: Mapping[str, Any], config: OperatorConfig, retry: int, prune_children: bool
):
    meta = body["metadata"]
    try:
        spec = parse_deployment(body, config.images)
    except (InvalidSpec, KeyError, TypeError) as e:
        message = f"invalid spec: {e}"
        await _write_status(
            kube, body, None, Condition("Degraded", True, reasons.INVALID_SPEC, message)
        )
        raise kopf.PermanentError(message) from e

    problem = None
    if missing := await missing_secrets(kube, spec):
        problem = Condition("Degraded", True, reasons.SECRET_NOT_FOUND, "; ".join(missing))
    else:
        wanted = build_all(
            spec,
            monitoring_available=await kube.serves("ServiceMonitor"),
            operator_namespace=config.namespace,
        )
        try:
            applied = await apply_drifted(kube, wanted)
            removed = await prune(kube, spec, wanted) if prune_children else []
            if applied or removed:
                log.info(
                    "reconciled %s: applied %s, pruned %s",
                    meta["name"], applied or "nothing", removed or "nothing",
                )  # fmt: skip
        except ApiError as e:
            problem = Condition("Degraded", True, reasons.APPLY_FAILED, str(e))

    status = await _write_status(kube, body, spec, problem)
    if problem is not None:
        raise kopf.TemporaryError(problem.message, delay=backoff(retry))
    return status


async def _write_status(
    kube: Kube, body: Mapping[str, Any], spec: DeploymentSpec | None, problem: Condition | None
) -> dict[str, Any]:
    meta = body["metadata"]
    previous = body.get("status") or {}
    name, namespace = meta["name"], meta["namespace"]
    deployment = await kube.get_or_none("Deployment", namespace, name) if spec else None
    desired = spec.replicas if spec else (body.get("spec") or {}).get("replicas", 0)
    status = deployment_status(
        previous=previous,
        desired=desired,
        deployment=deployment,
        problem=problem,
        selector=",".join(f"{k}={v}" for k, v in selector_labels(name).items()),
        url=service_url(spec) if spec else "",
        generation=meta.get("generation"),
        now=now(),
    )
    await report_status(kube, "VLLMDeployment", body, status)
    return status
