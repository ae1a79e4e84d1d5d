"""LoRA adapters through the operator: from `kubectl apply` to loaded on every pod.

    python bench/lora.py [--sizes 1,10,50]

The operator runs as its own process against kmock's emulated API (see bench/operator.py).
Per N pods: a VLLMDeployment, N pods, then one LoraAdapter is created and the clock runs until
every pod's server holds the adapter. N = 1 uses a real `vllm-ext-serve` on the CPU; larger N
use a LoRA-API test double (`LoraApiDouble`, one per pod address) whose loads take as long as
the real server's did. Compared with the time one direct load call takes on the real server.
Then the restart: the real server is stopped and started again, and the clock runs from the
moment it serves again (the kubelet's 'ready' is written at once) until the adapter is back.
Targets: apply-to-loaded <= direct load + 0.5 s for every N; reload <= 2 s after the server is
live. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import kmock
from aiohttp import web

from vllm_operator.model.builders import build_deployment
from vllm_operator.model.spec import Images, parse_deployment
from vllm_testkit.kube_bench import BenchEmulator, start_operator
from vllm_testkit.kube_emulator import create, declare, pod_status, write_kubeconfig
from vllm_testkit.servers import ext_server, free_port
from vllm_testkit.tiny_model import generate_lora, generate_model

ROOT = Path(__file__).resolve().parent.parent

NS = "bench"
LORA = kmock.resource("serving.vllm.ai/v1alpha1/loraadapters")
IMAGES = Images(gpu="gpu", cpu="cpu")


class LoraApiDouble:
    """Test double of vllm-ext-serve's LoRA API (/v1/models, load, unload, instance header),
    serving every given address on one port from a thread; loads take `load_seconds`."""

    def __init__(self, hosts: list[str], port: int, load_seconds: float) -> None:
        self.hosts, self.port, self.load_seconds = hosts, port, load_seconds
        self.adapters: dict[str, dict[str, str]] = {h: {} for h in hosts}
        self.instance = uuid.uuid4().hex
        self.models_calls = 0
        self._ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in self.hosts:
            await web.TCPSite(runner, host, self.port).start()
        self._ready.set()
        await asyncio.Event().wait()

    def _host(self, request: web.Request) -> str:
        return request.transport.get_extra_info("sockname")[0]

    async def _models(self, request: web.Request) -> web.Response:
        self.models_calls += 1
        data = [{"id": "tiny-llama", "root": "/models/tiny", "parent": None}]
        data += [
            {"id": n, "root": p, "parent": "tiny-llama"}
            for n, p in self.adapters[self._host(request)].items()
        ]
        return web.json_response(
            {"object": "list", "data": data}, headers={"vllm-instance-id": self.instance}
        )

    async def _load(self, request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(self.load_seconds)
        self.adapters[self._host(request)][body["lora_name"]] = body["lora_path"]
        return web.Response(text="Success")

    async def _unload(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.adapters[self._host(request)].pop(body["lora_name"], None)
        return web.Response(text="Success")


async def scenario(
    emulator, name: str, hosts: list[str], port: int, admin_port: int, source: str, holds
) -> float:
    """Deployment + pods, then the clock: LoraAdapter created -> every server holds it."""
    spec = {
        "model": {"uri": "/models/tiny", "servedName": "tiny-llama"},
        "accelerator": "CPU",
        "port": port,
        "adminPort": admin_port,
        "lora": {"enabled": True, "maxLoras": 2, "maxRank": 8},
    }
    body = {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "VLLMDeployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }
    await create(emulator, f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/vllmdeployments", body)
    template = build_deployment(parse_deployment(body, IMAGES))["spec"]["template"]
    for i, host in enumerate(hosts):
        pod = {
            "metadata": {"name": f"{name}-{i}", "namespace": NS, **template["metadata"]},
            "spec": template["spec"],
            "status": pod_status(host, ready=True),
        }
        response = await emulator.post(f"/api/v1/namespaces/{NS}/pods", json=pod)
        assert response.status == 200
    await asyncio.sleep(1.0)  # the operator has seen the pods
    adapter = {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": f"{name}-sql", "namespace": NS},
        "spec": {"deploymentRef": {"name": name}, "source": {"uri": source}},
    }
    t0 = time.monotonic()
    await create(emulator, f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/loraadapters", adapter)
    while not all(holds(h, f"{name}-sql") for h in hosts):
        assert time.monotonic() - t0 < 60, "not loaded after 60 s"
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def storm(emulator, name: str, hosts: list[str], double: LoraApiDouble) -> dict[str, object]:
    """Every pod's status written 3 times at once (a rollout's worth of pod events): how many
    /v1/models calls (one per pod per adapter reconcile) the operator makes for them."""
    before = double.models_calls
    merge = {"Content-Type": "application/merge-patch+json"}
    for round_ in range(3):
        for i, host in enumerate(hosts):
            status = {"status": pod_status(host, ready=True) | {"message": f"round {round_}"}}
            path = f"/api/v1/namespaces/{NS}/pods/{name}-{i}/status"
            assert (await emulator.patch(path, json=status, headers=merge)).status == 200
    calls, quiet_since = double.models_calls, time.monotonic()
    while time.monotonic() - quiet_since < 2.0:  # until 2 s without a call
        await asyncio.sleep(0.1)
        if double.models_calls != calls:
            calls, quiet_since = double.models_calls, time.monotonic()
    events = 3 * len(hosts)
    reconciles = (calls - before) / len(hosts)
    return {
        "pod_events": events,
        "models_calls": calls - before,
        "adapter_reconciles": reconciles,
        "reconciles_per_event": round(reconciles / events, 3),
        "models_calls_if_one_reconcile_per_event": events * len(hosts),  # computed
    }


async def run(sizes: list[int]) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    model = generate_model(work / "tiny-llama")
    source = str(generate_lora(work / "sql", base_model=model, rank=8))
    port = free_port()
    real = ext_server(
        model,
        work / "real.log",
        "--enable-lora",
        "--max-loras",
        "2",
        "--max-lora-rank",
        "8",
        env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
    )
    real.host, real.port, real.admin_port = "127.0.0.2", port, free_port()
    await asyncio.to_thread(lambda: real.start().wait_ready())

    def real_holds(host: str, name: str) -> bool:
        models = httpx.get(f"http://{host}:{port}/v1/models", timeout=5).json()["data"]
        return any(m["id"] == name for m in models)

    # The baseline: one direct load on the real server (then unloaded again).
    with httpx.Client(base_url=real.admin_url, timeout=60) as client:
        loads = []
        for _ in range(3):
            start = time.monotonic()
            assert (
                client.post(
                    "/v1/load_lora_adapter", json={"lora_name": "probe", "lora_path": source}
                ).status_code
                == 200
            )
            loads.append(time.monotonic() - start)
            client.post("/v1/unload_lora_adapter", json={"lora_name": "probe"})
    direct = sorted(loads)[1]

    results: dict[str, object] = {"direct_load_seconds": round(direct, 4)}
    async with BenchEmulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        kubeconfig = write_kubeconfig(work / "kubeconfig", str(emulator.url))
        async with start_operator(emulator, kubeconfig, work):
            per_n = {}
            for n in sizes:
                if n == 1:
                    hosts, holds, kind = [real.host], real_holds, "real server"
                    ports = port, real.admin_port
                else:
                    hosts = [f"127.0.1.{i + 1}" for i in range(n)]
                    ports = free_port(), free_port()  # the operator calls the admin port only
                    double = LoraApiDouble(hosts, ports[1], load_seconds=direct)
                    holds, kind = (lambda h, a, d=double: a in d.adapters[h]), "test double"
                seconds = await scenario(emulator, f"d{n}", hosts, *ports, source, holds)
                per_n[n] = {
                    "pods": n,
                    "servers": kind,
                    "apply_to_loaded_seconds": round(seconds, 3),
                    "over_direct_load_seconds": round(seconds - direct, 3),
                }
                print(json.dumps(per_n[n]), file=sys.stderr)
                if n > 1 and n == max(sizes):
                    results["pod_event_storm"] = await storm(emulator, f"d{n}", hosts, double)
            results["apply_to_loaded"] = per_n

            # Restart of the real server: back to serving -> the adapter is back.
            real.stop()
            pod = f"/api/v1/namespaces/{NS}/pods/d1-0/status"
            merge = {"Content-Type": "application/merge-patch+json"}
            down = {"status": pod_status(real.host, ready=False, restarts=1)}
            assert (await emulator.patch(pod, json=down, headers=merge)).status == 200
            real.timeline.clear()
            await asyncio.to_thread(lambda: real.start().wait_ready())
            live = time.monotonic()
            up = {"status": pod_status(real.host, ready=True, restarts=1)}
            assert (await emulator.patch(pod, json=up, headers=merge)).status == 200
            while not real_holds(real.host, "d1-sql"):
                assert time.monotonic() - live < 60
                await asyncio.sleep(0.01)
            results["reload_after_restart_seconds"] = round(time.monotonic() - live, 3)
    real.stop()
    worst = max(v["over_direct_load_seconds"] for v in results["apply_to_loaded"].values())
    results["targets_met"] = {
        "apply_to_loaded_le_direct_plus_0.5s": worst <= 0.5,
        "reload_le_2s": results["reload_after_restart_seconds"] <= 2,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,50")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(asyncio.run(run(sizes)), indent=2))


if __name__ == "__main__":
    main()
