"""Level-based reconciliation of a VLLMDeployment's LoRA adapters.

Every time, from scratch: which adapters the LoraAdapters ask for, which pods serve, what each
server holds right now (asked over HTTP, so a restarted server, a new replica or an operator that
restarted mid-way all look the same: a server missing adapters). Then load and unload until each
pod holds exactly what the plan says, set each pod's readiness gate, write each LoraAdapter's
status. Nothing is remembered between runs but what the status shows.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import reasons
from .builders import ADAPTERS_LOADED, ADMIN_PORT_NAME, selector_labels
from .k8s import Kube
from .lora import (
    AdapterSpec,
    PodState,
    parse_adapter,
    plan,
    pods_meant_for,
    server_path,
    source_error,
)
from .report import report_status
from .servers import CallResult, ServerReport, Servers
from .spec import DeploymentSpec, Images, InvalidSpec, parse_deployment
from .status import Condition, pod_gate_condition, set_condition

CONCURRENCY = 16  # server calls in flight per reconcile
NOT_LOADED_YET = "not loaded yet"


@dataclass
class PodView:
    name: str
    body: Mapping[str, Any]
    url: str | None
    report: ServerReport | None = None


def admin_port(pod: Mapping[str, Any], default: int) -> int:
    """The port to manage the pod's server on: its container port named `admin` (the API port
    refuses the LoRA routes there); `default` for pods from before the admin port."""
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == ADMIN_PORT_NAME:
                return int(port["containerPort"])
    return default


def pod_url(pod: Mapping[str, Any], port: int) -> str | None:
    """The server's URL, if the pod runs and has an address."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase", "Running") != "Running":
        return None
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def name_clashes(
    bodies: Sequence[Mapping[str, Any]], adapters: Sequence[AdapterSpec], base_model: str
) -> dict[str, str]:
    """LoraAdapters that cannot be served under their name: the base model's, or one an older
    LoraAdapter of the same deployment already serves (the older one keeps it)."""
    clashes, taken = {}, {base_model: "the base model"}
    by_age = sorted(
        zip(bodies, adapters, strict=True),
        key=lambda pair: (pair[0]["metadata"].get("creationTimestamp") or "", pair[1].name),
    )
    for _, adapter in by_age:
        if adapter.deleting:
            continue
        if (holder := taken.get(adapter.adapter_name)) is not None:
            clashes[adapter.name] = f"adapterName {adapter.adapter_name!r} is taken by {holder}"
        else:
            taken[adapter.adapter_name] = f"LoraAdapter {adapter.name!r}"
    return clashes


