"""A Kubernetes API for operator tests: kmock's in-memory emulator, served over real HTTP, plus
the little a real API server does that kmock 0.8 does not and the operator relies on.

What kmock does not emulate, and what these tests therefore do not show (the kind e2e suite
does): generation bookkeeping, owner-reference garbage collection, RBAC,
admission (schema, CEL, defaulting), server-side apply's field ownership (an apply is a merge
here), and subresources as separate endpoints (/status and /scale patch the whole object).

Added here, as a real API server behaves (named so, in `KubeEmulator`):
- `metadata.generateName` names the object (Kopf's Events use it);
- server-side apply of a missing object creates it;
- a created object gets a `uid` and a `creationTimestamp` (unless the test set them);
- `labelSelector` on lists and watches (equality and set-based requirements); on a watch, an
  object that stops matching comes as DELETED and one that starts matching as ADDED;
- every write gives the object a new `resourceVersion`, from one counter (etcd's revision),
  which the operator's cache uses to tell its own writes' echoes from newer changes; a list
  says the revision it is as of, and a watch from a resourceVersion starts after it (kmock
  replays every object to every new watch);
- a watch that allows bookmarks gets a BOOKMARK when idle for a minute (without them Kopf took
  each idle stream for dead after 70 s and reopened it), and a watch ends after its
  `timeoutSeconds`;
- a JSON patch (Kopf's finalizers, after a `test` of the resourceVersion) applies whole or is
  refused with 422 (kmock answered a failed `test` with 500, which Kopf retries unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import math
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import jsonpointer
import kmock
from kopf.testing import KopfRunner

from .admin_key import operator_uses_test_key

VERBS = ["create", "get", "list", "watch", "patch", "update", "delete"]
RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False, "verbs": ["get", "list", "watch"]},
    "v1/pods": {"kind": "Pod", "subresources": ["status"]},
    "v1/services": {"kind": "Service"},
    "v1/events": {"kind": "Event"},
    "v1/secrets": {"kind": "Secret"},
    "v1/persistentvolumeclaims": {"kind": "PersistentVolumeClaim"},
    "apps/v1/deployments": {"kind": "Deployment", "subresources": ["status", "scale"]},
    "apps/v1/replicasets": {"kind": "ReplicaSet", "subresources": ["status", "scale"]},
    "policy/v1/poddisruptionbudgets": {"kind": "PodDisruptionBudget"},
    "networking.k8s.io/v1/networkpolicies": {"kind": "NetworkPolicy"},
    "autoscaling/v2/horizontalpodautoscalers": {"kind": "HorizontalPodAutoscaler"},
    "serving.vllm.ai/v1alpha1/vllmdeployments": {
        "kind": "VLLMDeployment",
        "singular": "vllmdeployment",
        "subresources": ["status", "scale"],
    },
    "serving.vllm.ai/v1alpha1/loraadapters": {
        "kind": "LoraAdapter",
        "singular": "loraadapter",
        "subresources": ["status"],
    },
}
# Kopf's peering object (the chart ships the CRD and creates one object for the release).
PEERING = {
    "kopf.dev/v1/clusterkopfpeerings": {"kind": "ClusterKopfPeering", "namespaced": False},
    "kopf.dev/v1/kopfpeerings": {"kind": "KopfPeering"},  # an operator serving namespaces
}
MONITORING = {
    "monitoring.coreos.com/v1/servicemonitors": {"kind": "ServiceMonitor"},
    "monitoring.coreos.com/v1/podmonitors": {"kind": "PodMonitor"},
}
# KEDA's ScaledObject CRD, where a test installs it, and its HTTP add-on's InterceptorRoute.
KEDA = {"keda.sh/v1alpha1/scaledobjects": {"kind": "ScaledObject"}}
KEDA_HTTP = {"http.keda.sh/v1beta1/interceptorroutes": {"kind": "InterceptorRoute"}}
# LeaderWorkerSet's CRD (kubernetes-sigs/lws), where a test installs it.
LWS = {
    "leaderworkerset.x-k8s.io/v1/leaderworkersets": {
        "kind": "LeaderWorkerSet",
        "subresources": ["status", "scale"],
    },
    "apps/v1/statefulsets": {"kind": "StatefulSet", "subresources": ["status", "scale"]},
}
# The Gateway API Inference Extension's CRD (v1), where a test installs it.
INFERENCE_POOL = {"inference.networking.k8s.io/v1/inferencepools": {"kind": "InferencePool"}}
APPLY = "application/apply-patch+yaml"


_REQUIREMENT = re.compile(
    r"\s*(?:(?P<absent>!)\s*(?P<key_only>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|!=|=|>|<)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<set_op>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,(?=\s*\S)|$)"
)
Requirement = tuple[str, str, frozenset[str]]


@attrs.frozen
class BadRequest(kmock.KubernetesError):
    """A 400, as the API server answers a selector it cannot parse."""

    message: str = "bad request"
    status: int = 400
    reason: str = "BadRequest"


def label_selector(selector: str) -> list[Requirement]:
    """`app=a,tier!=db,env in (x, y),gpu,!legacy,gen>3` as (key, operator, values)
    requirements, as Kubernetes' selector parser reads them; ValueError for anything else."""
    requirements: list[Requirement] = []
    pos = 0
    while pos < len(selector):
        match = _REQUIREMENT.match(selector, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"unable to parse requirement: {selector[pos:]!r}")
        pos = match.end()
        if match["absent"]:
            requirements.append((match["key_only"], "!", frozenset()))
        elif match["op"]:
            op = {"==": "=", "=": "="}.get(match["op"], match["op"])
            requirements.append((match["key"], op, frozenset({match["value"]})))
        elif match["set_op"]:
            values = frozenset(v.strip() for v in match["values"].split(","))
            if values == {""}:
                raise ValueError(f"{match['key']} {match['set_op']} (): needs at least one value")
            requirements.append((match["key"], match["set_op"], values))
        else:
            requirements.append((match["key"], "exists", frozenset()))
    return requirements


