"""Secure by default: a VLLMDeployment that says nothing about network policy gets one that keeps
its servers' admin port (LoRA load/unload) to the operator, and the chart's values do the same
for the models they list."""

from __future__ import annotations

from vllm_operator.model.builders import build_all
from vllm_operator.model.spec import parse_deployment
from vllm_testkit.samples import IMAGES, vllmd


def test_a_minimal_spec_keeps_the_admin_port_to_the_operator():
    spec = parse_deployment(vllmd("m", {"model": {"uri": "hf://org/m"}}), IMAGES)
    objects = build_all(spec, monitoring_available=False, operator_namespace="vllm-system")
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    by_port = {r["ports"][0]["port"]: r.get("from") for r in policy["spec"]["ingress"]}
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vllm-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm-operator"}},
    }
    assert by_port == {8000: None, 8001: [operator]}  # the API for all, the admin port for one
