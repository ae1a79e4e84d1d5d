"""Autoscaling policies compared on the same traces: the latency target
(spec.autoscaling.ttftSeconds), production-stack's request count (KEDA on
vllm:num_requests_waiting, threshold 5) and a KV cache target (0.7). One run, side by side:

    python bench/autoscale.py [--minutes 60] [--seeds 1 2 3 4 5] [--slo 1.0]
                              [--no-measure | --server '{"prefill_tokens_per_second": 11371}']

1. The server, measured (unless --no-measure): a real `vllm-ext-serve` on the tiny model. A
   closed loop of long prompts with one output token each saturates prefill: its own
   `vllm:prefill_tokens_per_second` is then its prefill capacity. Streamed completions give the
   decode speed per sequence; vLLM's cache config gives the KV cache's size in tokens; the
   sequence slots are CPU_ARGS' --max-num-seqs. Without measuring, the figures of a previous run
   on this machine (MEASURED_BEFORE) are used.
2. The simulation, deterministic for a seed: phases of 8 to 12 minutes, each with its own
   request rate (0.5 to 5 replicas' worth, or silence) and share of long prompts (documents of
   about 3000 tokens among chat prompts of about 200), ramping over 2 minutes between phases,
   Poisson arrivals; requests go to the replica with the fewest tokens waiting. Each replica is
   modelled from the measurements: FCFS admission into its slots while its KV cache has room,
   prefill at the measured capacity one prompt at a time, decode at the measured speed; a new
   replica serves STARTUP_S after its creation. Every policy drives the same autoscaler, as KEDA
   and the HPA behave: every 15 s, desired = ceil(signal / threshold) within [1, 20] unless
   within the HPA's 10 % tolerance; up at once, down to the highest desired of the last 300 s
   (the stabilization window); a replica removed finishes what it holds first. The latency
   policy evaluates the operator's query on the counters each replica keeps as the server does
   (server-ext/vllm_server_ext/token_load.py: the integral of the prompt tokens waiting, its
   part in prefill from scheduling to first token, the prompt tokens prefilled), as
   Prometheus' rates over a minute, not the model's constants.

Figures per seed and over all seeds' requests together: SLO attainment (share of requests whose
time to first token is within the SLO), replica-seconds (from a replica's creation to its
removal), p50/p99 TTFT. The latency policy's ttftSeconds is half the SLO (it steers the mean
TTFT; also shown at the SLO itself, and the first, instant-gauge design). Goal, over all seeds'
requests (one hour of one seed is a handful of phases, so single seeds swing either way; how many
meet it alone is shown too): the latency policy attains more than both others with no more
replica-seconds than the request-count policy. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from goals import goal

from vllm_operator.model.autoscaling import MIN_QUEUE_SHARE

# The figures of `--measure` on this project's machine (2 CPUs, the tiny model, CPU_ARGS), for
# --no-measure.
MEASURED_BEFORE = {
    "prefill_tokens_per_second": 101268.5, "decode_tokens_per_second": 176.0, "slots": 8,
    "kv_cache_tokens": 16384,
}  # fmt: skip
STEP_S = 0.02  # simulation time step
POLL_S = 15.0  # KEDA's pollingInterval as the operator sets it
STABILIZATION_S = 300.0  # scaleDownStabilizationSeconds (the default)
TOLERANCE = 0.1  # the HPA's
STARTUP_S = 60.0  # a replica's start, model load included
MIN_REPLICAS, MAX_REPLICAS = 1, 20
RATE_TAU_S = 60.0  # the first design's smoothing of its prefill rate
CHAT, DOCUMENT, OUTPUT = 200, 3000, 64  # typical prompt and output lengths (tokens)


# --- the server, measured ---------------------------------------------------------------------


def measure(work: Path) -> dict[str, float]:
    """Prefill capacity, decode speed per sequence, slots and KV cache of a real server on the
    tiny model."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    from startup import Server

    from vllm_testkit.tiny_model import generate_model

    model = generate_model(work / "tiny")
    server = Server("ext", model, work, "--served-model-name", "tiny")
    prompt = "the quick brown fox jumps over the lazy dog while the model server loads " * 28
    try:
        server.measure_startup()
        decode: list[float] = []

        async def prefill_loop(client: httpx.AsyncClient, deadline: float) -> None:
            request = {"model": "tiny", "prompt": prompt, "max_tokens": 1, "temperature": 0}
            while time.monotonic() < deadline:
                assert (await client.post("/v1/completions", json=request)).status_code == 200

        async def decode_loop(client: httpx.AsyncClient, deadline: float) -> None:
            request = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": OUTPUT,
                       "ignore_eos": True, "temperature": 0, "stream": True}  # fmt: skip
            while time.monotonic() < deadline:
                first = last = None
                tokens = 0
                async with client.stream("POST", "/v1/completions", json=request) as reply:
                    async for line in reply.aiter_lines():
                        if line.startswith("data: {"):
                            last = time.monotonic()
                            first = first or last
                            tokens += 1
                if first is not None and last is not None and tokens > 1:
                    decode.append((tokens - 1) / (last - first))

        async def load() -> str:
            async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
                deadline = time.monotonic() + 30
                await asyncio.gather(*(prefill_loop(client, deadline) for _ in range(16)))
                metrics = (await client.get("/metrics")).text
                deadline = time.monotonic() + 20
                await asyncio.gather(*(decode_loop(client, deadline) for _ in range(8)))
                return metrics

        metrics = asyncio.run(load())
        samples = [s for f in text_string_to_metric_families(metrics) for s in f.samples]
        (rate,) = [s.value for s in samples if s.name == "vllm:prefill_tokens_per_second"]
        # The KV cache's size in tokens: vLLM's cache config (blocks x block size).
        (config,) = [s.labels for s in samples if s.name == "vllm:cache_config_info"]
        kv_tokens = int(config["num_gpu_blocks"]) * int(config["block_size"])
        return {
            "prefill_tokens_per_second": round(rate, 1),
            "decode_tokens_per_second": round(statistics.median(decode), 2),
            "slots": 8,  # CPU_ARGS' --max-num-seqs
            "kv_cache_tokens": kv_tokens,
        }
    finally:
        server.stop()


