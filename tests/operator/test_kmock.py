"""The real operator (Kopf, in-process through `kopf.testing.KopfRunner`) against kmock's
Kubernetes emulator over HTTP: what it creates, what it writes, what it sends.

kmock's gaps are listed in `kube_emulator.py`; where a test stands in for the API server (uid,
generation, the Deployment controller's status), it says so.
"""

from __future__ import annotations

import asyncio

import kmock
import pytest
from prometheus_client import REGISTRY

from vllm_operator.model.builders import ADAPTERS_LOADED, build_deployment, build_service
from vllm_operator.model.spec import parse_deployment
from vllm_testkit import kube_emulator
from vllm_testkit.admin_key import PUBLIC_KEY
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    MERGE,
    NETPOL,
    POD,
    SERVICE,
    KubeEmulator,
    cr_path,
    create,
    declare,
    events,
    exists,
    pod_config_error,
    pod_status,
    running_operator,
    start_pods,
    wait_for,
)
from vllm_testkit.samples import GOOD, IMAGES, vllmd

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
PDB = kmock.resource("policy/v1/poddisruptionbudgets")
SERVICE_MONITOR = kmock.resource("monitoring.coreos.com/v1/servicemonitors")
POOL = kmock.resource("inference.networking.k8s.io/v1/inferencepools")
EVENT = kmock.resource("v1/events")
CR_PATH = cr_path(NS)


async def patch_cr(emulator, name: str, patch: dict, *, generation: int | None = None):
    await kube_emulator.patch_cr(emulator, NS, name, patch, generation=generation)


def cr(emulator, name: str) -> dict:
    return emulator.objects[CR, NS, name]


def condition(emulator, name: str, type_: str) -> dict:
    return next(c for c in cr(emulator, name)["status"]["conditions"] if c["type"] == type_)


async def test_create_builds_children_and_writes_status(kmock, kubeconfig):
    declare(kmock)
    body = GOOD["cpu-tiny"] | {"metadata": {"name": "tiny", "namespace": NS}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, body)
        await wait_for(lambda: "conditions" in cr(kmock, "tiny")["status"], what="a status")
        await wait_for(lambda: exists(kmock, (SERVICE, NS, "tiny")), what="the Service")

    expected = parse_deployment(vllmd("tiny", GOOD["cpu-tiny"]["spec"], NS), IMAGES)
    deployment = kmock.objects[DEPLOYMENT, NS, "tiny"]
    assert deployment >= {"spec": build_deployment(expected, PUBLIC_KEY)["spec"]}
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-tiny"
    assert kmock.objects[SERVICE, NS, "tiny"] >= {"spec": build_service(expected)["spec"]}
    assert not exists(kmock, (PDB, NS, "tiny"))  # one replica
    status = cr(kmock, "tiny")["status"]
    assert status["observedGeneration"] == 1
    assert status["selector"] == "app.kubernetes.io/name=vllm,serving.vllm.ai/deployment=tiny"
    assert status["url"] == f"http://tiny.{NS}.svc:8000/v1"
    assert (status["replicas"], status["readyReplicas"], status["readyText"]) == (0, 0, "0/1")
    assert condition(kmock, "tiny", "Available")["status"] == "False"
    assert condition(kmock, "tiny", "Progressing")["reason"] == "RollingOut"
    assert condition(kmock, "tiny", "Degraded")["status"] == "False"
    # Kopf's own bookkeeping stays in annotations with our prefix.
    annotations = cr(kmock, "tiny")["metadata"]["annotations"]
    assert all(key.startswith("serving.vllm.ai/") for key in annotations)


