"""`vllm-ext-serve` against real vLLM on the CPU, serving a generated tiny model."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_server_ext.cli import installed_vllm_version
from vllm_server_ext.early import INSTANCE_HEADER
from vllm_server_ext.lifecycle import STARTUP_PHASES, Phase
from vllm_testkit.servers import SERVED_NAME, ServerProcess, ext_server

pytestmark = pytest.mark.vllm

PROMPT = "the quick brown fox jumps over the lazy dog while the model server loads " * 2


def metric(text: str, name: str) -> float:
    """The value of a metric with a single series (vLLM's labels are not asserted on here)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def completion(model: str = SERVED_NAME, **kwargs: object) -> dict[str, object]:
    return {"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, **kwargs}


# --- startup ---------------------------------------------------------------------------------


def test_live_within_seconds_and_long_before_ready(server: ServerProcess):
    answered = [p for p in server.timeline if p.health is not None]
    first_live, ready = answered[0], server.timeline[-1]
    # The benchmark measures the ~1 s target; a loaded CI machine gets some slack here.
    assert first_live.health == 200
    assert first_live.at < 3.0
    assert first_live.phase in ("starting", "importing")
    assert ready.ready == 200
    assert ready.at - first_live.at > 5.0  # importing and loading take far longer than that


def test_no_connection_refused_after_the_port_first_answered(server: ServerProcess):
    first = next(i for i, p in enumerate(server.timeline) if p.health is not None)
    unanswered = [p for p in server.timeline[first:] if p.health is None or p.ready is None]
    assert unanswered == []


def test_startup_phases_are_reported_in_order(server: ServerProcess):
    before_ready = server.timeline[:-1]
    assert all(p.ready == 503 and p.health == 200 for p in before_ready if p.health)
    seen = [p.phase for p in before_ready if p.phase]
    order = [phase.value for phase in STARTUP_PHASES]
    indices = [order.index(phase) for phase in seen]
    assert indices == sorted(indices)
    assert {"importing", "loading_model"} <= set(seen)


def test_metrics_answer_during_startup(server: ServerProcess):
    scraped = [p for p in server.timeline[:-1] if p.metrics]
    assert scraped, "no /metrics scrape happened during startup"
    for probe in scraped:
        current = [
            s.labels["phase"]
            for f in text_string_to_metric_families(probe.metrics)
            for s in f.samples
            if s.name == "vllm:server_phase" and s.value == 1
        ]
        assert len(current) == 1
        assert current[0] in [phase.value for phase in STARTUP_PHASES]
        assert metric(probe.metrics, "vllm:server_ready") == 0
        assert metric(probe.metrics, "vllm:startup_phase_duration_seconds") >= 0


def test_ready_reports_every_startup_phase_and_the_instance(server: ServerProcess):
    response = httpx.get(f"{server.url}/ready")
    body = response.json()
    assert response.status_code == 200
    assert body["ready"] is True
    assert body["phase"] == "ready"
    assert body["model"] == SERVED_NAME
    # profiling and warming_up come from the engine process through the general plugin; a
    # model given as a path has nothing to download (no waiting_for_cache, no downloading).
    downloads = {Phase.WAITING_FOR_CACHE.value, Phase.DOWNLOADING.value}
    assert set(body["startup_seconds"]) == {p.value for p in STARTUP_PHASES} - downloads
    assert response.headers[INSTANCE_HEADER] == body["instance_id"]


def test_the_log_has_vllm_serves_startup_lines(server: ServerProcess):
    """vLLM's own `setup_server` and `build_and_serve` lines (its functions, its loggers), in
    `vllm serve`'s order; the engine's startup hook loaded without a warning."""
    log = server.log()
    version = re.search(rf"version\s+{re.escape(installed_vllm_version() or '?')}", log)
    assert version is not None, log[-3000:]
    lines = ["non-default args: ", "Supported tasks: ", f"Starting vLLM server on {server.url}"]
    at = [version.start(), *(log.find(line) for line in lines)]
    assert -1 not in at and at == sorted(at), (at, log[-3000:])
    assert "startup phases will not be reported" not in log


# --- vLLM's routes, unchanged -----------------------------------------------------------------


def test_vllm_routes_work_unchanged(server: ServerProcess):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/version").status_code == 200
        models = client.get("/v1/models").json()
        assert SERVED_NAME in [m["id"] for m in models["data"]]
        done = client.post("/v1/completions", json=completion())
        assert done.status_code == 200
        assert done.json()["usage"]["completion_tokens"] == 8
        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": SERVED_NAME,
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 4,
            },
        )
        assert chat.status_code == 200
        assert chat.json()["choices"][0]["message"]["role"] == "assistant"
        metrics = client.get("/metrics").text
        assert metric(metrics, "vllm:num_requests_running") == 0
        assert metric(metrics, "vllm:server_ready") == 1
        assert f'vllm:num_tokens_running{{engine="0",model_name="{SERVED_NAME}"}}' in metrics


