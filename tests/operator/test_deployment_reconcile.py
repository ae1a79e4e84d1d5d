"""One VLLMDeployment reconcile, called directly against the emulated API server (how it ends,
PermanentError or TemporaryError, is checked through Kopf in test_kmock.py, since its events
need Kopf's context; here `kopf.event` is replaced where conditions flip), and the pod events
that refresh its status."""

from __future__ import annotations

import kopf
import pytest
import pytest_asyncio

from vllm_operator.clients.kube import Kube
from vllm_operator.config import Settings
from vllm_operator.reconcile.deployment import reconcile_deployment
from vllm_operator.reconcile.reconciler import Reconciler
from vllm_testkit.kube_emulator import (
    CR,
    MERGE,
    POD,
    KubeEmulator,
    cr_path,
    create,
    declare,
    pod_config_error,
    pod_status,
    start_pods,
)
from vllm_testkit.samples import IMAGES, vllmd

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR_PATH = cr_path(NS)
SETTINGS = Settings(images=IMAGES, namespace="vllm-system")


@pytest_asyncio.fixture
async def kube(kmock):
    client = Kube(str(kmock.url).rstrip("/"), False)
    yield client
    await client.close()


async def reconcile(kmock, kube, spec: dict) -> dict:
    body = vllmd("m", spec, NS)
    await create(kmock, CR_PATH, body)
    await reconcile_deployment(
        kube, kmock.objects[CR, NS, "m"].raw, SETTINGS, retry=0, prune_children=True
    )
    return kmock.objects[CR, NS, "m"].raw


def degraded(obj: dict) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")


async def test_monitors_are_not_applied_where_their_crds_are_not_served(kmock, kube):
    declare(kmock)  # no monitoring.coreos.com resources
    spec = {"model": {"uri": "/m"}, "monitoring": {"serviceMonitor": True, "podMonitor": True}}
    obj = await reconcile(kmock, kube, spec)
    assert degraded(obj)["status"] == "False"
    plurals = {r.resource.plural for r in kmock if r.resource is not None}
    assert not plurals & {"servicemonitors", "podmonitors"}


NO_SECRET = 'secret "hf-token" not found'


async def test_pod_events_refresh_only_the_status_and_only_when_the_kubelets_verdict_changes(
    kmock, kube, monkeypatch
):
    """A pod event costs no API call unless the pod gained or lost a config error the status
    does not show yet; then the status alone is refreshed (reads and a status patch, no
    apply round)."""
    declare(kmock)
    posted = []
    monkeypatch.setattr(kopf, "event", lambda obj, **event: posted.append(event))  # Kopf's own
    # A CPU model without LoRA: the admin client is never used.
    reconciler = Reconciler(kube, None, SETTINGS)  # type: ignore[arg-type]
    await create(kmock, CR_PATH, vllmd("m", {"model": {"uri": "/m"}, "accelerator": "CPU"}, NS))
    await reconciler.deployment(NS, "m")
    await start_pods(
        kmock, NS, "m",
        {"m-1": pod_status("10.0.0.1", ready=True), "m-2": pod_config_error(NO_SECRET)},
    )  # fmt: skip

    def pod(name: str) -> dict:
        return kmock.objects[POD, NS, name].raw

    def requests_during() -> list[tuple[str, str]]:
        return [(r.method.value, r.url.path) for r in list(kmock)[before:]]

    before = len(list(kmock))
    await reconciler.pod_changed(pod("m-1"), "MODIFIED")  # runs, as the status says
    assert requests_during() == []
    await reconciler.pod_changed(pod("m-2"), "ADDED")  # cannot start: the status follows
    assert [r for r in requests_during() if r[0] != "GET"] == [("PATCH", f"{CR_PATH}/m/status")]
    degraded = next(c for c in kmock.objects[CR, NS, "m"]["status"]["conditions"]
                    if c["type"] == "Degraded")  # fmt: skip
    assert (degraded["reason"], degraded["message"]) == (
        "SecretNotFound", f"pod m-2 cannot start: {NO_SECRET}"
    )  # fmt: skip
    assert [e["reason"] for e in posted] == ["SecretNotFound"]

    before = len(list(kmock))
    await reconciler.pod_changed(pod("m-2"), "MODIFIED")  # still the same: no news
    await reconciler.pod_changed(pod("m-1"), "MODIFIED")
    assert requests_during() == []

    # The pod goes (a rollout replaced it): the status follows once more.
    last_seen = pod("m-2")  # a DELETED event carries the object as it was
    assert (await kmock.delete(f"/api/v1/namespaces/{NS}/pods/m-2")).status == 200
    before = len(list(kmock))
    await reconciler.pod_changed(last_seen, "DELETED")
    assert [r for r in requests_during() if r[0] != "GET"] == [("PATCH", f"{CR_PATH}/m/status")]
    assert degraded_of(kmock)["status"] == "False"
    assert [e["reason"] for e in posted] == ["SecretNotFound", "AsExpected"]


