"""Kopf handlers: decorators only, each calling one function (`lifecycle` starts and stops the
operator; `Reconciler` does the work)."""

from __future__ import annotations

from typing import Any

import kopf

from . import GROUP, MANAGER, VERSION, lifecycle
from .clients.cache import CHILDREN, COMPLETE, SETS, WATCHED, index_keys
from .clients.kube import KINDS

VLLMD = (GROUP, VERSION, "vllmdeployments")
LORA = (GROUP, VERSION, "loraadapters")
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}


INDEX_PREFIX = "cache-"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # Kopf hands every handler its indices by id, empty until the watch streams fill them.
    indices = {
        key.removeprefix(INDEX_PREFIX): index
        for key, index in kwargs.items()
        if key.startswith(INDEX_PREFIX)
    }
    await lifecycle.start(settings, memo, indices)


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


def _watch(kind: str) -> None:
    """Kopf's index of `kind` (the operator's cache, see `clients.cache`), and its events:
    what Kopf saw catches up with what we wrote, and a change of a child that we did not make
    (an edit, a deletion, a rollout's progress) reconciles its VLLMDeployment."""
    resource = KINDS[kind]
    group, _, version = resource.api_version.rpartition("/")
    labels = None if kind in COMPLETE else MANAGED

    def index(body: kopf.Body, **_: Any) -> dict:
        return index_keys(kind, body)

    kopf.index(group, version, resource.plural, id=f"{INDEX_PREFIX}{kind}", labels=labels)(index)
    # The custom resources' own handlers react to their changes: their events only feed the cache.
    event_handler = {
        "Pod": _pod_event,
        **dict.fromkeys(SETS, _set_event),
        **dict.fromkeys(COMPLETE, None),
    }.get(kind, _child_event)

    async def event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        # Kopf has indexed it: the cache catches up. A child as we wrote it is nothing new.
        echo = memo.reconciler.observed(kind, body)
        if event_handler is not None and not (echo and kind in CHILDREN):
            await event_handler(kind, body, type, memo)

    # No label filter here: the watch is by our label already (`lifecycle.OWN_CHILDREN`), and a
    # child stripped of it comes as DELETED, without the label, yet must reconcile its owner.
    kopf.on.event(group, version, resource.plural, id=f"event-{kind}")(event)


async def _child_event(kind: str, body: kopf.Body, type: str | None, memo: kopf.Memo) -> None:
    await memo.reconciler.child_changed(kind, body, type)


async def _pod_event(kind: str, body: kopf.Body, type: str | None, memo: kopf.Memo) -> None:
    await memo.reconciler.pod_changed(body, type)


async def _set_event(kind: str, body: kopf.Body, type: str | None, memo: kopf.Memo) -> None:
    await memo.reconciler.set_changed(body, type)


for _kind in WATCHED:
    _watch(_kind)


@kopf.on.resume(*LORA)
@kopf.on.create(*LORA)
@kopf.on.update(*LORA)
async def lora_adapter_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await memo.reconciler.adapter_changed(body, retry=retry)


@kopf.on.delete(*LORA)
async def lora_adapter_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    # Being deleted, it is unloaded everywhere before the finalizer goes.
    await memo.reconciler.adapter_changed(body, retry=retry)
