"""LoraAdapter resources, pure: parsing, what may be loaded, and what the servers report.

The reconciler feeds these functions what it read (the LoraAdapters, their VLLMDeployment, each
pod's `/v1/models`); they decide, it acts.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .spec import DeploymentSpec, Images, InvalidSpec, Lora, parse_deployment


@dataclass(frozen=True)
class AdapterSpec:
    name: str  # of the LoraAdapter resource
    namespace: str
    uid: str
    generation: int | None
    created: str  # creationTimestamp: the older of two LoraAdapters keeps a contested name
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
        created=meta.get("creationTimestamp") or "",
        deployment=spec["deploymentRef"]["name"],
        adapter_name=spec.get("adapterName") or meta["name"],
        source=spec["source"]["uri"],
        replicas=spec.get("replicas"),
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True)
class ServerReport:
    """What a pod's server said on `/v1/models`: its instance id (new on every start) and its
    adapters (name -> the path it was loaded from)."""

    instance: str
    adapters: Mapping[str, str]


@dataclass(frozen=True)
class CallResult:
    """How one load or unload call to a server went (`message` says why it failed)."""

    ok: bool
    message: str = ""


def lora_deployment(
    name: str, body: Mapping[str, Any] | None, images: Images
) -> tuple[DeploymentSpec | None, str | None]:
    """The VLLMDeployment the adapters are meant for, or why none of them can be served on it."""
    if body is None:
        return None, f"VLLMDeployment {name!r} not found"
    try:
        spec = parse_deployment(body, images)
    except InvalidSpec as e:
        return None, f"VLLMDeployment {name!r} is invalid: {e}"
    if not spec.lora.enabled:
        return None, f"VLLMDeployment {name!r} has spec.lora.enabled false"
    return spec, None


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


def name_clashes(adapters: Sequence[AdapterSpec], base_model: str) -> dict[str, str]:
    """LoraAdapters that cannot be served under their name: the base model's, or one an older
    LoraAdapter of the same deployment already serves (the older one keeps it)."""
    clashes, taken = {}, {base_model: "the base model"}
    for adapter in sorted(adapters, key=lambda a: (a.created, a.name)):
        if adapter.deleting:
            continue
        if (holder := taken.get(adapter.adapter_name)) is not None:
            clashes[adapter.name] = f"adapterName {adapter.adapter_name!r} is taken by {holder}"
        else:
            taken[adapter.adapter_name] = f"LoraAdapter {adapter.name!r}"
    return clashes


def adapter_problems(
    adapters: Sequence[AdapterSpec], spec: DeploymentSpec | None, unusable: str | None
) -> dict[str, str]:
    """LoraAdapter name -> why it cannot be served at all (`InvalidAdapter`): the deployment
    cannot serve adapters (`unusable`, from `lora_deployment`), a source its settings refuse,
    or a name someone else holds."""
    if spec is None or unusable is not None:
        return dict.fromkeys((a.name for a in adapters), unusable or "no deployment")
    problems = {a.name: e for a in adapters if (e := source_error(a.source, spec.lora))}
    return problems | name_clashes(adapters, spec.model.served_name)


def problems_left(
    adapters: Sequence[AdapterSpec],
    problems: Mapping[str, str],
    results: Mapping[tuple[str, str], CallResult],
    unload_failures: Mapping[str, Sequence[str]],
) -> dict[str, list[str]]:
    """LoraAdapter name -> what is still wrong after a reconcile (its handler retries with
    backoff while anything is): a problem, failed loads, or (while it is being deleted)
    failed unloads."""
    left: dict[str, list[str]] = {}
    for adapter in adapters:
        if adapter.deleting:
            left[adapter.name] = list(unload_failures.get(adapter.adapter_name, ()))
        elif adapter.name in problems:
            left[adapter.name] = [problems[adapter.name]]
        else:
            left[adapter.name] = [
                f"{pod}: {r.message}"
                for (name, pod), r in results.items()
                if name == adapter.name and not r.ok
            ]
    return left
