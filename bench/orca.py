"""ORCA load reports: what they cost. One run, side by side:

    python bench/orca.py [--rounds 30] [--requests 96] [--idle-seconds 1.5]

1. Throughput, headers off vs on: three `vllm-ext-serve` processes on the same tiny model, one
   without ORCA, one with `--orca-formats TEXT JSON BIN`, and a second one without ORCA, driven
   one at a time by the same closed-loop workload, in rotating order, `--rounds` times. Each
   round gives a paired on/off ratio and an off_again/off ratio (the noise floor: two identical
   servers). Reported: the median of the per-round ratios, its 95 % bootstrap interval (what
   the median can resolve: robust to rounds another process's burst ruins), their standard
   deviation and the ratio of the median throughputs.
   Goal: on/off >= 0.995. Judged met when the on/off median is >= 0.995 and the run can see
   0.5 %: the identical servers' median ratio within 0.5 % of 1 and the on/off median's 95 %
   interval within +/-0.5 %; not met when the on/off gap exceeds the goal and the noise
   (identical servers' gap + that half-width); else inconclusive (null).
2. CPU per request of each server's API process and of its engine (the children), from the
   kernel's per-thread run time (`/proc/<pid>/task/*/schedstat`, ns), over the same rounds: ORCA
   runs in the API process only, and on 2 CPUs the API process and the engine share the CPUs,
   so what ORCA adds to the API process is what throughput loses. The same figure for the two
   identical servers is its noise floor. Also per round, before the workload, `--idle-seconds`
   of the idle API process's CPU: what ORCA costs with no request (the process sampler).
3. Per-phase costs, in process: per response (the middleware around a trivial ASGI app
   answering with vLLM's headers, without ORCA and with it per format, with a snapshot shared
   by many responses and with a new snapshot to encode for every response: what a loaded
   server sees, the engine stepping more often than requests end; each figure the median of
   `--cost-repeats` interleaved repeats; goal <= 20 us in the worst case), the stat logger per
   engine step (a real vLLM `SchedulerStats`), and the process sampler per sample on a real
   server's process tree, with the host-wide process walk it does every 30 samples. From these
   and the engine steps per request (vLLM's `vllm:iteration_tokens_total` count on the ORCA
   server), the ORCA CPU expected per request, to set beside the measured API-process figure,
   and that as a share of a request's CPU (CPUs / requests per second): the throughput ORCA
   costs, from figures a shared machine's noise does not blur. Goal: <= 0.5 %.
4. gRPC out-of-band cost: CPU time of the API process with 20 streams at a 100 ms interval,
   against the same span with none.

Prints one JSON document, with the "goals" list of bench/goals.py (`goals`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import psutil
from goals import goal
from startup import Server, free_port
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from vllm_server_ext.lifecycle import ServerState
from vllm_server_ext.load_tracker import EngineLoad, LoadTracker
from vllm_server_ext.orca import FORMATS
from vllm_server_ext.routes import ServerExtension, ServerExtMiddleware
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.tiny_model import generate_model

RATIO_GOAL = 0.995  # on/off requests per second
GAP_GOAL = 1 - RATIO_GOAL
PER_RESPONSE_GOAL_US = 20  # the worst case (format, new snapshot every response)
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


async def workload(url: str, model: str, requests: int, concurrency: int = 8) -> float:
    """Requests per second for `requests` completions, `concurrency` at a time."""
    body = {"model": model, "prompt": "the quick brown fox " * 4, "max_tokens": 16,
            "ignore_eos": True, "temperature": 0}  # fmt: skip
    queue = list(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            response = await client.post("/v1/completions", json=body)
            assert response.status_code == 200

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return requests / (time.perf_counter() - start)


def run_ns(pid: int) -> int:
    """CPU time of `pid`'s live threads so far, in ns (the kernel's schedstat; psutil's
    cpu_times counts 10 ms ticks, too coarse for a few ms per round)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def engine_steps(url: str) -> float | None:
    """Engine steps so far (vLLM's `vllm:iteration_tokens_total` histogram count)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r"^vllm:iteration_tokens_total_count\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(v) for v in found) if found else None


def median_ci95(values: list[float], resamples: int = 4000) -> tuple[float, float]:
    """A 95 % bootstrap interval of the median (percentile method, fixed seed): robust to the
    rounds another process's burst ruins, which the standard error of the mean is not."""
    rng = random.Random(0)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def spread(values: list[float]) -> dict[str, float]:
    n = len(values)
    stdev = statistics.stdev(values) if n > 1 else math.inf
    low, high = median_ci95(values)
    return {
        "median": statistics.median(values),
        "median_ci95": [low, high],
        "median_ci95_half_width": (high - low) / 2,
        "mean": statistics.fmean(values),
        "stdev": stdev,
        "stderr_of_mean": stdev / math.sqrt(n),
        "min": min(values),
        "max": max(values),
    }


