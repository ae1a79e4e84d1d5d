"""The operator's own loops beside Kopf's handlers: the drift check, the progress of starting
servers and the leader gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..clients.kube import ApiError
from .leadership import Leadership
from .reconciler import Reconciler

log = logging.getLogger(__name__)
LEADERSHIP_CHECK_SECONDS = 5.0


async def drift_loop(reconciler: Reconciler, leadership: Leadership, interval: float) -> None:
    """Every `interval` (a minute), every VLLMDeployment: objects deleted or edited behind our
    back come back, and so do adapters a server lost without the operator seeing it (checked
    against each server's /v1/models). A loop of our own, not a Kopf timer: timers put Kopf's
    finalizer on every object, and a VLLMDeployment then outlives an uninstalled operator. With
    peering, only the leading replica checks."""
    while True:
        await asyncio.sleep(interval)
        try:
            if await leadership.check():
                await reconciler.check_drift()
        except Exception:  # the next round retries; a drift check never stops the operator
            log.exception("drift check failed")


async def progress_loop(reconciler: Reconciler, leadership: Leadership, interval: float) -> None:
    """Every `interval` (15 s), the status of the VLLMDeployments whose replicas are starting:
    their servers' phases (`/ready`), and a startup timeout when one passes. With peering, only
    the leading replica checks."""
    while True:
        await asyncio.sleep(interval)
        try:
            if await leadership.check():
                await reconciler.check_progress()
        except Exception:  # the next round retries
            log.exception("progress check failed")


async def leadership_loop(leadership: Leadership) -> None:
    """Keeps `vllm_operator_leader` current (a failover shows within seconds, not at the next
    drift check)."""
    while not leadership.standalone:
        with contextlib.suppress(ApiError):
            await leadership.check()
        await asyncio.sleep(LEADERSHIP_CHECK_SECONDS)
