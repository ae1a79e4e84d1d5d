"""The server's tests: one real `vllm-ext-serve` shared by the session (started by the first
test that asks for it; the tiny model comes from the root conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The session's shared server: multiprocess engine (vLLM's default), LoRA on an admin port
    and every ORCA form on."""
    from vllm_testkit.servers import ext_server, free_port

    log = tmp_path_factory.mktemp("logs") / "session-server.log"
    grpc_port = free_port()
    proc = ext_server(
        tiny_model,
        log,
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
        "--orca-formats", "TEXT,JSON", "bin",
        "--orca-grpc-port", str(grpc_port),
        "--orca-oob-min-interval", "0.2",
    )  # fmt: skip
    proc.grpc_port = grpc_port
    proc.admin_port = free_port()
    proc.start()
    try:
        yield proc.wait_ready()
    finally:
        # SIGTERM ends the server cleanly, its gRPC service and load sampler included.
        assert proc.stop() == 0, proc.log()[-3000:]


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub in this process online: `make test` runs with HF_HUB_OFFLINE=1 (nothing
    is ever fetched from the internet), which huggingface_hub reads once, at import; the Hub of
    the tests that use this is the local stand-in (`vllm_testkit.hub_standin`)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
