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

**Prefill throughput.** An autoscaler with a time-to-first-token target needs, next to
``waiting``, how fast a replica works it off: ``replicas = ceil(sum(waiting) / (ttft * rate))``.
The rate is measured here on the real model and hardware, as a *capacity*, not an arrival rate:

- ``prefilled`` = prompt tokens of requests that got their first output token (the
  waiting -> running move);
- *busy time* = wall time during which ``waiting > 0``: a busy period opens when ``waiting``
  leaves 0 and closes when it returns to 0 (a read counts an open period up to now).

rate = prefilled tokens / busy seconds. Idle time does not dilute it. Under light load it is
prompt / TTFT (queueing, scheduling and detokenization overheads included, which is what the TTFT
model wants); under load it converges to the engine's prefill throughput. A request aborted
before its first token adds its busy time but no tokens, so aborts lower the rate a little (the
engine may well have spent that time on it).

Each read turns the tokens and busy time since the previous read into a sample and folds it into
an exponentially weighted average that weighs samples by their busy time: alpha = 1 -
exp(-busy / ``PREFILL_RATE_TAU``), bias-corrected during the first ``PREFILL_RATE_TAU`` of busy
time (as Adam corrects its moments) so that the first short sample does not dominate. The weight
of the past decays with busy time only, so how often (and by how many scrapers) the value is
read does not change where it converges. A read with no new busy time leaves it unchanged.
Before the first prefilled token there is no value (``None``, no sample exported): a PromQL
division by the series is then empty, not infinite.

All of it is O(1): the clock is read only when ``waiting`` leaves or returns to 0 and on reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

# Busy seconds over which the prefill rate forgets the past (by a factor e): a minute of work
# smooths the burstiness of single prefills yet follows a change of traffic mix within minutes.
PREFILL_RATE_TAU = 60.0


class TokenLoad:
    __slots__ = (
        "_busy_since",
        "_busy_total",
        "_clock",
        "_rate",
        "_rate_weight",
        "_read_busy",
        "_read_lock",
        "_read_tokens",
        "_requests",
        "prefilled",
        "running",
        "waiting",
    )

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.running = 0
        self.waiting = 0
        self.prefilled = 0  # prompt tokens of requests that produced their first output token
        # request id -> [prompt tokens, generated tokens, running?]
        self._requests: dict[str, list[int]] = {}
        self._clock = clock
        self._busy_total = 0.0  # seconds of closed busy periods (waiting > 0)
        self._busy_since: float | None = None  # start of the open busy period
        # Smoothed prefill rate and what the previous read had seen.
        self._rate: float | None = None
        self._rate_weight = 0.0  # 1 - exp(-busy read so far / TAU): the bias correction
        self._read_tokens = 0
        self._read_busy = 0.0
        self._read_lock = threading.Lock()  # reads update the average; events never take it

    def __len__(self) -> int:
        return len(self._requests)

    def added(self, request_id: str, prompt_tokens: int) -> None:
        if request_id in self._requests:  # a streaming-input update of a known request
            return
        self._requests[request_id] = [prompt_tokens, 0, 0]
        if prompt_tokens and not self.waiting:
            self._busy_since = self._clock()
        self.waiting += prompt_tokens

    def generated(self, request_id: str, new_tokens: int) -> None:
        entry = self._requests.get(request_id)
        if entry is None:
            return
        if not entry[2]:
            entry[2] = 1
            self.waiting -= entry[0]
            self.running += entry[0]
            self.prefilled += entry[0]
            if not self.waiting:
                self._idle()
        entry[1] += new_tokens
        self.running += new_tokens

    def finished(self, request_id: str) -> None:
        """A request finished or was aborted; unknown or already finished ids are ignored."""
        entry = self._requests.pop(request_id, None)
        if entry is None:
            return
        if entry[2]:
            self.running -= entry[0] + entry[1]
        else:  # aborted before its first token: its busy time stays, it adds no tokens
            self.waiting -= entry[0]
            if not self.waiting:
                self._idle()

    def _idle(self) -> None:
        if self._busy_since is not None:
            self._busy_total += self._clock() - self._busy_since
            self._busy_since = None

    def busy_seconds(self) -> float:
        """Wall time so far during which some prompt tokens were waiting."""
        since = self._busy_since
        open_period = 0.0 if since is None else self._clock() - since
        return self._busy_total + open_period

    def prefill_rate(self) -> float | None:
        """The smoothed prefill throughput in prompt tokens per busy second, or None before the
        first prefilled token. Every read folds the work since the previous read in."""
        with self._read_lock:
            busy, tokens = self.busy_seconds(), self.prefilled
            new_busy = busy - self._read_busy
            if new_busy <= 0 or (self._rate is None and tokens == self._read_tokens):
                # Nothing new, or busy time without a prefilled token yet: wait for one, so the
                # first sample is tokens / busy time over everything so far.
                return self._rate
            sample = (tokens - self._read_tokens) / new_busy
            decay = math.exp(-new_busy / PREFILL_RATE_TAU)
            weight = self._rate_weight * decay + (1.0 - decay)
            if self._rate is None:
                self._rate = sample
            else:
                self._rate += (1.0 - decay) / weight * (sample - self._rate)
            self._rate_weight = weight
            self._read_busy, self._read_tokens = busy, tokens
            return self._rate


class TokenLoadCollector:
    """Exposes `vllm:num_tokens_running` / `vllm:num_tokens_waiting` and
    `vllm:prefill_tokens_per_second` with vLLM's labels, read at scrape time (no per-event metric
    updates). The rate has no sample before the first prefilled token."""

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
        rate = GaugeMetricFamily(
            "vllm:prefill_tokens_per_second",
            "Measured prefill throughput: prompt tokens that got their first output token per "
            "second during which tokens were waiting, smoothed over a minute of such time.",
            labels=names,
        )
        value = self.load.prefill_rate()
        if value is not None:
            rate.add_metric(self.labels, value)
        yield running
        yield waiting
        yield rate
