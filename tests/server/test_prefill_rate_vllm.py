"""`vllm:prefill_tokens_per_second` on real vLLM (CPU, the tiny model): absent before the first
request, then a positive, finite rate with vLLM's labels after a few completions. And the
prefill part of the wait (`vllm:prefill_token_seconds_total`) is vLLM's own prefill interval of
each request, weighted by its prompt tokens."""

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


def total(text: str, name: str) -> float:
    return sum(s.value for s in samples(text, name))


def test_the_prefill_part_of_the_wait_is_vllms_own_prefill_interval(server: ServerProcess):
    """Requests of one prompt length, a burst so that some queue: the counter grows by the
    prompt length times the growth of the sum of vLLM's `vllm:request_prefill_time_seconds`
    (the same engine timestamps), and stays within the whole wait."""

    async def scenario() -> tuple[str, list[httpx.Response], str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            before = (await client.get("/metrics")).text
            request = {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
            replies = await asyncio.gather(
                *(client.post("/v1/completions", json=request) for _ in range(16))
            )
            return before, replies, (await client.get("/metrics")).text

    before, replies, after = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in replies)
    prompt_tokens = replies[0].json()["usage"]["prompt_tokens"]

    def grown(name: str) -> float:
        return total(after, name) - total(before, name)

    prefill = grown("vllm:prefill_token_seconds_total")
    waited = grown("vllm:waiting_token_seconds_total")
    vllms = grown("vllm:request_prefill_time_seconds_sum")
    assert grown("vllm:prefilled_tokens_total") == 16 * prompt_tokens
    assert prefill > 0
    assert prefill == pytest.approx(prompt_tokens * vllms, rel=1e-6)
    assert prefill < waited  # the burst queued: part of the wait is not prefill
    print(f"\nwait {waited / (16 * prompt_tokens):.4f} s a token, "
          f"of which prefill {prefill / (16 * prompt_tokens):.4f} s")  # fmt: skip
