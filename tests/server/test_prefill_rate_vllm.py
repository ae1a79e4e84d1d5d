"""`vllm:prefill_tokens_per_second` on real vLLM (CPU, the tiny model): absent before the first
request, then a positive, finite rate with vLLM's labels after a few completions."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_testkit.servers import SERVED_NAME, ServerProcess

pytestmark = pytest.mark.vllm

RATE = "vllm:prefill_tokens_per_second"
PROMPT = "the quick brown fox jumps over the lazy dog while the model server loads " * 4


def samples(text: str, name: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_the_prefill_rate_is_measured_on_the_real_engine(server: ServerProcess):
    async def scenario() -> tuple[str, list[httpx.Response], str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            before = (await client.get("/metrics")).text
            request = {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
            replies = [await client.post("/v1/completions", json=request) for _ in range(3)]
            # then a burst, so that some prompts queue behind others
            replies += await asyncio.gather(
                *(client.post("/v1/completions", json=request) for _ in range(12))
            )
            return before, replies, (await client.get("/metrics")).text

    before, replies, after = asyncio.run(scenario())
    # On a server that has prefilled nothing yet (this file alone, or run first) the series has
    # no sample; later in a session the shared server has served other tests' requests.
    prefilled_before = samples(before, "vllm:prompt_tokens_total")  # vLLM's own counter
    assert prefilled_before
    if sum(s.value for s in prefilled_before) == 0:
        assert samples(before, RATE) == []
        assert any(f.name == RATE for f in text_string_to_metric_families(before))
    assert all(r.status_code == 200 for r in replies)
    prompt_tokens = replies[0].json()["usage"]["prompt_tokens"]
    assert prompt_tokens > 40
    (sample,) = samples(after, RATE)
    assert sample.labels == {"model_name": SERVED_NAME, "engine": "0"}
    assert math.isfinite(sample.value) and sample.value > 0
    # A prompt is prefilled in well under a minute even on a CPU, and not faster than light.
    assert prompt_tokens / 60 < sample.value < 1e8
    print(f"\n{RATE} = {sample.value:.0f} tokens/s ({prompt_tokens}-token prompts)")