# --- the trace --------------------------------------------------------------------------------


@dataclass
class Request:
    arrival: float
    prompt: int
    output: int
    scheduled: float | None = None  # its prefill starts (vLLM's SCHEDULED event)
    first_token: float | None = None


def trace(minutes: float, seed: int, capacity: dict[str, float]) -> list[Request]:
    """Phases of 8 to 12 minutes: silence (one in eight), or chat with a share of documents
    (2, 10 or 30 %) at a prefill load of 0.5 to 5 replicas' worth; rate and share ramp over the
    first 2 minutes of a phase from the previous one's."""
    rng = random.Random(seed)
    # One replica's chat request rate, bounded by prefill and by slots x decode time.
    per_replica = min(
        capacity["prefill_tokens_per_second"] / CHAT,
        capacity["slots"] * capacity["decode_tokens_per_second"] / OUTPUT,
    )
    end = minutes * 60
    phases, t = [], 0.0
    while t < end:
        length = rng.uniform(480, 720)
        silent = rng.random() < 0.125
        share = rng.choice([0.02, 0.1, 0.3])
        # Requests per second giving `load` replicas' worth of prefill at this share.
        load = 0.0 if silent else rng.uniform(0.5, 5.0)
        rate = load * per_replica * CHAT / (CHAT + share * (DOCUMENT - CHAT))
        phases.append((t, t + length, rate, share))
        t += length

    def now(x: float) -> tuple[float, float]:
        for i, (start, stop, rate, share) in enumerate(phases):
            if start <= x < stop:
                if i and x - start < 120:
                    w = (x - start) / 120
                    before = phases[i - 1]
                    return before[2] * (1 - w) + rate * w, before[3] * (1 - w) + share * w
                return rate, share
        return phases[-1][2], phases[-1][3]

    requests, t = [], 0.0
    while t < end:
        rate, share = now(t)
        if rate <= 0:
            t += 1.0
            continue
        t += rng.expovariate(rate)
        typical = DOCUMENT if rng.random() < share else CHAT
        prompt = int(rng.lognormvariate(math.log(typical), 0.4)) + 8
        output = int(rng.lognormvariate(math.log(OUTPUT), 0.6)) + 1
        requests.append(Request(t, prompt, output))
    return requests


# --- the replicas -------------------------------------------------------------------------------