async def test_status_follows_the_deployment_and_events_mark_transitions(kmock, kubeconfig):
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("llama", {"model": {"uri": "hf://org/llama"}}, NS))
        await wait_for(lambda: "conditions" in cr(kmock, "llama")["status"])
        # Standing in for the Deployment controller: the pod became ready.
        ready = {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/llama/status"
        assert (await kmock.patch(path, json=ready, headers=MERGE)).status == 200
        await wait_for(lambda: condition(kmock, "llama", "Available")["status"] == "True")
        await wait_for(lambda: events(kmock, "MinimumReplicasReady"), what="an event")

    status = cr(kmock, "llama")["status"]
    assert (status["readyReplicas"], status["readyText"]) == (1, "1/1")
    assert condition(kmock, "llama", "Progressing")["reason"] == "RolloutComplete"
    (event,) = events(kmock, "MinimumReplicasReady")
    assert event["type"] == "Normal"
    assert event["involvedObject"]["name"] == "llama"


async def test_update_scale_and_prune(kmock, kubeconfig):
    declare(kmock)
    spec = {"model": {"uri": "/m"}, "networkPolicy": {"enabled": True}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", spec, NS))
        await wait_for(lambda: exists(kmock, (NETPOL, NS, "m")), what="the NetworkPolicy")

        await patch_cr(kmock, "m", {"spec": {"replicas": 3}}, generation=2)
        await wait_for(lambda: kmock.objects[DEPLOYMENT, NS, "m"]["spec"]["replicas"] == 3)
        await wait_for(lambda: exists(kmock, (PDB, NS, "m")), what="a PodDisruptionBudget")
        await wait_for(lambda: cr(kmock, "m")["status"]["observedGeneration"] == 2)

        # An autoscaler drives the scale subresource; the operator follows, never fights it.
        scale = f"{CR_PATH}/m/scale"
        body = {"spec": {"replicas": 2}, "metadata": {"generation": 3}}
        assert (await kmock.patch(scale, json=body, headers=MERGE)).status == 200
        await wait_for(lambda: kmock.objects[DEPLOYMENT, NS, "m"]["spec"]["replicas"] == 2)

        await patch_cr(kmock, "m", {"spec": {"networkPolicy": {"enabled": False}}}, generation=4)
        await wait_for(lambda: not exists(kmock, (NETPOL, NS, "m")), what="the prune")
        await asyncio.sleep(0.5)
    assert kmock.objects[DEPLOYMENT, NS, "m"]["spec"]["replicas"] == 2
    assert exists(kmock, (PDB, NS, "m"))


async def test_deleted_service_comes_back(kmock, kubeconfig):
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("svc", {"model": {"uri": "/m"}}, NS))
        await wait_for(lambda: exists(kmock, (SERVICE, NS, "svc")))
        deleted = await kmock.delete(f"/api/v1/namespaces/{NS}/services/svc")
        assert deleted.status == 200
        assert not exists(kmock, (SERVICE, NS, "svc"))
        await wait_for(lambda: exists(kmock, (SERVICE, NS, "svc")), what="the Service again")


async def test_monitoring_objects_only_where_their_crds_exist(kmock, kubeconfig):
    declare(kmock, monitoring=True)
    spec = {"model": {"uri": "/m"}, "monitoring": {"serviceMonitor": True}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("mon", spec, NS))
        await wait_for(lambda: exists(kmock, (SERVICE_MONITOR, NS, "mon")))


EPP = {"name": "epp", "port": {"number": 9002}}


async def test_inference_pool_created_owned_reported_and_pruned(kmock, kubeconfig):
    declare(kmock, inference_pool=True)
    spec = {"model": {"uri": "/m"}, "inferencePool": {"endpointPickerRef": EPP}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("gie", spec, NS))
        await wait_for(lambda: exists(kmock, (POOL, NS, "gie")), what="the InferencePool")
        await wait_for(lambda: any(
            c["type"] == "InferencePoolCreated" for c in cr(kmock, "gie")["status"]["conditions"]
        ), what="the condition")  # fmt: skip
        created = condition(kmock, "gie", "InferencePoolCreated")
        assert (created["status"], created["reason"]) == ("True", "Created")
        assert condition(kmock, "gie", "Degraded")["status"] == "False"
        pool, deployment = kmock.objects[POOL, NS, "gie"], kmock.objects[DEPLOYMENT, NS, "gie"]
        assert pool["spec"] == {
            "selector": deployment["spec"]["selector"],
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": EPP,
        }
        (owner,) = pool["metadata"]["ownerReferences"]
        assert owner["uid"] == cr(kmock, "gie")["metadata"]["uid"] and owner["controller"]

        await patch_cr(kmock, "gie", {"spec": {"inferencePool": None}}, generation=2)
        await wait_for(lambda: not exists(kmock, (POOL, NS, "gie")), what="the prune")
        await wait_for(lambda: cr(kmock, "gie")["status"]["observedGeneration"] == 2)
        types = [c["type"] for c in cr(kmock, "gie")["status"]["conditions"]]
        assert "InferencePoolCreated" not in types


async def test_inference_pool_of_someone_else_is_left_alone(kmock, kubeconfig):
    declare(kmock, inference_pool=True)
    foreign = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
               "metadata": {"name": "gie", "namespace": NS}, "spec": {"targetPorts": []}}  # fmt: skip
    path = f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools"
    await create(kmock, path, foreign)
    spec = {"model": {"uri": "/m"}, "inferencePool": {"endpointPickerRef": EPP}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("gie", spec, NS))
        await wait_for(lambda: any(
            c["type"] == "InferencePoolCreated" for c in cr(kmock, "gie")["status"]["conditions"]
        ), what="the condition")  # fmt: skip
        created = condition(kmock, "gie", "InferencePoolCreated")
        assert (created["status"], created["reason"]) == ("False", "NameConflict")
        assert "InferencePool/gie exists and is not controlled" in created["message"]
    assert kmock.objects[POOL, NS, "gie"]["spec"] == {"targetPorts": []}


