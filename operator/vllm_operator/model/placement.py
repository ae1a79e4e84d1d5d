"""Which pods hold which LoRA adapter, and the calls that get them there. Pure: the reconciler
feeds in what the servers report and makes the calls this plans."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .adapters import AdapterSpec, CallResult, ServerReport, server_path


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


@dataclass(frozen=True)
class Call:
    """One call to a pod's server: load `adapter_name` from `path` (in place when the server
    holds that name from another source), or unload it (`path` None)."""

    pod: str
    adapter_name: str
    path: str | None = None
    inplace: bool = False
    adapter: str = ""  # the LoraAdapter a load is for

    @property
    def is_load(self) -> bool:
        return self.path is not None


def calls_to_converge(
    servers: Mapping[str, ServerReport],
    adapters: Sequence[AdapterSpec],
    placement: Mapping[str, tuple[str, ...]],
) -> tuple[list[Call], dict[tuple[str, str], CallResult]]:
    """The calls that make each serving pod (`servers`: pod -> its report) hold exactly what
    `placement` means for it, and (LoraAdapter, pod) -> ok for what is already in place.

    Loads what is missing or stale (a changed source reloads in place); unloads names of ours
    (any of `adapters`, those being deleted included) that a pod holds but is not meant to.
    Adapters a pod holds that no LoraAdapter names are someone else's: left alone."""
    by_name = {a.name: a for a in adapters}
    ours = {a.adapter_name for a in adapters}
    meant_for = pods_meant_for(placement)
    calls: list[Call] = []
    in_place: dict[tuple[str, str], CallResult] = {}
    for pod in sorted(servers):
        held = servers[pod].adapters
        meant = sorted(meant_for.get(pod, ()))
        for name in meant:
            adapter = by_name[name]
            path = server_path(adapter.source)
            if held.get(adapter.adapter_name) == path:
                in_place[name, pod] = CallResult(True)
            else:
                inplace = adapter.adapter_name in held  # the source changed: reload in place
                calls.append(Call(pod, adapter.adapter_name, path, inplace, adapter=name))
        meant_names = {by_name[n].adapter_name for n in meant}
        calls += [Call(pod, loaded) for loaded in sorted(held) if loaded in ours - meant_names]
    return calls, in_place
