"""The operator reads the cluster from its watch streams (Kopf's indices, `clients.cache`): a
model at rest costs the API server no request, and whatever changes behind its back is seen
from the watch events, not from reads of every child. The real operator against kmock's
emulator, whose every write gives the object a new resourceVersion as etcd does."""

from __future__ import annotations

import asyncio
import collections
import json

import kmock
import pytest

from vllm_operator.clients.cache import CachedKube, ObjectCache, index_keys
from vllm_operator.clients.kube import Kube
from vllm_operator.config import Settings
from vllm_operator.model.builders import DEPLOYMENT_LABEL
from vllm_operator.reconcile.reconciler import Reconciler
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    MERGE,
    NETPOL,
    SERVICE,
    KubeEmulator,
    cr_path,
    create,
    declare,
    exists,
    operator_requests,
    running_operator,
    wait_for,
)
from vllm_testkit.samples import IMAGES, vllmd

NS = "models"
PDB = kmock.resource("policy/v1/poddisruptionbudgets")
SPEC = {"model": {"uri": "/m"}, "accelerator": "CPU", "replicas": 2}
CHILDREN = [(DEPLOYMENT, "deployments", "apps/v1"), (SERVICE, "services", "v1"),
            (NETPOL, "networkpolicies", "networking.k8s.io/v1"),
            (PDB, "poddisruptionbudgets", "policy/v1")]  # fmt: skip


def path(api_version: str, plural: str, name: str) -> str:
    root = "/apis" if "/" in api_version else "/api"
    return f"{root}/{api_version}/namespaces/{NS}/{plural}/{name}"


async def converged(emulator: kmock.KubernetesEmulator) -> None:
    await wait_for(
        lambda: (
            all(exists(emulator, (kind, NS, "m")) for kind, _, _ in CHILDREN)
            and "conditions" in (emulator.objects[CR, NS, "m"].get("status") or {})
        ),
        what="the children and the status",
    )
    while emulator.idle_for() < 1.0:  # what the creation set going is over
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_model_at_rest_costs_the_api_server_nothing(kmock, kubeconfig, monkeypatch):
    """Drift checks every 0.2 s find nothing drifted, from the watch cache: no request (the old
    operator read every child and listed every kind, each round)."""
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "0.2")
    declare(kmock)
    async with running_operator(kmock) as runner:
        await create(kmock, cr_path(NS), vllmd("m", SPEC, NS))
        await converged(kmock)
        since = len(list(kmock))
        await asyncio.sleep(2.0)  # ten drift checks
        assert operator_requests(kmock, since) == []
    assert "drift check" not in runner.output  # none failed (the output is the stopped run's)


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_new_model_reads_each_child_once_and_never_again(kmock, kubeconfig):
    """Bringing a model up reads a child only where the cache has none of that name (someone
    else's object, which the watch by our label cannot show, may hold it), once; the events of
    our own writes coming back reconcile nothing."""
    declare(kmock)
    async with running_operator(kmock):
        since = len(list(kmock))
        await create(kmock, cr_path(NS), vllmd("m", SPEC, NS))
        await converged(kmock)
        sent = collections.Counter(operator_requests(kmock, since))
    reads = {request: n for request, n in sent.items() if request.startswith("GET")}
    assert reads == {
        f"GET {path(api_version, plural, 'm')}": 1 for _, plural, api_version in CHILDREN
    }
    writes = {request: n for request, n in sent.items() if not request.startswith("GET")}
    # Each child applied once; the CR patched by Kopf (its handled spec) and by its status.
    assert all(n == 1 for request, n in writes.items() if "/vllmdeployments/" not in request)
    assert sum(sent.values()) <= 10, sent


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_children_changed_behind_its_back_come_back_from_their_watch_events(
    kmock, kubeconfig, monkeypatch
):
    """With no drift check for an hour, a deleted NetworkPolicy and Service, an edited
    PodDisruptionBudget and Deployment are put back by their own watch events (the old operator
    saw only its Deployments' and deleted Services' events: the rest waited for the drift
    check)."""
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "3600")
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, cr_path(NS), vllmd("m", SPEC, NS))
        await converged(kmock)
        wanted_pdb = kmock.objects[PDB, NS, "m"]["spec"]
        wanted_image = kmock.objects[DEPLOYMENT, NS, "m"]["spec"]["template"]["spec"]

        for gone in [path("networking.k8s.io/v1", "networkpolicies", "m"),
                     path("v1", "services", "m")]:  # fmt: skip
            assert (await kmock.delete(gone)).status == 200
        edit = {"spec": {"maxUnavailable": 2}}
        pdb = path("policy/v1", "poddisruptionbudgets", "m")
        assert (await kmock.patch(pdb, json=edit, headers=MERGE)).status == 200
        containers = [{**c, "image": "someone/else:1"} for c in wanted_image["containers"]]
        edit = {"spec": {"template": {"spec": {"containers": containers}}}}
        deployment = path("apps/v1", "deployments", "m")
        assert (await kmock.patch(deployment, json=edit, headers=MERGE)).status == 200

        await wait_for(
            lambda: exists(kmock, (NETPOL, NS, "m")) and exists(kmock, (SERVICE, NS, "m")),
            what="the NetworkPolicy and the Service back",
        )
        await wait_for(
            lambda: kmock.objects[PDB, NS, "m"]["spec"] == wanted_pdb, what="the PDB as wanted"
        )
        await wait_for(
            lambda: kmock.objects[DEPLOYMENT, NS, "m"]["spec"]["template"]["spec"] == wanted_image,
            what="the Deployment's template as wanted",
        )