@dataclass
class Replica:
    created: float
    ready_at: float
    prefill: float
    decode: float
    slots: int
    kv_tokens: float
    queue: deque = field(default_factory=deque)  # admitted to no slot yet
    prefilling: deque = field(default_factory=deque)  # in a slot, prompt not done: [req, left]
    decoding: list = field(default_factory=list)  # [req, tokens left]
    removed_at: float | None = None
    draining: bool = False
    waiting: int = 0  # prompt tokens not prefilled yet (queued or in prefill), kept as they move
    # The server's own prefill-rate estimate (token_load.py): prompt tokens per second of
    # measured time (wall time, idle stretches up to IDLE_CAP_S), smoothed on reads; and, for
    # the comparison, the first design's, per second during which prompts were waiting.
    prefilled: int = 0  # vllm:prefilled_tokens_total
    waiting_token_s: float = 0.0  # vllm:waiting_token_seconds_total: the integral of `waiting`
    prefill_token_s: float = 0.0  # vllm:prefill_token_seconds_total: prompt x (first - scheduled)
    scrapes: deque = field(default_factory=deque)  # (time, both counters) of the last minute
    busy_s: float = 0.0
    rates: dict = field(default_factory=dict)  # the first design's gauge: [tokens, s, rate, w]

    def waiting_tokens(self) -> int:
        return self.waiting

    def enqueue(self, request: Request) -> None:
        self.queue.append(request)
        self.waiting += request.prompt

    def waiting_requests(self) -> int:
        return len(self.queue)

    def kv_usage(self) -> float:
        return min(1.0, self.held() / self.kv_tokens)

    def holds(self) -> int:
        return len(self.queue) + len(self.prefilling) + len(self.decoding)

    def held(self) -> float:
        """KV cache tokens held: prompts in prefill (whole, as vLLM allocates them) and
        decoding sequences."""
        held = sum(r.prompt for r, _ in self.prefilling)
        return held + sum(r.prompt + r.output - left for r, left in self.decoding)

    def step(self, now: float, dt: float) -> None:
        # Admission, FCFS: a free sequence slot and KV cache room for the prompt (and its
        # output); a prompt larger than the whole cache is admitted alone.
        while self.queue and len(self.prefilling) + len(self.decoding) < self.slots:
            head = self.queue[0]
            empty = not self.prefilling and not self.decoding
            if not empty and self.held() + head.prompt + head.output > self.kv_tokens:
                break
            request = self.queue.popleft()
            self.prefilling.append([request, request.prompt])
        if self.queue or self.prefilling:
            self.busy_s += dt
        self.waiting_token_s += self.waiting * dt
        budget = self.prefill * dt
        while self.prefilling and budget > 0:
            entry = self.prefilling[0]
            if entry[0].scheduled is None:  # vLLM schedules a prompt once it gets tokens
                entry[0].scheduled = now
            used = min(budget, entry[1])
            entry[1] -= used
            budget -= used
            if entry[1] <= 0:
                self.prefilling.popleft()
                request = entry[0]
                request.first_token = now + dt
                self.prefilled += request.prompt
                self.prefill_token_s += request.prompt * (request.first_token - request.scheduled)
                self.waiting -= request.prompt
                self.decoding.append([request, request.output - 1])
        for entry in self.decoding:
            entry[1] -= self.decode * dt
        self.decoding = [e for e in self.decoding if e[1] > 0]

    def scrape(self, now: float) -> tuple[float, float, float] | None:
        """Prometheus' rate(...[1m]) of the three counters from this scrape and those of the
        last minute: (tokens waiting on average, of which in their prefill, prompt tokens
        prefilled per second); None with a single scrape."""
        self.scrapes.append((now, self.waiting_token_s, self.prefill_token_s, self.prefilled))
        while self.scrapes[0][0] < now - 60:
            self.scrapes.popleft()
        first, last = self.scrapes[0], self.scrapes[-1]
        span = last[0] - first[0]
        return (
            tuple((b - a) / span for a, b in zip(first[1:], last[1:], strict=True))
            if span > 0
            else None
        )

    def busy_rate(self) -> float | None:
        """The first design's gauge: prompt tokens per second during which prompts waited,
        smoothed over a minute of such time; None before the first prefilled token."""
        seen = self.rates or {"tokens": 0, "busy": 0.0, "rate": None, "weight": 0.0}
        elapsed, tokens = self.busy_s - seen["busy"], self.prefilled - seen["tokens"]
        if elapsed <= 0 or (seen["rate"] is None and tokens == 0):
            return seen["rate"]
        sample, decay = tokens / elapsed, math.exp(-elapsed / RATE_TAU_S)
        weight = seen["weight"] * decay + (1 - decay)
        rate = seen["rate"]
        rate = sample if rate is None else rate + (1 - decay) / weight * (sample - rate)
        self.rates = {"tokens": self.prefilled, "busy": self.busy_s, "rate": rate, "weight": weight}
        return rate