def throughput(
    model: Path, work: Path, rounds: int, requests: int, idle_seconds: float
) -> dict[str, object]:
    """Requests per second, API/engine CPU per request and idle API CPU of three servers (ORCA
    off, on, off again), one at a time, in rotating order; see the module's docstring."""
    servers = {
        "off": Server("ext", model, work),
        "on": Server("ext", model, work, "--orca-formats", "TEXT", "JSON", "BIN"),
        "off_again": Server("ext", model, work),
    }
    names = list(servers)
    keys = ("rps", "api_cpu_us_per_request", "engine_cpu_us_per_request", "idle_api_cpu_ms_per_s")
    data: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in names}
    steps = requests_counted = 0.0
    try:
        for server in servers.values():
            server.measure_startup()
        for server in servers.values():
            asyncio.run(workload(server.url, str(model), 32))  # warm-up
        procs = {
            name: (s.proc.pid, [c.pid for c in psutil.Process(s.proc.pid).children(True)])
            for name, s in servers.items()
        }
        for i in range(rounds):
            for name in names[i % 3 :] + names[: i % 3]:
                api, engine = procs[name]
                d = data[name]
                before = run_ns(api)
                time.sleep(idle_seconds)
                d["idle_api_cpu_ms_per_s"].append((run_ns(api) - before) / 1e6 / idle_seconds)
                steps_before = engine_steps(servers[name].url) if name == "on" else None
                api_before, engine_before = run_ns(api), sum(run_ns(p) for p in engine)
                rps = asyncio.run(workload(servers[name].url, str(model), requests))
                api_after, engine_after = run_ns(api), sum(run_ns(p) for p in engine)
                d["rps"].append(rps)
                d["api_cpu_us_per_request"].append((api_after - api_before) / 1e3 / requests)
                d["engine_cpu_us_per_request"].append(
                    (engine_after - engine_before) / 1e3 / requests
                )
                if steps_before is not None:
                    after = engine_steps(servers[name].url)
                    if after is not None:
                        steps += after - steps_before
                        requests_counted += requests
            line = " ".join(
                f"{n} {data[n]['rps'][-1]:.1f} req/s {data[n]['api_cpu_us_per_request'][-1]:.0f} us"
                for n in names
            )
            print(f"round {i + 1}: {line}", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
    rps = {name: data[name]["rps"] for name in names}
    on_off = [on / off for on, off in zip(rps["on"], rps["off"], strict=True)]
    identical = [again / off for again, off in zip(rps["off_again"], rps["off"], strict=True)]
    ratio = spread(on_off)
    floor = spread(identical)
    medians = {name: {k: statistics.median(v) for k, v in data[name].items()} for name in names}

    def paired_delta(key: str, name: str) -> list[float]:
        return [x - y for x, y in zip(data[name][key], data["off"][key], strict=True)]

    api_added = spread(paired_delta("api_cpu_us_per_request", "on"))
    api_floor = spread(paired_delta("api_cpu_us_per_request", "off_again"))
    idle_added = spread(paired_delta("idle_api_cpu_ms_per_s", "on"))
    idle_floor = spread(paired_delta("idle_api_cpu_ms_per_s", "off_again"))
    # On a CPU-bound host, a request's share of the CPUs is CPUS / rps seconds: what the API
    # process adds per request, over that share, is the throughput it costs.
    share_us = CPUS / medians["off"]["rps"] * 1e6
    return {
        "rounds": rounds,
        "requests_per_round": requests,
        "cpus": CPUS,
        "per_round": data,
        "median": medians,
        "ratio_on_off": ratio["median"],
        "ratio_on_off_spread": ratio,
        "ratio_identical_servers": floor["median"],
        "ratio_identical_servers_spread": floor,
        "ratio_of_median_rps": {
            "on_off": medians["on"]["rps"] / medians["off"]["rps"],
            "identical_servers": medians["off_again"]["rps"] / medians["off"]["rps"],
        },
        "api_cpu_us_per_request_added_by_orca": api_added,
        "api_cpu_us_per_request_identical_servers": api_floor,
        "request_cpu_share_us": share_us,
        "implied_throughput_cost_of_added_api_cpu": api_added["median"] / share_us,
        "idle_api_cpu_ms_per_s_added_by_orca": idle_added,
        "idle_api_cpu_ms_per_s_identical_servers": idle_floor,
        "engine_steps_per_request": steps / requests_counted if requests_counted else None,
        "verdict": throughput_verdict(ratio, floor),
        "goal": f"ratio_on_off >= {RATIO_GOAL}, seen with identical servers within "
        f"{GAP_GOAL:.1%} of each other and a 95 % interval of the median within "
        f"+/-{GAP_GOAL:.1%}",
    }


def throughput_verdict(ratio: dict[str, float], floor: dict[str, float]) -> str:
    """Met only when the run can see 0.5 %: the on/off median within the goal, the identical
    servers' median within it too, and the on/off median's 95 % interval no wider than the goal
    either side; not met when the gap exceeds both the goal and the noise (identical servers'
    gap + that half-width)."""
    gap = 1 - ratio["median"]
    noise_floor = abs(1 - floor["median"])
    resolution = ratio["median_ci95_half_width"]
    text = (
        f"on/off gap {gap:+.2%} (95 % interval of the median +/-{resolution:.2%}), identical "
        f"servers {1 - floor['median']:+.2%}"
    )
    if gap > GAP_GOAL and gap > noise_floor + resolution:
        return f"not met: {text}"
    if gap <= GAP_GOAL and noise_floor <= GAP_GOAL and resolution <= GAP_GOAL:
        return f"met: {text}"
    return f"inconclusive: {text}: rerun with more --rounds/--requests on a quieter machine"


def throughput_goal_met(tput: dict[str, object]) -> bool | None:
    """True or False when this run can resolve the goal, None when its noise cannot."""
    if str(tput["verdict"]).startswith("inconclusive"):
        return None
    return str(tput["verdict"]).startswith("met")


def goals(result: dict) -> list[dict]:
    """The "goals" list (bench/goals.py) of a result of `main` (its document, without it)."""
    tput = result["throughput"]
    met = throughput_goal_met(tput)
    worst = result["per_phase"]["per_response"]["worst_case"]
    return [
        goal("ORCA on/off throughput ratio (median of paired rounds)", tput["ratio_on_off"],
             "", ">=", RATIO_GOAL, tput["verdict"] if met is None else None, met=met),
        goal("identical servers' throughput ratio (the noise floor)",
             tput["ratio_identical_servers"], "", ">=", RATIO_GOAL),
        goal(f"per response, worst case added ({worst['format']}, {worst['case']})",
             worst["added_us"], "us", "<=", PER_RESPONSE_GOAL_US),
        goal("ORCA throughput cost from its CPU per request (per-phase costs)",
             result["per_phase"].get("throughput_cost_percent_from_cpu_per_request"), "%",
             "<=", GAP_GOAL * 100),
    ]  # fmt: skip


def per_response_cost(iterations: int = 20000, repeats: int = 5) -> dict[str, object]:
    """Microseconds the middleware adds to one response (ASGI call of a trivial app answering
    with vLLM's headers, its own ORCA report too when the request names a format), each the
    median of `repeats` rounds in which every configuration is measured once."""

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        if len(scope["headers"]) > 1:  # vLLM's own report, which ours replaces
            headers.append((b"endpoint-load-metrics", b"TEXT named_metrics.kv_cache_usage=0.3"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request"}

    async def send(message):  # type: ignore[no-untyped-def]
        pass

    class State:
        pass

    class App:
        state = State()

    def scope(fmt: str | None) -> dict[str, object]:
        headers = [(b"host", b"model")]
        if fmt:
            headers.append((b"endpoint-load-metrics-format", fmt.encode()))
        return {"type": "http", "path": "/v1/completions", "root_path": "", "headers": headers,
                "server": ("10.0.0.5", 8000), "app": App}  # fmt: skip

    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    tracker.record_engine(0, EngineLoad(num_requests_running=5, kv_cache_usage=0.3))

    async def time_calls(call, n: int) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for _ in range(n):
            await call()
        return (time.perf_counter() - start) / n * 1e6

    middleware = ServerExtMiddleware(app)
    off = ServerExtension(ServerState(), tracker, (), admin_port=8001)
    on = ServerExtension(ServerState(), tracker, FORMATS, admin_port=8001)

    async def with_ext(ext: ServerExtension, fmt: str | None, new_snapshot: bool) -> None:
        App.state.server_ext = ext
        if new_snapshot:  # an engine step since the last response: the report is encoded anew
            tracker.record_engine(0, EngineLoad(num_requests_running=5, kv_cache_usage=0.3))
        await middleware(scope(fmt), receive, send)

    async def bare(fmt: str | None) -> None:
        await app(scope(fmt), receive, send)

    # name -> (call, iterations); the bare app once with and once without a format header
    # (vLLM's own report), each configuration compared with its own bare run.
    configs = {"bare": (lambda: bare(None), iterations),
               "bare_format": (lambda: bare("TEXT"), iterations),
               "orca_off": (lambda: with_ext(off, None, False), iterations)}  # fmt: skip
    for fmt in FORMATS:
        configs[f"{fmt}_shared"] = (lambda f=fmt: with_ext(on, f, False), iterations)
        configs[f"{fmt}_new"] = (lambda f=fmt: with_ext(on, f, True), iterations // 4)

    async def measure() -> dict[str, float]:
        samples: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(repeats):
            for name, (call, n) in configs.items():
                samples[name].append(await time_calls(call, n))
        return {name: statistics.median(values) for name, values in samples.items()}

    us = asyncio.run(measure())
    per_format = {
        fmt: {
            "added_us_shared_snapshot": us[f"{fmt}_shared"] - us["bare_format"],
            "added_us_new_snapshot_every_response": us[f"{fmt}_new"] - us["bare_format"],
        }
        for fmt in FORMATS
    }
    worst = max(FORMATS, key=lambda f: per_format[f]["added_us_new_snapshot_every_response"])
    results: dict[str, object] = {
        "repeats": repeats,
        "bare_app_us": us["bare"],
        "orca_off_added_us": us["orca_off"] - us["bare"],
        **per_format,
        "worst_case": {
            "format": worst,
            "case": "new snapshot every response",
            "added_us": per_format[worst]["added_us_new_snapshot_every_response"],
            "goal": f"<= {PER_RESPONSE_GOAL_US} us",
        },
    }
    return results


def stat_logger_cost(iterations: int = 20000, repeats: int = 5) -> dict[str, object]:
    """Microseconds ORCA's stat logger adds to one engine step in the API process (its `record`
    with a real vLLM `SchedulerStats`, which bumps the snapshot's version), median of
    `repeats`; and what the next response then pays to build and encode a new TEXT snapshot."""
    from vllm.v1.metrics.stats import SchedulerStats

    from vllm_server_ext.vllm_0_32.api import _OrcaStatLogger

    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    logger = _OrcaStatLogger(tracker)
    stats = SchedulerStats(num_running_reqs=5, num_waiting_reqs=1, kv_cache_usage=0.3)

    def per_call(call, n: int) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - start) / n * 1e6

    def step() -> None:
        logger.record(stats, None, engine_idx=0)

    def step_and_report() -> None:
        logger.record(stats, None, engine_idx=0)
        tracker.header("TEXT")

    record = statistics.median(per_call(step, iterations) for _ in range(repeats))
    both = statistics.median(per_call(step_and_report, iterations // 4) for _ in range(repeats))
    return {
        "record_us_per_engine_step": record,
        "snapshot_build_and_text_encode_us": both - record,
    }


def sampler_cost(server: Server, samples: int = 200) -> dict[str, object]:
    """CPU microseconds of one `ProcessSampler.sample()` on `server`'s process tree (the API
    process, its engine and workers), amortizing the tree lookup it does every
    `refresh_every` samples; and that lookup alone (a walk of every process on the host)."""
    from vllm_server_ext.process_sampler import ProcessSampler

    root = psutil.Process(server.proc.pid)

    def find_pids() -> list[int]:
        return [root.pid, *(c.pid for c in root.children(recursive=True))]

    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    try:
        sampler = ProcessSampler(tracker, find_pids=find_pids)  # type: ignore[call-arg]
    except TypeError:  # a ProcessSampler that walks its own tree only
        return {"sample_us": None}
    sampler.sample()
    start = time.thread_time()
    for _ in range(samples):
        sampler.sample()
    sample_us = (time.thread_time() - start) / samples * 1e6
    start = time.thread_time()
    for _ in range(20):
        find_pids()
    lookup_us = (time.thread_time() - start) / 20 * 1e6
    return {
        "processes": len(find_pids()),
        "refresh_every": sampler.refresh_every,
        "sample_us": sample_us,
        "tree_lookup_us": lookup_us,
        "cpu_ms_per_s_at_1_sample_per_s": sample_us / 1e3 / sampler.interval,
    }


def grpc_cost(
    model: Path, work: Path, streams: int = 20, seconds: float = 10.0
) -> tuple[dict[str, object], dict[str, object]]:
    """The gRPC out-of-band cost; and, on the same idle server's process tree, the process
    sampler's (`sampler_cost`)."""
    port = free_port()
    server = Server(
        "ext", model, work, "--orca-grpc-port", str(port), "--orca-oob-min-interval", "0.1"
    )
    try:
        server.measure_startup()
        sampler = sampler_cost(server)
        print(f"process sampler: {json.dumps(sampler)}", file=sys.stderr)
        api = psutil.Process(server.proc.pid)

        def cpu_seconds() -> float:
            times = api.cpu_times()
            return times.user + times.system

        before = cpu_seconds()
        time.sleep(seconds)
        idle = cpu_seconds() - before

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        method = channel.unary_stream(
            "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics",
            request_serializer=OrcaLoadReportRequest.SerializeToString,
            response_deserializer=OrcaLoadReport.FromString,
        )
        request = OrcaLoadReportRequest()
        request.report_interval.FromMilliseconds(100)
        calls = [method(request) for _ in range(streams)]
        received = [0] * streams

        def drain(i: int) -> None:
            try:
                for _ in calls[i]:
                    received[i] += 1
            except grpc.RpcError:
                pass  # cancelled at the end

        threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(streams)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # streams established
        before, counted = cpu_seconds(), sum(received)
        time.sleep(seconds)
        busy = cpu_seconds() - before
        reports = sum(received) - counted
        for call in calls:
            call.cancel()
        channel.close()
    finally:
        server.stop()
    extra = max(0.0, busy - idle)
    return sampler, {
        "streams": streams,
        "interval_s": 0.1,
        "reports_received": reports,
        "api_cpu_percent_idle": idle / seconds * 100,
        "api_cpu_percent_with_streams": busy / seconds * 100,
        "cpu_percent_per_stream": extra / seconds * 100 / streams,
        "cpu_us_per_report": extra / reports * 1e6 if reports else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--idle-seconds", type=float, default=1.5)
    parser.add_argument("--cost-iterations", type=int, default=20000)
    parser.add_argument("--cost-repeats", type=int, default=5)
    parser.add_argument("--grpc-seconds", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-orca-"))
    model = generate_model(work / "tiny-llama")

    cost = per_response_cost(args.cost_iterations, args.cost_repeats)
    print(f"per response: {json.dumps(cost)}", file=sys.stderr)
    step = stat_logger_cost(args.cost_iterations, args.cost_repeats)
    print(f"per engine step: {json.dumps(step)}", file=sys.stderr)
    tput = throughput(model, work, args.rounds, args.requests, args.idle_seconds)
    sampler, oob = grpc_cost(model, work, seconds=args.grpc_seconds)
    print(f"grpc: {json.dumps(oob)}", file=sys.stderr)
    # What the per-phase figures add up to per request of the throughput workload (TEXT, a new
    # snapshot every response), beside what the API process was measured to add.
    steps = tput["engine_steps_per_request"]
    rps = tput["median"]["on"]["rps"]  # type: ignore[index]
    expected = None
    if steps is not None and sampler.get("sample_us") is not None:
        expected = {
            "per_response_us": cost["TEXT"]["added_us_new_snapshot_every_response"],  # type: ignore[index]
            "stat_logger_us": step["record_us_per_engine_step"] * steps,  # type: ignore[operator]
            "sampler_us": sampler["cpu_ms_per_s_at_1_sample_per_s"] * 1e3 / rps,  # type: ignore[operator]
        }
        expected["total_us"] = sum(expected.values())
    measured = tput["api_cpu_us_per_request_added_by_orca"]["median"]  # type: ignore[index]
    # That total over a request's share of the CPUs: the throughput ORCA costs, from figures
    # precise to a microsecond where the throughput ratio resolves a few percent here.
    share_us = tput["request_cpu_share_us"]
    cost_percent = expected["total_us"] / share_us * 100 if expected else None  # type: ignore[operator]
    result = {
        "throughput": tput,
        "per_phase": {
            "per_response": cost,
            "per_engine_step": step,
            "process_sampler": sampler,
            "expected_orca_cpu_us_per_request": expected,
            "measured_api_cpu_us_per_request_added": measured,
            "throughput_cost_percent_from_cpu_per_request": cost_percent,
        },
        "grpc_oob": oob,
    }
    print(json.dumps(result | {"goals": goals(result)}, indent=2))


if __name__ == "__main__":
    main()
