"""Model sources through the real operator, fast: kmock's emulated API and a test double of the
servers (`VLLMAdminDouble`, whose `/ready` says what a starting vllm-ext-serve says: its phase and
its download). Two replicas share the cache: one downloads, the other waits for it; the status
says so while it lasts, then records what the cache holds (`status.modelCache`) and keeps it
while the cache is on. An oci:// model on a cluster without image volumes is Degraded with the
API server's words."""

from __future__ import annotations

import re
from typing import Any

import pytest

from vllm_operator.model import reasons
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
from vllm_testkit.servers import free_port
from vllm_testkit.vllm_admin_double import VLLMAdminDouble

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR_PATH = cr_path(NS)
HOSTS = {"llama-0": "127.0.0.5", "llama-1": "127.0.0.6"}
URI, SHA = "hf://org/llama", "0123456789abcdef0123456789abcdef01234567"
GB = 10**9


@pytest.fixture
def servers():
    double = VLLMAdminDouble(list(HOSTS.values()), free_port())
    yield double
    double.close()


def ready_body(phase: str, seconds: float, download: dict[str, Any] | None) -> dict[str, Any]:
    """A starting vllm-ext-serve's `/ready` (its early server's `describe()`)."""
    body: dict[str, Any] = {
        "ready": False, "phase": phase, "instance_id": "i", "model": URI,
        "uptime_seconds": seconds + 1, "startup_seconds": {"starting": 1.0, phase: seconds},
    }  # fmt: skip
    if download is not None:
        body["download"] = download
    return body


def download(present: int, *, complete: bool = False, eta: float | None = None) -> dict:
    return {
        "source": URI, "revision": SHA, "bytes": present, "total_bytes": 140 * GB,
        "fetched_bytes": present, "bytes_per_second": 1.5e8 if eta else 0,
        "eta_seconds": eta, "complete": complete,
    }  # fmt: skip


def status(emulator) -> dict:
    return emulator.objects[CR, NS, "llama"].get("status") or {}


def condition(emulator, type_: str) -> dict:
    found = {c["type"]: c for c in status(emulator).get("conditions") or []}
    return found.get(type_, {})


def progressing(emulator) -> str:
    return condition(emulator, "Progressing")["message"]


async def test_the_shared_cache_fills_once_and_the_status_records_what_it_holds(
    kmock, kubeconfig, servers, monkeypatch
):
    monkeypatch.setenv("VLLM_OPERATOR_PROGRESS_CHECK_SECONDS", "0.2")
    declare(kmock)
    filler, waiter = (servers.servers[HOSTS[pod]] for pod in HOSTS)
    filler.ready = ready_body("downloading", 200, download(57 * GB, eta=553))
    filler_id = "f" * 32
    waiter.ready = ready_body(
        "waiting_for_cache", 190, download(57 * GB) | {"filled_by": filler_id}
    )
    spec = {
        "model": {"uri": URI},
        "replicas": 2,
        "accelerator": "CPU",
        "port": servers.port,  # the double answers /ready on the API port
        "modelCache": {"enabled": True, "accessMode": "ReadWriteMany"},
    }
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("llama", spec, NS))
        await wait_for(lambda: (DEPLOYMENT, NS, "llama") in kmock.objects, what="the Deployment")
        args = kmock.objects[DEPLOYMENT, NS, "llama"]["spec"]["template"]["spec"]["containers"][0]
        assert args["args"][0] == URI  # the server downloads it itself
        statuses = {pod: pod_status(ip, ready=False) for pod, ip in HOSTS.items()}
        await kube_emulator.start_pods(kmock, NS, "llama", statuses)

        # One downloads, one waits for it: the least advanced names the phase.
        await wait_for(
            lambda: status(kmock)["phase"] == "WaitingForCache", timeout=15, what="the phase"
        )
        assert progressing(kmock) == (
            "2/2 replicas starting: waiting_for_cache for 3m10s, "
            "downloading 40 % of 140 GB for 3m20s (9m13s left)"
        )
        assert "modelCache" not in status(kmock)  # nothing complete yet

        # The download completes; the filler imports vLLM, the waiter finds the files.
        complete = download(140 * GB, complete=True)
        filler.ready = ready_body("importing", 2, complete)
        waiter.ready = ready_body("importing", 1, complete)
        await wait_for(lambda: "modelCache" in status(kmock), timeout=15, what="the record")
        record = status(kmock)["modelCache"]
        assert {k: v for k, v in record.items() if k != "readyTime"} == {
            "model": URI, "revision": SHA, "sizeBytes": 140 * GB,
        }  # fmt: skip
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["readyTime"])
        assert status(kmock)["phase"] == "Importing"

        # Both serve: no pod is asked any more, the record stays (it is the volume's).
        for pod, ip in HOSTS.items():
            path = f"/api/v1/namespaces/{NS}/pods/{pod}/status"
            ready = {"status": pod_status(ip, ready=True)}
            assert (await kmock.patch(path, json=ready, headers=MERGE)).status == 200
        counts = {"status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}}
        deployment = f"/apis/apps/v1/namespaces/{NS}/deployments/llama/status"
        assert (await kmock.patch(deployment, json=counts, headers=MERGE)).status == 200
        await wait_for(lambda: status(kmock)["phase"] == "Ready", timeout=15, what="Ready")
        assert status(kmock)["modelCache"] == record

        # The cache turned off: its record goes.
        patch = {"metadata": {"generation": 2}, "spec": {"modelCache": {"enabled": False}}}
        assert (await kmock.patch(f"{CR_PATH}/llama", json=patch, headers=MERGE)).status == 200
        await wait_for(
            lambda: (
                status(kmock).get("observedGeneration") == 2 and "modelCache" not in status(kmock)
            ),
            timeout=15,
            what="the record dropped",
        )
    # Only the starting servers were asked, on their API port, without a credential.
    assert all(
        kind in ("ready",) for server in servers.servers.values() for kind, _ in server.calls
    )


# What an API server without the ImageVolume feature says of a Deployment with an image volume:
# it drops the field it does not serve, and the volume is left without a source.
NO_IMAGE_VOLUMES = (
    'Deployment.apps "llama" is invalid: spec.template.spec.volumes[4]: Required value: must '
    "specify a volume type"
)


async def test_an_oci_model_where_image_volumes_are_off_is_degraded_with_the_api_servers_words(
    kmock, kubeconfig
):
    declare(kmock)
    for verb in ("create", "patch"):
        kmock.refusals[(verb, "deployments", "llama")] = (422, NO_IMAGE_VOLUMES)
    spec = {"model": {"uri": "oci://registry.example/models/llama:v1"}, "accelerator": "CPU"}
    async with running_operator(kmock):
        await create(kmock, CR_PATH, vllmd("llama", spec, NS))
        await wait_for(
            lambda: condition(kmock, "Degraded").get("reason") == reasons.APPLY_FAILED,
            what="ApplyFailed",
        )
    assert condition(kmock, "Degraded")["message"] == f"Deployment/llama: {NO_IMAGE_VOLUMES}"
    assert status(kmock)["phase"] == "Degraded"