# --- the cache itself, over a stand-in of Kopf's indices (a dict of key -> bodies) ---


def body(name: str, version: str, *, uid: str = "u1", deployment: str = "m") -> dict:
    labels = {DEPLOYMENT_LABEL: deployment}
    return {"kind": "Service", "metadata": {"name": name, "namespace": NS, "uid": uid,
            "resourceVersion": version, "labels": labels, "managedFields": [{"manager": "x"}]}}  # fmt: skip


class IndexStandIn(dict):
    """What Kopf's index of one kind holds: each key -> the bodies `index_keys` put there."""

    def put(self, obj: dict) -> None:
        self.drop(obj["metadata"]["name"], obj["metadata"]["uid"])
        for key, value in index_keys("Service", obj).items():
            self.setdefault(key, []).append(value)

    def drop(self, name: str, uid: str) -> None:
        for key in list(self):
            self[key] = [b for b in self[key] if (b["metadata"]["name"], b["metadata"]["uid"]) != (name, uid)]  # fmt: skip
            if not self[key]:
                del self[key]


def test_the_index_keeps_each_object_but_its_managed_fields_with_equal_strings_shared():
    # Two objects parsed from their own JSON, as Kopf's watch streams hand them over.
    first, second = (json.loads(json.dumps(body(n, "7", deployment="model-a"))) for n in "ab")
    first["spec"] = {"ports": [{"name": "http", "port": 8000}]}
    one, other = (index_keys("Service", obj) for obj in (first, second))
    assert set(one) == {("name", NS, "a"), ("group", NS, "model-a")}
    kept = one["name", NS, "a"]
    assert one["group", NS, "model-a"] is kept
    meta = {k: v for k, v in first["metadata"].items() if k != "managedFields"}
    assert kept == {**first, "metadata": meta}
    assert "managedFields" in first["metadata"]  # Kopf's body as it was

    # The parsed objects each have their own strings; what the index keeps shares them.
    label = [b["metadata"]["labels"][DEPLOYMENT_LABEL] for b in (first, second)]
    assert label[0] == label[1] and label[0] is not label[1]
    label = [b["metadata"]["labels"][DEPLOYMENT_LABEL] for b in (kept, other["name", NS, "b"])]
    assert label[0] is label[1]
    keys = [list(b["metadata"]["labels"]) for b in (kept, other["name", NS, "b"])]
    assert keys[0][0] is keys[1][0]


