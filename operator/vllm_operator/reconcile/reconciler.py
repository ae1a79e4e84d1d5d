"""`Reconciler`: the operator's state for its life (the API client, the admin client, the
settings, the runs per object) and one method per thing that happens, which the Kopf handlers
and the drift loop call.

The CR's handlers, its children's events and the drift loop may fire together: one reconcile per
object runs at a time (`KeyedRuns.locked`), and LoRA reconciles and status refreshes are shared
by the callers that arrive while one waits (`KeyedRuns.shared`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from ..clients.cache import CachedKube
from ..clients.kube import ApiError, Kube, discovery_as_known
from ..clients.vllm_admin import VLLMAdminClient
from ..config import Settings
from ..model.builders import ADAPTERS_LOADED, DEPLOYMENT_LABEL
from ..model.pods import starting, trouble
from .adapters import AdapterReconciler
from .deployment import PodsSeen, backoff, reconcile_deployment, refresh_status
from .runs import KeyedRuns
from .timing import reconcile_timer

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        admin: VLLMAdminClient,
        settings: Settings,
        *,
        namespaces: Sequence[str] | None = None,
    ) -> None:
        self.kube = kube
        self.admin = admin
        self.settings = settings
        self.namespaces = namespaces  # the ones Kopf serves (`--namespace`); None: all
        self.lora = AdapterReconciler(kube, admin, settings)
        self._runs = KeyedRuns()
        self._seen = PodsSeen()  # what each status says of its pods

    async def close(self) -> None:
        await self.kube.close()
        await self.admin.close()

    # --- what happened --------------------------------------------------------------------

    async def deployment_changed(self, namespace: str, name: str, *, retry: int) -> None:
        """A VLLMDeployment was created, changed, or found at startup: it and its adapters."""
        await self.deployment(namespace, name, retry=retry)
        await self._adapters_quietly(namespace, name)

    async def child_changed(self, kind: str, body: Mapping[str, Any], event: str | None) -> None:
        """A child of a VLLMDeployment changed or went (pods became ready, a rollout
        progressed, someone edited or deleted it): its owner, without pruning (only a spec
        change can make a child unwanted). Problems are already in the status and events; the
        CR's own handlers retry."""
        if event is None:
            return  # the initial listing, which the resume handlers cover
        refs = body["metadata"].get("ownerReferences") or []
        owner = next((r for r in refs if r.get("kind") == "VLLMDeployment"), None)
        if owner is None:
            return
        with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
            await self.deployment(body["metadata"]["namespace"], owner["name"], prune=False)

    def observed(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Kopf has indexed a watch event of `body`: the cache forgets our write of it once
        the index has caught up. Whether it was our own write coming back."""
        return isinstance(self.kube, CachedKube) and self.kube.cache.observed(kind, body)

    async def pod_changed(self, body: Mapping[str, Any], event: str | None) -> None:
        """A pod of ours appeared, changed or went away. If its trouble (`pods.trouble`) is not
        what its VLLMDeployment's status says, or it starts while the status says no replica
        does, the status follows (no apply round; other pod events cost no API call). If the
        deployment serves LoRA, its adapters (and the pod's readiness gate, which keeps traffic
        off until they are loaded) follow. The labels only name the deployment: the status
        counts the pods of its owner chain."""
        if event is None:
            return  # the initial listing: the resume handlers reconcile everything anyway
        meta = body["metadata"]
        deployment = (meta.get("labels") or {}).get(DEPLOYMENT_LABEL)
        if not deployment:
            return
        namespace, key = meta["namespace"], (meta["namespace"], deployment)
        found = None if event == "DELETED" else trouble(body)
        # A pod that starts changes no trouble and no count of the Deployment's: its event
        # alone starts the progress polls (`check_progress`).
        begins = found is None and event != "DELETED" and starting(body)
        seen = self._seen.troubles.get(key, {}).get(meta["name"])
        if seen != found or (begins and key not in self._seen.starting):
            await self._runs.shared(
                (namespace, "status", deployment), lambda: self.status(namespace, deployment)
            )
        gates = [g.get("conditionType") for g in body["spec"].get("readinessGates") or []]
        if ADAPTERS_LOADED in gates:
            await self._adapters_quietly(namespace, deployment)

    async def set_changed(self, body: Mapping[str, Any], event: str | None) -> None:
        """A ReplicaSet or StatefulSet of ours changed: the status of its VLLMDeployment
        follows (pods are found through their sets, whose watch may deliver a new set after
        its pods)."""
        deployment = (body["metadata"].get("labels") or {}).get(DEPLOYMENT_LABEL)
        if event is None or not deployment:
            return
        namespace = body["metadata"]["namespace"]
        await self._runs.shared(
            (namespace, "status", deployment), lambda: self.status(namespace, deployment)
        )

    async def adapter_changed(self, body: Mapping[str, Any], *, retry: int) -> None:
        """A LoraAdapter was created, changed, found at startup or is being deleted (then it
        is unloaded everywhere before its finalizer goes); retried while it has problems."""
        meta = body["metadata"]
        deployment = body["spec"]["deploymentRef"]["name"]
        await self.adapters(meta["namespace"], deployment, adapter=meta["name"], retry=retry)

    async def check_progress(self) -> None:
        """The status of every VLLMDeployment whose replicas were starting at its last status:
        a server loading for an hour sends no event, its `/ready` says how far it is."""
        for namespace, name in sorted(self._seen.starting):
            await self._runs.shared(
                (namespace, "status", name), lambda n=namespace, m=name: self.status(n, m)
            )

    async def check_drift(self) -> None:
        """Every VLLMDeployment (of the served namespaces) and its adapters, against what the
        cluster and servers hold. With the watch cache, the cluster's side costs no request
        unless something drifted: the watch events should have shown every change already,
        this is the safety net (the resync of client-go's informers), and each server is asked
        for its adapters once. Not before the cache is listed (see `clients.cache`): a
        half-listed cache would show adapters as gone."""
        if isinstance(self.kube, CachedKube) and not self.kube.cache.ready:
            log.debug("drift check skipped: the watch cache is still being listed")
            return
        if self.namespaces is None:
            crs = await self.kube.list_all("VLLMDeployment")
        else:
            crs = [
                cr
                for ns in self.namespaces
                for cr in await self.kube.list_all("VLLMDeployment", ns)
            ]
        started = time.monotonic()
        for cr in crs:
            meta = cr["metadata"]
            # Reads from the cache do not wait: without this the check would hold the event
            # loop for all deployments at once (seconds at a thousand), and a spec change
            # arriving meanwhile would wait for it.
            await asyncio.sleep(0)
            try:
                with discovery_as_known():
                    with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
                        await self.deployment(meta["namespace"], meta["name"])
                    await self.adapters(meta["namespace"], meta["name"])
            except Exception:  # one object's failure never skips the others
                log.exception("drift check of %s/%s failed", meta["namespace"], meta["name"])
        log.debug("drift check of %d deployments: %.2f s", len(crs), time.monotonic() - started)

    # --- the reconciles -------------------------------------------------------------------

    async def deployment(
        self, namespace: str, name: str, *, retry: int = 0, prune: bool = True
    ) -> None:
        """Bring the cluster to what the VLLMDeployment asks for and write its status (see
        `reconcile_deployment`; raises what it raises)."""
        # Read it under the lock: a reconcile that just ran may have changed the status, and
        # conditions (and their events) must build on the latest one.
        async with self._runs.locked((namespace, name)), reconcile_timer("VLLMDeployment"):
            body = await self.kube.get_or_none("VLLMDeployment", namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self._seen.forget((namespace, name))
                return
            await reconcile_deployment(
                self.kube, body, self.settings, retry=retry, prune_children=prune,
                seen=self._seen, admin=self.admin,
            )  # fmt: skip

    async def status(self, namespace: str, name: str) -> None:
        """Only the status of the VLLMDeployment, from its Deployment and pods (see
        `refresh_status`); an API hiccup waits for the next event or the drift check."""
        async with self._runs.locked((namespace, name)):
            try:
                body = await self.kube.get_or_none("VLLMDeployment", namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    self._seen.forget((namespace, name))
                    return
                await refresh_status(self.kube, body, self.settings, self._seen, self.admin)
            except ApiError as e:
                log.warning("status refresh of %s/%s: %s", namespace, name, e)

    async def adapters(
        self, namespace: str, deployment: str, *, adapter: str | None = None, retry: int = 0
    ) -> None:
        """Make the deployment's pods hold their LoRA adapters. Raises kopf.TemporaryError,
        with backoff, while `adapter` (a LoraAdapter name) has problems."""

        async def run() -> dict[str, list[str]]:
            async with reconcile_timer("LoraAdapters"):
                return await self.lora.reconcile(namespace, deployment)

        problems = await self._runs.shared((namespace, "lora", deployment), run)
        if adapter is not None and problems.get(adapter):
            raise kopf.TemporaryError("; ".join(problems[adapter]), delay=backoff(retry))

    async def _adapters_quietly(self, namespace: str, deployment: str) -> None:
        """Adapter reconciles triggered by other objects: problems land in the LoraAdapters'
        status and events, and their own handlers retry; an API hiccup waits for the next
        event."""
        try:
            await self.adapters(namespace, deployment)
        except ApiError as e:
            log.warning("adapter reconcile of %s/%s: %s", namespace, deployment, e)
