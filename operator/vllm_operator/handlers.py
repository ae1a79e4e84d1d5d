"""Kopf handlers: decorators only, each calling one function (`lifecycle` starts and stops the
operator; `Reconciler` does the work)."""

from __future__ import annotations

from typing import Any

import kopf

from . import GROUP, MANAGER, VERSION, lifecycle

VLLMD = (GROUP, VERSION, "vllmdeployments")
LORA = (GROUP, VERSION, "loraadapters")
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    await lifecycle.start(settings, memo)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await lifecycle.stop(memo)


@kopf.on.resume(*VLLMD)
@kopf.on.create(*VLLMD)
@kopf.on.update(*VLLMD)
async def vllm_deployment_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    # Returns nothing: Kopf would store a result in the status, which is the reconciler's.
    await memo.reconciler.deployment_changed(
        body.metadata.namespace, body.metadata.name, retry=retry
    )


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def owned_deployment_event(
    body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    await memo.reconciler.child_changed(body, type)


@kopf.on.event("leaderworkerset.x-k8s.io", "v1", "leaderworkersets", labels=MANAGED)
async def owned_leader_worker_set_event(
    body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    # Served only where LeaderWorkerSet's CRD is installed (Kopf skips it elsewhere).
    await memo.reconciler.child_changed(body, type)


@kopf.on.event("v1", "services", labels=MANAGED)
async def owned_service_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.service_changed(body, type)


@kopf.on.event("v1", "pods", labels=MANAGED)
async def owned_pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.pod_changed(body, type)


@kopf.on.resume(*LORA)
@kopf.on.create(*LORA)
@kopf.on.update(*LORA)
async def lora_adapter_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await memo.reconciler.adapter_changed(body, retry=retry)


@kopf.on.delete(*LORA)
async def lora_adapter_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    # Being deleted, it is unloaded everywhere before the finalizer goes.
    await memo.reconciler.adapter_changed(body, retry=retry)