# --- policies and the autoscaler ----------------------------------------------------------------


def signal(policy: str, ready: list[Replica], now: float, threshold: float) -> float:
    """What the policy's query returns now over the ready replicas' metrics (each replica is
    scraped at every poll)."""
    windows = [w for w in (r.scrape(now) for r in ready) if w is not None]
    if policy == "latency":
        # The operator's query (operator/vllm_operator/model/autoscaling.py): the prompt
        # tokens waiting over the prefill throughput per replica, over max(1, the share of
        # ttftSeconds a prompt's own prefill takes + MIN_QUEUE_SHARE).
        throughput = sum(p for _, _, p in windows)
        if not windows:
            return 0.0
        waited, in_prefill = sum(w for w, _, _ in windows), sum(x for _, x, _ in windows)
        # clamp_min(..., 1): waiting with nothing prefilled reads as a long queue.
        total = waited / max(1.0, throughput / len(windows))
        return total / max(1.0, in_prefill / max(1.0, throughput) / threshold + MIN_QUEUE_SHARE)
    if policy == "latency, instant gauges":
        # The first design: sum(vllm:num_tokens_waiting) / avg(busy-time prefill rate).
        rates = [x for x in (r.busy_rate() for r in ready) if x is not None]
        waiting = sum(r.waiting_tokens() for r in ready)
        return waiting / (sum(rates) / len(rates)) if rates and sum(rates) > 0 else 0.0
    if policy == "requests":
        return float(sum(r.waiting_requests() for r in ready))
    return sum(r.kv_usage() for r in ready)


def simulate(
    requests: list[Request], capacity: dict[str, float], policy: str, threshold: float,
    *, min_replicas: int = MIN_REPLICAS, max_replicas: int = MAX_REPLICAS,
) -> dict[str, float]:  # fmt: skip
    requests = [Request(r.arrival, r.prompt, r.output) for r in requests]

    def new_replica(created: float, ready_at: float) -> Replica:
        return Replica(
            created, ready_at, capacity["prefill_tokens_per_second"],
            capacity["decode_tokens_per_second"], int(capacity["slots"]),
            capacity["kv_cache_tokens"],
        )  # fmt: skip

    replicas = [new_replica(0.0, 0.0) for _ in range(min_replicas)]
    history: deque[tuple[float, int]] = deque()
    pending = deque(requests)
    end = requests[-1].arrival + 120
    now, next_poll = 0.0, POLL_S
    while now < end:
        live = [r for r in replicas if r.removed_at is None]
        ready = [r for r in live if r.ready_at <= now and not r.draining]
        while pending and pending[0].arrival <= now:
            request = pending.popleft()
            targets = ready or [r for r in live if not r.draining]
            min(targets, key=lambda r: (r.waiting_tokens(), r.holds())).enqueue(request)
        for replica in live:
            if replica.ready_at <= now:
                replica.step(now, STEP_S)
            if replica.draining and replica.holds() == 0:
                replica.removed_at = now
        if now >= next_poll:
            next_poll += POLL_S
            serving = [r for r in live if not r.draining]
            current = len(serving)
            value = signal(policy, [r for r in serving if r.ready_at <= now], now, threshold)
            desired = math.ceil(value / threshold) if value > 0 else 0
            if current and abs(value / (threshold * current) - 1) <= TOLERANCE:
                desired = current
            desired = max(min_replicas, min(max_replicas, desired))
            history.append((now, desired))
            while history and history[0][0] < now - STABILIZATION_S:
                history.popleft()
            if desired < current:
                desired = max(d for _, d in history)
            replicas += [new_replica(now, now + STARTUP_S) for _ in range(desired - current)]
            for replica in sorted(serving, key=lambda r: -r.created)[: max(0, current - desired)]:
                replica.draining = True  # the newest go first; they finish what they hold
        now += STEP_S
    return {
        "replica_seconds": sum((r.removed_at or end) - r.created for r in replicas),
        "ttfts": [
            (r.first_token - r.arrival) if r.first_token is not None else math.inf for r in requests
        ],
        "replicas_created": len(replicas),
    }


def _seconds(value: float) -> float | None:
    """Rounded; None (JSON null) for a request never served by the end of the run."""
    return round(value, 3) if math.isfinite(value) else None


