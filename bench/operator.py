"""Operator throughput and API economy: VLLMDeployments created at once against kmock's
Kubernetes emulator, then left alone, then changed one at a time.

    python bench/operator.py [--count 100] [--rest-seconds 60] [--changes 20]

The operator runs as `python -m vllm_operator` in its own process (as in its container), talking
HTTP to the emulator served from this process. Measured: seconds from the first create until
every Deployment exists and every VLLMDeployment has its status, the operator's peak RSS, and the
API requests it made, classified by verb and resource:
- per new VLLMDeployment (children, status, events included), goal <= 10;
- per minute at rest (nothing changed, nothing drifted), goal 0;
- per spec change (a new image: the Deployment's template changes), and the seconds from the
  change to the Deployment's new template, p50 and p99 (goal <= 2 s).
Targets of the throughput: <= 10 s, <= 150 MB. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import kmock

from vllm_testkit.kube_bench import BenchEmulator, start_operator
from vllm_testkit.kube_emulator import declare, write_kubeconfig

CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
DEPLOYMENT = kmock.resource("apps/v1/deployments")
NS = "bench"


def by_kind(requests: Sequence[object]) -> dict[str, int]:
    """Requests counted by verb and resource (`list deployments`), most first."""
    counts: collections.Counter[str] = collections.Counter()
    for r in requests:
        resource = r.resource.plural if r.resource is not None else r.url.path  # type: ignore[attr-defined]
        counts[f"{str(r.action).rsplit('.', 1)[-1].lower()} {resource}"] += 1  # type: ignore[attr-defined]
    return dict(counts.most_common())


def operators(emulator: BenchEmulator, since: int) -> list[object]:
    """The operator's requests since `since` (the bench's own go through kmock's client)."""
    return [
        r for r in emulator.history[since:]
        if not r.headers.get("User-Agent", "").startswith("kmock")
    ]  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(count: int, rest_seconds: float = 60.0, changes: int = 20) -> dict[str, object]:
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
            operator_requests = operators(emulator, requests_before)

            # At rest: nothing changes, nothing drifts.
            rest_from = len(emulator.history)
            await asyncio.sleep(rest_seconds)
            at_rest = operators(emulator, rest_from)

            # Spec changes, one at a time: a new image for model i, until its Deployment has it.
            change_from = len(emulator.history)
            latencies = []
            for i in range(min(changes, count)):
                name = f"model-{i:03d}"
                image = f"registry.example/vllm:change-{i}"
                t1 = time.monotonic()
                url = f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/vllmdeployments/{name}"
                patch = {"metadata": {"generation": 2}, "spec": {"image": image}}
                response = await emulator.patch(
                    url, json=patch, headers={"Content-Type": "application/merge-patch+json"}
                )
                assert response.status == 200, await response.text()
                while True:
                    deployment = emulator.objects[DEPLOYMENT, NS, name]
                    (container,) = deployment["spec"]["template"]["spec"]["containers"]
                    if container["image"] == image:
                        break
                    assert time.monotonic() - t1 < 60, f"{name}: no new template after 60 s"
                    await asyncio.sleep(0.01)
                latencies.append(time.monotonic() - t1)
            await asyncio.sleep(1.0)
            changed = operators(emulator, change_from)
        peak = operator.peak_rss
        per_minute = len(at_rest) * 60 / rest_seconds
        per_new = len(operator_requests) / count
    return {
        "count": count,
        "seconds_to_all_deployments_and_statuses": round(elapsed, 3),
        "seconds_to_post_all": round(created, 3),
        "operator_startup_seconds": round(ready_after, 3),
        "operator_peak_rss_mb": round(peak / 2**20, 1),
        "operator_requests": len(operator_requests),
        "api_economy": {
            "requests_per_new_deployment": round(per_new, 1),
            "new_deployment_by_kind": {
                k: round(v / count, 2) for k, v in by_kind(operator_requests).items()
            },
            "requests_per_minute_at_rest": round(per_minute, 1),
            "at_rest_by_kind_per_minute": {
                k: round(v * 60 / rest_seconds, 1) for k, v in by_kind(at_rest).items()
            },
            "requests_per_spec_change": round(len(changed) / max(1, len(latencies)), 1),
            "spec_change_by_kind": by_kind(changed),
            "spec_change_to_deployment_seconds": {
                "p50": round(statistics.median(latencies), 3) if latencies else None,
                "p99": round(percentile(latencies, 0.99), 3) if latencies else None,
                "changes": len(latencies),
            },
        },
        "targets_met": {
            "le_10_seconds": elapsed <= 10,
            "le_150_mb": peak / 2**20 <= 150,
            "le_10_requests_per_new_deployment": per_new <= 10,
            "no_requests_at_rest": per_minute == 0,
            "spec_change_p99_le_2_seconds": bool(latencies) and percentile(latencies, 0.99) <= 2,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rest-seconds", type=float, default=60.0)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.count, args.rest_seconds, args.changes)), indent=2))


if __name__ == "__main__":
    main()
