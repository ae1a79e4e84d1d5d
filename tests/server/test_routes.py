"""Readiness of a built server and the routes it adds (`/ready`, `/orca`), with a test double
standing in for the engine (the boundary: the real one needs a running engine; the real server
is covered in test_server_vllm). The routes are served by a real FastAPI app with the middleware
installed as vLLM installs it (`app.add_middleware`), through Starlette's TestClient."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from vllm_server_ext.lifecycle import Phase, ServerState
from vllm_server_ext.load_tracker import EngineLoad, LoadTracker
from vllm_server_ext.routes import (
    EngineHealth,
    ServerExtension,
    ServerExtMiddleware,
    attach_routes,
    current_phase,
)
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.envoy_orca import parse


class FakeEngine:
    """Test double of `vllm_0_32.api.Engine`: just what readiness reads."""

    def __init__(self, sleep_mode: bool) -> None:
        self.errored = False
        self.sleep_mode = sleep_mode
        self.sleeping = False

    async def is_sleeping(self) -> bool:
        return self.sleeping


def ready_state() -> ServerState:
    state = ServerState()
    state.enter(Phase.READY)
    return state


def phase(state: ServerState, engine: EngineHealth) -> Phase:
    return asyncio.run(current_phase(state, engine))


def test_sleeping_comes_and_goes():
    state, engine = ready_state(), FakeEngine(sleep_mode=True)
    assert phase(state, engine) == Phase.READY
    engine.sleeping = True
    assert phase(state, engine) == Phase.SLEEPING
    engine.sleeping = False
    assert phase(state, engine) == Phase.READY


def test_sleep_is_not_asked_when_sleep_mode_is_off():
    state, engine = ready_state(), FakeEngine(sleep_mode=False)
    engine.sleeping = True  # would be wrong to ask: without sleep mode the engine cannot sleep
    assert phase(state, engine) == Phase.READY


def test_a_dead_engine_is_final():
    state, engine = ready_state(), FakeEngine(sleep_mode=True)
    engine.errored = True
    assert phase(state, engine) == Phase.DEAD
    engine.errored = False
    assert phase(state, engine) == Phase.DEAD


def test_draining_wins_over_everything():
    state, engine = ready_state(), FakeEngine(sleep_mode=True)
    state.enter(Phase.DRAINING)
    engine.sleeping = True
    assert phase(state, engine) == Phase.DRAINING


# --- /ready and /orca on a FastAPI app ------------------------------------------------------

ORCA = "endpoint-load-metrics"
ADMIN_PORT = 8001


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def served(
    engine: FakeEngine, formats: tuple[str, ...] = ("TEXT", "JSON"), phase: Phase = Phase.READY
) -> tuple[FastAPI, ServerExtension, FakeClock]:
    """A FastAPI app standing in for vLLM's (a few OpenAI routes) with our middleware and routes,
    wired as the launcher wires them."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": []}

    @app.post("/v1/completions")
    async def completions() -> JSONResponse:
        raise RuntimeError("the engine broke")

    @app.post("/v1/load_lora_adapter")
    async def load() -> str:
        return "Success"

    app.add_middleware(ServerExtMiddleware)  # what vLLM does with a `--middleware` class
    clock = FakeClock()
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8, clock=clock)
    state = ServerState(model="tiny-llama")
    state.enter(phase)
    ext = ServerExtension(state, tracker, formats, admin_port=ADMIN_PORT)
    attach_routes(app, ext, engine)
    return app, ext, clock


def client(app: FastAPI, port: int = 8000) -> TestClient:
    return TestClient(app, base_url=f"http://model:{port}", raise_server_exceptions=False)


def test_ready_is_200_with_the_servers_description_when_ready():
    app, ext, _ = served(FakeEngine(sleep_mode=True))
    with client(app) as http:
        response = http.get("/ready")
        head = http.head("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True and body["phase"] == "ready"
    assert body["instance_id"] == ext.state.instance_id
    assert body["model"] == "tiny-llama"
    assert "starting" in body["startup_seconds"]
    assert response.headers["vllm-instance-id"] == ext.state.instance_id
    assert ORCA not in response.headers  # not an API response
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    ("setup", "phase"),
    [
        (lambda state, engine: setattr(engine, "sleeping", True), "sleeping"),
        (lambda state, engine: setattr(engine, "errored", True), "dead"),
        (lambda state, engine: state.enter(Phase.DRAINING), "draining"),
    ],
)
def test_ready_is_503_naming_the_phase_when_not_serving(setup, phase: str):
    engine = FakeEngine(sleep_mode=True)
    app, ext, _ = served(engine)
    setup(ext.state, engine)
    with client(app) as http:
        response = http.get("/ready")
        head = http.head("/ready")
    assert response.status_code == 503 and head.status_code == 503
    body = response.json()
    assert (body["ready"], body["phase"]) == (False, phase)
    if phase == "dead":
        assert body["error"] == "the engine is dead"


def test_ready_is_503_while_starting():
    app, _, _ = served(FakeEngine(sleep_mode=False), phase=Phase.STARTING_API)
    with client(app) as http:
        response = http.get("/ready")
    assert response.status_code == 503
    assert response.json()["phase"] == "starting_api"


@pytest.mark.parametrize(
    ("asked", "prefix"), [(None, "TEXT "), ("json", "JSON "), ("BIN", "TEXT ")]
)
def test_orca_out_of_band_serves_the_current_report(asked: str | None, prefix: str):
    app, ext, clock = served(FakeEngine(sleep_mode=False))
    ext.tracker.record_engine(0, EngineLoad(num_requests_running=3, kv_cache_usage=0.75))
    headers = {"endpoint-load-metrics-format": asked} if asked else {}
    with client(app) as http:
        got = http.get("/orca", headers=headers)
        head = http.head("/orca", headers=headers)
    for response in (got, head):
        assert response.status_code == 200
        (value,) = response.headers.get_list(ORCA)
        assert value.startswith(prefix)
        report = parse(value)
        assert report.application_utilization == 0.75
        assert report.named_metrics["num_requests_running"] == 3
    clock.now += 2
    assert ext.tracker.snapshot().rps_fractional == 0  # polling the report is not load


def test_orca_off_means_no_orca_route():
    app, _, _ = served(FakeEngine(sleep_mode=False), formats=())
    with client(app) as http:
        response = http.get("/orca")
    assert response.status_code == 404
    assert ORCA not in response.headers


def test_in_a_fastapi_app_reports_counts_and_the_admin_port_hold():
    """The middleware installed as vLLM installs it: `scope["app"]` is the app, an exception in a
    route reaches it (and becomes Starlette's 500 outside it)."""
    app, ext, clock = served(FakeEngine(sleep_mode=False))
    with client(app) as api, client(app, ADMIN_PORT) as admin:
        models = api.get("/v1/models")
        broken = api.post("/v1/completions")
        loaded = admin.post("/v1/load_lora_adapter")
        operator = admin.get("/v1/models")
    assert models.status_code == 200 and len(models.headers.get_list(ORCA)) == 1
    assert broken.status_code == 500
    assert loaded.status_code == 200 and loaded.json() == "Success"
    assert ORCA not in loaded.headers and ORCA not in operator.headers
    clock.now += 2
    report = parse(ext.tracker.header("TEXT").decode())
    assert (report.rps_fractional, report.eps) == (2 / 2, 1 / 2)  # models, broken; one error
