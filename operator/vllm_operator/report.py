"""Writing what the reconcilers found: the status subresource and Events for transitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from .k8s import Kube
from .status import transitions


async def report_status(kube: Kube, kind: str, body: Mapping[str, Any], status: dict) -> None:
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
