"""The LoRA adapters of one VLLMDeployment, level-based: observe, plan, converge, write.

Every time, from scratch: which adapters the LoraAdapters ask for, which pods serve, what each
server holds right now (asked over HTTP, so a restarted server, a new replica or an operator that
restarted mid-way all look the same: a server missing adapters). Then load and unload until each
pod holds exactly what the plan says, set each pod's readiness gate, write each LoraAdapter's
status. Nothing is remembered between runs but what the status shows. Every decision is the pure
layer's (`model.adapters`, `model.placement`, `model.status`); this module does the I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..clients.kube import Kube
from ..clients.vllm_admin import VLLMAdminClient
from ..config import Settings
from ..metrics import LORA_CALLS
from ..model.adapters import (
    CallResult,
    ServerReport,
    adapter_problems,
    lora_deployment,
    parse_adapter,
    problems_left,
)
from ..model.builders import WORKLOAD_SETS, admin_audience, selector_labels, workload_kind
from ..model.placement import Call, PodState, calls_to_converge, plan, pods_meant_for
from ..model.pods import admin_port, pods_of, server_url
from ..model.spec import DeploymentSpec
from ..model.status import adapter_gate, adapter_status, pod_gate_condition
from .runs import bounded
from .status_writer import now, write_status


@dataclass(frozen=True)
class ServingPod:
    """A pod of the deployment as observed: its object, where its server's admin port is, and
    what the server said (None: no address yet, or it did not answer)."""

    body: Mapping[str, Any]
    url: str | None
    report: ServerReport | None

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]


class AdapterReconciler:
    def __init__(self, kube: Kube, admin: VLLMAdminClient, settings: Settings) -> None:
        self.kube = kube
        self.admin = admin
        self.settings = settings

    async def reconcile(self, namespace: str, deployment: str) -> dict[str, list[str]]:
        """Make the deployment's pods hold their adapters; returns what is still wrong per
        LoraAdapter (its handlers retry with backoff while anything is). LoraAdapters being
        deleted are unloaded everywhere; their only problems are failed unloads."""
        # Observe.
        cr = await self.kube.get_or_none("VLLMDeployment", namespace, deployment)
        bodies = await self.kube.lora_adapters(namespace, deployment)
        adapters = [parse_adapter(b) for b in bodies]
        spec, unusable = lora_deployment(deployment, cr, self.settings.images)
        problems = adapter_problems(adapters, spec, unusable)
        active = [a for a in adapters if a.name not in problems and not a.deleting]
        audience = admin_audience(namespace, deployment)
        pods = await self._observe_pods(spec, audience) if spec else []
        servers = {p.name: p.report for p in pods if p.report is not None}

        # Plan.
        slots = spec.lora.max_loras if spec else 0
        placement = plan(active, [PodState(n, r.adapters, slots) for n, r in servers.items()])
        calls, results = calls_to_converge(servers, adapters, placement)

        # Converge.
        urls = {p.name: p.url for p in pods}
        outcomes = await bounded([self._call(urls[c.pod], c, audience) for c in calls])
        unload_failures: dict[str, list[str]] = {}
        for call, outcome in zip(calls, outcomes, strict=True):
            if call.is_load:
                results[call.adapter, call.pod] = outcome
            elif not outcome.ok:
                failure = f"unload on {call.pod}: {outcome.message}"
                unload_failures.setdefault(call.adapter_name, []).append(failure)
        meant = pods_meant_for(placement)
        await self._set_gates(pods, meant, results, adapters_active=bool(active))

        # Write.
        reports = {p.name: p.report for p in pods}
        writes = []
        for body, adapter in zip(bodies, adapters, strict=True):
            if adapter.deleting:
                continue  # its status no longer matters; its problems hold the finalizer
            status = adapter_status(
                previous=body.get("status") or {},
                adapter=adapter,
                problem=problems.get(adapter.name),
                pods=placement.get(adapter.name, ()),
                results=results,
                reports=reports,
                now=now(),
            )
            writes.append(write_status(self.kube, "LoraAdapter", body, status))
        await bounded(writes)
        return problems_left(adapters, problems, results, unload_failures)

    async def _observe_pods(self, spec: DeploymentSpec, audience: str) -> list[ServingPod]:
        """The deployment's servers (a multi-node group's leader serves its adapters for the
        whole group) through their owner chain (labels only narrow the lists), each with what
        its server says."""
        labels = selector_labels(spec.name)
        kind = workload_kind(spec)
        workload = None
        if kind == "Deployment" or await self.kube.serves(kind):
            workload = await self.kube.get_or_none(kind, spec.namespace, spec.name)
        sets = await self.kube.list(WORKLOAD_SETS[kind], spec.namespace, labels) if workload else []
        listed = await self.kube.list("Pod", spec.namespace, labels) if sets else []
        bodies = pods_of(workload, sets, listed, spec.uid)
        urls = [server_url(b, admin_port(b, spec.port)) for b in bodies]
        reports = await bounded([self._report(url, audience) for url in urls])
        pods = [ServingPod(*seen) for seen in zip(bodies, urls, reports, strict=True)]
        return sorted(pods, key=lambda p: p.name)

    async def _report(self, url: str | None, audience: str) -> ServerReport | None:
        return await self.admin.report(url, audience) if url else None

    async def _call(self, url: str | None, call: Call, audience: str) -> CallResult:
        assert url is not None  # only serving pods get calls
        if call.is_load:
            assert call.path is not None
            result = await self.admin.load(
                url, call.adapter_name, call.path, inplace=call.inplace, audience=audience
            )
        else:
            result = await self.admin.unload(url, call.adapter_name, audience=audience)
        operation = "load" if call.is_load else "unload"
        LORA_CALLS.labels(operation, "ok" if result.ok else "error").inc()
        return result

    async def _set_gates(
        self,
        pods: Sequence[ServingPod],
        meant: Mapping[str, set[str]],
        results: Mapping[tuple[str, str], CallResult],
        *,
        adapters_active: bool,
    ) -> None:
        updates = []
        for pod in pods:
            verdict = adapter_gate(
                pod.body, pod.report, sorted(meant.get(pod.name, ())), results,
                adapters_active=adapters_active,
            )  # fmt: skip
            condition = verdict and pod_gate_condition(pod.body, verdict, now=now())
            if condition:
                namespace = pod.body["metadata"]["namespace"]
                updates.append(self.kube.set_pod_condition(namespace, pod.name, condition))
        await asyncio.gather(*updates)
