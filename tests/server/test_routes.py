"""Readiness of a built server, with a test double standing in for the engine (the boundary:
the real one needs a running engine; the real server is covered in test_server_vllm)."""

import asyncio

from vllm_server_ext.lifecycle import Phase, ServerState
from vllm_server_ext.routes import EngineHealth, current_phase, is_admin_path


class FakeEngine:
    """Test double of `vllm_0_32.Engine`: just what readiness reads."""

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


def test_admin_paths_wherever_the_app_is_mounted():
    def admin(path: str, root_path: str = "") -> bool:
        return is_admin_path({"path": path, "root_path": root_path})

    assert admin("/v1/load_lora_adapter") and admin("/v1/unload_lora_adapter")
    assert admin("/adapters") and admin("/adapters/sql")  # vLLM's SageMaker routes, same handlers
    assert admin("/x/v1/load_lora_adapter", root_path="/x")  # --root-path /x
    assert not admin("/v1/completions") and not admin("/v1/models") and not admin("/adaptersx")
