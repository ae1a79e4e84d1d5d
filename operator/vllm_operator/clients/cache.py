"""Reads from the cluster as Kopf's watch streams show it; writes go to the API server.

Kopf keeps an in-memory index of every kind the operator watches (`kopf.index`, fed by the watch
streams it holds anyway, and filled from their first listing before any handler runs). Reading
children, pods and custom resources from there costs the API server nothing: a reconcile that
finds everything as wanted sends no request at all, and neither does a drift check that finds no
drift. This is the informer cache of Kubernetes' own controllers (client-go, controller-runtime).

The indices are complete only once Kopf has listed every watched kind: Kopf calls no handler
before that, but the operator's own loops (the drift check) run beside Kopf, so the cache says
when it is `ready`, on the first watch event a handler sees. An index half listed would show a
deployment without its adapters, and a drift check would unload them.

Three things the indices cannot know, handled here:
- Our own writes, until their watch events arrive: what a write returned is read instead of the
  index until the index holds that version or a later one (resourceVersions compared as the
  integers etcd makes them; where one is not an integer, the index is believed once it changed).
  Without it a reconcile right after a write would see the old object and write again.
- Objects that are not ours: children are watched by their managed-by label, so an object of a
  child's name that someone else made is not in the index. A miss is therefore asked of the API
  server (`CachedKube.get_or_none`) before anything is created over it; only the custom resources,
  watched whole, are known to be absent when the index lacks them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model.builders import DEPLOYMENT_LABEL
from .kube import Kube

# What the operator watches and keeps in Kopf's indices: its custom resources, every kind of
# child it makes (by its managed-by label), and the sets and pods between its workloads and
# their servers (a Deployment's ReplicaSets, a LeaderWorkerSet's StatefulSets: made from our
# pod templates, they carry our labels).
CHILDREN = (
    "Deployment", "LeaderWorkerSet", "Service", "PodDisruptionBudget", "NetworkPolicy",
    "ServiceMonitor", "PodMonitor", "InferencePool", "ScaledObject", "HorizontalPodAutoscaler",
    "InterceptorRoute", "PersistentVolumeClaim",
)  # fmt: skip
SETS = ("ReplicaSet", "StatefulSet")
WATCHED = ("VLLMDeployment", "LoraAdapter", *CHILDREN, *SETS, "Pod")
# The kinds whose whole population in the served namespaces the watch streams hold: a miss in
# their index means the object does not exist.
COMPLETE = frozenset({"VLLMDeployment", "LoraAdapter"})


def index_keys(kind: str, body: Mapping[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """What Kopf's index of `kind` holds for `body`: the object (without its managedFields,
    which nothing here reads) under its name, and under the VLLMDeployment it belongs to: a
    child's or pod's deployment label, a LoraAdapter's spec.deploymentRef.

    The object is kept as a copy whose strings are interned: every body is parsed from its own
    JSON, so each holds its own copy of every key ("metadata", "containers", ...) and of the
    values all our objects share (labels, images, probes). At a thousand deployments that was
    half the indices' memory (21 of 44 MB); equal strings are now one object."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    kept = _interned({**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})
    keys: dict[tuple[str, ...], dict[str, Any]] = {("name", namespace, name): kept}
    if group := _group_of(kind, body):
        keys["group", namespace, group] = kept
    return keys


