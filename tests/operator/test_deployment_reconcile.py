"""One VLLMDeployment reconcile, called directly against the emulated API server (how it ends,
PermanentError or TemporaryError, is checked through Kopf in test_kmock.py, since its events
need Kopf's context)."""

from __future__ import annotations

import kmock
import pytest
import pytest_asyncio

from vllm_operator.clients.kube import Kube
from vllm_operator.config import Settings
from vllm_operator.reconcile.deployment import reconcile_deployment
from vllm_testkit.kube_emulator import KubeEmulator, create, declare
from vllm_testkit.samples import IMAGES, vllmd

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")
CR_PATH = f"/apis/serving.vllm.ai/v1alpha1/namespaces/{NS}/vllmdeployments"
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
