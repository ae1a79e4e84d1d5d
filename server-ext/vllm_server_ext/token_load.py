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

**What a TTFT target needs.** An autoscaler steering the time to first token wants replicas =
ceil(sum(waiting) / (ttft * prefill throughput per replica)). Two counters give both terms over
any window, exactly, whatever the scrape timing:

- ``prefilled`` = prompt tokens of requests that got their first output token (the
  waiting -> running move); a request aborted before its first token adds none;
- ``waited_token_seconds()`` = the time integral of ``waiting`` (token-seconds), kept by
  adding ``waiting * elapsed`` at each change of ``waiting``.

Over a window, rate(waited) is the average number of prompt tokens waiting and rate(prefilled)
the throughput; by Little's law their ratio is the mean time a prompt token waited for its first
output token, so ``replicas = ceil(N * mean wait / ttft)``: a proportional controller of the mean
TTFT (operator/vllm_operator/model/autoscaling.py builds the query).

The wait includes a prompt's own prefill, which more replicas do not shorten; a controller of
the whole wait would ask for replica after replica where the prefill alone exceeds the target.
So a third counter separates the two parts:

- ``prefill_token_seconds`` = the sum, over requests that got their first output token, of
  prompt tokens x vLLM's own prefill interval (from the engine first scheduling the request to
  its first token; engine timestamps, as vLLM's ``vllm:request_prefill_time_seconds``), at
  most the request's whole wait here. Added when the first token arrives.

rate(prefill) over rate(prefilled) is then the mean prefill time of a prompt token: where it
alone nearly fills the target, the query lets the target give way to it rather than ask for
replicas that cannot help.

**The throughput gauge** (``prefill_rate()``, for dashboards): prefilled tokens per *measured*
second, where measured time is wall time except that an *idle stretch* (no request in the
server at all) counts for at most ``IDLE_CAP`` seconds, so a quiet night does not decay it
towards 0. The server starts idle; a stretch ends when a request arrives and starts when the
last one finishes (a read counts an open stretch up to now, capped). Each read folds the tokens
and measured time since the previous read into an exponentially weighted average that weighs
samples by their measured time: alpha = 1 - exp(-measured / ``PREFILL_RATE_TAU``),
bias-corrected during the first ``PREFILL_RATE_TAU`` (as Adam corrects its moments) so that the
first short sample does not dominate; how often and by how many scrapers it is read does not
change where it converges. A read with no new measured time leaves it unchanged. Before the
first prefilled token there is no value (``None``, no sample exported).

All of it is O(1) per request event: the clock is read when ``waiting`` changes (arrival, first
token, abort), when the server becomes empty or stops being empty, and on reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

# Measured seconds over which the prefill rate forgets the past (by a factor e): a minute
# smooths the burstiness of single prefills yet follows a change of traffic within minutes.
PREFILL_RATE_TAU = 60.0

# Seconds an idle stretch (no request in the server) counts for at most in the measured time:
# gaps between sparse requests are part of the traffic, a quiet night is not.
IDLE_CAP = 10.0


