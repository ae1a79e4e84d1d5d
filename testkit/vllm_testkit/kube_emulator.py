"""A Kubernetes API for operator tests: kmock's in-memory emulator, served over real HTTP, plus
the little a real API server does that kmock 0.8 does not and the operator relies on.

What kmock does not emulate, and what these tests therefore do not show (the kind e2e suite
does): resourceVersion/uid/generation bookkeeping, owner-reference garbage collection, RBAC,
admission (schema, CEL, defaulting), server-side apply's field ownership (an apply is a merge
here), and subresources as separate endpoints (/status and /scale patch the whole object).

Added here, as a real API server behaves (named so, in `KubeEmulator`):
- `metadata.generateName` names the object (Kopf's Events use it);
- server-side apply of a missing object creates it;
- `labelSelector` on lists and watches (equality and set-based requirements); a watch does not
  turn an object that stops matching into a DELETED event, as a real one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import kmock
from kopf.testing import KopfRunner

VERBS = ["create", "get", "list", "watch", "patch", "update", "delete"]
RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False, "verbs": ["get", "list", "watch"]},
    "v1/pods": {"kind": "Pod", "subresources": ["status"]},
    "v1/services": {"kind": "Service"},
    "v1/events": {"kind": "Event"},
    "v1/secrets": {"kind": "Secret"},
    "v1/persistentvolumeclaims": {"kind": "PersistentVolumeClaim"},
    "apps/v1/deployments": {"kind": "Deployment", "subresources": ["status", "scale"]},
    "policy/v1/poddisruptionbudgets": {"kind": "PodDisruptionBudget"},
    "networking.k8s.io/v1/networkpolicies": {"kind": "NetworkPolicy"},
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
}
MONITORING = {
    "monitoring.coreos.com/v1/servicemonitors": {"kind": "ServiceMonitor"},
    "monitoring.coreos.com/v1/podmonitors": {"kind": "PodMonitor"},
}
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


class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with generateName, create-on-apply and label selectors, as a real API
    server has."""

    async def _serve_list(self, request):  # kmock's fallback for lists (private API)
        requirements = _requirements(request)
        result = await super()._serve_list(request)
        result["items"] = [o for o in result["items"] if selects(requirements, o)]
        return result

    async def _serve_watch(self, request):  # kmock's fallback for watches (private API)
        requirements = _requirements(request)
        async for event in super()._serve_watch(request):
            # Objects are filtered; anything else (the stream's start, errors) passes.
            kind = event.get("type") if isinstance(event, dict) else None
            if kind not in ("ADDED", "MODIFIED", "DELETED") or selects(
                requirements, event["object"]
            ):
                yield event

    async def _handle(self, request):  # kmock's only hook before storage (private API)
        data = request.data if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            if meta.get("generateName") and not meta.get("name"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)
        content_type = {k.lower(): v for k, v in request.headers.items()}.get("content-type", "")
        key = (request.resource, request.namespace, request.name)
        if (
            request.action == kmock.action.UPDATE
            and content_type.startswith(APPLY)
            and request.subresource is None
            and (key not in self.objects or self.objects[key].deleted)
        ):
            # Store it first; the apply below then merges into it (and notifies watchers).
            stub = {"metadata": {"name": request.name, "namespace": request.namespace}}
            if key in self.objects:
                self.objects[key].create(stub)  # kmock keeps deleted objects' history
            else:
                self.objects[key] = stub
        return await super()._handle(request)


def declare(emulator: kmock.KubernetesEmulator, *, monitoring: bool = False) -> None:
    for name, spec in {**RESOURCES, **PEERING, **(MONITORING if monitoring else {})}.items():
        emulator.resources[name] = {"namespaced": True, "verbs": VERBS, **spec}


def api_calls(emulator: kmock.KubernetesEmulator) -> set[tuple[str, str, str]]:
    """(verb, group, resource[/subresource]) of every request that did not come from the test
    itself (kmock's own client) and was not API discovery."""
    verbs = {
        kmock.action.LIST: "list",
        kmock.action.WATCH: "watch",
        kmock.action.FETCH: "get",
        kmock.action.CREATE: "create",
        kmock.action.DELETE: "delete",
    }
    calls = set()
    for r in emulator:
        agent = {k.lower(): v for k, v in r.headers.items()}.get("user-agent", "")
        if agent.startswith("kmock") or r.resource is None or not r.resource.plural:
            continue
        if r.action == kmock.action.UPDATE:
            verb = "update" if r.method.value == "PUT" else "patch"
        else:
            verb = verbs[r.action]
        plural = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        calls.add((verb, r.resource.group or "", plural))
    return calls


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
async def running_operator(emulator: kmock.KubernetesEmulator):
    """The operator as `vllm-operator` runs it, stopped at the end; it must exit cleanly."""
    cr = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
    runner = KopfRunner(["run", "-A", "--standalone", "-m", "vllm_operator.handlers"], timeout=30)
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
