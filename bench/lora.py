"""LoRA adapters through the operator: from `kubectl apply` to loaded on every pod.

    python bench/lora.py [--sizes 1,10,50]

The operator runs as its own process against kmock's emulated API (see bench/operator.py).
Per N pods: a VLLMDeployment, N pods, then one LoraAdapter is created and the clock runs until
every pod's server holds the adapter. N = 1 uses a real `vllm-ext-serve` on the CPU; larger N
use the test double of the servers' admin port (`vllm_testkit.vllm_admin_double`, one address
per pod) whose loads take as long as the real server's did. Compared with the time one direct
load call takes on the real server.
Then the restart: the real server is stopped and started again, and the clock runs from the
moment it serves again (the kubelet's 'ready' is written at once) until the adapter is back.
Targets: apply-to-loaded <= direct load + 0.5 s, judged separately for the real server (N = 1)
and for the test doubles (N > 1: the operator's fan-out, not vLLM's loading); reload <= 2 s after
the server is live. Prints one JSON document, the goal next to each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import kmock
from goals import goal

from vllm_testkit.kube_bench import BenchEmulator, start_operator
from vllm_testkit.kube_emulator import create, declare, pod_status, start_pods, write_kubeconfig
from vllm_testkit.servers import ext_server, free_port
from vllm_testkit.tiny_model import generate_lora, generate_model
from vllm_testkit.vllm_admin_double import VLLMAdminDouble

ROOT = Path(__file__).resolve().parent.parent

NS = "bench"
LORA = kmock.resource("serving.vllm.ai/v1alpha1/loraadapters")


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
    deployment = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    while (await emulator.get(deployment)).status != 200:  # the operator applies it
        await asyncio.sleep(0.05)
    statuses = {f"{name}-{i}": pod_status(host, ready=True) for i, host in enumerate(hosts)}
    await start_pods(emulator, NS, name, statuses)
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


async def storm(
    emulator, name: str, hosts: list[str], double: VLLMAdminDouble
) -> dict[str, object]:
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
                    double = VLLMAdminDouble(hosts, ports[1], load_seconds=direct)
                    holds = lambda h, a, d=double: a in d.servers[h].adapters  # noqa: E731
                    kind = "test double"
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
    return results | {"verdicts": verdicts(results), "goals": goals(results)}


def verdicts(results: dict) -> dict[str, object]:
    """The real server's figure and the test doubles' figures are judged apart: the first is
    vLLM's load plus the operator's reaction, the others the operator's fan-out alone."""
    per_n = results["apply_to_loaded"]
    real = [v for v in per_n.values() if v["servers"] == "real server"]
    doubles = [v for v in per_n.values() if v["servers"] == "test double"]
    goal = "over_direct_load_seconds <= 0.5"
    out: dict[str, object] = {}
    if real:
        over = max(v["over_direct_load_seconds"] for v in real)
        out["apply_to_loaded_real_server"] = {"over_direct_load_seconds": over, "goal": goal,
                                              "met": over <= 0.5}  # fmt: skip
    if doubles:
        over = max(v["over_direct_load_seconds"] for v in doubles)
        out["apply_to_loaded_test_doubles"] = {
            "worst_over_direct_load_seconds": over,
            "pods": [v["pods"] for v in doubles],
            "goal": goal,
            "met": over <= 0.5,
        }
    if "reload_after_restart_seconds" in results:
        reload = results["reload_after_restart_seconds"]
        out["reload_after_restart"] = {"seconds": reload, "goal": "<= 2", "met": reload <= 2}
    return out


def goals(results: dict) -> list[dict]:
    """The "goals" list (bench/goals.py): the figures `verdicts` judges."""
    judged = verdicts(results)
    out = []
    if "apply_to_loaded_real_server" in judged:
        over = judged["apply_to_loaded_real_server"]["over_direct_load_seconds"]
        out.append(goal("apply -> loaded over a direct load, real server (1 pod)", over, "s",
                        "<=", 0.5))  # fmt: skip
    if "apply_to_loaded_test_doubles" in judged:
        doubles = judged["apply_to_loaded_test_doubles"]
        pods = "/".join(str(n) for n in doubles["pods"])
        out.append(goal(f"apply -> loaded over a direct load, test doubles ({pods} pods, worst)",
                        doubles["worst_over_direct_load_seconds"], "s", "<=", 0.5))  # fmt: skip
    if "reload_after_restart" in judged:
        seconds = judged["reload_after_restart"]["seconds"]
        out.append(goal("adapter back after a restart, from live", seconds, "s", "<=", 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,50")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(asyncio.run(run(sizes)), indent=2))


if __name__ == "__main__":
    main()
