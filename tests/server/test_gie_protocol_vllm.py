"""The Gateway API Inference Extension's model-server protocol
(gateway-api-inference-extension, docs/proposals/003-model-server-protocol): the gauges its
endpoint picker scrapes to choose a pod, and the LoRA gauge its adapter affinity reads, on a
real `vllm-ext-serve` with an adapter loaded and a request of it served."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_testkit.servers import ServerProcess

pytestmark = pytest.mark.vllm

# TotalQueuedRequests, TotalRunningRequests, KVCacheUtilization: vLLM's names, as GIE's table
# gives them for vLLM (gauges).
REQUIRED_GAUGES = (
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
)
LORA_INFO = "vllm:lora_requests_info"  # value: when it was last updated; labels below
LORA_LABELS = {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}
ADAPTER = "gie-adapter"


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_the_endpoint_picker_needs(server: ServerProcess, tiny_lora):
    with (
        httpx.Client(base_url=server.admin_url, timeout=60) as admin,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        load = {"lora_name": ADAPTER, "lora_path": str(tiny_lora)}
        assert admin.post("/v1/load_lora_adapter", json=load).status_code == 200
        try:
            request = {
                "model": ADAPTER,
                "prompt": "the model server protocol " * 4,
                "max_tokens": 64,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
            }
            with client.stream("POST", "/v1/completions", json=request) as streamed:
                assert streamed.status_code == 200
                lines = streamed.iter_lines()
                next(line for line in lines if line.startswith("data:"))  # it runs
                during = client.get("/metrics").text
                assert any(line == "data: [DONE]" for line in lines)
            after = client.get("/metrics").text
        finally:
            admin.post("/v1/unload_lora_adapter", json={"lora_name": ADAPTER})

    for text in (during, after):
        found = families(text)
        for name in REQUIRED_GAUGES:
            assert name in found, f"{name} missing from /metrics"
            family = found[name]
            assert family.type == "gauge", (name, family.type)
            assert family.samples, name
        lora = found[LORA_INFO]
        assert lora.type == "gauge"
        assert all(set(s.labels) >= LORA_LABELS for s in lora.samples), lora.samples
        assert {s.labels["max_lora"] for s in lora.samples} == {"2"}  # the server's --max-loras
        for sample in lora.samples:
            assert sample.value > 1.7e9  # a Unix time, the latest of which the picker reads
    # While the adapter's request ran, a series named it among the running adapters (a comma
    # separated list); vLLM keeps every label set it has seen, the picker takes the newest.
    running = [
        s.labels["running_lora_adapters"].split(",") for s in families(after)[LORA_INFO].samples
    ]
    assert any(ADAPTER in names for names in running), running
