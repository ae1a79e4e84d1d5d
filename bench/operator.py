"""Operator throughput, scale and API economy: VLLMDeployments and LoraAdapters created at once
against kmock's Kubernetes emulator, then left alone, then changed one at a time.

    python bench/operator.py [--count 100] [--adapters 0] [--pods 0]
                             [--rest-seconds 60] [--changes 20] [--cap-seconds 300]
    python bench/operator.py --scale      # = --count 1000 --adapters 1000 --pods 200

The operator runs as `python -m vllm_operator` in its own process (as in its container), talking
HTTP to the emulator served from this process. With `--pods N`, N of the VLLMDeployments (spread
evenly) serve LoRA with one replica; this bench stands in for the Deployment and ReplicaSet
controllers and the kubelet (a poll of the emulator's objects): once the operator has made such a
deployment's Deployment, the bench makes its ReplicaSet and one Running, ready pod whose podIP is
one address of the test double of the servers' admin port (`VLLMAdminDouble`, emulated pods, no
vLLM). The `--adapters` LoraAdapters are spread evenly over those deployments. Everything is
posted up front (VLLMDeployments, then LoraAdapters), the clock running from the first post.

Measured:
- seconds until converged: every object posted, every Deployment exists, every VLLMDeployment
  has status conditions, every adapter is held by its pod's server (the double's state) and its
  LoraAdapter's status says so (loadedPods == desiredPods >= 1); also when each of these was
  first complete. Every wait has a cap (`--cap-seconds`, posting included); a run that does not
  converge reports how far it got;
- the operator's peak RSS over the whole run; the CPU seconds of the operator and of this
  process (the emulator and the admin double), to tell which of them was the bottleneck;
- the API requests it made (reads and writes; the watch streams it keeps open, one per watched
  kind and renewed every few minutes, are counted apart), classified by verb and resource: per
  new VLLMDeployment and per new LoraAdapter (requests on one LoraAdapter, Events about one
  and the pods' readiness gates, which say what adapters a pod holds, count for the
  LoraAdapters; the rest, lists of LoraAdapters included, for the VLLMDeployments), per minute
  at rest (nothing changed, nothing drifted), per spec change. The new objects' requests run
  until the operator has sent none for 3 s (Kopf's own bookkeeping on each object and handlers
  queued behind others go on after what the bench sees is converged: those seconds are
  reported); the rest begins there;
- per spec change (a new image: the Deployment's template changes), made one at a time with the
  whole cluster in place, the seconds from the change to the Deployment's new template, p50/p99.
Goals (issue 15): converged <= 30 s (the scale run), peak RSS <= 200 MB, spec change p99 <= 2 s,
<= 10 requests per new VLLMDeployment, 0 requests per minute at rest. Progress goes to stderr;
stdout gets one JSON document, with the "goals" list of bench/goals.py.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import kmock
import psutil
from goals import goal

from vllm_testkit.kube_bench import BenchEmulator, start_operator
from vllm_testkit.kube_emulator import declare, pod_status, start_pods, write_kubeconfig
from vllm_testkit.servers import free_port
from vllm_testkit.vllm_admin_double import VLLMAdminDouble

CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
LORA = kmock.resource("serving.vllm.ai/v1alpha1/loraadapters")
DEPLOYMENT = kmock.resource("apps/v1/deployments")
NS = "bench"
GROUP_PATH = f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}"
MERGE = {"Content-Type": "application/merge-patch+json"}
SCALE = {"count": 1000, "adapters": 1000, "pods": 200}
QUIET_SECONDS = 3.0  # no request for this long: the operator is at rest


# --- The cluster: what is posted, and which deployments serve LoRA on which address ----------


@dataclass
class Cluster:
    count: int
    adapters: int
    pods: int
    lora: dict[str, str] = field(default_factory=dict)  # LoRA deployment -> its pod's address
    held: dict[str, str] = field(default_factory=dict)  # LoraAdapter -> its deployment

    def __post_init__(self) -> None:
        if self.pods > self.count:
            raise SystemExit("--pods cannot exceed --count (one pod per LoRA deployment)")
        if self.adapters and not self.pods:
            raise SystemExit("--adapters needs --pods (LoRA deployments to hold them)")
        step = self.count / self.pods if self.pods else 0
        for k in range(self.pods):  # every (count/pods)-th; 127.1.0.1, ..., 127.1.0.250, 127.1.1.1
            self.lora[name(int(k * step))] = f"127.1.{k // 250}.{k % 250 + 1}"
        deployments = list(self.lora)
        for j in range(self.adapters):
            self.held[f"{deployments[j % len(deployments)]}-a{j // len(deployments)}"] = (
                deployments[j % len(deployments)]
            )

    @property
    def max_loras(self) -> int:
        return max(1, -(-self.adapters // self.pods)) if self.pods else 1


def name(i: int) -> str:
    return f"model-{i:03d}"


def deployment_body(cluster: Cluster, i: int, ports: tuple[int, int]) -> dict:
    spec: dict = {"model": {"uri": f"hf://org/model-{i}"}, "replicas": 1 + i % 3}
    if name(i) in cluster.lora:  # as bench/lora.py's, one replica
        spec = {
            "model": {"uri": f"hf://org/model-{i}", "servedName": f"model-{i}"},
            "replicas": 1,
            "port": ports[0],
            "adminPort": ports[1],
            "lora": {"enabled": True, "maxLoras": cluster.max_loras, "maxRank": 8},
        }
    return {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "VLLMDeployment",
        "metadata": {"name": name(i), "namespace": NS, "uid": f"uid-{i}", "generation": 1,
                     "resourceVersion": "1"},
        "spec": spec,
    }  # fmt: skip


def adapter_body(adapter: str, deployment: str) -> dict:
    return {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": adapter, "namespace": NS, "uid": f"uid-{adapter}", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"deploymentRef": {"name": deployment}, "source": {"uri": f"/adapters/{adapter}"}},
    }  # fmt: skip


async def post_all(
    emulator: BenchEmulator, cluster: Cluster, ports: tuple[int, int], posted: list[str]
) -> None:
    """Every VLLMDeployment, then every LoraAdapter, one after the other; `posted` grows."""
    bodies = [("vllmdeployments", deployment_body(cluster, i, ports)) for i in range(cluster.count)]
    bodies += [("loraadapters", adapter_body(a, d)) for a, d in cluster.held.items()]
    for plural, body in bodies:
        response = await emulator.post(f"{GROUP_PATH}/{plural}", json=body)
        assert response.status == 200, await response.text()
        posted.append(body["metadata"]["name"])


async def kubelet(emulator: BenchEmulator, cluster: Cluster) -> None:
    """The Deployment/ReplicaSet controllers and the kubelet for the LoRA deployments: a
    ReplicaSet and one Running, ready pod at the deployment's address, once its Deployment is
    there (a poll of the emulator's objects; runs until cancelled)."""
    waiting = dict(cluster.lora)
    while waiting:
        for deployment, address in list(waiting.items()):
            if emulator.raw(DEPLOYMENT, NS, deployment) is not None:
                status = {f"{deployment}-0": pod_status(address, ready=True)}
                await start_pods(emulator, NS, deployment, status)
                del waiting[deployment]
        await asyncio.sleep(0.1)


# --- Convergence -----------------------------------------------------------------------------


def progress(
    emulator: BenchEmulator, cluster: Cluster, double: VLLMAdminDouble | None, posted: int
) -> dict:
    """How many of each thing are done (the emulator's objects and the double's state)."""
    deployments = statuses = held = loaded = 0
    for i in range(cluster.count):
        deployments += emulator.raw(DEPLOYMENT, NS, name(i)) is not None
        cr = emulator.raw(CR, NS, name(i)) or {}
        statuses += "conditions" in (cr.get("status") or {})
    for adapter, deployment in cluster.held.items():
        assert double is not None
        held += adapter in double.servers[cluster.lora[deployment]].adapters
        status = (emulator.raw(LORA, NS, adapter) or {}).get("status") or {}
        loaded += 1 <= status.get("desiredPods", 0) == status.get("loadedPods")
    return {"posted": posted, "deployments": deployments, "statuses": statuses,
            "adapters_held": held, "adapter_statuses_loaded": loaded}  # fmt: skip


async def converge(
    emulator: BenchEmulator,
    cluster: Cluster,
    double: VLLMAdminDouble | None,
    posted: list[str],
    t0: float,
    cap: float,
) -> tuple[float | None, dict[str, float], dict[str, int]]:
    """Seconds from t0 to converged (None: not within `cap`), when each count was first
    complete, and the last counts. Runs while the objects are posted. Progress to stderr
    every 5 s."""
    want = {"posted": cluster.count + cluster.adapters}
    want |= dict.fromkeys(("deployments", "statuses"), cluster.count)
    want |= dict.fromkeys(("adapters_held", "adapter_statuses_loaded"), cluster.adapters)
    first: dict[str, float] = {}
    reported = t0
    while True:
        now = time.monotonic()
        counts = progress(emulator, cluster, double, len(posted))
        for key, n in counts.items():
            if n == want[key] and key not in first:
                first[key] = round(now - t0, 3)
        if counts == want:
            return now - t0, first, counts
        if now - t0 > cap:
            return None, first, counts
        if now - reported >= 5:
            print(f"{now - t0:6.1f} s: {counts} of {want}", file=sys.stderr, flush=True)
            reported = now
        await asyncio.sleep(0.25)


# --- Requests ----------------------------------------------------------------------------------


def kind_of(r: object) -> str:
    """`list deployments`, `patch loraadapters/status`."""
    resource = getattr(r.resource, "plural", None) or r.url.path  # type: ignore[attr-defined]
    sub = f"/{r.subresource}" if getattr(r, "subresource", None) else ""
    return f"{str(r.action).rsplit('.', 1)[-1].lower()} {resource}{sub}"  # type: ignore[attr-defined]


def by_kind(requests: Sequence[object]) -> dict[str, int]:
    """Requests counted by verb and resource (`list deployments`), most first."""
    return dict(collections.Counter(kind_of(r) for r in requests).most_common())


def for_adapter(r: object) -> bool:
    """A request on one LoraAdapter (its status included), an Event about one, or a write of
    a pod's readiness gate (only LoRA deployments' pods have one, rewritten as the adapters
    they hold change). Lists of LoraAdapters are the VLLMDeployments' (no telling apart)."""
    plural = getattr(r.resource, "plural", None)  # type: ignore[attr-defined]
    if plural == "loraadapters" and r.name:  # type: ignore[attr-defined]
        return True
    if plural == "pods" and getattr(r, "subresource", None) == "status":
        return True
    data = getattr(r, "data", None)
    involved = (data.get("involvedObject") or {}) if isinstance(data, dict) else {}
    return involved.get("kind") == "LoraAdapter"


def operators(emulator: BenchEmulator, since: int, *, watches: bool = False) -> list[object]:
    """The operator's requests since `since` (the bench's own go through kmock's client): its
    reads and writes, or with `watches` only the watch streams it opened (one per watched kind,
    renewed every few minutes, whatever the number of objects)."""
    return [
        r for r in emulator.history[since:]
        if not r.headers.get("User-Agent", "").startswith("kmock")
        and (r.action == kmock.action.WATCH) == watches  # type: ignore[attr-defined]
    ]  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_object(requests: Sequence[object], objects: int) -> dict[str, object]:
    return {
        "requests": len(requests),
        "per_object": round(len(requests) / objects, 2) if objects else None,
        "by_kind_per_object": {
            k: round(v / objects, 2) for k, v in by_kind(requests).items()
        } if objects else {},
    }  # fmt: skip


async def quiet(emulator: BenchEmulator, seconds: float, cap: float) -> float | None:
    """Seconds until the operator has sent nothing for `seconds` (None: not within `cap`),
    from now, counted to its last request."""
    t0 = last = time.monotonic()
    seen = len(emulator.history)
    while (now := time.monotonic()) - last < seconds:
        if now - t0 > cap:
            return None
        if operators(emulator, seen):
            last = now
        seen = len(emulator.history)
        await asyncio.sleep(0.1)
    return round(max(0.0, last - t0), 1)


# --- Spec changes ------------------------------------------------------------------------------


async def change_one(emulator: BenchEmulator, deployment: str, image: str, cap: float) -> float:
    """A new image for `deployment`: seconds until its Deployment's template has it."""
    t1 = time.monotonic()
    patch = {"metadata": {"generation": 2}, "spec": {"image": image}}
    url = f"{GROUP_PATH}/vllmdeployments/{deployment}"
    response = await emulator.patch(url, json=patch, headers=MERGE)
    assert response.status == 200, await response.text()
    while True:
        # Not there yet if the run did not converge.
        template = ((emulator.raw(DEPLOYMENT, NS, deployment) or {}).get("spec") or {}).get(
            "template"
        ) or {}
        if any(c.get("image") == image for c in (template.get("spec") or {}).get("containers", [])):
            return time.monotonic() - t1
        if time.monotonic() - t1 > cap:
            raise RuntimeError(f"{deployment}: no new template after {cap} s")
        await asyncio.sleep(0.01)


# --- The run -----------------------------------------------------------------------------------


async def run(
    count: int,
    rest_seconds: float = 60.0,
    changes: int = 20,
    adapters: int = 0,
    pods: int = 0,
    cap: float = 300.0,
) -> dict[str, object]:
    cluster = Cluster(count, adapters, pods)
    ports = (free_port(), free_port())  # the operator calls the admin port only
    double = VLLMAdminDouble(sorted(set(cluster.lora.values())), ports[1]) if pods else None
    try:
        async with BenchEmulator() as emulator, kmock.Server(emulator):
            declare(emulator)
            work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
            kubeconfig = write_kubeconfig(work / "kubeconfig", str(emulator.url))
            async with start_operator(emulator, kubeconfig, work) as operator:
                print(f"operator log: {operator.log_path}", file=sys.stderr, flush=True)
                result = await scenario(emulator, cluster, double, ports, rest_seconds, changes,
                                        cap, operator.started)  # fmt: skip
                cpu = psutil.Process(operator.proc.pid).cpu_times()
            result["operator_peak_rss_mb"] = round(operator.peak_rss / 2**20, 1)
            # Who was busy: the operator, or this process (the emulator and the admin double).
            result["cpu_seconds"] = {
                "operator": round(cpu.user + cpu.system, 1),
                "emulator_and_double": round(time.process_time(), 1),
            }
    finally:
        if double is not None:
            double.close()
    return result | {"goals": goals(result)}


async def scenario(
    emulator: BenchEmulator,
    cluster: Cluster,
    double: VLLMAdminDouble | None,
    ports: tuple[int, int],
    rest_seconds: float,
    changes: int,
    cap: float,
    operator_started: float,
) -> dict[str, object]:
    ready_after = time.monotonic() - operator_started
    requests_before = len(emulator.history)
    t0 = time.monotonic()
    posted: list[str] = []
    tasks = [
        asyncio.create_task(kubelet(emulator, cluster)),
        asyncio.create_task(post_all(emulator, cluster, ports, posted)),
    ]
    try:
        converged, first, counts = await converge(emulator, cluster, double, posted, t0, cap)
    finally:
        for task in tasks:
            task.cancel()  # not posted or no pods within the cap: how far they got is counted
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # What the operator still sends once everything is as wanted (Kopf's own bookkeeping on
    # the objects, handlers queued behind others) counts for the new objects, not the rest.
    tail = await quiet(emulator, QUIET_SECONDS, cap=60.0)
    created = operators(emulator, requests_before)
    print(f"converged: {converged} s, {counts}; the operator quiet {tail} s later; at rest for "
          f"{rest_seconds} s", file=sys.stderr)  # fmt: skip

    rest_from = len(emulator.history)
    await asyncio.sleep(rest_seconds)
    at_rest = operators(emulator, rest_from)
    per_minute = len(at_rest) * 60 / rest_seconds
    watches = operators(emulator, rest_from, watches=True)
    watches_per_minute = len(watches) * 60 / rest_seconds

    change_from = len(emulator.history)
    latencies, slowest = [], (0.0, 0.0)  # (seconds, when: seconds since the operator started)
    for i in range(min(changes, cluster.count)):
        image = f"registry.example/vllm:change-{i}"
        latencies.append(await change_one(emulator, name(i), image, cap=60))
        slowest = max(slowest, (latencies[-1], time.monotonic() - operator_started))
    await asyncio.sleep(1.0)
    changed = operators(emulator, change_from)

    new_adapters = [r for r in created if for_adapter(r)]
    new_deployments = [r for r in created if not for_adapter(r)]
    return {
        "count": cluster.count,
        "adapters": cluster.adapters,
        "pods": cluster.pods,
        "converged": converged is not None,
        "seconds_to_converged": round(converged, 3) if converged is not None else None,
        "seconds_until_complete": first,
        "counts_at_end": counts,
        "seconds_to_post_all": first.get("posted"),
        "seconds_from_converged_to_quiet": tail,
        "operator_startup_seconds": round(ready_after, 3),
        "operator_requests": len(created),
        "api_economy": {
            "requests_per_object": round(len(created) / (cluster.count + cluster.adapters), 2),
            "requests_per_new_deployment": round(len(new_deployments) / cluster.count, 2),
            "new_deployment": per_object(new_deployments, cluster.count),
            "new_adapter": per_object(new_adapters, cluster.adapters),
            "requests_per_minute_at_rest": round(per_minute, 1),
            "watch_streams_opened_per_minute_at_rest": round(watches_per_minute, 1),
            "watch_streams_opened_at_rest": by_kind(watches),
            "at_rest_by_kind_per_minute": {
                k: round(v * 60 / rest_seconds, 1) for k, v in by_kind(at_rest).items()
            },
            "requests_per_spec_change": round(len(changed) / max(1, len(latencies)), 1),
            "spec_change_by_kind": by_kind(changed),
            "spec_change_to_deployment_seconds": {
                "p50": round(statistics.median(latencies), 3) if latencies else None,
                "p99": round(percentile(latencies, 0.99), 3) if latencies else None,
                "changes": len(latencies),
                "slowest_at_operator_seconds": round(slowest[1], 1),
            },
        },
    }


def goals(result: dict) -> list[dict]:
    """The "goals" list (bench/goals.py) from a result of `run`."""
    economy = result["api_economy"]
    scale = all(result.get(k, 0) >= v for k, v in SCALE.items())
    seconds = result.get("seconds_to_converged")
    objects = f"{result['count']} VLLMDeployments, {result.get('adapters', 0)} LoraAdapters"
    if seconds is None:
        converged = goal("seconds to converged", None, "s", "<=", 30, met=False,
                         note=f"not converged: {result.get('counts_at_end')}")  # fmt: skip
    elif not scale:
        converged = goal("seconds to converged", seconds, "s", "<=", 30, met=None,
                         note=f"judged on the scale run only (here {objects})")  # fmt: skip
    else:
        converged = goal("seconds to converged", seconds, "s", "<=", 30)
    rest = economy["requests_per_minute_at_rest"]
    rest_note = None if result.get("converged", True) else "not converged: still working"
    p99 = economy["spec_change_to_deployment_seconds"]["p99"]
    per_new = economy["requests_per_new_deployment"]
    counts = result.get("counts_at_end") or {}
    made = [counts.get(k, result["count"]) for k in ("deployments", "statuses")]
    all_made = made == [result["count"]] * 2
    new_note = None if all_made else "not all VLLMDeployments were made within the cap"
    return [
        converged,
        goal("operator peak RSS", result["operator_peak_rss_mb"], "MB", "<=", 200),
        goal("spec change to Deployment, p99", p99, "s", "<=", 2),
        goal("requests per new VLLMDeployment", economy["requests_per_new_deployment"],
             "requests", "<=", 10, new_note, met=None if new_note else per_new <= 10),
        goal("requests per minute at rest", rest, "requests/min", "==", 0, rest_note,
             met=None if rest_note else rest == 0),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100, help="VLLMDeployments")
    parser.add_argument("--adapters", type=int, default=0, help="LoraAdapters")
    parser.add_argument("--pods", type=int, default=0, help="LoRA deployments, one pod each")
    parser.add_argument("--scale", action="store_true", help="--count 1000 --adapters 1000 "
                        "--pods 200")  # fmt: skip
    parser.add_argument("--rest-seconds", type=float, default=60.0)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--cap-seconds", type=float, default=300.0,
                        help="the longest wait for convergence")  # fmt: skip
    args = parser.parse_args()
    if args.scale:
        args.count, args.adapters, args.pods = SCALE["count"], SCALE["adapters"], SCALE["pods"]
    result = asyncio.run(run(args.count, args.rest_seconds, args.changes, args.adapters,
                             args.pods, args.cap_seconds))  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