class TokenLoad:
    __slots__ = (
        "_clock",
        "_excess_idle",
        "_idle_since",
        "_rate",
        "_rate_weight",
        "_read_lock",
        "_read_measured",
        "_read_tokens",
        "_requests",
        "_start",
        "_waited",
        "prefill_token_seconds",
        "prefilled",
        "running",
        "waiting",
    )

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.running = 0
        self.waiting = 0
        self.prefilled = 0  # prompt tokens of requests that produced their first output token
        self.prefill_token_seconds = 0.0  # their prompt tokens x their prefill interval
        # request id -> [prompt tokens, generated tokens, running?, arrival]
        self._requests: dict[str, list] = {}
        self._clock = clock
        self._start = clock()
        self._idle_since: float | None = self._start  # start of the open idle stretch
        self._excess_idle = 0.0  # sum of max(0, length - IDLE_CAP) over closed idle stretches
        # Smoothed prefill rate and what the previous read had seen.
        self._rate: float | None = None
        self._rate_weight = 0.0  # 1 - exp(-measured time read so far / TAU): bias correction
        self._read_tokens = 0
        self._read_measured = 0.0
        self._read_lock = threading.Lock()  # reads update the average; events never take it
        # The time integral of `waiting` (token-seconds) up to a time, and `waiting` since then:
        # one tuple, replaced whole, so that a read on another thread sees a consistent triple.
        self._waited: tuple[float, float, int] = (0.0, self._start, 0)

    def __len__(self) -> int:
        return len(self._requests)

    def added(self, request_id: str, prompt_tokens: int) -> None:
        if request_id in self._requests:  # a streaming-input update of a known request
            return
        if not self._requests:  # the idle stretch ends
            since = self._idle_since
            if since is not None:
                # Excess first, then the stretch: a concurrent read (which reads the stretch
                # first) can then only count the excess twice, never miss it.
                self._excess_idle += max(0.0, self._clock() - since - IDLE_CAP)
                self._idle_since = None
        self._requests[request_id] = entry = [prompt_tokens, 0, 0, 0.0]
        if prompt_tokens:
            self._waiting_changes(prompt_tokens)
            entry[3] = self._waited[1]  # the arrival, as that change read the clock

    def generated(
        self, request_id: str, new_tokens: int, prefill_seconds: float | None = None
    ) -> None:
        """`new_tokens` output tokens of a request; with its first, `prefill_seconds` is how
        long the engine took from first scheduling it to that token (None: unknown, 0)."""
        entry = self._requests.get(request_id)
        if entry is None:
            return
        if not entry[2]:
            entry[2] = 1
            if entry[0]:
                self._waiting_changes(-entry[0])
                if prefill_seconds:
                    # Within the wait counted here: the queued part stays >= 0 per request.
                    waited = self._waited[1] - entry[3]
                    self.prefill_token_seconds += entry[0] * min(max(prefill_seconds, 0.0), waited)
            self.running += entry[0]
            self.prefilled += entry[0]
        entry[1] += new_tokens
        self.running += new_tokens

    def finished(self, request_id: str) -> None:
        """A request finished or was aborted; unknown or already finished ids are ignored."""
        entry = self._requests.pop(request_id, None)
        if entry is None:
            return
        if entry[2]:
            self.running -= entry[0] + entry[1]
        elif entry[0]:  # aborted before its first token: its time stays measured, no tokens
            self._waiting_changes(-entry[0])
        if not self._requests:  # an idle stretch starts
            self._idle_since = self._clock()

    def _waiting_changes(self, delta: int) -> None:
        integral, since, waiting = self._waited
        now = self._clock()
        self.waiting = waiting + delta
        self._waited = (integral + waiting * (now - since), now, self.waiting)

    def waited_token_seconds(self) -> float:
        """The time integral of `waiting` so far, in token-seconds: a counter whose rate over a
        window is the average number of prompt tokens waiting in it (so, with the prefilled
        tokens' rate, the mean wait for a first token by Little's law)."""
        integral, since, waiting = self._waited
        return integral + waiting * max(0.0, self._clock() - since)

    def measured_seconds(self, now: float | None = None) -> float:
        """Wall time since construction (up to `now`, default the clock), idle stretches
        counted for at most `IDLE_CAP` seconds each (the open one too)."""
        since = self._idle_since  # before the excess: see `added`
        excess = self._excess_idle
        if now is None:
            now = self._clock()
        open_excess = 0.0 if since is None else max(0.0, now - since - IDLE_CAP)
        return now - self._start - excess - open_excess

    def prefill_rate(self) -> float | None:
        """The smoothed prefill throughput in prompt tokens per measured second, or None before
        the first prefilled token. Every read folds the work since the previous read in."""
        with self._read_lock:
            measured, tokens = self.measured_seconds(), self.prefilled
            new_measured = measured - self._read_measured
            if new_measured <= 0 or (self._rate is None and tokens == self._read_tokens):
                # Nothing new, or measured time without a prefilled token yet: wait for one, so
                # the first sample is tokens / measured time over everything so far.
                return self._rate
            sample = (tokens - self._read_tokens) / new_measured
            decay = math.exp(-new_measured / PREFILL_RATE_TAU)
            weight = self._rate_weight * decay + (1.0 - decay)
            if self._rate is None:
                self._rate = sample
            else:
                self._rate += (1.0 - decay) / weight * (sample - self._rate)
            self._rate_weight = weight
            self._read_measured, self._read_tokens = measured, tokens
            return self._rate


class TokenLoadCollector:
    """Exposes `vllm:num_tokens_running` / `vllm:num_tokens_waiting`,
    `vllm:prefill_tokens_per_second` and the counters `vllm:prefilled_tokens_total`,
    `vllm:waiting_token_seconds_total` and `vllm:prefill_token_seconds_total` with vLLM's
    labels, read at scrape time (no per-event metric updates). The rate has no sample before
    the first prefilled token."""

    def __init__(self, load: TokenLoad, *, model_name: str, engine: str = "0") -> None:
        self.load = load
        self.labels = [model_name, engine]

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
            "second (idle stretches count at most 10 s), smoothed over a minute.",
            labels=names,
        )
        value = self.load.prefill_rate()
        if value is not None:
            rate.add_metric(self.labels, value)
        # The autoscaler's ttftSeconds query: rate(waited)/rate(prefilled) over one window is
        # the mean wait for a first token there (Little's law), exact, whatever the scrapes.
        prefilled = CounterMetricFamily(
            "vllm:prefilled_tokens",
            "Prompt tokens of requests that got their first output token.",
            labels=names,
        )
        prefilled.add_metric(self.labels, self.load.prefilled)
        waited = CounterMetricFamily(
            "vllm:waiting_token_seconds",
            "The time integral of vllm:num_tokens_waiting (token-seconds): its rate is the "
            "average number of prompt tokens waiting.",
            labels=names,
        )
        waited.add_metric(self.labels, self.load.waited_token_seconds())
        prefill = CounterMetricFamily(
            "vllm:prefill_token_seconds",
            "Prompt tokens times their prefill interval (first scheduled to first token), "
            "added at each first token: the part of vllm:waiting_token_seconds_total that is "
            "not queueing.",
            labels=names,
        )
        prefill.add_metric(self.labels, self.load.prefill_token_seconds)
        yield running
        yield waiting
        yield rate
        yield prefilled
        yield waited
        yield prefill
