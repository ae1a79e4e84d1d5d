"""Multi-node replicas through the real operator process against the emulated API server: a
VLLMDeployment with parallelism.nodes 2 becomes a LeaderWorkerSet where LWS's CRD is served
(LeaderWorkerSetMissing where it is not), scales in groups, reports its groups' pods (a worker
the kubelet cannot start keeps its group from forming, and says so; a group recreated after a
pod failed stays Degraded across its recreations), loads adapters on each
group's leader, and gets them back on the new leader after a worker's restart recreated the
group (LWS's RecreateGroupOnPodRestart, stood in for by `recreate_group`). Going back to one
node replaces the LeaderWorkerSet by a Deployment, and the other way round (not before the new
one can be made).

The tests stand in for LWS's controllers (`start_group`: the leader StatefulSet, the leader
pod, its workers' StatefulSet and pods, with LWS's labels and owner chain) and for the
servers' admin port (`VLLMAdminDouble`)."""

from __future__ import annotations

import pytest

from vllm_operator.model import reasons
from vllm_testkit import kube_emulator
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    LEADER_WORKER_SET,
    LORA,
    MERGE,
    SERVICE,
    KubeEmulator,
    cr_path,
    create,
    declare,
    exists,
    lora_path,
    pod_config_error,
    pod_status,
    recreate_group,
    running_operator,
    start_group,
    wait_for,
)
from vllm_testkit.samples import vllmd
from vllm_testkit.servers import free_port
from vllm_testkit.vllm_admin_double import BASE_MODEL, VLLMAdminDouble

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
GROUP = {"accelerator": "CPU", "parallelism": {"tensor": 2, "nodes": 2}}
LWS_PATH = f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets"


def model(**fields) -> dict:
    return vllmd("big", {"model": {"uri": "/models/big"}, **GROUP, **fields}, NS)


