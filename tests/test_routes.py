"""Readiness of a built server, with a test double standing in for vLLM's engine client (the
boundary: the real one needs a running engine; the real server is covered in test_server_vllm)."""

import asyncio

from vllm_server_ext.load import LoadTracker
from vllm_server_ext.routes import ServerExtension, current_phase, is_admin_path
from vllm_server_ext.state import Phase, ServerState
from vllm_server_ext.token_load import TokenLoad


class FakeEngineClient:
    """Test double of vLLM's EngineClient: just the two things readiness reads."""

    def __init__(self) -> None:
        self.errored = False
        self.sleeping = False

    async def is_sleeping(self) -> bool:
        return self.sleeping


def extension(can_sleep: bool) -> ServerExtension:
    state = ServerState()
    state.enter(Phase.READY)
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=1)
    return ServerExtension(state, tracker, (), can_sleep=can_sleep)


def test_sleeping_comes_and_goes():
    ext, engine = extension(can_sleep=True), FakeEngineClient()
    assert asyncio.run(current_phase(ext, engine)) == Phase.READY
    engine.sleeping = True
    assert asyncio.run(current_phase(ext, engine)) == Phase.SLEEPING
    engine.sleeping = False
    assert asyncio.run(current_phase(ext, engine)) == Phase.READY


def test_sleep_is_not_asked_when_sleep_mode_is_off():
    ext, engine = extension(can_sleep=False), FakeEngineClient()
    engine.sleeping = True  # would be wrong to ask: without sleep mode the engine cannot sleep
    assert asyncio.run(current_phase(ext, engine)) == Phase.READY


def test_a_dead_engine_is_final():
    ext, engine = extension(can_sleep=True), FakeEngineClient()
    engine.errored = True
    assert asyncio.run(current_phase(ext, engine)) == Phase.DEAD
    engine.errored = False
    assert asyncio.run(current_phase(ext, engine)) == Phase.DEAD


def test_draining_wins_over_everything():
    ext, engine = extension(can_sleep=True), FakeEngineClient()
    ext.state.enter(Phase.DRAINING)
    engine.sleeping = True
    assert asyncio.run(current_phase(ext, engine)) == Phase.DRAINING


def test_admin_paths_wherever_the_app_is_mounted():
    def admin(path: str, root_path: str = "") -> bool:
        return is_admin_path({"path": path, "root_path": root_path})

    assert admin("/v1/load_lora_adapter") and admin("/v1/unload_lora_adapter")
    assert admin("/adapters") and admin("/adapters/sql")  # vLLM's SageMaker routes, same handlers
    assert admin("/x/v1/load_lora_adapter", root_path="/x")  # --root-path /x
    assert not admin("/v1/completions") and not admin("/v1/models") and not admin("/adaptersx")
