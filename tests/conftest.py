"""Fixtures every area shares: the generated tiny model and LoRA adapters (generated once per
session; numpy and the tokenizer trainer are imported only when a test asks for them)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_testkit.tiny_model import generate_model

    return generate_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: Path) -> Path:
    from vllm_testkit.tiny_model import generate_lora

    return generate_lora(tiny_model.parent / "lora-r8", base_model=tiny_model, rank=8)


@pytest.fixture(scope="session")
def tiny_lora_r16(tiny_model: Path) -> Path:
    from vllm_testkit.tiny_model import generate_lora

    return generate_lora(tiny_model.parent / "lora-r16", base_model=tiny_model, rank=16)