def selects(requirements: list[Requirement], obj: dict[str, Any] | None) -> bool:
    """Whether `obj`'s labels meet every requirement (apimachinery's `Requirement.Matches`:
    `!=` and `notin` hold for a missing label, `>` and `<` compare integers)."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    for key, op, values in requirements:
        value = labels.get(key)
        if op in ("=", "in"):
            ok = value in values
        elif op in ("!=", "notin"):
            ok = value not in values
        elif op == "exists":
            ok = key in labels
        elif op == "!":
            ok = key not in labels
        else:  # > or <: both sides integers, else no match
            try:
                have, (bound,) = int(value or ""), [int(v) for v in values]
            except ValueError:
                return False
            ok = have > bound if op == ">" else have < bound
        if not ok:
            return False
    return True


def _requirements(request: Any) -> list[Requirement]:
    try:
        return label_selector(request.params.get("labelSelector") or "")
    except ValueError as e:
        raise BadRequest(message=str(e)) from None


@attrs.frozen
class Unprocessable(kmock.KubernetesError):
    """A 422, as the API server answers a JSON patch it cannot apply (a failed `test`)."""

    message: str = "unprocessable"
    status: int = 422
    reason: str = "Invalid"


@attrs.frozen
class Refused(kmock.KubernetesError):
    """A refusal a test asked for (`KubeEmulator.refusals`): an admission webhook, a quota, an
    etcd timeout."""

    message: str = "refused"
    status: int = 422
    reason: str = "Invalid"


class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with generateName, create-on-apply and label selectors, as a real API
    server has. Tests make it refuse requests through `refusals`: (verb, plural, name or None)
    -> (status, message), verbs as in `api_calls` (get, list, create, patch, delete)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusals: dict[tuple[str, str, str | None], tuple[int, str]] = {}
        self.last_write = time.monotonic()  # of any create, update, patch or delete
        self.revision = itertools.count(1000)  # resourceVersions, as etcd's revision
        self.latest_revision = 999
        # An idle watch that allows bookmarks gets one this often (a real API server: about
        # every minute, which Kopf's 70 s inactivity timeout counts on).
        self.bookmark_seconds = 60.0

    def idle_for(self) -> float:
        """Seconds since anything was written."""
        return time.monotonic() - self.last_write

    async def _serve_list(self, request):  # kmock's fallback for lists (private API)
        requirements = _requirements(request)
        result = await super()._serve_list(request)
        result["items"] = [o for o in result["items"] if selects(requirements, o)]
        # The revision the list is as of, which a watch then starts from.
        result["metadata"] = {
            **result.get("metadata", {}),
            "resourceVersion": str(self.latest_revision),
        }
        return result

    async def _serve_watch(self, request):  # kmock's fallback for watches (private API)
        """Objects filtered by the label selector, as a real API server's watch cache does:
        an object whose change takes it out of the selection comes as DELETED, one that
        enters it as ADDED (what an informer, Kopf's indices included, relies on to forget an
        object whose labels were stripped)."""
        requirements = _requirements(request)
        since = request.params.get("resourceVersion") or ""
        shown: set[tuple[str, str]] = set()  # (namespace, name) this stream holds as selected
        async for event in self._paced(super()._serve_watch(request), request, since):
            kind = event.get("type") if isinstance(event, dict) else None
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                yield event  # the stream's start, bookmarks, errors
                continue
            meta = event["object"].get("metadata") or {}
            key = (meta.get("namespace") or "", meta.get("name") or "")
            version = str(meta.get("resourceVersion") or "")
            if (
                kind == "ADDED"
                and since.isdigit()
                and version.isdigit()
                and int(version) <= int(since)
            ):
                # kmock replays every object to a new watch; one from a resourceVersion (a
                # reconnect, or after a list) gets only what changed since, as from a real one.
                if selects(requirements, event["object"]):
                    shown.add(key)
                continue
            if kind == "DELETED":
                if key in shown:
                    shown.discard(key)
                    yield event
            elif selects(requirements, event["object"]):
                yield event if key in shown else {**event, "type": "ADDED"}
                shown.add(key)
            elif key in shown:  # out of the selection
                shown.discard(key)
                yield {**event, "type": "DELETED"}

    async def _paced(self, events: AsyncIterator[Any], request: Any, since: str):
        """`events` with what a real API server adds over time: a BOOKMARK, carrying the
        revision the stream has seen, when none came for `bookmark_seconds` and the watch
        allows bookmarks; the end of the stream after its `timeoutSeconds`."""
        bookmarks = request.params.get("allowWatchBookmarks") == "true"
        timeout = request.params.get("timeoutSeconds")
        ends = time.monotonic() + float(timeout) if timeout else None
        seen = since if since.isdigit() else None
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def pump() -> None:  # kmock's stream cannot be waited on with a timeout
            try:
                async for event in events:
                    queue.put_nowait(event)
            except Exception as e:
                queue.put_nowait(e)
            queue.put_nowait(done)

        pumping = asyncio.create_task(pump())
        try:
            while True:
                wait = self.bookmark_seconds if bookmarks else None
                if ends is not None:
                    left = ends - time.monotonic()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if bookmarks and seen is not None and time.monotonic() < (ends or math.inf):
                        meta = {"resourceVersion": seen}
                        yield {"type": "BOOKMARK", "object": {"metadata": meta}}
                    continue
                if event is done:
                    return
                if isinstance(event, Exception):
                    raise event
                meta = (
                    (event.get("object") or {}).get("metadata") if isinstance(event, dict) else None
                )
                version = str((meta or {}).get("resourceVersion") or "")
                if version.isdigit() and (seen is None or int(version) > int(seen)):
                    seen = version
                yield event
        finally:
            pumping.cancel()

    async def _handle(self, request):  # kmock's only hook before storage (private API)
        if request.action not in (kmock.action.FETCH, kmock.action.LIST, kmock.action.WATCH):
            self.last_write = time.monotonic()
        if self.refusals and request.resource is not None:
            verb = _verb(request)
            for name in (request.name, None):
                if (
                    refusal := self.refusals.get((verb, request.resource.plural, name))
                ) is not None:
                    raise Refused(message=refusal[1], status=refusal[0])
        data = request.data if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            if meta.get("generateName") and not meta.get("name"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
        if request.action in (kmock.action.CREATE, kmock.action.UPDATE) and data is not None:
            # A merge patch, an apply or a replacement: stored with the object's new version.
            self.latest_revision = next(self.revision)
            data.setdefault("metadata", {})["resourceVersion"] = str(self.latest_revision)
        content_type = {k.lower(): v for k, v in request.headers.items()}.get("content-type", "")
        key = (request.resource, request.namespace, request.name)
        if (
            request.action == kmock.action.UPDATE
            and isinstance(request.data, list)
            and key in self.objects
            and not self.objects[key].deleted
        ):
            # A JSON patch: tried on the object first; applied (with a new resourceVersion) or
            # refused whole.
            try:
                jsonpatch.apply_patch(self.objects[key].raw, request.data)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise Unprocessable(message=f"the patch cannot be applied: {e}") from None
            self.latest_revision = next(self.revision)
            version = {"op": "add", "path": "/metadata/resourceVersion"}
            request.data.append({**version, "value": str(self.latest_revision)})
        if (
            request.action == kmock.action.UPDATE
            and content_type.startswith(APPLY)
            and request.subresource is None
            and (key not in self.objects or self.objects[key].deleted)
        ):
            # Store it first; the apply below then merges into it (and notifies watchers).
            stub = {
                "metadata": {
                    "name": request.name,
                    "namespace": request.namespace,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": _now(),
                }
            }
            if key in self.objects:
                self.objects[key].create(stub)  # kmock keeps deleted objects' history
            else:
                self.objects[key] = stub
        return await super()._handle(request)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# kmock's handles of what tests look up in `emulator.objects`, keyed (resource, namespace, name).
CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
LORA = kmock.resource("serving.vllm.ai/v1alpha1/loraadapters")
DEPLOYMENT = kmock.resource("apps/v1/deployments")
SERVICE = kmock.resource("v1/services")
POD = kmock.resource("v1/pods")
NETPOL = kmock.resource("networking.k8s.io/v1/networkpolicies")
LEADER_WORKER_SET = kmock.resource("leaderworkerset.x-k8s.io/v1/leaderworkersets")
MERGE = {"Content-Type": "application/merge-patch+json"}  # a PATCH's body as a merge patch


def exists(emulator: kmock.KubernetesEmulator, key: tuple) -> bool:
    """Whether the object at `key` (resource, namespace, name) is there: kmock keeps deleted
    objects (with their history), so present and not deleted."""
    return key in emulator.objects and not emulator.objects[key].deleted


async def patch_cr(
    emulator: kmock.KubernetesEmulator,
    namespace: str,
    name: str,
    patch: dict,
    *,
    generation: int | None = None,
) -> None:
    """A user's merge patch of a VLLMDeployment; `generation` as the API server would bump it
    on a spec change (kmock does not)."""
    if generation is not None:
        patch = {**patch, "metadata": {"generation": generation}}
    response = await emulator.patch(f"{cr_path(namespace)}/{name}", json=patch, headers=MERGE)
    assert response.status == 200, await response.text()


def cr_path(namespace: str) -> str:
    """Where a user POSTs VLLMDeployments of `namespace`."""
    return f"/apis/serving.vllm.ai/v1alpha1/namespaces/{namespace}/vllmdeployments"


def lora_path(namespace: str) -> str:
    """Where a user POSTs LoraAdapters of `namespace`."""
    return f"/apis/serving.vllm.ai/v1alpha1/namespaces/{namespace}/loraadapters"


def declare(
    emulator: kmock.KubernetesEmulator,
    *,
    monitoring: bool = False,
    inference_pool: bool = False,
    keda: bool = False,
    keda_http: bool = False,
    lws: bool = False,
) -> None:
    optional = {
        **(LWS if lws else {}),
        **(MONITORING if monitoring else {}),
        **(INFERENCE_POOL if inference_pool else {}),
        **(KEDA if keda else {}),
        **(KEDA_HTTP if keda_http else {}),
    }
    for name, spec in {**RESOURCES, **PEERING, **optional}.items():
        emulator.resources[name] = {"namespaced": True, "verbs": VERBS, **spec}


_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.DELETE: "delete",
}


def _verb(request: Any) -> str:
    if request.action == kmock.action.UPDATE:
        return "update" if request.method.value == "PUT" else "patch"
    return _VERBS[request.action]


def api_calls(emulator: kmock.KubernetesEmulator) -> set[tuple[str, str, str]]:
    """(verb, group, resource[/subresource]) of every request that did not come from the test
    itself (kmock's own client) and was not API discovery."""
    calls = set()
    for r in emulator:
        agent = {k.lower(): v for k, v in r.headers.items()}.get("user-agent", "")
        if agent.startswith("kmock") or r.resource is None or not r.resource.plural:
            continue
        verb = _verb(r)
        plural = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        calls.add((verb, r.resource.group or "", plural))
    return calls


def operator_requests(emulator: kmock.KubernetesEmulator, since: int = 0) -> list[str]:
    """The operator's requests after the emulator's first `since`, as "VERB path": not the
    test's own (kmock's client), not the watch streams (they stay open)."""
    return [
        f"{r.method.value} {r.url.path}"
        for r in list(emulator)[since:]
        if not r.headers.get("User-Agent", "").startswith("kmock")
        and r.action != kmock.action.WATCH
    ]


# Every (verb, group, resource) the operator sent in this process; the tests check them against
# the chart's RBAC record at the end of their session.
SEEN_CALLS: set[tuple[str, str, str]] = set()


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "kmock", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(KeyError, TypeError, IndexError):
            if predicate():
                return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_operator(emulator: kmock.KubernetesEmulator, namespaces: Sequence[str] = ()):
    """The operator as `vllm-operator` runs it (for every namespace, or for `namespaces`),
    stopped at the end; it must exit cleanly."""
    cr = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
    scope = [f"--namespace={ns}" for ns in namespaces] or ["-A"]
    runner = KopfRunner(["run", *scope, "--standalone", "-m", "vllm_operator.handlers"], timeout=30)
    with operator_uses_test_key():  # read at the operator's startup, in its thread
        runner.__enter__()
        try:
            await wait_for(
                lambda: any(r.action == kmock.action.WATCH and r.resource == cr for r in emulator),
                what="the operator to watch VLLMDeployments",
            )
            await asyncio.sleep(0.1)  # the watch stream subscribes to the emulator's events
            yield runner
        finally:
            # KopfRunner joins its thread synchronously; the emulator serves from this loop.
            await asyncio.to_thread(runner.__exit__, *sys.exc_info())
            SEEN_CALLS.update(api_calls(emulator))
    assert runner.exit_code == 0, runner.output


async def create(emulator: kmock.KubernetesEmulator, path: str, obj: dict) -> None:
    """POST as a user would; plus uid, generation and resourceVersion, which the API server
    would set and kmock does not."""
    name = obj["metadata"]["name"]
    obj["metadata"] |= {"uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"}
    response = await emulator.post(path, json=obj)
    assert response.status == 200, await response.text()


def events(emulator: kmock.KubernetesEmulator, reason: str | None = None) -> list[dict]:
    event = kmock.resource("v1/events")
    found = [o for key, o in emulator.objects.items() if key[0] == event and not o.deleted]
    return [e for e in found if reason is None or e.get("reason") == reason]


def pod_status(ip: str, *, ready: bool, restarts: int = 0) -> dict:
    """A running pod's status as the kubelet writes it (tests stand in for the kubelet)."""
    return {
        "phase": "Running",
        "podIP": ip,
        "containerStatuses": [{"name": "server", "ready": ready, "restartCount": restarts}],
    }


def pod_config_error(message: str) -> dict:
    """The status of a pod whose container the kubelet cannot create from the pod's
    configuration (a missing Secret or key of one), as the kubelet writes it: `message` is its
    own, e.g. `secret "hf-token" not found`."""
    waiting = {"reason": "CreateContainerConfigError", "message": message}
    server = {"name": "server", "ready": False, "restartCount": 0, "state": {"waiting": waiting}}
    return {"phase": "Pending", "containerStatuses": [server]}


async def start_pods(
    emulator: kmock.KubernetesEmulator, namespace: str, deployment: str, pods: dict[str, dict]
) -> None:
    """Stand in for the Deployment and ReplicaSet controllers: a ReplicaSet controlled by the
    Deployment (which must exist), and pods from its template controlled by the ReplicaSet, each
    with the given status (see `pod_status`)."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"
    owner = await (await emulator.get(path)).json()
    template = owner["spec"]["template"]
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{deployment}-rs",
            "namespace": namespace,
            "labels": template["metadata"].get("labels", {}),
            "ownerReferences": [_controller(owner)],
        },
        "spec": {"template": template},
    }
    rs_path = f"/apis/apps/v1/namespaces/{namespace}/replicasets"
    if (await emulator.get(f"{rs_path}/{deployment}-rs")).status == 404:
        assert (await emulator.post(rs_path, json=replica_set)).status == 200
    replica_set = await (await emulator.get(f"{rs_path}/{deployment}-rs")).json()
    for name, status in pods.items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                **template["metadata"],
                "ownerReferences": [_controller(replica_set)],
            },
            "spec": template["spec"],
            "status": status,
        }
        response = await emulator.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
        assert response.status == 200, await response.text()


LWS_LABEL = "leaderworkerset.sigs.k8s.io"


async def start_group(
    emulator: kmock.KubernetesEmulator,
    namespace: str,
    lws_name: str,
    group: int,
    statuses: list[dict],
) -> list[dict]:
    """Stand in for LeaderWorkerSet's controllers for group `group` of the LeaderWorkerSet
    (which must exist): its leader StatefulSet (controlled by the LeaderWorkerSet), the leader
    pod `NAME-GROUP` from the leader template, a StatefulSet of the group's workers controlled
    by the leader pod, and the workers `NAME-GROUP-INDEX` from the worker template, with the
    labels LeaderWorkerSet gives them. `statuses`: the leader's, then each worker's (see
    `pod_status`). Returns the pods, leader first."""
    path = f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{namespace}/leaderworkersets/{lws_name}"
    lws = await (await emulator.get(path)).json()
    templates = lws["spec"]["leaderWorkerTemplate"]
    sets_path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    pods_path = f"/api/v1/namespaces/{namespace}/pods"

    async def stateful_set(name: str, owner: dict, template: dict) -> dict:
        body = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(lws["metadata"].get("labels") or {}),  # LWS copies its own
                "ownerReferences": [_controller(owner)],
            },
            "spec": {"template": template},
        }
        if (await emulator.get(f"{sets_path}/{name}")).status == 404:
            assert (await emulator.post(sets_path, json=body)).status == 200
        return await (await emulator.get(f"{sets_path}/{name}")).json()

    async def pod(name: str, owner: dict, template: dict, index: int, status: dict) -> dict:
        meta = template["metadata"]
        labels = {
            **meta.get("labels", {}),
            f"{LWS_LABEL}/name": lws_name,
            f"{LWS_LABEL}/group-index": str(group),
            f"{LWS_LABEL}/worker-index": str(index),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [_controller(owner)],
            },
            "spec": template["spec"],
            "status": status,
        }
        response = await emulator.post(pods_path, json=body)
        assert response.status == 200, await response.text()
        return await (await emulator.get(f"{pods_path}/{name}")).json()

    leaders = await stateful_set(lws_name, lws, templates["leaderTemplate"])
    leader_name = f"{lws_name}-{group}"
    leader = await pod(leader_name, leaders, templates["leaderTemplate"], 0, statuses[0])
    workers = await stateful_set(leader_name, leader, templates["workerTemplate"])
    return [leader] + [
        await pod(f"{leader_name}-{i}", workers, templates["workerTemplate"], i, status)
        for i, status in enumerate(statuses[1:], start=1)
    ]


async def recreate_group(
    emulator: kmock.KubernetesEmulator,
    namespace: str,
    lws_name: str,
    group: int,
    statuses: list[dict],
) -> list[dict]:
    """What LeaderWorkerSet does when a pod of a group restarts (RecreateGroupOnPodRestart):
    the leader goes, and with it (garbage collection) its workers' StatefulSet and the workers;
    then the group is created again, with new uids."""
    leader_name = f"{lws_name}-{group}"
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    size = len(statuses)
    for name in [leader_name, *(f"{leader_name}-{i}" for i in range(1, size))]:
        await emulator.delete(f"{pods_path}/{name}")
    await emulator.delete(f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{leader_name}")
    return await start_group(emulator, namespace, lws_name, group, statuses)


def _controller(owner: dict) -> dict:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", "apps/v1"),
        "kind": owner.get("kind", "ReplicaSet"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