async def test_inference_pool_without_its_crd_is_reported_not_degraded(kmock, kubeconfig):
    declare(kmock)  # no Gateway API Inference Extension
    spec = {"model": {"uri": "/m"}, "inferencePool": {"endpointPickerRef": EPP}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("nogie", spec, NS))
        await wait_for(lambda: exists(kmock, (SERVICE, NS, "nogie")), what="the Service")
        await wait_for(lambda: any(
            c["type"] == "InferencePoolCreated"
            for c in cr(kmock, "nogie")["status"]["conditions"]
        ), what="the condition")  # fmt: skip
        created = condition(kmock, "nogie", "InferencePoolCreated")
        assert (created["status"], created["reason"]) == ("False", "CRDNotInstalled")
        assert condition(kmock, "nogie", "Degraded")["status"] == "False"
        await wait_for(lambda: events(kmock, "CRDNotInstalled"), what="a Warning event")
        assert events(kmock, "CRDNotInstalled")[0]["type"] == "Warning"


async def test_pods_the_kubelet_cannot_start_are_degraded_naming_them_until_they_run(
    kmock, kubeconfig
):
    """A missing Secret: the children are applied all the same (the pods exist only then); the
    kubelet cannot start the pods and says why in their status, which the VLLMDeployment's
    status and a Warning event repeat (a CPU model without LoRA: every pod of ours is
    watched)."""
    declare(kmock)
    spec = {"model": {"uri": "/m"}, "accelerator": "CPU", "hfTokenSecret": {"name": "hf-token"}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("sec", spec, NS))
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "sec")), what="the Deployment")
        await wait_for(lambda: condition(kmock, "sec", "Degraded")["status"] == "False")
        # Standing in for the Deployment and ReplicaSet controllers, and the kubelet.
        message = 'secret "hf-token" not found'
        await start_pods(kmock, NS, "sec", {"sec-abc": pod_config_error(message)})
        await wait_for(lambda: condition(kmock, "sec", "Degraded")["status"] == "True")
        degraded = condition(kmock, "sec", "Degraded")
        assert degraded["reason"] == "SecretNotFound"
        assert degraded["message"] == f"pod sec-abc cannot start: {message}"
        await wait_for(lambda: events(kmock, "SecretNotFound"), what="a Warning event")
        (event,) = events(kmock, "SecretNotFound")
        assert event["type"] == "Warning"
        assert event["message"] == f"Degraded=True: pod sec-abc cannot start: {message}"

        # Another key missing instead: the message follows.
        key = "couldn't find key token in Secret models/hf-token"
        path = f"/api/v1/namespaces/{NS}/pods/sec-abc/status"
        patch = {"status": pod_config_error(key)}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await wait_for(lambda: key in condition(kmock, "sec", "Degraded")["message"])

        # The user creates the Secret; the kubelet starts the container: Degraded clears.
        patch = {"status": pod_status("10.0.0.9", ready=False)}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await wait_for(lambda: condition(kmock, "sec", "Degraded")["status"] == "False")
        await wait_for(lambda: events(kmock, "AsExpected"), what="a Normal event")
    assert condition(kmock, "sec", "Degraded")["message"] == ""


