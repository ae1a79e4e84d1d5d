"""More than one operator replica: Kopf's peering as leader election.

Every replica records itself in one ClusterKopfPeering object (the chart creates it) with its
priority; Kopf pauses the handlers of every replica but the one with the highest priority, and
resumes the next one when that one stops (at once) or dies (after its record's lifetime).

Kopf pauses its own watch streams only; the operator's drift loop asks `leads` before each round
so a standby replica writes nothing either.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import kopf
from kopf._core.engines.peering import Peer  # Kopf's own record parsing (kopf pinned)

LIFETIME_SECONDS = 30  # a killed leader's record expires after this; Kopf's default is 60
POD_ID_ENV = "POD_ID"  # Kopf's identity of this replica; the chart sets it to the pod's name


def configure(settings: kopf.OperatorSettings) -> None:
    """Peering settings for `kopf run --peering=NAME`: without `--priority`, a random one, so
    that two replicas never tie (on a tie Kopf pauses them all)."""
    if settings.peering.standalone:
        return
    if not settings.peering.priority:
        settings.peering.priority = random.SystemRandom().randint(1, 2**31 - 1)
    settings.peering.lifetime = LIFETIME_SECONDS
    settings.peering.stealth = True  # no log line per keep-alive


def own_identity() -> str | None:
    return os.environ.get(POD_ID_ENV)


def leads(peering: Mapping[str, Any] | None, identity: str | None, priority: int) -> bool:
    """Whether Kopf lets this replica work, judged as Kopf does: no other live peer has the same
    priority or a higher one. Without a peering object Kopf pauses nobody."""
    records = (peering or {}).get("status") or {}
    peers = [Peer(identity=name, **record) for name, record in records.items()]
    return not any(
        p.priority >= priority for p in peers if not p.is_dead and p.identity != identity
    )
