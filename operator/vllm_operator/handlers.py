"""Kopf handlers: decorators only; the work is in `reconcile`."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import kopf

from . import GROUP, MANAGER, VERSION
from .k8s import Kube
from .reconcile import OperatorConfig, reconcile_deployment
from .spec import Images

VLLMD = (GROUP, VERSION, "vllmdeployments")
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
DRIFT_CHECK_SECONDS = 60.0

# Set at startup: one API client and one configuration for the operator's life.
_kube: Kube | None = None
_config: OperatorConfig | None = None


def kube() -> Kube:
    assert _kube is not None, "the operator has not started"
    return _kube


def config() -> OperatorConfig:
    assert _config is not None, "the operator has not started"
    return _config


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _kube, _config
    # Kopf's bookkeeping lives in annotations with our prefix; status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # only our own events, and Kopf's warnings
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60, 120]  # backoff, capped
    _kube = Kube.connect()
    _config = OperatorConfig(
        images=Images(
            gpu=os.environ.get("VLLM_SERVER_IMAGE_GPU", "ghcr.io/vllm-k8s/vllm-server:0.1.0"),
            cpu=os.environ.get("VLLM_SERVER_IMAGE_CPU", "ghcr.io/vllm-k8s/vllm-server:0.1.0-cpu"),
        ),
        namespace=os.environ.get("POD_NAMESPACE", "vllm-system"),
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _kube is not None:
        await _kube.close()


@kopf.on.resume(*VLLMD)
@kopf.on.create(*VLLMD)
@kopf.on.update(*VLLMD)
async def vllm_deployment_changed(body: kopf.Body, **_: Any) -> dict[str, Any]:
    await reconcile_deployment(kube(), body, config())
    return {}  # nothing for Kopf to store: the status is written by the reconciler


@kopf.timer(*VLLMD, interval=DRIFT_CHECK_SECONDS, initial_delay=DRIFT_CHECK_SECONDS, idle=30)
async def vllm_deployment_drift(body: kopf.Body, **_: Any) -> None:
    """Objects deleted or edited behind our back come back within a minute."""
    await reconcile_deployment(kube(), body, config())


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def owned_deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A Deployment of ours changed (pods became ready, a rollout progressed, someone edited or
    deleted it): reconcile its VLLMDeployment, which refreshes the status and repairs drift."""
    owner = next(
        (
            r
            for r in body.metadata.get("ownerReferences") or []
            if r.get("kind") == "VLLMDeployment"
        ),
        None,
    )
    if owner is None or type is None:
        return
    cr = await kube().get_or_none("VLLMDeployment", body.metadata.namespace, owner["name"])
    if cr is None or (cr.get("metadata") or {}).get("deletionTimestamp"):
        return
    # Problems are already in the status and events; the CR's own handlers retry.
    with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
        await reconcile_deployment(kube(), cr, config())
