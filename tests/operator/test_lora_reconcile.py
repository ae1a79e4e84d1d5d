"""LoraAdapters through the real operator, fast: kmock's emulated API and a test double of the
servers' admin port (`VLLMAdminDouble`, at the HTTP boundary). The same stories run against real
vLLM servers in test_lora_servers.py (marked `vllm`); these check the operator's side in seconds:
statuses, conditions, gates and the calls it makes. One pod has an IPv6 address, as pods of
dual-stack clusters do."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from vllm_operator.model import reasons
from vllm_operator.model.builders import ADAPTERS_LOADED
from vllm_testkit import kube_emulator
from vllm_testkit.kube_emulator import (
    DEPLOYMENT,
    LORA,
    MERGE,
    POD,
    KubeEmulator,
    cr_path,
    create,
    declare,
    events,
    lora_path,
    operator_requests,
    pod_status,
    running_operator,
    wait_for,
)
from vllm_testkit.samples import vllmd
from vllm_testkit.servers import free_port
from vllm_testkit.vllm_admin_double import BASE_MODEL, VLLMAdminDouble

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR_PATH = cr_path(NS)
LORA_PATH = lora_path(NS)
HOSTS = {"tiny-0": "127.0.0.2", "tiny-1": "::1"}


@pytest.fixture
def double():
    admin = VLLMAdminDouble(list(HOSTS.values()), free_port(), audience=f"{NS}/tiny")
    yield admin
    admin.close()


async def start_pods(emulator, double: VLLMAdminDouble, max_loras: int = 2) -> None:
    spec = {
        "model": {"uri": "/models/tiny", "servedName": BASE_MODEL},
        "accelerator": "CPU",
        "adminPort": double.port,
        "lora": {"enabled": True, "maxLoras": max_loras, "maxRank": 8},
    }
    await create(emulator, CR_PATH, vllmd("tiny", spec, NS))
    await wait_for(lambda: (DEPLOYMENT, NS, "tiny") in emulator.objects, what="the Deployment")
    statuses = {name: pod_status(ip, ready=True) for name, ip in HOSTS.items()}
    await kube_emulator.start_pods(emulator, NS, "tiny", statuses)


async def add_adapter(emulator, name: str, **spec) -> None:
    body = {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"deploymentRef": {"name": "tiny"}, "source": {"uri": f"/a/{name}"}, **spec},
    }
    await create(emulator, LORA_PATH, body)


async def set_pod_status(emulator, pod: str, **status) -> None:
    path = f"/api/v1/namespaces/{NS}/pods/{pod}/status"
    patch = {"status": pod_status(HOSTS[pod], **status)}
    assert (await emulator.patch(path, json=patch, headers=MERGE)).status == 200


def status(emulator, name: str) -> dict:
    return emulator.objects[LORA, NS, name].get("status") or {}


def condition(emulator, name: str, type_: str) -> tuple[str, str, str]:
    cond = next(c for c in status(emulator, name)["conditions"] if c["type"] == type_)
    return cond["status"], cond["reason"], cond["message"]


def gate(emulator, pod: str) -> tuple[str, str, str]:
    conditions = (emulator.objects[POD, NS, pod].get("status") or {}).get("conditions") or []
    cond = next(c for c in conditions if c["type"] == ADAPTERS_LOADED)
    return cond["status"], cond["reason"], cond["message"]


def calls(double: VLLMAdminDouble, pod: str, kind: str) -> list[str]:
    return [name for k, name in double.servers[HOSTS[pod]].calls if k == kind]


def lora_calls(operation: str, result: str) -> float:
    labels = {"operation": operation, "result": result}
    return REGISTRY.get_sample_value("vllm_operator_lora_calls_total", labels) or 0.0


async def test_loaded_on_every_pod_gated_and_reloaded_after_a_restart(kmock, kubeconfig, double):
    declare(kmock)
    loads = lora_calls("load", "ok")
    async with running_operator(kmock):
        await start_pods(kmock, double)
        # Served under another name than the resource's: the servers know only adapterName.
        await add_adapter(kmock, "sql", adapterName="sql-v1")
        await wait_for(lambda: condition(kmock, "sql", "Ready")[0] == "True", what="loaded")
        assert condition(kmock, "sql", "Ready") == ("True", reasons.ADAPTERS_LOADED, "2/2 pods")
        assert condition(kmock, "sql", "Degraded") == ("False", reasons.AS_EXPECTED, "")
        assert [s.adapters for s in double.servers.values()] == [{"sql-v1": "/a/sql"}] * 2
        assert lora_calls("load", "ok") - loads == 2
        for pod in HOSTS:
            assert gate(kmock, pod) == ("True", reasons.ADAPTERS_LOADED, "holds sql")
        entries = {e["pod"]: e for e in status(kmock, "sql")["pods"]}
        assert entries["tiny-1"]["serverInstance"] == double.servers["::1"].instance

        # tiny-1's server restarts: down (the kubelet sees it), then back empty.
        double.servers["::1"].serving = False
        await set_pod_status(kmock, "tiny-1", ready=False, restarts=1)
        await wait_for(lambda: gate(kmock, "tiny-1")[0] == "False", what="the gate to close")
        assert gate(kmock, "tiny-1") == (
            "False", reasons.SERVER_NOT_READY, "waiting for the server to serve"
        )  # fmt: skip
        double.restart("::1")
        await set_pod_status(kmock, "tiny-1", ready=True, restarts=1)
        await wait_for(lambda: gate(kmock, "tiny-1")[0] == "True", what="the gate to open")
        assert double.servers["::1"].adapters == {"sql-v1": "/a/sql"}
        new = double.servers["::1"].instance
        await wait_for(
            lambda: {e["pod"]: e for e in status(kmock, "sql")["pods"]}["tiny-1"]["serverInstance"]
            == new,
            what="the new instance in the status",
        )  # fmt: skip
        assert calls(double, "tiny-0", "load") == ["sql-v1"]  # the other pod was left alone

        # Deleted: unloaded everywhere, then the finalizer goes.
        assert (await kmock.delete(f"{LORA_PATH}/sql")).status == 200
        await wait_for(lambda: kmock.objects[LORA, NS, "sql"].deleted, what="the finalizer")
        assert [s.adapters for s in double.servers.values()] == [{}, {}]


async def test_a_refused_load_keeps_the_pod_out_of_rotation_and_says_why(kmock, kubeconfig, double):
    declare(kmock)
    refusal = "LoRA rank 16 is greater than max_lora_rank 8"
    double.servers["::1"].refuse["/a/big"] = (400, refusal)
    async with running_operator(kmock):
        await start_pods(kmock, double)
        await add_adapter(kmock, "big")
        await wait_for(lambda: condition(kmock, "big", "Degraded")[0] == "True", what="degraded")
        # Loaded on one pod of two is not Ready.
        assert condition(kmock, "big", "Ready") == ("False", reasons.LOAD_FAILED, "1/2 pods")
        assert condition(kmock, "big", "Degraded") == (
            "True", reasons.LOAD_FAILED, f"tiny-1: 400: {refusal}"
        )  # fmt: skip
        assert gate(kmock, "tiny-1") == ("False", reasons.ADAPTERS_MISSING, "missing big")
        assert gate(kmock, "tiny-0") == ("True", reasons.ADAPTERS_LOADED, "holds big")
        entries = {e["pod"]: e for e in status(kmock, "big")["pods"]}
        assert entries["tiny-1"] == {
            "pod": "tiny-1",
            "loaded": False,
            "serverInstance": double.servers["::1"].instance,
            "lastError": f"400: {refusal}",
        }
        await wait_for(lambda: events(kmock, reasons.LOAD_FAILED), what="a Warning event")


async def test_one_replica_stays_on_the_pod_that_serves_its_name(kmock, kubeconfig, double):
    declare(kmock)
    # An earlier reconcile loaded it on tiny-1 (both pods have the same free slots, so a fresh
    # placement would pick tiny-0, first by name).
    double.servers["::1"].adapters["sql-v1"] = "/a/sql"
    async with running_operator(kmock):
        await start_pods(kmock, double)
        await add_adapter(kmock, "sql", adapterName="sql-v1", replicas=1)
        await wait_for(lambda: condition(kmock, "sql", "Ready")[0] == "True", what="placed")
        assert [e["pod"] for e in status(kmock, "sql")["pods"]] == ["tiny-1"]
        assert calls(double, "tiny-0", "load") == calls(double, "tiny-1", "load") == []
        assert gate(kmock, "tiny-0") == (
            "True", reasons.NO_ADAPTERS, "no LoRA adapter is meant for this pod"
        )  # fmt: skip


async def test_a_drift_check_asks_each_server_once_and_the_api_server_nothing(
    kmock, kubeconfig, double, monkeypatch
):
    """At rest with four adapters loaded, every drift check (every 0.5 s here) asks each pod's
    server for its adapters once, not once per adapter, and sends the API server nothing: the
    adapters, pods and sets come from the watch cache, and statuses that did not change are
    not written."""
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "0.5")
    declare(kmock)
    names = ["a", "b", "c", "d"]
    async with running_operator(kmock):
        await start_pods(kmock, double, max_loras=4)
        for name in names:
            await add_adapter(kmock, name)
        await wait_for(
            lambda: all(condition(kmock, n, "Ready")[0] == "True" for n in names),
            what="the adapters loaded",
        )
        await wait_for(lambda: kmock.idle_for() > 1.0, what="the writes to settle")
        since = len(list(kmock))
        before = {pod: len(calls(double, pod, "models")) for pod in HOSTS}
        window = 3.0
        await asyncio.sleep(window)
        sent = operator_requests(kmock, since)
        asked = {pod: len(calls(double, pod, "models")) - before[pod] for pod in HOSTS}
    assert sent == []
    # Once per drift check (at most window / 0.5 + 1 of them); once per adapter would be 4x.
    assert all(1 <= n <= window / 0.5 + 1 for n in asked.values()), asked
