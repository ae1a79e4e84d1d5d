"""Never touch what is not ours: the real operator against the emulated API server, each test an
attack (or a fault) that worked before the fix.

- An object a user made under a child's name is never applied over, adopted or pruned: the
  VLLMDeployment is Degraded (NameConflict) naming it, and the other children go on.
- A claim is created when missing and never written again.
- One refused child does not stop the others (the Deployment still rolls out and scales).
- A child stripped of its labels (out of the operator's watch) is repaired.
- The drift check goes on past an object whose reconcile fails.
- Only pods in the Deployment's owner chain are probed, get adapters (and the API key), and
  have their readiness gate set: a pod that merely carries the labels gets nothing.
"""

from __future__ import annotations

import copy

import kmock
import pytest

from vllm_operator.model import reasons
from vllm_operator.model.builders import ADAPTERS_LOADED, selector_labels
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    LORA,
    MERGE,
    NETPOL,
    POD,
    SERVICE,
    KubeEmulator,
    cr_path,
    create,
    declare,
    pod_status,
    running_operator,
    start_pods,
    wait_for,
)
from vllm_testkit.samples import vllmd
from vllm_testkit.servers import free_port
from vllm_testkit.vllm_admin_double import BASE_MODEL, VLLMAdminDouble

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "team-a"
PVC = kmock.resource("v1/persistentvolumeclaims")
CR_PATH = cr_path(NS)

# The user's own default-deny policy, which happens to carry the name of a model they deploy.
DEFAULT_DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "m", "namespace": NS, "labels": {"owner": "platform"}},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
USER_CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "m-model-cache", "namespace": NS},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}


def degraded(emulator, name: str = "m") -> tuple[str, str, str]:
    status = emulator.objects[CR, NS, name].get("status") or {}
    cond = {c["type"]: c for c in status.get("conditions") or []}["Degraded"]  # KeyError: not yet
    return cond["status"], cond["reason"], cond["message"]


def exists(emulator, key) -> bool:
    return key in emulator.objects and not emulator.objects[key].deleted


async def patch_cr(emulator, name: str, spec: dict, generation: int) -> None:
    patch = {"spec": spec, "metadata": {"generation": generation}}
    response = await emulator.patch(f"{CR_PATH}/{name}", json=patch, headers=MERGE)
    assert response.status == 200, await response.text()


async def test_a_users_network_policy_is_never_taken_over_nor_pruned(kmock, kubeconfig):
    declare(kmock)
    policies = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    assert (await kmock.post(policies, json=copy.deepcopy(DEFAULT_DENY))).status == 200
    before = copy.deepcopy(kmock.objects[NETPOL, NS, "m"].raw)
    async with running_operator(kmock):
        await create(
            kmock,
            CR_PATH,
            vllmd("m", {"model": {"uri": "/m"}, "networkPolicy": {"enabled": True}}, NS),
        )
        await wait_for(lambda: degraded(kmock)[0] == "True", what="Degraded")
        assert degraded(kmock)[:2] == ("True", reasons.NAME_CONFLICT)
        assert (
            "NetworkPolicy/m exists and is not controlled by this VLLMDeployment"
            in degraded(kmock)[2]
        )
        # The other children go on.
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "m")), what="the Deployment")
        await wait_for(lambda: exists(kmock, (SERVICE, NS, "m")), what="the Service")
        # Turning the policy off must not delete the user's.
        await patch_cr(kmock, "m", {"networkPolicy": {"enabled": False}}, generation=2)
        await wait_for(lambda: degraded(kmock)[0] == "False", what="the conflict gone")
    assert kmock.objects[NETPOL, NS, "m"].raw == before  # not one field changed


