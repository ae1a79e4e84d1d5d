"""Operator throughput: 100 VLLMDeployments created at once against kmock's Kubernetes emulator.

    python bench/operator.py [--count 100]

The operator runs as `python -m vllm_operator` in its own process (as in its container), talking
HTTP to the emulator served from this process. Measured: seconds from the first create until
every Deployment exists and every VLLMDeployment has its status, the operator's peak RSS, and
the API requests it made. Targets: <= 10 s, <= 150 MB. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import kmock

from vllm_testkit.kube_bench import BenchEmulator, start_operator
from vllm_testkit.kube_emulator import declare, write_kubeconfig

CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
DEPLOYMENT = kmock.resource("apps/v1/deployments")
NS = "bench"


async def run(count: int) -> dict[str, object]:
    async with BenchEmulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
        kubeconfig = write_kubeconfig(work / "kubeconfig", str(emulator.url))
        async with start_operator(emulator, kubeconfig, work) as operator:
            ready_after = time.monotonic() - operator.started
            requests_before = len(emulator.history)
            t0 = time.monotonic()
            for i in range(count):
                name = f"model-{i:03d}"
                body = {
                    "apiVersion": "serving.vllm.ai/v1alpha1",
                    "kind": "VLLMDeployment",
                    "metadata": {"name": name, "namespace": NS, "uid": f"uid-{i}",
                                 "generation": 1, "resourceVersion": "1"},
                    "spec": {"model": {"uri": f"hf://org/model-{i}"}, "replicas": 1 + i % 3},
                }  # fmt: skip
                url = f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/vllmdeployments"
                response = await emulator.post(url, json=body)
                assert response.status == 200, await response.text()
            created = time.monotonic() - t0

            def done() -> tuple[int, int]:
                deployments = statuses = 0
                for i in range(count):
                    name = f"model-{i:03d}"
                    deployments += (DEPLOYMENT, NS, name) in emulator.objects
                    status = emulator.objects[CR, NS, name].get("status") or {}
                    statuses += "conditions" in status
                return deployments, statuses

            while done() != (count, count):
                assert time.monotonic() - t0 < 120, f"not done after 120 s: {done()}"
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - t0
            await asyncio.sleep(1.0)  # what the operator still sends once everything is done
            operator_requests = [
                r for r in emulator.history[requests_before:]
                if not r.headers.get("User-Agent", "").startswith("kmock")
            ]  # fmt: skip
        peak = operator.peak_rss
    return {
        "count": count,
        "seconds_to_all_deployments_and_statuses": round(elapsed, 3),
        "seconds_to_post_all": round(created, 3),
        "operator_startup_seconds": round(ready_after, 3),
        "operator_peak_rss_mb": round(peak / 2**20, 1),
        "operator_requests": len(operator_requests),
        "operator_requests_per_deployment": round(len(operator_requests) / count, 1),
        "targets_met": {
            "le_10_seconds": elapsed <= 10,
            "le_150_mb": peak / 2**20 <= 150,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.count)), indent=2))


if __name__ == "__main__":
    main()