def condition(emulator, type_: str, name: str = "big") -> dict | None:
    conditions = (emulator.objects[CR, NS, name].get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


async def lws_status(emulator, **counts: int) -> None:
    """What LWS's controller writes: groups, ready and updated."""
    path = f"{LWS_PATH}/big/status"
    assert (await emulator.patch(path, json={"status": counts}, headers=MERGE)).status == 200


async def patch_cr(emulator, patch: dict, generation: int) -> None:
    await kube_emulator.patch_cr(emulator, NS, "big", patch, generation=generation)


async def test_without_lws_installed_the_condition_says_so(kmock, kubeconfig):
    declare(kmock)
    async with running_operator(kmock):
        await create(kmock, cr_path(NS), model())
        await wait_for(lambda: condition(kmock, "Degraded") is not None, what="a status")
        degraded = condition(kmock, "Degraded")
        assert (degraded["status"], degraded["reason"]) == (
            "True", reasons.LEADER_WORKER_SET_MISSING,
        )  # fmt: skip
        assert "install LeaderWorkerSet" in degraded["message"]
        assert not exists(kmock, (DEPLOYMENT, NS, "big"))  # no single-node stand-in
        assert exists(kmock, (SERVICE, NS, "big"))  # in place for when LWS comes


async def test_a_group_per_replica_scaled_and_reported_as_groups(kmock, kubeconfig):
    declare(kmock, lws=True)
    async with running_operator(kmock):
        await create(kmock, cr_path(NS), model())
        await wait_for(lambda: exists(kmock, (LEADER_WORKER_SET, NS, "big")), what="the LWS")
        lws = kmock.objects[LEADER_WORKER_SET, NS, "big"]
        (owner,) = lws["metadata"]["ownerReferences"]
        assert owner["uid"] == kmock.objects[CR, NS, "big"]["metadata"]["uid"]
        assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
        assert not exists(kmock, (DEPLOYMENT, NS, "big"))

        # The group's worker cannot start (its Secret is missing): no group forms, and why.
        await start_group(
            kmock, NS, "big", 0,
            [pod_status("10.0.0.1", ready=False),
             pod_config_error('secret "hf-token" not found')],
        )  # fmt: skip
        await lws_status(kmock, replicas=1, readyReplicas=0, updatedReplicas=1)
        await wait_for(
            lambda: (condition(kmock, "Degraded") or {}).get("reason") == reasons.SECRET_NOT_FOUND,
            what="the worker's trouble",
        )
        assert "big-0-1" in condition(kmock, "Degraded")["message"]

        # The scale subresource counts groups: the LeaderWorkerSet follows.
        await patch_cr(kmock, {"spec": {"replicas": 3}}, generation=2)
        await wait_for(
            lambda: kmock.objects[LEADER_WORKER_SET, NS, "big"]["spec"]["replicas"] == 3,
            what="three groups",
        )
        # Ready groups are what LWS counts ready: leader and workers all ready.
        await lws_status(kmock, replicas=3, readyReplicas=3, updatedReplicas=3)
        await wait_for(
            lambda: kmock.objects[CR, NS, "big"].get("status", {}).get("readyText") == "3/3",
            what="3/3 groups ready",
        )
        assert condition(kmock, "Available")["status"] == "True"


def failed_once(ip: str) -> dict:
    """A pod whose server exited with an error and was restarted by the kubelet, which is what
    makes LeaderWorkerSet recreate its group."""
    status = pod_status(ip, ready=False, restarts=1)
    terminated = {"exitCode": 1, "reason": "Error"}
    status["containerStatuses"][0]["lastState"] = {"terminated": terminated}
    return status


async def test_a_group_that_keeps_failing_is_degraded_across_its_recreations(kmock, kubeconfig):
    """LeaderWorkerSet recreates a group at a pod's first restart: no pod ever shows a crash
    loop, and the new group's pods start clean. The failure is reported, and stays reported
    across recreations (counted) until every group serves."""
    declare(kmock, lws=True)
    async with running_operator(kmock):
        await create(kmock, cr_path(NS), model())
        await wait_for(lambda: exists(kmock, (LEADER_WORKER_SET, NS, "big")), what="the LWS")
        starting = [pod_status("10.0.0.1", ready=False), failed_once("10.0.0.2")]
        await start_group(kmock, NS, "big", 0, starting)
        await lws_status(kmock, replicas=1, readyReplicas=0, updatedReplicas=1)

        def degraded() -> tuple[str, str]:
            found = condition(kmock, "Degraded") or {}
            return found.get("reason", ""), found.get("message", "")

        await wait_for(lambda: degraded()[0] == reasons.GROUP_RESTARTED, what="GroupRestarted")
        assert "big-0-1" in degraded()[1] and "code 1" in degraded()[1]

        # Recreated: its new pods start clean; the failure stays reported.
        fresh = [pod_status("10.0.0.1", ready=False), pod_status("10.0.0.2", ready=False)]
        await recreate_group(kmock, NS, "big", 0, fresh)
        path = f"/api/v1/namespaces/{NS}/pods/big-0-1/status"
        patch = {"status": failed_once("10.0.0.2")}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await wait_for(lambda: "recreated 2 times" in degraded()[1], what="the second failure")
        assert degraded()[0] == reasons.GROUP_RESTARTED

        # Every group serves at last: the failures are history.
        await lws_status(kmock, replicas=1, readyReplicas=1, updatedReplicas=1)
        await patch_cr(kmock, {"spec": {"replicas": 1}}, generation=1)  # an event of the CR
        await wait_for(lambda: degraded()[0] == reasons.AS_EXPECTED, what="Degraded cleared")


async def test_adapters_go_to_each_leader_and_come_back_after_the_group_is_recreated(
    kmock, kubeconfig
):
    double = VLLMAdminDouble(["127.0.0.2", "127.0.0.3"], free_port(), audience=f"{NS}/big")
    try:
        declare(kmock, lws=True)
        lora = {"enabled": True, "maxLoras": 2, "maxRank": 8}
        spec = {
            "adminPort": double.port,
            "lora": lora,
            "model": {"uri": "/m", "servedName": BASE_MODEL},
        }
        async with running_operator(kmock):
            await create(kmock, cr_path(NS), model(**spec))
            await wait_for(lambda: exists(kmock, (LEADER_WORKER_SET, NS, "big")), what="the LWS")
            ready = [pod_status("127.0.0.2", ready=True), pod_status("127.0.0.9", ready=True)]
            await start_group(kmock, NS, "big", 0, ready)
            body = {
                "apiVersion": "serving.vllm.ai/v1alpha1",
                "kind": "LoraAdapter",
                "metadata": {"name": "sql", "namespace": NS},
                "spec": {"deploymentRef": {"name": "big"}, "source": {"uri": "/a/sql"}},
            }
            await create(kmock, lora_path(NS), body)

            def loaded() -> str | None:
                conditions = (kmock.objects[LORA, NS, "sql"].get("status") or {}).get(
                    "conditions"
                ) or []
                ready = next((c for c in conditions if c["type"] == "Ready"), {})
                return ready.get("message") if ready.get("status") == "True" else None

            await wait_for(lambda: loaded() is not None, what="the adapter loaded")
            # The leader serves the group's adapters; the worker (no admin port) is never asked.
            assert loaded() == "1/1 pods"
            assert double.servers["127.0.0.2"].adapters == {"sql": "/a/sql"}
            entries = [e["pod"] for e in kmock.objects[LORA, NS, "sql"]["status"]["pods"]]
            assert entries == ["big-0"]

            # A worker restarts: LWS recreates the whole group, whose new leader starts empty.
            double.restart("127.0.0.2")
            double.servers["127.0.0.2"].serving = False
            await recreate_group(
                kmock, NS, "big", 0,
                [pod_status("127.0.0.2", ready=False), pod_status("127.0.0.9", ready=False)],
            )  # fmt: skip
            double.servers["127.0.0.2"].serving = True
            path = f"/api/v1/namespaces/{NS}/pods/big-0/status"
            patch = {"status": pod_status("127.0.0.2", ready=True)}
            assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
            await wait_for(
                lambda: double.servers["127.0.0.2"].adapters == {"sql": "/a/sql"},
                what="the adapter back on the new leader",
            )
    finally:
        double.close()


async def test_without_lws_a_deployment_stays_until_a_group_can_replace_it(kmock, kubeconfig):
    """Asking for two nodes where LeaderWorkerSet is not installed: the single-node Deployment
    keeps serving (it is not pruned for a workload that cannot be made)."""
    declare(kmock)
    async with running_operator(kmock):
        single = {"model": {"uri": "/models/big"}, "accelerator": "CPU"}
        await create(kmock, cr_path(NS), vllmd("big", single, NS))
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "big")), what="the Deployment")
        await patch_cr(kmock, {"spec": GROUP}, generation=2)
        await wait_for(
            lambda: (
                (condition(kmock, "Degraded") or {}).get("reason")
                == reasons.LEADER_WORKER_SET_MISSING
            ),
            what="LeaderWorkerSetMissing",
        )
        assert exists(kmock, (DEPLOYMENT, NS, "big"))


async def test_changing_the_nodes_replaces_the_workload(kmock, kubeconfig):
    declare(kmock, lws=True)
    async with running_operator(kmock):
        single = {"model": {"uri": "/models/big"}, "accelerator": "CPU"}
        await create(kmock, cr_path(NS), vllmd("big", single, NS))
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "big")), what="the Deployment")
        await patch_cr(kmock, {"spec": GROUP}, generation=2)
        await wait_for(lambda: exists(kmock, (LEADER_WORKER_SET, NS, "big")), what="the LWS")
        await wait_for(lambda: not exists(kmock, (DEPLOYMENT, NS, "big")), what="its prune")
        await patch_cr(kmock, {"spec": {"parallelism": None}}, generation=3)
        await wait_for(lambda: exists(kmock, (DEPLOYMENT, NS, "big")), what="a Deployment")
        await wait_for(lambda: not exists(kmock, (LEADER_WORKER_SET, NS, "big")), what="no LWS")