def summary(result: dict, slo_s: float) -> dict[str, float | None]:
    ttfts = sorted(result["ttfts"])
    return {
        "slo_attainment": round(sum(t <= slo_s for t in ttfts) / len(ttfts), 4),
        "replica_seconds": round(result["replica_seconds"]),
        "ttft_p50_s": _seconds(ttfts[len(ttfts) // 2]),
        "ttft_p99_s": _seconds(ttfts[int(len(ttfts) * 0.99)]),
        "replicas_created": result["replicas_created"],
    }


# (policy, threshold); the latency target's as a share of the SLO: ttftSeconds is the mean time
# to first token it steers to, so a goal on nearly all requests takes about half of it.
POLICIES = {
    "latency target (ttftSeconds = SLO / 2)": ("latency", -0.5),
    "requests waiting, 5 per replica (production-stack)": ("requests", 5.0),
    "KV cache usage, 0.7 per replica": ("kv", 0.7),
    "latency target (ttftSeconds = SLO)": ("latency", -1.0),
    # The first design, kept to show why it was dropped: the instant tokens waiting over a
    # prefill rate per second during which prompts waited (a capacity).
    "latency target, instant gauges (first design, SLO / 2)": ("latency, instant gauges", -0.5),
}


def run(minutes: float, seeds: list[int], capacity: dict[str, float], slo_s: float) -> dict:
    per_seed, pooled = (
        {},
        {name: {"met": 0.0, "requests": 0, "replica_seconds": 0} for name in POLICIES},
    )
    wins = 0
    for seed in seeds:
        requests = trace(minutes, seed, capacity)
        results = {
            # A negative threshold is a share of the SLO.
            name: summary(
                simulate(
                    requests, capacity, policy, -threshold * slo_s if threshold < 0 else threshold
                ),
                slo_s,
            )
            for name, (policy, threshold) in POLICIES.items()
        }
        for name, result in results.items():
            pooled[name]["met"] += result["slo_attainment"] * len(requests)
            pooled[name]["requests"] += len(requests)
            pooled[name]["replica_seconds"] += result["replica_seconds"]
        goal = judge(results)
        wins += all(goal.values())
        per_seed[str(seed)] = {"requests": len(requests), "policies": results, "goal_met": goal}
    overall = {
        name: {
            "slo_attainment": round(p["met"] / p["requests"], 4),
            "replica_seconds": p["replica_seconds"],
        }
        for name, p in pooled.items()
    }
    goal = judge(overall)
    doc = {
        "server": capacity,
        "trace": {"minutes": minutes, "slo_ttft_s": slo_s, "startup_s": STARTUP_S},
        "seeds": per_seed,
        "all_seeds": {"policies": overall, "goal_met": goal},
        "goal": "over the requests of all seeds, the latency target attains more than both "
        "others with no more replica-seconds than the request-count policy",
        "goal_met": all(goal.values()),
        "seeds_where_the_goal_is_met": f"{wins} of {len(seeds)}",
    }
    return doc | {"goals": goals(doc)}


def goals(result: dict) -> list[dict]:
    """The "goals" list (bench/goals.py): `judge` over all seeds' requests, as figures."""
    latency, by_requests, by_kv, *_ = result["all_seeds"]["policies"].values()
    best_other = max(by_requests["slo_attainment"], by_kv["slo_attainment"])
    return [
        goal("SLO attainment, latency target, all seeds (goal: above both others)",
             latency["slo_attainment"], "", ">", best_other),
        goal("replica-seconds, latency target, all seeds (goal: request count's at most)",
             latency["replica_seconds"], "s", "<=", by_requests["replica_seconds"]),
    ]  # fmt: skip


def judge(results: dict[str, dict]) -> dict[str, bool]:
    latency, by_requests, by_kv, *_ = results.values()
    return {
        "higher_attainment_than_both": latency["slo_attainment"]
        > max(by_requests["slo_attainment"], by_kv["slo_attainment"]),
        "no_more_replica_seconds_than_request_count": latency["replica_seconds"]
        <= by_requests["replica_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--slo", type=float, default=1.0, help="TTFT goal, seconds")
    parser.add_argument("--no-measure", action="store_true", help="use MEASURED_BEFORE")
    parser.add_argument(
        "--server", type=json.loads, help="the server's figures as JSON (keys of MEASURED_BEFORE)"
    )
    args = parser.parse_args()
    if args.server is not None:
        capacity = {**MEASURED_BEFORE, **args.server}
    elif args.no_measure:
        capacity = dict(MEASURED_BEFORE)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        with tempfile.TemporaryDirectory() as work:
            capacity = measure(Path(work))
    print(json.dumps(run(args.minutes, args.seeds, capacity, args.slo), indent=2))


if __name__ == "__main__":
    main()
