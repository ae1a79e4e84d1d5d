"""LoraAdapters end to end, without a cluster: the real operator against kmock's emulated API,
and two real `vllm-ext-serve` servers on the CPU standing in for the pods (bound to 127.0.0.2
and 127.0.0.3, which the pods in the emulator carry as their podIP). The test plays the kubelet:
it writes the pods' status when a server is up, down or back."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client import REGISTRY

from vllm_operator.model.builders import ADAPTERS_LOADED
from vllm_testkit import kube_emulator
from vllm_testkit.admin_key import PUBLIC_KEY
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
    pod_status,
    running_operator,
    wait_for,
)
from vllm_testkit.samples import vllmd
from vllm_testkit.servers import ext_server, free_port

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR_PATH = cr_path(NS)
LORA_PATH = lora_path(NS)
HOSTS = ("127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def adapters_root(tiny_model, tmp_path_factory):
    from vllm_testkit.tiny_model import generate_lora  # numpy: only where a model is made

    root = tmp_path_factory.mktemp("adapters")
    generate_lora(root / "sql", base_model=tiny_model, rank=8, seed=11)
    generate_lora(root / "sql-v2", base_model=tiny_model, rank=8, seed=12)
    generate_lora(root / "chat", base_model=tiny_model, rank=4, seed=13)
    generate_lora(root / "too-big", base_model=tiny_model, rank=16, seed=14)
    return root


@pytest.fixture(scope="module")
def servers(tiny_model, tmp_path_factory):
    """Two real servers, one per 'pod', on the same port of different loopback addresses, whose
    admin ports take only the operator's tokens (the test kit's key, which the operator uses)."""
    port, admin_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("lora-logs")
    procs = []
    for i, host in enumerate(HOSTS):
        proc = ext_server(
            tiny_model, logs / f"pod-{i}.log",
            "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
            # As the operator starts its pods: its calls carry tokens the servers check.
            "--admin-token-public-key", PUBLIC_KEY, "--admin-token-audience", f"{NS}/tiny",
            env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},  # lighter: the engine in-process
        )  # fmt: skip
        proc.host, proc.port, proc.admin_port = host, port, admin_port
        procs.append(proc.start())
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def deployment_spec(server, root) -> dict:
    return {
        "model": {"uri": "/models/tiny", "servedName": "tiny-llama"},
        "accelerator": "CPU",
        "port": server.port,
        "adminPort": server.admin_port,
        "lora": {"enabled": True, "maxLoras": 2, "maxRank": 8, "allowedSourceRoots": [str(root)]},
    }


async def start_pods(emulator, servers, root) -> list[str]:
    await create(emulator, CR_PATH, vllmd("tiny", deployment_spec(servers[0], root), NS))
    await wait_for(lambda: (DEPLOYMENT, NS, "tiny") in emulator.objects, what="the Deployment")
    names = [f"tiny-{i}" for i in range(len(servers))]
    statuses = {n: pod_status(s.host, ready=True) for n, s in zip(names, servers, strict=True)}
    await kube_emulator.start_pods(emulator, NS, "tiny", statuses)
    return names


async def add_adapter(emulator, name: str, source, **spec) -> None:
    body = {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"deploymentRef": {"name": "tiny"}, "source": {"uri": str(source)}, **spec},
    }
    await create(emulator, LORA_PATH, body)


def lora_status(emulator, name: str) -> dict:
    return emulator.objects[LORA, NS, name].get("status") or {}


def lora_condition(emulator, name: str, type_: str) -> dict:
    return next(c for c in lora_status(emulator, name)["conditions"] if c["type"] == type_)


def gate(emulator, pod: str) -> dict:
    conditions = (emulator.objects[POD, NS, pod].get("status") or {}).get("conditions") or []
    return next(c for c in conditions if c["type"] == ADAPTERS_LOADED)


def served_adapters(server) -> dict[str, str]:
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m["root"] for m in models if m.get("parent")}


def loads_ok() -> float:
    labels = {"operation": "load", "result": "ok"}
    return REGISTRY.get_sample_value("vllm_operator_lora_calls_total", labels) or 0.0


def instance(server) -> str:
    return httpx.get(f"{server.url}/ready", timeout=10).json()["instance_id"]


async def test_adapter_lifecycle_on_real_servers(kmock, kubeconfig, servers, adapters_root):
    declare(kmock)
    loads_before = loads_ok()
    async with running_operator(kmock):
        pods = await start_pods(kmock, servers, adapters_root)
        await add_adapter(kmock, "sql", adapters_root / "sql")
        await wait_for(
            lambda: lora_condition(kmock, "sql", "Ready")["status"] == "True",
            timeout=30, what="the adapter on every pod",
        )  # fmt: skip
        assert loads_ok() - loads_before == 2  # the operator's metrics: one load per pod
        status = lora_status(kmock, "sql")
        assert (status["desiredPods"], status["loadedPods"], status["loadedText"]) == (2, 2, "2/2")
        by_pod = {p["pod"]: p for p in status["pods"]}
        for pod, server in zip(pods, servers, strict=True):
            assert served_adapters(server)["sql"] == str(adapters_root / "sql")
            assert by_pod[pod]["serverInstance"] == instance(server)
            assert by_pod[pod]["loaded"] is True
            assert gate(kmock, pod)["status"] == "True"
            reply = httpx.post(
                f"{server.url}/v1/completions",
                json={"model": "sql", "prompt": "select", "max_tokens": 4},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text

        # A server restarts: it comes back empty; the kubelet reports the container not ready.
        server = servers[1]
        old_instance = instance(server)
        server.stop()
        path = f"/api/v1/namespaces/{NS}/pods/{pods[1]}/status"
        down = {"status": pod_status(server.host, ready=False, restarts=1)}
        assert (await kmock.patch(path, json=down, headers=MERGE)).status == 200
        await wait_for(lambda: gate(kmock, pods[1])["status"] == "False", what="the gate to close")
        assert gate(kmock, pods[1])["reason"] == "ServerNotReady"
        server.timeline.clear()
        server.start()
        await asyncio.to_thread(server.wait_ready)
        back = time.monotonic()
        up = {"status": pod_status(server.host, ready=True, restarts=1)}
        assert (await kmock.patch(path, json=up, headers=MERGE)).status == 200
        await wait_for(lambda: gate(kmock, pods[1])["status"] == "True", what="the gate to open")
        reload_seconds = time.monotonic() - back
        assert "sql" in served_adapters(server)
        new_instance = instance(server)
        assert new_instance != old_instance

        def entry() -> dict:
            return {p["pod"]: p for p in lora_status(kmock, "sql")["pods"]}[pods[1]]

        await wait_for(lambda: entry()["serverInstance"] == new_instance, what="the status")
        assert entry()["loaded"] is True
        assert reload_seconds < 5, reload_seconds  # the benchmark measures it properly

        # A new source: reloaded in place under the same name.
        patch = {
            "metadata": {"generation": 2},
            "spec": {"source": {"uri": str(adapters_root / "sql-v2")}},
        }
        assert (await kmock.patch(f"{LORA_PATH}/sql", json=patch, headers=MERGE)).status == 200
        await wait_for(
            lambda: all(served_adapters(s)["sql"].endswith("sql-v2") for s in servers),
            timeout=30, what="the in-place reload",
        )  # fmt: skip

        # One replica only: placed on one pod, and it stays there.
        await add_adapter(kmock, "chat", adapters_root / "chat", replicas=1)
        await wait_for(
            lambda: lora_condition(kmock, "chat", "Ready")["status"] == "True", timeout=30
        )
        (holder,) = [p["pod"] for p in lora_status(kmock, "chat")["pods"]]
        holders = [s for s in servers if "chat" in served_adapters(s)]
        assert len(holders) == 1

        # Delete: unloaded everywhere, then the finalizer goes and so does the object.
        assert (await kmock.delete(f"{LORA_PATH}/sql")).status == 200
        await wait_for(
            lambda: not any("sql" in served_adapters(s) for s in servers),
            timeout=30, what="the unload",
        )  # fmt: skip
        await wait_for(lambda: kmock.objects[LORA, NS, "sql"].deleted, what="the finalizer")
        assert [p["pod"] for p in lora_status(kmock, "chat")["pods"]] == [holder]
        assert (await kmock.delete(f"{LORA_PATH}/chat")).status == 200
        await wait_for(lambda: not any("chat" in served_adapters(s) for s in servers), timeout=30)


async def test_bad_adapters_are_degraded_with_the_servers_message(
    kmock,
    kubeconfig,
    servers,
    adapters_root,
):
    declare(kmock)
    async with running_operator(kmock):
        await start_pods(kmock, servers, adapters_root)
        await add_adapter(kmock, "big", adapters_root / "too-big")
        await add_adapter(kmock, "missing", adapters_root / "nope")
        await add_adapter(kmock, "outside", "/etc/adapters/x")
        for name in ("big", "missing", "outside"):
            await wait_for(
                lambda n=name: lora_condition(kmock, n, "Degraded")["status"] == "True",
                timeout=30, what=f"{name} degraded",
            )  # fmt: skip
        await wait_for(lambda: events(kmock, "LoadFailed"), what="a Warning event")
        assert "rank 16" in lora_condition(kmock, "big", "Degraded")["message"]
        assert "404" in lora_condition(kmock, "missing", "Degraded")["message"]
        assert (
            "outside the allowed roots" in lora_condition(kmock, "outside", "Degraded")["message"]
        )
        assert lora_status(kmock, "big")["loadedPods"] == 0
        # Pods meant to hold an adapter they could not load stay out of rotation.
        assert gate(kmock, "tiny-0")["status"] == "False"
        for name in ("big", "missing", "outside"):
            assert (await kmock.delete(f"{LORA_PATH}/{name}")).status == 200
        await wait_for(lambda: gate(kmock, "tiny-0")["status"] == "True", what="the gate to open")
    assert all(not served_adapters(s) for s in servers)


async def test_operator_restarted_mid_load_loses_nothing(kmock, kubeconfig, servers, adapters_root):
    declare(kmock)
    async with running_operator(kmock):
        await start_pods(kmock, servers, adapters_root)
        await add_adapter(kmock, "sql", adapters_root / "sql")
        # Stopped right away: the loads may or may not have happened.
    async with running_operator(kmock):
        await wait_for(
            lambda: lora_condition(kmock, "sql", "Ready")["status"] == "True",
            timeout=30, what="the adapter after the restart",
        )  # fmt: skip
        assert [served_adapters(s) for s in servers] == [{"sql": str(adapters_root / "sql")}] * 2
        entries = lora_status(kmock, "sql")["pods"]
        assert sorted(e["pod"] for e in entries) == ["tiny-0", "tiny-1"]  # one entry per pod
        assert all(gate(kmock, p)["status"] == "True" for p in ("tiny-0", "tiny-1"))
        assert (await kmock.delete(f"{LORA_PATH}/sql")).status == 200
        await wait_for(lambda: not any(served_adapters(s) for s in servers), timeout=30)
