"""Kopf handlers: decorators only; the work is in `reconcile`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf

from . import GROUP, MANAGER, VERSION, metrics, peering
from .builders import ADAPTERS_LOADED, DEPLOYMENT_LABEL
from .k8s import ApiError, Kube
from .reconcile import OperatorConfig, Reconciler
from .servers import Servers
from .spec import Images

VLLMD = (GROUP, VERSION, "vllmdeployments")
LORA = (GROUP, VERSION, "loraadapters")
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
DRIFT_CHECK_SECONDS_ENV = "VLLM_OPERATOR_DRIFT_CHECK_SECONDS"  # default 60
LEADERSHIP_CHECK_SECONDS = 5.0


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's bookkeeping lives in annotations with our prefix; status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # only our own events, and Kopf's warnings
    # Quiet by default: not a line per handler call (Kopf logs each at INFO); what the
    # reconciler changed, Kopf's warnings and errors stay. `--verbose` shows everything.
    objects = logging.getLogger("kopf.objects")
    if not objects.isEnabledFor(logging.DEBUG):
        objects.setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    # On SIGTERM, reconciles in flight get this long to finish and write their status (Kopf's
    # default is 2 s); well inside the pod's 30 s grace period.
    settings.queueing.exit_timeout = 10.0
    config = OperatorConfig(
        images=Images(
            gpu=os.environ.get("VLLM_SERVER_IMAGE_GPU", "ghcr.io/vllm-k8s/vllm-server:0.1.0"),
            cpu=os.environ.get("VLLM_SERVER_IMAGE_CPU", "ghcr.io/vllm-k8s/vllm-server:0.1.0-cpu"),
        ),
        namespace=os.environ.get("POD_NAMESPACE", "vllm-system"),
    )
    # Watch only our own children (server-side), not every pod of the cluster.
    for resource in ("v1/pods", "v1/services", "apps/v1/deployments"):
        settings.watching.label_selectors[resource] = f"app.kubernetes.io/managed-by={MANAGER}"
    peering.configure(settings)
    if (port := metrics.serve_from_env()) is not None:
        logging.getLogger(__name__).info("metrics on port %d", port)
    metrics.LEADER.set(1 if settings.peering.standalone else 0)
    memo.reconciler = Reconciler(Kube.connect(), config, Servers())
    interval = float(os.environ.get(DRIFT_CHECK_SECONDS_ENV) or 60)
    memo.drift = asyncio.create_task(drift_loop(memo.reconciler, settings, interval))
    memo.leadership = asyncio.create_task(leadership_loop(memo.reconciler, settings))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.drift.cancel()
    memo.leadership.cancel()
    await memo.reconciler.close()


@kopf.on.resume(*VLLMD)
@kopf.on.create(*VLLMD)
@kopf.on.update(*VLLMD)
async def vllm_deployment_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    # Returns nothing: Kopf would store a result in the status, which is the reconciler's.
    await memo.reconciler.deployment(body.metadata.namespace, body.metadata.name, retry=retry)
    await _adapters_quietly(memo, body.metadata.namespace, body.metadata.name)


async def drift_loop(
    reconciler: Reconciler, settings: kopf.OperatorSettings, interval: float
) -> None:
    """Every `interval` (a minute), every VLLMDeployment: objects deleted or edited behind our
    back come back, and so do adapters a server lost without the operator seeing it (checked
    against each server's /v1/models). A loop of our own, not a Kopf timer: timers put Kopf's
    finalizer on every object, and a VLLMDeployment then outlives an uninstalled operator. With
    peering, only the leading replica checks."""
    while True:
        await asyncio.sleep(interval)
        try:
            if not await _leads(reconciler, settings):
                continue
            for cr in await reconciler.kube.list_all("VLLMDeployment"):
                meta = cr["metadata"]
                with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
                    await reconciler.deployment(meta["namespace"], meta["name"])
                await reconciler.adapters(meta["namespace"], meta["name"])
        except Exception:  # the next round retries; a drift check never stops the operator
            logging.getLogger(__name__).exception("drift check failed")


async def leadership_loop(reconciler: Reconciler, settings: kopf.OperatorSettings) -> None:
    """Keeps `vllm_operator_leader` current (a failover shows within seconds, not at the next
    drift check)."""
    while not settings.peering.standalone:
        with contextlib.suppress(ApiError):
            await _leads(reconciler, settings)
        await asyncio.sleep(LEADERSHIP_CHECK_SECONDS)


async def _leads(reconciler: Reconciler, settings: kopf.OperatorSettings) -> bool:
    if settings.peering.standalone:
        return True
    record = await reconciler.kube.get_or_none("ClusterKopfPeering", "", settings.peering.name)
    leads = peering.leads(record, peering.own_identity(), settings.peering.priority)
    metrics.LEADER.set(int(leads))
    return leads


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def owned_deployment_event(
    body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A Deployment of ours changed (pods became ready, a rollout progressed, someone edited or
    deleted it): reconcile its VLLMDeployment, which refreshes the status and repairs drift."""
    await _reconcile_owner(body, type, memo)


@kopf.on.event("v1", "services", labels=MANAGED)
async def owned_service_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A Service of ours was deleted: put it back at once (edits wait for the drift timer)."""
    if type == "DELETED":
        await _reconcile_owner(body, type, memo)


@kopf.on.event("v1", "pods", labels=MANAGED)
async def owned_pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A pod of a LoRA-serving deployment appeared, restarted, became ready or went away: its
    adapters (and its readiness gate, which keeps traffic off until they are loaded) follow."""
    if type is None:
        return  # the initial listing: the resume handlers reconcile everything anyway
    gates = [g.get("conditionType") for g in body.spec.get("readinessGates") or []]
    deployment = body.metadata.labels.get(DEPLOYMENT_LABEL)
    if ADAPTERS_LOADED in gates and deployment:
        await _adapters_quietly(memo, body.metadata.namespace, deployment)


@kopf.on.resume(*LORA)
@kopf.on.create(*LORA)
@kopf.on.update(*LORA)
async def lora_adapter_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    deployment = body.spec["deploymentRef"]["name"]
    await memo.reconciler.adapters(
        body.metadata.namespace, deployment, adapter=body.metadata.name, retry=retry
    )


@kopf.on.delete(*LORA)
async def lora_adapter_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Unload it everywhere before the finalizer goes (retried while a server refuses)."""
    deployment = body.spec["deploymentRef"]["name"]
    await memo.reconciler.adapters(
        body.metadata.namespace, deployment, adapter=body.metadata.name, retry=retry
    )


async def _adapters_quietly(memo: kopf.Memo, namespace: str, deployment: str) -> None:
    """Adapter reconciles triggered by other objects: problems land in the LoraAdapters'
    status and events, and their own handlers retry; an API hiccup waits for the next event."""
    try:
        await memo.reconciler.adapters(namespace, deployment)
    except ApiError as e:
        logging.getLogger(__name__).warning(
            "adapter reconcile of %s/%s: %s", namespace, deployment, e
        )


async def _reconcile_owner(body: kopf.Body, type: str | None, memo: kopf.Memo) -> None:
    refs = body.metadata.get("ownerReferences") or []
    owner = next((r for r in refs if r.get("kind") == "VLLMDeployment"), None)
    if owner is None or type is None:
        return
    # Problems are already in the status and events; the CR's own handlers retry.
    with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
        await memo.reconciler.deployment(body.metadata.namespace, owner["name"], prune=False)
