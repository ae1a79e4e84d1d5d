"""ORCA load reports: what they cost. One run, side by side:

    python bench/orca.py [--rounds 5] [--requests 32]

1. Throughput, headers off vs on: `vllm-ext-serve` processes on the same tiny model, without
   ORCA and with `--orca-formats TEXT JSON BIN`, plus a second one without ORCA to show the noise
   between identical servers, driven by the same closed-loop workload in rotating order, one
   server at a time. Target: on/off requests-per-second ratio >= 0.99.
2. Per-response cost, in process: the middleware around a trivial ASGI app, with and without
   ORCA, per format; and the worst case where every response finds a new snapshot to encode.
   Target: <= 20 us per response.
3. gRPC out-of-band cost: CPU time of the API process with 20 streams at a 100 ms interval,
   against the same span with none.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import psutil
from startup import Server, free_port
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from vllm_server_ext.lifecycle import ServerState
from vllm_server_ext.load_tracker import EngineLoad, LoadTracker
from vllm_server_ext.orca import FORMATS
from vllm_server_ext.routes import ServerExtension, ServerExtMiddleware
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.tiny_model import generate_model


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


def throughput(model: Path, work: Path, rounds: int, requests: int) -> dict[str, object]:
    """Requests per second of the same workload on three servers, one at a time, in rotating
    order: ORCA off, ORCA on, and a second ORCA-off server whose ratio to the first shows how
    much two identical servers differ here (the noise floor of the comparison)."""
    servers = {
        "off": Server("ext", model, work),
        "on": Server("ext", model, work, "--orca-formats", "TEXT", "JSON", "BIN"),
        "off_again": Server("ext", model, work),
    }
    rps: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.measure_startup()
            asyncio.run(workload(server.url, str(model), 8))  # warm-up
        names = list(servers)
        for i in range(rounds):
            for name in names[i % 3 :] + names[: i % 3]:
                rps[name].append(asyncio.run(workload(servers[name].url, str(model), requests)))
            line = " ".join(f"{name} {rps[name][-1]:.1f}" for name in names)
            print(f"round {i + 1}: {line} req/s", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
    median = {name: statistics.median(values) for name, values in rps.items()}
    return {
        "rps": rps,
        "median": median,
        "ratio_on_off": median["on"] / median["off"],
        "ratio_identical_servers": median["off_again"] / median["off"],
    }


def per_response_cost(iterations: int = 20000) -> dict[str, object]:
    """Microseconds the middleware adds to one response (ASGI call of a trivial app)."""

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
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
        headers = [(b"endpoint-load-metrics-format", fmt.encode())] if fmt else []
        return {"type": "http", "path": "/v1/completions", "headers": headers, "app": App}

    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    tracker.record_engine(0, EngineLoad(num_requests_running=5, kv_cache_usage=0.3))

    async def time_calls(call, n: int) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for _ in range(n):
            await call()
        return (time.perf_counter() - start) / n * 1e6

    async def measure() -> dict[str, object]:
        bare = await time_calls(lambda: app(scope(None), receive, send), iterations)
        results: dict[str, object] = {"bare_app_us": bare}
        middleware = ServerExtMiddleware(app)
        App.state.server_ext = ServerExtension(ServerState(), tracker, ())
        off = await time_calls(lambda: middleware(scope(None), receive, send), iterations)
        results["orca_off_added_us"] = off - bare
        App.state.server_ext = ServerExtension(ServerState(), tracker, FORMATS)
        for fmt in FORMATS:
            cached = await time_calls(lambda f=fmt: middleware(scope(f), receive, send), iterations)

            async def fresh(f: str = fmt) -> None:
                tracker.record_engine(0, EngineLoad(num_requests_running=5, kv_cache_usage=0.3))
                await middleware(scope(f), receive, send)

            rebuilt = await time_calls(fresh, iterations // 4)
            results[fmt] = {
                "added_us_shared_snapshot": cached - bare,
                "added_us_new_snapshot_every_response": rebuilt - bare,
            }
        return results

    return asyncio.run(measure())


def grpc_cost(model: Path, work: Path, streams: int = 20, seconds: float = 10.0):
    port = free_port()
    server = Server(
        "ext", model, work, "--orca-grpc-port", str(port), "--orca-oob-min-interval", "0.1"
    )
    try:
        server.measure_startup()
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
    return {
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-orca-"))
    model = generate_model(work / "tiny-llama")

    cost = per_response_cost()
    print(f"per response: {json.dumps(cost)}", file=sys.stderr)
    tput = throughput(model, work, args.rounds, args.requests)
    oob = grpc_cost(model, work)
    print(f"grpc: {json.dumps(oob)}", file=sys.stderr)
    worst = max(cost[f]["added_us_shared_snapshot"] for f in FORMATS)  # type: ignore[index]
    print(
        json.dumps(
            {
                "throughput": tput,
                "per_response": cost,
                "grpc_oob": oob,
                "targets_met": {
                    "throughput_ratio_ge_0.99": tput["ratio_on_off"] >= 0.99,
                    "per_response_le_20us": worst <= 20,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