def test_instance_header_on_streaming_responses(server: ServerProcess):
    instance = httpx.get(f"{server.url}/ready").json()["instance_id"]
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", json=completion(stream=True), timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers[INSTANCE_HEADER] == instance
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert len(lines) > 2


# --- token load -------------------------------------------------------------------------------


async def _scrape_tokens(
    client: httpx.AsyncClient, stop: asyncio.Event
) -> list[tuple[float, float]]:
    seen = []
    while not stop.is_set():
        text = (await client.get("/metrics")).text
        seen.append(
            (metric(text, "vllm:num_tokens_running"), metric(text, "vllm:num_tokens_waiting"))
        )
        await asyncio.sleep(0.02)
    return seen


def test_token_gauges_move_under_load_and_return_to_zero(server: ServerProcess):
    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            stop = asyncio.Event()
            scraper = asyncio.create_task(_scrape_tokens(client, stop))
            # 12 requests on a server that runs 8 at a time: some must wait.
            request = completion(max_tokens=48, ignore_eos=True)
            replies = await asyncio.gather(
                *(client.post("/v1/completions", json=request) for _ in range(12))
            )
            stop.set()
            seen = await scraper
            after = (await client.get("/metrics")).text
        return replies, seen, after

    replies, seen, after = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in replies)
    prompt_tokens = replies[0].json()["usage"]["prompt_tokens"]
    running = max(r for r, _ in seen)
    waiting = max(w for _, w in seen)
    assert running >= prompt_tokens + 1  # a running request counts its prompt and output
    assert running <= 8 * (prompt_tokens + 48)  # at most 8 running, each at most this long
    assert waiting >= prompt_tokens
    assert waiting <= 12 * prompt_tokens
    assert metric(after, "vllm:num_tokens_running") == 0
    assert metric(after, "vllm:num_tokens_waiting") == 0


def test_token_gauges_return_to_zero_after_a_client_disconnects(server: ServerProcess):
    request = completion(max_tokens=450, ignore_eos=True, stream=True)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json=request) as response:
            lines = response.iter_lines()
            for _ in range(5):
                next(lines)
            during = metric(client.get("/metrics").text, "vllm:num_tokens_running")
        # The connection is closed: vLLM aborts the request.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if metric(text, "vllm:num_tokens_running") == 0:
                break
            time.sleep(0.05)
    assert during > 0
    assert metric(text, "vllm:num_tokens_running") == 0
    assert metric(text, "vllm:num_tokens_waiting") == 0


# --- LoRA -------------------------------------------------------------------------------------


