"""More than one operator replica: Kopf's peering as leader election.

Every replica records itself in one ClusterKopfPeering object (the chart creates it) with its
priority; Kopf pauses the handlers of every replica but the one with the highest priority, and
resumes the next one when that one stops (at once) or dies (after its record's lifetime). An
operator serving some namespaces (`--namespace`) records itself in a KopfPeering of that name in
each of them instead (the chart creates those), and Kopf pauses it unless it leads in all.

Kopf pauses its own watch streams only; the operator's drift loop asks `Leadership.check`
before each round so a standby replica writes nothing either.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from kopf._core.engines.peering import Peer  # Kopf's own record parsing (kopf pinned)

from ..clients.kube import Kube
from ..metrics import LEADER

LIFETIME_SECONDS = 30  # a killed leader's record expires after this; Kopf's default is 60


def configure(settings: kopf.OperatorSettings) -> None:
    """Peering settings for `kopf run --peering=NAME`: without `--priority`, a random one, so
    that two replicas never tie (on a tie Kopf pauses them all)."""
    if settings.peering.standalone:
        return
    if not settings.peering.priority:
        settings.peering.priority = random.SystemRandom().randint(1, 2**31 - 1)
    settings.peering.lifetime = LIFETIME_SECONDS
    settings.peering.stealth = True  # no log line per keep-alive


def leads(peering: Mapping[str, Any] | None, identity: str | None, priority: int) -> bool:
    """Whether Kopf lets this replica work, judged as Kopf does: no other live peer has the same
    priority or a higher one. Without a peering object Kopf pauses nobody."""
    records = (peering or {}).get("status") or {}
    peers = [Peer(identity=name, **record) for name, record in records.items()]
    return not any(
        p.priority >= priority for p in peers if not p.is_dead and p.identity != identity
    )


class Leadership:
    """Whether this replica leads, read fresh from the peering objects (check-then-act: the
    drift loop asks right before it works); keeps `vllm_operator_leader` current."""

    def __init__(
        self,
        kube: Kube,
        peering: Any,
        identity: str | None,
        namespaces: Sequence[str] | None = None,
    ) -> None:
        self.kube = kube
        # Kopf's settings.peering: standalone, name, priority, clusterwide (its peering object
        # is a ClusterKopfPeering, else a KopfPeering in each served namespace).
        self.peering = peering
        self.identity = identity
        self.namespaces = namespaces or ()  # the served ones, with namespaced peering

    @property
    def standalone(self) -> bool:
        return bool(self.peering.standalone)

    async def check(self) -> bool:
        if self.standalone:
            LEADER.set(1)
            return True
        name, priority = self.peering.name, self.peering.priority
        if self.peering.clusterwide:
            records = [await self.kube.get_or_none("ClusterKopfPeering", "", name)]
        else:  # Kopf pauses if any namespace's peering has a live peer above it
            records = [
                await self.kube.get_or_none("KopfPeering", ns, name) for ns in self.namespaces
            ]
        leading = all(leads(record, self.identity, priority) for record in records)
        LEADER.set(int(leading))
        return leading
