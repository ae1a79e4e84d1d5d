"""Starting and stopping the operator: Kopf's settings (all in one place), the settings read
from the environment, the clients, the metrics endpoint and the operator's own loops."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from . import GROUP, MANAGER, metrics
from .clients.kube import Kube
from .clients.vllm_admin import VLLMAdminClient
from .config import Settings
from .reconcile import leadership
from .reconcile.background import drift_loop, leadership_loop
from .reconcile.leadership import Leadership
from .reconcile.reconciler import Reconciler

log = logging.getLogger(__name__)
# Kopf watches only our own children (a server-side label selector), not every pod of the cluster.
OWN_CHILDREN = ("v1/pods", "v1/services", "apps/v1/deployments")


def configure_kopf(settings: kopf.OperatorSettings) -> None:
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
    for resource in OWN_CHILDREN:
        settings.watching.label_selectors[resource] = f"app.kubernetes.io/managed-by={MANAGER}"
    leadership.configure(settings)


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo) -> None:
    """Everything the handlers need, in `memo`: the reconciler, and the loops beside Kopf's."""
    configure_kopf(settings)
    try:
        config = Settings.from_env()
    except ValueError as e:
        raise kopf.PermanentError(str(e)) from e  # Kopf stops: a bad setting, named
    if config.metrics_port is not None and metrics.serve(config.metrics_port):
        log.info("metrics on port %d", config.metrics_port)
    kube = Kube.connect()
    memo.leadership = Leadership(kube, settings.peering, config.pod_id)
    metrics.LEADER.set(1 if memo.leadership.standalone else 0)
    memo.reconciler = Reconciler(kube, VLLMAdminClient(), config)
    memo.loops = [
        asyncio.create_task(
            drift_loop(memo.reconciler, memo.leadership, config.drift_check_seconds)
        ),
        asyncio.create_task(leadership_loop(memo.leadership)),
    ]


async def stop(memo: kopf.Memo, **_: Any) -> None:
    for loop in memo.loops:
        loop.cancel()
    await memo.reconciler.close()
