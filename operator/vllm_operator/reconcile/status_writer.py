"""Writing what a reconcile found: the status subresource, and an Event per condition that
flipped. The one writer of status for both kinds."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kopf

from ..clients.kube import Kube
from ..model.status import transitions


def now() -> str:
    """The wall clock, as conditions and status entries carry it (the pure layer has none)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def write_status(kube: Kube, kind: str, body: Mapping[str, Any], status: dict) -> None:
    """Write `status` if it differs from the object's, and post an Event for each condition
    that flipped (Warning when it went bad: Degraded=True, any other type False)."""
    meta, previous = body["metadata"], body.get("status") or {}
    if status != {k: previous.get(k) for k in status}:
        await kube.patch_status(kind, meta["namespace"], meta["name"], status)
    for cond in transitions(previous.get("conditions") or [], status["conditions"]):
        healthy = cond["status"] == ("False" if cond["type"] == "Degraded" else "True")
        kopf.event(
            dict(body),
            type="Normal" if healthy else "Warning",
            reason=cond["reason"],
            message=f"{cond['type']}={cond['status']}: {cond['message']}".rstrip(": "),
        )