def test_lora_load_use_unload_without_the_env_var(server: ServerProcess, tiny_lora):
    with (
        httpx.Client(base_url=server.admin_url, timeout=60) as admin,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        load = {"lora_name": "adapter-a", "lora_path": str(tiny_lora)}
        loaded = admin.post("/v1/load_lora_adapter", json=load)
        assert loaded.status_code == 200, loaded.text
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["adapter-a"]["parent"] == SERVED_NAME
        used = client.post("/v1/completions", json=completion(model="adapter-a"))
        assert used.status_code == 200
        assert used.json()["model"] == "adapter-a"
        again = admin.post("/v1/load_lora_adapter", json=load)
        assert again.status_code == 400
        assert "already been loaded" in again.json()["error"]["message"]
        unload = {"lora_name": "adapter-a"}
        assert admin.post("/v1/unload_lora_adapter", json=unload).status_code == 200
        assert admin.post("/v1/unload_lora_adapter", json=unload).status_code == 404
        gone = client.post("/v1/completions", json=completion(model="adapter-a"))
        assert gone.status_code == 404


def test_lora_routes_only_on_the_admin_port(server: ServerProcess, tiny_lora):
    """The API port refuses the LoRA admin routes (a NetworkPolicy keeps the admin port to the
    operator); the admin port serves the whole app, and its traffic is not counted as load."""
    assert server.admin_port
    with (
        httpx.Client(base_url=server.admin_url, timeout=60) as admin,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        load = {"lora_name": "not-here", "lora_path": str(tiny_lora)}
        sagemaker = {"name": "not-here", "src": str(tiny_lora)}  # vLLM mounts these routes too
        for method, path, body in [
            ("POST", "/v1/load_lora_adapter", load),
            ("POST", "/v1/unload_lora_adapter", load),
            ("POST", "/adapters", sagemaker),
            ("DELETE", "/adapters/not-here", None),
        ]:
            refused = client.request(method, path, json=body)
            assert refused.status_code == 404, (path, refused.text)
            message = refused.json()["error"]["message"]
            assert message == "LoRA adapters are managed on the admin port"
            assert refused.headers[INSTANCE_HEADER]
        assert "not-here" not in {m["id"] for m in admin.get("/v1/models").json()["data"]}

        on_admin = admin.get("/v1/models")
        assert on_admin.status_code == 200
        assert on_admin.json()["data"][0]["id"] == SERVED_NAME
        assert "endpoint-load-metrics" not in on_admin.headers  # the operator's calls: not load
        assert "endpoint-load-metrics" in client.get("/v1/models").headers
        for path in ("/health", "/ready", "/metrics"):
            assert admin.get(path).status_code == 200


def test_lora_rank_above_max_is_a_clear_400(server: ServerProcess, tiny_lora_r16):
    response = httpx.post(
        f"{server.admin_url}/v1/load_lora_adapter",
        json={"lora_name": "too-big", "lora_path": str(tiny_lora_r16)},
        timeout=60,
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "rank 16" in message
    assert "--max-lora-rank 8" in message


def test_lora_missing_path_is_404(server: ServerProcess, tmp_path):
    response = httpx.post(
        f"{server.admin_url}/v1/load_lora_adapter",
        json={"lora_name": "missing", "lora_path": str(tmp_path / "nope")},
        timeout=60,
    )
    assert response.status_code == 404
    assert "missing" in response.json()["error"]["message"]


# --- shutdown, restart, engine death ------------------------------------------------------------


def engine_core_process(server: ServerProcess) -> psutil.Process:
    children = psutil.Process(server.proc.pid).children(recursive=True)
    for child in children:
        if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
            return child
    raise AssertionError(f"no EngineCore among {[c.name() for c in children]}")


def test_drain_on_sigterm_restart_and_engine_death(tiny_model, tmp_path):
    first = ext_server(tiny_model, tmp_path / "first.log", "--shutdown-timeout", "60")
    first.start().wait_ready()
    instance = httpx.get(f"{first.url}/ready").json()["instance_id"]

    # A long streaming request is in flight when SIGTERM arrives.
    result: dict[str, object] = {}

    def stream_long_request() -> None:
        request = completion(max_tokens=450, ignore_eos=True, stream=True)
        with httpx.stream("POST", f"{first.url}/v1/completions", json=request, timeout=120) as r:
            result["lines"] = [line for line in r.iter_lines() if line]

    client = threading.Thread(target=stream_long_request)
    client.start()
    deadline = time.monotonic() + 30
    while metric(httpx.get(f"{first.url}/metrics").text, "vllm:num_tokens_running") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.proc.send_signal(signal.SIGTERM)

    draining = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and draining is None:
        ready = httpx.get(f"{first.url}/ready", timeout=5)
        if ready.json()["phase"] == "draining":
            draining = ready
            health = httpx.get(f"{first.url}/health", timeout=5).status_code
        time.sleep(0.02)
    assert draining is not None, "readiness never reported draining"
    assert draining.status_code == 503
    assert health == 200  # still alive while draining
    client.join(timeout=120)
    assert first.proc.wait(timeout=60) == 0
    assert result["lines"][-1] == "data: [DONE]"  # the in-flight request finished
    tokens = [line for line in result["lines"] if '"text"' in line]
    assert len(tokens) >= 450 - 5  # all of its tokens, not an abort

    second = ext_server(tiny_model, tmp_path / "second.log").start()
    try:
        second.wait_ready()
        assert httpx.get(f"{second.url}/ready").json()["instance_id"] != instance
        plain = httpx.post(f"{second.url}/v1/completions", json=completion(), timeout=60)
        assert "endpoint-load-metrics" not in plain.headers  # ORCA is off by default
        assert httpx.get(f"{second.url}/orca").status_code == 404

        engine_core_process(second).kill()
        deadline = time.monotonic() + 15
        seen_dead = None
        while time.monotonic() < deadline and seen_dead is None:
            try:
                health = httpx.get(f"{second.url}/health", timeout=5)
                ready = httpx.get(f"{second.url}/ready", timeout=5)
            except httpx.TransportError:
                break  # vLLM's watchdog already stopped the server
            if health.status_code == 503:
                seen_dead = ready
            time.sleep(0.02)
        assert seen_dead is not None, "liveness never reported the dead engine"
        assert seen_dead.status_code == 503
        assert seen_dead.json()["phase"] == "dead"
        # And it exits with a failure status (vLLM's server exits 0), so that it is restarted.
        assert second.proc.wait(timeout=60) == 1
        assert "server failed: the engine died" in second.log()
    finally:
        second.stop(signal.SIGKILL)
