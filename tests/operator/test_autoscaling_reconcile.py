"""spec.autoscaling through the real operator process against the emulator: a KEDA
ScaledObject where KEDA's CRD is served, else an autoscaling/v2 HorizontalPodAutoscaler; owned
by the VLLMDeployment, reported in AutoscalerCreated, pruned when the spec drops it; and the
autoscaler's writes to spec.replicas (the scale subresource) are what the Deployment follows."""

from __future__ import annotations

import kmock
import pytest

from vllm_testkit import kube_emulator
from vllm_testkit.kube_emulator import (
    CR,
    DEPLOYMENT,
    KubeEmulator,
    cr_path,
    create,
    declare,
    exists,
    running_operator,
    wait_for,
)
from vllm_testkit.samples import vllmd

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=KubeEmulator)]

NS = "models"
SCALED_OBJECT = kmock.resource("keda.sh/v1alpha1/scaledobjects")
HPA = kmock.resource("autoscaling/v2/horizontalpodautoscalers")
ROUTE = kmock.resource("http.keda.sh/v1beta1/interceptorroutes")
PROMETHEUS = "http://prometheus.monitoring.svc:9090"
TTFT = {"minReplicas": 1, "maxReplicas": 6, "ttftSeconds": 0.5,
        "prometheus": {"address": PROMETHEUS}}  # fmt: skip


def cr(emulator, name: str) -> dict:
    return emulator.objects[CR, NS, name]