def _interned(value: Any) -> Any:
    """A copy of JSON data (dicts, lists, scalars) with each string `sys.intern`ed."""
    if type(value) is str:  # sys.intern takes no subclass of str
        return sys.intern(value)
    if isinstance(value, Mapping):
        return {_interned(k): _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return value


def _version(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


def _uid(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("uid") or "")


@dataclass
class _Written:
    """An object as our write left it (`body` None: deleted), and the version of the object
    the index held when it was written."""

    body: dict[str, Any] | None
    uid: str
    before: str

    def seen_in(self, indexed: Mapping[str, Any] | None) -> bool:
        """Whether the index has caught up with this write (then the index is read again)."""
        if self.body is None:  # a deletion: the index dropped it, or holds a new object
            return indexed is None or _uid(indexed) not in ("", self.uid)
        if indexed is None:
            return False
        seen, written = _version(indexed), _version(self.body)
        if seen.isdigit() and written.isdigit():
            return int(seen) >= int(written)
        return seen != self.before  # versions not comparable: the index moved on


class ObjectCache:
    """The objects of the watched kinds, by kind: Kopf's indices (`indices`: kind -> the live
    kopf.Index, keyed as `index_keys` says), overlaid with our writes not yet seen there."""

    def __init__(self, indices: Mapping[str, Mapping[Any, Iterable[dict[str, Any]]]]) -> None:
        self._indices = dict(indices)
        self._written: dict[tuple[str, str, str], _Written] = {}
        # (kind, namespace, deployment) -> names written there and not yet indexed
        self._written_groups: dict[tuple[str, str, str], set[str]] = {}
        # Kopf runs a handler only once every index is listed; `observed` is called from them.
        self.ready = False

    def watches(self, kind: str) -> bool:
        return kind in self._indices

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last seen or written, None if neither shows it."""
        return self._fresher(kind, namespace, name, self._indexed(kind, namespace, name))

    def group(self, kind: str, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """The objects of `kind` that belong to the VLLMDeployment `deployment` (see
        `index_keys`), as last seen or written."""
        names = {b["metadata"]["name"] for b in self._store(kind, "group", namespace, deployment)}
        names |= self._written_groups.get((kind, namespace, deployment), set())
        found = (self.get(kind, namespace, n) for n in sorted(names))
        return [b for b in found if b is not None and _group_of(kind, b) == deployment]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of `kind` the index holds (the served namespaces')."""
        keys = [key for key in self._indices[kind] if key[0] == "name"]
        found = (self.get(kind, namespace, name) for _, namespace, name in keys)
        return [b for b in found if b is not None]

    def wrote(self, kind: str, body: Mapping[str, Any]) -> None:
        """What a write of ours returned: read instead of the index until the index has it."""
        meta = body.get("metadata") or {}
        if kind not in self._indices or not meta.get("name"):
            return
        namespace, name = meta.get("namespace") or "", meta["name"]
        before = _version(self._indexed(kind, namespace, name))
        self._forget(kind, namespace, name)
        self._written[kind, namespace, name] = _Written(dict(body), _uid(body), before)
        if group := _group_of(kind, body):
            self._written_groups.setdefault((kind, namespace, group), set()).add(name)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        """We deleted it: gone for us until the index also drops it (or holds a new one)."""
        if kind in self._indices:
            indexed = self._indexed(kind, namespace, name)
            self._forget(kind, namespace, name)
            self._written[kind, namespace, name] = _Written(None, _uid(indexed), "")

    def observed(self, kind: str, body: Mapping[str, Any]) -> bool:
        """A watch event of `body` arrived (Kopf has indexed it): our write of it, if the index
        caught up, is no longer needed. The first one says the indices are listed. Returns
        whether the event is a write of ours coming back (nothing new)."""
        self.ready = True
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        written = self._written.get(key)
        if written is None:
            return False
        echo = written.body is not None and _version(written.body) == _version(body) != ""
        self.get(*key)  # forgets the write if the index has caught up
        return echo

    def _store(self, kind: str, *key: str) -> Iterable[dict[str, Any]]:
        return self._indices[kind].get(key) or ()

    def _indexed(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The index's object of that name (the latest, while a recreated one's predecessor is
        still there)."""
        bodies = sorted(
            self._store(kind, "name", namespace, name),
            key=lambda b: (len(_version(b)), _version(b)),
        )
        return bodies[-1] if bodies else None

    def _fresher(
        self, kind: str, namespace: str, name: str, indexed: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        written = self._written.get((kind, namespace, name))
        if written is None:
            return indexed
        if written.seen_in(indexed):
            self._forget(kind, namespace, name)
            return indexed
        return written.body

    def _forget(self, kind: str, namespace: str, name: str) -> None:
        written = self._written.pop((kind, namespace, name), None)
        if written is not None and written.body is not None:
            key = (kind, namespace, _group_of(kind, written.body) or "")
            names = self._written_groups.get(key, set())
            names.discard(name)
            if not names:
                self._written_groups.pop(key, None)


def _group_of(kind: str, body: Mapping[str, Any]) -> str | None:
    """The VLLMDeployment `body` belongs to (the index's "group" key, see `index_keys`)."""
    meta = body.get("metadata") or {}
    if kind == "LoraAdapter":
        return ((body.get("spec") or {}).get("deploymentRef") or {}).get("name")
    if kind == "VLLMDeployment":
        return meta.get("name")
    return (meta.get("labels") or {}).get(DEPLOYMENT_LABEL)


class CachedKube(Kube):
    """`Kube` whose reads of watched kinds come from `cache` (see the module's docstring) and
    whose writes also go into it. Kinds not watched (not served when the operator started, or
    never watched, like a LeaderWorkerSet's StatefulSets) are read from the API server."""

    def __init__(self, kube: Kube, cache: ObjectCache) -> None:
        # Shares the connection, credentials and discovery of `kube` (not a second session).
        self.__dict__.update(kube.__dict__)
        self.cache = cache

    async def get_or_none(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache.watches(kind):
            found = self.cache.get(kind, namespace, name)
            if found is not None or kind in COMPLETE:
                return found
        # Not ours, or not there: only the API server knows which.
        return await super().get_or_none(kind, namespace, name)

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict]:
        deployment = labels.get(DEPLOYMENT_LABEL)
        if self.cache.watches(kind) and deployment:
            return [
                obj
                for obj in self.cache.group(kind, namespace, deployment)
                if all(
                    ((obj["metadata"].get("labels") or {}).get(k)) == v for k, v in labels.items()
                )
            ]
        return await super().list(kind, namespace, labels)

    async def list_all(self, kind: str, namespace: str | None = None) -> list[dict]:
        if self.cache.watches(kind):
            return [
                obj
                for obj in self.cache.all(kind)
                if namespace is None or obj["metadata"].get("namespace") == namespace
            ]
        return await super().list_all(kind, namespace)

    async def lora_adapters(self, namespace: str, deployment: str) -> list[dict]:
        if self.cache.watches("LoraAdapter"):
            return self.cache.group("LoraAdapter", namespace, deployment)
        return await super().lora_adapters(namespace, deployment)

    async def apply(self, obj: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        written = await super().apply(obj, **kwargs)
        self.cache.wrote(obj["kind"], written)
        return written

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        written = await super().create(obj)
        self.cache.wrote(obj["kind"], written)
        return written

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await super().delete(kind, namespace, name)
        self.cache.deleted(kind, namespace, name)

    async def patch_status(self, kind: str, namespace: str, name: str, status: Any) -> dict:
        written = await super().patch_status(kind, namespace, name, status)
        self.cache.wrote(kind, written)
        return written
