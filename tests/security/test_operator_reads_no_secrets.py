"""The operator reads no Secret: the chart grants it none (tests/chart checks the ClusterRole
and the Roles against the record of its calls). Here the real operator runs against an API
server that refuses every request on Secrets, for a model that references two (an API key and a
Hugging Face token) and serves LoRA adapters; it never asks, and still reports a missing Secret,
from what the kubelet says in the pods' status.

A pod that merely carries a model's labels cannot put words in its status: the pods are chosen
through their owner chain (Deployment, ReplicaSet, Pod).
"""

from __future__ import annotations

import asyncio

import pytest

from vllm_operator.model import reasons
from vllm_operator.model.builders import selector_labels
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    VERBS,
    KubeEmulator,
    api_calls,
    cr_path,
    create,
    declare,
    lora_path,
    pod_config_error,
    running_operator,
    start_pods,
    wait_for,
)
from vllm_testkit.samples import vllmd

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "team-a"
CR_PATH = cr_path(NS)
LORA_PATH = lora_path(NS)
NO_SECRET = 'secret "hf" not found'
SPEC = {
    "model": {"uri": "hf://org/m"},
    "lora": {"enabled": True},
    "apiKeySecret": {"name": "m-api"},
    "hfTokenSecret": {"name": "hf"},
}


def degraded(emulator, name: str = "m") -> tuple[str, str, str]:
    status = emulator.objects[CR, NS, name].get("status") or {}
    cond = {c["type"]: c for c in status.get("conditions") or []}["Degraded"]  # KeyError: not yet
    return cond["status"], cond["reason"], cond["message"]


async def test_the_operator_never_asks_for_a_secret(kmock, kubeconfig, monkeypatch):
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "0.2")  # the drift loop too
    declare(kmock)
    for verb in VERBS:
        kmock.refusals[(verb, "secrets", None)] = (403, 'secrets is forbidden: User "operator"')
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", SPEC, NS))
        lora = {
            "apiVersion": "serving.vllm.ai/v1alpha1",
            "kind": "LoraAdapter",
            "metadata": {"name": "sql", "namespace": NS},
            "spec": {"deploymentRef": {"name": "m"}, "source": {"uri": "/a/sql"}},
        }
        await create(kmock, LORA_PATH, lora)
        # The children come although the Secrets cannot be read.
        await wait_for(lambda: (DEPLOYMENT, NS, "m") in kmock.objects, what="the Deployment")
        # Standing in for the controllers and the kubelet, which reads the Secrets itself.
        await start_pods(kmock, NS, "m", {"m-0": pod_config_error(NO_SECRET), "m-1": {}})
        await wait_for(lambda: degraded(kmock)[0] == "True", what="Degraded")
        await asyncio.sleep(1.0)  # five drift rounds (which send no request when nothing drifted)
    assert degraded(kmock) == (
        "True",
        reasons.SECRET_NOT_FOUND,
        f"pod m-0 cannot start: {NO_SECRET}",
    )
    assert {call for call in api_calls(kmock) if call[2].startswith("secrets")} == set()


async def test_a_pod_that_merely_carries_the_labels_puts_nothing_in_the_status(kmock, kubeconfig):
    declare(kmock)
    spec = {"model": {"uri": "/m"}, "accelerator": "CPU"}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", spec, NS))
        await wait_for(lambda: (DEPLOYMENT, NS, "m") in kmock.objects, what="the Deployment")
        await wait_for(lambda: degraded(kmock)[0] == "False", what="a first status")
        template = kmock.objects[DEPLOYMENT, NS, "m"].raw["spec"]["template"]
        labels = {**selector_labels("m"), "app.kubernetes.io/managed-by": "vllm-operator"}
        impostor = {
            "metadata": {"name": "impostor", "namespace": NS, "labels": labels},
            "spec": template["spec"],
            "status": pod_config_error("anything a tenant wants to show"),
        }
        assert (await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=impostor)).status == 200
        # Its event refreshes the status from the watch cache (no request to wait for).
        await asyncio.sleep(1.0)
        assert degraded(kmock)[0] == "False"
        # Ours, through its owner chain, does count.
        await start_pods(kmock, NS, "m", {"m-0": pod_config_error(NO_SECRET)})
        await wait_for(lambda: degraded(kmock)[0] == "True", what="Degraded")
    assert degraded(kmock) == (
        "True",
        reasons.SECRET_NOT_FOUND,
        f"pod m-0 cannot start: {NO_SECRET}",
    )
