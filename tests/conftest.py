"""Shared fixtures: generated tiny models and real `vllm-ext-serve` processes on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_servers import ext_server, free_port

from vllm_server_ext.tiny_model import generate_lora, generate_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: Path) -> Path:
    return generate_lora(tiny_model.parent / "lora-r8", base_model=tiny_model, rank=8)


@pytest.fixture(scope="session")
def tiny_lora_r16(tiny_model: Path) -> Path:
    return generate_lora(tiny_model.parent / "lora-r16", base_model=tiny_model, rank=16)


@pytest.fixture(scope="session")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The session's shared server: multiprocess engine (vLLM's default), LoRA and every ORCA
    form on."""
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
    proc.start()
    try:
        yield proc.wait_ready()
    finally:
        # SIGTERM ends the server cleanly, its gRPC service and load sampler included.
        assert proc.stop() == 0, proc.log()[-3000:]