async def test_a_users_claim_is_never_written_and_ours_is_created_once(kmock, kubeconfig):
    declare(kmock)
    claims = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
    assert (await kmock.post(claims, json=copy.deepcopy(USER_CLAIM))).status == 200
    before = copy.deepcopy(kmock.objects[PVC, NS, "m-model-cache"].raw)
    cache = {"modelCache": {"enabled": True, "size": "50Gi"}}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", {"model": {"uri": "hf://org/m"}, **cache}, NS))
        await wait_for(lambda: degraded(kmock)[1] == reasons.NAME_CONFLICT, what="the conflict")
        assert "PersistentVolumeClaim/m-model-cache" in degraded(kmock)[2]

        # Our own claim: created once; a bigger size in the spec does not patch it (a claim's
        # class cannot change, a shrink is refused, and the data on it outlives spec changes).
        await create(kmock, CR_PATH, vllmd("n", {"model": {"uri": "hf://org/n"}, **cache}, NS))
        await wait_for(lambda: exists(kmock, (PVC, NS, "n-model-cache")), what="our claim")
        ours = copy.deepcopy(kmock.objects[PVC, NS, "n-model-cache"].raw)
        await patch_cr(kmock, "n", {"modelCache": {"size": "80Gi"}, "replicas": 2}, generation=2)
        await wait_for(lambda: kmock.objects[DEPLOYMENT, NS, "n"]["spec"]["replicas"] == 2)
    assert kmock.objects[PVC, NS, "m-model-cache"].raw == before
    assert kmock.objects[PVC, NS, "n-model-cache"].raw == ours
    writes = [r for r in kmock if r.resource == PVC and r.method.value == "PATCH"]
    assert writes == []


async def test_one_refused_child_does_not_stop_the_others(kmock, kubeconfig):
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", {"model": {"uri": "/m"}}, NS))
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "m")), what="the Deployment")
        # A policy engine refuses the PodDisruptionBudget that two replicas bring.
        kmock.refusals[("patch", "poddisruptionbudgets", "m")] = (422, "denied by policy")
        await patch_cr(kmock, "m", {"replicas": 2}, generation=2)
        await wait_for(lambda: kmock.objects[DEPLOYMENT, NS, "m"]["spec"]["replicas"] == 2)
        await wait_for(lambda: degraded(kmock)[1] == reasons.APPLY_FAILED, what="ApplyFailed")
    assert degraded(kmock)[2] == "PodDisruptionBudget/m: denied by policy"


async def test_a_child_stripped_of_its_labels_is_repaired(kmock, kubeconfig, monkeypatch):
    """The operator's watch is by its labels: a child stripped of them leaves the watch (a
    DELETED event, as a real API server sends), and comes back labelled, without waiting for
    the drift check (an hour here)."""
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "3600")
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("b", {"model": {"uri": "/m"}}, NS))
        await wait_for(lambda: exists(kmock, (SERVICE, NS, "b")), what="Service b")
        path = f"/api/v1/namespaces/{NS}/services/b"
        labels = dict.fromkeys(kmock.objects[SERVICE, NS, "b"]["metadata"]["labels"])
        patch = {"metadata": {"labels": labels}}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await wait_for(
            lambda: kmock.objects[SERVICE, NS, "b"]["metadata"].get("labels"), timeout=5,
            what="b's Service repaired",
        )  # fmt: skip


async def test_the_drift_check_goes_on_past_an_object_that_fails(kmock, kubeconfig, monkeypatch):
    """Two LoRA deployments whose servers both restart unseen (no pod event: only the drift
    check finds their adapters gone); a's reconcile fails (its LoraAdapter's status write
    times out in etcd), b's server gets its adapter back all the same."""
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "0.3")
    declare(kmock)
    hosts = {"a": "127.0.0.2", "b": "127.0.0.3"}
    double = VLLMAdminDouble(list(hosts.values()), free_port())
    spec = {"model": {"uri": "/models/tiny", "servedName": BASE_MODEL},
            "adminPort": double.port, "lora": {"enabled": True}}  # fmt: skip
    try:
        async with running_operator(kmock) as runner:
            for name, host in hosts.items():  # listed in this order
                await create(kmock, CR_PATH, vllmd(name, spec, NS))
                await wait_for(lambda n=name: exists(kmock, (DEPLOYMENT, NS, n)), what=name)
                await start_pods(kmock, NS, name, {f"{name}-0": pod_status(host, ready=True)})
                lora = {
                    "apiVersion": "serving.vllm.ai/v1alpha1",
                    "kind": "LoraAdapter",
                    "metadata": {"name": f"lora-{name}", "namespace": NS},
                    "spec": {"deploymentRef": {"name": name}, "source": {"uri": f"/a/{name}"}},
                }
                await create(
                    kmock, f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/loraadapters", lora
                )
            for host in hosts.values():
                await wait_for(lambda h=host: double.servers[h].adapters, what=f"{host}'s load")
            await wait_for(lambda: kmock.idle_for() > 0.6, what="the operator idle")

            kmock.refusals[("patch", "loraadapters", "lora-a")] = (500, "etcdserver: timeout")
            for host in hosts.values():
                double.restart(host)
            await wait_for(
                lambda: double.servers[hosts["a"]].adapters, what="a's adapter reloaded"
            )  # its reconcile goes on to the status write, which fails
            await wait_for(lambda: double.servers[hosts["b"]].adapters, what="b's adapter reloaded")
    finally:
        double.close()
    assert "drift check of team-a/a failed" in runner.output


