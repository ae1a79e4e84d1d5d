"""ORCA load reports from a real vLLM server on the CPU (the session server has every form on:
`--orca-formats TEXT,JSON BIN --orca-grpc-port P --orca-oob-min-interval 0.2`)."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from vllm_testkit.envoy_orca import parse, weight
from vllm_testkit.servers import SERVED_NAME, ServerProcess

pytestmark = pytest.mark.vllm

HEADER = "endpoint-load-metrics"
PROMPT = "the quick brown fox jumps over the lazy dog " * 3


def reports_of(response: httpx.Response) -> list[str]:
    return response.headers.get_list(HEADER)


def only_report(response: httpx.Response) -> OrcaLoadReport:
    values = reports_of(response)
    assert len(values) == 1, values
    return parse(values[0])


def test_every_openai_api_response_carries_exactly_one_report(server: ServerProcess):
    completion = {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 4}
    chat = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:
        responses = {
            "completion": client.post("/v1/completions", json=completion),
            "chat": client.post("/v1/chat/completions", json=chat),
            "models": client.get("/v1/models"),
            "unknown model": client.post("/v1/completions", json={**completion, "model": "x"}),
            "bad request": client.post("/v1/completions", json={"prompt": 5}),
            "embeddings on a generative model": client.post(
                "/v1/embeddings", json={"model": SERVED_NAME, "input": "hi"}
            ),
        }
        with client.stream("POST", "/v1/completions", json={**completion, "stream": True}) as s:
            responses["streaming completion"] = s
            chunks = [line for line in s.iter_lines() if line]
        with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as s:
            responses["streaming chat"] = s
            s.read()
        not_api = [client.get(path) for path in ("/health", "/ready", "/metrics")]
    assert chunks[-1] == "data: [DONE]"
    assert responses["unknown model"].status_code == 404
    assert responses["bad request"].status_code in (400, 422)
    for name, response in responses.items():
        report = only_report(response)
        assert report.application_utilization > 0, name
        assert "num_tokens_running" in report.named_metrics, name
    for response in not_api:
        assert reports_of(response) == []


@pytest.mark.parametrize(
    ("asked", "prefix"), [("text", "TEXT "), ("JSON", "JSON "), ("Bin", "BIN ")]
)
def test_request_header_picks_the_format(server: ServerProcess, asked: str, prefix: str):
    response = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 2},
        headers={"endpoint-load-metrics-format": asked},
        timeout=60,
    )
    # vLLM adds its own two-metric report for text and json: only ours goes out.
    values = reports_of(response)
    assert len(values) == 1
    assert values[0].startswith(prefix)
    parse(values[0])


def test_default_format_is_the_first_enabled(server: ServerProcess):
    response = httpx.get(f"{server.url}/v1/models", timeout=60)
    assert reports_of(response)[0].startswith("TEXT ")


def test_out_of_band_http(server: ServerProcess):
    got = httpx.get(f"{server.url}/orca", headers={"endpoint-load-metrics-format": "json"})
    assert got.status_code == 200
    assert got.headers[HEADER].startswith("JSON ")
    parse(got.headers[HEADER])
    head = httpx.head(f"{server.url}/orca")
    assert head.status_code == 200
    assert only_report(head).application_utilization > 0


def test_reports_move_under_load_and_return_to_idle(server: ServerProcess):
    request = {
        "model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 64, "ignore_eos": True,
    }  # fmt: skip

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            stop = asyncio.Event()

            async def watch() -> list[OrcaLoadReport]:
                seen = []
                while not stop.is_set():
                    seen.append(only_report(await client.get("/orca")))
                    await asyncio.sleep(0.02)
                return seen

            watcher = asyncio.create_task(watch())
            replies = await asyncio.gather(
                *(client.post("/v1/completions", json=request) for _ in range(12))
            )
            stop.set()
            return replies, await watcher

    replies, seen = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in replies)
    assert all(only_report(r).rps_fractional > 0 for r in replies)
    busiest = max(seen, key=lambda r: r.named_metrics["num_requests_running"])
    assert busiest.named_metrics["num_requests_running"] >= 2
    assert busiest.named_metrics["num_tokens_running"] > 0
    assert max(r.named_metrics["num_requests_waiting"] for r in seen) > 0  # 12 > 8 slots
    assert max(r.named_metrics["kv_cache_usage_perc"] for r in seen) > 0
    assert max(r.application_utilization for r in seen) > 0.5
    assert weight(busiest) is not None  # Envoy's weighted round robin would use it

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        idle = only_report(httpx.get(f"{server.url}/orca"))
        if idle.named_metrics["num_requests_running"] == 0:
            break
        time.sleep(0.1)
    assert idle.named_metrics["num_requests_running"] == 0
    assert idle.named_metrics["num_requests_waiting"] == 0
    assert idle.named_metrics["num_tokens_running"] == 0
    assert idle.named_metrics["num_tokens_waiting"] == 0
    assert idle.application_utilization == pytest.approx(0.01)


def test_grpc_stream_from_the_server(server: ServerProcess):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stream = channel.unary_stream(
            "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics",
            request_serializer=OrcaLoadReportRequest.SerializeToString,
            response_deserializer=OrcaLoadReport.FromString,
        )
        request = OrcaLoadReportRequest()
        request.report_interval.FromMilliseconds(50)  # below the server's 0.2 s floor
        call = stream(request)
        start = time.monotonic()
        reports = []
        for report in call:
            reports.append((time.monotonic() - start, report))
            if len(reports) == 3:
                break
        call.cancel()
    assert reports[0][0] < 1.0
    assert reports[2][0] - reports[0][0] >= 0.38  # two intervals of at least 0.2 s
    assert reports[-1][1].application_utilization > 0
    assert reports[-1][1].mem_utilization > 0  # sampled from the process tree
    assert "kv_cache_usage_perc" in reports[-1][1].named_metrics