def condition(emulator, name: str, type_: str) -> dict | None:
    conditions = (cr(emulator, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


async def patch_cr(emulator, name: str, patch: dict, generation: int) -> None:
    await kube_emulator.patch_cr(emulator, NS, name, patch, generation=generation)


async def test_with_keda_a_scaled_object_drives_the_replicas_and_goes_with_the_spec(
    kmock, kubeconfig
):
    declare(kmock, keda=True)
    async with running_operator(kmock):
        await create(
            kmock, cr_path(NS), vllmd("llm", {"model": {"uri": "/m"}, "autoscaling": TTFT}, NS)
        )
        await wait_for(lambda: exists(kmock, (SCALED_OBJECT, NS, "llm")), what="the ScaledObject")
        await wait_for(lambda: condition(kmock, "llm", "AutoscalerCreated") is not None)
        created = condition(kmock, "llm", "AutoscalerCreated")
        assert (created["status"], created["reason"]) == ("True", "KEDAScaledObject")
        # Nothing of the operator's scrapes these servers (no Prometheus Operator here): said.
        assert "no ServiceMonitor or PodMonitor of the operator's scrapes" in created["message"]
        scaled = kmock.objects[SCALED_OBJECT, NS, "llm"]
        assert scaled["spec"]["scaleTargetRef"] == {
            "apiVersion": "serving.vllm.ai/v1alpha1", "kind": "VLLMDeployment", "name": "llm",
        }  # fmt: skip
        (owner,) = scaled["metadata"]["ownerReferences"]
        assert owner["uid"] == cr(kmock, "llm")["metadata"]["uid"] and owner["controller"]
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["serverAddress"] == PROMETHEUS
        assert not exists(kmock, (HPA, NS, "llm"))  # KEDA makes its own

        # KEDA writes spec.replicas through the scale subresource: the Deployment follows.
        await patch_cr(kmock, "llm", {"spec": {"replicas": 4}}, generation=2)
        await wait_for(lambda: kmock.objects[DEPLOYMENT, NS, "llm"]["spec"]["replicas"] == 4,
                       what="the Deployment at 4 replicas")  # fmt: skip

        await patch_cr(kmock, "llm", {"spec": {"autoscaling": None}}, generation=3)
        await wait_for(lambda: not exists(kmock, (SCALED_OBJECT, NS, "llm")), what="the prune")
        await wait_for(lambda: condition(kmock, "llm", "AutoscalerCreated") is None)


async def test_without_keda_an_hpa_on_the_external_metric(kmock, kubeconfig):
    declare(kmock)
    scaling = {"minReplicas": 0, "maxReplicas": 3, "tokensWaitingPerReplica": 4000}
    async with running_operator(kmock):
        await create(
            kmock, cr_path(NS), vllmd("raw", {"model": {"uri": "/m"}, "autoscaling": scaling}, NS)
        )
        await wait_for(lambda: exists(kmock, (HPA, NS, "raw")), what="the HPA")
        await wait_for(lambda: condition(kmock, "raw", "AutoscalerCreated") is not None)
        created = condition(kmock, "raw", "AutoscalerCreated")
        assert (created["status"], created["reason"]) == ("True", "HorizontalPodAutoscaler")
        assert "scaling to zero needs KEDA" in created["message"]
        hpa = kmock.objects[HPA, NS, "raw"]["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
        (metric,) = hpa["metrics"]
        assert metric["external"]["metric"]["name"] == "vllm_num_tokens_waiting"
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "4000"}

        await patch_cr(kmock, "raw", {"spec": {"autoscaling": None}}, generation=2)
        await wait_for(lambda: not exists(kmock, (HPA, NS, "raw")), what="the prune")


async def test_keda_without_a_prometheus_address_is_reported(kmock, kubeconfig):
    declare(kmock, keda=True)
    scaling = {"maxReplicas": 3, "kvCacheUsage": 0.8}
    async with running_operator(kmock):
        await create(
            kmock, cr_path(NS), vllmd("nop", {"model": {"uri": "/m"}, "autoscaling": scaling}, NS)
        )
        await wait_for(lambda: condition(kmock, "nop", "AutoscalerCreated") is not None)
        created = condition(kmock, "nop", "AutoscalerCreated")
        assert (created["status"], created["reason"]) == ("False", "PrometheusAddressMissing")
        assert exists(kmock, (DEPLOYMENT, NS, "nop"))  # the model serves all the same
        assert not exists(kmock, (SCALED_OBJECT, NS, "nop"))


async def test_to_zero_only_where_keda_s_http_add_on_holds_requests(kmock, kubeconfig):
    declare(kmock, keda=True, keda_http=True, monitoring=True)
    scaling = {**TTFT, "minReplicas": 0}
    spec = {"model": {"uri": "/m"}, "autoscaling": scaling, "monitoring": {"podMonitor": True}}
    async with running_operator(kmock):
        await create(kmock, cr_path(NS), vllmd("zero", spec, NS))
        await wait_for(lambda: exists(kmock, (ROUTE, NS, "zero")), what="the InterceptorRoute")
        await wait_for(lambda: exists(kmock, (SCALED_OBJECT, NS, "zero")), what="the ScaledObject")
        await wait_for(lambda: condition(kmock, "zero", "AutoscalerCreated") is not None)
        scaled = kmock.objects[SCALED_OBJECT, NS, "zero"]["spec"]
        assert scaled["minReplicaCount"] == 0
        assert [t["type"] for t in scaled["triggers"]] == ["prometheus", "external-push"]
        message = condition(kmock, "zero", "AutoscalerCreated")["message"]
        assert "requests held by InterceptorRoute/zero" in message
        assert "no ServiceMonitor or PodMonitor" not in message  # its PodMonitor scrapes them

        # Back to a floor of one: the route goes.
        await patch_cr(kmock, "zero", {"spec": {"autoscaling": {"minReplicas": 1}}}, generation=2)
        await wait_for(lambda: not exists(kmock, (ROUTE, NS, "zero")), what="the prune")


async def test_without_the_http_add_on_one_replica_stays(kmock, kubeconfig):
    declare(kmock, keda=True)
    scaling = {**TTFT, "minReplicas": 0}
    async with running_operator(kmock):
        await create(
            kmock, cr_path(NS), vllmd("one", {"model": {"uri": "/m"}, "autoscaling": scaling}, NS)
        )
        await wait_for(lambda: exists(kmock, (SCALED_OBJECT, NS, "one")), what="the ScaledObject")
        await wait_for(lambda: condition(kmock, "one", "AutoscalerCreated") is not None)
        assert kmock.objects[SCALED_OBJECT, NS, "one"]["spec"]["minReplicaCount"] == 1
        message = condition(kmock, "one", "AutoscalerCreated")["message"]
        assert "keeping 1 replica: scaling to zero needs KEDA's HTTP add-on" in message