async def test_invalid_spec_is_a_permanent_error_not_a_hot_loop(kmock, kubeconfig):
    declare(kmock)
    spec = {
        "model": {"uri": "/m"},
        "gpusPerReplica": 2,
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    async with running_operator(kmock) as runner:
        await create(kmock, CR_PATH, vllmd("bad", spec, NS))
        await wait_for(lambda: condition(kmock, "bad", "Degraded")["reason"] == "InvalidSpec")
        await wait_for(lambda: events(kmock, "InvalidSpec"))
        before = len(list(kmock))
        await asyncio.sleep(2)
        after = len(list(kmock))
    # Kopf was told not to retry (a TemporaryError would retry after 5 s, beyond this test).
    assert "failed permanently: invalid spec" in runner.output
    assert "failed temporarily" not in runner.output
    assert "nvidia.com/gpu" in condition(kmock, "bad", "Degraded")["message"]
    assert not exists(kmock, (DEPLOYMENT, NS, "bad"))
    assert after - before < 5  # no retry storm


def reconciles_ok() -> float:
    labels = {"kind": "VLLMDeployment", "result": "ok"}
    return REGISTRY.get_sample_value("vllm_operator_reconciles_total", labels) or 0.0


async def test_restart_resumes_without_writing_anything_new(kmock, kubeconfig):
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("keep", {"model": {"uri": "/m"}}, NS))
        await wait_for(lambda: "conditions" in cr(kmock, "keep")["status"])
        await asyncio.sleep(0.5)
    status = cr(kmock, "keep")["status"]
    before = len(list(kmock))
    reconciles = reconciles_ok()
    async with running_operator(kmock):
        await wait_for(lambda: reconciles_ok() > reconciles, what="the resume reconcile")
    assert cr(kmock, "keep")["status"] == status  # same status, same transition times
    # The reconciler's own client (not Kopf's bookkeeping) wrote nothing: no apply, no status.
    agents = ("kmock", "kopf")
    writes = [
        (r.method.value, r.url.path)
        for r in list(kmock)[before:]
        if r.method.value != "GET" and not r.headers.get("User-Agent", "").startswith(agents)
    ]
    assert writes == []


async def test_pods_with_no_adapters_pass_the_readiness_gate(kmock, kubeconfig):
    declare(kmock)
    spec = {"model": {"uri": "/m"}, "lora": {"enabled": True}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("lora", spec, NS))
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "lora")))
        template = kmock.objects[DEPLOYMENT, NS, "lora"].raw["spec"]["template"]
        assert template["spec"]["readinessGates"] == [{"conditionType": ADAPTERS_LOADED}]
        # Standing in for the Deployment and ReplicaSet controllers: a pod from the template.
        await start_pods(kmock, NS, "lora", {"lora-abc": {}})
        await wait_for(
            lambda: (
                kmock.objects[POD, NS, "lora-abc"]["status"]["conditions"][0]["status"] == "True"
            ),
            what="the readiness gate",
        )
    gate = kmock.objects[POD, NS, "lora-abc"]["status"]["conditions"][0]
    assert gate["type"] == ADAPTERS_LOADED
    assert gate["reason"] == "NoAdapters"


async def test_delete_leaves_cleanup_to_garbage_collection(kmock, kubeconfig):
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("gone", {"model": {"uri": "/m"}}, NS))
        await wait_for(lambda: "conditions" in cr(kmock, "gone")["status"])
        await asyncio.sleep(0.5)  # let the first reconcile's echoes settle
        before = len(list(kmock))
        assert (await kmock.delete(f"{CR_PATH}/gone")).status == 200
        await asyncio.sleep(1.0)
        after = [r for r in list(kmock)[before:] if r.method.value != "GET"]
    # The children carry a controller owner reference: the API server's garbage collector
    # (which kmock lacks) deletes them. The operator neither recreates nor touches them.
    assert kmock.objects[DEPLOYMENT, NS, "gone"]["metadata"]["ownerReferences"][0]["uid"] == (
        "uid-gone"
    )
    # The reconciler's own client (not Kopf's bookkeeping, not the test's) wrote nothing.
    agents = ("kmock", "kopf")
    ours = [r for r in after if not r.headers.get("User-Agent", "").startswith(agents)]
    assert [(r.method.value, r.url.path) for r in ours] == []
