"""The server's load, as one shared snapshot that every ORCA report is built from.

Inputs arrive as events, each O(1): the engine's scheduler stats once per engine step (a stat
logger), a finished API request (the middleware), the token totals (`TokenLoad`), and process
CPU/memory sampled once a second by a background thread (`process_sampler`). A snapshot is built
at most once per engine step (and at least once a second, so request rates decay while idle), and
each ORCA format is encoded at most once per snapshot; a response only looks the encoded header up.

Written from vLLM's event loop, read there and from the gRPC thread: snapshots are immutable and
swapped by one assignment, so readers see either the old or the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .orca import ENCODERS, LoadSnapshot, to_report
from .token_load import TokenLoad

# A report is never ignored for a zero utilization (see `application_utilization`).
MIN_APPLICATION_UTILIZATION = 0.01


class RateWindow:
    """Events per second over the last `seconds` seconds, in one-second buckets: O(1) per event,
    O(1) per read (the sum of the full seconds before the current one is taken once a second)."""

    def __init__(self, seconds: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.started = clock()
        self._counts = [0] * seconds
        self._stamps = [-1] * seconds
        # (second, events in the window's full seconds before it): one tuple, swapped whole,
        # as reads come from the event loop and the gRPC thread.
        self._before: tuple[int, int] = (-1, 0)

    def add(self, n: int = 1) -> None:
        second = int(self.clock())
        i = second % self.seconds
        if self._stamps[i] != second:
            self._stamps[i], self._counts[i] = second, 0
        self._counts[i] += n
        if second < self._before[0]:  # a late event (another thread's clock read): recount
            self._before = (-1, 0)

    def rate(self, now: float | None = None) -> float:
        """Events per second at `now` (by default the clock's)."""
        if now is None:
            now = self.clock()
        second = int(now)
        at, before = self._before
        if at != second:
            before = sum(
                c
                for c, s in zip(self._counts, self._stamps, strict=True)
                if 0 < second - s < self.seconds
            )
            self._before = (second, before)
        i = second % self.seconds
        total = before + (self._counts[i] if self._stamps[i] == second else 0)
        # The window: the full seconds before this one plus the part of this one gone by,
        # shorter while the process is younger than the window.
        span = min(self.seconds - 1 + (now - second), now - self.started)
        return total / span if span > 0 else 0.0


@dataclass
class EngineLoad:
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage: float = 0.0
    num_lora_adapters_running: int = 0
    num_lora_adapters_waiting: int = 0


@dataclass(slots=True)
class _Built:
    """A snapshot and its encodings, filled lazily (racing threads write equal values)."""

    version: int
    at: float
    snapshot: LoadSnapshot
    headers: dict[str, bytes] = field(default_factory=dict)
    report: object | None = None


class LoadTracker:
    def __init__(
        self,
        *,
        token_load: TokenLoad,
        max_num_seqs: int,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = 1.0,
    ) -> None:
        self.token_load = token_load
        self.max_num_seqs = max(1, max_num_seqs)
        self.clock = clock
        self.max_age = max_age
        self.requests = RateWindow(clock=clock)
        self.errors = RateWindow(clock=clock)
        self.engines: dict[int, EngineLoad] = {}
        self.cpu_utilization = 0.0
        self.mem_utilization = 0.0
        self._version = 0
        self._built: _Built | None = None

    # --- events ---------------------------------------------------------------------------

    def record_engine(self, engine: int, load: EngineLoad) -> None:
        """Scheduler stats of one engine step."""
        self.engines[engine] = load
        self._version += 1

    def request_finished(self, status: int) -> None:
        """An API request ended; 5xx responses count as errors too. The rates reach the next
        snapshot (next engine step, or within `max_age`): a new snapshot per response would
        mean encoding every report again."""
        self.requests.add()
        if status >= 500:
            self.errors.add()

    # --- reads ----------------------------------------------------------------------------

    def _current(self) -> _Built:
        built, now = self._built, self.clock()
        if built is None or built.version != self._version or now - built.at > self.max_age:
            built = self._built = _Built(self._version, now, self._build(now))
        return built

    def snapshot(self) -> LoadSnapshot:
        return self._current().snapshot

    def header(self, fmt: str) -> bytes:
        """The `endpoint-load-metrics` value in `fmt`, encoded once per snapshot."""
        built = self._current()
        value = built.headers.get(fmt)
        if value is None:
            value = built.headers[fmt] = ENCODERS[fmt](built.snapshot).encode("ascii")
        return value

    def report(self) -> object:
        """The snapshot as an `OrcaLoadReport` message (for the gRPC stream), built once."""
        built = self._current()
        if built.report is None:
            built.report = to_report(built.snapshot)
        return built.report

    def _build(self, now: float) -> LoadSnapshot:
        engines = list(self.engines.values())
        if len(engines) == 1:  # one engine (no data parallelism): no sums to take
            one = engines[0]
            running, waiting = one.num_requests_running, one.num_requests_waiting
            kv = one.kv_cache_usage
            lora_running, lora_waiting = (
                one.num_lora_adapters_running,
                one.num_lora_adapters_waiting,
            )
        else:
            running = sum(e.num_requests_running for e in engines)
            waiting = sum(e.num_requests_waiting for e in engines)
            kv = max((e.kv_cache_usage for e in engines), default=0.0)
            lora_running = sum(e.num_lora_adapters_running for e in engines)
            lora_waiting = sum(e.num_lora_adapters_waiting for e in engines)
        return LoadSnapshot(
            application_utilization=application_utilization(
                kv, running, waiting, self.max_num_seqs
            ),
            rps_fractional=self.requests.rate(now),
            eps=self.errors.rate(now),
            cpu_utilization=self.cpu_utilization,
            mem_utilization=self.mem_utilization,
            num_requests_running=running,
            num_requests_waiting=waiting,
            num_tokens_running=self.token_load.running,
            num_tokens_waiting=self.token_load.waiting,
            kv_cache_usage_perc=kv,
            num_lora_adapters_running=lora_running,
            num_lora_adapters_waiting=lora_waiting,
        )


def application_utilization(kv_cache_usage: float, running: int, waiting: int, max_seqs: int):
    """How busy the server is, for balancers: the larger of KV cache usage and batch-slot usage
    ((running + waiting) / --max-num-seqs, above 1 while requests queue), never below 0.01."""
    slots = (running + waiting) / max_seqs
    return max(kv_cache_usage, slots, MIN_APPLICATION_UTILIZATION)
