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


def test_extra_arguments_cannot_widen_the_servers_adapter_roots():
    """`--lora-allowed-roots` takes a list: a bare path in `engine.extraArgs` right after it
    would join the list. The server's own parser reads what the operator built."""
    from vllm_operator.model.builders import server_args
    from vllm_server_ext.cli import parse_command_line

    lora = {"enabled": True, "allowedSourceRoots": ["/models"]}
    spec = vllmd("m", {"model": {"uri": "/m"}, "lora": lora, "engine": {"extraArgs": ["/"]}})
    invocation = parse_command_line(server_args(parse_deployment(spec, IMAGES)))
    assert invocation.options.lora_allowed_roots == ["/models"]
