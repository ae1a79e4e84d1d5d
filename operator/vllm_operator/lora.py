"""LoraAdapter resources, pure: parsing, source checks, and the planner that decides which pods
hold which adapter. No I/O; the reconciler feeds it what the pods report."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .spec import Lora


@dataclass(frozen=True)
class AdapterSpec:
    name: str  # of the LoraAdapter resource
    namespace: str
    uid: str
    generation: int | None
    deployment: str
    adapter_name: str  # the model name clients use
    source: str
    replicas: int | None  # None: every pod
    deleting: bool = False  # the resource is being deleted: unload it everywhere


def parse_adapter(body: Mapping[str, Any]) -> AdapterSpec:
    meta, spec = body["metadata"], body.get("spec") or {}
    return AdapterSpec(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        deployment=spec["deploymentRef"]["name"],
        adapter_name=spec.get("adapterName") or meta["name"],
        source=spec["source"]["uri"],
        replicas=spec.get("replicas"),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def source_error(source: str, settings: Lora) -> str | None:
    """Why the deployment's LoRA settings refuse `source`, or None if allowed."""
    if source.startswith("hf://"):
        allowed = settings.allow_hub
        return None if allowed else "hf:// adapters are not allowed here (spec.lora.allowHub)"
    if not source.startswith("/"):
        return f"source {source!r} is neither an absolute path nor hf://ORG/NAME"
    normal = posixpath.normpath(source)
    if normal != source.rstrip("/") or ".." in normal.split("/"):
        return f"source {source!r} is not a normalized absolute path"
    roots = settings.allowed_source_roots
    inside = [r for r in roots if normal == r.rstrip("/") or normal.startswith(r.rstrip("/") + "/")]
    if roots and not inside:
        return f"source {source!r} is outside the allowed roots {', '.join(roots)}"
    return None


def server_path(source: str) -> str:
    """What vLLM is given to load: a path as is, a hub adapter as ORG/NAME."""
    return source[len("hf://") :] if source.startswith("hf://") else source


@dataclass(frozen=True)
class PodState:
    """What a pod's server reports: its adapters (name -> loaded path) and its capacity."""

    name: str
    adapters: Mapping[str, str]
    max_loras: int


def plan(adapters: Sequence[AdapterSpec], pods: Sequence[PodState]) -> dict[str, tuple[str, ...]]:
    """Adapter resource name -> the pods meant to hold it.

    Without `replicas`, every pod. With N, N pods: those already holding the adapter first (so
    a reconcile never moves an adapter that is in place), then the pods with the most free
    adapter slots, by name on ties; adapters are placed in name order so the plan is the same
    every time for the same inputs. A pod that went away simply drops out."""
    free = {p.name: p.max_loras for p in pods}
    placement: dict[str, tuple[str, ...]] = {}
    # Place the everywhere-adapters first: they take a slot on every pod regardless.
    ordered = sorted(adapters, key=lambda a: (a.replicas is not None, a.name))
    for adapter in ordered:
        if adapter.replicas is None:
            chosen = [p.name for p in pods]
        else:
            holding = sorted(p.name for p in pods if adapter.adapter_name in p.adapters)
            others = sorted(
                (p.name for p in pods if p.name not in holding), key=lambda n: (-free[n], n)
            )
            chosen = (holding + others)[: adapter.replicas]
        for pod in chosen:
            free[pod] -= 1
        placement[adapter.name] = tuple(sorted(chosen))
    return placement


def pods_meant_for(placement: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Pod -> the adapter resources meant for it (the inverse of `plan`)."""
    out: dict[str, set[str]] = {}
    for adapter, pods in placement.items():
        for pod in pods:
            out.setdefault(pod, set()).add(adapter)
    return out
