"""Token-level load of one engine, kept incrementally.

vLLM 0.32 reports load only as request counts. Balancers and autoscalers need tokens: ten
requests with 30-token prompts are not ten with 3000-token prompts. Summing over all requests on
every scrape or engine step is what upstream rejected for cost (vLLM PRs #12286, #12726), so the
totals here move by O(1) per request event (arrival, new tokens, finish/abort) and a scrape reads
two integers.

Seen from the API process, a request is *waiting* from arrival until its first output token
(queued or prefilling) and *running* afterwards:

- ``waiting`` = sum of prompt tokens of waiting requests;
- ``running`` = sum of prompt + generated tokens of running requests.

The two are disjoint. A preemption inside the engine is invisible to the API process, so a
preempted request stays counted as running (its KV cache is recomputed, not lost).
"""

from __future__ import annotations

from collections.abc import Iterator


class TokenLoad:
    __slots__ = ("_requests", "running", "waiting")

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        # request id -> [prompt tokens, generated tokens, running?]
        self._requests: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def added(self, request_id: str, prompt_tokens: int) -> None:
        if request_id in self._requests:  # a streaming-input update of a known request
            return
        self._requests[request_id] = [prompt_tokens, 0, 0]
        self.waiting += prompt_tokens

    def generated(self, request_id: str, new_tokens: int) -> None:
        entry = self._requests.get(request_id)
        if entry is None:
            return
        if not entry[2]:
            entry[2] = 1
            self.waiting -= entry[0]
            self.running += entry[0]
        entry[1] += new_tokens
        self.running += new_tokens

    def finished(self, request_id: str) -> None:
        """A request finished or was aborted; unknown or already finished ids are ignored."""
        entry = self._requests.pop(request_id, None)
        if entry is None:
            return
        if entry[2]:
            self.running -= entry[0] + entry[1]
        else:
            self.waiting -= entry[0]


class TokenLoadCollector:
    """Exposes `vllm:num_tokens_running` / `vllm:num_tokens_waiting` with vLLM's labels, read at
    scrape time (no per-event metric updates)."""

    def __init__(self, load: TokenLoad, *, model_name: str, engine: str = "0") -> None:
        self.load = load
        self.labels = [model_name, engine]

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import GaugeMetricFamily

        names = ["model_name", "engine"]
        running = GaugeMetricFamily(
            "vllm:num_tokens_running",
            "Prompt plus generated tokens of requests that have produced output.",
            labels=names,
        )
        running.add_metric(self.labels, self.load.running)
        waiting = GaugeMetricFamily(
            "vllm:num_tokens_waiting",
            "Prompt tokens of requests queued or in prefill (no output token yet).",
            labels=names,
        )
        waiting.add_metric(self.labels, self.load.waiting)
        yield running
        yield waiting