async def test_only_pods_of_our_deployment_get_adapters_keys_or_gates(kmock, kubeconfig):
    declare(kmock)
    hosts = {"m-0": "127.0.0.2", "impostor": "127.0.0.3"}
    double = VLLMAdminDouble(list(hosts.values()), free_port(), audience=f"{NS}/m")
    spec = {
        "model": {"uri": "/models/tiny", "servedName": BASE_MODEL},
        "adminPort": double.port,
        "lora": {"enabled": True},
        "apiKeySecret": {"name": "key"},
    }
    secret = {"metadata": {"name": "key", "namespace": NS}, "data": {"api-key": "c2VjcmV0"}}
    assert (await kmock.post(f"/api/v1/namespaces/{NS}/secrets", json=secret)).status == 200
    try:
        async with running_operator(kmock):
            await create(kmock, CR_PATH, vllmd("m", spec, NS))
            await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "m")), what="the Deployment")
            await start_pods(kmock, NS, "m", {"m-0": pod_status(hosts["m-0"], ready=True)})
            # Anyone with pod rights in the namespace can copy the labels (and the gate).
            template = kmock.objects[DEPLOYMENT, NS, "m"].raw["spec"]["template"]
            impostor = {
                "metadata": {"name": "impostor", "namespace": NS,
                             "labels": {**selector_labels("m"), "app.kubernetes.io/managed-by": "vllm-operator"}},
                "spec": template["spec"],
                "status": pod_status(hosts["impostor"], ready=True),
            }  # fmt: skip
            assert (await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=impostor)).status == 200
            lora = {
                "apiVersion": "serving.vllm.ai/v1alpha1",
                "kind": "LoraAdapter",
                "metadata": {"name": "sql", "namespace": NS},
                "spec": {"deploymentRef": {"name": "m"}, "source": {"uri": "/a/sql"}},
            }
            await create(
                kmock, f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/loraadapters", lora
            )
            await wait_for(lambda: double.servers[hosts["m-0"]].adapters, what="the load on m-0")
            await wait_for(
                lambda: any(c["type"] == ADAPTERS_LOADED
                            for c in kmock.objects[POD, NS, "m-0"]["status"].get("conditions", [])),
                what="m-0's gate",
            )  # fmt: skip
    finally:
        double.close()
    assert double.servers[hosts["impostor"]].calls == []  # never probed: no key, no adapter
    conditions = kmock.objects[POD, NS, "impostor"]["status"].get("conditions") or []
    assert not any(c["type"] == ADAPTERS_LOADED for c in conditions)
    assert [e["pod"] for e in kmock.objects[LORA, NS, "sql"]["status"]["pods"]] == ["m-0"]


async def test_a_foreign_deployment_of_the_name_gets_no_service_and_no_credit(kmock, kubeconfig):
    declare(kmock)
    deployments = f"/apis/apps/v1/namespaces/{NS}/deployments"
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": NS},
        "spec": {"replicas": 3, "template": {"metadata": {"labels": selector_labels("m")}}},
        "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3},
    }
    assert (await kmock.post(deployments, json=foreign)).status == 200
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", {"model": {"uri": "/m"}}, NS))
        await wait_for(lambda: degraded(kmock)[1] == reasons.NAME_CONFLICT, what="the conflict")
    assert "Deployment/m exists and is not controlled" in degraded(kmock)[2]
    # No Service of ours sends this model's clients to someone else's pods ...
    assert not exists(kmock, (SERVICE, NS, "m"))
    # ... and their ready replicas are not this model's.
    status = kmock.objects[CR, NS, "m"]["status"]
    available = {c["type"]: c for c in status["conditions"]}["Available"]
    assert (status["readyReplicas"], available["status"]) == (0, "False")
