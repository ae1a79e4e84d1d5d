"""Real failures are Degraded, with the kubelet's or the scheduler's words: the real operator
against kmock's emulated API, pod statuses written as the scheduler and the kubelet write them
(the test stands in for both)."""

from __future__ import annotations

import asyncio

import pytest

from vllm_testkit import kube_emulator
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    MERGE,
    KubeEmulator,
    cr_path,
    create,
    declare,
    events,
    pod_status,
    running_operator,
    wait_for,
)
from vllm_testkit.samples import vllmd

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR_PATH = cr_path(NS)
NO_GPU = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."  # fmt: skip


def unschedulable(message: str) -> dict:
    """As the scheduler leaves a pod no node fits."""
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    return {"phase": "Pending", "conditions": [condition]}


def crash_looping(restarts: int) -> dict:
    """As the kubelet reports a server that keeps exiting."""
    container = {
        "name": "server", "ready": False, "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 40s restarting failed container=server"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
    }  # fmt: skip
    return {"phase": "Running", "podIP": "10.0.0.3", "containerStatuses": [container]}


def image_pull_failing() -> dict:
    container = {
        "name": "server", "ready": False, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff",
                              "message": 'Back-off pulling image "registry.example/vllm:nope"'}},
    }  # fmt: skip
    return {"phase": "Pending", "containerStatuses": [container]}


def condition(emulator, type_: str) -> dict:
    status = emulator.objects[CR, NS, "m"].get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}.get(type_, {})


def phase(emulator) -> str | None:
    return (emulator.objects[CR, NS, "m"].get("status") or {}).get("phase")


async def test_scheduler_and_kubelet_verdicts_are_degraded_with_their_words(kmock, kubeconfig):
    declare(kmock)
    spec = {"model": {"uri": "hf://org/llama"}, "accelerator": "GPU", "gpusPerReplica": 1}
    path = f"/api/v1/namespaces/{NS}/pods/m-0/status"

    async def kubelet_says(status: dict) -> None:
        patch = {"status": {"conditions": None, "containerStatuses": None, **status}}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200

    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", spec, NS))
        await wait_for(lambda: (DEPLOYMENT, NS, "m") in kmock.objects, what="the Deployment")
        await wait_for(lambda: phase(kmock) == "Pending", what="Pending")

        # No node has a free GPU.
        await kube_emulator.start_pods(kmock, NS, "m", {"m-0": unschedulable(NO_GPU)})
        await wait_for(lambda: condition(kmock, "Degraded").get("reason") == "Unschedulable")
        assert condition(kmock, "Degraded")["message"] == f"pod m-0 cannot be scheduled: {NO_GPU}"
        assert phase(kmock) == "Degraded"
        await wait_for(lambda: events(kmock, "Unschedulable"), what="a Warning event")

        # Scheduled, but the image cannot be pulled.
        await kubelet_says(image_pull_failing())
        await wait_for(lambda: condition(kmock, "Degraded").get("reason") == "ImagePullBackOff")
        assert "registry.example/vllm:nope" in condition(kmock, "Degraded")["message"]

        # Pulled, but the server keeps dying.
        await kubelet_says(crash_looping(4))
        await wait_for(lambda: condition(kmock, "Degraded").get("reason") == "CrashLoopBackOff")
        assert condition(kmock, "Degraded")["message"] == (
            "pod m-0 keeps failing: container server OOMKilled with code 137, restarted 4 times"
        )

        # Fixed (a bigger node): the server runs and starts; that is progress, not failure.
        await kubelet_says(pod_status("10.0.0.3", ready=False))
        await wait_for(lambda: condition(kmock, "Degraded").get("status") == "False")
        assert condition(kmock, "Progressing")["reason"] == "LoadingModel"
        assert phase(kmock) == "Starting"  # its server does not answer (no such address here)
        await wait_for(lambda: events(kmock, "AsExpected"), what="a Normal event")


async def test_a_pod_that_starts_is_progress_at_once(kmock, kubeconfig, monkeypatch):
    """A pod turning Running but not ready changes no trouble and no Deployment count: its
    event alone must start the progress polls (the drift check is a minute away)."""
    monkeypatch.setenv("VLLM_OPERATOR_DRIFT_CHECK_SECONDS", "3600")
    declare(kmock)
    spec = {"model": {"uri": "/m"}, "accelerator": "CPU"}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("m", spec, NS))
        await wait_for(lambda: phase(kmock) == "Pending", what="Pending")
        await kube_emulator.start_pods(kmock, NS, "m", {"m-0": {"phase": "Pending"}})
        await asyncio.sleep(2)  # whatever the CR's creation set going is over
        path = f"/api/v1/namespaces/{NS}/pods/m-0/status"
        patch = {"status": pod_status("127.0.0.9", ready=False)}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await wait_for(lambda: phase(kmock) == "Starting", timeout=10, what="Starting")
        assert condition(kmock, "Progressing")["reason"] == "LoadingModel"
