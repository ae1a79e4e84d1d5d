"""Autoscaling policies compared on one trace: the latency target (spec.autoscaling.ttftSeconds),
production-stack's request count (KEDA on vllm:num_requests_waiting, threshold 5) and a KV
cache target. One run, side by side:

    python bench/autoscale.py [--minutes 40] [--seed 1] [--no-measure]

1. The server, measured (unless --no-measure): a real `vllm-ext-serve` on the tiny model under a
   closed-loop load of long prompts gives its prefill throughput (its own
   `vllm:prefill_tokens_per_second`), its decode speed per sequence (streamed tokens) and its
   sequence slots (--max-num-seqs). Without measuring, the figures of a previous run on this
   machine (MEASURED_BEFORE) are used.
2. The simulation, deterministic for a seed: a trace of bursty arrivals (calm and burst phases,
   Poisson within each) with mixed prompt lengths (mostly short, some long), routed to the
   replica with the fewest tokens waiting; each replica modelled from the measurements (FCFS
   admission into its slots, prefill at the measured throughput one prompt at a time, decode at
   the measured speed); replicas take STARTUP_S to start. Every policy drives the same
   autoscaler, as KEDA and the HPA behave: every 15 s, desired = ceil(signal / threshold) within
   [min, max] unless within the HPA's 10 % tolerance; up at once, down to the highest desired of
   the last 300 s (the stabilization window); a replica removed finishes what it holds first.
   The latency policy reads the prefill throughput the way the servers report it (prompt tokens
   per busy second, smoothed over 60 s of busy time), not the model's constant.

Figures: SLO attainment (share of requests whose time to first token is within the SLO, which
is also the latency policy's ttftSeconds), replica-seconds (from a replica's creation to its
removal), p50/p99 TTFT. Goal: the latency policy attains more than both others with no more
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

# The figures of `--measure` on this project's machine (2 CPUs, the tiny model, CPU_ARGS), for
# --no-measure.
MEASURED_BEFORE = {
    "prefill_tokens_per_second": 11371.0, "decode_tokens_per_second": 132.0, "slots": 8,
    "kv_cache_tokens": 16384,
}  # fmt: skip
STEP_S = 0.02  # simulation time step
POLL_S = 15.0  # KEDA's pollingInterval as the operator sets it
STABILIZATION_S = 300.0  # scaleDownStabilizationSeconds (the default)
TOLERANCE = 0.1  # the HPA's
STARTUP_S = 60.0  # a replica's start, model load included
RATE_TAU_S = 60.0  # the servers' smoothing of the prefill rate (token_load.PREFILL_RATE_TAU)


# --- the server, measured ---------------------------------------------------------------------


def measure(work: Path) -> dict[str, float]:
    """Prefill throughput, decode speed per sequence and slots of a real server on the tiny
    model under a closed loop of 16 clients (8 slots, 8 waiting)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    from startup import Server

    from vllm_testkit.tiny_model import generate_model

    model = generate_model(work / "tiny")
    server = Server("ext", model, work, "--served-model-name", "tiny")
    try:
        server.measure_startup()
        prompt = "the quick brown fox jumps over the lazy dog while the model server loads " * 20
        request = {"model": "tiny", "prompt": prompt, "max_tokens": 32, "ignore_eos": True,
                   "temperature": 0, "stream": True}  # fmt: skip
        decode: list[float] = []

        async def client_loop(client: httpx.AsyncClient, deadline: float) -> None:
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
                await asyncio.gather(*(client_loop(client, deadline) for _ in range(16)))
                return (await client.get("/metrics")).text

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
    first_token: float | None = None


