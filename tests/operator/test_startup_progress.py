"""A slow model load is progress, not failure: the real operator (against kmock's emulated API)
reads a real `vllm-ext-serve` that starts slowly (its `import vllm` delayed: the test kit's
`slow_start`), through the server's own `/ready`, as it would a GPU server loading for hours.
The test stands in for the kubelet (the pod's status) and the Deployment controller."""

from __future__ import annotations

import asyncio
import re

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
    pod_status,
    running_operator,
    wait_for,
)
from vllm_testkit.samples import vllmd
from vllm_testkit.servers import ext_server
from vllm_testkit.slow_start import slow_import_env

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR_PATH = cr_path(NS)
HOST = "127.0.0.4"
IMPORT_DELAY = 15.0  # seconds `import vllm` takes on top of its own time


@pytest.fixture
def slow_server(tiny_model, tmp_path):
    env = slow_import_env(tmp_path / "slow-start", IMPORT_DELAY)
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # lighter: the engine in-process
    proc = ext_server(tiny_model, tmp_path / "server.log", env=env)
    proc.host = HOST
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def status(emulator) -> dict:
    return emulator.objects[CR, NS, "slow"].get("status") or {}


def condition(emulator, type_: str) -> dict:
    found = {c["type"]: c for c in status(emulator).get("conditions") or []}
    return found.get(type_, {})


async def test_a_slow_start_reads_as_progress_with_its_phase_then_ready(
    kmock, kubeconfig, slow_server, monkeypatch
):
    monkeypatch.setenv("VLLM_OPERATOR_PROGRESS_CHECK_SECONDS", "0.5")
    declare(kmock)
    seen: list[tuple[str | None, str | None, str | None]] = []

    def watch() -> None:
        entry = (
            status(kmock).get("phase"),
            condition(kmock, "Degraded").get("reason"),
            condition(kmock, "Progressing").get("message"),
        )
        if not seen or seen[-1] != entry:
            seen.append(entry)

    async def until(check, what: str, timeout: float = 60) -> None:
        def watched() -> bool:
            watch()
            return check()

        await wait_for(watched, timeout=timeout, what=what)

    spec = {"model": {"uri": "/models/tiny"}, "accelerator": "CPU", "port": slow_server.port}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("slow", spec, NS))
        await wait_for(lambda: (DEPLOYMENT, NS, "slow") in kmock.objects, what="the Deployment")
        # The kubelet started the container; the server is not ready.
        await kube_emulator.start_pods(kmock, NS, "slow", {"slow-0": pod_status(HOST, ready=False)})
        await until(lambda: status(kmock).get("phase") == "Importing", "the Importing phase")
        progressing = condition(kmock, "Progressing")
        assert progressing["reason"] == "LoadingModel"
        assert re.fullmatch(r"1/1 replicas starting: importing for \d+s", progressing["message"])
        assert condition(kmock, "Degraded")["status"] == "False"
        # The phase's time moves on with the polls, no event needed.
        first = progressing["message"]
        await until(lambda: condition(kmock, "Progressing")["message"] != first, "a newer poll")

        # A startup timeout shorter than the start so far: Degraded, naming pod and phase.
        path = f"{CR_PATH}/slow"
        patch = {"metadata": {"generation": 2}, "spec": {"startupTimeout": "2s"}}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await until(
            lambda: condition(kmock, "Degraded").get("reason") == "StartupTimeout", "the timeout"
        )
        degraded = condition(kmock, "Degraded")
        assert re.fullmatch(
            r"pod slow-0 is over its startupTimeout of 2s: starting for \d+s, importing for \d+s",
            degraded["message"],
        ), degraded["message"]
        assert status(kmock)["phase"] == "Degraded"
        # No limit again: progress again.
        patch = {"metadata": {"generation": 3}, "spec": {"startupTimeout": None}}
        assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
        await until(lambda: condition(kmock, "Degraded")["status"] == "False", "no timeout")

        # The server gets through its phases to ready; the kubelet and the Deployment
        # controller say so, and the status turns Ready.
        await asyncio.to_thread(slow_server.wait_ready)
        assert slow_server.log().count("phase importing") == 1
        pod = f"/api/v1/namespaces/{NS}/pods/slow-0/status"
        ready = {"status": pod_status(HOST, ready=True)}
        assert (await kmock.patch(pod, json=ready, headers=MERGE)).status == 200
        counts = {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
        deployment = f"/apis/apps/v1/namespaces/{NS}/deployments/slow/status"
        assert (await kmock.patch(deployment, json=counts, headers=MERGE)).status == 200
        await until(lambda: status(kmock).get("phase") == "Ready", "Ready")
    watch()

    # All along: Importing (with its time) until the timeout was set, Degraded only while it
    # was, never a Kubernetes progress deadline.
    phases = [phase for phase, _, _ in seen]
    assert "Importing" in phases and phases[-1] == "Ready"
    assert {reason for _, reason, _ in seen} <= {None, "AsExpected", "StartupTimeout"}
    timed_out = [i for i, (_, reason, _) in enumerate(seen) if reason == "StartupTimeout"]
    assert all(seen[i][0] == "Degraded" for i in timed_out)
    assert kmock.objects[DEPLOYMENT, NS, "slow"]["spec"]["progressDeadlineSeconds"] == 2**31 - 1