def degraded_of(emulator) -> dict:
    return degraded(emulator.objects[CR, NS, "m"].raw)


async def test_a_spec_change_not_applied_yet_waits_for_its_apply_round(kmock, kube, monkeypatch):
    """A status refreshed from the pods alone would claim the new generation as observed."""
    declare(kmock)
    monkeypatch.setattr(kopf, "event", lambda obj, **event: None)
    reconciler = Reconciler(kube, None, SETTINGS)  # type: ignore[arg-type]
    await create(kmock, CR_PATH, vllmd("m", {"model": {"uri": "/m"}, "accelerator": "CPU"}, NS))
    await reconciler.deployment(NS, "m")
    patch = {"metadata": {"generation": 2}, "spec": {"replicas": 2}}
    merge = {"Content-Type": "application/merge-patch+json"}
    assert (await kmock.patch(f"{CR_PATH}/m", json=patch, headers=merge)).status == 200
    await start_pods(kmock, NS, "m", {"m-1": pod_config_error(NO_SECRET)})
    await reconciler.pod_changed(kmock.objects[POD, NS, "m-1"].raw, "ADDED")
    status = kmock.objects[CR, NS, "m"]["status"]
    assert status["observedGeneration"] == 1 and degraded_of(kmock)["status"] == "False"
    await reconciler.deployment(NS, "m")  # the apply round: both at once
    assert kmock.objects[CR, NS, "m"]["status"]["observedGeneration"] == 2
    assert degraded_of(kmock)["reason"] == "SecretNotFound"


async def test_a_model_at_rest_costs_no_pod_reads(kmock, kube, monkeypatch):
    """Every model is reconciled at least once a minute (the drift check): where the
    Deployment's own counts say every pod is current and ready, no pod can be starting or in
    trouble, and its ReplicaSets and pods are not listed."""
    declare(kmock)
    monkeypatch.setattr(kopf, "event", lambda obj, **event: None)  # Kopf's own
    reconciler = Reconciler(kube, None, SETTINGS)  # type: ignore[arg-type]
    await create(kmock, CR_PATH, vllmd("m", {"model": {"uri": "/m"}, "replicas": 2}, NS))
    await reconciler.deployment(NS, "m")
    await start_pods(
        kmock, NS, "m", {f"m-{i}": pod_status(f"10.0.0.{i}", ready=True) for i in (1, 2)}
    )

    def pod_reads() -> list[str]:
        return [
            r.url.path
            for r in list(kmock)[before:]
            if r.url.path.endswith(("/pods", "/replicasets"))
        ]

    before = len(list(kmock))
    await reconciler.deployment(NS, "m")  # counts not written yet: the pods are looked at
    assert pod_reads()
    counts = {"status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}}
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/m/status"
    assert (await kmock.patch(path, json=counts, headers=MERGE)).status == 200
    before = len(list(kmock))
    await reconciler.deployment(NS, "m")
    assert pod_reads() == []
    assert kmock.objects[CR, NS, "m"]["status"]["phase"] == "Ready"
