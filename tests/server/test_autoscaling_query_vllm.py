"""The autoscalers' queries (operator/vllm_operator/model/autoscaling.py) evaluated by a real
Prometheus (Debian's package) scraping two real `vllm-ext-serve` servers under load: the value
KEDA and the HPA divide by the threshold gives the replica count the formula predicts from the
servers' own gauges, and only this VLLMDeployment's series count.

The two servers are the session's shared one and one started here; a third scrape of the
shared server, labelled as another VLLMDeployment, is the decoy the selector must leave out."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import httpx
import pytest

from vllm_operator.model.autoscaling import (
    DEPLOYMENT_SERIES_LABEL,
    MIN_QUEUE_SHARE,
    query,
    threshold,
)
from vllm_operator.model.spec import parse_deployment
from vllm_testkit import prometheus
from vllm_testkit.samples import IMAGES, vllmd
from vllm_testkit.servers import SERVED_NAME, ServerProcess, ext_server

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        prometheus.available() is None,
        reason="Debian's prometheus package is not installed (make prometheus)",
    ),
]

NS, NAME = "models", "m"
TTFT = 0.3  # above the prefill of a prompt here, below its wait: several replicas
# About 420 prompt tokens (the tiny model's context is 512), one output token: prefill work.
PROMPT = "the quick brown fox jumps over the lazy dog while the model server loads " * 28


@pytest.fixture(scope="module")
def second_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    proc = ext_server(tiny_model, tmp_path_factory.mktemp("logs") / "second-server.log")
    proc.start()
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


@pytest.fixture(scope="module")
def scraping(server: ServerProcess, second_server: ServerProcess, tmp_path_factory):
    ours = {"namespace": NS, DEPLOYMENT_SERIES_LABEL: NAME}
    decoy = {"namespace": NS, DEPLOYMENT_SERIES_LABEL: "another", "pod": "decoy"}
    targets = [
        prometheus.Target(f"127.0.0.1:{server.port}", {**ours, "pod": "m-a"}),
        prometheus.Target(f"127.0.0.1:{second_server.port}", {**ours, "pod": "m-b"}),
        prometheus.Target(f"127.0.0.1:{server.port}", decoy),
    ]
    prom = prometheus.Prometheus(targets, tmp_path_factory.mktemp("prometheus")).start()
    try:
        yield prom
    finally:
        prom.stop()


async def closed_loop(urls: list[str], concurrency: int, seconds: float) -> int:
    """`concurrency` clients per server, each sending the next prompt as soon as one returns,
    for `seconds`: prompts queue behind each other (8 sequences per engine)."""
    done = 0
    deadline = time.monotonic() + seconds
    request = {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 1, "temperature": 0}

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            reply = await client.post("/v1/completions", json=request)
            assert reply.status_code == 200, reply.text
            done += 1

    clients = [httpx.AsyncClient(base_url=url, timeout=120) for url in urls]
    try:
        await asyncio.gather(*(client_loop(c) for c in clients for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return done


def value(vector: list[dict]) -> float:
    (sample,) = vector
    return float(sample["value"][1])


def test_the_ttft_query_gives_the_replicas_the_formula_predicts(
    server: ServerProcess, second_server: ServerProcess, scraping: prometheus.Prometheus
):
    spec = parse_deployment(
        vllmd(
            NAME,
            {"model": {"uri": "/m"}, "autoscaling": {"maxReplicas": 64, "ttftSeconds": TTFT}},
            NS,
        ),
        IMAGES,
    )
    promql, t = query(spec), float(threshold(spec))
    start = time.time()
    done = asyncio.run(closed_loop([server.url, second_server.url], concurrency=12, seconds=12))
    time.sleep(2.5)  # the last scrapes
    end = time.time()
    assert done > 0

    # Moments when prompts had waited within the query's window, as Prometheus saw them.
    selector = f'{{namespace="{NS}",{DEPLOYMENT_SERIES_LABEL}="{NAME}"}}'
    waited = f"rate(vllm:waiting_token_seconds_total{selector}[60s])"
    in_prefill = f"rate(vllm:prefill_token_seconds_total{selector}[60s])"
    prefilled = f"rate(vllm:prefilled_tokens_total{selector}[60s])"
    (busy,) = scraping.query_range(f"sum({waited})", start, end, 1)
    moments = [float(at) for at, v in busy["values"] if float(v) > 0]
    assert moments, f"no window with prompts waiting: {busy['values']}"

    checked, branches = 0, set()
    for at in moments:
        q = scraping.query(promql, at)
        waiting = scraping.query(waited, at)
        prefill = scraping.query(in_prefill, at)
        rates = scraping.query(prefilled, at)
        if not q or len(rates) < 2:  # a window without two scrapes of both servers yet
            continue
        # Both servers, and not the decoy (the same server under another VLLMDeployment).
        assert len(waiting) == len(prefill) == len(rates) == 2
        instances = {s["metric"]["instance"] for s in waiting}
        assert instances == {f"127.0.0.1:{server.port}", f"127.0.0.1:{second_server.port}"}
        total = sum(float(s["value"][1]) for s in waiting)  # prompt tokens waiting, on average
        prefilling = sum(float(s["value"][1]) for s in prefill)  # of which in their prefill
        throughput = sum(float(s["value"][1]) for s in rates)  # tokens/s
        per_replica = throughput / len(rates)
        assert per_replica > 1  # the query's floor of a token a second is not what decides here
        assert 0 <= prefilling <= total
        # The mean wait and prefill time of a prompt token (Little's law), and the target:
        # ttft, or the prefill plus MIN_QUEUE_SHARE of ttft where that is longer.
        mean_wait, prefill_s = total / throughput, prefilling / throughput
        divisor = max(1.0, prefill_s / TTFT + MIN_QUEUE_SHARE)
        assert value(q) == pytest.approx(total / per_replica / divisor, rel=1e-9)
        # What KEDA's and the HPA's AverageValue arithmetic makes of it, and the formula:
        # replicas = N x mean wait / target.
        target = max(TTFT, prefill_s + MIN_QUEUE_SHARE * TTFT)
        assert math.ceil(value(q) / t - 1e-9) == math.ceil(2 * mean_wait / target - 1e-9)
        branches.add(divisor > 1)
        checked, shown = checked + 1, (value(q), mean_wait, prefill_s)
    assert checked, "no moment with both servers' rates"
    # Under a closed loop of prompts the wait is well above zero and below the test's span.
    shown_q, mean_wait, prefill_s = shown
    assert 0 < prefill_s < mean_wait < end - start
    print(f"\nchecked {checked} moments (prefill above the target's room: {branches}); e.g. "
          f"q = {shown_q:.3f} -> {math.ceil(shown_q / t)} replicas at ttft {TTFT} s (mean wait "
          f"{mean_wait:.3f} s, prefill {prefill_s:.3f} s a token)")  # fmt: skip


def test_the_raw_signal_queries_sum_this_deployment_s_servers(
    server: ServerProcess, second_server: ServerProcess, scraping: prometheus.Prometheus
):
    for target, metric in [
        ("tokensWaitingPerReplica", "vllm:num_tokens_waiting"),
        ("kvCacheUsage", "vllm:kv_cache_usage_perc"),
        ("requestsWaitingPerReplica", "vllm:num_requests_waiting"),
    ]:
        setting = 0.5 if target == "kvCacheUsage" else 100
        spec = parse_deployment(
            vllmd(
                NAME,
                {"model": {"uri": "/m"}, "autoscaling": {"maxReplicas": 8, target: setting}},
                NS,
            ),
            IMAGES,
        )
        at = time.time()
        series = scraping.query(
            f'{metric}{{namespace="{NS}",{DEPLOYMENT_SERIES_LABEL}="{NAME}"}}', at
        )
        assert len(series) == 2, (metric, series)  # both servers, not the decoy
        assert value(scraping.query(query(spec), at)) == pytest.approx(
            sum(float(s["value"][1]) for s in series)
        )