def trace(minutes: float, seed: int, capacity: dict[str, float]) -> list[Request]:
    """A steady base of chat traffic (prompts lognormal around 200 tokens) at about 1.5
    replicas' worth, and bursts at random times (every 8 minutes on average, 1 to 3 minutes
    long) of one of two kinds: chat at 4x the base request rate, or documents (prompts around
    3000 tokens) at 1.2x the base request rate, which is far more prefill for few more
    requests. Outputs around 64 tokens. Rates are set from the measured server."""
    rng = random.Random(seed)
    chat, document = 200, 3000
    # One replica's chat request rate, bounded by prefill and by slots x decode time.
    per_replica = min(
        capacity["prefill_tokens_per_second"] / chat,
        capacity["slots"] * capacity["decode_tokens_per_second"] / 64,
    )
    base = 1.5 * per_replica
    end = minutes * 60
    bursts, t = [], 60.0
    while t < end:
        t += rng.expovariate(1 / 480)
        length = rng.uniform(60, 180)
        bursts.append((t, t + length, rng.choice(["chat", "documents"])))
        t += length
    requests, t = [], 0.0
    while t < end:
        now = next((b for b in bursts if b[0] <= t < b[1]), None)
        kind = now[2] if now else "base"
        rate = {"base": base, "chat": 4 * base, "documents": 1.2 * base}[kind]
        t += rng.expovariate(rate)
        typical = document if kind == "documents" and rng.random() < 0.8 else chat
        prompt = int(rng.lognormvariate(math.log(typical), 0.4)) + 8
        output = int(rng.lognormvariate(math.log(64), 0.6)) + 1
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
    # The server's own prefill-rate estimate (token_load.py): tokens per busy second, smoothed.
    prefilled: int = 0
    busy_s: float = 0.0
    seen_prefilled: int = 0
    seen_busy_s: float = 0.0
    rate: float | None = None
    weight: float = 0.0
    counter_samples: deque = field(default_factory=deque)  # (time, prefilled) per poll

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
        budget = self.prefill * dt
        while self.prefilling and budget > 0:
            entry = self.prefilling[0]
            used = min(budget, entry[1])
            entry[1] -= used
            budget -= used
            if entry[1] <= 0:
                self.prefilling.popleft()
                request = entry[0]
                request.first_token = now + dt
                self.prefilled += request.prompt
                self.waiting -= request.prompt
                self.decoding.append([request, request.output - 1])
        for entry in self.decoding:
            entry[1] -= self.decode * dt
        self.decoding = [e for e in self.decoding if e[1] > 0]

    def prompt_rate(self, now: float) -> float:
        """rate(vllm:prompt_tokens_total[1m]) as Prometheus would compute it from the samples
        of the last minute (one per poll here)."""
        self.counter_samples.append((now, self.prefilled))
        while self.counter_samples and self.counter_samples[0][0] < now - 60:
            self.counter_samples.popleft()
        (t0, c0), (t1, c1) = self.counter_samples[0], self.counter_samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def read_rate(self) -> float | None:
        """What the server's gauge says now (no sample before its first prefill)."""
        tokens, busy = self.prefilled - self.seen_prefilled, self.busy_s - self.seen_busy_s
        if busy > 0 and self.prefilled:
            alpha = 1 - math.exp(-busy / RATE_TAU_S)
            self.weight = self.weight + (1 - self.weight) * alpha
            sample = tokens / busy
            self.rate = sample if self.rate is None else self.rate + (sample - self.rate) * alpha
            self.seen_prefilled, self.seen_busy_s = self.prefilled, self.busy_s
        return self.rate


# --- policies and the autoscaler ----------------------------------------------------------------


def signal(policy: str, ready: list[Replica], now: float, ttft: float) -> float:
    if policy.startswith("latency"):
        # sum(vllm:num_tokens_waiting) / avg(vllm:prefill_tokens_per_second); the experiment
        # adds the prompt tokens arriving within one ttft (vLLM's vllm:prompt_tokens_total).
        waiting = sum(r.waiting_tokens() for r in ready)
        if policy == "latency plus arrivals":
            waiting += ttft * sum(r.prompt_rate(now) for r in ready)
        rates = [x for x in (r.read_rate() for r in ready) if x is not None]
        return waiting / (sum(rates) / len(rates)) if rates else 0.0
    if policy == "requests":
        return float(sum(r.waiting_requests() for r in ready))
    return sum(r.kv_usage() for r in ready)


def simulate(
    requests: list[Request], capacity: dict[str, float], policy: str, threshold: float,
    *, min_replicas: int = 1, max_replicas: int = 20,
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


def run(minutes: float, seed: int, capacity: dict[str, float], slo_s: float) -> dict:
    requests = trace(minutes, seed, capacity)
    policies = {
        "latency target (ttftSeconds = SLO, the operator's query)": ("latency", slo_s),
        "latency target plus arriving tokens (experiment)": ("latency plus arrivals", slo_s),
        "requests waiting > 5 (production-stack)": ("requests", 5.0),
        "kv cache usage 0.7": ("kv", 0.7),
    }
    results = {
        name: summary(simulate(requests, capacity, policy, threshold), slo_s)
        for name, (policy, threshold) in policies.items()
    }
    latency, _, requests_policy, kv = results.values()  # the operator's, the experiment, ...
    return {
        "server": capacity,
        "trace": {"minutes": minutes, "seed": seed, "requests": len(requests), "slo_ttft_s": slo_s},
        "policies": results,
        "goal": "the operator's latency policy attains more than both others, with no more "
        "replica-seconds than the request-count policy",
        "goal_met": {
            "higher_attainment_than_both": latency["slo_attainment"]
            > max(requests_policy["slo_attainment"], kv["slo_attainment"]),
            "no_more_replica_seconds_than_request_count": latency["replica_seconds"]
            <= requests_policy["replica_seconds"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slo", type=float, default=1.0, help="TTFT goal, seconds")
    parser.add_argument("--no-measure", action="store_true", help="use MEASURED_BEFORE")
    args = parser.parse_args()
    if args.no_measure:
        capacity = dict(MEASURED_BEFORE)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        with tempfile.TemporaryDirectory() as work:
            capacity = measure(Path(work))
    print(json.dumps(run(args.minutes, args.seed, capacity, args.slo), indent=2))


if __name__ == "__main__":
    main()
