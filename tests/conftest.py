"""Shared fixtures: generated tiny models and real `vllm-ext-serve` processes on the CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import kubernetes
import pytest
from kube_emulator import API_CALLS_FILE, SEEN_CALLS, write_kubeconfig
from operator_samples import IMAGES
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
    """The session's shared server: multiprocess engine (vLLM's default), LoRA on an admin port
    and every ORCA form on."""
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
def kubeconfig(kmock, tmp_path, monkeypatch):
    """Points the operator (Kopf's login and our client) at the `kmock` emulator."""
    path = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # `kubernetes` read $KUBECONFIG into this default when it was first imported.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("VLLM_SERVER_IMAGE_GPU", IMAGES.gpu)
    monkeypatch.setenv("VLLM_SERVER_IMAGE_CPU", IMAGES.cpu)
    monkeypatch.setenv("POD_NAMESPACE", "vllm-system")
    return path


@pytest.fixture(scope="session", autouse=True)
def operator_api_calls():
    """After the session: every API call the operator made is in the record for the RBAC."""
    yield
    recorded = {tuple(c) for c in json.loads(API_CALLS_FILE.read_text())}
    if os.environ.get("UPDATE_GOLDEN"):
        lines = ",\n".join(f"  {json.dumps(c)}" for c in sorted(recorded | SEEN_CALLS))
        API_CALLS_FILE.write_text(f"[\n{lines}\n]\n")
        return
    assert recorded >= SEEN_CALLS, f"new API calls, add them: {sorted(SEEN_CALLS - recorded)}"