def test_what_we_wrote_is_read_until_the_watch_catches_up():
    index = IndexStandIn()
    cache = ObjectCache({"Service": index})
    index.put(body("s", "10"))
    assert cache.get("Service", NS, "s")["metadata"]["resourceVersion"] == "10"
    assert "managedFields" not in cache.get("Service", NS, "s")["metadata"]

    cache.wrote("Service", body("s", "12"))
    index.put(body("s", "11"))  # an older event, still on its way when we wrote
    assert not cache.observed("Service", body("s", "11"))  # not ours: someone's change
    assert cache.get("Service", NS, "s")["metadata"]["resourceVersion"] == "12"
    index.put(body("s", "12"))
    assert cache.observed("Service", body("s", "12"))  # ours, coming back: nothing new
    index.put(body("s", "13"))  # someone's change after ours
    assert not cache.observed("Service", body("s", "13"))  # ours was forgotten
    assert cache.get("Service", NS, "s")["metadata"]["resourceVersion"] == "13"


def test_the_cache_is_ready_with_the_first_watch_event_a_handler_sees():
    """Kopf calls a handler only once every index is listed (the drift check waits for it)."""
    cache = ObjectCache({"Service": IndexStandIn()})
    assert not cache.ready
    cache.observed("Service", body("s", "1"))
    assert cache.ready


def test_a_new_object_of_ours_is_in_its_group_before_the_watch_shows_it():
    cache = ObjectCache({"Service": IndexStandIn()})
    cache.wrote("Service", body("s", "5"))
    cache.wrote("Service", body("other", "6", deployment="n"))
    assert [b["metadata"]["name"] for b in cache.group("Service", NS, "m")] == ["s"]
    assert cache.get("Service", NS, "nothing") is None


def test_what_we_deleted_is_gone_until_the_index_drops_it_or_holds_a_new_one():
    index = IndexStandIn()
    cache = ObjectCache({"Service": index})
    index.put(body("s", "10"))
    cache.deleted("Service", NS, "s")
    assert cache.get("Service", NS, "s") is None
    assert cache.group("Service", NS, "m") == []
    index.put(body("s", "20", uid="u2"))  # made again, by whoever
    assert cache.get("Service", NS, "s")["metadata"]["uid"] == "u2"


def test_versions_that_are_not_integers_trust_the_index_once_it_moves():
    index = IndexStandIn()
    cache = ObjectCache({"Service": index})
    index.put(body("s", "a"))
    cache.wrote("Service", body("s", "c"))
    assert cache.get("Service", NS, "s")["metadata"]["resourceVersion"] == "c"
    index.put(body("s", "b"))
    assert cache.get("Service", NS, "s")["metadata"]["resourceVersion"] == "b"


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_no_drift_check_reads_a_cache_kopf_is_still_listing(kmock):
    """The drift loop runs beside Kopf, which calls no handler before every index is listed: a
    drift check then would see a deployment without its adapters (and unload them) or without
    its children (and ask for each). It waits for the first watch event instead."""
    declare(kmock)
    await create(kmock, cr_path(NS), vllmd("m", SPEC, NS))
    half_listed = IndexStandIn()
    for key, value in index_keys("VLLMDeployment", kmock.objects[CR, NS, "m"].raw).items():
        half_listed.setdefault(key, []).append(value)
    indices = {"VLLMDeployment": half_listed, "LoraAdapter": IndexStandIn()}
    indices |= {kind: IndexStandIn() for kind in ("Deployment", "Service", "Pod", "ReplicaSet")}
    kube = CachedKube(Kube(str(kmock.url).rstrip("/"), False), ObjectCache(indices))
    try:
        reconciler = Reconciler(kube, None, Settings(images=IMAGES, namespace="vllm-system"))  # type: ignore[arg-type]
        since = len(list(kmock))
        await reconciler.check_drift()
        assert operator_requests(kmock, since) == []
    finally:
        await kube.close()
