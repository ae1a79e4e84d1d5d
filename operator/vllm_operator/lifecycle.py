"""Starting and stopping the operator: Kopf's settings (all in one place), the settings read
from the environment, the clients, the metrics endpoint and the operator's own loops."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import click
import kopf

from . import GROUP, MANAGER, metrics
from .clients.admin_token import AdminKeyError, AdminTokens
from .clients.cache import COMPLETE, WATCHED, CachedKube, ObjectCache
from .clients.kube import KINDS, Kube
from .clients.vllm_admin import VLLMAdminClient
from .config import ADMIN_KEY_FILE_ENV, Settings, SettingsError
from .model import scope
from .reconcile import leadership
from .reconcile.background import drift_loop, leadership_loop, progress_loop
from .reconcile.leadership import Leadership
from .reconcile.reconciler import Reconciler

log = logging.getLogger(__name__)
# Kopf watches only our own children, sets and pods (a server-side label selector), not every
# pod of the cluster.
OWN_CHILDREN = tuple(
    f"{KINDS[kind].api_version}/{KINDS[kind].plural}" for kind in WATCHED if kind not in COMPLETE
)


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
    # After writing its bookkeeping, Kopf waits this long for the watch to show that write
    # before it handles the object as it last saw it (Kopf's default is 5 s). A watch stream
    # lags behind by more than that while the operator works through a thousand new objects
    # at once: half of them were handled twice (a reconcile and a patch more each, in the
    # scale bench). The wait ends at once on the write's own event, and any other event
    # of the object wakes it; only an object whose watch restarted in between waits it out.
    settings.persistence.consistency_timeout = 30.0
    # On SIGTERM, reconciles in flight get this long to finish and write their status (Kopf's
    # default is 2 s); well inside the pod's 30 s grace period.
    settings.queueing.exit_timeout = 10.0
    for resource in OWN_CHILDREN:
        settings.watching.label_selectors[resource] = f"app.kubernetes.io/managed-by={MANAGER}"
    if not settings.peering.clusterwide:
        # Serving the namespaces `--namespace` names (exactly: `served_namespaces`), Kopf
        # neither lists nor watches Namespaces and CRDs: it reads nothing cluster-wide, which
        # the chart's Roles do not grant. CRDs installed after the operator started are not
        # noticed until it restarts (the chart installs them first).
        settings.scanning.disabled = True
    leadership.configure(settings)


def served_namespaces(settings: kopf.OperatorSettings) -> tuple[str, ...] | None:
    """The namespaces Kopf serves, None for all: Kopf's own `--namespace` flags (and its legacy
    $KOPF_RUN_NAMESPACE), read from the context of the `kopf run` command the operator runs in
    (Kopf keeps no copy in its settings, only whether it serves every namespace)."""
    context = click.get_current_context(silent=True)
    flags = list((context.params.get("namespaces") if context else None) or ())
    if os.environ.get("KOPF_RUN_NAMESPACE"):
        flags.append(os.environ["KOPF_RUN_NAMESPACE"])
    try:
        return scope.served_namespaces(flags, clusterwide=settings.peering.clusterwide)
    except ValueError as e:
        raise kopf.PermanentError(str(e)) from e  # Kopf stops, naming the flag


def admin_tokens(config: Settings) -> AdminTokens:
    """The signer of admin calls, with the key the chart mounts; without one, a key of this
    process alone (fine for a try-out: every restart of the operator then changes the servers'
    arguments, so it rolls every model's pods)."""
    if config.admin_key_file is None:
        log.warning(
            "no %s: admin calls are signed with a key of this process; restarting the "
            "operator will restart every model server",
            ADMIN_KEY_FILE_ENV,
        )
        return AdminTokens.generate()
    try:
        return AdminTokens.from_file(config.admin_key_file)
    except AdminKeyError as e:
        raise SettingsError(f"{ADMIN_KEY_FILE_ENV}: {e}") from None


async def start(
    settings: kopf.OperatorSettings, memo: kopf.Memo, indices: dict[str, Any] | None = None
) -> None:
    """Everything the handlers need, in `memo`: the reconciler, and the loops beside Kopf's.
    `indices`: Kopf's index of each watched kind (by kind), which the reconciler reads the
    cluster from (`clients.cache`)."""
    configure_kopf(settings)
    namespaces = served_namespaces(settings)
    try:
        config = Settings.from_env()
        tokens = admin_tokens(config)
    except ValueError as e:
        raise kopf.PermanentError(str(e)) from e  # Kopf stops: a bad setting, named
    config = dataclasses.replace(config, admin_public_key=tokens.public_key)
    if config.metrics_port is not None and metrics.serve(config.metrics_port):
        log.info("metrics on port %d", config.metrics_port)
    kube = Kube.connect()
    if indices:
        kube = CachedKube(kube, ObjectCache(await _watched(kube, indices)))
    memo.leadership = Leadership(kube, settings.peering, config.pod_id, namespaces)
    metrics.LEADER.set(1 if memo.leadership.standalone else 0)
    memo.reconciler = Reconciler(kube, VLLMAdminClient(tokens), config, namespaces=namespaces)
    memo.loops = [
        asyncio.create_task(
            drift_loop(memo.reconciler, memo.leadership, config.drift_check_seconds)
        ),
        asyncio.create_task(
            progress_loop(memo.reconciler, memo.leadership, config.progress_check_seconds)
        ),
        asyncio.create_task(leadership_loop(memo.leadership)),
    ]


async def _watched(kube: Kube, indices: dict[str, Any]) -> dict[str, Any]:
    """The indices of the kinds Kopf watches: those the API server serves as it starts (Kopf
    watches a CRD installed later only after a restart when it serves namespaces, and at once
    clusterwide; the operator reads such a kind from the API server until it restarts)."""
    return {kind: index for kind, index in indices.items() if await kube.serves(kind)}


async def stop(memo: kopf.Memo, **_: Any) -> None:
    for loop in memo.loops:
        loop.cancel()
    await memo.reconciler.close()