def containers_ready(pod: Mapping[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


async def _nothing() -> None:
    return None


async def _bounded(calls: Sequence[Any]) -> list[Any]:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Any) -> Any:
        async with limit:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


class AdapterReconciler:
    def __init__(
        self, kube: Kube, servers: Servers, images: Images, now: Callable[[], str]
    ) -> None:
        self.kube = kube
        self.servers = servers
        self.images = images
        self.now = now

    async def api_key(self, spec: DeploymentSpec) -> str | None:
        if spec.api_key is None:
            return None
        secret = await self.kube.get_or_none("Secret", spec.namespace, spec.api_key.name)
        value = ((secret or {}).get("data") or {}).get(spec.api_key.key)
        return base64.b64decode(value).decode() if value else None

    async def pods(self, spec: DeploymentSpec, api_key: str | None) -> list[PodView]:
        items = await self.kube.list("Pod", spec.namespace, selector_labels(spec.name))
        mine = selector_labels(spec.name).items()
        views = [
            PodView(p["metadata"]["name"], p, pod_url(p, admin_port(p, spec.port)))
            for p in items
            if mine <= ((p.get("metadata") or {}).get("labels") or {}).items()  # kmock-proof
        ]
        reports = await _bounded(
            [self.servers.report(v.url, api_key) if v.url else _nothing() for v in views]
        )
        for view, report in zip(views, reports, strict=True):
            view.report = report
        return sorted(views, key=lambda v: v.name)

    async def reconcile(self, namespace: str, deployment: str) -> dict[str, list[str]]:
        """Make the deployment's pods hold their adapters; returns the problems left per
        LoraAdapter (its handlers retry with backoff while it has any). LoraAdapters being
        deleted are unloaded everywhere; their only problems are failed unloads."""
        cr = await self.kube.get_or_none("VLLMDeployment", namespace, deployment)
        bodies = [
            b
            for b in await self.kube.list("LoraAdapter", namespace, {})
            if (b.get("spec") or {}).get("deploymentRef", {}).get("name") == deployment
        ]
        adapters = [parse_adapter(b) for b in bodies]
        problems: dict[str, str] = {}
        spec = None
        if cr is None:
            message = f"VLLMDeployment {deployment!r} not found"
            problems = dict.fromkeys((a.name for a in adapters), message)
        else:
            try:
                spec = parse_deployment(cr, self.images)
            except InvalidSpec as e:
                message = f"VLLMDeployment {deployment!r} is invalid: {e}"
                problems = dict.fromkeys((a.name for a in adapters), message)
        if spec is not None and not spec.lora.enabled:
            message = f"VLLMDeployment {deployment!r} has spec.lora.enabled false"
            problems = dict.fromkeys((a.name for a in adapters), message)
        if spec is not None and spec.lora.enabled:
            for a in adapters:
                if error := source_error(a.source, spec.lora):
                    problems[a.name] = error
            problems |= name_clashes(bodies, adapters, spec.model.served_name)

        views: list[PodView] = []
        results: dict[tuple[str, str], CallResult] = {}
        unload_failures: dict[str, list[str]] = {}
        placement: dict[str, tuple[str, ...]] = {}
        if spec is not None and spec.lora.enabled:
            api_key = await self.api_key(spec)
            views = await self.pods(spec, api_key)
            serving = [v for v in views if v.report is not None]
            active = [a for a in adapters if a.name not in problems and not a.deleting]
            states = [PodState(v.name, v.report.adapters, spec.lora.max_loras) for v in serving]
            placement = plan(active, states)
            results, unload_failures = await self._converge(
                serving, adapters, active, placement, api_key
            )
            await self._set_gates(views, placement, results, active)

        await _bounded(
            [
                self._write_status(
                    body, adapter, problems.get(adapter.name), placement, views, results
                )
                for body, adapter in zip(bodies, adapters, strict=True)
                if not adapter.deleting
            ]
        )
        left: dict[str, list[str]] = {}
        for adapter in adapters:
            if adapter.deleting:
                left[adapter.name] = unload_failures.get(adapter.adapter_name, [])
                continue
            failed = [
                f"{pod}: {r.message}"
                for (a, pod), r in results.items()
                if a == adapter.name and not r.ok
            ]
            left[adapter.name] = [problems[adapter.name]] if adapter.name in problems else failed
        return left

    async def _converge(
        self,
        serving: Sequence[PodView],
        adapters: Sequence[AdapterSpec],
        active: Sequence[AdapterSpec],
        placement: Mapping[str, tuple[str, ...]],
        api_key: str | None,
    ) -> tuple[dict[tuple[str, str], CallResult], dict[str, list[str]]]:
        """Load what is missing or stale, unload what is no longer meant. Returns (adapter,
        pod) -> outcome for every adapter a pod is meant to hold, and the failed unloads per
        adapter name."""
        by_name = {a.name: a for a in active}
        ours = {a.adapter_name for a in adapters}
        calls, keys = [], []
        unloads: set[tuple[str, str]] = set()
        results: dict[tuple[str, str], CallResult] = {}
        for view in serving:
            assert view.report is not None and view.url is not None
            held = view.report.adapters
            meant = {n for n, pods in placement.items() if view.name in pods}
            for name in sorted(meant):
                adapter = by_name[name]
                path = server_path(adapter.source)
                if held.get(adapter.adapter_name) == path:
                    results[name, view.name] = CallResult(True)
                    continue
                inplace = adapter.adapter_name in held  # the source changed: reload in place
                calls.append(
                    self.servers.load(
                        view.url, adapter.adapter_name, path, inplace=inplace, api_key=api_key
                    )
                )
                keys.append((name, view.name))
            meant_names = {by_name[n].adapter_name for n in meant}
            for loaded in sorted(held):
                if loaded in ours and loaded not in meant_names:
                    calls.append(self.servers.unload(view.url, loaded, api_key=api_key))
                    keys.append((loaded, view.name))
                    unloads.add((loaded, view.name))
        unload_failures: dict[str, list[str]] = {}
        for (name, pod), result in zip(keys, await _bounded(calls), strict=True):
            if (name, pod) not in unloads:
                results[name, pod] = result
            elif not result.ok:
                unload_failures.setdefault(name, []).append(f"unload on {pod}: {result.message}")
        return results, unload_failures

    async def _set_gates(
        self,
        views: Sequence[PodView],
        placement: Mapping[str, tuple[str, ...]],
        results: Mapping[tuple[str, str], CallResult],
        active: Sequence[AdapterSpec],
    ) -> None:
        meant = pods_meant_for(placement)
        updates = []
        for view in views:
            if (view.body.get("metadata") or {}).get("deletionTimestamp"):
                continue  # going away: its gate no longer matters
            wanted = sorted(meant.get(view.name, ()))
            if view.report is None and active and containers_ready(view.body):
                # The container serves (the kubelet says so) but did not answer us: a timeout,
                # a rotated API key. Not a restart: leave the gate as it is.
                continue
            if view.report is None and active:
                # Not serving (starting, restarted): whatever it held is gone or unknown.
                passing = False
                reason, message = reasons.SERVER_NOT_READY, "waiting for the server to serve"
            elif view.report is None:
                passing = True
                reason, message = reasons.NO_ADAPTERS, "no LoRA adapter is meant for this pod"
            else:
                missing = [
                    a for a in wanted if not results.get((a, view.name), CallResult(False)).ok
                ]
                passing = not missing
                if not wanted:
                    reason, message = reasons.NO_ADAPTERS, "no LoRA adapter is meant for this pod"
                elif passing:
                    reason, message = reasons.ADAPTERS_LOADED, f"holds {', '.join(wanted)}"
                else:
                    reason, message = reasons.ADAPTERS_MISSING, f"missing {', '.join(missing)}"
            condition = pod_gate_condition(
                view.body, ADAPTERS_LOADED, passing=passing, reason=reason, message=message,
                now=self.now(),
            )  # fmt: skip
            if condition is not None:
                meta = view.body["metadata"]
                updates.append(self.kube.set_pod_condition(meta["namespace"], view.name, condition))
        await asyncio.gather(*updates)

    async def _write_status(
        self,
        body: Mapping[str, Any],
        adapter: AdapterSpec,
        problem: str | None,
        placement: Mapping[str, tuple[str, ...]],
        views: Sequence[PodView],
        results: Mapping[tuple[str, str], CallResult],
    ) -> None:
        previous = body.get("status") or {}
        before = {p.get("pod"): p for p in previous.get("pods") or []}
        reports = {v.name: v.report for v in views}
        now = self.now()
        entries = []
        for pod in placement.get(adapter.name, ()):
            result = results.get((adapter.name, pod), CallResult(False, NOT_LOADED_YET))
            report = reports.get(pod)
            entry: dict[str, Any] = {"pod": pod, "loaded": result.ok}
            if report is not None:
                entry["serverInstance"] = report.instance
            old = before.get(pod) or {}
            if result.ok:
                same = old.get("loaded") and old.get("serverInstance") == entry.get(
                    "serverInstance"
                )
                entry["loadedAt"] = old.get("loadedAt") if same and old.get("loadedAt") else now
            else:
                entry["lastError"] = result.message
            entries.append(entry)
        desired, loaded = len(entries), sum(e["loaded"] for e in entries)
        errors = [
            f"{e['pod']}: {e['lastError']}"
            for e in entries
            if e.get("lastError") not in (None, NOT_LOADED_YET)
        ]
        if problem:
            ready = Condition("Ready", False, reasons.INVALID_ADAPTER, problem)
            degraded = Condition("Degraded", True, reasons.INVALID_ADAPTER, problem)
        elif errors:
            ready = Condition("Ready", False, reasons.LOAD_FAILED, f"{loaded}/{desired} pods")
            degraded = Condition("Degraded", True, reasons.LOAD_FAILED, "; ".join(errors))
        elif desired == 0:
            ready = Condition("Ready", False, reasons.NO_SERVING_PODS, "no pod serves yet")
            degraded = Condition("Degraded", False, reasons.AS_EXPECTED, "")
        else:
            ready = Condition(
                "Ready", loaded == desired, reasons.ADAPTERS_LOADED if loaded == desired
                else reasons.LOADING, f"{loaded}/{desired} pods",
            )  # fmt: skip
            degraded = Condition("Degraded", False, reasons.AS_EXPECTED, "")
        conditions = list(previous.get("conditions") or [])
        for cond in (ready, degraded):
            conditions = set_condition(conditions, cond, now=now, generation=adapter.generation)
        status: dict[str, Any] = {
            "desiredPods": desired,
            "loadedPods": loaded,
            "loadedText": f"{loaded}/{desired}",
            "pods": entries,
            "conditions": conditions,
        }
        if adapter.generation is not None:
            status["observedGeneration"] = adapter.generation
        await report_status(self.kube, "LoraAdapter", body, status)
